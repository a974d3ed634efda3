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
//! (comma-separated phases: operator, cold, ready, reap, exec, footprint; `execprobe` is a
//! diagnostic of concurrent pods/exec calls, only run when named); `BENCH_OUT` (`bench`); and the
//! specific knobs read in [`Opts::from_env`] (`BENCH_CONCURRENCY`, `BENCH_CONCURRENCY_CAP`, ...).
//!
//! Over 600 lines: every benchmark and the report writer in one binary; splitting it by benchmark
//! with shared helpers is issue 11 (layout).

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

// --------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, serde::Serialize)]
struct Opts {
    runs: usize,
    ready_runs: usize,
    decomp_runs: usize,
    runc_runs: usize,
    single_creates: usize,
    bursts: Vec<usize>,
    cold_runs: usize,
    reap_runs: usize,
    reap_ttl_seconds: i64,
    exec_runs: usize,
    ttfb_runs: usize,
    stream_runs: usize,
    stream_mib: usize,
    concurrency: usize,
    concurrency_low: usize,
    concurrency_cap_seconds: u64,
    gvisor_concurrency: Vec<usize>,
    footprint_sandboxes: usize,
    footprint_stream_mib: usize,
    ready_cpu: String,
    ready_memory: String,
    exec_cpu: String,
    reap_cpu: String,
    exec_memory: String,
    replay: bool,
    restart: bool,
    only: Option<Vec<String>>,
    out: PathBuf,
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_str(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl Opts {
    fn from_env() -> Opts {
        let runs = env_usize("BENCH_RUNS", 20).max(1);
        let bursts = std::env::var("BENCH_BURSTS")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .filter(|n| *n > 0)
                    .collect()
            })
            .unwrap_or_else(|| vec![50, 200]);
        let only = std::env::var("BENCH_ONLY")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
        Opts {
            runs,
            ready_runs: env_usize("BENCH_READY_RUNS", runs),
            decomp_runs: env_usize("BENCH_DECOMP_RUNS", (runs / 4).max(3)),
            runc_runs: env_usize("BENCH_RUNC_RUNS", (runs / 2).max(3)),
            single_creates: env_usize("BENCH_SINGLE_CREATES", runs),
            bursts,
            cold_runs: env_usize("BENCH_COLD_RUNS", (runs / 6).clamp(1, 3)),
            reap_runs: env_usize("BENCH_REAP_RUNS", (runs / 2).max(3)),
            reap_ttl_seconds: env_usize("BENCH_REAP_TTL", 8) as i64,
            exec_runs: env_usize("BENCH_EXEC_RUNS", runs * 5 / 2),
            ttfb_runs: env_usize("BENCH_TTFB_RUNS", runs),
            stream_runs: env_usize("BENCH_STREAM_RUNS", (runs / 4).max(3)),
            stream_mib: env_usize("BENCH_STREAM_MIB", 50),
            concurrency: env_usize("BENCH_CONCURRENCY", 100),
            concurrency_low: env_usize("BENCH_CONCURRENCY_LOW", 20),
            concurrency_cap_seconds: env_usize("BENCH_CONCURRENCY_CAP", 45) as u64,
            gvisor_concurrency: std::env::var("BENCH_GVISOR_CONCURRENCY")
                .ok()
                .map(|v| {
                    v.split(',')
                        .filter_map(|s| s.trim().parse().ok())
                        .filter(|n| *n > 0)
                        .collect()
                })
                .unwrap_or_else(|| vec![5, 20]),
            footprint_sandboxes: env_usize("BENCH_FOOTPRINT_SANDBOXES", 1000),
            footprint_stream_mib: env_usize("BENCH_FOOTPRINT_STREAM_MIB", 1),
            ready_cpu: env_str("BENCH_CPU", "500m"),
            ready_memory: env_str("BENCH_MEMORY", "256Mi"),
            exec_cpu: env_str("BENCH_EXEC_CPU", "500m"),
            reap_cpu: env_str("BENCH_REAP_CPU", "250m"),
            exec_memory: env_str("BENCH_EXEC_MEMORY", "256Mi"),
            replay: env_str("BENCH_REPLAY", "1") != "0",
            restart: env_str("BENCH_RESTART", "1") != "0",
            only,
            out: PathBuf::from(env_str("BENCH_OUT", "bench")),
        }
    }

    fn enabled(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == phase))
    }
}

// --------------------------------------------------------------------------------------------
// Statistics

#[derive(Debug, Clone, serde::Serialize)]
struct Dist {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    min: f64,
    mean: f64,
}

/// Nearest-rank percentiles.
fn dist(v: &[f64]) -> Option<Dist> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let pct = |p: f64| s[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
    Some(Dist {
        n,
        p50: pct(50.0),
        p90: pct(90.0),
        p99: pct(99.0),
        max: s[n - 1],
        min: s[0],
        mean: s.iter().sum::<f64>() / n as f64,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `b - a` in milliseconds, negative when `b` is earlier.
fn ms_between(a: Instant, b: Instant) -> f64 {
    if b >= a { ms(b - a) } else { -ms(a - b) }
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// One measured quantity.
#[derive(Debug, Clone)]
struct Metric {
    id: String,
    name: String,
    unit: &'static str,
    values: Vec<f64>,
    errors: usize,
    note: String,
}

impl Metric {
    fn new(id: &str, name: &str, unit: &'static str) -> Metric {
        Metric {
            id: id.into(),
            name: name.into(),
            unit,
            values: Vec::new(),
            errors: 0,
            note: String::new(),
        }
    }
    fn dist(&self) -> Option<Dist> {
        dist(&self.values)
    }
    fn json(&self) -> Value {
        json!({"name": self.name, "unit": self.unit, "dist": self.dist(), "errors": self.errors, "note": self.note})
    }
}

fn table(metrics: &[&Metric]) -> String {
    let mut s = String::from(
        "| measurement | unit | p50 | p90 | p99 | max | mean | n | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in metrics {
        let note = if m.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.note)
        };
        match m.dist() {
            Some(d) => s.push_str(&format!(
                "| {}{} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                m.name,
                note,
                m.unit,
                fmt_num(d.p50),
                fmt_num(d.p90),
                fmt_num(d.p99),
                fmt_num(d.max),
                fmt_num(d.mean),
                d.n,
                m.errors
            )),
            None => s.push_str(&format!(
                "| {}{} | {} | - | - | - | - | - | 0 | {} |\n",
                m.name, note, m.unit, m.errors
            )),
        }
    }
    s
}

/// `a / b` at p50 and p90.
#[derive(Debug, Clone, serde::Serialize)]
struct Ratio {
    name: String,
    numerator: String,
    denominator: String,
    p50: Option<f64>,
    p90: Option<f64>,
}

fn ratio(name: &str, a: &Metric, b: &Metric) -> Ratio {
    let (da, db) = (a.dist(), b.dist());
    let r = |f: fn(&Dist) -> f64| match (&da, &db) {
        (Some(x), Some(y)) if f(y) > 0.0 => Some(f(x) / f(y)),
        _ => None,
    };
    Ratio {
        name: name.into(),
        numerator: a.id.clone(),
        denominator: b.id.clone(),
        p50: r(|d| d.p50),
        p90: r(|d| d.p90),
    }
}

fn ratio_table(rs: &[&Ratio]) -> String {
    let mut s = String::from("| ratio (same run) | p50 | p90 |\n|---|---:|---:|\n");
    let f = |x: Option<f64>| x.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into());
    for r in rs {
        s.push_str(&format!("| {} | {} | {} |\n", r.name, f(r.p50), f(r.p90)));
    }
    s
}

// --------------------------------------------------------------------------------------------
// Milestones seen through watches

/// The first time each milestone of each object was seen, on this process's monotonic clock.
struct Recorder {
    base_instant: Instant,
    base_wall: SystemTime,
    marks: Mutex<HashMap<String, BTreeMap<String, Instant>>>,
}

fn key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            base_instant: Instant::now(),
            base_wall: SystemTime::now(),
            marks: Mutex::new(HashMap::new()),
        }
    }

    fn mark(&self, key: &str, mark: &str, t: Instant) {
        let mut m = self.marks.lock().unwrap();
        m.entry(key.to_string())
            .or_default()
            .entry(mark.to_string())
            .or_insert(t);
    }

    fn get(&self, key: &str, mark: &str) -> Option<Instant> {
        self.marks
            .lock()
            .unwrap()
            .get(key)
            .and_then(|m| m.get(mark).copied())
    }

    fn all(&self, key: &str) -> BTreeMap<String, Instant> {
        self.marks
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    async fn wait(&self, key: &str, mark: &str, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.get(key, mark) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {key} to be {mark} (seen: {:?})",
                    self.all(key).keys().collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until every key has the mark; returns how many have it at the end.
    async fn wait_all(&self, keys: &[String], mark: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let n = {
                let m = self.marks.lock().unwrap();
                keys.iter()
                    .filter(|k| m.get(*k).is_some_and(|x| x.contains_key(mark)))
                    .count()
            };
            if n == keys.len() || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wall-clock time of an instant.
    fn wall(&self, t: Instant) -> SystemTime {
        if t >= self.base_instant {
            self.base_wall + (t - self.base_instant)
        } else {
            self.base_wall - (self.base_instant - t)
        }
    }
}

fn pod_marks(p: &Pod) -> Vec<String> {
    let mut v = vec!["created".to_string()];
    if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
        v.push("scheduled".into());
    }
    if p.metadata.deletion_timestamp.is_some() {
        v.push("deleting".into());
    }
    let Some(st) = &p.status else { return v };
    for c in st.conditions.iter().flatten() {
        match (c.type_.as_str(), c.status.as_str()) {
            ("PodScheduled", "False") => v.push(format!(
                "unschedulable:{}",
                c.reason.as_deref().unwrap_or("")
            )),
            ("PodReadyToStartContainers", "True") => v.push("sandbox-ready".into()),
            ("Ready", "True") => v.push("ready".into()),
            _ => {}
        }
    }
    let inits = st.init_container_statuses.as_deref().unwrap_or_default();
    if !inits.is_empty() {
        if inits.iter().any(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        }) {
            v.push("init-started".into());
        }
        if inits
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
        {
            v.push("init-done".into());
        }
    }
    let mains = st.container_statuses.as_deref().unwrap_or_default();
    if !mains.is_empty()
        && mains
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    {
        v.push("running".into());
    }
    v
}

fn sandbox_marks(s: &Sandbox) -> Vec<String> {
    let mut v = vec!["created".to_string()];
    if s.metadata.deletion_timestamp.is_some() {
        v.push("deleting".into());
    }
    if let Some(st) = &s.status {
        if st.phase.is_some() {
            v.push("status".into());
        }
        if let Some(c) = s.condition(airlock_crds::condition::READY) {
            v.push(format!("reason:{}", c.reason));
        }
    }
    if s.is_ready() {
        v.push("ready".into());
    }
    v
}

/// Watches pods and Sandboxes of `ns` into the recorder; returns once both watches have listed.
async fn watch_namespace(
    rec: Arc<Recorder>,
    kube: &Client,
    ns: &str,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let (tx1, rx1) = tokio::sync::oneshot::channel();
    let (tx2, rx2) = tokio::sync::oneshot::channel();
    let h1 = spawn_watch(
        rec.clone(),
        Api::<Pod>::namespaced(kube.clone(), ns),
        "pod",
        pod_marks,
        tx1,
    );
    let h2 = spawn_watch(
        rec,
        Api::<Sandbox>::namespaced(kube.clone(), ns),
        "sbx",
        sandbox_marks,
        tx2,
    );
    tokio::time::timeout(Duration::from_secs(30), async {
        let _ = rx1.await;
        let _ = rx2.await;
    })
    .await
    .map_err(|_| anyhow!("watches of namespace {ns} did not start within 30s"))?;
    // The watch request itself starts right after the initial list: give it a moment so the first
    // measured event is not delivered late.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(vec![h1, h2])
}

fn spawn_watch<K>(
    rec: Arc<Recorder>,
    api: Api<K>,
    kind: &'static str,
    marks: fn(&K) -> Vec<String>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut s = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            let now = Instant::now();
            let Ok(ev) = ev else { continue };
            match ev {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    let k = key(kind, &o.namespace().unwrap_or_default(), &o.name_any());
                    for m in marks(&o) {
                        rec.mark(&k, &m, now);
                    }
                }
                watcher::Event::Delete(o) => {
                    let k = key(kind, &o.namespace().unwrap_or_default(), &o.name_any());
                    rec.mark(&k, "deleting", now);
                    rec.mark(&k, "gone", now);
                }
                watcher::Event::InitDone => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                watcher::Event::Init => {}
            }
        }
    })
}

