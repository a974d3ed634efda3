"""An OpenAI Agents SDK sandbox session on an Airlock sandbox.

The six operations the SDK builds everything on (exec, read, write, running, persist and hydrate
the workspace) map onto Airlock's gRPC calls; ``ls`` is Airlock's ListDir; the shell tool's
interactive commands are Airlock background processes (``_interactive.py``).
"""

from __future__ import annotations

import io
import logging
import shlex
import stat
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from agents.sandbox.errors import (
    ExecTimeoutError,
    ExecTransportError,
    WorkspaceArchiveReadError,
    WorkspaceArchiveWriteError,
    WorkspaceReadNotFoundError,
    WorkspaceStartError,
    WorkspaceWriteTypeError,
)
from agents.sandbox.files import EntryKind, FileEntry
from agents.sandbox.session.base_sandbox_session import BaseSandboxSession
from agents.sandbox.session.bounded_read import collect_bounded
from agents.sandbox.session.pty_types import PtyExecUpdate, clamp_pty_yield_time_ms, resolve_pty_write_yield_time_ms
from agents.sandbox.session.runtime_helpers import RESOLVE_WORKSPACE_PATH_HELPER, RuntimeHelperScript
from agents.sandbox.session.tar_workspace import shell_tar_exclude_args
from agents.sandbox.types import ExecResult, Permissions, User
from agents.sandbox.util.tar_utils import UnsafeTarMemberError, validate_tar_bytes
from agents.sandbox.workspace_paths import sandbox_path_str

from ..aio import AsyncSandbox
from ..errors import AirlockError, DeadlineExceeded, FailedPrecondition, NotFound, Unavailable, Unimplemented
from ..v1 import sandbox_pb2 as pb
from ._interactive import Entry, Interactive, new_tag

if TYPE_CHECKING:
    from ._client import AirlockSandboxSessionState

logger = logging.getLogger(__name__)

_KINDS = {"file": EntryKind.FILE, "dir": EntryKind.DIRECTORY, "symlink": EntryKind.SYMLINK}
#: Added to a command's own timeout for the gRPC deadline of its call (a stalled gateway).
_GRACE = 30.0
#: tar's "some files changed while being read": the archive is still complete for every file.
_TAR_WARNING = 1


def _refuse_other_user(argv: list[str], command: tuple[object, ...]) -> None:
    """The SDK runs a command as another user through ``sudo -u USER --``; Airlock sandboxes run
    with no privilege escalation, so that cannot work: say so instead of sudo's failure."""
    if len(argv) >= 4 and argv[0] == "sudo" and argv[1] == "-u" and argv[3] == "--":
        raise ExecTransportError(
            command=[str(c) for c in command],
            message=f"running as user {argv[2]!r} is not supported: Airlock sandboxes run every command as the sandbox's user "
            "(no privilege escalation); leave run_as/user unset",
            context={"reason": "run_as_unsupported"},
        )


