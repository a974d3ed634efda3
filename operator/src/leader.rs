//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas are safe: only the holder
//! of the Lease `airlock-operator` runs the controller.
//!
//! The scheme is client-go's: a candidate reads the Lease and takes it when nobody holds it or when
//! the holder's record has not changed for a whole lease duration *as measured on the candidate's
//! own clock* (so clock skew between nodes does not matter); every write is a replace conditional
//! on the `resourceVersion` read, so two candidates can never both win. The leader renews every
//! [`RENEW_PERIOD`]; if it cannot renew for [`RENEW_DEADLINE`] it considers the lease lost and
//! stops, well before another replica may take over ([`LEASE_DURATION`]). Each renewal is bounded
//! by the time left until that deadline (`tokio::time::timeout`), so a connection that hangs
//! cannot keep a leader acting past it; [`lead`] then gives running work [`STEP_DOWN_GRACE`] and
//! drops it. On shutdown the leader releases the Lease (empty holder) so a standby takes over at
//! once.
//!
//! The decision is the pure function [`decide`]; the rest is I/O around it.
//!
//! Over 600 lines (barely): most of it is the unit tests on a never-answering API, kept next to the
//! timing they check.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

/// Name of the Lease.
pub const LEASE_NAME: &str = "airlock-operator";
/// How long a lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(30);
/// How often the leader renews (and retries a failed renewal), and how often a standby tries to
/// acquire: client-go's retry period. With [`RENEW_DEADLINE`] it rides out an API-server outage
/// of about 18 s wherever it falls between renewals (client-go's 10 s deadline lost the lease to
/// a local API-server restart: 5 s down, then seconds of errors while it warmed up).
pub const RENEW_PERIOD: Duration = Duration::from_secs(2);
/// Longest one renewal attempt may take: a request sent on a connection the API server dropped
/// without closing (a restart) never answers; the next attempt opens a new one.
pub const RENEW_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Wait before trying again after a failed renewal (a successful one waits [`RENEW_PERIOD`]).
pub const RENEW_RETRY: Duration = Duration::from_millis(500);
/// A leader that could not renew for this long stops leading (twice client-go's 10 s, and the
/// lease twice its 15 s: a failover takes up to 30 s, a restart of the API server does not cost
/// the single replica its lease).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(20);
/// How long a leader that lost the Lease lets running reconciles finish before dropping them:
/// well inside the margin between [`RENEW_DEADLINE`] and [`LEASE_DURATION`].
pub const STEP_DOWN_GRACE: Duration = Duration::from_secs(2);

/// Failures talking to the API server about the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading Lease {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing Lease {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("no answer from the API server about the Lease within {after:?}")]
    TimedOut { after: Duration },
}

/// Runs `work` (the controller) while this replica leads. When `lost` resolves, `stop` is set so
/// the work can finish gracefully; work still running [`STEP_DOWN_GRACE`] later is dropped (its
/// pending requests with it). Returns whether the lease was lost.
pub async fn lead(
    work: impl Future<Output = ()>,
    lost: impl Future<Output = ()>,
    stop: impl FnOnce(),
    grace: Duration,
) -> bool {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        _ = &mut work => return false,
        _ = lost => {}
    }
    stop();
    if tokio::time::timeout(grace, work).await.is_err() {
        warn!(
            grace_secs = grace.as_secs_f64(),
            "reconciles did not finish after the Lease was lost; dropped them"
        );
    }
    true
}

/// What matters of a Lease for the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub lease_duration: Duration,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
}

impl Record {
    pub fn from_lease(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(LEASE_DURATION, Duration::from_secs),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// What a replica should do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it (one more transition).
    TakeOver,
    /// Someone else holds it and it has not expired.
    Follow { holder: String },
}

/// The decision, given the Lease's record (if any), our identity, when the record last changed
/// (on our clock) and now.
pub fn decide(record: Option<&Record>, me: &str, changed_at: Instant, now: Instant) -> Decision {
    let Some(record) = record else {
        return Decision::Create;
    };
    match record.holder.as_deref() {
        None => Decision::TakeOver,
        Some(holder) if holder == me => Decision::Renew,
        Some(holder) => {
            if now.saturating_duration_since(changed_at) >= record.lease_duration {
                Decision::TakeOver
            } else {
                Decision::Follow {
                    holder: holder.to_string(),
                }
            }
        }
    }
}

/// When the record was last seen changing: now if it differs from the previous observation.
pub fn changed_at(
    previous: Option<&(Option<Record>, Instant)>,
    record: Option<&Record>,
    now: Instant,
) -> Instant {
    match previous {
        Some((seen, at)) if seen.as_ref() == record => *at,
        _ => now,
    }
}

/// Outcome of one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// We hold the Lease.
    Leader,
    /// Someone else does.
    Follower { holder: String },
    /// Our write lost a race (resourceVersion changed); try again next round.
    Conflict,
}