// --------------------------------------------------------------------------------------------
// Processes and memory

#[derive(Debug, Clone, serde::Serialize)]
struct Proc {
    pid: u32,
    /// How it was found: in-cluster pod or host process.
    source: String,
}

/// (VmRSS, VmHWM) in KiB.
fn rss_kib(pid: &str) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// Memory and connection figures of a process.
fn proc_mem(p: &Proc) -> Option<Value> {
    let pid = p.pid.to_string();
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .ok();
    // In a pod the network namespace is the container's own: its connections are the process's.
    let tcp = p
        .source
        .starts_with("in-cluster")
        .then(|| tcp_established(&pid));
    Some(json!({
        "rss_mib": mib(field("VmRSS:")?),
        "hwm_mib": field("VmHWM:").map(mib),
        "anon_mib": field("RssAnon:").map(mib),
        "file_mib": field("RssFile:").map(mib),
        "threads": field("Threads:"),
        "fds": fds,
        "tcp_established": tcp,
    }))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn argv0_base(pid: &str) -> Option<String> {
    let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let a0 = c.split(|b| *b == 0).next()?;
    let a0 = String::from_utf8_lossy(a0).to_string();
    Some(a0.rsplit('/').next().unwrap_or(&a0).to_string())
}

fn proc_pids() -> Vec<String> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default()
}

/// The process of `binary` in the running pod of `component` in airlock-system, else a host
/// process of that name.
async fn find_process(kube: &Client, component: &str, binary: &str) -> (Option<Proc>, Vec<String>) {
    let mut notes = Vec::new();
    let pods: Api<Pod> = Api::namespaced(kube.clone(), SYSTEM_NS);
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/component={component}"));
    let mut found = None;
    if let Ok(list) = pods.list(&lp).await {
        for p in list.items {
            let Some(st) = &p.status else { continue };
            if st.phase.as_deref() != Some("Running") {
                continue;
            }
            for cs in st.container_statuses.iter().flatten() {
                let Some(cid) = cs
                    .container_id
                    .as_deref()
                    .and_then(|c| c.split("://").nth(1))
                else {
                    continue;
                };
                let image = cs.image.clone();
                for pid in proc_pids() {
                    let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
                        continue;
                    };
                    if cg.contains(cid) && argv0_base(&pid).as_deref() == Some(binary) {
                        found = Some(Proc {
                            pid: pid.parse().unwrap_or(0),
                            source: format!(
                                "in-cluster pod {SYSTEM_NS}/{} (image {image})",
                                p.name_any()
                            ),
                        });
                        break;
                    }
                }
            }
            if found.is_some() {
                break;
            }
        }
    }
    let host: Vec<String> = proc_pids()
        .into_iter()
        .filter(|pid| argv0_base(pid).as_deref() == Some(binary))
        .filter(|pid| found.as_ref().is_none_or(|f| f.pid.to_string() != *pid))
        .collect();
    if found.is_none() {
        if let Some(pid) = host.first() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            found = Some(Proc {
                pid: pid.parse().unwrap_or(0),
                source: format!("host process `{cmd}` (not the Helm install)"),
            });
            if host.len() > 1 {
                notes.push(format!(
                    "{} {binary} processes run on the host; measured pid {pid}",
                    host.len()
                ));
            }
        }
    } else if !host.is_empty() {
        notes.push(format!(
            "besides the in-cluster {binary}, {} more {binary} process(es) run on this host (pids {}): they may also handle the bench's objects",
            host.len(),
            host.join(", ")
        ));
    }
    (found, notes)
}

/// Samples a process's VmRSS until stopped.
struct Sampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl Sampler {
    fn start(pid: String, every: Duration) -> Sampler {
        let (stop, mut rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut v = Vec::new();
            loop {
                if let Some((r, _)) = rss_kib(&pid) {
                    v.push(r);
                }
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
            if let Some((r, _)) = rss_kib(&pid) {
                v.push(r);
            }
            v
        });
        Sampler { stop, task }
    }
    async fn finish(self) -> Vec<u64> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

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

    // ----------------------------------------------------------------------------------------
    // Operator latency

    async fn phase_operator(&self, ns: &str) -> Result<()> {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let templates = self.operator_templates(ns).await?;
        let mut api_m = [
            Metric::new(
                "api.get_pod_missing",
                "API: GET the (not yet existing) pod",
                "ms",
            ),
            Metric::new(
                "api.apply_networkpolicy",
                "API: server-side apply of a new NetworkPolicy (the operator's)",
                "ms",
            ),
            Metric::new(
                "api.create_pod",
                "API: create the pod (the operator's, new name)",
                "ms",
            ),
        ];
        let mut single = Metric::new(
            "operator.single.watch_to_watch",
            "1 create: Sandbox seen -> Pod seen (operator's added latency)",
            "ms",
        );
        let mut single_call = Metric::new(
            "operator.single.call_to_pod",
            "1 create: create call returned -> Pod seen",
            "ms",
        );
        for i in 0..self.opts.single_creates {
            // The replayed API calls right before each create, so both see the same load.
            self.api_round_trip(ns, i, &templates, &mut api_m).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let name = format!("op1-{i:03}");
            let sb = self.sandbox(&name, "op1", NOWHERE_RC, "10m", "16Mi", 3600)?;
            if let Err(e) = api.create(&Self::pp(), &sb).await {
                single.errors += 1;
                self.report
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("creating {name}: {e}"));
                continue;
            }
            let returned = Instant::now();
            match self
                .rec
                .wait(&key("pod", ns, &name), "created", Duration::from_secs(60))
                .await
            {
                Ok(pod_t) => {
                    let sb_t = self
                        .rec
                        .get(&key("sbx", ns, &name), "created")
                        .unwrap_or(returned);
                    single.values.push(ms_between(sb_t, pod_t));
                    single_call.values.push(ms_between(returned, pod_t));
                }
                Err(e) => {
                    single.errors += 1;
                    self.report.lock().unwrap().errors.push(e.to_string());
                }
            }
            let _ = api.delete(&name, &DeleteParams::background()).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut all: Vec<Metric> = api_m.into_iter().collect();
        all.push(single);
        all.push(single_call);
        {
            let lp = ListParams::default().labels(&format!("{PHASE_LABEL}=api"));
            let _ = Api::<Pod>::namespaced(self.kube.clone(), ns)
                .delete_collection(&DeleteParams::background(), &lp)
                .await;
            let _ = Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(
                self.kube.clone(),
                ns,
            )
            .delete_collection(&DeleteParams::background(), &lp)
            .await;
        }
        self.progress("single creates done");
        self.settle_pods_gone(ns, "op1").await;

        for &n in &self.opts.bursts {
            let phase = format!("op{n}");
            let names: Vec<String> = (0..n).map(|i| format!("{phase}-{i:04}")).collect();
            let sbs: Vec<Sandbox> = names
                .iter()
                .map(|nm| self.sandbox(nm, &phase, NOWHERE_RC, "10m", "16Mi", 3600))
                .collect::<Result<_>>()?;
            let start = Instant::now();
            let created = futures::future::join_all(sbs.iter().map(|sb| {
                let api = api.clone();
                async move { api.create(&Self::pp(), sb).await.map(|_| Instant::now()) }
            }))
            .await;
            let create_errors = created.iter().filter(|r| r.is_err()).count();
            let pod_keys: Vec<String> = names.iter().map(|nm| key("pod", ns, nm)).collect();
            let got = self
                .rec
                .wait_all(&pod_keys, "created", Duration::from_secs(180))
                .await;
            let mut w2w = Metric::new(
                &format!("operator.burst{n}.watch_to_watch"),
                &format!("{n} concurrent creates: Sandbox seen -> Pod seen"),
                "ms",
            );
            let mut from_start = Metric::new(
                &format!("operator.burst{n}.start_to_pod"),
                &format!("{n} concurrent creates: burst start -> Pod seen"),
                "ms",
            );
            for (nm, c) in names.iter().zip(&created) {
                let Ok(_) = c else { continue };
                match (
                    self.rec.get(&key("sbx", ns, nm), "created"),
                    self.rec.get(&key("pod", ns, nm), "created"),
                ) {
                    (Some(s), Some(p)) => {
                        w2w.values.push(ms_between(s, p));
                        from_start.values.push(ms_between(start, p));
                    }
                    _ => w2w.errors += 1,
                }
            }
            w2w.errors += create_errors;
            w2w.note = format!("{got}/{n} pods created");
            all.push(w2w);
            all.push(from_start);
            self.progress(&format!("burst of {n} measured"));
            let _ = api
                .delete_collection(
                    &DeleteParams::background(),
                    &ListParams::default().labels(&format!("{PHASE_LABEL}={phase}")),
                )
                .await;
            self.settle_pods_gone(ns, &phase).await;
            self.progress(&format!("burst of {n} cleaned up"));
        }
        let templates = self.op_templates.lock().unwrap().clone();
        let replay_md = match (self.opts.bursts.iter().copied().max(), templates) {
            (Some(n), Some((pod, np))) if self.opts.replay => {
                let mut md = String::new();
                let mut rows = Vec::new();
                for limit in [None, Some(16usize)] {
                    let r = replay_burst(ns, &pod, &np, n, limit).await;
                    self.progress(&format!("replay of {n}, limit {limit:?} done"));
                    match r {
                        Ok((m, span, conns)) => {
                            let what = limit
                                .map(|l| format!("{l} at a time"))
                                .unwrap_or_else(|| "all at once".into());
                            rows.push(json!({"n": n, "concurrency": limit, "makespan_ms": ms(span), "connections": conns, "item": m.json()}));
                            md.push_str(&format!(
                                "| {what} | {} | {} | {} | {conns} |\n",
                                fmt_num(ms(span)),
                                m.dist().map(|d| fmt_num(d.p50)).unwrap_or("-".into()),
                                m.dist().map(|d| fmt_num(d.p99)).unwrap_or("-".into()),
                            ));
                        }
                        Err(e) => self
                            .report
                            .lock()
                            .unwrap()
                            .errors
                            .push(format!("replay: {e:#}")),
                    }
                }
                self.report
                    .lock()
                    .unwrap()
                    .results
                    .insert("operator.replay".into(), json!(rows));
                format!(
                    "\nReplay of the operator's API calls for {n} Sandboxes (GET pod, apply NetworkPolicy, create pod; each \
                     sequence in order, sequences concurrent) from a fresh client in this process, unbounded (as the operator's \
                     controller runs reconciles today) and with at most 16 sequences in flight. kube's client speaks HTTP/1.1, so \
                     every request in flight holds a TLS connection of its own.\n\n\
                     | concurrency | all done (ms) | per sequence p50 (ms) | p99 (ms) | TCP connections opened |\n|---|---:|---:|---:|---:|\n{md}"
                )
            }
            _ => String::new(),
        };
        let refs: Vec<&Metric> = all.iter().collect();
        self.metrics(&refs);
        let p50 = all
            .iter()
            .find(|m| m.id == "operator.single.watch_to_watch")
            .and_then(|m| m.dist())
            .map(|d| d.p50);
        self.target(
            "operator latency before the pod exists (1 create, p50)",
            "<= 20 ms",
            p50.map(|x| format!("{x:.1} ms")).unwrap_or("-".into()),
            p50.map(|x| x <= 20.0),
        );
        self.section(
            "Operator latency: Sandbox created -> Pod created",
            format!(
                "Pods use a RuntimeClass that schedules nowhere, so only the creation of the Pod object is measured and nothing starts. \
                 \"Sandbox seen -> Pod seen\": both times are when this process's watches first saw the object, so the watch delivery \
                 delay cancels out and what is left is the operator's own latency (its watch, reconcile, API writes). \
                 Namespace with a ResourceQuota already initialized (steady state). The \"API:\" rows replay, from this process, \
                 the calls the operator makes before the pod exists, with the objects it built, right before each single create.\n\n{}{replay_md}",
                table(&refs)
            ),
        );
        Ok(())
    }

