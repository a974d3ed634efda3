"""Airlock: disposable, isolated sandboxes on Kubernetes for AI agents to run code in.

    from airlock import Sandbox

    with Sandbox.create(template="python") as sbx:
        result = sbx.run("python3 -c 'print(6 * 7)'")
        print(result.stdout, result.exit_code)

The asyncio API is in :mod:`airlock.aio`; the OpenAI Agents SDK backend in :mod:`airlock.agents`
(extra ``agents``). The gRPC stubs the clients use are :mod:`airlock.v1.sandbox_pb2` and
:mod:`airlock.v1.sandbox_pb2_grpc`.
"""

from .auth import KubectlToken, StaticToken, TokenFile, TokenSource
from .client import Client
from .errors import (
    AirlockError,
    AlreadyExists,
    Cancelled,
    CommandExitError,
    DeadlineExceeded,
    FailedPrecondition,
    FileNotFound,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from .sandbox import CommandStream, Files, Process, Processes, Sandbox
from .types import CommandResult, FileEntry, Output, ProcessInfo, SandboxInfo

__version__ = "0.1.0"

__all__ = [
    "AirlockError",
    "AlreadyExists",
    "Cancelled",
    "Client",
    "CommandExitError",
    "CommandResult",
    "CommandStream",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FileEntry",
    "FileNotFound",
    "Files",
    "InvalidArgument",
    "KubectlToken",
    "NotFound",
    "Output",
    "OutOfRange",
    "PermissionDenied",
    "Process",
    "ProcessInfo",
    "Processes",
    "ResourceExhausted",
    "Sandbox",
    "SandboxInfo",
    "StaticToken",
    "TokenFile",
    "TokenSource",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]
