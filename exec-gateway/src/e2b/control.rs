//! e2b's control plane (`/sandboxes`, `/v2/sandboxes`) on the gateway's Sandboxes service.
//!
//! - A sandbox ID is the Sandbox's name; its namespace is the caller's (see [`E2b::caller`]).
//! - `templateID` names a SandboxTemplate, so a SandboxPool of it serves `Sandbox.create()` warm.
//! - `timeout` is the time-to-live (default 300 s, as e2b's); `set_timeout` extends it to "now +
//!   timeout" through ExtendSandbox and never shortens it (a sandbox is never cut short by a
//!   later, smaller timeout: it ends at the later of the two deadlines).
//! - `metadata` is stored as the Sandbox's labels, so `GET /v2/sandboxes?metadata=` is a label
//!   selector; keys and values must therefore be valid label keys and values.
//! - Pause, resume, snapshots and template builds answer 501 with e2b's error shape.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_api::proto::v1 as pb;
use airlock_api::proto::v1::sandboxes_server::Sandboxes;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{E2b, ENVD_VERSION, request, token};

/// The default time-to-live of a sandbox created without `timeout` (e2b's default).
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 300;
/// Generated names of sandboxes created through the e2b API start with this.
pub const NAME_PREFIX: &str = "e2b-";

/// An error in e2b's shape: an HTTP status and `{"code": <status>, "message": ...}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct E2bError {
    pub status: StatusCode,
    pub message: String,
}

impl E2bError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        E2bError { status, message: message.into() }
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// The HTTP status of a gRPC status (as e2b's API answers the same conditions).
    pub fn from_status(s: &tonic::Status) -> Self {
        use tonic::Code::*;
        let status = match s.code() {
            InvalidArgument | OutOfRange | FailedPrecondition => StatusCode::BAD_REQUEST,
            Unauthenticated => StatusCode::UNAUTHORIZED,
            PermissionDenied => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            AlreadyExists | Aborted => StatusCode::CONFLICT,
            ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, s.message())
    }
}

impl IntoResponse for E2bError {
    /// `Should-Retry: false`: the Python SDK retries 429/502/503/504 otherwise, and a retried
    /// create would start another sandbox.
    fn into_response(self) -> Response {
        let body = axum::Json(json!({"code": self.status.as_u16(), "message": self.message}));
        (self.status, [("should-retry", "false")], body).into_response()
    }
}

type Answer = Result<Response, E2bError>;

pub(crate) fn router(e2b: Arc<E2b>) -> Router {
    Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/v2/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(detail).delete(kill))
        .route("/v2/sandboxes/{id}", get(detail).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/pause", any(unsupported))
        .route("/sandboxes/{id}/resume", any(unsupported))
        .route("/sandboxes/{id}/snapshots", any(unsupported))
        .route("/sandboxes/{id}/refreshes", any(unsupported))
        .route("/templates", any(unsupported))
        .route("/templates/{*rest}", any(unsupported))
        .route("/v2/templates", any(unsupported))
        .route("/v2/templates/{*rest}", any(unsupported))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .fallback(|req: axum::extract::Request| async move {
            E2bError::new(StatusCode::NOT_FOUND, format!("{} {} is not part of the e2b API this gateway serves", req.method(), req.uri().path()))
        })
        .with_state(e2b)
}

async fn unsupported(req: axum::extract::Request) -> E2bError {
    E2bError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{} {} is not supported by Airlock: pause/resume, snapshots, refreshes and template builds are not available (templates are SandboxTemplates, managed with kubectl or Helm)",
            req.method(),
            req.uri().path()
        ),
    )
}

/// The body of `POST /sandboxes`: e2b's NewSandbox (unknown fields are ignored, as e2b's API does).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<i64>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    auto_pause: Option<bool>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    network: Option<Value>,
}

fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, E2bError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| E2bError::bad(format!("request body: {e}")))
}

fn labels(field: &str, m: &BTreeMap<String, String>) -> Result<(), E2bError> {
    use crate::validate::{is_label_key, is_label_value};
    for (k, v) in m {
        if !is_label_key(k) {
            return Err(E2bError::bad(format!("{field}.{k}: Airlock keeps metadata as Kubernetes labels; {k:?} is not a valid label key")));
        }
        if !is_label_value(v) {
            return Err(E2bError::bad(format!("{field}.{k}: Airlock keeps metadata as Kubernetes labels; {v:?} is not a valid label value (at most 63 letters, digits, '-', '_', '.')")));
        }
    }
    Ok(())
}

