"""Synchronous sandboxes: create, run commands, background processes and files.

    from airlock import Sandbox

    with Sandbox.create(template="python", ttl=600, env={"MODE": "test"}) as sbx:
        print(sbx.run("python3 -c 'print(6 * 7)'").stdout)

The asyncio twin of every class here is in :mod:`airlock.aio`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from . import _requests as rq
from .client import Client, StreamCall
from .errors import AlreadyExists, Cancelled, CommandExitError, NotFound, OutOfRange
from .types import CommandResult, FileEntry, Output, ProcessInfo, SandboxInfo
from .v1 import sandbox_pb2 as pb


class Sandbox:
    """A sandbox: an isolated pod with the Airlock agent in it.

    Use it as a context manager to delete it on exit. Every method raises an
    :class:`~airlock.errors.AirlockError` subclass when the gateway refuses the call.
    """

    def __init__(self, client: Client, info: SandboxInfo, *, owns_client: bool = False) -> None:
        self.client = client
        self.info = info
        self._owns_client = owns_client
        self.files = Files(self)
        self.processes = Processes(self)

    # ---- lifecycle -----------------------------------------------------------------------------

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
        client: Client | None = None,
        **connect: Any,
    ) -> Sandbox:
        """Creates a sandbox from an ``image`` or a SandboxTemplate (``template``; a pool of it
        serves the sandbox warm) and, with ``wait``, returns once it is Ready (at most ``timeout``
        seconds; the gateway deletes it if it does not get there).

        ``ttl`` and ``idle_timeout`` are seconds; ``env`` reaches every command; ``files`` maps
        absolute paths to text written before it is Ready; ``network`` is ``"none"`` (default),
        ``"internet"`` or a list of CIDRs; ``resources`` has ``cpu``, ``memory`` and
        ``ephemeral_storage`` quantities (image sandboxes only); ``run_as_user``/``run_as_group``,
        ``runtime_class``, ``working_dir``, ``read_only_root_filesystem`` and ``agent_in_image``
        are the Sandbox's fields of those names (image sandboxes only). Without ``client`` a new
        one is made from ``connect`` (see :class:`Client`) and closed with the sandbox.

        Without ``name`` the client picks ``sandbox-xxxxx``; if the call is abandoned (Ctrl-C, a
        lost connection) the client deletes what it may have created.
        """
        c, owns = _client(client, connect)
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
            created = _create(c, req, timeout + 5 if wait else 30)
        except BaseException:
            if owns:
                c.close()
            raise
        return cls(c, SandboxInfo.from_proto(created), owns_client=owns)

    @classmethod
    def connect(cls, name: str, *, namespace: str | None = None, client: Client | None = None, **connect: Any) -> Sandbox:
        """An existing sandbox by name (NotFound if there is none)."""
        c, owns = _client(client, connect)
        try:
            got = c.unary(c.sandboxes.GetSandbox, pb.GetSandboxRequest(sandbox=rq.ref(c.namespace if namespace is None else namespace, name)))
        except BaseException:
            if owns:
                c.close()
            raise
        return cls(c, SandboxInfo.from_proto(got), owns_client=owns)

    @staticmethod
    def list(
        *, namespace: str | None = None, labels: Mapping[str, str] | str | None = None, client: Client | None = None, **connect: Any
    ) -> list[SandboxInfo]:
        """The sandboxes of a namespace, optionally those matching ``labels`` (a dict, or a label
        selector string such as ``"team=ml,env!=prod"``)."""
        c, owns = _client(client, connect)
        try:
            req = rq.list_request(c.namespace if namespace is None else namespace, labels)
            return [SandboxInfo.from_proto(s) for s in c.unary(c.sandboxes.ListSandboxes, req).sandboxes]
        finally:
            if owns:
                c.close()

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def namespace(self) -> str:
        return self.info.namespace

    @property
    def ref(self) -> pb.SandboxRef:
        return rq.ref(self.info.namespace, self.info.name)

    def refresh(self) -> SandboxInfo:
        """Reads the sandbox again (``info`` is updated too)."""
        self.info = SandboxInfo.from_proto(self.client.unary(self.client.sandboxes.GetSandbox, pb.GetSandboxRequest(sandbox=self.ref)))
        return self.info

    def extend(self, seconds: int) -> SandboxInfo:
        """Adds ``seconds`` to the sandbox's time-to-live (up to the operator's maximum)."""
        req = pb.ExtendSandboxRequest(sandbox=self.ref, add_seconds=seconds)
        self.info = SandboxInfo.from_proto(self.client.unary(self.client.sandboxes.ExtendSandbox, req))
        return self.info

    def delete(self) -> None:
        """Deletes the sandbox (a sandbox that is gone already is not an error)."""
        try:
            self.client.unary(self.client.sandboxes.DeleteSandbox, pb.DeleteSandboxRequest(sandbox=self.ref))
        except NotFound:
            pass

    def close(self) -> None:
        """Closes the client if the sandbox made it (the sandbox keeps running)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.delete()
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Sandbox({self.namespace}/{self.name})"

    # ---- commands ------------------------------------------------------------------------------

    def run(
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
        """Runs a command and returns its exit status and output. ``cmd`` is a shell line (str)
        or an argv list. ``timeout`` (seconds) kills the command's whole process tree and sets
        ``timed_out``. ``check`` raises :class:`CommandExitError` unless it succeeded.
        ``on_stdout``/``on_stderr`` get the output as it arrives. ``request_timeout`` bounds the
        whole call on the client (:class:`~airlock.errors.DeadlineExceeded`; the command is
        killed)."""
        req = rq.exec_request(self.ref, cmd, env=env, cwd=cwd, timeout=timeout, stdin=stdin)
        return self._collect(self.client.processes.Exec, req, cmd, check, on_stdout, on_stderr, request_timeout)

    def stream(
        self,
        cmd: rq.Command,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
        request_timeout: float | None = None,
    ) -> CommandStream:
        """Runs a command, yielding its output (:class:`~airlock.types.Output`) as it arrives;
        ``result`` holds the exit status afterwards. Leaving the loop early (or the ``with``
        block, or ``cancel()``) kills the command."""
        req = rq.exec_request(self.ref, cmd, env=env, cwd=cwd, timeout=timeout, stdin=stdin)
        return CommandStream(self.client.stream(self.client.processes.Exec, req, timeout=request_timeout))

    def run_code(
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
        """Runs a snippet with the image's interpreter: ``python`` (python3), ``node`` or ``shell``."""
        req = rq.run_code_request(self.ref, code, language=language, env=env, cwd=cwd, timeout=timeout, stdin=stdin)
        return self._collect(self.client.processes.RunCode, req, f"<{language} code>", check, on_stdout, on_stderr, request_timeout)

    def _collect(
        self, method: Any, req: Any, cmd: Any, check: bool, on_stdout: Any, on_stderr: Any, request_timeout: float | None
    ) -> CommandResult:
        c = rq.Collector()
        for ev in self.client.stream(method, req, timeout=request_timeout):
            out = c.feed(ev)
            if out is not None:
                cb = on_stdout if out.stream == "stdout" else on_stderr
                if cb is not None:
                    cb(c.text(out))
        result = c.result()
        if check and not result.ok:
            raise CommandExitError(cmd, result)
        return result

    def start(
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
    ) -> Process:
        """Starts a background process and returns once it runs. It outlives this call and this
        client; any client can find it again by pid or ``tag`` (``processes.connect``) and read its
        output from any offset its buffer (``buffer_bytes`` per stream, default 1 MiB) holds.
        ``tty`` runs it on a terminal of ``size`` (cols, rows)."""
        req = rq.start_request(
            self.ref, cmd, tag=tag, env=env, cwd=cwd, timeout=timeout, stdin=stdin, close_stdin=close_stdin, tty=tty, size=size,
            buffer_bytes=buffer_bytes,
        )
        info = self.client.unary(self.client.processes.StartProcess, req)
        return Process(self, info.pid, info.tag)


class CommandStream:
    """The output of a running command, chunk by chunk; ``result`` once the loop has ended."""

    def __init__(self, call: StreamCall) -> None:
        self._call = call
        self._collector = rq.Collector(keep=False)
        self._read = False
        self.result: CommandResult | None = None

    def __iter__(self) -> Iterator[Output]:
        if self._read:
            raise Cancelled("this command's output was read already (a stream is read once)")
        self._read = True
        try:
            for ev in self._call:
                out = self._collector.feed(ev)
                if out is not None:
                    yield out
            self.result = self._collector.result()
        finally:
            self._call.cancel()  # a no-op once the call has ended

    def wait(self) -> CommandResult:
        """Reads (and drops) the rest of the output and returns the result (Cancelled when the
        stream was left before the command ended)."""
        if self.result is None:
            for _ in self:
                pass
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        """Ends the call (from any thread); the command is killed."""
        self._call.cancel()

    def __enter__(self) -> CommandStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Processes:
    """The sandbox's background processes."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sbx = sandbox

    def list(self) -> list[ProcessInfo]:
        """Running and recently ended background processes."""
        c = self._sbx.client
        return [ProcessInfo.from_proto(p) for p in c.unary(c.processes.ListProcesses, pb.ListProcessesRequest(sandbox=self._sbx.ref)).processes]

    def connect(self, process: rq.Selector) -> Process:
        """A background process by pid or tag, from this or any other client (NotFound if the
        sandbox has no such process)."""
        sel = rq.selector(process)
        hits = [p for p in self.list() if (p.pid == sel.pid if sel.HasField("pid") else p.tag == sel.tag)]
        # A tag may name a running process and ended ones: the running one, else the newest.
        hits.sort(key=lambda p: (p.running, p.started_at is not None, p.started_at))
        if hits:
            return Process(self._sbx, hits[-1].pid, hits[-1].tag)
        raise NotFound(f"process {process!r} not found in sandbox {self._sbx.namespace}/{self._sbx.name}")


class Process:
    """A background process, by pid. Reading its output never stops it; :meth:`kill` does."""

    def __init__(self, sandbox: Sandbox, pid: int, tag: str = "") -> None:
        self.sandbox = sandbox
        self.pid = pid
        self.tag = tag

    def _sel(self) -> pb.ProcessSelector:
        return pb.ProcessSelector(pid=self.pid)

    def info(self) -> ProcessInfo:
        for p in self.sandbox.processes.list():
            if p.pid == self.pid:
                return p
        raise NotFound(f"process {self.pid} not found in sandbox {self.sandbox.namespace}/{self.sandbox.name}")

    def output(self, *, follow: bool = True, stdout_offset: int | None = None, stderr_offset: int | None = None) -> Iterator[Output]:
        """Its output until it exits (``follow``) or what is buffered now. Each chunk carries its
        byte offset, so a reader can resume where it stopped. Given offsets are read exactly
        (:class:`~airlock.errors.OutOfRange` when the buffer no longer holds them); without, it
        starts at the oldest output kept and skips ahead to what is still kept if the process
        writes faster than this reads (the chunks' offsets show the gap)."""
        exact = stdout_offset is not None or stderr_offset is not None
        if stdout_offset is None or stderr_offset is None:
            info = self.info()
            stdout_offset = info.stdout_start if stdout_offset is None else stdout_offset
            stderr_offset = info.stderr_start if stderr_offset is None else stderr_offset
        yield from self._read({"stdout": stdout_offset, "stderr": stderr_offset}, follow, not exact, None)

    def _read(self, offsets: dict[str, int], follow: bool, skip: bool, timeout: float | None) -> Iterator[Output]:
        c = self.sandbox.client
        behind = 0  # times in a row it fell behind with nothing read in between
        while True:
            try:
                for ev in c.stream(c.processes.ConnectProcess, rq.connect_request(self.sandbox.ref, self.pid, offsets, follow), timeout=timeout):
                    out = rq.process_output(ev, offsets)
                    if out is not None:
                        behind = 0
                        yield out
                return
            except OutOfRange:
                behind += 1
                if not skip or behind >= rq.CATCH_UP:
                    raise
                offsets = rq.skip_ahead(offsets, self.info())

    def wait(self, *, timeout: float | None = None) -> CommandResult:
        """Waits for it to exit and returns its status with the output its buffer holds then (the
        newest ``buffer_bytes`` of each stream). ``timeout``: DeadlineExceeded after that many
        seconds; the process keeps running."""
        info = self.info()
        if info.running:
            for _ in self._read({"stdout": info.stdout_end, "stderr": info.stderr_end}, True, True, timeout):
                pass
            info = self.info()
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        for chunk in self._read({"stdout": info.stdout_start, "stderr": info.stderr_start}, False, True, timeout):
            out[chunk.stream].append(chunk.data)
        return rq.ended_result(info, out["stdout"], out["stderr"])

    def send_input(self, data: bytes | str) -> None:
        self._input(data.encode() if isinstance(data, str) else bytes(data), close=False)

    def close_stdin(self) -> None:
        self._input(b"", close=True)

    def _input(self, data: bytes, close: bool) -> None:
        c = self.sandbox.client
        c.unary(c.processes.SendInput, pb.SendInputRequest(sandbox=self.sandbox.ref, process=self._sel(), data=data, close=close))

    def signal(self, number: int) -> None:
        """Sends signal ``number`` (for example 2, SIGINT) to its process group."""
        c = self.sandbox.client
        req = pb.SignalProcessRequest(sandbox=self.sandbox.ref, process=self._sel(), signal=pb.Signal(number=number))
        c.unary(c.processes.SignalProcess, req)

    def resize(self, cols: int, rows: int) -> None:
        """Resizes its terminal (a process started with ``tty``)."""
        c = self.sandbox.client
        req = pb.SignalProcessRequest(sandbox=self.sandbox.ref, process=self._sel(), resize=pb.Resize(cols=cols, rows=rows))
        c.unary(c.processes.SignalProcess, req)

    def kill(self) -> None:
        """Kills it and everything it started."""
        c = self.sandbox.client
        c.unary(c.processes.KillProcess, pb.KillProcessRequest(sandbox=self.sandbox.ref, process=self._sel()))

    def __repr__(self) -> str:
        return f"Process(pid={self.pid}, tag={self.tag!r}, sandbox={self.sandbox.name})"


class Files:
    """Files in the sandbox. Paths are absolute. Writes are atomic (a failed upload leaves the old
    file); reads and writes stream in 64 KiB chunks, so big files never sit in memory whole."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sbx = sandbox

    def write(self, path: str, data: bytes | str | Iterable[bytes], *, mode: int = 0, parents: bool = True) -> int:
        """Writes ``data`` (bytes, str, a binary file object or an iterable of bytes) to ``path``,
        creating missing parent directories with ``parents``. Returns the bytes written."""
        c = self._sbx.client

        def requests() -> Iterator[pb.UploadRequest]:
            yield rq.upload_header(self._sbx.ref, path, mode, parents)
            for chunk in rq.chunks(data):
                yield pb.UploadRequest(chunk=chunk)

        return int(c.upload(requests()).size)

    def upload(self, local_path: str | os.PathLike[str], path: str, *, mode: int = 0, parents: bool = True) -> int:
        """Copies a local file into the sandbox, streamed."""
        with open(local_path, "rb") as f:
            return self.write(path, f, mode=mode, parents=parents)

    def iter_read(self, path: str) -> Iterator[bytes]:
        """The file's content as chunks, streamed."""
        c = self._sbx.client
        for resp in c.stream(c.files.Download, pb.DownloadRequest(sandbox=self._sbx.ref, path=path), files=True):
            yield resp.chunk

    def read(self, path: str) -> bytes:
        return b"".join(self.iter_read(path))

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def download(self, path: str, local_path: str | os.PathLike[str]) -> int:
        """Copies a file out of the sandbox, streamed; the local file appears only when complete."""
        tmp = f"{os.fspath(local_path)}.airlock-part"
        size = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in self.iter_read(path):
                    f.write(chunk)
                    size += len(chunk)
            os.replace(tmp, local_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return size

    def list(self, path: str) -> list[FileEntry]:
        """The entries of a directory, sorted by name."""
        c = self._sbx.client
        resp = c.unary(c.files.ListDir, pb.ListDirRequest(sandbox=self._sbx.ref, path=path), files=True)
        return [FileEntry.from_proto(e, rq.join(path, e.name)) for e in resp.entries]

    def stat(self, path: str) -> FileEntry:
        c = self._sbx.client
        return FileEntry.from_proto(c.unary(c.files.Stat, pb.StatRequest(sandbox=self._sbx.ref, path=path), files=True), path)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except FileNotFoundError:
            return False

    def remove(self, path: str, *, recursive: bool = False) -> None:
        c = self._sbx.client
        c.unary(c.files.Remove, pb.RemoveRequest(sandbox=self._sbx.ref, path=path, recursive=recursive), files=True)

    def mkdir(self, path: str, *, parents: bool = True, mode: int = 0) -> None:
        c = self._sbx.client
        c.unary(c.files.MakeDir, pb.MakeDirRequest(sandbox=self._sbx.ref, path=path, parents=parents, mode=mode), files=True)

    def move(self, source: str, destination: str) -> None:
        c = self._sbx.client
        c.unary(c.files.Move, pb.MoveRequest(sandbox=self._sbx.ref, source=source, destination=destination), files=True)


def _client(client: Client | None, connect: dict[str, Any]) -> tuple[Client, bool]:
    if client is not None and connect:
        raise TypeError(f"give either client= or connection arguments ({', '.join(sorted(connect))}), not both")
    return (client, False) if client is not None else (Client(**connect), True)


def _create(c: Client, req: pb.CreateSandboxRequest, timeout: float) -> pb.Sandbox:
    """CreateSandbox under a name the client picks (unless given), retried on a name clash; a
    create abandoned midway is deleted, best effort."""
    generated = not req.name
    for attempt in range(3):
        if generated:
            req.name = rq.random_name()
        try:
            created: pb.Sandbox = c.unary(c.sandboxes.CreateSandbox, req, timeout=timeout)
            return created
        except AlreadyExists:
            if not generated or attempt == 2:
                raise
        except BaseException as e:
            # Only a name this call picked: a name the caller gave may be another sandbox's.
            if generated and rq.clean_up_after(e):
                delete = pb.DeleteSandboxRequest(sandbox=rq.ref(req.namespace, req.name))
                for pause in (0.0, 1.0):  # again after a moment: the create may land after the delete
                    time.sleep(pause)
                    try:
                        c.unary(c.sandboxes.DeleteSandbox, delete, timeout=10)
                        break
                    except NotFound:
                        continue
                    except Exception:
                        break  # best effort: the sandbox's TTL ends it otherwise
            raise
    raise AssertionError("unreachable")