/// Why [`Elector::hold`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// `stop` resolved while we still held the Lease.
    Stopped,
    /// The Lease was lost: another replica holds it, or renewals failed for too long.
    Lost,
}

/// A candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    identity: String,
    seen: Option<(Option<Record>, Instant)>,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, identity: &str) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            identity: identity.into(),
            seen: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn write_err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Write {
            namespace: self.namespace.clone(),
            name: LEASE_NAME.into(),
            source,
        }
    }

    fn spec(&self, record: Option<&Record>, take: bool) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: take.then(|| now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(record.map_or(0, |r| r.transitions + i32::from(take))),
            ..LeaseSpec::default()
        }
    }

    /// One round: read the Lease, decide, write.
    pub async fn round(&mut self) -> Result<Round, LeaderError> {
        let lease = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .map_err(|source| LeaderError::Read {
                namespace: self.namespace.clone(),
                name: LEASE_NAME.into(),
                source,
            })?;
        let now = Instant::now();
        let record = lease.as_ref().map(Record::from_lease);
        let since = changed_at(self.seen.as_ref(), record.as_ref(), now);
        self.seen = Some((record.clone(), since));
        let decision = decide(record.as_ref(), &self.identity, since, now);
        let written = match (&decision, lease) {
            (Decision::Follow { holder }, _) => {
                return Ok(Round::Follower {
                    holder: holder.clone(),
                });
            }
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None, true)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Renew | Decision::TakeOver, Some(mut lease)) => {
                let take = decision == Decision::TakeOver;
                let mut spec = self.spec(record.as_ref(), take);
                if !take {
                    // Keep the acquire time of this term.
                    spec.acquire_time = lease.spec.as_ref().and_then(|s| s.acquire_time.clone());
                }
                lease.spec = Some(spec);
                // `lease.metadata.resourceVersion` is the one read: the replace is conditional.
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
            // `decide` says Renew/TakeOver only for an existing Lease.
            (Decision::Renew | Decision::TakeOver, None) => return Ok(Round::Conflict),
        };
        match written {
            Ok(lease) => {
                if decision != Decision::Renew {
                    info!(identity = %self.identity, transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions), "acquired the leader Lease");
                }
                self.seen = Some((Some(Record::from_lease(&lease)), Instant::now()));
                Ok(Round::Leader)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Conflict),
            Err(source) => Err(self.write_err(source)),
        }
    }

    /// Tries every [`RENEW_PERIOD`] until this replica leads.
    pub async fn acquire(&mut self) {
        let mut logged_holder = None;
        loop {
            // A hung request must not stall the candidate for ever.
            let round = tokio::time::timeout(RENEW_DEADLINE, self.round())
                .await
                .unwrap_or_else(|_| {
                    Err(LeaderError::TimedOut {
                        after: RENEW_DEADLINE,
                    })
                });
            match round {
                Ok(Round::Leader) => return,
                Ok(Round::Follower { holder }) => {
                    if logged_holder.as_ref() != Some(&holder) {
                        info!(%holder, "another replica leads; standing by");
                        logged_holder = Some(holder);
                    }
                }
                Ok(Round::Conflict) => {}
                Err(error) => warn!(%error, "leader election"),
            }
            tokio::time::sleep(RENEW_PERIOD).await;
        }
    }

    /// Renews every [`RENEW_PERIOD`] until `stop` resolves or the Lease is lost.
    pub async fn hold(&mut self, stop: impl Future<Output = ()>) -> Held {
        let mut stop = std::pin::pin!(stop);
        // Tokio's clock, so the tests can run it paused.
        let mut last_renewal = tokio::time::Instant::now();
        let mut wait = RENEW_PERIOD;
        loop {
            tokio::select! {
                _ = &mut stop => return Held::Stopped,
                _ = tokio::time::sleep(wait) => {}
            }
            // Bounded by the time left: a renewal stuck on a hung connection must not outlive
            // the deadline (the standby may take over once the lease duration has passed); and
            // by RENEW_ATTEMPT_TIMEOUT, so a hung attempt gives way to a fresh one.
            let left = RENEW_DEADLINE
                .saturating_sub(last_renewal.elapsed())
                .min(RENEW_ATTEMPT_TIMEOUT);
            // The renewal's time is when it was sent, not when its answer came: the standby
            // counts the lease from the write, which may be up to `left` before the answer.
            let sent = tokio::time::Instant::now();
            let round = tokio::select! {
                _ = &mut stop => return Held::Stopped,
                r = tokio::time::timeout(left, self.round()) => {
                    r.unwrap_or_else(|_| Err(LeaderError::TimedOut { after: left }))
                }
            };
            wait = RENEW_RETRY;
            match round {
                Ok(Round::Leader) => {
                    last_renewal = sent;
                    wait = RENEW_PERIOD;
                }
                Ok(Round::Follower { holder }) => {
                    warn!(%holder, "the leader Lease was taken over");
                    return Held::Lost;
                }
                Ok(Round::Conflict) => warn!("conflict renewing the leader Lease; retrying"),
                Err(error) => warn!(%error, "renewing the leader Lease"),
            }
            if last_renewal.elapsed() >= RENEW_DEADLINE {
                warn!(
                    deadline_secs = RENEW_DEADLINE.as_secs(),
                    "could not renew the leader Lease in time"
                );
                return Held::Lost;
            }
        }
    }

    /// Gives the Lease up (empty holder, 1 s duration) if we still hold it.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let Some(mut lease) =
            self.api
                .get_opt(LEASE_NAME)
                .await
                .map_err(|source| LeaderError::Read {
                    namespace: self.namespace.clone(),
                    name: LEASE_NAME.into(),
                    source,
                })?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.write_err(e))?;
        info!(identity = %self.identity, "released the leader Lease");
        Ok(())
    }
}

