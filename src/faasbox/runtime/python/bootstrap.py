"""The faasbox Python runtime: runs inside a sandbox, serves one function.

Standard library only, and free of faasbox imports: it runs in the sandbox's interpreter,
which sees nothing of the platform's own environment.

Protocol (version 1) over the channel socket whose descriptor is in FAASBOX_CHANNEL_FD.
Every frame is ``<II`` (header length, body length), a JSON header, then raw body bytes:

    runtime → host  {"t": "hello", "v": 1, "pid": N}                       once at start
    host → runtime  {"t": "init", "v": 1, "code": dir, "layers": [dir...],
                     "handler": "module.func", "function": name,
                     "concurrency": N, "max_response": bytes,
                     "env": {name: value}, "rlimits": {"fsize"|"nofile": n}}    once
    runtime → host  {"t": "ready", "init_ms": f} | {"t": "init_error", "type", "message"}

With ``"zygote": true`` in init the runtime, once ready, serves no call: it is the
function's zygote and forks replicas that have the function imported already:

    host → zygote   {"t": "fork"}, with three descriptors (SCM_RIGHTS): the new replica's
                    channel, stdout and stderr
    fork → host     {"t": "ready", "init_ms": 0, "pid": N} on its new channel (the host
                    learns its pid from the kernel: SO_PASSCRED), then runs as below
    zygote → host   {"t": "exit", "pid": N, "code": C} when a fork ended (its pid as it
                    said in ready; C is an exit code, or -signal)

Otherwise (and in each fork):
    host → runtime  {"t": "run", "id": N, "cid": call_id, "m": method, "p": path,
                     "q": query, "h": [[k, v]...], "dl": unix_deadline,
                     "at": attempt (asynchronous calls; 1 when absent)} + body
    runtime → host  {"t": "res", "id": N, "s": status, "h": [[k, v]...]} + body
                  | {"t": "err", "id": N, "type": name, "message": text}

``env`` (optional) is set in ``os.environ`` before anything of the function is imported:
a prewarmed runtime (a "stem cell", started before anyone knew which function it would
serve) learns its function's environment only here, and ``rlimits`` (optional) are the
function's where they differ from the stem cell's (a process may lower its own; the host
may lack CAP_SYS_RESOURCE to set them from outside). Until ``init`` the runtime has
imported nothing of any function, and it serves one function for its whole life.

Output from print() and logging goes to stdout/stderr, each line prefixed with
``\\x1e<call id>\\x1f`` so the host can file it under the invocation that wrote it.
"""

from __future__ import annotations

import _json
import _socket
import _thread
import contextvars
import importlib
import os
import struct
import sys
import time

# What the runtime imports before its function is only what it cannot do without: every
# module here is paid for by every replica, in start-up time and in memory. asyncio (7 MiB,
# ~80 ms) is imported only for an async handler, json/inspect/traceback/logging/threads on
# first use. ``bench/run density`` measures the result.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any

PROTOCOL_VERSION = 1
_HEAD = struct.Struct("<II")
_FunctionType = type(lambda: None)
_CO_COROUTINE = 0x80


def _make_codec() -> tuple[Any, Any]:
    """JSON for frame headers from the json module's C accelerator, without importing
    ``json`` (which imports ``re``: ~10 ms and 0.6 MiB a replica); the module when the
    accelerator is missing."""
    try:

        class Context:  # the attributes the C scanner reads from a JSONDecoder
            strict = True
            object_hook = object_pairs_hook = None
            parse_float = parse_int = parse_constant = float

        Context.parse_int = int
        Context.memo = {}  # type: ignore[attr-defined]
        scan = _json.make_scanner(Context())
        encoder = _json.make_encoder(
            None, None, _json.encode_basestring_ascii, None, ":", ",", False, False, True
        )

        def dumps(obj: Any) -> str:
            return "".join(encoder(obj, 0))

        def loads(data: bytes | bytearray) -> Any:
            return scan(data.decode(), 0)[0]

        if loads(dumps({"a": [1, 2.5, "\u00e9", None, True]}).encode()) != {
            "a": [1, 2.5, "\u00e9", None, True]
        }:
            raise ValueError("accelerator round trip failed")
        return dumps, loads
    except Exception:  # a Python without _json's accelerator, or a changed signature
        import json

        raw_decode = json.JSONDecoder().raw_decode
        return json.JSONEncoder(separators=(",", ":")).encode, lambda d: raw_decode(d.decode())[0]