    /// The pod and NetworkPolicy the operator builds for a Sandbox (templates for replays).
    async fn operator_templates(
        &self,
        ns: &str,
    ) -> Result<(Pod, k8s_openapi::api::networking::v1::NetworkPolicy)> {
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let name = "op-template";
        api.create(
            &Self::pp(),
            &self.sandbox(name, "op-template", NOWHERE_RC, "10m", "16Mi", 3600)?,
        )
        .await?;
        self.rec
            .wait(&key("pod", ns, name), "created", Duration::from_secs(60))
            .await?;
        let pod = Api::<Pod>::namespaced(self.kube.clone(), ns)
            .get(name)
            .await?;
        let np = Api::<NetworkPolicy>::namespaced(self.kube.clone(), ns)
            .get(name)
            .await?;
        let _ = api.delete(name, &DeleteParams::background()).await;
        let _ = self
            .rec
            .wait(&key("pod", ns, name), "gone", Duration::from_secs(60))
            .await;
        *self.op_templates.lock().unwrap() = Some((pod.clone(), np.clone()));
        Ok((pod, np))
    }

    /// One replay, from this process, of the API calls the operator makes before a pod exists
    /// (read the pod, apply the NetworkPolicy, create the pod), with the objects it built.
    async fn api_round_trip(
        &self,
        ns: &str,
        i: usize,
        t: &(Pod, k8s_openapi::api::networking::v1::NetworkPolicy),
        m: &mut [Metric; 3],
    ) -> Result<()> {
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let nps: Api<NetworkPolicy> = Api::namespaced(self.kube.clone(), ns);
        let clock = Instant::now();
        push(
            &mut m[0],
            pods.get_opt(&format!("api-missing-{i}"))
                .await
                .map(|_| ms(clock.elapsed()))
                .map_err(anyhow::Error::from),
        );
        let mut v = serde_json::to_value(&t.1)?;
        v["metadata"] = json!({"name": format!("api-np-{i:03}"), "namespace": ns, "labels": {BENCH_LABEL: "true", PHASE_LABEL: "api"}});
        let clock = Instant::now();
        push(
            &mut m[1],
            nps.patch(
                &format!("api-np-{i:03}"),
                &PatchParams::apply("airlock-bench").force(),
                &Patch::Apply(&v),
            )
            .await
            .map(|_| ms(clock.elapsed()))
            .map_err(anyhow::Error::from),
        );
        let p = replica(&t.0, &format!("api-pod-{i:03}"), "api", false)?;
        let clock = Instant::now();
        push(
            &mut m[2],
            pods.create(&Self::pp(), &p)
                .await
                .map(|_| ms(clock.elapsed()))
                .map_err(anyhow::Error::from),
        );
        Ok(())
    }

    /// Waits (bounded) until the pods of a phase are gone, so the next measurement starts clean.
    async fn settle_pods_gone(&self, ns: &str, phase: &str) {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            match pods
                .list(&ListParams::default().labels(&format!(
                    "{}={}",
                    airlock_crds::labels::COMPONENT,
                    airlock_crds::labels::COMPONENT_SANDBOX
                )))
                .await
            {
                Ok(l)
                    if l.items
                        .iter()
                        .all(|p| !p.name_any().starts_with(&format!("{phase}-"))) =>
                {
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// First Sandbox of a namespace the operator has never seen (it creates the quota first).
    async fn phase_cold(&self) -> Result<()> {
        let mut m = Metric::new(
            "operator.cold.watch_to_watch",
            "first Sandbox of a new namespace: Sandbox seen -> Pod seen",
            "ms",
        );
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..self.opts.cold_runs {
            let ns = self.namespace(&format!("cold{i}"), false).await?;
            let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), &ns);
            api.create(
                &Self::pp(),
                &self.sandbox("first", "cold", NOWHERE_RC, "10m", "16Mi", 3600)?,
            )
            .await?;
            match self
                .rec
                .wait(
                    &key("pod", &ns, "first"),
                    "created",
                    Duration::from_secs(60),
                )
                .await
            {
                Ok(p) => {
                    let s = self
                        .rec
                        .get(&key("sbx", &ns, "first"), "created")
                        .unwrap_or(p);
                    m.values.push(ms_between(s, p));
                    for k in self.rec.all(&key("sbx", &ns, "first")).keys() {
                        if let Some(r) = k.strip_prefix("reason:") {
                            *reasons.entry(r.to_string()).or_default() += 1;
                        }
                    }
                }
                Err(e) => {
                    m.errors += 1;
                    self.report.lock().unwrap().errors.push(e.to_string());
                }
            }
            let _ = Api::<Namespace>::all(self.kube.clone())
                .delete(&ns, &DeleteParams::background())
                .await;
        }
        if !reasons.is_empty() {
            m.note = format!(
                "Ready reasons seen before the pod: {}",
                reasons
                    .iter()
                    .map(|(k, v)| format!("{k} x{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.metrics(&[&m]);
        self.section(
            "Operator latency: first Sandbox of a new namespace",
            format!(
                "The operator applies the namespace's ResourceQuota before the first pod; the API server refuses pods while a new \
                 quota's usage is not computed yet (\"status unknown for quota\"), and the operator retries after a fixed delay.\n\n{}",
                table(&[&m])
            ),
        );
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Time to Ready

    async fn phase_ready(&self, ns: &str) -> Result<()> {
        let sbx_api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let pod_api: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let (cpu, mem) = (self.opts.ready_cpu.clone(), self.opts.ready_memory.clone());

        // The pod the operator builds, to replay it without the operator (and without its init
        // container): that splits the Sandbox's extra time into operator, init container and pod
        // shape.
        let template = {
            let name = "rd-template";
            sbx_api
                .create(
                    &Self::pp(),
                    &self.sandbox(name, "ready", GVISOR, &cpu, &mem, 3600)?,
                )
                .await?;
            self.rec
                .wait(&key("pod", ns, name), "created", Duration::from_secs(60))
                .await?;
            let pod = pod_api.get(name).await?;
            let _ = sbx_api.delete(name, &DeleteParams::background()).await;
            let _ = self
                .rec
                .wait(&key("pod", ns, name), "gone", Duration::from_secs(90))
                .await;
            pod
        };
        let decomp_runs = self.opts.decomp_runs.min(self.opts.ready_runs);
        let variants: Vec<Variant> = vec![
            Variant {
                id: "sandbox.gvisor",
                label: "Sandbox, gVisor",
                kind: Kind::Sandbox,
                rt: GVISOR,
                runs: self.opts.ready_runs,
            },
            Variant {
                id: "replica.gvisor",
                label: "operator's pod created directly, gVisor",
                kind: Kind::Replica,
                rt: GVISOR,
                runs: decomp_runs,
            },
            Variant {
                id: "replica_noinit.gvisor",
                label: "operator's pod without the agent, gVisor",
                kind: Kind::ReplicaNoInit,
                rt: GVISOR,
                runs: decomp_runs,
            },
            Variant {
                id: "bare.gvisor",
                label: "bare Pod, gVisor (floor)",
                kind: Kind::Bare,
                rt: GVISOR,
                runs: self.opts.ready_runs,
            },
            Variant {
                id: "sandbox_own_agent.gvisor",
                label: "Sandbox, agent in its image (spec.agent: Image), gVisor",
                kind: Kind::SandboxOwnAgent,
                rt: GVISOR,
                runs: self.opts.ready_runs,
            },
            Variant {
                id: "bare_agent_image.gvisor",
                label: "bare Pod of that image, gVisor (floor)",
                kind: Kind::BareAgentImage,
                rt: GVISOR,
                runs: self.opts.ready_runs,
            },
            Variant {
                id: "sandbox.runc",
                label: "Sandbox, runc",
                kind: Kind::Sandbox,
                rt: RUNC,
                runs: self.opts.runc_runs.min(self.opts.ready_runs),
            },
            Variant {
                id: "bare.runc",
                label: "bare Pod, runc (floor)",
                kind: Kind::Bare,
                rt: RUNC,
                runs: self.opts.runc_runs.min(self.opts.ready_runs),
            },
        ];
        let mut totals: Vec<Metric> = variants
            .iter()
            .map(|v| {
                Metric::new(
                    &format!("ready.{}", v.id),
                    &format!("{}: create -> Ready", v.label),
                    "ms",
                )
            })
            .collect();
        let mut timelines: Vec<Vec<BTreeMap<String, f64>>> = vec![Vec::new(); variants.len()];
        for r in 0..self.opts.ready_runs {
            for (vi, v) in variants.iter().enumerate() {
                if r >= v.runs {
                    continue;
                }
                let name = format!("rd-{}-{r:02}", v.id.replace(['.', '_'], "-"));
                let t0 = Instant::now();
                let created = match v.kind {
                    Kind::Sandbox => sbx_api
                        .create(
                            &Self::pp(),
                            &self.sandbox(&name, "ready", v.rt, &cpu, &mem, 3600)?,
                        )
                        .await
                        .map(|_| ()),
                    Kind::SandboxOwnAgent => sbx_api
                        .create(&Self::pp(), &self.sandbox_own_agent(&name, v.rt, &cpu, &mem)?)
                        .await
                        .map(|_| ()),
                    Kind::Bare => pod_api
                        .create(&Self::pp(), &self.bare_pod(&name, v.rt, &cpu, &mem)?)
                        .await
                        .map(|_| ()),
                    Kind::BareAgentImage => pod_api
                        .create(
                            &Self::pp(),
                            &self.bare_pod_of(SANDBOX_AGENT_IMAGE, &name, v.rt, &cpu, &mem)?,
                        )
                        .await
                        .map(|_| ()),
                    Kind::Replica | Kind::ReplicaNoInit => pod_api
                        .create(
                            &Self::pp(),
                            &replica(&template, &name, "ready", v.kind == Kind::ReplicaNoInit)?,
                        )
                        .await
                        .map(|_| ()),
                };
                let m = &mut totals[vi];
                if let Err(e) = created {
                    m.errors += 1;
                    self.report
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("creating {name}: {e}"));
                    continue;
                }
                let ready_key = if v.kind.is_sandbox() {
                    key("sbx", ns, &name)
                } else {
                    key("pod", ns, &name)
                };
                match self
                    .rec
                    .wait(&ready_key, "ready", Duration::from_secs(180))
                    .await
                {
                    Ok(t) => {
                        m.values.push(ms_between(t0, t));
                        let mut tl = BTreeMap::new();
                        for (k, x) in self.rec.all(&key("pod", ns, &name)) {
                            tl.insert(format!("pod.{k}"), ms_between(t0, x));
                        }
                        for (k, x) in self.rec.all(&key("sbx", ns, &name)) {
                            tl.insert(format!("sbx.{k}"), ms_between(t0, x));
                        }
                        timelines[vi].push(tl);
                    }
                    Err(e) => {
                        m.errors += 1;
                        self.report.lock().unwrap().errors.push(e.to_string());
                    }
                }
                if v.kind.is_sandbox() {
                    let _ = sbx_api.delete(&name, &DeleteParams::background()).await;
                } else {
                    let _ = pod_api
                        .delete(
                            &name,
                            &DeleteParams {
                                grace_period_seconds: Some(0),
                                ..DeleteParams::background()
                            },
                        )
                        .await;
                }
                if let Err(e) = self
                    .rec
                    .wait(&key("pod", ns, &name), "gone", Duration::from_secs(90))
                    .await
                {
                    self.note(format!("ready phase: {e}"));
                }
            }
        }
        let t = |id: &str| {
            totals
                .iter()
                .find(|m| m.id == format!("ready.{id}"))
                .expect("variant")
        };
        let ratios = [
            ratio(
                "Sandbox / bare Pod, gVisor",
                t("sandbox.gvisor"),
                t("bare.gvisor"),
            ),
            ratio(
                "Sandbox / bare Pod, runc",
                t("sandbox.runc"),
                t("bare.runc"),
            ),
            ratio(
                "Sandbox with the agent in its image / bare Pod of that image, gVisor",
                t("sandbox_own_agent.gvisor"),
                t("bare_agent_image.gvisor"),
            ),
            ratio(
                "Sandbox / operator's pod created directly, gVisor (operator's share)",
                t("sandbox.gvisor"),
                t("replica.gvisor"),
            ),
            ratio(
                "operator's pod / same pod without the agent, gVisor",
                t("replica.gvisor"),
                t("replica_noinit.gvisor"),
            ),
            ratio(
                "pod without the agent / bare Pod, gVisor",
                t("replica_noinit.gvisor"),
                t("bare.gvisor"),
            ),
            ratio(
                "Sandbox gVisor / Sandbox runc",
                t("sandbox.gvisor"),
                t("sandbox.runc"),
            ),
            ratio(
                "bare Pod gVisor / bare Pod runc",
                t("bare.gvisor"),
                t("bare.runc"),
            ),
        ];
        let refs: Vec<&Metric> = totals.iter().collect();
        self.metrics(&refs);
        let rrefs: Vec<&Ratio> = ratios.iter().collect();
        self.ratios(&rrefs);
        for (r, what) in [
            (&ratios[0], "gVisor"),
            (&ratios[1], "runc"),
            (&ratios[2], "gVisor, agent in the image (spec.agent: Image)"),
        ] {
            self.target(
                &format!("time to Ready vs bare Pod, {what} (p50 ratio)"),
                "<= 1.2x",
                r.p50.map(|x| format!("{x:.2}x")).unwrap_or("-".into()),
                r.p50.map(|x| x <= 1.2),
            );
        }

        // Milestones: median time of each after the create call.
        let steps: &[(&str, &str)] = &[
            ("sbx.created", "Sandbox object seen (API write + watch)"),
            ("pod.created", "Pod object seen"),
            ("pod.scheduled", "Pod bound to the node (scheduler)"),
            (
                "pod.sandbox-ready",
                "pod sandbox + network ready (PodReadyToStartContainers)",
            ),
            ("pod.init-done", "init container done (agent copied; init-container delivery only)"),
            ("pod.running", "main container running"),
            ("pod.ready", "Pod Ready condition"),
            ("sbx.ready", "Sandbox Ready condition (operator status)"),
        ];
        let mut md = String::from("| milestone (p50 ms after the create call) |");
        for v in &variants {
            md.push_str(&format!(" {} |", v.label));
        }
        md.push_str("\n|---|");
        for _ in &variants {
            md.push_str("---:|");
        }
        md.push('\n');
        let mut bjson = serde_json::Map::new();
        for (step, label) in steps {
            md.push_str(&format!("| {label} |"));
            for (vi, v) in variants.iter().enumerate() {
                let vals: Vec<f64> = timelines[vi]
                    .iter()
                    .filter_map(|tl| tl.get(*step).copied())
                    .collect();
                md.push_str(&format!(
                    " {} |",
                    dist(&vals)
                        .map(|d| fmt_num(d.p50))
                        .unwrap_or_else(|| "-".into())
                ));
                bjson
                    .entry(v.id.to_string())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .unwrap()
                    .insert(step.to_string(), json!(dist(&vals)));
            }
            md.push('\n');
        }
        self.report
            .lock()
            .unwrap()
            .breakdowns
            .insert("ready_milestones".into(), Value::Object(bjson));
        self.section(
            "Time to Ready",
            format!(
                "Create call -> Ready condition (the Sandbox's for Sandboxes, the Pod's otherwise), as first seen by a watch. \
                 Variants, all with the same image, RuntimeClass and resources (cpu {cpu}, memory {mem}, requests = limits): a \
                 Sandbox; the pod the operator built for a Sandbox, created directly (no operator); that pod without the agent \
                 (no init container, main command `sleep infinity`, same volumes and hardening); a bare Pod (`sleep infinity`, the floor). \
                 Rounds alternate between the variants; each pod is deleted and gone before the next one starts.\n\n{}\n{}\n\
                 Milestones as first seen by a watch (a step the kubelet reports in the same status update as the next one takes \
                 no time of its own):\n\n{md}",
                table(&refs),
                ratio_table(&rrefs)
            ),
        );
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Reaping

    async fn phase_reap(&self, ns: &str) -> Result<()> {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let ttl = self.opts.reap_ttl_seconds;
        let stagger = Duration::from_millis((ttl as u64 * 1000) / 3);
        let mut tasks = Vec::new();
        for i in 0..self.opts.reap_runs {
            let name = format!("reap-{i:02}");
            let sb = self.sandbox(&name, "reap", GVISOR, &self.opts.reap_cpu, "128Mi", ttl)?;
            let (api, rec, ns) = (api.clone(), self.rec.clone(), ns.to_string());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(stagger * i as u32).await;
                let created = api.create(&PostParams::default(), &sb).await?;
                let ct = created
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .ok_or_else(|| anyhow!("no creationTimestamp"))?
                    .0;
                let deadline = UNIX_EPOCH + Duration::from_secs((ct.as_second() + ttl) as u64);
                let gone = rec
                    .wait(
                        &key("pod", &ns, &name),
                        "gone",
                        Duration::from_secs(ttl as u64 + 120),
                    )
                    .await?;
                let ready = rec.get(&key("pod", &ns, &name), "ready");
                let wall = |t: Instant| -> f64 {
                    let w = rec.wall(t);
                    match w.duration_since(deadline) {
                        Ok(d) => ms(d),
                        Err(e) => -ms(e.duration()),
                    }
                };
                Ok::<_, anyhow::Error>((
                    wall(gone),
                    rec.get(&key("sbx", &ns, &name), "gone").map(wall),
                    rec.get(&key("pod", &ns, &name), "deleting").map(wall),
                    ready.is_some_and(|r| rec.wall(r) < deadline),
                ))
            }));
        }
        let mut gone = Metric::new(
            "reap.deadline_to_pod_gone",
            "TTL deadline -> pod gone (deleted from the API)",
            "ms",
        );
        let mut sbx = Metric::new(
            "reap.deadline_to_sandbox_gone",
            "TTL deadline -> Sandbox deleted (operator)",
            "ms",
        );
        let mut del = Metric::new(
            "reap.deadline_to_pod_deleting",
            "TTL deadline -> pod deletion started (garbage collector)",
            "ms",
        );
        let mut not_ready = 0;
        for t in tasks {
            match t.await.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok((g, s, d, was_ready)) => {
                    if !was_ready {
                        not_ready += 1;
                    }
                    gone.values.push(g);
                    if let Some(s) = s {
                        sbx.values.push(s);
                    }
                    if let Some(d) = d {
                        del.values.push(d);
                    }
                }
                Err(e) => {
                    gone.errors += 1;
                    self.report
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("reap: {e}"));
                }
            }
        }
        gone.note = format!("{not_ready} of them not Ready at the deadline");
        self.metrics(&[&sbx, &del, &gone]);
        self.section(
            "Reap latency",
            format!(
                "gVisor Sandboxes with `ttlSeconds: {ttl}` (deadline = creationTimestamp + TTL, whole seconds as the operator \
                 computes it), started {:.1} s apart; times against the host clock.\n\n{}",
                stagger.as_secs_f64(),
                table(&[&sbx, &del, &gone])
            ),
        );
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Exec

    async fn phase_exec(&self, ns: &str) -> Result<()> {
        // The gateway, in-process, with a Kubernetes client of its own (as a separate process
        // would have).
        let gw_kube = Client::try_default().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let mut config = airlock_exec_gateway::Config::new(AuthMode::None)
            .with_client(gw_kube)
            .with_default_namespace(ns);
        config.shutdown_grace = Duration::from_secs(1);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            airlock_exec_gateway::serve(config, listener, async move {
                let _ = stop_rx.await;
            })
            .await
        });
        let gw = AirlockClient::connect(&addr, None).await?;
        let direct_kube = Client::try_default().await?;
        let incluster = match self.incluster_gateway(ns).await {
            Ok(Some(x)) => Some(x),
            Ok(None) => {
                self.note("no in-cluster gateway running in airlock-system: only the in-process gateway was measured");
                None
            }
            Err(e) => {
                self.note(format!("in-cluster gateway not measured: {e:#}"));
                None
            }
        };
        let res = async {
            self.exec_latency(ns, &gw, &direct_kube, incluster.as_ref())
                .await?;
            self.exec_concurrency(ns, &gw, &direct_kube, incluster.as_ref())
                .await
        }
        .await;
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        res
    }

