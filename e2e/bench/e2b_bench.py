"""`make bench-e2b`: the e2b-compatible API measured with the published e2b SDK, beside Airlock's
own gRPC client and `kubectl exec`, in the same run (e2e/bench/e2b.sh sets up the namespace, the
token, the templates and the port-forwards; see there). Writes bench/e2b-api/report.md and
report.json. Figures are distributions (p50/p90/p99/max, n); nothing here is a test.

Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY (the e2b API), BENCH_NS (namespace with
templates `warm` (a pool) and `cold` (none) and a Ready Sandbox `target`), AIRLOCK_ADDR,
AIRLOCK_TOKEN (the gRPC gateway, for the `airlock` CLI), BENCH_RUNS (default 20), BENCH_OUT.
"""

import json
import os
import platform
import statistics
import subprocess
import time

from e2b import Sandbox

RUNS = int(os.environ.get("BENCH_RUNS", "20"))
NS = os.environ["BENCH_NS"]
OUT = os.environ.get("BENCH_OUT", "bench/e2b-api")


def dist(xs):
    xs = sorted(xs)
    q = lambda p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
    return {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": xs[-1], "n": len(xs)}


def ms(f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000


def create_to_first_output(template):
    t = time.perf_counter()
    sbx = Sandbox.create(template, timeout=300)
    out = sbx.commands.run("echo hi").stdout
    elapsed = (time.perf_counter() - t) * 1000
    assert out == "hi\n", out
    sbx.kill()
    return elapsed


def main():
    results = {}
    # Round trip of `true` in one existing sandbox.
    sbx = Sandbox.connect("target")
    sbx.commands.run("true")  # connection set up
    results["e2b SDK commands.run('true'), in-process client"] = dist([ms(lambda: sbx.commands.run("true")) for _ in range(RUNS * 5)])
    env = dict(os.environ, AIRLOCK_NAMESPACE=NS)
    cli = lambda: subprocess.run(["airlock", "exec", "target", "--", "true"], env=env, check=True, capture_output=True)
    results["airlock CLI exec true (gRPC; a new process per call)"] = dist([ms(cli) for _ in range(RUNS * 2)])
    # What commands.run("true") runs: e2b's SDK wraps every command in a login shell.
    login = lambda: subprocess.run(["airlock", "exec", "target", "--", "/bin/bash", "-l", "-c", "true"], env=env, check=True, capture_output=True)
    results["airlock CLI exec /bin/bash -l -c true (what the e2b SDK runs)"] = dist([ms(login) for _ in range(RUNS * 2)])
    floor = lambda: subprocess.run(["airlock", "--help"], check=True, capture_output=True)
    results["airlock --help (the CLI's process start, for reference)"] = dist([ms(floor) for _ in range(RUNS)])
    pod = subprocess.run(["kubectl", "-n", NS, "get", "sbx", "target", "-o", "jsonpath={.status.podName}"],
                         check=True, capture_output=True, text=True).stdout
    kx = lambda: subprocess.run(["kubectl", "-n", NS, "exec", pod, "-c", "sandbox", "--", "true"],
                                check=True, capture_output=True)
    results["kubectl exec (a new process per call)"] = dist([ms(kx) for _ in range(RUNS * 2)])
    # Sandbox.create() -> first output of a command, warm (pool) and cold (no pool).
    warm = []
    for _ in range(RUNS):
        warm.append(create_to_first_output("warm"))
        time.sleep(1.5)  # the pool refills between claims (one claim at a time, as a user would)
    results["Sandbox.create() + first command output, warm"] = dist(warm)
    results["Sandbox.create() + first command output, cold"] = dist([create_to_first_output("cold") for _ in range(max(3, RUNS // 4))])

    os.makedirs(OUT, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "machine": platform.platform(),
            "cpus": os.cpu_count(), "runs": RUNS, "e2b": __import__("importlib.metadata").metadata.version("e2b")}
    with open(os.path.join(OUT, "report.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    lines = ["# e2b-compatible API: the published e2b SDK against Airlock (local cluster)", "",
             f"{meta['date']}, {meta['machine']}, {meta['cpus']} CPUs, e2b {meta['e2b']}, BENCH_RUNS={RUNS}. "
             "Milliseconds. Produced by `make bench-e2b` (e2e/bench/e2b_bench.py); every row is from the same run. "
             "The e2b SDK runs each command as `/bin/bash -l -c CMD`; a login shell costs ~60 ms more than `true` "
             "under gVisor here, so compare its row with the CLI's `/bin/bash -l -c true` row.", "",
             "| what | p50 | p90 | p99 | max | n |", "|---|---|---|---|---|---|"]
    for k, d in results.items():
        lines.append(f"| {k} | {d['p50']:.1f} | {d['p90']:.1f} | {d['p99']:.1f} | {d['max']:.1f} | {d['n']} |")
    with open(os.path.join(OUT, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
