//! `SandboxPool`: keeps a number of sandbox pods started from a [`crate::SandboxTemplate`] and
//! Ready, so a Sandbox naming the template claims one instead of waiting for a pod to start.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::TemplateRef;

/// Largest pool.
pub const MAX_REPLICAS: i32 = 1000;

/// A pool of warm sandbox pods made from a SandboxTemplate. Scale it with `kubectl scale`, an
/// HPA or KEDA (scale subresource). Its pods count against the namespace's sandbox quota like any
/// sandbox pod; a claimed pod leaves the pool (the pool starts another) and belongs to its
/// Sandbox from then on.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "airlock.dev",
    version = "v1alpha1",
    kind = "SandboxPool",
    plural = "sandboxpools",
    singular = "sandboxpool",
    shortname = "sbxp",
    category = "airlock",
    namespaced,
    status = "SandboxPoolStatus",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.selector"}"#,
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".spec.templateRef.name"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","description":"Pods Ready to be claimed","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Claimed","type":"integer","description":"Running sandboxes that claimed a pod of this pool","jsonPath":".status.claimedReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // Pod names are `<pool>-<5 characters>` and also the pods' host names (at most 63).
    validation = Rule::new("size(self.metadata.name) <= 57").message("metadata.name of a SandboxPool is at most 57 characters (its pods are named <pool>-xxxxx, a host name of at most 63)"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name of a SandboxPool must be a DNS label (lowercase letters, digits and '-'): it starts its pods' host names")
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPoolSpec {
    /// The SandboxTemplate (same namespace) the pool's pods are made from. Changing the template
    /// replaces the pool's unclaimed pods.
    pub template_ref: TemplateRef,
    /// How many pods the pool keeps started (Ready and unclaimed), 0-1000.
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
}

/// Observed state of a SandboxPool.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxPoolStatus {
    /// Pods the pool holds (unclaimed; starting, Ready or being replaced).
    #[serde(default)]
    pub replicas: i32,
    /// Unclaimed pods of the current template that are Ready: what claims can take now.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Running sandboxes whose pod came from this pool.
    #[serde(default)]
    pub claimed_replicas: i32,
    /// Label selector of the pool's pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Generation of the template the pool's new pods are made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_generation: Option<i64>,
    /// Generation of the pool spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True when `readyReplicas` reached `spec.replicas`; False with reason
    /// `TemplateNotFound`, `Filling`, `Invalid` or `PodRejected` otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
