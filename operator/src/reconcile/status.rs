//! Step 5 of the pipeline, the pure half: the Sandbox's next status from what the reconcile saw
//! and did. The write (server-side apply on the status subresource) is in `apply`.
//!
//! Conditions follow `metav1.Condition`: `lastTransitionTime` changes only when the condition's
//! status changes, `observedGeneration` is the generation this reconcile worked from. Every time is
//! whole seconds (what the API server stores), so a status read back compares equal to the one
//! computed again, and an unchanged status is not written at all.
//!
//! (Over ~600 lines: most of it is this builder's unit tests, kept next to it; the kstatus and
//! policy scenarios are in `reconcile/tests/policy.rs`.)

use airlock_crds::{Phase, Sandbox, SandboxStatus, condition, labels};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::lifetime::{self, EndReason, whole_seconds};
use super::validate::Adjustment;

/// Reasons of the `Ready` condition set by the operator itself (pod-derived reasons such as
/// `OOMKilled` or `ImagePullBackOff` come from the kubelet).
pub mod reason {
    pub const POD_READY: &str = "PodReady";
    pub const POD_PENDING: &str = "PodPending";
    pub const POD_INITIALIZING: &str = "PodInitializing";
    pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
    pub const POD_TERMINATING: &str = "PodTerminating";
    pub const POD_UNKNOWN: &str = "PodUnknown";
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    pub const QUOTA_INITIALIZING: &str = "QuotaInitializing";
    pub const QUOTA_UNAVAILABLE: &str = "QuotaUnavailable";
    pub const POD_NAME_TAKEN: &str = "PodNameTaken";
    pub const INVALID: &str = "Invalid";
    pub const RUNTIME_CLASS_NOT_ALLOWED: &str = "RuntimeClassNotAllowed";
    pub const EGRESS_DENIED: &str = "EgressDenied";
    pub const POD_REJECTED: &str = "PodRejected";
    pub const TEMPLATE_NOT_FOUND: &str = "TemplateNotFound";
    /// The sandbox refused a file of `spec.files` (or there is no direct path to write them).
    pub const FILES_NOT_WRITTEN: &str = "FilesNotWritten";
    /// The pod runs but its agent does not answer yet: with `--fence-probe` it starts serving
    /// once the sandbox's network is fenced.
    pub const AGENT_STARTING: &str = "AgentStarting";
    pub const EXPIRED: &str = "Expired";
    pub const NOT_EXPIRED: &str = "NotExpired";
    /// `PolicyAdjusted=False`: the sandbox runs as its spec says.
    pub const AS_SPECIFIED: &str = "AsSpecified";
}

/// Longest condition message written (the API allows 32768 bytes).
const MAX_MESSAGE: usize = 4096;

/// What the reconcile found or did, as far as the status is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The sandbox's pod exists (observed, or just created).
    Running(&'a Pod),
    /// No pod, for a reason worth telling (quota, name clash): phase Pending, Ready=False.
    Pending { reason: &'a str, message: &'a str },
    /// The operator refuses the spec (reason `Invalid`, `RuntimeClassNotAllowed`, ...) or the API
    /// server refused the pod (`PodRejected`): phase Failed, Ready=False, no pod.
    Failed { reason: &'a str, message: &'a str },
    /// The lifetime ended and the Sandbox is kept (`onExpiry: Retain`): phase Expired.
    Expired(EndReason),
}

/// Inputs besides the outcome.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub sandbox: &'a Sandbox,
    pub now: Timestamp,
    /// The applied time-to-live (see [`super::validate::Ttl`]).
    pub ttl_seconds: i64,
    pub last_activity: Option<Timestamp>,
    /// What the operator's policy adjusted on the running sandbox.
    pub adjustments: &'a [Adjustment],
    /// The RuntimeClass the sandbox runs (or would run) under.
    pub runtime_class: Option<&'a str>,
    /// How its pod started (sandboxes made from a template), once known.
    pub start_mode: Option<airlock_crds::StartMode>,
    /// The template it started from, once its pod exists.
    pub template: Option<&'a airlock_crds::AppliedTemplate>,
    /// When `spec.files` were written, if this reconcile wrote them.
    pub files_written: Option<&'a Time>,
}

