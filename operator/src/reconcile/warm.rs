//! The parts of the pipeline for Sandboxes made from a SandboxTemplate (`spec.templateRef`):
//!
//! - before step 2, [`resolve`]: the template's pod spec and defaults merged with the Sandbox's own
//!   fields ([`airlock_crds::SandboxTemplateSpec::resolve`]); the rest of the pipeline works on
//!   the result as on any Sandbox. Lifetime and network defaults come from `status.template`
//!   once the pod started (the template as it was then), so editing a template never shortens
//!   or opens up a running sandbox.
//! - in step 1, [`pod_names`]: where the sandbox's pod may be besides its own name (a claimed pool
//!   pod keeps the pool's name).
//! - in step 5, before a cold start, [`claim`]: a Ready pod of a pool of the template, adopted
//!   and bound ([`crate::pool::claim`]).

use std::sync::Arc;

use airlock_crds::{AppliedTemplate, Sandbox, SandboxTemplate, SandboxTemplateSpec, StartMode, labels};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::controller::Context;
use crate::pool::claim::{self, ClaimError};

/// Failure to read a template or to claim a pod.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("reading SandboxTemplate {namespace}/{name}: {source}")]
    Template {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

/// A Sandbox with its template applied.
pub enum Resolved {
    /// Not made from a template.
    Plain,
    /// The full spec; the template (None: deleted since the pod started, then the spec is the
    /// recorded defaults over an empty pod part, good for everything but creating a pod).
    Templated {
        sandbox: Box<Sandbox>,
        template: Option<Arc<SandboxTemplate>>,
    },
    /// The template does not exist and there is no pod: the message says so, naming the field.
    Missing(String),
}

/// Applies the Sandbox's template, if it names one.
pub async fn resolve(ctx: &Context, sandbox: &Sandbox, has_pod: bool) -> Result<Resolved, WarmError> {
    let Some(r) = &sandbox.spec.template_ref else {
        return Ok(Resolved::Plain);
    };
    let namespace = sandbox.namespace().unwrap_or_default();
    let template = ctx
        .pools
        .template(&ctx.client, &namespace, &r.name)
        .await
        .map_err(|source| WarmError::Template {
            namespace: namespace.clone(),
            name: r.name.clone(),
            source,
        })?;
    let recorded = sandbox.status.as_ref().and_then(|s| s.template.as_ref());
    let spec = match (&template, recorded) {
        (Some(t), _) => t.spec.resolve(&sandbox.spec, recorded),
        (None, Some(rec)) if has_pod => SandboxTemplateSpec::default().resolve(&sandbox.spec, Some(rec)),
        (None, _) => {
            return Ok(Resolved::Missing(format!(
                "spec.templateRef.name: SandboxTemplate {:?} not found in namespace {namespace}",
                r.name
            )));
        }
    };
    let mut full = sandbox.clone();
    full.spec = spec;
    Ok(Resolved::Templated {
        sandbox: Box::new(full),
        template,
    })
}

/// Names the sandbox's pod may have besides its own, most likely first: the pod this process
/// just claimed for it, the one its status names, a claimed pool pod in the warm-pod cache.
pub fn pod_names(ctx: &Context, sandbox: &Sandbox) -> Vec<String> {
    let uid = sandbox.uid().unwrap_or_default();
    let mut names = Vec::new();
    names.extend(ctx.pools.claims.taken_by(&uid));
    names.extend(sandbox.status.as_ref().and_then(|s| s.pod_name.clone()));
    if sandbox.spec.template_ref.is_some()
        && let Some(warm) = ctx.pools.warm()
    {
        names.extend(
            warm.state()
                .iter()
                .filter(|p| {
                    p.namespace() == sandbox.namespace()
                        && p.labels().get(labels::SANDBOX_NAME) == Some(&sandbox.name_any())
                        && p.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid)
                })
                .map(|p| p.name_any()),
        );
    }
    let own = labels::pod_name(&sandbox.name_any());
    names.retain(|n| *n != own);
    names.dedup();
    names
}

/// A Ready pool pod of `template`, adopted by the sandbox and bound to it; `None` when no pool
/// has one to give.
pub async fn claim(ctx: &Context, sandbox: &Sandbox, template: &SandboxTemplate) -> Result<Option<Pod>, WarmError> {
    let Some(warm) = ctx.pools.warm() else {
        return Ok(None);
    };
    let Some(pod) = claim::adopt(&ctx.client, &ctx.pools.claims, warm, sandbox, template).await? else {
        return Ok(None);
    };
    Ok(Some(pod))
}

/// How the sandbox's `pod` started, binding a claimed pool pod's agent to the sandbox first if
/// that is not done yet (see [`crate::pool::claim::bind`]).
pub async fn start_mode(
    ctx: &Context,
    sandbox: &Sandbox,
    pod: &Pod,
) -> Result<Option<StartMode>, WarmError> {
    if sandbox.spec.template_ref.is_none() {
        return Ok(None);
    }
    if !pod.labels().contains_key(labels::POOL_ORIGIN) {
        return Ok(Some(StartMode::Cold));
    }
    // Bound already: this very pod (its uid) was recorded Warm. A pod that replaced the one
    // first claimed (eviction, deletion) is bound again. A pod that is not Ready is left to the
    // status (its agent may be gone: binding would only wait).
    let status = sandbox.status.as_ref();
    let bound = status.and_then(|s| s.start_mode) == Some(StartMode::Warm)
        && status.and_then(|s| s.pod_uid.as_deref()).is_some_and(|u| Some(u) == pod.metadata.uid.as_deref());
    if !bound
        && crate::reconcile::status::pod_view(pod).ready
        && let Some(direct) = &ctx.config.direct
    {
        claim::bind(&ctx.client, direct, sandbox, pod).await?;
    }
    Ok(Some(StartMode::Warm))
}

/// What the status records about the template once the pod exists.
pub fn applied(sandbox: &Sandbox, template: Option<&SandboxTemplate>) -> Option<AppliedTemplate> {
    sandbox
        .status
        .as_ref()
        .and_then(|s| s.template.clone())
        .or_else(|| template.map(SandboxTemplate::applied))
}
