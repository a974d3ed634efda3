//! `make bench`: Airlock's benchmark suite against the local cluster (`e2e/bench/run.sh` runs it).
//!
//! Measures, in one run on one cluster, so every comparison is a ratio of figures taken side by
//! side:
//!
//! - operator latency: Sandbox created -> Pod object created, for 1, 50 and 200 concurrent
//!   creates (and the first Sandbox of a fresh namespace), with the operator's API calls replayed
//!   from here for comparison;
//! - time to Ready of a Sandbox under gVisor and runc, against a bare Pod with the same image,
//!   RuntimeClass and resources (the floor), and against the operator's own pod created directly
//!   with and without the agent (no init container, `sleep infinity`), which splits where the time
//!   goes;
//! - reap latency: TTL deadline -> Sandbox deleted -> pod deletion -> pod gone;
//! - exec through the gateway against the Kubernetes `pods/exec` websocket straight from here
//!   (what `kubectl exec` does) into the same pod: round trip of `true`, time to first output
//!   byte, stdout throughput, concurrent execs and streams;
//! - warm pools (SandboxTemplate + SandboxPool): create -> Ready of a warm claim one at a time
//!   and 20 at once, beside a cold templated Sandbox and a bare Pod; create -> first exec output
//!   through the gateway; claims of a drained pool (cold fallback); refill of a pool from 0 to 10;
//! - footprint: resident memory of the operator and the gateway, idle, with 1,000 Sandboxes and
//!   under 100 concurrent streams.
//!
//! Every timestamp is taken here, on the node's own clock: object milestones come from watches
//! (the first time a watch event shows them), so their resolution is the watch's, not the API's
//! whole seconds. The gateway runs in-process (`airlock_exec_gateway::serve`, auth `none`, on a
//! loopback port), so the exec figures are the gateway's data path without a port-forward; when
//! the chart's gateway runs in the cluster, it is measured as well (straight to its pod IP, with a
//! ServiceAccount token: `kubernetes` auth), carries the 100 concurrent streams, and its memory is
//! the one reported. The operator and gateway pods are restarted first (`BENCH_RESTART=0` skips
//! it) so their memory figures are those of fresh processes.
//!
//! Objects that must exist but should not run (the burst and 1,000-Sandbox phases) use a
//! RuntimeClass whose scheduling nodeSelector matches no node: the operator's work and the API
//! objects are real, no pod starts, and the machine (shared, 2 cores) is not flooded with
//! sandboxes. Bench namespaces get a ResourceQuota `airlock-sandboxes` of their own with high
//! limits (the operator leaves a quota whose fields someone else manages), so the operator's
//! default of 50 pods per namespace does not cut the bursts short.
//!
//! Configuration (environment): `BENCH_RUNS` (20) scales every run count; `BENCH_ONLY`
//! (comma-separated phases: operator, cold, ready, reap, exec, agent, warm, footprint; `execprobe` is a
//! diagnostic of concurrent pods/exec calls, and `scale` the 10,000-Sandbox run on simulated nodes
//! of `make bench-scale` (`scale.rs`), both only run when named); `BENCH_OUT` (`bench`); and the
//! specific knobs read in [`Opts::from_env`] (`BENCH_CONCURRENCY`, `BENCH_CONCURRENCY_CAP`, ...).
//!
//! One module per benchmark (`operator_latency`, `ready`, `reap`, `exec`, `exec_concurrency`,
//! `warm`, `footprint`), the shared helpers beside them (`opts`, `stats`, `watch`, `procs`, `drivers`,
//! `machine`) and the report writer (`report`). This file: the bench's state, its namespaces and
//! objects, and the run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_crds::Sandbox;
use airlock_e2e::{GVISOR, RUNC, SANDBOX_AGENT_IMAGE, SANDBOX_IMAGE};
use airlock_exec_gateway::auth::AuthMode;
use airlock_api::client::AirlockClient;
use airlock_api::proto::v1 as pb;
use anyhow::{Context as _, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota, ServiceAccount};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// RuntimeClass whose nodeSelector matches no node: pods of it are created and stay Pending.
const NOWHERE_RC: &str = "airlock-bench-unschedulable";
const BENCH_LABEL: &str = "airlock.dev/bench";
const RUN_LABEL: &str = "airlock.dev/bench-run";
const PHASE_LABEL: &str = "airlock.dev/bench-phase";
const SYSTEM_NS: &str = "airlock-system";
const AGENT_PATH: &str = "/.airlock/airlock-agent";
const PIPE_BUF: usize = 64 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

