//! Authentication (a tower layer in front of every gRPC service) and authorization (checked by
//! each method once it knows the target namespace).
//!
//! Modes:
//! - `kubernetes` (default): the bearer token is checked with a TokenReview
//!   (`authentication.k8s.io/v1`); each call is then authorized with a SubjectAccessReview
//!   (`authorization.k8s.io/v1`) for group `airlock.dev`, resource `sandboxes` (or the
//!   subresources `sandboxes/exec` and `sandboxes/files`) in the target namespace. Reviews are
//!   bounded and cached (see [`review`]); `--token-audience` makes TokenReviews ask for an
//!   audience, so only tokens minted for Airlock are accepted.
//! - `static`: tokens from a file, one `TOKEN NAMESPACE[,NAMESPACE...]` or `TOKEN *` per line
//!   (`#` comments and blank lines ignored); a token may do everything in its namespaces.
//! - `none`: everybody may do everything (local development only).
//!
//! Missing or unknown token: UNAUTHENTICATED. Denied: PERMISSION_DENIED naming the verb, the
//! resource and the namespace. The health and reflection services need no token.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReviewSpec};
use tonic::Status;

use review::Reviewer;
use static_tokens::sha256;

pub mod review;
mod static_tokens;

pub use review::ReviewLimits;
pub use static_tokens::{AuthError, Namespaces, StaticTokens};

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
    /// The holder of one sandbox's e2b access token (`envdAccessToken`, see `crate::e2b::token`):
    /// may use that sandbox's processes and files, nothing else.
    Sandbox { namespace: String, name: String },
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Kubernetes { username, .. } => username,
            Principal::Static { id, .. } => id,
            Principal::Anonymous => "anonymous",
            Principal::Sandbox { .. } => "sandbox-access-token",
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

/// Authenticates tokens and authorizes calls.
pub struct Authenticator {
    mode: AuthMode,
    reviewer: Reviewer,
}

impl Authenticator {
    /// With the default [`ReviewLimits`].
    pub fn new(mode: AuthMode, client: kube::Client) -> Self {
        Self::with_limits(mode, client, ReviewLimits::default())
    }

    pub fn with_limits(mode: AuthMode, client: kube::Client, limits: ReviewLimits) -> Self {
        Authenticator {
            mode,
            reviewer: Reviewer::new(client, limits),
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
            AuthMode::Kubernetes => self.reviewer.authenticate(sha256(token), token).await,
        }
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
            Principal::Sandbox { namespace, name } => {
                let same = access.namespace == *namespace && access.name.as_deref() == Some(name);
                let allowed = matches!((access.verb, access.subresource), ("get", None) | (_, Some("exec" | "files")));
                if same && allowed {
                    Ok(())
                } else {
                    Err(denied(&format!("the access token of sandbox {namespace}/{name}"), ""))
                }
            }
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
                let decision = self.reviewer.decide(spec).await?;
                decision.map_err(|reason| denied(username, &reason))
            }
        }
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
}
