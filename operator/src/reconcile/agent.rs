//! Part of step 5 (`--agent-delivery=config-map`): the namespace's agent ConfigMap exists before a
//! sandbox pod that mounts it is created.
//!
//! Checked with a metadata-only GET (the ConfigMap is most of a MiB) at most once per
//! [`BUNDLE_REFRESH`] per namespace, and only when a pod is about to be created; a ConfigMap the
//! operator has not verified yet (by uid) is then read in full and compared ([`agent_verify`]). When this operator
//! creates its version of the ConfigMap in a namespace, it deletes the older versions that no pod
//! of the namespace mounts any more (after an upgrade).

use std::time::Duration;

use airlock_crds::Sandbox;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::agent_verify;
use super::apply::{ApplyError, FIELD_MANAGER};
use crate::build::agent::{BUNDLE_LABEL, bundle_selector, config_map};
use crate::config::Agent;
use crate::controller::Context;

/// How long a namespace's agent ConfigMap is trusted to still exist without looking again.
pub const BUNDLE_REFRESH: Duration = Duration::from_secs(60);

/// Makes sure the namespace has the agent ConfigMap `pod` mounts (nothing to do for a pod without
/// one: the init-container delivery, or an image that brings its agent), and that it holds the
/// operator's bundle ([`agent_verify`]: one found there is read in full and replaced if it differs).
pub async fn ensure(ctx: &Context, sandbox: &Sandbox, pod: &Pod) -> Result<(), ApplyError> {
    ensure_for(ctx, &sandbox.object_ref(&()), pod).await
}

/// [`ensure`] for a pod of any owner (a SandboxPool's); events about the ConfigMap are about
/// `regarding`.
pub async fn ensure_for(ctx: &Context, regarding: &ObjectReference, pod: &Pod) -> Result<(), ApplyError> {
    let Agent::ConfigMap(bundle) = &ctx.config.agent else {
        return Ok(());
    };
    if pod.labels().get(BUNDLE_LABEL) != Some(&bundle.name) {
        return Ok(());
    }
    let namespace = pod.namespace().unwrap_or_default();
    let namespace = namespace.as_str();
    if !ctx.bundles.due(namespace, BUNDLE_REFRESH) {
        return Ok(());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let failed = ApplyError::config_map(namespace, &bundle.name);
    match api.get_metadata_opt(&bundle.name).await.map_err(&failed)? {
        Some(meta) => {
            agent_verify::existing(ctx, regarding, bundle, namespace, meta.uid().as_deref()).await?
        }
        None => {
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            match api.create(&pp, &config_map(bundle, namespace)).await {
                Ok(cm) => {
                    info!(configmap = %bundle.name, "created the namespace's agent ConfigMap");
                    ctx.verified_bundles.mark(namespace, cm.uid());
                }
                // Someone was first: another replica, an earlier reconcile, or not the operator.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    agent_verify::existing(ctx, regarding, bundle, namespace, None).await?
                }
                Err(e) => return Err(failed(e)),
            }
            prune(ctx, namespace, &bundle.name).await;
        }
    }
    ctx.bundles.mark(namespace);
    Ok(())
}

/// Deletes the namespace's agent ConfigMaps other than `current` that no pod mounts. Best effort:
/// a failure is logged and tried again after the next operator upgrade.
async fn prune(ctx: &Context, namespace: &str, current: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let old = match cms
        .list_metadata(&ListParams::default().labels(&bundle_selector()))
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            warn!(%error, "cannot list old agent ConfigMaps");
            return;
        }
    };
    for cm in old {
        let name = cm.name_any();
        if name == current {
            continue;
        }
        let users = ListParams::default()
            .labels(&format!("{BUNDLE_LABEL}={name}"))
            .limit(1);
        match pods.list_metadata(&users).await {
            Ok(list) if list.items.is_empty() => match cms
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => info!(configmap = %name, "deleted an older agent ConfigMap no pod uses"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(error) => {
                    warn!(configmap = %name, %error, "cannot delete an older agent ConfigMap")
                }
            },
            Ok(_) => {
                debug!(configmap = %name, "older agent ConfigMap still mounted by a pod; kept")
            }
            Err(error) => {
                warn!(configmap = %name, %error, "cannot list the pods using an older agent ConfigMap")
            }
        }
    }
}
