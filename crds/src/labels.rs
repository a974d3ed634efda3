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
