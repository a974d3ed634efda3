//! Helpers for cluster tests. Every test works in a namespace of its own, created here and deleted
//! when the test ends, so tests run in parallel and leave nothing behind.
//!
//! The tests expect the local cluster (`e2e/cluster up`) with `KUBECONFIG` pointing at it; the
//! Makefile sets that up. Without a cluster they fail with a message saying so: they never skip.

pub mod gw;
pub mod net;
pub mod pools;
pub mod promises;
pub mod release;
pub mod sandboxes;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

/// A client for the test cluster, failing with a clear message when there is none.
pub async fn client() -> Client {
    match Client::try_default().await {
        Ok(c) => c,
        Err(e) => panic!(
            "no cluster for the e2e tests ({e}): run `e2e/cluster up` and `eval $(e2e/cluster env)`, or `make test`"
        ),
    }
}

/// A namespace that exists for one test. Delete it with [`TestNamespace::cleanup`] at the end of
/// the test; if the test panics first, `Drop` deletes it.
pub struct TestNamespace {
    pub name: String,
    client: Client,
    cleaned: bool,
}

impl TestNamespace {
    /// Creates `airlock-e2e-<prefix>-<random>` labelled `airlock.dev/e2e=true`.
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let suffix: String = format!("{:08x}", rand_u32());
        let name = format!("e2e-{prefix}-{suffix}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"airlock.dev/e2e": "true"}}
        }))
        .expect("namespace literal");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating test namespace {name}: {e}"));
        wait_default_service_account(client, &name).await;
        TestNamespace { name, client: client.clone(), cleaned: false }
    }

    /// Deletes the namespace (and everything in it).
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.name, &DeleteParams::background()).await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        delete_namespace_now(&self.name);
    }
}

/// Deletes a namespace from a `Drop` (a test that panicked): its runtime is shutting down and
/// would drop a task spawned on it (and the client's connection with it), so the deletion runs to
/// completion on a thread of its own, with a client of its own, before the panic goes on.
pub fn delete_namespace_now(name: &str) {
    let owned = name.to_string();
    let deleted = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        rt.block_on(async {
            let c = Client::try_default().await.ok()?;
            Api::<Namespace>::all(c).delete(&owned, &DeleteParams::background()).await.ok()
        })
    })
    .join();
    if !matches!(deleted, Ok(Some(_))) {
        eprintln!("test namespace {name} left behind: delete it by hand");
    }
}

async fn wait_default_service_account(client: &Client, ns: &str) {
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
    for _ in 0..100 {
        if api.get_opt("default").await.ok().flatten().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("namespace {ns}: default ServiceAccount never appeared (is kube-controller-manager running?)");
}

/// Polls `get` until `cond` holds for the object, or panics after `timeout` with `what` and the
/// last state seen.
pub async fn wait_for<K>(api: &Api<K>, name: &str, timeout: Duration, what: &str, cond: impl Fn(Option<&K>) -> bool) -> Option<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let obj = api.get_opt(name).await.unwrap_or_else(|e| panic!("reading {name}: {e}"));
        if cond(obj.as_ref()) {
            return obj;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {name}: {what}; last seen: {obj:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Image with Python 3, a POSIX shell and coreutils, built by `e2e/cluster` and imported into
/// containerd (no registry).
pub const SANDBOX_IMAGE: &str = "airlock.local/sandbox-python:0.1.0";
/// [`SANDBOX_IMAGE`] with the agent inside (`/.airlock/airlock-agent`, for `spec.agent: Image`),
/// built by e2e/lib/images.sh.
pub const SANDBOX_AGENT_IMAGE: &str = "airlock.local/sandbox-python-agent:0.1.0";
/// RuntimeClass of the local cluster's gVisor handler.
pub const GVISOR: &str = "gvisor";
/// Audience of tokens for the gateway: the chart's default `gateway.auth.tokenAudiences`, and
/// what the in-process gateways of the tests ask for.
pub const GATEWAY_AUDIENCE: &str = "airlock";
/// RuntimeClass of plain runc (for comparisons).
pub const RUNC: &str = "runc";

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish() as u32
}

/// Output of a command run through the API server's pods/exec (websocket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

/// Runs `argv` in `pod` (first container) through pods/exec and collects its output and exit code.
pub async fn exec(client: &Client, ns: &str, pod: &str, argv: &[&str]) -> ExecOutput {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::AttachParams;
    use tokio::io::AsyncReadExt;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut p = pods
        .exec(pod, argv.iter().copied(), &AttachParams::default().stdout(true).stderr(true).stdin(false))
        .await
        .unwrap_or_else(|e| panic!("exec {argv:?} in {ns}/{pod}: {e}"));
    let mut out = p.stdout().expect("stdout");
    let mut err = p.stderr().expect("stderr");
    let status = p.take_status().expect("status channel");
    let (mut so, mut se) = (Vec::new(), Vec::new());
    let (a, b) = tokio::join!(out.read_to_end(&mut so), err.read_to_end(&mut se));
    a.expect("reading stdout");
    b.expect("reading stderr");
    let status = status.await;
    let exit_code = exit_code(status.as_ref());
    let _ = p.join().await;
    ExecOutput { stdout: String::from_utf8_lossy(&so).into(), stderr: String::from_utf8_lossy(&se).into(), exit_code }
}

/// Exit code from the exec status channel: `Success` is 0, a failure carries cause `ExitCode`.
pub fn exit_code(status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>) -> i32 {
    let Some(s) = status else { return -1 };
    if s.status.as_deref() == Some("Success") {
        return 0;
    }
    s.details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_ref())
        .and_then(|m| m.parse().ok())
        .unwrap_or(-1)
}

/// Creates a pod from JSON and waits until it runs.
pub async fn run_pod(client: &Client, ns: &str, pod: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(pod).expect("pod literal");
    let name = pod.metadata.name.clone().expect("pod name");
    pods.create(&PostParams::default(), &pod).await.unwrap_or_else(|e| panic!("creating pod {ns}/{name}: {e}"));
    wait_for(&pods, &name, Duration::from_secs(120), "pod Running", |p| {
        p.and_then(|p| p.status.as_ref()).and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await
    .expect("pod exists")
}

/// A pod spec that sleeps, with the sandbox image and the given RuntimeClass.
pub fn sleeper(name: &str, runtime_class: &str, labels: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "runtimeClassName": runtime_class,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": SANDBOX_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}]
        }
    })
}

/// A TCP listener in Python (the sandbox image has only python3-minimal): accepts connections on
/// the port in argv[1], answers `hello` and closes. For network tests: a listener the test started.
pub const TCP_LISTENER: &str = "import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',int(sys.argv[1])))\ns.listen(64)\nwhile True:\n  c,_=s.accept()\n  c.sendall(b'hello')\n  c.close()\n";
