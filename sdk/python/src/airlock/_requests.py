"""Requests and results shared by the sync and asyncio clients (no I/O here)."""

from __future__ import annotations

import codecs
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from google.protobuf import duration_pb2

from .types import CommandResult, Output, ProcessInfo
from .v1 import sandbox_pb2 as pb

Command = Union[str, Sequence[str]]
"""A shell command line (run by ``/bin/sh -c``) or an argv list (run directly)."""

NetworkSpec = Union[Literal["none", "internet"], Sequence[str], pb.Network, None]
"""``"none"`` (default), ``"internet"``, a list of CIDRs to allow, or a full ``Network``."""

Selector = Union[int, str]
"""A background process by pid (int) or by tag (str)."""

CHUNK = 64 * 1024
LANGUAGES = {"python": pb.LANGUAGE_PYTHON, "node": pb.LANGUAGE_NODE, "javascript": pb.LANGUAGE_NODE, "shell": pb.LANGUAGE_SHELL}


_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet


def random_name(prefix: str = "sandbox-") -> str:
    """A sandbox name chosen by the client (rather than generateName), so that a create the
    caller abandons (Ctrl-C, a cancelled task, a lost connection) can still be cleaned up."""
    return prefix + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))


def clean_up_after(err: BaseException) -> bool:
    """Whether a failed create may have left a sandbox behind that the client should delete: not
    when the gateway refused the request (nothing made, or the gateway deleted it itself), and
    never on ALREADY_EXISTS (the name belongs to another sandbox)."""
    from .errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated, Unimplemented

    refused = (AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated, Unimplemented)
    return not isinstance(err, (refused, ValueError, TypeError))


def ref(namespace: str, name: str) -> pb.SandboxRef:
    return pb.SandboxRef(namespace=namespace, name=name)


def duration(seconds: float | None) -> duration_pb2.Duration | None:
    if seconds is None:
        return None
    if seconds < 0:
        raise ValueError(f"timeout: must not be negative, got {seconds}")
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _command(cmd: Command) -> dict[str, Any]:
    if isinstance(cmd, str):
        return {"shell": cmd}
    if isinstance(cmd, (bytes, bytearray)):
        raise TypeError("command: give a str (shell) or a list of str (argv), not bytes")
    return {"argv": pb.Argv(args=list(cmd))}


def _stdin(data: bytes | str | None) -> dict[str, Any]:
    if data is None:
        return {}
    return {"stdin": data.encode() if isinstance(data, str) else bytes(data)}


def network(spec: NetworkSpec) -> pb.Network | None:
    if spec is None:
        return None
    if isinstance(spec, pb.Network):
        return spec
    if spec == "none":
        return pb.Network(egress=pb.Network.EGRESS_NONE)
    if spec == "internet":
        return pb.Network(egress=pb.Network.EGRESS_INTERNET, dns=True)
    if isinstance(spec, str):
        raise ValueError(f'network: "none", "internet" or a list of CIDRs, got {spec!r}')
    return pb.Network(egress=pb.Network.EGRESS_ALLOW_LIST, allow=[pb.EgressRule(cidr=c) for c in spec], dns=True)


