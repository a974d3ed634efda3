"""An OpenAI Agents SDK sandbox session on an Airlock sandbox.

The six operations the SDK builds everything on (exec, read, write, running, persist and hydrate
the workspace) map onto Airlock's gRPC calls; interactive commands (the shell tool's
``exec_command``/``write_stdin``) are Airlock background processes, read by a task per process.
"""

from __future__ import annotations

import asyncio
import io
import shlex
import stat
import time
from collections import deque
from dataclasses import dataclass, field
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
from agents.sandbox.session.base_sandbox_session import BaseSandboxSession
from agents.sandbox.session.pty_output import collect_pty_output
from agents.sandbox.session.pty_types import (
    PTY_PROCESSES_MAX,
    PtyExecUpdate,
    allocate_pty_process_id,
    clamp_pty_yield_time_ms,
    process_id_to_prune_from_meta,
    resolve_pty_write_yield_time_ms,
)
from agents.sandbox.session.runtime_helpers import RESOLVE_WORKSPACE_PATH_HELPER, RuntimeHelperScript
from agents.sandbox.session.tar_workspace import shell_tar_exclude_args
from agents.sandbox.files import EntryKind, FileEntry
from agents.sandbox.types import ExecResult, Permissions, User
from agents.sandbox.util.tar_utils import validate_tar_bytes
from agents.sandbox.workspace_paths import sandbox_path_str

from ..aio import AsyncProcess, AsyncSandbox
from ..errors import AirlockError, Unavailable
from ..v1 import sandbox_pb2 as pb

if TYPE_CHECKING:
    from ._client import AirlockSandboxSessionState

_KINDS = {"file": EntryKind.FILE, "dir": EntryKind.DIRECTORY, "symlink": EntryKind.SYMLINK}


@dataclass
class _Interactive:
    """A background process the shell tool talks to, and the output read from it so far."""

    process: AsyncProcess
    tty: bool
    chunks: deque[bytes] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    notify: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    last_used: float = field(default_factory=time.monotonic)
    reader: asyncio.Task[None] | None = None


