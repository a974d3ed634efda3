//! Activity tracking: every exec or file call marks its Sandbox with the annotation
//! `airlock.dev/last-activity` (RFC 3339), debounced to at most one patch per sandbox per
//! interval (10 s), so a busy sandbox costs the API server one small merge patch every 10 s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_crds::{LAST_ACTIVITY_ANNOTATION, Sandbox};
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::server::FIELD_MANAGER;

/// Decides whether an event for a key is due, at most once per `interval` per key.
///
/// Hand-made rather than a moka cache (the gateway's review caches are moka): the tests drive it
/// with explicit instants (`should_fire(.., now)`, a clock that goes backwards included), which
/// moka's own clock cannot do without sleeping; and a patch that fails must make the key due at
/// once (`forget`), which with moka's TTL would race the background eviction. The map is bounded
/// by pruning expired keys when it holds `max_keys`.
#[derive(Debug)]
pub struct Debouncer {
    interval: Duration,
    last: Mutex<HashMap<(String, String), Instant>>,
    /// When the map holds more keys than this, expired entries are pruned.
    max_keys: usize,
}

impl Debouncer {
    pub fn new(interval: Duration) -> Self {
        Debouncer {
            interval,
            last: Mutex::new(HashMap::new()),
            max_keys: 10_000,
        }
    }

    /// True when no event for `(namespace, name)` was let through in the last `interval`; the
    /// event is then recorded as let through at `now`.
    pub fn should_fire(&self, namespace: &str, name: &str, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_string(), name.to_string());
        if let Some(t) = last.get(&key)
            && now.saturating_duration_since(*t) < self.interval
        {
            return false;
        }
        if last.len() >= self.max_keys {
            let interval = self.interval;
            last.retain(|_, t| now.saturating_duration_since(*t) < interval);
        }
        last.insert(key, now);
        true
    }

    /// Forgets a key (after a failed patch, so the next call retries at once).
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.remove(&(namespace.to_string(), name.to_string()));
    }

    /// Number of keys tracked.
    pub fn len(&self) -> usize {
        self.last.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Patches the activity annotation in the background, debounced.
#[derive(Clone)]
pub struct ActivityRecorder {
    client: kube::Client,
    debouncer: Arc<Debouncer>,
}

impl ActivityRecorder {
    pub fn new(client: kube::Client, interval: Duration) -> Self {
        ActivityRecorder {
            client,
            debouncer: Arc::new(Debouncer::new(interval)),
        }
    }

    /// Records activity on a sandbox (never blocks the call; failures are logged).
    pub fn touch(&self, namespace: &str, name: &str) {
        if !self.debouncer.should_fire(namespace, name, Instant::now()) {
            return;
        }
        let api: Api<Sandbox> = Api::namespaced(self.client.clone(), namespace);
        let (namespace, name) = (namespace.to_string(), name.to_string());
        let debouncer = self.debouncer.clone();
        tokio::spawn(async move {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let patch =
                serde_json::json!({"metadata": {"annotations": {LAST_ACTIVITY_ANNOTATION: now}}});
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            match tokio::time::timeout(
                Duration::from_secs(10),
                api.patch(&name, &pp, &Patch::Merge(&patch)),
            )
            .await
            {
                Ok(Ok(_)) => tracing::debug!(%namespace, sandbox = %name, "recorded activity"),
                Ok(Err(e)) => {
                    debouncer.forget(&namespace, &name);
                    tracing::warn!(%namespace, sandbox = %name, error = %e, "recording activity failed");
                }
                Err(_) => {
                    debouncer.forget(&namespace, &name);
                    tracing::warn!(%namespace, sandbox = %name, "recording activity timed out");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounces_per_sandbox() {
        let d = Debouncer::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(d.should_fire("ns", "a", t0));
        assert!(!d.should_fire("ns", "a", t0 + Duration::from_secs(1)));
        assert!(!d.should_fire("ns", "a", t0 + Duration::from_millis(9999)));
        assert!(
            d.should_fire("ns", "b", t0 + Duration::from_secs(1)),
            "other sandbox is independent"
        );
        assert!(
            d.should_fire("other", "a", t0 + Duration::from_secs(1)),
            "other namespace is independent"
        );
        assert!(d.should_fire("ns", "a", t0 + Duration::from_secs(10)));
        assert!(!d.should_fire("ns", "a", t0 + Duration::from_secs(15)));
        assert!(d.should_fire("ns", "a", t0 + Duration::from_secs(20)));
        d.forget("ns", "a");
        assert!(d.should_fire("ns", "a", t0 + Duration::from_secs(21)));
        // A clock that goes backwards never panics and never fires early.
        assert!(!d.should_fire("ns", "a", t0));
    }

    #[test]
    fn prunes_expired_keys() {
        let mut d = Debouncer::new(Duration::from_secs(10));
        d.max_keys = 4;
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(d.should_fire("ns", &format!("s{i}"), t0));
        }
        assert_eq!(d.len(), 4);
        assert!(d.should_fire("ns", "late", t0 + Duration::from_secs(11)));
        assert_eq!(d.len(), 1);
    }
}
