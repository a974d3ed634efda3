//! The local cluster itself (issue: a real one-node cluster): node Ready, pods under gVisor and
//! runc with exec through the API server, NetworkPolicy enforced, garbage collection and
//! ResourceQuota admission.

use std::time::Duration;

use airlock_e2e::{GVISOR, RUNC, TestNamespace, client, exec, run_pod, sleeper, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn node_is_ready() {
    let c = client().await;
    let nodes = Api::<Node>::all(c).list(&Default::default()).await.expect("list nodes");
    assert_eq!(nodes.items.len(), 1, "one node");
    let ready = nodes.items[0].status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    assert_eq!(ready.map(|c| c.status.as_str()), Some("True"), "node Ready: {ready:?}");
}

#[tokio::test]
async fn gvisor_and_runc_pods_run_and_exec_works_through_the_api_server() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "runtimes").await;
    let (g, r) = tokio::join!(
        run_pod(&c, &ns.name, sleeper("gvisor", GVISOR, json!({}))),
        run_pod(&c, &ns.name, sleeper("runc", RUNC, json!({})))
    );
    assert_eq!(g.spec.as_ref().unwrap().runtime_class_name.as_deref(), Some(GVISOR));
    assert_eq!(r.spec.as_ref().unwrap().runtime_class_name.as_deref(), Some(RUNC));

    // Under gVisor the kernel messages are gVisor's own, and the kernel is not the host's.
    let dmesg = exec(&c, &ns.name, "gvisor", &["dmesg"]).await;
    assert!(dmesg.stdout.contains("Starting gVisor"), "gVisor kernel log: {dmesg:?}");
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let g_kernel = exec(&c, &ns.name, "gvisor", &["uname", "-r"]).await;
    let r_kernel = exec(&c, &ns.name, "runc", &["uname", "-r"]).await;
    assert_ne!(g_kernel.stdout.trim(), host_kernel.trim(), "gVisor reports its own kernel");
    assert_eq!(r_kernel.stdout.trim(), host_kernel.trim(), "runc shares the host kernel");

    // stdout, stderr and a non-zero exit code come back separately, for both runtimes.
    for pod in ["gvisor", "runc"] {
        let out = exec(&c, &ns.name, pod, &["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]).await;
        assert_eq!(out.stdout, "to-out\n", "{pod}");
        assert_eq!(out.stderr, "to-err\n", "{pod}");
        assert_eq!(out.exit_code, 3, "{pod}");
        let ok = exec(&c, &ns.name, pod, &["true"]).await;
        assert_eq!(ok.exit_code, 0, "{pod}");
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn network_policy_denying_egress_is_enforced() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "netpol").await;
    // A listener the test starts itself, inside the test namespace.
    let mut listener = sleeper("listener", RUNC, json!({"role": "listener"}));
    listener["spec"]["containers"][0]["command"] = json!(["python3", "-c", airlock_e2e::TCP_LISTENER, "8080"]);
    let (l, _, _) = tokio::join!(
        run_pod(&c, &ns.name, listener),
        run_pod(&c, &ns.name, sleeper("open", GVISOR, json!({"role": "open"}))),
        run_pod(&c, &ns.name, sleeper("fenced", GVISOR, json!({"role": "fenced"})))
    );
    let ip = l.status.unwrap().pod_ip.expect("listener IP");
    let policy: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-egress"},
        "spec": {"podSelector": {"matchLabels": {"role": "fenced"}}, "policyTypes": ["Egress"], "egress": []}
    }))
    .unwrap();
    Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(c.clone(), &ns.name)
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    let probe = format!(
        "import socket,sys\ntry:\n  socket.create_connection(('{ip}',8080),timeout=3).close(); print('connected')\nexcept Exception as e:\n  print('blocked', e); sys.exit(1)"
    );
    // The unpolicied pod reaches the listener (retry while the listener starts).
    let mut open = exec(&c, &ns.name, "open", &["python3", "-c", &probe]).await;
    for _ in 0..20 {
        if open.exit_code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        open = exec(&c, &ns.name, "open", &["python3", "-c", &probe]).await;
    }
    assert_eq!(open.stdout.trim(), "connected", "unpolicied pod reaches the listener: {open:?}");
    // The fenced pod does not, once kube-router has applied the policy.
    let mut fenced = exec(&c, &ns.name, "fenced", &["python3", "-c", &probe]).await;
    for _ in 0..20 {
        if fenced.exit_code != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        fenced = exec(&c, &ns.name, "fenced", &["python3", "-c", &probe]).await;
    }
    assert_eq!(fenced.exit_code, 1, "fenced pod is blocked: {fenced:?}");
    assert!(fenced.stdout.starts_with("blocked"), "{fenced:?}");
    // And the listener still serves the open pod afterwards (the block is the policy, not an outage).
    let again = exec(&c, &ns.name, "open", &["python3", "-c", &probe]).await;
    assert_eq!(again.stdout.trim(), "connected", "{again:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn garbage_collector_deletes_owned_children() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "gc").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let owner = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap())
        .await
        .unwrap();
    let child: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "child", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.unwrap()
    }]}}))
    .unwrap();
    cms.create(&PostParams::default(), &child).await.unwrap();
    cms.delete("owner", &DeleteParams::background()).await.unwrap();
    wait_for(&cms, "child", Duration::from_secs(60), "child garbage-collected", |o| o.is_none()).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn resource_quota_is_enforced_at_admission() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "quota").await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}})).unwrap();
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> = Api::namespaced(c.clone(), &ns.name);
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // Wait for the quota controller to compute usage: admission refuses pods until it has.
    wait_for(&quotas, "q", Duration::from_secs(30), "quota status", |q| {
        q.and_then(|q| q.status.as_ref()).and_then(|s| s.used.as_ref()).is_some()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let p1: Pod = serde_json::from_value(sleeper("p1", RUNC, json!({}))).unwrap();
    pods.create(&PostParams::default(), &p1).await.expect("first pod fits the quota");
    let p2: Pod = serde_json::from_value(sleeper("p2", RUNC, json!({}))).unwrap();
    let err = pods.create(&PostParams::default(), &p2).await.expect_err("second pod exceeds the quota");
    let msg = err.to_string();
    assert!(msg.contains("exceeded quota"), "quota refusal: {msg}");
    ns.cleanup().await;
}
