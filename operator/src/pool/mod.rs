//! SandboxPools: keep `spec.replicas` pods made from a SandboxTemplate started and Ready, so a
//! Sandbox naming the template claims one ([`claim`]) instead of waiting for a pod to start.
//!
//! One pool's reconcile:
//! 1. its template (missing: condition `Ready=False`, reason `TemplateNotFound`, no pods);
//! 2. its deny-all NetworkPolicy ([`build::network_policy`]), applied before any pod;
//! 3. its pods (a fresh list by label: the cache may lag the pool's own creations, and creating
//!    twice the missing pods is what must not happen);
//! 4. pods made from an older revision of the template are deleted (unclaimed only: a claimed pod
//!    left the pool and is its Sandbox's), surplus pods too (not-Ready first);
//! 5. missing pods are created, at most [`MAX_CREATES`] per reconcile, [`CREATE_CONCURRENCY`]
//!    at a time (each: its token Secret, then the pod): refill is quick and never floods the API
//!    server; the next pass comes as soon as the pods it created are seen;
//! 6. the status (server-side apply on the status subresource, when it changed).

pub mod build;
pub mod claim;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use airlock_crds::{SandboxPool, SandboxPoolStatus, SandboxTemplate, labels};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::controller::Context;
use crate::reconcile::apply::{self, ApplyError, FIELD_MANAGER};

/// Most pods one reconcile creates.
pub const MAX_CREATES: usize = 10;
/// Pods created at the same time.
pub const CREATE_CONCURRENCY: usize = 4;
/// Most pods one reconcile deletes.
pub const MAX_DELETES: usize = 20;
/// How soon a pool without its template looks again.
const TEMPLATE_RETRY: Duration = Duration::from_secs(30);
/// How soon a pool whose pods were refused (quota, admission) tries again.
const REFUSED_RETRY: Duration = Duration::from_secs(15);
/// A pool at its size looks again this often anyway.
const RESYNC: Duration = Duration::from_secs(300);

/// What the Sandbox reconciles share with the pools: the warm pods (every pod a pool made, by
/// label [`labels::POOL_ORIGIN`]) and the templates, both cached, and the claims in flight.
#[derive(Default)]
pub struct Pools {
    pub claims: claim::Claims,
    warm: OnceLock<Store<Pod>>,
    templates: OnceLock<Store<DeserializeGuard<SandboxTemplate>>>,
}

impl Pools {
    /// The cached pods of every pool (empty until the pool controller runs).
    pub fn warm(&self) -> Option<&Store<Pod>> {
        self.warm.get()
    }

    /// The template `name` in `namespace`: from the cache, else read (a template created a moment
    /// ago may not be cached yet). `None` when it does not exist.
    pub async fn template(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SandboxTemplate>>, kube::Error> {
        if let Some(Ok(t)) = self
            .templates
            .get()
            .and_then(|s| s.get(&ObjectRef::new(name).within(namespace)))
            .map(|g| g.0.clone())
        {
            return Ok(Some(Arc::new(t)));
        }
        let api: Api<SandboxTemplate> = Api::namespaced(client.clone(), namespace);
        Ok(api.get_opt(name).await?.map(Arc::new))
    }
}

/// A pool reconcile that failed (retried by the controller).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("reading {what} of SandboxPool {pool}: {source}")]
    Read {
        what: &'static str,
        pool: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Build(#[from] build::PoolBuildError),
}

/// Runs the pool controller (and the warm-pod and template caches the Sandbox reconciles use)
/// until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let ns = ctx.config.watch_namespace.clone();
    // Pools and templates through DeserializeGuard: one object that does not deserialize (written
    // before a schema change) cannot stall the others.
    let api = |c: &Client| -> (Api<DeserializeGuard<SandboxPool>>, Api<DeserializeGuard<SandboxTemplate>>, Api<Pod>) {
        match &ns {
            Some(n) => (Api::namespaced(c.clone(), n), Api::namespaced(c.clone(), n), Api::namespaced(c.clone(), n)),
            None => (Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone())),
        }
    };
    let (pools, templates, pods) = api(&client);
    let pool_pods = watcher::Config::default().labels(labels::POOL_ORIGIN);

