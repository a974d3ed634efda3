//! Hardening of the operator against the local cluster: only allowed RuntimeClasses (refused at
//! admission by the chart's ValidatingAdmissionPolicy), the egress deny-list, a pod the API
//! server refuses reported on the Sandbox (and retried), and per-namespace state (quota, agent
//! ConfigMap) that follows the namespace's objects rather than the operator's memory.
//!
//! Assumes the release installed by `make install` (e2e/values-local.yaml): default RuntimeClass
//! gvisor, no other class allowed (so `runc` is refused), admission policies on, ConfigMap agent
//! delivery, quota management on.

use std::time::Duration;

use airlock_crds::{Phase, Sandbox, condition};
use airlock_e2e::sandboxes::{create, raw};
use airlock_e2e::{GVISOR, RUNC, TestNamespace, client, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Label selector of the operator's agent ConfigMaps.
const BUNDLES: &str = "app.kubernetes.io/component=agent-bundle,app.kubernetes.io/managed-by=airlock-operator";

fn ready_reason(s: Option<&Sandbox>) -> Option<String> {
    s.and_then(|s| s.condition(condition::READY)).map(|c| c.reason.clone())
}

#[tokio::test]
async fn a_runtime_class_that_is_not_allowed_is_refused_at_admission() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "h-rc").await;
    let err = create(&c, &ns.name, "host-kernel", json!({"runtimeClassName": RUNC}))
        .await
        .expect_err("a Sandbox under runc (the host's kernel) must be refused");
    let kube::Error::Api(status) = err else { panic!("expected an API refusal, got {err}") };
    assert!(
        status.message.contains("spec.runtimeClassName") && status.message.contains(RUNC) && status.message.contains(GVISOR),
        "the message names the field, the class and the allowed ones: {}",
        status.message
    );
    assert!(raw(&c, &ns.name).get_opt("host-kernel").await.unwrap().is_none(), "nothing was stored");
    // The allowed class, named explicitly, is accepted and runs.
    create(&c, &ns.name, "under-gvisor", json!({"runtimeClassName": GVISOR})).await.expect("gvisor is allowed");
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    wait_for(&sandboxes, "under-gvisor", READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn egress_deny_list_refuses_metadata_and_excludes_nat64_from_internet() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "h-egress").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    create(
        &c,
        &ns.name,
        "metadata",
        json!({"network": {"egress": "AllowList", "allow": [{"cidr": "203.0.113.0/24"}, {"cidr": "169.254.169.254/32"}]}}),
    )
    .await
    .expect("create");
    let s = wait_for(&sandboxes, "metadata", Duration::from_secs(60), "Ready=False reason EgressDenied", |s| {
        ready_reason(s).as_deref() == Some("EgressDenied")
    })
    .await
    .unwrap();
    assert_eq!(s.status.as_ref().unwrap().phase, Some(Phase::Failed));
    let msg = &s.condition(condition::READY).unwrap().message;
    assert!(msg.contains("spec.network.allow[1].cidr") && msg.contains("169.254.169.254/32"), "{msg}");
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    assert!(pods.get_opt("metadata").await.unwrap().is_none(), "no pod");

    // The API server accepts the Internet policy with its IPv6 exceptions (NAT64; an
    // IPv4-mapped `::ffff:0:0/96` exception was refused by it: it reads that range as IPv4)
    // and an AllowList entry containing denied ranges gets them as exceptions.
    create(&c, &ns.name, "inet", json!({"network": {"egress": "Internet"}})).await.expect("create");
    create(&c, &ns.name, "wide", json!({"network": {"egress": "AllowList", "allow": [{"cidr": "0.0.0.0/0"}]}})).await.expect("create");
    let nps: Api<NetworkPolicy> = Api::namespaced(c.clone(), &ns.name);
    let inet = wait_for(&nps, "inet", Duration::from_secs(60), "NetworkPolicy", |n| n.is_some()).await.unwrap();
    let blocks: Vec<_> = inet.spec.unwrap().egress.unwrap()[0].to.iter().flatten().filter_map(|p| p.ip_block.clone()).collect();
    for x in ["64:ff9b::/96", "64:ff9b:1::/48", "fd00:ec2::254/128"] {
        assert!(blocks[1].except.iter().flatten().any(|e| e == x), "{x} excluded: {blocks:?}");
    }
    let wide = wait_for(&nps, "wide", Duration::from_secs(60), "NetworkPolicy", |n| n.is_some()).await.unwrap();
    let b = wide.spec.unwrap().egress.unwrap()[0].to.as_ref().unwrap()[0].ip_block.clone().unwrap();
    let except = b.except.unwrap_or_default();
    for x in ["169.254.0.0/16", "10.96.0.0/12", "10.244.0.0/16"] {
        assert!(except.iter().any(|e| e == x), "{x} excepted: {except:?}");
    }
    ns.cleanup().await;
}

