"""State survives a restart of the platform process."""

from __future__ import annotations

import signal

from tests.support import Server, deploy


def test_functions_survive_restart(fresh_server: Server) -> None:
    fresh_server.start()
    with fresh_server.client() as c:
        deploy(
            c, "persist", "def handle(event, context):\n    return 'still me'\n", envVars={"K": "v"}
        )
        deploy(
            c,
            "persist",
            "def handle(event, context):\n    return 'v2 now'\n",
            method="PUT",
            envVars={"K": "v"},
        )
        r = c.get("/function/persist")
        assert r.text == "v2 now"
        call_id = r.headers["x-call-id"]
    fresh_server.stop(signal.SIGTERM)

    again = Server(fresh_server.data_dir).start()
    try:
        with again.client() as c:
            st = c.get("/system/function/persist").json()
            assert st["version"] == 2 and st["status"] == "ready" and st["envVars"] == {"K": "v"}
            r = c.get("/function/persist")
            assert r.status_code == 200 and r.text == "v2 now"
            assert r.headers["x-faasbox-cold-start"] == "true"
            # Activation records written before the restart are still there.
            assert c.get(f"/system/activations/{call_id}").json()["statusCode"] == 200
    finally:
        again.stop()


def test_restart_after_sigkill(fresh_server: Server) -> None:
    fresh_server.start()
    with fresh_server.client() as c:
        deploy(c, "crashy", "def handle(event, context):\n    return 'ok'\n")
        assert c.get("/function/crashy").text == "ok"
    fresh_server.stop(signal.SIGKILL)
    again = Server(fresh_server.data_dir).start()
    try:
        with again.client() as c:
            assert c.get("/function/crashy").text == "ok"
    finally:
        again.stop()
