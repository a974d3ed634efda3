//! What the operator remembers between reconciles, per namespace and per sandbox, and how that
//! memory is dropped when the cluster changes under it.
//!
//! Three per-namespace caches spare API calls: when the namespace's ResourceQuota and its
//! default-deny NetworkPolicy were last applied, and when its agent ConfigMap was last seen. All
//! would lie after the object goes away (a namespace deleted and re-created under the same name,
//! someone deleting the object): the quota or the fence would not be applied again (fail-open) and
//! new pods would mount a missing ConfigMap. So [`invalidate`] watches the metadata of the
//! operator's own quotas, fences and agent ConfigMaps and forgets a namespace as soon as its
//! object is deleted — or, after a watch restart, is no longer listed.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use airlock_crds::labels;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, warn};

use crate::build::agent::bundle_selector;

/// When something was last done, per namespace.
///
/// Not a moka cache (the gateway's review caches are; the one-off `TtlCache` of the gateway became
/// moka earlier): the interval is chosen when asking (`due(ns, every)`), not when inserting, the
/// watches in [`invalidate`] drop entries by a set of present namespaces (`keep_only`), and a
/// namespace count is small and bounded by the cluster, so nothing needs evicting.
#[derive(Default)]
pub(crate) struct Stamps(Mutex<HashMap<String, Instant>>);

impl Stamps {
    /// Whether it is time to do it again in `namespace` (never done, forgotten, or `every` ago).
    pub(crate) fn due(&self, namespace: &str, every: Duration) -> bool {
        let stamps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        stamps.get(namespace).is_none_or(|at| at.elapsed() >= every)
    }

    pub(crate) fn mark(&self, namespace: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(namespace.to_string(), Instant::now());
    }

    /// Makes `namespace` due at once.
    pub(crate) fn forget(&self, namespace: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(namespace);
    }

    /// Forgets every namespace not in `present`.
    pub(crate) fn keep_only(&self, present: &HashSet<String>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|ns, _| present.contains(ns));
    }
}

/// First wait before trying again a pod the API server refused; it doubles with every refusal.
pub const REJECTED_RETRY_MIN: Duration = Duration::from_secs(10);
/// Longest wait before trying again a pod the API server refused.
pub const REJECTED_RETRY_MAX: Duration = Duration::from_secs(300);

/// Per-sandbox exponential back-off, on the reconcile's clock (in memory: after an operator
/// restart it starts over).
#[derive(Default)]
pub(crate) struct Backoff(Mutex<HashMap<String, Failures>>);

/// Failures in a row of one sandbox: how many, the last one (ms since the epoch), the wait after
/// it, and what the API server said.
struct Failures {
    count: u32,
    at_ms: i64,
    wait: Duration,
    message: String,
}

impl Backoff {
    /// Counts one more failure of `key` at `now` and returns how long to wait:
    /// [`REJECTED_RETRY_MIN`], doubled with each failure in a row, at most [`REJECTED_RETRY_MAX`].
    /// A failure before the current wait is over (the sandbox was reconciled early, for instance
    /// woken by its own status write) does not count: the rest of the wait is returned.
    pub(crate) fn next(&self, key: &str, now: Timestamp, message: &str) -> Duration {
        let now_ms = now.as_millisecond();
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Forget sandboxes not seen failing for a long while (deleted ones, mostly).
        let forget_ms = (REJECTED_RETRY_MAX * 4).as_millis() as i64;
        map.retain(|_, f| now_ms - f.at_ms < forget_ms);
        if let Some(f) = map.get(key) {
            let due_ms = f.at_ms + f.wait.as_millis() as i64;
            if now_ms < due_ms {
                return Duration::from_millis((due_ms - now_ms) as u64);
            }
        }
        let f = map.entry(key.to_string()).or_insert(Failures {
            count: 0,
            at_ms: now_ms,
            wait: Duration::ZERO,
            message: String::new(),
        });
        f.count = f.count.saturating_add(1);
        f.message = message.to_string();
        f.at_ms = now_ms;
        f.wait = REJECTED_RETRY_MIN
            .saturating_mul(1u32 << (f.count - 1).min(16))
            .min(REJECTED_RETRY_MAX);
        f.wait
    }