    /// Creates a Sandbox for exec measurements and waits until it is Ready; returns its pod.
    async fn exec_sandbox(&self, ns: &str, name: &str, rt: &str) -> Result<Direct> {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        api.create(
            &Self::pp(),
            &self.sandbox(
                name,
                "exec",
                rt,
                &self.opts.exec_cpu,
                &self.opts.exec_memory,
                3600,
            )?,
        )
        .await?;
        self.rec
            .wait(&key("sbx", ns, name), "ready", Duration::from_secs(180))
            .await?;
        let pod = api
            .get(name)
            .await?
            .status
            .and_then(|s| s.pod_name)
            .unwrap_or_else(|| name.to_string());
        Ok(Direct {
            pods: Api::namespaced(Client::try_default().await?, ns),
            pod,
        })
    }

    async fn delete_sandbox_and_wait(&self, ns: &str, name: &str) {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let _ = api.delete(name, &DeleteParams::background()).await;
        let _ = self
            .rec
            .wait(&key("pod", ns, name), "gone", Duration::from_secs(90))
            .await;
    }

    /// Round trip, first byte and throughput in one gVisor Sandbox; the runtime's own scaling of
    /// concurrent execs.
    async fn exec_latency(
        &self,
        ns: &str,
        gw: &AirlockClient,
        _kube: &Client,
        incluster: Option<&(AirlockClient, String)>,
    ) -> Result<()> {
        let o = &self.opts;
        let name = "exec";
        let direct = self.exec_sandbox(ns, name, GVISOR).await?;
        self.progress("exec sandbox (gVisor) ready");
        // Warm up: connections, caches, the sandbox's first processes.
        for _ in 0..3 {
            gw_true(gw, ns, name).await?;
            direct.run(&["true"], false).await?;
            direct
                .run(&[AGENT_PATH, "exec", "--", "true"], true)
                .await?;
            if let Some((c, _)) = incluster {
                let _ = gw_true(c, ns, name).await;
            }
        }
        let sbx_api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let mut m_gw = Metric::new(
            "exec.rtt.gateway",
            "`true` through the gateway (in-process)",
            "ms",
        );
        let mut m_direct = Metric::new(
            "exec.rtt.direct",
            "`true` through pods/exec, straight (kubectl exec equivalent)",
            "ms",
        );
        let mut m_agent = Metric::new(
            "exec.rtt.direct_agent",
            "`airlock-agent exec -- true` through pods/exec (what the gateway runs)",
            "ms",
        );
        let mut m_inc = Metric::new(
            "exec.rtt.gateway_incluster",
            "`true` through the in-cluster gateway (pod IP, kubernetes auth)",
            "ms",
        );
        let mut m_get = Metric::new(
            "exec.get_sandbox",
            "GET Sandbox (the gateway's per-call readiness check)",
            "ms",
        );
        for _ in 0..o.exec_runs {
            push(&mut m_gw, gw_true(gw, ns, name).await);
            push(
                &mut m_direct,
                direct.run(&["true"], false).await.map(|r| ms(r.total)),
            );
            push(
                &mut m_agent,
                direct
                    .run(&[AGENT_PATH, "exec", "--", "true"], true)
                    .await
                    .map(|r| ms(r.total)),
            );
            if let Some((c, _)) = incluster {
                push(&mut m_inc, gw_true(c, ns, name).await);
            }
            let t = Instant::now();
            push(
                &mut m_get,
                sbx_api
                    .get(name)
                    .await
                    .map(|_| ms(t.elapsed()))
                    .map_err(anyhow::Error::from),
            );
        }
        self.progress("exec round trips done");
        let mut t_gw = Metric::new(
            "exec.ttfb.gateway",
            "`echo x`: call -> first stdout byte, gateway",
            "ms",
        );
        let mut t_direct = Metric::new(
            "exec.ttfb.direct",
            "`echo x`: call -> first stdout byte, pods/exec",
            "ms",
        );
        for _ in 0..o.ttfb_runs {
            push(
                &mut t_gw,
                gw_stream(gw, ns, name, &["echo", "x"], Some(2))
                    .await
                    .map(|s| ms(s.ttfb)),
            );
            push(
                &mut t_direct,
                direct
                    .run(&["echo", "x"], false)
                    .await
                    .and_then(|r| r.ttfb.map(ms).ok_or_else(|| anyhow!("no output"))),
            );
        }
        let bytes = o.stream_mib * 1024 * 1024;
        let cmd_s = ["head", "-c", &bytes.to_string(), "/dev/zero"].map(String::from);
        let cmd: Vec<&str> = cmd_s.iter().map(String::as_str).collect();
        let mut s_gw = Metric::new(
            "exec.throughput.gateway",
            &format!("stdout of `head -c {}MiB /dev/zero`, gateway", o.stream_mib),
            "MiB/s",
        );
        let mut s_direct = Metric::new(
            "exec.throughput.direct",
            &format!(
                "stdout of `head -c {}MiB /dev/zero`, pods/exec",
                o.stream_mib
            ),
            "MiB/s",
        );
        let mut s_inc = Metric::new(
            "exec.throughput.gateway_incluster",
            &format!(
                "stdout of `head -c {}MiB /dev/zero`, in-cluster gateway",
                o.stream_mib
            ),
            "MiB/s",
        );
        for _ in 0..o.stream_runs {
            push(
                &mut s_gw,
                gw_stream(gw, ns, name, &cmd, Some(bytes as u64))
                    .await
                    .map(|s| bytes as f64 / MIB / s.total.as_secs_f64()),
            );
            push(
                &mut s_direct,
                direct.run(&cmd, false).await.and_then(|r| {
                    if r.bytes != bytes as u64 {
                        bail!("got {} of {bytes} bytes", r.bytes)
                    }
                    Ok(bytes as f64 / MIB / r.total.as_secs_f64())
                }),
            );
            if let Some((c, _)) = incluster {
                push(
                    &mut s_inc,
                    gw_stream(c, ns, name, &cmd, Some(bytes as u64))
                        .await
                        .map(|s| bytes as f64 / MIB / s.total.as_secs_f64()),
                );
            }
        }
        self.progress("exec first byte and throughput done");

        // The runtime: N concurrent execs straight into this one gVisor sandbox.
        let mut scaling = Vec::new();
        for &n in &o.gvisor_concurrency {
            let (mut m, span) = concurrent(n, |_| {
                let d = direct.clone();
                async move { d.run(&["true"], false).await.map(|r| ms(r.total)) }
            })
            .await;
            m.id = format!("exec.gvisor_concurrent{n}.direct");
            m.name = format!(
                "{n} concurrent `true` into one gVisor sandbox, pods/exec: per-call latency"
            );
            m.note = format!("all done in {:.0} ms", ms(span));
            scaling.push(m);
        }
        self.progress("gVisor exec scaling done");
        self.delete_sandbox_and_wait(ns, name).await;

        let mut metrics: Vec<&Metric> = vec![&m_gw, &m_direct, &m_agent, &m_get];
        let mut rs = vec![
            ratio("exec RTT: gateway / direct pods/exec", &m_gw, &m_direct),
            ratio(
                "exec RTT: gateway / direct pods/exec of the agent",
                &m_gw,
                &m_agent,
            ),
            ratio(
                "exec RTT: direct agent / direct `true`",
                &m_agent,
                &m_direct,
            ),
            ratio("first byte: gateway / direct", &t_gw, &t_direct),
            ratio("throughput: gateway / direct", &s_gw, &s_direct),
        ];
        if incluster.is_some() {
            metrics.push(&m_inc);
            rs.push(ratio(
                "exec RTT: in-cluster gateway / direct",
                &m_inc,
                &m_direct,
            ));
            rs.push(ratio(
                "throughput: in-cluster gateway / direct",
                &s_inc,
                &s_direct,
            ));
        }
        metrics.extend([&t_gw, &t_direct, &s_gw, &s_direct]);
        if incluster.is_some() {
            metrics.push(&s_inc);
        }
        metrics.extend(scaling.iter());
        self.target(
            "gateway exec RTT vs direct exec (p50 ratio)",
            "<= 1.1x",
            rs[0].p50.map(|x| format!("{x:.2}x")).unwrap_or("-".into()),
            rs[0].p50.map(|x| x <= 1.1),
        );
        self.target(
            "gateway stdout throughput vs direct exec (p50 ratio)",
            ">= 1.0x",
            rs[4].p50.map(|x| format!("{x:.2}x")).unwrap_or("-".into()),
            rs[4].p50.map(|x| x >= 1.0),
        );
        self.metrics(&metrics);
        let rrefs: Vec<&Ratio> = rs.iter().collect();
        self.ratios(&rrefs);
        let where_ = incluster
            .map(|(_, w)| format!(" The in-cluster gateway is the Helm install's, reached at {w}."))
            .unwrap_or_default();
        self.section(
            "Exec: latency and throughput",
            format!(
                "One gVisor Sandbox (cpu {}, memory {}). The gateway runs in-process (`airlock_exec_gateway::serve`, auth `none`, \
                 127.0.0.1, its own Kubernetes client), so its figures are its data path without a port-forward; \"direct\" is the \
                 `pods/exec` websocket from this process into the same container (what `kubectl exec` does; 64 KiB pipe buffers \
                 as in the gateway).{where_} Calls alternate between the paths.\n\n{}\n{}",
                o.exec_cpu,
                o.exec_memory,
                table(&metrics),
                ratio_table(&rrefs)
            ),
        );
        Ok(())
    }

