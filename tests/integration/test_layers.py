"""Dependency layers: requirements.txt installed once per content and shared.

These install a small real package from PyPI (network), as a user's deploy would."""

from __future__ import annotations

import httpx

from tests.support import deploy, error_code

CODE = """
import importlib.util
import six

def handle(event, context):
    return {"six": six.__version__, "file": six.__file__,
            "platform_pkgs_visible": importlib.util.find_spec("httpx") is not None}
"""


def test_layer_is_built_once_and_shared(client: httpx.Client, server) -> None:  # type: ignore[no-untyped-def]
    req = "# a comment\nsix==1.16.0\n"
    first = deploy(client, "layer-a", CODE, files={"requirements.txt": req}).json()
    assert "installing 1 requirement(s)" in first["buildLog"], first["buildLog"]
    data = client.get("/function/layer-a").json()
    assert data["six"] == "1.16.0"
    assert data["file"].startswith(str(server.data_dir.resolve() / "layers"))
    assert data["platform_pkgs_visible"] is False, "the platform's own packages must not leak in"

    # Same requirements (comments and blank lines aside): the layer is reused, not rebuilt.
    second = deploy(client, "layer-b", CODE, files={"requirements.txt": "six==1.16.0\n\n"}).json()
    assert "reusing cached layer" in second["buildLog"], second["buildLog"]
    assert "installing" not in second["buildLog"]
    assert client.get("/function/layer-b").json()["file"] == data["file"]


def test_failed_install_fails_the_deploy_with_its_output(client: httpx.Client) -> None:
    r = deploy(
        client,
        "layer-bad",
        "def handle(e, c):\n    return 1\n",
        files={"requirements.txt": "faasbox-surely-no-such-package-0xdead==9.9\n"},
        expect=400,
    )
    assert error_code(r) == "build_failed"
    detail = r.json()["error"]["detail"]
    assert "faasbox-surely-no-such-package-0xdead" in detail
    assert client.get("/system/function/layer-bad").status_code == 404
