"""The OpenAI Agents SDK client of Airlock sandboxes: options, serializable state, create/resume/delete."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any, Literal

from agents.sandbox.manifest import Manifest
from agents.sandbox.session import SandboxSession, SandboxSessionState
from agents.sandbox.session.dependencies import Dependencies
from agents.sandbox.session.manager import Instrumentation
from agents.sandbox.session.sandbox_client import BaseSandboxClient, BaseSandboxClientOptions
from agents.sandbox.snapshot import SnapshotBase, SnapshotSpec, resolve_snapshot
from pydantic import Field

from ..aio import AsyncClient, AsyncSandbox
from ..auth import TokenSource
from ..errors import AirlockError, NotFound
from ._session import AirlockSandboxSession

BACKEND_ID = "airlock"
logger = logging.getLogger(__name__)


class AirlockSandboxClientOptions(BaseSandboxClientOptions):
    """What each sandbox of a run is made from. Give a ``template`` (a SandboxTemplate in the
    namespace; a SandboxPool of it makes sessions start warm) or an ``image``."""

    type: Literal["airlock"] = "airlock"
    template: str | None = None
    image: str | None = None
    namespace: str | None = None
    """Default: the client's namespace (``AIRLOCK_NAMESPACE``, else the gateway's default)."""
    ttl: int | None = None
    """Seconds the sandbox may live (default: the template's or the operator's)."""
    idle_timeout: int | None = None
    env: dict[str, str] = Field(default_factory=dict)
    """Environment of every command (the manifest's environment wins on a clash)."""
    labels: dict[str, str] = Field(default_factory=dict)
    network: Literal["none", "internet"] | list[str] | None = None
    """``"none"``, ``"internet"`` or a list of CIDRs; default: the template's, else no egress."""
    resources: dict[str, str] | None = None
    """``cpu``, ``memory``, ``ephemeral_storage`` (image sandboxes only)."""
    ready_timeout: float = 300.0
    keep_alive: bool = False
    """Leave the sandbox running when the session shuts down (and on ``client.delete``): a later
    ``resume`` reattaches to it with everything outside the workspace too. It still ends at its
    TTL or idle timeout."""


class AirlockSandboxSessionState(SandboxSessionState):
    """A session's JSON-serializable state: which sandbox, and how to make a new one."""

    type: Literal["airlock"] = "airlock"
    sandbox_name: str
    namespace: str
    options: AirlockSandboxClientOptions

    def _sanitize_persisted_provider_identity(self, data: dict[str, Any], *, mount_authority_redacted: bool) -> None:
        if mount_authority_redacted:
            data["sandbox_name"] = ""


class AirlockSandboxClient(BaseSandboxClient[AirlockSandboxClientOptions]):
    """Creates, resumes and deletes Airlock sandboxes for the Agents SDK's runner.

    Connection arguments are those of :class:`airlock.Client` (default: the ``AIRLOCK_*``
    environment variables), or pass an :class:`airlock.aio.AsyncClient` as ``client``.
    """

    backend_id = BACKEND_ID
    supports_default_options = False

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        addr: str | None = None,
        token: str | TokenSource | None = None,
        token_file: str | os.PathLike[str] | None = None,
        namespace: str | None = None,
        ca_cert: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        instrumentation: Instrumentation | None = None,
        dependencies: Dependencies | None = None,
    ) -> None:
        self._client = client
        self._owns_client = client is None
        self._loop: asyncio.AbstractEventLoop | None = None
        if client is not None and any(v is not None for v in (addr, token, token_file, namespace, ca_cert, tls_server_name)):
            raise TypeError("give either client= or connection arguments, not both")

        def connect() -> AsyncClient:
            return AsyncClient(addr, token=token, token_file=token_file, namespace=namespace, ca_cert=ca_cert, tls_server_name=tls_server_name)

        self._connect = connect
        self._instrumentation = instrumentation or Instrumentation()
        self._dependencies = dependencies

    def _airlock(self) -> AsyncClient:
        # A grpc.aio channel belongs to the event loop it was made in: one per loop (Runner.run_sync
        # and separate asyncio.run calls each have their own).
        loop = asyncio.get_running_loop()
        if self._client is None or (self._owns_client and self._loop is not loop):
            self._client = self._connect()
            self._loop = loop
        return self._client

    async def _new_sandbox(self, options: AirlockSandboxClientOptions) -> AsyncSandbox:
        c = self._airlock()
        return await AsyncSandbox.create(
            options.image,
            template=options.template,
            namespace=options.namespace,
            ttl=options.ttl,
            idle_timeout=options.idle_timeout,
            env=options.env,  # the manifest's environment goes with each command, not on the object
            labels=options.labels,
            network=options.network,
            resources=options.resources,
            timeout=options.ready_timeout,
            client=c,
        )

    async def create(
        self,
        *,
        snapshot: SnapshotSpec | SnapshotBase | None = None,
        manifest: Manifest | None = None,
        options: AirlockSandboxClientOptions,
    ) -> SandboxSession:
        if (options.template is None) == (options.image is None):
            raise ValueError("AirlockSandboxClientOptions: give exactly one of template= and image=")
        manifest = manifest if manifest is not None else Manifest()
        self._validate_manifest_for_create(manifest)
        sbx = await self._new_sandbox(options)
        try:
            session_id = uuid.uuid4()
            state = AirlockSandboxSessionState(
                session_id=session_id,
                manifest=manifest,
                snapshot=resolve_snapshot(snapshot, str(session_id)),
                sandbox_name=sbx.name,
                namespace=sbx.namespace,
                options=options,
            )
            return self._wrap_session(AirlockSandboxSession(state=state, sandbox=sbx), instrumentation=self._instrumentation)
        except BaseException:
            await sbx.delete()
            raise

    async def resume(self, state: SandboxSessionState) -> SandboxSession:
        """Reattaches to the session's sandbox if it is still Ready; otherwise makes a new one,
        whose workspace ``start()`` restores from the session's snapshot."""
        if not isinstance(state, AirlockSandboxSessionState):
            raise TypeError(f"AirlockSandboxClient.resume: want an AirlockSandboxSessionState, got {type(state).__name__}")
        state.assert_path_grants_rebound()
        sbx: AsyncSandbox | None = None
        if state.sandbox_name:
            try:
                sbx = await AsyncSandbox.connect(state.sandbox_name, namespace=state.namespace, client=self._airlock())
            except NotFound:
                sbx = None
            except AirlockError as e:
                logger.warning("cannot reattach to sandbox %s/%s, making a new one: %s", state.namespace, state.sandbox_name, e)
                sbx = None
            if sbx is not None and (not sbx.info.ready or sbx.info.deleting):
                # Expired, failed or going: not one to resume in. Make sure it goes.
                try:
                    await sbx.delete()
                except AirlockError as e:
                    logger.warning("could not delete sandbox %s/%s: %s", state.namespace, state.sandbox_name, e)
                sbx = None
        reconnected = sbx is not None
        if sbx is None:
            sbx = await self._new_sandbox(state.options)
            state.sandbox_name, state.namespace = sbx.name, sbx.namespace
            state.workspace_root_ready = False
        inner = AirlockSandboxSession(state=state, sandbox=sbx)
        inner._set_start_state_preserved(reconnected, system=reconnected)
        return self._wrap_session(inner, instrumentation=self._instrumentation)

    async def delete(self, session: SandboxSession) -> SandboxSession:
        """Deletes the session's sandbox, unless its options ``keep_alive`` (a sandbox already gone
        is fine: shutdown deletes it too)."""
        inner = session._inner
        if not isinstance(inner, AirlockSandboxSession):
            raise TypeError(f"AirlockSandboxClient.delete: not an Airlock session: {type(inner).__name__}")
        if not inner.state.options.keep_alive:
            await inner.sandbox.delete()
        return session

    def deserialize_session_state(self, payload: dict[str, object]) -> SandboxSessionState:
        return self._deserialize_session_state_payload(payload, AirlockSandboxSessionState)

    async def aclose(self) -> None:
        """Closes the gRPC channel (sandboxes are not touched)."""
        if self._client is not None and self._owns_client:
            await self._client.close()
            self._client = None
