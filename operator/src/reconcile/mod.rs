//! Reconciling one Sandbox, as a named pipeline:
//!
//! 1. [`read`]: the sandbox's pod, as it is now.
//! 2. [`lifetime`]: the TTL and idle deadlines; a sandbox past them is expired (deleted, or kept
//!    with phase `Expired` and no pod) and the pipeline stops there.
//! 3. [`validate`]: the spec against the operator's configuration (maximum TTL and resources);
//!    a refused spec gets phase `Failed`, `Ready=False` reason `Invalid`, and no pod. A sandbox
//!    whose pod runs is never refused for what a policy change explains (a lowered maximum, an
//!    extended TTL): its TTL is clamped and condition `PolicyAdjusted` says so.
//! 4. [`crate::build`]: the NetworkPolicy and the pod, by pure functions.
//! 5. [`apply`]: server-side apply of the namespace's ResourceQuota, the NetworkPolicy (first, so
//!    a pod never runs unfenced) and the pod (only when missing: a pod's spec is immutable), after
//!    making sure the namespace has the [`agent`] ConfigMap the pod mounts.
//! 6. [`status`]: the next status, written by server-side apply on the status subresource when it
//!    differs from the current one; Events for the transitions.
//!
//! The reconcile then asks to run again exactly when the sandbox's deadline comes (or sooner, to
//! retry a pod the quota refused, or — backing off up to [`crate::caches::REJECTED_RETRY_MAX`]
//! — a pod the API server refused: phase `Failed`, reason `PodRejected`, its message).
//!
//! # No finalizer
//!
//! The operator puts no finalizer on Sandboxes. Every child (pod, NetworkPolicy) carries a
//! controller owner reference, so the API server's garbage collector deletes them with the
//! Sandbox; there is nothing left for the operator to clean up. A finalizer would add nothing but
//! a hazard: while the operator is down (or uninstalled), deleting a Sandbox — or its whole
//! namespace — would hang until someone removed the finalizer by hand. The per-namespace
//! ResourceQuota and agent ConfigMap are not owned by any Sandbox and stay with the namespace.
//!
//! Over 600 lines: the pipeline reads top to bottom in one place (with its retry without a read,
//! its expiry and its Ready gate); its steps live in the submodules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_crds::{ExpiryPolicy, Phase, Sandbox, SandboxStatus, condition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{Instrument, debug, info, warn};

use crate::build;
use crate::controller::Context;
use crate::events;

pub mod activity;
pub mod agent;
pub mod agent_verify;
pub mod apply;
pub mod create;
pub mod files;
pub mod lifetime;
pub mod read;
pub mod status;
pub mod validate;
pub mod warm;

#[cfg(test)]
mod tests;

pub(crate) use create::ensure_quota;
use create::create;
use lifetime::EndReason;
use status::{Outcome, reason};

/// How soon a pod refused by the quota is tried again.
pub const QUOTA_RETRY: Duration = Duration::from_secs(15);
/// How soon a pod is tried again while the quota controller computes a new quota's usage.
pub const QUOTA_INITIALIZING_RETRY: Duration = Duration::from_secs(2);
/// How soon a sandbox whose pod name is taken (by a pod not yet garbage-collected) is looked at
/// again.
pub const NAME_TAKEN_RETRY: Duration = Duration::from_secs(10);

/// A reconcile that failed; the controller retries it (see [`crate::controller::error_policy`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error(transparent)]
    Lifetime(#[from] lifetime::LifetimeError),
    #[error(transparent)]
    Build(#[from] build::BuildError),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error(transparent)]
    Warm(#[from] warm::WarmError),
    #[error(transparent)]
    Files(#[from] files::FilesError),
    /// The pipeline ran without reading the pod and came to a step that needs it (see
    /// [`reconcile_at`]); never returned by [`reconcile_at`].
    #[error("the sandbox's pod must be read first")]
    NeedsRead,
}

impl Error {
    /// Whether the API server refused a write because the namespace is being deleted.
    pub fn is_namespace_terminating(&self) -> bool {
        match self {
            Error::Apply(apply::ApplyError::Apply {
                source: kube::Error::Api(s),
                ..
            }) => s.code == 403 && s.message.contains("because it is being terminated"),
            _ => false,
        }
    }

    /// Short label for the errors metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Read(_) => "read",
            Error::Lifetime(_) => "lifetime",
            Error::Build(_) => "build",
            Error::Apply(apply::ApplyError::Status { .. }) => "status",
            Error::Apply(apply::ApplyError::Delete { .. }) => "delete",
            Error::Apply(_) => "apply",
            Error::Warm(warm::WarmError::Template { .. }) => "template",
            Error::Warm(warm::WarmError::Claim(_)) => "claim",
            Error::Files(_) => "files",
            Error::NeedsRead => "read",
        }
    }
}

/// Entry point for the controller.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<Sandbox>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let span = tracing::info_span!(
        "reconcile",
        namespace = %guard.namespace().unwrap_or_default(),
        sandbox = %guard.name_any(),
    );
    let result = match reconcile_at(&guard, &ctx, Timestamp::now())
        .instrument(span)
        .await
    {
        // The namespace is being deleted, and the Sandbox with it: nothing to create any more.
        Err(e) if e.is_namespace_terminating() => {
            debug!(error = %e, "namespace terminating; leaving the Sandbox to its deletion");
            Ok(Action::await_change())
        }
        other => other,
    };
    ctx.metrics.observe_duration(started.elapsed());
    result
}

