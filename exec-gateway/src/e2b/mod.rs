//! The e2b-compatible HTTP front end: the unmodified e2b SDKs (Python and JavaScript) work against
//! the gateway when `E2B_API_URL` and `E2B_SANDBOX_URL` both point at this port.
//!
//! One listener serves both of e2b's hosts:
//! - requests naming a sandbox (headers `E2b-Sandbox-Id` and `E2b-Sandbox-Port`, or a host name
//!   `<port>-<sandboxID>.<domain>` when `--e2b-domain` is set) go to that sandbox's daemon API:
//!   envd's Connect-RPC services ([`process`], [`filesystem`]), `/files` ([`files`]) and
//!   `/health`, answered from the gateway's own process and file services; port 49999 is the
//!   code interpreter ([`interpreter`]: `/execute`, `/contexts`);
//! - everything else is the control plane ([`control`]): `/sandboxes`, `/v2/sandboxes`.
//!
//! Every call goes through the same services, authentication and SubjectAccessReviews as the
//! gRPC API: the handlers build `airlock.v1` requests carrying the caller's [`Principal`] and call
//! the services in-process. The control plane takes `X-API-Key` (a Kubernetes token or a static
//! gateway token, as gRPC's bearer token); the daemon API takes the sandbox's access token
//! (`X-Access-Token`, see [`token`]) or the same API key.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use crate::auth::Principal;
use crate::files::FilesService;
use crate::processes::ProcessesService;
use crate::sandboxes::SandboxesService;
use crate::server::Ctx;
use airlock_api::proto::v1 as pb;

pub mod connect;
mod control;
mod files;
mod filesystem;
pub(crate) mod interpreter;
mod process;
pub mod proto;
pub mod token;

/// envd's port: the daemon API.
pub const ENVD_PORT: u16 = 49983;
/// The e2b code interpreter's port ([`interpreter`]).
pub const CODE_INTERPRETER_PORT: u16 = 49999;
/// The envd version reported to the SDKs. They switch features on by version; this one enables
/// what is served here (see docs/DESIGN-NOTES.md).
pub const ENVD_VERSION: &str = "0.5.6";

/// Settings of the e2b front end.
#[derive(Debug, Clone, Default)]
pub struct E2bConfig {
    /// Namespace of callers whose token names none (not a service account).
    pub namespace: Option<String>,
    /// Wildcard domain for host-name routing (`<port>-<sandboxID>.<domain>`), returned to the SDKs
    /// as the sandbox's `domain`.
    pub domain: Option<String>,
}

/// State of the e2b front end.
pub(crate) struct E2b {
    ctx: Arc<Ctx>,
    config: E2bConfig,
    key: Arc<Vec<u8>>,
}

/// A call to one sandbox's daemon API: who calls, and which sandbox.
#[derive(Debug, Clone)]
pub(crate) struct SandboxCall {
    pub namespace: String,
    pub name: String,
    pub principal: Principal,
}

impl SandboxCall {
    pub fn sandbox_ref(&self) -> pb::SandboxRef {
        pb::SandboxRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
    /// An `airlock.v1` request made by this caller.
    pub fn request<T>(&self, m: T) -> tonic::Request<T> {
        request(&self.principal, m)
    }
}

/// An `airlock.v1` request made by `principal`.
pub(crate) fn request<T>(principal: &Principal, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.extensions_mut().insert(principal.clone());
    r
}

impl E2b {
    pub fn sandboxes(&self) -> SandboxesService {
        SandboxesService { ctx: self.ctx.clone() }
    }
    pub fn processes(&self) -> ProcessesService {
        ProcessesService { ctx: self.ctx.clone() }
    }
    pub fn files(&self) -> FilesService {
        FilesService { ctx: self.ctx.clone() }
    }

    /// The caller of a control-plane request (`X-API-Key`, or `Authorization: Bearer`) and the
    /// namespace it works in: a service account's own namespace, else `--e2b-namespace`, else
    /// the gateway's default namespace.
    pub async fn caller(&self, headers: &HeaderMap) -> Result<(Principal, String), control::E2bError> {
        let mut h = HeaderMap::new();
        if let Some(key) = headers.get("x-api-key") {
            let v = format!("Bearer {}", key.to_str().unwrap_or(""));
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).map_err(|_| control::E2bError::unauthenticated("X-API-Key is not a valid header value"))?);
        } else if let Some(v) = headers.get(header::AUTHORIZATION) {
            h.insert(header::AUTHORIZATION, v.clone());
        }
        let p = self.ctx.auth.authenticate(&h).await.map_err(|s| control::E2bError::from_status(&s))?;
        let ns = match &p {
            Principal::Kubernetes { username, .. } => username
                .strip_prefix("system:serviceaccount:")
                .and_then(|r| r.split(':').next())
                .map(str::to_string),
            _ => None,
        };
        let ns = ns
            .or_else(|| self.config.namespace.clone())
            .unwrap_or_else(|| self.ctx.default_namespace.clone());
        Ok((p, ns))
    }
}

