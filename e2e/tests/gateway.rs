//! The exec gateway against the local cluster: the gateway runs in-process (`serve` on a loopback
//! port) with the cluster in KUBECONFIG, `kubernetes` auth mode (TokenReview +
//! SubjectAccessReview), and every call made with a ServiceAccount token obtained through the
//! TokenRequest API.
//!
//! Assumes the CRD is installed and the operator runs against the cluster (the Makefile starts
//! it), so Sandboxes become Ready.
//!
//! Over 600 lines: the gateway's cluster scenarios side by side on one in-process gateway harness.
//! Left whole in the layout change (issue 11) because other branches edit it at the same time;
//! splitting the scenarios by role (lifecycle, exec, files, create validation) is the next step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_e2e::sandboxes::{in_process_gateway, token_for};
use airlock_e2e::{GVISOR, SANDBOX_IMAGE, TestNamespace, client};
use airlock_api::bytes::Bytes;
use airlock_api::client::{AirlockClient, ExecOutput, collect, sandbox_ref};
use airlock_api::proto::v1 as pb;
use airlock_api::tonic::Code;
use airlock_api::prost_types;
use kube::Client;
use kube::api::Api;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The gateway, serving on 127.0.0.1 until dropped.
struct Gateway {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn gateway(kube: &Client, default_ns: &str) -> Gateway {
    let (port, stop) = in_process_gateway(kube, default_ns, |_| {}).await;
    Gateway {
        addr: format!("http://127.0.0.1:{port}"),
        stop: Some(stop),
    }
}

/// Namespace + gateway + authorized client.
struct Env {
    ns: TestNamespace,
    _gw: Gateway,
    c: AirlockClient,
    addr: String,
    token: String,
}

async fn env(prefix: &str) -> Env {
    let kube = client().await;
    let ns = TestNamespace::new(&kube, prefix).await;
    let gw = gateway(&kube, &ns.name).await;
    let token = token_for(&kube, &ns.name, "tester").await;
    let addr = gw.addr.clone();
    let c = AirlockClient::connect(&addr, Some(token.clone()))
        .await
        .expect("connect to the gateway");
    Env {
        ns,
        _gw: gw,
        c,
        addr,
        token,
    }
}

fn sandbox_request(ns: &str, name: &str, cpu: &str, memory: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        namespace: ns.into(),
        name: name.into(),
        source: Some(pb::create_sandbox_request::Source::Image(
            SANDBOX_IMAGE.into(),
        )),
        resources: Some(pb::Resources {
            cpu: cpu.into(),
            memory: memory.into(),
            ephemeral_storage: "512Mi".into(),
        }),
        runtime_class_name: GVISOR.into(),
        ttl_seconds: 1800,
        ..Default::default()
    }
}

async fn ready_sandbox(c: &AirlockClient, ns: &str, name: &str, cpu: &str) -> pb::Sandbox {
    let t0 = Instant::now();
    let sb = c
        .create_sandbox_ready(sandbox_request(ns, name, cpu, "256Mi"), READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("creating sandbox {ns}/{name} and waiting for it: {e:?}"));
    assert!(sb.ready, "{sb:?}");
    assert_eq!(sb.phase, pb::Phase::Ready as i32);
    eprintln!("sandbox {ns}/{name} ready after {:?}", t0.elapsed());
    sb
}

fn argv(ns: &str, name: &str, a: &[&str]) -> pb::ExecRequest {
    AirlockClient::argv(ns, name, a.iter().copied())
}

fn text(o: &ExecOutput) -> (String, String, i32) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.exit_code,
    )
}

