"""Typed errors: one class per gRPC status code the server returns."""

from typing import Dict, Optional, Type

import grpc


class AdapterdError(Exception):
    """A failed call. `code` is the grpc.StatusCode, `message` the server's text.

    `request_id` is the server-assigned request id when the server sent one
    (x-request-id); `attempts` is how many times the call was tried (more
    than 1 only when retries were enabled and the code was retryable).
    """

    def __init__(self, code: grpc.StatusCode, message: str, *, request_id: Optional[str] = None, attempts: int = 1):
        super().__init__("%s: %s" % (code.name, message))
        self.code = code
        self.message = message
        self.request_id = request_id
        self.attempts = attempts


class NotFoundError(AdapterdError):
    """NOT_FOUND: e.g. an adapter id that is not loaded."""


class AlreadyExistsError(AdapterdError):
    """ALREADY_EXISTS: a load or upload under an id already loaded, without replace."""


class InvalidArgumentError(AdapterdError):
    """INVALID_ARGUMENT: a malformed request (bad id, bad sampling, bad files...)."""


class FailedPreconditionError(AdapterdError):
    """FAILED_PRECONDITION: e.g. Classify through a causal-LM adapter."""


class ResourceExhaustedError(AdapterdError):
    """RESOURCE_EXHAUSTED: a full queue, a request too large for the KV cache, a pin that does not fit..."""


class UnavailableError(AdapterdError):
    """UNAVAILABLE: the server cannot be reached, is shutting down, or the adapter is still loading."""


class UnauthenticatedError(AdapterdError):
    """UNAUTHENTICATED: no credential, or one the server does not accept."""


class PermissionDeniedError(AdapterdError):
    """PERMISSION_DENIED: a valid credential without the role (e.g. the inference token on Admin)."""


class DeadlineExceededError(AdapterdError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class CancelledError(AdapterdError):
    """CANCELLED: the call was cancelled (by the client or the server)."""


class InternalError(AdapterdError):
    """INTERNAL: a server-side failure."""


ERRORS_BY_CODE: Dict[grpc.StatusCode, Type[AdapterdError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def error_class(code: grpc.StatusCode) -> Type[AdapterdError]:
    """The class raised for `code` (AdapterdError itself for codes without one)."""
    return ERRORS_BY_CODE.get(code, AdapterdError)


def _request_id(err: grpc.RpcError) -> Optional[str]:
    for getter in ("initial_metadata", "trailing_metadata"):
        try:
            md = getattr(err, getter)()
        except Exception:  # not a grpc.Call, or no metadata
            continue
        for key, value in md or ():
            if key == "x-request-id":
                return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def from_rpc_error(err: grpc.RpcError, attempts: int = 1) -> AdapterdError:
    """The typed error for a grpc.RpcError raised by a stub."""
    try:
        code = err.code()
        message = err.details() or ""
    except Exception:  # an RpcError that is not a grpc.Call
        code, message = grpc.StatusCode.UNKNOWN, str(err)
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return error_class(code)(code, message, request_id=_request_id(err), attempts=attempts)
