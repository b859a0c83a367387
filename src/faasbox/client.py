"""A small synchronous client for the faasbox HTTP API (see ``docs/api.md``).

Used by the CLI and by ``faasbox up --deploy``. Every httpx error is mapped here, at the
boundary, to one of these exceptions::

    ClientError            the gateway answered with an error, or the exchange failed
    ├── GatewayUnreachable nothing listens at the gateway address (or it never answered
    │                      the connection)
    ├── NotAGateway        something answered, but a route every faasbox gateway has was
    │                      not found there (a wrong URL, or one with a path)
    └── CallTimeout        ``invoke``: the function did not answer within the caller's
                           timeout

``ClientError`` carries ``status`` (HTTP status, ``None`` when there was no answer),
``code`` and ``message`` from the JSON error body, and ``detail`` (a build log, say).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypedDict, cast
from urllib.parse import quote

import httpx

__all__ = [
    "Activation",
    "AsyncAccepted",
    "AsyncAttempt",
    "AsyncCall",
    "AsyncSummary",
    "CallTimeout",
    "Client",
    "ClientError",
    "FunctionStatus",
    "GatewayUnreachable",
    "LogLine",
    "NotAGateway",
    "Secret",
    "normalize_url",
    "valid_name",
    "valid_secret_name",
]

DEFAULT_GATEWAY = "http://127.0.0.1:8080"

# A deploy with ?wait=true returns when the build is done: installing requirements can
# take minutes, so reading its answer gets far more time than an ordinary call.
BUILD_TIMEOUT = 900.0
INVOKE_TIMEOUT = 600.0

UploadProgress = Callable[[int, int], None]
"""Called as ``(bytes_sent, bytes_total)`` while a deploy uploads its body."""

# Function names are DNS-1123 labels (the API answers 400 invalid_name otherwise).
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def valid_name(name: str) -> str | None:
    """Why ``name`` is not a valid function name (a DNS-1123 label), or ``None``."""
    if len(name) > 63:
        return f"{name!r} is longer than 63 characters"
    if not NAME_RE.fullmatch(name):
        return (
            f"{name!r} is not a valid function name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (a DNS-1123 label)"
        )
    return None


# Secret names: DNS-1123 subdomain-like, "_" allowed (the API answers 400 invalid_name).
SECRET_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
MAX_SECRET_NAME = 253


def valid_secret_name(name: str) -> str | None:
    """Why ``name`` is not a valid secret name, or ``None``."""
    if len(name) > MAX_SECRET_NAME:
        return f"{name[:40]!r}... is longer than {MAX_SECRET_NAME} characters"
    if not SECRET_NAME_RE.fullmatch(name):
        return (
            f"{name!r} is not a valid secret name: use lowercase letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit"
        )
    return None


class Secret(TypedDict, total=False):
    name: str
    namespace: str


class FunctionStatus(TypedDict, total=False):
    name: str
    namespace: str
    runtime: str
    handler: str
    version: int  # the version serving calls (the latest one if none is ready)
    latestVersion: int  # the newest deploy, whatever its status
    deployedVersion: int  # in a deploy's answer: the version it made
    status: str  # of the latest version: building | ready | failed
    replicas: int
    availableReplicas: int
    maxReplicas: int  # com.openfaas.scale.max in effect (newer gateways)
    invocationCount: int
    envVars: dict[str, str]
    secrets: list[str]
    labels: dict[str, str]
    annotations: dict[str, str]
    limits: dict[str, str]
    timeout: str
    concurrency: int
    createdAt: str | float
    backend: str
    backendReason: str
    buildLog: str


class AsyncAttempt(TypedDict, total=False):
    """How one run of an asynchronous call ended."""

    attempt: int
    start: float  # unix seconds
    durationSeconds: float
    statusCode: int
    error: str | None
    replica: str | None


class AsyncCall(TypedDict, total=False):
    """An asynchronous call's state: ``async`` of its activation, or a dead letter."""

    callId: str
    function: str
    state: str  # queued | running | retrying | succeeded | failed | dead
    attempt: int  # runs so far
    maxRetries: int  # retries allowed after the first run (afresh after a redrive)
    enqueuedAt: float
    nextAttemptAt: float | None
    finishedAt: float | None
    callbackUrl: str | None
    callback: str | None  # pending | delivered | failed
    attempts: list[AsyncAttempt]


