//! The agent daemon itself (issue 15's figures): what a command costs inside a gVisor sandbox
//! with no Airlock in the path (the floor of any exec round trip), the agent's resident memory
//! idle and with 100 processes holding buffered output, and its size in the namespace's
//! ConfigMap.

use std::net::SocketAddr;

use airlock_agent_protocol::{Client as AgentClient, Reply, Start, c2a};
use k8s_openapi::api::core::v1::ConfigMap;

use super::*;
use crate::stats::{Metric, push, table};

/// Runs in the sandbox through `pods/exec`: spawns `/bin/true` (posix_spawn, the agent's way)
/// `N` times and prints each spawn -> exit time in ms.
const FLOOR_SCRIPT: &str = "import os, sys, time\nfor _ in range(int(sys.argv[1])):\n    t = time.monotonic()\n    pid = os.posix_spawn('/bin/true', ['true'], os.environ)\n    os.waitpid(pid, 0)\n    print((time.monotonic() - t) * 1000)\n";

/// Prints `VmRSS` in KiB of PID 1 and the sum over the agent's shims (`airlock-agent shim`).
/// Pids are tried in turn: this gVisor refuses to list /proc (getdents, EINVAL).
const RSS_SCRIPT: &str = "import os\ndef rss(p):\n    for l in open('/proc/%s/status' % p):\n        if l.startswith('VmRSS:'):\n            return int(l.split()[1])\n    return 0\nshims = 0\nn = 0\nfor p in range(2, 4096):\n    try:\n        cmd = open('/proc/%s/cmdline' % p, 'rb').read().split(b'\\0')\n    except OSError:\n        continue\n    if len(cmd) > 1 and cmd[1] == b'shim':\n        shims += rss(p)\n        n += 1\nprint(rss(1), shims, n)\n";

/// Memory of the phase's sandbox.
const MEMORY: &str = "1Gi";

impl Bench {
    pub(crate) async fn phase_agent(&self, ns: &str) -> Result<()> {
        let name = "agent";
        // 1 GiB: under gVisor each process costs the sandbox ~1-2 MiB, so 100 of them (each a
        // shim and a `sleep`) do not fit the exec phase's 256 MiB.
        let direct = self.exec_sandbox_with(ns, name, GVISOR, MEMORY).await?;
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let sbx = api.get(name).await?;
        let key = airlock_e2e::release::agent_key(&self.kube)
            .await
            .ok_or_else(|| anyhow!("the release has no agent key (agentDirect off)"))?;
        let token = airlock_crds::agent_token::derive(&key, &sbx.uid().unwrap_or_default());
        let pod = direct.pods.get(&direct.pod).await?;
        let addr: SocketAddr = airlock_crds::agent_token::agent_addr(&pod)
            .ok_or_else(|| anyhow!("pod {} has no agent address", direct.pod))?;

        // The floor: a command spawned and reaped inside the sandbox, nothing else.
        let runs = self.opts.exec_runs.max(10);
        let out = exec_output(&direct, &["python3", "-c", FLOOR_SCRIPT, &runs.to_string()]).await?;
        let mut floor = Metric::new(
            "agent.floor.spawn_true",
            "`/bin/true` spawned (posix_spawn) and reaped inside the sandbox, no Airlock in the path (the floor of an exec round trip)",
            "ms",
        );
        for l in out.lines() {
            push(&mut floor, l.trim().parse::<f64>().map_err(anyhow::Error::from));
        }

        // Memory: idle (the spare shim made), then with 100 processes holding output. The
        // kubelet's figure lags its cAdvisor housekeeping (~10 s).
        tokio::time::sleep(Duration::from_secs(12)).await;
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let idle = rss(&direct).await?;
        let idle_ws = working_set(&self.kube, &node, ns, &direct.pod).await;
        let per_process = 64 * 1024;
        let started = tokio::task::spawn_blocking(move || -> Result<usize> {
            let mut n = 0;
            for i in 0..100 {
                let mut c = AgentClient::connect(addr, token.as_bytes())?;
                let s = Start {
                    argv: ["sh", "-c", &format!("head -c {per_process} /dev/urandom; exec sleep 600")]
                        .iter()
                        .map(|a| a.as_bytes().to_vec())
                        .collect(),
                    tag: Some(format!("bench-{i}")),
                    ..Start::default()
                };
                match c.call(c2a::START, &s.encode())? {
                    Reply::Started(_) => n += 1,
                    other => bail!("START {i}: {other:?}"),
                }
            }
            Ok(n)
        })
        .await??;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let loaded = rss(&direct).await?;
        tokio::time::sleep(Duration::from_secs(12)).await;
        let loaded_ws = working_set(&self.kube, &node, ns, &direct.pod).await;
        let bundle = bundle_size(&self.kube, ns).await?;
        self.delete_sandbox_and_wait(ns, name).await;

        let rows = [
            ("idle (main command only, the spare shim ready)", idle, idle_ws),
            (
                &*format!("{started} background processes, {} KiB of output buffered each", per_process / 1024),
                loaded,
                loaded_ws,
            ),
        ];
        let mut mem = String::from(
            "| state | agent (PID 1) RSS | shims: count, total RSS | pod working set (kubelet) |\n|---|---:|---:|---:|\n",
        );
        for (what, (agent, shims, n), ws) in rows {
            mem.push_str(&format!(
                "| {what} | {:.1} MiB | {n}, {:.1} MiB | {} |\n",
                agent as f64 / 1024.0,
                shims as f64 / 1024.0,
                ws.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
            ));
        }
        self.metrics(&[&floor]);
        self.section(
            "Agent daemon",
            format!(
                "One gVisor Sandbox (cpu {}, memory {MEMORY}). The floor is measured inside it through `pods/exec` (Python's `os.posix_spawn` of `/bin/true`, then `waitpid`): the time any exec round trip of `true` spends on the command alone, so `true` through the gateway cannot take less. Memory is `VmRSS` of the agent (PID 1) and of its shims (one per process, plus the spare) as the sandbox's /proc shows them (each shim's figure counts the agent binary's shared pages again), and the pod's working set from the kubelet's summary API (the whole sandbox, gVisor's own memory included); the background processes are started straight on the agent's port from the node.\n\n{}\n{mem}\nAgent bundle in the namespace's ConfigMap (`airlock-agent-*`, compressed agent and boot program): {:.2} MiB.\n",
                self.opts.exec_cpu,
                table(&[&floor]),
                bundle as f64 / 1048576.0
            ),
        );
        Ok(())
    }
}

