//! Starts the agent binary as `init --listen 127.0.0.1:0` with a token and talks to it with the
//! protocol crate's blocking client.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use airlock_agent_protocol::{
    Attach, Client, ClientError, ErrorMsg, Exit, ProcInfo, Reply, Start, Target, c2a,
};

use crate::common::{bin, unique};

pub const T: Duration = Duration::from_secs(20);

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub token: Vec<u8>,
}

impl Drop for Daemon {
    /// The agent's death closes every control socket: the shims kill their trees.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent in daemon mode with a fresh token; returns once it listens.
pub fn daemon() -> Daemon {
    daemon_with(&[])
}

/// The same, with `init` arguments after the listen address (e.g. `--`, a main command).
pub fn daemon_with(more: &[&str]) -> Daemon {
    daemon_on("127.0.0.1:0", more)
}

/// The agent listening on `listen`.
pub fn daemon_on(listen: &str, more: &[&str]) -> Daemon {
    let token = format!("test-token-{}", unique()).into_bytes();
    let mut child = Command::new(bin())
        .args(["init", "--listen", listen])
        .args(more)
        .env(
            "AIRLOCK_AGENT_TOKEN",
            String::from_utf8(token.clone()).unwrap(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("airlock-agent: listening on ") {
                let _ = tx.send(a.parse::<SocketAddr>().unwrap());
            } else {
                eprintln!("agent: {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(T)
        .expect("the agent never said where it listens");
    Daemon { child, addr, token }
}

impl Daemon {
    pub fn client(&self) -> Client {
        let c = Client::connect(self.addr, &self.token).expect("connect");
        c.set_read_timeout(Some(T)).unwrap();
        c
    }

    /// START without attach: the pid.
    pub fn start(&self, s: Start) -> u32 {
        match self.client().call(c2a::START, &s.encode()) {
            Ok(Reply::Started(st)) => st.pid,
            other => panic!("start {:?}: {other:?}", s.argv),
        }
    }

    pub fn try_call(&self, typ: u8, payload: &[u8]) -> Result<Reply, ClientError> {
        self.client().call(typ, payload)
    }

    pub fn call_ok(&self, typ: u8, payload: &[u8]) {
        match self.try_call(typ, payload) {
            Ok(Reply::Ok) => {}
            other => panic!("frame 0x{typ:02x}: {other:?}"),
        }
    }

    pub fn wait(&self, t: Target) -> Exit {
        match self.try_call(c2a::WAIT, &t.encode()) {
            Ok(Reply::Exit(e)) => e,
            other => panic!("wait: {other:?}"),
        }
    }

    pub fn list(&self) -> Vec<ProcInfo> {
        match self.try_call(c2a::LIST, b"") {
            Ok(Reply::Procs(l)) => l,
            other => panic!("list: {other:?}"),
        }
    }

    /// ATTACH and read until EXIT/END: (stdout, stderr, last frame), or the agent's error.
    pub fn attach(
        &self,
        t: Target,
        out: u64,
        err: u64,
        follow: bool,
    ) -> Result<(Vec<u8>, Vec<u8>, Reply), ErrorMsg> {
        let mut c = self.client();
        let a = Attach {
            target: t,
            out_offset: out,
            err_offset: err,
            follow,
        };
        c.send(c2a::ATTACH, &a.encode()).unwrap();
        match c.collect(out, err) {
            Ok(r) => Ok(r),
            Err(ClientError::Agent(e)) => Err(e),
            Err(e) => panic!("attach: {e}"),
        }
    }
}

pub fn argv(a: &[&str]) -> Vec<Vec<u8>> {
    a.iter().map(|s| s.as_bytes().to_vec()).collect()
}

pub fn sh(script: &str) -> Start {
    Start {
        argv: argv(&["sh", "-c", script]),
        ..Start::default()
    }
}
