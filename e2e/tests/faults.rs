//! Faults of the platform under the installed Airlock (Helm release `airlock` in `airlock-system`),
//! checked against "nothing lost, nothing orphaned":
//!
//! - two operator replicas, the leader SIGKILLed (its process found on this node by the pod name
//!   in its environment): what is guaranteed is that a new process takes the Lease: the holder
//!   becomes another identity (each process has its own random suffix), leaseTransitions goes
//!   up, and the killed process's identity never holds it again. Which replica wins is not
//!   (normally the standby; the killed pod's restarted container is a new process and may win
//!   too). Sandboxes created just before and just after the kill all get exactly one pod and
//!   become Ready; one replica again at the end, pass or fail;
//! - kube-apiserver restarted (`e2e/cluster restart kube-apiserver`) while commands run through
//!   the in-cluster gateway and Sandboxes are being created: the commands (on the direct path to
//!   the agent, which the API server is not part of) run on and keep streaming, creations answer
//!   OK or a clear status, neither the operator nor the gateway restarts, and afterwards new
//!   Sandboxes become Ready and new commands run through the same gateway connection.
//!
//! - three gateway replicas: a background process started through one is listed through another
//!   and read, from offset 0 to its exit, through the third; concurrent execs spread over the
//!   three all succeed. One replica again at the end, pass or fail.
//!
//! The burst of 200 with the operator killed is `tests/resilience.rs`. Every test here holds the
//! host-wide cluster lock (`airlock_e2e::release::ClusterLock`) while it disturbs the cluster, and
//! they run one at a time. Measured figures are printed (`--nocapture`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airlock_crds::Sandbox;
use airlock_e2e::release::{self, ClusterLock, GATEWAY_SELECTOR, OPERATOR_SELECTOR, restarts};
use airlock_e2e::sandboxes::{self, count, ready_sandbox, started};
use airlock_e2e::{SANDBOX_IMAGE, TestNamespace, client, wait_for};
use airlock_api::client::AirlockClient;
use airlock_api::proto::v1 as pb;
use airlock_api::tonic::{Code, Request};
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::json;

/// The tests of this file run one at a time.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const READY: Duration = Duration::from_secs(180);

