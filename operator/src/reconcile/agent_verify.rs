//! Part of step 5 (`--agent-delivery=config-map`): the agent ConfigMap a sandbox pod is about to
//! mount holds exactly the operator's bundle.
//!
//! The threat: the ConfigMap is found by name (`airlock-agent-<hash>`), and its `boot` program runs
//! as PID 1 of every sandbox of the namespace, seeing every command, file and environment
//! variable. Anyone who may create ConfigMaps in the namespace (the built-in `edit` role may) could
//! create one of that name first. So before the operator trusts a ConfigMap it did not create
//! itself, it reads it in full and compares it with its own bundle; one that differs is deleted and
//! replaced, with a Warning event on the Sandbox, a log line and the metric
//! `airlock_operator_agent_bundles_replaced_total`, before the pod is created. What was verified is
//! remembered per namespace by the ConfigMap's uid, so a ConfigMap deleted and created again (new
//! uid) is read again. The chart's ValidatingAdmissionPolicy (templates/vap-agent-bundle.yaml)
//! closes the remaining window between this check and the kubelet's mount: nobody but the operator
//! (and cluster administrators) may create, change or delete these ConfigMaps.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::apply::{ApplyError, FIELD_MANAGER};
use crate::build::agent::config_map;
use crate::bundle::{AGENT_KEY, AgentBundle, BOOT_KEY};
use crate::controller::Context;
use crate::events;

/// Per namespace, the uid of the agent ConfigMap known to hold the operator's bundle.
#[derive(Default)]
pub struct Verified(Mutex<HashMap<String, String>>);

impl Verified {
    pub(crate) fn contains(&self, namespace: &str, uid: &str) -> bool {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(namespace).is_some_and(|u| u == uid)
    }

    pub(crate) fn mark(&self, namespace: &str, uid: Option<String>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match uid {
            Some(uid) => map.insert(namespace.to_string(), uid),
            None => map.remove(namespace),
        };
    }
}

/// How a ConfigMap differs from the operator's bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("it is not immutable")]
    Mutable,
    #[error("it has text data keys {0:?}")]
    TextData(Vec<String>),
    #[error("its binary keys are {found:?}, not [\"{AGENT_KEY}\", \"{BOOT_KEY}\"]")]
    Keys { found: Vec<String> },
    #[error("{key} has sha256 {found}, the operator's has {expected}")]
    Content {
        key: &'static str,
        found: String,
        expected: String,
    },
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `cm` holds exactly `bundle`: immutable, no text data, binary data with the two keys and
/// the operator's bytes. Pure.
pub fn compare(cm: &ConfigMap, bundle: &AgentBundle) -> Result<(), Mismatch> {
    if let Some(data) = cm.data.as_ref().filter(|d| !d.is_empty()) {
        return Err(Mismatch::TextData(data.keys().cloned().collect()));
    }
    let binary = cm.binary_data.clone().unwrap_or_default();
    let keys: Vec<String> = binary.keys().cloned().collect();
    if keys != [AGENT_KEY, BOOT_KEY] {
        return Err(Mismatch::Keys { found: keys });
    }
    for (key, expected) in [(BOOT_KEY, &bundle.boot), (AGENT_KEY, &bundle.agent)] {
        let found = &binary[key].0;
        if found != expected {
            return Err(Mismatch::Content {
                key,
                found: sha256(found),
                expected: sha256(expected),
            });
        }
    }
    // Checked last, so a wrong content is reported as such. A mutable copy with the right bytes
    // could be rewritten after this check.
    if cm.immutable != Some(true) {
        return Err(Mismatch::Mutable);
    }
    Ok(())
}

