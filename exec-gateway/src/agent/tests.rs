//! Tests of the agent's command lines, framing and exit-status mapping.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

#[tokio::test]
async fn a_pipe_ends_with_its_connection_even_if_never_shut_down() {
    use tokio::io::AsyncReadExt;
    // The premise: a simplex pipe whose writer is dropped without shutdown never reaches EOF.
    let (mut bare, w) = tokio::io::simplex(64);
    drop(w);
    let mut sink = Vec::new();
    let never = tokio::time::timeout(Duration::from_millis(100), bare.read_to_end(&mut sink));
    assert!(
        never.await.is_err(),
        "a dropped simplex writer now gives EOF"
    );
    // As kube-client leaves them on a websocket error: written, then dropped, no shutdown.
    let (r, mut w) = tokio::io::simplex(64);
    let ended = CancellationToken::new();
    let mut pipe = UntilEnded::new(r, ended.clone());
    w.write_all(b"partial output").await.unwrap();
    let mut buf = [0u8; 64];
    let n = pipe.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"partial output");
    // Still connected: no EOF, the reader waits.
    let waiting = tokio::time::timeout(Duration::from_millis(100), pipe.read(&mut buf)).await;
    assert!(waiting.is_err(), "EOF before the connection ended");
    w.write_all(b" and the rest").await.unwrap();
    drop(w);
    ended.cancel();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), pipe.read_to_end(&mut rest))
        .await
        .expect("EOF once the connection ended")
        .unwrap();
    assert_eq!(rest, b" and the rest");
}

#[test]
fn frames_are_type_length_payload() {
    assert_eq!(&frame(FRAME_DATA, b"hi")[..], &[1, 0, 0, 0, 2, b'h', b'i']);
    assert_eq!(&close_frame()[..], &[2, 0, 0, 0, 0]);
    assert_eq!(&signal_frame(9)[..], &[3, 0, 0, 0, 4, 0, 0, 0, 9]);
    assert_eq!(&resize_frame(80, 24)[..], &[4, 0, 0, 0, 4, 0, 80, 0, 24]);
    assert_eq!(
        &resize_frame(0x1234, 0xffff)[..],
        &[4, 0, 0, 0, 4, 0x12, 0x34, 0xff, 0xff]
    );
}

#[test]
fn data_is_split_into_bounded_frames() {
    assert!(data_frames(b"").is_empty());
    let data = vec![7u8; MAX_DATA_FRAME * 2 + 3];
    let frames = data_frames(&data);
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].len(), 5 + MAX_DATA_FRAME);
    assert_eq!(&frames[2][..5], &[1, 0, 0, 0, 3]);
    let payload: Vec<u8> = frames.iter().flat_map(|f| f[5..].to_vec()).collect();
    assert_eq!(payload, data);
}

#[test]
fn exec_command_line() {
    let o = ExecOptions {
        cwd: Some("/work".into()),
        env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
        timeout_ms: Some(2500),
        tty: true,
        size: None,
        argv: vec!["python3".into(), "-c".into(), "print(1)".into()],
        fd3: None,
    };
    assert_eq!(
        exec_command("/.airlock/airlock-agent", &o),
        [
            "/.airlock/airlock-agent",
            "exec",
            "--cwd",
            "/work",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--timeout-ms",
            "2500",
            "--tty",
            "--",
            "python3",
            "-c",
            "print(1)"
        ]
    );
    let plain = ExecOptions {
        argv: vec!["--help".into()],
        ..Default::default()
    };
    assert_eq!(exec_command("a", &plain), ["a", "exec", "--", "--help"]);
}

#[test]
fn file_command_lines() {
    let a = "/.airlock/airlock-agent";
    assert_eq!(
        FileCommand::Put {
            path: "/x".into(),
            mode: Some(0o644),
            parents: true
        }
        .command(a),
        [a, "put", "/x", "--mode", "644", "--parents"]
    );
    assert_eq!(
        FileCommand::Put {
            path: "/x".into(),
            mode: None,
            parents: false
        }
        .command(a),
        [a, "put", "/x"]
    );
    assert_eq!(
        FileCommand::Get { path: "/x".into() }.command(a),
        [a, "get", "/x"]
    );
    assert_eq!(
        FileCommand::Ls { path: "/".into() }.command(a),
        [a, "ls", "/"]
    );
    assert_eq!(
        FileCommand::Stat { path: "/y".into() }.command(a),
        [a, "stat", "/y"]
    );
    assert_eq!(
        FileCommand::Rm {
            path: "/y".into(),
            recursive: true
        }
        .command(a),
        [a, "rm", "/y", "--recursive"]
    );
    assert_eq!(
        FileCommand::Rm {
            path: "/y".into(),
            recursive: false
        }
        .command(a),
        [a, "rm", "/y"]
    );
    assert_eq!(
        FileCommand::Mkdir {
            path: "/d".into(),
            parents: true,
            mode: Some(0o755)
        }
        .command(a),
        [a, "mkdir", "/d", "--parents", "--mode", "755"]
    );
    assert_eq!(
        FileCommand::Mkdir {
            path: "/d".into(),
            parents: false,
            mode: None
        }
        .command(a),
        [a, "mkdir", "/d"]
    );
}

