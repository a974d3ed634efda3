//! A policy change never kills a running sandbox; a Sandbox kept in Git is retained, not deleted,
//! at expiry; the status follows kstatus conventions.

use super::*;
use crate::reconcile::status::{self, Outcome};
use airlock_crds::{Phase, SandboxStatus};
use k8s_openapi::api::core::v1::Pod;

/// A running, ready sandbox with extra spec lines (and metadata tweaks by `edit`).
async fn run_running(spec_tail: &str, edit: impl FnOnce(&mut Sandbox)) -> (Action, FakeApi) {
    let mut s = sbx(spec_tail);
    edit(&mut s);
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    run(&s, state, "2025-01-01T00:00:10Z").await
}

#[tokio::test]
async fn a_running_sandbox_whose_ttl_is_over_the_maximum_keeps_its_pod_with_a_clamped_ttl() {
    // ttlSeconds raised past --max-ttl (86400) after the start, or --max-ttl lowered below it.
    let (action, api) = run_running("  lifetime:\n    ttlSeconds: 90000\n", |_| {}).await;
    assert!(api.find("DELETE", POD).is_none(), "the running pod is kept");
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Ready");
    assert_eq!(status["ttlSeconds"], 86400);
    assert_eq!(status["ttlExpiresAt"], "2025-01-02T00:00:00Z");
    assert_eq!(status["expiresAt"], "2025-01-02T00:00:00Z");
    let adjusted = condition(&status, "PolicyAdjusted");
    assert_eq!(
        (adjusted["status"].as_str(), adjusted["reason"].as_str()),
        (Some("True"), Some("TTLClamped"))
    );
    assert_eq!(
        adjusted["message"],
        "spec.lifetime.ttlSeconds: asked 90000 seconds (ttlSeconds 90000 + extensionSeconds 0), applied 86400 seconds, the operator's maximum; the running sandbox keeps its pod"
    );
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert!(event_reasons(&api).contains(&"PolicyAdjusted".to_string()));
    assert_eq!(action, Action::requeue(Duration::from_secs(86400 - 10)));
}

#[tokio::test]
async fn a_running_sandbox_over_a_lowered_resource_maximum_keeps_its_pod() {
    let mut config = Config::defaults();
    config.max_resources.memory = crate::config::Resource {
        quantity: k8s_openapi::apimachinery::pkg::api::resource::Quantity("256Mi".into()),
        amount: crate::quantity::parse("256Mi").unwrap(),
    };
    let s = sbx("  resources:\n    memory: 512Mi\n");
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    let (_, api) = run_with(config.clone(), &s, state, "2025-01-01T00:00:10Z").await;
    assert!(api.find("DELETE", POD).is_none(), "the running pod is kept");
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Ready");
    let adjusted = condition(&status, "PolicyAdjusted");
    assert_eq!(adjusted["reason"], "OverMaximum");
    assert!(
        adjusted["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.resources.memory (512Mi) exceeds the operator's maximum of 256Mi"),
        "{adjusted}"
    );
    // The same spec without a pod is refused, as before.
    let (_, api) = run_with(config, &s, FakeState::default(), "2025-01-01T00:00:10Z").await;
    assert_eq!(condition(&status_patch(&api), "Ready")["reason"], "Invalid");
    assert!(api.find("POST", PODS).is_none());
}

#[tokio::test]
async fn the_status_has_the_ttl_and_idle_deadlines_apart() {
    let tail =
        "  lifetime:\n    ttlSeconds: 600\n    extensionSeconds: 600\n    idleTimeoutSeconds: 60\n";
    let (_, api) = run_running(tail, |_| {}).await;
    let status = status_patch(&api);
    assert_eq!(status["ttlSeconds"], 1200);
    assert_eq!(status["ttlExpiresAt"], "2025-01-01T00:20:00Z");
    // Idle counts from readiness, recorded at this reconcile (00:00:10).
    assert_eq!(status["idleExpiresAt"], "2025-01-01T00:01:10Z");
    assert_eq!(
        status["expiresAt"], "2025-01-01T00:01:10Z",
        "the earlier one"
    );
    assert_eq!(condition(&status, "PolicyAdjusted")["status"], "False");
}

