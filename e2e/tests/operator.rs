//! The operator against the local cluster: Sandbox -> Ready hardened pod + NetworkPolicy, status
//! and events, garbage collection, TTL / idle / Retain lifetimes, quota refusal, and the API
//! server's admission of malformed Sandboxes (CRD schema and CEL rules).
//!
//! Assumes the CRD is installed and the operator runs against the cluster (the Makefile starts it)
//! with `--default-runtime-class=gvisor` and its other defaults (max TTL 86400 s).
//!
//! Every sandbox asks for little (100m CPU, 128Mi memory) so the tests fit in parallel on the
//! one-node, two-CPU cluster.

use std::time::Duration;

use airlock_crds::{Phase, Sandbox, condition};
use airlock_e2e::{GVISOR, SANDBOX_AGENT_IMAGE, SANDBOX_IMAGE, TestNamespace, client, exec, wait_for};
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A Sandbox manifest with small resources; `spec` is merged over the defaults.
fn manifest(name: &str, spec: Value) -> Value {
    let mut m = json!({
        "apiVersion": "airlock.dev/v1alpha1",
        "kind": "Sandbox",
        "metadata": {"name": name},
        "spec": {
            "image": SANDBOX_IMAGE,
            "resources": {"cpu": "100m", "memory": "128Mi", "ephemeralStorage": "256Mi"},
        }
    });
    merge(&mut m["spec"], spec);
    m
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(&k);
                } else {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (a, b) => *a = b,
    }
}

/// Raw access to Sandboxes, so a test can send what the typed API would not let it write.
fn raw(c: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(c.clone(), ns, &ApiResource::erase::<Sandbox>(&()))
}

async fn create(c: &Client, ns: &str, manifest: Value) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(manifest).expect("manifest is an object");
    raw(c, ns).create(&PostParams::default(), &obj).await
}

async fn create_ok(c: &Client, ns: &str, manifest: Value) -> String {
    let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
    create(c, ns, manifest).await.unwrap_or_else(|e| panic!("creating Sandbox {ns}/{name}: {e}"));
    name
}

fn ready(s: Option<&Sandbox>) -> bool {
    s.is_some_and(Sandbox::is_ready)
}

fn cond<'a>(s: &'a Sandbox, type_: &str) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.condition(type_)
}

async fn wait_ready(api: &Api<Sandbox>, name: &str) -> Sandbox {
    wait_for(api, name, READY_TIMEOUT, "condition Ready=True", ready).await.expect("sandbox exists")
}

async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(api, name, timeout, what, |o| o.is_none()).await;
}

