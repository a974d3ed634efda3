"""The clients against an in-process gRPC server standing in for the gateway: what cancellation
and upload failures do on the wire (the real gateway's behaviour is tested on the cluster)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures

import grpc
import pytest

from airlock import Client, Sandbox
from airlock.aio import AsyncClient, AsyncSandbox
from airlock.types import SandboxInfo
from airlock.v1 import sandbox_pb2 as pb
from airlock.v1 import sandbox_pb2_grpc as rpc


class Gateway(rpc.ProcessesServicer, rpc.FilesServicer, rpc.SandboxesServicer):
    def __init__(self) -> None:
        self.exec_ended = threading.Event()
        self.exec_calls = 0
        self.uploads: list[bytes] = []
        self.calls: list[str] = []

    def CreateSandbox(self, request, context):  # noqa: N802
        self.calls.append(f"create {request.name}")
        time.sleep(1)  # longer than the client waits
        context.abort(grpc.StatusCode.ALREADY_EXISTS, f"sandbox {request.name} exists")

    def DeleteSandbox(self, request, context):  # noqa: N802
        self.calls.append(f"delete {request.sandbox.name}")
        return pb.DeleteSandboxResponse()

    def Exec(self, request, context):  # noqa: N802
        self.exec_calls += 1
        context.add_callback(self.exec_ended.set)  # runs when the call ends, cancelled or not
        yield pb.ExecEvent(started=pb.Started(pid=1))
        for i in range(600):
            if not context.is_active():
                return
            yield pb.ExecEvent(stdout=f"line {i}\n".encode())
            time.sleep(0.05)
        yield pb.ExecEvent(exited=pb.Exited(exit_code=0))

    def Upload(self, request_iterator, context):  # noqa: N802
        first = next(request_iterator)
        if first.header.path == "/refused":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "upload /refused: permission denied")
        data = b"".join(r.chunk for r in request_iterator if r.WhichOneof("part") == "chunk")
        self.uploads.append(data)
        return pb.UploadResponse(size=len(data))


@pytest.fixture
def gateway():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    gw = Gateway()
    rpc.add_ProcessesServicer_to_server(gw, server)
    rpc.add_FilesServicer_to_server(gw, server)
    rpc.add_SandboxesServicer_to_server(gw, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield gw, f"http://127.0.0.1:{port}"
    server.stop(0)


def _info() -> SandboxInfo:
    return SandboxInfo.from_proto(pb.Sandbox(namespace="ns", name="s", ready=True))


def test_leaving_a_stream_early_ends_the_call(gateway) -> None:
    gw, addr = gateway
    with Client(addr, token="t") as c:
        sbx = Sandbox(c, _info())
        stream = sbx.stream("x")
        for out in stream:
            assert out.text == "line 0\n"
            break
        # `stream` is still referenced: the call must end anyway, not when it is collected.
        assert gw.exec_ended.wait(2), "the server's Exec kept running after the loop was left"
        gw.exec_ended.clear()
        with sbx.stream("x") as s2:
            next(iter(s2))
        assert gw.exec_ended.wait(2)


def test_cancel_from_another_thread(gateway) -> None:
    gw, addr = gateway
    with Client(addr, token="t") as c:
        stream = Sandbox(c, _info()).stream("x")
        threading.Timer(0.3, stream.cancel).start()
        from airlock import Cancelled

        with pytest.raises(Cancelled):
            for _ in stream:
                pass
        assert gw.exec_ended.wait(2)


def test_upload_content_errors_are_raised_as_themselves(gateway) -> None:
    gw, addr = gateway

    def broken():
        yield b"first"
        raise OSError("disk went away")

    with Client(addr, token="t") as c:
        sbx = Sandbox(c, _info())
        with pytest.raises(OSError, match="disk went away"):
            sbx.files.write("/f", broken())
        assert sbx.files.write("/f", [b"a", b"bc"]) == 3


async def test_async_stream_and_upload(gateway) -> None:
    gw, addr = gateway
    async with AsyncClient(addr, token="t") as c:
        sbx = AsyncSandbox(c, _info())
        async for out in sbx.stream("x"):
            assert out.text == "line 0\n"
            break
        assert await asyncio.to_thread(gw.exec_ended.wait, 2), "Exec kept running after the async loop was left"

        async def broken():
            yield b"first"
            raise OSError("disk went away")

        with pytest.raises(OSError, match="disk went away"):
            await sbx.files.write("/f", broken())

        async def parts():
            for p in (b"a", b"bc", b"def"):
                yield p

        assert await sbx.files.write("/f", parts()) == 6 and gw.uploads[-1] == b"abcdef"


def test_client_and_connection_arguments_together_are_refused() -> None:
    with pytest.raises(TypeError, match="client="):
        Sandbox.connect("x", client=object(), addr="http://127.0.0.1:1")  # type: ignore[arg-type]


async def test_async_upload_refused_midway_is_the_servers_error(gateway) -> None:
    _, addr = gateway
    from airlock import AirlockError, PermissionDenied

    async with AsyncClient(addr, token="t") as c:
        sbx = AsyncSandbox(c, _info())
        codes = set()
        for _ in range(10):
            # grpc's core sometimes reports a call refused while the client still sends as INTERNAL
            # ("Internal error from Core") rather than the server's status: either way an
            # AirlockError, never the GeneratorExit grpc.aio throws into the content's iterator.
            with pytest.raises(AirlockError) as e:
                await sbx.files.write("/refused", b"x" * (16 * 1024 * 1024))
            codes.add(type(e.value))
        assert PermissionDenied in codes, codes


def test_an_abandoned_create_deletes_only_a_name_it_picked(gateway) -> None:
    gw, addr = gateway
    from airlock import DeadlineExceeded

    with Client(addr, token="t") as c:
        with pytest.raises(DeadlineExceeded):
            Sandbox.create("img", name="taken", client=c, timeout=-4.7)  # a 0.3 s deadline
        assert gw.calls == ["create taken"], "the caller's name may be another sandbox's: never deleted"
        gw.calls.clear()
        with pytest.raises(DeadlineExceeded):
            Sandbox.create("img", client=c, timeout=-4.7)
        created = gw.calls[0].split()[1]
        assert created.startswith("sandbox-") and f"delete {created}" in gw.calls


async def test_async_stream_runs_once_and_cancel_is_an_airlock_error(gateway) -> None:
    gw, addr = gateway
    from airlock import Cancelled

    async with AsyncClient(addr, token="t") as c:
        sbx = AsyncSandbox(c, _info())
        s = sbx.stream("x")
        async for _ in s:
            break
        with pytest.raises(Cancelled):
            await s.wait()  # not a second run of the command
        assert gw.exec_calls == 1
        s2 = sbx.stream("x")

        async def cancel_soon() -> None:
            await asyncio.sleep(0.3)
            s2.cancel()

        canceller = asyncio.create_task(cancel_soon())
        with pytest.raises(Cancelled):
            async for _ in s2:
                pass
        await canceller
        assert not asyncio.current_task().cancelled()
