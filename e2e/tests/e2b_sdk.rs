//! The published e2b SDKs, unmodified (Python `e2b` and `e2b-code-interpreter`, pinned in
//! e2e/e2b/requirements.txt and installed by `make e2b-sdks`), against the e2b-compatible API of
//! the gateway the chart installed (`gateway.e2b.enabled` in e2e/values-local.yaml): create from
//! a template with a warm pool, commands (foreground, background, connect, stdin, kill, list),
//! files, timeouts, listing by metadata, e2b-shaped errors (404, 401, 403), isolation between two
//! users, and `run_code` with contexts; then the core flow with the JavaScript `e2b` package
//! (npm, e2e/e2b/js). The checks are in e2e/e2b/test_*.py (pytest) and js/core.test.mjs; this test
//! sets up the cluster side and checks what only the cluster can tell: the create was served by a
//! warm pod, and the pool refilled.

use std::time::Duration;

use airlock_e2e::release;
use airlock_e2e::pools;
use airlock_e2e::sandboxes::{not_deleting, token_for, token_with_audiences};
use airlock_e2e::{GATEWAY_AUDIENCE, TestNamespace, client};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

/// The template the e2b SDK's `Sandbox.create()` names by default.
const TEMPLATE: &str = "base";
/// The e2b-code-interpreter SDK's default template.
const CODE_TEMPLATE: &str = "code-interpreter-v1";

async fn template(c: &Client, ns: &str, name: &str, replicas: Option<i32>) {
    pools::template(c, ns, name, json!({})).await;
    if let Some(n) = replicas {
        pools::pool(c, ns, name, n).await;
    }
}

async fn pool_ready(c: &Client, ns: &str, name: &str, n: i32) {
    pools::pool_ready(c, ns, name, n, Duration::from_secs(180)).await;
}

/// `http://POD_IP:PORT` of the installed gateway's e2b port.
async fn e2b_url(c: &Client) -> String {
    let (_, pod) = release::in_cluster_gateway(c).await;
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("gateway pod IP");
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().flat_map(|c| c.ports.iter().flatten()).find(|p| p.name.as_deref() == Some("http-e2b")))
        .map(|p| p.container_port)
        .expect("the gateway has no http-e2b port: is gateway.e2b.enabled set in e2e/values-local.yaml?");
    format!("http://{ip}:{port}")
}

/// `program` run in e2e/e2b with the e2b SDKs' environment pointed at `url` as user `key`.
fn sdk(program: &str, url: &str, key: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/e2b"))
        .env("E2B_API_URL", url)
        .env("E2B_SANDBOX_URL", url)
        .env("E2B_API_KEY", key)
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_DOMAIN")
        .kill_on_drop(true);
    c
}

#[tokio::test]
async fn the_published_python_sdk_works_against_the_e2b_api() {
    let venv = std::env::var("AIRLOCK_E2B_VENV")
        .expect("AIRLOCK_E2B_VENV: the venv with the pinned e2b SDK (`make e2b-sdks` creates it; `make e2e` sets it)");
    let python = format!("{venv}/bin/python");
    assert!(std::path::Path::new(&python).exists(), "{python} missing: run `make e2b-sdks`");
    let c = client().await;
    let a = TestNamespace::new(&c, "e2b-a").await;
    let b = TestNamespace::new(&c, "e2b-b").await;
    let key_a = token_for(&c, &a.name, "agent").await;
    let key_b = token_for(&c, &b.name, "agent").await;
    // A token the API server accepts, with no rights on sandboxes.
    let nobody: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap();
    Api::<ServiceAccount>::namespaced(c.clone(), &a.name).create(&PostParams::default(), &nobody).await.expect("creating SA nobody");
    let key_none = token_with_audiences(&c, &a.name, "nobody", vec![GATEWAY_AUDIENCE.to_string()]).await;
    // The chart's read-only role.
    let viewer: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "viewer"}})).unwrap();
    Api::<ServiceAccount>::namespaced(c.clone(), &a.name).create(&PostParams::default(), &viewer).await.expect("creating SA viewer");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "airlock-sandbox-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": a.name}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(c.clone(), &a.name).create(&PostParams::default(), &binding).await.expect("binding the viewer role");
    let key_viewer = token_with_audiences(&c, &a.name, "viewer", vec![GATEWAY_AUDIENCE.to_string()]).await;
    template(&c, &a.name, TEMPLATE, Some(2)).await;
    template(&c, &a.name, CODE_TEMPLATE, Some(1)).await;
    template(&c, &b.name, TEMPLATE, None).await;
    pool_ready(&c, &a.name, TEMPLATE, 2).await;
    pool_ready(&c, &a.name, CODE_TEMPLATE, 1).await;

    let url = e2b_url(&c).await;
    let out = std::env::temp_dir().join(format!("airlock-e2b-{}.jsonl", a.name));
    let _ = std::fs::remove_file(&out);
    let run = sdk(&python, &url, &key_a)
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider", "test_python_sdk.py", "test_code_interpreter.py"])
        .env("AIRLOCK_E2B_OTHER_KEY", &key_b)
        .env("AIRLOCK_E2B_NO_ACCESS_KEY", &key_none)
        .env("AIRLOCK_E2B_VIEWER_KEY", &key_viewer)
        .env("AIRLOCK_E2B_OUT", &out)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(600), run).await.expect("pytest ran over 10 minutes").expect("running pytest");
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the e2b SDK tests failed (output above)");

    // The module's sandbox came from the warm pool: the operator's Claimed event names it.
    let notes = std::fs::read_to_string(&out).expect("the test's notes");
    let warm: String = notes
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["warm"].as_str().map(str::to_string))
        .expect("the warm sandbox's ID");
    assert!(pools::claimed(&c, &a.name, &warm).await, "sandbox {warm} (Sandbox.create() of template {TEMPLATE}) was not claimed from the warm pool");
    // The JavaScript SDK's core flow.
    let js = std::env::var("AIRLOCK_E2B_JS")
        .expect("AIRLOCK_E2B_JS: the e2b JavaScript SDK's directory (`make e2b-sdks` creates it; `make e2e` sets it)");
    let run = sdk("node", &url, &key_a)
        .args(["--test", "--test-reporter=spec", "js/core.test.mjs"])
        .env("AIRLOCK_E2B_JS", &js)
        .env("AIRLOCK_E2B_NO_ACCESS_KEY", &key_none)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(300), run).await.expect("node --test ran over 5 minutes").expect("running node");
    eprintln!("{}\n{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the e2b JavaScript SDK tests failed (output above)");

    // Every sandbox the SDK made is gone or going, and the pool is back to 2.
    pool_ready(&c, &a.name, TEMPLATE, 2).await;
    let left = not_deleting(&c, &a.name).await;
    assert!(left.is_empty(), "sandboxes left behind by the SDK's kill(): {left:?}");
    let _ = std::fs::remove_file(&out);
    a.cleanup().await;
    b.cleanup().await;
}
