//! A Sandbox's NetworkPolicy, enforced on the cluster (kube-router): what `egress: Internet` and
//! `dns: true` let a sandbox reach, and that nothing reaches a sandbox. (`egress: None` and
//! `AllowList` are in isolation.rs, `egress_none_reaches_nothing_and_allow_list_exactly_one_port`.)
//!
//! Every listener is one the test starts: pods in its namespace, a Service in front of one, TCP and
//! UDP listeners on the node (its address, its bridge address, e2e/cluster's private test
//! addresses and its public one, 192.0.2.1, all on the node's `lo`). Every "cannot reach" has a control: in the same probe round, a pod no
//! NetworkPolicy selects reaches the same listener. The policy is taken as enforced when a round
//! gives every expected answer [`HOLD_ROUNDS`] times in a row (`airlock_e2e::net::settle`).

use std::time::Duration;

use airlock_crds::Sandbox;
use airlock_e2e::net::{self, Case, FixedNamespace, HOLD_ROUNDS, NODE_IP, PUBLIC_TEST_IP, TEST_IPS, conn, tcp, udp};
use airlock_e2e::release::{OPERATOR_DEPLOYMENT, SYSTEM_NS};
use airlock_e2e::{RUNC, TCP_LISTENER, TestNamespace, client, run_pod, sandboxes, sleeper, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long kube-router may take to enforce a new sandbox's policy (it is usually in force when
/// the sandbox is Ready).
const ENFORCED_WITHIN: Duration = Duration::from_secs(90);
/// The sandboxes' listener port (their `spec.command` runs [`TCP_LISTENER`] on it).
const PORT: u16 = 8080;

/// Creates a Sandbox (room for Python: 50m, 128Mi) and waits until it is Ready; returns its pod IP.
async fn sandbox_ip(c: &Client, ns: &str, name: &str, mut spec: Value) -> String {
    sandboxes::merge(&mut spec, json!({"resources": {"cpu": "50m", "memory": "128Mi"}}));
    sandboxes::create(c, ns, name, spec).await.unwrap_or_else(|e| panic!("creating Sandbox {ns}/{name}: {e}"));
    let api: Api<Sandbox> = Api::namespaced(c.clone(), ns);
    let s = wait_for(&api, name, READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await.expect("sandbox");
    s.status.and_then(|st| st.pod_ip).unwrap_or_else(|| panic!("Sandbox {ns}/{name} Ready without status.podIP"))
}

/// A runc pod (no NetworkPolicy selects it) running `script` with `args`; returns its IP.
async fn listener_pod(c: &Client, ns: &str, name: &str, labels: Value, script: &str, args: &[&str]) -> String {
    let mut p = sleeper(name, RUNC, labels);
    let mut cmd = vec!["python3".to_string(), "-c".into(), script.into()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    p["spec"]["containers"][0]["command"] = json!(cmd);
    run_pod(c, ns, p).await.status.and_then(|s| s.pod_ip).unwrap_or_else(|| panic!("pod {ns}/{name} running without an IP"))
}

/// `(target, false)` for each target: what a fenced sandbox must not reach.
fn blocked(targets: &[String]) -> Vec<(String, bool)> {
    targets.iter().map(|t| (t.clone(), false)).collect()
}
fn reached(targets: &[String]) -> Vec<(String, bool)> {
    targets.iter().map(|t| (t.clone(), true)).collect()
}

#[tokio::test]
async fn internet_egress_reaches_a_public_address_but_no_cluster_or_private_one_and_nothing_reaches_a_sandbox() {
    let started = std::time::Instant::now();
    let c = client().await;
    let ns = TestNamespace::new(&c, "net-inet").await;
    let n = ns.name.as_str();
    // Listeners on the node: its address (the API server's and kubelet's), its address on the
    // pods' bridge, and a private address outside every cluster CIDR (10/8, as a VPC's hosts).
    let bridge = net::bridge_ip();
    let node_port = net::host_tcp(NODE_IP, 0).await;
    let bridge_port = net::host_tcp(&bridge, 0).await;
    let private_port = net::host_tcp(TEST_IPS[0], 0).await;
    // And a public address (TEST-NET-1, on the node's `lo`): what `Internet` is for must work.
    let public_port = net::host_tcp(PUBLIC_TEST_IP, 0).await;
    // A pod and a Service in front of it; the unfenced control pod; the sandbox, itself a listener.
    let port = PORT.to_string();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "target"},
        "spec": {"selector": {"app": "target"}, "ports": [{"port": 80, "targetPort": PORT}]}
    }))
    .unwrap();
    let svc = Api::<Service>::namespaced(c.clone(), n).create(&PostParams::default(), &svc).await.expect("Service target");
    let svc_ip = svc.spec.and_then(|s| s.cluster_ip).expect("ClusterIP");
    let spec = json!({"network": {"egress": "Internet"}, "command": ["python3", "-c", TCP_LISTENER, port.clone()]});
    let target_args = [port.as_str()];
    let (pod_ip, _, inet_ip) = tokio::join!(
        listener_pod(&c, n, "target", json!({"app": "target"}), TCP_LISTENER, &target_args),
        run_pod(&c, n, sleeper("control", RUNC, json!({"app": "control"}))),
        sandbox_ip(&c, n, "inet", spec),
    );

    let internal = vec![
        tcp(&pod_ip, PORT),
        tcp(&svc_ip, 80),
        tcp(NODE_IP, node_port),
        tcp(&bridge, bridge_port),
        tcp(TEST_IPS[0], private_port),
        // The API server, through its Service IP and on the node.
        conn("10.96.0.1", 443),
        conn(NODE_IP, 6443),
    ];
    let public = [tcp(PUBLIC_TEST_IP, public_port)];
    let cases = [
        Case { label: "control, no policy", pod: "control", container: None, expect: reached(&internal) },
        Case { label: "control, public address", pod: "control", container: None, expect: reached(&public) },
        Case { label: "egress Internet", pod: "inet", container: Some("sandbox"), expect: blocked(&internal) },
        Case { label: "egress Internet, public address", pod: "inet", container: Some("sandbox"), expect: reached(&public) },
        // Ingress: the pod that reaches the unfenced listener pod above (the same listener script)
        // does not reach the sandbox's listener, which answers inside the sandbox.
        Case { label: "ingress from an unfenced pod", pod: "control", container: None, expect: blocked(&[tcp(&inet_ip, PORT)]) },
        Case { label: "sandbox's own listener", pod: "inet", container: Some("sandbox"), expect: reached(&[tcp("127.0.0.1", PORT)]) },
    ];
    let rounds = net::settle(&c, n, &cases, ENFORCED_WITHIN).await;
    eprintln!("policy held {HOLD_ROUNDS} rounds in a row after {rounds} rounds; test took {:?}", started.elapsed());
    ns.cleanup().await;
}