def create_request(
    *,
    namespace: str,
    image: str | None,
    template: str | None,
    name: str | None,
    ttl: int | None,
    idle_timeout: int | None,
    env: Mapping[str, str] | None,
    labels: Mapping[str, str] | None,
    resources: Mapping[str, str] | None,
    network_spec: NetworkSpec,
    files: Mapping[str, str] | None,
    wait: bool,
    run_as_user: int | None = None,
    run_as_group: int | None = None,
    runtime_class: str | None = None,
    working_dir: str | None = None,
    read_only_root_filesystem: bool = False,
    agent_in_image: bool = False,
) -> pb.CreateSandboxRequest:
    if (image is None) == (template is None):
        raise ValueError("give exactly one of image= and template=")
    req = pb.CreateSandboxRequest(
        namespace=namespace,
        name=name or "",
        ttl_seconds=ttl or 0,
        idle_timeout_seconds=idle_timeout or 0,
        env=dict(env or {}),
        labels=dict(labels or {}),
        wait_ready=wait,
        files=[pb.InitialFile(path=p, content=c) for p, c in (files or {}).items()],
        runtime_class_name=runtime_class or "",
        working_dir=working_dir or "",
        read_only_root_filesystem=read_only_root_filesystem,
        agent_in_image=agent_in_image,
    )
    if run_as_user is not None:
        req.run_as_user = run_as_user
    if run_as_group is not None:
        req.run_as_group = run_as_group
    if image is not None:
        req.image = image
    else:
        req.template = template or ""
    if resources:
        unknown = set(resources) - {"cpu", "memory", "ephemeral_storage"}
        if unknown:
            raise ValueError(f"resources: unknown keys {sorted(unknown)} (cpu, memory, ephemeral_storage)")
        req.resources.CopyFrom(pb.Resources(**resources))
    net = network(network_spec)
    if net is not None:
        req.network.CopyFrom(net)
    return req


def list_request(namespace: str, labels: Mapping[str, str] | str | None) -> pb.ListSandboxesRequest:
    """``labels``: a dict (all must match) or a label selector string such as ``"team=ml,env!=prod"``."""
    selector = labels if isinstance(labels, str) or labels is None else ",".join(f"{k}={v}" for k, v in labels.items())
    return pb.ListSandboxesRequest(namespace=namespace, label_selector=selector or "")


def exec_request(
    sandbox: pb.SandboxRef,
    cmd: Command,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    stdin: bytes | str | None = None,
) -> pb.ExecRequest:
    return pb.ExecRequest(
        sandbox=sandbox, env=dict(env or {}), cwd=cwd or "", timeout=duration(timeout), **_command(cmd), **_stdin(stdin)
    )


def run_code_request(
    sandbox: pb.SandboxRef,
    code: str,
    *,
    language: str,
    env: Mapping[str, str] | None,
    cwd: str | None,
    timeout: float | None,
    stdin: bytes | str | None = None,
) -> pb.RunCodeRequest:
    lang = LANGUAGES.get(language)
    if lang is None:
        raise ValueError(f"language: one of {sorted(LANGUAGES)}, got {language!r}")
    return pb.RunCodeRequest(
        sandbox=sandbox, language=lang, code=code, env=dict(env or {}), cwd=cwd or "", timeout=duration(timeout), **_stdin(stdin)
    )


def start_request(
    sandbox: pb.SandboxRef,
    cmd: Command,
    *,
    tag: str | None,
    env: Mapping[str, str] | None,
    cwd: str | None,
    timeout: float | None,
    stdin: bytes | str | None,
    close_stdin: bool,
    tty: bool,
    size: tuple[int, int] | None,
    buffer_bytes: int,
) -> pb.StartProcessRequest:
    req = pb.StartProcessRequest(
        sandbox=sandbox,
        env=dict(env or {}),
        cwd=cwd or "",
        timeout=duration(timeout),
        close_stdin=close_stdin,
        tag=tag or "",
        tty=tty,
        buffer_bytes=buffer_bytes,
        **_command(cmd),
        **_stdin(stdin),
    )
    if size is not None:
        req.size.CopyFrom(pb.Resize(cols=size[0], rows=size[1]))
    return req


def selector(sel: Selector) -> pb.ProcessSelector:
    if isinstance(sel, bool) or not isinstance(sel, (int, str)):
        raise TypeError(f"process: a pid (int) or a tag (str), got {sel!r}")
    return pb.ProcessSelector(pid=sel) if isinstance(sel, int) else pb.ProcessSelector(tag=sel)


def upload_header(sandbox: pb.SandboxRef, path: str, mode: int, parents: bool) -> pb.UploadRequest:
    return pb.UploadRequest(header=pb.UploadHeader(sandbox=sandbox, path=path, mode=mode, parents=parents))


