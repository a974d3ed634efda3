//! Reconcile scenarios against a fake API server: what requests a reconcile makes, with which
//! bodies, and what it asks the controller to do next.
//!
//! Over 600 lines: the fake-API harness and the core scenarios; policy and refusal scenarios are in
//! tests/policy.rs and tests/refusals.rs.

use std::time::Duration;

use airlock_crds::{LAST_ACTIVITY_ANNOTATION, Sandbox};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::reconcile_at;
use crate::build::fixtures::{MINIMAL, sandbox};
use crate::config::Config;
use crate::controller::Context;
use crate::fixtures::{FakeApi, FakeState, QUOTA_MESSAGE};

/// Refusals: the platform's policy, and pods the API server refuses.
/// Policy changes on running sandboxes, GitOps expiry, kstatus conditions.
mod policy;
mod refusals;

const CREATED: &str = "2025-01-01T00:00:00Z";
const SBX_BASE: &str = "/apis/airlock.dev/v1alpha1/namespaces/team-a/sandboxes/sbx-1";
const POD: &str = "/api/v1/namespaces/team-a/pods/sbx-1";
/// Pods are created (POST), never applied over a pod that may be someone else's.
const PODS: &str = "/api/v1/namespaces/team-a/pods";
const FENCE: &str = "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/airlock.sandbox-pods";
const NETPOL: &str = "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/sbx-1";
const QUOTA: &str = "/api/v1/namespaces/team-a/resourcequotas/airlock-sandboxes";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The minimal sandbox, created at [`CREATED`], with extra spec lines.
fn sbx(spec_tail: &str) -> Sandbox {
    let mut s = sandbox(&format!("{MINIMAL}{spec_tail}"));
    s.metadata.creation_timestamp = Some(Time(ts(CREATED)));
    s
}

/// [`sbx`] reconciled once before: its pod was created and the status says so (phase Pending).
fn reconciled(spec_tail: &str) -> Sandbox {
    let mut s = sbx(spec_tail);
    s.status = Some(airlock_crds::SandboxStatus {
        phase: Some(airlock_crds::Phase::Pending),
        pod_name: Some("sbx-1".into()),
        ..Default::default()
    });
    s
}

/// Runs one reconcile of `sandbox` at `now` against a fake cluster in `state`.
async fn run(sandbox: &Sandbox, state: FakeState, now: &str) -> (Action, FakeApi) {
    run_with(Config::defaults(), sandbox, state, now).await
}

/// [`run`] with a given configuration.
async fn run_with(
    config: Config,
    sandbox: &Sandbox,
    mut state: FakeState,
    now: &str,
) -> (Action, FakeApi) {
    let (ctx, handle) = Context::test(config);
    state.sandbox.get_or_insert_with(|| sandbox.clone());
    let api = FakeApi::start(handle, state);
    let guard = DeserializeGuard(Ok(sandbox.clone()));
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile_at(&guard, &ctx, ts(now)))
        .await
        .expect("reconcile finished")
        .expect("reconcile succeeded");
    (action, api)
}

fn owned_pod(phase: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "sbx-1", "namespace": "team-a", "uid": "pod-uid-1",
            "ownerReferences": [{
                "apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox", "name": "sbx-1",
                "uid": "0b7c1d2e-0000-4000-8000-000000000001", "controller": true
            }]
        },
        "spec": {"containers": [{"name": "sandbox"}], "nodeName": "node-1", "runtimeClassName": "kata"},
        "status": {
            "phase": phase, "podIP": "10.244.0.9", "startTime": "2025-01-01T00:00:03Z",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    })
}

