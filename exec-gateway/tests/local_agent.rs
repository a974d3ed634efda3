//! The gateway in-process, end to end through gRPC, with the real agent binary run locally in
//! place of `pods/exec` and a fake Kubernetes API that knows three sandboxes: any name is Ready,
//! except `missing` (404) and `pending` (not Ready); `hijacked` is Ready but its status.podName
//! names `victim`, a pod some other owner controls. Every pod is controlled by the Sandbox of
//! its name. No cluster needed.
//!
//! The agent binary is `$AIRLOCK_AGENT_BIN`, else `target/debug/airlock-agent` (built on demand).
//!
//! Over 600 lines: one fake API and agent harness shared by every scenario. Left whole in the layout
//! change (issue 11) because other branches edit it at the same time; the next step is a directory
//! test (`tests/local_agent/main.rs`) with the harness in a module of its own.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_exec_gateway::agent::{AgentError, Launch, PodExec, PodTarget, RemoteProcess};
use airlock_exec_gateway::auth::{AuthMode, StaticTokens};
use airlock_api::client::{AirlockClient, collect};
use airlock_api::proto::v1 as pb;
use airlock_exec_gateway::{Config, serve};
use bytes::Bytes;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tonic::Code;

fn agent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("AIRLOCK_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/airlock-agent");
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", "airlock-agent"])
            .current_dir(&root)
            .status()
            .expect("running cargo build -p airlock-agent");
        assert!(st.success(), "building airlock-agent failed");
    });
    bin.canonicalize().expect("agent binary")
}

/// Runs agent commands as local processes.
struct LocalExec(String);

/// Pods LocalExec was asked to run something in.
static STARTED_IN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl PodExec for LocalExec {
    fn start(
        &self,
        target: &PodTarget,
        launch: &Launch,
    ) -> BoxFuture<'static, Result<RemoteProcess, AgentError>> {
        let pod = target.pod.clone();
        let command = launch.command(&self.0);
        STARTED_IN.lock().unwrap().push(pod.clone());
        Box::pin(async move {
            let mut child = tokio::process::Command::new(&command[0])
                .args(&command[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| AgentError::Failed {
                    pod: pod.clone(),
                    message: e.to_string(),
                })?;
            let pid = child.id().unwrap_or(0);
            let stdin = child.stdin.take().unwrap();
            let stdout = child.stdout.take().unwrap();
            let stderr = child.stderr.take().unwrap();
            let status = Box::pin(async move {
                use std::os::unix::process::ExitStatusExt;
                let st = child.wait().await.map_err(|source| AgentError::Io {
                    pod: pod.clone(),
                    source,
                })?;
                Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
            });
            Ok(RemoteProcess {
                stdin: Box::pin(stdin),
                stdout: Box::pin(stdout),
                stderr: Box::pin(stderr),
                status,
                guard: Box::new(()),
                pid,
            })
        })
    }
}

fn sandbox_json(ns: &str, name: &str, ready: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "1", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"image": "local"},
        "status": {
            "phase": if ready { "Ready" } else { "Pending" },
            "podName": if name == "hijacked" { "victim" } else { name },
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": if ready { "Ready" } else { "PodPending" },
                            "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]
        }
    })
}

