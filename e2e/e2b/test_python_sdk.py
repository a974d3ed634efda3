"""The published e2b Python SDK, unmodified, against Airlock's e2b-compatible API.

Run by e2e/tests/e2b_sdk.rs (which creates the namespaces, the users, the `base` template and its
warm pool, and points E2B_API_URL and E2B_SANDBOX_URL at the in-cluster gateway). Environment:
  E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY  user A (may do everything in namespace A)
  AIRLOCK_E2B_OTHER_KEY                       user B (everything in namespace B, nothing in A)
  AIRLOCK_E2B_NO_ACCESS_KEY                   a token with no Airlock rights
  AIRLOCK_E2B_VIEWER_KEY                      a token with the chart's sandbox-viewer role in A
  AIRLOCK_E2B_OUT                             file: IDs of sandboxes left for the Rust side to check
"""

import json
import os
import time
import urllib.error
import urllib.request

import pytest
from e2b import Sandbox
from e2b.exceptions import (
    AuthenticationException,
    FileNotFoundException,
    SandboxException,
    SandboxNotFoundException,
)
from e2b.sandbox.commands.command_handle import CommandExitException
from e2b.sandbox.sandbox_api import SandboxQuery

TEMPLATE = "base"
OTHER = os.environ["AIRLOCK_E2B_OTHER_KEY"]
NO_ACCESS = os.environ["AIRLOCK_E2B_NO_ACCESS_KEY"]
VIEWER = os.environ["AIRLOCK_E2B_VIEWER_KEY"]


def note(key, value):
    with open(os.environ["AIRLOCK_E2B_OUT"], "a") as f:
        f.write(json.dumps({key: value}) + "\n")


@pytest.fixture(scope="module")
def sbx():
    s = Sandbox.create(TEMPLATE, timeout=600, metadata={"suite": "python-sdk"}, envs={"GREETING": "hello from envVars"})
    note("warm", s.sandbox_id)
    yield s
    s.kill()


def test_commands_run_streams_stdout_stderr_and_exit_code(sbx):
    out = []
    r = sbx.commands.run("echo out; echo err >&2; echo $GREETING $X", envs={"X": "and envs"}, on_stdout=out.append)
    assert r.exit_code == 0
    assert r.stdout == "out\nhello from envVars and envs\n"
    assert r.stderr == "err\n"
    assert "".join(out) == r.stdout


def test_a_failing_command_raises_with_its_exit_code_and_stderr(sbx):
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo broken >&2; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stderr == "broken\n"


def test_background_command_connect_stdin_and_wait(sbx):
    h = sbx.commands.run("cat; echo done", background=True, stdin=True)
    assert h.pid > 0
    assert any(p.pid == h.pid for p in sbx.commands.list())
    again = sbx.commands.connect(h.pid)
    sbx.commands.send_stdin(h.pid, "line one\n")
    sbx.commands.close_stdin(h.pid)
    r = again.wait()
    assert r.stdout == "line one\ndone\n"
    assert h.wait().stdout == "line one\ndone\n"
    assert all(p.pid != h.pid for p in sbx.commands.list())


def test_kill_ends_a_background_command(sbx):
    h = sbx.commands.run("sleep 600", background=True)
    assert sbx.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException):
        h.wait()
    assert sbx.commands.kill(h.pid) is False


def test_pty_runs_a_shell_with_its_size(sbx):
    from e2b import PtySize
    h = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.resize(h.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(h.pid, b"stty size; echo pty-$((6*7)); exit\n")
    out = []
    h.wait(on_pty=lambda data: out.append(bytes(data)))
    text = b"".join(out).decode(errors="replace")
    assert "30 100" in text and "pty-42" in text, text


def test_files(sbx):
    info = sbx.files.write("/tmp/e2b/a.txt", "hello")
    assert info.path == "/tmp/e2b/a.txt"
    assert sbx.files.read("/tmp/e2b/a.txt") == "hello"
    assert bytes(sbx.files.read("/tmp/e2b/a.txt", format="bytes")) == b"hello"
    assert sbx.files.exists("/tmp/e2b/a.txt") is True
    assert sbx.files.exists("/tmp/e2b/missing") is False
    entries = sbx.files.list("/tmp/e2b")
    assert [(e.name, e.path, e.size) for e in entries] == [("a.txt", "/tmp/e2b/a.txt", 5)]
    assert sbx.files.get_info("/tmp/e2b/a.txt").size == 5
    assert sbx.files.make_dir("/tmp/e2b/d/e") is True
    assert sbx.files.make_dir("/tmp/e2b/d/e") is False
    sbx.files.write_files([{"path": "/tmp/e2b/d/one", "data": "1"}, {"path": "/tmp/e2b/d/two", "data": b"\x00\x02"}])
    assert bytes(sbx.files.read("/tmp/e2b/d/two", format="bytes")) == b"\x00\x02"
    assert sorted(e.name for e in sbx.files.list("/tmp/e2b/d")) == ["e", "one", "two"]
    assert sorted(e.path for e in sbx.files.list("/tmp/e2b", depth=2)) == [
        "/tmp/e2b/a.txt", "/tmp/e2b/d", "/tmp/e2b/d/e", "/tmp/e2b/d/one", "/tmp/e2b/d/two"]
    moved = sbx.files.rename("/tmp/e2b/d/one", "/tmp/e2b/d/uno")
    assert (moved.name, moved.path) == ("uno", "/tmp/e2b/d/uno")
    assert sbx.files.read("/tmp/e2b/d/uno") == "1"
    assert sbx.files.exists("/tmp/e2b/d/one") is False
    sbx.files.write("relative.txt", "at home")
    assert sbx.commands.run("cat /home/user/relative.txt").stdout == "at home"
    assert sbx.files.exists("relative.txt") is True
    assert "relative.txt" in [e.name for e in sbx.files.list(".")]
    big = os.urandom(3 * 1024 * 1024 + 17)  # over axum's default 2 MiB form limit
    sbx.files.write("/tmp/e2b/big.bin", big)
    assert bytes(sbx.files.read("/tmp/e2b/big.bin", format="bytes")) == big
    sbx.files.remove("/tmp/e2b/big.bin")
    sbx.files.remove("/tmp/e2b/d")
    assert sbx.files.exists("/tmp/e2b/d") is False
    with pytest.raises(FileNotFoundException):
        sbx.files.read("/tmp/e2b/missing")
    with pytest.raises(FileNotFoundException):
        sbx.files.get_info("/tmp/e2b/missing")


def test_set_timeout_extends_and_info_reports_it(sbx):
    before = sbx.get_info()
    assert before.state.value == "running"
    assert before.template_id == TEMPLATE
    assert before.metadata == {"suite": "python-sdk"}
    sbx.set_timeout(1800)
    after = sbx.get_info()
    assert after.end_at.timestamp() >= time.time() + 1700
    assert after.end_at > before.end_at


def test_list_connect_and_metadata_filter(sbx):
    ids = [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(metadata={"suite": "python-sdk"})).next_items()]
    assert sbx.sandbox_id in ids
    assert Sandbox.list(query=SandboxQuery(metadata={"suite": "none"})).next_items() == []
    same = Sandbox.connect(sbx.sandbox_id)
    assert same.commands.run("echo via connect").stdout == "via connect\n"