/// The pipeline, at a given time (the tests fix the clock).
///
/// A Sandbox the operator has never written a status for (just created) is taken to have no pod
/// yet, without reading: its pod is created at once, and a pod of that name that exists after
/// all (made by a reconcile cut short, or someone else's) makes the create fail with
/// `AlreadyExists`, and the pipeline runs again from a fresh read; so do the steps whose outcome
/// depends on a pod (expiry, refusal).
pub async fn reconcile_at(
    guard: &DeserializeGuard<Sandbox>,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, Error> {
    let sandbox = match &guard.0 {
        Ok(sandbox) => sandbox,
        Err(invalid) => {
            malformed(guard, invalid, ctx).await;
            return Ok(Action::await_change());
        }
    };
    if sandbox.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector takes the children.
        return Ok(Action::await_change());
    }
    let unread = sandbox.status.is_none() && sandbox.spec.template_ref.is_none();
    match pipeline(sandbox, ctx, now, unread).await {
        Err(Error::Apply(apply::ApplyError::PodExists { .. }) | Error::NeedsRead) => {
            debug!("reading the sandbox's pod and starting over");
            pipeline(sandbox, ctx, now, false).await
        }
        other => other,
    }
}

async fn pipeline(sandbox: &Sandbox, ctx: &Context, now: Timestamp, unread: bool) -> Result<Action, Error> {
    // 1. read
    let observed = if unread {
        read::Observed::default()
    } else {
        read::observe(&ctx.client, sandbox, &warm::pod_names(ctx, sandbox)).await?
    };
    let prev = sandbox.status.clone().unwrap_or_default();

    // (a Sandbox made from a template: the template applied; see `warm`)
    let has_pod = observed.own_pod(sandbox).is_some();
    let resolved = warm::resolve(ctx, sandbox, has_pod).await?;
    let (sandbox, template) = match &resolved {
        warm::Resolved::Plain => (sandbox, None),
        warm::Resolved::Templated { sandbox, template } => (&**sandbox, template.as_deref()),
        warm::Resolved::Missing(message) => {
            return template_missing(ctx, sandbox, &prev, message, now).await;
        }
    };

    // 2. lifetime
    let ttl = validate::ttl(sandbox, &ctx.config);
    let ttl_seconds = ttl.applied;
    let annotated = lifetime::last_activity(sandbox).unwrap_or_else(|error| {
        warn!(%error, "ignoring the last-activity annotation");
        None
    });
    // The latest activity known: the gateway's annotation, or what an earlier reconcile learnt
    // (from the agent) and wrote to the status.
    let mut last_activity = annotated.max(prev.last_activity_time.as_ref().map(|t| t.0));
    let mut deadlines = lifetime::deadlines(
        sandbox,
        ttl_seconds,
        prev.ready_time.as_ref().map(|t| t.0),
        last_activity,
    )?;
    // Idle by the timestamps: ask the agent whether anything runs before believing it.
    if deadlines.ended(now) == Some(lifetime::EndReason::IdleTimeout) && already_expired(&prev).is_none() {
        if let Some(seen) = agent_activity(ctx, sandbox, &observed, now).await {
            let at = match seen {
                activity::Seen::Active => now,
                activity::Seen::IdleSince(t) => t,
            };
            let at = lifetime::whole_seconds(at);
            if last_activity.is_none_or(|l| at > l) {
                last_activity = Some(at);
                deadlines = lifetime::deadlines(
                    sandbox,
                    ttl_seconds,
                    prev.ready_time.as_ref().map(|t| t.0),
                    last_activity,
                )?;
            }
        }
    }
    let status_ctx = |runtime_class, adjustments| status::Context {
        sandbox,
        now,
        ttl_seconds,
        last_activity,
        runtime_class,
        adjustments,
        start_mode: None,
        template: None,
        files_written: None,
    };
    if let Some(why) = deadlines.ended(now).or_else(|| already_expired(&prev)) {
        if unread {
            return Err(Error::NeedsRead);
        }
        return expire(sandbox, ctx, &observed, why, status_ctx(None, &[])).await;
    }

    // 3. validate
    let running = observed
        .own_pod(sandbox)
        .is_some_and(|p| p.metadata.deletion_timestamp.is_none());
    // A running sandbox outside a changed policy (TTL or resource maxima, allowed RuntimeClasses,
    // egress deny-list) keeps its pod: `plan.adjustments` reports it (condition PolicyAdjusted);
    // its NetworkPolicy is rebuilt under the current deny-list all the same.
    let plan = match validate::validate_as(sandbox, &ctx.config, running) {
        Ok(plan) => plan,
        Err(_) if unread => {
            // A refusal depends on whether a pod runs (a running one is kept): read it first.
            return Err(Error::NeedsRead);
        }
        Err(invalid) => {
            if let Some(pod) = observed.own_pod(sandbox) {
                apply::delete_pod(&ctx.client, pod).await?;
            }
            let message = invalid.problem.to_string();
            let why = invalid.problem.reason();
            let next = status::next(
                &status_ctx(None, &[]),
                Outcome::Failed {
                    reason: why,
                    message: &message,
                },
            );
            write_status(ctx, sandbox, &next).await?;
            if ready_reason(&prev) != Some(why) {
                warn!(field = %invalid.problem.field(), detail = %message, "sandbox refused by the operator's policy");
                publish(
                    ctx,
                    sandbox,
                    EventType::Warning,
                    why,
                    "Validate",
                    message,
                )
                .await;
            }
            return Ok(Action::requeue(deadlines.remaining(now)));
        }
    };

    // 4. build
    let network_policy = build::network_policy(sandbox, &ctx.config)?;
    let pod = build::pod(sandbox, &plan, &ctx.config)?;
    let token_secret = match &ctx.config.direct {
        Some(d) => Some(build::token_secret(sandbox, d)?),
        None => None,
    };

    // 5. apply
    // Fail closed: no new sandbox pod in a namespace whose quota cannot be applied (a running
    // pod keeps being reported).
    let quota_problem = match ensure_quota(ctx, &sandbox.namespace().unwrap_or_default()).await {
        Ok(()) => None,
        Err(error) => {
            ctx.metrics.reconcile_error("quota");
            warn!(%error, "cannot apply the namespace's ResourceQuota");
            Some(error.to_string())
        }
    };
    // A warm pod is claimed while the Sandbox's policy is applied: until that policy exists the
    // claimed pod stays under its pool's deny-all policy (it keeps the pool-origin label), so it
    // is never less fenced; the status says Ready only after both.
    //
    // A pod about to be created is written alongside its policy (see `create`): the namespace's
    // default-deny policy fences it until its own exists.
    let creating = observed.pod.is_none()
        && template.is_none()
        && quota_problem.is_none()
        && ctx.rejections.waiting(&sandbox_key(sandbox), now).is_none();
    let claimed = match (observed.own_pod(sandbox), template) {
        (None, Some(t)) => {
            let (applied, claimed) = tokio::join!(
                apply::network_policy(&ctx.client, &network_policy),
                warm::claim(ctx, sandbox, t)
            );
            applied?;
            claimed?
        }
        _ if creating => None,
        _ => {
            apply::network_policy(&ctx.client, &network_policy).await?;
            None
        }
    };
    let found = if let Some(pod) = observed.own_pod(sandbox) {
        Found::Pod(Box::new(pod.clone()), Made::Observed)
    } else if let Some(pod) = claimed {
        Found::Pod(Box::new(pod), Made::Claimed)
    } else if let Some(other) = observed.foreign_pod(sandbox) {
        Found::Waiting(
            reason::POD_NAME_TAKEN,
            format!(
                "pod {} exists and does not belong to this Sandbox; waiting for it to go",
                other.name_any()
            ),
            NAME_TAKEN_RETRY,
        )
    } else if let Some(message) = quota_problem {
        Found::Waiting(reason::QUOTA_UNAVAILABLE, message, QUOTA_RETRY)
    } else if let Some((retry, message)) = ctx.rejections.waiting(&sandbox_key(sandbox), now) {
        // Refused a moment ago and woken early (its own status write, an event): the same
        // refusal until the back-off says to ask the API server again.
        Found::Rejected(message, retry)
    } else {
        match create(ctx, sandbox, &pod, &network_policy, token_secret.as_ref()).await {
            // Without a read, any failure may be about a pod that exists (the name taken, or
            // admission — quota, policies — answering before the API server finds that it is):
            // read, then decide.
            Err(_) if unread => return Err(Error::NeedsRead),
            Ok(created) => {
                ctx.rejections.reset(&sandbox_key(sandbox));
                Found::Pod(Box::new(created), Made::Created)
            }
            Err(apply::ApplyError::Rejected { message, .. }) => {
                let retry = ctx.rejections.next(&sandbox_key(sandbox), now, &message);
                Found::Rejected(message, retry)
            }
            Err(apply::ApplyError::QuotaExceeded { message, .. }) => {
                Found::Waiting(reason::QUOTA_EXCEEDED, message, QUOTA_RETRY)
            }
            Err(apply::ApplyError::QuotaNotReady { message, .. }) => Found::Waiting(
                reason::QUOTA_INITIALIZING,
                message,
                QUOTA_INITIALIZING_RETRY,
            ),
            Err(e) => {
                if e.is_missing_priority_class() && ctx.config.manage_priority_class {
                    warn!(
                        "PriorityClass {} is missing; creating it again",
                        build::PRIORITY_CLASS
                    );
                    apply::priority_class(&ctx.client, &build::priority_class()).await?;
                }
                return Err(e.into());
            }
        }
    };

    // 6. status
    let (start_mode, applied) = match &found {
        Found::Pod(pod, _) => (
            warm::start_mode(ctx, sandbox, pod).await?,
            warm::applied(sandbox, template),
        ),
        _ => (None, None),
    };
    // With --fence-probe the agent starts nothing and serves nothing before the sandbox's
    // network is fenced (see the agent's fence.rs): a pod that just became Ready is reported
    // Ready once its agent answers, so no call reaches it (or falls back to pods/exec) earlier.
    // A claimed pool pod answered its claim already.
    let agent_waiting = match (&found, &ctx.config.direct) {
        (Found::Pod(pod, made), Some(direct))
            if ctx.config.fence_probe.is_some()
                && *made != Made::Claimed
                && status::pod_view(pod).ready
                && !(ready_reason(&prev) == Some(reason::POD_READY) && prev.pod_uid.is_some() && prev.pod_uid == pod.uid()) =>
        {
            match (airlock_crds::agent_token::agent_addr(pod), sandbox.metadata.uid.as_deref()) {
                // The message stays the same from one attempt to the next (a changed status would
                // wake the controller at once); the error itself goes to the log.
                (Some(addr), Some(uid)) => activity::answers(direct, uid, addr, AGENT_ANSWER_WITHIN).await.err().map(|error| {
                    debug!(%addr, %error, "agent does not answer yet");
                    format!("the sandbox's agent at {addr} does not answer yet: it starts once the sandbox's network is fenced")
                }),
                _ => None,
            }
        }
        _ => None,
    };
    // spec.files, once the pod is Ready and before the status says so.
    let mut files_written = None;
    let mut files_refused = None;
    if let Found::Pod(pod, _) = &found
        && agent_waiting.is_none()
        && !sandbox.spec.files.is_empty()
        && !(prev.files_written_time.is_some() && prev.pod_uid.is_some() && prev.pod_uid == pod.uid())
        && status::pod_view(pod).ready
    {
        match files::write(ctx.config.direct.as_ref(), sandbox, pod).await {
            Ok(()) => {
                info!(files = sandbox.spec.files.len(), "wrote spec.files into the sandbox");
                files_written = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
            }
            Err(e @ (files::FilesError::Refused { .. } | files::FilesError::NoDirectPath)) => {
                files_refused = Some(e.to_string());
            }
            Err(e) => return Err(Error::Files(e)),
        }
    }
    let rejected;
    let outcome = match &found {
        Found::Pod(_, _) if files_refused.is_some() => Outcome::Failed {
            reason: reason::FILES_NOT_WRITTEN,
            message: files_refused.as_deref().unwrap_or_default(),
        },
        Found::Pod(_, _) if agent_waiting.is_some() => Outcome::Pending {
            reason: reason::AGENT_STARTING,
            message: agent_waiting.as_deref().unwrap_or_default(),
        },
        Found::Pod(pod, _) => Outcome::Running(pod),
        Found::Waiting(reason, message, _) => Outcome::Pending { reason, message },
        Found::Rejected(message, _) => {
            // No retry time in the text: the status must stay the same from one attempt to the
            // next, or every write would wake the controller at once and defeat the back-off.
            rejected = format!("the API server refused the sandbox's pod: {message}");
            Outcome::Failed {
                reason: reason::POD_REJECTED,
                message: &rejected,
            }
        }
    };
    let next = status::next(
        &status::Context {
            start_mode,
            template: applied.as_ref(),
            files_written: files_written.as_ref(),
            ..status_ctx(Some(&plan.runtime_class), &plan.adjustments)
        },
        outcome,
    );
    write_status(ctx, sandbox, &next).await?;
    transition_events(ctx, sandbox, &prev, &next, &found, &plan.runtime_class).await;

    let until_deadline = next
        .expires_at
        .as_ref()
        .map_or(deadlines.remaining(now), |t| {
            Duration::try_from(t.0.duration_since(now)).unwrap_or(Duration::ZERO)
        });
    let requeue = match found {
        Found::Pod(..) if agent_waiting.is_some() => AGENT_RETRY.min(until_deadline),
        Found::Pod(..) => until_deadline,
        Found::Waiting(_, _, retry) | Found::Rejected(_, retry) => retry.min(until_deadline),
    };
    debug!(
        phase = next.phase.map(|p| p.as_str()),
        requeue_secs = requeue.as_secs_f64(),
        "reconciled"
    );
    Ok(Action::requeue(requeue))
}

