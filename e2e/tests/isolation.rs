//! Hostile code inside a Sandbox: what it must not reach, see, change or exhaust.
//!
//! Every Sandbox here is created through the Kubernetes API (the operator turns it into a gVisor
//! pod) and commands run in its `sandbox` container through pods/exec, as an attacker with a shell
//! in the sandbox would run them. Network probes go only to addresses of this cluster: listeners
//! the test started (on the node's test addresses), the node's API server and kubelet (10.200.0.1),
//! the API server's service IP and loopback; each "blocked" has a control, an unfenced pod that
//! reaches the same address in the same probe round (`airlock_e2e::net::settle`).
//!
//! Findings pinned here (the truth on the local gVisor cluster):
//! - the kubelet always injects `KUBERNETES_SERVICE_HOST`/`PORT` (enableServiceLinks=false only
//!   drops the namespace's *other* services), but there is no token and the API server is
//!   unreachable;
//! - `/tmp` in a gVisor sandbox is the sentry's own memory-backed tmpfs (it counts against
//!   memory, not ephemeral storage); the image's writable layer (`/var/tmp`, `/root`, ...) is what
//!   `ephemeralStorage` limits, and exceeding it gets the pod evicted by the kubelet (no ENOSPC).
//!   The Sandbox then goes Failed with reason `Evicted` (the idle agent exits 143 on the
//!   kubelet's SIGTERM, so the pod is not recorded as Succeeded/`Completed`);
//! - under gVisor a memory bomb started by an exec takes the whole sandbox down (the pod is
//!   OOMKilled, the Sandbox goes Failed with reason OOMKilled), it does not just kill the process.
//! - a fork bomb is bounded by the memory limit, not by a pid limit: a gVisor sandbox's
//!   processes are tasks of its sentry, not host processes, and the kubelet here sets no
//!   podPidsLimit; the pod is OOMKilled as for a memory bomb.

use std::time::Duration;

