//! `airlock-agent init --listen ADDR`: PID 1 as with plain `init`, and also the agent's TCP
//! service for the gateway: a table of processes that outlive their callers, with buffered
//! output, driven by the frames of `airlock_agent_protocol` (docs/DESIGN-NOTES.md, "Agent TCP
//! service").
//!
//! One thread, one poll loop, like `exec`: the signalfd (reaping, forwarded signals), the
//! listener, every connection, and every process's control socket, output and stdin. Nothing is
//! shared, so nothing is locked, and the daemon cannot race the reaper. Each process runs under
//! its own shim (`shim.rs`), which owns the process tree and reports the exit; one shim is kept
//! started ahead of the next call (`procs::Spare`).
//!
//! Just over 600 lines: the daemon's state and its one poll loop read in one place; connections
//! (`conn.rs`), process events (`events.rs`), the process table (`procs.rs`) and spawning
//! (`spawn.rs`) have files of their own.

pub mod auth;
mod conn;
mod events;
mod procs;
pub mod shim;
mod spawn;
mod tree;

use std::ffi::OsString;
use std::io::{self, ErrorKind};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_agent_protocol::FrameReader;
use libc::{c_int, pid_t};

use crate::init;
use crate::sys::{self, msg, pollfd};
use conn::{CState, Conn};
use procs::Proc;

/// Connections served at once; beyond, new ones wait in the listen backlog.
const MAX_CONNS: usize = 1024;
/// Processes running at once.
const MAX_RUNNING: usize = 1024;
/// Exited processes kept for ATTACH/WAIT/LIST; the oldest are forgotten first.
const MAX_EXITED: usize = 128;
/// Default and largest output buffer per stream.
const DEFAULT_BUFFER: u64 = 1 << 20;
const MAX_BUFFER: u64 = 64 << 20;
/// How long the agent, once its main command has ended, still delivers output and EXIT of
/// processes that ended before it goes.
const LAST_WORDS: Duration = Duration::from_secs(1);
/// How long clients must have been quiet before a spare shim is made (see `Daemon::spare_due`).
const SPARE_QUIET: Duration = Duration::from_millis(20);
/// Bytes accepted from a connection before its HELLO is complete.
const MAX_HELLO: usize = 4096;
/// A connection must authenticate within this long.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// After the shim's EXIT, output that has not reached EOF within this long is cut off (a
/// process outside the tree holding the pipe).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A closing connection waits this long for the client to close its side.
const LINGER: Duration = Duration::from_secs(5);
/// Unsent output per connection before it stops taking more from the buffers.
const CONN_WBUF: usize = 256 * 1024;
const READ_CHUNK: usize = 256 * 1024;

pub struct Opts {
    pub listen: String,
    pub token_file: Option<OsString>,
    pub argv: Vec<OsString>,
    /// `--fence-probe`: see [`crate::fence`].
    pub fence_probe: Option<std::net::SocketAddr>,
}

