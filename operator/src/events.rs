//! Kubernetes Events (events.k8s.io/v1) about Sandboxes, through kube's [`Recorder`].
//!
//! Publishing is best effort: a failure is logged and never fails the reconcile (the status
//! carries the same information).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Event reasons.
pub mod reason {
    pub const CREATED: &str = "Created";
    /// A pool's Ready pod was claimed for the Sandbox (a warm start).
    pub const CLAIMED: &str = "Claimed";
    pub const READY: &str = "Ready";
    pub const EXPIRED: &str = "Expired";
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    pub const INVALID: &str = "Invalid";
    pub const FAILED: &str = "Failed";
    /// The namespace's agent ConfigMap was not the operator's and was replaced.
    pub const AGENT_BUNDLE_REPLACED: &str = "AgentBundleReplaced";
    pub const POLICY_ADJUSTED: &str = "PolicyAdjusted";
}

/// Publishes one event about `regarding`.
pub async fn publish(
    recorder: &Recorder,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, regarding).await {
        if matches!(&error, kube::Error::Api(s) if s.message.contains("because it is being terminated"))
        {
            tracing::debug!(%error, "namespace terminating; event dropped");
            return;
        }
        tracing::warn!(
            namespace = regarding.namespace.as_deref().unwrap_or_default(),
            sandbox = regarding.name.as_deref().unwrap_or_default(),
            reason,
            %error,
            "could not publish event"
        );
    }
}
