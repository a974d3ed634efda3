//! Airlock's Kubernetes API: the `Sandbox` custom resource (`airlock.dev/v1alpha1`).
//!
//! The types here are the single source of truth for the CRD: `cargo run -p airlock-crds --bin crdgen`
//! prints the YAML committed in `crds/`, and the test suite fails when the two drift apart.
//!
//! Validation happens at admission, in the API server: OpenAPI limits (lengths, ranges, patterns,
//! enums) and CEL rules (`x-kubernetes-validations`) with messages that name the field. The operator
//! re-checks what depends on its own configuration (for example the configured maximum TTL).
//!
//! Over 600 lines: the Sandbox's spec and status types, each field documented (the docs become
//! the CRD's descriptions); the template and pool kinds are in `template.rs` and `pool.rs`.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub mod agent_token;
pub mod labels;
pub mod pool;
mod quantity;
pub mod template;
pub mod validation;

pub use pool::{SandboxPool, SandboxPoolSpec, SandboxPoolStatus};
pub use template::{SandboxTemplate, SandboxTemplateSpec, TemplateLifetime};

/// API group of every Airlock resource.
pub const GROUP: &str = "airlock.dev";
/// API version of this crate's types.
pub const VERSION: &str = "v1alpha1";

/// Longest time-to-live the CRD schema accepts (7 days). The operator may be configured lower.
pub const MAX_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// A Sandbox is a disposable, isolated machine for running untrusted code: one pod on a
/// VM-isolating RuntimeClass, fenced by its own NetworkPolicy, reaped when its time-to-live or idle
/// timeout runs out.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "airlock.dev",
    version = "v1alpha1",
    kind = "Sandbox",
    plural = "sandboxes",
    singular = "sandbox",
    shortname = "sbx",
    category = "airlock",
    namespaced,
    status = "SandboxStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".status.runtimeClassName"}"#,
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".spec.templateRef.name","priority":1}"#,
    printcolumn = r#"{"name":"Start","type":"string","description":"Warm: a pool's pod was claimed; Cold: a pod was created","jsonPath":".status.startMode","priority":1}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".status.podName","priority":1}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.nodeName","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","description":"When the sandbox ends (RFC 3339)","jsonPath":".status.expiresAt"}"#
)]
#[x_kube(validation = Rule::new("has(self.image) != has(self.templateRef)").message("spec must set exactly one of spec.image and spec.templateRef"))]
#[x_kube(validation = Rule::new("has(self.image) == has(oldSelf.image)").message("spec.image is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("has(self.templateRef) == has(oldSelf.templateRef)").message("spec.templateRef is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || !has(self.imagePullPolicy)").message("spec.imagePullPolicy cannot be set with spec.templateRef: the SandboxTemplate sets it"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || !has(self.command)").message("spec.command cannot be set with spec.templateRef: the SandboxTemplate sets it"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || !has(self.args)").message("spec.args cannot be set with spec.templateRef: the SandboxTemplate sets it"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || !has(self.workingDir)").message("spec.workingDir cannot be set with spec.templateRef: the SandboxTemplate sets it"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || !has(self.runtimeClassName)").message("spec.runtimeClassName cannot be set with spec.templateRef: the SandboxTemplate sets it"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || !has(self.resources) || (!has(self.resources.cpu) && !has(self.resources.memory) && !has(self.resources.ephemeralStorage))").message("spec.resources cannot be set with spec.templateRef: the SandboxTemplate sets it"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || !has(self.readOnlyRootFilesystem) || !self.readOnlyRootFilesystem").message("spec.readOnlyRootFilesystem cannot be set with spec.templateRef: the SandboxTemplate sets it"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || !has(self.agent)").message("spec.agent cannot be set with spec.templateRef: the SandboxTemplate sets it"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || !has(self.securityContext)").message("spec.securityContext cannot be set with spec.templateRef: the SandboxTemplate sets it"))]
#[x_kube(validation = Rule::new("has(self.files) == has(oldSelf.files)").message("spec.files is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("has(self.imagePullPolicy) == has(oldSelf.imagePullPolicy)").message("spec.imagePullPolicy is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("has(self.command) == has(oldSelf.command)").message("spec.command is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("has(self.args) == has(oldSelf.args)").message("spec.args is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("has(self.env) == has(oldSelf.env)").message("spec.env is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("has(self.workingDir) == has(oldSelf.workingDir)").message("spec.workingDir is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("has(self.runtimeClassName) == has(oldSelf.runtimeClassName)").message("spec.runtimeClassName is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("(has(self.readOnlyRootFilesystem) && self.readOnlyRootFilesystem) == (has(oldSelf.readOnlyRootFilesystem) && oldSelf.readOnlyRootFilesystem)").message("spec.readOnlyRootFilesystem is immutable"))]
#[x_kube(validation = Rule::new("has(self.agent) == has(oldSelf.agent)").message("spec.agent is immutable: it cannot be added or removed after creation"))]
#[x_kube(validation = Rule::new("has(self.securityContext) == has(oldSelf.securityContext)").message("spec.securityContext is immutable: it cannot be added or removed after creation"))]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// Container image the sandbox runs, for example `python:3.12-slim`. Any image works, even one
    /// without a shell: Airlock injects its own init process. Exactly one of `image` and
    /// `templateRef`. Immutable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.image is immutable"))]
    pub image: String,

    /// The SandboxTemplate (same namespace) this sandbox is made from, instead of `image`: the
    /// template gives the image, command, resources and the rest of the pod, and the defaults of
    /// `lifetime` and `network`. When the template has a SandboxPool with a Ready pod, the sandbox
    /// claims it and is Ready in milliseconds (`status.startMode: Warm`); otherwise a pod is
    /// started for it (`Cold`). What the sandbox itself may still set: `env` (added for every
    /// command run in it), `lifetime`, `network` (replaces the template's when set), its labels
    /// and annotations. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.templateRef is immutable"))]
    pub template_ref: Option<TemplateRef>,

    /// When the kubelet pulls the image: `IfNotPresent` (default), `Always` or `Never`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.imagePullPolicy is immutable"))]
    #[schemars(transform = optional_enum)]
    pub image_pull_policy: Option<PullPolicy>,

    /// Command to run as the sandbox's main process. When empty, Airlock's init keeps the sandbox
    /// alive and idle, waiting for commands through the exec gateway. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.command is immutable"))]
    pub command: Vec<String>,

    /// Arguments to `command`. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.args is immutable"))]
    pub args: Vec<String>,

    /// Environment variables of the sandbox (literal values only: a sandbox cannot read Secrets or
    /// ConfigMaps through its spec). With `templateRef`: added to the template's for every command
    /// run in the sandbox (a warm pod's main process started before the claim and keeps the
    /// template's). Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.env is immutable"))]
    pub env: Vec<SandboxEnvVar>,

    /// Working directory of the main process and the default for commands. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("spec.workingDir must be an absolute path"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.workingDir is immutable"))]
    pub working_dir: Option<String>,

    /// RuntimeClass of the pod. Defaults to the operator's configured class (`kata` in production,
    /// `gvisor` on clusters without Kata). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.runtimeClassName is immutable"))]
    pub runtime_class_name: Option<String>,

    /// CPU, memory and ephemeral storage of the sandbox. Missing values take the operator's
    /// defaults; each is both the request and the limit. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.resources is immutable"))]
    pub resources: SandboxResources,

    /// When the sandbox ends: time-to-live, idle timeout and what happens at the end. Mutable:
    /// raise `ttlSeconds` to extend the deadline.
    #[serde(default)]
    pub lifetime: Lifetime,

    /// What the sandbox may reach on the network. Ingress is always denied.
    #[serde(default)]
    pub network: Network,

    /// Mount the image's root filesystem read-only (scratch space stays writable under `/tmp`
    /// and the working directory is not affected when it is a volume). Immutable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.readOnlyRootFilesystem is immutable"))]
    pub read_only_root_filesystem: bool,

    /// Where the sandbox's Airlock agent (its PID 1 and exec helper) comes from. `Inject`
    /// (default): Airlock puts it into the sandbox, so any image works. `Image`: the image already
    /// holds it at `/.airlock/airlock-agent` (images built on Airlock's base images); the pod then
    /// mounts no volume at all and starts sooner (about one kubelet step, ~1 s, under gVisor). An
    /// image without the agent fails to start with a message saying so. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.agent is immutable"))]
    #[schemars(transform = optional_enum)]
    pub agent: Option<AgentSource>,

    /// Files the operator writes into the sandbox before it reports Ready (through its agent;
    /// needs the direct agent path), for example a task's input or a config file. Also for a
    /// Sandbox made from a template: a claimed warm pod gets them before it is Ready. At most 16,
    /// each at most 64 KiB of text. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.files is immutable"))]
    pub files: Vec<SandboxFile>,

    /// The user the sandbox runs as. Set: the pod runs with `runAsNonRoot: true` and this uid and
    /// gid (as Pod Security `restricted` requires). Unset: the operator's default user if it has
    /// one, else the image's own user (often root; fine for `baseline`). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.securityContext is immutable"))]
    pub security_context: Option<SandboxSecurityContext>,
}

