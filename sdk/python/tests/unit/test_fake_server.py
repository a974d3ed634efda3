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


class Gateway(rpc.ProcessesServicer, rpc.FilesServicer):
    def __init__(self) -> None:
        self.exec_ended = threading.Event()
        self.uploads: list[bytes] = []

    def Exec(self, request, context):  # noqa: N802
        context.add_callback(self.exec_ended.set)  # runs when the call ends, cancelled or not
        yield pb.ExecEvent(started=pb.Started(pid=1))
        for i in range(600):
            if not context.is_active():
                return
            yield pb.ExecEvent(stdout=f"line {i}\n".encode())
            time.sleep(0.05)
        yield pb.ExecEvent(exited=pb.Exited(exit_code=0))

    def Upload(self, request_iterator, context):  # noqa: N802
        data = b"".join(r.chunk for r in request_iterator if r.WhichOneof("part") == "chunk")
        self.uploads.append(data)
        return pb.UploadResponse(size=len(data))


@pytest.fixture
def gateway():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    gw = Gateway()
    rpc.add_ProcessesServicer_to_server(gw, server)
    rpc.add_FilesServicer_to_server(gw, server)
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