mod opts;
mod stats;
mod watch;
mod procs;
mod operator_latency;
mod ready;
mod reap;
mod exec;
mod exec_concurrency;
mod warm;
mod drivers;
mod footprint;
mod agent;
mod scale;
mod machine;
mod report;

use opts::*;
use stats::*;
use watch::*;
use procs::*;
use operator_latency::*;
use drivers::*;
use machine::*;
use report::*;

// --------------------------------------------------------------------------------------------
// The bench

struct Bench {
    kube: Client,
    opts: Opts,
    rec: Arc<Recorder>,
    run_id: String,
    namespaces: Mutex<Vec<String>>,
    watches: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Found at the start; looked up again when the process is gone (a new rollout).
    operator: Mutex<Option<Proc>>,
    gateway_proc: Mutex<Option<Proc>>,
    report: Mutex<Report>,
    /// The pod and NetworkPolicy the operator built for a Sandbox (for replays).
    op_templates: Mutex<Option<(Pod, k8s_openapi::api::networking::v1::NetworkPolicy)>>,
}

#[derive(Default)]
struct Report {
    sections: Vec<(String, String)>,
    results: serde_json::Map<String, Value>,
    ratios: Vec<Ratio>,
    targets: Vec<Value>,
    breakdowns: serde_json::Map<String, Value>,
    footprint: serde_json::Map<String, Value>,
    notes: Vec<String>,
    errors: Vec<String>,
}

impl Bench {
    fn progress(&self, msg: &str) {
        eprintln!(
            "bench: [{:6.1}s]   {msg}",
            self.rec.base_instant.elapsed().as_secs_f64()
        );
    }
    fn section(&self, title: &str, body: String) {
        self.report
            .lock()
            .unwrap()
            .sections
            .push((title.to_string(), body));
    }
    fn metrics(&self, ms: &[&Metric]) {
        let mut r = self.report.lock().unwrap();
        for m in ms {
            r.results.insert(m.id.clone(), m.json());
        }
    }
    fn ratios(&self, rs: &[&Ratio]) {
        self.report
            .lock()
            .unwrap()
            .ratios
            .extend(rs.iter().map(|r| (*r).clone()));
    }
    fn note(&self, n: impl Into<String>) {
        self.report.lock().unwrap().notes.push(n.into());
    }
    fn target(&self, what: &str, target: &str, measured: String, met: Option<bool>) {
        self.report
            .lock()
            .unwrap()
            .targets
            .push(json!({"what": what, "target": target, "measured": measured, "met": met}));
    }
    fn footprint(&self, key: &str, v: Value) {
        self.report.lock().unwrap().footprint.insert(key.into(), v);
    }

    fn pp() -> PostParams {
        PostParams::default()
    }