/// A file written into the sandbox before it is Ready.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SandboxFile {
    /// Absolute path; missing parent directories are created.
    #[schemars(length(min = 2, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/') && !self.endsWith('/')").message("spec.files[].path must be an absolute path to a file"))]
    pub path: String,
    /// The file's content (text).
    #[serde(default)]
    #[schemars(length(max = 65536))]
    pub content: String,
    /// Permission bits as a decimal number, for example 420 (octal 0644, the default) or 384
    /// (0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4095))]
    pub mode: Option<i32>,
}

/// The SandboxTemplate a Sandbox or SandboxPool is made from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub struct TemplateRef {
    /// Name of a SandboxTemplate in the same namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// Largest uid or gid a sandbox may run as.
pub const MAX_ID: i64 = 2147483647;

/// The non-root user of a sandbox.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSecurityContext {
    /// User id of every process in the sandbox, 1-2147483647 (the sandbox runs with
    /// `runAsNonRoot: true`, so 0 is refused).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 2147483647").message("spec.securityContext.runAsUser must be a non-root uid between 1 and 2147483647 (the sandbox runs with runAsNonRoot: true)"))]
    pub run_as_user: i64,
    /// Primary group id, 0-2147483647. Defaults to `runAsUser`. Also the pod's `fsGroup`, so the
    /// sandbox's volumes are writable by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 2147483647").message("spec.securityContext.runAsGroup must be a gid between 0 and 2147483647"))]
    pub run_as_group: Option<i64>,
}

