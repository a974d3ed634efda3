//! The agent ConfigMap of a namespace (`--agent-delivery=config-map`): airlock-boot and the
//! compressed agent, which every sandbox pod of the namespace mounts (see [`crate::bundle`]).
//!
//! One per namespace and bundle version, shared by the namespace's sandboxes, so it has no owner:
//! like `kube-root-ca.crt`, it stays while the namespace does. It is immutable (the kubelet then
//! need not watch it) and named after its content; the operator removes older versions that no
//! pod uses any more (`reconcile::agent`).

use std::collections::BTreeMap;

use airlock_crds::labels;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::bundle::{AGENT_KEY, AgentBundle, BOOT_KEY};

/// `app.kubernetes.io/component` of agent ConfigMaps.
pub const COMPONENT_BUNDLE: &str = "agent-bundle";
/// Label of a sandbox pod naming the agent ConfigMap it mounts.
pub const BUNDLE_LABEL: &str = "airlock.dev/agent-bundle";

/// Label selector of the operator's agent ConfigMaps.
pub fn bundle_selector() -> String {
    format!(
        "{}={COMPONENT_BUNDLE},{}={}",
        labels::COMPONENT,
        labels::MANAGED_BY,
        labels::MANAGED_BY_OPERATOR
    )
}

/// The agent ConfigMap for `namespace`.
pub fn config_map(bundle: &AgentBundle, namespace: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(bundle.name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (labels::COMPONENT.to_string(), COMPONENT_BUNDLE.to_string()),
                (
                    labels::MANAGED_BY.to_string(),
                    labels::MANAGED_BY_OPERATOR.to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([
            (BOOT_KEY.to_string(), ByteString(bundle.boot.clone())),
            (AGENT_KEY.to_string(), ByteString(bundle.agent.clone())),
        ])),
        immutable: Some(true),
        data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_map_holds_both_programs_immutably() {
        let b = AgentBundle::new(b"BOOT".to_vec(), b"AGENT").unwrap();
        let cm = config_map(&b, "team-a");
        let v = serde_json::to_value(&cm).unwrap();
        assert_eq!(v["metadata"]["name"], b.name.as_str());
        assert_eq!(v["metadata"]["namespace"], "team-a");
        assert_eq!(
            v["metadata"]["labels"]["app.kubernetes.io/component"],
            "agent-bundle"
        );
        assert_eq!(
            v["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "airlock-operator"
        );
        assert!(v["metadata"].get("ownerReferences").is_none());
        assert_eq!(v["immutable"], true);
        assert_eq!(v["binaryData"]["boot"], "Qk9PVA==");
        let bin = cm.binary_data.unwrap();
        assert_eq!(bin["agent.z"].0, b.agent);
        assert!(v.get("data").is_none());
        assert_eq!(
            bundle_selector(),
            "app.kubernetes.io/component=agent-bundle,app.kubernetes.io/managed-by=airlock-operator"
        );
    }
}