/// A fake API server: GET/PATCH of sandboxes.
fn fake_kube() -> kube::Client {
    let svc = tower::service_fn(|req: http::Request<kube::client::Body>| async move {
        let path = req.uri().path().to_string();
        let parts: Vec<&str> = path.split('/').collect();
        // /apis/airlock.dev/v1alpha1/namespaces/NS/sandboxes/NAME
        let (code, body) = match parts.as_slice() {
            [
                "",
                "apis",
                "airlock.dev",
                "v1alpha1",
                "namespaces",
                ns,
                "sandboxes",
                name,
            ] => match *name {
                "missing" => (
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("sandboxes.airlock.dev \"{name}\" not found")}),
                ),
                "pending" => (200, sandbox_json(ns, name, false)),
                _ => (200, sandbox_json(ns, name, true)),
            },
            // /api/v1/namespaces/NS/pods/NAME: controlled by the Sandbox of the same name.
            ["", "api", "v1", "namespaces", ns, "pods", name] => (
                200,
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": ns, "uid": format!("pod-{name}"),
                                 "ownerReferences": [{"apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox", "name": name,
                                                      "uid": format!("uid-{name}"), "controller": true}]},
                }),
            ),
            _ => (
                404,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
            ),
        };
        Ok::<_, std::convert::Infallible>(
            http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        )
    });
    kube::Client::new(svc, "default")
}

struct Gateway {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
    metrics: Arc<airlock_exec_gateway::metrics::Metrics>,
}

impl Gateway {
    async fn start(auth: AuthMode, grace: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let mut config = Config::new(auth)
            .with_client(fake_kube())
            .with_default_namespace("default");
        config.agent_path = agent_bin().display().to_string();
        config.pod_exec = Some(Arc::new(LocalExec(agent_bin().display().to_string())));
        config.shutdown_grace = grace;
        let metrics = config.metrics.clone();
        let (stop, rx) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            serve(config, listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Gateway {
            addr,
            stop: Some(stop),
            done,
            metrics,
        }
    }

    async fn client(&self, token: Option<&str>) -> AirlockClient {
        AirlockClient::connect(&self.addr, token.map(str::to_string))
            .await
            .unwrap()
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.done)
            .await
            .expect("server stops")
            .unwrap();
    }
}

fn sh(line: &str) -> pb::ExecRequest {
    AirlockClient::shell("ns", "box", line)
}

/// PIDs whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) && !cmd.contains("airlock-agent") {
                out.push(pid);
            }
        }
    }
    out
}

/// PIDs whose command line is exactly `argv` (a shell whose script mentions it does not count).
fn running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want) {
            out.push(pid);
        }
    }
    out
}

