//! Policy and GitOps against the installed operator: a TTL raised past the operator's maximum
//! keeps the running pod (clamped, condition PolicyAdjusted); ExtendSandbox writes only
//! `spec.lifetime.extensionSeconds`, which a GitOps server-side apply of the Git manifest leaves
//! alone; a Sandbox tracked by Argo CD is retained (phase Expired, pod gone) at expiry instead of
//! deleted; `status.observedGeneration` catches up after a spec update (kstatus).

use std::time::Duration;

use airlock_crds::Sandbox;
use airlock_e2e::release::{OPERATOR_DEPLOYMENT, SYSTEM_NS};
use airlock_e2e::sandboxes::{in_process_gateway, manifest, ready_sandbox, token_for};
use airlock_e2e::{TestNamespace, client, wait_for};
use airlock_api::client::AirlockClient;
use airlock_api::tonic::Code;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(180);

/// The installed operator's `--max-ttl`.
async fn operator_max_ttl(c: &Client) -> i64 {
    let d = Api::<Deployment>::namespaced(c.clone(), SYSTEM_NS)
        .get(OPERATOR_DEPLOYMENT)
        .await
        .expect("operator Deployment");
    let args = d.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap_or_default();
    args.iter()
        .find_map(|a| a.strip_prefix("--max-ttl=")?.parse().ok())
        .expect("the operator's --max-ttl")
}

fn condition<'a>(s: &'a Sandbox, type_: &str) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.condition(type_)
}

/// Status describes the current spec (kstatus): top-level and Ready's observedGeneration.
fn caught_up(s: &Sandbox) -> bool {
    let generation = s.metadata.generation;
    let st = s.status.as_ref();
    generation.is_some()
        && st.and_then(|st| st.observed_generation) == generation
        && condition(s, "Ready").and_then(|c| c.observed_generation) == generation
}

