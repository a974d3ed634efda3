"""What the SDK does without a gateway: requests it builds, errors it maps, settings and tokens."""

from __future__ import annotations

import io
import os
import stat
import time

import grpc
import pytest

from airlock import _config
from airlock import _requests as rq
from airlock.auth import KubectlToken, StaticToken, TokenFile, resolve
from airlock.errors import (
    AirlockError,
    CommandExitError,
    DeadlineExceeded,
    FileNotFound,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    from_rpc_error,
)
from airlock.types import CommandResult
from airlock.v1 import sandbox_pb2 as pb


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_errors_map_codes_and_builtin_classes() -> None:
    e = from_rpc_error(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "env.1BAD: not a valid name"))
    assert isinstance(e, InvalidArgument) and isinstance(e, ValueError) and e.message.startswith("env.1BAD")
    assert str(e) == "INVALID_ARGUMENT: env.1BAD: not a valid name"
    assert isinstance(from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "x")), TimeoutError)
    assert isinstance(from_rpc_error(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "x")), PermissionDenied)
    other = from_rpc_error(FakeRpcError(grpc.StatusCode.DATA_LOSS, "x"))
    assert type(other) is AirlockError and other.code == grpc.StatusCode.DATA_LOSS
    # NOT_FOUND from a file call is a missing path, unless the sandbox itself is missing.
    f = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "get /x: no such file"), files=True)
    assert isinstance(f, FileNotFound) and isinstance(f, FileNotFoundError)
    s = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "sandbox ns/x not found"), files=True)
    assert type(s) is NotFound and not isinstance(s, FileNotFoundError)
    assert isinstance(from_rpc_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "x")), DeadlineExceeded)


def test_command_exit_error_says_how_it_ended() -> None:
    assert "exited with 3: boom" in str(CommandExitError("x", CommandResult(3, b"", b"boom\n")))
    assert "timed out" in str(CommandExitError("x", CommandResult(137, timed_out=True)))
    assert "signal 9" in str(CommandExitError("x", CommandResult(137, signal=9)))