fn status_patch(api: &FakeApi) -> Value {
    api.find("PATCH", "/sandboxes/sbx-1/status")
        .expect("status was written")
        .body["status"]
        .clone()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

fn event_reasons(api: &FakeApi) -> Vec<String> {
    api.events()
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn new_sandbox_gets_quota_netpol_pod_and_status() {
    let s = sbx("");
    let (action, api) = run(&s, FakeState::default(), "2025-01-01T00:00:10Z").await;

    // No read first (a new Sandbox has no pod yet); the namespace's quota and default-deny policy
    // before the pod; the pod and its own policy at the same time (in either order).
    let mut lines = api.lines();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    lines[2..4].sort();
    assert_eq!(
        lines,
        [
            format!("PATCH {QUOTA}"),
            format!("PATCH {FENCE}"),
            format!("PATCH {NETPOL}"),
            format!("POST {PODS}"),
            format!("PATCH {SBX_BASE}/status"),
            format!("POST {EVENTS}"),
        ]
    );
    // Server-side apply, one field manager; children forced, the quota not; the pod created with
    // the same field manager.
    for path in [NETPOL, FENCE, &format!("{SBX_BASE}/status")] {
        let r = api.find("PATCH", path).unwrap();
        assert!(
            r.query_has("fieldManager=airlock-operator"),
            "{path}: {}",
            r.query
        );
        assert!(r.query_has("force=true"), "{path}: {}", r.query);
    }
    let created = api.find("POST", PODS).unwrap();
    assert!(created.query_has("fieldManager=airlock-operator"), "{}", created.query);
    let fence = api.find("PATCH", FENCE).unwrap().body;
    assert_eq!(fence["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], "sandbox");
    assert_eq!(fence["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!((fence["spec"].get("ingress"), fence["spec"].get("egress")), (None, None));
    let q = api.find("PATCH", QUOTA).unwrap();
    assert!(
        q.query_has("fieldManager=airlock-operator") && !q.query_has("force=true"),
        "{}",
        q.query
    );
    assert_eq!(q.body["spec"]["hard"]["pods"], "50");

    let pod = api.find("POST", PODS).unwrap().body;
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["uid"],
        "0b7c1d2e-0000-4000-8000-000000000001"
    );
    assert_eq!(pod["spec"]["runtimeClassName"], "kata");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let np = api.find("PATCH", NETPOL).unwrap().body;
    assert_eq!(
        np["spec"]["podSelector"]["matchLabels"]["airlock.dev/sandbox"],
        "sbx-1"
    );
    assert_eq!(np["spec"].get("egress"), None, "no rule: nothing allowed");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));

    let status = status_patch(&api);
    assert_eq!(
        api.find("PATCH", "/status").unwrap().body["kind"],
        "Sandbox"
    );
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["podName"], "sbx-1");
    assert_eq!(status["runtimeClassName"], "kata");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["expiresAt"], "2025-01-01T01:00:00Z");
    let ready = condition(&status, "Ready");
    assert_eq!(
        (
            ready["status"].as_str(),
            ready["observedGeneration"].as_i64()
        ),
        (Some("False"), Some(1))
    );
    assert_eq!(ready["lastTransitionTime"], "2025-01-01T00:00:10Z");
    assert_eq!(condition(&status, "Expired")["status"], "False");

    assert_eq!(event_reasons(&api), ["Created"]);
    assert_eq!(api.events()[0]["type"], "Normal");
    assert_eq!(api.events()[0]["regarding"]["kind"], "Sandbox");
    // Requeued for the exact time left.
    assert_eq!(action, Action::requeue(Duration::from_secs(3590)));
}

#[tokio::test]
async fn ready_pod_makes_the_sandbox_ready_once() {
    let s = reconciled("");
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    let (_, api) = run(&s, state, "2025-01-01T00:00:10Z").await;
    assert!(
        api.find("POST", PODS).is_none(),
        "an existing pod is not re-applied"
    );
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Ready");
    assert_eq!(status["podIp"], "10.244.0.9");
    assert_eq!(status["nodeName"], "node-1");
    assert_eq!(status["readyTime"], "2025-01-01T00:00:10Z");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(event_reasons(&api), ["Ready"]);

    // Next reconcile, with that status stored: nothing to write, no new event.
    let mut s2 = s.clone();
    s2.status = Some(serde_json::from_value(status).unwrap());
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    let (action, api) = run(&s2, state, "2025-01-01T00:05:00Z").await;
    assert_eq!(
        api.lines(),
        [
            format!("GET {POD}"),
            format!("PATCH {QUOTA}"),
            format!("PATCH {NETPOL}")
        ]
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(3300)));
}

