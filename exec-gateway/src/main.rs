//! `airlock-exec-gateway`: the gRPC server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airlock_exec_gateway::auth::{AuthMode, ReviewLimits, StaticTokens};
use airlock_exec_gateway::listener::ServerLimits;
use airlock_exec_gateway::metrics::{Metrics, serve_metrics};
use airlock_exec_gateway::runtime_classes::AllowedRuntimeClasses;
use airlock_exec_gateway::tls::TlsFiles;
use airlock_exec_gateway::{Config, serve};
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthModeArg {
    /// TokenReview + SubjectAccessReview against the Kubernetes API.
    Kubernetes,
    /// Tokens from --static-tokens-file.
    Static,
    /// No authentication (local development only).
    None,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// Airlock exec gateway: gRPC API for sandboxes (lifecycle, streaming exec, files).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of the gRPC server.
    #[arg(long, env = "AIRLOCK_LISTEN", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Address of the Prometheus endpoint (/metrics).
    #[arg(long, env = "AIRLOCK_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// How callers are authenticated.
    #[arg(
        long,
        env = "AIRLOCK_AUTH_MODE",
        value_enum,
        default_value = "kubernetes"
    )]
    auth_mode: AuthModeArg,
    /// Tokens file for --auth-mode static: one `TOKEN NAMESPACE[,NAMESPACE...]` or `TOKEN *` per line.
    #[arg(long, env = "AIRLOCK_STATIC_TOKENS_FILE")]
    static_tokens_file: Option<PathBuf>,
    /// Namespace used when a request leaves it empty.
    #[arg(long, env = "AIRLOCK_DEFAULT_NAMESPACE", default_value = "default")]
    default_namespace: String,
    /// Path of the agent inside sandbox containers.
    #[arg(long, env = "AIRLOCK_AGENT_PATH", default_value = airlock_crds::labels::AGENT_PATH)]
    agent_path: String,
    /// File with the key the sandboxes' agent tokens derive from (the operator's
    /// --agent-key-file): with it, commands and files go straight to the agent in the pod (the
    /// direct path) where the pod has an agent port.
    #[arg(long, env = "AIRLOCK_AGENT_KEY_FILE")]
    agent_key_file: Option<PathBuf>,
    /// `auto`: the direct path, and `pods/exec` for pods without an agent port or when the agent
    /// cannot be reached (nothing started yet); `direct`: never `pods/exec`; `pods-exec`: never
    /// the direct path.
    #[arg(long, env = "AIRLOCK_AGENT_TRANSPORT", value_enum, default_value = "auto")]
    agent_transport: airlock_exec_gateway::agent::Transport,
    /// Answer each call's lookup of its Sandbox and pod from watches of both (cluster-wide
    /// list/watch of sandboxes and of pods labelled airlock.dev/sandbox) when they show the
    /// sandbox Ready; `false`: GET both from the API server on every call.
    #[arg(long, env = "AIRLOCK_SANDBOX_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    sandbox_cache: bool,
    /// Seconds in-flight calls may continue after SIGTERM before they are cut off.
    #[arg(long, env = "AIRLOCK_SHUTDOWN_GRACE_SECONDS", default_value_t = 25)]
    shutdown_grace_seconds: u64,
    /// The operator's maximum time-to-live in seconds (give it the operator's --max-ttl):
    /// ExtendSandbox refuses to extend a sandbox past it.
    #[arg(long, env = "AIRLOCK_MAX_TTL", default_value_t = airlock_exec_gateway::config::DEFAULT_MAX_TTL_SECONDS,
          value_parser = clap::value_parser!(i64).range(1..=airlock_crds::MAX_TTL_SECONDS))]
    max_ttl: i64,
    /// Log format.
    #[arg(long, env = "AIRLOCK_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// RuntimeClasses a CreateSandbox may name (comma list; `*` = any). Requests that leave
    /// runtime_class_name empty get the operator's default and are always accepted; with an
    /// empty list only those are.
    #[arg(long, env = "AIRLOCK_ALLOWED_RUNTIME_CLASSES", default_value = "")]
    allowed_runtime_classes: String,
    /// Audiences asked for in TokenReviews (comma list or repeated): only tokens minted for one
    /// of them are accepted (`kubectl create token SA --audience airlock`). Empty: the API
    /// server's own audience (tokens that are also valid against the API server).
    #[arg(
        long = "token-audience",
        env = "AIRLOCK_TOKEN_AUDIENCES",
        value_delimiter = ','
    )]
    token_audiences: Vec<String>,
    /// TokenReviews and SubjectAccessReviews in flight at once.
    #[arg(
        long,
        env = "AIRLOCK_AUTH_MAX_CONCURRENT_REVIEWS",
        default_value_t = 16
    )]
    auth_max_concurrent_reviews: usize,
    /// Milliseconds a call waits for a free review slot before UNAVAILABLE.
    #[arg(long, env = "AIRLOCK_AUTH_REVIEW_WAIT_MS", default_value_t = 5000)]
    auth_review_wait_ms: u64,
    /// Seconds an accepted token stays cached.
    #[arg(long, env = "AIRLOCK_AUTH_CACHE_TTL_SECONDS", default_value_t = 30)]
    auth_cache_ttl_seconds: u64,
    /// Accepted tokens cached at most (least recently used evicted first).
    #[arg(long, env = "AIRLOCK_AUTH_CACHE_SIZE", default_value_t = 10_000)]
    auth_cache_size: u64,
    /// Seconds a refused token stays cached.
    #[arg(
        long,
        env = "AIRLOCK_AUTH_NEGATIVE_CACHE_TTL_SECONDS",
        default_value_t = 10
    )]
    auth_negative_cache_ttl_seconds: u64,
    /// Refused tokens cached at most.
    #[arg(
        long,
        env = "AIRLOCK_AUTH_NEGATIVE_CACHE_SIZE",
        default_value_t = 10_000
    )]
    auth_negative_cache_size: u64,
    /// Connections open at once (all clients); more wait in the listen backlog.
    #[arg(long, env = "AIRLOCK_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// HTTP/2 streams (calls) open at once per connection.
    #[arg(long, env = "AIRLOCK_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    max_concurrent_streams: u32,
    /// Requests handled at once per connection (tonic's limit, released when a response's
    /// headers are sent, so it does not bound streams; --max-concurrent-streams does). 0: off.
    #[arg(long, env = "AIRLOCK_CONCURRENCY_PER_CONNECTION", default_value_t = 0)]
    concurrency_per_connection: usize,
    /// PEM certificate (chain) to serve TLS with; needs --tls-key. Without both: plaintext h2c.
    #[arg(long, env = "AIRLOCK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "AIRLOCK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds between checks of the certificate files for a renewed certificate.
    #[arg(long, env = "AIRLOCK_TLS_RELOAD_SECONDS", default_value_t = 30)]
    tls_reload_seconds: u64,
    /// Serve the e2b-compatible HTTP API (control plane and sandbox daemon, for the unmodified e2b
    /// SDKs: point E2B_API_URL and E2B_SANDBOX_URL here) on this address. Needs --agent-key-file.
    #[arg(long, env = "AIRLOCK_E2B_LISTEN")]
    e2b_listen: Option<std::net::SocketAddr>,
    /// Namespace of e2b API callers whose token is not a service account's (which use their
    /// own namespace). Default: --default-namespace.
    #[arg(long, env = "AIRLOCK_E2B_NAMESPACE")]
    e2b_namespace: Option<String>,
    /// Wildcard domain of the e2b API's host-name routing (`<port>-<sandboxID>.<domain>`),
    /// returned to the SDKs as the sandboxes' domain.
    #[arg(long, env = "AIRLOCK_E2B_DOMAIN")]
    e2b_domain: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn,tower=warn,h2=warn,hyper=warn".into());
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(false)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    if !airlock_exec_gateway::validate::is_dns_label(&args.default_namespace) {
        anyhow::bail!(
            "--default-namespace {:?} is not a valid namespace name",
            args.default_namespace
        );
    }
    if !args.agent_path.starts_with('/') {
        anyhow::bail!("--agent-path must be absolute");
    }
    let auth = match args.auth_mode {
        AuthModeArg::Kubernetes => AuthMode::Kubernetes,
        AuthModeArg::None => AuthMode::None,
        AuthModeArg::Static => {
            let path = args
                .static_tokens_file
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("--auth-mode static needs --static-tokens-file"))?;
            let tokens = StaticTokens::load(path)?;
            tracing::info!(tokens = tokens.len(), file = %path.display(), "loaded static tokens");
            AuthMode::Static(tokens)
        }
    };

    let metrics = Arc::new(Metrics::new());
    let mut config = Config::new(auth);
    config.default_namespace = args.default_namespace.clone();
    config.agent_path = args.agent_path.clone();
    config.agent_transport = args.agent_transport;
    config.sandbox_cache = args.sandbox_cache;
    if let Some(path) = &args.agent_key_file {
        config.agent_key = Some(Arc::new(airlock_crds::agent_token::read_key(path)?));
    } else if args.agent_transport == airlock_exec_gateway::agent::Transport::Direct {
        anyhow::bail!("--agent-transport direct needs --agent-key-file");
    }
    if let Some(addr) = args.e2b_listen {
        if config.agent_key.is_none() {
            anyhow::bail!("--e2b-listen needs --agent-key-file (the e2b access tokens derive from the agent key)");
        }
        if let Some(ns) = &args.e2b_namespace {
            if !airlock_exec_gateway::validate::is_dns_label(ns) {
                anyhow::bail!("--e2b-namespace {ns:?} is not a namespace name");
            }
        }
        config.e2b = Some((
            addr,
            airlock_exec_gateway::e2b::E2bConfig {
                namespace: args.e2b_namespace.clone(),
                domain: args.e2b_domain.clone().filter(|d| !d.is_empty()),
            },
        ));
    }
    config.metrics = metrics.clone();
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_seconds);
    config.max_ttl_seconds = args.max_ttl;
    config.allowed_runtime_classes = AllowedRuntimeClasses::parse(&args.allowed_runtime_classes)?;
    tracing::info!(
        allowed = %config.allowed_runtime_classes.describe(),
        "runtime classes requests may name"
    );
    let audiences: Vec<String> = args
        .token_audiences
        .iter()
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if !audiences.is_empty() && !matches!(config.auth, AuthMode::Kubernetes) {
        anyhow::bail!("--token-audience only applies to --auth-mode kubernetes");
    }
    for (name, v) in [
        (
            "--auth-max-concurrent-reviews",
            args.auth_max_concurrent_reviews as u64,
        ),
        ("--auth-cache-ttl-seconds", args.auth_cache_ttl_seconds),
        (
            "--auth-negative-cache-ttl-seconds",
            args.auth_negative_cache_ttl_seconds,
        ),
        ("--max-connections", args.max_connections as u64),
        (
            "--max-concurrent-streams",
            args.max_concurrent_streams as u64,
        ),
        ("--tls-reload-seconds", args.tls_reload_seconds),
    ] {
        if v == 0 {
            anyhow::bail!("{name} must be at least 1");
        }
    }
    config.review = ReviewLimits {
        max_concurrent: args.auth_max_concurrent_reviews,
        wait: Duration::from_millis(args.auth_review_wait_ms),
        positive_ttl: Duration::from_secs(args.auth_cache_ttl_seconds),
        positive_capacity: args.auth_cache_size,
        negative_ttl: Duration::from_secs(args.auth_negative_cache_ttl_seconds),
        negative_capacity: args.auth_negative_cache_size,
        audiences,
    };
    config.limits = ServerLimits {
        max_connections: args.max_connections,
        max_concurrent_streams: args.max_concurrent_streams,
        concurrency_per_connection: args.concurrency_per_connection,
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let mut files = TlsFiles::new(cert, key);
        files.reload_interval = Duration::from_secs(args.tls_reload_seconds);
        config.tls = Some(files);
    }

    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        s.cancel();
    });

    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding --metrics-addr {}: {e}", args.metrics_addr))?;
    tracing::info!(addr = %args.metrics_addr, "metrics listening on /metrics");
    let s = shutdown.clone();
    let metrics_task = tokio::spawn(serve_metrics(metrics, metrics_listener, async move {
        s.cancelled().await
    }));

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding --listen {}: {e}", args.listen))?;
    let s = shutdown.clone();
    serve(config, listener, async move { s.cancelled().await }).await?;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), metrics_task).await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