/// How step 5 came by the sandbox's pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    /// It was there.
    Observed,
    /// This reconcile created it.
    Created,
    /// This reconcile claimed it from a pool.
    Claimed,
}

/// What step 5 found or made.
enum Found {
    /// The sandbox's pod, and how this reconcile came by it.
    Pod(Box<Pod>, Made),
    /// No pod: the `Ready` reason, message, and when to look again.
    Waiting(&'static str, String, Duration),
    /// The API server refused the pod (admission, validation): its message, and when to try
    /// again (backing off).
    Rejected(String, Duration),
}

/// A Sandbox whose template does not exist (and that has no pod): phase Failed, reason
/// `TemplateNotFound`, the message naming the field; looked at again shortly (the template may
/// be applied right after the Sandbox, as GitOps tools do).
async fn template_missing(
    ctx: &Context,
    sandbox: &Sandbox,
    prev: &SandboxStatus,
    message: &str,
    now: Timestamp,
) -> Result<Action, Error> {
    let ttl = validate::ttl(sandbox, &ctx.config);
    let deadlines = lifetime::deadlines(sandbox, ttl.applied, None, None)?;
    let sctx = status::Context {
        sandbox,
        now,
        ttl_seconds: ttl.applied,
        last_activity: None,
        runtime_class: None,
        adjustments: &[],
        start_mode: None,
        template: None,
        files_written: None,
    };
    if let Some(why) = deadlines.ended(now) {
        return expire(sandbox, ctx, &read::Observed::default(), why, sctx).await;
    }
    let next = status::next(
        &sctx,
        Outcome::Failed {
            reason: reason::TEMPLATE_NOT_FOUND,
            message,
        },
    );
    write_status(ctx, sandbox, &next).await?;
    if ready_reason(prev) != Some(reason::TEMPLATE_NOT_FOUND) {
        warn!(detail = %message, "sandbox's template not found");
        publish(
            ctx,
            sandbox,
            EventType::Warning,
            reason::TEMPLATE_NOT_FOUND,
            "Validate",
            message.to_string(),
        )
        .await;
    }
    Ok(Action::requeue(TEMPLATE_RETRY.min(deadlines.remaining(now))))
}

/// How long the operator waits for a new sandbox's agent to answer before reporting it as
/// starting, and how soon it asks again.
pub const AGENT_ANSWER_WITHIN: Duration = Duration::from_millis(500);
pub const AGENT_RETRY: Duration = Duration::from_millis(250);

/// How soon a Sandbox whose template is missing looks again.
pub const TEMPLATE_RETRY: Duration = Duration::from_secs(5);

/// What the sandbox's agent says about activity (direct path only; `None` when the pod has no
/// agent port or the agent does not answer: then the timestamps decide, as before).
async fn agent_activity(
    ctx: &Context,
    sandbox: &Sandbox,
    observed: &read::Observed,
    now: Timestamp,
) -> Option<activity::Seen> {
    let direct = ctx.config.direct.as_ref()?;
    let pod = observed.own_pod(sandbox)?;
    let addr = airlock_crds::agent_token::agent_addr(pod)?;
    let uid = sandbox.metadata.uid.as_deref()?;
    match activity::ask(direct, uid, addr, now).await {
        Ok(seen) => {
            info!(?seen, "idle by the timestamps; the agent says");
            Some(seen)
        }
        Err(error) => {
            warn!(%error, %addr, "could not ask the sandbox's agent about activity");
            None
        }
    }
}

/// Key of a sandbox in per-sandbox memory: its uid (a re-created Sandbox starts afresh).
fn sandbox_key(sandbox: &Sandbox) -> String {
    sandbox.uid().unwrap_or_else(|| {
        format!(
            "{}/{}",
            sandbox.namespace().unwrap_or_default(),
            sandbox.name_any()
        )
    })
}

/// Expiry is final: a sandbox kept as Expired stays Expired even if its TTL is raised later.
fn already_expired(prev: &SandboxStatus) -> Option<EndReason> {
    if prev.phase != Some(Phase::Expired) {
        return None;
    }
    let idle = prev
        .conditions
        .iter()
        .any(|c| c.type_ == condition::EXPIRED && c.reason == EndReason::IdleTimeout.as_str());
    Some(if idle {
        EndReason::IdleTimeout
    } else {
        EndReason::TtlExpired
    })
}

/// End of life: delete the Sandbox, or (`onExpiry: Retain`) delete its pod and mark it Expired.
async fn expire(
    sandbox: &Sandbox,
    ctx: &Context,
    observed: &read::Observed,
    why: EndReason,
    status_ctx: status::Context<'_>,
) -> Result<Action, Error> {
    let prev_phase = sandbox.status.as_ref().and_then(|s| s.phase);
    let what = match why {
        EndReason::TtlExpired => "time-to-live",
        EndReason::IdleTimeout => "idle timeout",
    };
    match sandbox.expiry_policy() {
        ExpiryPolicy::Delete => {
            info!(reason = why.as_str(), "sandbox expired; deleting it");
            let note = format!("{what} ran out; deleting the Sandbox");
            publish(
                ctx,
                sandbox,
                EventType::Normal,
                events::reason::EXPIRED,
                "Delete",
                note,
            )
            .await;
            apply::delete_sandbox(&ctx.client, sandbox).await?;
        }
        ExpiryPolicy::Retain => {
            if let Some(pod) = observed
                .own_pod(sandbox)
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                apply::delete_pod(&ctx.client, pod).await?;
            }
            let next = status::next(&status_ctx, Outcome::Expired(why));
            write_status(ctx, sandbox, &next).await?;
            if prev_phase != Some(Phase::Expired) {
                info!(
                    reason = why.as_str(),
                    "sandbox expired; pod deleted, Sandbox kept"
                );
                let mut note = format!("{what} ran out; the pod was deleted and the Sandbox kept");
                if let (None, Some(tool)) =
                    (sandbox.spec.lifetime.on_expiry, sandbox.gitops_manager())
                {
                    note.push_str(&format!(
                        " (managed by {tool}: deleting it would make {tool} create it again)"
                    ));
                }
                publish(
                    ctx,
                    sandbox,
                    EventType::Normal,
                    events::reason::EXPIRED,
                    "DeletePod",
                    note,
                )
                .await;
            }
        }
    }
    Ok(Action::await_change())
}

