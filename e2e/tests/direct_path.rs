//! The direct path from the gateway to the agent in a sandbox pod (chart `agentDirect`), on the
//! real cluster:
//! - who reaches an agent: its port answers the node (where the gateway's in-process copies of
//!   these tests run, and what kube-router admits as node traffic) but no pod of the sandbox's
//!   namespace, labelled as an agent client or not, and no other sandbox; and each sandbox's token
//!   opens that sandbox's agent only;
//! - calls really take it (the gateway's `agent_calls{transport="direct"}` counts them, and
//!   `--agent-transport=direct` cannot fall back), and a timeout there ends the whole process
//!   tree, a `setsid` child included.
//!
//! The other gateway tests (gateway.rs, gateway_hardening.rs, ...) run on the direct path too;
//! `make e2e` runs gateway.rs again with `AIRLOCK_E2E_AGENT_TRANSPORT=pods-exec`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_agent_protocol::{Client as AgentClient, ClientError, ErrorCode};
use airlock_api::client::AirlockClient;
use airlock_api::proto::v1 as pb;
use airlock_api::tonic;
use airlock_crds::Sandbox;
use airlock_e2e::net::{Case, conn, settle};
use airlock_e2e::sandboxes::{self, count, in_process_gateway, token_for};
use airlock_e2e::{RUNC, TestNamespace, client, release, run_pod, sleeper, wait_for};
use kube::Client;
use kube::api::Api;
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(180);
const AGENT_PORT: u16 = 7070;

/// Creates a Sandbox with room for Python and returns it once Ready.
async fn ready(c: &Client, ns: &str, name: &str) -> Sandbox {
    ready_with(c, ns, name, json!({})).await
}

/// The same, with `spec` merged over it.
async fn ready_with(c: &Client, ns: &str, name: &str, spec: serde_json::Value) -> Sandbox {
    let mut room = json!({"resources": {"cpu": "50m", "memory": "128Mi"}});
    sandboxes::merge(&mut room, spec);
    sandboxes::create(c, ns, name, room)
        .await
        .unwrap_or_else(|e| panic!("creating {ns}/{name}: {e}"));
    let api: Api<Sandbox> = Api::namespaced(c.clone(), ns);
    wait_for(&api, name, READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await.expect("sandbox")
}

fn agent_addr(s: &Sandbox) -> SocketAddr {
    let ip = s.status.as_ref().and_then(|st| st.pod_ip.clone()).expect("status.podIP");
    SocketAddr::new(ip.parse().expect("pod IP"), AGENT_PORT)
}

/// HELLO from the node with `token`: Ok, or the agent's refusal.
async fn hello(addr: SocketAddr, token: String) -> Result<(), ClientError> {
    tokio::task::spawn_blocking(move || AgentClient::connect(addr, token.as_bytes()).map(drop)).await.expect("hello")
}

fn unauthenticated(r: Result<(), ClientError>) -> bool {
    matches!(r, Err(ClientError::Agent(e)) if e.code == ErrorCode::Unauthenticated)
}

#[tokio::test]
async fn only_agent_clients_reach_an_agent_and_each_token_opens_only_its_own_agent() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "direct-fence").await;
    let n = ns.name.as_str();
    let key = release::agent_key(&c).await.expect("the release has the direct path (agentDirect.enabled)");
    // Two sandboxes, a plain pod of the namespace and one that carries the agent-client label (but
    // is not in the release namespace).
    let (a, b, _, _) = tokio::join!(
        ready(&c, n, "a"),
        ready(&c, n, "b"),
        run_pod(&c, n, sleeper("plain", RUNC, json!({"app": "plain"}))),
        run_pod(&c, n, sleeper("impostor", RUNC, json!({"airlock.dev/agent-client": "true"}))),
    );
    let (addr_a, addr_b) = (agent_addr(&a), agent_addr(&b));
    let uid = |s: &Sandbox| s.metadata.uid.clone().expect("uid");
    let token_a = airlock_crds::agent_token::derive(&key, &uid(&a));
    let token_b = airlock_crds::agent_token::derive(&key, &uid(&b));

    // Control: the agent listens and takes its own token (from the node, as the gateway's tests do).
    hello(addr_a, token_a.clone()).await.expect("a's token opens a's agent");
    hello(addr_b, token_b.clone()).await.expect("b's token opens b's agent");
    // Per-sandbox credentials: b's token, the key itself, or a guess open nothing of a.
    assert!(unauthenticated(hello(addr_a, token_b.clone()).await), "b's token must not open a's agent");
    assert!(unauthenticated(hello(addr_a, String::from_utf8_lossy(&key).into_owned()).await), "the key is not a token");
    assert!(unauthenticated(hello(addr_a, "0".repeat(64)).await), "a guessed token");

    // Nothing in the namespace connects to a's agent port: not a plain pod, not a pod labelled as an
    // agent client outside the release namespace, not another sandbox.
    let target = vec![(conn(&addr_a.ip().to_string(), AGENT_PORT), false)];
    let cases = [
        Case { label: "plain pod, same namespace", pod: "plain", container: None, expect: target.clone() },
        Case { label: "agent-client label, wrong namespace", pod: "impostor", container: None, expect: target.clone() },
        Case { label: "another sandbox", pod: "b", container: Some("sandbox"), expect: target.clone() },
    ];
    settle(&c, n, &cases, Duration::from_secs(90)).await;
    // And the agent still answers the node after those rounds (the listener was up all along).
    hello(addr_a, token_a).await.expect("a's agent still answers");
    ns.cleanup().await;
}

