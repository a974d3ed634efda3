//! TokenReview and SubjectAccessReview, bounded and cached (auth mode `kubernetes`).
//!
//! Every unknown bearer token costs the API server one TokenReview, so a caller sending random
//! tokens could otherwise (a) flood the API server and (b) push valid users out of the cache.
//! Hence:
//! - at most [`ReviewLimits::max_concurrent`] reviews are in flight at once; a call that finds
//!   them all busy waits up to [`ReviewLimits::wait`], then fails UNAVAILABLE (retryable);
//! - accepted tokens are cached (moka, least-recently-used eviction, TTL
//!   [`ReviewLimits::positive_ttl`], at most [`ReviewLimits::positive_capacity`] entries);
//! - refused tokens are cached separately and briefly ([`ReviewLimits::negative_ttl`], at most
//!   [`ReviewLimits::negative_capacity`]): a flood of bad tokens only churns that cache;
//! - SubjectAccessReview decisions are cached for [`DECISION_TTL`] (RBAC changes apply within
//!   that time), keyed by the exact review, so only authenticated users can add entries.
//!
//! With [`ReviewLimits::audiences`] set, TokenReviews ask for those audiences: a token minted for
//! another audience (the API server's own, by default) is refused with a message telling how to
//! mint a right one.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewSpec};
use kube::Api;
use kube::api::PostParams;
use moka::future::Cache;
use moka::policy::EvictionPolicy;
use tokio::sync::Semaphore;
use tonic::Status;

use super::Principal;

/// How long SubjectAccessReview decisions (allowed or denied) are cached.
pub const DECISION_TTL: Duration = Duration::from_secs(10);
const DECISION_CAPACITY: u64 = 50_000;

/// Bounds and caches of the reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewLimits {
    /// Reviews (TokenReview + SubjectAccessReview) in flight at once.
    pub max_concurrent: usize,
    /// How long a call waits for a free review slot before UNAVAILABLE.
    pub wait: Duration,
    /// How long an accepted token stays cached.
    pub positive_ttl: Duration,
    /// Accepted tokens cached at most (least recently used evicted first).
    pub positive_capacity: u64,
    /// How long a refused token stays cached.
    pub negative_ttl: Duration,
    /// Refused tokens cached at most.
    pub negative_capacity: u64,
    /// Audiences asked for in TokenReviews; empty: the API server's own.
    pub audiences: Vec<String>,
}

impl Default for ReviewLimits {
    /// 16 concurrent reviews, 5 s wait, positives 30 s / 10,000, negatives 10 s / 10,000, no
    /// audience.
    fn default() -> Self {
        ReviewLimits {
            max_concurrent: 16,
            wait: Duration::from_secs(5),
            positive_ttl: Duration::from_secs(30),
            positive_capacity: 10_000,
            negative_ttl: Duration::from_secs(10),
            negative_capacity: 10_000,
            audiences: Vec::new(),
        }
    }
}

/// TokenReviews and SubjectAccessReviews against the API server, bounded and cached.
pub(crate) struct Reviewer {
    client: kube::Client,
    limits: ReviewLimits,
    permits: Arc<Semaphore>,
    accepted: Cache<[u8; 32], Principal>,
    refused: Cache<[u8; 32], ()>,
    decisions: Cache<String, Result<(), String>>,
}

impl Reviewer {
    pub fn new(client: kube::Client, limits: ReviewLimits) -> Self {
        Reviewer {
            client,
            permits: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            accepted: Cache::builder()
                .max_capacity(limits.positive_capacity)
                .time_to_live(limits.positive_ttl)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            refused: Cache::builder()
                .max_capacity(limits.negative_capacity)
                .time_to_live(limits.negative_ttl)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            decisions: Cache::builder()
                .max_capacity(DECISION_CAPACITY)
                .time_to_live(DECISION_TTL)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
            limits,
        }
    }

    fn refused_status(&self) -> Status {
        if self.limits.audiences.is_empty() {
            Status::unauthenticated("invalid bearer token")
        } else {
            let aud = self.limits.audiences.join(",");
            let first = &self.limits.audiences[0];
            Status::unauthenticated(format!(
                "invalid bearer token: this gateway accepts only tokens minted for audience {aud} \
                 (e.g. `kubectl create token SERVICEACCOUNT --audience {first}`)"
            ))
        }
    }

    /// Waits up to `limits.wait` for a review slot.
    async fn permit(&self, what: &str) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        match tokio::time::timeout(self.limits.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            // The semaphore is never closed; treat it like saturation all the same.
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(
                    review = what,
                    in_flight = self.limits.max_concurrent,
                    waited_ms = self.limits.wait.as_millis() as u64,
                    "review slots saturated: call refused"
                );
                Err(Status::unavailable(format!(
                    "{what}: the gateway already has {} reviews in flight with the Kubernetes API \
                     and none finished within {} ms; retry shortly",
                    self.limits.max_concurrent,
                    self.limits.wait.as_millis()
                )))
            }
        }
    }

    /// The principal of a bearer token (`key` is its SHA-256), UNAUTHENTICATED when refused.
    pub async fn authenticate(&self, key: [u8; 32], token: &str) -> Result<Principal, Status> {
        if let Some(p) = self.accepted.get(&key).await {
            return Ok(p);
        }
        if self.refused.get(&key).await.is_some() {
            return Err(self.refused_status());
        }
        let permit = self.permit("authenticating the token").await?;
        let reviewed = self.token_review(token).await;
        drop(permit);
        match reviewed? {
            Some(p) => {
                self.accepted.insert(key, p.clone()).await;
                Ok(p)
            }
            None => {
                self.refused.insert(key, ()).await;
                Err(self.refused_status())
            }
        }
    }

    async fn token_review(&self, token: &str) -> Result<Option<Principal>, Status> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.limits.audiences.is_empty())
                    .then(|| self.limits.audiences.clone()),
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
        // An authenticator that ignores `spec.audiences` (some webhooks) would accept a token
        // minted for anyone: the answer must name one of the audiences asked for.
        let wanted = &self.limits.audiences;
        let granted = status.audiences.unwrap_or_default();
        if !wanted.is_empty() && !granted.iter().any(|a| wanted.contains(a)) {
            tracing::warn!(
                granted = ?granted,
                "TokenReview authenticated a token without the audiences asked for; refused"
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

    /// The (cached) decision of a SubjectAccessReview: `Err(reason)` when denied.
    pub async fn decide(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> Result<Result<(), String>, Status> {
        let key = serde_json::to_string(&spec).map_err(|e| {
            Status::internal(format!("authorizing the call: encoding the review: {e}"))
        })?;
        if let Some(d) = self.decisions.get(&key).await {
            return Ok(d);
        }
        let permit = self.permit("authorizing the call").await?;
        let d = self.subject_access_review(spec).await;
        drop(permit);
        let d = d?;
        self.decisions.insert(key, d.clone()).await;
        Ok(d)
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

#[cfg(test)]
#[path = "review_tests.rs"]
mod tests;