class AirlockSandboxSession(BaseSandboxSession):
    """A session of the OpenAI Agents SDK on one Airlock sandbox."""

    state: AirlockSandboxSessionState

    def __init__(self, *, state: AirlockSandboxSessionState, sandbox: AsyncSandbox) -> None:
        self.state = state
        self.sandbox = sandbox
        self._pty_lock = asyncio.Lock()
        self._pty: dict[int, _Interactive] = {}
        self._pty_ids: set[int] = set()

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
        return {**self.state.options.env, **await self.state.manifest.environment.resolve()}

    def _cwd(self) -> str:
        return sandbox_path_str(self._workspace_root_path()) if self.state.workspace_root_ready else "/"

    async def _exec_internal(self, *command: str | Path, timeout: float | None = None) -> ExecResult:
        argv = [str(c) for c in command]
        try:
            r = await self.sandbox.run(argv, env=await self._env(), cwd=self._cwd(), timeout=timeout if timeout and timeout > 0 else None)
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
        """Lists a directory with Airlock's ListDir (``user``: the SDK's ``ls -la`` as that user)."""
        if user is not None:
            return await super().ls(path, user=user)
        target = sandbox_path_str(await self._validate_path_access(path))
        try:
            entries = await self.sandbox.files.list(target)
        except FileNotFoundError as e:
            raise WorkspaceReadNotFoundError(path=Path(target), cause=e) from e
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
        root = sandbox_path_str(self._workspace_root_path())
        tar = f"/tmp/airlock-persist-{self.state.session_id.hex}.tar"
        excludes = " ".join(shell_tar_exclude_args(self._persist_workspace_skip_relpaths()))
        try:
            r = await self.sandbox.run(f"tar {excludes} -C {shlex.quote(root)} -cf {tar} .", cwd="/")
            if not r.ok:
                raise WorkspaceArchiveReadError(path=self._workspace_root_path(), context={"stderr": r.stderr[-2000:], "exit_code": r.exit_code})
            return io.BytesIO(await self.sandbox.files.read(tar))
        except AirlockError as e:
            raise WorkspaceArchiveReadError(path=self._workspace_root_path(), cause=e) from e
        finally:
            await self._remove_quietly(tar)

    async def hydrate_workspace(self, data: io.IOBase) -> None:
        raw = data.read()
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        if not isinstance(raw, (bytes, bytearray)):
            raise WorkspaceWriteTypeError(path=self._workspace_root_path(), actual_type=type(raw).__name__)
        validate_tar_bytes(bytes(raw), allow_external_symlink_targets=False)
        root = sandbox_path_str(self._workspace_root_path())
        tar = f"/tmp/airlock-hydrate-{self.state.session_id.hex}.tar"
        try:
            await self.sandbox.files.mkdir(root, parents=True)
            await self.sandbox.files.write(tar, bytes(raw))
            r = await self.sandbox.run(["tar", "-C", root, "-xf", tar], cwd="/")
            if not r.ok:
                raise WorkspaceArchiveWriteError(path=self._workspace_root_path(), context={"stderr": r.stderr[-2000:], "exit_code": r.exit_code})
        except AirlockError as e:
            raise WorkspaceArchiveWriteError(path=self._workspace_root_path(), cause=e) from e
        finally:
            await self._remove_quietly(tar)
        self.state.workspace_root_ready = True

    async def _remove_quietly(self, path: str) -> None:
        try:
            await self.sandbox.files.remove(path)
        except AirlockError:
            pass  # a temporary file in /tmp of a sandbox that may be gone: nothing to lose

    async def _shutdown_backend(self) -> None:
        # The runner persists the workspace (stop) before it shuts down; resume makes a new sandbox.
        await self.sandbox.delete()

    # ---- interactive commands: background processes ---------------------------------------------

    def supports_pty(self) -> bool:
        return True

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
        try:
            proc = await self.sandbox.start(argv, env=await self._env(), cwd=self._cwd(), timeout=timeout, tty=tty, size=(80, 24) if tty else None)
        except AirlockError as e:
            raise ExecTransportError(command=command, context={"sandbox": self.sandbox.name, "message": e.message}, cause=e) from e
        entry = _Interactive(process=proc, tty=tty)
        entry.reader = asyncio.create_task(self._read(entry))
        async with self._pty_lock:
            pid = allocate_pty_process_id(self._pty_ids)
            self._pty_ids.add(pid)
            pruned = self._prune()
            self._pty[pid] = entry
        if pruned is not None:
            await self._terminate(pruned)
        wait_ms = clamp_pty_yield_time_ms(10_000 if yield_time_s is None else int(yield_time_s * 1000))
        return await self._update(pid, entry, wait_ms, max_output_tokens)

    async def pty_write_stdin(
        self, *, session_id: int, chars: str, yield_time_s: float | None = None, max_output_tokens: int | None = None
    ) -> PtyExecUpdate:
        async with self._pty_lock:
            entry = self._resolve_pty_session_entry(pty_processes=self._pty, session_id=session_id)
        if chars:
            try:
                await entry.process.send_input(chars)
            except AirlockError as e:
                raise ExecTransportError(command=("write_stdin",), context={"message": e.message}, cause=e) from e
        wait_ms = resolve_pty_write_yield_time_ms(yield_time_ms=250 if yield_time_s is None else int(yield_time_s * 1000), input_empty=chars == "")
        entry.last_used = time.monotonic()
        return await self._update(session_id, entry, wait_ms, max_output_tokens)

    async def pty_terminate_all(self) -> None:
        async with self._pty_lock:
            entries = list(self._pty.values())
            self._pty.clear()
            self._pty_ids.clear()
        for entry in entries:
            await self._terminate(entry)

    async def _read(self, entry: _Interactive) -> None:
        """Copies the process's output into ``entry`` until it exits (stdout and stderr merged)."""
        c = self.sandbox.client
        req = pb.ConnectProcessRequest(sandbox=self.sandbox.ref, process=pb.ProcessSelector(pid=entry.process.pid), follow=True)
        try:
            async for ev in c.stream(c.processes.ConnectProcess, req):
                kind = ev.WhichOneof("event")
                if kind in ("stdout", "stderr"):
                    async with entry.lock:
                        entry.chunks.append(getattr(ev, kind).data)
                    entry.notify.set()
                elif kind == "exited":
                    entry.exit_code = ev.exited.exit_code
        except AirlockError as e:
            async with entry.lock:
                entry.chunks.append(f"\n[airlock: lost the process's output: {e.message}]\n".encode())
            if entry.exit_code is None:
                entry.exit_code = -1
        finally:
            entry.closed.set()
            entry.notify.set()

    async def _update(self, pid: int, entry: _Interactive, wait_ms: int, max_output_tokens: int | None) -> PtyExecUpdate:
        output, tokens, closed = await collect_pty_output(
            output_chunks=entry.chunks,
            output_lock=entry.lock,
            output_notify=entry.notify,
            is_done=entry.closed.is_set,
            yield_time_ms=wait_ms,
            max_output_tokens=max_output_tokens,
        )
        live: int | None = pid
        exit_code = entry.exit_code if closed else None
        if closed:
            async with self._pty_lock:
                self._pty.pop(pid, None)
                self._pty_ids.discard(pid)
            live = None
        return PtyExecUpdate(process_id=live, output=output, exit_code=exit_code, original_token_count=tokens)

    def _prune(self) -> _Interactive | None:
        if len(self._pty) < PTY_PROCESSES_MAX:
            return None
        victim = process_id_to_prune_from_meta([(pid, e.last_used, e.closed.is_set()) for pid, e in self._pty.items()])
        if victim is None:
            return None
        self._pty_ids.discard(victim)
        return self._pty.pop(victim, None)

    async def _terminate(self, entry: _Interactive) -> None:
        if not entry.closed.is_set():
            try:
                await entry.process.kill()
            except AirlockError:
                pass  # ended meanwhile, or the sandbox is gone
        if entry.reader is not None and not entry.reader.done():
            entry.reader.cancel()
            await asyncio.gather(entry.reader, return_exceptions=True)