use airlock_crds::{Phase, Sandbox, condition};
use airlock_e2e::net::{self, Case, HOLD_ROUNDS, NODE_IP, TEST_IPS, conn, tcp, udp};
use airlock_e2e::{ExecOutput, RUNC, SANDBOX_IMAGE, TestNamespace, client, exit_code, run_pod, sleeper, wait_for};
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use kube::Client;
use kube::api::{Api, AttachParams, ListParams, PostParams};
use serde_json::{Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// A Sandbox with the sandbox image and modest resources (`spec` merged over the defaults).
fn sandbox(name: &str, spec: Value) -> Sandbox {
    let mut m = json!({
        "apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox", "metadata": {"name": name},
        "spec": {
            "image": SANDBOX_IMAGE, "imagePullPolicy": "Never",
            "resources": {"cpu": "50m", "memory": "256Mi", "ephemeralStorage": "256Mi"},
            "lifetime": {"ttlSeconds": 1800},
        }
    });
    merge(&mut m["spec"], spec);
    serde_json::from_value(m).expect("sandbox literal")
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Creates the Sandbox and waits until it is Ready; returns it (with `status.podIP`).
async fn ready(c: &Client, ns: &str, name: &str, spec: Value) -> Sandbox {
    let api: Api<Sandbox> = Api::namespaced(c.clone(), ns);
    api.create(&PostParams::default(), &sandbox(name, spec))
        .await
        .unwrap_or_else(|e| panic!("creating Sandbox {ns}/{name}: {e}"));
    wait_for(&api, name, READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await.expect("sandbox")
}

/// pods/exec in container `sandbox`; unlike `airlock_e2e::exec` it reports a broken connection
/// (the sandbox dying under the command) as an error instead of panicking.
async fn try_exec(c: &Client, ns: &str, pod: &str, argv: &[&str]) -> Result<ExecOutput, String> {
    use tokio::io::AsyncReadExt;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let ap = AttachParams::default().container("sandbox").stdout(true).stderr(true).stdin(false);
    let mut p = pods.exec(pod, argv.iter().copied(), &ap).await.map_err(|e| format!("exec {argv:?}: {e}"))?;
    let mut out = p.stdout().ok_or("no stdout")?;
    let mut err = p.stderr().ok_or("no stderr")?;
    let status = p.take_status().ok_or("no status channel")?;
    let (mut so, mut se) = (Vec::new(), Vec::new());
    let (a, b) = tokio::join!(out.read_to_end(&mut so), err.read_to_end(&mut se));
    let status = status.await;
    let _ = p.join().await;
    let o = ExecOutput {
        stdout: String::from_utf8_lossy(&so).into(),
        stderr: String::from_utf8_lossy(&se).into(),
        exit_code: exit_code(status.as_ref()),
    };
    if let (Err(e), _) | (_, Err(e)) = (&a, &b) {
        return Err(format!("reading output of {argv:?}: {e}; got so far {o:?}"));
    }
    Ok(o)
}

async fn run(c: &Client, ns: &str, pod: &str, argv: &[&str]) -> ExecOutput {
    try_exec(c, ns, pod, argv).await.unwrap_or_else(|e| panic!("{ns}/{pod}: {e}"))
}

async fn node_ok(c: &Client) {
    for n in Api::<Node>::all(c.clone()).list(&ListParams::default()).await.expect("nodes").items {
        let conds = n.status.and_then(|s| s.conditions).unwrap_or_default();
        let get = |t: &str| conds.iter().find(|c| c.type_ == t).map(|c| c.status.clone());
        assert_eq!(get("Ready").as_deref(), Some("True"), "node {:?} Ready", n.metadata.name);
        for p in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_ne!(get(p).as_deref(), Some("True"), "node {:?} {p}", n.metadata.name);
        }
    }
}

fn rand_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    format!("{:016x}", h.finish())
}

/// The node's API server and kubelet, and the API server's Service IP: not listeners of the test,
/// so probed for an accepted connection only (`conn:`), with the same control as the rest.
fn node_and_api_server() -> Vec<String> {
    vec![conn(NODE_IP, 6443), conn(NODE_IP, 10250), conn("10.96.0.1", 443)]
}

#[tokio::test]
async fn egress_none_reaches_nothing_and_allow_list_exactly_one_port() {
    let started = std::time::Instant::now();
    let c = client().await;
    let ns = TestNamespace::new(&c, "iso-net").await;
    let n = ns.name.as_str();
    // Listeners this test starts on the node, on e2e/cluster's machine-local test addresses
    // outside every cluster CIDR (an AllowList entry inside the cluster's ranges is refused by
    // the operator's deny-list). The rule allows TCP port p1 on 10.201.0.0/31, which holds ip1
    // and not ip2 (the next address); ip1 also listens on TCP p2 and on UDP p1, ip2 on TCP p1.
    let [ip1, ip2] = TEST_IPS;
    let p1 = net::host_tcp(ip1, 0).await;
    let p2 = net::host_tcp(ip1, 0).await;
    net::host_tcp(ip2, p1).await;
    net::host_udp(ip1, p1).await;
    let allowed = tcp(ip1, p1);
    let beside = [tcp(ip1, p2), udp(ip1, p1), tcp(ip2, p1)];
    let internal = node_and_api_server();

    // Control: from an unfenced runc pod every listener answers and the node/API server accept
    // connections (so "blocked" below means the policy, not a listener that is not up).
    run_pod(&c, n, sleeper("control", RUNC, json!({"app": "control"}))).await;
    let mut all: Vec<String> = vec![allowed.clone()];
    all.extend(beside.iter().cloned());
    all.extend(internal.iter().cloned());
    let control = || Case { label: "control, no policy", pod: "control", container: None, expect: all.iter().map(|t| (t.clone(), true)).collect() };
    net::settle(&c, n, &[control()], Duration::from_secs(60)).await;

    let spec_allow = json!({"network": {"egress": "AllowList", "allow": [{"cidr": "10.201.0.0/31", "ports": [{"port": p1}]}]}});
    let (_closed, _allow) = tokio::join!(ready(&c, n, "closed", json!({"network": {"egress": "None"}})), ready(&c, n, "allow", spec_allow));

    // egress None: nothing, right after Ready (the control answered just before).
    let r = net::probe(&c, n, "closed", Some("sandbox"), &all).await;
    for (t, v) in &r {
        assert_ne!(v, "OPEN", "egress None sandbox reached {t} right after Ready: {r:?}");
    }
    // Then, round after round, with the control in each round: egress None reaches nothing;
    // AllowList reaches its address and port and nothing else: not another port or UDP on the same
    // address, not the same port on the next address outside its CIDR, not the node or the API
    // server.
    let mut allow_expect = vec![(allowed.clone(), true)];
    allow_expect.extend(beside.iter().chain(&internal).map(|t| (t.clone(), false)));
    let cases = [
        control(),
        Case { label: "egress None", pod: "closed", container: Some("sandbox"), expect: all.iter().map(|t| (t.clone(), false)).collect() },
        Case { label: "AllowList 10.201.0.0/31 TCP p1", pod: "allow", container: Some("sandbox"), expect: allow_expect },
    ];
    let rounds = net::settle(&c, n, &cases, Duration::from_secs(90)).await;
    eprintln!("policies held {HOLD_ROUNDS} rounds in a row after {rounds} rounds; test took {:?}", started.elapsed());
    ns.cleanup().await;
}

#[tokio::test]
async fn no_credentials_and_no_api_server() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "iso-cred").await;
    let n = ns.name.as_str();
    // A service in the namespace: service links would show it as LEAKY_SERVICE_HOST.
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "leaky"}, "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(c.clone(), n).create(&PostParams::default(), &svc).await.expect("service");
    let sb = ready(&c, n, "creds", json!({})).await;

    // (python3-minimal: no json module; plain lines.)
    let code = "import os\nfor p in ['/var/run/secrets/kubernetes.io','/var/run/secrets','/run/secrets/kubernetes.io']:\n  print('exists', p, os.path.exists(p))\nfor k,v in os.environ.items():\n  print('env', k, v)";
    let out = run(&c, n, "creds", &["python3", "-c", code]).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    for l in out.stdout.lines().filter(|l| l.starts_with("exists ")) {
        assert!(l.ends_with(" False"), "in the sandbox: {l}");
    }
    assert_eq!(out.stdout.lines().filter(|l| l.starts_with("exists ")).count(), 3, "{out:?}");
    let mounts = run(&c, n, "creds", &["cat", "/proc/mounts"]).await.stdout;
    assert!(!mounts.contains("serviceaccount") && !mounts.contains("secrets"), "token mount: {mounts}");
    let env: std::collections::BTreeMap<String, String> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("env "))
        .map(|l| l.split_once(' ').map(|(k, v)| (k.to_string(), v.to_string())).unwrap_or((l.to_string(), String::new())))
        .collect();
    assert!(env.contains_key("PATH"), "env parsed: {env:?}");
    assert!(env.keys().all(|k| !k.starts_with("LEAKY_")), "service links are off: {env:?}");
    // No Kubernetes token. The agent's token is in the container's environment, which
    // Kubernetes gives every `pods/exec` process (the agent's own children do not get it), and
    // it opens nothing from here: the agent closes connections from its own pod unanswered. The
    // control: the same token opens the agent from the node.
    assert!(env.keys().all(|k| k == "AIRLOCK_AGENT_TOKEN" || !k.to_ascii_lowercase().contains("token")), "no token in env: {env:?}");
    if let Some(token) = env.get("AIRLOCK_AGENT_TOKEN") {
        let ip = sb.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod IP");
        let hello = "import os,socket,struct,sys\ntok=os.environ['AIRLOCK_AGENT_TOKEN'].encode()\n\
            f=bytes([1])+struct.pack('>I',len(tok))+tok+bytes([2])+struct.pack('>I',4)+struct.pack('>I',1)\n\
            hello=bytes([0x10])+struct.pack('>I',len(f))+f\n\
            for h in sys.argv[1:]:\n  s=socket.socket(); s.settimeout(3)\n  try:\n    s.connect((h,7070)); s.sendall(hello); d=s.recv(16)\n    print(h,'ANSWERED' if d else 'CLOSED')\n  except OSError as e: print(h,'CLOSED',e)\n";
        let from_inside = run(&c, n, "creds", &["python3", "-c", hello, "127.0.0.1", &ip]).await;
        assert_eq!(from_inside.exit_code, 0, "{from_inside:?}");
        assert_eq!(from_inside.stdout.lines().filter(|l| l.contains(" CLOSED")).count(), 2, "the agent answered its own sandbox: {from_inside:?}");
        let addr: std::net::SocketAddr = format!("{ip}:7070").parse().unwrap();
        let t = token.clone();
        tokio::task::spawn_blocking(move || airlock_agent_protocol::Client::connect(addr, t.as_bytes()).map(drop))
            .await
            .unwrap()
            .expect("control: the same token opens the agent from the node");
    }
    // The truth: the kubelet injects the API server's address whatever enableServiceLinks says.
    let host = env.get("KUBERNETES_SERVICE_HOST").map(String::as_str);
    let port = env.get("KUBERNETES_SERVICE_PORT").map(String::as_str);
    eprintln!("KUBERNETES_SERVICE_HOST={host:?} PORT={port:?} (kubelet-injected)");
    // Whatever it says, nothing answers there.
    let mut targets = node_and_api_server();
    if let (Some(h), Some(p)) = (host, port) {
        let t = conn(h, p.parse().unwrap_or_else(|e| panic!("KUBERNETES_SERVICE_PORT={p}: {e}")));
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    // ...while an unfenced pod in the same namespace connects to each, in the same rounds.
    run_pod(&c, n, sleeper("control", RUNC, json!({"app": "control"}))).await;
    let cases = [
        Case { label: "control, no policy", pod: "control", container: None, expect: targets.iter().map(|t| (t.clone(), true)).collect() },
        Case { label: "sandbox", pod: "creds", container: Some("sandbox"), expect: targets.iter().map(|t| (t.clone(), false)).collect() },
    ];
    net::settle(&c, n, &cases, Duration::from_secs(90)).await;
    ns.cleanup().await;
}

