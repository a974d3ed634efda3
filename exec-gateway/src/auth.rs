//! Authentication (a tower layer in front of every gRPC service) and authorization (checked by
//! each method once it knows the target namespace).
//!
//! Modes:
//! - `kubernetes` (default): the bearer token is checked with a TokenReview
//!   (`authentication.k8s.io/v1`); each call is then authorized with a SubjectAccessReview
//!   (`authorization.k8s.io/v1`) for group `airlock.dev`, resource `sandboxes` (or the
//!   subresources `sandboxes/exec` and `sandboxes/files`) in the target namespace. Both decisions
//!   are cached for [`CACHE_TTL`], keyed by a hash of the token / the exact review.
//! - `static`: tokens from a file, one `TOKEN NAMESPACE[,NAMESPACE...]` or `TOKEN *` per line
//!   (`#` comments and blank lines ignored); a token may do everything in its namespaces.
//! - `none`: everybody may do everything (local development only).
//!
//! Missing or unknown token: UNAUTHENTICATED. Denied: PERMISSION_DENIED naming the verb, the
//! resource and the namespace. The health and reflection services need no token.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use sha2::{Digest, Sha256};
use tonic::Status;

/// How long authentication and authorization decisions are cached.
pub const CACHE_TTL: Duration = Duration::from_secs(10);

/// Errors of loading auth configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("static tokens file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("static tokens file, line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("static tokens file has no tokens")]
    Empty,
}

/// Namespaces a static token may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    Only(BTreeSet<String>),
}

impl Namespaces {
    pub fn allows(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(set) => set.contains(ns),
        }
    }
}

/// Tokens of the `static` mode, stored by SHA-256 so the map never holds a raw token.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<[u8; 32], (String, Namespaces)>,
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl StaticTokens {
    /// Parses `TOKEN NAMESPACES` lines.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut tokens = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| AuthError::Parse {
                line: line_no,
                message,
            };
            let mut parts = line.split_whitespace();
            let (Some(token), Some(spec), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err(
                    "expected `TOKEN NAMESPACE[,NAMESPACE...]` or `TOKEN *`".into(),
                ));
            };
            if token.len() < 8 {
                return Err(err("token must be at least 8 characters".into()));
            }
            let namespaces = if spec == "*" {
                Namespaces::All
            } else {
                let mut set = BTreeSet::new();
                for ns in spec.split(',') {
                    if !crate::validate::is_dns_label(ns) {
                        return Err(err(format!("invalid namespace {ns:?}")));
                    }
                    set.insert(ns.to_string());
                }
                Namespaces::Only(set)
            };
            let hash = sha256(token);
            let id = format!("static:{}", &hex::encode(hash)[..12]);
            if tokens.insert(hash, (id, namespaces)).is_some() {
                return Err(err("duplicate token".into()));
            }
        }
        if tokens.is_empty() {
            return Err(AuthError::Empty);
        }
        Ok(StaticTokens { tokens })
    }

    /// Reads and parses a tokens file.
    pub fn load(path: &std::path::Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The identity and namespaces of a token.
    pub fn lookup(&self, token: &str) -> Option<(&str, &Namespaces)> {
        self.tokens
            .get(&sha256(token))
            .map(|(id, ns)| (id.as_str(), ns))
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Authentication mode.
#[derive(Debug, Clone)]
pub enum AuthMode {
    Kubernetes,
    Static(StaticTokens),
    None,
}

/// Who is calling, put in the request's extensions by [`AuthLayer`].
#[derive(Debug, Clone)]
pub enum Principal {
    Kubernetes {
        username: String,
        uid: String,
        groups: Vec<String>,
        extra: std::collections::BTreeMap<String, Vec<String>>,
    },
    Static {
        id: String,
        namespaces: Namespaces,
    },
    Anonymous,
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Kubernetes { username, .. } => username,
            Principal::Static { id, .. } => id,
            Principal::Anonymous => "anonymous",
        }
    }
}

