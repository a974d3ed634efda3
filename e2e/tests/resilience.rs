//! Faults and hostile input against the installed Airlock (Helm release `airlock` in
//! `airlock-system`): the operator killed in the middle of a burst of Sandboxes, a Sandbox deleted
//! under a running exec (through an in-process gateway, auth off), the installed gateway's pod
//! deleted and replaced under a running exec with one client kept across it (auth on), and a pile
//! of malformed Sandbox manifests.
//!
//! The operator is killed with SIGKILL: the test finds the in-cluster operator's process on this
//! node (its image's entrypoint, `/usr/local/bin/airlock-operator`, runs under runc) and the
//! kubelet restarts the container, as after an OOM kill or a crash. Killing the operator and
//! deleting the gateway pod are done holding the host-wide cluster lock
//! (`airlock_e2e::release::ClusterLock`); no other test of this file uses the installed gateway.
//!
//! `RESILIENCE_BURST` (default 200, spread over namespaces of at most the per-namespace quota)
//! sets the size of the burst. More faults (two operator replicas, the API server restarted):
//! `tests/faults.rs`.

use std::sync::Arc;
use std::time::Duration;

use airlock_crds::{Phase, Sandbox, condition};
use airlock_e2e::release::{self, ClusterLock, SYSTEM_NS, restarts};
use airlock_e2e::sandboxes::{self, count, drain, manifest, merge, raw, ready_sandbox, started};
use airlock_e2e::{TestNamespace, client, wait_for};
use airlock_exec_gateway::auth::AuthMode;
use airlock_api::client::AirlockClient;
use airlock_api::proto::v1 as pb;
use airlock_exec_gateway::metrics::Metrics;
use airlock_api::tonic::Code;
use airlock_exec_gateway::{Config, serve};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};


/// Tests that disturb the operator (or watch its restart count) run one at a time, and so do the
/// ones that need a Ready sandbox: the burst fills the node's CPU with Pending pods.
static OPERATOR_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// POSTs a Sandbox as raw JSON (so it can be anything), optionally with `fieldValidation=Strict`.
async fn post(c: &Client, ns: &str, body: &Value, strict: bool) -> Result<DynamicObject, kube::Error> {
    let path = format!("/apis/airlock.dev/v1alpha1/namespaces/{ns}/sandboxes");
    let mut req = kube::core::Request::new(path)
        .create(&PostParams::default(), serde_json::to_vec(body).unwrap())
        .expect("request");
    if strict {
        let uri = format!("{}{}fieldValidation=Strict", req.uri(), if req.uri().query().is_some() { "&" } else { "?" });
        *req.uri_mut() = uri.parse().unwrap();
    }
    c.request::<DynamicObject>(req).await
}

// ---------------------------------------------------------------------------------------------
// The operator.

/// `--quota-pods` of the installed operator (the chart's `operator.quota.pods`), 50 when unset.
async fn quota_pods(c: &Client) -> usize {
    use k8s_openapi::api::apps::v1::Deployment;
    let d = Api::<Deployment>::namespaced(c.clone(), SYSTEM_NS).get(release::OPERATOR_DEPLOYMENT).await.expect("operator Deployment");
    let args: Vec<String> = d.spec.and_then(|s| s.template.spec).map(|s| s.containers.into_iter().flat_map(|c| c.args.unwrap_or_default()).collect()).unwrap_or_default();
    args.iter().find_map(|a| a.strip_prefix("--quota-pods=")?.parse().ok()).unwrap_or(50)
}