/// Makes sure the namespace's ConfigMap `bundle.name`, which exists with `uid` (`None`: unknown,
/// for example after losing a create race), is the operator's; replaces it when it is not.
/// Fails (so no pod is created) when it cannot tell or cannot replace it.
pub async fn existing(
    ctx: &Context,
    regarding: &ObjectReference,
    bundle: &AgentBundle,
    namespace: &str,
    uid: Option<&str>,
) -> Result<(), ApplyError> {
    if uid.is_some_and(|uid| ctx.verified_bundles.contains(namespace, uid)) {
        return Ok(());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let failed = ApplyError::config_map(namespace, &bundle.name);
    let Some(cm) = api.get_opt(&bundle.name).await.map_err(&failed)? else {
        // Deleted since it was seen: create ours.
        let created = create(&api, bundle, namespace).await.map_err(&failed)?;
        ctx.verified_bundles.mark(namespace, created.uid());
        return Ok(());
    };
    match compare(&cm, bundle) {
        Ok(()) => {
            ctx.verified_bundles.mark(namespace, cm.uid());
            Ok(())
        }
        Err(mismatch) => replace(ctx, regarding, &api, bundle, &cm, mismatch).await,
    }
}

async fn create(
    api: &Api<ConfigMap>,
    bundle: &AgentBundle,
    namespace: &str,
) -> Result<ConfigMap, kube::Error> {
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    api.create(&pp, &config_map(bundle, namespace)).await
}

/// Deletes the impostor `cm` (only that object: uid precondition) and creates the operator's.
async fn replace(
    ctx: &Context,
    regarding: &ObjectReference,
    api: &Api<ConfigMap>,
    bundle: &AgentBundle,
    cm: &ConfigMap,
    mismatch: Mismatch,
) -> Result<(), ApplyError> {
    let namespace = cm.namespace().unwrap_or_default();
    let name = cm.name_any();
    ctx.verified_bundles.mark(&namespace, None);
    ctx.metrics.agent_bundles_replaced.inc();
    let managers: Vec<String> = cm
        .managed_fields()
        .iter()
        .filter_map(|f| f.manager.clone())
        .collect();
    warn!(
        configmap = %name,
        uid = cm.uid().unwrap_or_default(),
        %mismatch,
        ?managers,
        "the namespace's agent ConfigMap is not the operator's; replacing it before creating the pod"
    );
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cm.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(source) => {
            return Err(ApplyError::Delete {
                kind: "ConfigMap",
                namespace,
                name,
                source,
            });
        }
    }
    // A 409 here means someone created it again meanwhile: fail, and look again on the retry.
    let created = create(api, bundle, &namespace)
        .await
        .map_err(|source| ApplyError::Apply {
            kind: "ConfigMap",
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    ctx.verified_bundles.mark(&namespace, created.uid());
    info!(configmap = %name, "replaced the agent ConfigMap with the operator's");
    let note = format!(
        "ConfigMap {namespace}/{name} was not the operator's agent bundle ({mismatch}); the operator deleted it and created its own before starting the pod"
    );
    events::publish(
        &ctx.recorder,
        regarding,
        EventType::Warning,
        events::reason::AGENT_BUNDLE_REPLACED,
        "VerifyAgentBundle",
        note,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn bundle() -> AgentBundle {
        AgentBundle::new(b"boot".to_vec(), b"agent").unwrap()
    }

    #[test]
    fn the_operators_own_config_map_matches() {
        let b = bundle();
        assert_eq!(compare(&config_map(&b, "team-a"), &b), Ok(()));
    }

    #[test]
    fn every_difference_is_a_mismatch_naming_it() {
        let b = bundle();
        let ours = config_map(&b, "team-a");

        let mut boot = ours.clone();
        boot.binary_data.as_mut().unwrap().insert(
            BOOT_KEY.into(),
            ByteString(b"#!/bin/sh\necho pwned".to_vec()),
        );
        let e = compare(&boot, &b).unwrap_err();
        assert!(matches!(e, Mismatch::Content { key: "boot", .. }), "{e}");
        assert!(e.to_string().contains(&sha256(b"boot")), "{e}");

        let mut agent = ours.clone();
        agent
            .binary_data
            .as_mut()
            .unwrap()
            .insert(AGENT_KEY.into(), ByteString(b"other".to_vec()));
        assert!(matches!(
            compare(&agent, &b),
            Err(Mismatch::Content { key: "agent.z", .. })
        ));

        let mut mutable = ours.clone();
        mutable.immutable = None;
        assert_eq!(compare(&mutable, &b), Err(Mismatch::Mutable));

        let mut text = ours.clone();
        text.data = Some([("boot".to_string(), "x".to_string())].into());
        assert_eq!(
            compare(&text, &b),
            Err(Mismatch::TextData(vec!["boot".into()]))
        );

        let mut extra = ours.clone();
        extra
            .binary_data
            .as_mut()
            .unwrap()
            .insert("preload.so".into(), ByteString(vec![1]));
        assert!(matches!(compare(&extra, &b), Err(Mismatch::Keys { .. })));

        let mut empty = ours;
        empty.binary_data = None;
        assert_eq!(compare(&empty, &b), Err(Mismatch::Keys { found: vec![] }));
    }
}