_dumps, _loads = _make_codec()


class _Local(_thread._local):
    """Per thread: the unfinished line of each output stream (fd -> pieces). Set up in
    each thread on its first use, so reading it never fails (a failed attribute lookup
    formats an error message: ~1.5 µs, twice a call)."""

    def __init__(self) -> None:
        self.pending: dict[int, list[str]] = {}


_local = _Local()
_call_id: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="")


class TaggedStream:
    """A text stream that writes whole lines tagged with the current call id."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = _thread.allocate_lock()
        self.encoding = "utf-8"
        self.errors = "replace"

    def _pending(self) -> list[str]:
        return _local.pending.setdefault(self._fd, [])

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        pending = self._pending()
        pending.append(s)
        if "\n" in s:
            text = "".join(pending)
            pending.clear()
            head, _, tail = text.rpartition("\n")
            if tail:
                pending.append(tail)
            self._emit(head.split("\n"))
        return len(s)

    def _emit(self, lines: list[str]) -> None:
        tag = "\x1e" + _call_id.get() + "\x1f"
        data = "".join(tag + line + "\n" for line in lines).encode("utf-8", "replace")
        with self._lock:
            try:
                while data:
                    n = os.write(self._fd, data)
                    data = data[n:]
            except OSError:
                pass

    def flush(self) -> None:
        pending = _local.pending.get(self._fd)
        if pending:
            text = "".join(pending)
            pending.clear()
            self._emit([text])

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


class Headers(dict):  # type: ignore[type-arg]
    """Case-insensitive header mapping (keys stored lower-case)."""

    def __init__(self, pairs: list[list[str]]) -> None:
        super().__init__()
        has = dict.__contains__
        for k, v in pairs:
            k = k.lower()
            dict.__setitem__(self, k, f"{dict.__getitem__(self, k)}, {v}" if has(self, k) else v)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)


class Event:
    """The request. Headers and query are parsed on first use: most handlers read neither."""

    __slots__ = ("_headers", "_query", "_raw_headers", "body", "method", "path", "query_string")

    def __init__(self, head: dict[str, Any], body: bytes) -> None:
        self.body = body
        self._raw_headers = head.get("h", [])
        self._headers: Headers | None = None
        self._query: dict[str, str] | None = None
        self.method = head.get("m", "GET")
        self.path = head.get("p", "/")
        self.query_string = head.get("q", "")

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self._raw_headers)
        return self._headers

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = _parse_query(self.query_string)
        return self._query

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        import json

        return json.loads(self.body) if self.body else None


class Context:
    __slots__ = ("attempt", "call_id", "deadline", "function_name")

    def __init__(
        self, call_id: str, function_name: str, deadline: float, attempt: int = 1
    ) -> None:
        self.call_id = call_id
        self.function_name = function_name
        self.deadline = deadline
        # Which run of this call this is: above 1 for an asynchronous call run again (a
        # retry, or a redelivery after the platform stopped while it ran).
        self.attempt = attempt

    def remaining_time(self) -> float:
        return max(0.0, self.deadline - time.time())

    # The Lambda spelling, so handlers written for Lambda read naturally.
    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_time() * 1000)

    @property
    def aws_request_id(self) -> str:
        return self.call_id


def _parse_query(q: str) -> dict[str, str]:
    """``urllib.parse.parse_qsl(q, keep_blank_values=True)``, first value of each name,
    without importing ``urllib.parse`` (~10 ms on a cold start's first call);
    tests/unit/test_runtime_query.py holds it to the library's answers."""
    out: dict[str, str] = {}
    for pair in q.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = _unquote_plus(name)
        if name not in out:
            out[name] = _unquote_plus(value)
    return out


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _unquote_plus(s: str) -> str:
    s = s.replace("+", " ")
    if "%" not in s:
        return s
    parts = s.encode("utf-8", "surrogateescape").split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if len(part) >= 2 and part[0] in _HEX_DIGITS and part[1] in _HEX_DIGITS:
            out.append(int(part[:2], 16))
            out += part[2:]
        else:
            out += b"%"
            out += part
    return out.decode("utf-8", "replace")


_TEXT = "text/plain; charset=utf-8"


def _to_body(value: Any) -> tuple[bytes, str]:
    if value is None:
        return b"", ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), "application/octet-stream"
    if isinstance(value, str):
        return value.encode("utf-8"), _TEXT
    import json

    return json.dumps(value, separators=(",", ":"), default=str).encode(), "application/json"


