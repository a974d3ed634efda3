//! Helpers for the integration tests: run the built agent as a subprocess, build frames, scan
//! /proc.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BUILT_BIN: &str = env!("CARGO_BIN_EXE_airlock-agent");

/// The binary under test: the one cargo built for the tests, or `AIRLOCK_AGENT_BIN` (e.g. the
/// static build: `AIRLOCK_AGENT_BIN=$PWD/target/x86_64-unknown-linux-gnu/debug/airlock-agent`).
pub fn bin() -> String {
    std::env::var("AIRLOCK_AGENT_BIN").unwrap_or_else(|_| BUILT_BIN.to_string())
}

pub fn frame(typ: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![typ];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}
pub fn data(b: &[u8]) -> Vec<u8> {
    frame(1, b)
}
pub fn close() -> Vec<u8> {
    frame(2, b"")
}
pub fn signal(n: i32) -> Vec<u8> {
    frame(3, &n.to_be_bytes())
}
pub fn resize(cols: u16, rows: u16) -> Vec<u8> {
    let mut p = cols.to_be_bytes().to_vec();
    p.extend_from_slice(&rows.to_be_bytes());
    frame(4, &p)
}

pub fn code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A running agent with stdout/stderr collected in the background.
pub struct Agent {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

fn collect<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

pub fn spawn(args: &[&str]) -> Agent {
    spawn_cmd(Command::new(bin()).args(args))
}

pub fn spawn_cmd(cmd: &mut Command) -> Agent {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let stdin = child.stdin.take();
    let out = Some(collect(child.stdout.take().unwrap()));
    let err = Some(collect(child.stderr.take().unwrap()));
    Agent {
        child,
        stdin,
        out,
        err,
    }
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes bytes to the agent's stdin (errors ignored: the agent may have exited).
    pub fn send(&mut self, b: &[u8]) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = s.write_all(b);
            let _ = s.flush();
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the agent to exit (panics after `limit`), then for its output.
    pub fn wait(mut self, limit: Duration) -> Out {
        let st = wait_timeout(&mut self.child, limit).unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!("agent did not exit within {limit:?}");
        });
        self.stdin = None;
        let stdout = self.out.take().unwrap().join().unwrap();
        let stderr =
            String::from_utf8_lossy(&self.err.take().unwrap().join().unwrap()).into_owned();
        Out {
            code: code(st),
            stdout,
            stderr,
        }
    }
}

impl Drop for Agent {
    /// A failed test does not leave its agent running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the agent with `input` on stdin, keeping stdin open until the agent exits (as the
/// gateway does: EOF on a running exec means the client is gone), waiting at most 20 s.
pub fn run(args: &[&str], input: &[u8]) -> Out {
    let mut a = spawn(args);
    let mut stdin = a.stdin.take().unwrap();
    let input = input.to_vec();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        let _ = stdin.flush();
        // Held until the agent has exited.
        let _ = done_rx.recv();
    });
    let out = a.wait(Duration::from_secs(20));
    drop(done_tx);
    let _ = w.join();
    out
}

/// Runs the agent with `input` on stdin, then EOF (a client that went away).
pub fn run_then_eof(args: &[&str], input: &[u8]) -> Out {
    let mut a = spawn(args);
    let mut stdin = a.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = a.wait(Duration::from_secs(20));
    let _ = w.join();
    out
}

/// A string unique to this test process and call.
pub fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}{:09}{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A `sleep` duration that is unique and recognizable in /proc (e.g. "100.123456789012").
pub fn marker_sleep() -> String {
    format!("100.{}", unique())
}

/// Live (non-zombie) processes whose command line contains `marker`.
pub fn procs_with(marker: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(marker)
            && proc_state(pid).is_some_and(|(s, _)| s != 'Z')
        {
            v.push(pid);
        }
    }
    v
}

/// Live (non-zombie) `sleep MARKER` processes: the command line is exactly that (a shell whose
/// script mentions the marker does not count).
pub fn sleeps(marker: &str) -> Vec<u32> {
    let want = format!("sleep\0{marker}\0");
    procs_with(marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
        })
        .collect()
}

/// Every process with `marker` (a [`marker_sleep`], 100 s) is gone within 5 s, and long before the
/// sleeps would have ended by themselves (`start`: when the test started them): they were killed.
pub fn assert_killed(marker: &str, start: Instant) {
    assert!(
        eventually(Duration::from_secs(5), || procs_with(marker).is_empty()),
        "left behind: {:?}",
        procs_with(marker)
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(50),
        "the {marker} sleeps were gone only {took:?} after they started: they ended by themselves, nothing killed them"
    );
}

/// (state, ppid) from /proc/PID/stat.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Children of `parent`: (pid, state).
pub fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((state, ppid)) = proc_state(pid)
            && ppid == parent
        {
            v.push((pid, state));
        }
    }
    v
}

/// Polls `f` until true or `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh directory under the cargo target tmp dir.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("agent-{name}-{}", unique()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Deterministic pseudo-random bytes (xorshift).
pub fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(n);
    v
}