async fn create(State(e2b): State<Arc<E2b>>, headers: HeaderMap, body: Bytes) -> Answer {
    let (principal, ns) = e2b.caller(&headers).await?;
    let r: NewSandbox = json_body(&body)?;
    let template = r.template_id.filter(|t| !t.is_empty()).ok_or_else(|| E2bError::bad("templateID: required (the name of a SandboxTemplate)"))?;
    if r.auto_pause == Some(true) {
        return Err(E2bError::new(StatusCode::NOT_IMPLEMENTED, "autoPause: pausing sandboxes is not supported by Airlock"));
    }
    if r.network.as_ref().is_some_and(|n| !n.is_null() && n != &json!({})) {
        return Err(E2bError::new(StatusCode::NOT_IMPLEMENTED, "network: per-sandbox allow/deny lists are not supported through the e2b API; use allow_internet_access, or a SandboxTemplate's network"));
    }
    let timeout = r.timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let max = e2b.ctx.max_ttl_seconds;
    if timeout <= 0 || timeout > max {
        return Err(E2bError::bad(format!("timeout: must be between 1 and the operator's maximum time-to-live of {max} seconds, got {timeout}")));
    }
    let metadata = r.metadata.unwrap_or_default();
    labels("metadata", &metadata)?;
    let network = match r.allow_internet_access {
        Some(true) => Some(pb::Network { egress: pb::network::Egress::Internet as i32, allow: vec![], dns: true }),
        Some(false) => Some(pb::Network { egress: pb::network::Egress::None as i32, allow: vec![], dns: false }),
        None => None,
    };
    let req = pb::CreateSandboxRequest {
        namespace: ns.clone(),
        generate_name: NAME_PREFIX.to_string(),
        source: Some(pb::create_sandbox_request::Source::Template(template.clone())),
        ttl_seconds: timeout,
        env: r.env_vars.unwrap_or_default().into_iter().collect(),
        labels: metadata.into_iter().collect(),
        network,
        wait_ready: true,
        ..Default::default()
    };
    let s = e2b.sandboxes().create_sandbox(request(&principal, req)).await.map_err(|s| {
        let mut e = E2bError::from_status(&s);
        // The operator reports a missing template as the Sandbox's failure.
        if s.message().contains("TemplateNotFound") {
            e.status = StatusCode::NOT_FOUND;
            e.message = format!("template {template:?} not found in namespace {ns}: {}", s.message());
        }
        e
    })?;
    // A caller allowed to create but not to exec gets no token (its SDK's commands then fail 401).
    let token = may_use(&e2b, &principal, s.get_ref()).await.is_ok();
    Ok((StatusCode::CREATED, axum::Json(created(&e2b, s.get_ref(), token))).into_response())
}

/// Whether `principal` may run commands and use files in sandbox `s` (what its access token
/// opens): a token is handed only to such a caller, so `get` alone never yields exec.
async fn may_use(e2b: &E2b, principal: &crate::auth::Principal, s: &pb::Sandbox) -> Result<(), tonic::Status> {
    use crate::auth::Access;
    for sub in ["exec", "files"] {
        let access = Access::new("create", &s.namespace, Some(&s.name)).subresource(sub);
        e2b.ctx.auth.authorize(Some(principal), &access).await?;
    }
    Ok(())
}

/// e2b's `Sandbox` (the answer to create and connect), with the sandbox's access token when
/// `token` (the caller may use the sandbox).
fn created(e2b: &E2b, s: &pb::Sandbox, token: bool) -> Value {
    let t = token.then(|| token::issue(&e2b.key, &s.namespace, &s.uid));
    json!({
        "templateID": s.template,
        "sandboxID": s.name,
        "clientID": "airlock",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": t,
        // The code interpreter SDK sends this one (on every call, where envd's calls send the other).
        "trafficAccessToken": t,
        "domain": e2b.config.domain,
    })
}

fn rfc3339(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|d| Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

/// CPUs of a quantity, rounded up ("500m" is 1).
fn cpus(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse::<i64>().map(|m| (m + 999) / 1000).unwrap_or(0),
        None => q.parse::<f64>().map(|c| c.ceil() as i64).unwrap_or(0),
    }
}

/// MiB of a quantity ("512Mi" is 512, "1Gi" 1024, "1G" 953).
fn mebibytes(q: &str) -> i64 {
    const UNITS: [(&str, f64); 8] = [
        ("Ki", 1024.0), ("Mi", 1048576.0), ("Gi", 1073741824.0), ("Ti", 1099511627776.0),
        ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12),
    ];
    let (num, mult) = UNITS
        .iter()
        .find_map(|(u, m)| q.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((q, 1.0));
    num.parse::<f64>().map(|n| (n * mult / 1048576.0) as i64).unwrap_or(0)
}

