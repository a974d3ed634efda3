//! Prometheus metrics, served as text on `/metrics` (`--metrics-addr`):
//!
//! - `airlock_gateway_rpcs_total{method,code}`: finished calls by gRPC method and status code.
//! - `airlock_gateway_rpc_duration_seconds{method}`: call durations (streams: until the last
//!   message).
//! - `airlock_gateway_active_streams{method}`: calls in flight (unary calls included).
//! - `airlock_gateway_bytes_total{stream}`: payload bytes moved: `stdout`, `stderr`, `stdin`,
//!   `upload`, `download`.
//! - `airlock_gateway_exec_total{result}`: commands by outcome (`exited`, `timed_out`,
//!   `cancelled`, `error`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodCode {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

type HistogramFamily = Family<MethodLabel, Histogram, fn() -> Histogram>;

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    pub rpcs: Family<MethodCode, Counter>,
    pub durations: HistogramFamily,
    pub active: Family<MethodLabel, Gauge>,
    pub bytes: Family<StreamLabel, Counter>,
    pub execs: Family<ResultLabel, Counter>,
    pub transports: Family<TransportLabel, Counter>,
    pub lookups: Family<SourceLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("airlock_gateway");
        let rpcs = Family::<MethodCode, Counter>::default();
        let durations: HistogramFamily =
            Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let active = Family::<MethodLabel, Gauge>::default();
        let bytes = Family::<StreamLabel, Counter>::default();
        let execs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "rpcs",
            "Finished gRPC calls by method and status code",
            rpcs.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "Duration of gRPC calls",
            durations.clone(),
        );
        registry.register("active_streams", "gRPC calls in flight", active.clone());
        registry.register("bytes", "Payload bytes moved, by stream", bytes.clone());
        registry.register("exec", "Commands run, by outcome", execs.clone());
        let transports = Family::<TransportLabel, Counter>::default();
        registry.register(
            "agent_calls",
            "Calls started in an agent, by transport (direct, pods_exec, pods_exec_fallback)",
            transports.clone(),
        );
        let lookups = Family::<SourceLabel, Counter>::default();
        registry.register(
            "sandbox_lookups",
            "Sandbox and pod lookups of calls into a sandbox, by source (cache, api)",
            lookups.clone(),
        );
        Metrics {
            registry,
            rpcs,
            durations,
            active,
            bytes,
            execs,
            transports,
            lookups,
        }
    }

    /// Counts a call started in an agent over `transport`.
    pub fn agent_transport(&self, transport: &'static str) {
        self.transports.get_or_create(&TransportLabel { transport }).inc();
    }

    /// Counts a lookup of a sandbox and its pod answered by `source` (`cache` or `api`).
    pub fn sandbox_lookup(&self, source: &'static str) {
        self.lookups.get_or_create(&SourceLabel { source }).inc();
    }

    /// Counts payload bytes of a stream (`stdout`, `stderr`, `stdin`, `upload`, `download`).
    pub fn add_bytes(&self, stream: &'static str, n: usize) {
        self.bytes
            .get_or_create(&StreamLabel { stream })
            .inc_by(n as u64);
    }

    /// Counts a finished command.
    pub fn exec_result(&self, result: &'static str) {
        self.execs.get_or_create(&ResultLabel { result }).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Serves `/metrics` (and `/healthz`) until `shutdown` resolves.
pub async fn serve_metrics(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The method label of a request path: `airlock.v1.Processes/Exec`; anything that is not a known
/// service is `other` (keeps label cardinality bounded whatever clients send).
pub fn method_label(path: &str) -> String {
    let p = path.trim_start_matches('/');
    let known = [
        "airlock.v1.Sandboxes/",
        "airlock.v1.Processes/",
        "airlock.v1.Files/",
        "grpc.health.v1.Health/",
        "grpc.reflection.v1.ServerReflection/",
        "grpc.reflection.v1alpha.ServerReflection/",
    ];
    if known.iter().any(|k| p.starts_with(k))
        && p.len() < 100
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        p.to_string()
    } else {
        "other".to_string()
    }
}

/// The name of a gRPC status code as used in labels (`OK`, `NOT_FOUND`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Records one call: counts it when its status is known, keeps the in-flight gauge up until
/// dropped (a call whose body is dropped before its trailers is counted as CANCELLED).
struct CallRecord {
    metrics: Arc<Metrics>,
    method: String,
    start: Instant,
    done: bool,
}

impl CallRecord {
    fn new(metrics: Arc<Metrics>, method: String) -> Self {
        metrics
            .active
            .get_or_create(&MethodLabel {
                method: method.clone(),
            })
            .inc();
        CallRecord {
            metrics,
            method,
            start: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, code: &str) {
        if self.done {
            return;
        }
        self.done = true;
        self.metrics
            .rpcs
            .get_or_create(&MethodCode {
                method: self.method.clone(),
                code: code.to_string(),
            })
            .inc();
        self.metrics
            .durations
            .get_or_create(&MethodLabel {
                method: self.method.clone(),
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish("CANCELLED");
        self.metrics
            .active
            .get_or_create(&MethodLabel {
                method: self.method.clone(),
            })
            .dec();
    }
}

fn grpc_code(headers: &http::HeaderMap) -> Option<&'static str> {
    let v = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(code_name(tonic::Code::from_i32(v)))
}

pin_project_lite::pin_project! {
    /// Response body that records the call's status from its trailers.
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
    }
}

impl<B> http_body::Body for MetricsBody<B>
where
    B: http_body::Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let res = this.inner.poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(rec)) = (frame.trailers_ref(), this.record.as_mut()) {
                    rec.finish(grpc_code(trailers).unwrap_or("OK"));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(rec) = this.record.as_mut() {
                    rec.finish("UNKNOWN");
                }
            }
            Poll::Ready(None) => {
                if let Some(rec) = this.record.as_mut() {
                    rec.finish("OK");
                }
                *this.record = None;
            }
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Tower layer recording [`Metrics`] for every call.
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`MetricsLayer`].
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: http_body::Body + Send + 'static,
{
    type Response = http::Response<MetricsBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut record = CallRecord::new(self.metrics.clone(), method_label(req.uri().path()));
        Box::pin(async move {
            let res = inner.call(req).await;
            match res {
                Ok(resp) => {
                    // Trailers-only responses (errors before any message) carry the status in
                    // the headers.
                    let record = match grpc_code(resp.headers()) {
                        Some(code) => {
                            record.finish(code);
                            None
                        }
                        None => Some(record),
                    };
                    Ok(resp.map(|inner| MetricsBody { inner, record }))
                }
                Err(e) => {
                    record.finish("UNKNOWN");
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(
            method_label("/airlock.v1.Processes/Exec"),
            "airlock.v1.Processes/Exec"
        );
        assert_eq!(method_label("/evil/../x"), "other");
        assert_eq!(
            method_label(&format!("/airlock.v1.Files/{}", "x".repeat(200))),
            "other"
        );
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
    }

    #[test]
    fn records_calls() {
        let m = Arc::new(Metrics::new());
        {
            let mut r = CallRecord::new(m.clone(), "airlock.v1.Files/Stat".into());
            assert!(
                m.encode()
                    .contains("airlock_gateway_active_streams{method=\"airlock.v1.Files/Stat\"} 1")
            );
            r.finish("NOT_FOUND");
        }
        drop(CallRecord::new(
            m.clone(),
            "airlock.v1.Processes/Exec".into(),
        ));
        m.add_bytes("stdout", 10);
        let text = m.encode();
        assert!(
            text.contains(
                "airlock_gateway_rpcs_total{method=\"airlock.v1.Files/Stat\",code=\"NOT_FOUND\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("airlock_gateway_rpcs_total{method=\"airlock.v1.Processes/Exec\",code=\"CANCELLED\"} 1"), "{text}");
        assert!(
            text.contains("airlock_gateway_active_streams{method=\"airlock.v1.Files/Stat\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("airlock_gateway_bytes_total{stream=\"stdout\"} 10"),
            "{text}"
        );
    }
}