/// Waits until a process runs `argv` exactly: proof that the command started, before a test
/// checks that it is gone.
async fn wait_running(argv: &[&str], within: Duration) {
    let end = Instant::now() + within;
    while running(argv).is_empty() {
        assert!(Instant::now() < end, "{argv:?} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_gone(marker: &str, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "processes with {marker:?} still running: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_exit_codes_stdin() {
    let gw = Gateway::start(AuthMode::None, Duration::from_secs(5)).await;
    let c = gw.client(None).await;

    let out = c
        .exec_collect(sh("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(
        (
            out.stdout.as_slice(),
            out.stderr.as_slice(),
            out.exit_code,
            out.signal,
            out.timed_out
        ),
        (&b"out\n"[..], &b"err\n"[..], 3, 0, false)
    );

    let out = c
        .exec_collect(AirlockClient::argv(
            "ns",
            "box",
            ["printf", "%s|", "a b", "c"],
        ))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"a b|c|");

    let mut req = AirlockClient::argv("ns", "box", ["cat"]);
    req.stdin = Some(Bytes::from(vec![b'x'; 300_000]));
    let out = c.exec_collect(req).await.unwrap();
    assert_eq!(out.stdout.len(), 300_000);

    let mut req = sh("echo \"$FOO\" && pwd");
    req.env.insert("FOO".into(), "bar baz".into());
    req.cwd = "/tmp".into();
    let out = c.exec_collect(req).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar baz\n/tmp\n");

    let out = c
        .exec_collect(AirlockClient::argv("ns", "box", ["/no/such/program"]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 127, "{out:?}");

    let out = c.exec_collect(sh("kill -TERM $$")).await.unwrap();
    assert_eq!((out.exit_code, out.signal), (143, 15));

    let rc = c
        .run_code(pb::RunCodeRequest {
            sandbox: airlock_api::client::sandbox_ref("ns", "box"),
            language: pb::Language::Shell as i32,
            code: "echo $((1+1))".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rc.stdout, b"2\n");

    // The first event is Started with the pod name.
    let mut s = c.exec(sh("true")).await.unwrap();
    let first = s.message().await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(pb::exec_event::Event::Started(ref st)) if st.pod_name == "box"),
        "{first:?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_cancel_kill_the_process_group() {
    let gw = Gateway::start(AuthMode::None, Duration::from_secs(5)).await;
    let c = gw.client(None).await;

    // Timeout: a child and a grandchild, both seen running, both gone afterwards.
    let tag = std::process::id();
    let (t1, t2) = (format!("61.{tag}1"), format!("61.{tag}2"));
    let mut req = sh(&format!("sleep {t1} & sleep {t2} & echo started; wait"));
    req.timeout = Some(prost_types::Duration {
        seconds: 3,
        nanos: 0,
    });
    let t0 = Instant::now();
    let mut s = c.exec(req).await.unwrap();
    first_stdout(&mut s).await;
    wait_running(&["sleep", &t1], Duration::from_secs(3)).await;
    wait_running(&["sleep", &t2], Duration::from_secs(3)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the sleeps were seen only after the 3 s timeout"
    );
    let out = collect(s).await.unwrap();
    let took = t0.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!((out.exit_code, out.signal), (137, 9));
    // At the timeout: not before it, and not when the 61 s sleeps would have ended.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(30),
        "took {took:?}"
    );
    wait_gone(&format!("sleep 61.{tag}"), Duration::from_secs(3)).await;

    // Cancel: drop the stream once both sleeps run.
    let (c1, c2) = (format!("62.{tag}1"), format!("62.{tag}2"));
    let mut s = c
        .exec(sh(&format!("echo started; sleep {c1} & sleep {c2}")))
        .await
        .unwrap();
    first_stdout(&mut s).await;
    wait_running(&["sleep", &c1], Duration::from_secs(5)).await;
    wait_running(&["sleep", &c2], Duration::from_secs(5)).await;
    drop(s);
    wait_gone(&format!("sleep 62.{tag}"), Duration::from_secs(5)).await;

    // A client that stops reading: the command blocks on output and still dies at its timeout
    // while the client reads nothing.
    let mut req = AirlockClient::argv("ns", "box", ["yes", &format!("marker-{tag}")]);
    req.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 500_000_000,
    });
    let mut s = c.exec(req).await.unwrap();
    wait_running(&["yes", &format!("marker-{tag}")], Duration::from_secs(5)).await;
    wait_gone(&format!("yes marker-{tag}"), Duration::from_secs(10)).await;
    let mut timed_out = false;
    while let Some(ev) = s.message().await.unwrap() {
        if let Some(pb::exec_event::Event::Exited(e)) = ev.event {
            timed_out = e.timed_out;
        }
    }
    assert!(timed_out);
    gw.shutdown().await;
}

/// Reads the stream up to its first stdout message.
async fn first_stdout(s: &mut tonic::Streaming<pb::ExecEvent>) {
    loop {
        let ev = s.message().await.unwrap().expect("output before the end");
        if matches!(ev.event, Some(pb::exec_event::Event::Stdout(_))) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_is_intact_with_a_slow_reader() {
    let gw = Gateway::start(AuthMode::None, Duration::from_secs(5)).await;
    let c = gw.client(None).await;
    // 20 MiB of varied bytes; read slowly at first.
    let line = "head -c 20971520 /dev/urandom | tee /tmp/airlock-gw-test-big.$$ | cat; sha256sum /tmp/airlock-gw-test-big.$$ >&2; rm /tmp/airlock-gw-test-big.$$";
    let mut s = c.exec(sh(line)).await.unwrap();
    let mut hasher = Sha256::new();
    let (mut n, mut msgs, mut stderr) = (0usize, 0usize, Vec::new());
    let mut code = None;
    while let Some(ev) = s.message().await.unwrap() {
        match ev.event {
            Some(pb::exec_event::Event::Stdout(b)) => {
                assert!(b.len() <= 64 * 1024);
                hasher.update(&b);
                n += b.len();
                msgs += 1;
                if msgs < 20 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Some(pb::exec_event::Event::Stderr(b)) => stderr.extend_from_slice(&b),
            Some(pb::exec_event::Event::Exited(e)) => code = Some(e.exit_code),
            _ => {}
        }
    }
    assert_eq!(code, Some(0));
    assert_eq!(n, 20 * 1024 * 1024);
    let remote = String::from_utf8_lossy(&stderr);
    assert_eq!(
        remote.split_whitespace().next().unwrap(),
        hex::encode(hasher.finalize())
    );
    assert!(
        gw.metrics
            .encode()
            .contains("airlock_gateway_bytes_total{stream=\"stdout\"}")
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_stdin_signal_and_protocol_errors() {
    use pb::exec_input::Input;
    let gw = Gateway::start(AuthMode::None, Duration::from_secs(5)).await;
    let c = gw.client(None).await;

    let (tx, mut events) = c
        .exec_interactive(pb::ExecStart {
            request: Some(AirlockClient::argv("ns", "box", ["cat"])),
            tty: false,
            size: None,
        })
        .await
        .unwrap();
    tx.send(pb::ExecInput {
        input: Some(Input::Stdin(Bytes::from_static(b"hello "))),
    })
    .await
    .unwrap();
    // Output arrives before stdin is closed (interactive).
    let mut got = Vec::new();
    while got.len() < 6 {
        if let Some(pb::exec_event::Event::Stdout(b)) =
            events.message().await.unwrap().unwrap().event
        {
            got.extend_from_slice(&b);
        }
    }
    assert_eq!(got, b"hello ");
    tx.send(pb::ExecInput {
        input: Some(Input::Stdin(Bytes::from_static(b"world"))),
    })
    .await
    .unwrap();
    tx.send(pb::ExecInput {
        input: Some(Input::CloseStdin(pb::CloseStdin {})),
    })
    .await
    .unwrap();
    let rest = collect(events).await.unwrap();
    assert_eq!(rest.stdout, b"world");
    assert_eq!(rest.exit_code, 0);
    drop(tx);

    // Signal: SIGTERM to the group.
    let tag = std::process::id();
    let (tx, events) = c
        .exec_interactive(pb::ExecStart {
            request: Some(sh(&format!("sleep 64.{tag}"))),
            tty: false,
            size: None,
        })
        .await
        .unwrap();
    wait_running(&["sleep", &format!("64.{tag}")], Duration::from_secs(5)).await;
    tx.send(pb::ExecInput {
        input: Some(Input::Signal(pb::Signal { number: 15 })),
    })
    .await
    .unwrap();
    let out = collect(events).await.unwrap();
    assert_eq!((out.exit_code, out.signal), (143, 15), "{out:?}");
    wait_gone(&format!("sleep 64.{tag}"), Duration::from_secs(5)).await;

    // tty: output through the pty.
    let (tx, events) = c
        .exec_interactive(pb::ExecStart {
            request: Some(sh("stty size; echo tty:$(test -t 0 && echo yes)")),
            tty: true,
            size: Some(pb::Resize {
                cols: 100,
                rows: 30,
            }),
        })
        .await
        .unwrap();
    let out = collect(events).await.unwrap();
    drop(tx);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("30 100") && text.contains("tty:yes"),
        "{text:?}"
    );

    // Resize without tty, bad signal, second start: INVALID_ARGUMENT naming the field.
    for (input, field) in [
        (Input::Resize(pb::Resize { cols: 10, rows: 10 }), "resize:"),
        (Input::Signal(pb::Signal { number: 99 }), "signal.number:"),
        (Input::Start(pb::ExecStart::default()), "start:"),
    ] {
        let (tx, events) = c
            .exec_interactive(pb::ExecStart {
                request: Some(sh(&format!("sleep 65.{tag}"))),
                tty: false,
                size: None,
            })
            .await
            .unwrap();
        tx.send(pb::ExecInput { input: Some(input) }).await.unwrap();
        let err = collect(events).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    wait_gone(&format!("sleep 65.{tag}"), Duration::from_secs(5)).await;

    // First message must be start.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::ExecInput {
        input: Some(Input::Stdin(Bytes::from_static(b"x"))),
    })
    .await
    .unwrap();
    let err = c
        .processes()
        .exec_interactive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("start:"), "{}", err.message());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_roundtrip_and_errors() {
    let gw = Gateway::start(AuthMode::None, Duration::from_secs(5)).await;
    let c = gw.client(None).await;
    let dir = format!("/tmp/airlock-gw-files-{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);

    c.make_dir("ns", "box", &format!("{dir}/sub"), true, 0o750)
        .await
        .unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let size = c
        .upload(
            "ns",
            "box",
            &format!("{dir}/sub/f.bin"),
            0o600,
            false,
            std::io::Cursor::new(data.clone()),
        )
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    let back = c
        .download_bytes("ns", "box", &format!("{dir}/sub/f.bin"))
        .await
        .unwrap();
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));

    let st = c
        .stat("ns", "box", &format!("{dir}/sub/f.bin"))
        .await
        .unwrap();
    assert_eq!(
        (st.size, st.mode, st.r#type),
        (data.len() as u64, 0o600, pb::FileType::File as i32)
    );
    assert_eq!(st.name, format!("{dir}/sub/f.bin"));
    let ls = c
        .list_dir("ns", "box", &format!("{dir}/sub"))
        .await
        .unwrap();
    assert_eq!(ls.len(), 1);
    assert_eq!(
        (ls[0].name.as_str(), ls[0].size),
        ("f.bin", data.len() as u64)
    );
    let d = c.stat("ns", "box", &format!("{dir}/sub")).await.unwrap();
    assert_eq!((d.r#type, d.mode), (pb::FileType::Dir as i32, 0o750));

    // Error codes.
    let e = c
        .stat("ns", "box", &format!("{dir}/nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .download_bytes("ns", "box", &format!("{dir}/nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .download_bytes("ns", "box", &format!("{dir}/sub"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = c.remove("ns", "box", &dir, false).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = c
        .upload_bytes(
            "ns",
            "box",
            &format!("{dir}/missing/x"),
            0,
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c.stat("ns", "box", "relative").await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "path: must be absolute")
    );
    let e = c
        .make_dir("ns", "box", "/x", false, 0o17777)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("mode:"));

    // An aborted upload leaves the old file untouched.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::UploadRequest {
        part: Some(pb::upload_request::Part::Header(pb::UploadHeader {
            sandbox: airlock_api::client::sandbox_ref("ns", "box"),
            path: format!("{dir}/sub/f.bin"),
            mode: 0,
            parents: false,
        })),
    })
    .await
    .unwrap();
    tx.send(pb::UploadRequest {
        part: Some(pb::upload_request::Part::Chunk(Bytes::from_static(
            b"partial",
        ))),
    })
    .await
    .unwrap();
    tx.send(pb::UploadRequest {
        part: Some(pb::upload_request::Part::Header(pb::UploadHeader::default())),
    })
    .await
    .unwrap();
    let e = c
        .files()
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("header:"), "{}", e.message());
    assert_eq!(
        std::fs::read(format!("{dir}/sub/f.bin")).unwrap().len(),
        data.len()
    );
    // The agent behind the refused upload removes its temporary file when its stdin ends.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let leftovers: Vec<_> = std::fs::read_dir(format!("{dir}/sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if leftovers.len() == 1 {
            break;
        }
        assert!(Instant::now() < end, "temporary files left: {leftovers:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    c.remove("ns", "box", &dir, true).await.unwrap();
    assert!(!std::path::Path::new(&dir).exists());
    let e = c.remove("ns", "box", "/", true).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_readiness_and_static_auth() {
    let tokens = StaticTokens::parse("token-team-a team-a\ntoken-admin *\n").unwrap();
    let gw = Gateway::start(AuthMode::Static(tokens), Duration::from_secs(5)).await;

    // No token / bad token: UNAUTHENTICATED. Health needs none.
    let anon = gw.client(None).await;
    let e = anon
        .exec_collect(AirlockClient::argv("team-a", "box", ["true"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = gw
        .client(Some("wrong-token"))
        .await
        .get_sandbox("team-a", "box")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let channel = tonic::transport::Endpoint::from_shared(gw.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "airlock.v1.Processes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Reflection needs no token either and lists the API.
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let channel = tonic::transport::Endpoint::from_shared(gw.addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut resp = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            resp.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected a service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for want in [
            "airlock.v1.Sandboxes",
            "airlock.v1.Processes",
            "airlock.v1.Files",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
    }

    // Namespace A allowed, B denied naming namespace and verb.
    let a = gw.client(Some("token-team-a")).await;
    assert_eq!(
        a.exec_collect(AirlockClient::argv("team-a", "box", ["true"]))
            .await
            .unwrap()
            .exit_code,
        0
    );
    let e = a
        .exec_collect(AirlockClient::argv("team-b", "box", ["true"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message()
            .contains("create sandboxes/exec in namespace team-b"),
        "{}",
        e.message()
    );
    let e = a.list_dir("team-b", "box", "/").await.unwrap_err();
    assert!(
        e.message()
            .contains("get sandboxes/files in namespace team-b"),
        "{}",
        e.message()
    );

    let admin = gw.client(Some("token-admin")).await;
    // Readiness.
    let e = admin
        .exec_collect(AirlockClient::argv("x", "missing", ["true"]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "sandbox x/missing not found")
    );
    let e = admin
        .exec_collect(AirlockClient::argv("x", "pending", ["true"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().starts_with("sandbox x/pending is not ready"),
        "{}",
        e.message()
    );
    let e = admin.stat("x", "pending", "/").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // A Sandbox whose status names a pod it does not own: nothing runs there, not even a stat.
    let e = admin
        .exec_collect(AirlockClient::argv("x", "hijacked", ["true"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.message(),
        "sandbox x/hijacked: pod victim is controlled by Sandbox victim (uid uid-victim), not by this sandbox (uid uid-hijacked); refusing to run anything in it"
    );
    let e = admin.stat("x", "hijacked", "/").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        !STARTED_IN.lock().unwrap().iter().any(|p| p == "victim"),
        "something was started in the pod the sandbox does not own"
    );
    // Control: its neighbour with a pod of its own runs.
    admin
        .exec_collect(AirlockClient::argv("x", "box", ["true"]))
        .await
        .unwrap();
    assert!(STARTED_IN.lock().unwrap().iter().any(|p| p == "box"));

    // Validation through the server.
    let cases: Vec<(pb::ExecRequest, &str)> = vec![
        (
            AirlockClient::argv("x", "box", Vec::<String>::new()),
            "argv: must not be empty",
        ),
        (
            AirlockClient::argv("x", "", ["true"]),
            "sandbox.name: must not be empty",
        ),
        (
            pb::ExecRequest {
                timeout: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..AirlockClient::argv("x", "box", ["true"])
            },
            "timeout: must not be negative",
        ),
        (
            pb::ExecRequest {
                cwd: "tmp".into(),
                ..AirlockClient::argv("x", "box", ["true"])
            },
            "cwd: must be absolute",
        ),
        (
            pb::ExecRequest {
                command: None,
                ..AirlockClient::argv("x", "box", ["true"])
            },
            "command: set argv or shell",
        ),
    ];
    for (req, msg) in cases {
        let e = admin.exec(req).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, msg));
    }
    let e = admin
        .create_sandbox(pb::CreateSandboxRequest {
            source: Some(pb::create_sandbox_request::Source::Template("t".into())),
            working_dir: "/w".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "working_dir: cannot be set with template: the SandboxTemplate sets it")
    );
    let e = admin
        .create_sandbox(pb::CreateSandboxRequest {
            ttl_seconds: -5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = admin.extend_sandbox("x", "box", 0).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "add_seconds: must be positive")
    );

    let text = gw.metrics.encode();
    assert!(text.contains("code=\"UNAUTHENTICATED\""), "{text}");
    assert!(text.contains("code=\"PERMISSION_DENIED\""), "{text}");
    assert!(
        text.contains("method=\"airlock.v1.Processes/Exec\",code=\"OK\""),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_cuts_off() {
    let gw = Gateway::start(AuthMode::None, Duration::from_secs(1)).await;
    let c = gw.client(None).await;
    // A short call in flight finishes normally during the drain.
    let tag = std::process::id();
    let short_sleep = format!("0.5{tag}");
    let short = tokio::spawn({
        let (c, line) = (c.clone(), format!("sleep {short_sleep}; echo done"));
        async move { c.exec_collect(sh(&line)).await }
    });
    let mut long = c.exec(sh(&format!("sleep 66.{tag}"))).await.unwrap();
    // Both calls are in flight (their commands run) when the shutdown begins.
    wait_running(&["sleep", &short_sleep], Duration::from_secs(5)).await;
    wait_running(&["sleep", &format!("66.{tag}")], Duration::from_secs(5)).await;
    let t0 = Instant::now();
    gw.shutdown().await;
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert_eq!(short.await.unwrap().unwrap().stdout, b"done\n");
    let mut err = None;
    loop {
        match long.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(err.is_some(), "the long call ends with an error");
    wait_gone(&format!("sleep 66.{tag}"), Duration::from_secs(5)).await;
}

/// TLS without a cluster: the gateway serves a certificate signed by a CA made here; a client
/// trusting that CA works, one that does not is refused, plaintext gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_and_clients_verify() {
    use airlock_api::client::{ClientError, ClientTls};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("airlock-la-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = Config::new(AuthMode::None).with_client(fake_kube());
    config.agent_path = agent_bin().display().to_string();
    config.pod_exec = Some(Arc::new(LocalExec(agent_bin().display().to_string())));
    config.tls = Some(airlock_exec_gateway::tls::TlsFiles::new(
        dir.join("tls.crt"),
        dir.join("tls.key"),
    ));
    let (stop, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(config, listener, async move {
        let _ = rx.await;
    }));

    let https = format!("https://127.0.0.1:{port}");
    let trusted = ClientTls {
        ca_pem: Some(ca.pem().into_bytes()),
        server_name: None,
    };
    let c = AirlockClient::connect_with(&https, None, trusted.clone())
        .await
        .expect("TLS connection trusting the CA");
    let out = c
        .exec_collect(AirlockClient::argv("x", "box", ["echo", "over tls"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"over tls\n");
    // Unknown CA (the system's roots): refused at the handshake.
    assert!(AirlockClient::connect(&https, None).await.is_err());
    // Plaintext against the TLS port: no answer.
    let plain = format!("http://127.0.0.1:{port}");
    if let Ok(p) = AirlockClient::connect(&plain, None).await {
        assert!(p.get_sandbox("x", "box").await.is_err());
    }
    // A CA with an http:// address is a mistake, not silently plaintext.
    assert!(matches!(
        AirlockClient::connect_with(&plain, None, trusted).await,
        Err(ClientError::TlsWithoutHttps(_))
    ));
    let _ = stop.send(());
    done.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
