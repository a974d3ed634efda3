//! The agent ConfigMap `airlock-agent-<hash>` runs as PID 1 of every sandbox of its namespace, so
//! only the operator may write it: the chart's ValidatingAdmissionPolicy refuses anyone else (a
//! namespace user with the built-in `edit` role), and the operator replaces a ConfigMap of that
//! name whose content is not its bundle (planted here by a cluster administrator, whom the policy
//! exempts) before it starts a pod that mounts it.
//!
//! Assumes the chart is installed with `admissionPolicies.enabled=true` (the default) and
//! `agentDelivery: ConfigMap` (the default), and that the test runs as a member of
//! `system:masters` (the local cluster's admin kubeconfig).

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_crds::Sandbox;
use airlock_e2e::sandboxes::{create, ready_sandbox};
use airlock_e2e::{GVISOR, SANDBOX_IMAGE, TestNamespace, client, exec, run_pod, wait_for};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Where the planted `boot` leaves its mark when it runs.
const MARKER: &str = "/tmp/airlock-impostor-marker";

/// A `boot` that is not Airlock's: it marks the sandbox, then idles.
fn planted_boot() -> Vec<u8> {
    format!("#!/usr/bin/env python3\nopen('{MARKER}', 'w').write('planted')\nimport time\ntime.sleep(3600)\n").into_bytes()
}

/// The operator's agent ConfigMap, as it creates it in a namespace where a sandbox ran.
async fn operators_bundle(c: &Client) -> (ConfigMap, TestNamespace) {
    let ns = TestNamespace::new(c, "bundle-ref").await;
    ready_sandbox(c, &ns.name, "ref").await;
    let pod = Api::<Pod>::namespaced(c.clone(), &ns.name)
        .get("ref")
        .await
        .unwrap();
    let name = pod
        .labels()
        .get("airlock.dev/agent-bundle")
        .cloned()
        .expect("pod labelled with its agent ConfigMap (agentDelivery: ConfigMap)");
    let cm = Api::<ConfigMap>::namespaced(c.clone(), &ns.name)
        .get(&name)
        .await
        .unwrap();
    (cm, ns)
}

/// A client acting as `user` (impersonation; the test's own credentials are an administrator's).
async fn client_as(user: &str) -> Client {
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("client")
}

/// A ServiceAccount of `ns` bound to the built-in `edit` ClusterRole there; its user name.
async fn editor(c: &Client, ns: &str) -> String {
    let pp = PostParams::default();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "editor"}})).unwrap();
    Api::<ServiceAccount>::namespaced(c.clone(), ns)
        .create(&pp, &sa)
        .await
        .unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "editor"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "editor", "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(c.clone(), ns)
        .create(&pp, &rb)
        .await
        .unwrap();
    format!("system:serviceaccount:{ns}:editor")
}

fn config_map(name: &str, boot: Vec<u8>, agent: Vec<u8>) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([
            ("boot".into(), ByteString(boot)),
            ("agent.z".into(), ByteString(agent)),
        ])),
        immutable: Some(true),
        ..Default::default()
    }
}

