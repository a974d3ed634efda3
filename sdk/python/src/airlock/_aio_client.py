"""The asyncio connection to the gateway (the twin of airlock/client.py); :mod:`airlock.aio`
exports it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from . import _config
from .auth import KubectlToken, TokenSource
from .errors import Cancelled, from_rpc_error
from .v1 import sandbox_pb2_grpc as rpc


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

    async def stream(self, method: Callable[..., Any], request: Any, *, files: bool = False, timeout: float | None = None) -> AsyncStreamCall:
        return AsyncStreamCall(method(request, metadata=await self.metadata(), timeout=timeout), files)

    async def upload(self, requests: AsyncIterator[Any]) -> Any:
        """Files.Upload; an exception raised while producing the content is raised as itself
        (grpc.aio would turn it into a cancellation of the caller's task)."""
        failure: list[BaseException] = []

        async def guarded() -> AsyncIterator[Any]:
            try:
                async for r in requests:
                    yield r
            except Exception as e:  # not GeneratorExit: grpc closing the iterator after a refusal
                failure.append(e)
                raise

        try:
            return await self.files.Upload(guarded(), metadata=await self.metadata())
        except asyncio.CancelledError:
            if failure:
                raise failure[0] from None
            raise
        except grpc.RpcError as e:
            if failure:
                raise failure[0] from None
            raise from_rpc_error(e, files=True) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncStreamCall:
    """A server-streaming call of grpc.aio, iterated once; ``cancel()`` ends it."""

    def __init__(self, call: Any, files: bool) -> None:
        self._call = call
        self._files = files
        self._cancelled = False

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for resp in self._call:
                yield resp
        except grpc.RpcError as e:
            raise from_rpc_error(e, files=self._files) from None
        except asyncio.CancelledError:
            # grpc.aio reports a call cancelled here as the task's own cancellation: it is not.
            if self._cancelled:
                raise Cancelled("the call was cancelled") from None
            raise
        finally:
            self._call.cancel()

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()