def test_errors_are_e2b_shaped():
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("e2b-nosuch")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info("e2b-nosuch")
    assert Sandbox.kill("e2b-nosuch") is False
    with pytest.raises(AuthenticationException):
        Sandbox.create(TEMPLATE, api_key="not-a-token")
    with pytest.raises(SandboxException) as e:
        Sandbox.create(TEMPLATE, api_key=NO_ACCESS)
    assert "403" in str(e.value) and "may not create" in str(e.value)
    with pytest.raises(SandboxException) as e:
        Sandbox.create("no-such-template")
    assert "no-such-template" in str(e.value)


def envd(sandbox_id, token, method, body, by_host=False):
    """A raw envd call, to show what the SDK cannot send: another sandbox's access token, or the
    sandbox named by the host name (`<port>-<id>.<domain>`, the gateway's --e2b-domain) alone."""
    headers = {"Content-Type": "application/json", "X-Access-Token": token}
    if by_host:
        headers["Host"] = f"49983-{sandbox_id}.e2b.airlock.test"
    else:
        headers.update({"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "49983"})
    req = urllib.request.Request(
        os.environ["E2B_SANDBOX_URL"] + "/process.Process/" + method,
        data=json.dumps(body).encode(),
        headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_a_viewer_sees_but_cannot_use(sbx):
    # get is allowed; connect hands out the sandbox's access token, so it needs exec and files.
    assert Sandbox.get_info(sbx.sandbox_id, api_key=VIEWER).sandbox_id == sbx.sandbox_id
    with pytest.raises(SandboxException) as e:
        Sandbox.connect(sbx.sandbox_id, api_key=VIEWER)
    assert "403" in str(e.value) and "sandboxes/exec" in str(e.value)
    with pytest.raises(SandboxException) as e:
        Sandbox.get_info(sbx.sandbox_id, api_key=NO_ACCESS)
    assert "403" in str(e.value)


def test_nothing_leaks_between_users(sbx):
    # User B sees none of A's sandboxes and cannot reach them by ID.
    theirs = [s.sandbox_id for s in Sandbox.list(api_key=OTHER).next_items()]
    assert sbx.sandbox_id not in theirs
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(sbx.sandbox_id, api_key=OTHER)
    assert Sandbox.kill(sbx.sandbox_id, api_key=OTHER) is False
    # B's own sandbox's access token opens B's sandbox, not A's.
    b = Sandbox.create(TEMPLATE, api_key=OTHER)
    try:
        token_b = b._envd_access_token
        status, _ = envd(b.sandbox_id, token_b, "List", {})
        assert status == 200
        status, body = envd(sbx.sandbox_id, token_b, "List", {})
        assert status == 401, body
        assert body["code"] == "unauthenticated"
        status, _ = envd(sbx.sandbox_id, "", "List", {})
        assert status == 401
        # Host-name routing reaches the same sandboxes, with the same tokens.
        status, body = envd(b.sandbox_id, token_b, "List", {}, by_host=True)
        assert status == 200, body
        status, _ = envd(sbx.sandbox_id, token_b, "List", {}, by_host=True)
        assert status == 401
    finally:
        b.kill()
    assert sbx.commands.run("echo still mine").stdout == "still mine\n"


def test_kill_deletes_the_sandbox():
    s = Sandbox.create(TEMPLATE)
    assert s.commands.run("true").exit_code == 0
    assert s.kill() is True
    assert Sandbox.kill(s.sandbox_id) in (True, False)  # already deleting: either answer
    note("killed", s.sandbox_id)
