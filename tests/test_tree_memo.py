"""The tree memo: a large context's digest from `git status` instead of a walk, never a stale one.

Every test runs the real git on a real work tree: the memo is a claim about what git reports, and only
git can check it. The memo's threshold is lowered so that small trees take its path.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from buildplane.freshness import StatCache, digests, image_inputs
from buildplane.freshness.worktree import TreeMemo, listed_records, trusted_listing
from buildplane.tools.run import Runner
from conftest import missing_component


@pytest.fixture(autouse=True)
def _git_installed():
    if shutil.which("git") is None:
        missing_component("git is not installed: the tree memo is a claim about what git reports")


class CountingRunner(Runner):
    """The real runner, counting the git processes it starts."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def run(self, argv, **kw):
        raise AssertionError(f"the memo asks git through capture(), not run(): {argv}")

    def capture(self, argv, **kw):
        assert argv[0] == "git", argv  # the memo starts nothing else
        self.calls.append(list(argv))
        return super().capture(argv, **kw)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    ctx = root / "svc"
    for d in range(4):
        (ctx / f"src/d{d}").mkdir(parents=True)
        for f in range(5):
            (ctx / f"src/d{d}/f{f}.txt").write_text(f"{d}-{f}\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY src/ /www/\n")
    (root / ".gitignore").write_text("*.log\n")
    (ctx / "keep.log").write_text("ignored by git, sent by the builder\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    # Files older than the index, as in a work tree people use (git compares racy entries by content).
    old = os.stat(ctx / "Dockerfile").st_mtime - 10
    for path in root.rglob("*"):
        if ".git" not in path.parts:
            os.utime(path, (old, old))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return ctx


class Digests:
    """The digest with the memo (three runs warm it) beside the digest of a plain walk."""

    def __init__(self, ctx: Path, state: Path) -> None:
        self.ctx, self.state = ctx, state
        self.runner = CountingRunner()

    def memo(self) -> TreeMemo:
        return TreeMemo(self.state / "trees.json", self.runner, large=1)

    def with_memo(self) -> str:
        memo, cache = self.memo(), StatCache.open(self.state / "stat.json")
        got = image_inputs(self.ctx, self.ctx / "Dockerfile", build_args={}, build_target=None, platform=None,
                           cache=cache, memo=memo).digest
        memo.save()
        cache.save()
        return got

    def walked(self) -> str:
        return image_inputs(self.ctx, self.ctx / "Dockerfile", build_args={}, build_target=None, platform=None,
                            cache=StatCache.open(self.state / "walk.json")).digest


def no_walk(monkeypatch) -> None:
    def refuse(*a, **kw):
        raise AssertionError("walked although the memo knew the tree")
    monkeypatch.setattr(digests, "walk_context", refuse)


def test_an_unchanged_tree_is_answered_by_git_without_a_walk(repo, tmp_path, monkeypatch):
    d = Digests(repo, tmp_path / "state")
    first = d.with_memo()  # learns the size, checks git's view can be trusted
    assert d.with_memo() == first  # records the digest under the tree key taken before its walk
    with monkeypatch.context() as m:
        no_walk(m)
        assert d.with_memo() == first
    assert first == d.walked()
    assert sum("status" in c for c in d.runner.calls) == 2  # the second and third runs, once each


def test_the_files_of_a_memo_answer_are_walked_when_asked(repo, tmp_path):
    d = Digests(repo, tmp_path / "state")
    d.with_memo(), d.with_memo()
    inputs = image_inputs(repo, repo / "Dockerfile", build_args={}, build_target=None, platform=None,
                          cache=StatCache.open(tmp_path / "s.json"), memo=d.memo())
    assert "src/d0/f0.txt" in inputs.files and "<Dockerfile>" in inputs.files and "keep.log" in inputs.files


def same_size_edit(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[::-1] if text[::-1] != text else text.upper())


CHANGES = {
    "tracked file, same size": lambda c: same_size_edit(c / "src/d0/f0.txt"),
    "tracked file made executable": lambda c: os.chmod(c / "src/d1/f1.txt", 0o755),
    "new untracked file": lambda c: (c / "src/d2/new.txt").write_text("new\n"),
    "tracked file deleted": lambda c: (c / "src/d3/f4.txt").unlink(),
    "git-ignored file edited": lambda c: (c / "keep.log").write_text("changed, same git status\n"),
    "new git-ignored file": lambda c: (c / "src/more.log").write_text("x\n"),
    ".dockerignore added": lambda c: (c / ".dockerignore").write_text("src/d0\n"),
    "Dockerfile edited": lambda c: (c / "Dockerfile").write_text("FROM scratch\nCOPY src /www\n"),
    "file turned into a link": lambda c: ((c / "src/d0/f1.txt").unlink(), (c / "src/d0/f1.txt").symlink_to("f2.txt")),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_kind_of_change_is_seen_through_the_memo(change, repo, tmp_path):
    d = Digests(repo, tmp_path / "state")
    before = [d.with_memo() for _ in range(3)][-1]
    CHANGES[change](repo)
    after = d.with_memo()
    assert after != before
    assert after == d.walked()
    assert d.with_memo() == after  # and the new tree is memoised as it is


def test_a_file_modified_twice_keeps_its_git_status_but_not_its_digest(repo, tmp_path):
    d = Digests(repo, tmp_path / "state")
    (repo / "src/d0/f0.txt").write_text("one\n")
    first = [d.with_memo() for _ in range(3)][-1]
    (repo / "src/d0/f0.txt").write_text("two\n")  # `git status` prints the same line as before
    assert d.with_memo() != first
    assert d.with_memo() == d.walked()


def test_staging_a_change_is_no_change_of_the_tree(repo, tmp_path):
    d = Digests(repo, tmp_path / "state")
    (repo / "src/d0/f0.txt").write_text("staged\n")
    before = [d.with_memo() for _ in range(3)][-1]
    git(repo.parent, "add", "-A")
    assert d.with_memo() == before == d.walked()


@pytest.mark.parametrize("setup", ["assume-unchanged", "gitattributes", "nested repository", "autocrlf"])
def test_where_git_would_not_report_a_change_the_tree_is_walked(setup, repo, tmp_path):
    if setup == "assume-unchanged":
        git(repo.parent, "update-index", "--assume-unchanged", "svc/src/d0/f0.txt")
    elif setup == "gitattributes":
        (repo / ".gitattributes").write_text("*.txt text eol=crlf\n")
    elif setup == "nested repository":
        (repo / "vendor").mkdir()
        git(repo / "vendor", "init", "-q")
        (repo / "vendor/lib.txt").write_text("v1\n")
    else:
        git(repo.parent, "config", "core.autocrlf", "true")
    d = Digests(repo, tmp_path / "state")
    before = [d.with_memo() for _ in range(3)][-1]
    target = repo / ("vendor/lib.txt" if setup == "nested repository" else "src/d0/f0.txt")
    target.write_text("changed where git may not say so\n")
    assert d.with_memo() != before
    assert d.with_memo() == d.walked()


def test_a_context_outside_any_work_tree_is_walked_and_git_asked_once(tmp_path):
    ctx = tmp_path / "plain"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src/a.txt").write_text("a\n")
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    env_ceiling = os.environ.get("GIT_CEILING_DIRECTORIES")
    os.environ["GIT_CEILING_DIRECTORIES"] = str(tmp_path)  # no repository above the test's directory
    try:
        d = Digests(ctx, tmp_path / "state")
        digests_seen = {d.with_memo() for _ in range(4)}
    finally:
        if env_ceiling is None:
            os.environ.pop("GIT_CEILING_DIRECTORIES")
        else:
            os.environ["GIT_CEILING_DIRECTORIES"] = env_ceiling
    assert digests_seen == {d.walked()}
    assert len(d.runner.calls) == 1 and "rev-parse" in d.runner.calls[0]


def test_a_small_context_never_starts_git(repo, tmp_path):
    runner = CountingRunner()
    for _ in range(3):
        memo = TreeMemo(tmp_path / "trees.json", runner)  # the shipped threshold
        image_inputs(repo, repo / "Dockerfile", build_args={}, build_target=None, platform=None,
                     cache=StatCache.open(tmp_path / "s.json"), memo=memo)
        memo.save()
    assert runner.calls == []


def test_random_edits_through_the_memo_match_a_walk(repo, tmp_path):
    """A model check: after each random change (or none), the memo's digest is the walk's."""
    rng = random.Random(int(os.environ.get("BUILDPLANE_MODEL_SEED", "2")))
    d = Digests(repo, tmp_path / "state")
    files = sorted(p for p in repo.rglob("*.txt"))
    for step in range(30):
        choice = rng.randrange(6)
        path = rng.choice(files)
        if choice == 0 and path.exists():
            path.write_text(f"edit {step}\n")
        elif choice == 1:
            (repo / f"src/new{step}.txt").write_text("n\n")
        elif choice == 2 and path.exists():
            path.unlink()
        elif choice == 3 and path.exists():
            os.chmod(path, 0o755 if rng.random() < 0.5 else 0o644)
        elif choice == 4:
            git(repo.parent, "add", "-A")
        assert d.with_memo() == d.walked(), f"step {step}, change {choice} on {path.name}"


def test_status_records_are_read_for_their_paths():
    out = ("1 .M N... 100644 100644 100644 6220 6220 src/a b.txt\0"
           "u UU N... 100644 100644 100644 100644 1 2 3 src/conflict.txt\0? src/new.txt\0! x.log\0")
    assert [p for p, _ in listed_records(out)] == ["src/a b.txt", "src/conflict.txt", "src/new.txt", "x.log"]


def test_an_entry_git_would_not_compare_makes_the_listing_untrusted():
    plain = "H 100644 0a5e 0\tsrc/a.txt\0"
    assert trusted_listing(plain)
    assert not trusted_listing("h 100644 0a5e 0\tsrc/a.txt\0")  # assume-unchanged
    assert not trusted_listing("S 100644 0a5e 0\tsrc/a.txt\0")  # skip-worktree
    assert not trusted_listing("H 160000 0a5e 0\tvendor\0")  # a submodule
    assert not trusted_listing(plain + "H 100644 0b 0\tsrc/.gitattributes\0")


def test_a_mode_change_is_seen_where_the_repository_ignores_modes(repo, tmp_path):
    git(repo.parent, "config", "core.fileMode", "false")  # git status would call the chmod clean
    d = Digests(repo, tmp_path / "state")
    before = [d.with_memo() for _ in range(3)][-1]
    os.chmod(repo / "src/d1/f1.txt", 0o755)
    assert d.with_memo() != before
    assert d.with_memo() == d.walked()


@pytest.mark.parametrize("dockerignore", [None, ".git\n"])
def test_a_context_that_is_the_repositorys_top_sends_git_unless_dockerignore_leaves_it_out(dockerignore, repo,
                                                                                          tmp_path):
    top = repo.parent
    (top / "Dockerfile").write_text("FROM scratch\nCOPY . /all/\n")
    if dockerignore:
        (top / ".dockerignore").write_text(dockerignore)
    git(top, "add", "-A")
    git(top, "commit", "-qm", "top")
    d = Digests(top, tmp_path / "state")
    before = [d.with_memo() for _ in range(3)][-1]
    status_calls = sum("status" in c for c in d.runner.calls)
    git(top, "commit", "-q", "--allow-empty", "-m", "only .git changes")
    after = d.with_memo()
    assert after == d.walked()
    if dockerignore:  # .git is not sent: a commit changes nothing the builder gets, and git is asked
        assert after == before and sum("status" in c for c in d.runner.calls) > status_calls
    else:  # .git is sent: its new files are in the digest, and git is never asked
        assert after != before and status_calls == 0


def test_an_edit_is_patched_onto_the_last_tree_without_a_walk(repo, tmp_path, monkeypatch):
    d = Digests(repo, tmp_path / "state")
    [d.with_memo() for _ in range(3)]
    (repo / "src/d2/f3.txt").write_text("one edit\n")
    (repo / "src/d2/new.txt").write_text("one new file\n")
    with monkeypatch.context() as m:
        no_walk(m)
        patched = d.with_memo()
    assert patched == d.walked()


def test_a_change_of_the_index_is_walked_not_patched(repo, tmp_path, monkeypatch):
    d = Digests(repo, tmp_path / "state")
    [d.with_memo() for _ in range(3)]
    (repo / "src/d2/f3.txt").write_text("staged edit\n")
    git(repo.parent, "add", "-A")
    walks = []
    real = digests.walk_context
    monkeypatch.setattr(digests, "walk_context", lambda *a: walks.append(1) or real(*a))
    assert d.with_memo() == d.walked() and walks


def test_an_edit_saved_and_undone_during_the_walk_is_never_taken_for_the_tree(repo, tmp_path, monkeypatch):
    d = Digests(repo, tmp_path / "state")
    d.with_memo()  # learns the size: the next run takes the tree and walks
    target = repo / "src/d0/f0.txt"
    original = target.read_text()
    real = digests.walk_context

    def saving_midway(*a):
        for i, item in enumerate(real(*a)):
            if i == 5:  # the save lands while the walk runs
                target.write_text("saved while the walk ran\n")
            yield item
    monkeypatch.setattr(digests, "walk_context", saving_midway)
    d.with_memo()
    monkeypatch.setattr(digests, "walk_context", real)
    target.write_text(original)  # undone: git calls the file clean again
    assert d.with_memo() == d.walked()


def test_a_name_that_is_not_utf8_goes_through_the_memo_as_its_bytes(repo, tmp_path):
    d = Digests(repo, tmp_path / "state")
    odd = repo / os.fsdecode(b"src/caf\xe9.txt")
    odd.write_text("one\n")
    before = [d.with_memo() for _ in range(3)][-1]
    odd.write_text("two\n")  # listed by git as untracked both times: only its stat tells
    assert d.with_memo() != before
    assert d.with_memo() == d.walked()


def test_a_record_keeps_its_file_map_packed_and_reads_one_written_before():
    from buildplane.state import packed, unpacked
    files = {"src/a.txt": "-" + "1" * 64, os.fsdecode(b"caf\xe9"): "link:../x", "new\nline": "x" + "2" * 64}
    assert unpacked(packed(files)) == files
    assert unpacked(files) == files  # a record of an earlier version: the map as a JSON object
    assert unpacked(packed({})) == {} and unpacked(None) is None


def test_targets_sharing_a_context_ask_git_once_a_plan(repo, tmp_path):
    d = Digests(repo, tmp_path / "state")
    [d.with_memo() for _ in range(3)]
    memo, cache, asked = d.memo(), StatCache.open(tmp_path / "s.json"), len(d.runner.calls)
    got = [image_inputs(repo, repo / "Dockerfile", build_args={"TARGET": name}, build_target=None, platform=None,
                        cache=cache, memo=memo).digest for name in ("a", "b")]
    assert len(set(got)) == 2
    assert sum("status" in c for c in d.runner.calls[asked:]) == 1