/// An in-process gateway for `ns` (configured further by `tweak`), a client of it with a tester
/// token, and the gateway's metrics.
async fn metered_gateway(
    c: &Client,
    ns: &str,
    tweak: impl FnOnce(&mut airlock_exec_gateway::Config),
) -> (AirlockClient, Arc<airlock_exec_gateway::metrics::Metrics>, tokio::sync::oneshot::Sender<()>) {
    let metrics = Arc::new(Mutex::new(None));
    let m = metrics.clone();
    let (port, stop) = in_process_gateway(c, ns, move |cfg| {
        tweak(cfg);
        *m.lock().unwrap() = Some(cfg.metrics.clone());
    })
    .await;
    let metrics = metrics.lock().unwrap().take().unwrap();
    let token = token_for(c, ns, "tester").await;
    let gw = AirlockClient::connect(&format!("http://127.0.0.1:{port}"), Some(token)).await.expect("gateway");
    (gw, metrics, stop)
}

#[tokio::test]
async fn calls_take_the_direct_path_and_a_timeout_there_ends_the_whole_tree() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "direct-exec").await;
    let n = ns.name.as_str();
    ready(&c, n, "box").await;
    // Never pods/exec: a call that cannot go direct fails.
    let (gw, metrics, _stop) =
        metered_gateway(&c, n, |cfg| cfg.agent_transport = airlock_exec_gateway::agent::Transport::Direct).await;
    let direct = || metrics.encode().lines().find(|l| l.starts_with("airlock_gateway_agent_calls_total{transport=\"direct\"}")).map(str::to_string);

    let out = gw.exec_collect(AirlockClient::shell(n, "box", "echo out; echo err >&2; exit 3")).await.expect("exec");
    assert_eq!((out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code), (&b"out\n"[..], &b"err\n"[..], 3));
    assert_eq!(direct().as_deref(), Some("airlock_gateway_agent_calls_total{transport=\"direct\"} 1"), "{}", metrics.encode());

    // RunCode: a Python program of 300 KiB (over Linux's 128 KiB limit for one argument, so
    // `python3 -c` could not take it) runs, read from fd 3.
    // It runs as under `python3 -c` (argv[0] `-c`, the working directory first on sys.path).
    let code = format!("x = '{}'\nimport sys\nprint(len(x), sys.argv[0], repr(sys.path[0]))\n", "a".repeat(300 * 1024));
    let out = gw
        .run_code(pb::RunCodeRequest { sandbox: airlock_api::client::sandbox_ref(n, "box"), language: pb::Language::Python as i32, code, ..Default::default() })
        .await
        .expect("RunCode of 300 KiB");
    assert_eq!((String::from_utf8_lossy(&out.stdout).as_ref(), out.exit_code), ("307200 -c ''\n", 0), "{out:?}");

    // A command that leaves a setsid()'d child behind, past its timeout: both sleeps started (they
    // say so), the call ends as timed out, and neither sleep is left.
    let line = "setsid sleep 731.5 & echo child-started; sleep 732.5 & echo main-started; wait";
    let mut req = AirlockClient::shell(n, "box", line);
    req.timeout = Some(prost_types::Duration { seconds: 3, nanos: 0 });
    let out = gw.exec_collect(req).await.expect("exec with a timeout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("child-started") && stdout.contains("main-started"), "{out:?}");
    assert!(out.timed_out, "{out:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = count(&gw, n, "box", &["sleep", "731.5"]).await + count(&gw, n, "box", &["sleep", "732.5"]).await;
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} sleeps of the timed-out tree still run");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ns.cleanup().await;
}