/// A LimitRange whose cpu maximum is below the sandbox's: the API server refuses the pod. The
/// Sandbox says so (phase Failed, reason PodRejected, the API server's words); once the
/// LimitRange is gone, the operator's retry creates the pod and the sandbox becomes Ready.
#[tokio::test]
async fn a_pod_the_api_server_refuses_is_reported_and_retried() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "h-rejected").await;
    let limits: Api<LimitRange> = Api::namespaced(c.clone(), &ns.name);
    let lr: LimitRange = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "tiny"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "5m"}}]}
    }))
    .unwrap();
    limits.create(&PostParams::default(), &lr).await.expect("create the LimitRange");
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    create(&c, &ns.name, "too-big", json!({})).await.expect("the Sandbox itself is fine");
    let s = wait_for(&sandboxes, "too-big", Duration::from_secs(60), "Ready=False reason PodRejected", |s| {
        ready_reason(s).as_deref() == Some("PodRejected")
    })
    .await
    .unwrap();
    let status = s.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    let r = s.condition(condition::READY).unwrap();
    assert_eq!(r.status, "False");
    assert!(r.message.contains("maximum cpu usage per Container is 5m"), "the API server's words: {}", r.message);
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    assert!(pods.get_opt("too-big").await.unwrap().is_none());

    limits.delete("tiny", &DeleteParams::default()).await.expect("delete the LimitRange");
    wait_for(&sandboxes, "too-big", READY_TIMEOUT, "Ready after the LimitRange is gone", |s| s.is_some_and(Sandbox::is_ready)).await;
    ns.cleanup().await;
}

async fn wait_service_account(c: &Client, ns: &str) {
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    wait_for(&sas, "default", Duration::from_secs(60), "default ServiceAccount", |s| s.is_some()).await;
}

/// A namespace deleted and re-created under the same name gets its quota and agent ConfigMap
/// again (the operator's per-namespace memory follows the objects, not the name).
#[tokio::test]
async fn a_recreated_namespace_gets_its_quota_and_agent_config_map_again() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "h-recreate").await;
    let name = ns.name.clone();
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &name);
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), &name);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &name);
    create(&c, &name, "first", json!({})).await.expect("create");
    wait_for(&sandboxes, "first", READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await;
    assert!(quotas.get_opt("airlock-sandboxes").await.unwrap().is_some());

    let namespaces: Api<Namespace> = Api::all(c.clone());
    namespaces.delete(&name, &DeleteParams::background()).await.expect("delete the namespace");
    wait_for(&namespaces, &name, Duration::from_secs(180), "namespace gone", |n| n.is_none()).await;
    let again: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"airlock.dev/e2e": "true"}}
    }))
    .unwrap();
    namespaces.create(&PostParams::default(), &again).await.expect("re-create the namespace");
    wait_service_account(&c, &name).await;

    create(&c, &name, "second", json!({})).await.expect("create");
    wait_for(&sandboxes, "second", READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await;
    let q = quotas.get_opt("airlock-sandboxes").await.unwrap();
    assert!(q.is_some(), "the re-created namespace has the operator's quota again");
    let bundles = cms.list_metadata(&ListParams::default().labels(BUNDLES)).await.unwrap();
    assert_eq!(bundles.items.len(), 1, "the agent ConfigMap is back");
    ns.cleanup().await;
}

/// Someone deletes the namespace's agent ConfigMap: the next sandbox's pod finds it re-created,
/// rather than failing to mount it until a cache expires.
#[tokio::test]
async fn a_deleted_agent_config_map_is_recreated_before_the_next_pod() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "h-bundle").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    create(&c, &ns.name, "first", json!({})).await.expect("create");
    wait_for(&sandboxes, "first", READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await;
    let bundles = cms.list_metadata(&ListParams::default().labels(BUNDLES)).await.unwrap();
    assert_eq!(bundles.items.len(), 1);
    let bundle = bundles.items[0].name_any();
    cms.delete(&bundle, &DeleteParams::default()).await.expect("delete the agent ConfigMap");
    wait_for(&cms, &bundle, Duration::from_secs(30), "ConfigMap gone", |m| m.is_none()).await;

    create(&c, &ns.name, "second", json!({})).await.expect("create");
    wait_for(&sandboxes, "second", READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await;
    assert!(cms.get_opt(&bundle).await.unwrap().is_some(), "re-created");
    let events: Api<Event> = Api::namespaced(c.clone(), &ns.name);
    let failed_mounts: Vec<_> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedMount") && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("second"))
        .map(|e| e.note.unwrap_or_default())
        .collect();
    assert!(failed_mounts.is_empty(), "the second pod never waited for its ConfigMap: {failed_mounts:?}");
    ns.cleanup().await;
}