#[tokio::test]
async fn quota_exceeded_is_a_condition_and_a_slow_retry() {
    let s = sbx("");
    let state = FakeState {
        quota_exceeded: true,
        ..FakeState::default()
    };
    let (action, api) = run(&s, state, "2025-01-01T00:00:10Z").await;
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status.get("podName"), None);
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "QuotaExceeded");
    assert_eq!(ready["message"], QUOTA_MESSAGE);
    assert_eq!(event_reasons(&api), ["QuotaExceeded"]);
    assert_eq!(api.events()[0]["type"], "Warning");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));

    // Still refused on the retry: same condition, no second event, no status write.
    let mut s2 = s.clone();
    s2.status = Some(serde_json::from_value(status).unwrap());
    let state = FakeState {
        quota_exceeded: true,
        ..FakeState::default()
    };
    let (action, api) = run(&s2, state, "2025-01-01T00:00:25Z").await;
    assert!(api.find("PATCH", "/status").is_none());
    assert!(api.events().is_empty());
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
}

#[tokio::test]
async fn expired_with_delete_deletes_the_sandbox() {
    let s = sbx("  lifetime:\n    ttlSeconds: 20\n");
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    let (action, api) = run(&s, state, "2025-01-01T00:00:20Z").await;
    assert_eq!(
        api.lines(),
        [
            format!("GET {POD}"),
            format!("POST {EVENTS}"),
            format!("DELETE {SBX_BASE}")
        ]
    );
    let delete = api.find("DELETE", SBX_BASE).unwrap();
    assert_eq!(
        delete.body["preconditions"]["uid"],
        "0b7c1d2e-0000-4000-8000-000000000001"
    );
    assert_eq!(delete.body["propagationPolicy"], "Background");
    assert_eq!(event_reasons(&api), ["Expired"]);
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn expired_after_a_restart_is_acted_on_at_once() {
    // The deadline passed long ago (operator down): the first reconcile deletes.
    let s = sbx("  lifetime:\n    ttlSeconds: 60\n");
    let (_, api) = run(&s, FakeState::default(), "2025-01-03T00:00:00Z").await;
    assert!(api.find("DELETE", SBX_BASE).is_some());
}

#[tokio::test]
async fn expired_with_retain_deletes_the_pod_and_keeps_an_expired_sandbox() {
    let s = sbx("  lifetime:\n    ttlSeconds: 20\n    onExpiry: Retain\n");
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    let (action, api) = run(&s, state, "2025-01-01T00:00:21Z").await;
    assert_eq!(
        api.lines(),
        [
            format!("GET {POD}"),
            format!("DELETE {POD}"),
            format!("PATCH {SBX_BASE}/status"),
            format!("POST {EVENTS}")
        ]
    );
    assert_eq!(
        api.find("DELETE", POD).unwrap().body["preconditions"]["uid"],
        "pod-uid-1"
    );
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Expired");
    assert_eq!(status.get("podName"), None);
    assert_eq!(status["expiresAt"], "2025-01-01T00:00:20Z");
    let expired = condition(&status, "Expired");
    assert_eq!(
        (expired["status"].as_str(), expired["reason"].as_str()),
        (Some("True"), Some("TTLExpired"))
    );
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(event_reasons(&api), ["Expired"]);
    assert_eq!(action, Action::await_change());

    // Expiry is final: a later TTL raise does not bring the pod back.
    let mut s2 = sbx("  lifetime:\n    ttlSeconds: 7200\n    onExpiry: Retain\n");
    s2.status = Some(serde_json::from_value(status).unwrap());
    let (action, api) = run(&s2, FakeState::default(), "2025-01-01T00:01:00Z").await;
    assert_eq!(api.lines(), [format!("GET {POD}")]);
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn idle_timeout_counts_from_the_last_activity() {
    let mut s = sbx("  lifetime:\n    idleTimeoutSeconds: 60\n    onExpiry: Retain\n");
    s.metadata.annotations = Some(
        [(
            LAST_ACTIVITY_ANNOTATION.to_string(),
            "2025-01-01T00:10:00Z".to_string(),
        )]
        .into(),
    );
    s.status = Some(airlock_crds::SandboxStatus {
        ready_time: Some(Time(ts("2025-01-01T00:00:10Z"))),
        ..Default::default()
    });
    // Before the idle deadline: requeued for exactly the time left, activity mirrored.
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    let (action, api) = run(&s, state, "2025-01-01T00:10:30Z").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let status = status_patch(&api);
    assert_eq!(status["lastActivityTime"], "2025-01-01T00:10:00Z");
    assert_eq!(status["expiresAt"], "2025-01-01T00:11:00Z");
    // At the idle deadline.
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    let (_, api) = run(&s, state, "2025-01-01T00:11:00Z").await;
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Expired");
    assert_eq!(condition(&status, "Expired")["reason"], "IdleTimeout");
}

#[tokio::test]
async fn ttl_over_the_maximum_is_invalid_and_gets_no_pod() {
    let s = sbx("  lifetime:\n    ttlSeconds: 90000\n");
    let (action, api) = run(&s, FakeState::default(), "2025-01-01T00:00:10Z").await;
    assert_eq!(
        api.lines(),
        [
            format!("GET {POD}"),
            format!("PATCH {SBX_BASE}/status"),
            format!("POST {EVENTS}")
        ]
    );
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Failed");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "Invalid");
    assert_eq!(
        ready["message"],
        "spec.lifetime.ttlSeconds (90000) exceeds the operator's maximum of 86400 seconds"
    );
    assert_eq!(event_reasons(&api), ["Invalid"]);
    assert_eq!(api.events()[0]["type"], "Warning");
    // It still ends, at the operator's maximum (what its deadline is clamped to).
    assert_eq!(action, Action::requeue(Duration::from_secs(86400 - 10)));
}

#[tokio::test]
async fn resources_over_the_maximum_are_invalid() {
    let s = sbx("  resources:\n    memory: 16Gi\n");
    let (_, api) = run(&s, FakeState::default(), "2025-01-01T00:00:10Z").await;
    let status = status_patch(&api);
    assert_eq!(condition(&status, "Ready")["reason"], "Invalid");
    assert!(
        condition(&status, "Ready")["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.resources.memory")
    );
    assert!(api.find("POST", PODS).is_none());
}

#[tokio::test]
async fn oom_killed_pod_fails_the_sandbox() {
    let s = reconciled("");
    let mut pod = owned_pod("Failed", false);
    pod["status"]["containerStatuses"] = json!([{
        "name": "sandbox", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    }]);
    let state = FakeState {
        pod: Some(pod),
        ..FakeState::default()
    };
    let (_, api) = run(&s, state, "2025-01-01T00:00:10Z").await;
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Failed");
    assert_eq!(condition(&status, "Ready")["reason"], "OOMKilled");
    assert_eq!(event_reasons(&api), ["Failed"]);
    assert!(
        api.find("POST", PODS).is_none(),
        "a failed sandbox is not restarted"
    );
}

#[tokio::test]
async fn a_pod_of_someone_else_is_left_alone() {
    let s = reconciled("");
    let mut pod = owned_pod("Running", true);
    pod["metadata"]["ownerReferences"][0]["uid"] = json!("previous-sandbox-uid");
    let state = FakeState {
        pod: Some(pod),
        ..FakeState::default()
    };
    let (action, api) = run(&s, state, "2025-01-01T00:00:10Z").await;
    assert!(api.find("POST", PODS).is_none());
    assert_eq!(
        condition(&status_patch(&api), "Ready")["reason"],
        "PodNameTaken"
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn a_sandbox_being_deleted_is_left_to_garbage_collection() {
    let mut s = sbx("");
    s.metadata.deletion_timestamp = Some(Time(ts("2025-01-01T00:00:05Z")));
    let (action, api) = run(&s, FakeState::default(), "2025-01-01T00:00:10Z").await;
    assert!(api.lines().is_empty());
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn a_malformed_sandbox_is_reported_and_skipped() {
    let guard: DeserializeGuard<Sandbox> = serde_json::from_value(json!({
        "apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "sbx-1", "namespace": "team-a", "uid": "u"},
        "spec": {"image": 42}
    }))
    .unwrap();
    assert!(guard.0.is_err());
    let (ctx, handle) = Context::test(Config::defaults());
    let api = FakeApi::start(handle, FakeState::default());
    let action = reconcile_at(&guard, &ctx, ts(CREATED)).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(api.lines(), [format!("POST {EVENTS}")]);
    let event = &api.events()[0];
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("Invalid"))
    );
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("cannot read this Sandbox"),
        "{event}"
    );
}

#[tokio::test]
async fn quota_is_applied_once_per_namespace() {
    let s = sbx("");
    let (ctx, handle) = Context::test(Config::defaults());
    let api = FakeApi::start(
        handle,
        FakeState {
            sandbox: Some(s.clone()),
            ..FakeState::default()
        },
    );
    let guard = DeserializeGuard(Ok(s.clone()));
    reconcile_at(&guard, &ctx, ts("2025-01-01T00:00:10Z"))
        .await
        .unwrap();
    reconcile_at(&guard, &ctx, ts("2025-01-01T00:00:11Z"))
        .await
        .unwrap();
    let quota_patches = api
        .lines()
        .iter()
        .filter(|l| l.ends_with("/resourcequotas/airlock-sandboxes"))
        .count();
    assert_eq!(quota_patches, 1);
}

#[tokio::test]
async fn without_quota_management_no_quota_is_touched() {
    let s = sbx("");
    let mut config = Config::defaults();
    config.quota = None;
    let (ctx, handle) = Context::test(config);
    let api = FakeApi::start(
        handle,
        FakeState {
            sandbox: Some(s.clone()),
            ..FakeState::default()
        },
    );
    reconcile_at(&DeserializeGuard(Ok(s)), &ctx, ts("2025-01-01T00:00:10Z"))
        .await
        .unwrap();
    assert!(api.find("PATCH", QUOTA).is_none());
}

#[tokio::test]
async fn no_pod_while_the_quota_cannot_be_applied() {
    let s = sbx("");
    let state = FakeState {
        quota_invalid: true,
        ..FakeState::default()
    };
    let (action, api) = run(&s, state, "2025-01-01T00:00:10Z").await;
    assert!(api.find("POST", PODS).is_none(), "fail closed");
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Pending");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["reason"], "QuotaUnavailable");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("unsupported scope"),
        "{ready}"
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    // The next reconcile tries the quota again (a failed apply is not remembered as done).
    let (ctx, handle) = Context::test(Config::defaults());
    let api = FakeApi::start(
        handle,
        FakeState {
            sandbox: Some(s.clone()),
            quota_invalid: true,
            ..FakeState::default()
        },
    );
    let guard = DeserializeGuard(Ok(s.clone()));
    reconcile_at(&guard, &ctx, ts("2025-01-01T00:00:10Z"))
        .await
        .unwrap();
    reconcile_at(&guard, &ctx, ts("2025-01-01T00:00:25Z"))
        .await
        .unwrap();
    assert_eq!(
        api.lines()
            .iter()
            .filter(|l| l.ends_with("/resourcequotas/airlock-sandboxes"))
            .count(),
        2
    );
}

#[tokio::test]
async fn a_terminating_namespace_is_not_retried() {
    let s = sbx("");
    let (ctx, handle) = Context::test(Config::defaults());
    let _api = FakeApi::start(
        handle,
        FakeState {
            sandbox: Some(s.clone()),
            terminating: true,
            ..FakeState::default()
        },
    );
    let guard = std::sync::Arc::new(DeserializeGuard(Ok(s)));
    let action = super::reconcile(guard, ctx.clone())
        .await
        .expect("not an error");
    assert_eq!(action, Action::await_change());
    assert_eq!(ctx.metrics.reconciles.get(), 1);
}

const CONFIG_MAPS: &str = "/api/v1/namespaces/team-a/configmaps";

fn bundle_name(config: &Config) -> String {
    match &config.agent {
        crate::config::Agent::ConfigMap(b) => b.name.clone(),
        other => panic!("not a bundle: {other:?}"),
    }
}

fn old_bundle(name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "team-a", "labels": {
        "app.kubernetes.io/component": "agent-bundle", "app.kubernetes.io/managed-by": "airlock-operator"}}})
}