    /// While `key` waits after a failure: the rest of the wait and the API server's last message,
    /// so a reconcile woken early reports the same refusal without asking again.
    pub(crate) fn waiting(&self, key: &str, now: Timestamp) -> Option<(Duration, String)> {
        let now_ms = now.as_millisecond();
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let f = map.get(key)?;
        let due_ms = f.at_ms + f.wait.as_millis() as i64;
        (now_ms < due_ms).then(|| {
            (
                Duration::from_millis((due_ms - now_ms) as u64),
                f.message.clone(),
            )
        })
    }

    /// `key` succeeded: the next failure starts from the shortest wait again.
    pub(crate) fn reset(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// Applies one watch event about the operator's per-namespace objects to `stamps`: a deletion
/// forgets the namespace; a relist (`Init` .. `InitDone`) forgets every namespace it did not list.
/// `listed` carries the namespaces seen since the last `Init`.
pub(crate) fn apply_event<K: Resource>(
    stamps: &Stamps,
    listed: &mut HashSet<String>,
    event: watcher::Event<K>,
) {
    match event {
        watcher::Event::Delete(obj) => {
            let ns = obj.namespace().unwrap_or_default();
            debug!(namespace = %ns, name = %obj.name_any(), "per-namespace object deleted; forgetting the namespace");
            stamps.forget(&ns);
        }
        watcher::Event::Init => listed.clear(),
        watcher::Event::InitApply(obj) => {
            listed.insert(obj.namespace().unwrap_or_default());
        }
        watcher::Event::InitDone => stamps.keep_only(listed),
        watcher::Event::Apply(_) => {}
    }
}

/// Keeps `stamps` true to the cluster: watches the metadata of the objects `api` and `config`
/// select and feeds [`apply_event`], for as long as it runs (it retries with back-off on errors).
async fn follow<K>(
    what: &'static str,
    api: Api<PartialObjectMeta<K>>,
    config: watcher::Config,
    stamps: &Stamps,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default + Clone + Eq + std::hash::Hash,
{
    let mut listed = HashSet::new();
    let events = watcher(api, config).default_backoff();
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => apply_event(stamps, &mut listed, event),
            Err(error) => warn!(%error, what, "watch failed; retrying"),
        }
    }
}

/// An API of a namespaced kind, in `namespace` or in all namespaces.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches the operator's ResourceQuotas (`quotas` given: it manages them), agent ConfigMaps
/// (`bundles` given: the ConfigMap delivery) and default-deny NetworkPolicies, forgetting a
/// namespace in the matching stamps when its object goes away. Runs until dropped.
pub(crate) async fn invalidate(
    client: Client,
    namespace: Option<&str>,
    quotas: Option<&Stamps>,
    bundles: Option<&Stamps>,
    fences: &Stamps,
) {
    let quota_api: Api<PartialObjectMeta<ResourceQuota>> = scoped(&client, namespace);
    let bundle_api: Api<PartialObjectMeta<ConfigMap>> = scoped(&client, namespace);
    let fence_api: Api<PartialObjectMeta<NetworkPolicy>> = scoped(&client, namespace);
    let operators = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_OPERATOR);
    let quota = async {
        if let Some(stamps) = quotas {
            let config = watcher::Config::default()
                .labels(&operators)
                .fields(&format!("metadata.name={}", crate::build::QUOTA_NAME));
            follow("ResourceQuotas", quota_api, config, stamps).await;
        }
    };
    let bundle = async {
        if let Some(stamps) = bundles {
            let config = watcher::Config::default().labels(&bundle_selector());
            follow("agent ConfigMaps", bundle_api, config, stamps).await;
        }
    };
    let fence = async {
        let config = watcher::Config::default()
            .labels(&operators)
            .fields(&format!("metadata.name={}", labels::SANDBOX_PODS_POLICY));
        follow("default-deny NetworkPolicies", fence_api, config, fences).await;
    };
    futures::join!(quota, bundle, fence);
    // The watches are infinite; wait here rather than return.
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ObjectMeta;