/// Waits for the Sandbox to leave Ready and reports phase and Ready condition (reason, message).
async fn wait_not_ready(c: &Client, ns: &str, name: &str, timeout: Duration) -> (Option<Phase>, String, String) {
    let api: Api<Sandbox> = Api::namespaced(c.clone(), ns);
    let s = wait_for(&api, name, timeout, "Ready=False with phase Failed", |s| {
        s.is_some_and(|s| s.status.as_ref().and_then(|st| st.phase) == Some(Phase::Failed) && !s.is_ready())
    })
    .await
    .expect("sandbox");
    let r = s.condition(condition::READY).expect("Ready condition");
    (s.status.as_ref().and_then(|st| st.phase), r.reason.clone(), r.message.clone())
}

#[tokio::test]
async fn memory_bomb_oom_kills_the_sandbox_and_the_status_says_so() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "iso-mem").await;
    let n = ns.name.as_str();
    ready(&c, n, "hog", json!({})).await;
    // Up to 1 GiB in 16 MiB touched chunks against a 256Mi limit.
    let bomb = "import sys\nb=[]\nfor i in range(64):\n  b.append(bytearray(16<<20))\n  print(len(b)*16,'MiB',flush=True)\nprint('survived 1GiB',flush=True)";
    let out = try_exec(&c, n, "hog", &["python3", "-c", bomb]).await;
    eprintln!("memory bomb exec: {out:?}");
    if let Ok(o) = &out {
        assert!(!o.stdout.contains("survived"), "1 GiB allocated under a 256Mi limit: {o:?}");
        assert_ne!(o.exit_code, 0, "{o:?}");
    }
    // Under gVisor the sandbox's cgroup OOM takes the whole sandbox: the operator reports it.
    let (phase, reason, message) = wait_not_ready(&c, n, "hog", Duration::from_secs(90)).await;
    eprintln!("after the bomb: {phase:?} {reason}: {message}");
    assert_eq!(reason, "OOMKilled", "{message}");
    assert!(message.contains("OOMKilled"), "{message}");
    let pod = Api::<Pod>::namespaced(c.clone(), n).get("hog").await.expect("pod kept for inspection");
    let term = pod.status.and_then(|s| s.container_statuses).unwrap_or_default().into_iter().find(|s| s.name == "sandbox");
    let t = term.and_then(|s| s.state).and_then(|s| s.terminated).expect("sandbox container terminated");
    assert_eq!((t.reason.as_deref(), t.exit_code), (Some("OOMKilled"), 137));
    node_ok(&c).await;
    ns.cleanup().await;
}

