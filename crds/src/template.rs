//! `SandboxTemplate`: everything a sandbox's pod needs that cannot change after it starts, plus
//! the defaults of its lifetime and network. Sandboxes name it in `spec.templateRef`; a
//! [`crate::SandboxPool`] keeps pods started from it, ready to be claimed.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::{
    AgentSource, AppliedTemplate, ExpiryPolicy, Lifetime, Network, PullPolicy, SandboxEnvVar,
    SandboxResources, SandboxSecurityContext, SandboxSpec, optional_enum,
};

/// A template for Sandboxes: the pod part of a Sandbox's spec (image, command, env, resources,
/// RuntimeClass, ...) and the default lifetime and network of the sandboxes made from it. Changing
/// it rolls its pools (their unclaimed pods are replaced); running sandboxes are not touched.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "airlock.dev",
    version = "v1alpha1",
    kind = "SandboxTemplate",
    plural = "sandboxtemplates",
    singular = "sandboxtemplate",
    shortname = "sbxt",
    category = "airlock",
    namespaced,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".spec.image"}"#,
    printcolumn = r#"{"name":"Runtime","type":"string","jsonPath":".spec.runtimeClassName"}"#,
    printcolumn = r#"{"name":"Egress","type":"string","jsonPath":".spec.network.egress"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // Its name is a label value on the pods made from it.
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name of a SandboxTemplate is at most 63 characters (it labels the pods made from it)")
)]
#[serde(rename_all = "camelCase")]
pub struct SandboxTemplateSpec {
    /// Container image, for example `python:3.12-slim`. Any image works, even one without a
    /// shell: Airlock injects its own init process.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// When the kubelet pulls the image: `IfNotPresent` (default), `Always` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = optional_enum)]
    pub image_pull_policy: Option<PullPolicy>,

    /// The sandbox's main process. Empty: the agent keeps the sandbox alive, idle, waiting for
    /// commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,

    /// Arguments to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub args: Vec<String>,

    /// Environment of the pod (literal values only). A Sandbox's own `env` is added to it for
    /// every command run in the sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub env: Vec<SandboxEnvVar>,

    /// Working directory of the main process and the default for commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("spec.workingDir must be an absolute path"))]
    pub working_dir: Option<String>,

    /// RuntimeClass of the pods. Defaults to the operator's configured class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub runtime_class_name: Option<String>,

    /// CPU, memory and ephemeral storage of each sandbox (request = limit). Missing values take
    /// the operator's defaults.
    #[serde(default)]
    pub resources: SandboxResources,

    /// Mount the image's root filesystem read-only (`/tmp` stays writable).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,

    /// Where the agent comes from: `Inject` (default) or `Image` (see Sandbox `spec.agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = optional_enum)]
    pub agent: Option<AgentSource>,

    /// The non-root user the sandboxes run as (see Sandbox `spec.securityContext`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SandboxSecurityContext>,

    /// Default lifetime of the sandboxes made from this template (a Sandbox's own values win).
    #[serde(default)]
    pub lifetime: TemplateLifetime,

    /// Default network of the sandboxes made from this template. A Sandbox that sets its own
    /// `network` gets exactly that instead. Pool pods waiting to be claimed have no egress at
    /// all, whatever this says.
    #[serde(default)]
    pub network: Network,
}

/// Lifetime defaults of a template.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TemplateLifetime {
    /// Default time-to-live, in seconds from the Sandbox's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub ttl_seconds: Option<i64>,
    /// Default idle timeout, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub idle_timeout_seconds: Option<i64>,
    /// Default of `onExpiry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expiry: Option<ExpiryPolicy>,
}

impl SandboxTemplate {
    /// What a Sandbox records in `status.template` when its pod starts from this template.
    pub fn applied(&self) -> AppliedTemplate {
        AppliedTemplate {
            name: self.metadata.name.clone().unwrap_or_default(),
            generation: self.metadata.generation,
            lifetime: self.spec.lifetime.clone(),
            network: self.spec.network.clone(),
        }
    }
}