impl SandboxSecurityContext {
    /// The group: `runAsGroup`, else the uid.
    pub fn group(&self) -> i64 {
        self.run_as_group.unwrap_or(self.run_as_user)
    }
}

/// Schema of an optional enum field: its values only. Left alone, an `Option` of an enum lists
/// `null` among the values (and the API server's error for a wrong value then says `supported
/// values: "Inject", "Image", "null"`). The field stays optional (it is not required); a `null`
/// sent for it is pruned by the API server like any null of a non-nullable field.
pub(crate) fn optional_enum(schema: &mut schemars::Schema) {
    if let Some(values) = schema.get_mut("enum").and_then(|v| v.as_array_mut()) {
        values.retain(|v| !v.is_null());
    }
    if let Some(types) = schema.get_mut("type")
        && let Some(list) = types.as_array()
    {
        let kept: Vec<_> = list.iter().filter(|t| *t != "null").cloned().collect();
        if kept.len() == 1 {
            *types = kept[0].clone();
        }
    }
    schema.remove("nullable");
}

/// Where a sandbox's agent comes from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AgentSource {
    // Airlock puts the agent into the sandbox (the operator's configured delivery). (Plain
    // comments: variant docs would replace the field's description in the CRD.)
    Inject,
    // The image holds the agent at `/.airlock/airlock-agent`.
    Image,
}

/// Image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// One environment variable with a literal value.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct SandboxEnvVar {
    /// Variable name: letters, digits and `_`, not starting with a digit.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// Resources of a sandbox. Each value is used as both request and limit (Guaranteed QoS), so a
/// sandbox can never take more than it was given.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SandboxResources {
    /// CPU, for example `500m` or `2`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "quantity::deserialize"
    )]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))").message("spec.resources.cpu must be a positive quantity such as 500m or 2"))]
    pub cpu: Option<Quantity>,
    /// Memory, for example `512Mi`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "quantity::deserialize"
    )]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 4194304 : (isQuantity(self) && quantity(self).isGreaterThan(quantity('4Mi')))").message("spec.resources.memory must be a quantity above 4Mi such as 512Mi"))]
    pub memory: Option<Quantity>,
    /// Scratch disk (writable layer and logs), for example `1Gi`. Under gVisor, files in `/tmp`
    /// live in the sandbox's memory and count against `memory` instead.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "quantity::deserialize"
    )]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))").message("spec.resources.ephemeralStorage must be a positive quantity such as 1Gi"))]
    pub ephemeral_storage: Option<Quantity>,
}