#[tokio::test]
async fn a_sandbox_kept_in_git_is_retained_at_expiry_not_deleted() {
    let annotate = |key: &'static str, label: bool| {
        move |s: &mut Sandbox| {
            let map = [(key.to_string(), "x".to_string())].into();
            if label {
                s.metadata.labels = Some(map);
            } else {
                s.metadata.annotations = Some(map);
            }
        }
    };
    for (key, label, tool) in [
        ("argocd.argoproj.io/tracking-id", false, "Argo CD"),
        ("app.kubernetes.io/instance", true, "Argo CD"),
        ("kustomize.toolkit.fluxcd.io/name", true, "Flux"),
        ("helm.toolkit.fluxcd.io/name", true, "Flux"),
    ] {
        let mut s = sbx("  lifetime:\n    ttlSeconds: 5\n");
        annotate(key, label)(&mut s);
        let state = FakeState {
            pod: Some(owned_pod("Running", true)),
            ..FakeState::default()
        };
        let (_, api) = run(&s, state, "2025-01-01T00:00:10Z").await;
        assert!(
            api.find("DELETE", SBX_BASE).is_none(),
            "{key}: Sandbox kept"
        );
        assert!(api.find("DELETE", POD).is_some(), "{key}: pod deleted");
        assert_eq!(status_patch(&api)["phase"], "Expired", "{key}");
        let note = api.events()[0]["note"].as_str().unwrap().to_string();
        assert!(
            note.contains(&format!("managed by {tool}")),
            "{key}: {note}"
        );
    }
    // An explicit onExpiry: Delete is obeyed.
    let mut s = sbx("  lifetime:\n    ttlSeconds: 5\n    onExpiry: Delete\n");
    annotate("argocd.argoproj.io/tracking-id", false)(&mut s);
    let (_, api) = run(&s, FakeState::default(), "2025-01-01T00:00:10Z").await;
    assert!(api.find("DELETE", SBX_BASE).is_some());
}

// The status builder's kstatus conditions.

fn built(s: &Sandbox, outcome: Outcome<'_>) -> SandboxStatus {
    status::next(
        &status::Context {
            sandbox: s,
            now: ts("2025-01-01T00:00:10Z"),
            ttl_seconds: 3600,
            last_activity: None,
            runtime_class: Some("kata"),
            adjustments: &[],
            start_mode: None,
            template: None,
            files_written: None,
        },
        outcome,
    )
}

fn cond<'a>(s: &'a SandboxStatus, type_: &str) -> (&'a str, &'a str, Option<i64>) {
    let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
    (c.status.as_str(), c.reason.as_str(), c.observed_generation)
}

#[test]
fn kstatus_conditions_follow_the_phase_and_carry_the_generation() {
    let mut s = sbx("");
    s.metadata.generation = Some(4);
    let pod = |phase: &str, ready: bool| -> Pod {
        serde_json::from_value(owned_pod(phase, ready)).unwrap()
    };

    let ready_pod = pod("Running", true);
    let st = built(&s, Outcome::Running(&ready_pod));
    assert_eq!(st.phase, Some(Phase::Ready));
    assert_eq!(
        st.observed_generation,
        Some(4),
        "top-level observedGeneration"
    );
    assert_eq!(cond(&st, "Ready"), ("True", "PodReady", Some(4)));
    assert_eq!(cond(&st, "Reconciling"), ("False", "PodReady", Some(4)));
    assert_eq!(cond(&st, "Stalled"), ("False", "PodReady", Some(4)));

    let starting = pod("Running", false);
    let st = built(&s, Outcome::Running(&starting));
    assert_eq!(st.phase, Some(Phase::Starting));
    assert_eq!(
        cond(&st, "Reconciling"),
        ("True", "ContainersNotReady", Some(4))
    );
    assert_eq!(cond(&st, "Stalled").0, "False");

    let st = built(
        &s,
        Outcome::Failed {
            reason: "Invalid",
            message: "spec.lifetime.ttlSeconds too big",
        },
    );
    assert_eq!(st.phase, Some(Phase::Failed));
    assert_eq!(cond(&st, "Stalled"), ("True", "Invalid", Some(4)));
    assert_eq!(cond(&st, "Reconciling").0, "False");

    let st = built(
        &s,
        Outcome::Expired(crate::reconcile::lifetime::EndReason::TtlExpired),
    );
    assert_eq!(st.phase, Some(Phase::Expired));
    assert_eq!(cond(&st, "Expired"), ("True", "TTLExpired", Some(4)));
    assert_eq!(cond(&st, "Reconciling"), ("False", "Expired", Some(4)));
    assert_eq!(cond(&st, "Stalled"), ("False", "Expired", Some(4)));
}
