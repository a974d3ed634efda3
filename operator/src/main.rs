//! `airlock-operator`: see `airlock-operator --help` for the flags (each also an environment
//! variable).
//!
//! Startup: parse and check the flags, serve /metrics, /healthz and /readyz, wait for the API
//! server, then (with leader election, the default) wait to hold the Lease; as leader, ensure the
//! PriorityClass and run the controller. SIGTERM/SIGINT stops the controller gracefully (running
//! reconciles finish) and releases the Lease; losing the Lease (taken over, or not renewed within
//! the renew deadline, each renewal bounded by it) stops the controller — reconciles still running
//! after a short grace are dropped — and exits non-zero, so the replica restarts and rejoins the
//! election as a standby.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use airlock_operator::config::Cli;
use airlock_operator::controller::{self, Context, SandboxStore};
use airlock_operator::http::{self, HttpState};
use airlock_operator::leader::{self, Elector, Held};
use airlock_operator::metrics::Metrics;
use airlock_operator::reconcile::apply;
use airlock_operator::{build, telemetry};
use clap::Parser;
use kube::Client;
use kube::runtime::events::Reporter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info, warn};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, &cli.log_level);
    let config = match cli.config() {
        Ok(c) => Arc::new(c),
        Err(error) => {
            error!(%error, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(error) => {
            error!(%error, "no Kubernetes client configuration (in-cluster or KUBECONFIG)");
            return ExitCode::FAILURE;
        }
    };
    let identity = cli
        .identity
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(leader::default_identity);
    info!(
        %identity,
        default_runtime_class = %config.default_runtime_class,
        allowed_runtime_classes = %config.allowed_runtime_classes.join(","),
        agent = ?config.agent,
        watch_namespace = config.watch_namespace.as_deref().unwrap_or("<all>"),
        manage_quota = config.quota.is_some(),
        "starting airlock-operator {}",
        env!("CARGO_PKG_VERSION")
    );

    // Shutdown on SIGTERM or SIGINT.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        let _ = shutdown_tx.send(true);
    });

    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let store: SandboxStore = SandboxStore::default();
    let http_state = Arc::new(HttpState {
        registry,
        metrics: metrics.clone(),
        store: store.clone(),
        ready: false.into(),
        leader: false.into(),
    });
    let http_task = tokio::spawn(http::serve(
        cli.metrics_addr,
        http_state.clone(),
        flag(shutdown_rx.clone()),
    ));

    // Wait for the API server.
    loop {
        match client.apiserver_version().await {
            Ok(v) => {
                info!(version = %v.git_version, "connected to the API server");
                break;
            }
            Err(error) => warn!(%error, "API server not reachable yet"),
        }
        tokio::select! {
            _ = flag(shutdown_rx.clone()) => return ExitCode::SUCCESS,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    http_state.ready.store(true, Ordering::Relaxed);

    let reporter = Reporter {
        controller: apply::FIELD_MANAGER.into(),
        instance: Some(identity.clone()),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.clone(),
        reporter,
        metrics,
    ));

    let code = if !cli.leader_election {
        http_state.leader.store(true, Ordering::Relaxed);
        ensure_priority_class(&ctx).await;
        controller::run_all(ctx, store, flag(shutdown_rx.clone())).await;
        ExitCode::SUCCESS
    } else {
        let namespace = cli
            .leader_election_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let lease_identity = leader::process_identity(&identity);
        let mut elector = Elector::new(client.clone(), &namespace, &lease_identity);
        info!(%namespace, lease = leader::LEASE_NAME, "waiting for the leader Lease");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = flag(shutdown_rx.clone()) => return ExitCode::SUCCESS,
        }
        http_state.leader.store(true, Ordering::Relaxed);
        info!("leading: starting the controller");
        ensure_priority_class(&ctx).await;

        let (lost_tx, lost_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let holder = tokio::spawn(async move {
            let held = elector.hold(flag(stop_rx)).await;
            if held == Held::Lost {
                let _ = lost_tx.send(true);
            }
            (elector, held)
        });
        // Lost Lease: the controller is told to stop, and dropped if it has not within the
        // grace, so this replica stops acting before a standby may take over.
        let (step_down_tx, step_down_rx) = watch::channel(false);
        let (shutdown, step_down) = (flag(shutdown_rx.clone()), flag(step_down_rx));
        let work = controller::run_all(ctx, store, async move {
            tokio::select! {
                _ = shutdown => {}
                _ = step_down => {}
            }
        });
        let step_down = move || {
            let _ = step_down_tx.send(true);
        };
        leader::lead(work, flag(lost_rx), step_down, leader::STEP_DOWN_GRACE).await;
        http_state.leader.store(false, Ordering::Relaxed);
        let _ = stop_tx.send(true);
        match holder.await {
            Ok((mut elector, Held::Stopped)) => {
                if let Err(error) = elector.release().await {
                    warn!(%error, "could not release the leader Lease; it expires on its own");
                }
                ExitCode::SUCCESS
            }
            Ok((_, Held::Lost)) => {
                error!("lost the leader Lease; exiting so this replica restarts as a standby");
                ExitCode::FAILURE
            }
            Err(error) => {
                error!(%error, "leader election task failed");
                ExitCode::FAILURE
            }
        }
    };
    if code == ExitCode::SUCCESS {
        // The HTTP server stops on the same signal.
        let _ = http_task.await;
    }
    info!("stopped");
    code
}

/// Resolves once the flag is set (or its sender is gone).
async fn flag(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|set| *set).await;
}

async fn ensure_priority_class(ctx: &Context) {
    if !ctx.config.manage_priority_class {
        return;
    }
    match apply::priority_class(&ctx.client, &build::priority_class()).await {
        Ok(()) => info!(name = build::PRIORITY_CLASS, "PriorityClass in place"),
        Err(error) => {
            error!(%error, "could not apply the PriorityClass; sandbox pods will be refused until it exists")
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the operator");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