pub fn run(o: Opts) -> i32 {
    let token = match auth::load(o.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            msg(&e);
            return 5;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            msg(&format!(
                "cannot find the agent's own binary: {}",
                sys::err_text(&e)
            ));
            return 1;
        }
    };
    let mut sigs = vec![libc::SIGCHLD];
    sigs.extend_from_slice(&init::FORWARDED);
    let sfd = match sys::signalfd(&sigs, true) {
        Ok(fd) => fd,
        Err(e) => {
            msg(&format!("signalfd: {}", sys::err_text(&e)));
            return 1;
        }
    };
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
    // An address, never a name: resolving would pull the resolver into the static binary.
    let Ok(addr) = o.listen.parse::<std::net::SocketAddr>() else {
        msg(&format!(
            "--listen {}: want IP:PORT (e.g. 0.0.0.0:7070)",
            o.listen
        ));
        return 5;
    };
    // Nothing listens and nothing starts before the network is fenced (see crate::fence).
    if let Err(code) = crate::fence::before_start(o.fence_probe, sfd.as_raw_fd()) {
        return code;
    }
    let listener = match TcpListener::bind(addr).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    }) {
        Ok(l) => l,
        Err(e) => {
            msg(&format!("--listen {}: {}", o.listen, sys::err_text(&e)));
            return 1;
        }
    };
    // std listens with a backlog of 128; a burst of callers (hundreds of concurrent execs) should
    // wait in the queue, not in SYN retries.
    unsafe { libc::listen(listener.as_raw_fd(), MAX_CONNS as c_int) };
    if let Ok(a) = listener.local_addr() {
        msg(&format!("listening on {a}"));
    }
    let child = match init::spawn_child(&o.argv) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Listening on a loopback address (tests, a sidecar) serves local clients; otherwise a
    // connection from this pod itself is refused (see `accept`).
    let local_clients = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let mut d = Daemon {
        token,
        exe,
        sfd,
        local_clients,
        listener,
        child,
        conns: Vec::new(),
        procs: Vec::new(),
        next_key: 1,
        idle_since: Some(now_ms()),
        buf: vec![0; READ_CHUNK],
        spare: None,
        spare_after: None,
        quiet_since: None,
    };
    d.run()
}

/// TCP keepalive on a client connection: a gateway that vanished without a FIN (its pod or node
/// lost) is noticed within about a minute of silence (30 s, then 3 probes 10 s apart), so its
/// `kill_on_disconnect` processes end and the connection stops counting as activity.
fn keepalive(fd: RawFd) {
    let set = |level: c_int, opt: c_int, v: c_int| unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 30);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Daemon {
    token: Vec<u8>,
    exe: PathBuf,
    sfd: OwnedFd,
    /// Whether connections from this pod's own addresses are served.
    local_clients: bool,
    listener: TcpListener,
    child: Option<pid_t>,
    conns: Vec<Conn>,
    procs: Vec<Proc>,
    next_key: u64,
    /// When activity last ended (Unix ms); None while active.
    idle_since: Option<u64>,
    buf: Vec<u8>,
    /// A shim waiting for the next START without a tty (made when the daemon has nothing else
    /// to do: see `run`).
    spare: Option<procs::Spare>,
    /// No spare is tried before this (the last try failed).
    spare_after: Option<Instant>,
    /// Since when no client is in the middle of anything (see `spare_due`).
    quiet_since: Option<Instant>,
}

/// What a pollfd belongs to.
#[derive(Clone, Copy)]
enum Who {
    Signals,
    Listener,
    Conn(usize),
    /// Processes by key: handling one event may forget another process (indices shift).
    Ctl(u64),
    Out(u64),
    Err(u64),
    In(u64),
}

impl Daemon {
    fn run(&mut self) -> i32 {
        // Set when the main command has ended: (the agent's exit code, until when it may still
        // deliver what its clients are owed).
        let mut ending: Option<(i32, Instant)> = None;
        loop {
            if let Some((code, until)) = ending
                && (Instant::now() >= until || !self.owes_answers())
            {
                return code;
            }
            let (mut fds, who) = self.interest();
            // A spare shim is made once clients have been quiet for SPARE_QUIET (spawning blocks
            // the daemon for a few ms: it must not hold up work at hand or a call on its way).
            let spare_due = if ending.is_none() { self.spare_due() } else { None };
            let timeout = self.next_deadline().into_iter().chain(spare_due).min().map_or(-1, |d| {
                d.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as c_int
                    + 1
            });
            let timeout = if ending.is_some() {
                timeout.clamp(0, 50)
            } else {
                timeout
            };
            let ready = match sys::poll(&mut fds, timeout) {
                Ok(n) => n,
                Err(e) => {
                    msg(&format!("poll: {}", sys::err_text(&e)));
                    return 1;
                }
            };
            if ready == 0 && spare_due.is_some_and(|t| Instant::now() >= t) {
                self.make_spare();
                continue;
            }
            for (i, f) in fds.iter().enumerate() {
                // `who[i]` copied: handlers may change the tables.
                if f.revents == 0 {
                    continue;
                }
                match who[i] {
                    Who::Signals => {
                        // The main command ended: the sandbox ends. A call whose process had
                        // ended just before (the one that told the main command to stop, say)
                        // still gets its output and EXIT, for at most LAST_WORDS.
                        if let Some(code) = self.signals()
                            && ending.is_none()
                        {
                            ending = Some((code, Instant::now() + LAST_WORDS));
                        }
                    }
                    Who::Listener => self.accept(),
                    Who::Conn(c) => {
                        if f.revents & libc::POLLOUT != 0 {
                            self.conns[c].flush();
                        }
                        if f.revents & !libc::POLLOUT != 0 {
                            self.conn_read(c);
                        }
                    }
                    Who::Ctl(k) | Who::Out(k) | Who::Err(k) | Who::In(k) => {
                        let Some(p) = self.procs.iter().position(|p| p.key == k) else {
                            continue;
                        };
                        match who[i] {
                            Who::Ctl(_) => self.ctl_read(p),
                            Who::Out(_) => self.output(p, false),
                            Who::Err(_) => self.output(p, true),
                            _ => self.procs[p].flush_input(),
                        }
                    }
                }
            }
            self.progress();
        }
    }

