//! `airlock-agent init --listen`: the TCP service, on loopback, with real processes.
//! (Just over 600 lines: one scenario per test; the whole-tree tests are in tree.rs.)

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod spare;
mod tree;

use std::io::Write;
use std::net::TcpStream;

use airlock_agent_protocol::{
    Activity, Client, ClientError, ErrorCode, Reply, Start, Target, c2a, frame,
};

use common::*;
use harness::*;

#[test]
fn wrong_or_missing_token_is_refused() {
    let a = daemon();
    // Wrong token.
    match Client::connect(a.addr, b"test-token-not-the-right-one") {
        Err(ClientError::Agent(e)) => {
            assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}");
            assert!(e.message.contains("token"), "{e}");
        }
        Ok(_) => panic!("a wrong token was accepted"),
        Err(e) => panic!("{e}"),
    }
    // A prefix of the right token.
    assert!(matches!(
        Client::connect(a.addr, &a.token[..a.token.len() - 1]),
        Err(ClientError::Agent(_))
    ));
    // No HELLO at all: a request straight away is refused and nothing runs.
    let m = marker_sleep();
    let mut s = TcpStream::connect(a.addr).unwrap();
    s.write_all(&frame(c2a::START, &sh(&format!("sleep {m}")).encode()))
        .unwrap();
    let mut c = raw_client(s);
    match c.recv() {
        Ok(Some(Reply::Error(e))) => assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}"),
        other => panic!("no HELLO: {other:?}"),
    }
    assert!(matches!(c.recv(), Ok(None)), "the connection stays open");
    // Before HELLO, a big frame is not buffered: refused as soon as it passes 4 KiB.
    let mut s = TcpStream::connect(a.addr).unwrap();
    let mut big = vec![c2a::HELLO];
    big.extend_from_slice(&(1u32 << 23).to_be_bytes());
    big.extend_from_slice(&[0; 8192]);
    s.write_all(&big).unwrap();
    match raw_client(s).recv() {
        Ok(Some(Reply::Error(e))) => assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::Unauthenticated, "HELLO is at most 4096 bytes")
        ),
        other => panic!("an 8 MiB HELLO: {other:?}"),
    }
    // The right token works, and the refused START ran nothing.
    assert!(a.list().is_empty());
    assert!(sleeps(&m).is_empty());
}

/// Listening on every address (as in a pod), the agent serves no connection from the machine
/// it runs on (loopback, or one of its own addresses): the sandbox's own code cannot use a token
/// it learnt. Listening on loopback (as these tests do), it serves them (the control).
#[test]
fn connections_from_the_sandbox_itself_are_refused_unless_it_listens_on_loopback() {
    let pod = daemon_on("0.0.0.0:0", &[]);
    let port = pod.addr.port();
    for from in ["127.0.0.1", "127.0.0.2"] {
        let addr: std::net::SocketAddr = format!("{from}:{port}").parse().unwrap();
        match Client::connect(addr, &pod.token) {
            Ok(_) => panic!("a connection to {addr} from the machine itself was served"),
            Err(e) => assert!(
                matches!(e, ClientError::Closed | ClientError::Io(_)),
                "closed unanswered, got {e}"
            ),
        }
    }
    let local = daemon();
    Client::connect(local.addr, &local.token).expect("loopback listener serves loopback");
}

fn raw_client(s: TcpStream) -> RawClient {
    s.set_read_timeout(Some(T)).unwrap();
    RawClient {
        s,
        r: airlock_agent_protocol::FrameReader::new(),
    }
}

struct RawClient {
    s: TcpStream,
    r: airlock_agent_protocol::FrameReader,
}