/// What a call wants to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    pub namespace: String,
    pub verb: &'static str,
    /// None, `exec` or `files`.
    pub subresource: Option<&'static str>,
    /// The sandbox, when the call is about one.
    pub name: Option<String>,
}

impl Access {
    pub fn new(verb: &'static str, namespace: &str, name: Option<&str>) -> Self {
        Access {
            namespace: namespace.to_string(),
            verb,
            subresource: None,
            name: name.map(str::to_string),
        }
    }
    pub fn subresource(mut self, subresource: &'static str) -> Self {
        self.subresource = Some(subresource);
        self
    }
    fn resource(&self) -> String {
        match self.subresource {
            Some(s) => format!("sandboxes/{s}"),
            None => "sandboxes".to_string(),
        }
    }
}

/// A small map whose entries expire.
struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration, max: usize) -> Self {
        TtlCache {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }
    fn get(&self, k: &K, now: Instant) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(k)
            .filter(|(t, _)| now.saturating_duration_since(*t) < self.ttl)
            .map(|(_, v)| v.clone())
    }
    fn put(&self, k: K, v: V, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max {
            let ttl = self.ttl;
            map.retain(|_, (t, _)| now.saturating_duration_since(*t) < ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(k, (now, v));
    }
}

/// Authenticates tokens and authorizes calls.
pub struct Authenticator {
    mode: AuthMode,
    client: kube::Client,
    tokens: TtlCache<[u8; 32], Option<Principal>>,
    decisions: TtlCache<String, Result<(), String>>,
}

impl Authenticator {
    pub fn new(mode: AuthMode, client: kube::Client) -> Self {
        Authenticator {
            mode,
            client,
            tokens: TtlCache::new(CACHE_TTL, 10_000),
            decisions: TtlCache::new(CACHE_TTL, 50_000),
        }
    }

    pub fn mode(&self) -> &AuthMode {
        &self.mode
    }

    /// Authenticates the `authorization: Bearer` header.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, Status> {
        if matches!(self.mode, AuthMode::None) {
            return Ok(Principal::Anonymous);
        }
        let token = bearer_token(headers)?;
        match &self.mode {
            AuthMode::None => Ok(Principal::Anonymous),
            AuthMode::Static(tokens) => match tokens.lookup(token) {
                Some((id, ns)) => Ok(Principal::Static {
                    id: id.to_string(),
                    namespaces: ns.clone(),
                }),
                None => Err(Status::unauthenticated("invalid bearer token")),
            },
            AuthMode::Kubernetes => {
                let key = sha256(token);
                let now = Instant::now();
                let principal = match self.tokens.get(&key, now) {
                    Some(p) => p,
                    None => {
                        let p = self.token_review(token).await?;
                        self.tokens.put(key, p.clone(), now);
                        p
                    }
                };
                principal.ok_or_else(|| Status::unauthenticated("invalid bearer token"))
            }
        }
    }

    async fn token_review(&self, token: &str) -> Result<Option<Principal>, Status> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let out = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "TokenReview failed");
                Status::unavailable(format!("authenticating the token: TokenReview failed: {e}"))
            })?;
        let Some(status) = out.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            tracing::debug!(
                error = status.error.as_deref().unwrap_or(""),
                "token rejected by TokenReview"
            );
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        Ok(Some(Principal::Kubernetes {
            username: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        }))
    }

    /// Authorizes `access` for the caller; PERMISSION_DENIED names verb, resource and namespace.
    pub async fn authorize(
        &self,
        principal: Option<&Principal>,
        access: &Access,
    ) -> Result<(), Status> {
        let Some(principal) = principal else {
            // The layer always inserts a principal; without one the layer was bypassed.
            return match self.mode {
                AuthMode::None => Ok(()),
                _ => Err(Status::unauthenticated("missing bearer token")),
            };
        };
        let denied = |who: &str, reason: &str| {
            let mut m = format!(
                "{who} may not {} {} in namespace {}",
                access.verb,
                access.resource(),
                access.namespace
            );
            if !reason.is_empty() {
                m.push_str(": ");
                m.push_str(reason);
            }
            Status::permission_denied(m)
        };
        match principal {
            Principal::Anonymous => Ok(()),
            Principal::Static { id, namespaces } => {
                if namespaces.allows(&access.namespace) {
                    Ok(())
                } else {
                    Err(denied(id, ""))
                }
            }
            Principal::Kubernetes {
                username,
                uid,
                groups,
                extra,
            } => {
                let spec = SubjectAccessReviewSpec {
                    user: Some(username.clone()),
                    uid: (!uid.is_empty()).then(|| uid.clone()),
                    groups: Some(groups.clone()),
                    extra: (!extra.is_empty()).then(|| extra.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(airlock_crds::GROUP.to_string()),
                        version: Some(airlock_crds::VERSION.to_string()),
                        resource: Some("sandboxes".to_string()),
                        subresource: access.subresource.map(str::to_string),
                        namespace: Some(access.namespace.clone()),
                        name: access.name.clone(),
                        verb: Some(access.verb.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let key = serde_json::to_string(&spec).unwrap_or_default();
                let now = Instant::now();
                let decision = match self.decisions.get(&key, now) {
                    Some(d) => d,
                    None => {
                        let d = self.subject_access_review(spec).await?;
                        self.decisions.put(key, d.clone(), now);
                        d
                    }
                };
                decision.map_err(|reason| denied(username, &reason))
            }
        }
    }

    async fn subject_access_review(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> Result<Result<(), String>, Status> {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = SubjectAccessReview {
            spec,
            ..Default::default()
        };
        let out = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "SubjectAccessReview failed");
                Status::unavailable(format!(
                    "authorizing the call: SubjectAccessReview failed: {e}"
                ))
            })?;
        let status = out.status.unwrap_or_default();
        Ok(if status.allowed {
            Ok(())
        } else {
            Err(status.reason.unwrap_or_default())
        })
    }
}