fn pod_uid(p: Option<&Pod>) -> Option<String> {
    p.and_then(|p| p.metadata.uid.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_past_the_operator_maximum_keeps_the_running_pod_and_reports_policy_adjusted() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "policy-ttl").await;
    let max = operator_max_ttl(&c).await;
    assert!(max < airlock_crds::MAX_TTL_SECONDS, "the test needs --max-ttl below the CRD's limit");
    ready_sandbox(&c, &ns.name, "clamped").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let uid = pod_uid(pods.get_opt("clamped").await.unwrap().as_ref()).expect("pod");

    // What an extension past the maximum (or a lowered maximum) used to do: the operator refused
    // the spec and deleted the running pod.
    let api: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let patch = json!({"spec": {"lifetime": {"ttlSeconds": airlock_crds::MAX_TTL_SECONDS}}});
    api.patch("clamped", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("raising ttlSeconds");
    let s = wait_for(&api, "clamped", WAIT, "PolicyAdjusted=True for the new generation", |s| {
        s.is_some_and(|s| caught_up(s) && condition(s, "PolicyAdjusted").is_some_and(|c| c.status == "True"))
    })
    .await
    .unwrap();
    let adjusted = condition(&s, "PolicyAdjusted").unwrap();
    assert_eq!(adjusted.reason, "TTLClamped");
    assert!(
        adjusted.message.contains("spec.lifetime.ttlSeconds")
            && adjusted.message.contains(&format!("asked {}", airlock_crds::MAX_TTL_SECONDS))
            && adjusted.message.contains(&format!("applied {max}")),
        "{}",
        adjusted.message
    );
    assert!(s.is_ready(), "still Ready: {:?}", s.status);
    let st = s.status.as_ref().unwrap();
    assert_eq!(st.ttl_seconds, Some(max));
    let created = s.metadata.creation_timestamp.as_ref().unwrap().0;
    assert_eq!(st.ttl_expires_at.as_ref().unwrap().0.as_second(), created.as_second() + max);
    assert_eq!(pod_uid(pods.get_opt("clamped").await.unwrap().as_ref()), Some(uid), "the same pod runs on");
    ns.cleanup().await;
}

/// The gateway, in this process, on loopback, with the operator's maximum.
async fn gateway(kube: &Client, ns: &str, max_ttl: i64) -> (String, oneshot::Sender<()>) {
    let (port, stop) = in_process_gateway(kube, ns, |config| config.max_ttl_seconds = max_ttl).await;
    (format!("http://127.0.0.1:{port}"), stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_leaves_the_git_owned_ttl_alone_and_survives_a_gitops_apply() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "policy-gitops").await;
    let max = operator_max_ttl(&c).await;
    // The Sandbox as Flux applies it from Git: server-side apply, field manager
    // kustomize-controller, Flux's label.
    let mut git = manifest("from-git", json!({"resources": {"cpu": "50m", "memory": "128Mi"}}));
    git["metadata"]["labels"] = json!({"kustomize.toolkit.fluxcd.io/name": "sandboxes"});
    let flux = PatchParams::apply("kustomize-controller").force();
    let raw = airlock_e2e::sandboxes::raw(&c, &ns.name);
    let obj: DynamicObject = serde_json::from_value(git.clone()).unwrap();
    raw.patch("from-git", &flux, &Patch::Apply(&obj)).await.expect("GitOps apply");
    let api: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    wait_for(&api, "from-git", WAIT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await;

    let (addr, _stop) = gateway(&c, &ns.name, max).await;
    let token = token_for(&c, &ns.name, "tester").await;
    let ac = AirlockClient::connect(&addr, Some(token)).await.expect("connect");
    let sb = ac.extend_sandbox(&ns.name, "from-git", 600).await.expect("extend");
    assert_eq!((sb.ttl_seconds, sb.extension_seconds), (1800, 600), "ttlSeconds untouched");
    let created = sb.created_at.as_ref().unwrap().seconds;
    assert_eq!(sb.ttl_expires_at.as_ref().unwrap().seconds, created + 2400);

    // The extension belongs to the gateway's field manager, not to the GitOps one.
    let s = api.get("from-git").await.unwrap();
    let owner = s
        .managed_fields()
        .iter()
        .find(|f| {
            f.fields_v1.as_ref().is_some_and(|v| v.0["f:spec"]["f:lifetime"].get("f:extensionSeconds").is_some())
        })
        .and_then(|f| f.manager.clone());
    assert_eq!(owner.as_deref(), Some("airlock-exec-gateway"));

    // Flux re-applies the Git manifest (drift correction): the extension stays.
    raw.patch("from-git", &flux, &Patch::Apply(&obj)).await.expect("GitOps re-apply");
    let s = api.get("from-git").await.unwrap();
    assert_eq!((s.spec.lifetime.ttl_seconds, s.spec.lifetime.extension_seconds), (Some(1800), Some(600)));
    let s = wait_for(&api, "from-git", WAIT, "status.ttlSeconds 2400", |s| {
        s.is_some_and(|s| caught_up(s) && s.status.as_ref().and_then(|st| st.ttl_seconds) == Some(2400))
    })
    .await
    .unwrap();
    assert_eq!(s.status.unwrap().ttl_expires_at.unwrap().0.as_second(), created + 2400);

    // Past the operator's maximum: refused, naming it; nothing changes.
    let err = ac.extend_sandbox(&ns.name, "from-git", max).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(&format!("the operator's maximum of {max}s")), "{}", err.message());
    assert_eq!(api.get("from-git").await.unwrap().spec.lifetime.extension_seconds, Some(600));
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_tracked_by_argo_cd_is_kept_as_expired_instead_of_deleted() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "policy-argo").await;
    let mut m = manifest("tracked", json!({"lifetime": {"ttlSeconds": 30}}));
    m["metadata"]["annotations"] = json!({"argocd.argoproj.io/tracking-id": "sandboxes:airlock.dev/Sandbox:x/tracked"});
    let obj: DynamicObject = serde_json::from_value(m).unwrap();
    airlock_e2e::sandboxes::raw(&c, &ns.name)
        .create(&Default::default(), &obj)
        .await
        .expect("create");
    let api: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let s = wait_for(&api, "tracked", WAIT, "phase Expired", |s| {
        s.is_none() || s.and_then(|s| s.status.as_ref()?.phase) == Some(airlock_crds::Phase::Expired)
    })
    .await
    .expect("the Sandbox is kept, not deleted");
    assert_eq!(condition(&s, "Expired").map(|c| c.reason.as_str()), Some("TTLExpired"));
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    wait_for(&pods, "tracked", WAIT, "pod gone", |p| p.is_none()).await;
    assert!(api.get_opt("tracked").await.unwrap().is_some(), "still kept after the pod went");
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_generation_catches_up_after_a_spec_update() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "policy-kstatus").await;
    ready_sandbox(&c, &ns.name, "gen").await;
    let api: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    let before = api.get("gen").await.unwrap();
    assert!(caught_up(&before), "{:?}", before.status);
    let patch = json!({"spec": {"lifetime": {"ttlSeconds": 1900}}});
    let after = api.patch("gen", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert!(after.metadata.generation > before.metadata.generation, "a spec change bumps the generation");
    let s = wait_for(&api, "gen", WAIT, "observedGeneration caught up", |s| s.is_some_and(caught_up)).await.unwrap();
    assert!(s.is_ready());
    for (type_, status) in [("Reconciling", "False"), ("Stalled", "False"), ("PolicyAdjusted", "False")] {
        let c = condition(&s, type_).unwrap_or_else(|| panic!("condition {type_}"));
        assert_eq!((c.status.as_str(), c.observed_generation), (status, s.metadata.generation), "{type_}");
    }
    assert_eq!(s.status.as_ref().unwrap().ttl_seconds, Some(1900));
    ns.cleanup().await;
}
