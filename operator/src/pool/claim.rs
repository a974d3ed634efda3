//! A Sandbox made from a template takes a pool's Ready pod (step 5 of the Sandbox pipeline, before
//! a cold start):
//!
//! 1. **Adopt**, exactly once: one JSON merge patch of the pod carrying the `resourceVersion` it
//!    was read at (optimistic concurrency: a pod changed since, for example claimed by another
//!    reconcile, operator replica or an operator before a restart, answers 409 and the next
//!    candidate is tried). The patch removes the pool label, adds the Sandbox's label (its own
//!    NetworkPolicy, applied before, selects the pod from that instant; the pool's deny-all policy
//!    keeps selecting it through [`labels::POOL_ORIGIN`], so it is never unfenced) and makes the
//!    Sandbox its controller. One write: there is no state in between to recover from.
//! 2. **Bind** (with the direct path): the agent is told the Sandbox's token (`CLAIM`); the pool
//!    pod's token, which the pod's environment holds, opens nothing from then on. Its Secret is
//!    deleted. Binding again is harmless (an agent already bound answers to the new token), so a
//!    reconcile interrupted between adopt and bind just binds on its next run; `status.startMode:
//!    Warm` is written only after it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use airlock_agent_protocol::{Client, ClientError, ErrorCode, Hello, Reply, VERSION, c2a};
use airlock_crds::{Sandbox, SandboxTemplate, agent_token, labels};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client as KubeClient, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info};

use super::build::revision;
use crate::config::DirectAgent;
use crate::reconcile::apply::FIELD_MANAGER;

/// Candidates tried before falling back to a cold start.
const MAX_ATTEMPTS: usize = 4;
/// How long the operator waits for an agent while binding, per connection attempt.
const BIND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long it keeps trying to connect.
const BIND_PATIENCE: Duration = Duration::from_secs(10);
/// How long the agent may take to answer CLAIM.
const CLAIM_ANSWER: Duration = Duration::from_secs(5);
/// How long a pod stays reserved in this process after it was tried or taken.
const RESERVED_FOR: Duration = Duration::from_secs(60);

/// Why a claim failed (a lost race is not a failure: the next candidate is tried).
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("claiming pod {namespace}/{pod} for Sandbox {sandbox}: {source}")]
    Adopt {
        namespace: String,
        pod: String,
        sandbox: String,
        #[source]
        source: kube::Error,
    },
    #[error("Sandbox {sandbox}: pod {pod} has no agent address yet")]
    NoAddress { sandbox: String, pod: String },
    #[error("binding the agent of pod {pod} to Sandbox {sandbox}: {message}")]
    Bind {
        sandbox: String,
        pod: String,
        message: String,
    },
}

/// Pods this process is claiming or has claimed lately (by uid), and the pod each Sandbox took
/// (by Sandbox uid): the warm-pod cache lags the claims, so without these two reconciles could
/// keep picking a pod that is already gone, or a Sandbox whose status write failed after its
/// claim could claim a second pod.
#[derive(Default)]
pub struct Claims {
    reserved: Mutex<HashMap<String, Instant>>,
    taken: Mutex<HashMap<String, (String, Instant)>>,
}

impl Claims {
    fn reserve(&self, pod_uid: &str) -> bool {
        let mut r = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        r.retain(|_, at| now.duration_since(*at) < RESERVED_FOR);
        if r.contains_key(pod_uid) {
            return false;
        }
        r.insert(pod_uid.to_string(), now);
        true
    }

    fn release(&self, pod_uid: &str) {
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
    }

    /// The pod the Sandbox with this uid claimed in this process lately, if any.
    pub fn taken_by(&self, sandbox_uid: &str) -> Option<String> {
        let mut t = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        t.retain(|_, (_, at)| now.duration_since(*at) < RESERVED_FOR * 5);
        t.get(sandbox_uid).map(|(pod, _)| pod.clone())
    }

    fn took(&self, sandbox_uid: &str, pod: &str) {
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sandbox_uid.to_string(), (pod.to_string(), Instant::now()));
    }
}

