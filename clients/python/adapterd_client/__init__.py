"""adapterd_client: a thin Python client for adapterd's gRPC APIs.

    from adapterd_client import Client
    with Client("127.0.0.1:50051") as c:
        r = c.generate("demo-qv-r4", prompt_token_ids=[1, 2, 3], max_new_tokens=8)
        print(list(r.token_ids))

The generated messages are re-exported as admin_pb2 and inference_pb2.
"""

from ._proto.adapterd.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from .client import ADAPTER_ID_KEY, Client
from .errors import (
    AdapterdError,
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    error_class,
)

__version__ = "0.1.0"

__all__ = [
    "ADAPTER_ID_KEY",
    "AdapterdError",
    "AlreadyExistsError",
    "CancelledError",
    "Client",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "admin_pb2",
    "admin_pb2_grpc",
    "error_class",
    "inference_pb2",
    "inference_pb2_grpc",
]