/// How a pod looks from the sandbox's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub phase: Phase,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

/// The next status of the sandbox.
pub fn next(ctx: &Context<'_>, outcome: Outcome<'_>) -> SandboxStatus {
    let sandbox = ctx.sandbox;
    let prev = sandbox.status.clone().unwrap_or_default();
    let generation = sandbox.metadata.generation;
    let now = whole_seconds(ctx.now);

    let mut status = SandboxStatus {
        observed_generation: generation,
        runtime_class_name: ctx
            .runtime_class
            .map(str::to_string)
            .or(prev.runtime_class_name.clone()),
        start_time: prev.start_time.clone(),
        ready_time: prev.ready_time.clone(),
        last_activity_time: ctx.last_activity.map(Time),
        start_mode: ctx.start_mode.or(prev.start_mode),
        template: ctx.template.cloned().or(prev.template.clone()),
        files_written_time: ctx.files_written.cloned(),
        ..SandboxStatus::default()
    };

    let (phase, ready, ready_reason, ready_message, end) = match outcome {
        Outcome::Running(pod) => {
            let view = pod_view(pod);
            status.pod_name = Some(pod.name_any());
            status.pod_uid = pod.uid();
            status.pod_ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty());
            status.node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            if let Some(rc) = pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone()) {
                status.runtime_class_name = Some(rc);
            }
            if let Some(t) = pod.status.as_ref().and_then(|s| s.start_time.clone()) {
                status.start_time = Some(t);
            }
            if view.ready && status.ready_time.is_none() {
                status.ready_time = Some(Time(now));
            }
            (view.phase, view.ready, view.reason, view.message, None)
        }
        Outcome::Pending { reason, message } => (
            Phase::Pending,
            false,
            reason.to_string(),
            message.to_string(),
            None,
        ),
        Outcome::Failed { reason, message } => (
            Phase::Failed,
            false,
            reason.to_string(),
            message.to_string(),
            None,
        ),
        Outcome::Expired(why) => {
            let msg = match why {
                EndReason::TtlExpired => "time-to-live ran out; the pod was deleted",
                EndReason::IdleTimeout => "idle timeout ran out; the pod was deleted",
            };
            (
                Phase::Expired,
                false,
                reason::EXPIRED.to_string(),
                msg.to_string(),
                Some(why),
            )
        }
    };

    // Files written for a pod stay on record while that pod is the sandbox's.
    if status.files_written_time.is_none() && status.pod_uid.is_some() && status.pod_uid == prev.pod_uid {
        status.files_written_time = prev.files_written_time.clone();
    }

    let deadlines = lifetime::deadlines(
        sandbox,
        ctx.ttl_seconds,
        status.ready_time.as_ref().map(|t| t.0),
        ctx.last_activity,
    )
    .ok();
    if end.is_some() && prev.phase == Some(Phase::Expired) {
        // Expiry is final: the deadlines it expired by stay on record.
        status.ttl_seconds = prev.ttl_seconds;
        status.ttl_expires_at = prev.ttl_expires_at.clone();
        status.idle_expires_at = prev.idle_expires_at.clone();
    } else {
        status.ttl_seconds = Some(ctx.ttl_seconds);
        status.ttl_expires_at = deadlines.map(|d| Time(d.ttl));
        status.idle_expires_at = deadlines.and_then(|d| d.idle).map(Time);
    }
    status.expires_at = match (end, &prev.expires_at) {
        // Once expired, the deadline it expired at stays on record.
        (Some(_), Some(prev)) if prev.0 <= now => Some(prev.clone()),
        _ => deadlines.map(|d| Time(d.expires_at())),
    };

    let (expired_status, expired_reason, expired_message) = match end {
        Some(why) => (
            true,
            why.as_str(),
            expired_message(why, status.expires_at.as_ref()),
        ),
        None => (
            false,
            reason::NOT_EXPIRED,
            match (&status.expires_at, deadlines) {
                (Some(at), Some(d)) => format!(
                    "expires at {} ({})",
                    at.0,
                    if d.idle.is_some_and(|i| i < d.ttl) {
                        "idle timeout"
                    } else {
                        "time-to-live"
                    }
                ),
                _ => String::new(),
            },
        ),
    };

    // kstatus (Flux health checks, kubectl wait): Reconciling while on the way to Ready, Stalled
    // when it cannot get there; Ready and Expired say which end it reached.
    let (reconciling, stalled) = match phase {
        Phase::Pending | Phase::Starting => (true, false),
        Phase::Failed => (false, true),
        Phase::Ready | Phase::Expired => (false, false),
    };
    let settled = if end.is_some() {
        reason::EXPIRED
    } else if ready {
        reason::POD_READY
    } else {
        ready_reason.as_str()
    };
    let adjusted = ctx.adjustments.first().map(|a| {
        let all: Vec<String> = ctx.adjustments.iter().map(ToString::to_string).collect();
        (
            a.reason(),
            format!("{}; the running sandbox keeps its pod", all.join("; ")),
        )
    });
    let (adjusted_reason, adjusted_message) = adjusted
        .clone()
        .unwrap_or((reason::AS_SPECIFIED, String::new()));

    status.phase = Some(phase);
    let set = |type_, status, reason: &str, message: &str| {
        set_condition(
            &prev.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            now,
        )
    };
    status.conditions = vec![
        set(condition::READY, ready, &ready_reason, &ready_message),
        set(
            condition::EXPIRED,
            expired_status,
            expired_reason,
            &expired_message,
        ),
        set(
            condition::RECONCILING,
            reconciling,
            if reconciling { &ready_reason } else { settled },
            if reconciling { &ready_message } else { "" },
        ),
        set(
            condition::STALLED,
            stalled,
            if stalled { &ready_reason } else { settled },
            if stalled { &ready_message } else { "" },
        ),
        set(
            condition::POLICY_ADJUSTED,
            adjusted.is_some(),
            adjusted_reason,
            &adjusted_message,
        ),
    ];
    status
}