    let (warm_reader, warm_writer) = reflector::store();
    let warm_stream = reflector::reflector(warm_writer, watcher(pods.clone(), pool_pods.clone()))
        .default_backoff()
        .touched_objects()
        .for_each(|_| async {});
    let (tpl_reader, tpl_writer) = reflector::store();
    let tpl_stream = reflector::reflector(tpl_writer, watcher(templates.clone(), watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .for_each(|_| async {});
    let _ = ctx.pools.warm.set(warm_reader.clone());
    let _ = ctx.pools.templates.set(tpl_reader.clone());

    let controller = Controller::new(pools, watcher::Config::default());
    let pool_store = controller.store();
    let by_template = move |t: DeserializeGuard<SandboxTemplate>| {
        let ns = t.namespace();
        pool_store
            .state()
            .into_iter()
            .filter(|p| {
                p.namespace() == ns
                    && p.0.as_ref().is_ok_and(|p| p.spec.template_ref.name == t.name_any())
            })
            .map(|p| ObjectRef::from_obj(&*p))
            .collect::<Vec<_>>()
    };
    let by_pod_label = |p: Pod| {
        let ns = p.namespace();
        p.labels()
            .get(labels::POOL_ORIGIN)
            .map(|pool| ObjectRef::new(pool).within(&ns.unwrap_or_default()))
    };
    let controller = controller
        .watches(pods, pool_pods, by_pod_label)
        .watches(templates, watcher::Config::default(), by_template)
        .with_config(kube::runtime::controller::Config::default().concurrency(2))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(error) = r {
                debug!(%error, "pool controller");
            }
        });
    tokio::select! {
        _ = controller => {}
        _ = warm_stream => {}
        _ = tpl_stream => {}
    }
}

fn error_policy(pool: Arc<DeserializeGuard<SandboxPool>>, error: &PoolError, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error("pool");
    warn!(namespace = %pool.namespace().unwrap_or_default(), pool = %pool.name_any(), %error, "pool reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile(guard: Arc<DeserializeGuard<SandboxPool>>, ctx: Arc<Context>) -> Result<Action, PoolError> {
    use tracing::Instrument;
    let span = tracing::info_span!("pool", namespace = %guard.namespace().unwrap_or_default(), pool = %guard.name_any());
    match &guard.0 {
        Ok(pool) => reconcile_pool(Arc::new(pool.clone()), ctx).instrument(span).await,
        Err(invalid) => {
            let _enter = span.enter();
            ctx.metrics.reconcile_error("malformed");
            warn!(error = %invalid.error, "cannot read SandboxPool; ignoring it until it changes");
            Ok(Action::await_change())
        }
    }
}

async fn reconcile_pool(pool: Arc<SandboxPool>, ctx: Arc<Context>) -> Result<Action, PoolError> {
    let (namespace, name) = (pool.namespace().unwrap_or_default(), pool.name_any());
    if pool.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = format!("{namespace}/{name}");
    let read = |what: &'static str| {
        let pool = key.clone();
        move |source| PoolError::Read { what, pool, source }
    };

    // 1. template
    let tname = &pool.spec.template_ref.name;
    let Some(template) = ctx.pools.template(&ctx.client, &namespace, tname).await.map_err(read("its template"))? else {
        let msg = format!("spec.templateRef.name: SandboxTemplate {tname:?} not found in namespace {namespace}");
        write_status(&ctx, &pool, counts(&[], &[], 0, pool.spec.replicas), None, ("TemplateNotFound", msg)).await?;
        return Ok(Action::requeue(TEMPLATE_RETRY));
    };

    // 2. policy (and the namespace's quota: pool pods count against it like any sandbox pod)
    apply::network_policy(&ctx.client, &build::network_policy(&namespace, &ctx.config)).await?;
    if let Err(error) = crate::reconcile::ensure_quota(&ctx, &namespace).await {
        warn!(%error, "cannot apply the namespace's ResourceQuota; not creating pool pods");
        let msg = format!("the namespace's ResourceQuota cannot be applied: {error}");
        write_status(&ctx, &pool, counts(&[], &[], 0, pool.spec.replicas), Some(&template), ("QuotaUnavailable", msg)).await?;
        return Ok(Action::requeue(REFUSED_RETRY));
    }

    // 3. pods
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = api
        .list(&ListParams::default().labels(&build::selector(&name)))
        .await
        .map_err(read("its pods"))?;
    let rev = build::revision(&template);
    let alive: Vec<&Pod> = listed.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    // A pod that ended (its command exited, OOM, eviction) is replaced like an outdated one.
    let ended = |p: &Pod| matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded"));
    let (current, outdated): (Vec<&Pod>, Vec<&Pod>) = alive
        .iter()
        .partition(|p| p.annotations().get(labels::TEMPLATE_REVISION) == Some(&rev) && !ended(p));

    // 4. outdated and surplus pods
    let want = usize::try_from(pool.spec.replicas).unwrap_or(0);
    let mut doomed: Vec<&Pod> = outdated.clone();
    if current.len() > want {
        let mut extra = current.clone();
        extra.sort_by_key(|p| claim::pod_ready(p));
        doomed.extend(extra.into_iter().take(current.len() - want));
    }
    for p in doomed.iter().take(MAX_DELETES) {
        // With its resourceVersion: a pod claimed since the list (the claim changes it) is not
        // the pool's to delete any more, and the API server refuses (409).
        let pre = Preconditions { uid: p.uid(), resource_version: p.resource_version() };
        match api.delete(&p.name_any(), &DeleteParams { preconditions: Some(pre), ..DeleteParams::default() }).await {
            Ok(_) | Err(kube::Error::Api(_)) => debug!(pod = %p.name_any(), "deleted a pool pod (outdated or surplus)"),
            Err(e) => return Err(read("a pod to delete")(e)),
        }
    }

    // 5. missing pods
    let missing = want.saturating_sub(current.len());
    let mut refused = None;
    if missing > 0 {
        let results: Vec<Result<(), PoolError>> = futures::stream::iter(0..missing.min(MAX_CREATES))
            .map(|_| create_pod(&ctx, &pool, &template))
            .buffer_unordered(CREATE_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(()) => {}
                Err(PoolError::Apply(e @ (ApplyError::QuotaExceeded { .. } | ApplyError::QuotaNotReady { .. } | ApplyError::Rejected { .. }))) => {
                    refused = Some(e.to_string());
                }
                Err(PoolError::Build(e)) => {
                    let msg = e.to_string();
                    write_status(&ctx, &pool, counts(&current, &[], claimed(&ctx, &namespace, &name), pool.spec.replicas), Some(&template), ("Invalid", msg)).await?;
                    return Ok(Action::requeue(TEMPLATE_RETRY));
                }
                Err(e) => return Err(e),
            }
        }
        info!(missing, created = missing.min(MAX_CREATES), "refilling the pool");
    }

    // 6. status
    let c = counts(&current, &outdated, claimed(&ctx, &namespace, &name), pool.spec.replicas);
    let why = match &refused {
        Some(m) => ("PodRejected", m.clone()),
        None if c.ready_replicas >= pool.spec.replicas && outdated.is_empty() => {
            ("PoolReady", format!("{} of {} pods Ready", c.ready_replicas, pool.spec.replicas))
        }
        None => ("Filling", format!("{} of {} pods Ready", c.ready_replicas, pool.spec.replicas)),
    };
    write_status(&ctx, &pool, c, Some(&template), why).await?;
    Ok(Action::requeue(if refused.is_some() {
        REFUSED_RETRY
    } else if missing > MAX_CREATES {
        Duration::from_secs(1)
    } else {
        RESYNC
    }))
}