/// A gateway in this process (direct path only) and a client of it; dropping the pair stops it.
async fn gateway(c: &Client, ns: &str, token: &str) -> (AirlockClient, tokio::sync::oneshot::Sender<()>) {
    let (port, stop) = in_process_gateway(c, ns, |cfg| cfg.agent_transport = airlock_exec_gateway::agent::Transport::Direct).await;
    let ac = AirlockClient::connect(&format!("http://127.0.0.1:{port}"), Some(token.to_string())).await.expect("gateway");
    (ac, stop)
}

fn by_tag(t: &str) -> Option<pb::ProcessSelector> {
    Some(pb::ProcessSelector { selector: Some(pb::process_selector::Selector::Tag(t.into())) })
}

/// Everything ConnectProcess streams: stdout, stderr (each checked to be contiguous from the
/// asked offsets), and the last event.
async fn read_all(ac: &AirlockClient, req: pb::ConnectProcessRequest) -> Result<(Vec<u8>, Vec<u8>, pb::process_event::Event), tonic::Status> {
    use pb::process_event::Event;
    let (mut out_at, mut err_at) = (req.stdout_offset, req.stderr_offset);
    let mut s = ac.processes().connect_process(req).await?.into_inner();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(e) = s.message().await? {
        match e.event.expect("event") {
            Event::Stdout(c) => {
                assert_eq!(c.offset, out_at, "stdout chunks are contiguous");
                out_at += c.data.len() as u64;
                out.extend_from_slice(&c.data);
            }
            Event::Stderr(c) => {
                assert_eq!(c.offset, err_at, "stderr chunks are contiguous");
                err_at += c.data.len() as u64;
                err.extend_from_slice(&c.data);
            }
            last => return Ok((out, err, last)),
        }
    }
    panic!("ConnectProcess ended without exited or caught_up")
}