def test_exec_request_shell_argv_and_fields() -> None:
    ref = rq.ref("ns", "s")
    r = rq.exec_request(ref, "echo hi", env={"A": "1"}, cwd="/w", timeout=1.5, stdin="in")
    assert r.shell == "echo hi" and r.env == {"A": "1"} and r.cwd == "/w" and r.stdin == b"in"
    assert r.timeout.seconds == 1 and r.timeout.nanos == 500_000_000
    r = rq.exec_request(ref, ["ls", "-l"])
    assert list(r.argv.args) == ["ls", "-l"] and not r.HasField("stdin") and not r.HasField("timeout")
    with pytest.raises(TypeError):
        rq.exec_request(ref, b"echo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        rq.exec_request(ref, "x", timeout=-1)


def test_create_request() -> None:
    kw = dict(namespace="ns", name=None, ttl=60, idle_timeout=None, env=None, labels={"a": "b"}, resources=None, files=None, wait=True)
    r = rq.create_request(image=None, template="py", network_spec="internet", **kw)
    assert r.template == "py" and r.name == "" and r.ttl_seconds == 60 and r.wait_ready
    assert not r.HasField("run_as_user") and r.runtime_class_name == ""
    assert r.network.egress == pb.Network.EGRESS_INTERNET and r.labels == {"a": "b"}
    r = rq.create_request(image="img", template=None, network_spec=["10.0.0.0/8"], **{**kw, "resources": {"cpu": "1"}, "files": {"/a": "x"}})
    assert r.image == "img" and r.resources.cpu == "1" and r.files[0].path == "/a"
    assert r.network.egress == pb.Network.EGRESS_ALLOW_LIST and r.network.allow[0].cidr == "10.0.0.0/8"
    r = rq.create_request(image="img", template=None, network_spec=None, run_as_user=1000, runtime_class="gvisor", agent_in_image=True, **kw)
    assert r.run_as_user == 1000 and not r.HasField("run_as_group") and r.runtime_class_name == "gvisor" and r.agent_in_image
    with pytest.raises(ValueError, match="exactly one"):
        rq.create_request(image="a", template="b", network_spec=None, **kw)
    with pytest.raises(ValueError, match="resources"):
        rq.create_request(image="a", template=None, network_spec=None, **{**kw, "resources": {"gpu": "1"}})
    with pytest.raises(ValueError, match="network"):
        rq.create_request(image="a", template=None, network_spec="everything", **kw)  # type: ignore[arg-type]


def test_selector_and_chunks() -> None:
    assert rq.selector(7).pid == 7 and rq.selector("t").tag == "t"
    with pytest.raises(TypeError):
        rq.selector(True)
    data = os.urandom(rq.CHUNK * 2 + 5)
    assert b"".join(rq.chunks(data)) == data and max(map(len, rq.chunks(data))) == rq.CHUNK
    assert b"".join(rq.chunks(io.BytesIO(data))) == data
    assert b"".join(rq.chunks("é")) == "é".encode()
    with pytest.raises(TypeError, match="binary"):
        list(rq.chunks(io.StringIO("text")))


def test_collector_builds_the_result() -> None:
    c = rq.Collector()
    for ev in [
        pb.ExecEvent(started=pb.Started(pid=9)),
        pb.ExecEvent(stdout=b"a"),
        pb.ExecEvent(stderr=b"b"),
        pb.ExecEvent(stdout=b"c"),
        pb.ExecEvent(exited=pb.Exited(exit_code=130, signal=2)),
    ]:
        c.feed(ev)
    r = c.result()
    assert (r.stdout, r.stderr, r.exit_code, r.signal, r.pid, r.ok) == ("ac", "b", 130, 2, 9, False)
    with pytest.raises(AirlockError, match="before the command's exit status"):
        rq.Collector().result()


def test_names_and_cleanup_rule() -> None:
    names = {rq.random_name() for _ in range(50)}
    assert len(names) > 45 and all(n.startswith("sandbox-") and len(n) == 13 for n in names)
    from airlock.errors import AlreadyExists, Unavailable

    assert rq.clean_up_after(KeyboardInterrupt()) and rq.clean_up_after(Unavailable("x")) and rq.clean_up_after(DeadlineExceeded("x"))
    assert not rq.clean_up_after(AlreadyExists("x")) and not rq.clean_up_after(InvalidArgument("x"))


def test_incremental_decoding_keeps_split_characters() -> None:
    c = rq.Collector()
    data = "é€".encode()
    parts = [c.text(o) for o in (c.feed(pb.ExecEvent(stdout=data[:1])), c.feed(pb.ExecEvent(stdout=data[1:4])), c.feed(pb.ExecEvent(stdout=data[4:])))]  # type: ignore[arg-type]
    assert "".join(parts) == "é€" and "\ufffd" not in "".join(parts)


def test_settings_from_arguments_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIRLOCK_TOKEN", "AIRLOCK_TOKEN_FILE", "AIRLOCK_CA_CERT", "AIRLOCK_TLS_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AIRLOCK_TOKEN", raising=False)
    monkeypatch.delenv("AIRLOCK_TOKEN_FILE", raising=False)
    monkeypatch.setenv("AIRLOCK_ADDR", "http://10.0.0.1:50051")
    monkeypatch.setenv("AIRLOCK_NAMESPACE", "team-a")
    s = _config.settings(None, token=None, token_file=None, namespace=None, ca_cert=None, tls_server_name=None)
    assert (s.target, s.credentials, s.namespace, s.tokens) == ("10.0.0.1:50051", None, "team-a", None)
    s = _config.settings("https://gw.example:443", token="t", token_file=None, namespace="", ca_cert=None, tls_server_name="gw.svc")
    assert s.credentials is not None and ("grpc.ssl_target_name_override", "gw.svc") in s.options and s.namespace == ""
    assert _config.metadata(s.tokens) == (("authorization", "Bearer t"),)
    for bad in ("ftp://x:1", "http://", "http://host:1/path"):
        with pytest.raises(ValueError, match="addr"):
            _config.settings(bad, token=None, token_file=None, namespace=None, ca_cert=None, tls_server_name=None)
    with pytest.raises(ValueError, match="https"):
        _config.settings("http://x:1", token=None, token_file=None, namespace=None, ca_cert=None, tls_server_name="n")


def test_token_sources(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        StaticToken("  ")
    path = tmp_path / "token"
    path.write_text("one\n")
    tf = TokenFile(path)
    assert tf.token() == "one"
    path.write_text("two\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert tf.token() == "two"
    with pytest.raises(ValueError, match="token_file"):
        TokenFile(tmp_path / "missing")
    monkeypatch.setenv("AIRLOCK_TOKEN_FILE", str(path))
    monkeypatch.delenv("AIRLOCK_TOKEN", raising=False)
    assert isinstance(resolve(None, None), TokenFile)
    with pytest.raises(ValueError, match="at most one"):
        resolve("a", path)


def test_kubectl_token_runs_kubectl_once_per_lifetime(tmp_path) -> None:
    log = tmp_path / "calls"
    fake = tmp_path / "kubectl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho minted-token\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    k = KubectlToken("agent", namespace="team-a", context="prod", kubectl=str(fake))
    assert k.token() == "minted-token" and k.token() == "minted-token"
    assert log.read_text().splitlines() == ["create token agent --audience airlock --duration 3600s --namespace team-a --context prod"]
    failing = tmp_path / "kubectl-fails"
    failing.write_text("#!/bin/sh\necho 'error: serviceaccounts \"agent\" not found' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(RuntimeError, match="not found"):
        KubectlToken("agent", kubectl=str(failing)).token()
    with pytest.raises(ValueError, match="duration"):
        KubectlToken("agent", duration=60)