fn expired_message(why: EndReason, at: Option<&Time>) -> String {
    let what = match why {
        EndReason::TtlExpired => "time-to-live",
        EndReason::IdleTimeout => "idle timeout",
    };
    match at {
        Some(t) => format!("{what} ran out at {}", t.0),
        None => format!("{what} ran out"),
    }
}

/// A condition of type `type_`, keeping the previous `lastTransitionTime` when the status did not
/// change.
fn set_condition(
    prev: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: sanitize_reason(reason),
        message: truncate(message, MAX_MESSAGE),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Condition reasons must match `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`.
fn sanitize_reason(reason: &str) -> String {
    let mut r: String = reason
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        .collect();
    while r.ends_with([',', ':']) {
        r.pop();
    }
    let r = r
        .trim_start_matches(|c: char| !c.is_ascii_alphabetic())
        .to_string();
    if r.is_empty() {
        "Unknown".into()
    } else {
        r.chars().take(1024).collect()
    }
}

fn truncate(s: &str, max: usize) -> String {
    airlock_crds::validation::text::truncate(s, max, "…")
}

/// How the sandbox's pod is doing.
pub fn pod_view(pod: &Pod) -> PodView {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let view = |phase, ready, reason: &str, message: String| PodView {
        phase,
        ready,
        reason: reason.to_string(),
        message,
    };
    match phase {
        // Deleted by someone (or with its namespace): whatever its containers did on the way
        // out is not a failure of the sandbox; once gone, the pod is created again.
        _ if pod.metadata.deletion_timestamp.is_some() => view(
            Phase::Pending,
            false,
            reason::POD_TERMINATING,
            "the sandbox's pod is being deleted".into(),
        ),
        "Failed" | "Succeeded" => {
            let (reason, message) = termination(pod, phase == "Succeeded");
            view(Phase::Failed, false, &reason, message)
        }
        "Running" => {
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            if ready {
                view(
                    Phase::Ready,
                    true,
                    reason::POD_READY,
                    "the sandbox is ready".into(),
                )
            } else {
                let (reason, message) = waiting(pod).unwrap_or((
                    reason::CONTAINERS_NOT_READY.into(),
                    "the sandbox's container is not ready yet".into(),
                ));
                view(Phase::Starting, false, &reason, message)
            }
        }
        "Pending" => {
            let scheduled = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some();
            if scheduled {
                let (reason, message) = waiting(pod).unwrap_or((
                    reason::POD_INITIALIZING.into(),
                    "the sandbox's pod is starting".into(),
                ));
                view(Phase::Starting, false, &reason, message)
            } else {
                let unschedulable = status.and_then(|s| s.conditions.as_ref()).and_then(|cs| {
                    cs.iter()
                        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                });
                match unschedulable {
                    Some(c) => view(
                        Phase::Pending,
                        false,
                        c.reason.as_deref().unwrap_or(reason::POD_PENDING),
                        c.message.clone().unwrap_or_default(),
                    ),
                    None => view(
                        Phase::Pending,
                        false,
                        reason::POD_PENDING,
                        "the sandbox's pod is not scheduled yet".into(),
                    ),
                }
            }
        }
        _ => view(
            Phase::Starting,
            false,
            reason::POD_UNKNOWN,
            status
                .and_then(|s| s.message.clone())
                .unwrap_or_else(|| "the pod's state is unknown".into()),
        ),
    }
}

fn containers(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let main = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten();
    let init = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten();
    // The main container first: its state is what the sandbox's user cares about.
    let mut all: Vec<&ContainerStatus> = main.chain(init).collect();
    all.sort_by_key(|c| c.name != labels::MAIN_CONTAINER);
    all.into_iter()
}

/// A container waiting for something worth reporting (image pull errors, config errors).
fn waiting(pod: &Pod) -> Option<(String, String)> {
    containers(pod).find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let reason = w
            .reason
            .clone()
            .filter(|r| r != "PodInitializing" && r != "ContainerCreating")?;
        Some((
            reason,
            format!(
                "container {}: {}",
                c.name,
                w.message.clone().unwrap_or_default()
            )
            .trim_end_matches(": ")
            .to_string(),
        ))
    })
}