/// The operator's DNS flags e2e/values-local.yaml must set for [`dns_true_reaches_only_the_cluster_dns`]:
/// a DNS namespace a test may create pods in (the default, kube-system, it may not) and a DNS
/// range on e2e/cluster's second test address.
const DNS_NS: &str = "airlock-e2e-dns";
const DNS_LABELS: (&str, &str) = ("k8s-app", "kube-dns");
const DNS_CIDR_IP: &str = TEST_IPS[1];

async fn operator_args(c: &Client) -> Vec<String> {
    let d = Api::<Deployment>::namespaced(c.clone(), SYSTEM_NS).get(OPERATOR_DEPLOYMENT).await.expect("operator Deployment");
    let pod = d.spec.and_then(|s| s.template.spec).expect("pod template");
    pod.containers.into_iter().flat_map(|ct| ct.args.unwrap_or_default()).collect()
}

#[tokio::test]
async fn dns_true_reaches_only_the_cluster_dns() {
    let started = std::time::Instant::now();
    let c = client().await;
    let args = operator_args(&c).await;
    for want in [
        format!("--dns-namespace={DNS_NS}"),
        format!("--dns-pod-selector={}={}", DNS_LABELS.0, DNS_LABELS.1),
        format!("--dns-cidr={DNS_CIDR_IP}/32"),
    ] {
        assert!(
            args.contains(&want),
            "the operator runs without {want}: e2e/values-local.yaml must set operator.dns \
             {{namespace: {DNS_NS}, cidrs: [{DNS_CIDR_IP}/32]}} (podSelector left at its default); its args: {args:?}"
        );
    }
    let ns = TestNamespace::new(&c, "net-dns").await;
    let n = ns.name.as_str();
    let dns_ns = FixedNamespace::new(&c, DNS_NS).await;
    let dns_labels = json!({DNS_LABELS.0: DNS_LABELS.1});
    // The cluster DNS the operator names (pods labelled k8s-app=kube-dns in DNS_NS), listening on
    // UDP and TCP 53 and on another port; pods on port 53 that are not it (the right labels in
    // another namespace; the right namespace without the labels); the `--dns-cidr` address on
    // 53 and on another port; another private address on 53.
    for ip in TEST_IPS {
        net::host_udp(ip, 53).await;
        net::host_tcp(ip, 53).await;
    }
    let other_port = net::host_tcp(DNS_CIDR_IP, 0).await;
    let (dns_ip, impostor_ip, unlabelled_ip, _) = tokio::join!(
        listener_pod(&c, DNS_NS, "dns", dns_labels.clone(), net::TCP_UDP_LISTENER, &["53", "8053"]),
        listener_pod(&c, n, "impostor", dns_labels.clone(), net::TCP_UDP_LISTENER, &["53"]),
        listener_pod(&c, DNS_NS, "unlabelled", json!({"app": "not-dns"}), net::TCP_UDP_LISTENER, &["53"]),
        run_pod(&c, n, sleeper("control", RUNC, json!({"app": "control"}))),
    );
    let (_, _) = tokio::join!(
        sandbox_ip(&c, n, "dns", json!({"network": {"egress": "None", "dns": true}})),
        sandbox_ip(&c, n, "nodns", json!({"network": {"egress": "None"}})),
    );

    let dns = vec![udp(&dns_ip, 53), tcp(&dns_ip, 53), udp(DNS_CIDR_IP, 53), tcp(DNS_CIDR_IP, 53)];
    let not_dns = vec![
        udp(&dns_ip, 8053),
        tcp(&dns_ip, 8053),
        udp(&impostor_ip, 53),
        tcp(&impostor_ip, 53),
        udp(&unlabelled_ip, 53),
        tcp(&unlabelled_ip, 53),
        tcp(DNS_CIDR_IP, other_port),
        udp(TEST_IPS[0], 53),
        tcp(TEST_IPS[0], 53),
    ];
    let mut with_dns = reached(&dns);
    with_dns.extend(blocked(&not_dns));
    let everything: Vec<String> = dns.iter().chain(&not_dns).cloned().collect();
    let cases = [
        Case { label: "control, no policy", pod: "control", container: None, expect: reached(&everything) },
        Case { label: "egress None, dns true", pod: "dns", container: Some("sandbox"), expect: with_dns },
        // dns: true is what opens the DNS: the same sandbox without it reaches none of it.
        Case { label: "egress None, dns false", pod: "nodns", container: Some("sandbox"), expect: blocked(&dns) },
    ];
    let rounds = net::settle(&c, n, &cases, ENFORCED_WITHIN).await;
    eprintln!("policy held {HOLD_ROUNDS} rounds in a row after {rounds} rounds; test took {:?}", started.elapsed());
    ns.cleanup().await;
    dns_ns.cleanup().await;
}

