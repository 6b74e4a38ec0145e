"""Image references split the way the registry API needs them (tools/registry.Ref)."""
import pytest

from buildplane.tools.registry import Ref

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, host, repo, reference", [
    ("ghcr.io/yamonco/runtime:dev-1", "ghcr.io", "yamonco/runtime", "dev-1"),
    ("ghcr.io/yamonco/runtime", "ghcr.io", "yamonco/runtime", "latest"),
    (f"nexus.svc:8083/library/python@{D}", "nexus.svc:8083", "library/python", D),
    (f"nexus.svc:8083/library/python:3.12@{D}", "nexus.svc:8083", "library/python", D),
    ("127.0.0.1:15001/app:bp-1", "127.0.0.1:15001", "app", "bp-1"),
    ("127.0.0.1:15001/app", "127.0.0.1:15001", "app", "latest"),
    ("localhost/app:1", "localhost", "app", "1"),
    ("localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t"),
    ("python:3.12-slim", "docker.io", "library/python", "3.12-slim"),
    ("python", "docker.io", "library/python", "latest"),
    (f"python@{D}", "docker.io", "library/python", D),
    ("bitnami/redis:7", "docker.io", "bitnami/redis", "7"),
    ("registry.example/team/app", "registry.example", "team/app", "latest"),
])
def test_references_split_into_host_repository_and_reference(text, host, repo, reference):
    assert Ref.parse(text) == Ref(host, repo, reference)