def to_response(result: Any) -> tuple[int, list[list[str]], bytes]:
    """Map a handler's return value to (status, headers, body); see docs/handlers.md."""
    if type(result) is str:  # the commonest answer, first
        return 200, [["content-type", _TEXT]], result.encode("utf-8")
    if isinstance(result, dict) and "statusCode" in result:
        status = int(result["statusCode"])
        raw = result.get("body")
        if result.get("isBase64Encoded") and isinstance(raw, str):
            import base64

            body, ctype = base64.b64decode(raw), "application/octet-stream"
        else:
            body, ctype = _to_body(raw)
        headers = [[str(k), str(v)] for k, v in (result.get("headers") or {}).items()]
        for k, vs in (result.get("multiValueHeaders") or {}).items():
            headers.extend([str(k), str(v)] for v in vs)
    else:
        status = 200
        body, ctype = _to_body(result)
        headers = []
    if ctype and not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(["content-type", ctype])
    return status, headers, body


def user_traceback(exc: BaseException, code: str, layers: list[str]) -> str:
    """The traceback of ``exc`` trimmed to the function's own frames (its code and its
    dependencies), with paths shown relative to the function's directory."""
    import traceback

    te = traceback.TracebackException.from_exception(exc)
    roots = tuple(r.rstrip("/") + "/" for r in (code, *layers) if r)
    if roots:
        te.stack = traceback.StackSummary.from_list(
            [f for f in te.stack if f.filename.startswith(roots)]
        )
    text = "".join(te.format())
    if code:
        text = text.replace(code.rstrip("/") + "/", "")
    for layer in layers:
        text = text.replace(layer.rstrip("/") + "/", "<dependencies>/")
    return text


