//! The per-namespace ResourceQuota and the cluster-wide PriorityClass that scopes it.
//!
//! The quota is not owned by any Sandbox (it belongs to the namespace and outlives every single
//! sandbox); it carries `app.kubernetes.io/managed-by: airlock-operator` instead. Its PriorityClass
//! scope makes it count only sandbox pods, never the namespace's other workloads.
//!
//! A scoped quota can limit pods, CPU and memory, but not ephemeral storage: the API server
//! refuses `requests.ephemeral-storage` with a PriorityClass scope ("unsupported scope applied to
//! resource"). A sandbox's storage is capped by `--max-ephemeral-storage` instead.

use std::collections::BTreeMap;

use airlock_crds::labels;
use k8s_openapi::api::core::v1::{
    ResourceQuota, ResourceQuotaSpec, ScopeSelector, ScopedResourceSelectorRequirement,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{PRIORITY_CLASS, QUOTA_NAME};
use crate::config::QuotaConfig;

fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(
        labels::MANAGED_BY.to_string(),
        labels::MANAGED_BY_OPERATOR.to_string(),
    )])
}

/// The ResourceQuota `airlock-sandboxes` of a namespace.
pub fn resource_quota(namespace: &str, quota: &QuotaConfig) -> ResourceQuota {
    let hard = BTreeMap::from([
        ("pods".to_string(), Quantity(quota.pods.to_string())),
        ("requests.cpu".to_string(), quota.cpu.clone()),
        ("limits.cpu".to_string(), quota.cpu.clone()),
        ("requests.memory".to_string(), quota.memory.clone()),
        ("limits.memory".to_string(), quota.memory.clone()),
    ]);
    ResourceQuota {
        metadata: ObjectMeta {
            name: Some(QUOTA_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(managed_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            scope_selector: Some(ScopeSelector {
                match_expressions: Some(vec![ScopedResourceSelectorRequirement {
                    scope_name: "PriorityClass".into(),
                    operator: "In".into(),
                    values: Some(vec![PRIORITY_CLASS.into()]),
                }]),
            }),
            scopes: None,
        }),
        status: None,
    }
}

/// The PriorityClass `airlock-sandbox`: value 0 (same as pods without a class), never preempts
/// anything, never the cluster default.
pub fn priority_class() -> PriorityClass {
    PriorityClass {
        metadata: ObjectMeta {
            name: Some(PRIORITY_CLASS.into()),
            labels: Some(managed_labels()),
            ..ObjectMeta::default()
        },
        value: 0,
        global_default: Some(false),
        preemption_policy: Some("Never".into()),
        description: Some(
            "Airlock sandbox pods. Exists so the per-namespace ResourceQuota airlock-sandboxes counts only sandboxes."
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn quota_from_config() {
        let q = resource_quota("team-a", Config::defaults().quota.as_ref().unwrap());
        assert_eq!(q.metadata.name.as_deref(), Some("airlock-sandboxes"));
        assert_eq!(q.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            q.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "airlock-operator"
        );
        assert_eq!(
            q.metadata.owner_references, None,
            "per namespace, not owned by a sandbox"
        );
        let spec = q.spec.unwrap();
        let hard: BTreeMap<&str, &str> = spec
            .hard
            .as_ref()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.0.as_str()))
            .collect();
        assert_eq!(
            hard,
            BTreeMap::from([
                ("pods", "50"),
                ("requests.cpu", "32"),
                ("limits.cpu", "32"),
                ("requests.memory", "64Gi"),
                ("limits.memory", "64Gi"),
            ])
        );
        let req = &spec.scope_selector.unwrap().match_expressions.unwrap()[0];
        assert_eq!(
            (req.scope_name.as_str(), req.operator.as_str()),
            ("PriorityClass", "In")
        );
        assert_eq!(req.values.as_ref().unwrap(), &["airlock-sandbox"]);
    }

    #[test]
    fn priority_class_never_preempts() {
        let pc = priority_class();
        assert_eq!(pc.metadata.name.as_deref(), Some("airlock-sandbox"));
        assert_eq!(pc.value, 0);
        assert_eq!(pc.global_default, Some(false));
        assert_eq!(pc.preemption_policy.as_deref(), Some("Never"));
    }
}