fn assert_no_config_map_calls(api: &FakeApi) {
    let lines = api.lines();
    assert!(
        lines.iter().all(|l| !l.contains("/configmaps")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn agent_config_map_is_created_before_the_pod_and_old_unused_ones_go() {
    let config = Config::with_bundle();
    let name = bundle_name(&config);
    let mut state = FakeState::default();
    // Two older versions: one still mounted by a pod, one not.
    state.config_maps.insert(
        "airlock-agent-0ld0000001".into(),
        old_bundle("airlock-agent-0ld0000001"),
    );
    state.config_maps.insert(
        "airlock-agent-0ld0000002".into(),
        old_bundle("airlock-agent-0ld0000002"),
    );
    state.bundle_users = vec!["airlock-agent-0ld0000001".into()];
    let (_, api) = run_with(config, &sbx(""), state, "2025-01-01T00:00:10Z").await;

    let lines = api.lines();
    let at = |l: String| {
        lines
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("no {l} in {lines:#?}"))
    };
    let get = at(format!("GET {CONFIG_MAPS}/{name}"));
    let post = at(format!("POST {CONFIG_MAPS}"));
    let deleted = at(format!("DELETE {CONFIG_MAPS}/airlock-agent-0ld0000002"));
    let pod = at(format!("POST {PODS}"));
    assert!(get < post && post < deleted && deleted < pod, "{lines:#?}");
    assert!(
        !lines.contains(&format!("DELETE {CONFIG_MAPS}/airlock-agent-0ld0000001")),
        "a mounted bundle stays"
    );
    let created = api.find("POST", CONFIG_MAPS).unwrap();
    assert!(
        created.query_has("fieldManager=airlock-operator"),
        "{}",
        created.query
    );
    assert_eq!(created.body["immutable"], true);
    assert_eq!(created.body["metadata"]["name"], name.as_str());
    let p = api.find("POST", PODS).unwrap().body;
    assert_eq!(p["spec"]["volumes"][1]["configMap"]["name"], name.as_str());
    assert_eq!(
        p["metadata"]["labels"]["airlock.dev/agent-bundle"],
        name.as_str()
    );
    assert!(p["spec"].get("initContainers").is_none());
}

fn bundle_of(config: &Config) -> std::sync::Arc<crate::bundle::AgentBundle> {
    match &config.agent {
        crate::config::Agent::ConfigMap(b) => b.clone(),
        other => panic!("not a bundle: {other:?}"),
    }
}

/// A ConfigMap of the bundle's name, as stored, with `uid`.
fn stored_config_map(cm: &k8s_openapi::api::core::v1::ConfigMap, uid: &str) -> Value {
    let mut v = serde_json::to_value(cm).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("ConfigMap");
    v["metadata"]["uid"] = json!(uid);
    v
}

/// The ConfigMap requests, with `(metadata)` on metadata-only reads.
fn config_map_calls(api: &FakeApi) -> Vec<String> {
    api.requests()
        .iter()
        .filter(|r| r.path.contains("/configmaps"))
        .map(|r| {
            let meta = if r.accept.contains("PartialObjectMetadata") {
                " (metadata)"
            } else {
                ""
            };
            format!("{}{meta}", r.line())
        })
        .collect()
}

#[tokio::test]
async fn the_operators_agent_config_map_is_read_once_and_then_trusted_by_uid() {
    let config = Config::with_bundle();
    let bundle = bundle_of(&config);
    let name = bundle.name.clone();
    let mut state = FakeState::default();
    let ours = crate::build::agent::config_map(&bundle, "team-a");
    state
        .config_maps
        .insert(name.clone(), stored_config_map(&ours, "cm-own"));
    let s = sbx("");
    state.sandbox = Some(s.clone());
    let (ctx, handle) = Context::test(config);
    let api = FakeApi::start(handle, state);
    reconcile_at(
        &DeserializeGuard(Ok(s.clone())),
        &ctx,
        ts("2025-01-01T00:00:10Z"),
    )
    .await
    .unwrap();
    let cm = format!("{CONFIG_MAPS}/{name}");
    assert_eq!(
        config_map_calls(&api),
        [format!("GET {cm} (metadata)"), format!("GET {cm}")],
        "no writes"
    );
    assert!(api.find("POST", PODS).is_some());
    assert_eq!(event_reasons(&api), ["Created"]);
    assert_eq!(ctx.metrics.agent_bundles_replaced.get(), 0);
    // The same ConfigMap (same uid) is not read again; another one of the same name is.
    super::agent_verify::existing(&ctx, &kube::Resource::object_ref(&s, &()), &bundle, "team-a", Some("cm-own"))
        .await
        .unwrap();
    assert_eq!(config_map_calls(&api).len(), 2);
    super::agent_verify::existing(&ctx, &kube::Resource::object_ref(&s, &()), &bundle, "team-a", Some("cm-new"))
        .await
        .unwrap();
    assert_eq!(config_map_calls(&api)[2], format!("GET {cm}"));
}

/// A ConfigMap of the bundle's name planted by someone else, with their own `boot`.
fn impostor(config: &Config) -> Value {
    let bundle = bundle_of(config);
    let mut cm = crate::build::agent::config_map(&bundle, "team-a");
    cm.binary_data.as_mut().unwrap().insert(
        "boot".into(),
        k8s_openapi::ByteString(b"#!/bin/sh\necho pwned > /tmp/marker\n".to_vec()),
    );
    stored_config_map(&cm, "cm-evil")
}

#[tokio::test]
async fn an_impostor_agent_config_map_is_replaced_before_the_pod_is_created() {
    let config = Config::with_bundle();
    let bundle = bundle_of(&config);
    let name = bundle.name.clone();
    let mut state = FakeState::default();
    state.config_maps.insert(name.clone(), impostor(&config));
    let s = sbx("");
    state.sandbox = Some(s.clone());
    let (ctx, handle) = Context::test(config);
    let api = FakeApi::start(handle, state);
    reconcile_at(&DeserializeGuard(Ok(s)), &ctx, ts("2025-01-01T00:00:10Z"))
        .await
        .unwrap();
    let cm = format!("{CONFIG_MAPS}/{name}");
    assert_eq!(
        config_map_calls(&api),
        [
            format!("GET {cm} (metadata)"),
            format!("GET {cm}"),
            format!("DELETE {cm}"),
            format!("POST {CONFIG_MAPS}"),
        ]
    );
    let lines = api.lines();
    let at = |l: String| lines.iter().position(|x| *x == l).unwrap();
    assert!(
        at(format!("POST {CONFIG_MAPS}")) < at(format!("POST {PODS}")),
        "{lines:#?}"
    );
    // Only the impostor is deleted (uid precondition), and the operator's bundle takes its place.
    assert_eq!(
        api.find("DELETE", &cm).unwrap().body["preconditions"]["uid"],
        "cm-evil"
    );
    let now = api.state.lock().unwrap().config_maps[&name].clone();
    let now: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(now).unwrap();
    assert_eq!(super::agent_verify::compare(&now, &bundle), Ok(()));
    // A Warning event on the Sandbox, and the metric.
    let warning = api
        .events()
        .into_iter()
        .find(|e| e["reason"] == "AgentBundleReplaced")
        .expect("an AgentBundleReplaced event");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["regarding"]["kind"], "Sandbox");
    let note = warning["note"].as_str().unwrap();
    assert!(
        note.contains(&format!("ConfigMap team-a/{name}")) && note.contains("boot has sha256"),
        "{note}"
    );
    assert_eq!(ctx.metrics.agent_bundles_replaced.get(), 1);
}

#[tokio::test]
async fn no_pod_while_an_impostor_agent_config_map_cannot_be_removed() {
    let config = Config::with_bundle();
    let mut state = FakeState {
        config_map_delete_forbidden: true,
        ..FakeState::default()
    };
    state
        .config_maps
        .insert(bundle_name(&config), impostor(&config));
    let s = sbx("");
    state.sandbox = Some(s.clone());
    let (ctx, handle) = Context::test(config);
    let api = FakeApi::start(handle, state);
    let e = reconcile_at(&DeserializeGuard(Ok(s)), &ctx, ts("2025-01-01T00:00:10Z"))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("deleting ConfigMap team-a/airlock-agent-"),
        "{e}"
    );
    assert!(api.find("POST", PODS).is_none(), "fail closed");
    assert!(api.find("POST", CONFIG_MAPS).is_none());
}

