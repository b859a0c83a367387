"""The Quickstart's run command: `faasbox up --deploy examples/faasbox.yml`, then every
example answers through real HTTP (the iris one installs scikit-learn into a layer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Server, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "faasbox.yml"


@pytest.mark.timeout(600)
def test_up_deploys_the_examples_and_they_answer(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--deploy", str(EXAMPLES)).start()
    try:
        wait_for(lambda: any("faasbox is up" in line for line in srv.output), timeout=540)
        out = "".join(srv.output)
        assert "deploy failed" not in out, out
        for name in ("hello", "todo-api", "iris-classifier"):
            assert f"{srv.url}/function/{name}" in out, out
        with srv.client() as c:
            r = c.get("/function/hello", params={"name": "tester"})
            assert r.status_code == 200 and "tester" in r.text

            r = c.post("/function/todo-api/todos", json={"title": "write tests"})
            assert r.status_code == 201, r.text
            item = r.json()
            assert item["title"] == "write tests"
            listed = c.get("/function/todo-api/todos").json()["items"]
            assert item["id"] in [t["id"] for t in listed]
            assert c.get(f"/function/todo-api/todos/{item['id']}").json()["title"] == "write tests"
            assert c.delete(f"/function/todo-api/todos/{item['id']}").status_code == 204
            assert c.get(f"/function/todo-api/todos/{item['id']}").status_code == 404
            assert c.post("/function/todo-api/todos", content=b"{oops").status_code == 400

            r = c.post(
                "/function/iris-classifier",
                json={"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
            )
            assert r.status_code == 200, r.text
            assert [p["class"] for p in r.json()["predictions"]] == ["setosa", "virginica"]
            r = c.post("/function/iris-classifier", json={"features": "nope"})
            assert r.status_code == 400
            st = c.get("/system/function/iris-classifier").json()
            assert "dependencies:" in st["buildLog"]
    finally:
        srv.stop()