/// The identity this process holds the Lease under: the replica's identity plus a suffix unique
/// to the process (as client-go's `<hostname>_<uuid>`). A container restarted in place keeps its
/// pod name; without the suffix the new process would take the dead one's unexpired Lease for its
/// own and renew it, so the standby would never take over. Two replicas given the same
/// `--identity` by mistake also stay apart.
pub fn process_identity(identity: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness, afresh in every process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{identity}_{:016x}", h.finish())
}

/// This replica's identity: `$POD_NAME` in a cluster, else host name and process id.
pub fn default_identity() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "airlock-operator".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_identities_differ_and_start_with_the_replica() {
        let (a, b) = (process_identity("op-0"), process_identity("op-0"));
        assert!(a.starts_with("op-0_") && b.starts_with("op-0_"), "{a} {b}");
        assert_eq!(a.len(), "op-0_".len() + 16);
        assert_ne!(
            a, b,
            "a restarted process must not continue the dead one's term"
        );
    }

    fn record(holder: Option<&str>, secs: u64) -> Record {
        Record {
            holder: holder.map(str::to_string),
            lease_duration: Duration::from_secs(secs),
            renew_time: None,
            transitions: 3,
        }
    }

    #[test]
    fn no_lease_means_create() {
        let now = Instant::now();
        assert_eq!(decide(None, "a", now, now), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed_even_if_stale() {
        let t0 = Instant::now();
        assert_eq!(
            decide(Some(&record(Some("a"), 15)), "a", t0, t0),
            Decision::Renew
        );
        assert_eq!(
            decide(
                Some(&record(Some("a"), 15)),
                "a",
                t0,
                t0 + Duration::from_secs(60)
            ),
            Decision::Renew
        );
    }

    #[test]
    fn free_lease_is_taken() {
        let t0 = Instant::now();
        assert_eq!(
            decide(Some(&record(None, 1)), "a", t0, t0),
            Decision::TakeOver
        );
    }

    #[test]
    fn live_lease_of_another_is_followed_until_it_expires() {
        let t0 = Instant::now();
        let r = record(Some("b"), 15);
        assert_eq!(
            decide(Some(&r), "a", t0, t0),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&r), "a", t0, t0 + Duration::from_secs(14)),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&r), "a", t0, t0 + Duration::from_secs(15)),
            Decision::TakeOver
        );
    }

    #[test]
    fn expiry_is_measured_from_the_last_observed_change() {
        let t0 = Instant::now();
        let a = record(Some("b"), 15);
        let mut renewed = a.clone();
        renewed.renew_time = Some(Timestamp::now());
        // First sighting: changed now.
        let seen = (Some(a.clone()), changed_at(None, Some(&a), t0));
        assert_eq!(seen.1, t0);
        // Same record 10 s later: still changed at t0.
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(changed_at(Some(&seen), Some(&a), t10), t0);
        // Renewed by the holder at 10 s: the clock restarts, so at 20 s it is still live.
        let seen = (
            Some(renewed.clone()),
            changed_at(Some(&seen), Some(&renewed), t10),
        );
        assert_eq!(seen.1, t10);
        let t20 = t0 + Duration::from_secs(20);
        assert_eq!(
            decide(Some(&renewed), "a", seen.1, t20),
            Decision::Follow { holder: "b".into() }
        );
        // Without renewals it expires one lease duration after the last change.
        assert_eq!(
            decide(Some(&renewed), "a", seen.1, t10 + LEASE_DURATION),
            Decision::TakeOver
        );
    }

    #[test]
    fn record_from_lease() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "airlock-operator"},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "leaseTransitions": 4}
        }))
        .unwrap();
        let r = Record::from_lease(&lease);
        assert_eq!(r.holder, None, "empty holder = released");
        assert_eq!(r.lease_duration, Duration::from_secs(1));
        assert_eq!(r.transitions, 4);
        let bare: Lease =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(Record::from_lease(&bare).lease_duration, LEASE_DURATION);
    }

    #[test]
    fn timings_leave_a_margin() {
        assert!(RENEW_PERIOD < RENEW_DEADLINE && RENEW_DEADLINE < LEASE_DURATION);
        assert!(RENEW_DEADLINE + STEP_DOWN_GRACE < LEASE_DURATION);
    }

    /// A client whose API server takes every request and never answers.
    /// Also returns how many requests it has taken.
    fn hanging_client() -> (Client, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(pending) = handle.next_request().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(pending);
            }
        });
        (Client::new(service, "default"), count)
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_hangs_loses_the_lease_before_a_standby_may_take_over() {
        let (client, _api) = hanging_client();
        let mut elector = Elector::new(client, "airlock-system", "op-0_1");
        let held = tokio::time::timeout(LEASE_DURATION, elector.hold(std::future::pending())).await;
        assert_eq!(
            held,
            Ok(Held::Lost),
            "a leader whose renewal hangs must step down within the renew deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stop_interrupts_a_hanging_renewal() {
        let (client, _api) = hanging_client();
        let mut elector = Elector::new(client, "airlock-system", "op-0_1");
        let stop = tokio::time::sleep(RENEW_PERIOD + Duration::from_secs(1));
        let held = tokio::time::timeout(RENEW_DEADLINE, elector.hold(stop)).await;
        assert_eq!(held, Ok(Held::Stopped));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_is_not_stalled_by_a_hanging_read() {
        let (client, api) = hanging_client();
        let mut elector = Elector::new(client, "airlock-system", "op-0_1");
        // acquire never succeeds here; it must keep trying (new requests) instead of hanging on
        // the first one.
        let _ = tokio::time::timeout(RENEW_DEADLINE * 3, elector.acquire()).await;
        let requests = api.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            requests >= 2,
            "acquire retried after a hung round ({requests} requests)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lead_drops_work_that_ignores_the_step_down() {
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stopped.clone();
        let lost = lead(
            std::future::pending::<()>(),
            std::future::ready(()),
            move || s.store(true, std::sync::atomic::Ordering::SeqCst),
            STEP_DOWN_GRACE,
        );
        let lost = tokio::time::timeout(LEASE_DURATION - RENEW_DEADLINE, lost).await;
        assert_eq!(lost, Ok(true));
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
        // Work that ends on its own: not lost.
        let done = lead(
            std::future::ready(()),
            std::future::pending::<()>(),
            || {},
            STEP_DOWN_GRACE,
        )
        .await;
        assert!(!done);
    }
}