    /// The pollfds of this round (rebuilt each time: a few hundred fds at most).
    fn interest(&self) -> (Vec<libc::pollfd>, Vec<Who>) {
        let mut fds = vec![pollfd(self.sfd.as_raw_fd(), libc::POLLIN)];
        let mut who = vec![Who::Signals];
        let mut add = |fd: RawFd, ev: libc::c_short, w: Who| {
            fds.push(pollfd(fd, ev));
            who.push(w);
        };
        if self.conns.len() < MAX_CONNS {
            add(self.listener.as_raw_fd(), libc::POLLIN, Who::Listener);
        }
        for (i, c) in self.conns.iter().enumerate() {
            let mut ev = 0;
            if c.wants_read(&self.procs) {
                ev |= libc::POLLIN;
            }
            if c.pending_write() || c.behind(&self.procs) {
                ev |= libc::POLLOUT;
            }
            // Nothing wanted: not polled at all (a hung-up peer would report POLLHUP forever).
            if ev != 0 {
                add(c.sock.as_raw_fd(), ev, Who::Conn(i));
            }
        }
        for p in &self.procs {
            let i = p.key;
            if let Some(c) = &p.ctl {
                add(c.as_raw_fd(), libc::POLLIN, Who::Ctl(i));
            }
            let (keep_out, keep_err) = self.readers_of(p.key);
            if let Some(f) = &p.out_fd
                && p.out.room(keep_out) > 0
            {
                add(f.as_raw_fd(), libc::POLLIN, Who::Out(i));
            }
            if let Some(f) = &p.err_fd
                && p.err.room(keep_err) > 0
            {
                add(f.as_raw_fd(), libc::POLLIN, Who::Err(i));
            }
            if !p.pending.is_empty()
                && let Some(fd) = p.input_fd()
            {
                add(fd, libc::POLLOUT, Who::In(i));
            }
        }
        (fds, who)
    }

    /// The slowest attached readers' offsets (stdout, stderr) of process `key`: output they have
    /// not been sent yet is never dropped (the process waits instead).
    fn readers_of(&self, key: u64) -> (Option<u64>, Option<u64>) {
        let (mut o, mut e) = (None::<u64>, None::<u64>);
        for c in &self.conns {
            let at = match c.state {
                CState::Attached {
                    proc,
                    out,
                    err,
                    output: true,
                    ..
                } if proc == key => (out, err),
                CState::Starting { proc, attach: true } if proc == key => (0, 0),
                _ => continue,
            };
            o = Some(o.map_or(at.0, |x| x.min(at.0)));
            e = Some(e.map_or(at.1, |x| x.min(at.1)));
        }
        (o, e)
    }

