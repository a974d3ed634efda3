//! One client connection of the daemon, and the requests it can make.
//! (Just over 600 lines: one connection's state machine, kept in one piece.)
//!
//! A connection: HELLO (token) -> OK, then one request. START without attach, STDIN, CLOSE_STDIN,
//! SIGNAL_PROC, RESIZE_PROC, KILL, FORGET, LIST and ACTIVITY get one answer; START with attach,
//! ATTACH and WAIT stream until EXIT (or END, or ERROR). While streaming, DATA/CLOSE/SIGNAL/RESIZE
//! frames from the client act on that process. The agent closes the connection after the last
//! answer (and waits for the client to close its side, so the answer is not lost to a reset).

use std::io::ErrorKind;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use airlock_agent_protocol::{
    Activity, Attach, Control, Dropped, End, ErrorCode, ErrorMsg, FrameReader, Hello, ProcInfo,
    Start, Target, VERSION, a2c, c2a, constant_time_eq, output_payload, put_frame,
};

use super::procs::{self, MAX_PENDING, Proc, Ring};
use super::{CONN_WBUF, Daemon, LINGER, now_ms};
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CState {
    Hello,
    Request,
    /// START sent to the shim; STARTED or ERROR comes next.
    Starting {
        proc: u64,
        attach: bool,
    },
    /// Streaming output from these offsets (output=false: WAIT, the exit only).
    Attached {
        proc: u64,
        out: u64,
        err: u64,
        follow: bool,
        output: bool,
    },
    /// Last answer queued: flush, shut down writing, wait for the client's EOF.
    Closing,
}

pub struct Conn {
    pub key: u64,
    pub sock: TcpStream,
    pub reader: FrameReader,
    wbuf: Vec<u8>,
    wpos: usize,
    pub state: CState,
    /// HELLO by then, or (closing) the client's EOF by then.
    pub deadline: Option<Instant>,
    pub read_eof: bool,
    shut: bool,
    pub dead: bool,
}

impl Conn {
    pub fn new(key: u64, sock: TcpStream, hello_by: Instant) -> Conn {
        Conn {
            key,
            sock,
            reader: FrameReader::new(),
            wbuf: Vec::new(),
            wpos: 0,
            state: CState::Hello,
            deadline: Some(hello_by),
            read_eof: false,
            shut: false,
            dead: false,
        }
    }

    pub fn send(&mut self, typ: u8, payload: &[u8]) {
        put_frame(&mut self.wbuf, typ, payload);
    }

    /// ERROR, then close.
    pub fn fail(&mut self, code: ErrorCode, message: String) {
        self.send(a2c::ERROR, &ErrorMsg::new(code, message).encode());
        self.state = CState::Closing;
    }

    fn fail_msg(&mut self, m: ErrorMsg) {
        self.send(a2c::ERROR, &m.encode());
        self.state = CState::Closing;
    }

    /// The process this connection streams, if it is attached to one.
    pub fn attached_to(&self) -> Option<u64> {
        match self.state {
            CState::Attached { proc, .. } => Some(proc),
            _ => None,
        }
    }

