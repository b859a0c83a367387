"""Writes into a directory (the query's ``dir``; /tmp by default) until refused, or until
it has written four times the suite's limit. Files in /tmp stay (the test looks at the
host meanwhile); elsewhere they are removed before answering."""

import contextlib
import errno
import os

CAP = 256 << 20


def handle(event, context):
    target = event.query.get("dir", "/tmp")
    chunk = b"\xab" * (4 << 20)
    written, paths, failure = 0, [], None
    try:
        while written < CAP:
            paths.append(os.path.join(target, f"fill-{len(paths)}-{os.getpid()}"))
            with open(paths[-1], "wb") as f:
                for _ in range(4):
                    f.write(chunk)
                    f.flush()
                    written += len(chunk)
    except OSError as exc:
        failure = exc
    if target != "/tmp":
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
    return {
        "dir": target,
        "written": written,
        "error": type(failure).__name__ if failure else None,
        "errno": errno.errorcode.get(failure.errno or 0, "?") if failure else None,
    }