class AirlockSandboxSession(BaseSandboxSession):
    """A session of the OpenAI Agents SDK on one Airlock sandbox."""

    state: AirlockSandboxSessionState

    def __init__(self, *, state: AirlockSandboxSessionState, sandbox: AsyncSandbox) -> None:
        self.state = state
        self.sandbox = sandbox
        self._interactive = Interactive(sandbox)
        self._background_unavailable = False

    # ---- the SDK's path checks run in the sandbox (symlinks cannot escape the workspace) -------

    async def _validate_path_access(self, path: Path | str, *, for_write: bool = False) -> Path:
        return await self._validate_remote_path_access(path, for_write=for_write)

    def _runtime_helpers(self) -> tuple[RuntimeHelperScript, ...]:
        return (RESOLVE_WORKSPACE_PATH_HELPER,)

    def _current_runtime_helper_cache_key(self) -> object | None:
        return f"{self.state.namespace}/{self.state.sandbox_name}"

    async def _prepare_backend_workspace(self) -> None:
        root = sandbox_path_str(self._workspace_root_path())
        try:
            await self.sandbox.files.mkdir(root, parents=True)
        except AirlockError as e:
            raise WorkspaceStartError(path=self._workspace_root_path(), cause=e) from e

    # ---- exec ----------------------------------------------------------------------------------

    async def _env(self) -> dict[str, str]:
        # Sent with each command, never stored on the Sandbox object (manifest values may be secrets).
        return {**self.state.options.env, **await self.state.manifest.environment.resolve()}

    def _cwd(self) -> str:
        return sandbox_path_str(self._workspace_root_path()) if self.state.workspace_root_ready else "/"

    async def _exec_internal(self, *command: str | Path, timeout: float | None = None) -> ExecResult:
        argv = [str(c) for c in command]
        _refuse_other_user(argv, command)
        limit = (timeout if timeout > 0 else 1.0) if timeout is not None else None  # as e2b's backend: <= 0 is 1 s
        try:
            r = await self.sandbox.run(
                argv, env=await self._env(), cwd=self._cwd(), timeout=limit, request_timeout=None if limit is None else limit + _GRACE
            )
        except DeadlineExceeded as e:
            raise ExecTimeoutError(command=command, timeout_s=timeout, cause=e) from e
        except AirlockError as e:
            raise ExecTransportError(
                command=command,
                context={"sandbox": self.sandbox.name, "code": e.code.name, "message": e.message},
                cause=e,
                retryable=isinstance(e, Unavailable),
            ) from e
        if r.timed_out:
            raise ExecTimeoutError(command=command, timeout_s=timeout, context={"sandbox": self.sandbox.name})
        return ExecResult(stdout=r.stdout_bytes, stderr=r.stderr_bytes, exit_code=r.exit_code)

    # ---- files ---------------------------------------------------------------------------------

    async def read(self, path: Path, *, user: str | User | None = None) -> io.IOBase:
        if user is not None:
            await self._check_read_with_exec(path, user=user)
        target = await self._validate_path_access(path)
        try:
            return io.BytesIO(await self.sandbox.files.read(sandbox_path_str(target)))
        except FileNotFoundError as e:
            raise WorkspaceReadNotFoundError(path=path, cause=e) from e
        except AirlockError as e:
            raise WorkspaceArchiveReadError(path=path, cause=e) from e

    async def _read_bounded(self, path: Path, *, max_bytes: int) -> bytes:
        target = await self._validate_path_access(path)
        chunks = self.sandbox.files.iter_read(sandbox_path_str(target))
        try:
            return await collect_bounded(chunks, max_bytes)
        except FileNotFoundError as e:
            raise WorkspaceReadNotFoundError(path=path, cause=e) from e
        except AirlockError as e:
            raise WorkspaceArchiveReadError(path=path, cause=e) from e
        finally:
            await chunks.aclose()  # stops the download

    async def write(self, path: Path, data: io.IOBase, *, user: str | User | None = None) -> None:
        if user is not None:
            await self._check_write_with_exec(path, user=user)
        payload = data.read()
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if not isinstance(payload, (bytes, bytearray)):
            raise WorkspaceWriteTypeError(path=path, actual_type=type(payload).__name__)
        target = await self._validate_path_access(path, for_write=True)
        try:
            await self.sandbox.files.write(sandbox_path_str(target), bytes(payload), parents=True)
        except AirlockError as e:
            raise WorkspaceArchiveWriteError(path=target, cause=e) from e

    async def ls(self, path: Path | str, *, user: str | User | None = None) -> list[FileEntry]:
        """A directory's entries from Airlock's ListDir. As another user, or when ListDir refuses
        (a missing path, a file), the SDK's own ``ls -la`` answers, with its errors."""
        if user is not None:
            return await super().ls(path, user=user)
        target = sandbox_path_str(await self._validate_path_access(path))
        try:
            entries = await self.sandbox.files.list(target)
        except (FileNotFoundError, FailedPrecondition):
            return await super().ls(path)
        except AirlockError as e:
            raise WorkspaceArchiveReadError(path=Path(target), cause=e) from e
        return [
            FileEntry(
                path=e.path,
                permissions=Permissions.from_mode((e.mode & 0o777) | (stat.S_IFDIR if e.is_dir else 0)),
                owner="",
                group="",
                size=e.size,
                kind=_KINDS.get(e.type, EntryKind.OTHER),
            )
            for e in entries
        ]

    async def running(self) -> bool:
        if not self.state.workspace_root_ready:
            return False
        try:
            info = await self.sandbox.refresh()
        except AirlockError:
            return False
        return info.ready and not info.deleting

    # ---- workspace snapshots: an uncompressed tar, members relative to the root -----------------

    async def persist_workspace(self) -> io.IOBase:
        """``tar -cf -`` of the workspace root, streamed back through Exec (nothing is written in
        the sandbox, so a root at / or /tmp works and the disk limit is not doubled)."""
        root = sandbox_path_str(self._workspace_root_path())
        excludes = " ".join(shell_tar_exclude_args(self._persist_workspace_skip_relpaths()))
        try:
            r = await self.sandbox.run(f"tar {excludes} -C {shlex.quote(root)} -cf - .", cwd="/")
        except AirlockError as e:
            raise WorkspaceArchiveReadError(path=self._workspace_root_path(), cause=e) from e
        # GNU tar's exit code 1 is "some files changed while being read" (the archive is complete);
        # BusyBox tar says 1 for every failure, so only that message makes it a warning.
        changed = r.exit_code == _TAR_WARNING and "changed as we read" in r.stderr
        if (r.exit_code != 0 and not changed) or r.timed_out:
            raise WorkspaceArchiveReadError(path=self._workspace_root_path(), context={"stderr": r.stderr[-2000:], "exit_code": r.exit_code})
        if changed:
            logger.warning("workspace of sandbox %s changed while it was archived: %s", self.sandbox.name, r.stderr[-500:])
        return io.BytesIO(r.stdout_bytes)

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        raw = data.read()
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if not isinstance(raw, (bytes, bytearray)):
            raise WorkspaceWriteTypeError(path=self._workspace_root_path(), actual_type=type(raw).__name__)
        try:
            validate_tar_bytes(bytes(raw), allow_external_symlink_targets=False)
        except UnsafeTarMemberError as e:
            raise WorkspaceArchiveWriteError(path=self._workspace_root_path(), context={"reason": "unsafe_or_invalid_tar"}, cause=e) from e
        root = sandbox_path_str(self._workspace_root_path())
        # Uploaded (streamed, any size) to a file outside the root, then unpacked.
        tar = f"/tmp/airlock-hydrate-{uuid.uuid4().hex}.tar"
        try:
            await self.sandbox.files.mkdir(root, parents=True)
            await self.sandbox.files.write(tar, bytes(raw))
            r = await self.sandbox.run(["tar", "-C", root, "-xf", tar], cwd="/")
        except AirlockError as e:
            raise WorkspaceArchiveWriteError(path=self._workspace_root_path(), cause=e) from e
        finally:
            try:
                await self.sandbox.files.remove(tar)
            except AirlockError:
                pass  # never written, or the sandbox is gone
        if not r.ok:
            raise WorkspaceArchiveWriteError(path=self._workspace_root_path(), context={"stderr": r.stderr[-2000:], "exit_code": r.exit_code})
        self.state.workspace_root_ready = True

    async def _shutdown_backend(self) -> None:
        """Deletes the sandbox (the runner has persisted the workspace before), unless the options
        keep it alive for a later resume. Best effort, as the SDK's shutdown is: its TTL ends it
        otherwise."""
        if self.state.options.keep_alive:
            return
        try:
            await self.sandbox.delete()
        except AirlockError as e:
            logger.warning("could not delete sandbox %s/%s at shutdown: %s", self.sandbox.namespace, self.sandbox.name, e)

    # ---- interactive commands ------------------------------------------------------------------

    def supports_pty(self) -> bool:
        return not self._background_unavailable

    async def pty_exec_start(
        self,
        *command: str | Path,
        timeout: float | None = None,
        shell: bool | list[str] = True,
        user: str | User | None = None,
        tty: bool = False,
        yield_time_s: float | None = None,
        max_output_tokens: int | None = None,
    ) -> PtyExecUpdate:
        argv = [str(c) for c in self._prepare_exec_command(*command, shell=shell, user=user)]
        _refuse_other_user(argv, command)
        tag = new_tag()
        registered = False
        entry = Entry(pid=0, tag=tag, tty=tty)
        try:
            # Without a tty there is no way to send EOF later: stdin is closed at once (as e2b's).
            proc = await self.sandbox.start(
                argv, tag=tag, env=await self._env(), cwd=self._cwd(), timeout=timeout, tty=tty, close_stdin=not tty,
                size=(80, 24) if tty else None,
            )
            entry.pid = proc.pid
            pid = await self._interactive.register(entry)
            registered = True
        except (FailedPrecondition, Unimplemented) as e:
            # No background processes here (a gateway without the direct agent path): the shell
            # tool falls back to one-shot commands.
            self._background_unavailable = True
            raise ExecTransportError(command=command, context={"retry_safe": True, "message": e.message}, cause=e) from e
        except AirlockError as e:
            raise ExecTransportError(command=command, context={"sandbox": self.sandbox.name, "message": e.message}, cause=e) from e
        finally:
            if not registered:
                await self._interactive.kill(tag)  # a start interrupted (cancelled) after it began
        wait_ms = clamp_pty_yield_time_ms(10_000 if yield_time_s is None else int(yield_time_s * 1000))
        return await self._interactive.update(pid, entry, wait_ms, max_output_tokens)

    async def pty_write_stdin(
        self, *, session_id: int, chars: str, yield_time_s: float | None = None, max_output_tokens: int | None = None
    ) -> PtyExecUpdate:
        async with self._interactive.lock:
            entry = self._resolve_pty_session_entry(pty_processes=self._interactive.entries, session_id=session_id)
        if chars:
            if not entry.tty:
                raise RuntimeError("stdin is not available for this process")
            if not entry.closed.is_set():
                try:
                    req = pb.SendInputRequest(sandbox=self.sandbox.ref, process=pb.ProcessSelector(pid=entry.pid), data=chars.encode("utf-8"))
                    await self.sandbox.client.unary(self.sandbox.client.processes.SendInput, req)
                except (FailedPrecondition, NotFound):
                    pass  # it has just exited: the update below reports how
                except AirlockError as e:
                    raise ExecTransportError(command=("write_stdin",), context={"message": e.message}, cause=e) from e
        wait_ms = resolve_pty_write_yield_time_ms(yield_time_ms=250 if yield_time_s is None else int(yield_time_s * 1000), input_empty=chars == "")
        entry.last_used = time.monotonic()
        return await self._interactive.update(session_id, entry, wait_ms, max_output_tokens)

    async def pty_terminate_all(self) -> None:
        await self._interactive.terminate_all()

