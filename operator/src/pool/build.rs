//! SandboxPool -> its objects, by pure functions: each warm pod (built by [`crate::build::pod`]
//! from the template, as if it were a Sandbox named after the pod, then handed to the pool), its
//! agent token Secret, and the pool's deny-all NetworkPolicy.

use std::collections::BTreeMap;

use airlock_crds::{Sandbox, SandboxPool, SandboxTemplate, labels};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::{Resource, ResourceExt};

use crate::build::{self, BuildError};
use crate::config::Config;
use crate::reconcile::validate::{self, Invalid};

/// Why a pool's pod cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolBuildError {
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The template breaks the operator's policy (as a Sandbox made from it would).
    #[error("SandboxTemplate {template}: {invalid}")]
    Invalid { template: String, invalid: Box<Invalid> },
    #[error("SandboxPool {0} has no uid or namespace yet")]
    Unsaved(String),
}

/// `<template uid>/<generation>`: which version of the template a pod was made from.
pub fn revision(template: &SandboxTemplate) -> String {
    format!(
        "{}/{}",
        template.uid().unwrap_or_default(),
        template.metadata.generation.unwrap_or_default()
    )
}

/// The pool's pods' label selector (unclaimed pods only).
pub fn selector(pool: &str) -> String {
    format!("{}={pool}", labels::POOL)
}

/// A warm pod named `pod_name` for `pool`, and its agent token Secret (with the direct path).
/// The pod is the one a Sandbox named `pod_name` made from the template would get, with no
/// egress, the pool's labels (no Sandbox label: no Sandbox's policy selects it) and the pool as
/// its controller.
pub fn pod(
    pool: &SandboxPool,
    template: &SandboxTemplate,
    pod_name: &str,
    config: &Config,
) -> Result<(Pod, Option<Secret>), PoolBuildError> {
    let Some(namespace) = pool.namespace() else {
        return Err(PoolBuildError::Unsaved(pool.name_any()));
    };
    let owner = pool
        .controller_owner_ref(&())
        .ok_or_else(|| PoolBuildError::Unsaved(pool.name_any()))?;
    let mut as_sandbox = Sandbox::new(pod_name, template.spec.pool_pod_spec());
    as_sandbox.metadata.uid = Some(labels::pool_pod_subject(&namespace, pod_name));
    as_sandbox.metadata.namespace = Some(namespace);
    let plan = validate::validate_as(&as_sandbox, config, false).map_err(|invalid| {
        PoolBuildError::Invalid {
            template: template.name_any(),
            invalid: Box::new(invalid),
        }
    })?;
    let mut pod = build::pod(&as_sandbox, &plan, config)?;
    // With the fence probe the agent serves only once the pod's network is fenced; a pool pod
    // counts as Ready (claimable) only from then on, so a claim never waits for it.
    if let (Some(direct), Some(_)) = (&config.direct, config.fence_probe) {
        agent_readiness(&mut pod, direct.port);
    }
    let pool_name = pool.name_any();
    hand_to_pool(&mut pod.metadata, &pool_name, template, owner.clone());
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::TEMPLATE_REVISION.into(), revision(template));
    let secret = match &config.direct {
        Some(d) => {
            let mut s = build::token_secret(&as_sandbox, d)?;
            hand_to_pool(&mut s.metadata, &pool_name, template, owner);
            Some(s)
        }
        None => None,
    };
    Ok((pod, secret))
}

/// A readiness probe of the agent's port on the pod's main container (every second: the kubelet's
/// finest step).
fn agent_readiness(pod: &mut k8s_openapi::api::core::v1::Pod, port: u16) {
    use k8s_openapi::api::core::v1::{Probe, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let Some(spec) = pod.spec.as_mut() else { return };
    for c in spec.containers.iter_mut().filter(|c| c.name == labels::MAIN_CONTAINER) {
        c.readiness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(port.into()), host: None }),
            period_seconds: Some(1),
            timeout_seconds: Some(1),
            // Once claimed the pod keeps the probe: a slow answer must not flap a running
            // sandbox's Ready.
            failure_threshold: Some(3),
            success_threshold: Some(1),
            ..Probe::default()
        });
    }
}

fn hand_to_pool(meta: &mut ObjectMeta, pool: &str, template: &SandboxTemplate, owner: OwnerReference) {
    let l = meta.labels.get_or_insert_with(BTreeMap::new);
    l.remove(labels::SANDBOX_NAME);
    l.insert(labels::POOL.into(), pool.into());
    l.insert(labels::POOL_ORIGIN.into(), pool.into());
    l.insert(labels::TEMPLATE.into(), template.name_any());
    meta.owner_references = Some(vec![owner]);
}