    /// Concurrent execs in a runc Sandbox: a level the node handles (the gateway against direct
    /// pods/exec), then N streams at once through the gateway whose memory is measured (the
    /// in-cluster one when it runs), against the same N straight.
    async fn exec_concurrency(
        &self,
        ns: &str,
        gw: &AirlockClient,
        _kube: &Client,
        incluster: Option<&(AirlockClient, String)>,
    ) -> Result<()> {
        let o = &self.opts;
        let name = "exec-runc";
        let direct = self.exec_sandbox(ns, name, RUNC).await?;
        for _ in 0..3 {
            gw_true(gw, ns, name).await?;
            direct.run(&["true"], false).await?;
        }
        let cap = Duration::from_secs(o.concurrency_cap_seconds);
        let mut metrics: Vec<Metric> = Vec::new();
        let mut ratios: Vec<Ratio> = Vec::new();

        // 1. A level this node's exec path handles.
        let low = o.concurrency_low;
        if low > 0 {
            let (mut s_gw, mut c_gw, gw_span) = concurrent2(low, |_| {
                let (gw, ns) = (gw.clone(), ns.to_string());
                async move {
                    gw_stream(&gw, &ns, "exec-runc", &["true"], Some(0))
                        .await
                        .map(|s| (ms(s.started), ms(s.total)))
                }
            })
            .await;
            c_gw.id = format!("exec.concurrent{low}.gateway");
            c_gw.name = format!("{low} concurrent `true`, gateway (in-process): per-call latency");
            c_gw.note = format!("all done in {:.0} ms", ms(gw_span));
            s_gw.id = format!("exec.concurrent{low}.gateway_started");
            s_gw.name = format!(
                "{low} concurrent `true`, gateway: call -> `started` (exec stream established)"
            );
            let (mut s_d, mut c_d, d_span) = concurrent2(low, |_| {
                let d = direct.clone();
                async move {
                    d.run(&["true"], false)
                        .await
                        .map(|r| (ms(r.connected), ms(r.total)))
                }
            })
            .await;
            c_d.id = format!("exec.concurrent{low}.direct");
            c_d.name = format!("{low} concurrent `true`, pods/exec: per-call latency");
            c_d.note = format!("all done in {:.0} ms", ms(d_span));
            s_d.id = format!("exec.concurrent{low}.direct_connected");
            s_d.name = format!("{low} concurrent `true`, pods/exec: call -> websocket upgraded");
            ratios.push(ratio(
                &format!("{low} concurrent `true`: gateway / direct"),
                &c_gw,
                &c_d,
            ));
            metrics.extend([c_gw, s_gw, c_d, s_d]);
            self.progress(&format!("{low} concurrent execs done"));
        }

        // 2. N streams at once, each call given at most `cap`.
        let n = o.concurrency;
        let fp_bytes = o.footprint_stream_mib * 1024 * 1024;
        let fp_cmd: Vec<String> = ["head", "-c", &fp_bytes.to_string(), "/dev/zero"]
            .map(String::from)
            .to_vec();
        // Calls whose exec stream was established (the gateway answered / the websocket was
        // upgraded), counted also for calls given up on.
        let established_gw = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let established_d = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let streams = |c: AirlockClient| {
            let (cmd, ns, est) = (fp_cmd.clone(), ns.to_string(), established_gw.clone());
            concurrent2(n, move |_| {
                let (c, cmd, ns, est) = (c.clone(), cmd.clone(), ns.clone(), est.clone());
                async move {
                    let t = Instant::now();
                    let work = async {
                        let mut s = c
                            .exec(AirlockClient::argv(
                                &ns,
                                "exec-runc",
                                cmd.iter().map(String::as_str),
                            ))
                            .await?;
                        let started = t.elapsed();
                        est.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (mut bytes, mut exit) = (0u64, None);
                        while let Some(ev) = s.message().await? {
                            match ev.event {
                                Some(pb::exec_event::Event::Stdout(b)) => bytes += b.len() as u64,
                                Some(pb::exec_event::Event::Exited(e)) => exit = Some(e.exit_code),
                                _ => {}
                            }
                        }
                        if exit != Some(0) || bytes != fp_bytes as u64 {
                            bail!("exit {exit:?}, {bytes} bytes");
                        }
                        Ok((ms(started), ms(t.elapsed())))
                    };
                    match tokio::time::timeout(cap, work).await {
                        Ok(r) => r,
                        Err(_) => Err(anyhow!("not finished after {cap:?}")),
                    }
                }
            })
        };
        let (which, client, proc_) = match incluster {
            Some((c, _)) => (
                "in-cluster gateway",
                c.clone(),
                self.process("exec-gateway")
                    .await
                    .map(|p| p.pid.to_string()),
            ),
            None => ("in-process gateway", gw.clone(), Some("self".to_string())),
        };
        let _ = gw_true(&client, ns, name).await;
        let before = proc_.as_deref().and_then(rss_kib).map(|r| r.0).unwrap_or(0);
        let sampler = proc_
            .clone()
            .map(|p| Sampler::start(p, Duration::from_millis(50)));
        let (mut s_gw, mut c_gw, span) = streams(client).await;
        let samples = match sampler {
            Some(s) => s.finish().await,
            None => Vec::new(),
        };
        let after = proc_.as_deref().and_then(rss_kib).map(|r| r.0).unwrap_or(0);
        c_gw.id = format!("exec.concurrent{n}.gateway");
        c_gw.name = format!(
            "{n} concurrent streams of {} MiB, {which}: per-call duration",
            o.footprint_stream_mib
        );
        c_gw.note = format!(
            "{}/{n} exec streams established; all done or given up in {:.0} ms; calls still running after {} s count as errors",
            established_gw.load(std::sync::atomic::Ordering::Relaxed),
            ms(span),
            cap.as_secs()
        );
        s_gw.id = format!("exec.concurrent{n}.gateway_started");
        s_gw.name =
            format!("{n} concurrent streams, {which}: call -> `started` (exec stream established)");
        self.footprint(
            "gateway_streams",
            json!({"which": which, "process": if incluster.is_some() { json!(self.gateway_proc.lock().unwrap().clone()) } else { json!("bench process (in-process gateway + clients)") },
                   "before_mib": mib(before), "max_during_streams_mib": mib(samples.iter().copied().max().unwrap_or(0)),
                   "after_mib": mib(after), "streams": n, "stream_mib": o.footprint_stream_mib, "errors": c_gw.errors, "samples": samples.len()}),
        );
        self.progress(&format!("{n} concurrent streams through the gateway done"));
        let (mut s_d, mut c_d, d_span) = concurrent2(n, |_| {
            let (d, cmd, est) = (direct.clone(), fp_cmd.clone(), established_d.clone());
            async move {
                let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
                match tokio::time::timeout(cap, d.run_counting(&argv, Some(&est))).await {
                    Ok(r) => r.map(|r| (ms(r.connected), ms(r.total))),
                    Err(_) => Err(anyhow!("not finished after {cap:?}")),
                }
            }
        })
        .await;
        c_d.id = format!("exec.concurrent{n}.direct");
        c_d.name = format!(
            "{n} concurrent streams of {} MiB, pods/exec: per-call duration",
            o.footprint_stream_mib
        );
        c_d.note = format!(
            "{}/{n} exec streams established; all done or given up in {:.0} ms; calls still running after {} s count as errors",
            established_d.load(std::sync::atomic::Ordering::Relaxed),
            ms(d_span),
            cap.as_secs()
        );
        s_d.id = format!("exec.concurrent{n}.direct_connected");
        s_d.name = format!("{n} concurrent streams, pods/exec: call -> websocket upgraded");
        self.progress(&format!("{n} concurrent streams straight done"));
        self.target(
            &format!("{n} concurrent execs through the gateway: p99 and errors"),
            "report",
            format!(
                "p99 {} ms, {} errors (straight pods/exec: p99 {} ms, {} errors)",
                c_gw.dist().map(|d| fmt_num(d.p99)).unwrap_or("-".into()),
                c_gw.errors,
                c_d.dist().map(|d| fmt_num(d.p99)).unwrap_or("-".into()),
                c_d.errors
            ),
            None,
        );
        ratios.push(ratio(
            &format!("{n} concurrent streams: gateway / direct"),
            &c_gw,
            &c_d,
        ));
        metrics.extend([c_gw, s_gw, c_d, s_d]);
        // Calls given up on may hold the node's exec path for a while longer: the Sandbox is
        // deleted without waiting for its pod to go.
        let _ = Api::<Sandbox>::namespaced(self.kube.clone(), ns)
            .delete(name, &DeleteParams::background())
            .await;
        let refs: Vec<&Metric> = metrics.iter().collect();
        self.metrics(&refs);
        let rrefs: Vec<&Ratio> = ratios.iter().collect();
        self.ratios(&rrefs);
        self.section(
            "Exec: concurrency",
            format!(
                "Calls started at once (a barrier) into one runc Sandbox (cpu {}; concurrent execs into one gVisor sandbox of \
                 this cluster are far slower, see the gVisor rows above, and would hide the gateway): {low} `true` through the \
                 in-process gateway (one gRPC connection) and straight; then {n} streams of {} MiB through the {which} (its memory \
                 is the footprint figure below) and straight, each call given at most {} s. The \"established\" rows show when \
                 each call had its exec stream from the API server; the rest of a call's time is the node running and finishing it.\n\n{}\n{}",
                o.exec_cpu,
                o.footprint_stream_mib,
                cap.as_secs(),
                table(&refs),
                ratio_table(&rrefs)
            ),
        );
        Ok(())
    }

