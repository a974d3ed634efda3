//! Sandboxes for the cluster tests: manifests, creation, the ownership check behind "nothing lost,
//! nothing orphaned", gateway tokens and exec streams.

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_crds::Sandbox;
use airlock_api::client::AirlockClient;
use airlock_api::proto::v1 as pb;
use airlock_api::tonic::{Status, Streaming};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::{SANDBOX_IMAGE, wait_for};

/// A valid, small Sandbox (10m CPU, 32Mi) with `spec` merged over it.
pub fn manifest(name: &str, spec: Value) -> Value {
    let mut m = json!({
        "apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox", "metadata": {"name": name},
        "spec": {"image": SANDBOX_IMAGE, "imagePullPolicy": "Never",
                 "resources": {"cpu": "10m", "memory": "32Mi", "ephemeralStorage": "64Mi"},
                 "lifetime": {"ttlSeconds": 1800}}
    });
    merge(&mut m["spec"], spec);
    m
}

/// Deep-merges `b` into `a` (objects key by key, anything else replaced).
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Sandboxes as untyped objects (so a manifest can be anything).
pub fn raw(c: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(c.clone(), ns, &ApiResource::erase::<Sandbox>(&()))
}

/// Creates `manifest(name, spec)`.
pub async fn create(c: &Client, ns: &str, name: &str, spec: Value) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(manifest(name, spec)).expect("manifest");
    raw(c, ns).create(&PostParams::default(), &obj).await
}

/// Creates a Sandbox with room to run Python (50m, 128Mi) and waits until it is Ready.
pub async fn ready_sandbox(c: &Client, ns: &str, name: &str) {
    create(c, ns, name, json!({"resources": {"cpu": "50m", "memory": "128Mi"}})).await.unwrap_or_else(|e| panic!("creating {name}: {e}"));
    let api: Api<Sandbox> = Api::namespaced(c.clone(), ns);
    wait_for(&api, name, Duration::from_secs(180), "Ready", |s| s.is_some_and(Sandbox::is_ready)).await;
}

/// What is wrong with the Sandboxes and pods of a namespace, against "nothing lost, nothing
/// orphaned": every Sandbox has a status phase and owns exactly one pod, its namesake (or, when
/// `quota_ok`, none and condition Ready=False reason QuotaExceeded); every pod has a live
/// controlling Sandbox; nothing named in `deleted` is left.
pub fn ownership_problems(sbx: &[Sandbox], pods: &[Pod], deleted: &[String], quota_ok: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let live: BTreeMap<String, String> = sbx.iter().map(|s| (s.name_any(), s.uid().unwrap_or_default())).collect();
    for d in deleted {
        if live.contains_key(d) {
            problems.push(format!("deleted Sandbox {d} still there"));
        }
        if pods.iter().any(|p| &p.name_any() == d) {
            problems.push(format!("pod of deleted Sandbox {d} still there"));
        }
    }
    for s in sbx {
        let uid = s.uid().unwrap_or_default();
        let owned: Vec<String> = pods
            .iter()
            .filter(|p| p.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid))
            .map(|p| p.name_any())
            .collect();
        let quota_refused = s.condition(airlock_crds::condition::READY).is_some_and(|c| c.status == "False" && c.reason == "QuotaExceeded");
        if owned != [s.name_any()] && !(quota_ok && owned.is_empty() && quota_refused) {
            problems.push(format!("Sandbox {} owns pods {owned:?}", s.name_any()));
        }
        if s.status.as_ref().and_then(|st| st.phase).is_none() {
            problems.push(format!("Sandbox {} has no status phase", s.name_any()));
        }
    }
    for p in pods {
        let owner = p.owner_references().iter().find(|o| o.controller == Some(true)).map(|o| o.uid.clone());
        if !owner.as_ref().is_some_and(|u| live.values().any(|v| v == u)) {
            problems.push(format!("pod {} has no live owner ({owner:?})", p.name_any()));
        }
    }
    problems
}