/// A burst of `RESILIENCE_BURST` (default 200) Sandboxes, a fifth of them deleted again, with the
/// operator SIGKILLed a third of the way in. The per-namespace quota (`--quota-pods`, 50) is kept:
/// the burst is spread round-robin over as many test namespaces as it needs, so every Sandbox is
/// entitled to a pod. Each asks for 100m CPU, so only the first ~17 pods fit on the 2-CPU node and
/// the rest stay Pending (unschedulable): the test counts objects, not readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_during_a_burst_converges() {
    let _lock = OPERATOR_LOCK.lock().await;
    let c = client().await;
    let _cluster = ClusterLock::acquire("burst").await;
    release::operator_ready(&c, Duration::from_secs(120)).await;
    let burst: usize = std::env::var("RESILIENCE_BURST").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let per_ns = quota_pods(&c).await.max(1);
    let mut namespaces = Vec::new();
    for _ in 0..burst.div_ceil(per_ns) {
        namespaces.push(TestNamespace::new(&c, "res-burst").await);
    }
    let ns_names: Vec<String> = namespaces.iter().map(|n| n.name.clone()).collect();
    let to_delete = (burst / 5).max(1);
    let names: Vec<(String, String)> = (0..burst).map(|i| (ns_names[i % ns_names.len()].clone(), format!("b{i:03}"))).collect();
    eprintln!("burst of {burst} Sandboxes over {} namespaces (quota {per_ns} pods each), {to_delete} deleted mid-burst", ns_names.len());
    let t0 = std::time::Instant::now();

    // The burst, 8 creations in flight at a time.
    let (c2, names2) = (c.clone(), names.clone());
    let creator = tokio::spawn(async move {
        let errors: Vec<String> = futures::stream::iter(names2)
            .map(|(n, name)| {
                let c = c2.clone();
                async move { sandboxes::create(&c, &n, &name, json!({"resources": {"cpu": "100m"}})).await.err().map(|e| format!("{n}/{name}: {e}")) }
            })
            .buffer_unordered(8)
            .filter_map(|e| async move { e })
            .collect()
            .await;
        (errors, t0.elapsed())
    });

    // A third of the way in: kill the operator, and delete a fifth of the burst among those that exist.
    let all: Api<Sandbox> = Api::all(c.clone());
    let mine = |s: &Sandbox| ns_names.iter().any(|n| Some(n.as_str()) == s.namespace().as_deref());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let existing = loop {
        let l: Vec<Sandbox> = all.list(&ListParams::default()).await.unwrap().items.into_iter().filter(mine).collect();
        if l.len() >= (burst / 3).max(to_delete) {
            break l;
        }
        assert!(tokio::time::Instant::now() < deadline, "burst too slow: {} created", l.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let restarts_before = release::kill_operator(&c).await;
    let killed_at = t0.elapsed();
    let mut deleted: Vec<(String, String)> = existing.iter().map(|s| (s.namespace().unwrap(), s.name_any())).collect();
    deleted.sort_by(|a, b| a.1.cmp(&b.1));
    deleted.truncate(to_delete);
    for (n, d) in &deleted {
        Api::<Sandbox>::namespaced(c.clone(), n).delete(d, &DeleteParams::default()).await.unwrap_or_else(|e| panic!("deleting {n}/{d}: {e}"));
    }
    eprintln!("operator killed at {killed_at:?} with {} Sandboxes created; {} deleted", existing.len(), deleted.len());
    let (errors, created_in) = creator.await.expect("creator task");
    assert!(errors.is_empty(), "creations refused: {errors:?}");
    eprintln!("all {burst} creations accepted in {created_in:?}");

    // The kubelet restarts the killed operator.
    release::operator_restarted(&c, restarts_before, Duration::from_secs(180)).await;
    eprintln!("operator restarted and Ready at {:?}", t0.elapsed());

    // Convergence, namespace by namespace: count objects, not readiness.
    let mut total = (0, 0, std::collections::BTreeMap::<String, usize>::new());
    for n in &ns_names {
        let gone: Vec<String> = deleted.iter().filter(|(dn, _)| dn == n).map(|(_, d)| d.clone()).collect();
        let want = names.iter().filter(|(nn, _)| nn == n).count() - gone.len();
        let (sbx, pods) = sandboxes::converged(&c, n, &gone, false, Duration::from_secs(300)).await;
        assert_eq!(sbx.len(), want, "{n}: {} Sandboxes, want {want} (none lost)", sbx.len());
        total.0 += sbx.len();
        total.1 += pods.len();
        for (k, v) in sandboxes::phases(&sbx) {
            *total.2.entry(k).or_default() += v;
        }
    }
    eprintln!(
        "converged {:?} after the first creation ({:?} after the kill): {} Sandboxes, {} pods, phases {:?}",
        t0.elapsed(),
        t0.elapsed() - killed_at,
        total.0,
        total.1,
        total.2
    );
    for ns in namespaces {
        ns.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway, in-process.

struct Gateway {
    addr: String,
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    async fn start(kube: &Client, ns: &str) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config::new(AuthMode::None).with_client(kube.clone()).with_default_namespace(ns);
        config.shutdown_grace = Duration::from_secs(2);
        let metrics = config.metrics.clone();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            if let Err(e) = serve(config, listener, async move {
                let _ = rx.await;
            })
            .await
            {
                panic!("gateway: {e}");
            }
        });
        Gateway { addr, metrics, stop: Some(stop), task: Some(task) }
    }

    /// Sum of `airlock_gateway_active_streams` over methods.
    fn active(&self) -> f64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("airlock_gateway_active_streams{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Stops serving and waits for `serve` to return.
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), task).await.expect("gateway stopped within 60 s").expect("gateway task");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn wait_idle(gw: &Gateway) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while gw.active() != 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "active streams stay at {}:\n{}", gw.active(), gw.metrics.encode());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_deleted_during_an_exec_ends_the_call() {
    let _lock = OPERATOR_LOCK.lock().await;
    let c = client().await;
    let ns = TestNamespace::new(&c, "res-del").await;
    let n = ns.name.as_str();
    ready_sandbox(&c, n, "doomed").await;
    let gw = Gateway::start(&c, n).await;
    let ac = AirlockClient::connect(&gw.addr, None).await.expect("connect");
    let s = started(&ac, n, "doomed", "echo up; sleep 300").await;
    assert!(gw.active() >= 1.0, "the exec is counted as active");

    Api::<Sandbox>::namespaced(c.clone(), n).delete("doomed", &DeleteParams::default()).await.expect("delete the Sandbox");
    let end = tokio::time::timeout(Duration::from_secs(120), drain(s)).await.expect("the call ended within 120 s of the deletion");
    eprintln!("exec after the Sandbox was deleted: {end:?}");
    match end {
        Ok(Some(x)) => assert!(x.exit_code != 0 || x.signal != 0, "a killed command reports failure: {x:?}"),
        Ok(None) => panic!("stream ended OK without an Exited event"),
        Err(st) => {
            assert_ne!(st.code(), Code::Ok);
            assert!(!st.message().is_empty(), "{st:?}");
        }
    }
    wait_idle(&gw).await;
    // And the sandbox is gone for the gateway too, with a clear code.
    let api: Api<Sandbox> = Api::namespaced(c.clone(), n);
    wait_for(&api, "doomed", Duration::from_secs(60), "Sandbox gone", |s| s.is_none()).await;
    let e = ac.exec_collect(AirlockClient::argv(n, "doomed", ["true"])).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    wait_idle(&gw).await;
    gw.shutdown().await;
    ns.cleanup().await;
}

