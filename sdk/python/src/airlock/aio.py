"""The asyncio client: the same classes as :mod:`airlock.sandbox`, with ``await`` and ``async for``.

    from airlock.aio import AsyncSandbox

    async with AsyncSandbox.create(template="python") as sbx:
        print((await sbx.run("echo hi")).stdout)

Each method's documentation is on its synchronous twin. This file mirrors airlock/sandbox.py
method for method (kept side by side on purpose: the request building and result handling they
share is in airlock/_requests.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any

from . import _requests as rq
from ._aio_client import AsyncClient, AsyncStreamCall
from .errors import AlreadyExists, Cancelled, CommandExitError, NotFound, OutOfRange
from .types import CommandResult, FileEntry, Output, ProcessInfo, SandboxInfo
from .v1 import sandbox_pb2 as pb

__all__ = ["AsyncClient", "AsyncCommandStream", "AsyncFiles", "AsyncProcess", "AsyncProcesses", "AsyncSandbox", "AsyncStreamCall"]


async def _achunks(data: bytes | str | Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """rq.chunks for asyncio: also async iterables; local files are read off the event loop."""
    if hasattr(data, "__aiter__"):
        async for block in data:
            for chunk in rq.chunks(block):
                yield chunk
    elif hasattr(data, "read"):
        while block := await asyncio.to_thread(data.read, rq.CHUNK):
            if isinstance(block, str):
                raise TypeError("files.write: open the file in binary mode ('rb')")
            yield block
    else:
        for chunk in rq.chunks(data):
            yield chunk


class _Creating(Awaitable["AsyncSandbox"]):
    """What ``AsyncSandbox.create`` returns: await it, or ``async with`` it to delete on exit."""

    def __init__(self, make: Callable[[], Awaitable[AsyncSandbox]]) -> None:
        self._make = make
        self._sbx: AsyncSandbox | None = None

    async def _once(self) -> AsyncSandbox:
        if self._sbx is None:  # awaiting it again, or also entering it, makes no second sandbox
            self._sbx = await self._make()
        return self._sbx

    def __await__(self) -> Generator[Any, None, AsyncSandbox]:
        return self._once().__await__()

    async def __aenter__(self) -> AsyncSandbox:
        return await self._once()

    async def __aexit__(self, *exc: object) -> None:
        if self._sbx is not None:
            await self._sbx.__aexit__(*exc)


class AsyncSandbox:
    """A sandbox, for asyncio code. See :class:`airlock.Sandbox`."""

    def __init__(self, client: AsyncClient, info: SandboxInfo, *, owns_client: bool = False) -> None:
        self.client = client
        self.info = info
        self._owns_client = owns_client
        self.files = AsyncFiles(self)
        self.processes = AsyncProcesses(self)

    @classmethod
    def create(
        cls,
        image: str | None = None,
        *,
        template: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        ttl: int | None = None,
        idle_timeout: int | None = None,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        resources: Mapping[str, str] | None = None,
        network: rq.NetworkSpec = None,
        files: Mapping[str, str] | None = None,
        run_as_user: int | None = None,
        run_as_group: int | None = None,
        runtime_class: str | None = None,
        working_dir: str | None = None,
        read_only_root_filesystem: bool = False,
        agent_in_image: bool = False,
        wait: bool = True,
        timeout: float = 300.0,
        client: AsyncClient | None = None,
        **connect: Any,
    ) -> _Creating:
        if client is not None and connect:
            raise TypeError(f"give either client= or connection arguments ({', '.join(sorted(connect))}), not both")

        async def make() -> AsyncSandbox:
            owns = client is None
            c = client or AsyncClient(**connect)
            try:
                req = rq.create_request(
                    namespace=c.namespace if namespace is None else namespace,
                    image=image,
                    template=template,
                    name=name,
                    ttl=ttl,
                    idle_timeout=idle_timeout,
                    env=env,
                    labels=labels,
                    resources=resources,
                    network_spec=network,
                    files=files,
                    wait=wait,
                    run_as_user=run_as_user,
                    run_as_group=run_as_group,
                    runtime_class=runtime_class,
                    working_dir=working_dir,
                    read_only_root_filesystem=read_only_root_filesystem,
                    agent_in_image=agent_in_image,
                )
                created = await _create(c, req, timeout + 5 if wait else 30)
            except BaseException:
                if owns:
                    await c.close()
                raise
            return cls(c, SandboxInfo.from_proto(created), owns_client=owns)

        return _Creating(make)

    @classmethod
    async def connect(cls, name: str, *, namespace: str | None = None, client: AsyncClient | None = None, **connect: Any) -> AsyncSandbox:
        c, owns = _client(client, connect)
        try:
            req = pb.GetSandboxRequest(sandbox=rq.ref(c.namespace if namespace is None else namespace, name))
            got = await c.unary(c.sandboxes.GetSandbox, req)
        except BaseException:
            if owns:
                await c.close()
            raise
        return cls(c, SandboxInfo.from_proto(got), owns_client=owns)

    @staticmethod
    async def list(
        *, namespace: str | None = None, labels: Mapping[str, str] | str | None = None, client: AsyncClient | None = None, **connect: Any
    ) -> list[SandboxInfo]:
        c, owns = _client(client, connect)
        try:
            req = rq.list_request(c.namespace if namespace is None else namespace, labels)
            return [SandboxInfo.from_proto(s) for s in (await c.unary(c.sandboxes.ListSandboxes, req)).sandboxes]
        finally:
            if owns:
                await c.close()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def namespace(self) -> str:
        return self.info.namespace

    @property
    def ref(self) -> pb.SandboxRef:
        return rq.ref(self.info.namespace, self.info.name)

    async def refresh(self) -> SandboxInfo:
        got = await self.client.unary(self.client.sandboxes.GetSandbox, pb.GetSandboxRequest(sandbox=self.ref))
        self.info = SandboxInfo.from_proto(got)
        return self.info

    async def extend(self, seconds: int) -> SandboxInfo:
        req = pb.ExtendSandboxRequest(sandbox=self.ref, add_seconds=seconds)
        self.info = SandboxInfo.from_proto(await self.client.unary(self.client.sandboxes.ExtendSandbox, req))
        return self.info

    async def delete(self) -> None:
        try:
            await self.client.unary(self.client.sandboxes.DeleteSandbox, pb.DeleteSandboxRequest(sandbox=self.ref))
        except NotFound:
            pass

    async def close(self) -> None:
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.delete()
        finally:
            await self.close()

    def __repr__(self) -> str:
        return f"AsyncSandbox({self.namespace}/{self.name})"

    async def run(
        self,
        cmd: rq.Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
        check: bool = False,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        req = rq.exec_request(self.ref, cmd, env=env, cwd=cwd, timeout=timeout, stdin=stdin)
        return await self._collect(self.client.processes.Exec, req, cmd, check, on_stdout, on_stderr, request_timeout)

    def stream(
        self,
        cmd: rq.Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
        request_timeout: float | None = None,
    ) -> AsyncCommandStream:
        req = rq.exec_request(self.ref, cmd, env=env, cwd=cwd, timeout=timeout, stdin=stdin)
        return AsyncCommandStream(self.client, self.client.processes.Exec, req, request_timeout)

    async def run_code(
        self,
        code: str,
        *,
        language: str = "python",
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
        check: bool = False,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
        request_timeout: float | None = None,
    ) -> CommandResult:
        req = rq.run_code_request(self.ref, code, language=language, env=env, cwd=cwd, timeout=timeout, stdin=stdin)
        return await self._collect(self.client.processes.RunCode, req, f"<{language} code>", check, on_stdout, on_stderr, request_timeout)

    async def _collect(
        self, method: Any, req: Any, cmd: Any, check: bool, on_stdout: Any, on_stderr: Any, request_timeout: float | None
    ) -> CommandResult:
        c = rq.Collector()
        async for ev in await self.client.stream(method, req, timeout=request_timeout):
            out = c.feed(ev)
            if out is not None:
                cb = on_stdout if out.stream == "stdout" else on_stderr
                if cb is not None:
                    r = cb(c.text(out))
                    if asyncio.iscoroutine(r):
                        await r
        result = c.result()
        if check and not result.ok:
            raise CommandExitError(cmd, result)
        return result

    async def start(
        self,
        cmd: rq.Command,
        *,
        tag: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
        close_stdin: bool = False,
        tty: bool = False,
        size: tuple[int, int] | None = None,
        buffer_bytes: int = 0,
    ) -> AsyncProcess:
        req = rq.start_request(
            self.ref, cmd, tag=tag, env=env, cwd=cwd, timeout=timeout, stdin=stdin, close_stdin=close_stdin, tty=tty, size=size,
            buffer_bytes=buffer_bytes,
        )
        info = await self.client.unary(self.client.processes.StartProcess, req)
        return AsyncProcess(self, info.pid, info.tag)


class AsyncCommandStream:
    """``async for`` the output of a running command; ``result`` once the loop has ended."""

    def __init__(self, client: AsyncClient, method: Any, req: Any, request_timeout: float | None) -> None:
        self._start = (client, method, req, request_timeout)
        self._call: AsyncStreamCall | None = None
        self._read = False
        self._cancelled = False
        self._collector = rq.Collector(keep=False)
        self.result: CommandResult | None = None

    async def __aiter__(self) -> AsyncIterator[Output]:
        # The command starts on the first iteration, and only then: a stream is read once.
        if self._read or self._cancelled:
            raise Cancelled("this command's output was read already, or the stream was cancelled")
        self._read = True
        client, method, req, request_timeout = self._start
        call = self._call = await client.stream(method, req, timeout=request_timeout)
        try:
            async for ev in call:
                out = self._collector.feed(ev)
                if out is not None:
                    yield out
            self.result = self._collector.result()
        finally:
            call.cancel()

    async def wait(self) -> CommandResult:
        if self.result is None:
            async for _ in self:
                pass
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        """Ends the call; the command is killed."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncCommandStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class AsyncProcesses:
    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox

    async def list(self) -> list[ProcessInfo]:
        c = self._sbx.client
        resp = await c.unary(c.processes.ListProcesses, pb.ListProcessesRequest(sandbox=self._sbx.ref))
        return [ProcessInfo.from_proto(p) for p in resp.processes]

    async def connect(self, process: rq.Selector) -> AsyncProcess:
        sel = rq.selector(process)
        hits = [p for p in await self.list() if (p.pid == sel.pid if sel.HasField("pid") else p.tag == sel.tag)]
        hits.sort(key=lambda p: (p.running, p.started_at is not None, p.started_at))
        if hits:
            return AsyncProcess(self._sbx, hits[-1].pid, hits[-1].tag)
        raise NotFound(f"process {process!r} not found in sandbox {self._sbx.namespace}/{self._sbx.name}")


