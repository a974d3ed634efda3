//! The gRPC server: services, layers, health, reflection and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityRecorder;
use crate::agent::direct::DirectExec;
use crate::agent::{KubeExec, PodExec, Routed};
use crate::auth::{Access, AuthLayer, AuthMode, Authenticator, Principal};
use crate::config::Config;
use crate::metrics::{Metrics, MetricsLayer};
use airlock_api::proto::v1 as pb;

/// Field manager of every write the gateway makes.
pub const FIELD_MANAGER: &str = "airlock-exec-gateway";

/// Errors of starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("creating the Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the e2b API (--e2b-listen) needs the agent key (--agent-key-file): its access tokens derive from it")]
    E2bNeedsKey,
    #[error("binding the e2b API's address {addr}: {source}")]
    E2bBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server on {addr}: {source}")]
    Transport {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// State shared by all services.
pub(crate) struct Ctx {
    pub client: kube::Client,
    pub auth: Arc<Authenticator>,
    pub default_namespace: String,
    pub metrics: Arc<Metrics>,
    pub allowed_runtime_classes: crate::runtime_classes::AllowedRuntimeClasses,
    pub activity: ActivityRecorder,
    pub exec: Arc<dyn PodExec>,
    /// The direct path to agents (`None` without the agent key): background processes use it.
    pub direct: Option<Arc<DirectExec>>,
    pub default_wait_ready: Duration,
    /// The operator's maximum time-to-live (`--max-ttl`): the limit of ExtendSandbox.
    pub max_ttl_seconds: i64,
    /// Cancelled when the shutdown grace period is over: running streams end at once.
    pub hard_stop: CancellationToken,
    /// Sandboxes and their pods from watches (`None`: `--sandbox-cache=false`, every call reads
    /// the API server).
    pub cache: Option<crate::cache::SandboxCache>,
}

impl Ctx {
    /// Authorizes `access` for the caller of `req`.
    pub async fn authorize<T>(
        &self,
        req: &tonic::Request<T>,
        access: Access,
    ) -> Result<(), tonic::Status> {
        let principal = req.extensions().get::<Principal>();
        let r = self.auth.authorize(principal, &access).await;
        if let Err(e) = &r {
            tracing::info!(
                user = principal.map(|p| p.name()).unwrap_or("-"),
                namespace = %access.namespace,
                verb = access.verb,
                subresource = access.subresource.unwrap_or(""),
                reason = e.message(),
                "call denied"
            );
        }
        r
    }
}

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting connections,
/// lets in-flight calls finish for up to `config.shutdown_grace`, cuts off what is still running,
/// and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let client = match config.kube_client {
        Some(c) => c,
        None => kube::Client::try_default().await?,
    };
    if matches!(config.auth, AuthMode::None) {
        tracing::warn!(
            "authentication is DISABLED (--auth-mode none): anyone who can reach this port controls every sandbox; use it for local development only"
        );
    }
    // Loaded before anything else starts: a missing or broken certificate stops the gateway.
    let tls = match &config.tls {
        Some(files) => {
            let cert = crate::tls::ReloadingCert::load(files.clone())?;
            let cfg = cert.server_config()?;
            Some((cert, cfg))
        }
        None => None,
    };
    let auth = Arc::new(Authenticator::with_limits(
        config.auth,
        client.clone(),
        config.review.clone(),
    ));
    let fallback: Arc<dyn PodExec> = config.pod_exec.unwrap_or_else(|| {
        Arc::new(KubeExec {
            client: client.clone(),
            agent_path: config.agent_path.clone(),
        })
    });
    let e2b_key = config.agent_key.clone();
    let direct = config
        .agent_key
        .map(|k| Arc::new(DirectExec::new(k, config.agent_path.clone())));
    let exec: Arc<dyn PodExec> = Arc::new(Routed {
        direct: direct.clone(),
        transport: config.agent_transport,
        fallback,
        metrics: config.metrics.clone(),
    });
    let hard_stop = CancellationToken::new();
    let stop_watches = CancellationToken::new();
    let _stop_watches = stop_watches.clone().drop_guard();
    let cache = config
        .sandbox_cache
        .then(|| crate::cache::SandboxCache::start(client.clone(), stop_watches));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        auth: auth.clone(),
        default_namespace: config.default_namespace,
        metrics: config.metrics.clone(),
        allowed_runtime_classes: config.allowed_runtime_classes.clone(),
        activity: ActivityRecorder::new(client.clone(), config.activity_interval),
        exec,
        direct,
        default_wait_ready: config.default_wait_ready,
        max_ttl_seconds: config.max_ttl_seconds,
        hard_stop: hard_stop.clone(),
        cache,
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::sandboxes_server::SandboxesServer<crate::sandboxes::SandboxesService>>()
        .await;
    health
        .set_serving::<pb::processes_server::ProcessesServer<crate::processes::ProcessesService>>()
        .await;
    health
        .set_serving::<pb::files_server::FilesServer<crate::files::FilesService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let limits = config.limits;
    let stop_reloading = CancellationToken::new();
    let _stop_reloading = stop_reloading.clone().drop_guard();
    let e2b_cert = tls.as_ref().map(|(cert, _)| cert.clone());
    let incoming = match tls {
        Some((cert, cfg)) => {
            cert.spawn_reloader(stop_reloading);
            crate::listener::incoming(listener, limits.max_connections, Some(cfg))
        }
        None => crate::listener::incoming(listener, limits.max_connections, None),
    };

    // Shutdown: `begin` fires with the caller's future; the server then drains.
    let begin = CancellationToken::new();
    let begin2 = begin.clone();
    let health2 = health.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, draining in-flight calls");
        health2
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        health2.set_not_serving::<pb::sandboxes_server::SandboxesServer<crate::sandboxes::SandboxesService>>().await;
        health2.set_not_serving::<pb::processes_server::ProcessesServer<crate::processes::ProcessesService>>().await;
        health2
            .set_not_serving::<pb::files_server::FilesServer<crate::files::FilesService>>()
            .await;
        begin2.cancel();
    });

    let max_msg = 16 * 1024 * 1024;
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(limits.max_concurrent_streams.max(1));
    if limits.concurrency_per_connection > 0 {
        builder = builder.concurrency_limit_per_connection(limits.concurrency_per_connection);
    }
    let router = builder
        .layer(MetricsLayer::new(config.metrics.clone()))
        .layer(AuthLayer::new(auth))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pb::sandboxes_server::SandboxesServer::new(
            crate::sandboxes::SandboxesService { ctx: ctx.clone() },
        ))
        .add_service(
            pb::processes_server::ProcessesServer::new(crate::processes::ProcessesService {
                ctx: ctx.clone(),
            })
            .max_decoding_message_size(max_msg),
        )
        .add_service(
            pb::files_server::FilesServer::new(crate::files::FilesService { ctx: ctx.clone() })
                .max_decoding_message_size(max_msg),
        );

    tracing::info!(
        %addr,
        tls = config.tls.is_some(),
        max_connections = limits.max_connections,
        max_concurrent_streams = limits.max_concurrent_streams,
        "gRPC server listening"
    );
    let e2b_task = match config.e2b {
        Some((e2b_addr, e2b_config)) => {
            let key = e2b_key.ok_or(ServeError::E2bNeedsKey)?;
            let l = TcpListener::bind(e2b_addr)
                .await
                .map_err(|source| ServeError::E2bBind { addr: e2b_addr, source })?;
            // The gRPC port's certificate (HTTP/1.1 ALPN) and connection limit apply here too.
            let e2b_tls = match &e2b_cert {
                Some(cert) => Some(cert.http1_server_config()?),
                None => None,
            };
            let l = crate::listener::AxumIncoming::new(l, limits.max_connections, e2b_tls)
                .map_err(|source| ServeError::E2bBind { addr: e2b_addr, source })?;
            tracing::info!(addr = %e2b_addr, tls = e2b_cert.is_some(), "e2b-compatible HTTP API listening");
            let app = crate::e2b::router(ctx.clone(), e2b_config, key);
            let begin4 = begin.clone();
            Some(tokio::spawn(async move {
                let r = axum::serve(l, app)
                    .with_graceful_shutdown(async move { begin4.cancelled().await })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "the e2b API server failed");
                }
            }))
        }
        None => None,
    };
    let begin3 = begin.clone();
    let serve =
        router.serve_with_incoming_shutdown(incoming, async move { begin3.cancelled().await });
    tokio::pin!(serve);
    let grace = config.shutdown_grace;
    tokio::select! {
        r = &mut serve => r.map_err(|source| ServeError::Transport { addr: addr.clone(), source })?,
        _ = async { begin.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "grace period over: ending the calls still running");
            hard_stop.cancel();
            match tokio::time::timeout(Duration::from_secs(5), &mut serve).await {
                Ok(r) => r.map_err(|source| ServeError::Transport { addr: addr.clone(), source })?,
                Err(_) => tracing::warn!("connections still open after the grace period; dropping them"),
            }
        }
    }
    hard_stop.cancel();
    if let Some(t) = e2b_task {
        // Its streams end with hard_stop; connections still open are dropped.
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    tracing::info!("gRPC server stopped");
    Ok(())
}
