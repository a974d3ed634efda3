//! The installed Airlock (Helm release `airlock` in `airlock-system`) as the fault tests see it:
//! its operator and gateway pods, the operator's leader Lease, the operator processes on this node
//! (to SIGKILL them), and the host-wide lock that keeps disruptive tests and `make bench` apart.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

pub const SYSTEM_NS: &str = "airlock-system";
/// The operator Deployment and its Lease (`operator/src/leader.rs`, `LEASE_NAME`).
pub const OPERATOR_DEPLOYMENT: &str = "airlock-operator";
pub const OPERATOR_LEASE: &str = "airlock-operator";
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/component=operator,app.kubernetes.io/instance=airlock";
pub const GATEWAY_SELECTOR: &str = "app.kubernetes.io/component=exec-gateway,app.kubernetes.io/instance=airlock";
/// Command line of the in-cluster operator's process (the image's entrypoint, under runc).
pub const OPERATOR_PROCESS: &str = "^/usr/local/bin/airlock-operator( |$)";
/// Held (flock) by anything that disturbs the cluster: restarting the API server, killing or
/// scaling the operator, `make bench`.
pub const CLUSTER_LOCK: &str = "/tmp/airlock-cluster.lock";

pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Sum of the restart counts of the pod's containers.
pub fn restarts(p: &Pod) -> i32 {
    p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map(|cs| cs.iter().map(|c| c.restart_count).sum()).unwrap_or(0)
}

/// The pods of a component (`OPERATOR_SELECTOR` or `GATEWAY_SELECTOR`), deleted ones included.
pub async fn pods(c: &Client, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(c.clone(), SYSTEM_NS)
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap_or_else(|e| panic!("listing {selector} pods: {e}"))
        .items
}

/// Waits until the component has exactly `n` pods, none being deleted, all Ready; returns them.
pub async fn ready_pods(c: &Client, selector: &str, n: usize, timeout: Duration) -> Vec<Pod> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let list = pods(c, selector).await;
        if list.len() == n && list.iter().all(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p)) {
            return list;
        }
        if tokio::time::Instant::now() >= deadline {
            let st: Vec<_> = list.iter().map(|p| (p.name_any(), is_ready(p), restarts(p), p.metadata.deletion_timestamp.is_some())).collect();
            panic!("{selector}: not {n} Ready pod(s) within {timeout:?}: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits for exactly one operator pod, not being deleted, Ready; returns it.
pub async fn operator_ready(c: &Client, timeout: Duration) -> Pod {
    ready_pods(c, OPERATOR_SELECTOR, 1, timeout).await.remove(0)
}

/// Sets the operator Deployment's replicas.
pub async fn scale_operator(c: &Client, replicas: i32) {
    Api::<Deployment>::namespaced(c.clone(), SYSTEM_NS)
        .patch(OPERATOR_DEPLOYMENT, &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})))
        .await
        .unwrap_or_else(|e| panic!("scaling {OPERATOR_DEPLOYMENT} to {replicas}: {e}"));
}

/// The Lease's holderIdentity and leaseTransitions (None: no Lease or no holder).
pub async fn lease_holder(c: &Client) -> (Option<String>, i32) {
    let lease = Api::<Lease>::namespaced(c.clone(), SYSTEM_NS).get_opt(OPERATOR_LEASE).await.unwrap_or_else(|e| panic!("reading Lease {OPERATOR_LEASE}: {e}"));
    let spec = lease.and_then(|l| l.spec).unwrap_or_default();
    (spec.holder_identity.filter(|h| !h.is_empty()), spec.lease_transitions.unwrap_or(0))
}