    pub fn pending_write(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    /// Whether the attached process has output this connection has not queued yet ([`pump`]
    /// stops at a full write buffer). Such a connection must be polled for POLLOUT even once its
    /// buffer is flushed: otherwise, with the process's ring full for this reader (its pipe no
    /// longer polled) and the buffer empty, nothing would wake the loop to pump again, and the
    /// process would block on its pipe forever.
    ///
    /// [`pump`]: Conn::pump
    pub fn behind(&self, procs: &[Proc]) -> bool {
        let CState::Attached {
            proc,
            out,
            err,
            output: true,
            ..
        } = self.state
        else {
            return false;
        };
        procs
            .iter()
            .find(|p| p.key == proc)
            .is_some_and(|p| out < p.out.end() || err < p.err.end())
    }

    /// Whether to read from the socket now: not after EOF, and not while the attached process
    /// has a full stdin queue (backpressure to the client).
    pub fn wants_read(&self, procs: &[Proc]) -> bool {
        if self.read_eof || self.dead {
            return false;
        }
        match self.state {
            CState::Attached { proc, .. } | CState::Starting { proc, .. } => !procs
                .iter()
                .any(|p| p.key == proc && p.pending.len() >= MAX_PENDING),
            _ => true,
        }
    }

    pub fn streaming(&self) -> bool {
        matches!(
            self.state,
            CState::Starting { .. } | CState::Attached { .. }
        )
    }

    pub fn proc_key(&self) -> Option<u64> {
        match self.state {
            CState::Starting { proc, .. } | CState::Attached { proc, .. } => Some(proc),
            _ => None,
        }
    }

    pub fn flush(&mut self) {
        while self.wpos < self.wbuf.len() {
            match sys::send_some(self.sock.as_raw_fd(), &self.wbuf[self.wpos..]) {
                Ok(0) => break,
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > CONN_WBUF {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
    }

    /// Moves buffered output to the socket's queue, and EXIT/END when done. Returns the key of a
    /// process to forget (an ephemeral one whose EXIT went to its owner).
    pub fn pump(&mut self, procs: &[Proc]) -> Option<u64> {
        let CState::Attached {
            proc,
            mut out,
            mut err,
            follow,
            output,
        } = self.state
        else {
            return None;
        };
        let Some(p) = procs.iter().find(|p| p.key == proc) else {
            self.fail(ErrorCode::NotFound, "the process was forgotten".into());
            return None;
        };
        if output {
            for (stream, ring, at, typ) in [
                ("stdout", &p.out, &mut out, a2c::STDOUT),
                ("stderr", &p.err, &mut err, a2c::STDERR),
            ] {
                if *at < ring.start() {
                    self.fail_msg(dropped(stream, *at, ring));
                    return None;
                }
                while *at < ring.end() && self.wbuf.len() - self.wpos < CONN_WBUF {
                    let mut chunk = Vec::with_capacity(32 * 1024);
                    ring.read_at(*at, 32 * 1024, &mut chunk);
                    self.send(typ, &output_payload(*at, &chunk));
                    *at += chunk.len() as u64;
                }
            }
        }
        let caught_up = !output || (out == p.out.end() && err == p.err.end());
        let mut forget = None;
        self.state = if caught_up && let Some(e) = &p.exit {
            self.send(a2c::EXIT, &e.encode());
            if p.ephemeral && p.owner == Some(self.key) {
                forget = Some(p.key);
            }
            CState::Closing
        } else if caught_up && !follow {
            let end = End {
                out_end: out,
                err_end: err,
                running: true,
            };
            self.send(a2c::END, &end.encode());
            CState::Closing
        } else {
            CState::Attached {
                proc,
                out,
                err,
                follow,
                output,
            }
        };
        forget
    }

    /// Closing: once flushed, shut down writing and wait (LINGER at most) for the client's EOF.
    /// Other states: EOF or an expired HELLO deadline ends the connection.
    pub fn maybe_close(&mut self, now: Instant) {
        if self.dead {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            self.dead = true;
            return;
        }
        if matches!(self.state, CState::Closing) {
            if !self.pending_write() && !self.shut {
                let _ = self.sock.shutdown(Shutdown::Write);
                self.shut = true;
                self.deadline = Some(now + LINGER);
            }
            if self.shut && self.read_eof {
                self.dead = true;
            }
        } else if self.read_eof {
            self.dead = true;
        }
    }
}

fn dropped(stream: &str, asked: u64, ring: &Ring) -> ErrorMsg {
    let mut m = ErrorMsg::new(
        ErrorCode::OutOfRange,
        format!(
            "{stream}: {} bytes dropped: asked from offset {asked}, the buffer holds offsets {}..{}",
            ring.start() - asked,
            ring.start(),
            ring.end()
        ),
    );
    m.dropped = Some(Dropped {
        stream: stream.into(),
        asked,
        first: ring.start(),
    });
    m
}

fn has_nul(b: &[u8]) -> bool {
    b.contains(&0)
}

impl Daemon {
    /// One frame from connection `c`.
    pub(super) fn frame(&mut self, c: usize, typ: u8, p: &[u8]) {
        match self.conns[c].state {
            CState::Hello => {
                let ok = typ == c2a::HELLO
                    && Hello::decode(p).is_ok_and(|h| {
                        // Compare first: the time taken does not depend on the version.
                        constant_time_eq(&self.token, &h.token) && h.version == VERSION
                    });
                let conn = &mut self.conns[c];
                if ok {
                    conn.send(a2c::OK, b"");
                    conn.state = CState::Request;
                    conn.deadline = None;
                } else {
                    conn.fail(
                        ErrorCode::Unauthenticated,
                        format!("the first frame must be HELLO with this sandbox's token and protocol version {VERSION}"),
                    );
                }
            }
            CState::Request => {
                if typ != c2a::LIST && typ != c2a::ACTIVITY {
                    self.touch();
                }
                if let Err(m) = self.request(c, typ, p) {
                    self.conns[c].fail_msg(m);
                }
            }
            CState::Starting { proc, .. } | CState::Attached { proc, .. } => {
                self.stream_frame(proc, typ, p)
            }
            CState::Closing => {}
        }
    }

    /// DATA / CLOSE / SIGNAL / RESIZE on a streaming connection: for its process.
    fn stream_frame(&mut self, key: u64, typ: u8, p: &[u8]) {
        let Some(pr) = self.procs.iter_mut().find(|x| x.key == key) else {
            return;
        };
        match typ {
            c2a::DATA if pr.queue_input(p) && pr.pid != 0 => pr.flush_input(),
            c2a::CLOSE => {
                pr.request_close();
                if pr.pid != 0 {
                    pr.flush_input();
                }
            }
            c2a::SIGNAL if p.len() == 4 => {
                let _ = signal(pr, i32::from_be_bytes([p[0], p[1], p[2], p[3]]));
            }
            c2a::RESIZE if p.len() == 4 => {
                pr.resize(
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                );
            }
            _ => {}
        }
    }

    /// The newest entry with that pid or tag.
    fn find(&self, t: &Target) -> Result<usize, ErrorMsg> {
        self.procs
            .iter()
            .rposition(|p| match t {
                Target::Pid(pid) => p.pid != 0 && p.pid == *pid,
                Target::Tag(tag) => p.pid != 0 && p.tag.as_deref() == Some(tag.as_str()),
            })
            .ok_or_else(|| ErrorMsg::new(ErrorCode::NotFound, format!("no process with {t}")))
    }

    fn request(&mut self, c: usize, typ: u8, p: &[u8]) -> Result<(), ErrorMsg> {
        let bad = |e: airlock_agent_protocol::ProtoError| {
            ErrorMsg::new(ErrorCode::InvalidArgument, e.to_string())
        };
        match typ {
            c2a::START => return self.start(c, Start::decode(p).map_err(bad)?),
            c2a::ATTACH => {
                let a = Attach::decode(p).map_err(bad)?;
                let i = self.find(&a.target)?;
                let pr = &self.procs[i];
                for (stream, at, ring) in [
                    ("stdout", a.out_offset, &pr.out),
                    ("stderr", a.err_offset, &pr.err),
                ] {
                    if at > ring.end() {
                        return Err(ErrorMsg::new(
                            ErrorCode::InvalidArgument,
                            format!(
                                "{stream} offset {at} is past the end of the output ({})",
                                ring.end()
                            ),
                        ));
                    }
                    if at < ring.start() {
                        return Err(dropped(stream, at, ring));
                    }
                }
                self.conns[c].state = CState::Attached {
                    proc: pr.key,
                    out: a.out_offset,
                    err: a.err_offset,
                    follow: a.follow,
                    output: true,
                };
            }
            c2a::WAIT => {
                let i = self.find(&Target::decode(p).map_err(bad)?)?;
                let (out, err) = (self.procs[i].out.end(), self.procs[i].err.end());
                self.conns[c].state = CState::Attached {
                    proc: self.procs[i].key,
                    out,
                    err,
                    follow: true,
                    output: false,
                };
            }
            c2a::STDIN | c2a::SIGNAL_PROC | c2a::RESIZE_PROC => {
                let ctl = Control::decode(typ, p).map_err(bad)?;
                let t = match &ctl {
                    Control::Stdin(t, _) | Control::Signal(t, _) | Control::Resize(t, _, _) => t,
                };
                let i = self.find(t)?;
                let pr = &mut self.procs[i];
                match &ctl {
                    Control::Stdin(_, d) => {
                        if pr.pending.len() + d.len() > MAX_PENDING {
                            return Err(ErrorMsg::new(
                                ErrorCode::ResourceExhausted,
                                format!(
                                    "pid {}: {} bytes of stdin are not read yet; send again later",
                                    pr.pid,
                                    pr.pending.len()
                                ),
                            ));
                        }
                        if !pr.queue_input(d) {
                            return Err(precondition(pr, "stdin is closed"));
                        }
                        pr.flush_input();
                    }
                    Control::Signal(_, s) => signal(pr, *s)?,
                    Control::Resize(_, cols, rows) => {
                        if !pr.running() || !pr.resize(*cols, *rows) {
                            return Err(precondition(
                                pr,
                                "has no terminal (started without tty) or has exited",
                            ));
                        }
                    }
                }
                self.conns[c].send(a2c::OK, b"");
                self.conns[c].state = CState::Closing;
            }
            c2a::CLOSE_STDIN | c2a::KILL | c2a::FORGET => {
                let i = self.find(&Target::decode(p).map_err(bad)?)?;
                let pr = &mut self.procs[i];
                match typ {
                    c2a::CLOSE_STDIN => {
                        pr.request_close();
                        pr.flush_input();
                    }
                    c2a::KILL => pr.kill(),
                    _ => {
                        if pr.running() {
                            return Err(precondition(pr, "is still running (KILL it first)"));
                        }
                        let key = pr.key;
                        self.procs.remove(i);
                        let _ = key;
                    }
                }
                self.conns[c].send(a2c::OK, b"");
                self.conns[c].state = CState::Closing;
            }
            c2a::LIST => {
                let list: Vec<ProcInfo> = self
                    .procs
                    .iter()
                    .filter(|p| p.pid != 0)
                    .map(|p| ProcInfo {
                        pid: p.pid,
                        tag: p.tag.clone(),
                        argv: p.argv.clone(),
                        tty: p.tty,
                        started_unix_ms: p.started_ms,
                        exit: p.exit.clone(),
                        out_start: p.out.start(),
                        out_end: p.out.end(),
                        err_start: p.err.start(),
                        err_end: p.err.end(),
                    })
                    .collect();
                self.conns[c].send(a2c::PROCS, &ProcInfo::encode_list(&list));
                self.conns[c].state = CState::Closing;
            }
            c2a::CLAIM => {
                let h = Hello::decode(p).map_err(bad)?;
                if h.token.len() < 32 {
                    return Err(ErrorMsg::new(
                        ErrorCode::InvalidArgument,
                        "token: a claim's token has at least 32 bytes",
                    ));
                }
                self.token = h.token;
                // Whatever the old token opened is closed: every other connection ends here
                // (a pool's pod has no client but the operator), so the start token leaves no
                // open door behind.
                for (i, other) in self.conns.iter_mut().enumerate() {
                    if i != c && !matches!(other.state, CState::Closing) {
                        other.fail(
                            ErrorCode::Unauthenticated,
                            "the sandbox was claimed: its start token is no longer valid".into(),
                        );
                    }
                }
                self.conns[c].send(a2c::OK, b"");
                self.conns[c].state = CState::Closing;
            }
            c2a::ACTIVITY => {
                let a = Activity {
                    processes: self.procs.iter().filter(|p| p.running()).count() as u32,
                    streams: self.conns.iter().filter(|c| c.streaming()).count() as u32,
                    idle_since_unix_ms: self.idle_since.unwrap_or(0),
                    now_unix_ms: now_ms(),
                };
                self.conns[c].send(a2c::ACTIVITY, &a.encode());
                self.conns[c].state = CState::Closing;
            }
            _ => {
                return Err(ErrorMsg::new(
                    ErrorCode::InvalidArgument,
                    format!("unknown request frame type 0x{typ:02x}"),
                ));
            }
        }
        Ok(())
    }

    fn start(&mut self, c: usize, s: Start) -> Result<(), ErrorMsg> {
        let inval = |m: String| ErrorMsg::new(ErrorCode::InvalidArgument, m);
        if s.argv.is_empty() || s.argv[0].is_empty() {
            return Err(inval("argv: must name a program".into()));
        }
        if let Some(i) = s.argv.iter().position(|a| has_nul(a)) {
            return Err(inval(format!("argv[{i}]: contains a NUL byte")));
        }
        for (i, e) in s.env.iter().enumerate() {
            if has_nul(e) || e.iter().position(|&b| b == b'=').is_none_or(|p| p == 0) {
                return Err(inval(format!(
                    "env[{i}]: want NAME=VALUE without NUL bytes"
                )));
            }
        }
        if s.cwd.as_ref().is_some_and(|d| d.is_empty() || has_nul(d)) {
            return Err(inval("cwd: empty or contains a NUL byte".into()));
        }
        if s.size.is_some() && !s.tty {
            return Err(inval("size: only with tty".into()));
        }
        if s.size.is_some_and(|(c, r)| c == 0 || r == 0) {
            return Err(inval("size: cols and rows must be at least 1".into()));
        }
        let buffer = s.buffer.unwrap_or(super::DEFAULT_BUFFER);
        if buffer == 0 || buffer > super::MAX_BUFFER {
            return Err(inval(format!(
                "buffer: must be 1..={} bytes",
                super::MAX_BUFFER
            )));
        }
        if let Some(t) = &s.tag {
            if t.is_empty() || t.len() > 256 {
                return Err(inval("tag: 1 to 256 bytes".into()));
            }
            if let Some(p) = self.procs.iter().find(|p| p.tag.as_ref() == Some(t)) {
                if p.running() {
                    return Err(ErrorMsg::new(
                        ErrorCode::AlreadyExists,
                        format!("tag {t:?}: pid {} has it and still runs", p.pid),
                    ));
                }
                let key = p.key;
                self.procs.retain(|p| p.key != key);
            }
        }
        if self.procs.iter().filter(|p| p.running()).count() >= super::MAX_RUNNING {
            return Err(ErrorMsg::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "{} processes are running, the most the agent runs at once",
                    super::MAX_RUNNING
                ),
            ));
        }
        // A spare shim if there is one (pipes only); one that is gone is replaced by a new
        // shim at once.
        let spare = if s.tty { None } else { self.spare.take() };
        let sp = match spare.map(|sp| sp.start(&s)) {
            Some(Ok(sp)) => Ok(sp),
            _ => procs::spawn(&self.exe, &s),
        };
        let sp = sp.map_err(|e| {
            ErrorMsg::new(
                ErrorCode::Internal,
                format!("starting the process supervisor: {}", sys::err_text(&e)),
            )
        })?;
        let key = self.key();
        let conn_key = self.conns[c].key;
        let mut err = Ring::new(buffer as usize);
        err.eof = sp.err.is_none();
        let mut pr = Proc {
            key,
            pid: 0,
            tag: s.tag.clone(),
            argv: s.argv.clone(),
            tty: s.tty,
            started_ms: now_ms(),
            ctl: Some(sp.ctl),
            ctl_reader: FrameReader::new(),
            stdin: sp.stdin,
            master: sp.master,
            out_fd: Some(sp.out),
            err_fd: sp.err,
            grown: [false; 2],
            out: Ring::new(buffer as usize),
            err,
            pending: s.stdin,
            last_written: None,
            close_requested: false,
            input_closed: false,
            status: None,
            status_at: None,
            exit: None,
            kill_sent: false,
            owner: s.kill_on_disconnect.then_some(conn_key),
            ephemeral: s.attach && s.kill_on_disconnect,
        };
        if s.close_stdin {
            pr.request_close();
        }
        self.procs.push(pr);
        self.conns[c].state = CState::Starting {
            proc: key,
            attach: s.attach,
        };
        Ok(())
    }
}

fn precondition(p: &Proc, what: &str) -> ErrorMsg {
    ErrorMsg::new(
        ErrorCode::FailedPrecondition,
        format!("pid {} {what}", p.pid),
    )
}

/// Sends `sig` to the process's group (the command runs in a session of its own).
fn signal(p: &Proc, sig: i32) -> Result<(), ErrorMsg> {
    if !(1..=64).contains(&sig) {
        return Err(ErrorMsg::new(
            ErrorCode::InvalidArgument,
            format!("signal: {sig} is not a signal number (1..64)"),
        ));
    }
    if p.pid == 0 {
        return Err(ErrorMsg::new(
            ErrorCode::FailedPrecondition,
            "the process is not started yet",
        ));
    }
    if !p.running() || p.status.is_some() {
        return Err(precondition(p, "has exited"));
    }
    unsafe { libc::kill(-(p.pid as libc::pid_t), sig) };
    Ok(())
}