#[tokio::test]
async fn sandbox_becomes_ready_with_a_hardened_pod_and_its_network_policy() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-ready").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let name = create_ok(&c, &ns.name, manifest("hardened", json!({"network": {"egress": "None", "dns": true}}))).await;
    let s = wait_ready(&sandboxes, &name).await;

    // Status.
    let st = s.status.as_ref().unwrap();
    assert_eq!(st.phase, Some(Phase::Ready));
    assert_eq!(st.pod_name.as_deref(), Some("hardened"));
    assert!(st.pod_ip.is_some() && st.node_name.is_some(), "{st:?}");
    assert_eq!(st.runtime_class_name.as_deref(), Some(GVISOR), "the operator's default runtime class");
    assert!(st.start_time.is_some() && st.ready_time.is_some(), "{st:?}");
    assert_eq!(st.observed_generation, s.metadata.generation);
    let created = s.metadata.creation_timestamp.as_ref().unwrap().0;
    assert_eq!(
        st.expires_at.as_ref().unwrap().0,
        created.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(3600)).unwrap(),
        "default TTL"
    );
    let r = cond(&s, condition::READY).unwrap();
    assert_eq!((r.reason.as_str(), r.observed_generation), ("PodReady", s.metadata.generation));
    assert_eq!(cond(&s, condition::EXPIRED).unwrap().status, "False");

    // The pod.
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let pod = pods.get("hardened").await.expect("pod named after the sandbox");
    let owner = &pod.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("Sandbox", "hardened", Some(true)));
    assert_eq!(owner.uid, s.uid().unwrap());
    assert_eq!(pod.labels()["airlock.dev/sandbox"], "hardened");
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.enable_service_links, Some(false));
    assert_eq!(spec.runtime_class_name.as_deref(), Some(GVISOR));
    assert_eq!(spec.priority_class_name.as_deref(), Some("airlock-sandbox"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.hostname.as_deref(), Some("hardened"));
    assert!(!spec.host_network.unwrap_or(false) && !spec.host_pid.unwrap_or(false) && !spec.host_ipc.unwrap_or(false));
    for ctr in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
        let sc = ctr.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", ctr.name);
        assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_string()]), "{}", ctr.name);
        assert_eq!(sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("RuntimeDefault"), "{}", ctr.name);
        let res = ctr.resources.as_ref().unwrap();
        assert_eq!(res.requests, res.limits, "{}: requests == limits", ctr.name);
    }
    assert!(spec.volumes.iter().flatten().all(|v| v.projected.is_none() && v.secret.is_none()), "no token volume");
    let qos = pod.status.as_ref().and_then(|s| s.qos_class.as_deref());
    assert_eq!(qos, Some("Guaranteed"));

    // Inside: no service account token, no capabilities, agent installed.
    let token = exec(&c, &ns.name, "hardened", &["ls", "/var/run/secrets/kubernetes.io/serviceaccount"]).await;
    assert_ne!(token.exit_code, 0, "no service account token in the sandbox: {token:?}");
    let caps = exec(&c, &ns.name, "hardened", &["grep", "CapEff", "/proc/self/status"]).await;
    assert_eq!(caps.stdout.split_whitespace().nth(1), Some("0000000000000000"), "{caps:?}");
    let agent = exec(&c, &ns.name, "hardened", &["test", "-x", "/.airlock/airlock-agent"]).await;
    assert_eq!(agent.exit_code, 0, "agent installed: {agent:?}");

    // The NetworkPolicy.
    let nps: Api<NetworkPolicy> = Api::namespaced(c.clone(), &ns.name);
    let np = nps.get("hardened").await.expect("NetworkPolicy named after the sandbox");
    assert_eq!(np.owner_references()[0].uid, s.uid().unwrap());
    let nspec = np.spec.as_ref().unwrap();
    assert_eq!(nspec.pod_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["airlock.dev/sandbox"], "hardened");
    assert_eq!(nspec.policy_types.as_deref(), Some(&["Ingress".to_string(), "Egress".to_string()][..]));
    // One ingress rule: the agent port, from the release's agent clients only (direct path).
    let ingress = nspec.ingress.as_deref().unwrap_or_default();
    assert_eq!(ingress.len(), 1, "only the agent port: {ingress:?}");
    let from = ingress[0].from.as_deref().unwrap_or_default();
    assert_eq!(from.len(), 1, "{ingress:?}");
    assert_eq!(from[0].pod_selector.as_ref().and_then(|p| p.match_labels.as_ref()).map(|l| l["airlock.dev/agent-client"].as_str()), Some("true"));
    assert_eq!(from[0].namespace_selector.as_ref().and_then(|p| p.match_labels.as_ref()).map(|l| l["kubernetes.io/metadata.name"].as_str()), Some("airlock-system"));
    assert_eq!(ingress[0].ports.as_deref().unwrap_or_default().iter().map(|p| p.port.clone()).collect::<Vec<_>>(), vec![Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(7070))]);
    let egress = nspec.egress.as_deref().unwrap_or_default();
    assert_eq!(egress.len(), 1, "only the DNS rule: {egress:?}");
    let ports: Vec<_> = egress[0].ports.iter().flatten().map(|p| p.protocol.clone().unwrap_or_default()).collect();
    assert_eq!(ports, ["UDP", "TCP"]);

    // The quota of the namespace.
    let quota = Api::<ResourceQuota>::namespaced(c.clone(), &ns.name).get("airlock-sandboxes").await.expect("quota");
    let scope = &quota.spec.as_ref().unwrap().scope_selector.as_ref().unwrap().match_expressions.as_ref().unwrap()[0];
    assert_eq!((scope.scope_name.as_str(), scope.values.as_deref()), ("PriorityClass", Some(&["airlock-sandbox".to_string()][..])));

    // Events.
    let events = Api::<Event>::namespaced(c.clone(), &ns.name).list(&Default::default()).await.expect("events");
    let reasons: Vec<&str> = events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Sandbox"))
        .filter_map(|e| e.reason.as_deref())
        .collect();
    assert!(reasons.contains(&"Created") && reasons.contains(&"Ready"), "events: {reasons:?}");
    ns.cleanup().await;
}