class AsyncProcess:
    """A background process, by pid. See :class:`airlock.sandbox.Process`."""

    def __init__(self, sandbox: AsyncSandbox, pid: int, tag: str = "") -> None:
        self.sandbox = sandbox
        self.pid = pid
        self.tag = tag

    def _sel(self) -> pb.ProcessSelector:
        return pb.ProcessSelector(pid=self.pid)

    async def info(self) -> ProcessInfo:
        for p in await self.sandbox.processes.list():
            if p.pid == self.pid:
                return p
        raise NotFound(f"process {self.pid} not found in sandbox {self.sandbox.namespace}/{self.sandbox.name}")

    async def output(self, *, follow: bool = True, stdout_offset: int | None = None, stderr_offset: int | None = None) -> AsyncIterator[Output]:
        exact = stdout_offset is not None or stderr_offset is not None
        if stdout_offset is None or stderr_offset is None:
            info = await self.info()
            stdout_offset = info.stdout_start if stdout_offset is None else stdout_offset
            stderr_offset = info.stderr_start if stderr_offset is None else stderr_offset
        async for out in self._read({"stdout": stdout_offset, "stderr": stderr_offset}, follow, not exact, None):
            yield out

    async def _read(self, offsets: dict[str, int], follow: bool, skip: bool, timeout: float | None) -> AsyncIterator[Output]:
        c = self.sandbox.client
        behind = 0  # times in a row it fell behind with nothing read in between
        while True:
            try:
                req = rq.connect_request(self.sandbox.ref, self.pid, offsets, follow)
                async for ev in await c.stream(c.processes.ConnectProcess, req, timeout=timeout):
                    out = rq.process_output(ev, offsets)
                    if out is not None:
                        behind = 0
                        yield out
                return
            except OutOfRange:
                behind += 1
                if not skip or behind >= rq.CATCH_UP:
                    raise
                offsets = rq.skip_ahead(offsets, await self.info())

    async def wait(self, *, timeout: float | None = None) -> CommandResult:
        info = await self.info()
        if info.running:
            async for _ in self._read({"stdout": info.stdout_end, "stderr": info.stderr_end}, True, True, timeout):
                pass
            info = await self.info()
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        async for chunk in self._read({"stdout": info.stdout_start, "stderr": info.stderr_start}, False, True, timeout):
            out[chunk.stream].append(chunk.data)
        return rq.ended_result(info, out["stdout"], out["stderr"])

    async def send_input(self, data: bytes | str) -> None:
        await self._input(data.encode() if isinstance(data, str) else bytes(data), close=False)

    async def close_stdin(self) -> None:
        await self._input(b"", close=True)

    async def _input(self, data: bytes, close: bool) -> None:
        c = self.sandbox.client
        await c.unary(c.processes.SendInput, pb.SendInputRequest(sandbox=self.sandbox.ref, process=self._sel(), data=data, close=close))

    async def signal(self, number: int) -> None:
        c = self.sandbox.client
        req = pb.SignalProcessRequest(sandbox=self.sandbox.ref, process=self._sel(), signal=pb.Signal(number=number))
        await c.unary(c.processes.SignalProcess, req)

    async def resize(self, cols: int, rows: int) -> None:
        c = self.sandbox.client
        req = pb.SignalProcessRequest(sandbox=self.sandbox.ref, process=self._sel(), resize=pb.Resize(cols=cols, rows=rows))
        await c.unary(c.processes.SignalProcess, req)

    async def kill(self) -> None:
        c = self.sandbox.client
        await c.unary(c.processes.KillProcess, pb.KillProcessRequest(sandbox=self.sandbox.ref, process=self._sel()))

    def __repr__(self) -> str:
        return f"AsyncProcess(pid={self.pid}, tag={self.tag!r}, sandbox={self.sandbox.name})"