/// Pids of the in-cluster operator processes on this node.
pub fn operator_pids() -> Vec<i32> {
    let out = std::process::Command::new("pgrep").args(["-f", OPERATOR_PROCESS]).output().expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The pod a containerized process belongs to: `HOSTNAME` in its environment (set by the
/// container runtime to the pod name).
pub fn pod_of_process(pid: i32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"HOSTNAME="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The operator process of pod `pod` on this node (exactly one, or panics).
pub fn operator_pid_of(pod: &str) -> i32 {
    let all = operator_pids();
    let mine: Vec<i32> = all.iter().copied().filter(|p| pod_of_process(*p).as_deref() == Some(pod)).collect();
    let seen: Vec<(i32, Option<String>)> = all.iter().map(|p| (*p, pod_of_process(*p))).collect();
    assert_eq!(mine.len(), 1, "exactly one operator process of pod {pod} on this node; operator processes (pid, pod): {seen:?}");
    mine[0]
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    #[link_name = "flock"]
    fn libc_flock(fd: i32, op: i32) -> i32;
}

/// SIGKILL to `pid` (panics when it cannot be sent).
pub fn sigkill(pid: i32) {
    let rc = unsafe { libc_kill(pid, 9) };
    assert_eq!(rc, 0, "SIGKILL to pid {pid}: {}", std::io::Error::last_os_error());
}

/// Kills the only in-cluster operator with SIGKILL; returns its restart count before the kill.
pub async fn kill_operator(c: &Client) -> i32 {
    let list = pods(c, OPERATOR_SELECTOR).await;
    let before: i32 = list.iter().map(restarts).sum();
    let pids = operator_pids();
    assert_eq!(pids.len(), 1, "exactly one in-cluster operator process on this node: {pids:?}");
    sigkill(pids[0]);
    eprintln!("SIGKILLed operator pid {} (restarts before: {before})", pids[0]);
    before
}

/// Waits until the kubelet restarted the operator killed by [`kill_operator`] (restart count above
/// `before`) and it is Ready again.
pub async fn operator_restarted(c: &Client, before: i32, timeout: Duration) -> Pod {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let op = operator_ready(c, timeout).await;
        if restarts(&op) > before {
            return op;
        }
        assert!(tokio::time::Instant::now() < deadline, "the kubelet never restarted the killed operator");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The host-wide cluster lock, held until dropped (closing the file releases the flock).
pub struct ClusterLock {
    _file: std::fs::File,
}

impl ClusterLock {
    /// Takes [`CLUSTER_LOCK`], waiting (without blocking the runtime) while someone else holds it.
    pub async fn acquire(what: &str) -> ClusterLock {
        use std::os::fd::AsRawFd;
        const LOCK_EX: i32 = 2;
        const LOCK_NB: i32 = 4;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(CLUSTER_LOCK)
            .unwrap_or_else(|e| panic!("opening {CLUSTER_LOCK}: {e}"));
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            if unsafe { libc_flock(file.as_raw_fd(), LOCK_EX | LOCK_NB) } == 0 {
                if told {
                    eprintln!("{what}: got {CLUSTER_LOCK} after {:?}", started.elapsed());
                }
                return ClusterLock { _file: file };
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(11), "flock {CLUSTER_LOCK}: {err}"); // EWOULDBLOCK
            if !told {
                eprintln!("{what}: waiting for {CLUSTER_LOCK} (held by another test or make bench)");
                told = true;
            }
            assert!(started.elapsed() < Duration::from_secs(1800), "{CLUSTER_LOCK} held for over 30 minutes");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Address (`http://POD_IP:PORT`) of the in-cluster gateway, reached from this host over the pod
/// bridge (Service IPs are not routed from the host), and its pod.
pub async fn in_cluster_gateway(c: &Client) -> (String, Pod) {
    let pod = ready_pods(c, GATEWAY_SELECTOR, 1, Duration::from_secs(120)).await.remove(0);
    (gateway_addr(&pod), pod)
}

/// `http://POD_IP:PORT` of a gateway pod's gRPC port.
pub fn gateway_addr(pod: &Pod) -> String {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("gateway pod IP");
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().flat_map(|c| c.ports.iter().flatten()).find(|p| p.name.as_deref() == Some("grpc")).map(|p| p.container_port))
        .unwrap_or(50051);
    format!("http://{ip}:{port}")
}

/// PID 1's command line (up to its `--`) in a sandbox the installed operator made: the agent
/// serving the direct path and told to wait for the fence (`--fence-probe`: the operator pod's
/// address and metrics port).
pub async fn agent_argv(c: &Client) -> Vec<String> {
    let op = operator_ready(c, Duration::from_secs(60)).await;
    let ip = op.status.and_then(|s| s.pod_ip).expect("operator pod IP");
    ["/.airlock/airlock-agent", "init", "--listen", "0.0.0.0:7070", &format!("--fence-probe={ip}:8080"), "--"].map(String::from).to_vec()
}

/// Sets the gateway Deployment's replicas.
pub async fn scale_gateway(c: &Client, replicas: i32) {
    Api::<Deployment>::namespaced(c.clone(), SYSTEM_NS)
        .patch(crate::gw::GATEWAY, &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})))
        .await
        .unwrap_or_else(|e| panic!("scaling {} to {replicas}: {e}", crate::gw::GATEWAY));
}

/// Secret of the release's agent token key (chart `agentDirect`).
pub const AGENT_KEY_SECRET: &str = "airlock-agent-key";

/// The release's agent token key, as the installed operator and gateway read it (`None` when the
/// release has no direct path).
pub async fn agent_key(c: &Client) -> Option<Vec<u8>> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), SYSTEM_NS);
    let s = secrets.get_opt(AGENT_KEY_SECRET).await.expect("reading the agent key Secret")?;
    let key = s.data?.remove("key")?.0;
    Some(key.trim_ascii().to_vec())
}

/// How the in-process gateways of the tests reach agents: `AIRLOCK_E2E_AGENT_TRANSPORT`
/// (`direct`, the default: a broken direct path fails the tests instead of falling back;
/// `pods-exec`: the same tests over `pods/exec`; `auto`).
pub fn agent_transport() -> airlock_exec_gateway::agent::Transport {
    use airlock_exec_gateway::agent::Transport;
    match std::env::var("AIRLOCK_E2E_AGENT_TRANSPORT").as_deref() {
        Ok("pods-exec") => Transport::PodsExec,
        Ok("auto") => Transport::Auto,
        Ok("direct") | Err(_) => Transport::Direct,
        Ok(other) => panic!("AIRLOCK_E2E_AGENT_TRANSPORT={other:?}: direct, pods-exec or auto"),
    }
}