def chunks(data: bytes | str | Iterable[bytes]) -> Iterable[bytes]:
    """Content to upload as chunks of at most CHUNK bytes: bytes, str (UTF-8), a binary file
    object, or an iterable of bytes."""
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            yield bytes(view[i : i + CHUNK])
        return
    read = getattr(data, "read", None)
    if read is not None:
        while block := read(CHUNK):
            if isinstance(block, str):
                raise TypeError("files.write: open the file in binary mode ('rb')")
            yield block
        return
    for block in data:
        for i in range(0, len(block), CHUNK):
            yield bytes(block[i : i + CHUNK])


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name if base != "/" else "/" + name


#: How often in a row a reader that fell behind a fast writer skips ahead (reading nothing in
#: between) before giving up.
CATCH_UP = 10


def connect_request(sandbox: pb.SandboxRef, pid: int, offsets: dict[str, int], follow: bool) -> pb.ConnectProcessRequest:
    return pb.ConnectProcessRequest(
        sandbox=sandbox, process=pb.ProcessSelector(pid=pid), stdout_offset=offsets["stdout"], stderr_offset=offsets["stderr"], follow=follow
    )


def process_output(ev: pb.ProcessEvent, offsets: dict[str, int]) -> Output | None:
    """The chunk of a ConnectProcess event (advancing ``offsets`` past it), or None."""
    kind = ev.WhichOneof("event")
    if kind not in ("stdout", "stderr"):
        return None
    chunk = getattr(ev, kind)
    offsets[kind] = chunk.offset + len(chunk.data)
    return Output(kind, chunk.data, chunk.offset)


def skip_ahead(offsets: dict[str, int], info: ProcessInfo) -> dict[str, int]:
    return {"stdout": max(offsets["stdout"], info.stdout_start), "stderr": max(offsets["stderr"], info.stderr_start)}


def ended_result(info: ProcessInfo, stdout: list[bytes], stderr: list[bytes]) -> CommandResult:
    if info.exit_code is None:
        from .errors import Unavailable

        raise Unavailable(f"process {info.pid} has not exited")
    return CommandResult(
        exit_code=info.exit_code, stdout_bytes=b"".join(stdout), stderr_bytes=b"".join(stderr), signal=info.signal, timed_out=info.timed_out, pid=info.pid
    )


@dataclass
class Collector:
    """Gathers an Exec/RunCode event stream into a CommandResult."""

    keep: bool = True
    """Keep the output for the result (streams hand it to the caller instead)."""
    decoders: dict[str, codecs.IncrementalDecoder] = field(default_factory=dict)
    stdout: list[bytes] = field(default_factory=list)
    stderr: list[bytes] = field(default_factory=list)
    pid: int = 0
    exited: pb.Exited | None = None

    def feed(self, ev: pb.ExecEvent) -> Output | None:
        kind = ev.WhichOneof("event")
        if kind == "started":
            self.pid = ev.started.pid
        elif kind in ("stdout", "stderr"):
            data = getattr(ev, kind)
            if self.keep:
                (self.stdout if kind == "stdout" else self.stderr).append(data)
            return Output(kind, data)
        elif kind == "exited":
            self.exited = ev.exited
        return None

    def text(self, out: Output) -> str:
        """The chunk as text, decoded per stream so a character split between chunks is whole."""
        dec = self.decoders.get(out.stream)
        if dec is None:
            dec = self.decoders[out.stream] = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return dec.decode(out.data)

    def result(self) -> CommandResult:
        if self.exited is None:
            from .errors import Unavailable

            raise Unavailable("the output stream ended before the command's exit status")
        e = self.exited
        return CommandResult(
            exit_code=e.exit_code,
            stdout_bytes=b"".join(self.stdout),
            stderr_bytes=b"".join(self.stderr),
            signal=e.signal,
            timed_out=e.timed_out,
            duration=e.duration.ToNanoseconds() / 1e9 if e.HasField("duration") else 0.0,
            pid=self.pid,
        )

