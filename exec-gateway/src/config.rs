//! Configuration of the gateway server.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::{PodExec, Transport};
use crate::auth::{AuthMode, ReviewLimits};
use crate::listener::ServerLimits;
use crate::metrics::Metrics;
use crate::runtime_classes::AllowedRuntimeClasses;
use crate::tls::TlsFiles;

/// The operator's default `--max-ttl` (1 day), which the chart passes to both.
pub const DEFAULT_MAX_TTL_SECONDS: i64 = 86400;

/// Everything [`crate::serve`] needs.
pub struct Config {
    /// Kubernetes client; `None`: inferred (in-cluster config or KUBECONFIG).
    pub kube_client: Option<kube::Client>,
    /// How callers are authenticated.
    pub auth: AuthMode,
    /// Namespace used when a request leaves it empty.
    pub default_namespace: String,
    /// Path of the agent inside sandbox containers.
    pub agent_path: String,
    /// Metrics registry (shared with the `/metrics` endpoint).
    pub metrics: Arc<Metrics>,
    /// How long in-flight calls may run on after shutdown began before they are cut off.
    pub shutdown_grace: Duration,
    /// Minimum interval between two activity patches of one sandbox.
    pub activity_interval: Duration,
    /// How long `wait_ready` waits when the call has no deadline.
    pub default_wait_ready: Duration,
    /// The operator's maximum time-to-live in seconds (its `--max-ttl`); ExtendSandbox refuses
    /// to go past it.
    pub max_ttl_seconds: i64,
    /// Overrides how agent commands are started when not directly (tests); `None`: `pods/exec`.
    pub pod_exec: Option<Arc<dyn PodExec>>,
    /// The key agent tokens derive from (the operator's `--agent-key-file`); `None`: no direct
    /// path.
    pub agent_key: Option<Arc<Vec<u8>>>,
    /// Direct path, `pods/exec`, or the direct path with `pods/exec` as the fallback.
    pub agent_transport: Transport,
    /// RuntimeClasses a CreateSandbox may name (default: only the operator's default).
    pub allowed_runtime_classes: AllowedRuntimeClasses,
    /// Bounds and caches of TokenReview / SubjectAccessReview, and the token audiences.
    pub review: ReviewLimits,
    /// Connection and stream limits of the gRPC server.
    pub limits: ServerLimits,
    /// Serve TLS with this certificate and key (reloaded when the files change); `None`:
    /// plaintext HTTP/2 (h2c).
    pub tls: Option<TlsFiles>,
    /// Serve the e2b-compatible HTTP API on this address (`--e2b-listen`); needs `agent_key`
    /// (access tokens derive from it).
    pub e2b: Option<(std::net::SocketAddr, crate::e2b::E2bConfig)>,
    /// Answer the sandbox and pod lookups of calls from watches (`crate::cache`); off: every call
    /// GETs both from the API server.
    pub sandbox_cache: bool,
}

impl Config {
    /// Defaults: namespace `default`, agent at `/.airlock/airlock-agent`, 10 s activity
    /// interval, 25 s shutdown grace, 5 min wait_ready, 1 day maximum TTL.
    pub fn new(auth: AuthMode) -> Self {
        Config {
            kube_client: None,
            auth,
            default_namespace: "default".to_string(),
            agent_path: airlock_crds::labels::AGENT_PATH.to_string(),
            metrics: Arc::new(Metrics::new()),
            shutdown_grace: Duration::from_secs(25),
            activity_interval: Duration::from_secs(10),
            default_wait_ready: Duration::from_secs(300),
            max_ttl_seconds: DEFAULT_MAX_TTL_SECONDS,
            pod_exec: None,
            agent_key: None,
            agent_transport: Transport::Auto,
            allowed_runtime_classes: AllowedRuntimeClasses::default(),
            review: ReviewLimits::default(),
            limits: ServerLimits::default(),
            tls: None,
            e2b: None,
            sandbox_cache: true,
        }
    }

    pub fn with_client(mut self, client: kube::Client) -> Self {
        self.kube_client = Some(client);
        self
    }

    pub fn with_default_namespace(mut self, ns: impl Into<String>) -> Self {
        self.default_namespace = ns.into();
        self
    }
}
