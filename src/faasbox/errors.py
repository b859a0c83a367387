"""One error hierarchy for the whole platform.

The gateway turns every one of these into the JSON error shape
``{"error": {"code": ..., "message": ...}}`` with the status given here, in one place
(``faasbox.gateway.errors``). Anything that is not a ``FaasboxError`` is a bug and becomes a
500 without a stack trace.

    FaasboxError                      500 internal
    ├── BadRequest                    400 bad_request
    │   ├── InvalidName               400 invalid_name
    │   ├── InvalidBundle             400 invalid_bundle
    │   └── BuildFailed               400 build_failed   (carries the build log)
    ├── NotFound                      404 not_found
    │   └── FunctionNotFound          404 function_not_found
    ├── Conflict                      409 conflict
    ├── PayloadTooLarge               413 payload_too_large
    ├── TooManyRequests               429 too_many_requests
    ├── FunctionNotReady              503 function_not_ready
    └── InvocationError               (raised on the invoke path)
        ├── HandlerError              500 handler_error
        ├── ReplicaFailed             502 replica_failed  (crash, exit, protocol violation)
        │   ├── NotStarted            (retried on another replica, never seen by clients)
        │   ├── OutOfMemory           502 out_of_memory
        │   ├── ResponseTooLarge      502 response_too_large
        │   └── InvalidResponse       502 invalid_response  (a status or header HTTP cannot carry)
        └── InvocationTimeout         504 timeout
    SandboxDead                       500 sandbox_dead  (a call on a destroyed sandbox)
"""

from __future__ import annotations


class FaasboxError(Exception):
    status = 500
    code = "internal"
    # Set on the invoke path, for the activation record of a failed call.
    replica = ""
    version = 0
    cold_ms: float | None = None

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Extra text for the client (a build log, say); never a stack trace.
        self.detail = detail


class BadRequest(FaasboxError):
    status = 400
    code = "bad_request"


class InvalidName(BadRequest):
    code = "invalid_name"


class InvalidBundle(BadRequest):
    code = "invalid_bundle"


class BuildFailed(BadRequest):
    code = "build_failed"


class NotFound(FaasboxError):
    status = 404
    code = "not_found"


class FunctionNotFound(NotFound):
    code = "function_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"function {name!r} not found")
        self.name = name


class Conflict(FaasboxError):
    status = 409
    code = "conflict"


class PayloadTooLarge(FaasboxError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(FaasboxError):
    status = 429
    code = "too_many_requests"


class FunctionNotReady(FaasboxError):
    status = 503
    code = "function_not_ready"


class InvocationError(FaasboxError):
    pass


class HandlerError(InvocationError):
    status = 500
    code = "handler_error"


class ReplicaFailed(InvocationError):
    status = 502
    code = "replica_failed"


class NotStarted(ReplicaFailed):
    """The replica died before it began this call (it was queued behind another one):
    safe to run elsewhere."""

    code = "replica_failed"


class OutOfMemory(ReplicaFailed):
    code = "out_of_memory"


class ResponseTooLarge(ReplicaFailed):
    code = "response_too_large"


class InvalidResponse(ReplicaFailed):
    """The function answered with something HTTP cannot carry: a status outside 100-599, a
    header name that is not a token, a control character in a header value."""

    code = "invalid_response"


class InvocationTimeout(InvocationError):
    status = 504
    code = "timeout"


class SandboxDead(FaasboxError):
    code = "sandbox_dead"
