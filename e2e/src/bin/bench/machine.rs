//! The machine and the versions the figures were taken on.

use super::*;

pub(crate) fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub(crate) fn machine() -> Value {
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

pub(crate) fn command_out(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub(crate) async fn versions(kube: &Client, operator: &Option<Proc>, gateway: &Option<Proc>) -> Value {
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

pub(crate) fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