/// Server-side applies the status if it changed.
async fn write_status(ctx: &Context, sandbox: &Sandbox, next: &SandboxStatus) -> Result<(), Error> {
    let prev = sandbox.status.as_ref();
    if prev == Some(next) {
        return Ok(());
    }
    apply::status(&ctx.client, sandbox, next).await?;
    if prev.and_then(|s| s.phase) != next.phase {
        info!(
            phase = next.phase.map(|p| p.as_str()),
            reason = ready_reason(next),
            pod_ip = next.pod_ip.as_deref(),
            node = next.node_name.as_deref(),
            "sandbox phase changed"
        );
    }
    Ok(())
}

fn ready_reason(status: &SandboxStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
        .map(|c| c.reason.as_str())
}

/// Events for what changed in this reconcile.
async fn transition_events(
    ctx: &Context,
    sandbox: &Sandbox,
    prev: &SandboxStatus,
    next: &SandboxStatus,
    found: &Found,
    runtime_class: &str,
) {
    let ns = sandbox.namespace().unwrap_or_default();
    let template = sandbox.spec.template_ref.as_ref().map(|t| t.name.as_str());
    if let Found::Pod(pod, Made::Created) = found {
        info!(pod = %pod.name_any(), runtime_class, "created pod");
        let mut note = format!(
            "created pod {ns}/{} (runtime class {runtime_class})",
            pod.name_any()
        );
        if let Some(t) = template {
            note.push_str(&format!(
                "; cold start: no pool of SandboxTemplate {t} had a Ready pod to claim"
            ));
        }
        publish(
            ctx,
            sandbox,
            EventType::Normal,
            events::reason::CREATED,
            "CreatePod",
            note,
        )
        .await;
    }
    if let Found::Pod(pod, Made::Claimed) = found {
        let pool = pod.labels().get(airlock_crds::labels::POOL_ORIGIN).cloned().unwrap_or_default();
        let note = format!(
            "claimed warm pod {ns}/{} from SandboxPool {pool} (SandboxTemplate {})",
            pod.name_any(),
            template.unwrap_or_default()
        );
        publish(
            ctx,
            sandbox,
            EventType::Normal,
            events::reason::CLAIMED,
            "ClaimPod",
            note,
        )
        .await;
    }
    let became = |phase| prev.phase != Some(phase) && next.phase == Some(phase);
    let message = || {
        next.conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    if became(Phase::Ready) {
        let note = format!(
            "sandbox is ready (pod IP {}, node {})",
            next.pod_ip.as_deref().unwrap_or("-"),
            next.node_name.as_deref().unwrap_or("-")
        );
        publish(
            ctx,
            sandbox,
            EventType::Normal,
            events::reason::READY,
            "Ready",
            note,
        )
        .await;
    }
    if became(Phase::Failed) {
        let note = format!("{}: {}", ready_reason(next).unwrap_or("Failed"), message());
        warn!(%note, "sandbox failed");
        publish(
            ctx,
            sandbox,
            EventType::Warning,
            events::reason::FAILED,
            "Observe",
            note,
        )
        .await;
    }
    let adjusted = |s: &SandboxStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition::POLICY_ADJUSTED && c.status == "True")
            .map(|c| c.message.clone())
    };
    if let (None, Some(message)) = (adjusted(prev), adjusted(next)) {
        warn!(detail = %message, "operator policy adjusted a running sandbox");
        publish(
            ctx,
            sandbox,
            EventType::Warning,
            events::reason::POLICY_ADJUSTED,
            "Validate",
            message,
        )
        .await;
    }
    if ready_reason(next) == Some(reason::QUOTA_EXCEEDED)
        && ready_reason(prev) != Some(reason::QUOTA_EXCEEDED)
    {
        warn!(detail = %message(), "pod refused by quota; retrying");
        publish(
            ctx,
            sandbox,
            EventType::Warning,
            events::reason::QUOTA_EXCEEDED,
            "CreatePod",
            message(),
        )
        .await;
    }
}

/// A Sandbox that does not deserialize (for example written before a schema change): logged and
/// reported as an Event, then left alone until it changes; the other Sandboxes carry on.
async fn malformed(guard: &DeserializeGuard<Sandbox>, invalid: &InvalidObject, ctx: &Context) {
    ctx.metrics.reconcile_error("malformed");
    warn!(error = %invalid.error, "cannot read Sandbox; ignoring it until it changes");
    let note = format!("the operator cannot read this Sandbox: {}", invalid.error);
    events::publish(
        &ctx.recorder,
        &guard.object_ref(&()),
        EventType::Warning,
        events::reason::INVALID,
        "Read",
        note,
    )
    .await;
}

async fn publish(
    ctx: &Context,
    sandbox: &Sandbox,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    events::publish(
        &ctx.recorder,
        &sandbox.object_ref(&()),
        type_,
        reason,
        action,
        note,
    )
    .await;
}