/// The NetworkPolicy objects of `Internet` and `AllowList`; what they let through on the cluster
/// is in network.rs (`Internet`, `dns`) and isolation.rs (`None`, `AllowList`).
#[tokio::test]
async fn internet_and_allow_list_policies() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-egress").await;
    create_ok(&c, &ns.name, manifest("inet", json!({"network": {"egress": "Internet"}}))).await;
    create_ok(
        &c,
        &ns.name,
        manifest(
            "allow",
            json!({"network": {"egress": "AllowList", "allow": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}]}}),
        ),
    )
    .await;
    let nps: Api<NetworkPolicy> = Api::namespaced(c.clone(), &ns.name);
    let inet = wait_for(&nps, "inet", Duration::from_secs(60), "NetworkPolicy", |n| n.is_some()).await.unwrap();
    let rule = &inet.spec.unwrap().egress.unwrap()[0];
    let blocks: Vec<_> = rule.to.iter().flatten().filter_map(|p| p.ip_block.clone()).collect();
    assert_eq!(blocks[0].cidr, "0.0.0.0/0");
    for internal in ["10.0.0.0/8", "169.254.0.0/16", "10.96.0.0/12", "10.244.0.0/16"] {
        assert!(blocks[0].except.iter().flatten().any(|e| e == internal), "{internal} excluded: {blocks:?}");
    }
    assert_eq!(blocks[1].cidr, "::/0");
    let allow = wait_for(&nps, "allow", Duration::from_secs(60), "NetworkPolicy", |n| n.is_some()).await.unwrap();
    let rules = allow.spec.unwrap().egress.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].to.as_ref().unwrap()[0].ip_block.as_ref().unwrap().cidr, "203.0.113.0/24");
    assert_eq!(rules[0].ports.as_ref().unwrap()[0].protocol.as_deref(), Some("TCP"));
    ns.cleanup().await;
}

#[tokio::test]
async fn deleting_a_sandbox_removes_its_pod_and_network_policy() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-delete").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let name = create_ok(&c, &ns.name, manifest("doomed", json!({}))).await;
    wait_ready(&sandboxes, &name).await;
    let s = sandboxes.get(&name).await.unwrap();
    assert!(s.finalizers().is_empty(), "no finalizer: deletion never waits for the operator");
    sandboxes.delete(&name, &DeleteParams::default()).await.expect("delete sandbox");
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let nps: Api<NetworkPolicy> = Api::namespaced(c.clone(), &ns.name);
    wait_gone(&sandboxes, &name, Duration::from_secs(30), "Sandbox gone").await;
    wait_gone(&pods, &name, Duration::from_secs(60), "pod garbage-collected").await;
    wait_gone(&nps, &name, Duration::from_secs(60), "NetworkPolicy garbage-collected").await;
    ns.cleanup().await;
}

