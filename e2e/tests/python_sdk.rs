//! The Python SDK (sdk/python, installed from its wheel by `make sdk-python` into
//! AIRLOCK_SDK_VENV) against the gateway the chart installed: its pytest suite (sync and asyncio
//! clients; the OpenAI Agents SDK backend driven by the Agents SDK's own session API and Runner),
//! the SDK's examples and the Python blocks of its README. This test sets up the cluster side
//! (two users in two namespaces, a token with no rights, a template with a warm pool) and checks
//! what only the cluster can tell: the SDK's sandboxes came from the pool, and none is left.

use std::time::Duration;

use airlock_e2e::release;
use airlock_e2e::pools;
use airlock_e2e::sandboxes::{not_deleting, token_for, token_with_audiences};
use airlock_e2e::{GATEWAY_AUDIENCE, SANDBOX_IMAGE, TestNamespace, client};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

const TEMPLATE: &str = "python";
const POOL: i32 = 2;
const SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk/python");

async fn template_with_pool(c: &Client, ns: &str) {
    pools::template(c, ns, TEMPLATE, json!({"resources": {"cpu": "100m", "memory": "256Mi"}})).await;
    pools::pool(c, ns, TEMPLATE, POOL).await;
}

async fn pool_ready(c: &Client, ns: &str) {
    pools::pool_ready(c, ns, TEMPLATE, POOL, Duration::from_secs(180)).await;
}

/// Runs `args` with the SDK venv's python in sdk/python, as `token`'s user in `ns`.
async fn python(venv: &str, args: &[&str], envs: &[(&str, &str)], limit: Duration) {
    let mut cmd = tokio::process::Command::new(format!("{venv}/bin/python"));
    cmd.current_dir(SDK).args(args).envs(envs.iter().copied()).env_remove("PYTHONPATH").kill_on_drop(true);
    let run = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("python {args:?} ran over {limit:?}"))
        .expect("running python");
    eprintln!("{}\n{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "python {args:?} failed (output above)");
}

#[tokio::test]
async fn the_python_sdk_and_its_agents_backend_work_against_the_gateway() {
    let venv = std::env::var("AIRLOCK_SDK_VENV")
        .expect("AIRLOCK_SDK_VENV: the venv with the SDK's wheel and test tools (`make sdk-python` makes it; `make e2e` sets it)");
    let c = client().await;
    let a = TestNamespace::new(&c, "sdk-a").await;
    let b = TestNamespace::new(&c, "sdk-b").await;
    let token = token_for(&c, &a.name, "agent").await;
    let other = token_for(&c, &b.name, "agent").await;
    let nobody: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap();
    Api::<ServiceAccount>::namespaced(c.clone(), &a.name).create(&PostParams::default(), &nobody).await.expect("creating SA nobody");
    let no_access = token_with_audiences(&c, &a.name, "nobody", vec![GATEWAY_AUDIENCE.to_string()]).await;
    template_with_pool(&c, &a.name).await;
    pool_ready(&c, &a.name).await;

    let (addr, _) = release::in_cluster_gateway(&c).await;
    let out = std::env::temp_dir().join(format!("airlock-sdk-{}.jsonl", a.name));
    let _ = std::fs::remove_file(&out);
    let out_s = out.to_string_lossy().to_string();
    let envs = [
        ("AIRLOCK_ADDR", addr.as_str()),
        ("AIRLOCK_NAMESPACE", a.name.as_str()),
        ("AIRLOCK_TOKEN", token.as_str()),
        ("AIRLOCK_TEMPLATE", TEMPLATE),
        ("AIRLOCK_SDK_TEMPLATE", TEMPLATE),
        ("AIRLOCK_SDK_IMAGE", SANDBOX_IMAGE),
        ("AIRLOCK_SDK_SERVICE_ACCOUNT", "agent"),
        ("AIRLOCK_SDK_OTHER_NAMESPACE", b.name.as_str()),
        ("AIRLOCK_SDK_OTHER_TOKEN", other.as_str()),
        ("AIRLOCK_SDK_NO_ACCESS_TOKEN", no_access.as_str()),
        ("AIRLOCK_SDK_OUT", out_s.as_str()),
    ];
    python(&venv, &["-m", "pytest", "-v", "-p", "no:cacheprovider", "tests/cluster"], &envs, Duration::from_secs(600)).await;
    python(&venv, &["examples/warm_pool.py"], &envs, Duration::from_secs(120)).await;
    python(&venv, &["examples/agents_session.py"], &envs, Duration::from_secs(120)).await;
    // The Python blocks of the SDK's README and of the repository's, as pasted, one by one.
    let readme_blocks = "import re, pathlib\n\
        for readme in ('README.md', '../../README.md'):\n\
        \x20   for i, block in enumerate(re.findall(r'```python\\n(.*?)```', pathlib.Path(readme).read_text(), re.S)):\n\
        \x20       print(f'--- {readme}: Python block {i + 1}', flush=True)\n\
        \x20       exec(compile(block, f'{readme} block {i + 1}', 'exec'), {'__name__': '__main__'})\n";
    python(&venv, &["-c", readme_blocks], &envs, Duration::from_secs(120)).await;

    // The sandboxes the SDK made from the template were claimed from the warm pool.
    let notes: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).expect("the tests' notes").lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let warm = notes.iter().find_map(|v| v["warm"].as_str()).expect("the warm test's sandbox").to_string();
    assert!(pools::claimed(&c, &a.name, &warm).await, "sandbox {warm} (Sandbox.create(template=...)) was not claimed from the warm pool");
    assert!(notes.iter().any(|v| v["agents_sandbox"].is_string()), "the Agents backend test left no note: {notes:?}");

    // Every sandbox the SDK made is gone or going (context managers, the Agents runner's
    // shutdown), and the pool is back to full.
    pool_ready(&c, &a.name).await;
    let left = not_deleting(&c, &a.name).await;
    assert!(left.is_empty(), "sandboxes the SDK left behind: {left:?}");
    let _ = std::fs::remove_file(&out);
    a.cleanup().await;
    b.cleanup().await;
}