/// The token of an `authorization: Bearer TOKEN` header.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<&str, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(Status::unauthenticated(
            "missing bearer token (authorization: Bearer <token>)",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Status::unauthenticated("malformed authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Status::unauthenticated(
            "authorization header must use the Bearer scheme",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Status::unauthenticated(
            "missing bearer token (authorization: Bearer <token>)",
        ));
    }
    Ok(token)
}

/// Paths that need no token.
pub fn is_exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// Tower layer that authenticates every call (except health and reflection) and puts the
/// [`Principal`] in the request's extensions.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            if is_exempt(req.uri().path()) {
                return inner.call(req).await;
            }
            match auth.authenticate(req.headers()).await {
                Ok(p) => {
                    req.extensions_mut().insert(p);
                    inner.call(req).await
                }
                Err(status) => {
                    tracing::info!(path = req.uri().path(), code = ?status.code(), reason = status.message(), "call refused");
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn dead_client() -> kube::Client {
        let cfg = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        kube::Client::try_from(cfg).unwrap()
    }

    #[test]
    fn static_tokens_parse() {
        let t = StaticTokens::parse("# comment\n\n tok-aaaaaaaa team-a,team-b \ntok-bbbbbbbb *\n")
            .unwrap();
        assert_eq!(t.len(), 2);
        let (_, ns) = t.lookup("tok-aaaaaaaa").unwrap();
        assert!(ns.allows("team-a") && ns.allows("team-b") && !ns.allows("team-c"));
        assert_eq!(t.lookup("tok-bbbbbbbb").unwrap().1, &Namespaces::All);
        assert!(t.lookup("tok-cccccccc").is_none());
        assert!(t.lookup("").is_none());

        let e = |s: &str| StaticTokens::parse(s).unwrap_err().to_string();
        assert_eq!(e(""), "static tokens file has no tokens");
        assert_eq!(e("# only\n"), "static tokens file has no tokens");
        assert!(e("tok-aaaaaaaa\n").starts_with("static tokens file, line 1: expected"));
        assert!(e("x\ntok-aaaaaaaa a b\n").starts_with("static tokens file, line 1:"));
        assert!(e("tok-aaaaaaaa a\ntok-aaaaaaaa b\n").contains("line 2: duplicate token"));
        assert!(e("tok-aaaaaaaa Bad_NS\n").contains("line 1: invalid namespace \"Bad_NS\""));
        assert!(e("tok-aaaaaaaa a,,b\n").contains("invalid namespace \"\""));
        assert!(e("short a\n").contains("at least 8"));
    }

    fn headers(v: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = v {
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(&headers(Some("Bearer abc"))).unwrap(), "abc");
        assert_eq!(bearer_token(&headers(Some("bearer  abc "))).unwrap(), "abc");
        for bad in [
            None,
            Some("Basic abc"),
            Some("Bearer"),
            Some("Bearer   "),
            Some("abc"),
        ] {
            assert_eq!(
                bearer_token(&headers(bad)).unwrap_err().code(),
                Code::Unauthenticated,
                "{bad:?}"
            );
        }
        assert!(is_exempt("/grpc.health.v1.Health/Check"));
        assert!(is_exempt(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_exempt("/airlock.v1.Processes/Exec"));
    }

    #[tokio::test]
    async fn static_mode_decisions() {
        let tokens = StaticTokens::parse("tok-aaaaaaaa team-a\n").unwrap();
        let auth = Authenticator::new(AuthMode::Static(tokens), dead_client());
        assert_eq!(
            auth.authenticate(&headers(None)).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(&headers(Some("Bearer wrong-token")))
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
        let p = auth
            .authenticate(&headers(Some("Bearer tok-aaaaaaaa")))
            .await
            .unwrap();
        auth.authorize(Some(&p), &Access::new("create", "team-a", None))
            .await
            .unwrap();
        let denied = auth
            .authorize(
                Some(&p),
                &Access::new("create", "team-b", Some("x")).subresource("exec"),
            )
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(
            denied
                .message()
                .contains("may not create sandboxes/exec in namespace team-b"),
            "{}",
            denied.message()
        );
        assert_eq!(
            auth.authorize(None, &Access::new("get", "team-a", None))
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
    }

    #[tokio::test]
    async fn none_mode_allows_everything() {
        let auth = Authenticator::new(AuthMode::None, dead_client());
        let p = auth.authenticate(&headers(None)).await.unwrap();
        auth.authorize(Some(&p), &Access::new("delete", "anything", Some("x")))
            .await
            .unwrap();
        auth.authorize(None, &Access::new("delete", "anything", Some("x")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn kubernetes_mode_without_api_is_unavailable_not_allowed() {
        let auth = Authenticator::new(AuthMode::Kubernetes, dead_client());
        assert_eq!(
            auth.authenticate(&headers(None)).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(&headers(Some("Bearer some-token")))
                .await
                .unwrap_err()
                .code(),
            Code::Unavailable
        );
        let p = Principal::Kubernetes {
            username: "u".into(),
            uid: String::new(),
            groups: vec![],
            extra: Default::default(),
        };
        assert_eq!(
            auth.authorize(Some(&p), &Access::new("get", "ns", None))
                .await
                .unwrap_err()
                .code(),
            Code::Unavailable
        );
    }

    #[test]
    fn ttl_cache_expires() {
        let c: TtlCache<u8, u8> = TtlCache::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        c.put(1, 10, t0);
        assert_eq!(c.get(&1, t0 + Duration::from_secs(9)), Some(10));
        assert_eq!(c.get(&1, t0 + Duration::from_secs(10)), None);
        c.put(2, 20, t0);
        c.put(3, 30, t0 + Duration::from_secs(11)); // full: prunes expired
        assert_eq!(c.get(&3, t0 + Duration::from_secs(11)), Some(30));
    }
}