#[tokio::test]
async fn no_config_map_calls_for_a_running_pod_the_init_container_delivery_or_an_agent_in_the_image()
 {
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    // (Reconciled before: it has a status.)
    let (_, api) = run_with(
        Config::with_bundle(),
        &reconciled(""),
        state,
        "2025-01-01T00:00:10Z",
    )
    .await;
    assert_no_config_map_calls(&api);
    let (_, api) = run(&sbx(""), FakeState::default(), "2025-01-01T00:00:10Z").await;
    assert_no_config_map_calls(&api);
    // An image that brings its own agent needs no ConfigMap.
    let (_, api) = run_with(
        Config::with_bundle(),
        &sbx("  agent: Image\n"),
        FakeState::default(),
        "2025-01-01T00:00:10Z",
    )
    .await;
    assert_no_config_map_calls(&api);
    assert!(
        api.find("POST", PODS).unwrap().body["spec"]
            .get("volumes")
            .is_none()
    );
}


#[tokio::test]
async fn a_pod_made_before_the_first_status_is_found_by_its_create_and_kept() {
    // The operator created the pod and stopped before writing the status: the next reconcile
    // sees a Sandbox without a status, creates the pod without reading, gets AlreadyExists, reads
    // the pod and reports it; the pod is never written to.
    let s = sbx("");
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    let (_, api) = run(&s, state, "2025-01-01T00:00:10Z").await;
    let lines = api.lines();
    let post = lines.iter().position(|l| *l == format!("POST {PODS}")).expect("created first");
    let get = lines.iter().position(|l| *l == format!("GET {POD}")).expect("then read");
    assert!(post < get, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.starts_with("PATCH /api/v1/namespaces/team-a/pods") || l.starts_with("DELETE")), "{lines:#?}");
    let status = status_patch(&api);
    assert_eq!((status["phase"].as_str(), status["podUid"].as_str()), (Some("Ready"), Some("pod-uid-1")), "{status}");

    // Someone else's pod of that name: the same, and the Sandbox waits for it to go.
    let mut foreign = owned_pod("Running", true);
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("another-uid");
    let (_, api) = run(&s, FakeState { pod: Some(foreign), ..FakeState::default() }, "2025-01-01T00:00:10Z").await;
    assert!(api.lines().contains(&format!("GET {POD}")));
    assert_eq!(condition(&status_patch(&api), "Ready")["reason"], "PodNameTaken");
}
