//! `airlock-agent exec` run as a subprocess.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn exit_code_propagates_and_stderr_is_separate() {
    let o = run(
        &["exec", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
        &close(),
    );
    assert_eq!(o.code, 3, "{o:?}");
    assert_eq!(o.out(), "out\n");
    assert_eq!(o.stderr, "err\n");
}

#[test]
fn echo_exit_zero() {
    let o = run(&["exec", "--", "echo", "hello", "world"], &close());
    assert_eq!((o.code, o.out().as_str()), (0, "hello world\n"));
}

#[test]
fn data_and_close_reach_stdin() {
    let mut input = data(b"hello ");
    input.extend(data(b"world\n"));
    input.extend(close());
    let o = run(&["exec", "--", "cat"], &input);
    assert_eq!((o.code, o.out().as_str()), (0, "hello world\n"), "{o:?}");
}

#[test]
fn large_stdin_round_trips_through_cat() {
    let payload = random_bytes(3 << 20, 7);
    let mut input = Vec::new();
    for chunk in payload.chunks(100_003) {
        input.extend(data(chunk));
    }
    input.extend(close());
    let o = run(&["exec", "--", "cat"], &input);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout == payload,
        "cat output differs ({} bytes)",
        o.stdout.len()
    );
}

#[test]
fn signal_frame_terminates_child() {
    let m = marker_sleep();
    let spawned = Instant::now();
    let mut a = spawn(&["exec", "--", "sleep", &m]);
    // The child runs before the signal is sent (else the test proves nothing about the child).
    assert!(
        eventually(T, || sleeps(&m).len() == 1),
        "sleep did not start"
    );
    a.send(&signal(15));
    // stdin stays open: only the signal ends the child
    let o = a.wait(T);
    assert_eq!(o.code, 143, "{o:?}");
    assert_killed(&m, spawned);
}

#[test]
fn signal_frame_reaches_whole_group() {
    let m = marker_sleep();
    let spawned = Instant::now();
    let mut a = spawn(&[
        "exec",
        "--",
        "sh",
        "-c",
        &format!("sleep {m} & sleep {m}; wait"),
    ]);
    assert!(
        eventually(T, || sleeps(&m).len() == 2),
        "sleeps did not start"
    );
    a.send(&signal(9));
    let o = a.wait(T);
    assert_eq!(o.code, 137, "{o:?}");
    assert_killed(&m, spawned);
}

/// Starts `sleep & sleep` under the agent (after a CLOSE frame if `close_first`), closes the
/// agent's stdin, and checks that the whole group is killed; returns how long that took.
fn eof_kills_the_group(close_first: bool) -> Duration {
    let m = marker_sleep();
    let spawned = Instant::now();
    let mut a = spawn(&["exec", "--", "sh", "-c", &format!("sleep {m} & sleep {m}")]);
    if close_first {
        a.send(&close());
    }
    assert!(
        eventually(T, || sleeps(&m).len() == 2),
        "sleeps did not start"
    );
    let start = Instant::now();
    a.close_stdin();
    let o = a.wait(T);
    let took = start.elapsed();
    assert_eq!(o.code, 137, "{o:?}");
    assert_killed(&m, spawned);
    took
}

/// The gateway sends CLOSE at the start of every non-interactive exec and keeps stdin open until
/// the command ends; EOF while it runs is a lost connection (an API server restart), not a
/// half-close, and must not leave the command running.
#[test]
fn eof_after_close_while_running_kills_process_group() {
    eof_kills_the_group(true);
}

#[test]
fn eof_without_close_kills_process_group() {
    // How long the kill took is a figure (printed), not a check: `assert_killed` already proves
    // the 100 s sleeps were killed rather than left to end by themselves.
    let took = eof_kills_the_group(false);
    eprintln!("EOF to exit: {took:?}");
}

#[test]
fn timeout_kills_group_with_137() {
    let m = marker_sleep();
    let spawned = Instant::now();
    let start = Instant::now();
    let a = spawn(&[
        "exec",
        "--timeout-ms",
        "2000",
        "--",
        "sh",
        "-c",
        &format!("sleep {m} & sleep {m}"),
    ]);
    // Both sleeps are seen running, so their absence below means they were killed, not that they
    // never started.
    assert!(
        eventually(T, || sleeps(&m).len() == 2),
        "sleeps did not start"
    );
    let o = a.wait(T);
    let took = start.elapsed();
    assert_eq!(o.code, 137, "{o:?}");
    // Not before the timeout (the 100 s sleeps bound it from above: `wait` allows 20 s).
    assert!(took >= Duration::from_secs(2), "took {took:?}");
    assert_killed(&m, spawned);
}

#[test]
fn background_processes_are_killed_when_child_exits() {
    let m = marker_sleep();
    let spawned = Instant::now();
    // `started` is printed only once the background sleep runs (its command line is in /proc),
    // so the absence below means it was killed. It holds stdout: the test's read of stdout only
    // ends when it is gone.
    let o = run(
        &[
            "exec",
            "--",
            "sh",
            "-c",
            &format!("sleep {m} & until grep -qa {m} /proc/$!/cmdline; do :; done; echo started"),
        ],
        &close(),
    );
    assert_eq!((o.code, o.out().as_str()), (0, "started\n"), "{o:?}");
    // Gone, and long before the 100 s sleep would have ended by itself (`assert_killed`).
    assert_killed(&m, spawned);
}