fn status(
    s: &str,
    reason: Option<&str>,
    causes: Vec<(&str, &str)>,
    message: Option<&str>,
) -> K8sStatus {
    K8sStatus {
        status: Some(s.into()),
        reason: reason.map(Into::into),
        message: message.map(Into::into),
        details: Some(StatusDetails {
            causes: Some(
                causes
                    .into_iter()
                    .map(|(r, m)| StatusCause {
                        reason: Some(r.into()),
                        message: Some(m.into()),
                        field: None,
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn exit_codes_from_exec_status() {
    assert_eq!(
        exit_code_from_status(&status("Success", None, vec![], None)),
        Ok(0)
    );
    assert_eq!(
        exit_code_from_status(&status(
            "Failure",
            Some("NonZeroExitCode"),
            vec![("ExitCode", "3")],
            Some("command terminated with non-zero exit code")
        )),
        Ok(3)
    );
    assert_eq!(
        exit_code_from_status(&status(
            "Failure",
            Some("NonZeroExitCode"),
            vec![("ExitCode", "137")],
            None
        )),
        Ok(137)
    );
    assert_eq!(
        exit_code_from_status(&status(
            "Failure",
            Some("InternalError"),
            vec![],
            Some("exec: \"/nope\": no such file")
        )),
        Err("exec: \"/nope\": no such file".to_string())
    );
    assert_eq!(
        exit_code_from_status(&status(
            "Failure",
            Some("NonZeroExitCode"),
            vec![("ExitCode", "x")],
            None
        )),
        Err("NonZeroExitCode".to_string())
    );
    assert_eq!(
        exit_code_from_status(&K8sStatus::default()),
        Err("unknown failure".to_string())
    );
}

#[test]
fn signals_follow_the_128_plus_n_convention() {
    assert_eq!(signal_from_exit_code(0), 0);
    assert_eq!(signal_from_exit_code(1), 0);
    assert_eq!(signal_from_exit_code(128), 0);
    assert_eq!(signal_from_exit_code(137), 9);
    assert_eq!(signal_from_exit_code(143), 15);
    assert_eq!(signal_from_exit_code(192), 64);
    assert_eq!(signal_from_exit_code(255), 0);
    assert_eq!(signal_from_exit_code(-1), 0);
}

#[test]
fn file_exit_codes_map_to_grpc_codes() {
    use tonic::Code;
    let cases = [
        (2, Code::NotFound),
        (3, Code::PermissionDenied),
        (4, Code::FailedPrecondition),
        (5, Code::InvalidArgument),
        (1, Code::Internal),
        (127, Code::Internal),
    ];
    for (exit, code) in cases {
        let s = file_status("stat", "/x", exit, "boom\n");
        assert_eq!(s.code(), code, "exit {exit}");
        assert_eq!(s.message(), "stat /x: boom");
    }
    assert_eq!(
        file_status("get", "/y", 1, "").message(),
        "get /y: exit code 1"
    );
    let long = "é".repeat(2000);
    assert!(file_status("get", "/y", 1, &long).message().len() < 1100);
}

/// A fallback that counts its calls and fails them.
struct CountingFallback(std::sync::atomic::AtomicUsize);

impl PodExec for CountingFallback {
    fn start(&self, target: &PodTarget, _: &Launch) -> BoxFuture<'static, Result<RemoteProcess, AgentError>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pod = target.pod.clone();
        Box::pin(async move { Err(AgentError::PodNotFound { namespace: "n".into(), pod }) })
    }
}

#[tokio::test]
async fn an_unreachable_agent_of_a_cached_pod_is_stale_never_a_pods_exec_fallback() {
    // A port nothing listens on (bound, then closed): connections are refused at once.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let fallback = Arc::new(CountingFallback(Default::default()));
    let routed = Routed {
        direct: Some(Arc::new(direct::DirectExec::new(Arc::new(vec![7; 32]), "/agent".into()))),
        transport: Transport::Auto,
        fallback: fallback.clone(),
        metrics: Arc::new(crate::metrics::Metrics::new()),
    };
    let launch = Launch::Exec(ExecOptions { argv: vec!["true".into()], ..Default::default() });
    let mut target = PodTarget {
        namespace: "n".into(),
        pod: "x".into(),
        sandbox_uid: "uid".into(),
        agent: Some(addr),
        env: Vec::new(),
        from_cache: true,
    };
    let e = routed.start(&target, &launch).await.err().expect("no agent there");
    assert!(matches!(e, AgentError::Stale { .. }), "{e:?}");
    assert_eq!(fallback.0.load(std::sync::atomic::Ordering::SeqCst), 0, "pods/exec was tried by a cached name");
    // Read from the API server: auto falls back as before.
    target.from_cache = false;
    let e = routed.start(&target, &launch).await.err().expect("the fallback fails too");
    assert!(matches!(e, AgentError::PodNotFound { .. }), "{e:?}");
    assert_eq!(fallback.0.load(std::sync::atomic::Ordering::SeqCst), 1);
}