#[tokio::test]
async fn a_background_process_outlives_its_caller_and_its_gateway_and_is_read_again_from_offset_zero() {
    use pb::process_event::Event;
    let c = client().await;
    let ns = TestNamespace::new(&c, "direct-bg").await;
    let n = ns.name.as_str();
    ready(&c, n, "box").await;
    let token = token_for(&c, n, "tester").await;
    let sandbox = airlock_api::client::sandbox_ref(n, "box");

    // Started through one gateway, which then goes away entirely.
    let (first, stop) = gateway(&c, n, &token).await;
    let line = "while read l; do echo got:$l; echo err:$l >&2; done; echo bye";
    let started = first
        .processes()
        .start_process(pb::StartProcessRequest {
            sandbox: sandbox.clone(),
            command: Some(pb::start_process_request::Command::Shell(line.into())),
            tag: "echoer".into(),
            ..Default::default()
        })
        .await
        .expect("StartProcess")
        .into_inner();
    assert!(started.pid > 0 && started.running && started.tag == "echoer", "{started:?}");
    let input = |data: &str, close: bool| pb::SendInputRequest { sandbox: sandbox.clone(), process: by_tag("echoer"), data: data.as_bytes().to_vec().into(), close };
    first.processes().send_input(input("one\n", false)).await.expect("SendInput");
    // The same tag again while it runs.
    let again = first
        .processes()
        .start_process(pb::StartProcessRequest { sandbox: sandbox.clone(), command: Some(pb::start_process_request::Command::Shell("true".into())), tag: "echoer".into(), ..Default::default() })
        .await
        .expect_err("a running tag");
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    drop(first);
    drop(stop);

    // Another gateway, another client: the process is there, same pid, still running.
    let (second, _stop2) = gateway(&c, n, &token).await;
    let list = second.processes().list_processes(pb::ListProcessesRequest { sandbox: sandbox.clone() }).await.expect("ListProcesses").into_inner();
    let p = list.processes.iter().find(|p| p.tag == "echoer").unwrap_or_else(|| panic!("{list:?}"));
    assert_eq!((p.pid, p.running), (started.pid, true), "{p:?}");
    second.processes().send_input(input("two\n", true)).await.expect("SendInput and close");
    // Everything from offset 0, without a gap, to its exit.
    let connect = |follow| pb::ConnectProcessRequest { sandbox: sandbox.clone(), process: by_tag("echoer"), stdout_offset: 0, stderr_offset: 0, follow };
    let (out, err, last) = read_all(&second, connect(true)).await.expect("ConnectProcess");
    assert_eq!(String::from_utf8_lossy(&out), "got:one\ngot:two\nbye\n");
    assert_eq!(String::from_utf8_lossy(&err), "err:one\nerr:two\n");
    assert!(matches!(last, Event::Exited(ref e) if e.exit_code == 0), "{last:?}");
    // Read again after its end, from an offset, without follow.
    let (out, _, last) = read_all(&second, pb::ConnectProcessRequest { stdout_offset: 8, ..connect(false) }).await.expect("ConnectProcess from 8");
    assert_eq!(String::from_utf8_lossy(&out), "got:two\nbye\n");
    assert!(matches!(last, Event::Exited(_) | Event::CaughtUp(_)), "{last:?}");

    // A process whose buffer dropped output: OUT_OF_RANGE says how much, and where it starts.
    second
        .processes()
        .start_process(pb::StartProcessRequest {
            sandbox: sandbox.clone(),
            command: Some(pb::start_process_request::Command::Shell("head -c 20000 /dev/zero | tr '\\0' x; echo; sleep 600".into())),
            tag: "chatty".into(),
            buffer_bytes: 4096,
            ..Default::default()
        })
        .await
        .expect("StartProcess chatty");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let dropped = loop {
        match read_all(&second, pb::ConnectProcessRequest { process: by_tag("chatty"), ..connect(false) }).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(tokio::time::Instant::now() < deadline, "the 4 KiB buffer never dropped the first of 20001 bytes");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(dropped.code(), tonic::Code::OutOfRange, "{dropped:?}");
    assert!(dropped.message().contains("bytes dropped"), "{dropped:?}");

    // KillProcess ends the whole tree, a setsid() child included.
    second
        .processes()
        .start_process(pb::StartProcessRequest {
            sandbox: sandbox.clone(),
            command: Some(pb::start_process_request::Command::Shell("setsid sleep 741.5 & echo up; exec sleep 742.5".into())),
            tag: "tree".into(),
            ..Default::default()
        })
        .await
        .expect("StartProcess tree");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(&second, n, "box", &["sleep", "741.5"]).await + count(&second, n, "box", &["sleep", "742.5"]).await != 2 {
        assert!(tokio::time::Instant::now() < deadline, "the tree never started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in ["tree", "chatty"] {
        second.processes().kill_process(pb::KillProcessRequest { sandbox: sandbox.clone(), process: by_tag(t) }).await.expect("KillProcess");
    }
    let (_, _, last) = read_all(&second, pb::ConnectProcessRequest { process: by_tag("tree"), ..connect(true) }).await.expect("ConnectProcess tree");
    assert!(matches!(last, Event::Exited(ref e) if e.signal == 9), "{last:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count(&second, n, "box", &["sleep", "741.5"]).await + count(&second, n, "box", &["sleep", "742.5"]).await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the killed tree still runs");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Bad requests name the field; unknown processes are NOT_FOUND.
    let e = second.processes().kill_process(pb::KillProcessRequest { sandbox: sandbox.clone(), process: None }).await.expect_err("no process");
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("process"), "{e:?}");
    let e = second.processes().kill_process(pb::KillProcessRequest { sandbox: sandbox.clone(), process: by_tag("no such") }).await.expect_err("bad tag");
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("process.tag"), "{e:?}");
    let e = second.processes().kill_process(pb::KillProcessRequest { sandbox: sandbox.clone(), process: by_tag("nobody") }).await.expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    ns.cleanup().await;
}

/// Idle means nothing runs: a 60 s command printing every 5 s, in a sandbox whose idle timeout is
/// 20 s, finishes (the operator asks the agent before reaping, and the agent reports the running
/// command); the sandbox is reaped about 20 s after the command ended, not before.
#[tokio::test]
async fn a_command_longer_than_the_idle_timeout_finishes_and_the_sandbox_goes_idle_timeout_after_it_ends() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "direct-idle").await;
    let n = ns.name.as_str();
    ready_with(&c, n, "idler", json!({"lifetime": {"idleTimeoutSeconds": 20}})).await;
    let api: Api<Sandbox> = Api::namespaced(c.clone(), n);
    let token = token_for(&c, n, "tester").await;
    let (gw, _stop) = gateway(&c, n, &token).await;
    let line = "i=0; while [ $i -lt 12 ]; do echo tick$i; i=$((i+1)); sleep 5; done";
    let out = gw.exec_collect(AirlockClient::shell(n, "idler", line)).await.expect("the 60 s command");
    let ended = std::time::Instant::now();
    let ticks = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!((ticks, out.exit_code), (12, 0), "the command ran to its end: {out:?}");
    assert!(api.get_opt("idler").await.expect("get").is_some_and(|s| s.metadata.deletion_timestamp.is_none()), "reaped while the command ran");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while api.get_opt("idler").await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the sandbox was never reaped after the command ended");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = ended.elapsed();
    eprintln!("reaped {after:?} after the command ended (idle timeout 20 s)");
    assert!(after >= Duration::from_secs(15), "reaped {after:?} after the command ended: before its idle timeout");
    ns.cleanup().await;
}

