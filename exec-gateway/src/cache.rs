//! A watch-fed cache of Sandboxes and their pods, read on the hot path of every command.
//!
//! Without it every Exec, RunCode, file call and background-process call made two GETs (the
//! Sandbox, then its pod) before anything reached the agent: 5-35 ms of a round trip whose goal is
//! 10 ms. The cache is only ever used to say *yes, go ahead*: a Sandbox that is missing, not Ready,
//! expired or being deleted in the cache, or whose pod is missing or not its own there, is read
//! from the API server as before ([`crate::k8s::ready_sandbox`]), so a cache that lags (a Sandbox
//! created a moment ago, a watch being re-established) never refuses a call, it only makes it
//! slower. What a stale *yes* can do is what a GET made a moment earlier could: run in a sandbox
//! that is being deleted right now. Its agent token derives from the cached Sandbox's UID, so a
//! stale entry can never open a newer Sandbox of the same name, and a pod replaced meanwhile
//! refuses the connection; the call then reads the sandbox again from the API server
//! ([`crate::k8s::start_in`]) and never falls back to `pods/exec` by a cached pod name, which a
//! new pod may have taken. While a watch is failing (until it has listed again) nothing is
//! answered from the cache, so a "yes" is at most a watch event's delay old. Sandboxes this
//! gateway deleted are forgotten at once ([`SandboxCache::forget`]), so a caller's own delete
//! through this replica is never followed by a command that runs; with several gateway
//! replicas, a delete through another one (or through kubectl) is seen after that delay.
//!
//! Pods are watched by the `airlock.dev/sandbox` label only (sandbox pods and claimed warm pods),
//! stripped to what a [`crate::agent::PodTarget`] needs, to keep the gateway small at 10,000
//! sandboxes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use airlock_crds::Sandbox;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio_util::sync::CancellationToken;

/// Sandboxes and sandbox pods as the watches last saw them.
#[derive(Clone)]
pub struct SandboxCache {
    sandboxes: Store<Sandbox>,
    pods: Store<Pod>,
    /// `namespace/name` of Sandboxes this gateway deleted in the last 30 s: read from the API
    /// server meanwhile, so a caller's own delete is seen by its next call.
    forgotten: moka::sync::Cache<String, ()>,
    /// Whether each watch (Sandboxes, pods) is up: after an error, until the watch delivers
    /// again, the store may be arbitrarily old and nothing is answered from it.
    healthy: [Arc<AtomicBool>; 2],
}

impl SandboxCache {
    /// Starts the two watches (all namespaces; the gateway's ClusterRole lists and watches both)
    /// and returns at once: until they have listed, every lookup misses. They stop with `stop`.
    pub fn start(client: kube::Client, stop: CancellationToken) -> Self {
        let (sandboxes, sb_writer) = reflector::store::<Sandbox>();
        let (pods, pod_writer) = reflector::store::<Pod>();
        let sb_events = watcher(Api::<Sandbox>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|s: &mut Sandbox| s.meta_mut().managed_fields = None)
            .reflect(sb_writer);
        let pod_config = watcher::Config::default().labels(airlock_crds::labels::SANDBOX_NAME);
        let pod_events = watcher(Api::<Pod>::all(client), pod_config)
            .default_backoff()
            .modify(strip_pod)
            .reflect(pod_writer);
        let healthy = [Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false))];
        spawn_drain("sandboxes", sb_events, healthy[0].clone(), stop.clone());
        spawn_drain("sandbox pods", pod_events, healthy[1].clone(), stop);
        SandboxCache {
            sandboxes,
            pods,
            healthy,
            forgotten: moka::sync::Cache::builder()
                .time_to_live(Duration::from_secs(30))
                .max_capacity(100_000)
                .build(),
        }
    }

    /// The cached Sandbox `namespace/name` and its pod, when both are there and the pod is the
    /// Sandbox's own and ready to take commands; `None` sends the caller to the API server.
    pub fn ready(&self, namespace: &str, name: &str) -> Option<(Arc<Sandbox>, Arc<Pod>)> {
        if self.forgotten.contains_key(&key(namespace, name))
            || !self.healthy.iter().all(|h| h.load(Ordering::Relaxed))
        {
            return None;
        }
        let sb = self.sandboxes.get(&ObjectRef::new(name).within(namespace))?;
        if crate::k8s::check_ready(&sb, namespace, name).is_err() {
            return None;
        }
        let pod_name = sb.status.as_ref()?.pod_name.clone()?;
        let pod = self.pods.get(&ObjectRef::new(&pod_name).within(namespace))?;
        if pod.metadata.deletion_timestamp.is_some()
            || !pod_ready(&pod)
            || crate::k8s::check_pod_owner(&sb, &pod, namespace, name).is_err()
        {
            return None;
        }
        Some((sb, pod))
    }

    /// Answers nothing for `namespace/name` for a while (the gateway just deleted it).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.forgotten.insert(key(namespace, name), ());
    }
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Reads a watch stream until `stop`, logging its errors (the watcher retries with backoff).
/// `healthy` is set once the first list is complete, cleared by an error and set again by the
/// next complete list (a watch that failed starts over with one).
fn spawn_drain<S, K>(what: &'static str, events: S, healthy: Arc<AtomicBool>, stop: CancellationToken)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                e = events.next() => match e {
                    None => return,
                    Some(Ok(watcher::Event::InitDone)) => healthy.store(true, Ordering::Relaxed),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        healthy.store(false, Ordering::Relaxed);
                        tracing::warn!(cache = what, error = %e, "watch failed; retrying (commands read from the API server meanwhile)");
                    }
                },
            }
        }
    });
}

/// Running with its Ready condition True.
fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Keeps what a target and the checks read: metadata (without managed fields and annotations),
/// the main container's name and ports, the pod IP and conditions.
fn strip_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            containers: spec
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            pod_ip: status.pod_ip,
            phase: status.phase,
            conditions: status.conditions,
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripped_pod_still_gives_its_agent_address_and_readiness() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "annotations": {"a": "b"},
                "managedFields": [{"manager": "x"}]},
            "spec": {"containers": [{"name": "sandbox", "image": "i", "env": [{"name": "T", "value": "secret"}],
                "ports": [{"name": "airlock-agent", "containerPort": 7070}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"podIP": "10.0.0.7", "phase": "Running", "hostIP": "1.2.3.4",
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        strip_pod(&mut pod);
        assert!(pod.metadata.annotations.is_none() && pod.metadata.managed_fields.is_none());
        let spec = pod.spec.as_ref().unwrap();
        assert!(spec.containers[0].env.is_none() && spec.volumes.is_none());
        assert!(pod.status.as_ref().unwrap().host_ip.is_none());
        assert_eq!(
            airlock_crds::agent_token::agent_addr(&pod),
            Some("10.0.0.7:7070".parse().unwrap())
        );
        assert!(pod_ready(&pod));
        pod.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        assert!(!pod_ready(&pod));
    }
}