    /// A client of the chart's gateway (pod IP, ServiceAccount token), when it runs.
    async fn incluster_gateway(&self, ns: &str) -> Result<Option<(AirlockClient, String)>> {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), SYSTEM_NS);
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=exec-gateway"))
            .await?;
        let Some(p) = list.items.into_iter().find(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        }) else {
            return Ok(None);
        };
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .ok_or_else(|| anyhow!("gateway pod has no IP"))?;
        let port = p
            .spec
            .as_ref()
            .and_then(|s| {
                s.containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|pt| pt.name.as_deref() == Some("grpc"))
                    .map(|pt| pt.container_port)
            })
            .unwrap_or(50051);
        let token = self.token(ns).await?;
        let addr = format!("http://{ip}:{port}");
        let c = AirlockClient::connect(&addr, Some(token)).await?;
        Ok(Some((c, format!("{addr} (pod {})", p.name_any()))))
    }

    /// A ServiceAccount allowed everything on sandboxes in `ns`, and a token for it.
    async fn token(&self, ns: &str) -> Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
        let pp = Self::pp();
        let sa = "airlock-bench";
        let sas: Api<ServiceAccount> = Api::namespaced(self.kube.clone(), ns);
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": sa}}))?;
        sas.create(&pp, &account).await?;
        let role: Role = serde_json::from_value(json!({
            "metadata": {"name": sa},
            "rules": [{"apiGroups": ["airlock.dev"], "resources": ["sandboxes", "sandboxes/exec", "sandboxes/files"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]
        }))?;
        Api::<Role>::namespaced(self.kube.clone(), ns)
            .create(&pp, &role)
            .await?;
        let rb: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
        }))?;
        Api::<RoleBinding>::namespaced(self.kube.clone(), ns)
            .create(&pp, &rb)
            .await?;
        // Minted for the gateway's audience (the chart's default gateway.auth.tokenAudiences).
        let tr = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                audiences: vec![airlock_e2e::GATEWAY_AUDIENCE.to_string()],
                ..Default::default()
            },
            ..Default::default()
        };
        let out = sas.create_token_request(sa, &pp, &tr).await?;
        Ok(out
            .status
            .ok_or_else(|| anyhow!("TokenRequest without status"))?
            .token)
    }

    /// Diagnostic: where N concurrent pods/exec calls spend their time (connect, status, EOF).
    async fn exec_probe(&self, ns: &str) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let name = "probe";
        pods.create(&Self::pp(), &self.bare_pod(name, RUNC, "500m", "128Mi")?)
            .await?;
        self.rec
            .wait(&key("pod", ns, name), "ready", Duration::from_secs(60))
            .await?;
        let n = self.opts.concurrency;
        let stagger = Duration::from_millis(env_usize("BENCH_PROBE_STAGGER_MS", 0) as u64);
        let client = Client::try_default().await?;
        let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (api, b) = (Api::<Pod>::namespaced(client.clone(), ns), barrier.clone());
                tokio::spawn(async move {
                    b.wait().await;
                    tokio::time::sleep(stagger * i as u32).await;
                    let t = Instant::now();
                    let mut ap = AttachParams::default()
                        .stdout(true)
                        .stderr(true)
                        .stdin(false);
                    ap.max_stdout_buf_size = Some(PIPE_BUF);
                    let mut p = api.exec("probe", ["true"], &ap).await?;
                    let connected = t.elapsed();
                    let mut out = p.stdout().unwrap();
                    let mut err = p.stderr().unwrap();
                    let st = p.take_status().unwrap();
                    let (mut a, mut c) = (Vec::new(), Vec::new());
                    let _ = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut c));
                    let eof = t.elapsed();
                    let _ = st.await;
                    let status = t.elapsed();
                    let _ = p.join().await;
                    Ok::<_, anyhow::Error>((connected, eof, status, t.elapsed()))
                })
            })
            .collect();
        barrier.wait().await;
        let mut rows = Vec::new();
        for h in hs {
            if let Ok(Ok(r)) = h.await {
                rows.push(r);
            }
        }
        let col = |f: fn(&(Duration, Duration, Duration, Duration)) -> Duration| {
            dist(&rows.iter().map(|r| ms(f(r))).collect::<Vec<_>>())
        };
        eprintln!("probe n={n}: connected {:?}", col(|r| r.0));
        eprintln!("probe n={n}: eof       {:?}", col(|r| r.1));
        eprintln!("probe n={n}: status    {:?}", col(|r| r.2));
        eprintln!("probe n={n}: joined    {:?}", col(|r| r.3));
        Ok(())
    }

    // ----------------------------------------------------------------------------------------
    // Footprint

    /// Restarts the Helm install's operator and gateway pods (the ReplicaSets make new ones), so
    /// the idle and peak memory figures are those of fresh processes: glibc keeps what a process
    /// once used, so a previous run's peak would otherwise show up as "idle".
    async fn restart_components(&self) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), SYSTEM_NS);
        for component in ["operator", "exec-gateway"] {
            let lp =
                ListParams::default().labels(&format!("app.kubernetes.io/component={component}"));
            let old: Vec<String> = pods
                .list(&lp)
                .await?
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            if old.is_empty() {
                continue;
            }
            pods.delete_collection(&DeleteParams::default(), &lp)
                .await?;
            let t = Instant::now();
            loop {
                let list = pods.list(&lp).await?;
                let fresh_ready = list.items.iter().any(|p| {
                    !old.contains(&p.name_any())
                        && p.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .flatten()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                });
                let old_gone = list.items.iter().all(|p| !old.contains(&p.name_any()));
                if fresh_ready && old_gone {
                    break;
                }
                if t.elapsed() > Duration::from_secs(120) {
                    bail!(
                        "the {component} did not come back Ready within 120 s after its pods were restarted"
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        *self.operator.lock().unwrap() = None;
        *self.gateway_proc.lock().unwrap() = None;
        let _ = self.process("operator").await;
        let _ = self.process("exec-gateway").await;
        Ok(())
    }

    /// The process of a component, looked up again if the one found before has gone.
    async fn process(&self, component: &str) -> Option<Proc> {
        let (slot, binary) = match component {
            "operator" => (&self.operator, "airlock-operator"),
            _ => (&self.gateway_proc, "airlock-exec-gateway"),
        };
        let cur = slot.lock().unwrap().clone();
        if let Some(p) = &cur
            && argv0_base(&p.pid.to_string()).as_deref() == Some(binary)
        {
            return cur;
        }
        let (found, _) = find_process(&self.kube, component, binary).await;
        if let (Some(old), Some(new)) = (&cur, &found) {
            self.note(format!(
                "the {component} changed during the run: {} (pid {}) -> {} (pid {})",
                old.source, old.pid, new.source, new.pid
            ));
        }
        *slot.lock().unwrap() = found.clone();
        found
    }

    async fn sample_now(&self, label: &str) -> Value {
        let _ = self.process("operator").await;
        let _ = self.process("exec-gateway").await;
        let one = |p: &Option<Proc>| p.as_ref().and_then(proc_mem);
        let (op, gw) = (
            self.operator.lock().unwrap().clone(),
            self.gateway_proc.lock().unwrap().clone(),
        );
        json!({"label": label, "operator": one(&op), "gateway": one(&gw)})
    }

    async fn phase_footprint(&self) -> Result<()> {
        let n = self.opts.footprint_sandboxes;
        let _ = self.process("exec-gateway").await;
        let Some(op) = self.process("operator").await else {
            bail!("no operator process found on this host");
        };
        let ns = self.namespace("fp", true).await?;
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), &ns);
        let before = self.sample_now("before").await;
        let sampler = Sampler::start(op.pid.to_string(), Duration::from_millis(200));
        let names: Vec<String> = (0..n).map(|i| format!("fp-{i:04}")).collect();
        let start = Instant::now();
        let errors = futures::stream::iter(names.iter().map(|nm| {
            let api = api.clone();
            let sb = self.sandbox(nm, "fp", NOWHERE_RC, "10m", "16Mi", 3600);
            async move {
                api.create(&PostParams::default(), &sb?)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
        }))
        .buffer_unordered(32)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
        let created_in = start.elapsed();
        let pod_keys: Vec<String> = names.iter().map(|nm| key("pod", &ns, nm)).collect();
        let sbx_keys: Vec<String> = names.iter().map(|nm| key("sbx", &ns, nm)).collect();
        let pods = self
            .rec
            .wait_all(&pod_keys, "created", Duration::from_secs(300))
            .await;
        let statuses = self
            .rec
            .wait_all(&sbx_keys, "status", Duration::from_secs(120))
            .await;
        let last_pod = pod_keys
            .iter()
            .filter_map(|k| self.rec.get(k, "created"))
            .max();
        let settled_in = start.elapsed();
        // Let the operator settle (requeues, events), then read its memory.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let with_n = self.sample_now(&format!("with {n} Sandboxes")).await;
        let samples = sampler.finish().await;
        let peak = samples.iter().copied().max().unwrap_or(0);
        let op_rss = rss_kib(&op.pid.to_string()).map(|r| mib(r.0));
        self.footprint(
            "sandboxes",
            json!({"count": n, "create_errors": errors, "pods_created": pods, "statuses_written": statuses,
                   "create_calls_s": created_in.as_secs_f64(), "all_pods_s": last_pod.map(|t| (t - start).as_secs_f64()),
                   "settled_s": settled_in.as_secs_f64(), "before": before, "after": with_n, "operator_peak_rss_mib": mib(peak)}),
        );
        self.target(
            &format!("operator RSS with {n} Sandboxes"),
            "< 64 MiB",
            op_rss
                .map(|x| {
                    format!(
                        "{x:.1} MiB (peak {:.1} MiB while they were created)",
                        mib(peak)
                    )
                })
                .unwrap_or("-".into()),
            op_rss.map(|x| x < 64.0),
        );
        let _ = Api::<Namespace>::all(self.kube.clone())
            .delete(&ns, &DeleteParams::background())
            .await;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sandbox,
    /// A Sandbox whose image holds the agent (`spec.agent: Image`).
    SandboxOwnAgent,
    Replica,
    ReplicaNoInit,
    Bare,
    /// A bare Pod of the image that holds the agent.
    BareAgentImage,
}

impl Kind {
    fn is_sandbox(self) -> bool {
        matches!(self, Kind::Sandbox | Kind::SandboxOwnAgent)
    }
}

struct Variant {
    id: &'static str,
    label: &'static str,
    kind: Kind,
    rt: &'static str,
    runs: usize,
}

/// A copy of an operator-built pod under a new name, with no owner (so the operator ignores it);
/// `no_init`: without the init container, the main container sleeping instead of running the agent.
fn replica(template: &Pod, name: &str, phase: &str, no_init: bool) -> Result<Pod> {
    let mut v = serde_json::to_value(template)?;
    let mut labels = serde_json::Map::new();
    labels.insert(BENCH_LABEL.into(), json!("true"));
    labels.insert(PHASE_LABEL.into(), json!(phase));
    v["metadata"] = json!({"name": name, "labels": labels});
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(spec) = v["spec"].as_object_mut() {
        spec.remove("nodeName");
        if no_init {
            spec.remove("initContainers");
        }
    }
    if no_init {
        v["spec"]["containers"][0]["command"] = json!(["sleep", "infinity"]);
        if let Some(c) = v["spec"]["containers"][0].as_object_mut() {
            c.remove("args");
        }
    }
    Ok(serde_json::from_value(v)?)
}

fn push(m: &mut Metric, r: Result<f64>) {
    match r {
        Ok(v) => m.values.push(v),
        Err(e) => {
            m.errors += 1;
            if m.errors <= 3 {
                eprintln!("bench: {}: {e:#}", m.id);
            }
        }
    }
}

/// Established TCP connections of this process's network namespace.
fn tcp_established(pid: &str) -> usize {
    ["net/tcp", "net/tcp6"]
        .iter()
        .map(|f| {
            read(&format!("/proc/{pid}/{f}"))
                .lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("01"))
                .count()
        })
        .sum()
}

/// Replays the operator's pre-pod API calls for `n` sandboxes with a fresh client, `limit` at a
/// time; returns per-sequence latency, makespan and the connections the client opened.
async fn replay_burst(
    ns: &str,
    pod: &Pod,
    np: &k8s_openapi::api::networking::v1::NetworkPolicy,
    n: usize,
    limit: Option<usize>,
) -> Result<(Metric, Duration, usize)> {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let client = Client::try_default().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let tag = limit
        .map(|l| format!("l{l}"))
        .unwrap_or_else(|| "all".into());
    let mut items = Vec::new();
    for i in 0..n {
        let name = format!("rp-{tag}-{i:04}");
        let p = replica(pod, &name, "replay", false)?;
        let mut v = serde_json::to_value(np)?;
        v["metadata"] = json!({"name": name, "namespace": ns, "labels": {BENCH_LABEL: "true", PHASE_LABEL: "replay"}});
        items.push((name, p, v));
    }
    let before = tcp_established("self");
    let start = Instant::now();
    let run = |(name, p, v): (String, Pod, Value)| {
        let (pods, nps) = (pods.clone(), nps.clone());
        async move {
            let t = Instant::now();
            pods.get_opt(&name).await?;
            nps.patch(
                &name,
                &PatchParams::apply("airlock-bench").force(),
                &Patch::Apply(&v),
            )
            .await?;
            pods.create(&PostParams::default(), &p).await?;
            Ok::<_, anyhow::Error>(ms(t.elapsed()))
        }
    };
    let results: Vec<Result<f64>> = futures::stream::iter(items.into_iter().map(run))
        .buffer_unordered(limit.unwrap_or(n))
        .collect()
        .await;
    let span = start.elapsed();
    let conns = tcp_established("self").saturating_sub(before);
    let mut m = Metric::new("operator.replay", "replayed pre-pod API calls", "ms");
    for r in results {
        push(&mut m, r);
    }
    let lp = ListParams::default().labels(&format!("{PHASE_LABEL}=replay"));
    let _ = pods
        .delete_collection(&DeleteParams::background(), &lp)
        .await;
    let _ = nps
        .delete_collection(&DeleteParams::background(), &lp)
        .await;
    // Let the deletions pass before the next measurement.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60)
        && !pods
            .list(&lp)
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((m, span, conns))
}

/// Spawns `n` copies of `f`, releases them at the same moment, and awaits them all; returns each
/// result (a panicked task as an error) and the makespan.
async fn all_at_once<T, F, Fut>(n: usize, f: F) -> (Vec<Result<T>>, Duration)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let fut = f(i);
            let b = barrier.clone();
            tokio::spawn(async move {
                b.wait().await;
                fut.await
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.map_err(anyhow::Error::from).and_then(|r| r));
    }
    (out, start.elapsed())
}