/// 200 commands at once into one sandbox through one gateway, all on the direct path: every one
/// runs and reports its own output and exit code (over `pods/exec` the same load gave errors).
#[tokio::test]
async fn two_hundred_concurrent_execs_into_one_sandbox_all_succeed() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "direct-200").await;
    let n = ns.name.as_str();
    ready_with(&c, n, "busy", json!({"resources": {"cpu": "500m", "memory": "512Mi"}})).await;
    let token = token_for(&c, n, "tester").await;
    let (gw, _stop) = gateway(&c, n, &token).await;
    let started = std::time::Instant::now();
    let calls = (0..200).map(|i| {
        let gw = gw.clone();
        async move { (i, gw.exec_collect(AirlockClient::argv(n, "busy", ["sh", "-c", &format!("echo {i}; exit {}", i % 7)])).await) }
    });
    let results = futures::future::join_all(calls).await;
    let mut errors = Vec::new();
    for (i, r) in results {
        match r {
            Ok(o) if o.stdout == format!("{i}\n").into_bytes() && o.exit_code == i % 7 => {}
            other => errors.push(format!("{i}: {other:?}")),
        }
    }
    eprintln!("200 concurrent execs in {:?}, {} errors", started.elapsed(), errors.len());
    assert!(errors.is_empty(), "{} of 200 failed: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    ns.cleanup().await;
}

/// The count of `airlock_gateway_sandbox_lookups_total{source=...}` in `text` (0 when absent).
fn lookups(text: &str, source: &str) -> u64 {
    let prefix = format!("airlock_gateway_sandbox_lookups_total{{source=\"{source}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().expect("counter"))
}

#[tokio::test]
async fn calls_find_their_sandbox_in_the_watch_cache_and_never_run_in_a_deleted_one() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "gw-cache").await;
    let n = ns.name.as_str();
    ready(&c, n, "box").await;
    ready(&c, n, "gone").await;
    let (gw, metrics, _stop) = metered_gateway(&c, n, |_| {}).await;
    let count_of = |source| lookups(&metrics.encode(), source);

    // Once the gateway's watches have listed, calls into a Ready sandbox read no API object.
    let t0 = std::time::Instant::now();
    while count_of("cache") == 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no call was answered from the cache:\n{}", metrics.encode());
        gw.exec_collect(AirlockClient::shell(n, "box", "true")).await.expect("exec");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (cache0, api0) = (count_of("cache"), count_of("api"));
    for i in 0..5 {
        let out = gw.exec_collect(AirlockClient::shell(n, "box", &format!("echo {i}"))).await.expect("exec");
        assert_eq!((out.stdout, out.exit_code), (format!("{i}\n").into_bytes(), 0));
    }
    assert_eq!((count_of("cache") - cache0, count_of("api") - api0), (5, 0), "{}", metrics.encode());

    // Deleted through this gateway: the very next call is refused (read from the API server).
    gw.delete_sandbox(n, "box").await.expect("delete");
    let e = gw.exec_collect(AirlockClient::shell(n, "box", "echo ran")).await.expect_err("exec in a deleted sandbox");
    assert!(matches!(e.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition), "{e:?}");

    // Deleted by someone else (kubectl): once the API server has forgotten it, so has the gateway
    // (within a watch event's delay), and nothing runs.
    let api: Api<Sandbox> = Api::namespaced(c.clone(), n);
    api.delete("gone", &Default::default()).await.expect("delete gone");
    wait_for(&api, "gone", Duration::from_secs(60), "deleted", |s| s.is_none()).await;
    let t0 = std::time::Instant::now();
    loop {
        match gw.exec_collect(AirlockClient::shell(n, "gone", "echo ran")).await {
            Err(e) => {
                assert!(matches!(e.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition), "{e:?}");
                break;
            }
            Ok(out) => assert!(t0.elapsed() < Duration::from_secs(2), "still runs in a deleted sandbox 2 s later: {out:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ns.cleanup().await;
}
