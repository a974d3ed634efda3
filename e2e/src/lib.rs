//! Helpers for cluster tests. Every test works in a namespace of its own, created here and deleted
//! when the test ends, so tests run in parallel and leave nothing behind.
//!
//! The tests expect the local cluster (`e2e/cluster up`) with `KUBECONFIG` pointing at it; the
//! Makefile sets that up. Without a cluster they fail with a message saying so: they never skip.

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
/// the test; if the test panics first, `Drop` starts the deletion in the background.
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
        let (client, name) = (self.client.clone(), self.name.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::background()).await;
            });
        }
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
/// RuntimeClass of the local cluster's gVisor handler.
pub const GVISOR: &str = "gvisor";
/// RuntimeClass of plain runc (for comparisons).
pub const RUNC: &str = "runc";

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish() as u32
}