/// Whether a pod can be claimed: the pool's, made from this revision of the template, Ready, not
/// being deleted.
pub fn claimable(pod: &Pod, namespace: &str, template: &SandboxTemplate) -> bool {
    let rev = revision(template);
    // Made by a pool: its controller is the SandboxPool its label names.
    let pool = pod.labels().get(labels::POOL);
    let by_pool = pod.owner_references().iter().any(|o| {
        o.controller == Some(true) && o.kind == "SandboxPool" && Some(&o.name) == pool
    });
    pod.namespace().as_deref() == Some(namespace)
        && pod.metadata.deletion_timestamp.is_none()
        && by_pool
        && pod.labels().get(labels::TEMPLATE) == Some(&template.name_any())
        && pod.annotations().get(labels::TEMPLATE_REVISION) == Some(&rev)
        && pod_ready(pod)
}

/// The pod's `Ready` condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Adopts a Ready pool pod of `template` for `sandbox` (step 1 above). `None`: no pod could be
/// had (none Ready, or every candidate was taken first): the caller starts a pod cold.
pub async fn adopt(
    client: &KubeClient,
    claims: &Claims,
    warm: &Store<Pod>,
    sandbox: &Sandbox,
    template: &SandboxTemplate,
) -> Result<Option<Pod>, ClaimError> {
    let namespace = sandbox.namespace().unwrap_or_default();
    let Some(owner) = sandbox.controller_owner_ref(&()) else {
        return Ok(None);
    };
    let mut candidates: Vec<_> = warm
        .state()
        .into_iter()
        .filter(|p| claimable(p, &namespace, template))
        .collect();
    // Spread concurrent claims over the pool: fewer of them race for the same pod.
    shuffle(&mut candidates, sandbox.uid().unwrap_or_default().as_bytes());
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut attempts = 0;
    for pod in candidates {
        let uid = pod.uid().unwrap_or_default();
        if attempts == MAX_ATTEMPTS {
            break;
        }
        if !claims.reserve(&uid) {
            continue;
        }
        attempts += 1;
        // Recorded before the patch: should its answer be lost after the API server applied it,
        // the next reconcile finds this pod (ownership is checked there) instead of claiming a
        // second one.
        claims.took(&sandbox.uid().unwrap_or_default(), &pod.name_any());
        let patch = json!({
            "metadata": {
                "resourceVersion": pod.resource_version(),
                "labels": { labels::POOL: null, labels::SANDBOX_NAME: sandbox.name_any() },
                "ownerReferences": [owner],
            }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch(&pod.name_any(), &params, &Patch::Merge(&patch)).await {
            Ok(adopted) => {
                info!(pod = %adopted.name_any(), template = %template.name_any(), "claimed a warm pod");
                return Ok(Some(adopted));
            }
            // Taken or deleted since the cache saw it: the next one.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                debug!(pod = %pod.name_any(), code = s.code, "warm pod gone before the claim");
            }
            Err(source) => {
                claims.release(&uid);
                return Err(ClaimError::Adopt {
                    namespace,
                    pod: pod.name_any(),
                    sandbox: sandbox.name_any(),
                    source,
                });
            }
        }
    }
    Ok(None)
}

/// Tells the adopted pod's agent the Sandbox's token (step 2 above), then deletes the pool pod's
/// token Secret.
pub async fn bind(
    client: &KubeClient,
    direct: &DirectAgent,
    sandbox: &Sandbox,
    pod: &Pod,
) -> Result<(), ClaimError> {
    let namespace = pod.namespace().unwrap_or_default();
    let fail = |message: String| ClaimError::Bind {
        sandbox: sandbox.name_any(),
        pod: pod.name_any(),
        message,
    };
    let addr = agent_token::agent_addr(pod).ok_or_else(|| ClaimError::NoAddress {
        sandbox: sandbox.name_any(),
        pod: pod.name_any(),
    })?;
    let old = agent_token::derive(&direct.key, &labels::pool_pod_subject(&namespace, &pod.name_any()));
    let new = agent_token::derive(&direct.key, &sandbox.uid().unwrap_or_default());
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        // The pod's policies change with the claim (the Sandbox's now selects it too): while the
        // network plugin reprograms them a connection attempt can go unanswered, so each attempt
        // is short and they go on for a while.
        let until = std::time::Instant::now() + BIND_PATIENCE;
        let connect = |token: &[u8]| loop {
            match Client::connect_within(addr, token, BIND_TIMEOUT) {
                Err(ClientError::Io(e)) if std::time::Instant::now() < until => {
                    debug!(error = %e, %addr, "agent not reachable yet; trying again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => break other,
            }
        };
        match connect(old.as_bytes()) {
            Ok(mut c) => {
                c.set_read_timeout(Some(CLAIM_ANSWER)).map_err(|e| e.to_string())?;
                let claim = Hello { token: new.into_bytes(), version: VERSION }.encode();
                match c.call(c2a::CLAIM, &claim) {
                    Ok(Reply::Ok) => Ok(()),
                    Ok(other) => Err(format!("unexpected answer to CLAIM: {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            // Bound already (by an earlier reconcile that stopped before its status write).
            Err(ClientError::Agent(e)) if e.code == ErrorCode::Unauthenticated => {
                connect(new.as_bytes())
                    .map(drop)
                    .map_err(|e| format!("the agent takes neither the pool's nor the Sandbox's token: {e}"))
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(fail)?;
    // Off the claim's path (its token opens nothing any more); the pool deletes it with itself
    // should this fail.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = labels::agent_token_secret(&pod.name_any());
    tokio::spawn(async move {
        match secrets.delete(&secret, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => debug!(error = %e, %secret, "could not delete the pool pod's token Secret"),
        }
    });
    Ok(())
}

/// A deterministic shuffle seeded by `seed` (no random number generator needed: claims by
/// different Sandboxes start at different pods).
fn shuffle<T>(v: &mut [T], seed: &[u8]) {
    let mut x: u64 = seed.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn template() -> SandboxTemplate {
        serde_yaml::from_str("metadata: {name: py, namespace: a, uid: t1, generation: 2}\nspec: {image: x}").unwrap()
    }

    const READY: &str = r#"
metadata:
  name: py-bbbbb
  namespace: a
  labels: {airlock.dev/pool: py, airlock.dev/template: py}
  ownerReferences: [{apiVersion: airlock.dev/v1alpha1, kind: SandboxPool, name: py, uid: p1, controller: true}]
  annotations: {airlock.dev/template-revision: t1/2}
status: {conditions: [{type: Ready, status: "True"}]}
"#;

    #[test]
    fn only_ready_unclaimed_pods_of_the_current_template_revision_are_claimable() {
        let t = template();
        assert!(claimable(&pod(READY), "a", &t));
        assert!(!claimable(&pod(READY), "b", &t), "other namespace");
        assert!(!claimable(&pod(&READY.replace("t1/2", "t1/1")), "a", &t), "older template");
        assert!(!claimable(&pod(&READY.replace("\"True\"", "\"False\"")), "a", &t), "not Ready");
        assert!(!claimable(&pod(&READY.replace("airlock.dev/pool: py, ", "")), "a", &t), "claimed");
        assert!(!claimable(&pod(&READY.replace("kind: SandboxPool", "kind: ReplicaSet")), "a", &t), "not a pool's pod");
        assert!(!claimable(&pod(&READY.replace("name: py, uid", "name: other, uid")), "a", &t), "another pool's owner");
    }

    #[test]
    fn reservations_keep_a_pod_from_being_tried_twice() {
        let c = Claims::default();
        assert!(c.reserve("u1"));
        assert!(!c.reserve("u1"));
        c.release("u1");
        assert!(c.reserve("u1"));
        c.took("sbx", "py-bbbbb");
        assert_eq!(c.taken_by("sbx").as_deref(), Some("py-bbbbb"));
    }

    #[test]
    fn shuffles_differ_by_seed_and_keep_every_item() {
        let mut a: Vec<u32> = (0..20).collect();
        let mut b = a.clone();
        shuffle(&mut a, b"one");
        shuffle(&mut b, b"two");
        assert_ne!(a, b);
        a.sort();
        assert_eq!(a, (0..20).collect::<Vec<_>>());
    }
}