class AsyncFunctionDepth(TypedDict, total=False):
    unfinished: int
    oldestAgeSeconds: float


class AsyncSummary(TypedDict, total=False):
    """``GET /system/async``: unfinished (queued or running) asynchronous calls."""

    unfinished: int
    max: int  # faasbox up --queue-max: beyond it, new ones get 429
    functions: dict[str, AsyncFunctionDepth]


# The functional form: "async" is a keyword. An asynchronous call's record has "state" and
# "async"; until it has run, none of the fields of a run.
Activation = TypedDict(
    "Activation",
    {
        "callId": str,
        "function": str,
        "version": int,
        "start": str | float,
        "durationSeconds": float,
        "statusCode": int,
        "coldStart": bool,
        "initMs": float,
        "replica": str,
        "error": str | None,
        "state": str,
        "async": AsyncCall,
    },
    total=False,
)


@dataclass(frozen=True)
class AsyncAccepted:
    """The answer to ``invoke_async``: the call is durably queued."""

    call_id: str
    # The idempotency key named an earlier call: nothing new was queued, call_id is its.
    replay: bool
    response: httpx.Response


class LogLine(TypedDict, total=False):
    name: str
    instance: str
    call_id: str | None
    timestamp: str
    text: str
    stream: str


class ClientError(Exception):
    """The gateway answered with an error, or talking to it failed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.detail = detail


class GatewayUnreachable(ClientError):
    """Nothing answered at the gateway address."""

    def __init__(self, url: str) -> None:
        super().__init__(f"cannot reach faasbox at {url}")
        self.url = url


class NotAGateway(ClientError):
    """Something answered at the gateway address, but not as a faasbox gateway: a route
    every gateway has was not found (a wrong port, or a URL with a path)."""

    def __init__(self, url: str, method: str, path: str) -> None:
        parsed = httpx.URL(url)
        hint = ""
        if parsed.path not in ("", "/"):
            origin = str(parsed.copy_with(path="/", query=None, fragment=None)).rstrip("/")
            hint = f"; a gateway URL has no path: try {origin}"
        super().__init__(
            f"{url} does not look like a faasbox gateway ({method} {path} answered 404 "
            f"Not Found){hint}",
            status=404,
        )
        self.url = url


class CallTimeout(ClientError):
    """``invoke``: no answer within the caller's timeout (the call may still be running)."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"{name!r} did not answer within {timeout:g}s")
        self.name = name
        self.timeout = timeout


