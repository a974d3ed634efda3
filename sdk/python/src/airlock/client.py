"""The synchronous client: a connection to the gateway, and the calls every other class makes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc

from . import _config
from .auth import TokenSource
from .errors import from_rpc_error
from .v1 import sandbox_pb2_grpc as rpc

T = TypeVar("T")


class Client:
    """A connection to an Airlock gateway.

    ``addr`` is ``http://HOST:PORT`` or ``https://HOST:PORT`` (default ``AIRLOCK_ADDR``, else
    http://127.0.0.1:50051). The token is ``token`` (a string or a :class:`~airlock.auth.TokenSource`
    such as :class:`~airlock.auth.KubectlToken`), else ``token_file``, else ``AIRLOCK_TOKEN`` /
    ``AIRLOCK_TOKEN_FILE``. ``namespace`` (default ``AIRLOCK_NAMESPACE``, else the gateway's
    default) is where sandboxes are made and looked up. ``ca_cert`` and ``tls_server_name``
    (``AIRLOCK_CA_CERT``, ``AIRLOCK_TLS_SERVER_NAME``) are for https addresses.

    One client can serve many sandboxes and threads; close it (or use ``with``) when done.
    """

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
            self._channel = grpc.secure_channel(s.target, s.credentials, options=s.options)
        else:
            self._channel = grpc.insecure_channel(s.target, options=s.options)
        self.sandboxes = rpc.SandboxesStub(self._channel)
        self.processes = rpc.ProcessesStub(self._channel)
        self.files = rpc.FilesStub(self._channel)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return _config.metadata(self._tokens)

    def unary(self, method: Callable[..., T], request: Any, *, files: bool = False, timeout: float | None = None) -> T:
        """Calls a unary (or client-streaming) method, raising the SDK's exception on failure."""
        try:
            return method(request, metadata=self.metadata(), timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e, files=files) from None

    def stream(self, method: Callable[..., Any], request: Any, *, files: bool = False, timeout: float | None = None) -> StreamCall:
        """A server-streaming call. Leaving the loop early or ``cancel()`` ends the call, which
        stops the work behind it (a foreground command is killed; a background process is not)."""
        return StreamCall(method(request, metadata=self.metadata(), timeout=timeout), files)

    def upload(self, requests: Iterable[Any]) -> Any:
        """Files.Upload. An exception raised while producing the content (reading a local file,
        the caller's iterable) is raised as itself, not as the cancelled call it causes."""
        failure: list[BaseException] = []

        def guarded() -> Iterator[Any]:
            try:
                yield from requests
            except Exception as e:  # not GeneratorExit: grpc closing the iterator after a refusal
                failure.append(e)
                raise

        try:
            return self.files.Upload(guarded(), metadata=self.metadata())
        except grpc.RpcError as e:
            if failure:
                raise failure[0] from None
            raise from_rpc_error(e, files=True) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamCall:
    """A server-streaming gRPC call, iterated once. ``cancel()`` may be called from any thread."""

    def __init__(self, call: Any, files: bool) -> None:
        self._call = call
        self._files = files

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._call
        except grpc.RpcError as e:
            raise from_rpc_error(e, files=self._files) from None
        finally:
            self._call.cancel()

    def cancel(self) -> None:
        self._call.cancel()

