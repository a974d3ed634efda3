//! The controller: watches Sandboxes (through [`DeserializeGuard`], so one malformed object cannot
//! stall the others) and the pods and NetworkPolicies they own, and runs
//! [`crate::reconcile::reconcile`] for each change.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use airlock_crds::{Sandbox, labels};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::{debug, warn};

use crate::caches::{self, Backoff, Stamps};
use crate::config::{Agent, Config};
use crate::metrics::Metrics;
use crate::reconcile::{self, Error};

/// How often the per-namespace ResourceQuota is re-applied (it is also applied the first time a
/// namespace's sandbox is reconciled after the operator starts).
pub const QUOTA_REFRESH: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: Arc<Config>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// When each namespace's quota was last applied.
    quotas: Stamps,
    /// When each namespace's default-deny policy ([`crate::build::netpol::namespace_fence`]) was
    /// last applied.
    fences: Stamps,
    /// When each namespace's agent ConfigMap was last seen or created.
    pub(crate) bundles: Stamps,
    /// Per namespace, the uid of the agent ConfigMap verified to be the operator's.
    pub(crate) verified_bundles: crate::reconcile::agent_verify::Verified,
    /// Back-off of sandboxes whose pod the API server refused.
    pub(crate) rejections: Backoff,
    /// Warm pods and templates (cached by the pool controller) and the claims in flight.
    pub pools: crate::pool::Pools,
}

impl Context {
    pub fn new(client: Client, config: Arc<Config>, reporter: Reporter, metrics: Metrics) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Context {
            client,
            config,
            recorder,
            metrics,
            quotas: Stamps::default(),
            fences: Stamps::default(),
            bundles: Stamps::default(),
            verified_bundles: Default::default(),
            rejections: Backoff::default(),
            pools: Default::default(),
        }
    }

    /// Whether the namespace's quota should be applied now.
    pub(crate) fn quota_due(&self, namespace: &str) -> bool {
        self.quotas.due(namespace, QUOTA_REFRESH)
    }

    pub(crate) fn quota_applied(&self, namespace: &str) {
        self.quotas.mark(namespace);
    }

    /// Whether the namespace's default-deny policy should be applied now.
    pub(crate) fn fence_due(&self, namespace: &str) -> bool {
        self.fences.due(namespace, QUOTA_REFRESH)
    }

    pub(crate) fn fence_applied(&self, namespace: &str) {
        self.fences.mark(namespace);
    }
}

/// How long to wait before retrying a failed reconcile.
pub fn error_policy(
    guard: Arc<DeserializeGuard<Sandbox>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    use kube::ResourceExt;
    let reason = error.metric_reason();
    ctx.metrics.reconcile_error(reason);
    warn!(
        namespace = %guard.namespace().unwrap_or_default(),
        sandbox = %guard.name_any(),
        reason,
        %error,
        "reconcile failed; retrying"
    );
    match error {
        // Not going to fix itself quickly.
        Error::Build(_) | Error::Lifetime(_) => Action::requeue(Duration::from_secs(60)),
        _ => Action::requeue(Duration::from_secs(10)),
    }
}

/// The controller's cache of Sandboxes, shared with the metrics endpoint once the controller runs.
pub type SandboxStore = Arc<RwLock<Option<Store<DeserializeGuard<Sandbox>>>>>;

/// Runs the controller until `shutdown` resolves, then lets running reconciles finish.
pub async fn run(
    ctx: Arc<Context>,
    store: SandboxStore,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (sandboxes, pods, policies): (
        Api<DeserializeGuard<Sandbox>>,
        Api<Pod>,
        Api<NetworkPolicy>,
    ) = match &ctx.config.watch_namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    // Only the operator's own children are watched (and cached).
    let children = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_OPERATOR
    ));
    let controller = Controller::new(sandboxes, watcher::Config::default())
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(ctx.config.max_concurrent_reconciles),
        )
        .owns(pods, children.clone())
        .owns(policies, children)
        .graceful_shutdown_on(shutdown);
    *store.write().unwrap_or_else(|e| e.into_inner()) = Some(controller.store());
    // Forget per-namespace caches when their objects go away (see crate::caches); this runs as
    // long as the controller does.
    let caches_ctx = ctx.clone();
    let invalidation = caches::invalidate(
        caches_ctx.client.clone(),
        caches_ctx.config.watch_namespace.as_deref(),
        caches_ctx
            .config
            .quota
            .is_some()
            .then_some(&caches_ctx.quotas),
        matches!(caches_ctx.config.agent, Agent::ConfigMap(_)).then_some(&caches_ctx.bundles),
        &caches_ctx.fences,
    );
    let controller = controller
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, action)) => debug!(namespace = obj.namespace.as_deref(), sandbox = %obj.name, ?action, "reconcile done"),
                // Reconcile failures are logged by error_policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                // A child's event for a Sandbox deleted meanwhile: normal.
                Err(error @ kube::runtime::controller::Error::ObjectNotFound(..)) => {
                    debug!(%error, "controller")
                }
                Err(error) => warn!(%error, "controller"),
            }
        });
    tokio::select! {
        _ = controller => {}
        _ = invalidation => {}
    }
}

/// Runs the Sandbox controller and the SandboxPool controller ([`crate::pool`]) until `shutdown`
/// resolves. The Sandbox controller starts once the warm-pod cache has its first list, so a
/// Sandbox that claimed a pod before an operator restart finds it.
pub async fn run_all(
    ctx: Arc<Context>,
    store: SandboxStore,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let pools = crate::pool::run(ctx.clone(), stop());
    let sandboxes = {
        let ctx = ctx.clone();
        let stop = stop();
        async move {
            for _ in 0..600 {
                if let Some(warm) = ctx.pools.warm() {
                    let _ = tokio::time::timeout(Duration::from_secs(30), warm.wait_until_ready()).await;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            run(ctx, store, stop).await
        }
    };
    let signal = async move {
        shutdown.await;
        let _ = tx.send(true);
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = async { tokio::join!(pools, sandboxes) } => {}
        _ = signal => {}
    }
}