/// Like [`concurrent`], for calls that report (time to connected, total) in ms.
async fn concurrent2<F, Fut>(n: usize, f: F) -> (Metric, Metric, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(f64, f64)>> + Send + 'static,
{
    let (results, elapsed) = all_at_once(n, f).await;
    let (mut first, mut total) = (Metric::new("", "", "ms"), Metric::new("", "", "ms"));
    for r in results {
        match r {
            Ok((a, b)) => {
                first.values.push(a);
                total.values.push(b);
            }
            Err(e) => {
                push(&mut total, Err(e));
                first.errors += 1;
            }
        }
    }
    (first, total, elapsed)
}

/// Runs `n` copies of `f` at once; returns their latencies (errors counted) and the makespan.
async fn concurrent<F, Fut>(n: usize, f: F) -> (Metric, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<f64>> + Send + 'static,
{
    let (results, elapsed) = all_at_once(n, f).await;
    let mut m = Metric::new("", "", "ms");
    for r in results {
        push(&mut m, r);
    }
    (m, elapsed)
}

async fn gw_true(c: &AirlockClient, ns: &str, name: &str) -> Result<f64> {
    let t = Instant::now();
    let out = c
        .exec_collect(AirlockClient::argv(ns, name, ["true"]))
        .await?;
    if out.exit_code != 0 {
        bail!(
            "true exited {}: {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(ms(t.elapsed()))
}

struct StreamResult {
    /// Until the gateway's `started` event (its pods/exec is established).
    started: Duration,
    ttfb: Duration,
    total: Duration,
}

/// Runs argv through the gateway, counting stdout; checks the exit code and, when given, the
/// number of bytes.
async fn gw_stream(
    c: &AirlockClient,
    ns: &str,
    name: &str,
    argv: &[&str],
    expect: Option<u64>,
) -> Result<StreamResult> {
    use pb::exec_event::Event;
    let t = Instant::now();
    let mut s = c
        .exec(AirlockClient::argv(ns, name, argv.iter().copied()))
        .await?;
    let (mut first, mut n, mut exit, mut started) = (None, 0u64, None, None);
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(Event::Stdout(b)) => {
                if first.is_none() && !b.is_empty() {
                    first = Some(t.elapsed());
                }
                n += b.len() as u64;
            }
            Some(Event::Exited(e)) => exit = Some(e.exit_code),
            Some(Event::Started(_)) => started = started.or(Some(t.elapsed())),
            _ => {}
        }
    }
    let total = t.elapsed();
    match exit {
        Some(0) => {}
        other => bail!("{argv:?}: exit {other:?}"),
    }
    if let Some(e) = expect
        && e != n
    {
        bail!("{argv:?}: {n} bytes, expected {e}");
    }
    Ok(StreamResult {
        started: started.unwrap_or(total),
        ttfb: first.unwrap_or(total),
        total,
    })
}

/// `pods/exec` straight from this process into the sandbox container.
#[derive(Clone)]
struct Direct {
    pods: Api<Pod>,
    pod: String,
}

struct DirectResult {
    /// Until the websocket is upgraded (the API server accepted the exec).
    connected: Duration,
    ttfb: Option<Duration>,
    total: Duration,
    bytes: u64,
}

impl Direct {
    /// Runs argv; with `agent_stdin`, attaches stdin and sends the agent's CLOSE frame (what the
    /// gateway does for a non-interactive call).
    async fn run(&self, argv: &[&str], agent_stdin: bool) -> Result<DirectResult> {
        self.run_inner(argv, agent_stdin, None).await
    }

    /// [`Direct::run`] without stdin, counting the call in `established` once its websocket is up.
    async fn run_counting(
        &self,
        argv: &[&str],
        established: Option<&std::sync::atomic::AtomicUsize>,
    ) -> Result<DirectResult> {
        self.run_inner(argv, false, established).await
    }

    async fn run_inner(
        &self,
        argv: &[&str],
        agent_stdin: bool,
        established: Option<&std::sync::atomic::AtomicUsize>,
    ) -> Result<DirectResult> {
        let t = Instant::now();
        let mut ap = AttachParams::default()
            .container(airlock_crds::labels::MAIN_CONTAINER)
            .stdout(true)
            .stderr(true)
            .stdin(agent_stdin);
        ap.max_stdin_buf_size = Some(PIPE_BUF);
        ap.max_stdout_buf_size = Some(PIPE_BUF);
        ap.max_stderr_buf_size = Some(PIPE_BUF);
        let mut p = self
            .pods
            .exec(&self.pod, argv.iter().map(|s| s.to_string()), &ap)
            .await?;
        let connected = t.elapsed();
        if let Some(e) = established {
            e.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if agent_stdin {
            let mut w = p.stdin().ok_or_else(|| anyhow!("no stdin"))?;
            w.write_all(&airlock_exec_gateway::agent::close_frame())
                .await?;
            w.flush().await?;
            drop(w);
        }
        let mut out = p.stdout().ok_or_else(|| anyhow!("no stdout"))?;
        let mut err = p.stderr().ok_or_else(|| anyhow!("no stderr"))?;
        let status = p.take_status().ok_or_else(|| anyhow!("no status"))?;
        let read_out = async {
            let mut buf = vec![0u8; PIPE_BUF];
            let (mut first, mut n) = (None, 0u64);
            loop {
                let k = out.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                if first.is_none() {
                    first = Some(t.elapsed());
                }
                n += k as u64;
            }
            Ok::<_, std::io::Error>((first, n))
        };
        let mut e = Vec::new();
        let (o, er) = tokio::join!(read_out, err.read_to_end(&mut e));
        let (ttfb, bytes) = o?;
        er?;
        let st = status.await;
        let code = airlock_e2e::exit_code(st.as_ref());
        let _ = p.join().await;
        let total = t.elapsed();
        if code != 0 {
            bail!("{argv:?} exited {code}: {}", String::from_utf8_lossy(&e));
        }
        Ok(DirectResult {
            connected,
            ttfb,
            total,
            bytes,
        })
    }
}

// --------------------------------------------------------------------------------------------
// Machine and versions

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn machine() -> Value {
    let meminfo = read("/proc/meminfo");
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_mib": mem_kib / 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_start": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn command_out(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

async fn versions(kube: &Client, operator: &Option<Proc>, gateway: &Option<Proc>) -> Value {
    let k8s = kube
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(kube.clone())
        .list(&ListParams::default())
        .await
        .ok()
        .and_then(|l| l.items.into_iter().next())
        .and_then(|n| n.status.and_then(|s| s.node_info));
    let commit = command_out("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = command_out("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    json!({
        "kubernetes": k8s,
        "kubelet": node.as_ref().map(|n| n.kubelet_version.clone()),
        "container_runtime": node.as_ref().map(|n| n.container_runtime_version.clone()),
        "os_image": node.as_ref().map(|n| n.os_image.clone()),
        "runsc": command_out("runsc", &["--version"]).and_then(|s| s.lines().next().map(str::to_string)),
        "git_commit": commit,
        "git_dirty": dirty,
        "operator": operator.as_ref().map(|p| p.source.clone()),
        "gateway": format!("in-process (airlock-exec-gateway crate of this checkout, auth none){}",
            gateway.as_ref().map(|g| format!("; in-cluster: {}", g.source)).unwrap_or_default()),
    })
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

// --------------------------------------------------------------------------------------------
// Report

fn render(b: &Bench, header: &Value, duration: Duration) -> (String, Value) {
    let r = b.report.lock().unwrap();
    let m = &header["machine"];
    let v = &header["versions"];
    let mut md = String::new();
    md.push_str("# Airlock benchmarks\n\n");
    md.push_str(&format!(
        "Generated by `make bench` (`e2e/bench/run.sh`) on {} in {:.0} s. Every ratio compares figures measured in this same run on this same cluster.\n\n",
        header["date"].as_str().unwrap_or(""),
        duration.as_secs_f64()
    ));
    md.push_str("| | |\n|---|---|\n");
    md.push_str(&format!(
        "| machine | {} CPUs ({}), {} MiB memory, kernel {}, load average at start {} |\n",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or(""),
        m["memory_mib"],
        m["kernel"].as_str().unwrap_or(""),
        m["loadavg_start"].as_str().unwrap_or("")
    ));
    md.push_str(&format!(
        "| Kubernetes | {} (kubelet {}, {}, {}) |\n",
        v["kubernetes"].as_str().unwrap_or(""),
        v["kubelet"].as_str().unwrap_or("-"),
        v["container_runtime"].as_str().unwrap_or("-"),
        v["runsc"].as_str().unwrap_or("runsc ?")
    ));
    md.push_str(&format!(
        "| commit | {}{} |\n",
        v["git_commit"].as_str().unwrap_or(""),
        if v["git_dirty"].as_bool() == Some(true) {
            " (with uncommitted changes)"
        } else {
            ""
        }
    ));
    md.push_str(&format!(
        "| operator | {} |\n",
        v["operator"].as_str().unwrap_or("not found")
    ));
    md.push_str(&format!(
        "| gateway | {} |\n",
        v["gateway"].as_str().unwrap_or("")
    ));
    md.push_str(&format!(
        "| runs | `BENCH_RUNS={}` ({}) |\n\n",
        b.opts.runs,
        serde_json::to_string(&header["config"]).unwrap_or_default()
    ));

    md.push_str("## Targets\n\nTargets are goals to report against, not assertions.\n\n| what | target | measured | met |\n|---|---|---|---|\n");
    for t in &r.targets {
        let met = match t["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        md.push_str(&format!(
            "| {} | {} | {} | {met} |\n",
            t["what"].as_str().unwrap_or(""),
            t["target"].as_str().unwrap_or(""),
            t["measured"].as_str().unwrap_or("")
        ));
    }
    md.push('\n');
    for (title, body) in &r.sections {
        md.push_str(&format!("## {title}\n\n{body}\n"));
    }
    md.push_str(&where_the_time_goes(&r.results));
    md.push_str("## Footprint (resident memory)\n\n");
    md.push_str("VmRSS from `/proc/<pid>/status` of the processes on this node (the Helm install's containers when they run, found through their container IDs).\n\n");
    md.push_str("| when | operator RSS (MiB) | gateway RSS (MiB) |\n|---|---:|---:|\n");
    let cell = |x: &Value, who: &str| {
        let v = &x[who];
        let Some(rss) = v["rss_mib"].as_f64() else {
            return "-".to_string();
        };
        let mut c = format!("{rss:.1}");
        if let (Some(a), Some(f)) = (v["anon_mib"].as_f64(), v["file_mib"].as_f64()) {
            c.push_str(&format!(" (anon {a:.1}, file {f:.1}"));
            if let Some(t) = v["tcp_established"].as_u64() {
                c.push_str(&format!(", {t} TCP conns"));
            }
            c.push(')');
        }
        c
    };
    if let Some(idle) = r.footprint.get("idle") {
        md.push_str(&format!(
            "| idle (start of the run) | {} | {} |\n",
            cell(idle, "operator"),
            cell(idle, "gateway")
        ));
    }
    if let Some(s) = r.footprint.get("sandboxes") {
        md.push_str(&format!(
            "| with {} Sandboxes (and their {} Pending pods, NetworkPolicies) | {} (peak {:.1}) | {} |\n",
            s["count"],
            s["pods_created"],
            cell(&s["after"], "operator"),
            s["operator_peak_rss_mib"].as_f64().unwrap_or(0.0),
            cell(&s["after"], "gateway")
        ));
    }
    if let Some(e) = r.footprint.get("end") {
        md.push_str(&format!(
            "| end of the run (bench namespaces deleted) | {} | {} |\n",
            cell(e, "operator"),
            cell(e, "gateway")
        ));
    }
    if let Some(g) = r.footprint.get("gateway_streams") {
        md.push_str(&format!(
            "| {} under {} concurrent streams ({} MiB each) | - | {:.1} (max; {:.1} before, {:.1} after) |\n",
            g["which"].as_str().unwrap_or("gateway"),
            g["streams"],
            g["stream_mib"],
            g["max_during_streams_mib"].as_f64().unwrap_or(0.0),
            g["before_mib"].as_f64().unwrap_or(0.0),
            g["after_mib"].as_f64().unwrap_or(0.0)
        ));
    }
    if let Some(s) = r.footprint.get("sandboxes") {
        md.push_str(&format!(
            "\n{} Sandboxes: create calls took {:.1} s (32 at a time); the operator had created all their pods {} s after the first call.\n",
            s["count"],
            s["create_calls_s"].as_f64().unwrap_or(0.0),
            s["all_pods_s"].as_f64().map(|x| format!("{x:.1}")).unwrap_or("-".into())
        ));
    }
    md.push('\n');
    if !r.notes.is_empty() {
        md.push_str("## Notes\n\n");
        for n in &r.notes {
            md.push_str(&format!("- {n}\n"));
        }
        md.push('\n');
    }
    if !r.errors.is_empty() {
        md.push_str("## Errors\n\n");
        for e in r.errors.iter().take(30) {
            md.push_str(&format!("- {}\n", e.replace('\n', " ")));
        }
        if r.errors.len() > 30 {
            md.push_str(&format!("- ... and {} more\n", r.errors.len() - 30));
        }
        md.push('\n');
    }
    let mut j = header.clone();
    j["duration_s"] = json!(duration.as_secs_f64());
    j["results"] = Value::Object(r.results.clone());
    j["ratios"] = json!(r.ratios);
    j["targets"] = json!(r.targets);
    j["breakdown"] = Value::Object(r.breakdowns.clone());
    j["footprint"] = Value::Object(r.footprint.clone());
    j["notes"] = json!(r.notes);
    j["errors"] = json!(r.errors);
    (md, j)
}

fn signed(x: f64) -> String {
    if x >= 0.0 {
        format!("+{x:.0}")
    } else {
        format!("-{:.0}", -x)
    }
}

/// A summary computed from the figures of this run.
fn where_the_time_goes(results: &serde_json::Map<String, Value>) -> String {
    let p50 = |id: &str| results.get(id).and_then(|m| m["dist"]["p50"].as_f64());
    let mean = |id: &str| results.get(id).and_then(|m| m["dist"]["mean"].as_f64());
    let mut out =
        String::from("## Where the time goes\n\nComputed from this run's figures (ms).\n\n");
    let f = |x: f64| format!("{x:.0}");
    if let (Some(sb), Some(rep), Some(noinit), Some(bare)) = (
        mean("ready.sandbox.gvisor"),
        mean("ready.replica.gvisor"),
        mean("ready.replica_noinit.gvisor"),
        mean("ready.bare.gvisor"),
    ) {
        let pct = |x: f64| {
            if sb > 0.0 {
                format!("{:.0}%", 100.0 * x / sb)
            } else {
                "-".into()
            }
        };
        out.push_str(&format!(
            "**Time to Ready, gVisor Sandbox: {} ms** (means: the kubelet's 1 s steps make medians of few runs jump; the \
             parts are differences between the variants, so a part can come out slightly negative).\n\n| part | ms (mean) | share |\n|---|---:|---:|\n\
             | bare Pod floor (pod sandbox, container start, kubelet status) | {} | {} |\n\
             | pod shape: volumes, hardening, PriorityClass (pod without the agent - bare Pod) | {} | {} |\n\
             | agent delivery and start: airlock-boot unpacking it from the ConfigMap, or the init container with `--agent-delivery=init-container` (operator's pod - same pod without the agent) | {} | {} |\n\
             | operator: Sandbox -> Pod, Pod Ready -> Sandbox Ready (Sandbox - operator's pod created directly) | {} | {} |\n\n",
            f(sb),
            f(bare),
            pct(bare),
            f(noinit - bare),
            pct(noinit - bare),
            f(rep - noinit),
            pct(rep - noinit),
            f(sb - rep),
            pct(sb - rep),
        ));
    }
    // Startup quantization: how close the ready times are to whole seconds.
    let mut dists = Vec::new();
    for (id, m) in results {
        if !id.starts_with("ready.") {
            continue;
        }
        if let Some(d) = m["dist"]["p50"].as_f64() {
            let frac = d / 1000.0 - (d / 1000.0).round();
            dists.push((frac * 1000.0).abs());
        }
    }
    if !dists.is_empty() {
        let med = dist(&dists).map(|d| d.p50).unwrap_or(0.0);
        out.push_str(&format!(
            "Every time-to-Ready median is within {med:.0} ms (median distance) of a whole number of seconds after the create \
             call{}: the kubelet reports container transitions in steps of about 1 s (its pod sync / PLEG relist cadence), so each \
             container the kubelet has to see start or finish before the next one (an init container) costs a whole step, and so \
             does any start that spills past a step boundary.\n\n",
            if med < 100.0 { "" } else { " (not clearly quantized in this run)" }
        ));
    }
    if let (Some(op), Some(get), Some(np), Some(pod)) = (
        p50("operator.single.watch_to_watch"),
        p50("api.get_pod_missing"),
        p50("api.apply_networkpolicy"),
        p50("api.create_pod"),
    ) {
        let rest = op - get - np - pod;
        out.push_str(&format!(
            "**Operator, Sandbox -> Pod: {} ms (p50).** Its API calls before the pod exists, replayed from here right before each \
             create: GET pod {get:.1} + apply NetworkPolicy {np:.1} + create Pod {pod:.1} = {} ms (p50s), {}.\n\n",
            f(op),
            f(get + np + pod),
            if rest >= 0.0 {
                format!("leaving {} ms for the operator's own watch delivery, queueing and CPU", f(rest))
            } else {
                "so the three sequential API round trips are all of it".to_string()
            }
        ));
    }
    if let (Some(gw), Some(d), Some(a), Some(get)) = (
        p50("exec.rtt.gateway"),
        p50("exec.rtt.direct"),
        p50("exec.rtt.direct_agent"),
        p50("exec.get_sandbox"),
    ) {
        out.push_str(&format!(
            "**Exec of `true`: gateway {} ms vs direct {} ms (p50).** pods/exec itself (API server -> kubelet -> runtime exec \
             in the sandbox) is {} ms; running the command under `airlock-agent exec` with the stdin framing changes that by {} ms; \
             the gateway layer (gRPC, auth, the Sandbox GET of {get:.1} ms, the event stream) by {} ms. Differences of a few ms \
             are within the run-to-run noise of pods/exec itself.\n\n",
            f(gw),
            f(d),
            f(d),
            signed(a - d),
            signed(gw - a)
        ));
    }
    if let (Some(s), Some(del), Some(gone)) = (
        p50("reap.deadline_to_sandbox_gone"),
        p50("reap.deadline_to_pod_deleting"),
        p50("reap.deadline_to_pod_gone"),
    ) {
        out.push_str(&format!(
            "**Reap: TTL deadline -> pod gone {} ms**: the operator deletes the Sandbox {} ms after the deadline, the garbage \
             collector starts deleting the pod {} ms after that, and stopping the pod (kubelet, runtime) takes the remaining {} ms.\n\n",
            f(gone),
            f(s),
            f(del - s),
            f(gone - del)
        ));
    }
    out
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
    let phases: [(&str, &str); 6] = [
        ("operator", "operator latency"),
        ("cold", "cold namespace"),
        ("ready", "time to Ready"),
        ("reap", "reap latency"),
        ("exec", "exec"),
        ("footprint", "footprint with many Sandboxes"),
    ];
    // Diagnostics, only when asked for by name in BENCH_ONLY.
    let phases: Vec<(&str, &str)> = phases
        .into_iter()
        .chain(
            b.opts
                .only
                .as_ref()
                .is_some_and(|o| o.iter().any(|p| p == "execprobe"))
                .then_some(("execprobe", "exec probe")),
        )
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
            "footprint" => b.phase_footprint().await,
            "execprobe" => b.exec_probe(&ns).await,
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