class _ZygoteGuard:
    """What keeps a zygote's forks from ending it: the zygote is made non-dumpable (no
    ``/proc/<pid>/mem``, no ptrace even for its own user), and each fork installs, over the
    sandbox's filter, a seccomp filter that refuses (EPERM) the calls that signal or limit
    a process by pid when the pid is the zygote's, or -1 (every process). x86-64 only;
    elsewhere the zygote refuses to start (its function's replicas fail to fork) rather
    than let forks run unguarded."""

    # seccomp_data offsets, BPF opcodes, return values (linux/seccomp.h, linux/filter.h)
    _ARCH_X86_64 = 0xC000003E
    _LD, _JEQ, _RET = 0x20, 0x15, 0x06
    _ALLOW, _KILL, _EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | 1
    # kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo, pidfd_open, prlimit64:
    # the first argument is the target pid.
    _BY_PID = (62, 200, 234, 129, 297, 434, 302)

    def __init__(self, zygote_pid: int) -> None:
        if os.uname().machine != "x86_64":
            raise OSError("the zygote guard has no filter for this architecture")
        import ctypes

        self._ctypes = ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)
        if self._libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE, 0
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
        self.program = self._program(zygote_pid)

        # The sock_fprog, made once here: each fork only makes the system call.
        class Prog(ctypes.Structure):
            _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

        self._buf = ctypes.create_string_buffer(self.program, len(self.program))
        self._prog = Prog(len(self.program) // 8, ctypes.addressof(self._buf))

    @classmethod
    def _program(cls, zygote_pid: int) -> bytes:
        ins = struct.Struct("<HBBI").pack
        n = len(cls._BY_PID)
        code = [
            ins(cls._LD, 0, 0, 4),  # arch
            ins(cls._JEQ, 1, 0, cls._ARCH_X86_64),
            ins(cls._RET, 0, 0, cls._KILL),
            ins(cls._LD, 0, 0, 0),  # syscall number
        ]
        # Each test jumps, when equal, over the remaining tests and the ALLOW after them.
        code += [ins(cls._JEQ, n - i, 0, nr) for i, nr in enumerate(cls._BY_PID)]
        code += [
            ins(cls._RET, 0, 0, cls._ALLOW),
            ins(cls._LD, 0, 0, 16),  # low 32 bits of the first argument: the pid
            ins(cls._JEQ, 2, 0, zygote_pid),
            ins(cls._JEQ, 1, 0, 0xFFFFFFFF),  # -1
            ins(cls._RET, 0, 0, cls._ALLOW),
            ins(cls._RET, 0, 0, cls._EPERM),
        ]
        return b"".join(code)

    def apply(self) -> None:
        ctypes = self._ctypes
        # PR_SET_SECCOMP, SECCOMP_MODE_FILTER (no_new_privs is set by the sandbox)
        if self._libc.prctl(22, 2, ctypes.byref(self._prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def _recv_fds(sock: _socket.socket, size: int, fds: list[int]) -> bytes:
    """``sock.recv(size)``, appending any descriptors that come with the bytes to ``fds``."""
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_SPACE(16 * 4))
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds += [int.from_bytes(payload[i : i + 4], sys.byteorder) for i in range(0, usable, 4)]
    return data


def _signature(fn: Any) -> tuple[bool, int]:
    """(is it a coroutine function, how many positional parameters), from the code object
    for a plain function; ``inspect`` (~12 ms to import) only for other callables."""
    if type(fn) is _FunctionType:
        code = fn.__code__
        return bool(code.co_flags & _CO_COROUTINE), code.co_argcount
    import inspect

    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return inspect.iscoroutinefunction(fn), len(params)


def _run_coroutine_threadsafe(coro: Any, loop: asyncio.AbstractEventLoop) -> None:
    import asyncio

    asyncio.run_coroutine_threadsafe(coro, loop)


class _ConfigureLogging:
    """A meta path finder that configures ``logging`` (INFO, to the tagged stderr) when
    something first imports it, instead of every runtime importing it at start."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "logging":
            return None
        sys.meta_path.remove(self)  # type: ignore[arg-type]
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def configure(module: Any) -> None:
            exec_module(module)
            module.basicConfig(level=module.INFO, format="%(levelname)s %(name)s: %(message)s")

        spec.loader.exec_module = configure  # type: ignore[method-assign]
        return spec


class Runtime:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.send_lock = _thread.allocate_lock()
        self.rbuf = bytearray()
        self.handler: Any = None
        self.classic = False
        self.is_async = False
        self.function = ""
        self.max_response = 6 * 1024 * 1024
        self.executor: ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.concurrency = 1
        self.slots: asyncio.Semaphore | None = None
        self.code = ""
        self.layers: list[str] = []
        # Descriptors received with frames, collected until init and by a zygote.
        self.fds: list[int] | None = []
        self.zygote = False

    # -- channel -----------------------------------------------------------------
    def send(self, head: dict[str, Any], body: bytes = b"") -> None:
        h = _dumps(head).encode()
        with self.send_lock:
            if len(body) < 65536:
                self.sock.sendall(_HEAD.pack(len(h), len(body)) + h + body)
            else:
                self.sock.sendall(_HEAD.pack(len(h), len(body)) + h)
                self.sock.sendall(body)

    def _fill(self, n: int) -> bool:
        rbuf = self.rbuf
        while len(rbuf) < n:
            size = 65536 if n - len(rbuf) <= 65536 else n - len(rbuf)
            try:
                if self.fds is not None:  # descriptors may come with the frame (SCM_RIGHTS)
                    chunk = _recv_fds(self.sock, size, self.fds)
                else:
                    chunk = self.sock.recv(size)
            except ConnectionError:  # the host closed the channel with our frames unread
                return False
            if not chunk:
                return False
            rbuf += chunk
        return True

    def recv(self) -> tuple[dict[str, Any], bytes] | None:
        rbuf = self.rbuf
        if len(rbuf) < 8 and not self._fill(8):
            return None
        hlen, blen = _HEAD.unpack_from(rbuf)
        end = 8 + hlen + blen
        if len(rbuf) < end and not self._fill(end):
            return None
        head = _loads(rbuf[8 : 8 + hlen])
        body = bytes(rbuf[8 + hlen : end]) if blen else b""
        if len(rbuf) == end:
            rbuf.clear()
        else:
            del rbuf[:end]
        return head, body

    # -- init --------------------------------------------------------------------
    def init(self, msg: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            rlimits = msg.get("rlimits")
            if rlimits:
                import resource

                for name, value in rlimits.items():
                    if name not in ("fsize", "nofile"):
                        raise ValueError(f"unknown rlimit {name!r}")
                    limit = getattr(resource, "RLIMIT_" + name.upper())
                    resource.setrlimit(limit, (int(value), int(value)))
            env = msg.get("env")
            if env:
                os.environ.update(env)
                if "TZ" in env:
                    time.tzset()
            if msg.get("layers"):
                import site
            for layer in reversed(msg.get("layers", [])):
                site.addsitedir(layer)  # processes .pth files too
                sys.path.remove(layer)
                sys.path.insert(0, layer)
            sys.path.insert(0, msg["code"])
            self.code, self.layers = msg["code"], list(msg.get("layers", []))
            self.function = msg.get("function", "")
            self.max_response = int(msg.get("max_response", self.max_response))
            module_name, _, func_name = msg["handler"].rpartition(".")
            if not module_name or not func_name:
                raise ValueError(f"handler {msg['handler']!r} must be 'module.function'")
            module = importlib.import_module(module_name)
            fn = getattr(module, func_name, None)
            if fn is None:
                raise AttributeError(f"module {module_name!r} has no function {func_name!r}")
            if not callable(fn):
                raise TypeError(f"{msg['handler']!r} is not callable")
            self.handler = fn
            self.is_async, positional = _signature(fn)
            self.classic = positional == 1
            self.concurrency = int(msg.get("concurrency", 1))
            self.zygote = bool(msg.get("zygote"))
            if not self.zygote:
                self._start_workers()
        except BaseException as exc:  # report any import failure to the host
            sys.stderr.write(user_traceback(exc, self.code, self.layers))
            sys.stderr.flush()
            self.send({"t": "init_error", "type": type(exc).__name__, "message": str(exc)})
            raise SystemExit(3) from None
        self.send({"t": "ready", "init_ms": (time.perf_counter() - t0) * 1000})

    def _start_workers(self) -> None:
        """The event loop (async handlers) or the thread pool (concurrency > 1): made after
        any fork, so that no process ever forks with threads of its own."""
        if self.is_async:
            import asyncio
            import threading

            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self.loop.run_forever, daemon=True).start()
        elif self.concurrency > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="invoke")

    # -- zygote ------------------------------------------------------------------
    def _zygote(self) -> None:
        """Serve as this function's zygote: run no call, and on each ``fork`` frame (which
        brings three descriptors: a channel, a stdout and a stderr) fork a new replica that
        has the function imported already. The forks live in this sandbox's namespaces and
        die with it; the host gives each a cgroup of its own."""
        import _signal
        import gc

        def reap(signum: int, frame: Any) -> None:
            # Tell the host how each fork ended (the host is not their parent).
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if not pid:
                    return
                code = os.waitstatus_to_exitcode(status)
                try:  # noqa: SIM105
                    self.send({"t": "exit", "pid": pid, "code": code})
                except OSError:
                    pass

        _signal.signal(_signal.SIGCHLD, reap)
        # The forks run as the zygote's user: they must not be able to end it (and with
        # it their sandbox) or write its memory. Non-dumpable, /proc/<pid>/mem is closed
        # to them; each fork filters its own signals (``_guard``).
        guard = _ZygoteGuard(os.getpid())
        # What the zygote holds is shared with every fork until written: keep the
        # collector from writing to it (reference counts still do).
        gc.freeze()
        self.fds = []
        while True:
            msg = self.recv()
            if msg is None:
                return
            if msg[0].get("t") != "fork" or len(self.fds) < 3:
                continue
            channel, out, err = self.fds[:3]
            del self.fds[:3]
            try:
                if os.fork() == 0:
                    self._become_fork(channel, out, err, guard)
            except OSError as exc:  # e.g. the pids limit: the host's wait for it times out
                sys.stderr.write(f"zygote: fork failed: {exc}\n")
            for fd in (channel, out, err):
                os.close(fd)

    def _become_fork(self, channel: int, out: int, err: int, guard: _ZygoteGuard) -> None:
        """In a process forked by the zygote: take the host's descriptors for this replica
        (its channel, its stdout and stderr), say ready, serve until the channel closes."""
        try:
            import _signal

            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            os.setsid()  # its own process group: kill(0, ...) reaches no sibling
            guard.apply()
            self.sock.close()
            # Descriptors the zygote received for later forks are theirs, not this one's.
            for fd in self.fds or ():
                try:  # noqa: SIM105 (contextlib costs an import)
                    os.close(fd)
                except OSError:
                    pass
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.close(out)
            os.close(err)
            for stream in (sys.stdout, sys.stderr):
                if isinstance(stream, TaggedStream):
                    stream._lock = _thread.allocate_lock()
            self.sock, self.rbuf, self.fds = _socket.socket(fileno=channel), bytearray(), None
            self.send_lock = _thread.allocate_lock()
            self._start_workers()
            self.send({"t": "ready", "init_ms": 0.0, "pid": os.getpid()})
            self._serve_calls()
        finally:
            os._exit(0)

    # -- invocations -------------------------------------------------------------
    def _args(self, head: dict[str, Any], body: bytes) -> tuple[Any, ...]:
        if self.classic:
            return (body.decode("utf-8", "replace"),)
        ctx = Context(
            head.get("cid", ""), self.function, float(head.get("dl", 0)), int(head.get("at", 1))
        )
        return (Event(head, body), ctx)

    def _reply(self, rid: int, result: Any) -> None:
        status, headers, body = to_response(result)
        if len(body) > self.max_response:
            self.send(
                {
                    "t": "err",
                    "id": rid,
                    "type": "ResponseTooLarge",
                    "message": f"response body of {len(body)} bytes exceeds the limit of {self.max_response} bytes",
                }
            )
            return
        self.send({"t": "res", "id": rid, "s": status, "h": headers}, body)

    def _fail(self, rid: int, exc: BaseException) -> None:
        sys.stderr.write(user_traceback(exc, self.code, self.layers))
        self.send({"t": "err", "id": rid, "type": type(exc).__name__, "message": str(exc)})

    def _flush_logs(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()

    def run_sync(self, head: dict[str, Any], body: bytes) -> None:
        rid = head["id"]
        token = _call_id.set(head.get("cid", ""))
        try:
            result = self.handler(*self._args(head, body))
        except Exception as exc:
            self._fail(rid, exc)
        else:
            try:
                self._reply(rid, result)
            except Exception as exc:
                self._fail(rid, exc)
        finally:
            self._flush_logs()
            _call_id.reset(token)

    async def run_async(self, head: dict[str, Any], body: bytes) -> None:
        rid = head["id"]
        _call_id.set(head.get("cid", ""))
        try:
            result = await self.handler(*self._args(head, body))
            self._reply(rid, result)
        except Exception as exc:
            self._fail(rid, exc)

    def serve(self, prewarmed: bool = False) -> None:
        self.send({"t": "hello", "v": PROTOCOL_VERSION, "pid": os.getpid(), "runtime": "python3"})
        if prewarmed:
            _warm_up()
        msg = self.recv()
        if msg is None:
            return
        if msg[0].get("t") != "init":
            raise SystemExit(f"expected init, got {msg[0].get('t')!r}")
        self.init(msg[0])
        if self.zygote:
            self._zygote()
            return
        self.fds = None
        self._serve_calls()

    def _serve_calls(self) -> None:
        while True:
            msg = self.recv()
            if msg is None:
                return
            head, body = msg
            if head.get("t") != "run":
                continue
            if self.loop is not None:
                _run_coroutine_threadsafe(self.run_async(head, body), self.loop)
            elif self.executor is not None:
                self.executor.submit(self.run_sync, head, body)
            else:
                self.run_sync(head, body)


def _warm_up() -> None:
    """In a prewarmed runtime, while it waits for its function: take the first-use costs
    of what ``init`` does (the import system on a new directory, the compiler) off the
    cold start. What it makes is gone before ``init``: a module of its own in a directory
    of its own, both removed."""
    directory = os.path.join(os.environ.get("TMPDIR") or "/tmp", f".faasbox-warm-up-{os.getpid()}")
    name = "_faasbox_warm_up"
    source = os.path.join(directory, name + ".py")
    try:
        os.mkdir(directory, 0o700)
        with open(source, "w") as f:
            f.write("def handle(event, context):\n    return None\n")
        sys.path.insert(0, directory)
        _signature(importlib.import_module(name).handle)
    except Exception:  # only an optimisation: never fail the runtime for it
        pass
    finally:
        sys.modules.pop(name, None)
        if directory in sys.path:
            sys.path.remove(directory)
        sys.path_importer_cache.pop(directory, None)
        importlib.invalidate_caches()
        for leftover in (source, directory):
            try:  # noqa: SIM105 (contextlib costs an import)
                (os.rmdir if leftover == directory else os.unlink)(leftover)
            except OSError:
                pass


def main() -> None:
    fd = int(os.environ.pop("FAASBOX_CHANNEL_FD", "3"))
    prewarmed = os.environ.pop("FAASBOX_PREWARMED", "") == "1"
    sys.stdout = TaggedStream(1)  # type: ignore[assignment]
    sys.stderr = TaggedStream(2)  # type: ignore[assignment]
    sys.meta_path.insert(0, _ConfigureLogging())  # type: ignore[arg-type]
    sock = _socket.socket(fileno=fd)
    Runtime(sock).serve(prewarmed)


if __name__ == "__main__":
    main()