fn refusal(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("expected an API refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_editor_cannot_create_change_or_delete_the_agent_config_map() {
    let c = client().await;
    let (ours, ref_ns) = operators_bundle(&c).await;
    let name = ours.name_any();
    let ns = TestNamespace::new(&c, "bundle-vap").await;
    let user = editor(&c, &ns.name).await;
    let as_editor = client_as(&user).await;
    let cms: Api<ConfigMap> = Api::namespaced(as_editor.clone(), &ns.name);

    // The editor may write ConfigMaps in general...
    cms.create(
        &PostParams::default(),
        &config_map("ordinary", b"x".to_vec(), b"y".to_vec()),
    )
    .await
    .expect("edit allows ConfigMaps");
    // ...but not one named like the agent bundle: refused at admission, with a message naming it.
    let planted = config_map(&name, planted_boot(), b"agent".to_vec());
    let (code, message) = refusal(
        cms.create(&PostParams::default(), &planted)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains(&format!("ConfigMap {}/{name}", ns.name)),
        "{message}"
    );
    assert!(message.contains("only the Airlock operator"), "{message}");
    let (code, _) = refusal(
        cms.create(
            &PostParams::default(),
            &config_map("airlock-agent-0000000000", planted_boot(), vec![]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 403, "any airlock-agent-* name is reserved");

    // The operator's own copy (made here by a sandbox) can be neither deleted nor changed by them.
    ready_sandbox(&c, &ns.name, "s").await;
    let real = Api::<ConfigMap>::namespaced(c.clone(), &ns.name)
        .get(&name)
        .await
        .expect("the operator's ConfigMap");
    let (code, message) = refusal(
        cms.delete(&name, &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains(&format!("ConfigMap {}/{name}", ns.name)),
        "{message}"
    );
    let patch = json!({"metadata": {"labels": {"touched": "yes"}}});
    let (code, _) = refusal(
        cms.patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 403);
    let after = Api::<ConfigMap>::namespaced(c.clone(), &ns.name)
        .get(&name)
        .await
        .unwrap();
    assert_eq!(after.uid(), real.uid());
    assert_eq!(
        after.binary_data, ours.binary_data,
        "the operator's bundle, untouched"
    );

    // Deleting the namespace still works: the namespace controller may empty it.
    let ns_name = ns.name.clone();
    ns.cleanup().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
    wait_for(
        &namespaces,
        &ns_name,
        Duration::from_secs(180),
        "namespace (with its agent ConfigMap) deleted",
        |n| n.is_none(),
    )
    .await;
    ref_ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_agent_config_map_is_replaced_before_the_sandbox_starts() {
    let c = client().await;
    let (ours, ref_ns) = operators_bundle(&c).await;
    let name = ours.name_any();
    let ours_data = ours.binary_data.clone().unwrap();

    // Control: the planted boot, mounted and started the way a sandbox starts boot, marks the pod.
    let ns = TestNamespace::new(&c, "bundle-plant").await;
    let admin_cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    admin_cms
        .create(
            &PostParams::default(),
            &config_map("control", planted_boot(), ours_data["agent.z"].0.clone()),
        )
        .await
        .unwrap();
    run_pod(
        &c,
        &ns.name,
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "control"},
            "spec": {
                "runtimeClassName": GVISOR, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
                "volumes": [{"name": "boot", "configMap": {"name": "control", "defaultMode": 0o555}}],
                "containers": [{"name": "main", "image": SANDBOX_IMAGE, "imagePullPolicy": "Never",
                                "command": ["/.airlock-boot/boot", "/.airlock-boot/agent.z", "/.airlock/airlock-agent", "init", "--"],
                                "volumeMounts": [{"name": "boot", "mountPath": "/.airlock-boot", "readOnly": true}]}]
            }
        }),
    )
    .await;
    let mut marked = exec(&c, &ns.name, "control", &["cat", MARKER]).await;
    for _ in 0..50 {
        if marked.exit_code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        marked = exec(&c, &ns.name, "control", &["cat", MARKER]).await;
    }
    assert_eq!(
        (marked.exit_code, marked.stdout.as_str()),
        (0, "planted"),
        "the planted boot marks a pod it runs in: {marked:?}"
    );

    // An administrator (exempt from the policy) plants it under the bundle's name.
    let planted = admin_cms
        .create(
            &PostParams::default(),
            &config_map(&name, planted_boot(), ours_data["agent.z"].0.clone()),
        )
        .await
        .expect("administrators may create it");

    // A sandbox created afterwards runs the operator's boot, not the planted one.
    create(
        &c,
        &ns.name,
        "victim",
        json!({"resources": {"cpu": "50m", "memory": "128Mi"}}),
    )
    .await
    .unwrap();
    let sandboxes: Api<Sandbox> = Api::namespaced(c.clone(), &ns.name);
    wait_for(
        &sandboxes,
        "victim",
        Duration::from_secs(180),
        "Ready",
        |s| s.is_some_and(Sandbox::is_ready),
    )
    .await;
    let now = admin_cms.get(&name).await.unwrap();
    assert_ne!(
        now.uid(),
        planted.uid(),
        "the planted ConfigMap was deleted"
    );
    assert_eq!(
        now.binary_data.as_ref(),
        Some(&ours_data),
        "the operator's bundle in its place"
    );
    assert_eq!(now.immutable, Some(true));
    let absent = exec(
        &c,
        &ns.name,
        "victim",
        &["/.airlock/airlock-agent", "stat", MARKER],
    )
    .await;
    assert_eq!(absent.exit_code, 2, "no marker in the sandbox: {absent:?}");
    let pid1 = exec(&c, &ns.name, "victim", &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(
        pid1.stdout.split('\0').next(),
        Some("/.airlock/airlock-agent"),
        "{pid1:?}"
    );

    // The replacement is reported on the Sandbox.
    let events: Api<Event> = Api::namespaced(c.clone(), &ns.name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        if let Some(e) = list.items.iter().find(|e| {
            e.reason.as_deref() == Some("AgentBundleReplaced")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("victim")
        }) {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            assert!(
                e.note.as_deref().unwrap_or_default().contains(&name),
                "{e:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no AgentBundleReplaced event: {:?}",
            list.items
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ns.cleanup().await;
    ref_ns.cleanup().await;
}

/// With the direct path the operator writes each sandbox's token Secret, for which RBAC must give
/// it `create` and `patch` on Secrets everywhere (create cannot be limited by name); the chart's
/// ValidatingAdmissionPolicy `<release>-operator-secrets` lets it write token Secrets only.
#[tokio::test]
async fn the_operator_may_write_agent_token_secrets_and_no_other() {
    use k8s_openapi::api::core::v1::Secret;
    let c = client().await;
    let ns = TestNamespace::new(&c, "bundle-secrets").await;
    let secret = |name: &str| serde_json::from_value::<Secret>(json!({"metadata": {"name": name}, "stringData": {"k": "v"}})).unwrap();
    let admin: Api<Secret> = Api::namespaced(c.clone(), &ns.name);
    admin.create(&PostParams::default(), &secret("app-credentials")).await.expect("an application's Secret");
    let op: Api<Secret> = Api::namespaced(client_as("system:serviceaccount:airlock-system:airlock-operator").await, &ns.name);
    // Control: what it needs works.
    op.create(&PostParams::default(), &secret("airlock-agent-token-x")).await.expect("the operator writes a token Secret");
    // Anything else is refused, naming the rule: creating, and changing an existing Secret.
    for (what, r) in [
        ("create", op.create(&PostParams::default(), &secret("registry-credentials")).await.map(drop)),
        ("patch", op.patch("app-credentials", &PatchParams::default(), &Patch::Merge(json!({"stringData": {"k": "stolen"}}))).await.map(drop)),
    ] {
        match r {
            Err(kube::Error::Api(e)) => assert!(e.message.contains("airlock-agent-token-"), "{what}: {e:?}"),
            other => panic!("{what} of another Secret as the operator: {other:?}"),
        }
    }
    let kept = admin.get("app-credentials").await.expect("still there");
    assert_eq!(kept.data.unwrap()["k"].0, b"v", "unchanged");
    ns.cleanup().await;
}
