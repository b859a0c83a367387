"""Prints gigabytes to stdout: short lines, long lines and raw writes without a newline at
all (most of the bytes: print() costs the function more than the platform), then some
stderr."""

import os
import sys


def _raw(fd, chunk, total):
    done = 0
    while done < total:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        done += len(chunk)
    return done


def handle(event, context):
    total = int(event.query["bytes"])
    out = 0
    short, long = "s" * 1023, "l" * (64 * 1024 - 1)
    while out < total // 64:
        for _ in range(1024):
            print(short)
        out += 1 << 20
    while out < total // 4:
        for _ in range(16):
            print(long)
        out += 1 << 20
    out += _raw(1, b"r" * (1 << 20), total - out)
    sys.stdout.flush()
    err = 0
    while err < total // 64:
        sys.stderr.write("e" * 65535 + "\n")
        err += 1 << 16
    return {"stdout_bytes": out, "stderr_bytes": err}