/// Lifetime of a sandbox.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Lifetime {
    /// Seconds from creation until the sandbox ends. Defaults to the operator's configured TTL.
    /// Raise it to extend the deadline; it can never exceed the operator's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub ttl_seconds: Option<i64>,
    /// Seconds added to `ttlSeconds` by `ExtendSandbox` (the exec gateway writes this field with
    /// its own field manager, so a Sandbox kept in Git is extended without its Git-owned
    /// `ttlSeconds` changing). The TTL deadline is creation + `ttlSeconds` + `extensionSeconds`,
    /// at most the operator's maximum. Leave it out of manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub extension_seconds: Option<i64>,
    /// Seconds without any exec or file activity after which the sandbox ends. Unset: no idle
    /// timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub idle_timeout_seconds: Option<i64>,
    /// What happens when the sandbox ends: `Delete` removes the Sandbox object; `Retain` keeps
    /// it with phase `Expired` and its pod gone. Unset: `Delete`, except for a Sandbox managed by
    /// Argo CD or Flux (their tracking annotation or labels), which is retained so its GitOps
    /// controller does not re-create it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expiry: Option<ExpiryPolicy>,
}

/// What happens at the end of a sandbox's life.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum ExpiryPolicy {
    /// Delete the Sandbox object (and with it the pod and NetworkPolicy).
    #[default]
    Delete,
    /// Keep the Sandbox object with phase `Expired`; its pod is deleted.
    Retain,
}

/// Network access of a sandbox. Ingress is always denied; egress is denied unless asked for.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.egress == 'AllowList' || !has(self.allow) || size(self.allow) == 0").message("spec.network.allow may only be set when spec.network.egress is AllowList"))]
#[x_kube(validation = Rule::new("self.egress != 'AllowList' || (has(self.allow) && size(self.allow) > 0)").message("spec.network.allow must list at least one destination when spec.network.egress is AllowList"))]
pub struct Network {
    /// `None` (default): no egress at all. `Internet`: everything except cluster, private and
    /// link-local ranges. `AllowList`: only the destinations in `allow`.
    #[serde(default)]
    pub egress: EgressMode,
    /// Destinations a sandbox with `egress: AllowList` may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allow: Vec<EgressRule>,
    /// Allow DNS lookups through the cluster DNS (UDP and TCP port 53 to kube-system). Default
    /// false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dns: bool,
}

/// Egress mode.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum EgressMode {
    #[default]
    None,
    Internet,
    AllowList,
}

/// One allowed egress destination.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Destination network in CIDR notation, for example `10.0.0.0/8` or `2001:db8::/32`.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isCIDR(self)").message("spec.network.allow[].cidr must be a CIDR such as 10.1.2.0/24"))]
    pub cidr: String,
    /// Destination ports; empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub ports: Vec<EgressPort>,
}

/// A destination port.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressPort {
    /// Port number, 1-65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
            Protocol::SCTP => "SCTP",
        }
    }
}

/// Observed state of a Sandbox.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// Coarse lifecycle phase: Pending, Starting, Ready, Expired, Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Standard conditions, with reason, message, lastTransitionTime and observedGeneration:
    /// `Ready` (the sandbox accepts commands), `Expired` (its lifetime ended), `Reconciling` and
    /// `Stalled` (kstatus: still starting / failed), and `PolicyAdjusted` (the operator's policy
    /// changed a running sandbox's spec value, for example clamped its time-to-live).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the sandbox's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// UID of that pod (a pod replaced under the same name is told apart: what was done for the
    /// old one, such as writing `spec.files`, is done again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Pod IP of the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Node the sandbox runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// RuntimeClass the pod runs under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// When the pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the sandbox first became Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_time: Option<Time>,
    /// When the sandbox will end (the earlier of its TTL and idle deadlines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The time-to-live applied, in seconds: `ttlSeconds` (or the operator's default) plus
    /// `extensionSeconds`, at most the operator's maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// When the time-to-live runs out (creation + the applied `ttlSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_expires_at: Option<Time>,
    /// When the idle timeout runs out if nothing happens before (only with
    /// `idleTimeoutSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_expires_at: Option<Time>,
    /// Last exec or file activity seen through the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
    /// How the pod started: `Warm` (a SandboxPool's pod, claimed for this sandbox) or `Cold` (a
    /// pod created for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_mode: Option<StartMode>,
    /// When the operator wrote `spec.files` into the sandbox (before it reported Ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_written_time: Option<Time>,
    /// The SandboxTemplate this sandbox was made from, as it was when its pod started (later
    /// changes to the template apply to new sandboxes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<AppliedTemplate>,
}

/// How a sandbox's pod started.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum StartMode {
    /// A Ready pod of a SandboxPool was claimed.
    Warm,
    /// A pod was created for the sandbox.
    Cold,
}

impl StartMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StartMode::Warm => "Warm",
            StartMode::Cold => "Cold",
        }
    }
}

/// The template a sandbox started from and the defaults it took from it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedTemplate {
    /// Name of the SandboxTemplate.
    pub name: String,
    /// Its `metadata.generation` when the pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The template's lifetime defaults then.
    #[serde(default)]
    pub lifetime: template::TemplateLifetime,
    /// The template's network then.
    #[serde(default)]
    pub network: Network,
}

