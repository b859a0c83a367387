"""The baseline of the warm-path benchmark: the cheapest possible "hello" over HTTP.

A raw ASGI app (no framework) served by uvicorn with uvloop + httptools. faasbox's warm
path (gateway -> pool -> sandboxed replica -> handler -> back) is compared against this,
measured by the same load generator in the same run; see bench/warm.py.

    python -m uvicorn bare_app:app --app-dir bench --loop uvloop --http httptools \
        --log-level warning --no-access-log --port 8000
"""

BODY = b"Hello from faasbox!"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "http":
        await send(START)
        await send(RESPONSE)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
