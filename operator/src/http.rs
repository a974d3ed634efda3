//! HTTP endpoints: `/metrics` (Prometheus/OpenMetrics text), `/healthz` (liveness: the process
//! serves requests) and `/readyz` (readiness: started and connected to the API server; says
//! whether this replica leads).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::controller::SandboxStore;
use crate::metrics::{self, Metrics};

/// What the endpoints read.
pub struct HttpState {
    pub registry: Registry,
    pub metrics: Metrics,
    pub store: SandboxStore,
    /// Set once the operator has started (API server reachable).
    pub ready: AtomicBool,
    /// Set while this replica leads.
    pub leader: AtomicBool,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics_handler(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let store = state
        .store
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(store) = store {
        let all = store.state();
        state
            .metrics
            .count_sandboxes(all.iter().map(|s| s.as_ref()));
    }
    state
        .metrics
        .leader
        .set(i64::from(state.leader.load(Ordering::Relaxed)));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::encode(&state.registry),
    )
}

async fn readyz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    }
    if state.leader.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok (leader)\n")
    } else {
        (StatusCode::OK, "ok (standby)\n")
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<HttpState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