async fn create_pod(ctx: &Context, pool: &SandboxPool, template: &SandboxTemplate) -> Result<(), PoolError> {
    let pod_name = build::pod_name(&pool.name_any());
    let (pod, secret) = build::pod(pool, template, &pod_name, &ctx.config)?;
    crate::reconcile::agent::ensure_for(ctx, &pool.object_ref(&()), &pod).await?;
    if let Some(s) = &secret {
        apply::token_secret(&ctx.client, s).await?;
    }
    // A create, never an apply: a name taken by chance must fail, not change someone's pod.
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &pod).await {
        Ok(_) => Ok(()),
        Err(e) => Err(apply::classify_pod_error(pod.namespace().unwrap_or_default(), pod_name, e).into()),
    }
}

/// Running sandboxes made from this pool's pods.
fn claimed(ctx: &Context, namespace: &str, pool: &str) -> i32 {
    ctx.pools.warm().map_or(0, |s| {
        s.state()
            .iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(namespace)
                    && p.labels().get(labels::POOL_ORIGIN).map(String::as_str) == Some(pool)
                    && !p.labels().contains_key(labels::POOL)
                    && p.metadata.deletion_timestamp.is_none()
            })
            .count() as i32
    })
}

fn counts(current: &[&Pod], outdated: &[&Pod], claimed: i32, _want: i32) -> SandboxPoolStatus {
    SandboxPoolStatus {
        replicas: (current.len() + outdated.len()) as i32,
        ready_replicas: current.iter().filter(|p| claim::pod_ready(p)).count() as i32,
        claimed_replicas: claimed,
        ..SandboxPoolStatus::default()
    }
}

async fn write_status(
    ctx: &Context,
    pool: &SandboxPool,
    mut next: SandboxPoolStatus,
    template: Option<&SandboxTemplate>,
    (reason, message): (&str, String),
) -> Result<(), PoolError> {
    let prev = pool.status.clone().unwrap_or_default();
    next.selector = build::selector(&pool.name_any());
    next.template_generation = template.and_then(|t| t.metadata.generation);
    next.observed_generation = pool.metadata.generation;
    let status = if reason == "PoolReady" { "True" } else { "False" };
    let old = prev.conditions.iter().find(|c| c.type_ == "Ready");
    let since = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    next.conditions = vec![Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: pool.metadata.generation,
    }];
    if next == prev {
        return Ok(());
    }
    let api: Api<SandboxPool> = Api::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let body = json!({ "apiVersion": "airlock.dev/v1alpha1", "kind": "SandboxPool", "status": next });
    api.patch_status(&pool.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(|source| PoolError::Read { what: "(writing) the status", pool: pool.name_any(), source })?;
    Ok(())
}