/// Sandboxes and pods of a namespace.
pub async fn list(c: &Client, ns: &str) -> (Vec<Sandbox>, Vec<Pod>) {
    let sbx = Api::<Sandbox>::namespaced(c.clone(), ns).list(&ListParams::default()).await.unwrap_or_else(|e| panic!("listing Sandboxes in {ns}: {e}"));
    let pods = Api::<Pod>::namespaced(c.clone(), ns).list(&ListParams::default()).await.unwrap_or_else(|e| panic!("listing pods in {ns}: {e}"));
    (sbx.items, pods.items)
}

/// Polls until [`ownership_problems`] finds nothing in `ns`, or panics after `timeout` with the
/// problems. Returns the Sandboxes and pods seen last.
pub async fn converged(c: &Client, ns: &str, deleted: &[String], quota_ok: bool, timeout: Duration) -> (Vec<Sandbox>, Vec<Pod>) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (sbx, pods) = list(c, ns).await;
        let problems = ownership_problems(&sbx, &pods, deleted, quota_ok);
        if problems.is_empty() {
            return (sbx, pods);
        }
        assert!(tokio::time::Instant::now() < deadline, "{ns}: no convergence within {timeout:?}:\n{}", problems.join("\n"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How many Sandboxes are in each phase (`"Some(Ready)"`, `"None"`...).
/// Names of the namespace's Sandboxes that are not being deleted (what a test left behind).
pub async fn not_deleting(c: &Client, ns: &str) -> Vec<String> {
    Api::<Sandbox>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing sandboxes")
        .items
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .map(|s| s.name_any())
        .collect()
}

pub fn phases(sbx: &[Sandbox]) -> BTreeMap<String, usize> {
    sbx.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(format!("{:?}", s.status.as_ref().and_then(|st| st.phase))).or_default() += 1;
        m
    })
}

