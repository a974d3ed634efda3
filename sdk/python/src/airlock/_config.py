"""Gateway address, TLS and defaults, from arguments or the CLI's environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import grpc

from .auth import TokenSource, resolve

DEFAULT_ADDR = "http://127.0.0.1:50051"
# Messages the gateway may send: its chunks are 64 KiB, listings of big directories are larger.
_OPTIONS: list[tuple[str, Any]] = [("grpc.max_receive_message_length", 32 * 1024 * 1024), ("grpc.keepalive_time_ms", 30_000)]


@dataclass(frozen=True)
class Settings:
    target: str
    credentials: grpc.ChannelCredentials | None
    options: list[tuple[str, Any]]
    tokens: TokenSource | None
    namespace: str


def settings(
    addr: str | None,
    *,
    token: str | TokenSource | None,
    token_file: str | os.PathLike[str] | None,
    namespace: str | None,
    ca_cert: str | os.PathLike[str] | None,
    tls_server_name: str | None,
) -> Settings:
    """``addr`` is ``http://host:port`` (plaintext) or ``https://host:port`` (TLS); default
    ``AIRLOCK_ADDR``, else http://127.0.0.1:50051. ``namespace`` defaults to ``AIRLOCK_NAMESPACE``,
    else the gateway's default namespace."""
    addr = addr or os.environ.get("AIRLOCK_ADDR") or DEFAULT_ADDR
    ca_cert = ca_cert or os.environ.get("AIRLOCK_CA_CERT") or None
    tls_server_name = tls_server_name or os.environ.get("AIRLOCK_TLS_SERVER_NAME") or None
    scheme, sep, rest = addr.partition("://")
    if not sep:
        scheme, rest = "http", addr
    if scheme not in ("http", "https") or not rest or "/" in rest.rstrip("/"):
        raise ValueError(f"addr: want http://HOST:PORT or https://HOST:PORT, got {addr!r}")
    target = rest.rstrip("/")
    options: list[tuple[str, Any]] = list(_OPTIONS)
    credentials = None
    if scheme == "https":
        roots = None
        if ca_cert:
            with open(ca_cert, "rb") as f:
                roots = f.read()
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
    elif ca_cert or tls_server_name:
        raise ValueError(f"ca_cert/tls_server_name need an https:// addr, got {addr!r}")
    ns = namespace if namespace is not None else os.environ.get("AIRLOCK_NAMESPACE", "")
    return Settings(target, credentials, options, resolve(token, token_file), ns)


def metadata(tokens: TokenSource | None) -> tuple[tuple[str, str], ...]:
    tok = tokens.token() if tokens is not None else None
    return (("authorization", f"Bearer {tok}"),) if tok else ()
