//! Tests of [`super::Reviewer`] against a mock API server that answers TokenReviews (tokens
//! starting with `good-` are valid, as user = the token) and SubjectAccessReviews (allowed),
//! counts them and can hold them until released.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::Code;

use super::*;

struct MockApi {
    /// TokenReviews per token.
    reviews: Mutex<HashMap<String, usize>>,
    /// Audiences of the last TokenReview.
    audiences: Mutex<Option<Vec<String>>>,
    /// SubjectAccessReviews.
    sars: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// While false, reviews wait.
    open: tokio::sync::watch::Sender<bool>,
}

impl MockApi {
    fn new(open: bool) -> Arc<Self> {
        Arc::new(MockApi {
            reviews: Mutex::default(),
            audiences: Mutex::default(),
            sars: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            open: tokio::sync::watch::Sender::new(open),
        })
    }
    fn reviews_of(&self, token: &str) -> usize {
        self.reviews
            .lock()
            .unwrap()
            .get(token)
            .copied()
            .unwrap_or(0)
    }
    fn total(&self) -> usize {
        self.reviews.lock().unwrap().values().sum()
    }

    fn client(self: &Arc<Self>) -> kube::Client {
        let me = self.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let me = me.clone();
            async move {
                let path = req.uri().path().to_string();
                let body = req.into_body().collect_bytes().await.unwrap();
                let n = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                me.max_in_flight.fetch_max(n, Ordering::SeqCst);
                let mut open = me.open.subscribe();
                let _ = open.wait_for(|o| *o).await;
                let out = if path.ends_with("/tokenreviews") {
                    let r: TokenReview = serde_json::from_slice(&body).unwrap();
                    let token = r.spec.token.clone().unwrap_or_default();
                    *me.reviews.lock().unwrap().entry(token.clone()).or_default() += 1;
                    *me.audiences.lock().unwrap() = r.spec.audiences.clone();
                    // "good-": authenticated for the audiences asked; "deaf-": authenticated by
                    // an authenticator that ignores audiences (answers none).
                    let ok = token.starts_with("good-") || token.starts_with("deaf-");
                    let audiences = if token.starts_with("good-") { r.spec.audiences.clone() } else { None };
                    serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                        "spec": {}, "status": {"authenticated": ok, "user": {"username": token}, "audiences": audiences}})
                } else {
                    me.sars.fetch_add(1, Ordering::SeqCst);
                    serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                        "spec": {}, "status": {"allowed": true}})
                };
                me.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(201)
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(serde_json::to_vec(&out).unwrap()))
                        .unwrap(),
                )
            }
        });
        kube::Client::new(svc, "default")
    }
}

fn key(t: &str) -> [u8; 32] {
    super::super::sha256(t)
}

async fn auth(r: &Reviewer, t: &str) -> Result<Principal, Status> {
    r.authenticate(key(t), t).await
}

#[tokio::test]
async fn a_flood_of_bad_tokens_does_not_evict_a_valid_user() {
    let api = MockApi::new(true);
    let limits = ReviewLimits {
        positive_capacity: 8,
        negative_capacity: 8,
        positive_ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(600),
        ..Default::default()
    };
    let r = Reviewer::new(api.client(), limits);
    assert_eq!(auth(&r, "good-alice").await.unwrap().name(), "good-alice");
    for i in 0..300 {
        let e = auth(&r, &format!("bad-{i}")).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(e.message(), "invalid bearer token");
    }
    r.refused.run_pending_tasks().await;
    r.accepted.run_pending_tasks().await;
    assert!(r.refused.entry_count() <= 8, "{}", r.refused.entry_count());
    assert_eq!(auth(&r, "good-alice").await.unwrap().name(), "good-alice");
    assert_eq!(api.reviews_of("good-alice"), 1, "alice's entry was evicted");
    assert_eq!(api.total(), 301);
    // A refused token just seen is answered from the negative cache.
    let e = auth(&r, "bad-299").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(api.reviews_of("bad-299"), 1);
}

