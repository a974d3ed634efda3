//! Labels and names shared by the operator (which sets them) and the exec gateway (which reads them).

/// Label on every child object: the name of the Sandbox it belongs to.
pub const SANDBOX_NAME: &str = "airlock.dev/sandbox";
/// Label on every child object, `sandbox`: selects sandbox pods (for example in the ResourceQuota
/// scope and the NetworkPolicy).
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const COMPONENT_SANDBOX: &str = "sandbox";
/// `app.kubernetes.io/managed-by: airlock-operator` on every object the operator creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_OPERATOR: &str = "airlock-operator";

/// Name of the main container in a sandbox pod.
pub const MAIN_CONTAINER: &str = "sandbox";
/// Where the Airlock agent binary is mounted in every sandbox container.
pub const AGENT_DIR: &str = "/.airlock";
/// Path of the Airlock agent binary inside every sandbox container.
pub const AGENT_PATH: &str = "/.airlock/airlock-agent";

/// Name of the pod of a Sandbox (the same as the Sandbox).
pub fn pod_name(sandbox: &str) -> String {
    sandbox.to_string()
}

/// Label (value `true`) on the pods allowed to reach a sandbox's agent port: the exec gateway's
/// and the operator's, in the release namespace. Every sandbox's NetworkPolicy admits exactly
/// these pods, on exactly [`AGENT_PORT_NAME`].
pub const AGENT_CLIENT: &str = "airlock.dev/agent-client";
/// Name of the sandbox container's port where the agent serves the gateway (`--listen`). A pod
/// without it (created before the direct path, or with it switched off) is reached through
/// `pods/exec`.
pub const AGENT_PORT_NAME: &str = "airlock-agent";
/// The agent's token variable (read and scrubbed by the agent before anything starts).
pub const AGENT_TOKEN_ENV: &str = "AIRLOCK_AGENT_TOKEN";

/// Name of the Secret holding a sandbox's agent token.
pub fn agent_token_secret(sandbox: &str) -> String {
    format!("airlock-agent-token-{sandbox}")
}

/// Label on a SandboxPool's unclaimed pods: the pool's name. Claiming a pod removes it (and adds
/// [`SANDBOX_NAME`]), so the pool's selector counts unclaimed pods only.
pub const POOL: &str = "airlock.dev/pool";
/// Label on every pod a SandboxPool created, claimed or not: the pool's name. The pool's
/// deny-all NetworkPolicy selects it, so a pod is fenced at every instant of its claim.
pub const POOL_ORIGIN: &str = "airlock.dev/pool-origin";
/// Label on pool pods and templated sandboxes' pods: the SandboxTemplate's name.
pub const TEMPLATE: &str = "airlock.dev/template";
/// Annotation on a pool pod: `<template uid>/<template generation>` it was made from.
pub const TEMPLATE_REVISION: &str = "airlock.dev/template-revision";

/// The agent token subject of a pool's pod: its token is derived from this instead of a
/// Sandbox's UID until it is claimed (then the agent takes the Sandbox's token). Pod names are
/// unique in a namespace while the pod exists, and a claimed pod no longer accepts this token.
pub fn pool_pod_subject(namespace: &str, pod: &str) -> String {
    format!("pool-pod:{namespace}/{pod}")
}

/// Name of the NetworkPolicy of every pool pod of a namespace. Sandbox names are DNS labels (no
/// dot), so it cannot be a Sandbox's policy name.
pub const POOL_PODS_POLICY: &str = "airlock.pool-pods";

/// Name of the per-namespace default-deny NetworkPolicy of every sandbox pod (label
/// `app.kubernetes.io/component=sandbox`, managed by the operator). It exists before a namespace's
/// first sandbox pod, so a pod is fenced from its first instant and the pod and its own policy can
/// be written at the same time. Not a DNS label, so never a Sandbox's policy name.
pub const SANDBOX_PODS_POLICY: &str = "airlock.sandbox-pods";