/// Stdout of `argv` run in the sandbox's container through `pods/exec`.
async fn exec_output(d: &drivers::Direct, argv: &[&str]) -> Result<String> {
    let ap = AttachParams::default()
        .container(airlock_crds::labels::MAIN_CONTAINER)
        .stdout(true)
        .stderr(true)
        .stdin(false);
    let mut p = d.pods.exec(&d.pod, argv.iter().map(|s| s.to_string()), &ap).await?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut o = p.stdout().ok_or_else(|| anyhow!("no stdout"))?;
    let mut e = p.stderr().ok_or_else(|| anyhow!("no stderr"))?;
    let (ro, re) = tokio::join!(o.read_to_end(&mut out), e.read_to_end(&mut err));
    ro?;
    re?;
    let _ = p.join().await;
    if out.is_empty() {
        bail!("{} printed nothing; stderr: {}", argv[0], String::from_utf8_lossy(&err));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// (agent RSS KiB, shims' RSS KiB, shim count).
async fn rss(d: &drivers::Direct) -> Result<(u64, u64, u64)> {
    let out = exec_output(d, &["python3", "-c", RSS_SCRIPT]).await?;
    let v: Vec<u64> = out.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    match v[..] {
        [a, s, n] => Ok((a, s, n)),
        _ => bail!("unexpected memory figures {out:?}"),
    }
}

/// The pod's memory working set in bytes from the kubelet's summary API (through the API
/// server's node proxy); `None` when it cannot be had.
async fn working_set(kube: &Client, node: &str, ns: &str, pod: &str) -> Option<u64> {
    let req = http::Request::get(format!("/api/v1/nodes/{node}/proxy/stats/summary"))
        .body(Vec::new())
        .ok()?;
    let v: Value = kube.request(req).await.ok()?;
    v["pods"].as_array()?.iter().find_map(|p| {
        (p["podRef"]["namespace"] == ns && p["podRef"]["name"] == pod)
            .then(|| p["memory"]["workingSetBytes"].as_u64())
            .flatten()
    })
}

/// Bytes of the agent bundle ConfigMap(s) in `ns`.
async fn bundle_size(kube: &Client, ns: &str) -> Result<usize> {
    let cms: Api<ConfigMap> = Api::namespaced(kube.clone(), ns);
    let mut total = 0;
    for cm in cms.list(&ListParams::default()).await?.items {
        if cm.name_any().starts_with("airlock-agent-") {
            total += cm.binary_data.iter().flatten().map(|(_, v)| v.0.len()).sum::<usize>();
            total += cm.data.iter().flatten().map(|(_, v)| v.len()).sum::<usize>();
        }
    }
    Ok(total)
}
