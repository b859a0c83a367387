import json

import pytest


@pytest.fixture
def todo(load):
    return load("todo-api")  # fresh module => empty list


def body(resp):
    return json.loads(resp["body"])


def test_crud(todo, event, context):
    resp = todo.handle(event("GET", "/todos"), context)
    assert resp["statusCode"] == 200 and body(resp) == {"items": [], "count": 0}

    resp = todo.handle(event("POST", "/todos", body={"title": " buy milk "}), context)
    assert resp["statusCode"] == 201
    item = body(resp)
    assert item["title"] == "buy milk" and item["done"] is False
    assert resp["headers"]["content-type"] == "application/json"
    assert resp["headers"]["location"] == f"/todos/{item['id']}"

    resp = todo.handle(event("GET", f"/todos/{item['id']}"), context)
    assert resp["statusCode"] == 200 and body(resp) == item

    resp = todo.handle(event("GET", "/todos/"), context)  # trailing slash is fine
    assert body(resp)["count"] == 1

    resp = todo.handle(event("DELETE", f"/todos/{item['id']}"), context)
    assert resp["statusCode"] == 204 and resp["body"] is None

    resp = todo.handle(event("GET", f"/todos/{item['id']}"), context)
    assert resp["statusCode"] == 404 and "error" in body(resp)


def test_ids_are_unique(todo, event, context):
    ids = {
        body(todo.handle(event("POST", "/todos", body={"title": f"t{i}"}), context))["id"]
        for i in range(5)
    }
    assert len(ids) == 5


@pytest.mark.parametrize(
    "payload", ["not json", "[1, 2]", '{"title": ""}', '{"title": 3}', "{}", "", b"\xff\xfe"]
)
def test_bad_body_is_400(todo, event, context, payload):
    resp = todo.handle(event("POST", "/todos", body=payload), context)
    assert resp["statusCode"] == 400
    assert "error" in body(resp)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/todos", 405),
        ("PATCH", "/todos/1", 405),
        ("GET", "/", 404),
        ("GET", "/nope", 404),
        ("GET", "/todos/abc", 404),
        ("GET", "/todos/1/extra", 404),
        ("DELETE", "/todos/999", 404),
    ],
)
def test_errors(todo, event, context, method, path, status):
    resp = todo.handle(event(method, path), context)
    assert resp["statusCode"] == status
    assert "error" in body(resp)
    if status == 405:
        assert "allow" in resp["headers"]


def test_lowercase_method(todo, event, context):
    assert todo.handle(event("get", "/todos"), context)["statusCode"] == 200
