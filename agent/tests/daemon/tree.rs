//! Kill means the whole tree (setsid and orphaned descendants too); callers that go away.

use std::time::Instant;

use airlock_agent_protocol::{Reply, Start, Target, c2a};

use crate::common::*;
use crate::harness::*;

/// A command whose tree has two escaped grandchildren, each `sleep MARKER` in a session of its
/// own: one whose parent (a subshell) exits at once, so it is orphaned, and one whose parent
/// lives. Each writes its pid to DIR/a and DIR/b first.
fn escaping_tree(dir: &std::path::Path, m: &str) -> Start {
    let d = dir.display();
    sh(&format!(
        "(setsid sh -c 'echo $$ > {d}/a.tmp; mv {d}/a.tmp {d}/a; exec sleep {m}' &); \
         setsid sh -c 'echo $$ > {d}/b.tmp; mv {d}/b.tmp {d}/b; exec sleep {m}' & \
         sleep {m}; wait"
    ))
}

/// Waits for both grandchildren and checks they run `sleep MARKER` outside the command's session.
fn grandchildren(dir: &std::path::Path, m: &str, main: u32) -> Vec<u32> {
    let read = |f: &str| -> Option<u32> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    assert!(
        eventually(T, || read("a").is_some()
            && read("b").is_some()
            && sleeps(m).len() == 3),
        "the tree did not start: {:?}",
        sleeps(m)
    );
    let gc = vec![read("a").unwrap(), read("b").unwrap()];
    for &pid in &gc {
        assert!(sleeps(m).contains(&pid), "{pid} is not a sleep {m}");
        assert_ne!(
            session_of(pid),
            session_of(main),
            "{pid} did not leave the session"
        );
    }
    gc
}

fn session_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..].split(' ').nth(3)?.parse().ok()
}

#[test]
fn kill_ends_setsid_and_orphaned_grandchildren() {
    let a = daemon();
    let dir = tmpdir("kill-tree");
    let m = marker_sleep();
    let spawned = Instant::now();
    let pid = a.start(escaping_tree(&dir, &m));
    let gc = grandchildren(&dir, &m, pid);
    a.call_ok(c2a::KILL, &Target::Pid(pid).encode());
    let e = a.wait(Target::Pid(pid));
    assert_eq!((e.code, e.signal, e.killed), (137, 9, true), "{e:?}");
    assert_killed(&m, spawned);
    for pid in gc {
        assert!(
            proc_state(pid).is_none_or(|(s, _)| s == 'Z'),
            "grandchild {pid} survived"
        );
    }
}

/// The timeout (3 s) only has to outlast the tree's start; the test waits for the exit.
#[test]
fn timeout_ends_the_whole_tree() {
    let a = daemon();
    let dir = tmpdir("timeout-tree");
    let m = marker_sleep();
    let spawned = Instant::now();
    let pid = a.start(Start {
        timeout_ms: Some(3000),
        ..escaping_tree(&dir, &m)
    });
    grandchildren(&dir, &m, pid);
    let e = a.wait(Target::Pid(pid));
    assert_eq!((e.code, e.timed_out, e.killed), (137, true, false), "{e:?}");
    assert_killed(&m, spawned);
}

#[test]
fn exit_of_the_command_ends_what_it_left_behind() {
    let a = daemon();
    let dir = tmpdir("exit-tree");
    let m = marker_sleep();
    let spawned = Instant::now();
    let d = dir.display();
    let pid = a.start(sh(&format!(
        "setsid sh -c 'echo $$ > {d}/a; exec sleep {m}' & \
         until [ -s {d}/a ]; do :; done; exit 3"
    )));
    let e = a.wait(Target::Pid(pid));
    assert_eq!(e.code, 3, "{e:?}");
    // It ran (wrote its pid) and is gone.
    assert!(std::fs::read_to_string(dir.join("a")).is_ok_and(|s| !s.trim().is_empty()));
    assert_killed(&m, spawned);
}

#[test]
fn a_process_keeps_running_when_its_caller_disconnects() {
    let a = daemon();
    let pid = {
        let mut c = a.client();
        let s = Start {
            attach: true,
            ..sh("read x; echo got $x")
        };
        c.send(c2a::START, &s.encode()).unwrap();
        match c.recv().unwrap() {
            Some(Reply::Started(st)) => st.pid,
            other => panic!("{other:?}"),
        }
    };
    // The stream is gone (the agent noticed) ...
    assert!(eventually(
        T,
        || matches!(a.try_call(c2a::ACTIVITY, b""), Ok(Reply::Activity(x)) if x.streams == 0)
    ));
    // ... and the process still works: it takes input and exits by itself, not killed.
    use airlock_agent_protocol::Control;
    a.call_ok(
        c2a::STDIN,
        &Control::Stdin(Target::Pid(pid), b"hello\n".to_vec()).encode(),
    );
    let e = a.wait(Target::Pid(pid));
    assert_eq!((e.code, e.killed), (0, false), "{e:?}");
    let (out, _, _) = a.attach(Target::Pid(pid), 0, 0, true).unwrap();
    assert_eq!(out, b"got hello\n");
}

#[test]
fn a_caller_that_asked_for_it_takes_the_tree_down_when_it_disconnects() {
    let a = daemon();
    let dir = tmpdir("disconnect-tree");
    let m = marker_sleep();
    let spawned = Instant::now();
    let (pid, c) = {
        let mut c = a.client();
        let s = Start {
            attach: true,
            kill_on_disconnect: true,
            ..escaping_tree(&dir, &m)
        };
        c.send(c2a::START, &s.encode()).unwrap();
        match c.recv().unwrap() {
            Some(Reply::Started(st)) => (st.pid, c),
            other => panic!("{other:?}"),
        }
    };
    grandchildren(&dir, &m, pid);
    drop(c);
    let e = a.wait(Target::Pid(pid));
    assert_eq!((e.code, e.killed), (137, true), "{e:?}");
    assert_killed(&m, spawned);
}

#[test]
fn the_agents_death_ends_every_tree() {
    let a = daemon();
    let dir = tmpdir("agent-death");
    let m = marker_sleep();
    let spawned = Instant::now();
    let pid = a.start(escaping_tree(&dir, &m));
    grandchildren(&dir, &m, pid);
    drop(a); // SIGKILL: the shims see their control sockets close
    assert_killed(&m, spawned);
}

#[test]
fn a_caller_gone_before_the_start_is_answered_still_takes_the_process_down() {
    let a = daemon();
    let m = marker_sleep();
    {
        let mut c = a.client();
        let s = Start {
            attach: true,
            kill_on_disconnect: true,
            argv: argv(&["sleep", &m]),
            ..Start::default()
        };
        c.send(c2a::START, &s.encode()).unwrap();
    } // gone without reading STARTED
    let ended = |a: &Daemon| {
        a.list()
            .into_iter()
            .find(|p| p.argv == argv(&["sleep", &m]))
            .and_then(|p| p.exit)
    };
    assert!(eventually(T, || ended(&a).is_some()), "{:?}", a.list());
    let e = ended(&a).unwrap();
    assert_eq!((e.code, e.killed), (137, true), "{e:?}");
    assert!(sleeps(&m).is_empty());
}