async fn wait_ready(c: &Client, ns: &str, names: &[String]) {
    let api: Api<Sandbox> = Api::namespaced(c.clone(), ns);
    for name in names {
        wait_for(&api, name, READY, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Two operator replicas, the leader killed.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_a_new_process_takes_the_lease_and_the_dead_one_never_again() {
    let _lock = LOCK.lock().await;
    let c = client().await;
    let _cluster = ClusterLock::acquire("leader kill").await;
    release::operator_ready(&c, Duration::from_secs(120)).await;
    let ns = TestNamespace::new(&c, "flt-leader").await;
    // The body runs as a task so that a failure still restores one replica below.
    let body = tokio::spawn(leader_kill(c.clone(), ns.name.clone())).await;

    release::scale_operator(&c, 1).await;
    let op = release::operator_ready(&c, Duration::from_secs(180)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // The Lease identity is the pod name plus a per-process suffix.
    while !release::lease_holder(&c).await.0.is_some_and(|h| h.starts_with(&format!("{}_", op.name_any()))) {
        assert!(tokio::time::Instant::now() < deadline, "after scaling back to 1, {} never held the Lease: {:?}", op.name_any(), release::lease_holder(&c).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("back to one operator replica: {} holds the Lease", op.name_any());
    ns.cleanup().await;
    if let Err(e) = body {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn leader_kill(c: Client, n: String) {
    release::scale_operator(&c, 2).await;
    let pods = release::ready_pods(&c, OPERATOR_SELECTOR, 2, Duration::from_secs(180)).await;
    let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // The identity in the Lease is the pod name and a per-process suffix.
    let pod_of = |identity: &str| names.iter().filter(|p| identity.starts_with(p.as_str())).max_by_key(|p| p.len()).cloned();
    let (identity, leader, transitions) = loop {
        match release::lease_holder(&c).await {
            (Some(h), t) if pod_of(&h).is_some() => break (h.clone(), pod_of(&h).unwrap(), t),
            other => assert!(tokio::time::Instant::now() < deadline, "no replica of {names:?} holds the Lease: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let standby = names.iter().find(|p| **p != leader).unwrap().clone();
    let leader_restarts = restarts(pods.iter().find(|p| p.name_any() == leader).unwrap());
    let pid = release::operator_pid_of(&leader);
    eprintln!("two replicas Ready: leader {leader} (identity {identity}, pid {pid}), standby {standby}, {transitions} Lease transitions so far");

    // Just before the kill: the leader may or may not have handled these.
    let before: Vec<String> = (0..3).map(|i| format!("before-{i}")).collect();
    for s in &before {
        sandboxes::create(&c, &n, s, json!({})).await.unwrap_or_else(|e| panic!("creating {s}: {e}"));
    }
    let killed = Instant::now();
    release::sigkill(pid);
    // Every change of the Lease from the kill to the end of the test, in order.
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (c, watching) = (c.clone(), watching.clone());
        async move {
            let mut seen: Vec<(Option<String>, i32)> = Vec::new();
            while watching.load(Ordering::Relaxed) {
                let now = release::lease_holder(&c).await;
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        }
    });
    let after: Vec<String> = (0..3).map(|i| format!("after-{i}")).collect();
    for s in &after {
        sandboxes::create(&c, &n, s, json!({})).await.unwrap_or_else(|e| panic!("creating {s}: {e}"));
    }

    // Work continues: every Sandbox of before and after becomes Ready (watched from now on).
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    let (c2, n2, all2) = (c.clone(), n.clone(), all.clone());
    let ready = tokio::spawn(async move {
        // The first Sandbox created after the kill gets a status from whichever replica leads now.
        let api: Api<Sandbox> = Api::namespaced(c2.clone(), &n2);
        wait_for(&api, "after-0", READY, "a status phase", |s| s.and_then(|s| s.status.as_ref()).and_then(|st| st.phase).is_some()).await;
        let resumed = killed.elapsed();
        wait_ready(&c2, &n2, &all2).await;
        (resumed, killed.elapsed())
    });

    // Findings are collected so the whole picture is printed, then the test fails on any.
    let mut findings = Vec::new();

    // A new leader term: once the dead leader's Lease has expired (one lease duration, 30 s,
    // without renewal) a new process takes it: another identity, leaseTransitions up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut holders: Vec<(Option<String>, i32)> = Vec::new();
    let new_holder = loop {
        let (h, t) = release::lease_holder(&c).await;
        if holders.last() != Some(&(h.clone(), t)) {
            eprintln!("  {:>6.1}s after the kill: Lease holder {h:?}, transitions {t}", killed.elapsed().as_secs_f64());
            holders.push((h.clone(), t));
        }
        if let Some(h) = h.as_ref().filter(|h| **h != identity) {
            let who = match pod_of(h) {
                Some(p) if p == standby => "the standby".to_string(),
                Some(p) => format!("the killed replica's pod {p}, restarted (a new process),"),
                None => "an unknown replica".to_string(),
            };
            eprintln!("takeover: {who} holds the Lease as {h}, {:.1}s after the leader was killed (transitions {transitions} -> {t})", killed.elapsed().as_secs_f64());
            if t <= transitions {
                findings.push(format!("the Lease passed from {identity} to {h} but leaseTransitions did not go up ({transitions} -> {t})"));
            }
            if pod_of(h).is_none() {
                findings.push(format!("the Lease is held by {h}, which is none of the replicas {names:?}"));
            }
            break Some(h.clone());
        }
        if t > transitions && !findings.iter().any(|f: &String| f.starts_with("leaseTransitions went up")) {
            findings.push(format!("leaseTransitions went up ({transitions} -> {t}) while the holder is still the killed process's identity {identity}: holders seen {holders:?}"));
        }
        if tokio::time::Instant::now() >= deadline {
            findings.push(format!(
                "no new process took the Lease within 60 s of SIGKILL to the leader {leader} (identity {identity}); Lease holders seen (holder, transitions): {holders:?}"
            ));
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // ... each with exactly one pod.
    let (resumed, took) = ready.await.expect("Sandboxes Ready");
    eprintln!(
        "reconciling again {:.1}s after the kill (first status of a Sandbox created after it); all {} Sandboxes (created just before and just after the kill) Ready {:.1}s after the kill",
        resumed.as_secs_f64(),
        all.len(),
        took.as_secs_f64()
    );
    let (sbx, pods) = sandboxes::converged(&c, &n, &[], false, Duration::from_secs(60)).await;
    assert_eq!(sbx.len(), all.len(), "Sandboxes: {:?}", sbx.iter().map(|s| s.name_any()).collect::<Vec<_>>());
    assert_eq!(pods.len(), all.len(), "pods: {:?}", pods.iter().map(|p| p.name_any()).collect::<Vec<_>>());

    // The killed replica is back (restarted by the kubelet), and one of the two leads.
    let pods = release::ready_pods(&c, OPERATOR_SELECTOR, 2, Duration::from_secs(120)).await;
    let back = pods.iter().find(|p| p.name_any() == leader).expect("the killed replica's pod");
    assert!(restarts(back) > leader_restarts, "the killed operator container was not restarted");
    let (holder, _) = release::lease_holder(&c).await;
    assert!(holder.as_deref().is_some_and(|h| pod_of(h).is_some()), "Lease holder {holder:?} is none of {names:?}");

    // And a Sandbox created now is handled.
    sandboxes::create(&c, &n, "later", json!({})).await.expect("creating later");
    wait_ready(&c, &n, &["later".to_string()]).await;
    sandboxes::converged(&c, &n, &[], false, Duration::from_secs(60)).await;
    // From the first new holder on, the killed process's identity never held the Lease again,
    // and leaseTransitions never went back.
    watching.store(false, Ordering::Relaxed);
    let seen = watcher.await.expect("Lease watcher");
    eprintln!("Lease from the kill to the end (holder, transitions): {seen:?}");
    findings.extend(takeover_problems(&seen, &identity, transitions));
    eprintln!("new holder after the kill: {new_holder:?}");
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}

/// What is wrong with the Lease's history after SIGKILL to the process holding it as `identity`
/// with `transitions` so far (`seen`: every change of (holder, leaseTransitions), in order): a
/// new holder must come, leaseTransitions above `transitions` from then on, and `identity` must
/// never hold it again.
fn takeover_problems(seen: &[(Option<String>, i32)], identity: &str, transitions: i32) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(i) = seen.iter().position(|(h, _)| h.as_deref().is_some_and(|h| h != identity)) else {
        return vec![format!("no holder other than the killed {identity} after the kill: {seen:?}")];
    };
    if let Some(again) = seen[i..].iter().find(|(h, _)| h.as_deref() == Some(identity)) {
        problems.push(format!("the killed process's identity {identity} held the Lease again after {:?} took it: {again:?}; Lease seen {seen:?}", seen[i].0));
    }
    if seen[i..].iter().any(|(_, t)| *t <= transitions) {
        problems.push(format!("leaseTransitions at or below {transitions} after the new term began: {seen:?}"));
    }
    problems
}

#[test]
fn takeover_problems_catch_a_dead_identity_or_no_new_term() {
    let h = |s: &str, t: i32| (Some(s.to_string()), t);
    // The standby, or the killed pod's restarted process (a new suffix), takes over.
    assert!(takeover_problems(&[h("op-a_1", 1), (None, 1), h("op-b_2", 2)], "op-a_1", 1).is_empty());
    assert!(takeover_problems(&[h("op-a_1", 1), h("op-a_3", 2), h("op-b_2", 3)], "op-a_1", 1).is_empty());
    // The dead process's identity continues or comes back; no new term; transitions not up.
    assert_eq!(takeover_problems(&[h("op-a_1", 1)], "op-a_1", 1).len(), 1);
    assert_eq!(takeover_problems(&[h("op-a_1", 1), h("op-b_2", 2), h("op-a_1", 3)], "op-a_1", 1).len(), 1);
    assert_eq!(takeover_problems(&[h("op-a_1", 1), h("op-b_2", 1)], "op-a_1", 1).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The API server restarted while the operator and the gateway are busy.

fn cluster_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster")
}

/// `FAULTS_API_DOWN_SECONDS`: how long the API server stays down beyond its stop (default 0; the
/// stop itself takes ~5 s: SIGTERM, then SIGKILL).
fn down_seconds() -> u64 {
    std::env::var("FAULTS_API_DOWN_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn create_request(ns: &str, name: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        namespace: ns.into(),
        name: name.into(),
        source: Some(pb::create_sandbox_request::Source::Image(SANDBOX_IMAGE.into())),
        resources: Some(pb::Resources { cpu: "10m".into(), memory: "64Mi".into(), ephemeral_storage: "64Mi".into() }),
        ttl_seconds: 1800,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_under_load() {
    let _lock = LOCK.lock().await;
    let c = client().await;
    let ns = TestNamespace::new(&c, "flt-api").await;
    let n = ns.name.clone();
    let token = sandboxes::token_for(&c, &n, "tester").await;
    let workers: Vec<String> = (0..3).map(|i| format!("w{i}")).collect();
    futures::future::join_all(workers.iter().map(|w| ready_sandbox(&c, &n, w))).await;

    let _cluster = ClusterLock::acquire("API server restart").await;
    let op0 = release::operator_ready(&c, Duration::from_secs(120)).await;
    let (addr, gw0) = release::in_cluster_gateway(&c).await;
    eprintln!("in-cluster gateway {} at {addr}; operator {}", gw0.name_any(), op0.name_any());
    let ac = AirlockClient::connect(&addr, Some(token)).await.expect("connect to the in-cluster gateway");

    // Commands in flight: a sleeper in each worker and a ticker streaming output.
    let mut inflight = Vec::new();
    for w in &workers {
        inflight.push((format!("{w}: sleep"), started(&ac, &n, w, "echo up; exec sleep 600.5").await));
    }
    inflight.push(("w0: ticker".into(), started(&ac, &n, "w0", "echo up; while :; do echo tick; sleep 0.2; done").await));
    assert_eq!(count(&ac, &n, "w1", &["sleep", "600.5"]).await, 1);

    // Sandboxes being created through the gateway the whole time, one every 300 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let (ac2, n2, stop2, answered2) = (ac.clone(), n.clone(), stop.clone(), answered.clone());
    let creator = tokio::spawn(async move {
        let mut results = Vec::new();
        let mut i = 0;
        while !stop2.load(Ordering::Relaxed) {
            let name = format!("c{i:03}");
            let mut r = Request::new(create_request(&n2, &name));
            r.set_timeout(Duration::from_secs(20));
            let res = ac2.sandboxes().create_sandbox(r).await.map(|_| ()).map_err(|s| (s.code(), s.message().to_string()));
            results.push((name, res));
            answered2.fetch_add(1, Ordering::Relaxed);
            i += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        results
    });
    // The API server's availability, from this host, every 100 ms.
    let (c3, stop3) = (c.clone(), stop.clone());
    let prober = tokio::spawn(async move {
        let mut down: Vec<Instant> = Vec::new();
        while !stop3.load(Ordering::Relaxed) {
            let ok = matches!(tokio::time::timeout(Duration::from_secs(1), c3.apiserver_version()).await, Ok(Ok(_)));
            if !ok {
                down.push(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        down
    });

    // The load is on (creations answered) when the restart begins, and stays on until creations
    // are answered again after it.
    let answers = |n: usize, what: &'static str| {
        let answered = answered.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while answered.load(Ordering::Relaxed) < n {
                assert!(tokio::time::Instant::now() < deadline, "{what}: fewer than {n} creations answered within 60 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    answers(3, "before the restart").await;
    let t_restart = Instant::now();
    let out = tokio::process::Command::new(cluster_script()).args(["restart", "kube-apiserver", &down_seconds().to_string()]).output().await.expect("running e2e/cluster restart");
    let restart_took = t_restart.elapsed();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "e2e/cluster restart kube-apiserver failed:\n{log}");
    eprintln!("e2e/cluster restart kube-apiserver: {:.1}s ({})", restart_took.as_secs_f64(), log.trim());
    answers(answered.load(Ordering::Relaxed) + 3, "after the restart").await;
    stop.store(true, Ordering::Relaxed);
    let created = creator.await.expect("creator");
    let down = prober.await.expect("prober");
    match (down.first(), down.last()) {
        (Some(a), Some(b)) => eprintln!(
            "API server unreachable from {:.1}s to {:.1}s after the restart began: outage {:.1}s ({} failed probes)",
            a.duration_since(t_restart).as_secs_f64(),
            b.duration_since(t_restart).as_secs_f64(),
            (b.duration_since(*a) + Duration::from_millis(100)).as_secs_f64(),
            down.len()
        ),
        _ => eprintln!("API server never seen unreachable (every probe answered)"),
    }

    let mut findings = Vec::new();

    // The in-flight commands run on the direct path (gateway -> agent), which the API server is
    // not part of: through the restart they run on and their streams stay open (the ticker still
    // ticks, the sleepers still sleep).
    for (what, s) in inflight.iter_mut() {
        let next = tokio::time::timeout(Duration::from_secs(3), s.message()).await;
        match next {
            Err(_) if what.ends_with("sleep") => eprintln!("{what}: still running, stream open"),
            Ok(Ok(Some(e))) if what.ends_with("ticker") && matches!(e.event, Some(pb::exec_event::Event::Stdout(_))) => {
                eprintln!("{what}: still streaming")
            }
            other => findings.push(format!("{what}: after the API server restart: {other:?}, want it running on")),
        }
    }
    for w in &workers {
        let n_sleeps = count(&ac, &n, w, &["sleep", "600.5"]).await;
        if n_sleeps != 1 {
            findings.push(format!("{w}: {n_sleeps} sleeps after the API server restart, want the one started before"));
        }
    }
    // Cancelling them now ends them (checked below: nothing left running).
    drop(inflight);

    // Creations during the restart: answered OK, or refused with a clear status.
    let ok: Vec<String> = created.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| n.clone()).collect();
    let refused: Vec<(&String, &Code, &String)> = created.iter().filter_map(|(n, r)| r.as_ref().err().map(|(c, m)| (n, c, m))).collect();
    eprintln!("creations through the gateway during the restart: {} OK, {} refused: {:?}", ok.len(), refused.len(), refused);
    for (name, code, msg) in &refused {
        if !matches!(code, Code::Unavailable | Code::DeadlineExceeded) || msg.is_empty() {
            findings.push(format!("creating {name} during the restart: {code:?} {msg:?}, want UNAVAILABLE or DEADLINE_EXCEEDED with a message"));
        }
    }

    // Neither the operator nor the gateway restarted.
    let op1 = release::operator_ready(&c, Duration::from_secs(60)).await;
    let gw1 = release::ready_pods(&c, GATEWAY_SELECTOR, 1, Duration::from_secs(60)).await.remove(0);
    for (what, a, b) in [("operator", &op0, &op1), ("gateway", &gw0, &gw1)] {
        eprintln!("{what} {}: restarts {} -> {}", b.name_any(), restarts(a), restarts(b));
        if a.uid() != b.uid() || restarts(a) != restarts(b) {
            findings.push(format!("{what} restarted: {} (restarts {}) -> {} (restarts {})", a.name_any(), restarts(a), b.name_any(), restarts(b)));
        }
    }

    // After the restart, through the same gateway connection: commands run, and new Sandboxes
    // become Ready (every one that exists, including those created during the outage).
    let t_after = Instant::now();
    let o = ac.exec_collect(AirlockClient::argv(&n, "w1", ["sh", "-c", "echo after"])).await;
    match &o {
        Ok(o) if o.exit_code == 0 && o.stdout == b"after\n" => {}
        other => findings.push(format!("exec after the restart: {other:?}")),
    }
    let sb = ac.create_sandbox_ready(create_request(&n, "after"), READY).await;
    match &sb {
        Ok(sb) if sb.ready => eprintln!("new Sandbox through the gateway Ready {:.1}s after the API server was back", t_after.elapsed().as_secs_f64()),
        other => findings.push(format!("create after the restart: {other:?}")),
    }
    // The cancelled commands left nothing running in the sandboxes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for w in &workers {
        while count(&ac, &n, w, &["sleep", "600.5"]).await != 0 {
            if tokio::time::Instant::now() >= deadline {
                findings.push(format!("{w}: the cancelled sleep still runs"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let (sbx, _) = sandboxes::list(&c, &n).await;
    for name in &ok {
        if !sbx.iter().any(|s| &s.name_any() == name) {
            findings.push(format!("{name}: created OK through the gateway, but there is no such Sandbox"));
        }
    }
    let names: Vec<String> = sbx.iter().map(|s| s.name_any()).collect();
    wait_ready(&c, &n, &names).await;
    let (sbx, pods) = sandboxes::converged(&c, &n, &[], false, Duration::from_secs(60)).await;
    eprintln!("after the restart: {} Sandboxes all Ready, {} pods, {:.1}s after the API server was back", sbx.len(), pods.len(), t_after.elapsed().as_secs_f64());
    drop(_cluster);
    ns.cleanup().await;
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Three gateway replicas.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateway_replicas_share_a_process_started_through_one_of_them() {
    let _lock = LOCK.lock().await;
    let c = client().await;
    let ns = TestNamespace::new(&c, "flt-gw3").await;
    let n = ns.name.clone();
    let token = sandboxes::token_for(&c, &n, "tester").await;
    ready_sandbox(&c, &n, "box").await;
    let _cluster = ClusterLock::acquire("three gateway replicas").await;
    release::scale_gateway(&c, 3).await;
    // The body runs as a task so that a failure still restores one replica below.
    let body = tokio::spawn(three_replicas(c.clone(), n.clone(), token)).await;
    release::scale_gateway(&c, 1).await;
    release::ready_pods(&c, GATEWAY_SELECTOR, 1, Duration::from_secs(180)).await;
    ns.cleanup().await;
    if let Err(e) = body {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn three_replicas(c: Client, n: String, token: String) {
    use pb::process_event::Event;
    let pods = release::ready_pods(&c, GATEWAY_SELECTOR, 3, Duration::from_secs(180)).await;
    let mut gws = Vec::new();
    for p in &pods {
        gws.push(AirlockClient::connect(&release::gateway_addr(p), Some(token.clone())).await.expect("connect to a gateway replica"));
    }
    let sandbox = airlock_api::client::sandbox_ref(&n, "box");
    let info = gws[0]
        .processes()
        .start_process(pb::StartProcessRequest {
            sandbox: sandbox.clone(),
            command: Some(pb::start_process_request::Command::Shell("for i in 1 2 3; do echo tick $i; sleep 0.3; done; echo done".into())),
            tag: "ticker".into(),
            ..Default::default()
        })
        .await
        .expect("StartProcess through replica 0")
        .into_inner();
    let listed = gws[1]
        .processes()
        .list_processes(pb::ListProcessesRequest { sandbox: sandbox.clone(), ..Default::default() })
        .await
        .expect("ListProcesses through replica 1")
        .into_inner();
    assert!(listed.processes.iter().any(|p| p.pid == info.pid && p.tag == "ticker"), "replica 1 lists the process started through replica 0: {listed:?}");
    let mut s = gws[2]
        .processes()
        .connect_process(pb::ConnectProcessRequest {
            sandbox: sandbox.clone(),
            process: Some(pb::ProcessSelector { selector: Some(pb::process_selector::Selector::Pid(info.pid)) }),
            follow: true,
            ..Default::default()
        })
        .await
        .expect("ConnectProcess through replica 2")
        .into_inner();
    let mut out = Vec::new();
    let last = loop {
        match tokio::time::timeout(Duration::from_secs(30), s.message()).await.expect("an event within 30 s").expect("stream") {
            Some(pb::ProcessEvent { event: Some(Event::Stdout(c)) }) => out.extend_from_slice(&c.data),
            Some(pb::ProcessEvent { event: Some(other) }) => break other,
            other => panic!("ConnectProcess ended without exited: {other:?}"),
        }
    };
    assert_eq!(String::from_utf8_lossy(&out), "tick 1\ntick 2\ntick 3\ndone\n");
    assert!(matches!(last, Event::Exited(ref e) if e.exit_code == 0), "{last:?}");

    // Concurrent execs spread over the three replicas: every one succeeds.
    let runs = futures::future::join_all((0..30).map(|i| {
        let gw = gws[i % 3].clone();
        let n = n.clone();
        async move { gw.exec_collect(AirlockClient::shell(&n, "box", &format!("echo {i}"))).await.map(|o| (i, o)) }
    }))
    .await;
    for r in runs {
        let (i, o) = r.expect("exec through a replica");
        assert_eq!((o.exit_code, String::from_utf8_lossy(&o.stdout).trim().to_string()), (0, i.to_string()));
    }
}
