"""A real distribution registry on a test host of its own: a network namespace joined to this one by a
veth pair, at an address BuildKit does not treat as local (10.213.x.2). Plain HTTP, or TLS with a CA
the test generates. Stopped by PID, its namespace deleted, when the block ends."""
from __future__ import annotations

import os
import random
import shutil
import ssl
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from conftest import missing_component


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _certificates(tmp: Path, address: str) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key), the server's naming its IP address."""
    ca_key, ca, key, csr, cert = (tmp / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ossl = ["openssl"]
    subprocess.run([*ossl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
                    "-days", "2", "-subj", "/CN=buildplane test CA"], check=True, capture_output=True, timeout=60)
    subprocess.run([*ossl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                    "-subj", f"/CN={address}"], check=True, capture_output=True, timeout=60)
    ext = tmp / "san.ext"
    ext.write_text(f"subjectAltName=IP:{address}\n")
    subprocess.run([*ossl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
                   check=True, capture_output=True, timeout=60)
    return ca, cert, key


@contextmanager
def netns_registry(tmp: Path, *, tls: bool = False):
    """Yields (host:port, CA certificate or None)."""
    for tool in ("ip", "docker-registry", "openssl"):
        if shutil.which(tool) is None:
            missing_component(f"{tool} is not installed: the off-host registry needs it (`make provision`)")
    if os.geteuid() != 0:
        missing_component("a network namespace needs root (the lab runs as root)")
    net = random.randrange(1, 250)
    name = f"bpreg{os.getpid() % 10000}x{net}"
    host_if, ns_if = f"{name[:10]}h", f"{name[:10]}n"
    address = f"10.213.{net}.2"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        missing_component(f"`ip netns add` failed: {exc.stderr.decode(errors='replace').strip()}")
    proc = None
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", name)
        _ip("addr", "add", f"10.213.{net}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{address}/30", "dev", ns_if)
        _ip("netns", "exec", name, "ip", "link", "set", ns_if, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        (tmp / "data").mkdir(parents=True, exist_ok=True)
        ca = None
        lines = ["version: 0.1", "log: {level: warn}", f"storage: {{filesystem: {{rootdirectory: {tmp / 'data'}}}}}",
                 "http:", f"  addr: {address}:5000", "  secret: test"]
        if tls:
            ca, cert, key = _certificates(tmp, address)
            lines.append(f"  tls: {{certificate: {cert}, key: {key}}}")
        (tmp / "config.yml").write_text("\n".join(lines) + "\n")
        log = open(tmp / "registry.log", "w")
        proc = subprocess.Popen(["ip", "netns", "exec", name, "docker-registry", "serve", str(tmp / "config.yml")],
                                stdout=log, stderr=log, start_new_session=True)
        url = f"{'https' if tls else 'http'}://{address}:5000/v2/"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url, timeout=1, verify=ssl.create_default_context(cafile=str(ca)) if ca else True)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"the off-host registry did not start: {(tmp / 'registry.log').read_text()}")
                time.sleep(0.1)
        yield f"{address}:5000", ca
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)  # gone with the netns, mostly