    /// A namespace of this run, watched; with `quota`, its own ResourceQuota with high limits.
    async fn namespace(&self, suffix: &str, quota: bool) -> Result<String> {
        let name = format!("airlock-bench-{}-{suffix}", self.run_id);
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {BENCH_LABEL: "true", RUN_LABEL: self.run_id}}
        }))?;
        Api::<Namespace>::all(self.kube.clone())
            .create(&Self::pp(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        self.namespaces.lock().unwrap().push(name.clone());
        let sas: Api<ServiceAccount> = Api::namespaced(self.kube.clone(), &name);
        let t = Instant::now();
        while sas.get_opt("default").await?.is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "namespace {name}: no default ServiceAccount after 30s (kube-controller-manager?)"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if quota {
            let rq = json!({
                "apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": "airlock-sandboxes", "namespace": name, "labels": {BENCH_LABEL: "true"}},
                "spec": {
                    "hard": {"pods": "5000", "requests.cpu": "1000", "limits.cpu": "1000", "requests.memory": "10Ti", "limits.memory": "10Ti"},
                    "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["airlock-sandbox"]}]}
                }
            });
            let api: Api<ResourceQuota> = Api::namespaced(self.kube.clone(), &name);
            api.patch(
                "airlock-sandboxes",
                &PatchParams::apply("airlock-bench").force(),
                &Patch::Apply(&rq),
            )
            .await?;
            let t = Instant::now();
            loop {
                let q = api.get("airlock-sandboxes").await?;
                if q.status
                    .as_ref()
                    .and_then(|s| s.hard.as_ref())
                    .is_some_and(|h| !h.is_empty())
                {
                    break;
                }
                if t.elapsed() > Duration::from_secs(30) {
                    bail!("ResourceQuota in {name} not initialized after 30s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let hs = watch_namespace(self.rec.clone(), &self.kube, &name).await?;
        self.watches.lock().unwrap().extend(hs);
        Ok(name)
    }

    fn sandbox(
        &self,
        name: &str,
        phase: &str,
        rc: &str,
        cpu: &str,
        memory: &str,
        ttl: i64,
    ) -> Result<Sandbox> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": name, "labels": {BENCH_LABEL: "true", PHASE_LABEL: phase}},
            "spec": {
                "image": SANDBOX_IMAGE,
                "runtimeClassName": rc,
                "resources": {"cpu": cpu, "memory": memory},
                "lifetime": {"ttlSeconds": ttl}
            }
        }))?)
    }

    /// [`Bench::sandbox`] on the image that holds the agent, with `spec.agent: Image`.
    fn sandbox_own_agent(&self, name: &str, rc: &str, cpu: &str, memory: &str) -> Result<Sandbox> {
        let mut s = self.sandbox(name, "ready", rc, cpu, memory, 3600)?;
        s.spec.image = SANDBOX_AGENT_IMAGE.into();
        s.spec.agent = Some(airlock_crds::AgentSource::Image);
        Ok(s)
    }

    fn bare_pod(&self, name: &str, rc: &str, cpu: &str, memory: &str) -> Result<Pod> {
        self.bare_pod_of(SANDBOX_IMAGE, name, rc, cpu, memory)
    }

    fn bare_pod_of(&self, image: &str, name: &str, rc: &str, cpu: &str, memory: &str) -> Result<Pod> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {BENCH_LABEL: "true", PHASE_LABEL: "ready"}},
            "spec": {
                "runtimeClassName": rc,
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "containers": [{
                    "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "infinity"],
                    "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}
                }]
            }
        }))?)
    }
}

// --------------------------------------------------------------------------------------------
// Main