/// Which sandbox and port a request is for: the e2b headers, or the host name.
fn sandbox_target(headers: &HeaderMap, domain: Option<&str>) -> Option<(String, Option<u16>)> {
    if let Some(id) = headers.get("e2b-sandbox-id").and_then(|v| v.to_str().ok()) {
        let port = headers
            .get("e2b-sandbox-port")
            .and_then(|v| v.to_str().ok())
            .and_then(|p| p.parse().ok());
        return Some((id.to_string(), port));
    }
    let domain = domain?.trim_start_matches("*.").to_ascii_lowercase();
    let host = headers.get(header::HOST)?.to_str().ok()?.to_ascii_lowercase();
    let host = host.split(':').next().unwrap_or(&host);
    let label = host.strip_suffix(domain.as_str())?.strip_suffix('.')?;
    let (port, id) = label.split_once('-')?;
    Some((id.to_string(), port.parse().ok()))
}

/// The router of the e2b front end.
pub(crate) fn router(ctx: Arc<Ctx>, config: E2bConfig, key: Arc<Vec<u8>>) -> Router {
    let e2b = Arc::new(E2b { ctx, config, key });
    let control = control::router(e2b.clone());
    let svc = tower::service_fn(move |req: Request| {
        let (e2b, control) = (e2b.clone(), control.clone());
        async move {
            let target = sandbox_target(req.headers(), e2b.config.domain.as_deref());
            let r = match target {
                Some((id, port)) => daemon(&e2b, id, port, req).await,
                None => control.oneshot(req).await.unwrap_or_else(|e| match e {}),
            };
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    // Uploads (multipart, /files) stream to the agent without a size limit (the sandbox's own
    // ephemeral storage bounds them); the control plane and Connect bodies have their own limits.
    Router::new().fallback_service(svc).layer(axum::extract::DefaultBodyLimit::disable())
}

/// A request to a sandbox's daemon (envd) port.
async fn daemon(e2b: &E2b, id: String, port: Option<u16>, req: Request) -> Response {
    let port = port.unwrap_or(ENVD_PORT);
    if port != ENVD_PORT && port != CODE_INTERPRETER_PORT {
        return control::E2bError::new(
            StatusCode::BAD_GATEWAY,
            format!("port {port} of sandbox {id} is not served: only envd's port {ENVD_PORT} and the code interpreter's {CODE_INTERPRETER_PORT} are"),
        )
        .into_response();
    }
    let (parts, body) = req.into_parts();
    if port == ENVD_PORT && parts.uri.path() == "/health" {
        return StatusCode::NO_CONTENT.into_response();
    }
    let path = parts.uri.path().to_string();
    let call = match token::authenticate(e2b, &parts.headers, &id).await {
        Ok(c) => c,
        // Connect-RPC calls get Connect's error shape; /files and the code interpreter e2b's.
        Err(e) if port == ENVD_PORT && path != "/files" => {
            use tonic::Code;
            let code = match e.status {
                StatusCode::UNAUTHORIZED => Code::Unauthenticated,
                StatusCode::FORBIDDEN => Code::PermissionDenied,
                StatusCode::NOT_FOUND => Code::NotFound,
                StatusCode::BAD_REQUEST => Code::InvalidArgument,
                StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
                _ => Code::Internal,
            };
            return connect::ConnectError::new(code, e.message).into_response();
        }
        Err(e) => return e.into_response(),
    };
    if port == CODE_INTERPRETER_PORT {
        return interpreter::serve(e2b, call, parts, body).await;
    }
    if path == "/files" {
        return files::serve(e2b, call, parts, body).await;
    }
    let body = match axum::body::to_bytes(body, connect::MAX_MESSAGE).await {
        Ok(b) => b,
        Err(e) => {
            return connect::ConnectError::new(tonic::Code::ResourceExhausted, format!("reading the request: {e}"))
                .into_response();
        }
    };
    if parts.method != axum::http::Method::POST {
        return control::E2bError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} {path}: use POST", parts.method)).into_response();
    }
    match path.trim_start_matches('/').split_once('/') {
        Some(("process.Process", m)) => process::serve(e2b, call, m, &parts.headers, body).await,
        Some(("filesystem.Filesystem", m)) => filesystem::serve(e2b, call, m, &parts.headers, body).await,
        _ => connect::ConnectError::new(tonic::Code::NotFound, format!("no such service or method: {path}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_targets_come_from_headers_or_host() {
        let mut h = HeaderMap::new();
        assert_eq!(sandbox_target(&h, None), None);
        h.insert(header::HOST, HeaderValue::from_static("49983-sbx-abc.e2b.example.com:443"));
        assert_eq!(sandbox_target(&h, None), None);
        assert_eq!(
            sandbox_target(&h, Some("e2b.example.com")),
            Some(("sbx-abc".to_string(), Some(49983)))
        );
        assert_eq!(sandbox_target(&h, Some("other.example.com")), None);
        assert_eq!(
            sandbox_target(&h, Some("*.E2B.example.com")),
            Some(("sbx-abc".to_string(), Some(49983)))
        );
        h.insert("e2b-sandbox-id", HeaderValue::from_static("s1"));
        h.insert("e2b-sandbox-port", HeaderValue::from_static("49999"));
        assert_eq!(sandbox_target(&h, None), Some(("s1".to_string(), Some(49999))));
    }
}