    /// When to make a spare shim (none is there): once every connection has been closing with
    /// nothing left to send for SPARE_QUIET. A connection just opened is a call on its way, one
    /// starting or streaming a process is waiting for it; and calls in quick succession keep
    /// the daemon from ever spawning between them (each call then spawns its own shim, as
    /// without a spare). Updates when that quiet began.
    fn spare_due(&mut self) -> Option<Instant> {
        let quiet = self
            .conns
            .iter()
            .all(|c| matches!(c.state, CState::Closing) && !c.pending_write());
        if !quiet {
            self.quiet_since = None;
            return None;
        }
        let since = *self.quiet_since.get_or_insert_with(Instant::now);
        if self.spare.is_some() {
            return None;
        }
        Some((since + SPARE_QUIET).max(self.spare_after.unwrap_or(since)))
    }

    /// Starts a spare shim; after a failure (the binary gone, out of processes) the next try is
    /// a second later, and calls spawn their shims themselves meanwhile.
    fn make_spare(&mut self) {
        match procs::Spare::spawn(&self.exe) {
            Ok(s) => {
                self.spare = Some(s);
                self.spare_after = None;
            }
            Err(e) => {
                msg(&format!(
                    "starting a spare process supervisor: {}",
                    sys::err_text(&e)
                ));
                self.spare_after = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let c = self.conns.iter().filter_map(|c| c.deadline);
        let p = self
            .procs
            .iter()
            .filter(|p| p.exit.is_none())
            .filter_map(|p| p.status_at.map(|t| t + DRAIN_TIMEOUT));
        c.chain(p).min()
    }

    /// Reaps (the shims, orphans, the main command) and forwards signals to the main command.
    /// Some(code) when the agent is to exit.
    /// Whether a client may still be owed something: unsent bytes, or a stream whose process
    /// may have ended just now (its shim's report can come after the main command's SIGCHLD).
    fn owes_answers(&self) -> bool {
        self.conns
            .iter()
            .any(|c| c.pending_write() || c.attached_to().is_some())
    }

    fn signals(&mut self) -> Option<i32> {
        let sigs = match sys::read_signals(self.sfd.as_raw_fd()) {
            Ok(s) => s,
            Err(e) => {
                msg(&format!("signalfd: {}", sys::err_text(&e)));
                return Some(1);
            }
        };
        let mut child_status = None;
        for sig in sigs {
            if sig == libc::SIGCHLD {
                loop {
                    let mut st: c_int = 0;
                    let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
                    if pid <= 0 {
                        break;
                    }
                    if Some(pid) == self.child {
                        child_status = Some(st);
                    }
                }
            } else if let Some(pid) = self.child {
                unsafe { libc::kill(pid, sig) };
            } else if sig == libc::SIGTERM || sig == libc::SIGINT {
                return Some(128 + sig);
            }
        }
        child_status.map(sys::exit_code)
    }

    fn accept(&mut self) {
        while self.conns.len() < MAX_CONNS {
            match self.listener.accept() {
                Ok((sock, peer)) => {
                    // The agent serves the gateway, never the sandbox's own code: a connection
                    // from this pod (loopback, or the pod's own address, which the NetworkPolicy
                    // cannot fence) is closed unanswered, so a process in the sandbox that
                    // learnt the token (a `pods/exec` process gets the container's environment)
                    // can do nothing with it.
                    let from_here = peer.ip().is_loopback()
                        || sock.local_addr().is_ok_and(|l| l.ip() == peer.ip());
                    if from_here && !self.local_clients {
                        continue;
                    }
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = sock.set_nodelay(true);
                    keepalive(sock.as_raw_fd());
                    let key = self.key();
                    self.conns
                        .push(Conn::new(key, sock, Instant::now() + HELLO_TIMEOUT));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: leave the rest in the backlog for the next round.
                    msg(&format!("accept: {}", sys::err_text(&e)));
                    return;
                }
            }
        }
    }

    fn key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    fn conn_read(&mut self, c: usize) {
        let mut budget = 4;
        while budget > 0 && self.conns[c].wants_read(&self.procs) {
            budget -= 1;
            let n = match read_sock(&self.conns[c].sock, &mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => 0,
            };
            if n == 0 {
                self.conns[c].read_eof = true;
                return;
            }
            if matches!(self.conns[c].state, CState::Closing) {
                continue; // discarded: we only wait for the client to close
            }
            let bytes = self.buf[..n].to_vec();
            self.conns[c].reader.push(&bytes);
            // Before HELLO nobody is trusted with more than a HELLO's worth of memory.
            if matches!(self.conns[c].state, CState::Hello)
                && self.conns[c].reader.buffered() > MAX_HELLO
            {
                self.conns[c].reader = FrameReader::new();
                self.conns[c].fail(
                    airlock_agent_protocol::ErrorCode::Unauthenticated,
                    format!("HELLO is at most {MAX_HELLO} bytes"),
                );
                return;
            }
            loop {
                let f = self.conns[c].reader.next_frame();
                match f {
                    Ok(Some((typ, p))) => self.frame(c, typ, &p),
                    Ok(None) => break,
                    Err(e) => {
                        self.conns[c].reader = FrameReader::new();
                        self.conns[c].fail(
                            airlock_agent_protocol::ErrorCode::InvalidArgument,
                            e.to_string(),
                        );
                        break;
                    }
                }
            }
        }
    }

    /// After every round: finish exits, stream output, close and drop connections, forget old
    /// processes, track activity.
    fn progress(&mut self) {
        let now = Instant::now();
        for p in &mut self.procs {
            if p.exit.is_none()
                && let (Some(st), Some(at)) = (&p.status, p.status_at)
                && ((p.out.eof && p.err.eof) || now >= at + DRAIN_TIMEOUT)
            {
                let mut e = st.clone();
                e.out_end = p.out.end();
                e.err_end = p.err.end();
                p.exit = Some(e);
                p.out.eof = true;
                p.err.eof = true;
                p.out_fd = None;
                p.err_fd = None;
                p.stdin = None;
                p.master = None;
                p.ctl = None;
                p.pending.clear();
            }
        }
        let mut forget = Vec::new();
        for c in &mut self.conns {
            if let Some(k) = c.pump(&self.procs) {
                forget.push(k);
            }
            c.flush();
            c.maybe_close(now);
        }
        // Connections that are gone: a process they started with kill_on_disconnect is killed.
        let mut gone = Vec::new();
        self.conns.retain(|c| {
            let keep = !c.dead;
            if !keep {
                gone.push(c.key);
            }
            keep
        });
        for p in &mut self.procs {
            if let Some(o) = p.owner
                && gone.contains(&o)
            {
                p.owner = None;
                if p.exit.is_none() {
                    p.kill();
                }
                p.ephemeral = false;
            }
        }
        self.procs.retain(|p| !forget.contains(&p.key));
        self.evict();
        let active =
            self.procs.iter().any(|p| p.exit.is_none()) || self.conns.iter().any(|c| c.streaming());
        if active {
            self.idle_since = None;
        } else if self.idle_since.is_none() {
            self.idle_since = Some(now_ms());
        }
    }

    /// Forgets the oldest exited processes beyond MAX_EXITED that no connection is reading.
    fn evict(&mut self) {
        let exited = self.procs.iter().filter(|p| p.exit.is_some()).count();
        if exited <= MAX_EXITED {
            return;
        }
        let mut drop_n = exited - MAX_EXITED;
        let busy: Vec<u64> = self.conns.iter().filter_map(|c| c.proc_key()).collect();
        self.procs.retain(|p| {
            if drop_n > 0 && p.exit.is_some() && !busy.contains(&p.key) {
                drop_n -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Counts a request as activity (the idle clock restarts).
    fn touch(&mut self) {
        if self.idle_since.is_some() {
            self.idle_since = Some(now_ms());
        }
    }
}

fn read_sock(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    sys::read(s.as_raw_fd(), buf)
}