/// Forks up to FORK_BOMB_MAX children, each sleeping (with its stdout and stderr closed, so the
/// exec ends with the parent), printing the count every 100; at the first refused fork it prints
/// `refused N ERRNO` and exits 0.
const FORK_BOMB_MAX: usize = 20000;

#[tokio::test]
async fn fork_bomb_is_bounded_by_the_sandbox_limits_and_the_node_stays_healthy() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "iso-fork").await;
    let n = ns.name.as_str();
    let (_a, _b) = tokio::join!(ready(&c, n, "forker", json!({})), ready(&c, n, "witness", json!({})));
    let bomb = format!(
        "import os,time\nfor i in range({FORK_BOMB_MAX}):\n  try:\n    p=os.fork()\n  except OSError as e:\n    print('refused',i,e.errno,flush=True);os._exit(0)\n  if p==0:\n    os.close(1);os.close(2);time.sleep(300);os._exit(0)\n  if i%100==0: print('forked',i,flush=True)\nprint('forked all',flush=True)"
    );
    let out = try_exec(&c, n, "forker", &["python3", "-c", &bomb]).await;
    let shown = match &out {
        Ok(o) => format!("exit {}, stderr {:?}, last lines {:?}", o.exit_code, o.stderr, o.stdout.lines().rev().take(2).collect::<Vec<_>>()),
        Err(e) => e.clone(),
    };
    eprintln!("fork bomb exec: {shown}");
    // What bounds it. No pid limit applies to a gVisor sandbox's processes (they are tasks of the
    // sentry, not host processes, and this cluster's kubelet sets no podPidsLimit): its memory
    // limit (256Mi) does, and the pod is OOMKilled. A pid limit inside the sandbox would show as
    // forks refused with EAGAIN, the sandbox still serving. Anything else fails: every fork
    // granted, a fork refused for another reason, the sandbox ended for another reason.
    let refused = out.as_ref().ok().and_then(|o| o.stdout.lines().find_map(|l| l.strip_prefix("refused ")).map(str::to_string));
    if let Some(r) = refused {
        let (count, errno) = r.split_once(' ').expect("refused N ERRNO");
        assert_eq!(errno, "11", "fork refused with errno {errno}, want EAGAIN (a pid limit)");
        eprintln!("forks refused with EAGAIN after {count} children");
        let again = run(&c, n, "forker", &["python3", "-c", "print(6*7)"]).await;
        assert_eq!(again.stdout, "42\n", "the forker sandbox still serves after its pid limit: {again:?}");
    } else {
        assert!(
            !out.as_ref().is_ok_and(|o| o.stdout.contains("forked all")),
            "{FORK_BOMB_MAX} forks all granted: nothing bounds a fork bomb in a sandbox ({shown})"
        );
        let (phase, reason, message) = wait_not_ready(&c, n, "forker", Duration::from_secs(90)).await;
        eprintln!("fork bomb ended the sandbox: {phase:?} {reason}: {message}");
        assert_eq!(reason, "OOMKilled", "the sandbox's memory limit ends the fork bomb: {message}");
        let pod = Api::<Pod>::namespaced(c.clone(), n).get("forker").await.expect("pod kept for inspection");
        let term = pod.status.and_then(|s| s.container_statuses).unwrap_or_default().into_iter().find(|s| s.name == "sandbox");
        let t = term.and_then(|s| s.state).and_then(|s| s.terminated).expect("sandbox container terminated");
        assert_eq!((t.reason.as_deref(), t.exit_code), (Some("OOMKilled"), 137));
    }
    // The node and the neighbour are fine: node Ready without pressure, the witness still Ready
    // with its container never restarted, and it runs a command.
    node_ok(&c).await;
    let api: Api<Sandbox> = Api::namespaced(c.clone(), n);
    let w = api.get("witness").await.expect("witness");
    assert!(w.is_ready(), "witness no longer Ready: {:?}", w.status);
    let wpod = Api::<Pod>::namespaced(c.clone(), n).get("witness").await.expect("witness pod");
    let restarts: i32 = wpod.status.and_then(|s| s.container_statuses).unwrap_or_default().iter().map(|s| s.restart_count).sum();
    assert_eq!(restarts, 0, "the witness's containers restarted");
    let w = run(&c, n, "witness", &["python3", "-c", "print(6*7)"]).await;
    assert_eq!((w.stdout.as_str(), w.exit_code), ("42\n", 0), "{w:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn disk_fill_hits_the_ephemeral_storage_limit() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "iso-disk").await;
    let n = ns.name.as_str();
    ready(&c, n, "filler", json!({"resources": {"ephemeralStorage": "64Mi"}})).await;
    // 200 MiB into the writable layer (/var/tmp; /tmp is gVisor's in-memory tmpfs), 64Mi allowed.
    let fill = "import os\nb=b'x'*(1<<20)\nn=0\ntry:\n  with open('/var/tmp/fill','wb') as f:\n    for i in range(200):\n      f.write(b); f.flush(); n+=1\n    os.fsync(f.fileno())\n  print('wrote',n,flush=True)\nexcept OSError as e:\n  print('stopped',n,e.errno,flush=True)";
    let out = try_exec(&c, n, "filler", &["python3", "-c", fill]).await;
    eprintln!("disk fill exec: {out:?}");
    let stopped_early = out.as_ref().is_ok_and(|o| o.stdout.starts_with("stopped"));
    if stopped_early {
        // ENOSPC/EDQUOT inside: the sandbox must still work.
        let o = out.unwrap();
        assert!(o.stdout.contains(" 28") || o.stdout.contains(" 122"), "ENOSPC or EDQUOT: {o:?}");
        let w = run(&c, n, "filler", &["python3", "-c", "print(1)"]).await;
        assert_eq!(w.exit_code, 0);
    } else {
        // The truth on this cluster: the write succeeds and the kubelet evicts the pod.
        let events: Api<Event> = Api::namespaced(c.clone(), n);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let ev = loop {
            let list = events.list(&ListParams::default().fields("involvedObject.kind=Pod,involvedObject.name=filler")).await.unwrap();
            if let Some(e) = list.items.into_iter().find(|e| e.reason.as_deref() == Some("Evicted")) {
                break e;
            }
            assert!(tokio::time::Instant::now() < deadline, "200 MiB over a 64Mi limit and no eviction");
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        let msg = ev.message.unwrap_or_default();
        assert!(msg.contains("ephemeral"), "eviction for ephemeral storage: {msg}");
        let (phase, reason, message) = wait_not_ready(&c, n, "filler", Duration::from_secs(90)).await;
        eprintln!("Sandbox after eviction: {phase:?} reason={reason} message={message}");
        assert_eq!(phase, Some(Phase::Failed));
        assert_eq!(reason, "Evicted", "the Sandbox says why: {message}");
    }
    node_ok(&c).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn escape_attempts_fail() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "iso-escape").await;
    let n = ns.name.as_str();
    ready(&c, n, "jail", json!({})).await;
    let host_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    // mount(2): through util-linux and as a raw syscall (perl), then check nothing got mounted.
    let m = run(&c, n, "jail", &["sh", "-c", "mkdir -p /tmp/m; mount -t tmpfs none /mnt; echo mnt=$?; mount -t tmpfs none /tmp/m; echo tmp=$?"]).await;
    assert!(m.stdout.contains("mnt=") && !m.stdout.contains("mnt=0\n") && !m.stdout.contains("tmp=0\n"), "{m:?}");
    // Raw syscalls (perl's syscall(): the image's python has no ctypes): mount, init_module,
    // finit_module, sethostname must all be refused with EPERM.
    let perl = r#"my ($s,$d,$f,$e,$h)=('none','/mnt','tmpfs','','evil'); my $img="\0" x 64;
my $r=syscall(165,$s,$d,$f,0,0); print "mount=$r/".($!+0)."\n";
$r=syscall(175,$img,64,$e); print "init_module=$r/".($!+0)."\n";
open(my $fh,'<','/etc/hostname'); $r=syscall(313,fileno($fh),$e,0); print "finit_module=$r/".($!+0)."\n";
$r=syscall(170,$h,4); print "sethostname=$r/".($!+0)."\n";
"#;
    let p = run(&c, n, "jail", &["perl", "-e", perl]).await;
    eprintln!("raw syscalls: {p:?}");
    assert_eq!(p.exit_code, 0, "{p:?}");
    for call in ["mount", "init_module", "finit_module", "sethostname"] {
        assert!(p.stdout.lines().any(|l| l == format!("{call}=-1/1")), "{call} not refused with EPERM: {p:?}");
    }
    let mounts = run(&c, n, "jail", &["cat", "/proc/mounts"]).await.stdout;
    assert!(!mounts.lines().any(|l| l.contains(" /mnt ") || l.contains(" /tmp/m ")), "{mounts}");

    // Kernel module helper path.
    let mp = run(&c, n, "jail", &["sh", "-c", "echo /tmp/evil > /proc/sys/kernel/modprobe"]).await;
    assert_ne!(mp.exit_code, 0, "{mp:?}");
    // No capabilities at all (so no CAP_SYS_MODULE, CAP_SYS_ADMIN, CAP_NET_RAW).
    let caps = run(&c, n, "jail", &["grep", "CapEff", "/proc/self/status"]).await;
    assert_eq!(caps.stdout.split_whitespace().nth(1), Some("0000000000000000"), "{caps:?}");

    // Raw sockets.
    let raw = run(&c, n, "jail", &["python3", "-c", "import socket\ntry:\n  socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP); print('RAW OK')\nexcept OSError as e: print('refused',e.errno)"]).await;
    eprintln!("raw socket: {raw:?}");
    let errno: i32 = raw.stdout.trim().strip_prefix("refused ").and_then(|e| e.parse().ok()).unwrap_or_else(|| panic!("raw socket opened: {raw:?}"));
    assert!([1, 13, 97].contains(&errno), "EPERM/EACCES/EAFNOSUPPORT, got {errno}");

    // hostname.
    let h = run(&c, n, "jail", &["hostname", "evil"]).await;
    assert_ne!(h.exit_code, 0, "{h:?}");
    let inside = run(&c, n, "jail", &["cat", "/proc/sys/kernel/hostname"]).await;
    assert_ne!(inside.stdout.trim(), "evil");
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(), host_hostname, "node hostname unchanged");

    // Host paths: a file created at / in the sandbox is not on the node's /.
    let marker = format!("host-marker-{}", rand_hex());
    let t = run(&c, n, "jail", &["sh", "-c", &format!("touch /{marker} /proc/1/root/{marker}-p 2>&1; echo rc=$?")]).await;
    eprintln!("marker inside: {t:?}");
    for p in [format!("/{marker}"), format!("/{marker}-p")] {
        assert!(!std::path::Path::new(&p).exists(), "{p} appeared on the host");
    }
    node_ok(&c).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn sandboxes_cannot_see_each_other() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "iso-peer").await;
    let n = ns.name.as_str();
    let (_a, _b) = tokio::join!(ready(&c, n, "alpha", json!({})), ready(&c, n, "beta", json!({})));
    let secret = rand_hex();
    let w = run(&c, n, "alpha", &["sh", "-c", &format!("echo {secret} > /tmp/secret && echo {secret} > /var/tmp/secret && cat /tmp/secret")]).await;
    assert_eq!(w.stdout.trim(), secret, "{w:?}");
    // A long-running process in alpha with a recognizable command line.
    let marker = format!("marker-{secret}");
    let (c2, n2, m2) = (c.clone(), n.to_string(), marker.clone());
    let bg = tokio::spawn(async move {
        let _ = try_exec(&c2, &n2, "alpha", &["python3", "-c", "import time; time.sleep(600)", &m2]).await;
    });
    let scan = format!(
        "import os\nn=0\nfor p in os.listdir('/proc'):\n  if p.isdigit():\n    try: n += b'{marker}' in open('/proc/'+p+'/cmdline','rb').read()\n    except OSError: pass\nprint(n, len([p for p in os.listdir('/proc') if p.isdigit()]))"
    );
    // Control: alpha sees its own process.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let o = run(&c, n, "alpha", &["python3", "-c", &scan]).await;
        // The scanning python's own cmdline holds the marker too (in the script), so: >= 2.
        let seen: usize = o.stdout.split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(0);
        if seen >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "alpha never saw its own marker process: {o:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // beta: neither the files nor the process (only its own scanner matches).
    let o = run(&c, n, "beta", &["python3", "-c", &scan]).await;
    let mut it = o.stdout.split_whitespace();
    let seen: usize = it.next().and_then(|x| x.parse().ok()).expect("count");
    let pids: usize = it.next().and_then(|x| x.parse().ok()).expect("pids");
    eprintln!("beta: {seen} marker processes (its scanner), {pids} processes in /proc");
    assert_eq!(seen, 1, "beta sees alpha's process: {o:?}");
    let f = run(&c, n, "beta", &["python3", "-c", "import os;print([os.path.exists(p) for p in ['/tmp/secret','/var/tmp/secret']])"]).await;
    assert_eq!(f.stdout.trim(), "[False, False]", "{f:?}");
    let g = run(&c, n, "beta", &["sh", "-c", &format!("grep -rls {secret} /tmp /var/tmp /.airlock; echo rc=$?")]).await;
    let hits: Vec<&str> = g.stdout.lines().filter(|l| !l.starts_with("rc=")).collect();
    assert!(hits.is_empty(), "beta found alpha's secret: {g:?}");
    bg.abort();
    ns.cleanup().await;
}