async fn cleanup(kube: &Client, namespaces: &[String]) -> Vec<String> {
    let nsapi: Api<Namespace> = Api::all(kube.clone());
    for ns in namespaces {
        let _ = nsapi.delete(ns, &DeleteParams::background()).await;
    }
    let _ = Api::<RuntimeClass>::all(kube.clone())
        .delete(NOWHERE_RC, &DeleteParams::default())
        .await;
    let t = Instant::now();
    loop {
        let mut left = Vec::new();
        for ns in namespaces {
            if nsapi.get_opt(ns).await.ok().flatten().is_some() {
                left.push(ns.clone());
            }
        }
        if left.is_empty() || t.elapsed() > Duration::from_secs(90) {
            return left;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run(b: &Bench) -> Result<()> {
    let rc: RuntimeClass = serde_json::from_value(json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": NOWHERE_RC, "labels": {BENCH_LABEL: "true"}},
        "handler": "airlock-bench-none",
        "scheduling": {"nodeSelector": {"airlock.dev/bench-nowhere": "true"}}
    }))?;
    match Api::<RuntimeClass>::all(b.kube.clone())
        .create(&Bench::pp(), &rc)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e).context("creating the unschedulable RuntimeClass"),
    }
    if b.opts.restart {
        eprintln!(
            "bench: restarting the operator and gateway pods (fresh processes for the memory figures; BENCH_RESTART=0 skips)"
        );
        match b.restart_components().await {
            Ok(()) => b.note("the operator and gateway pods were restarted at the start of the run, so their memory figures are those of fresh processes"),
            Err(e) => b.note(format!("restarting the operator and gateway failed ({e:#}); their memory figures include whatever they held before")),
        }
        // Let them settle (leader election, initial lists).
        tokio::time::sleep(Duration::from_secs(10)).await;
    } else {
        b.note("BENCH_RESTART=0: the operator and gateway were not restarted; their memory figures include whatever they held before the run");
    }
    b.footprint("idle", b.sample_now("idle").await);
    let ns = b.namespace("main", true).await?;
    let phases: [(&str, &str); 8] = [
        ("operator", "operator latency"),
        ("cold", "cold namespace"),
        ("ready", "time to Ready"),
        ("reap", "reap latency"),
        ("exec", "exec"),
        ("agent", "agent daemon"),
        ("warm", "warm pools"),
        ("footprint", "footprint with many Sandboxes"),
    ];
    // Diagnostics and the scale run (`make bench-scale`), only when asked for by name in BENCH_ONLY.
    let named = |p: &str| b.opts.only.as_ref().is_some_and(|o| o.iter().any(|x| x == p));
    let phases: Vec<(&str, &str)> = phases
        .into_iter()
        .chain(named("execprobe").then_some(("execprobe", "exec probe")))
        .chain(named("scale").then_some(("scale", "scale on simulated nodes")))
        .collect();
    for (id, what) in phases {
        if !b.opts.enabled(id) {
            continue;
        }
        let t = Instant::now();
        eprintln!("bench: {what}...");
        let r = match id {
            "operator" => b.phase_operator(&ns).await,
            "cold" => b.phase_cold().await,
            "ready" => b.phase_ready(&ns).await,
            "reap" => b.phase_reap(&ns).await,
            "exec" => b.phase_exec(&ns).await,
            "agent" => b.phase_agent(&ns).await,
            "warm" => b.phase_warm().await,
            "footprint" => b.phase_footprint().await,
            "execprobe" => b.exec_probe(&ns).await,
            "scale" => b.phase_scale().await,
            _ => Ok(()),
        };
        eprintln!(
            "bench: {what}: {:.1} s{}",
            t.elapsed().as_secs_f64(),
            r.as_ref()
                .err()
                .map(|e| format!(" FAILED: {e:#}"))
                .unwrap_or_default()
        );
        if let Err(e) = r {
            b.report
                .lock()
                .unwrap()
                .errors
                .push(format!("phase {what}: {e:#}"));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let opts = Opts::from_env();
    let kube = Client::try_default()
        .await
        .context("no cluster: run `e2e/cluster up` (or `make install`) and set KUBECONFIG")?;
    let started = Instant::now();
    let date = now_rfc3339();
    let (operator, mut notes) = find_process(&kube, "operator", "airlock-operator").await;
    let (gateway_proc, gnotes) = find_process(&kube, "exec-gateway", "airlock-exec-gateway").await;
    notes.extend(gnotes);
    if operator.is_none() {
        bail!(
            "no airlock-operator is running (neither in {SYSTEM_NS} nor on this host): run `make install` first"
        );
    }
    let run_id = format!(
        "{:06x}",
        (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            & 0xffffff) as u32
    );
    let header = json!({
        "date": date,
        "machine": machine(),
        "versions": versions(&kube, &operator, &gateway_proc).await,
        "config": opts,
        "gateway_mode": "in-process (airlock_exec_gateway::serve on 127.0.0.1, auth none); the in-cluster gateway is measured too when it runs (pod IP, kubernetes auth)",
    });
    let b = Bench {
        kube: kube.clone(),
        opts: opts.clone(),
        rec: Arc::new(Recorder::new()),
        run_id,
        namespaces: Mutex::new(Vec::new()),
        watches: Mutex::new(Vec::new()),
        operator: Mutex::new(operator),
        gateway_proc: Mutex::new(gateway_proc),
        report: Mutex::new(Report::default()),
        op_templates: Mutex::new(None),
    };
    for n in notes {
        b.note(n);
    }
    let res = tokio::select! {
        r = run(&b) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(e) = &res {
        b.report.lock().unwrap().errors.push(format!("{e:#}"));
    }
    for h in b.watches.lock().unwrap().drain(..) {
        h.abort();
    }
    eprintln!("bench: cleaning up");
    let namespaces = b.namespaces.lock().unwrap().clone();
    let left = cleanup(&kube, &namespaces).await;
    if !left.is_empty() {
        b.note(format!(
            "namespaces still terminating when the run ended: {}",
            left.join(", ")
        ));
    }
    b.footprint(
        "end",
        b.sample_now("end of the run, bench namespaces deleted")
            .await,
    );
    let mut header = header;
    // The processes measured (new pods after a restart).
    if let Some(op) = b.operator.lock().unwrap().clone() {
        header["versions"]["operator"] = json!(op.source);
    }
    if let Some(gw) = b.gateway_proc.lock().unwrap().clone() {
        header["versions"]["gateway"] = json!(format!(
            "in-process (airlock-exec-gateway crate of this checkout, auth none); in-cluster: {}",
            gw.source
        ));
    }
    header["machine"]["loadavg_end"] = json!(
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (md, j) = render(&b, &header, started.elapsed());
    std::fs::create_dir_all(&opts.out)?;
    std::fs::write(opts.out.join("report.md"), &md)?;
    std::fs::write(
        opts.out.join("report.json"),
        serde_json::to_string_pretty(&j)? + "\n",
    )?;
    eprintln!(
        "bench: wrote {}/report.md and report.json",
        opts.out.display()
    );
    print!("{md}");
    res
}
