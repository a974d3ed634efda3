//! Processes and memory: finding the operator and gateway processes on this node, their
//! resident memory and connections.

use super::*;

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Proc {
    pub(crate) pid: u32,
    /// How it was found: in-cluster pod or host process.
    pub(crate) source: String,
}

/// (VmRSS, VmHWM) in KiB.
pub(crate) fn rss_kib(pid: &str) -> Option<(u64, u64)> {
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
pub(crate) fn proc_mem(p: &Proc) -> Option<Value> {
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

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) fn argv0_base(pid: &str) -> Option<String> {
    let c = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let a0 = c.split(|b| *b == 0).next()?;
    let a0 = String::from_utf8_lossy(a0).to_string();
    Some(a0.rsplit('/').next().unwrap_or(&a0).to_string())
}

pub(crate) fn proc_pids() -> Vec<String> {
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
pub(crate) async fn find_process(kube: &Client, component: &str, binary: &str) -> (Option<Proc>, Vec<String>) {
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
pub(crate) struct Sampler {
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) task: tokio::task::JoinHandle<Vec<u64>>,
}

impl Sampler {
    pub(crate) fn start(pid: String, every: Duration) -> Sampler {
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
    pub(crate) async fn finish(self) -> Vec<u64> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Established TCP connections of this process's network namespace.
pub(crate) fn tcp_established(pid: &str) -> usize {
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