#[tokio::test]
async fn at_most_n_reviews_reach_the_api() {
    let api = MockApi::new(false);
    let limits = ReviewLimits {
        max_concurrent: 3,
        wait: Duration::from_secs(120),
        ..Default::default()
    };
    let r = Arc::new(Reviewer::new(api.client(), limits));
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { auth(&r, &format!("good-{i}")).await })
        })
        .collect();
    // Wait until three reviews are held by the API, then give the others every chance to pile
    // in: none may while the three are held.
    while api.in_flight.load(Ordering::SeqCst) < 3 {
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(api.in_flight.load(Ordering::SeqCst), 3);
    api.open.send_replace(true);
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(api.total(), 10);
    assert_eq!(api.max_in_flight.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn saturated_reviews_fail_unavailable_after_the_wait() {
    let api = MockApi::new(false);
    let limits = ReviewLimits {
        max_concurrent: 1,
        wait: Duration::from_millis(50),
        ..Default::default()
    };
    let r = Arc::new(Reviewer::new(api.client(), limits));
    let r2 = r.clone();
    let held = tokio::spawn(async move { auth(&r2, "good-held").await });
    while api.in_flight.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    let e = auth(&r, "good-other").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(
        e.message()
            .starts_with("authenticating the token: the gateway already has 1 reviews in flight"),
        "{}",
        e.message()
    );
    assert_eq!(api.reviews_of("good-other"), 0);
    // Not cached as refused: once a slot is free it is reviewed and accepted.
    api.open.send_replace(true);
    held.await.unwrap().unwrap();
    auth(&r, "good-other").await.unwrap();
}

#[tokio::test]
async fn negatives_expire() {
    let api = MockApi::new(true);
    let limits = ReviewLimits {
        negative_ttl: Duration::from_secs(1),
        ..Default::default()
    };
    let r = Reviewer::new(api.client(), limits);
    auth(&r, "bad-x").await.unwrap_err();
    auth(&r, "bad-x").await.unwrap_err();
    assert_eq!(api.reviews_of("bad-x"), 1, "the second refusal is cached");
    // After the TTL the token is reviewed again (it could have become valid).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.reviews_of("bad-x") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "negative entry never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        auth(&r, "bad-x").await.unwrap_err();
    }
}

#[tokio::test]
async fn audiences_are_requested_and_explained() {
    let api = MockApi::new(true);
    let limits = ReviewLimits {
        audiences: vec!["airlock".into(), "other".into()],
        ..Default::default()
    };
    let r = Reviewer::new(api.client(), limits);
    auth(&r, "good-a").await.unwrap();
    assert_eq!(
        api.audiences.lock().unwrap().clone(),
        Some(vec!["airlock".to_string(), "other".to_string()])
    );
    let e = auth(&r, "bad-a").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(
        e.message(),
        "invalid bearer token: this gateway accepts only tokens minted for audience airlock,other \
         (e.g. `kubectl create token SERVICEACCOUNT --audience airlock`)"
    );
    // An answer that does not name an audience asked for is refused, authenticated or not.
    let e = auth(&r, "deaf-a").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Without audiences, none is sent.
    let api = MockApi::new(true);
    let r = Reviewer::new(api.client(), ReviewLimits::default());
    auth(&r, "good-a").await.unwrap();
    assert_eq!(api.audiences.lock().unwrap().clone(), None);
}

#[tokio::test]
async fn decisions_are_cached() {
    let api = MockApi::new(true);
    let r = Reviewer::new(api.client(), ReviewLimits::default());
    let spec = SubjectAccessReviewSpec {
        user: Some("u".into()),
        ..Default::default()
    };
    assert_eq!(r.decide(spec.clone()).await.unwrap(), Ok(()));
    assert_eq!(r.decide(spec).await.unwrap(), Ok(()));
    assert_eq!(
        api.sars.load(Ordering::SeqCst),
        1,
        "the second decision is cached"
    );
    assert_eq!(api.total(), 0, "no TokenReview");
}