#[test]
fn killed_by_signal_is_128_plus_n() {
    let o = run(&["exec", "--", "sh", "-c", "kill -USR1 $$"], &close());
    assert_eq!(o.code, 128 + 10);
}

#[test]
fn spawn_failures() {
    let o = run(&["exec", "--", "/nonexistent/airlock-nope"], &close());
    assert_eq!(o.code, 127);
    assert!(
        o.stderr.contains("No such file") && o.stderr.lines().count() == 1,
        "{:?}",
        o.stderr
    );
    let o = run(&["exec", "--", "airlock-no-such-command-xyz"], &close());
    assert_eq!(o.code, 127);
    let d = tmpdir("noexec");
    let f = d.join("script");
    std::fs::write(&f, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&["exec", "--", f.to_str().unwrap()], &close());
    assert_eq!(o.code, 126, "{o:?}");
    assert!(o.stderr.contains("Permission denied"), "{:?}", o.stderr);
    let o = run(
        &["exec", "--cwd", "/nonexistent-dir", "--", "true"],
        &close(),
    );
    assert_eq!(o.code, 126, "{o:?}");
    assert!(o.stderr.contains("cwd"));
}

#[test]
fn cwd_env_and_path_lookup() {
    let d = tmpdir("path");
    let prog = d.join("airlock-test-prog");
    std::fs::write(
        &prog,
        "#!/bin/sh\necho \"prog $FROM_FLAG $INHERITED $OVERRIDDEN $(pwd)\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("PATH={}:/usr/bin:/bin", d.display());
    let mut a = spawn_cmd(
        Command::new(bin())
            .args([
                "exec",
                "--cwd",
                "/tmp",
                "--env",
                "FROM_FLAG=flag=x",
                "--env",
                "OVERRIDDEN=new",
                "--env",
                &path,
                "--",
                "airlock-test-prog",
            ])
            .env("INHERITED", "inh")
            .env("OVERRIDDEN", "old"),
    );
    a.send(&close());
    let o = a.wait(T);
    assert_eq!(
        (o.code, o.out().as_str()),
        (0, "prog flag=x inh new /tmp\n"),
        "{o:?}"
    );
}

#[test]
fn tty_child_has_a_pts() {
    let mut a = spawn(&[
        "exec",
        "--tty",
        "--",
        "sh",
        "-c",
        "tty; test -t 0 && test -t 1 && test -t 2 && echo all-tty",
    ]);
    let o = {
        a.send(&close());
        a.wait(T)
    };
    assert_eq!(o.code, 0, "{o:?}");
    let out = o.out();
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("all-tty"), "{out:?}");
    assert!(o.stderr.is_empty(), "{:?}", o.stderr);
}

#[test]
fn tty_resize_is_seen_by_stty() {
    let mut a = spawn(&[
        "exec",
        "--tty",
        "--",
        "sh",
        "-c",
        "stty size; read x; stty size",
    ]);
    let mut input = resize(123, 45);
    input.extend(data(b"go\n"));
    a.send(&input);
    let o = a.wait(T);
    assert_eq!(o.code, 0, "{o:?}");
    let out = o.out();
    assert!(out.contains("45 123"), "{out:?}");
}

#[test]
fn tty_close_sends_eof() {
    let mut a = spawn(&["exec", "--tty", "--", "cat"]);
    let mut input = data(b"partial");
    input.extend(close());
    a.send(&input);
    let o = a.wait(T);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.out().contains("partial"), "{:?}", o.out());
}

#[test]
fn tty_exit_code_and_signal() {
    let mut a = spawn(&["exec", "--tty", "--", "sh", "-c", "echo x; exit 4"]);
    a.send(&close());
    assert_eq!(a.wait(T).code, 4);
    let m = marker_sleep();
    let spawned = Instant::now();
    let mut a = spawn(&["exec", "--tty", "--", "sleep", &m]);
    assert!(
        eventually(T, || sleeps(&m).len() == 1),
        "sleep did not start"
    );
    a.send(&signal(2));
    assert_eq!(a.wait(T).code, 130);
    assert_killed(&m, spawned);
}

#[test]
fn tty_output_is_complete() {
    let mut a = spawn(&[
        "exec",
        "--tty",
        "--",
        "sh",
        "-c",
        "i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done",
    ]);
    a.send(&close());
    let o = a.wait(T);
    assert_eq!(o.code, 0);
    assert!(
        o.out().contains("line1999\r\n"),
        "tail: {:?}",
        &o.out()[o.out().len().saturating_sub(100)..]
    );
}

#[test]
fn bad_usage_is_5() {
    for args in [
        &["exec"][..],
        &["exec", "--", ""],
        &["exec", "--bogus", "--", "true"],
        &["exec", "true"],
        &["nope"],
        &[],
    ] {
        let o = run(args, b"");
        assert_eq!(o.code, 5, "{args:?}: {o:?}");
        assert!(o.stderr.contains("usage:"), "{:?}", o.stderr);
    }
}
