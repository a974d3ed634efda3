"""Exceptions of the Airlock SDK.

Every failed call raises an :class:`AirlockError` subclass chosen by the gRPC status code, with the
gateway's message (which names the field, sandbox or path at fault). The subclasses also derive
from the matching built-in exception where one exists, so ``except FileNotFoundError`` or
``except TimeoutError`` work as Python users expect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from .types import CommandResult


class AirlockError(Exception):
    """A call to the gateway failed. ``code`` is the gRPC status code, ``message`` its message."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(AirlockError, ValueError):
    """The request was malformed; the message starts with the field at fault."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AirlockError, LookupError):
    """No such sandbox or background process."""

    code = grpc.StatusCode.NOT_FOUND


class FileNotFound(NotFound, FileNotFoundError):
    """No such file or directory in the sandbox."""


class AlreadyExists(AirlockError):
    """A sandbox with this name, or a running process with this tag, exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(AirlockError):
    """The token is missing, invalid or expired."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AirlockError, PermissionError):
    """The caller may not do this in this namespace, or the sandbox refused a file operation."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(AirlockError):
    """The sandbox is not Ready (or expired), or a file operation met the wrong kind of file."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(AirlockError):
    """The namespace's sandbox quota is used up (or a message was over the size limit)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class OutOfRange(AirlockError):
    """Output was requested from an offset a process's buffer no longer holds."""

    code = grpc.StatusCode.OUT_OF_RANGE


class DeadlineExceeded(AirlockError, TimeoutError):
    """The call ran out of time (for example waiting for a sandbox to become Ready)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(AirlockError, ConnectionError):
    """The gateway, the Kubernetes API or the sandbox could not be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(AirlockError, NotImplementedError):
    """The gateway does not have this feature."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Cancelled(AirlockError):
    """The call was cancelled."""

    code = grpc.StatusCode.CANCELLED


class CommandExitError(Exception):
    """A command run with ``check=True`` exited non-zero, was killed or timed out."""

    def __init__(self, command: Any, result: CommandResult) -> None:
        how = (
            "timed out"
            if result.timed_out
            else f"was killed by signal {result.signal}"
            if result.signal
            else f"exited with {result.exit_code}"
        )
        tail = result.stderr.strip()[-500:]
        super().__init__(f"command {command!r} {how}" + (f": {tail}" if tail else ""))
        self.command = command
        self.result = result


_BY_CODE: dict[grpc.StatusCode, type[AirlockError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Unauthenticated,
        PermissionDenied,
        FailedPrecondition,
        ResourceExhausted,
        OutOfRange,
        DeadlineExceeded,
        Unavailable,
        Unimplemented,
        Cancelled,
    )
}


def from_rpc_error(err: grpc.RpcError, *, files: bool = False) -> AirlockError:
    """The SDK exception for a failed call (``files``: NOT_FOUND means a path, not a sandbox)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else None) or str(err)
    # The gateway's file errors read "<operation> <path>: ...", a missing sandbox "sandbox ns/x ...".
    if files and code == grpc.StatusCode.NOT_FOUND and not message.startswith("sandbox "):
        return FileNotFound(message)
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else AirlockError(message, code)
