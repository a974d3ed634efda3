"""airlock.agents driven by the OpenAI Agents SDK itself: its session API (what its runner and
tools call) and its Runner with a scripted model (no model service, no network)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from agents import RunConfig, Runner
from agents.sandbox import LocalSnapshotSpec, Manifest, SandboxAgent, SandboxRunConfig
from agents.sandbox.entries import Dir, File
from agents.sandbox.errors import ExecTimeoutError, ExecTransportError, WorkspaceReadNotFoundError
from agents.testing import ScriptedModel, assistant_message, function_call

from airlock import Client, NotFound, Sandbox
from airlock.agents import AirlockSandboxClient, AirlockSandboxClientOptions

from .conftest import note


def _gone(name: str) -> bool:
    with Client() as c:
        try:
            return Sandbox.connect(name, client=c).info.deleting
        except NotFound:
            return True


async def test_session_exec_files_pty_persist_and_hydrate(template: str, tmp_path: Path) -> None:
    client = AirlockSandboxClient()
    manifest = Manifest(
        root="/workspace",
        entries={"hello.txt": File(content=b"hi\n"), "src": Dir()},
        environment={"value": {"PROJECT": "demo"}},
    )
    options = AirlockSandboxClientOptions(template=template, env={"BASE": "b"})
    session = await client.create(manifest=manifest, snapshot=LocalSnapshotSpec(base_path=tmp_path), options=options)
    await session.start()
    first = session._inner.sandbox.name
    note(agents_sandbox=first, start_mode=session._inner.sandbox.info.start_mode)
    assert await session.running()
    assert (await session.read(Path("hello.txt"))).read() == b"hi\n"
    r = await session.exec("echo $PROJECT $BASE; pwd")
    assert r.ok() and r.stdout == b"demo b\n/workspace\n"
    r = await session.exec("exit 5")
    assert r.exit_code == 5  # a failed command is a result, not an error
    await session.write(Path("src/main.py"), io.BytesIO(b"print('from the workspace')\n"))
    assert (await session.exec("python3 src/main.py")).stdout == b"from the workspace\n"
    assert [e.path for e in await session.ls("src")] == ["/workspace/src/main.py"]
    try:
        await session.read(Path("missing.txt"))
        raise AssertionError("read of a missing file did not raise")
    except WorkspaceReadNotFoundError:
        pass
    try:
        await session.exec("sleep 30", timeout=1)
        raise AssertionError("exec past its timeout did not raise")
    except ExecTimeoutError:
        pass
    # The shell tool's interactive path: a process that keeps running between calls.
    assert session.supports_pty()
    u = await session.pty_exec_start(
        "python3", "-u", "-c", "import sys\nprint('ready')\nfor l in sys.stdin: print('got', l.strip())", shell=False, tty=True, yield_time_s=2
    )
    assert u.process_id is not None and u.exit_code is None and b"ready" in u.output
    u = await session.pty_write_stdin(session_id=u.process_id, chars="ping\n", yield_time_s=2)
    assert b"got ping" in u.output
    done = await session.pty_exec_start("echo finished; exit 3", yield_time_s=5)
    assert done.process_id is None and done.exit_code == 3 and b"finished" in done.output
    # Without a tty stdin is closed at once (a reader gets EOF, not a hang) and input is refused.
    cat = await session.pty_exec_start("cat; echo eof-seen", yield_time_s=5)
    assert cat.exit_code == 0 and b"eof-seen" in cat.output
    long = await session.pty_exec_start("sleep 60", yield_time_s=0.5)
    assert long.process_id is not None
    try:
        await session.pty_write_stdin(session_id=long.process_id, chars="x")
        raise AssertionError("write_stdin to a process without a tty did not raise")
    except RuntimeError as e:
        assert str(e) == "stdin is not available for this process"
    # More output than the agent buffers (1 MiB) before anyone reads it: nothing is mistaken for
    # the end, and the rest arrives with a note of what was dropped.
    big = await session.pty_exec_start("head -c 3000000 /dev/zero | tr '\\0' x; echo; echo big-done", yield_time_s=10)
    out, pid = big.output, big.process_id
    while pid is not None:
        more = await session.pty_write_stdin(session_id=pid, chars="", yield_time_s=5)
        out, pid = out + more.output, more.process_id
        big = more
    assert big.exit_code == 0 and out.rstrip().endswith(b"big-done")

    # Stop persists the workspace (a tar), shutdown and delete end the sandbox.
    await session.stop()
    await session.shutdown()
    await client.delete(session)
    assert _gone(first)
    payload = json.loads(json.dumps(client.serialize_session_state(session.state)))
    assert payload["type"] == "airlock" and payload["sandbox_name"] == first

    # Resume: the sandbox is gone, so a new one is made and the workspace restored into it.
    resumed = await client.resume(client.deserialize_session_state(payload))
    await resumed.start()
    second = resumed._inner.sandbox.name
    assert second != first
    assert (await resumed.read(Path("src/main.py"))).read() == b"print('from the workspace')\n"
    assert (await resumed.exec("cat hello.txt")).stdout == b"hi\n"
    await resumed.aclose()
    await client.delete(resumed)
    assert _gone(second)
    await client.aclose()


async def test_runner_with_a_scripted_model_uses_the_sandbox(template: str, tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            [function_call("exec_command", {"cmd": "cat hello.txt && echo written > out.txt && hostname"}, call_id="c1")],
            [assistant_message("done")],
        ]
    )
    agent = SandboxAgent(
        name="coder",
        model=model,
        instructions="run things",
        default_manifest=Manifest(root="/workspace", entries={"hello.txt": File(content=b"hello from the manifest\n")}),
    )
    client = AirlockSandboxClient()
    run_config = RunConfig(
        sandbox=SandboxRunConfig(
            client=client, options=AirlockSandboxClientOptions(template=template), snapshot=LocalSnapshotSpec(base_path=tmp_path)
        ),
        tracing_disabled=True,
    )
    result = await Runner.run(agent, "go", run_config=run_config)
    assert result.final_output == "done"
    outputs = [str(item.output) for item in result.new_items if getattr(item, "type", "") == "tool_call_output_item"]
    assert any("hello from the manifest" in o for o in outputs), outputs
    state = result.to_state()._sandbox or {}
    assert state.get("backend_id") == "airlock"
    name = state["session_state"]["sandbox_name"]
    note(runner_sandbox=name)
    assert _gone(name), f"the runner left sandbox {name} behind"
    # The workspace was persisted as a tar with the file the command wrote.
    snaps = list(tmp_path.iterdir())
    assert snaps, "no snapshot written"
    import tarfile

    with tarfile.open(snaps[0]) as tar:
        names = tar.getnames()
        assert "./out.txt" in names and "./hello.txt" in names, names
        assert all(n == "." or n.startswith("./") for n in names), names  # relative to the root
    await client.aclose()


async def test_keep_alive_resume_reattaches_and_stop_ends_interactive_commands(template: str, tmp_path: Path) -> None:
    client = AirlockSandboxClient()
    options = AirlockSandboxClientOptions(template=template, keep_alive=True, ttl=600)
    session = await client.create(manifest=Manifest(root="/workspace"), snapshot=LocalSnapshotSpec(base_path=tmp_path), options=options)
    assert not await session.running()  # not before start() has set the workspace up
    await session.start()
    assert await session.running()
    sbx = session._inner.sandbox
    u = await session.pty_exec_start("sleep 300", yield_time_s=0.5)
    assert u.process_id is not None
    await session.exec("echo outside > /tmp/outside.txt")
    try:
        await session.exec("id", user="nobody")
        raise AssertionError("a command as another user did not raise")
    except ExecTransportError as e:
        assert "not supported" in str(e), e
    await session.stop()
    await session.shutdown()
    await client.delete(session)
    # stop() ended the interactive command; keep_alive left the sandbox running.
    procs = [p for p in await sbx.processes.list() if p.argv[-1] == "sleep 300"]
    assert procs and not any(p.running for p in procs), procs
    assert (await sbx.refresh()).ready
    payload = json.loads(json.dumps(client.serialize_session_state(session.state)))
    resumed = await client.resume(client.deserialize_session_state(payload))
    await resumed.start()
    assert resumed._inner.sandbox.name == sbx.name  # reattached, so /tmp outside the workspace is still there
    assert (await resumed.exec("cat /tmp/outside.txt")).stdout == b"outside\n"
    await resumed.aclose()
    await sbx.delete()
    await client.aclose()


def test_one_client_across_event_loops(template: str) -> None:
    """Runner.run_sync and separate asyncio.run calls each have their own event loop."""
    client = AirlockSandboxClient()

    async def once() -> str:
        session = await client.create(manifest=Manifest(root="/workspace"), options=AirlockSandboxClientOptions(template=template))
        async with session:
            return (await session.exec("echo ok")).stdout.decode()

    assert asyncio.run(once()) == "ok\n"
    assert asyncio.run(once()) == "ok\n"

