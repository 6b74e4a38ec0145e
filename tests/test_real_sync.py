"""Sync on the real lab (#14, marker `real`): build portal with the lab's builder, edit, add and delete
files inside its sync rule, `up` again — synced, not built; the final registry holds the built image's
layers plus one; the image, run by the lab's dockerd, serves the edit and lacks the deleted file; and a
full `--rebuild` afterwards gives the same files at the synced paths."""
from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from conftest import run_process
from lab import final_auth, lab_env, make_app, process_env

pytestmark = pytest.mark.real
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
WWW = "examples/fractalops/portal/www"


def up(app, lab, *args):
    res = run_process(["--topology", "topology.yaml", "up", "--mode", "dev", "portal", *args, "--json"], cwd=app,
                      env=process_env(lab), timeout=300)
    assert res.code == 0, res.err
    return json.loads(res.out)["targets"]["portal"]


def manifest(lab, image: str) -> dict:
    host, rest = image.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    resp = httpx.get(f"http://{host}/v2/{repo}/manifests/{tag}", auth=final_auth(lab), headers={"Accept": ACCEPT},
                     timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def files_in(lab, image: str) -> dict[str, str]:
    """path → sha256 of every file under /srv/www, read by running the image on the lab's dockerd."""
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "--pull", "always", image,
                           "sh", "-c", "cd /srv/www && find . -type f | sort | xargs sha256sum"],
                          env=process_env(lab), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {path: digest for digest, path in (line.split() for line in proc.stdout.splitlines())}


def cat(lab, image: str, path: str) -> str:
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "cat", path],
                          env=process_env(lab), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_an_edit_is_synced_into_a_runnable_image_equal_to_a_rebuild(tmp_path):
    lab = lab_env()
    app, _ = make_app(tmp_path / "app", lab)
    (app / WWW / "old.txt").write_text("to be deleted\n")
    built = up(app, lab)
    assert built["build"] == "built"
    before = manifest(lab, built["image"])

    page = app / WWW / "index.html"
    page.write_text(page.read_text().replace("portal is up", "portal is up (synced edit)"))
    (app / WWW / "old.txt").unlink()
    (app / WWW / "js").mkdir()
    (app / WWW / "js/app.js").write_text("console.log('new');\n")
    synced = up(app, lab)
    assert synced["build"] == "synced", synced
    assert "2 file(s), 1 deleted" in synced["reason"]
    after = manifest(lab, synced["image"])
    assert after["layers"][:-1] == before["layers"] and len(after["layers"]) == len(before["layers"]) + 1
    files = files_in(lab, synced["image"])
    assert "./old.txt" not in files and "./js/app.js" in files
    assert "portal is up (synced edit)" in cat(lab, synced["image"], "/srv/www/index.html")
    events = [json.loads(line) for line in (app / ".buildplane/events.jsonl").read_text().splitlines()]
    last_build = [e for e in events if e["name"] == "step.finished" and e["attributes"].get("buildplane.step") == "build"][-1]
    assert last_build["attributes"]["buildplane.build"] == "synced" and last_build["attributes"]["buildplane.sync.files"] == 2

    rebuilt = up(app, lab, "--rebuild")
    assert rebuilt["build"] == "built" and rebuilt["digest"] != synced["digest"]
    assert files_in(lab, rebuilt["image"]) == files


def _synced_then_rebuilt(app, lab) -> tuple[dict, dict, dict, dict]:
    synced = up(app, lab)
    assert synced["build"] == "synced", synced
    files = files_in(lab, synced["image"])
    rebuilt = up(app, lab, "--rebuild")
    assert rebuilt["build"] == "built"
    return synced, files, rebuilt, files_in(lab, rebuilt["image"])


def test_deleting_a_directorys_last_synced_file_keeps_what_a_run_put_there(tmp_path):
    """`RUN … > /srv/www/assets/vendor.js` then `COPY www /srv/www`; removing www/assets/app.js whites out that
    file only, as a build leaves the tree: vendor.js stays (the whole directory was whited out)."""
    lab = lab_env()
    app, _ = make_app(tmp_path / "app", lab)
    dockerfile = app / "examples/fractalops/portal/Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace(
        "COPY www /srv/www", "RUN mkdir -p /srv/www/assets && echo vendor > /srv/www/assets/vendor.js\nCOPY www /srv/www"))
    (app / WWW / "assets").mkdir()
    (app / WWW / "assets/app.js").write_text("app\n")
    assert up(app, lab)["build"] == "built"
    (app / WWW / "assets/app.js").unlink()
    synced, files, _, rebuilt_files = _synced_then_rebuilt(app, lab)
    assert "./assets/vendor.js" in files and "./assets/app.js" not in files
    assert files == rebuilt_files


@pytest.mark.parametrize("before, after", [("file", "dir"), ("dir", "file")])
def test_a_path_that_turns_from_file_to_directory_or_back_syncs_into_a_pullable_image(tmp_path, before, after):
    lab = lab_env()
    app, _ = make_app(tmp_path / "app", lab)
    a = app / WWW / "a"

    def make(kind: str) -> None:
        if a.is_dir():
            for p in sorted(a.rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            a.rmdir()
        elif a.exists():
            a.unlink()
        if kind == "file":
            a.write_text("a file\n")
        else:
            a.mkdir()
            (a / "b").write_text("b inside a\n")
    make(before)
    assert up(app, lab)["build"] == "built"
    make(after)
    synced, files, _, rebuilt_files = _synced_then_rebuilt(app, lab)  # files_in pulls and runs the synced image
    assert files == rebuilt_files
    assert ("./a/b" in files) == (after == "dir") and ("./a" in files) == (after == "file")