#[tokio::test]
async fn ttl_deletes_the_sandbox() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-ttl").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let name = create_ok(&c, &ns.name, manifest("short", json!({"lifetime": {"ttlSeconds": 20}}))).await;
    // The deadline is set from creation whether or not the pod is Ready yet (under load it may not
    // be before 20 s): wait for the status to carry it, not for Ready.
    let s = wait_for(&sandboxes, &name, READY_TIMEOUT, "status.expiresAt", |s| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.expires_at.is_some())
    })
    .await
    .expect("the Sandbox exists until its TTL");
    let created = s.metadata.creation_timestamp.as_ref().unwrap().0;
    assert_eq!(
        s.status.as_ref().unwrap().expires_at.as_ref().unwrap().0,
        created.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(20)).unwrap()
    );
    wait_gone(&sandboxes, &name, Duration::from_secs(120), "Sandbox deleted at its TTL").await;
    let gone_at = k8s_openapi::jiff::Timestamp::now();
    assert!(gone_at.duration_since(created).as_secs() >= 20, "not deleted before its TTL");
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    wait_gone(&pods, &name, Duration::from_secs(60), "pod garbage-collected").await;
    ns.cleanup().await;
}

#[tokio::test]
async fn idle_sandbox_is_reaped_and_activity_is_mirrored() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-idle").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let name = create_ok(&c, &ns.name, manifest("idle", json!({"lifetime": {"idleTimeoutSeconds": 15}}))).await;
    wait_ready(&sandboxes, &name).await;
    // Activity as the exec gateway records it: mirrored into the status, pushing the deadline.
    let now = k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second()).unwrap();
    let patch = json!({"metadata": {"annotations": {"airlock.dev/last-activity": now.to_string()}}});
    sandboxes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
    let s = wait_for(&sandboxes, &name, Duration::from_secs(10), "lastActivityTime mirrored", |s| {
        s.and_then(|s| s.status.as_ref()).and_then(|st| st.last_activity_time.as_ref()).is_some_and(|t| t.0 == now)
    })
    .await
    .unwrap();
    let expires = s.status.as_ref().unwrap().expires_at.as_ref().unwrap().0;
    assert_eq!(expires, now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(15)).unwrap());
    wait_gone(&sandboxes, &name, Duration::from_secs(60), "idle Sandbox reaped").await;
    assert!(k8s_openapi::jiff::Timestamp::now() >= expires, "not reaped before its idle deadline");
    ns.cleanup().await;
}

#[tokio::test]
async fn retain_keeps_an_expired_sandbox_without_its_pod() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-retain").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let name = create_ok(&c, &ns.name, manifest("kept", json!({"lifetime": {"ttlSeconds": 20, "onExpiry": "Retain"}}))).await;
    // Not waiting for Ready first: under load the pod may not be Ready within the 20 s TTL.
    let s = wait_for(&sandboxes, &name, Duration::from_secs(120), "phase Expired", |s| {
        s.and_then(|s| s.status.as_ref()).and_then(|st| st.phase) == Some(Phase::Expired)
    })
    .await
    .expect("the Sandbox is kept");
    let expired = cond(&s, condition::EXPIRED).unwrap();
    assert_eq!((expired.status.as_str(), expired.reason.as_str()), ("True", "TTLExpired"));
    assert_eq!(cond(&s, condition::READY).unwrap().status, "False");
    assert_eq!(s.status.as_ref().unwrap().pod_name, None);
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    wait_gone(&pods, &name, Duration::from_secs(60), "pod deleted").await;
    // And it stays that way.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(pods.get_opt(&name).await.unwrap().is_none(), "pod not recreated");
    assert_eq!(sandboxes.get(&name).await.unwrap().status.unwrap().phase, Some(Phase::Expired));
    ns.cleanup().await;
}

#[tokio::test]
async fn ttl_over_the_operator_maximum_is_invalid() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-invalid").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    // Allowed by the CRD (up to 7 days), above the operator's default --max-ttl (1 day).
    let name = create_ok(&c, &ns.name, manifest("toolong", json!({"lifetime": {"ttlSeconds": 604800}}))).await;
    let s = wait_for(&sandboxes, &name, Duration::from_secs(60), "Ready=False reason Invalid", |s| {
        s.and_then(|s| s.condition(condition::READY)).is_some_and(|c| c.reason == "Invalid")
    })
    .await
    .unwrap();
    assert_eq!(s.status.as_ref().unwrap().phase, Some(Phase::Failed));
    let msg = &cond(&s, condition::READY).unwrap().message;
    assert!(msg.contains("spec.lifetime.ttlSeconds"), "{msg}");
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    assert!(pods.get_opt(&name).await.unwrap().is_none(), "no pod for an invalid sandbox");
    ns.cleanup().await;
}

