"""Plain data the SDK returns: sandboxes, command results, output chunks, processes, files."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Literal

from .v1 import sandbox_pb2 as pb

Stream = Literal["stdout", "stderr"]
FileType = Literal["file", "dir", "symlink", "other", "unknown"]

_PHASES = {
    pb.PHASE_UNSPECIFIED: "Unknown",
    pb.PHASE_PENDING: "Pending",
    pb.PHASE_STARTING: "Starting",
    pb.PHASE_READY: "Ready",
    pb.PHASE_EXPIRED: "Expired",
    pb.PHASE_FAILED: "Failed",
}
_FILE_TYPES: dict[int, FileType] = {
    pb.FILE_TYPE_FILE: "file",
    pb.FILE_TYPE_DIR: "dir",
    pb.FILE_TYPE_SYMLINK: "symlink",
    pb.FILE_TYPE_OTHER: "other",
}


def _time(msg: pb.Sandbox, name: str) -> _dt.datetime | None:
    if not msg.HasField(name):
        return None
    stamp: _dt.datetime = getattr(msg, name).ToDatetime(tzinfo=_dt.timezone.utc)
    return stamp


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox as the gateway reports it."""

    namespace: str
    name: str
    uid: str
    image: str
    template: str
    phase: str
    """``Pending``, ``Starting``, ``Ready``, ``Expired``, ``Failed`` or ``Unknown``."""
    ready: bool
    start_mode: str
    """``Warm`` (claimed from a pool), ``Cold``, or empty (not templated or not known yet)."""
    message: str
    labels: dict[str, str]
    env: dict[str, str]
    ttl_seconds: int
    idle_timeout_seconds: int
    pod_name: str
    created_at: _dt.datetime | None
    ready_at: _dt.datetime | None
    expires_at: _dt.datetime | None
    """When it ends: the earlier of its time-to-live and idle deadlines."""
    ttl_expires_at: _dt.datetime | None
    """When its time-to-live runs out (with extensions), regardless of idleness."""
    extension_seconds: int
    deleting: bool

    @classmethod
    def from_proto(cls, s: pb.Sandbox) -> SandboxInfo:
        return cls(
            namespace=s.namespace,
            name=s.name,
            uid=s.uid,
            image=s.image,
            template=s.template,
            phase=_PHASES.get(s.phase, "Unknown"),
            ready=s.ready,
            start_mode=s.start_mode,
            message=s.message,
            labels=dict(s.labels),
            env=dict(s.env),
            ttl_seconds=s.ttl_seconds,
            idle_timeout_seconds=s.idle_timeout_seconds,
            pod_name=s.pod_name,
            created_at=_time(s, "created_at"),
            ready_at=_time(s, "ready_at"),
            expires_at=_time(s, "expires_at"),
            ttl_expires_at=_time(s, "ttl_expires_at"),
            extension_seconds=s.extension_seconds,
            deleting=s.deleting,
        )


@dataclass(frozen=True)
class Output:
    """A chunk of a command's output. ``offset`` is its byte offset in its stream (background
    processes; 0 for foreground commands)."""

    stream: Stream
    data: bytes
    offset: int = 0

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class CommandResult:
    """How a command ended, with its output."""

    exit_code: int
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    signal: int = 0
    """Signal that killed it (from the 128+N convention), 0 when none."""
    timed_out: bool = False
    """True when its ``timeout`` ran out and it was killed."""
    duration: float = 0.0
    """Seconds it ran, as the gateway saw it."""
    pid: int = 0

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True)
class ProcessInfo:
    """A background process: running, or how it ended."""

    pid: int
    tag: str
    argv: list[str]
    tty: bool
    running: bool
    exit_code: int | None
    signal: int
    timed_out: bool
    stdout_end: int
    """Bytes written to stdout so far (where a reader that is caught up continues)."""
    stderr_end: int
    stdout_start: int
    """The oldest stdout offset its buffer still holds."""
    stderr_start: int
    started_at: _dt.datetime | None

    @classmethod
    def from_proto(cls, p: pb.ProcessInfo) -> ProcessInfo:
        ended = p.HasField("exited")
        return cls(
            pid=p.pid,
            tag=p.tag,
            argv=list(p.argv),
            tty=p.tty,
            running=p.running,
            exit_code=p.exited.exit_code if ended else None,
            signal=p.exited.signal if ended else 0,
            timed_out=p.exited.timed_out if ended else False,
            stdout_end=p.stdout_end,
            stderr_end=p.stderr_end,
            stdout_start=p.stdout_start,
            stderr_start=p.stderr_start,
            started_at=p.started_at.ToDatetime(tzinfo=_dt.timezone.utc) if p.HasField("started_at") else None,
        )


@dataclass(frozen=True)
class FileEntry:
    """A file, directory or link in a sandbox (links are not followed)."""

    name: str
    path: str
    type: FileType
    size: int
    mode: int
    mtime: _dt.datetime | None = field(default=None)

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @classmethod
    def from_proto(cls, f: pb.FileInfo, path: str) -> FileEntry:
        return cls(
            name=f.name.rsplit("/", 1)[-1] or f.name,
            path=path,
            type=_FILE_TYPES.get(f.type, "unknown"),
            size=f.size,
            mode=f.mode,
            mtime=f.mtime.ToDatetime(tzinfo=_dt.timezone.utc) if f.HasField("mtime") else None,
        )
