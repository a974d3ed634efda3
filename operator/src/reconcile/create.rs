//! Step 5 for a sandbox without a pod, and the per-namespace objects every sandbox pod needs
//! first: the ResourceQuota and the default-deny NetworkPolicy (the agent ConfigMap is
//! [`super::agent`]).

use airlock_crds::Sandbox;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tracing::{debug, info};

use super::{Error, agent, apply};
use crate::build;
use crate::controller::Context;

/// Step 5 for a sandbox without a pod: the pod, its NetworkPolicy and its agent token Secret,
/// written at the same time once the namespace's default-deny policy and agent ConfigMap exist.
///
/// The default-deny policy ([`build::netpol::namespace_fence`]) selects every sandbox pod, so the
/// pod is fenced (no ingress, no egress) from its first instant whatever the order in which the
/// API server takes the three writes; its own policy only ever adds what its spec allows. The
/// kubelet reads the token Secret when it starts the container, after scheduling and sandbox
/// creation (hundreds of milliseconds); were it later still, the kubelet retries. The status says
/// Ready only after all three succeeded (an error here fails the reconcile, which retries).
pub(crate) async fn create(
    ctx: &Context,
    sandbox: &Sandbox,
    pod: &Pod,
    network_policy: &k8s_openapi::api::networking::v1::NetworkPolicy,
    token_secret: Option<&k8s_openapi::api::core::v1::Secret>,
) -> Result<Pod, apply::ApplyError> {
    ensure_fence(ctx, &sandbox.namespace().unwrap_or_default()).await?;
    agent::ensure(ctx, sandbox, pod).await?;
    let secret = async {
        match token_secret {
            Some(secret) => apply::token_secret(&ctx.client, secret).await,
            None => Ok(()),
        }
    };
    let (policy, secret, created) = tokio::join!(
        apply::network_policy(&ctx.client, network_policy),
        secret,
        apply::create_pod(&ctx.client, pod)
    );
    // A pod refused or already there is reported as such; the policy and Secret first, though:
    // a created pod is not reported without them.
    policy?;
    secret?;
    created
}

/// Applies the namespace's default-deny NetworkPolicy when it is due (first sandbox pod of the
/// namespace since the operator started, [`crate::controller::QUOTA_REFRESH`] ago, or seen
/// deleted: see [`crate::caches`]).
pub(crate) async fn ensure_fence(ctx: &Context, namespace: &str) -> Result<(), apply::ApplyError> {
    if !ctx.fence_due(namespace) {
        return Ok(());
    }
    apply::network_policy(&ctx.client, &build::netpol::namespace_fence(namespace)).await?;
    debug!("applied NetworkPolicy {}", airlock_crds::labels::SANDBOX_PODS_POLICY);
    ctx.fence_applied(namespace);
    Ok(())
}

/// Applies the namespace's ResourceQuota, at most every few minutes per namespace.
pub(crate) async fn ensure_quota(ctx: &Context, namespace: &str) -> Result<(), Error> {
    let Some(quota) = &ctx.config.quota else {
        return Ok(());
    };
    if !ctx.quota_due(namespace) {
        return Ok(());
    }
    match apply::resource_quota(&ctx.client, &build::resource_quota(namespace, quota)).await? {
        apply::QuotaApplied::Applied => debug!("applied ResourceQuota {}", build::QUOTA_NAME),
        apply::QuotaApplied::LeftToOthers(message) => info!(
            detail = %message,
            "ResourceQuota {} has fields managed by someone else; leaving them as they are",
            build::QUOTA_NAME
        ),
    }
    ctx.quota_applied(namespace);
    Ok(())
}