    fn meta(ns: &str) -> PartialObjectMeta<ResourceQuota> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(crate::build::QUOTA_NAME.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    const EVERY: Duration = Duration::from_secs(300);

    #[test]
    fn stamps_are_due_until_marked_and_again_once_forgotten() {
        let s = Stamps::default();
        assert!(s.due("a", EVERY));
        s.mark("a");
        assert!(!s.due("a", EVERY));
        assert!(s.due("a", Duration::ZERO));
        s.forget("a");
        assert!(s.due("a", EVERY));
    }

    #[test]
    fn a_deleted_object_forgets_its_namespace_only() {
        let s = Stamps::default();
        let mut listed = HashSet::new();
        s.mark("a");
        s.mark("b");
        apply_event(&s, &mut listed, watcher::Event::Apply(meta("a")));
        assert!(!s.due("a", EVERY), "an update changes nothing");
        apply_event(&s, &mut listed, watcher::Event::Delete(meta("a")));
        assert!(s.due("a", EVERY), "deleted: applied again next time");
        assert!(!s.due("b", EVERY));
    }

    #[test]
    fn a_relist_forgets_the_namespaces_it_does_not_list() {
        // Deletions missed while the watch was down show up as absences from the relist.
        let s = Stamps::default();
        let mut listed = HashSet::from(["stale".to_string()]);
        for ns in ["a", "b", "c"] {
            s.mark(ns);
        }
        apply_event(
            &s,
            &mut listed,
            watcher::Event::<PartialObjectMeta<ResourceQuota>>::Init,
        );
        apply_event(&s, &mut listed, watcher::Event::InitApply(meta("a")));
        apply_event(&s, &mut listed, watcher::Event::InitApply(meta("c")));
        assert!(
            !s.due("b", EVERY),
            "nothing forgotten before the list is complete"
        );
        apply_event(
            &s,
            &mut listed,
            watcher::Event::<PartialObjectMeta<ResourceQuota>>::InitDone,
        );
        assert!(!s.due("a", EVERY));
        assert!(s.due("b", EVERY));
        assert!(!s.due("c", EVERY));
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_the_bound_and_resets() {
        let b = Backoff::default();
        let mut t = 0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let w = b.next("uid-1", at(t), "no").as_secs();
            waits.push(w);
            t += w as i64;
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.next("uid-2", at(t), "no").as_secs(), 10, "per sandbox");
        b.reset("uid-1");
        assert_eq!(b.next("uid-1", at(t), "no").as_secs(), 10);
    }

    #[test]
    fn an_early_failure_does_not_lengthen_the_wait() {
        let b = Backoff::default();
        assert_eq!(b.waiting("uid-1", at(0)), None);
        assert_eq!(b.next("uid-1", at(0), "refused"), Duration::from_secs(10));
        // Woken 3 s later (its own status write): still waiting, with the refusal to report.
        assert_eq!(
            b.waiting("uid-1", at(3)),
            Some((Duration::from_secs(7), "refused".to_string()))
        );
        // A failure before the wait is over gets the rest of the wait, not a doubled one.
        assert_eq!(b.next("uid-1", at(3), "refused"), Duration::from_secs(7));
        assert_eq!(b.waiting("uid-1", at(10)), None);
        assert_eq!(b.next("uid-1", at(10), "again"), Duration::from_secs(20));
        assert_eq!(b.waiting("uid-1", at(11)).unwrap().1, "again");
        // Long forgotten: from the start again.
        assert_eq!(b.next("uid-1", at(10 + 1300), "no"), Duration::from_secs(10));
    }
}