class AsyncFiles:
    """Files in the sandbox. See :class:`airlock.sandbox.Files`."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sbx = sandbox

    async def write(
        self, path: str, data: bytes | str | Iterable[bytes] | AsyncIterable[bytes], *, mode: int = 0, parents: bool = True
    ) -> int:
        """As :meth:`airlock.sandbox.Files.write`; ``data`` may also be an async iterable of bytes
        (for example another sandbox's ``files.iter_read``)."""
        c = self._sbx.client

        async def requests() -> AsyncIterator[pb.UploadRequest]:
            yield rq.upload_header(self._sbx.ref, path, mode, parents)
            async for chunk in _achunks(data):
                yield pb.UploadRequest(chunk=chunk)

        return int((await c.upload(requests())).size)

    async def upload(self, local_path: str | os.PathLike[str], path: str, *, mode: int = 0, parents: bool = True) -> int:
        f = await asyncio.to_thread(open, local_path, "rb")
        try:
            return await self.write(path, f, mode=mode, parents=parents)
        finally:
            f.close()

    async def iter_read(self, path: str) -> AsyncGenerator[bytes, None]:
        c = self._sbx.client
        async for resp in await c.stream(c.files.Download, pb.DownloadRequest(sandbox=self._sbx.ref, path=path), files=True):
            yield resp.chunk

    async def read(self, path: str) -> bytes:
        return b"".join([chunk async for chunk in self.iter_read(path)])

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def download(self, path: str, local_path: str | os.PathLike[str]) -> int:
        tmp = f"{os.fspath(local_path)}.airlock-part"
        size = 0
        try:
            f = await asyncio.to_thread(open, tmp, "wb")
            try:
                async for chunk in self.iter_read(path):
                    await asyncio.to_thread(f.write, chunk)
                    size += len(chunk)
            finally:
                f.close()
            os.replace(tmp, local_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return size

    async def list(self, path: str) -> list[FileEntry]:
        c = self._sbx.client
        resp = await c.unary(c.files.ListDir, pb.ListDirRequest(sandbox=self._sbx.ref, path=path), files=True)
        return [FileEntry.from_proto(e, rq.join(path, e.name)) for e in resp.entries]

    async def stat(self, path: str) -> FileEntry:
        c = self._sbx.client
        return FileEntry.from_proto(await c.unary(c.files.Stat, pb.StatRequest(sandbox=self._sbx.ref, path=path), files=True), path)

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
            return True
        except FileNotFoundError:
            return False

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        c = self._sbx.client
        await c.unary(c.files.Remove, pb.RemoveRequest(sandbox=self._sbx.ref, path=path, recursive=recursive), files=True)

    async def mkdir(self, path: str, *, parents: bool = True, mode: int = 0) -> None:
        c = self._sbx.client
        await c.unary(c.files.MakeDir, pb.MakeDirRequest(sandbox=self._sbx.ref, path=path, parents=parents, mode=mode), files=True)

    async def move(self, source: str, destination: str) -> None:
        c = self._sbx.client
        await c.unary(c.files.Move, pb.MoveRequest(sandbox=self._sbx.ref, source=source, destination=destination), files=True)


def _client(client: AsyncClient | None, connect: dict[str, Any]) -> tuple[AsyncClient, bool]:
    if client is not None and connect:
        raise TypeError(f"give either client= or connection arguments ({', '.join(sorted(connect))}), not both")
    return (client, False) if client is not None else (AsyncClient(**connect), True)


async def _create(c: AsyncClient, req: pb.CreateSandboxRequest, timeout: float) -> pb.Sandbox:
    """As airlock.sandbox._create: a client-picked name, retried on a clash; an abandoned create
    (a cancelled task included) is deleted, best effort."""
    generated = not req.name
    for attempt in range(3):
        if generated:
            req.name = rq.random_name()
        try:
            created: pb.Sandbox = await c.unary(c.sandboxes.CreateSandbox, req, timeout=timeout)
            return created
        except AlreadyExists:
            if not generated or attempt == 2:
                raise
        except BaseException as e:
            # Only a name this call picked: a name the caller gave may be another sandbox's.
            if generated and rq.clean_up_after(e):
                delete = pb.DeleteSandboxRequest(sandbox=rq.ref(req.namespace, req.name))
                for pause in (0.0, 1.0):  # again after a moment: the create may land after the delete
                    try:
                        await asyncio.sleep(pause)
                        await asyncio.shield(c.unary(c.sandboxes.DeleteSandbox, delete, timeout=10))
                        break
                    except NotFound:
                        continue
                    except BaseException:
                        break  # best effort: the sandbox's TTL ends it otherwise
            raise
    raise AssertionError("unreachable")
