"""The synchronous client against the local cluster's gateway."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from airlock import (
    Client,
    CommandExitError,
    FailedPrecondition,
    FileNotFound,
    InvalidArgument,
    KubectlToken,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Sandbox,
    Unauthenticated,
)

from .conftest import env, note


def test_create_from_template_is_warm_and_deleted_on_exit(client: Client, template: str) -> None:
    with Sandbox.create(template=template, ttl=300, labels={"case": "warm"}, client=client) as s:
        assert s.info.ready and s.info.phase == "Ready"
        assert s.info.template == template
        assert s.info.start_mode == "Warm", s.info
        assert s.info.labels["case"] == "warm"
        note(warm=s.name)
        name = s.name
        assert [i.name for i in Sandbox.list(labels={"case": "warm"}, client=client)] == [name]
    try:
        info = Sandbox.connect(name, client=client).info
    except NotFound:
        return
    assert info.deleting, f"{name} is not being deleted after the with block"


def test_create_from_image_with_env_and_files(client: Client, image: str) -> None:
    with Sandbox.create(image, ttl=300, env={"GREETING": "hello"}, files={"/etc/airlock-sdk/note.txt": "from create\n"}, client=client) as s:
        assert s.info.image == image and s.info.template == ""
        r = s.run("echo $GREETING; cat /etc/airlock-sdk/note.txt")
        assert r.stdout == "hello\nfrom create\n", r


def test_run_reports_output_and_exit_code(sbx: Sandbox) -> None:
    r = sbx.run("echo out; echo err >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code, r.ok) == ("out\n", "err\n", 3, False)
    r = sbx.run(["printf", "%s|", "a b", "$HOME"])  # argv: no shell, no expansion
    assert r.stdout == "a b|$HOME|" and r.ok


def test_run_env_cwd_stdin(sbx: Sandbox) -> None:
    r = sbx.run("echo $FROM_CREATE $EXTRA; pwd; cat", env={"EXTRA": "x"}, cwd="/tmp", stdin="piped\n")
    assert r.stdout == "yes x\n/tmp\npiped\n", r


def test_timeout_kills_and_check_raises(sbx: Sandbox) -> None:
    start = time.monotonic()
    r = sbx.run("sleep 30", timeout=1)
    assert r.timed_out and not r.ok and time.monotonic() - start < 15
    with pytest.raises(CommandExitError) as e:
        sbx.run("echo nope >&2; exit 7", check=True)
    assert e.value.result.exit_code == 7 and "nope" in str(e.value)


def test_stream_yields_output_as_it_happens(sbx: Sandbox) -> None:
    stream = sbx.stream("for i in 1 2 3; do echo line$i; sleep 1; done")
    start = time.monotonic()
    seen = []
    for out in stream:
        seen.append((out.stream, out.text, time.monotonic() - start))
    text = "".join(t for _, t, _ in seen)
    assert text == "line1\nline2\nline3\n"
    # The lines are a second apart: streamed, they arrive apart too (not all at the end).
    assert seen[-1][2] - seen[0][2] > 1.5, f"all output came within {seen[-1][2] - seen[0][2]:.1f}s: not streamed"
    assert stream.result is not None and stream.result.exit_code == 0


def test_callbacks_get_output(sbx: Sandbox) -> None:
    got: list[str] = []
    r = sbx.run("echo a; echo b >&2", on_stdout=got.append, on_stderr=lambda t: got.append("E:" + t))
    assert sorted(got) == ["E:b\n", "a\n"] and r.ok


def test_run_code(sbx: Sandbox) -> None:
    r = sbx.run_code("import sys\nprint(sum(range(10)))\nprint('e', file=sys.stderr)")
    assert r.stdout == "45\n" and r.stderr == "e\n"
    assert sbx.run_code("echo $0", language="shell").ok
    with pytest.raises(ValueError, match="language"):
        sbx.run_code("x", language="cobol")


def test_files(sbx: Sandbox) -> None:
    assert sbx.files.write("/tmp/sdk/a/b.txt", "hello") == 5
    assert sbx.files.read_text("/tmp/sdk/a/b.txt") == "hello"
    assert sbx.files.exists("/tmp/sdk/a/b.txt") and not sbx.files.exists("/tmp/sdk/none")
    sbx.files.write("/tmp/sdk/a/run.sh", b"#!/bin/sh\necho ran\n", mode=0o755)
    assert sbx.run("/tmp/sdk/a/run.sh").stdout == "ran\n"
    sbx.files.mkdir("/tmp/sdk/a/dir")
    listing = {e.name: e for e in sbx.files.list("/tmp/sdk/a")}
    assert set(listing) == {"b.txt", "run.sh", "dir"}
    assert listing["dir"].is_dir and listing["run.sh"].mode == 0o755 and listing["b.txt"].size == 5
    assert listing["b.txt"].path == "/tmp/sdk/a/b.txt"
    sbx.files.move("/tmp/sdk/a/b.txt", "/tmp/sdk/a/dir/c.txt")
    assert sbx.files.stat("/tmp/sdk/a/dir/c.txt").type == "file"
    with pytest.raises(FailedPrecondition):
        sbx.files.remove("/tmp/sdk/a")  # not empty
    sbx.files.remove("/tmp/sdk/a", recursive=True)
    assert not sbx.files.exists("/tmp/sdk/a")


def test_big_file_round_trip_is_streamed(sbx: Sandbox, tmp_path) -> None:
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for i in range(24):
            f.write(hashlib.sha256(str(i).encode()).digest() * 32768)  # 1 MiB per block
    size = src.stat().st_size
    assert sbx.files.upload(src, "/tmp/big.bin") == size
    assert sbx.run("sha256sum /tmp/big.bin").stdout.split()[0] == hashlib.sha256(src.read_bytes()).hexdigest()
    back = tmp_path / "back.bin"
    assert sbx.files.download("/tmp/big.bin", back) == size
    assert back.read_bytes() == src.read_bytes()
    chunks = list(sbx.files.iter_read("/tmp/big.bin"))
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 4 * 1024 * 1024


def test_background_process_survives_its_client(sbx: Sandbox, template: str) -> None:
    p = sbx.start("for i in $(seq 1 5); do echo tick$i; sleep 0.3; done; read line; echo got:$line", tag="sdk-ticker")
    assert p.pid > 0 and p.tag == "sdk-ticker"
    # Another client (a new connection) finds it by tag and reads from offset 0, without a gap.
    with Client() as other:
        again = Sandbox.connect(sbx.name, client=other)
        q = again.processes.connect("sdk-ticker")
        assert q.pid == p.pid
        first = []
        for out in q.output():
            first.append(out)
            if b"tick3" in b"".join(o.data for o in first):
                break  # disconnect mid-stream: the process keeps running
    assert p.info().running
    offset = sum(len(o.data) for o in first)
    time.sleep(2)
    rest = list(p.output(follow=False, stdout_offset=offset))
    assert b"".join(o.data for o in first + rest).startswith(b"tick1\ntick2\ntick3\ntick4\ntick5\n")
    assert rest and rest[0].offset == offset
    p.send_input("hello\n")
    result = p.wait(timeout=30)
    assert result.exit_code == 0 and result.stdout.endswith("got:hello\n")
    assert any(i.pid == p.pid and not i.running and i.exit_code == 0 for i in sbx.processes.list())


def test_wait_and_output_after_the_buffer_wrapped(sbx: Sandbox) -> None:
    p = sbx.start("head -c 3000000 /dev/zero | tr '\\0' y; echo; echo tail-line", buffer_bytes=1024 * 1024)
    r = p.wait(timeout=60)
    assert r.exit_code == 0 and r.stdout.endswith("tail-line\n") and len(r.stdout_bytes) <= 1024 * 1024
    chunks = list(p.output(follow=False))
    assert chunks[0].offset > 0 and b"".join(c.data for c in chunks).endswith(b"tail-line\n")
    with pytest.raises(OutOfRange):
        list(p.output(follow=False, stdout_offset=0, stderr_offset=0))


def test_leaving_a_stream_kills_the_command(sbx: Sandbox) -> None:
    sbx.run("rm -f /tmp/not-killed")
    stream = sbx.stream("echo started; sleep 3; touch /tmp/not-killed")
    for out in stream:
        assert out.text == "started\n"
        break
    time.sleep(5)
    assert not sbx.files.exists("/tmp/not-killed"), "the command ran on after the loop was left"


def test_kill_and_signal_background_process(sbx: Sandbox) -> None:
    p = sbx.start("trap 'echo term; exit 9' TERM; while true; do sleep 0.1; done")
    time.sleep(0.5)
    p.signal(15)
    assert p.wait(timeout=30).exit_code == 9
    q = sbx.start(["sleep", "600"])
    q.kill()
    r = q.wait(timeout=30)
    assert r.signal == 9 or r.exit_code == 137
    with pytest.raises(NotFound):
        sbx.processes.connect(999999)


def test_tty_process(sbx: Sandbox) -> None:
    p = sbx.start("stty size; read x; stty size; echo got:$x", tty=True, size=(100, 30))
    time.sleep(0.5)
    p.resize(120, 40)
    p.send_input("yes\r")
    r = p.wait(timeout=30)
    assert "30 100" in r.stdout and "40 120" in r.stdout and "got:yes" in r.stdout


def test_errors_name_what_failed(client: Client, sbx: Sandbox, image: str) -> None:
    with pytest.raises(NotFound, match="no-such-sandbox"):
        Sandbox.connect("no-such-sandbox", client=client)
    with pytest.raises(FileNotFoundError):
        sbx.files.read("/no/such/file")
    with pytest.raises(FileNotFound):
        sbx.files.list("/no/such/dir")
    with pytest.raises(InvalidArgument, match="env"):
        sbx.run("true", env={"1BAD": "x"})
    with pytest.raises(InvalidArgument, match="ttl"):
        Sandbox.create(image, ttl=10**9, client=client)
    with pytest.raises(ValueError, match="exactly one"):
        Sandbox.create(image, template="x", client=client)


def test_auth_token_file_and_kubectl(sbx: Sandbox, tmp_path) -> None:
    path = tmp_path / "token"
    path.write_text("not-a-token\n")
    with Client(token_file=path) as c:
        with pytest.raises(Unauthenticated):
            Sandbox.connect(sbx.name, client=c)
        path.write_text(env("AIRLOCK_TOKEN"))  # rotated: read again
        os.utime(path, (time.time() + 5, time.time() + 5))
        assert Sandbox.connect(sbx.name, client=c).info.ready
    tokens = KubectlToken(env("AIRLOCK_SDK_SERVICE_ACCOUNT"), namespace=env("AIRLOCK_NAMESPACE"))
    with Client(token=tokens) as c:
        assert Sandbox.connect(sbx.name, client=c).run("echo via-kubectl").stdout == "via-kubectl\n"


def test_other_users_cannot_reach_the_sandbox(sbx: Sandbox) -> None:
    with Client(token=env("AIRLOCK_SDK_NO_ACCESS_TOKEN")) as c:
        with pytest.raises(PermissionDenied):
            Sandbox.connect(sbx.name, client=c)
    with Client(token=env("AIRLOCK_SDK_OTHER_TOKEN")) as c:
        with pytest.raises(PermissionDenied):
            Sandbox.connect(sbx.name, namespace=sbx.namespace, client=c)
        # In its own namespace the other user sees none of this namespace's sandboxes.
        names = [s.name for s in Sandbox.list(namespace=env("AIRLOCK_SDK_OTHER_NAMESPACE"), client=c)]
        assert sbx.name not in names


def test_extend(sbx: Sandbox) -> None:
    before = sbx.refresh()
    after = sbx.extend(60)
    assert after.extension_seconds == before.extension_seconds + 60
    assert after.ttl_expires_at is not None and before.ttl_expires_at is not None
    assert (after.ttl_expires_at - before.ttl_expires_at).total_seconds() == 60
