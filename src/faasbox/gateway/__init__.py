"""The HTTP API (ASGI): management under /system, invocation under /function."""