impl RawClient {
    fn recv(&mut self) -> std::io::Result<Option<Reply>> {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        loop {
            if let Some((t, p)) = self.r.next_frame().unwrap() {
                return Ok(Some(Reply::decode(t, &p).unwrap()));
            }
            let n = self.s.read(&mut buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.r.push(&buf[..n]);
        }
    }
}

#[test]
fn the_token_is_kept_from_processes() {
    let a = daemon();
    let agent_pid = a.child.id();
    let pid = a.start(Start {
        attach: false,
        ..sh("env; echo; echo environ; cat /proc/$PPID/environ")
    });
    let e = a.wait(Target::Pid(pid));
    assert_eq!(e.code, 0, "{e:?}");
    let (out, _, _) = a.attach(Target::Pid(pid), 0, 0, true).unwrap();
    let out = String::from_utf8_lossy(&out);
    let token = String::from_utf8(a.token.clone()).unwrap();
    assert!(out.contains("PATH="), "{out}");
    assert!(!out.contains("AIRLOCK_AGENT_TOKEN"), "{out}");
    assert!(!out.contains(&token), "{out}");
    // The agent's own environment block (what /proc/PID/environ shows) no longer has it either.
    let environ = std::fs::read(format!("/proc/{agent_pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains(&token),
        "the token is still in /proc/{agent_pid}/environ"
    );
}

#[test]
fn background_process_survives_its_caller_and_is_read_again_from_offset_zero() {
    let a = daemon();
    let want: String = (1..=3000).map(|i| format!("line {i}\n")).collect();
    let pid = {
        let mut c = a.client();
        let s = Start {
            tag: Some("bg".into()),
            ..sh(
                "i=1; while [ $i -le 3000 ]; do echo line $i; i=$((i+1)); done; read x; echo got $x >&2",
            )
        };
        match c.call(c2a::START, &s.encode()) {
            Ok(Reply::Started(st)) => st.pid,
            other => panic!("{other:?}"),
        }
        // c dropped: the caller is gone
    };
    // The caller's connection is gone (no stream open), and the process still runs.
    assert!(eventually(T, || activity(&a).streams == 0));
    let l = a.list();
    assert_eq!(l.len(), 1);
    assert!(l[0].exit.is_none(), "{:?}", l[0]);
    assert_eq!(l[0].pid, pid);
    // A new connection reads everything from offset 0, then finishes the process through stdin.
    let mut c = a.client();
    c.send(
        c2a::ATTACH,
        &airlock_agent_protocol::Attach {
            target: Target::Tag("bg".into()),
            out_offset: 0,
            err_offset: 0,
            follow: true,
        }
        .encode(),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < want.len() {
        match c.recv().unwrap() {
            Some(Reply::Stdout(o, d)) => {
                assert_eq!(o, at, "a gap in stdout");
                at += d.len() as u64;
                out.extend_from_slice(&d);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(String::from_utf8_lossy(&out), want);
    c.send(c2a::DATA, b"done\n").unwrap();
    let (more, err, last) = c.collect(at, 0).unwrap();
    assert!(more.is_empty());
    assert_eq!(String::from_utf8_lossy(&err), "got done\n");
    match last {
        Reply::Exit(e) => {
            assert_eq!((e.code, e.out_end), (0, want.len() as u64), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    // From a later offset: exactly the rest.
    let (tail, _, _) = a.attach(Target::Pid(pid), 1000, 3, true).unwrap();
    assert_eq!(tail, want.as_bytes()[1000..]);
    // Without follow: what is there, then END.
    let (all, err, end) = a.attach(Target::Pid(pid), 0, 0, false).unwrap();
    assert_eq!(
        (all.len(), err.as_slice()),
        (want.len(), &b"got done\n"[..])
    );
    assert!(matches!(end, Reply::Exit(_)), "{end:?}");
}

#[test]
fn overflowing_the_buffer_says_how_much_was_dropped() {
    let a = daemon();
    let pid = a.start(Start {
        buffer: Some(1000),
        ..sh("head -c 5000 /dev/zero | tr '\\0' x")
    });
    let e = a.wait(Target::Pid(pid));
    assert_eq!((e.code, e.out_end), (0, 5000), "{e:?}");
    let err = a.attach(Target::Pid(pid), 0, 0, true).unwrap_err();
    assert_eq!(err.code, ErrorCode::OutOfRange, "{err}");
    assert_eq!(
        err.message,
        "stdout: 4000 bytes dropped: asked from offset 0, the buffer holds offsets 4000..5000"
    );
    assert_eq!(err.dropped.as_ref().map(|d| d.first), Some(4000));
    let (out, _, _) = a.attach(Target::Pid(pid), 4000, 0, true).unwrap();
    assert_eq!(out, vec![b'x'; 1000]);
    // An attached reader is never overrun: the process waits for it instead.
    let mut c = a.client();
    let s = Start {
        buffer: Some(1000),
        attach: true,
        ..sh("head -c 200000 /dev/zero | tr '\\0' y")
    };
    c.send(c2a::START, &s.encode()).unwrap();
    let (out, _, last) = c.collect(0, 0).unwrap();
    assert_eq!(
        (out.len(), matches!(last, Reply::Exit(ref e) if e.code == 0)),
        (200000, true)
    );
}

#[test]
fn stdin_data_close_and_by_id() {
    let a = daemon();
    // On the attached connection.
    let mut c = a.client();
    c.send(
        c2a::START,
        &Start {
            attach: true,
            stdin: b"first ".to_vec(),
            ..Start {
                argv: argv(&["cat"]),
                ..Start::default()
            }
        }
        .encode(),
    )
    .unwrap();
    c.send(c2a::DATA, b"second").unwrap();
    c.send(c2a::CLOSE, b"").unwrap();
    let (out, _, last) = c.collect(0, 0).unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "first second");
    assert!(
        matches!(last, Reply::Exit(ref e) if e.code == 0),
        "{last:?}"
    );
    // By id from other connections.
    let pid = a.start(Start {
        tag: Some("cat".into()),
        argv: argv(&["cat"]),
        ..Start::default()
    });
    use airlock_agent_protocol::Control;
    a.call_ok(
        c2a::STDIN,
        &Control::Stdin(Target::Pid(pid), b"abc".to_vec()).encode(),
    );
    a.call_ok(c2a::CLOSE_STDIN, &Target::Tag("cat".into()).encode());
    assert_eq!(a.wait(Target::Pid(pid)).code, 0);
    let (out, _, _) = a.attach(Target::Pid(pid), 0, 0, true).unwrap();
    assert_eq!(out, b"abc");
    // Closed stdin takes no more.
    match a.try_call(
        c2a::STDIN,
        &Control::Stdin(Target::Pid(pid), b"x".to_vec()).encode(),
    ) {
        Err(ClientError::Agent(e)) => assert_eq!(e.code, ErrorCode::FailedPrecondition, "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn signal_by_id_reaches_the_process() {
    let a = daemon();
    let m = marker_sleep();
    let pid = a.start(Start {
        argv: argv(&["sleep", &m]),
        ..Start::default()
    });
    assert!(
        eventually(T, || sleeps(&m) == vec![pid]),
        "sleep did not start"
    );
    use airlock_agent_protocol::Control;
    a.call_ok(
        c2a::SIGNAL_PROC,
        &Control::Signal(Target::Pid(pid), 15).encode(),
    );
    let e = a.wait(Target::Pid(pid));
    assert_eq!((e.code, e.signal, e.killed), (143, 15, false), "{e:?}");
    match a.try_call(
        c2a::SIGNAL_PROC,
        &Control::Signal(Target::Pid(pid), 99).encode(),
    ) {
        Err(ClientError::Agent(e)) => assert_eq!(e.code, ErrorCode::InvalidArgument),
        other => panic!("{other:?}"),
    }
}

#[test]
fn resize_by_id_changes_the_terminal() {
    let a = daemon();
    let mut c = a.client();
    c.send(
        c2a::START,
        &Start {
            tty: true,
            size: Some((80, 24)),
            attach: true,
            tag: Some("term".into()),
            ..sh("stty size; read x; stty size")
        }
        .encode(),
    )
    .unwrap();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("24 80") {
        match c.recv().unwrap() {
            Some(Reply::Stdout(_, d)) => out.extend_from_slice(&d),
            Some(Reply::Started(_)) => {}
            other => panic!("{other:?} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
    use airlock_agent_protocol::Control;
    a.call_ok(
        c2a::RESIZE_PROC,
        &Control::Resize(Target::Tag("term".into()), 132, 43).encode(),
    );
    c.send(c2a::DATA, b"\n").unwrap();
    let (rest, _, last) = c.collect(out.len() as u64, 0).unwrap();
    assert!(
        String::from_utf8_lossy(&rest).contains("43 132"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        matches!(last, Reply::Exit(ref e) if e.code == 0),
        "{last:?}"
    );
    // No terminal, no resize.
    let pid = a.start(Start {
        argv: argv(&["cat"]),
        ..Start::default()
    });
    match a.try_call(
        c2a::RESIZE_PROC,
        &Control::Resize(Target::Pid(pid), 1, 1).encode(),
    ) {
        Err(ClientError::Agent(e)) => assert_eq!(e.code, ErrorCode::FailedPrecondition, "{e}"),
        other => panic!("{other:?}"),
    }
    a.call_ok(c2a::KILL, &Target::Pid(pid).encode());
}

#[test]
fn list_and_wait_report_each_process() {
    let a = daemon();
    let m = marker_sleep();
    let sleeper = a.start(Start {
        tag: Some("sleeper".into()),
        argv: argv(&["sleep", &m]),
        ..Start::default()
    });
    let quick = a.start(Start {
        tag: Some("quick".into()),
        ..sh("echo hi; exit 7")
    });
    let e = a.wait(Target::Tag("quick".into()));
    assert_eq!((e.code, e.signal, e.out_end), (7, 0, 3), "{e:?}");
    let l = a.list();
    let find = |pid| {
        l.iter()
            .find(|p| p.pid == pid)
            .unwrap_or_else(|| panic!("{pid} not listed: {l:?}"))
    };
    assert_eq!(find(sleeper).tag.as_deref(), Some("sleeper"));
    assert_eq!(find(sleeper).argv, argv(&["sleep", &m]));
    assert!(find(sleeper).exit.is_none());
    assert_eq!(find(quick).exit.as_ref().map(|e| e.code), Some(7));
    // A running tag cannot be taken; an unknown one is NOT_FOUND.
    match a.try_call(
        c2a::START,
        &Start {
            tag: Some("sleeper".into()),
            ..sh("true")
        }
        .encode(),
    ) {
        Err(ClientError::Agent(e)) => assert_eq!(e.code, ErrorCode::AlreadyExists, "{e}"),
        other => panic!("{other:?}"),
    }
    match a.try_call(c2a::WAIT, &Target::Tag("nope".into()).encode()) {
        Err(ClientError::Agent(e)) => assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::NotFound, "no process with tag \"nope\"")
        ),
        other => panic!("{other:?}"),
    }
    a.call_ok(c2a::FORGET, &Target::Pid(quick).encode());
    assert!(a.list().iter().all(|p| p.pid != quick));
}

#[test]
fn spawn_failures_and_bad_requests_name_the_problem() {
    let a = daemon();
    let cases: [(Start, ErrorCode, &str); 4] = [
        (
            Start {
                argv: argv(&["/nonexistent/prog"]),
                ..Start::default()
            },
            ErrorCode::NotFound,
            "/nonexistent/prog: No such file or directory",
        ),
        (
            Start {
                argv: argv(&["true"]),
                cwd: Some(b"/nonexistent".to_vec()),
                ..Start::default()
            },
            ErrorCode::FailedPrecondition,
            "cwd /nonexistent: No such file or directory",
        ),
        (
            Start::default(),
            ErrorCode::InvalidArgument,
            "argv: must name a program",
        ),
        (
            Start {
                argv: argv(&["true"]),
                env: vec![b"NOEQUALS".to_vec()],
                ..Start::default()
            },
            ErrorCode::InvalidArgument,
            "env[0]: want NAME=VALUE without NUL bytes",
        ),
    ];
    for (s, code, msg) in cases {
        match a.try_call(c2a::START, &s.encode()) {
            Err(ClientError::Agent(e)) => assert_eq!((e.code, e.message.as_str()), (code, msg)),
            other => panic!("{:?}: {other:?}", s.argv),
        }
    }
    assert!(a.list().is_empty());
}

fn activity(a: &Daemon) -> Activity {
    match a.try_call(c2a::ACTIVITY, b"") {
        Ok(Reply::Activity(x)) => x,
        other => panic!("{other:?}"),
    }
}

#[test]
fn activity_counts_processes_and_streams() {
    let a = daemon();
    let idle = activity(&a);
    assert_eq!((idle.processes, idle.streams), (0, 0));
    assert!(idle.idle_since_unix_ms > 0 && idle.idle_since_unix_ms <= idle.now_unix_ms);
    let pid = a.start(Start {
        argv: argv(&["cat"]),
        ..Start::default()
    });
    let busy = activity(&a);
    assert_eq!(
        (busy.processes, busy.idle_since_unix_ms),
        (1, 0),
        "{busy:?}"
    );
    a.call_ok(c2a::CLOSE_STDIN, &Target::Pid(pid).encode());
    a.wait(Target::Pid(pid));
    let after = activity(&a);
    assert_eq!(after.processes, 0);
    assert!(
        after.idle_since_unix_ms >= busy.now_unix_ms,
        "{after:?} {busy:?}"
    );
    // Asking (ACTIVITY, LIST) is not activity.
    a.list();
    assert_eq!(activity(&a).idle_since_unix_ms, after.idle_since_unix_ms);
}

#[test]
fn two_hundred_concurrent_short_execs() {
    let a = std::sync::Arc::new(daemon());
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut c = a.client();
                let s = Start {
                    argv: argv(&[
                        "sh",
                        "-c",
                        "echo out $0; echo err $0 >&2; exit $(($0 % 7))",
                        &i.to_string(),
                    ]),
                    attach: true,
                    kill_on_disconnect: true,
                    ..Start::default()
                };
                c.send(c2a::START, &s.encode()).unwrap();
                let (out, err, last) = c.collect(0, 0).unwrap();
                assert_eq!(String::from_utf8_lossy(&out), format!("out {i}\n"));
                assert_eq!(String::from_utf8_lossy(&err), format!("err {i}\n"));
                match last {
                    Reply::Exit(e) => assert_eq!(e.code, i % 7),
                    other => panic!("{other:?}"),
                }
            })
        })
        .collect();
    let mut failed = 0;
    for t in threads {
        if t.join().is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "{failed} of 200 execs failed");
    // Each was ephemeral (attached, killed on disconnect): forgotten once its EXIT was sent.
    assert!(
        eventually(T, || a.list().is_empty()),
        "{:?}",
        a.list().len()
    );
}

#[test]
fn source_on_fd3_is_not_limited_like_an_argument() {
    let a = daemon();
    // 300 KiB of script: more than the kernel takes as one argv string (Linux: 128 KiB, E2BIG;
    // gVisor: ENAMETOOLONG).
    let mut script = format!("# {}\n", "x".repeat(300 * 1024));
    script.push_str("echo from fd3 $(wc -c < /dev/fd/3)\n");
    match a.try_call(c2a::START, &sh(&script).encode()) {
        Err(ClientError::Agent(e)) => assert!(
            e.message.contains("Argument list too long")
                || e.message.contains("File name too long"),
            "{e}"
        ),
        other => panic!("a 300 KiB argument started: {other:?}"),
    }
    let pid = a.start(Start {
        argv: argv(&["sh", "/dev/fd/3"]),
        fd3: script.clone().into_bytes(),
        ..Start::default()
    });
    assert_eq!(a.wait(Target::Pid(pid)).code, 0);
    let (out, err, _) = a.attach(Target::Pid(pid), 0, 0, true).unwrap();
    assert_eq!(
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned()
        ),
        (format!("from fd3 {}\n", script.len()), String::new())
    );
}

#[test]
fn as_init_it_still_ends_with_its_main_command_or_sigterm() {
    // With a main command: the agent serves while it runs and exits with its status.
    let dir = tmpdir("main-command");
    let fifo = dir.join("go");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let script = format!("read x < {}; exit 5", fifo.display());
    let mut a = daemon_with(&["--", "sh", "-c", &script]);
    let m = marker_sleep();
    a.start(Start {
        argv: argv(&["sleep", &m]),
        ..Start::default()
    });
    assert!(eventually(T, || sleeps(&m).len() == 1));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    let st = wait_timeout(&mut a.child, T).expect("the agent did not exit with its command");
    assert_eq!(code(st), 5);
    assert!(
        eventually(T, || sleeps(&m).is_empty()),
        "the table's processes outlived the agent"
    );
    // Without one: SIGTERM ends it with 128 + 15.
    let mut a = daemon();
    unsafe { libc::kill(a.child.id() as i32, libc::SIGTERM) };
    let st = wait_timeout(&mut a.child, T).expect("SIGTERM did not end the agent");
    assert_eq!(code(st), 143);
}

#[test]
fn a_claim_replaces_the_token_and_the_old_one_opens_nothing_any_more() {
    use airlock_agent_protocol::{Hello, VERSION};
    let a = daemon();
    let new = b"claimed-token-0123456789abcdef0123456789abcdef".to_vec();
    // Too short: refused, the old token still works.
    let short = Hello { token: b"short".to_vec(), version: VERSION }.encode();
    assert!(matches!(a.try_call(c2a::CLAIM, &short), Err(ClientError::Agent(e)) if e.message.contains("at least 32 bytes")));
    let claim = Hello { token: new.clone(), version: VERSION }.encode();
    // A connection authenticated with the old token before the claim is closed by it.
    let mut open = a.client();
    assert!(matches!(a.try_call(c2a::CLAIM, &claim), Ok(Reply::Ok)));
    let old = Client::connect(a.addr, &a.token);
    assert!(matches!(old, Err(ClientError::Agent(ref e)) if e.message.contains("token")), "the start token is dead");
    let mut c = Client::connect(a.addr, &new).expect("the claim's token opens the agent");
    assert!(matches!(c.call(c2a::LIST, b""), Ok(Reply::Procs(_))));
    match open.call(c2a::LIST, b"") {
        Err(ClientError::Agent(e)) => assert!(e.message.contains("claimed"), "{e}"),
        other => assert!(!matches!(other, Ok(Reply::Procs(_))), "an old-token connection still answered: {other:?}"),
    }
}