/// Quota exhaustion, made robust: before any sandbox exists, the test takes over the quota's
/// `hard.pods` with its own field manager (server-side apply, force) and sets it to 1. The
/// operator applies the quota without force, so it leaves a field someone else manages alone
/// (the documented way for an administrator to override the quota of one namespace).
#[tokio::test]
async fn quota_exhaustion_is_reported_and_retried() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-quota").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), &ns.name);
    let quota = json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "airlock-sandboxes"},
        "spec": {
            "hard": {"pods": "1"},
            "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["airlock-sandbox"]}]}
        }
    });
    quotas
        .patch("airlock-sandboxes", &PatchParams::apply("airlock-e2e").force(), &Patch::Apply(&quota))
        .await
        .expect("apply the test's quota");
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let first = create_ok(&c, &ns.name, manifest("first", json!({}))).await;
    wait_ready(&sandboxes, &first).await;
    let second = create_ok(&c, &ns.name, manifest("second", json!({}))).await;
    let s = wait_for(&sandboxes, &second, Duration::from_secs(60), "Ready=False reason QuotaExceeded", |s| {
        s.and_then(|s| s.condition(condition::READY)).is_some_and(|c| c.reason == "QuotaExceeded")
    })
    .await
    .unwrap();
    let r = cond(&s, condition::READY).unwrap();
    assert_eq!(r.status, "False");
    assert!(r.message.contains("exceeded quota"), "{}", r.message);
    assert_eq!(s.status.as_ref().unwrap().phase, Some(Phase::Pending));
    let q = quotas.get("airlock-sandboxes").await.unwrap();
    assert_eq!(q.spec.unwrap().hard.unwrap()["pods"].0, "1", "the operator left the overridden field alone");

    // Room again: the retry (every 15 s) creates the pod.
    sandboxes.delete(&first, &DeleteParams::default()).await.expect("delete first");
    wait_for(&sandboxes, &second, Duration::from_secs(120), "second Ready after the first is gone", ready).await;
    ns.cleanup().await;
}