/// A ServiceAccount in `ns` allowed everything on sandboxes (and their exec and files
/// subresources) in `ns`, and a token for it minted for the gateway's audience
/// ([`crate::GATEWAY_AUDIENCE`]; for a gateway in `kubernetes` auth mode).
pub async fn token_for(kube: &Client, ns: &str, sa: &str) -> String {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let pp = PostParams::default();
    let sas: Api<ServiceAccount> = Api::namespaced(kube.clone(), ns);
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap();
    sas.create(&pp, &account).await.unwrap_or_else(|e| panic!("creating ServiceAccount {ns}/{sa}: {e}"));
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": sa},
        "rules": [{"apiGroups": ["airlock.dev"], "resources": ["sandboxes", "sandboxes/exec", "sandboxes/files"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(kube.clone(), ns).create(&pp, &role).await.unwrap_or_else(|e| panic!("creating Role {ns}/{sa}: {e}"));
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": sa},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(kube.clone(), ns).create(&pp, &binding).await.unwrap_or_else(|e| panic!("creating RoleBinding {ns}/{sa}: {e}"));
    rbac_in_effect(kube, ns, sa).await;
    token_with_audiences(kube, ns, sa, vec![crate::GATEWAY_AUDIENCE.to_string()]).await
}

/// Waits until the API server's authorizer lets `sa` create sandboxes in `ns` (a new RoleBinding
/// reaches the RBAC authorizer's cache a moment after it is written; the gateway would cache a
/// denial seen in between for its decision TTL).
async fn rbac_in_effect(kube: &Client, ns: &str, sa: &str) {
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let api: Api<SubjectAccessReview> = Api::all(kube.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{sa}")),
            groups: Some(vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.into()),
                group: Some("airlock.dev".into()),
                resource: Some("sandboxes".into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = api.create(&PostParams::default(), &review).await.unwrap_or_else(|e| panic!("SubjectAccessReview for {ns}/{sa}: {e}"));
        if out.status.is_some_and(|s| s.allowed) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "RoleBinding {ns}/{sa} not in effect after 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Another token of an existing ServiceAccount, minted for `audiences` (empty: the API server's
/// own audience, as `kubectl create token SA` without `--audience`).
pub async fn token_with_audiences(kube: &Client, ns: &str, sa: &str, audiences: Vec<String>) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas: Api<ServiceAccount> = Api::namespaced(kube.clone(), ns);
    let tr = TokenRequest { spec: TokenRequestSpec { expiration_seconds: Some(3600), audiences, ..Default::default() }, ..Default::default() };
    let out = sas.create_token_request(sa, &PostParams::default(), &tr).await.unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"));
    out.status.expect("TokenRequest status").token
}

/// How a stream ended: the final Exited event, or a non-OK status; `None` = OK without Exited.
pub async fn drain(mut s: Streaming<pb::ExecEvent>) -> Result<Option<pb::Exited>, Status> {
    let mut exited = None;
    loop {
        match s.message().await {
            Ok(Some(ev)) => {
                if let Some(pb::exec_event::Event::Exited(x)) = ev.event {
                    exited = Some(x);
                }
            }
            Ok(None) => return Ok(exited),
            Err(e) => return Err(e),
        }
    }
}

/// Starts `line` through the gateway and waits for its first stdout.
pub async fn started(c: &AirlockClient, ns: &str, name: &str, line: &str) -> Streaming<pb::ExecEvent> {
    let mut s = c.exec(AirlockClient::shell(ns, name, line)).await.expect("exec");
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), s.message()).await.expect("output within 60 s").expect("stream").expect("an event");
        if matches!(ev.event, Some(pb::exec_event::Event::Stdout(_))) {
            return s;
        }
    }
}

/// How many processes in the sandbox have exactly this command line (python scan of /proc).
pub async fn count(ac: &AirlockClient, ns: &str, name: &str, argv: &[&str]) -> usize {
    let pattern: String = argv.iter().map(|a| format!("{a}\\x00")).collect();
    let code = format!(
        "import os\nn=0\nfor p in os.listdir('/proc'):\n  if p.isdigit():\n    try:\n      n += open('/proc/'+p+'/cmdline','rb').read() == b'{pattern}'\n    except OSError: pass\nprint(n)"
    );
    let o = ac.exec_collect(AirlockClient::argv(ns, name, ["python3", "-c", &code])).await.expect("scan /proc");
    String::from_utf8_lossy(&o.stdout).trim().parse().expect("count")
}

/// The exec gateway served in this process on a loopback port, configured as the chart
/// configures it on the local cluster (`kubernetes` auth against `kube`, tokens minted for
/// [`crate::GATEWAY_AUDIENCE`], gvisor allowed, `ns` as the default namespace, agents reached as
/// [`crate::release::agent_transport`] says), then changed by
/// `tweak`. Returns the port and a sender whose drop (or send) stops the gateway.
pub async fn in_process_gateway(
    kube: &Client,
    ns: &str,
    tweak: impl FnOnce(&mut airlock_exec_gateway::Config),
) -> (u16, tokio::sync::oneshot::Sender<()>) {
    use airlock_exec_gateway::runtime_classes::AllowedRuntimeClasses;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let port = listener.local_addr().expect("local address").port();
    let mut config = airlock_exec_gateway::Config::new(airlock_exec_gateway::auth::AuthMode::Kubernetes)
        .with_client(kube.clone())
        .with_default_namespace(ns);
    config.shutdown_grace = Duration::from_secs(2);
    config.review.audiences = vec![crate::GATEWAY_AUDIENCE.to_string()];
    config.allowed_runtime_classes = AllowedRuntimeClasses::only([crate::GVISOR]);
    // The direct path with the release's key, as the installed gateway (see
    // `release::agent_transport`); the tests run on the node, which the NetworkPolicies admit.
    config.agent_transport = crate::release::agent_transport();
    config.agent_key = crate::release::agent_key(kube).await.map(std::sync::Arc::new);
    tweak(&mut config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Err(e) = airlock_exec_gateway::serve(config, listener, async move {
            let _ = stopped.await;
        })
        .await
        {
            panic!("gateway: {e}");
        }
    });
    (port, stop)
}