/// The NetworkPolicy of every pool pod of the namespace (`airlock.pool-pods`, one per namespace,
/// owned by no pool so that it outlives them all): every pod a pool made, claimed or not (label
/// [`labels::POOL_ORIGIN`]), may receive only the agent port from the agent clients and send
/// nothing. A claimed pod keeps the label, so this policy selects it at every instant (no policy
/// at all would mean allow-all), also while its Sandbox's policy is being applied and after its
/// pool is deleted; policies add up, so it gets exactly its own Sandbox's egress.
pub fn network_policy(namespace: &str, config: &Config) -> NetworkPolicy {
    NetworkPolicy {
        metadata: build::netpol::namespace_policy_meta(namespace, labels::POOL_PODS_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: labels::POOL_ORIGIN.into(),
                    operator: "Exists".into(),
                    values: None,
                }]),
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: config.direct.as_ref().map(|d| vec![build::netpol::agent_rule(d)]),
            egress: None,
        }),
    }
}

/// A pod name for the pool: `<pool>-` and five characters from Kubernetes' generateName
/// alphabet (no vowels, no look-alikes).
pub fn pod_name(pool: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    let mut n = h.finish();
    let mut name = format!("{pool}-");
    for _ in 0..5 {
        name.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn pool_and_template() -> (SandboxPool, SandboxTemplate) {
        let mut pool: SandboxPool = serde_yaml::from_str(
            "metadata: {name: py, namespace: team-a, uid: pool-uid}\nspec: {templateRef: {name: py}, replicas: 3}",
        )
        .unwrap();
        pool.metadata.generation = Some(1);
        let template: SandboxTemplate = serde_yaml::from_str(
            r#"
metadata: {name: py, namespace: team-a, uid: tpl-uid, generation: 4}
spec:
  image: python:3.12-slim
  env: [{name: A, value: a}]
  network: {egress: Internet}
"#,
        )
        .unwrap();
        (pool, template)
    }

    #[test]
    fn with_the_fence_probe_a_warm_pod_is_ready_only_once_its_agent_listens() {
        let (pool, template) = pool_and_template();
        let config = Config { fence_probe: Some("10.244.0.5:8080".parse().unwrap()), ..Config::with_direct() };
        let (warm, _) = pod(&pool, &template, "py-b2c4d", &config).unwrap();
        let probe = warm.spec.unwrap().containers[0].readiness_probe.clone().expect("a readiness probe");
        assert_eq!(probe.tcp_socket.unwrap().port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(7070));
        assert_eq!((probe.period_seconds, probe.failure_threshold), (Some(1), Some(3)));
        // Without the probe the pod is Ready when it runs, as before.
        let (warm, _) = pod(&pool, &template, "py-b2c4d", &Config::with_direct()).unwrap();
        assert!(warm.spec.unwrap().containers[0].readiness_probe.is_none());
    }

    #[test]
    fn a_warm_pod_belongs_to_the_pool_has_no_sandbox_label_and_records_the_template_revision() {
        let (pool, template) = pool_and_template();
        let config = Config::with_direct();
        let (pod, secret) = pod(&pool, &template, "py-b2c4d", &config).unwrap();
        let l = pod.labels();
        assert_eq!(l.get(labels::POOL).map(String::as_str), Some("py"));
        assert_eq!(l.get(labels::POOL_ORIGIN).map(String::as_str), Some("py"));
        assert_eq!(l.get(labels::TEMPLATE).map(String::as_str), Some("py"));
        assert!(!l.contains_key(labels::SANDBOX_NAME), "no Sandbox's policy may select it");
        assert_eq!(pod.annotations()[labels::TEMPLATE_REVISION], "tpl-uid/4");
        let owners = pod.owner_references();
        assert_eq!((owners.len(), owners[0].kind.as_str(), owners[0].uid.as_str()), (1, "SandboxPool", "pool-uid"));
        assert_eq!(owners[0].controller, Some(true));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("py-b2c4d"));
        let env = spec.containers[0].env.clone().unwrap();
        assert_eq!(env[0].name, "A");
        let token_ref = env.last().unwrap().value_from.clone().unwrap().secret_key_ref.unwrap();
        let secret = secret.unwrap();
        assert_eq!(token_ref.name, "airlock-agent-token-py-b2c4d");
        assert_eq!(secret.metadata.name.as_deref(), Some("airlock-agent-token-py-b2c4d"));
        assert_eq!(secret.owner_references()[0].kind, "SandboxPool");
        let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
        let key = config.direct.as_ref().unwrap().key.clone();
        assert_eq!(token, airlock_crds::agent_token::derive(&key, "pool-pod:team-a/py-b2c4d"));
    }

    #[test]
    fn the_pool_pods_policy_admits_only_the_agent_clients_and_allows_no_egress() {
        let np = network_policy("team-a", &Config::with_direct());
        assert_eq!(np.metadata.name.as_deref(), Some("airlock.pool-pods"));
        assert!(np.metadata.owner_references.is_none(), "outlives every pool");
        let spec = np.spec.unwrap();
        let sel = spec.pod_selector.unwrap();
        assert_eq!(sel.match_expressions.unwrap()[0].key, labels::POOL_ORIGIN);
        assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
        assert!(spec.egress.is_none());
        assert_eq!(spec.ingress.unwrap().len(), 1);
    }

    #[test]
    fn pod_names_fit_a_host_name() {
        let long = "p".repeat(57);
        let n = pod_name(&long);
        assert_eq!(n.len(), 63);
        assert_ne!(pod_name("a"), pod_name("a"));
    }
}