/// Each manifest must be refused at admission, with a message naming the field.
#[tokio::test]
async fn malformed_sandboxes_are_rejected_by_the_api_server() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-reject").await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("empty image", json!({"image": ""}), "spec.image"),
        ("ttl 0", json!({"lifetime": {"ttlSeconds": 0}}), "spec.lifetime.ttlSeconds"),
        ("ttl over 7 days", json!({"lifetime": {"ttlSeconds": 604801}}), "spec.lifetime.ttlSeconds"),
        ("idle timeout 0", json!({"lifetime": {"idleTimeoutSeconds": 0}}), "spec.lifetime.idleTimeoutSeconds"),
        ("cpu abc", json!({"resources": {"cpu": "abc"}}), "spec.resources.cpu"),
        ("memory 1Ki", json!({"resources": {"memory": "1Ki"}}), "spec.resources.memory"),
        ("negative storage", json!({"resources": {"ephemeralStorage": "-1Gi"}}), "spec.resources.ephemeralStorage"),
        (
            "bad CIDR",
            json!({"network": {"egress": "AllowList", "allow": [{"cidr": "10.0.0.300/8"}]}}),
            "spec.network.allow[0].cidr",
        ),
        (
            "port 70000",
            json!({"network": {"egress": "AllowList", "allow": [{"cidr": "10.0.0.0/8", "ports": [{"port": 70000}]}]}}),
            "spec.network.allow[0].ports[0].port",
        ),
        (
            "unknown protocol",
            json!({"network": {"egress": "AllowList", "allow": [{"cidr": "10.0.0.0/8", "ports": [{"port": 1, "protocol": "ICMP"}]}]}}),
            "spec.network.allow[0].ports[0].protocol",
        ),
        (
            "allow without AllowList",
            json!({"network": {"egress": "Internet", "allow": [{"cidr": "10.0.0.0/8"}]}}),
            "spec.network.allow may only be set when spec.network.egress is AllowList",
        ),
        (
            "AllowList without allow",
            json!({"network": {"egress": "AllowList"}}),
            "spec.network.allow must list at least one destination",
        ),
        ("unknown egress mode", json!({"network": {"egress": "Everything"}}), "spec.network.egress"),
        ("bad env name", json!({"env": [{"name": "1X", "value": "v"}]}), "spec.env[0].name"),
        ("relative workingDir", json!({"workingDir": "work"}), "spec.workingDir must be an absolute path"),
        ("unknown pull policy", json!({"imagePullPolicy": "Sometimes"}), "spec.imagePullPolicy"),
        ("bad runtime class", json!({"runtimeClassName": "Not_A_Name"}), "spec.runtimeClassName"),
        ("unknown expiry policy", json!({"lifetime": {"onExpiry": "Archive"}}), "spec.lifetime.onExpiry"),
        ("root user", json!({"securityContext": {"runAsUser": 0}}), "spec.securityContext.runAsUser must be a non-root uid"),
        ("negative group", json!({"securityContext": {"runAsUser": 1000, "runAsGroup": -1}}), "spec.securityContext.runAsGroup"),
        ("group without user", json!({"securityContext": {"runAsGroup": 1000}}), "spec.securityContext.runAsUser"),
    ];
    let mut failures = Vec::new();
    for (i, (what, spec, field)) in cases.iter().enumerate() {
        let m = manifest(&format!("bad-{i}"), spec.clone());
        match create(&c, &ns.name, m).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(s)) => {
                if s.code != 422 || !s.message.contains(field) {
                    failures.push(format!("{what}: got {} {:?}, want 422 naming {field:?}", s.code, s.message));
                }
            }
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    // Immutable fields, after create.
    // (Immutability rules compare with the old value, so each field is set at creation.)
    let immutable = json!({"command": ["sleep", "3600"], "lifetime": {"ttlSeconds": 600}});
    let name = create_ok(&c, &ns.name, manifest("immutable", immutable)).await;
    let api = raw(&c, &ns.name);
    for (what, patch, field) in [
        ("changing spec.image", json!({"spec": {"image": "other:1"}}), "spec.image is immutable"),
        ("changing spec.resources", json!({"spec": {"resources": {"cpu": "200m"}}}), "spec.resources is immutable"),
        ("changing spec.command", json!({"spec": {"command": ["sh"]}}), "spec.command is immutable"),
        ("adding spec.workingDir", json!({"spec": {"workingDir": "/tmp"}}), "spec.workingDir is immutable"),
        ("adding spec.runtimeClassName", json!({"spec": {"runtimeClassName": "runc"}}), "spec.runtimeClassName is immutable"),
        ("removing spec.command", json!({"spec": {"command": null}}), "spec.command is immutable"),
        ("adding spec.securityContext", json!({"spec": {"securityContext": {"runAsUser": 1000}}}), "spec.securityContext is immutable"),
    ] {
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains(field) => {}
            Err(e) => failures.push(format!("{what}: {e}, want 422 naming {field:?}")),
        }
    }
    // Raising the TTL (extending the deadline) is allowed.
    let extend = json!({"spec": {"lifetime": {"ttlSeconds": 1200}}});
    if let Err(e) = api.patch(&name, &PatchParams::default(), &Patch::Merge(&extend)).await {
        failures.push(format!("raising ttlSeconds refused: {e}"));
    }
    assert!(failures.is_empty(), "{} of {} checks failed:\n{}", failures.len(), cases.len() + 4, failures.join("\n"));
    ns.cleanup().await;
}

