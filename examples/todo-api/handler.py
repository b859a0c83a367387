"""A small JSON HTTP API in one function: a todo list.

Routes (the path is what follows /function/todo-api):

    GET    /todos           list all items
    POST   /todos           create one from {"title": "..."}  -> 201 + the item
    GET    /todos/<id>      one item, 404 if unknown
    DELETE /todos/<id>      remove it -> 204

The items live in a module-level dict, i.e. in the memory of one replica: they survive
between calls to that replica, vanish when it is scaled to zero or replaced, and are not
shared between replicas. That is fine for a demo (the stack file pins this function to one
replica); real state belongs in a database.
"""

import itertools
import json
import time

TODOS: dict[int, dict] = {}
_ids = itertools.count(1)

_JSON = {"content-type": "application/json"}


def _reply(status, body=None):
    if body is None:
        return {"statusCode": status, "body": None, "headers": {}}
    return {"statusCode": status, "body": json.dumps(body), "headers": dict(_JSON)}


_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def _error(status, message, **extra):
    # The same error shape as faasbox's own errors, so clients handle both alike.
    headers = dict(_JSON, **extra)
    err = {"code": _CODES.get(status, "error"), "message": message}
    return {"statusCode": status, "body": json.dumps({"error": err}), "headers": headers}


def _create(event):
    try:
        data = json.loads(event.body or b"")
    except (ValueError, UnicodeDecodeError):
        return _error(400, 'body must be JSON like {"title": "..."}')
    if not isinstance(data, dict):
        return _error(400, "body must be a JSON object")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        return _error(400, '"title" must be a non-empty string')
    item = {
        "id": next(_ids),
        "title": title.strip(),
        "done": bool(data.get("done", False)),
        "createdAt": time.time(),
    }
    TODOS[item["id"]] = item
    return {
        "statusCode": 201,
        "body": json.dumps(item),
        "headers": dict(_JSON, location=f"/todos/{item['id']}"),
    }


def handle(event, context):
    method = (event.method or "GET").upper()
    parts = [p for p in (event.path or "/").split("/") if p]

    if parts == ["todos"]:
        if method == "GET":
            return _reply(200, {"items": list(TODOS.values()), "count": len(TODOS)})
        if method == "POST":
            return _create(event)
        return _error(405, f"{method} not allowed on /todos", allow="GET, POST")

    if len(parts) == 2 and parts[0] == "todos":
        if method not in ("GET", "DELETE"):
            return _error(405, f"{method} not allowed on /todos/<id>", allow="GET, DELETE")
        try:
            todo_id = int(parts[1])
        except ValueError:
            return _error(404, f"no todo {parts[1]!r}")
        if todo_id not in TODOS:
            return _error(404, f"no todo {todo_id}")
        if method == "GET":
            return _reply(200, TODOS[todo_id])
        del TODOS[todo_id]
        return _reply(204)

    return _error(404, f"no route for {method} {event.path or '/'}; try GET /todos")