/// Lifecycle phase of a Sandbox.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    /// Accepted, pod not yet created or not yet scheduled.
    Pending,
    /// Pod scheduled, containers starting.
    Starting,
    /// Ready to run commands.
    Ready,
    /// Lifetime ended; the pod is gone (only with `onExpiry: Retain`).
    Expired,
    /// The sandbox cannot run (invalid against operator policy, refused by quota, pod failed).
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Starting => "Starting",
            Phase::Ready => "Ready",
            Phase::Expired => "Expired",
            Phase::Failed => "Failed",
        }
    }
}

/// Condition types a Sandbox reports.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const EXPIRED: &str = "Expired";
    /// kstatus: True while the sandbox is on its way to Ready (Pending, Starting).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: True when the sandbox cannot get to Ready without a change (Failed).
    pub const STALLED: &str = "Stalled";
    /// True when the operator's policy adjusted a running sandbox (reason `TTLClamped`,
    /// `OverMaximum`), False reason `AsSpecified` otherwise.
    pub const POLICY_ADJUSTED: &str = "PolicyAdjusted";
}

/// Annotations and labels by which a Sandbox is recognised as kept in Git by Argo CD or Flux.
pub mod gitops {
    /// Argo CD annotation tracking (`application.resourceTrackingMethod: annotation`).
    pub const ARGOCD_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
    /// Argo CD label tracking (the default before Argo CD 3).
    pub const ARGOCD_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
    /// Flux kustomize-controller.
    pub const FLUX_KUSTOMIZE_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
    /// Flux helm-controller.
    pub const FLUX_HELM_LABEL: &str = "helm.toolkit.fluxcd.io/name";
}

/// Annotation the exec gateway sets (RFC 3339 time, debounced) whenever it runs a command or moves
/// a file in the sandbox. The operator reads it for the idle timeout.
pub const LAST_ACTIVITY_ANNOTATION: &str = "airlock.dev/last-activity";

impl Sandbox {
    /// The GitOps tool that keeps this Sandbox in Git, if any (`"Argo CD"` or `"Flux"`).
    pub fn gitops_manager(&self) -> Option<&'static str> {
        use kube::ResourceExt;
        if self.annotations().contains_key(gitops::ARGOCD_TRACKING_ID)
            || self.labels().contains_key(gitops::ARGOCD_INSTANCE_LABEL)
        {
            Some("Argo CD")
        } else if self.labels().contains_key(gitops::FLUX_KUSTOMIZE_LABEL)
            || self.labels().contains_key(gitops::FLUX_HELM_LABEL)
        {
            Some("Flux")
        } else {
            None
        }
    }

    /// What happens at the end of this sandbox's life: `onExpiry` when set; unset, `Retain` for
    /// a Sandbox kept in Git (deleting it would make its GitOps controller re-create it, with a
    /// fresh time-to-live, forever), else `Delete`.
    pub fn expiry_policy(&self) -> ExpiryPolicy {
        match self.spec.lifetime.on_expiry {
            Some(p) => p,
            None if self.gitops_manager().is_some() => ExpiryPolicy::Retain,
            None => ExpiryPolicy::Delete,
        }
    }

    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }

    /// True when the `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.condition(condition::READY)
            .is_some_and(|c| c.status == "True")
    }
}

/// The CRDs, by file name in `crds/` (`sandbox.yaml`, `sandboxtemplate.yaml`, `sandboxpool.yaml`).
pub const CRD_FILES: [&str; 3] = ["sandbox.yaml", "sandboxtemplate.yaml", "sandboxpool.yaml"];

/// The CRD committed as `crds/<file>`, exactly as generated (`None` for another name).
pub fn crd_yaml_of(file: &str) -> Option<String> {
    use kube::CustomResourceExt;
    let crd = match file {
        "sandbox.yaml" => Sandbox::crd(),
        "sandboxtemplate.yaml" => SandboxTemplate::crd(),
        "sandboxpool.yaml" => SandboxPool::crd(),
        _ => return None,
    };
    let mut out = format!(
        "# Generated by `cargo run -p airlock-crds --bin crdgen {file}`. Do not edit.\n"
    );
    out.push_str(&serde_yaml::to_string(&crd).expect("CRD serializes to YAML"));
    Some(out)
}

/// The Sandbox CRD as YAML, exactly as committed in `crds/sandbox.yaml`.
pub fn crd_yaml() -> String {
    crd_yaml_of("sandbox.yaml").expect("known file")
}
