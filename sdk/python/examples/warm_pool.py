"""A sandbox from a template with a warm pool: create, run, stream, files, a background process.

Needs AIRLOCK_ADDR, AIRLOCK_TOKEN and AIRLOCK_NAMESPACE (as for the `airlock` CLI), and a
SandboxTemplate with a SandboxPool in that namespace (AIRLOCK_TEMPLATE, default "python"; the
README's example makes one in team-a).
"""

import os
import time

from airlock import Sandbox

template = os.environ.get("AIRLOCK_TEMPLATE", "python")
start = time.monotonic()
with Sandbox.create(template=template, ttl=600, env={"GREETING": "hello"}) as sbx:
    print(f"{sbx.name}: Ready in {(time.monotonic() - start) * 1000:.0f} ms, start mode {sbx.info.start_mode}")

    result = sbx.run("python3 -c 'print(6 * 7)'")
    print(result.stdout.strip(), "exit code", result.exit_code)

    for out in sbx.stream("for i in 1 2 3; do echo $GREETING $i; sleep 0.2; done"):
        print(out.stream, out.text, end="")

    sbx.files.write("/tmp/app/main.py", "print('hi from a file')\n")
    print(sbx.run(["python3", "/tmp/app/main.py"]).stdout, end="")
    print([entry.name for entry in sbx.files.list("/tmp/app")])

    # A background process outlives the call (and this client); any client can read its output
    # again by tag or pid, from byte offset 0, while it runs and after it ended.
    sbx.start("for i in 1 2 3; do echo tick $i; sleep 0.3; done", tag="ticker")
    ticker = sbx.processes.connect("ticker")
    for out in ticker.output():
        print(out.text, end="")
    print("ticker exit code", ticker.wait().exit_code)
# Leaving the `with` block deleted the sandbox.