/// The process of PID 1 in the sandbox, as its argv.
async fn pid1(c: &Client, ns: &str, pod: &str) -> Vec<String> {
    let o = exec(c, ns, pod, &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(o.exit_code, 0, "{o:?}");
    o.stdout.split('\0').filter(|s| !s.is_empty()).map(String::from).collect()
}

#[tokio::test]
async fn the_agent_arrives_through_the_namespace_config_map_without_init_container() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-bundle").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    for name in ["b1", "b2"] {
        create_ok(&c, &ns.name, manifest(name, json!({}))).await;
    }
    for name in ["b1", "b2"] {
        wait_ready(&sandboxes, name).await;
    }
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let bundles = cms
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=agent-bundle"))
        .await
        .unwrap()
        .items;
    assert_eq!(bundles.len(), 1, "one agent ConfigMap per namespace, shared");
    let cm = &bundles[0];
    assert_eq!(cm.immutable, Some(true));
    assert!(cm.owner_references().is_empty(), "shared by the namespace's sandboxes, owned by none");
    let bin = cm.binary_data.as_ref().unwrap();
    let size: usize = bin.values().map(|b| b.0.len()).sum();
    eprintln!("agent ConfigMap {}: {size} bytes ({} boot, {} agent.z)", cm.name_any(), bin["boot"].0.len(), bin["agent.z"].0.len());
    assert!(size <= 1 << 20);

    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let pod = pods.get("b1").await.unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.init_containers, None, "no init container");
    assert!(spec.volumes.iter().flatten().any(|v| v.config_map.as_ref().is_some_and(|x| x.name == cm.name_any())));
    assert_eq!(pod.labels().get("airlock.dev/agent-bundle"), Some(&cm.name_any()));
    // airlock-boot exec'd the agent: PID 1 is the agent, unpacked into the memory volume.
    assert_eq!(pid1(&c, &ns.name, "b1").await, airlock_e2e::release::agent_argv(&c).await);
    let ls = exec(&c, &ns.name, "b1", &["/.airlock/airlock-agent", "ls", "/.airlock"]).await;
    assert_eq!(ls.exit_code, 0, "{ls:?}");
    assert!(ls.stdout.contains("\"name\":\"airlock-agent\""), "{ls:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn an_image_with_the_agent_starts_with_no_volume_and_one_without_fails_clearly() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "op-agentimg").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    create_ok(&c, &ns.name, manifest("own", json!({"image": SANDBOX_AGENT_IMAGE, "imagePullPolicy": "Never", "agent": "Image"}))).await;
    create_ok(&c, &ns.name, manifest("missing", json!({"agent": "Image", "imagePullPolicy": "Never"}))).await;

    wait_ready(&sandboxes, "own").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let spec = pods.get("own").await.unwrap().spec.unwrap();
    assert_eq!((spec.volumes, spec.init_containers), (None, None), "nothing mounted, nothing copied");
    assert_eq!(pid1(&c, &ns.name, "own").await, airlock_e2e::release::agent_argv(&c).await);
    let st = exec(&c, &ns.name, "own", &["/.airlock/airlock-agent", "stat", "/usr/bin/python3"]).await;
    assert_eq!(st.exit_code, 0, "the agent's file operations work: {st:?}");
    assert!(st.stdout.contains("\"name\":\"/usr/bin/python3\""), "{st:?}");

    // The plain image has no agent: the Sandbox fails and says why.
    let failed = wait_for(&sandboxes, "missing", READY_TIMEOUT, "phase Failed", |s| {
        s.and_then(|s| s.status.as_ref()).is_some_and(|st| st.phase == Some(Phase::Failed))
    })
    .await
    .unwrap();
    let r = cond(&failed, condition::READY).unwrap();
    eprintln!("agent: Image without an agent: reason={} message={}", r.reason, r.message);
    assert!(r.message.contains("/.airlock/airlock-agent"), "the message names the missing agent: {r:?}");

    // spec.agent is immutable, also against being removed.
    let patch = json!({"spec": {"agent": "Inject"}});
    let e = raw(&c, &ns.name).patch("own", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err();
    assert!(e.to_string().contains("spec.agent is immutable"), "{e}");
    let patch = json!({"spec": {"agent": null}});
    let e = raw(&c, &ns.name).patch("own", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err();
    assert!(e.to_string().contains("spec.agent is immutable"), "{e}");
    ns.cleanup().await;
}
