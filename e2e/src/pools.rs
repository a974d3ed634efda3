//! SandboxTemplates and SandboxPools for cluster tests: create them, wait for a pool to fill.

use std::time::Duration;

use airlock_crds::{SandboxPool, SandboxTemplate};
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use crate::{SANDBOX_IMAGE, sandboxes, wait_for};

/// Creates SandboxTemplate `name` with `spec` merged over a small Python-capable default
/// ([`SANDBOX_IMAGE`], 50m CPU, 128Mi, a TTL of 30 minutes).
pub async fn template(c: &Client, ns: &str, name: &str, spec: Value) -> SandboxTemplate {
    let mut s = json!({"image": SANDBOX_IMAGE, "imagePullPolicy": "Never",
                       "resources": {"cpu": "50m", "memory": "128Mi"}, "lifetime": {"ttlSeconds": 1800}});
    sandboxes::merge(&mut s, spec);
    let t: SandboxTemplate = serde_json::from_value(json!({
        "apiVersion": "airlock.dev/v1alpha1", "kind": "SandboxTemplate",
        "metadata": {"name": name}, "spec": s
    }))
    .expect("template");
    Api::namespaced(c.clone(), ns).create(&PostParams::default(), &t).await.unwrap_or_else(|e| panic!("creating template {name}: {e}"))
}

/// Creates SandboxPool `name` of the template of the same name.
pub async fn pool(c: &Client, ns: &str, name: &str, replicas: i32) -> SandboxPool {
    let p: SandboxPool = serde_json::from_value(json!({
        "apiVersion": "airlock.dev/v1alpha1", "kind": "SandboxPool",
        "metadata": {"name": name}, "spec": {"templateRef": {"name": name}, "replicas": replicas}
    }))
    .expect("pool");
    Api::namespaced(c.clone(), ns).create(&PostParams::default(), &p).await.unwrap_or_else(|e| panic!("creating pool {name}: {e}"))
}

/// Whether the operator reported Sandbox `name` as claimed from a pool (its `Claimed` event).
pub async fn claimed(c: &Client, ns: &str, name: &str) -> bool {
    Api::<Event>::namespaced(c.clone(), ns)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("listing events")
        .items
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("Claimed"))
}

/// Waits until the pool has exactly `n` pods, all Ready.
pub async fn pool_ready(c: &Client, ns: &str, name: &str, n: i32, timeout: Duration) -> SandboxPool {
    let api: Api<SandboxPool> = Api::namespaced(c.clone(), ns);
    wait_for(&api, name, timeout, &format!("{n} Ready pool pods"), |p| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.ready_replicas == n && s.replicas == n)
    })
    .await
    .expect("pool")
}