def normalize_url(url: str) -> str:
    """``localhost:8080`` → ``http://localhost:8080``; no trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def error_from_response(
    response: httpx.Response, *, not_found: str | None = None, gateway: str | None = None
) -> ClientError:
    """Build a ``ClientError`` from an error answer, reading the JSON error shape if any.

    With ``gateway`` (the base URL the request was made against), a 404 that is not faasbox
    saying what is missing (its JSON error shape, with a message naming the thing) becomes
    ``NotAGateway``: the route itself was not found, so the URL is wrong. ``not_found`` is
    the message for a 404 about the thing itself when the answer has none.
    """
    status = response.status_code
    code: str | None = None
    message: str | None = None
    detail: str | None = None
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    shaped = isinstance(body, dict) and isinstance(body.get("error"), dict)
    if shaped:
        err = body["error"]
        code = _str_or_none(err.get("code"))
        message = _str_or_none(err.get("message"))
        detail = _str_or_none(err.get("detail"))
    elif isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
    if status == 404 and gateway is not None and _unknown_route(shaped, code, message):
        request = response.request
        return NotAGateway(gateway, request.method, request.url.path)
    if message is None:
        if status == 404 and not_found is not None:
            message = not_found
        else:
            text = response.text.strip()
            message = f"HTTP {status} {response.reason_phrase}".rstrip()
            if text:
                message += f": {text[:500]}"
    return ClientError(message, status=status, code=code, detail=detail)


def _unknown_route(shaped: bool, code: str | None, message: str | None) -> bool:
    """Whether a 404 says the route is unknown rather than the function or activation.

    faasbox answers every 404 in its JSON error shape: ``function_not_found``, or
    ``not_found`` with a message naming what is missing ("activation 'x' not found"); an
    unknown route gets the bare "Not Found". Anything else is not faasbox at all."""
    if not shaped:
        return True
    if code == "function_not_found":
        return False
    return not message or message.strip().lower() == "not found"


def _str_or_none(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


class Client:
    """Synchronous client of one faasbox gateway. Use as a context manager, or ``close()``."""

    def __init__(
        self,
        base_url: str = DEFAULT_GATEWAY,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = normalize_url(base_url)
        url = httpx.URL(self.base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ClientError(f"invalid gateway URL {base_url!r}: use e.g. http://127.0.0.1:8080")
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": "faasbox-cli"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- management ------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", "/system/info"))

    def deploy(
        self,
        spec: Mapping[str, Any],
        zip_bytes: bytes,
        *,
        update: bool,
        wait: bool = True,
        on_upload: UploadProgress | None = None,
    ) -> FunctionStatus:
        """Upload a function version (POST to create, PUT with ``update=True``).

        With ``wait`` the call returns when the version is ready, and a failed build raises
        ``ClientError`` whose ``detail`` is the build log. A name that exists raises
        ``ClientError`` with status 409 when ``update`` is false.
        """
        body, content_type = _multipart(spec, zip_bytes)
        response = self._request(
            "PUT" if update else "POST",
            "/system/functions",
            params={"wait": "true"} if wait else None,
            content=_chunks(body, on_upload),
            headers={"Content-Type": content_type, "Content-Length": str(len(body))},
            timeout=httpx.Timeout(self.timeout, read=BUILD_TIMEOUT if wait else self.timeout),
        )
        self._check(response, not_found=_missing(str(spec.get("service", ""))))
        return cast(FunctionStatus, _json_body(response))

    def list_functions(self) -> list[FunctionStatus]:
        return cast(list[FunctionStatus], self._json("GET", "/system/functions"))

    def get_function(self, name: str) -> FunctionStatus:
        path = f"/system/function/{_seg(name)}"
        return cast(FunctionStatus, self._json("GET", path, not_found=_missing(name)))

    def delete_function(self, name: str) -> None:
        response = self._request("DELETE", "/system/functions", json={"functionName": name})
        self._check(response, not_found=_missing(name))

    def scale(self, name: str, replicas: int) -> FunctionStatus:
        """Ask for ``replicas``; returns the ``FunctionStatus`` after scaling, whose
        ``replicas`` is what the gateway actually runs (capped at ``scale.max``). An empty
        dict when the gateway answers without a body."""
        response = self._request(
            "POST",
            f"/system/scale-function/{_seg(name)}",
            json={"serviceName": name, "replicas": replicas},
        )
        self._check(response, not_found=_missing(name))
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            return {}
        return cast(FunctionStatus, body) if isinstance(body, dict) else {}

    def activations(self, name: str | None = None, limit: int | None = None) -> list[Activation]:
        """Recent records, newest first; for an unknown ``name`` the gateway answers 404,
        raised as ``ClientError`` "function 'NAME' not found"."""
        params: dict[str, str] = {}
        if name:
            params["name"] = name
        if limit is not None:
            params["limit"] = str(limit)
        return cast(
            list[Activation],
            self._json(
                "GET",
                "/system/activations",
                params=params,
                not_found=_missing(name) if name else None,
            ),
        )

    def activation(self, call_id: str) -> Activation:
        path = f"/system/activations/{_seg(call_id)}"
        return cast(
            Activation, self._json("GET", path, not_found=f"activation {call_id!r} not found")
        )

    # -- secrets ---------------------------------------------------------------------

    def list_secrets(self) -> list[Secret]:
        """Names only: the API never returns values."""
        return cast(list[Secret], self._json("GET", "/system/secrets"))

    def create_secret(self, name: str, value: bytes) -> None:
        """A name that exists raises ``ClientError`` with status 409."""
        self._send_secret("POST", name, value)

    def update_secret(self, name: str, value: bytes) -> None:
        """An unknown name raises ``ClientError`` with status 404."""
        self._send_secret("PUT", name, value)

    def delete_secret(self, name: str) -> None:
        """An unknown name raises 404; a secret a function lists, 409."""
        response = self._request("DELETE", "/system/secrets", json={"name": name})
        self._check(response, not_found=_missing_secret(name))

    def _send_secret(self, method: str, name: str, value: bytes) -> None:
        # rawValue carries any bytes exactly; the API takes text as "value" too.
        body = {"name": name, "rawValue": base64.b64encode(value).decode("ascii")}
        response = self._request(method, "/system/secrets", json=body)
        self._check(response, not_found=_missing_secret(name))

    # -- invoking and logs -----------------------------------------------------------

    def invoke(
        self,
        name: str,
        *,
        data: bytes | None = None,
        method: str | None = None,
        path: str = "",
        query: Sequence[tuple[str, str]] = (),
        headers: Sequence[tuple[str, str]] = (),
        timeout: float | None = INVOKE_TIMEOUT,
    ) -> httpx.Response:
        """Call ``/function/NAME[/path]`` and return the answer whatever its status.

        The method defaults to POST when there is data, else GET. Only a failure to talk to
        the gateway raises; no answer within ``timeout`` seconds raises ``CallTimeout``.
        """
        if path and not path.startswith("/"):
            path = "/" + path
        try:
            return self._http.request(
                method or ("POST" if data is not None else "GET"),
                f"/function/{_seg(name)}{quote(path)}",
                params=list(query),
                headers=list(headers),
                content=data,
                timeout=httpx.Timeout(self.timeout, read=timeout),
            )
        except httpx.ReadTimeout as exc:
            # The gateway took the call: it is the function that is slow, not faasbox
            # that is gone.
            raise CallTimeout(name, timeout or 0.0) from exc
        except httpx.HTTPError as exc:
            raise self._map(exc) from exc

    def invoke_async(
        self,
        name: str,
        *,
        data: bytes | None = None,
        path: str = "",
        query: Sequence[tuple[str, str]] = (),
        headers: Sequence[tuple[str, str]] = (),
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncAccepted:
        """Queue a call: POST ``/async-function/NAME[/path]``, answered 202 once it is
        stored. An error answer (unknown function, body too large, queue full, function
        not ready, bad callback URL) raises ``ClientError``."""
        if path and not path.startswith("/"):
            path = "/" + path
        extra = list(headers)
        if callback_url is not None:
            extra.append(("X-Callback-Url", callback_url))
        if idempotency_key is not None:
            extra.append(("X-Idempotency-Key", idempotency_key))
        response = self._request(
            "POST",
            f"/async-function/{_seg(name)}{quote(path)}",
            params=list(query),
            headers=extra,
            content=data,
        )
        self._check(response, not_found=_missing(name))
        call_id = response.headers.get("x-call-id")
        if not call_id:
            raise ClientError(
                f"POST /async-function/{name} answered {response.status_code} without an "
                "X-Call-Id header: is this a faasbox gateway with asynchronous calls?",
                status=response.status_code,
            )
        replay = response.headers.get("x-faasbox-idempotent-replay", "").lower() == "true"
        return AsyncAccepted(call_id, replay, response)

    def async_summary(self) -> AsyncSummary:
        return cast(AsyncSummary, self._json("GET", "/system/async"))

    def dead_letters(self, name: str | None = None, limit: int | None = None) -> list[AsyncCall]:
        """Asynchronous calls that ran out of retries (or of age), of one function or all."""
        params: dict[str, str] = {}
        if name:
            params["name"] = name
        if limit is not None:
            params["limit"] = str(limit)
        return cast(list[AsyncCall], self._json("GET", "/system/async/dead", params=params))

    def redrive(self, *, call_id: str | None = None, name: str | None = None) -> list[str]:
        """Queue dead letters again with a fresh retry budget: one (``call_id``), one
        function's (``name``), or all (neither); returns their call ids. A ``call_id``
        that is not a dead letter raises ``ClientError`` with status 404."""
        body: dict[str, str] = {}
        if call_id is not None:
            body["callId"] = call_id
        if name is not None:
            body["name"] = name
        answer = self._json(
            "POST",
            "/system/async/dead/redrive",
            json=body,
            not_found=f"no dead asynchronous call {call_id!r}" if call_id else None,
        )
        ids = answer.get("redriven") if isinstance(answer, dict) else None
        if not isinstance(ids, list):
            raise ClientError(f"unexpected answer to a redrive: {answer!r:.200}")
        return [str(i) for i in ids]

    def logs(
        self,
        name: str,
        *,
        tail: int | None = None,
        since: str | None = None,
        follow: bool = False,
    ) -> Iterator[LogLine]:
        """Yield log lines as they arrive; with ``follow`` until the caller stops."""
        params = {"name": name, "follow": "true" if follow else "false"}
        if tail is not None:
            params["tail"] = str(tail)
        if since:
            params["since"] = since
        timeout = httpx.Timeout(self.timeout, read=None if follow else self.timeout)
        try:
            with self._http.stream("GET", "/system/logs", params=params, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from_response(resp, not_found=_missing(name), gateway=self.base_url)
                for raw in resp.iter_lines():
                    if raw.strip():
                        yield _log_line(raw)
        except httpx.HTTPError as exc:
            raise self._map(exc) from exc

    # -- plumbing --------------------------------------------------------------------

    def _json(self, method: str, path: str, *, not_found: str | None = None, **kw: Any) -> Any:
        response = self._request(method, path, **kw)
        self._check(response, not_found=not_found)
        return _json_body(response)

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise self._map(exc) from exc

    def _check(self, response: httpx.Response, *, not_found: str | None = None) -> None:
        if response.status_code >= 400:
            raise error_from_response(response, not_found=not_found, gateway=self.base_url)

    def _map(self, exc: httpx.HTTPError) -> ClientError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return GatewayUnreachable(self.base_url)
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(f"timed out waiting for faasbox at {self.base_url}")
        if isinstance(exc, httpx.TransportError):
            return ClientError(f"connection to faasbox at {self.base_url} failed: {exc}")
        return ClientError(f"bad answer from faasbox at {self.base_url}: {exc}")


def _missing(name: str) -> str:
    return f"function {name!r} not found"


def _missing_secret(name: str) -> str:
    return f"secret {name!r} not found"


def _seg(text: str) -> str:
    return quote(text, safe="")


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise ClientError(
            f"expected JSON from {response.request.url.path}, got {response.text[:200]!r}",
            status=response.status_code,
        ) from None


def _log_line(raw: str) -> LogLine:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"text": raw}
    if not isinstance(value, dict):
        return {"text": raw}
    return cast(LogLine, value)


def _multipart(spec: Mapping[str, Any], zip_bytes: bytes) -> tuple[bytes, str]:
    """Encode the deploy body by hand so its length is known and its upload can be tracked."""
    boundary = secrets.token_hex(16)
    spec_json = json.dumps(dict(spec)).encode()
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="spec"\r\n'
        "Content-Type: application/json\r\n\r\n"
    ).encode()
    code_head = (
        f"\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="code"; filename="code.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + spec_json + code_head + zip_bytes + tail
    return body, f"multipart/form-data; boundary={boundary}"


def _chunks(
    body: bytes, on_upload: UploadProgress | None, size: int = 64 * 1024
) -> Iterator[bytes]:
    total = len(body)
    for start in range(0, total, size):
        chunk = body[start : start + size]
        yield chunk
        if on_upload is not None:
            on_upload(start + len(chunk), total)
    if total == 0 and on_upload is not None:
        on_upload(0, 0)
