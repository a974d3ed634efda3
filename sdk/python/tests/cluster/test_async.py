"""The asyncio client against the local cluster's gateway."""

from __future__ import annotations

import asyncio
import time

import pytest

from airlock import CommandExitError, FileNotFound, NotFound
from airlock.aio import AsyncClient, AsyncSandbox

from .conftest import note


async def test_async_sandbox_lifecycle_commands_and_files(template: str) -> None:
    async with AsyncClient() as client:
        async with AsyncSandbox.create(template=template, ttl=300, env={"A": "1"}, client=client) as s:
            note(async_sandbox=s.name, start_mode=s.info.start_mode)
            assert s.info.ready and s.info.template == template
            r = await s.run("echo $A; echo e >&2; exit 4")
            assert (r.stdout, r.stderr, r.exit_code) == ("1\n", "e\n", 4)
            with pytest.raises(CommandExitError):
                await s.run("false", check=True)
            stream = s.stream("for i in 1 2; do echo s$i; sleep 1; done")
            start = time.monotonic()
            chunks = [(o.text, time.monotonic() - start) async for o in stream]
            assert "".join(t for t, _ in chunks) == "s1\ns2\n"
            assert chunks[-1][1] - chunks[0][1] > 0.5, "both lines came together: not streamed"
            assert stream.result is not None and stream.result.ok
            assert await s.files.write("/tmp/x/y.txt", "async") == 5
            assert await s.files.read_text("/tmp/x/y.txt") == "async"
            assert [e.name for e in await s.files.list("/tmp/x")] == ["y.txt"]
            with pytest.raises(FileNotFound):
                await s.files.read("/tmp/x/none")
            assert (await s.run_code("print(2 ** 10)")).stdout == "1024\n"
            name = s.name
        try:
            info = (await AsyncSandbox.connect(name, client=client)).info
            assert info.deleting
        except NotFound:
            pass


async def test_async_concurrent_commands_and_background(template: str) -> None:
    # `sandbox = await AsyncSandbox.create(...)` works as well as `async with`.
    s = await AsyncSandbox.create(template=template, ttl=300)
    try:
        results = await asyncio.gather(*(s.run(f"echo {i}") for i in range(20)))
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
        p = await s.start("cat", tag="async-cat")
        await p.send_input("one\n")
        got = b""
        async for out in p.output():
            got += out.data
            if got == b"one\n":
                break
        again = await AsyncSandbox.connect(s.name)
        q = await again.processes.connect("async-cat")
        assert q.pid == p.pid
        await q.send_input("two\n")
        await q.close_stdin()
        r = await q.wait(timeout=30)
        assert r.stdout == "one\ntwo\n" and r.exit_code == 0
        await again.close()
    finally:
        await s.delete()
        await s.close()
