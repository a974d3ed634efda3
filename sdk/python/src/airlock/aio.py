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
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any, TypeVar

import grpc

from . import _config
from . import _requests as rq
from .auth import KubectlToken, TokenSource
from .errors import CommandExitError, NotFound, from_rpc_error
from .types import CommandResult, FileEntry, Output, ProcessInfo, SandboxInfo
from .v1 import sandbox_pb2 as pb
from .v1 import sandbox_pb2_grpc as rpc

T = TypeVar("T")


class AsyncClient:
    """A connection to an Airlock gateway for asyncio code (arguments as :class:`airlock.Client`).
    Make it inside the event loop it is used in."""

    def __init__(
        self,
        addr: str | None = None,
        *,
        token: str | TokenSource | None = None,
        token_file: str | os.PathLike[str] | None = None,
        namespace: str | None = None,
        ca_cert: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        s = _config.settings(
            addr, token=token, token_file=token_file, namespace=namespace, ca_cert=ca_cert, tls_server_name=tls_server_name
        )
        self.namespace = s.namespace
        self._tokens = s.tokens
        if s.credentials is not None:
            self._channel = grpc.aio.secure_channel(s.target, s.credentials, options=s.options)
        else:
            self._channel = grpc.aio.insecure_channel(s.target, options=s.options)
        self.sandboxes = rpc.SandboxesStub(self._channel)
        self.processes = rpc.ProcessesStub(self._channel)
        self.files = rpc.FilesStub(self._channel)

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        # Minting a token runs kubectl: off the event loop.
        if isinstance(self._tokens, KubectlToken) and self._tokens.needs_renewal():
            await asyncio.to_thread(self._tokens.token)
        return _config.metadata(self._tokens)

    async def unary(self, method: Callable[..., Any], request: Any, *, files: bool = False, timeout: float | None = None) -> Any:
        try:
            return await method(request, metadata=await self.metadata(), timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e, files=files) from None

    async def stream(self, method: Callable[..., Any], request: Any, *, files: bool = False, timeout: float | None = None) -> AsyncIterator[Any]:
        call = method(request, metadata=await self.metadata(), timeout=timeout)
        try:
            async for resp in call:
                yield resp
        except grpc.RpcError as e:
            raise from_rpc_error(e, files=files) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Creating(Awaitable["AsyncSandbox"]):
    """What ``AsyncSandbox.create`` returns: await it, or ``async with`` it to delete on exit."""

    def __init__(self, make: Callable[[], Awaitable[AsyncSandbox]]) -> None:
        self._make = make
        self._sbx: AsyncSandbox | None = None

    def __await__(self) -> Generator[Any, None, AsyncSandbox]:
        return self._make().__await__()

    async def __aenter__(self) -> AsyncSandbox:
        self._sbx = await self._make()
        return self._sbx

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
        wait: bool = True,
        timeout: float = 300.0,
        client: AsyncClient | None = None,
        **connect: Any,
    ) -> _Creating:
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
                )
                created = await c.unary(c.sandboxes.CreateSandbox, req, timeout=timeout + 5 if wait else 30)
            except BaseException:
                if owns:
                    await c.close()
                raise
            return cls(c, SandboxInfo.from_proto(created), owns_client=owns)

        return _Creating(make)

    @classmethod
    async def connect(cls, name: str, *, namespace: str | None = None, client: AsyncClient | None = None, **connect: Any) -> AsyncSandbox:
        owns = client is None
        c = client or AsyncClient(**connect)
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
        c = client or AsyncClient(**connect)
        try:
            selector = labels if isinstance(labels, str) or labels is None else ",".join(f"{k}={v}" for k, v in labels.items())
            req = pb.ListSandboxesRequest(namespace=c.namespace if namespace is None else namespace, label_selector=selector or "")
            return [SandboxInfo.from_proto(s) for s in (await c.unary(c.sandboxes.ListSandboxes, req)).sandboxes]
        finally:
            if client is None:
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
    ) -> CommandResult:
        req = rq.exec_request(self.ref, cmd, env=env, cwd=cwd, timeout=timeout, stdin=stdin)
        return await self._collect(self.client.processes.Exec, req, cmd, check, on_stdout, on_stderr)

    def stream(
        self,
        cmd: rq.Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
    ) -> AsyncCommandStream:
        req = rq.exec_request(self.ref, cmd, env=env, cwd=cwd, timeout=timeout, stdin=stdin)
        return AsyncCommandStream(self.client.stream(self.client.processes.Exec, req))

    async def run_code(
        self,
        code: str,
        *,
        language: str = "python",
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        check: bool = False,
        on_stdout: Callable[[str], Any] | None = None,
        on_stderr: Callable[[str], Any] | None = None,
    ) -> CommandResult:
        req = rq.run_code_request(self.ref, code, language=language, env=env, cwd=cwd, timeout=timeout)
        return await self._collect(self.client.processes.RunCode, req, f"<{language} code>", check, on_stdout, on_stderr)

    async def _collect(self, method: Any, req: Any, cmd: Any, check: bool, on_stdout: Any, on_stderr: Any) -> CommandResult:
        c = rq.Collector()
        async for ev in self.client.stream(method, req):
            out = c.feed(ev)
            if out is not None:
                cb = on_stdout if out.stream == "stdout" else on_stderr
                if cb is not None:
                    r = cb(out.text)
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

    def __init__(self, events: AsyncIterator[pb.ExecEvent]) -> None:
        self._events = events
        self._collector = rq.Collector(keep=False)
        self.result: CommandResult | None = None

    async def __aiter__(self) -> AsyncIterator[Output]:
        async for ev in self._events:
            out = self._collector.feed(ev)
            if out is not None:
                yield out
        self.result = self._collector.result()

    async def wait(self) -> CommandResult:
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def cancel(self) -> None:
        close = getattr(self._events, "aclose", None)
        if close is not None:
            await close()


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

    async def output(self, *, follow: bool = True, stdout_offset: int = 0, stderr_offset: int = 0) -> AsyncIterator[Output]:
        c = self.sandbox.client
        req = pb.ConnectProcessRequest(
            sandbox=self.sandbox.ref, process=self._sel(), stdout_offset=stdout_offset, stderr_offset=stderr_offset, follow=follow
        )
        async for ev in c.stream(c.processes.ConnectProcess, req):
            kind = ev.WhichOneof("event")
            if kind in ("stdout", "stderr"):
                chunk = getattr(ev, kind)
                yield Output(kind, chunk.data, chunk.offset)

    async def wait(self, *, timeout: float | None = None) -> CommandResult:
        c = self.sandbox.client
        col = rq.Collector()
        req = pb.ConnectProcessRequest(sandbox=self.sandbox.ref, process=self._sel(), follow=True)
        async for ev in c.stream(c.processes.ConnectProcess, req, timeout=timeout):
            col.feed_process(ev)
        col.pid = self.pid
        return col.result()

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

    async def write(self, path: str, data: bytes | str | Iterable[bytes], *, mode: int = 0, parents: bool = True) -> int:
        c = self._sbx.client

        async def requests() -> AsyncIterator[pb.UploadRequest]:
            yield rq.upload_header(self._sbx.ref, path, mode, parents)
            for chunk in rq.chunks(data):
                yield pb.UploadRequest(chunk=chunk)

        return int((await c.unary(c.files.Upload, requests(), files=True)).size)

    async def upload(self, local_path: str | os.PathLike[str], path: str, *, mode: int = 0, parents: bool = True) -> int:
        with open(local_path, "rb") as f:
            return await self.write(path, f, mode=mode, parents=parents)

    async def iter_read(self, path: str) -> AsyncIterator[bytes]:
        c = self._sbx.client
        async for resp in c.stream(c.files.Download, pb.DownloadRequest(sandbox=self._sbx.ref, path=path), files=True):
            yield resp.chunk

    async def read(self, path: str) -> bytes:
        return b"".join([chunk async for chunk in self.iter_read(path)])

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def download(self, path: str, local_path: str | os.PathLike[str]) -> int:
        tmp = f"{os.fspath(local_path)}.airlock-part"
        size = 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in self.iter_read(path):
                    f.write(chunk)
                    size += len(chunk)
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