/// Tries to connect to `argv[1]:argv[2]` every 20 ms for 40 s from the moment the container starts
/// (the sandbox's main command), keeping `attempts connected` in /tmp/attempts (replaced whole,
/// never seen half-written); then sleeps.
const CONNECT_LOOP: &str = r#"import os,socket,sys,time
ip,port=sys.argv[1],int(sys.argv[2]); end=time.time()+40; n=ok=0
while time.time()<end:
  n+=1; s=socket.socket(); s.settimeout(0.2)
  try:
    s.connect((ip,port)); ok+=1
  except OSError:
    pass
  s.close(); open('/tmp/attempts.new','w').write('%d %d'%(n,ok)); os.replace('/tmp/attempts.new','/tmp/attempts'); time.sleep(0.02)
time.sleep(86400)
"#;

/// A TCP listener on the node greeting every connection with `hello` and recording its source
/// address.
async fn recording_listener(ip: &str) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>) {
    let l = tokio::net::TcpListener::bind((ip, 0)).await.unwrap_or_else(|e| panic!("listening on {ip}: {e}"));
    let port = l.local_addr().expect("address").port();
    let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = peers.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, from)) = l.accept().await {
            use tokio::io::AsyncWriteExt;
            seen.lock().unwrap().push(from.ip());
            // The probe's greeting (see `net::PROBE`).
            tokio::spawn(async move {
                let _ = sock.write_all(b"hello").await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (port, peers)
}

/// Fail closed from the first instant, with the pod and its own NetworkPolicy written at the same
/// time: sandboxes created together in a fresh namespace (so the burst also races the namespace's
/// default-deny policy), each connecting to a listener of this test from the moment its container
/// starts, never get through; the unfenced control pod does, before and after.
#[tokio::test]
async fn racing_creates_never_reach_a_listener_from_their_first_instant() {
    const N: usize = 6;
    let c = client().await;
    let ns = TestNamespace::new(&c, "net-race").await;
    let n = ns.name.as_str();
    let ip = TEST_IPS[1];
    let (port, peers) = recording_listener(ip).await;
    let target = tcp(ip, port);
    let control = run_pod(&c, n, sleeper("control", RUNC, json!({"app": "control"}))).await;
    let control_ip: std::net::IpAddr = control.status.and_then(|s| s.pod_ip).expect("control pod IP").parse().expect("IP");
    let reach = |label| Case { label, pod: "control", container: None, expect: vec![(target.clone(), true)] };
    net::settle(&c, n, &[reach("control, before")], Duration::from_secs(60)).await;

    let port_s = port.to_string();
    let spec = json!({"network": {"egress": "None"}, "resources": {"cpu": "50m", "memory": "128Mi"},
        "command": ["python3", "-c", CONNECT_LOOP, ip, port_s]});
    let names: Vec<String> = (0..N).map(|i| format!("race-{i}")).collect();
    let creates = names.iter().map(|name| sandboxes::create(&c, n, name, spec.clone()));
    for (name, r) in names.iter().zip(futures::future::join_all(creates).await) {
        r.unwrap_or_else(|e| panic!("creating Sandbox {n}/{name}: {e}"));
    }
    let api: Api<Sandbox> = Api::namespaced(c.clone(), n);
    let mut ips = Vec::new();
    for name in &names {
        let s = wait_for(&api, name, READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await.expect("sandbox");
        ips.push(s.status.and_then(|st| st.pod_ip).expect("podIP"));
    }
    // Let every loop run on for a while past Ready, then read what each saw.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in &names {
        let out = airlock_e2e::exec(&c, n, name, &["cat", "/tmp/attempts"]).await;
        let seen: Vec<u64> = out.stdout.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        assert!(matches!(seen[..], [tried, 0] if tried > 0), "{name} ({ips:?}): attempts/connected = {:?}, stderr {:?}", out.stdout, out.stderr);
    }
    net::settle(&c, n, &[reach("control, after")], Duration::from_secs(60)).await;
    let peers = peers.lock().unwrap().clone();
    assert!(peers.contains(&control_ip), "the control's connections were seen from {control_ip}: {peers:?}");
    let foreign: Vec<_> = peers.iter().filter(|p| **p != control_ip).collect();
    assert!(foreign.is_empty(), "connections from sandboxes {ips:?} reached the listener: {foreign:?}");
    ns.cleanup().await;
}