/// How many processes in the sandbox run `argv` exactly (scanning /proc with python3, whose own
/// command line contains the pattern only in escaped form).
async fn count_processes(c: &AirlockClient, ns: &str, name: &str, argv: &[&str]) -> usize {
    let pattern: String = argv.iter().map(|a| format!("{a}\\x00")).collect();
    let code = format!(
        "import os\nn=0\nfor p in os.listdir('/proc'):\n  if p.isdigit():\n    try:\n      n += open('/proc/'+p+'/cmdline','rb').read() == b'{pattern}'\n    except OSError: pass\nprint(n)"
    );
    let out = c
        .exec_collect(argv_py(ns, name, &code))
        .await
        .expect("scanning /proc");
    assert_eq!(out.exit_code, 0, "{:?}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}

fn argv_py(ns: &str, name: &str, code: &str) -> pb::ExecRequest {
    AirlockClient::argv(ns, name, ["python3", "-c", code])
}

async fn wait_no_processes(
    c: &AirlockClient,
    ns: &str,
    name: &str,
    argv: &[&str],
    within: Duration,
) {
    let end = Instant::now() + within;
    loop {
        let n = count_processes(c, ns, name, argv).await;
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < end,
            "{n} processes {argv:?} still running in {ns}/{name}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until exactly one process in the sandbox runs `argv`: proof that a command started,
/// before a test checks that it is gone.
async fn wait_processes(c: &AirlockClient, ns: &str, name: &str, argv: &[&str], within: Duration) {
    let end = Instant::now() + within;
    loop {
        let n = count_processes(c, ns, name, argv).await;
        if n == 1 {
            return;
        }
        assert!(
            Instant::now() < end,
            "{n} processes {argv:?} in {ns}/{name}, want 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_exec_and_exit_codes() {
    let e = env("gw-basic").await;
    let (c, ns) = (&e.c, e.ns.name.as_str());
    let sb = ready_sandbox(c, ns, "basic", "200m").await;
    assert_eq!(
        (sb.namespace.as_str(), sb.name.as_str(), sb.image.as_str()),
        (ns, "basic", SANDBOX_IMAGE)
    );
    assert_eq!(sb.runtime_class_name, GVISOR);

    let out = c
        .exec_collect(argv(ns, "basic", &["python3", "-c", "print(1+1)"]))
        .await
        .unwrap();
    assert_eq!(text(&out), ("2\n".into(), "".into(), 0));
    let out = c
        .exec_collect(argv(
            ns,
            "basic",
            &[
                "python3",
                "-c",
                "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
            ],
        ))
        .await
        .unwrap();
    assert_eq!(text(&out), ("out\n".into(), "err\n".into(), 3));
    assert!(!out.timed_out && out.signal == 0);
    let out = c
        .exec_collect(AirlockClient::shell(ns, "basic", "echo $((6*7)) from $0"))
        .await
        .unwrap();
    assert_eq!(text(&out), ("42 from /bin/sh\n".into(), "".into(), 0));
    let mut req = argv(ns, "basic", &["sh", "-c", "cat; echo \"[$GREETING]\"; pwd"]);
    req.stdin = Some(Bytes::from_static(b"piped "));
    req.env.insert("GREETING".into(), "hello world".into());
    req.cwd = "/tmp".into();
    assert_eq!(
        text(&c.exec_collect(req).await.unwrap()),
        ("piped [hello world]\n/tmp\n".into(), "".into(), 0)
    );
    let out = c
        .exec_collect(argv(ns, "basic", &["no-such-program"]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 127, "{:?}", text(&out));
    let rc = c
        .run_code(pb::RunCodeRequest {
            sandbox: sandbox_ref(ns, "basic"),
            language: pb::Language::Python as i32,
            code: "import sys\nprint(sys.version_info[0])".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(text(&rc), ("3\n".into(), "".into(), 0));
    let rc = c
        .run_code(pb::RunCodeRequest {
            sandbox: sandbox_ref(ns, "basic"),
            language: pb::Language::Shell as i32,
            code: "echo $((2+3)); exit 4".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(text(&rc), ("5\n".into(), "".into(), 4));
    // Node in an image without node: exit 127 (as a shell's "not found") and the spawn error
    // naming the program on stderr, not a hang.
    let rc = c
        .run_code(pb::RunCodeRequest {
            sandbox: sandbox_ref(ns, "basic"),
            language: pb::Language::Node as i32,
            code: "console.log(1+1)".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (out, err, code) = text(&rc);
    assert_eq!((out.as_str(), code), ("", 127), "{err}");
    assert!(err.contains("node") && err.contains("No such file or directory"), "{err:?}");

    // Activity was recorded on the Sandbox.
    let kube = client().await;
    let api: Api<airlock_crds::Sandbox> = Api::namespaced(kube, ns);
    let obj = api.get("basic").await.unwrap();
    let stamp = obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(airlock_crds::LAST_ACTIVITY_ANNOTATION))
        .cloned();
    assert!(
        stamp
            .as_deref()
            .is_some_and(|s| s.parse::<k8s_openapi::jiff::Timestamp>().is_ok()),
        "annotation: {stamp:?}"
    );
    let fields = obj.metadata.managed_fields.unwrap_or_default();
    assert!(
        fields
            .iter()
            .any(|f| f.manager.as_deref() == Some("airlock-exec-gateway")),
        "field manager"
    );

    // Get / list / extend / delete.
    let got = c.get_sandbox(ns, "basic").await.unwrap();
    assert_eq!(got.ttl_seconds, 1800);
    let listed = c.list_sandboxes(ns, "").await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["basic"]
    );
    assert!(
        c.list_sandboxes(ns, "team=nobody")
            .await
            .unwrap()
            .is_empty()
    );
    let extended = c.extend_sandbox(ns, "basic", 600).await.unwrap();
    // The extension is recorded apart from ttlSeconds (which a GitOps tool may own).
    assert_eq!((extended.ttl_seconds, extended.extension_seconds), (1800, 600));
    assert_eq!(
        extended.ttl_expires_at.as_ref().map(|t| t.seconds),
        extended.created_at.as_ref().map(|t| t.seconds + 2400)
    );
    let e404 = c.get_sandbox(ns, "nope").await.unwrap_err();
    assert_eq!(
        (e404.code(), e404.message()),
        (
            Code::NotFound,
            format!("sandbox {ns}/nope not found").as_str()
        )
    );
    let e404 = c
        .exec_collect(argv(ns, "nope", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(e404.code(), Code::NotFound);
    c.delete_sandbox(ns, "basic").await.unwrap();
    e.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_cancel_leave_no_process() {
    let e = env("gw-kill").await;
    let (c, ns) = (&e.c, e.ns.name.as_str());
    ready_sandbox(c, ns, "kill", "200m").await;

    // Timeout: SIGKILL to the group at 10 s; child and grandchild, both seen running before
    // it, are gone after it.
    let mut req = AirlockClient::shell(
        ns,
        "kill",
        "sleep 60.125 & sleep 60.25 & echo started; wait",
    );
    req.timeout = Some(prost_types::Duration {
        seconds: 10,
        nanos: 0,
    });
    let t0 = Instant::now();
    let mut s = c.exec(req).await.unwrap();
    loop {
        let ev = s.message().await.unwrap().expect("output before the end");
        if matches!(ev.event, Some(pb::exec_event::Event::Stdout(_))) {
            break;
        }
    }
    wait_processes(c, ns, "kill", &["sleep", "60.125"], Duration::from_secs(8)).await;
    wait_processes(c, ns, "kill", &["sleep", "60.25"], Duration::from_secs(8)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the sleeps were seen only after the 10 s timeout"
    );
    let out = collect(s).await.unwrap();
    let took = t0.elapsed();
    assert!(out.timed_out, "{out:?}");
    assert_eq!((out.exit_code, out.signal), (137, 9));
    // At the timeout: not before it, and not when the 60 s sleeps would have ended.
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(50),
        "took {took:?}"
    );
    wait_no_processes(c, ns, "kill", &["sleep", "60.125"], Duration::from_secs(5)).await;
    wait_no_processes(c, ns, "kill", &["sleep", "60.25"], Duration::from_secs(5)).await;

    // Cancel: the caller drops the stream; the command dies.
    let mut s = c
        .exec(AirlockClient::shell(
            ns,
            "kill",
            "echo up; sleep 61.125 & sleep 61.25; wait",
        ))
        .await
        .unwrap();
    loop {
        let ev = s.message().await.unwrap().expect("output before the end");
        if matches!(ev.event, Some(pb::exec_event::Event::Stdout(_))) {
            break;
        }
    }
    wait_processes(c, ns, "kill", &["sleep", "61.125"], Duration::from_secs(10)).await;
    wait_processes(c, ns, "kill", &["sleep", "61.25"], Duration::from_secs(10)).await;
    drop(s);
    wait_no_processes(c, ns, "kill", &["sleep", "61.125"], Duration::from_secs(10)).await;
    wait_no_processes(c, ns, "kill", &["sleep", "61.25"], Duration::from_secs(10)).await;

    // A caller that disconnects entirely: its own connection (a client of its own, through a
    // relay on loopback) is closed under a running command while the caller still holds the
    // stream, as when its process dies or the network between goes. No RST_STREAM, no
    // cancellation: the gateway learns it only from the connection going away.
    let relay = airlock_e2e::gw::Relay::to(e.addr.trim_start_matches("http://").parse().unwrap()).await;
    let other = AirlockClient::connect(&relay.url(), Some(e.token.clone())).await.unwrap();
    let s = airlock_e2e::sandboxes::started(&other, ns, "kill", "echo up; sleep 63.125 & sleep 63.25; wait").await;
    wait_processes(c, ns, "kill", &["sleep", "63.125"], Duration::from_secs(10)).await;
    wait_processes(c, ns, "kill", &["sleep", "63.25"], Duration::from_secs(10)).await;
    assert_eq!(relay.cut(), 1, "the caller's one connection was open");
    // The caller sees its call broken, not a clean end...
    let end = tokio::time::timeout(Duration::from_secs(30), airlock_e2e::sandboxes::drain(s))
        .await
        .expect("the cut stream ended");
    assert!(end.is_err(), "a cut connection looked like a clean end: {end:?}");
    drop(other);
    // ...and the command tree is gone (seen through the test's own, unrelated connection).
    wait_no_processes(c, ns, "kill", &["sleep", "63.125"], Duration::from_secs(20)).await;
    wait_no_processes(c, ns, "kill", &["sleep", "63.25"], Duration::from_secs(20)).await;
    e.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_output_and_files_are_intact() {
    let e = env("gw-bytes").await;
    let (c, ns) = (&e.c, e.ns.name.as_str());
    ready_sandbox(c, ns, "bytes", "500m").await;

    // 100 MiB of output, varied bytes, read slowly at first; the sandbox reports its own hash.
    const TOTAL: usize = 100 * 1024 * 1024;
    let script = format!(
        "import hashlib,sys,os\nh=hashlib.sha256()\nblock=bytes(range(256))*256\nout=sys.stdout.buffer\nfor i in range({n}):\n  b=block[i%256:]+block[:i%256]\n  h.update(b)\n  out.write(b)\nout.flush()\nprint(h.hexdigest(),file=sys.stderr)",
        n = TOTAL / 65536
    );
    let mut s = c.exec(argv_py(ns, "bytes", &script)).await.unwrap();
    let mut hasher = Sha256::new();
    let (mut n, mut msgs, mut stderr, mut code) = (0usize, 0usize, Vec::new(), None);
    let t0 = Instant::now();
    while let Some(ev) = s.message().await.unwrap() {
        match ev.event {
            Some(pb::exec_event::Event::Stdout(b)) => {
                hasher.update(&b);
                n += b.len();
                msgs += 1;
                if msgs <= 40 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Some(pb::exec_event::Event::Stderr(b)) => stderr.extend_from_slice(&b),
            Some(pb::exec_event::Event::Exited(x)) => code = Some(x.exit_code),
            _ => {}
        }
    }
    eprintln!("100 MiB in {:?} ({msgs} messages)", t0.elapsed());
    assert_eq!(
        code,
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&stderr)
    );
    assert_eq!(n, TOTAL);
    assert_eq!(
        String::from_utf8_lossy(&stderr).trim(),
        hex::encode(hasher.finalize())
    );

    // 10 MiB upload and download.
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let local = hex::encode(Sha256::digest(&data));
    let size = c
        .upload(
            ns,
            "bytes",
            "/tmp/up/data.bin",
            0o640,
            true,
            std::io::Cursor::new(data.clone()),
        )
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    let remote = c
        .exec_collect(argv(ns, "bytes", &["sha256sum", "/tmp/up/data.bin"]))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&remote.stdout)
            .split_whitespace()
            .next(),
        Some(local.as_str())
    );
    let back = c
        .download_bytes(ns, "bytes", "/tmp/up/data.bin")
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&back)), local);

    // list and stat agree.
    c.upload_bytes(
        ns,
        "bytes",
        "/tmp/up/small.txt",
        0,
        Bytes::from_static(b"hello"),
    )
    .await
    .unwrap();
    c.make_dir(ns, "bytes", "/tmp/up/sub/deeper", true, 0o700)
        .await
        .unwrap();
    let listing = c.list_dir(ns, "bytes", "/tmp/up").await.unwrap();
    assert_eq!(
        listing.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["data.bin", "small.txt", "sub"]
    );
    for entry in &listing {
        let st = c
            .stat(ns, "bytes", &format!("/tmp/up/{}", entry.name))
            .await
            .unwrap();
        assert_eq!(
            (
                st.r#type,
                st.size,
                st.mode,
                st.mtime.as_ref().map(|t| t.seconds)
            ),
            (
                entry.r#type,
                entry.size,
                entry.mode,
                entry.mtime.as_ref().map(|t| t.seconds)
            )
        );
    }
    assert_eq!(listing[0].mode, 0o640);
    assert_eq!(listing[1].mode, 0o644);
    assert_eq!(listing[2].r#type, pb::FileType::Dir as i32);
    assert_eq!(
        c.stat(ns, "bytes", "/tmp/up/sub/deeper")
            .await
            .unwrap()
            .mode,
        0o700
    );

    // Errors.
    assert_eq!(
        c.stat(ns, "bytes", "/tmp/up/none")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        c.download_bytes(ns, "bytes", "/tmp/up/none")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        c.download_bytes(ns, "bytes", "/tmp/up/sub")
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        c.remove(ns, "bytes", "/tmp/up/sub", false)
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    c.remove(ns, "bytes", "/tmp/up", true).await.unwrap();
    assert_eq!(
        c.list_dir(ns, "bytes", "/tmp/up").await.unwrap_err().code(),
        Code::NotFound
    );
    e.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_stdin_and_signals() {
    use pb::exec_input::Input;
    let e = env("gw-tty").await;
    let (c, ns) = (&e.c, e.ns.name.as_str());
    ready_sandbox(c, ns, "inter", "200m").await;

    // A line-by-line conversation with python.
    let code =
        "import sys\nfor line in sys.stdin:\n  print('got', line.strip().upper(), flush=True)";
    let (tx, mut events) = c
        .exec_interactive(pb::ExecStart {
            request: Some(argv_py(ns, "inter", code)),
            tty: false,
            size: None,
        })
        .await
        .unwrap();
    for word in ["alpha", "beta"] {
        tx.send(pb::ExecInput {
            input: Some(Input::Stdin(Bytes::from(format!("{word}\n")))),
        })
        .await
        .unwrap();
        let want = format!("got {}\n", word.to_uppercase());
        let mut got = Vec::new();
        while got.len() < want.len() {
            match events.message().await.unwrap().expect("an answer").event {
                Some(pb::exec_event::Event::Stdout(b)) => got.extend_from_slice(&b),
                Some(pb::exec_event::Event::Exited(x)) => panic!("exited early: {x:?}"),
                _ => {}
            }
        }
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
    tx.send(pb::ExecInput {
        input: Some(Input::CloseStdin(pb::CloseStdin {})),
    })
    .await
    .unwrap();
    let rest = collect(events).await.unwrap();
    assert_eq!((rest.exit_code, rest.stdout.len()), (0, 0));

    // SIGTERM to the group.
    let (tx, events) = c
        .exec_interactive(pb::ExecStart {
            request: Some(AirlockClient::shell(ns, "inter", "echo ready; sleep 62.5")),
            tty: false,
            size: None,
        })
        .await
        .unwrap();
    let mut events = events;
    loop {
        if let Some(pb::exec_event::Event::Stdout(_)) =
            events.message().await.unwrap().unwrap().event
        {
            break;
        }
    }
    wait_processes(c, ns, "inter", &["sleep", "62.5"], Duration::from_secs(10)).await;
    tx.send(pb::ExecInput {
        input: Some(Input::Signal(pb::Signal { number: 15 })),
    })
    .await
    .unwrap();
    let out = collect(events).await.unwrap();
    assert_eq!((out.exit_code, out.signal, out.timed_out), (143, 15, false));
    wait_no_processes(c, ns, "inter", &["sleep", "62.5"], Duration::from_secs(5)).await;

    // A terminal: size and isatty.
    let (_tx, events) = c
        .exec_interactive(pb::ExecStart {
            request: Some(AirlockClient::shell(
                ns,
                "inter",
                "stty size; test -t 1 && echo isatty",
            )),
            tty: true,
            size: Some(pb::Resize {
                cols: 120,
                rows: 40,
            }),
        })
        .await
        .unwrap();
    let out = collect(events).await.unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("40 120") && t.contains("isatty"), "{t:?}");

    // Resize mid-session: the running process reads the new size from its terminal and is told
    // by SIGWINCH (gVisor does not send it on a size change; the agent does). It prints the size
    // it sees and how many SIGWINCH it got for every line it reads.
    let code = "import os, signal, sys\nn = 0\ndef winch(*_):\n  global n\n  n += 1\nsignal.signal(signal.SIGWINCH, winch)\nfor line in sys.stdin:\n  c, r = os.get_terminal_size(1)\n  print(f'size {c}x{r} winch {n}', flush=True)\n  if line.strip() == 'done':\n    break\nprint('bye', flush=True)";
    let (tx, mut events) = c
        .exec_interactive(pb::ExecStart {
            request: Some(argv_py(ns, "inter", code)),
            tty: true,
            size: Some(pb::Resize { cols: 100, rows: 30 }),
        })
        .await
        .unwrap();
    let stdin = |s: &'static [u8]| pb::ExecInput {
        input: Some(Input::Stdin(Bytes::from_static(s))),
    };
    let mut seen = String::new();
    tx.send(stdin(b"a\n")).await.unwrap();
    until_output(&mut events, &mut seen, "size 100x30").await;
    // The resize frame reaches the agent before the next line (control frames go first).
    tx.send(pb::ExecInput {
        input: Some(Input::Resize(pb::Resize { cols: 132, rows: 43 })),
    })
    .await
    .unwrap();
    tx.send(stdin(b"done\n")).await.unwrap();
    until_output(&mut events, &mut seen, "size 132x43").await;
    eprintln!("terminal output around the resize: {seen:?}");
    let winch = seen
        .split("size 132x43 winch ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(winch.is_some_and(|n| n >= 1), "the process got no SIGWINCH for the resize: {seen:?}");
    let rest = collect(events).await.unwrap();
    seen.push_str(&String::from_utf8_lossy(&rest.stdout));
    assert_eq!(rest.exit_code, 0, "{seen}");
    assert!(seen.contains("bye"), "{seen:?}");
    e.ns.cleanup().await;
}

/// Reads stdout events into `seen` until it contains `want` (at most 60 s).
async fn until_output(
    events: &mut airlock_api::tonic::Streaming<pb::ExecEvent>,
    seen: &mut String,
    want: &str,
) {
    let wait = async {
        while !seen.contains(want) {
            match events.message().await.unwrap().map(|e| e.event) {
                Some(Some(pb::exec_event::Event::Stdout(b))) => {
                    seen.push_str(&String::from_utf8_lossy(&b))
                }
                Some(Some(pb::exec_event::Event::Exited(x))) => {
                    panic!("exited before {want:?}: {x:?}; output {seen:?}")
                }
                Some(_) => {}
                None => panic!("stream ended before {want:?}; output {seen:?}"),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), wait).await.is_err() {
        panic!("no {want:?} within 60 s; output {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_execs_are_byte_exact() {
    let e = env("gw-many").await;
    let ns = e.ns.name.clone();
    let c = Arc::new(e.c.clone());
    let names = ["many-a", "many-b", "many-c"];
    let created = futures::future::join_all(names.iter().map(|n| {
        let (c, ns) = (c.clone(), ns.clone());
        async move { ready_sandbox(&c, &ns, n, "150m").await }
    }))
    .await;
    assert_eq!(created.len(), 3);

    let t0 = Instant::now();
    let runs = futures::future::join_all((0..50).map(|i| {
        let (c, ns) = (c.clone(), ns.clone());
        let name = names[i % names.len()];
        async move {
            // Each exec prints its own deterministic 200 KB on stdout and a tag on stderr.
            let code = format!("import sys\nsys.stdout.write(''.join('%d-%d\\n' % ({i}, k) for k in range(20000)))\nsys.stderr.write('tag-{i}')\nsys.exit({i} % 7)");
            let out = c.exec_collect(argv_py(&ns, name, &code)).await.unwrap_or_else(|e| panic!("exec {i}: {e:?}"));
            let want: String = (0..20000).map(|k| format!("{i}-{k}\n")).collect();
            assert!(out.stdout == want.as_bytes(), "exec {i} on {name}: stdout differs ({} vs {} bytes)", out.stdout.len(), want.len());
            assert_eq!(String::from_utf8_lossy(&out.stderr), format!("tag-{i}"));
            assert_eq!(out.exit_code, (i % 7) as i32);
        }
    }))
    .await;
    assert_eq!(runs.len(), 50);
    eprintln!("50 concurrent execs in {:?}", t0.elapsed());
    e.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_per_namespace() {
    let kube = client().await;
    let a = TestNamespace::new(&kube, "gw-auth-a").await;
    let b = TestNamespace::new(&kube, "gw-auth-b").await;
    let gw = gateway(&kube, &a.name).await;
    let token = token_for(&kube, &a.name, "alice").await;

    // No token, garbage token: UNAUTHENTICATED.
    let anon = AirlockClient::connect(&gw.addr, None).await.unwrap();
    let err = anon.list_sandboxes(&a.name, "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let bad = AirlockClient::connect(&gw.addr, Some("not-a-real-token".into()))
        .await
        .unwrap();
    assert_eq!(
        bad.list_sandboxes(&a.name, "").await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Allowed in A, denied in B (naming namespace and verb).
    let alice = AirlockClient::connect(&gw.addr, Some(token)).await.unwrap();
    assert!(alice.list_sandboxes(&a.name, "").await.unwrap().is_empty());
    let err = alice.list_sandboxes(&b.name, "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("list sandboxes in namespace {}", b.name)),
        "{}",
        err.message()
    );
    let err = alice
        .exec_collect(argv(&b.name, "x", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains(&format!("create sandboxes/exec in namespace {}", b.name)),
        "{}",
        err.message()
    );
    let err = alice
        .create_sandbox(sandbox_request(&b.name, "x", "100m", "128Mi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = alice.stat(&b.name, "x", "/").await.unwrap_err();
    assert!(
        err.message().contains("get sandboxes/files"),
        "{}",
        err.message()
    );

    // The default namespace of this gateway is A.
    assert!(alice.list_sandboxes("", "").await.is_ok());
    drop(gw);
    a.cleanup().await;
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_name_the_field() {
    let e = env("gw-invalid").await;
    let (c, ns) = (&e.c, e.ns.name.as_str());
    let bad_exec: Vec<(pb::ExecRequest, &str)> = vec![
        (argv(ns, "x", &[]), "argv: must not be empty"),
        (argv(ns, "", &["true"]), "sandbox.name: must not be empty"),
        (
            pb::ExecRequest {
                sandbox: None,
                ..argv(ns, "x", &["true"])
            },
            "sandbox: required",
        ),
        (
            pb::ExecRequest {
                timeout: Some(prost_types::Duration {
                    seconds: -2,
                    nanos: 0,
                }),
                ..argv(ns, "x", &["true"])
            },
            "timeout: must not be negative",
        ),
        (
            pb::ExecRequest {
                cwd: "relative/dir".into(),
                ..argv(ns, "x", &["true"])
            },
            "cwd: must be absolute",
        ),
        (
            pb::ExecRequest {
                command: None,
                ..argv(ns, "x", &["true"])
            },
            "command: set argv or shell",
        ),
    ];
    for (req, msg) in bad_exec {
        let err = c.exec(req).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, msg));
    }
    let err = c.stat(ns, "x", "etc/passwd").await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "path: must be absolute")
    );
    let err = c
        .create_sandbox(pb::CreateSandboxRequest {
            namespace: ns.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "image: set image or template")
    );
    let mut req = sandbox_request(ns, "x", "100m", "128Mi");
    req.ttl_seconds = -1;
    let err = c.create_sandbox(req).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "ttl_seconds: must not be negative")
    );
    let mut req = sandbox_request(ns, "x", "lots", "128Mi");
    req.name = "x".into();
    let err = c.create_sandbox(req).await.unwrap_err();
    assert!(
        err.message().starts_with("resources.cpu:"),
        "{}",
        err.message()
    );
    let err = c
        .create_sandbox(pb::CreateSandboxRequest {
            namespace: ns.into(),
            source: Some(pb::create_sandbox_request::Source::Template("t".into())),
            runtime_class_name: "gvisor".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "runtime_class_name: cannot be set with template: the SandboxTemplate sets it")
    );
    let err = c.extend_sandbox(ns, "x", -5).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "add_seconds: must be positive")
    );
    let err = c.list_sandboxes(ns, "a in (").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("label_selector:"),
        "{}",
        err.message()
    );
    // Missing sandbox: NOT_FOUND, for exec and files alike.
    assert_eq!(
        c.exec_collect(argv(ns, "ghost", &["true"]))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        c.list_dir(ns, "ghost", "/").await.unwrap_err().code(),
        Code::NotFound
    );
    e.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refusal_is_resource_exhausted_and_not_ready_is_failed_precondition() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    use kube::api::{Patch, PatchParams};
    let e = env("gw-quota").await;
    let (c, ns) = (&e.c, e.ns.name.as_str());
    // Take over the quota's hard.pods (the operator leaves fields others manage alone): no
    // sandbox pod fits.
    let quota = serde_json::json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "airlock-sandboxes"},
        "spec": {
            "hard": {"pods": "0"},
            "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["airlock-sandbox"]}]}
        }
    });
    Api::<ResourceQuota>::namespaced(client().await, ns)
        .patch(
            "airlock-sandboxes",
            &PatchParams::apply("airlock-e2e").force(),
            &Patch::Apply(&quota),
        )
        .await
        .expect("apply the test's quota");

    let err = c
        .create_sandbox_ready(
            sandbox_request(ns, "refused", "100m", "128Mi"),
            READY_TIMEOUT,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("quota"), "{}", err.message());
    // A failed create-and-wait leaves nothing behind.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        match c.get_sandbox(ns, "refused").await {
            Err(e) if e.code() == Code::NotFound => break,
            Err(e) => panic!("reading the refused sandbox: {e:?} (want NOT_FOUND once deleted)"),
            Ok(_) => {}
        }
        assert!(Instant::now() < end, "the refused sandbox was not deleted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Without waiting, the sandbox exists but is not ready: exec and files say so.
    let sb = c
        .create_sandbox(sandbox_request(ns, "waiting", "100m", "128Mi"))
        .await
        .unwrap();
    assert!(!sb.ready);
    let err = c
        .exec_collect(argv(ns, "waiting", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .starts_with(&format!("sandbox {ns}/waiting is not ready")),
        "{}",
        err.message()
    );
    assert_eq!(
        c.stat(ns, "waiting", "/").await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    e.ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_sandbox_runs_under_pod_security_restricted() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Patch, PatchParams, PostParams};
    let e = env("gw-nonroot").await;
    let (c, ns) = (&e.c, e.ns.name.as_str());
    let kube = client().await;
    let label = serde_json::json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    Api::<Namespace>::all(kube.clone())
        .patch(ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    // Control: the namespace refuses a pod that may run as root. Pod Security admission reads
    // namespace labels from its informer, so the new label takes effect a moment later: wait for
    // the refusal (server-side dry runs, nothing created), bounded.
    let root_pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(airlock_e2e::sleeper("root", GVISOR, serde_json::json!({})))
            .unwrap();
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(kube.clone(), ns);
    let dry = PostParams { dry_run: true, ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        match pods.create(&dry, &root_pod).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(Instant::now() < deadline, "Pod Security restricted never refused a pod without runAsNonRoot");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(refused.to_string().contains("restricted"), "{refused}");

    // uid 0 is refused by the gateway, naming the field.
    let mut req = sandbox_request(ns, "root", "100m", "256Mi");
    req.run_as_user = Some(0);
    let err = c.create_sandbox(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("run_as_user: "),
        "{}",
        err.message()
    );

    // A sandbox with a non-root user goes Ready there and runs as that user.
    let mut req = sandbox_request(ns, "nonroot", "100m", "256Mi");
    req.run_as_user = Some(1000);
    req.run_as_group = Some(3000);
    let sb = c
        .create_sandbox_ready(req, READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("creating the non-root sandbox: {e:?}"));
    assert!(sb.ready, "{sb:?}");
    let out = c
        .exec_collect(argv(ns, "nonroot", &["sh", "-c", "id -u; id -g"]))
        .await
        .unwrap();
    assert_eq!(text(&out), ("1000\n3000\n".into(), "".into(), 0));
    // PID 1 (the agent, unpacked into the memory volume by boot as that user) runs as it too.
    let out = c
        .exec_collect(argv(
            ns,
            "nonroot",
            &[
                "sh",
                "-c",
                // (gVisor answers EINVAL to stat(/proc/1): read the real uid from its status.)
                "tr '\\0' ' ' < /proc/1/cmdline; echo; awk '/^Uid:/{print $2}' /proc/1/status",
            ],
        ))
        .await
        .unwrap();
    let pid1 = airlock_e2e::release::agent_argv(&kube).await.join(" ");
    assert_eq!(text(&out).0, format!("{pid1} \n1000\n"));

    // Files in and out.
    let data = Bytes::from(
        (0..100_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let size = c
        .upload(
            ns,
            "nonroot",
            "/tmp/mine/data.bin",
            0o600,
            true,
            std::io::Cursor::new(data.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    let back = c
        .download_bytes(ns, "nonroot", "/tmp/mine/data.bin")
        .await
        .unwrap();
    assert_eq!(back, data);
    let owner = c
        .exec_collect(argv(
            ns,
            "nonroot",
            // (Not coreutils' stat: this gVisor answers its statx with EINVAL.)
            &[
                "python3",
                "-c",
                "import os; s = os.stat('/tmp/mine/data.bin'); print(f'{s.st_uid}:{s.st_gid}')",
            ],
        ))
        .await
        .unwrap();
    assert_eq!(text(&owner).0, "1000:3000\n");

    // The agent still reaps orphans as PID 1: a background child left behind ends as no zombie.
    let out = c
        .exec_collect(argv(ns, "nonroot", &["sh", "-c", "sleep 0.2 & exit 0"]))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let zombies = "import os\nn=0\nfor p in os.listdir('/proc'):\n  if p.isdigit():\n    try:\n      s=open('/proc/'+p+'/stat').read()\n    except OSError:\n      continue\n    n+=s.rsplit(')',1)[1].split()[0]=='Z'\nprint(n)";
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = c
            .exec_collect(argv_py(ns, "nonroot", zombies))
            .await
            .unwrap();
        if text(&out).0 == "0\n" {
            break;
        }
        assert!(Instant::now() < end, "zombies left: {:?}", text(&out));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    c.delete_sandbox(ns, "nonroot").await.unwrap();
}