/// When the sandbox's time-to-live ends (Unix seconds): creation + ttlSeconds + extensionSeconds,
/// from the spec, so an ExtendSandbox shows at once (the status follows when the operator has
/// seen it). Without a TTL: the status's deadline.
fn end_at(s: &pb::Sandbox) -> Option<i64> {
    match (&s.created_at, s.ttl_seconds) {
        (Some(c), ttl) if ttl > 0 => Some(c.seconds + ttl + s.extension_seconds),
        _ => s.ttl_expires_at.or(s.expires_at).map(|t| t.seconds),
    }
}

/// e2b's `SandboxDetail` / `ListedSandbox`.
fn detail_json(s: &pb::Sandbox) -> Value {
    let res = s.resources.clone().unwrap_or_default();
    json!({
        "templateID": s.template,
        "alias": s.template,
        "sandboxID": s.name,
        "clientID": "airlock",
        "startedAt": rfc3339(&s.created_at),
        "endAt": rfc3339(&end_at(s).map(|seconds| prost_types::Timestamp { seconds, nanos: 0 })),
        "cpuCount": cpus(&res.cpu),
        "memoryMB": mebibytes(&res.memory),
        "diskSizeMB": mebibytes(&res.ephemeral_storage),
        "envdVersion": ENVD_VERSION,
        "state": "running",
        "metadata": s.labels,
    })
}

async fn get_sandbox(e2b: &E2b, headers: &HeaderMap, id: &str) -> Result<(crate::auth::Principal, pb::Sandbox), E2bError> {
    let (principal, ns) = e2b.caller(headers).await?;
    let req = pb::GetSandboxRequest { sandbox: Some(pb::SandboxRef { namespace: ns, name: id.to_string() }) };
    let s = e2b.sandboxes().get_sandbox(request(&principal, req)).await.map_err(|s| not_found(id, &s))?;
    Ok((principal, s.into_inner()))
}

fn not_found(id: &str, s: &tonic::Status) -> E2bError {
    let mut e = E2bError::from_status(s);
    if s.code() == tonic::Code::NotFound || s.code() == tonic::Code::InvalidArgument {
        e = E2bError::new(StatusCode::NOT_FOUND, format!("sandbox {id:?} not found"));
    }
    e
}