impl SandboxTemplateSpec {
    /// The full spec of a Sandbox made from this template: the pod part from the template; the
    /// claim's `env` after the template's (a name in both takes the claim's value); lifetime and
    /// network from the claim where it sets them, else from `defaults` (the template as it was
    /// when the sandbox's pod started, once recorded; else this template's own).
    pub fn resolve(&self, claim: &SandboxSpec, defaults: Option<&AppliedTemplate>) -> SandboxSpec {
        let (lifetime, network) = match defaults {
            Some(a) => (&a.lifetime, &a.network),
            None => (&self.lifetime, &self.network),
        };
        let mut env: Vec<SandboxEnvVar> = self
            .env
            .iter()
            .filter(|t| !claim.env.iter().any(|c| c.name == t.name))
            .cloned()
            .collect();
        env.extend(claim.env.iter().cloned());
        SandboxSpec {
            image: self.image.clone(),
            template_ref: claim.template_ref.clone(),
            image_pull_policy: self.image_pull_policy,
            command: self.command.clone(),
            args: self.args.clone(),
            env,
            working_dir: self.working_dir.clone(),
            runtime_class_name: self.runtime_class_name.clone(),
            resources: self.resources.clone(),
            lifetime: Lifetime {
                ttl_seconds: claim.lifetime.ttl_seconds.or(lifetime.ttl_seconds),
                extension_seconds: claim.lifetime.extension_seconds,
                idle_timeout_seconds: claim
                    .lifetime
                    .idle_timeout_seconds
                    .or(lifetime.idle_timeout_seconds),
                on_expiry: claim.lifetime.on_expiry.or(lifetime.on_expiry),
            },
            network: if claim.network == Network::default() {
                network.clone()
            } else {
                claim.network.clone()
            },
            read_only_root_filesystem: self.read_only_root_filesystem,
            agent: self.agent,
            security_context: self.security_context,
            files: claim.files.clone(),
        }
    }

    /// The spec of a pool's pod: the template alone (no claim), with no egress (a pool pod waits
    /// under a deny-all policy until it is claimed).
    pub fn pool_pod_spec(&self) -> SandboxSpec {
        let mut spec = self.resolve(&SandboxSpec::default(), None);
        spec.network = Network::default();
        spec.env = self.env.clone();
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EgressMode, TemplateRef};

    fn template() -> SandboxTemplateSpec {
        serde_yaml::from_str(
            r#"
image: python:3.12-slim
command: ["sleep", "infinity"]
env: [{name: A, value: from-template}, {name: B, value: b}]
resources: {cpu: 250m}
lifetime: {ttlSeconds: 600, idleTimeoutSeconds: 60}
network: {egress: Internet, dns: true}
"#,
        )
        .unwrap()
    }

    #[test]
    fn the_claim_adds_env_and_overrides_lifetime_and_network_where_it_sets_them() {
        let claim: SandboxSpec = serde_yaml::from_str(
            r#"
templateRef: {name: py}
env: [{name: A, value: from-claim}, {name: C, value: c}]
lifetime: {ttlSeconds: 30}
"#,
        )
        .unwrap();
        let s = template().resolve(&claim, None);
        assert_eq!(s.image, "python:3.12-slim");
        assert_eq!(s.template_ref, Some(TemplateRef { name: "py".into() }));
        let env: Vec<_> = s.env.iter().map(|e| format!("{}={}", e.name, e.value)).collect();
        assert_eq!(env, ["B=b", "A=from-claim", "C=c"]);
        assert_eq!(s.lifetime.ttl_seconds, Some(30));
        assert_eq!(s.lifetime.idle_timeout_seconds, Some(60));
        assert_eq!(s.network.egress, EgressMode::Internet, "template's network by default");

        let own: SandboxSpec =
            serde_yaml::from_str("templateRef: {name: py}\nnetwork: {egress: AllowList, allow: [{cidr: 10.0.0.1/32}]}")
                .unwrap();
        assert_eq!(template().resolve(&own, None).network, own.network);
    }

    #[test]
    fn recorded_defaults_win_over_a_changed_template() {
        let t = template();
        let mut changed = t.clone();
        changed.lifetime.ttl_seconds = Some(5);
        changed.network = Network::default();
        let recorded = AppliedTemplate {
            name: "py".into(),
            generation: Some(1),
            lifetime: t.lifetime.clone(),
            network: t.network.clone(),
        };
        let s = changed.resolve(&SandboxSpec::default(), Some(&recorded));
        assert_eq!(s.lifetime.ttl_seconds, Some(600));
        assert_eq!(s.network.egress, EgressMode::Internet);
    }

    #[test]
    fn pool_pods_have_no_egress() {
        let s = template().pool_pod_spec();
        assert_eq!(s.network, Network::default());
        assert_eq!(s.command, ["sleep", "infinity"]);
    }
}
