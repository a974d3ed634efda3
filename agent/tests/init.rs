//! `airlock-agent init` run as a subprocess (not PID 1: it makes itself a child subreaper, so
//! orphans are re-parented to it just as they would be to PID 1).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// Waits until the agent has blocked SIGTERM (its signal loop is set up).
fn wait_ready(pid: u32) {
    let ok = eventually(T, || {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        s.lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
    });
    assert!(ok, "agent never blocked SIGTERM");
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn reaps_orphaned_zombies() {
    // The subshell exits at once, orphaning three short sleeps: they are re-parented to the
    // agent and become its zombies when they exit, unless it reaps them.
    // The main child waits for a file the test creates, not for a fixed time: the window in which
    // only it is left does not depend on how fast the machine is.
    let stop = std::env::temp_dir().join(format!("airlock-reap-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let script = format!(
        "(sleep 0.4 & sleep 0.4 & sleep 0.4 &); until [ -e '{}' ]; do sleep 0.05; done; exit 0",
        stop.display()
    );
    let a = spawn(&["init", "--", "sh", "-c", &script]);
    let pid = a.pid();
    let adopted = eventually(T, || children_of(pid).len() >= 4);
    assert!(
        adopted,
        "orphans were not re-parented to the agent: {:?}",
        children_of(pid)
    );
    // the orphans exit after 0.4 s; only the main child (waiting for `stop`) may remain
    let reaped = eventually(T, || children_of(pid).len() == 1);
    let kids = children_of(pid);
    assert!(
        reaped && kids.iter().all(|&(_, st)| st != 'Z'),
        "zombies left: {kids:?}"
    );
    std::fs::write(&stop, b"").unwrap();
    let o = a.wait(T);
    let _ = std::fs::remove_file(&stop);
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn forwards_sigterm_and_propagates_exit_code() {
    let mut child = Command::new(bin())
        .args([
            "init",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    kill(child.id(), "TERM");
    let st = wait_timeout(&mut child, T).expect("init did not exit");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "got-term\n");
    assert_eq!(code(st), 7);
}

#[test]
fn forwards_other_signals() {
    // SIGUSR1 forwarded to `sleep` kills it: 128 + 10.
    let a = spawn(&["init", "--", "sleep", "100"]);
    wait_ready(a.pid());
    // the child must have been spawned too
    assert!(eventually(T, || children_of(a.pid()).len() == 1));
    kill(a.pid(), "USR1");
    assert_eq!(a.wait(T).code, 138);
}

#[test]
fn child_exit_status() {
    assert_eq!(run(&["init", "--", "sh", "-c", "exit 5"], b"").code, 5);
    assert_eq!(
        run(&["init", "--", "sh", "-c", "kill -9 $$"], b"").code,
        137
    );
    let o = run(&["init", "--", "/nonexistent/cmd"], b"");
    assert_eq!(o.code, 127);
    assert!(o.stderr.contains("No such file"), "{:?}", o.stderr);
    assert_eq!(run(&["init", "sh"], b"").code, 5);
}

#[test]
fn without_child_waits_idle_until_sigterm() {
    // Stopped by a signal, not finished: 128 + signal, as a shell reports it, so a pod stopped
    // this way (evicted, node shutdown) is Failed, not Succeeded.
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let a = spawn(&["init"]);
        let pid = a.pid();
        wait_ready(pid);
        // other signals are ignored: the agent takes them (they leave the pending sets) and
        // goes on waiting
        kill(pid, "USR1");
        kill(pid, "HUP");
        assert!(
            eventually(T, || !pending(pid, &[10, 1])),
            "SIGUSR1/SIGHUP never taken by the agent: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/status"))
        );
        let (state, _) = proc_state(pid).unwrap();
        assert_eq!(state, 'S', "agent should be sleeping");
        let ticks = cpu_ticks(pid);
        std::thread::sleep(Duration::from_millis(500));
        assert!(cpu_ticks(pid) - ticks <= 1, "agent uses CPU while idle");
        kill(pid, sig);
        assert_eq!(a.wait(T).code, code, "exit on SIG{sig}");
    }
}

/// Whether any of `signals` is pending for `pid` (thread or process-wide set).
fn pending(pid: u32, signals: &[u32]) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .expect("signal mask in /proc/PID/status")
    };
    let set = mask("SigPnd:") | mask("ShdPnd:");
    signals.iter().any(|s| set & (1 << (s - 1)) != 0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // fields after ")" start at field 3 (state); utime = 14, stime = 15
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
