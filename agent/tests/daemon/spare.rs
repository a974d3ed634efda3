//! The spare shim: the daemon keeps one process supervisor started ahead of the next call, a call
//! without a tty takes it, and a spare that died is never a call's failure.

use airlock_agent_protocol::{Reply, Start, c2a};

use crate::common::eventually;
use crate::harness::*;

/// Pids of the agent's children running `airlock-agent shim` (spares and shims of calls).
fn shims(agent: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |r| r.1)
            .split_whitespace()
            .collect();
        let (state, ppid) = (
            rest.first().copied(),
            rest.get(1).and_then(|p| p.parse::<u32>().ok()),
        );
        if ppid != Some(agent) || state == Some("Z") {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).nth(1) == Some(b"shim") {
            v.push(pid);
        }
    }
    v
}

/// Runs `sh -c 'echo $PPID'` attached: the pid of the shim that ran it.
fn parent_of_a_command(a: &Daemon) -> u32 {
    let mut c = a.client();
    let s = Start {
        attach: true,
        kill_on_disconnect: true,
        close_stdin: true,
        ..sh("echo $PPID")
    };
    c.send(c2a::START, &s.encode()).unwrap();
    let (out, _, last) = c.collect(0, 0).unwrap();
    assert!(
        matches!(last, Reply::Exit(ref e) if e.code == 0),
        "{last:?}"
    );
    String::from_utf8_lossy(&out).trim().parse().expect("a pid")
}

/// Waits for the agent to have exactly one shim that is none of `not` (a spare, once the shims
/// of earlier calls are gone), and returns it: sampled once, as shims come and go meanwhile.
fn one_spare(agent: u32, not: &[u32]) -> u32 {
    let mut found = 0;
    let ok = eventually(T, || match shims(agent)[..] {
        [p] if !not.contains(&p) => {
            found = p;
            true
        }
        _ => false,
    });
    assert!(ok, "no single new spare shim: {:?}", shims(agent));
    found
}

#[test]
fn a_call_takes_the_spare_shim_and_a_dead_spare_fails_nothing() {
    let a = daemon();
    let agent = a.child.id();
    // A spare is made while the daemon is idle.
    let spare = one_spare(agent, &[]);
    // The next command runs under it, and a new spare follows.
    assert_eq!(
        parent_of_a_command(&a),
        spare,
        "the command did not run under the spare shim"
    );
    let dead = one_spare(agent, &[spare]);
    // A spare killed from outside: the next call starts a shim of its own and succeeds.
    unsafe { libc::kill(dead as i32, libc::SIGKILL) };
    assert!(eventually(T, || !shims(agent).contains(&dead)));
    let ran_under = parent_of_a_command(&a);
    assert_ne!(ran_under, dead);
    // A tty call never takes the (pipe) spare.
    let spare = one_spare(agent, &[dead, ran_under]);
    let mut c = a.client();
    let s = Start {
        tty: true,
        attach: true,
        kill_on_disconnect: true,
        close_stdin: true,
        ..sh("echo $PPID")
    };
    c.send(c2a::START, &s.encode()).unwrap();
    let (out, _, _) = c.collect(0, 0).unwrap();
    let tty_parent: u32 = String::from_utf8_lossy(&out).trim().parse().expect("a pid");
    assert_ne!(tty_parent, spare, "a tty call took the spare");
    assert!(shims(agent).contains(&spare), "the spare is still there");
}
