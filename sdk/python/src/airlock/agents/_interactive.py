"""The shell tool's interactive commands (``exec_command``/``write_stdin``) as Airlock background
processes: one reader task per process follows its output by byte offset, reconnecting where it
stopped when a stream breaks (a gateway restart, a dropped connection), so output is neither lost
nor mistaken for the process's end."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from agents.sandbox.session.pty_output import collect_pty_output
from agents.sandbox.session.pty_types import (
    PTY_PROCESSES_MAX,
    PtyExecUpdate,
    allocate_pty_process_id,
    process_id_to_prune_from_meta,
)

from ..aio import AsyncSandbox
from ..errors import AirlockError, NotFound, OutOfRange
from ..v1 import sandbox_pb2 as pb

logger = logging.getLogger(__name__)

#: Output kept on this side between the tool's polls; older output is dropped (and said so)
#: rather than growing without bound for a command that prints forever.
MAX_BUFFERED = 8 * 1024 * 1024
#: Reconnects of a broken output stream before giving up on a process (and killing it).
RECONNECTS = 6


@dataclass
class Entry:
    """A background process the shell tool talks to, and the output read from it so far."""

    pid: int
    tag: str
    tty: bool
    chunks: deque[bytes] = field(default_factory=deque)
    buffered: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    notify: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    ended: bool = False
    """The process really exited (not just our reading of it stopped)."""
    last_used: float = field(default_factory=time.monotonic)
    reader: asyncio.Task[None] | None = None

    async def append(self, data: bytes) -> None:
        async with self.lock:
            self.chunks.append(data)
            # What is unread now (the tool's collector takes chunks without telling us).
            self.buffered = sum(map(len, self.chunks))
            dropped = 0
            while self.buffered > MAX_BUFFERED and len(self.chunks) > 1:
                old = self.chunks.popleft()
                self.buffered -= len(old)
                dropped += len(old)
            if dropped:
                note = f"[airlock: {dropped} bytes of output dropped: more than {MAX_BUFFERED} bytes unread]\n".encode()
                self.chunks.appendleft(note)
                self.buffered += len(note)
        self.notify.set()


def new_tag() -> str:
    """A tag per process, so one whose start was interrupted can still be found and killed."""
    return f"agents-{uuid.uuid4().hex[:16]}"


class Interactive:
    """The interactive processes of one session."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self.sandbox = sandbox
        self.lock = asyncio.Lock()
        self.entries: dict[int, Entry] = {}
        self.ids: set[int] = set()

    async def register(self, entry: Entry) -> int:
        entry.reader = asyncio.create_task(self._read(entry))
        async with self.lock:
            pid = allocate_pty_process_id(self.ids)
            self.ids.add(pid)
            pruned = self._prune()
            self.entries[pid] = entry
        if pruned is not None:
            await self.terminate(pruned)
        return pid

    async def update(self, pid: int, entry: Entry, wait_ms: int, max_output_tokens: int | None) -> PtyExecUpdate:
        output, tokens, closed = await collect_pty_output(
            output_chunks=entry.chunks,
            output_lock=entry.lock,
            output_notify=entry.notify,
            is_done=entry.closed.is_set,
            yield_time_ms=wait_ms,
            max_output_tokens=max_output_tokens,
        )
        async with entry.lock:
            entry.buffered = sum(map(len, entry.chunks))
        if not closed:
            return PtyExecUpdate(process_id=pid, output=output, exit_code=None, original_token_count=tokens)
        async with self.lock:
            self.entries.pop(pid, None)
            self.ids.discard(pid)
        await self.terminate(entry)  # kills it if only our reading ended
        return PtyExecUpdate(process_id=None, output=output, exit_code=entry.exit_code, original_token_count=tokens)

    async def terminate_all(self) -> None:
        async with self.lock:
            entries = list(self.entries.values())
            self.entries.clear()
            self.ids.clear()
        for entry in entries:
            await self.terminate(entry)

    async def terminate(self, entry: Entry) -> None:
        if not entry.ended:
            await self.kill(entry.tag)
        if entry.reader is not None and not entry.reader.done():
            entry.reader.cancel()
            await asyncio.gather(entry.reader, return_exceptions=True)

    async def kill(self, tag: str) -> None:
        """Kills a process by tag (its whole tree), if it still runs."""
        c = self.sandbox.client
        try:
            await c.unary(c.processes.KillProcess, pb.KillProcessRequest(sandbox=self.sandbox.ref, process=pb.ProcessSelector(tag=tag)))
        except AirlockError:
            pass  # ended meanwhile, never started, or the sandbox is gone

    def _prune(self) -> Entry | None:
        if len(self.entries) < PTY_PROCESSES_MAX:
            return None
        victim = process_id_to_prune_from_meta([(pid, e.last_used, e.closed.is_set()) for pid, e in self.entries.items()])
        if victim is None:
            return None
        self.ids.discard(victim)
        return self.entries.pop(victim, None)

    async def _read(self, entry: Entry) -> None:
        """Copies the process's output (stdout and stderr merged) into ``entry`` until it exits,
        reconnecting from the last offsets after a broken stream."""
        c = self.sandbox.client
        offsets = {"stdout": 0, "stderr": 0}
        failures = 0
        try:
            while True:
                req = pb.ConnectProcessRequest(
                    sandbox=self.sandbox.ref,
                    process=pb.ProcessSelector(pid=entry.pid),
                    stdout_offset=offsets["stdout"],
                    stderr_offset=offsets["stderr"],
                    follow=True,
                )
                try:
                    async for ev in await c.stream(c.processes.ConnectProcess, req):
                        kind = ev.WhichOneof("event")
                        if kind in ("stdout", "stderr"):
                            chunk = getattr(ev, kind)
                            offsets[kind] = chunk.offset + len(chunk.data)
                            failures = 0
                            await entry.append(chunk.data)
                        elif kind == "exited":
                            entry.exit_code, entry.ended = ev.exited.exit_code, True
                    if entry.ended:
                        return
                    raise AirlockError("the output stream ended before the process did")
                except OutOfRange as e:
                    # Written faster than read: go on from the oldest output still kept.
                    try:
                        info = await self._info(entry.pid)
                    except NotFound:
                        raise
                    except AirlockError as err:
                        failures += 1
                        if failures > RECONNECTS:
                            raise
                        logger.info("reading process %s of sandbox %s: %s", entry.pid, self.sandbox.name, err)
                        await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                        continue
                    if info is None:
                        raise NotFound(f"process {entry.pid} is gone from sandbox {self.sandbox.name}") from e
                    lost = max(0, info.stdout_start - offsets["stdout"]) + max(0, info.stderr_start - offsets["stderr"])
                    offsets["stdout"], offsets["stderr"] = max(offsets["stdout"], info.stdout_start), max(offsets["stderr"], info.stderr_start)
                    await entry.append(f"\n[airlock: {lost} bytes of output were no longer buffered]\n".encode())
                except NotFound:
                    raise
                except AirlockError as e:  # a broken stream (or ListProcesses failing just then)
                    failures += 1
                    if failures > RECONNECTS:
                        raise
                    logger.info("reconnecting to process %s of sandbox %s: %s", entry.pid, self.sandbox.name, e)
                    await asyncio.sleep(min(0.2 * 2**failures, 5.0))
        except AirlockError as e:
            await entry.append(f"\n[airlock: lost the process's output: {e.message}]\n".encode())
            await self.kill(entry.tag)
            if entry.exit_code is None:
                entry.exit_code = -1
        finally:
            entry.closed.set()
            entry.notify.set()

    async def _info(self, pid: int) -> pb.ProcessInfo | None:
        c = self.sandbox.client
        resp = await c.unary(c.processes.ListProcesses, pb.ListProcessesRequest(sandbox=self.sandbox.ref))
        return next((p for p in resp.processes if p.pid == pid), None)