/// The Helm-installed gateway's pod is deleted (its Deployment, left unchanged, starts a new one)
/// under a running command, with auth on (a ServiceAccount token checked by TokenReview and
/// SubjectAccessReview). The test reaches the gateway through its Service the way kube-proxy routes
/// a Service IP (which this host cannot reach): a loopback relay that sends each new connection to
/// a ready endpoint of the Service's EndpointSlices. The same `AirlockClient` value (one tonic
/// channel) is used before and after: its calls reach the new pod once it is ready, the sandbox
/// and its files are intact, and the command cut off with the old pod is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_gateway_restart_same_client_reconnects() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    let _lock = OPERATOR_LOCK.lock().await;
    let c = client().await;
    let _cluster = ClusterLock::acquire("gateway restart").await;
    let ns = TestNamespace::new(&c, "res-gw").await;
    let n = ns.name.as_str();
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), SYSTEM_NS);
    let gw_name = airlock_e2e::gw::GATEWAY;
    let before = deployments.get(gw_name).await.expect("gateway Deployment");
    let old = release::ready_pods(&c, release::GATEWAY_SELECTOR, 1, Duration::from_secs(120)).await.remove(0);
    let old_ip = old.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("gateway pod IP");
    let token = sandboxes::token_for(&c, n, "agent").await;
    ready_sandbox(&c, n, "keeper").await;

    let relay = airlock_e2e::gw::Relay::to_service(&c, SYSTEM_NS, gw_name, airlock_e2e::gw::GATEWAY_PORT).await;
    let ac = AirlockClient::connect(&relay.url(), Some(token)).await.expect("connect through the Service relay");
    let o = ac.exec_collect(AirlockClient::argv(n, "keeper", ["sh", "-c", "echo before > /tmp/state; cat /tmp/state"])).await.unwrap();
    assert_eq!((String::from_utf8_lossy(&o.stdout).as_ref(), o.exit_code), ("before\n", 0));
    assert_eq!(relay.last_target().map(|a| a.ip().to_string()), Some(old_ip.clone()), "first calls went to the installed gateway's pod");
    // A background process (direct path), which must outlive the gateway pod.
    let sandbox = airlock_api::client::sandbox_ref(n, "keeper");
    let ticker = "i=0; while [ $i -lt 1200 ]; do echo tick$i; i=$((i+1)); sleep 0.25; done";
    let bg = ac
        .processes()
        .start_process(pb::StartProcessRequest { sandbox: sandbox.clone(), command: Some(pb::start_process_request::Command::Shell(ticker.into())), tag: "ticker".into(), ..Default::default() })
        .await
        .expect("StartProcess through the installed gateway")
        .into_inner();
    // A command in flight while the gateway pod goes away.
    let s = started(&ac, n, "keeper", "echo up; exec sleep 301.25").await;
    assert_eq!(count(&ac, n, "keeper", &["sleep", "301.25"]).await, 1);

    Api::<Pod>::namespaced(c.clone(), SYSTEM_NS).delete(&old.name_any(), &DeleteParams::default()).await.expect("deleting the gateway pod");
    let end = tokio::time::timeout(Duration::from_secs(90), drain(s)).await.expect("in-flight call ended with the gateway pod");
    eprintln!("in-flight exec when the gateway pod was deleted: {end:?}");
    assert!(!matches!(end, Ok(None)), "an interrupted command must not look like a clean OK end: {end:?}");
    let new = release::ready_pods(&c, release::GATEWAY_SELECTOR, 1, Duration::from_secs(180)).await.remove(0);
    assert_ne!(new.uid(), old.uid(), "the gateway pod was replaced");
    let new_ip = new.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("new gateway pod IP");

    // The same client: calls fail only for want of a connection (UNAVAILABLE, or a transport
    // error when a connection is reset under a call) until one goes through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let sb = loop {
        match ac.get_sandbox(n, "keeper").await {
            Ok(sb) => break sb,
            Err(e) => {
                let no_connection = e.code() == Code::Unavailable || (e.code() == Code::Unknown && e.message() == "transport error");
                assert!(no_connection, "{e:?}");
                assert!(tokio::time::Instant::now() < deadline, "the same client never reached the restarted gateway: {e:?}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    assert!(sb.ready, "{sb:?}");
    let o = ac.exec_collect(AirlockClient::argv(n, "keeper", ["cat", "/tmp/state"])).await.unwrap();
    assert_eq!((String::from_utf8_lossy(&o.stdout).as_ref(), o.exit_code), ("before\n", 0), "same sandbox, same files");
    assert_eq!(relay.last_target().map(|a| a.ip().to_string()), Some(new_ip.clone()), "the call went to the new pod");
    // The command cut off with the old pod is gone (its agent saw EOF and killed the group).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(&ac, n, "keeper", &["sleep", "301.25"]).await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "command of the deleted gateway pod still runs");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The background process ran on through the restart: same pid, still running, and its output
    // is read from offset 0 through the new pod, without a gap, past what it wrote before.
    let list = ac.processes().list_processes(pb::ListProcessesRequest { sandbox: sandbox.clone() }).await.expect("ListProcesses").into_inner();
    let p = list.processes.iter().find(|p| p.tag == "ticker").unwrap_or_else(|| panic!("the background process is gone: {list:?}"));
    assert_eq!((p.pid, p.running), (bg.pid, true), "{p:?}");
    let connect = pb::ConnectProcessRequest { sandbox: sandbox.clone(), process: Some(pb::ProcessSelector { selector: Some(pb::process_selector::Selector::Tag("ticker".into())) }), ..Default::default() };
    let mut events = ac.processes().connect_process(connect.clone()).await.expect("ConnectProcess").into_inner();
    let mut out = Vec::new();
    while let Some(e) = events.message().await.expect("ConnectProcess stream") {
        match e.event {
            Some(pb::process_event::Event::Stdout(c)) => {
                assert_eq!(c.offset, out.len() as u64, "contiguous from 0");
                out.extend_from_slice(&c.data);
            }
            Some(pb::process_event::Event::CaughtUp(_)) => break,
            other => panic!("{other:?}"),
        }
    }
    let text = String::from_utf8_lossy(&out);
    let ticks: Vec<&str> = text.lines().collect();
    assert!(ticks.len() > 8, "it kept ticking through the restart: {ticks:?}");
    assert!(ticks.iter().enumerate().all(|(i, t)| *t == format!("tick{i}")), "no tick lost: {ticks:?}");
    ac.processes().kill_process(pb::KillProcessRequest { sandbox: sandbox.clone(), process: connect.process.clone() }).await.expect("KillProcess");
    // The Deployment is as it was.
    let after = deployments.get(gw_name).await.expect("gateway Deployment");
    assert_eq!(after.metadata.generation, before.metadata.generation, "the gateway Deployment was changed");
    eprintln!("gateway pod {old_ip} replaced by {new_ip}; the same client reconnected");
    ns.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_manifests_are_refused_or_reported_and_the_operator_survives() {
    let _lock = OPERATOR_LOCK.lock().await;
    let c = client().await;
    let op_before = release::operator_ready(&c, Duration::from_secs(180)).await;
    let ns = TestNamespace::new(&c, "res-bad").await;
    let n = ns.name.as_str();
    let long = "x".repeat(10_000);
    let many = |k: usize, v: Value| Value::Array(vec![v; k]);
    // (what, spec merged over a valid one (or a whole body for metadata cases), field named in the refusal)
    let cases: Vec<(&str, Value, &str)> = vec![
        ("image is a number", json!({"image": 123}), "spec.image"),
        ("image null", json!({"image": null}), "spec.image"),
        ("image 10k chars", json!({"image": long}), "spec.image"),
        ("resources is an array", json!({"resources": []}), "spec.resources"),
        ("cpu negative int", json!({"resources": {"cpu": -1}}), "spec.resources.cpu"),
        ("cpu negative string", json!({"resources": {"cpu": "-500m"}}), "spec.resources.cpu"),
        ("cpu bool", json!({"resources": {"cpu": true}}), "spec.resources.cpu"),
        ("memory word", json!({"resources": {"memory": "lots"}}), "spec.resources.memory"),
        ("memory 1Mi (min is above 4Mi)", json!({"resources": {"memory": "1Mi"}}), "spec.resources.memory"),
        ("ttl as string", json!({"lifetime": {"ttlSeconds": "100"}}), "spec.lifetime.ttlSeconds"),
        ("ttl float", json!({"lifetime": {"ttlSeconds": 1.5}}), "spec.lifetime.ttlSeconds"),
        ("ttl negative", json!({"lifetime": {"ttlSeconds": -5}}), "spec.lifetime.ttlSeconds"),
        ("ttl 1e30", json!({"lifetime": {"ttlSeconds": 1e30}}), "spec.lifetime.ttlSeconds"),
        ("idle i64::MAX", json!({"lifetime": {"idleTimeoutSeconds": i64::MAX}}), "spec.lifetime.idleTimeoutSeconds"),
        ("lifetime string", json!({"lifetime": "forever"}), "spec.lifetime"),
        ("env name with =", json!({"env": [{"name": "A=B", "value": "x"}]}), "spec.env[0].name"),
        ("env name empty", json!({"env": [{"name": "", "value": "x"}]}), "spec.env[0].name"),
        ("env value 40k", json!({"env": [{"name": "BIG", "value": "y".repeat(40_000)}]}), "spec.env[0].value"),
        ("env as object", json!({"env": {"A": "B"}}), "spec.env"),
        ("env 129 entries", json!({"env": many(129, json!({"name": "A", "value": "b"}))}), "spec.env"),
        ("command 65 entries", json!({"command": many(65, json!("x"))}), "spec.command"),
        ("command as string", json!({"command": "rm -rf /"}), "spec.command"),
        ("args of ints", json!({"args": [1, 2]}), "spec.args[0]"),
        ("allow 65 rules", json!({"network": {"egress": "AllowList", "allow": many(65, json!({"cidr": "10.0.0.0/8"}))}}), "spec.network.allow"),
        ("port 0", json!({"network": {"egress": "AllowList", "allow": [{"cidr": "10.0.0.0/8", "ports": [{"port": 0}]}]}}), "spec.network.allow[0].ports[0].port"),
        ("port string", json!({"network": {"egress": "AllowList", "allow": [{"cidr": "10.0.0.0/8", "ports": [{"port": "80"}]}]}}), "spec.network.allow[0].ports[0].port"),
        ("port -1", json!({"network": {"egress": "AllowList", "allow": [{"cidr": "10.0.0.0/8", "ports": [{"port": -1}]}]}}), "spec.network.allow[0].ports[0].port"),
        ("protocol lowercase", json!({"network": {"egress": "AllowList", "allow": [{"cidr": "10.0.0.0/8", "ports": [{"port": 80, "protocol": "tcp"}]}]}}), "spec.network.allow[0].ports[0].protocol"),
        ("cidr with shell", json!({"network": {"egress": "AllowList", "allow": [{"cidr": "0.0.0.0/0; rm -rf /"}]}}), "spec.network.allow[0].cidr"),
        ("cidr 10k chars", json!({"network": {"egress": "AllowList", "allow": [{"cidr": long}]}}), "spec.network.allow[0].cidr"),
        ("dns as string", json!({"network": {"dns": "yes"}}), "spec.network.dns"),
        ("readOnlyRootFilesystem string", json!({"readOnlyRootFilesystem": "true"}), "spec.readOnlyRootFilesystem"),
        ("workingDir traversal", json!({"workingDir": "../../etc"}), "spec.workingDir"),
        ("runtimeClassName with shell", json!({"runtimeClassName": "runc; rm -rf /"}), "spec.runtimeClassName"),
        ("pull policy with newline", json!({"imagePullPolicy": "Always\n"}), "spec.imagePullPolicy"),
        ("spec is an array", json!("__spec_array__"), "spec"),
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, (what, spec, field)) in cases.iter().enumerate() {
        let mut m = manifest(&format!("bad-{i}"), json!({}));
        if spec == &json!("__spec_array__") {
            m["spec"] = json!([1, 2, 3]);
        } else {
            merge(&mut m["spec"], spec.clone());
        }
        checked += 1;
        match post(&c, n, &m, false).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(s)) if (s.code == 422 || s.code == 400) && s.message.contains(field) => {}
            Err(kube::Error::Api(s)) => failures.push(format!("{what}: {} {:?}, want 400/422 naming {field}", s.code, s.message)),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    // A name that is not a DNS label.
    checked += 1;
    match post(&c, n, &manifest("Bad_Name!", json!({})), false).await {
        Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("metadata.name") => {}
        other => failures.push(format!("bad metadata.name: {other:?}")),
    }
    // Unknown fields: refused with fieldValidation=Strict, naming the field...
    for (what, extra, field) in [
        ("unknown spec field", json!({"privileged": true}), "spec.privileged"),
        ("unknown nested field", json!({"network": {"hostNetwork": true}}), "spec.network.hostNetwork"),
        ("unknown resources field", json!({"resources": {"gpu": "8"}}), "spec.resources.gpu"),
    ] {
        checked += 1;
        let mut m = manifest("strict", json!({}));
        merge(&mut m["spec"], extra);
        match post(&c, n, &m, true).await {
            Ok(_) => failures.push(format!("{what} (Strict): accepted")),
            Err(kube::Error::Api(s)) if s.message.contains(field) => {}
            Err(e) => failures.push(format!("{what} (Strict): {e}, want naming {field}")),
        }
    }
    // ...and pruned (accepted, dropped) without it: the CRD is structural.
    checked += 1;
    let mut m = manifest("pruned", json!({"privileged": true, "network": {"hostNetwork": true}}));
    // (spec.securityContext is a Sandbox field: only its runAsUser/runAsGroup survive.)
    m["spec"]["securityContext"] = json!({"runAsUser": 1000, "privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}});
    match post(&c, n, &m, false).await {
        Ok(o) => {
            let spec = &o.data["spec"];
            if spec.get("privileged").is_some()
                || spec["securityContext"] != json!({"runAsUser": 1000})
                || spec["network"].get("hostNetwork").is_some()
            {
                failures.push(format!("unknown fields kept: {spec}"));
            }
        }
        Err(e) => failures.push(format!("unknown fields without Strict: {e}")),
    }

    // Accepted, and reported by the operator with a clear condition.
    let reported: Vec<(&str, Value, Vec<&str>, &str)> = vec![
        // An "injection" image is an opaque string: the pod cannot start and the status says why.
        ("inject", json!({"image": "$(rm -rf /)", "imagePullPolicy": "IfNotPresent"}), vec!["InvalidImageName", "ErrImagePull", "ImagePullBackOff"], ""),
        ("hugecpu", json!({"resources": {"cpu": "1000"}}), vec!["Invalid"], "spec.resources.cpu"),
        ("hugemem", json!({"resources": {"memory": "100Ti"}}), vec!["Invalid"], "spec.resources.memory"),
        ("longttl", json!({"lifetime": {"ttlSeconds": 604800}}), vec!["Invalid"], "spec.lifetime.ttlSeconds"),
    ];
    for (name, spec, _, _) in &reported {
        checked += 1;
        if let Err(e) = post(&c, n, &manifest(name, spec.clone()), false).await {
            failures.push(format!("{name}: refused at admission: {e}"));
        }
    }
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), n);
    for (name, _, reasons, field) in &reported {
        let got = tokio::time::timeout(
            Duration::from_secs(120),
            wait_for(&sandboxes, name, Duration::from_secs(120), "a clear Ready=False reason", |s| {
                s.and_then(|s| s.condition(condition::READY)).is_some_and(|c| reasons.contains(&c.reason.as_str()))
            }),
        )
        .await;
        match got {
            Ok(Some(s)) => {
                let r = s.condition(condition::READY).unwrap();
                eprintln!("{name}: phase {:?} Ready={} {}: {}", s.status.as_ref().and_then(|st| st.phase), r.status, r.reason, r.message);
                if r.status != "False" || r.message.is_empty() || !r.message.contains(field) {
                    failures.push(format!("{name}: unclear condition {r:?}"));
                }
                if r.reason == "Invalid" && s.status.as_ref().and_then(|st| st.phase) != Some(Phase::Failed) {
                    failures.push(format!("{name}: Invalid but not Failed"));
                }
            }
            other => failures.push(format!("{name}: {other:?}")),
        }
    }

    // Immutable edits on a sandbox created without the optional fields.
    checked += 1;
    let base = manifest("victim", json!({"env": [{"name": "A", "value": "1"}], "command": ["sleep", "3600"]}));
    let mut base_no_res = base.clone();
    base_no_res["spec"].as_object_mut().unwrap().remove("resources");
    if let Err(e) = post(&c, n, &base_no_res, false).await {
        failures.push(format!("victim: {e}"));
    }
    let api = raw(&c, n);
    for (what, patch, field) in [
        ("changing spec.image", json!({"spec": {"image": "evil:latest"}}), "spec.image is immutable"),
        ("changing spec.env", json!({"spec": {"env": [{"name": "A", "value": "2"}]}}), "spec.env is immutable"),
        ("changing spec.command", json!({"spec": {"command": ["sh", "-c", "reboot"]}}), "spec.command is immutable"),
        ("adding spec.runtimeClassName", json!({"spec": {"runtimeClassName": "runc"}}), "spec.runtimeClassName is immutable"),
        ("adding spec.workingDir", json!({"spec": {"workingDir": "/"}}), "spec.workingDir is immutable"),
        ("adding spec.resources", json!({"spec": {"resources": {"cpu": "2", "memory": "4Gi"}}}), "spec.resources is immutable"),
    ] {
        checked += 1;
        match api.patch("victim", &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains(field) => {}
            Err(e) => failures.push(format!("{what}: {e}, want 422 naming {field:?}")),
        }
    }

    // The operator lived through all of it: same pod, no restart, Ready.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let op_after = release::operator_ready(&c, Duration::from_secs(30)).await;
    eprintln!("{checked} hostile inputs checked");
    assert_eq!(op_after.uid(), op_before.uid(), "operator pod replaced");
    assert_eq!(restarts(&op_after), restarts(&op_before), "operator restarted");
    assert!(checked >= 30);
    assert!(failures.is_empty(), "{} of {checked} checks failed:\n{}", failures.len(), failures.join("\n"));
    ns.cleanup().await;
}

/// `readOnlyRootFilesystem` is immutable, including adding it after creation (`false` is omitted
/// from the stored object, so a plain `self == oldSelf` rule on the field never runs for that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_root_filesystem_cannot_be_added_after_creation() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "res-rofs").await;
    let n = ns.name.as_str();
    post(&c, n, &manifest("rw", json!({})), false).await.expect("create");
    let patch = json!({"spec": {"readOnlyRootFilesystem": true}});
    let r = raw(&c, n).patch("rw", &PatchParams::default(), &Patch::Merge(&patch)).await;
    ns.cleanup().await;
    match r {
        Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("spec.readOnlyRootFilesystem is immutable") => {}
        other => panic!("adding spec.readOnlyRootFilesystem after creation: {other:?}"),
    }
}
