"""The OpenAI Agents SDK's sandbox session on Airlock, driven directly (no model needed).

An agent gets the same session through ``RunConfig(sandbox=SandboxRunConfig(client=..., options=...))``
(see the SDK README). Needs ``pip install 'airlock-k8s[agents]'`` and the environment of
warm_pool.py.
"""

import asyncio
import io
import os
from pathlib import Path

from agents.sandbox import Manifest
from agents.sandbox.entries import File

from airlock.agents import AirlockSandboxClient, AirlockSandboxClientOptions


async def main() -> None:
    client = AirlockSandboxClient()  # AIRLOCK_ADDR, AIRLOCK_TOKEN, AIRLOCK_NAMESPACE
    options = AirlockSandboxClientOptions(template=os.environ.get("AIRLOCK_TEMPLATE", "python"))
    manifest = Manifest(root="/workspace", entries={"task.txt": File(content=b"add two numbers\n")})
    session = await client.create(manifest=manifest, options=options)
    async with session:  # start() applies the manifest; leaving stops and shuts it down
        await session.write(Path("add.py"), io.BytesIO(b"print(2 + 40)\n"))
        result = await session.exec("cat task.txt && python3 add.py")
        print(result.stdout.decode(), end="")
    await client.delete(session)
    await client.aclose()


asyncio.run(main())