async fn detail(State(e2b): State<Arc<E2b>>, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let (_, s) = get_sandbox(&e2b, &headers, &id).await?;
    Ok(axum::Json(detail_json(&s)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    metadata: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// Percent-decodes `s` (the SDKs encode metadata keys and values before the query does); `+` is
/// a space (form encoding). Works on bytes: any input is safe.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The label selector of e2b's `metadata` filter (`k1=v1&k2=v2`, each part percent-encoded).
fn metadata_selector(q: &str) -> Result<String, E2bError> {
    let mut m = BTreeMap::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| E2bError::bad(format!("metadata: {part:?} is not key=value")))?;
        let (mut k, mut v) = (unescape(k), unescape(v));
        // Encoded twice by some SDK versions.
        if k.contains('%') {
            k = unescape(&k);
        }
        if v.contains('%') {
            v = unescape(&v);
        }
        m.insert(k, v);
    }
    labels("metadata", &m)?;
    Ok(m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
}

async fn list(State(e2b): State<Arc<E2b>>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Answer {
    let (principal, ns) = e2b.caller(&headers).await?;
    let selector = q.metadata.as_deref().map(metadata_selector).transpose()?.unwrap_or_default();
    if let Some(state) = &q.state {
        // Only running sandboxes exist here (nothing is ever paused).
        if !state.split(',').any(|s| s.trim() == "running") {
            return Ok(axum::Json(json!([])).into_response());
        }
    }
    let req = pb::ListSandboxesRequest { namespace: ns, label_selector: selector };
    let list = e2b.sandboxes().list_sandboxes(request(&principal, req)).await.map_err(|s| E2bError::from_status(&s))?;
    // Sorted by name; `nextToken` is the last name of the previous page.
    let after = q.next_token.unwrap_or_default();
    let mut items: Vec<&pb::Sandbox> = list.get_ref().sandboxes.iter().filter(|s| s.name > after && !s.deleting).collect();
    let mut next = None;
    if let Some(limit) = q.limit.filter(|l| *l > 0) {
        if items.len() > limit {
            items.truncate(limit);
            next = items.last().map(|s| s.name.clone());
        }
    }
    let mut r = axum::Json(Value::Array(items.into_iter().map(detail_json).collect())).into_response();
    if let Some(n) = next.and_then(|n| axum::http::HeaderValue::from_str(&n).ok()) {
        r.headers_mut().insert("x-next-token", n);
    }
    Ok(r)
}

async fn kill(State(e2b): State<Arc<E2b>>, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let (principal, ns) = e2b.caller(&headers).await?;
    let req = pb::DeleteSandboxRequest { sandbox: Some(pb::SandboxRef { namespace: ns, name: id.clone() }) };
    e2b.sandboxes().delete_sandbox(request(&principal, req)).await.map_err(|s| not_found(&id, &s))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize)]
struct Timeout {
    timeout: Option<i64>,
}

/// Moves the sandbox's end to "now + timeout" if that is later than its current end.
async fn extend_to(e2b: &E2b, principal: &crate::auth::Principal, s: &pb::Sandbox, timeout: i64) -> Result<(), E2bError> {
    let max = e2b.ctx.max_ttl_seconds;
    if timeout <= 0 || timeout > max {
        return Err(E2bError::bad(format!("timeout: must be between 1 and the operator's maximum time-to-live of {max} seconds, got {timeout}")));
    }
    let now = chrono::Utc::now().timestamp();
    let end = end_at(s).unwrap_or(now);
    let add = now.saturating_add(timeout).saturating_sub(end);
    if add <= 0 {
        return Ok(());
    }
    let req = pb::ExtendSandboxRequest { sandbox: Some(pb::SandboxRef { namespace: s.namespace.clone(), name: s.name.clone() }), add_seconds: add };
    e2b.sandboxes().extend_sandbox(request(principal, req)).await.map_err(|st| E2bError::from_status(&st))?;
    Ok(())
}

async fn set_timeout(State(e2b): State<Arc<E2b>>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Answer {
    let t: Timeout = json_body(&body)?;
    let timeout = t.timeout.ok_or_else(|| E2bError::bad("timeout: required"))?;
    let (principal, s) = get_sandbox(&e2b, &headers, &id).await?;
    extend_to(&e2b, &principal, &s, timeout).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn connect(State(e2b): State<Arc<E2b>>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Answer {
    let t: Timeout = json_body(&body)?;
    let (principal, s) = get_sandbox(&e2b, &headers, &id).await?;
    may_use(&e2b, &principal, &s).await.map_err(|st| E2bError::from_status(&st))?;
    if let Some(timeout) = t.timeout {
        extend_to(&e2b, &principal, &s, timeout).await?;
    }
    Ok(axum::Json(created(&e2b, &s, true)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpus("500m"), 1);
        assert_eq!(cpus("2"), 2);
        assert_eq!(cpus("1.5"), 2);
        assert_eq!(cpus(""), 0);
        assert_eq!(mebibytes("512Mi"), 512);
        assert_eq!(mebibytes("1Gi"), 1024);
        assert_eq!(mebibytes("1G"), 953);
        assert_eq!(mebibytes("x"), 0);
    }

    #[test]
    fn metadata_filters_become_label_selectors() {
        assert_eq!(metadata_selector("k=v&user=a").unwrap(), "k=v,user=a");
        assert_eq!(metadata_selector("k%3D=v").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(metadata_selector("team%2520x=v").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(metadata_selector("app%252Dname=v").unwrap(), "app-name=v");
        assert!(metadata_selector("novalue").is_err());
        assert_eq!(unescape("a%2"), "a%2");
        assert_eq!(unescape("%aé"), "%aé");
        assert_eq!(unescape("%C3%A9+x"), "é x");
        assert!(metadata_selector("k=%aé").is_err());
    }

    /// Arbitrary query strings and bodies never panic (a small deterministic fuzz).
    #[test]
    fn arbitrary_input_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let alphabet = "%=&+aZ09.-_/é\u{0}\u{ffff}{}\":,[]".chars().collect::<Vec<_>>();
        for _ in 0..20_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = ((x >> 33) % 24) as usize;
            let s: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = unescape(&s);
            let _ = metadata_selector(&s);
            let _ = json_body::<NewSandbox>(&Bytes::from(s.clone()));
            let _ = json_body::<Timeout>(&Bytes::from(s));
        }
    }

    #[test]
    fn errors_have_e2bs_shape() {
        let e = E2bError::from_status(&tonic::Status::permission_denied("no"));
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(E2bError::from_status(&tonic::Status::unauthenticated("x")).status, StatusCode::UNAUTHORIZED);
        let r: NewSandbox = json_body(&Bytes::from_static(br#"{"templateID":"base","timeout":60,"metadata":{"a":"b"},"envVars":{"X":"1"},"extra":1}"#)).unwrap();
        assert_eq!(r.template_id.as_deref(), Some("base"));
        assert_eq!(r.env_vars.unwrap()["X"], "1");
        assert!(json_body::<NewSandbox>(&Bytes::from_static(br#"{"timeout":"x"}"#)).is_err());
    }
}
