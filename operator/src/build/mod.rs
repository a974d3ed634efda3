//! Pure functions from a (validated) Sandbox to the objects the operator applies: the pod, the
//! NetworkPolicy, the agent token Secret, the per-namespace ResourceQuota and agent ConfigMap, and
//! the cluster's PriorityClass.
//!
//! Nothing here talks to the API server; every function is deterministic, so the tests can check
//! the objects field by field.

use std::collections::BTreeMap;

use airlock_crds::{Sandbox, labels};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

pub mod agent;
pub mod netpol;
pub mod pod;
pub mod quota;
pub mod token;

pub use netpol::network_policy;
pub use pod::pod;
pub use quota::{priority_class, resource_quota};
pub use token::token_secret;

/// PriorityClass of every sandbox pod, also the scope of the per-namespace ResourceQuota.
pub const PRIORITY_CLASS: &str = "airlock-sandbox";
/// Name of the per-namespace ResourceQuota.
pub const QUOTA_NAME: &str = "airlock-sandboxes";

/// Why a child object cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("Sandbox {namespace}/{name} has no uid yet, so its children cannot reference it")]
    MissingUid { namespace: String, name: String },
    #[error("Sandbox {name:?} has no namespace")]
    MissingNamespace { name: String },
}

/// Labels of every child object of a sandbox.
pub fn child_labels(sandbox_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::SANDBOX_NAME.to_string(), sandbox_name.to_string()),
        (
            labels::COMPONENT.to_string(),
            labels::COMPONENT_SANDBOX.to_string(),
        ),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_OPERATOR.to_string(),
        ),
    ])
}

/// Metadata of a child object: same namespace as the sandbox, the given name, the child labels and a
/// controller owner reference to the sandbox (garbage collection removes the child with it).
pub fn child_meta(sandbox: &Sandbox, name: String) -> Result<ObjectMeta, BuildError> {
    let namespace = sandbox
        .namespace()
        .ok_or_else(|| BuildError::MissingNamespace {
            name: sandbox.name_any(),
        })?;
    let owner = owner_reference(sandbox)?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: Some(child_labels(&sandbox.name_any())),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// `controller: true` owner reference to the sandbox.
pub fn owner_reference(sandbox: &Sandbox) -> Result<OwnerReference, BuildError> {
    sandbox
        .controller_owner_ref(&())
        .ok_or_else(|| BuildError::MissingUid {
            namespace: sandbox.namespace().unwrap_or_default(),
            name: sandbox.name_any(),
        })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Sandboxes for the builder tests, written as users write them (YAML).
    use airlock_crds::Sandbox;

    /// Parses a Sandbox manifest and gives it the metadata the API server would add.
    pub fn sandbox(yaml: &str) -> Sandbox {
        let mut s: Sandbox = serde_yaml::from_str(yaml).expect("fixture is a valid Sandbox");
        s.metadata
            .uid
            .get_or_insert_with(|| "0b7c1d2e-0000-4000-8000-000000000001".into());
        s.metadata.namespace.get_or_insert_with(|| "team-a".into());
        s.metadata.generation.get_or_insert(1);
        s
    }

    pub const MINIMAL: &str = r#"
apiVersion: airlock.dev/v1alpha1
kind: Sandbox
metadata:
  name: sbx-1
spec:
  image: python:3.12-slim
"#;

    pub const FULL: &str = r#"
apiVersion: airlock.dev/v1alpha1
kind: Sandbox
metadata:
  name: sbx-full
  namespace: agents
spec:
  image: ghcr.io/acme/tools:1.2
  imagePullPolicy: Always
  command: ["python3", "-m", "http.server"]
  args: ["8000"]
  env:
    - name: MODE
      value: test
    - name: EMPTY
  workingDir: /work
  runtimeClassName: gvisor
  readOnlyRootFilesystem: true
  resources:
    cpu: 500m
    memory: 2Gi
    ephemeralStorage: 4Gi
  lifetime:
    ttlSeconds: 600
    idleTimeoutSeconds: 120
    onExpiry: Retain
  network:
    egress: AllowList
    dns: true
    allow:
      - cidr: 203.0.113.0/24
        ports:
          - port: 443
          - port: 53
            protocol: UDP
      - cidr: 2001:db8::/32
"#;
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn child_meta_has_labels_namespace_and_controller_owner() {
        let s = sandbox(MINIMAL);
        let meta = child_meta(&s, "sbx-1".into()).unwrap();
        assert_eq!(meta.name.as_deref(), Some("sbx-1"));
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        let labels = meta.labels.unwrap();
        assert_eq!(labels["airlock.dev/sandbox"], "sbx-1");
        assert_eq!(labels["app.kubernetes.io/component"], "sandbox");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "airlock-operator");
        let owners = meta.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
            ("airlock.dev/v1alpha1", "Sandbox", "sbx-1")
        );
        assert_eq!(o.uid, "0b7c1d2e-0000-4000-8000-000000000001");
        assert_eq!(o.controller, Some(true));
        // Not set: blocking the owner's deletion would need extra RBAC (sandboxes/finalizers)
        // under the OwnerReferencesPermissionEnforcement admission plugin, for no gain.
        assert_eq!(o.block_owner_deletion, None);
    }

    #[test]
    fn no_uid_is_an_error_not_a_panic() {
        let mut s = sandbox(MINIMAL);
        s.metadata.uid = None;
        let err = child_meta(&s, "x".into()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Sandbox team-a/sbx-1 has no uid yet, so its children cannot reference it"
        );
    }
}