/// Why a finished pod finished.
fn termination(pod: &Pod, succeeded: bool) -> (String, String) {
    let status = pod.status.as_ref();
    let terminated: Option<(&str, &ContainerStateTerminated)> = containers(pod).find_map(|c| {
        let t = c.state.as_ref()?.terminated.as_ref()?;
        // A container that finished normally is not the interesting one, unless it is the main one.
        (t.exit_code != 0 || c.name == labels::MAIN_CONTAINER).then_some((c.name.as_str(), t))
    });
    let container_msg = terminated.map(|(name, t)| {
        let mut m = format!(
            "container {name} terminated: {} (exit code {})",
            t.reason.as_deref().unwrap_or("unknown reason"),
            t.exit_code
        );
        if let Some(extra) = t
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
        {
            m.push_str(": ");
            m.push_str(extra);
        }
        m
    });
    // A pod-level reason (Evicted, DeadlineExceeded, ...) explains more than a container's.
    if let Some(reason) = status
        .and_then(|s| s.reason.clone())
        .filter(|r| !r.is_empty())
    {
        let message = status
            .and_then(|s| s.message.clone())
            .or(container_msg)
            .unwrap_or_default();
        return (reason, message);
    }
    match terminated {
        Some((_, t)) => (
            t.reason.clone().unwrap_or_else(|| {
                if succeeded {
                    "Completed".into()
                } else {
                    "Error".into()
                }
            }),
            container_msg.unwrap_or_default(),
        ),
        None if succeeded => (
            "Completed".into(),
            "the sandbox's main process exited".into(),
        ),
        None => ("PodFailed".into(), "the sandbox's pod failed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sbx() -> Sandbox {
        let mut s = sandbox(MINIMAL);
        s.metadata.creation_timestamp = Some(Time(ts("2025-01-01T00:00:00Z")));
        s.metadata.generation = Some(3);
        s
    }

    fn pod(json: serde_json::Value) -> Pod {
        let mut base = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sbx-1", "namespace": "team-a"},
            "spec": {"containers": [{"name": "sandbox"}], "runtimeClassName": "kata"},
        });
        merge(&mut base, json);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn ctx(s: &Sandbox, now: &str) -> Context<'static> {
        let s: &'static Sandbox = Box::leak(Box::new(s.clone()));
        Context {
            sandbox: s,
            now: ts(now),
            ttl_seconds: 3600,
            last_activity: None,
            adjustments: &[],
            runtime_class: Some("kata"),
            start_mode: None,
            template: None,
            files_written: None,
        }
    }

    fn cond<'a>(s: &'a SandboxStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn ready_pod() -> Pod {
        pod(serde_json::json!({
            "spec": {"nodeName": "node-1"},
            "status": {
                "phase": "Running", "podIP": "10.244.0.7", "startTime": "2025-01-01T00:00:02Z",
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
    }

    #[test]
    fn ready_pod_makes_a_ready_sandbox() {
        let s = sbx();
        let st = next(
            &ctx(&s, "2025-01-01T00:00:05.9Z"),
            Outcome::Running(&ready_pod()),
        );
        assert_eq!(st.phase, Some(Phase::Ready));
        assert_eq!(st.pod_name.as_deref(), Some("sbx-1"));
        assert_eq!(st.pod_ip.as_deref(), Some("10.244.0.7"));
        assert_eq!(st.node_name.as_deref(), Some("node-1"));
        assert_eq!(st.runtime_class_name.as_deref(), Some("kata"));
        assert_eq!(st.start_time, Some(Time(ts("2025-01-01T00:00:02Z"))));
        assert_eq!(
            st.ready_time,
            Some(Time(ts("2025-01-01T00:00:05Z"))),
            "whole seconds"
        );
        assert_eq!(st.expires_at, Some(Time(ts("2025-01-01T01:00:00Z"))));
        assert_eq!(st.observed_generation, Some(3));
        let r = cond(&st, "Ready");
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("True", "PodReady"));
        assert_eq!(r.observed_generation, Some(3));
        assert_eq!(r.last_transition_time, Time(ts("2025-01-01T00:00:05Z")));
        let e = cond(&st, "Expired");
        assert_eq!(
            (e.status.as_str(), e.reason.as_str()),
            ("False", "NotExpired")
        );
        assert_eq!(e.message, "expires at 2025-01-01T01:00:00Z (time-to-live)");
    }

    #[test]
    fn last_transition_time_only_moves_when_the_status_changes() {
        let mut s = sbx();
        let first = next(
            &ctx(&s, "2025-01-01T00:00:05Z"),
            Outcome::Running(&ready_pod()),
        );
        s.status = Some(first.clone());
        let again = next(
            &ctx(&s, "2025-01-01T00:10:00Z"),
            Outcome::Running(&ready_pod()),
        );
        assert_eq!(again, first, "nothing changed, nothing to write");
        s.status = Some(again);
        let failed = pod(
            serde_json::json!({"status": {"phase": "Failed", "containerStatuses": [
                {"name": "sandbox", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ]}}),
        );
        let st = next(&ctx(&s, "2025-01-01T00:20:00Z"), Outcome::Running(&failed));
        let r = cond(&st, "Ready");
        assert_eq!(r.last_transition_time, Time(ts("2025-01-01T00:20:00Z")));
        let e = cond(&st, "Expired");
        assert_eq!(
            e.last_transition_time,
            Time(ts("2025-01-01T00:00:05Z")),
            "Expired stayed False"
        );
        assert_eq!(
            st.ready_time,
            Some(Time(ts("2025-01-01T00:00:05Z"))),
            "readyTime is kept"
        );
    }

    #[test]
    fn oom_killed_pod_fails_the_sandbox_with_the_reason() {
        let p = pod(
            serde_json::json!({"status": {"phase": "Failed", "containerStatuses": [
                {"name": "sandbox", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
            ]}}),
        );
        let v = pod_view(&p);
        assert_eq!(v.phase, Phase::Failed);
        assert_eq!(v.reason, "OOMKilled");
        assert_eq!(
            v.message,
            "container sandbox terminated: OOMKilled (exit code 137)"
        );
        let st = next(&ctx(&sbx(), "2025-01-01T00:00:05Z"), Outcome::Running(&p));
        assert_eq!(st.phase, Some(Phase::Failed));
        let r = cond(&st, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "OOMKilled")
        );
    }

    #[test]
    fn evicted_and_completed_pods() {
        let evicted = pod(
            serde_json::json!({"status": {"phase": "Failed", "reason": "Evicted", "message": "low on ephemeral storage"}}),
        );
        let v = pod_view(&evicted);
        assert_eq!(
            (v.phase, v.reason.as_str(), v.message.as_str()),
            (Phase::Failed, "Evicted", "low on ephemeral storage")
        );
        let mut deleted = evicted.clone();
        deleted.metadata.deletion_timestamp = Some(Time(ts("2025-01-01T00:00:00Z")));
        assert_eq!(pod_view(&deleted).reason, "PodTerminating");
        let done = pod(serde_json::json!({"status": {"phase": "Succeeded"}}));
        assert_eq!(pod_view(&done).phase, Phase::Failed);
        assert_eq!(pod_view(&done).reason, "Completed");
    }

    #[test]
    fn pending_and_starting_pods() {
        let unscheduled = pod(
            serde_json::json!({"status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available"}
            ]}}),
        );
        let v = pod_view(&unscheduled);
        assert_eq!(
            (v.phase, v.reason.as_str()),
            (Phase::Pending, "Unschedulable")
        );
        let pulling = pod(
            serde_json::json!({"spec": {"nodeName": "n"}, "status": {"phase": "Pending", "containerStatuses": [
                {"name": "sandbox", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}
            ]}}),
        );
        let v = pod_view(&pulling);
        assert_eq!(
            (v.phase, v.reason.as_str()),
            (Phase::Starting, "ImagePullBackOff")
        );
        assert_eq!(v.message, "container sandbox: Back-off pulling image \"x\"");
        let just_created = pod(serde_json::json!({}));
        assert_eq!(pod_view(&just_created).phase, Phase::Pending);
        let running_not_ready =
            pod(serde_json::json!({"spec": {"nodeName": "n"}, "status": {"phase": "Running"}}));
        assert_eq!(pod_view(&running_not_ready).phase, Phase::Starting);
    }

    #[test]
    fn quota_invalid_and_expired_outcomes() {
        let s = sbx();
        let st = next(
            &ctx(&s, "2025-01-01T00:00:05Z"),
            Outcome::Pending {
                reason: reason::QUOTA_EXCEEDED,
                message: "exceeded quota: airlock-sandboxes",
            },
        );
        assert_eq!(st.phase, Some(Phase::Pending));
        assert_eq!(cond(&st, "Ready").reason, "QuotaExceeded");
        assert_eq!(st.pod_name, None);

        let st = next(
            &ctx(&s, "2025-01-01T00:00:05Z"),
            Outcome::Failed {
                reason: reason::INVALID,
                message: "spec.lifetime.ttlSeconds too big",
            },
        );
        assert_eq!(st.phase, Some(Phase::Failed));
        let r = cond(&st, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str(), r.message.as_str()),
            ("False", "Invalid", "spec.lifetime.ttlSeconds too big")
        );

        let st = next(
            &ctx(&s, "2025-01-01T02:00:00Z"),
            Outcome::Expired(EndReason::TtlExpired),
        );
        assert_eq!(st.phase, Some(Phase::Expired));
        let e = cond(&st, "Expired");
        assert_eq!(
            (e.status.as_str(), e.reason.as_str()),
            ("True", "TTLExpired")
        );
        assert_eq!(e.message, "time-to-live ran out at 2025-01-01T01:00:00Z");
        assert_eq!(cond(&st, "Ready").status, "False");
        assert_eq!(st.expires_at, Some(Time(ts("2025-01-01T01:00:00Z"))));
    }

    #[test]
    fn reasons_are_sanitized_and_messages_truncated() {
        assert_eq!(sanitize_reason("Image Pull-Backoff"), "ImagePullBackoff");
        assert_eq!(sanitize_reason("9lives:"), "lives");
        assert_eq!(sanitize_reason(""), "Unknown");
        let long = "é".repeat(5000);
        assert!(truncate(&long, MAX_MESSAGE).len() <= MAX_MESSAGE + 3);
    }
}
