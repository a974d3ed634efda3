//! Helpers of the tests that hold the README's promises to the real cluster
//! (`tests/spec_features.rs`): the `kubectl` binary run as a user runs it, a plain HTTP GET to a
//! pod from this host, a sandbox's pod logs, and an in-process gateway with an authorized client.

use std::time::Duration;

use airlock_crds::{Phase, Sandbox};
use airlock_api::client::AirlockClient;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, LogParams};

use crate::wait_for;

/// The kubectl of the local cluster's Kubernetes version (`$KUBECTL` overrides it).
pub const KUBECTL: &str = "/var/cache/airlock/k8s/v1.34.4/bin/kubectl";
/// The admin kubeconfig of the local cluster, used when `$KUBECONFIG` is unset.
pub const ADMIN_KUBECONFIG: &str = "/var/lib/airlock-cluster/pki/admin.kubeconfig";

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs the real `kubectl` with `args` against the test cluster (`$KUBECONFIG`, else the admin
/// kubeconfig). Panics when the binary cannot be started (never skips).
pub async fn kubectl(args: &[&str]) -> CmdOutput {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| KUBECTL.to_string());
    let kubeconfig = std::env::var("KUBECONFIG").unwrap_or_else(|_| ADMIN_KUBECONFIG.to_string());
    let out = tokio::process::Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {bin} {args:?}: {e} (set KUBECTL to the kubectl binary)"));
    CmdOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An HTTP response: status code, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.1 to `addr` (`IP:PORT`, e.g. a pod reached over the bridge), the
/// connection closed by the server after the answer. Panics on a transport error or a malformed
/// answer, naming the address.
pub async fn http_get(addr: &str, path: &str) -> HttpResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let what = format!("GET http://{addr}{path}");
    let mut s = tokio::time::timeout(Duration::from_secs(30), tokio::net::TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("{what}: no connection within 30 s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("{what}: no complete answer within 30 s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{what}: no header end in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { unchunk(body) } else { body.to_string() };
    HttpResponse { status, headers, body }
}

/// The body of a `Transfer-Encoding: chunked` message.
fn unchunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// The sample value of a metric series in Prometheus/OpenMetrics text (`series` is the metric name
/// with its labels exactly as printed, e.g. `x_total` or `x{phase="Ready"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Waits until the logs of container `sandbox` of pod `pod` contain `needle`; returns them. Fails
/// at once when the pod has finished without it.
pub async fn logs_containing(c: &Client, ns: &str, pod: &str, needle: &str, timeout: Duration) -> String {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let deadline = tokio::time::Instant::now() + timeout;
    let lp = LogParams { container: Some(airlock_crds::labels::MAIN_CONTAINER.into()), ..LogParams::default() };
    loop {
        let phase = pods.get_opt(pod).await.ok().flatten().and_then(|p| p.status).and_then(|s| s.phase);
        let finished = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
        let logs = pods.logs(pod, &lp).await.unwrap_or_default();
        if logs.contains(needle) {
            return logs;
        }
        assert!(!finished, "{ns}/{pod}: finished ({phase:?}) without {needle:?} in its logs: {logs:?}");
        assert!(tokio::time::Instant::now() < deadline, "{ns}/{pod}: {needle:?} not in the logs within {timeout:?}; logs: {logs:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the Sandbox's phase is `phase`; returns it.
pub async fn wait_phase(c: &Client, ns: &str, name: &str, phase: Phase, timeout: Duration) -> Sandbox {
    let api: Api<Sandbox> = Api::namespaced(c.clone(), ns);
    wait_for(&api, name, timeout, &format!("phase {phase:?}"), |s| {
        s.and_then(|s| s.status.as_ref()).and_then(|st| st.phase) == Some(phase)
    })
    .await
    .expect("the Sandbox exists")
}

/// An exec gateway served in this process for namespace `ns` and a client authorized there (a
/// ServiceAccount with every right on sandboxes in `ns`). The gateway stops when this is dropped.
pub struct Gateway {
    pub client: AirlockClient,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Gateway {
    pub async fn new(c: &Client, ns: &str) -> Gateway {
        let (port, stop) = crate::sandboxes::in_process_gateway(c, ns, |_| {}).await;
        let token = crate::sandboxes::token_for(c, ns, "tester").await;
        let client = AirlockClient::connect(&format!("http://127.0.0.1:{port}"), Some(token))
            .await
            .expect("connect to the in-process gateway");
        Gateway { client, _stop: stop }
    }
}
