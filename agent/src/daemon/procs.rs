//! The process table's entries: output rings, stdin, and starting a process under its shim.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use airlock_agent_protocol::{Exit, FrameReader, Start, c2a, frame};
use libc::pid_t;

use crate::exec::{open_pty, resize_and_notify, veof_char};
use crate::sys;

/// The last `cap` bytes of one output stream, addressed by offset from the stream's start.
#[derive(Debug)]
pub struct Ring {
    buf: VecDeque<u8>,
    /// Offset of buf[0].
    start: u64,
    cap: usize,
    pub eof: bool,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            buf: VecDeque::new(),
            start: 0,
            cap,
            eof: false,
        }
    }
    pub fn start(&self) -> u64 {
        self.start
    }
    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }
    /// Appends, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, d: &[u8]) {
        self.buf.extend(d);
        let over = self.buf.len().saturating_sub(self.cap);
        if over > 0 {
            self.buf.drain(..over);
            self.start += over as u64;
        }
    }
    /// How many bytes may be read now without dropping any byte at or after `keep` (the
    /// slowest attached reader's offset; None: no reader, anything may be dropped).
    pub fn room(&self, keep: Option<u64>) -> usize {
        match keep {
            None => usize::MAX,
            Some(k) => self
                .cap
                .saturating_sub((self.end() - k.max(self.start)) as usize),
        }
    }
    /// Up to `max` bytes from `off` (which must lie in [start, end]).
    pub fn read_at(&self, off: u64, max: usize, out: &mut Vec<u8>) {
        let i = (off - self.start) as usize;
        let n = (self.buf.len() - i).min(max);
        let (a, b) = self.buf.as_slices();
        if i < a.len() {
            let ea = (i + n).min(a.len());
            out.extend_from_slice(&a[i..ea]);
            out.extend_from_slice(&b[..n - (ea - i)]);
        } else {
            out.extend_from_slice(&b[i - a.len()..i - a.len() + n]);
        }
    }
}

/// Input for the process not yet written; at most this much is buffered.
pub const MAX_PENDING: usize = 1 << 20;

pub struct Proc {
    pub key: u64,
    /// 0 until the shim said STARTED.
    pub pid: u32,
    pub tag: Option<String>,
    pub argv: Vec<Vec<u8>>,
    pub tty: bool,
    pub started_ms: u64,
    pub ctl: Option<OwnedFd>,
    pub ctl_reader: FrameReader,
    /// Pipe to stdin (no tty).
    pub stdin: Option<OwnedFd>,
    /// Pty master: stdin and output (tty).
    pub master: Option<OwnedFd>,
    pub out_fd: Option<OwnedFd>,
    pub err_fd: Option<OwnedFd>,
    /// Whether the stdout / stderr pipe was grown ([`grow_pipe`]).
    pub grown: [bool; 2],
    pub out: Ring,
    pub err: Ring,
    pub pending: Vec<u8>,
    pub last_written: Option<u8>,
    pub close_requested: bool,
    pub input_closed: bool,
    /// What the shim reported (exit, timed out, killed); output may still be draining.
    pub status: Option<Exit>,
    /// When `status` came: output not at EOF 2 s later is cut off.
    pub status_at: Option<Instant>,
    /// Final: status and the output's end offsets.
    pub exit: Option<Exit>,
    pub kill_sent: bool,
    /// The connection that started it with kill_on_disconnect.
    pub owner: Option<u64>,
    /// Forget the entry once its EXIT reached `owner` (a call that started, streamed and waited).
    pub ephemeral: bool,
}

impl Proc {
    pub fn running(&self) -> bool {
        self.exit.is_none()
    }

    /// The fd input is written to.
    pub fn input_fd(&self) -> Option<RawFd> {
        if self.input_closed && self.master.is_none() {
            return None;
        }
        match &self.master {
            Some(m) => Some(m.as_raw_fd()),
            None => self.stdin.as_ref().map(|f| f.as_raw_fd()),
        }
    }

    /// Queues bytes for stdin. False when stdin is closed.
    pub fn queue_input(&mut self, d: &[u8]) -> bool {
        if self.close_requested || self.input_fd().is_none() || self.exit.is_some() {
            return false;
        }
        self.pending.extend_from_slice(d);
        true
    }

    /// Closes stdin once the queued input is written (a pty gets VEOF, as with `exec --tty`).
    pub fn request_close(&mut self) {
        if self.close_requested {
            return;
        }
        self.close_requested = true;
        if let Some(m) = &self.master {
            let veof = veof_char(m.as_raw_fd());
            let last = self.pending.last().copied().or(self.last_written);
            self.pending.push(veof);
            if last.is_some_and(|b| b != b'\n') {
                self.pending.push(veof);
            }
        }
    }

    /// Writes queued input (non-blocking).
    pub fn flush_input(&mut self) {
        let Some(fd) = self.input_fd() else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match sys::write_some(fd, &self.pending) {
                Ok(0) => break,
                Ok(n) => {
                    self.last_written = Some(self.pending[n - 1]);
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pending.clear();
                    self.stdin = None;
                    self.input_closed = true;
                    return;
                }
            }
        }
        if self.close_requested && !self.input_closed {
            self.stdin = None;
            self.input_closed = true;
        }
    }

    pub fn resize(&self, cols: u16, rows: u16) -> bool {
        match &self.master {
            Some(m) => {
                resize_and_notify(m.as_raw_fd(), cols, rows, self.pid as libc::pid_t);
                true
            }
            None => false,
        }
    }

    /// Asks the shim to kill the whole tree.
    pub fn kill(&mut self) {
        if self.kill_sent || self.status.is_some() {
            return;
        }
        self.kill_sent = true;
        let sent = self.ctl.as_ref().is_some_and(|c| {
            sys::send_some(c.as_raw_fd(), &frame(c2a::KILL, b"")).is_ok_and(|n| n == 5)
        });
        if !sent {
            // The shim cannot be told: its group at least.
            if self.pid > 0 {
                unsafe { libc::kill(-(self.pid as pid_t), libc::SIGKILL) };
            }
        }
    }
}

/// Size asked for the pipe of a process's stdout or stderr that a read found full.
const OUTPUT_PIPE: libc::c_int = 1 << 20;
/// A read of this many bytes or more found the pipe full at its default size.
pub const DEFAULT_PIPE: usize = 64 * 1024;

/// The fds of a started shim.
pub struct Spawned {
    pub ctl: OwnedFd,
    pub stdin: Option<OwnedFd>,
    pub master: Option<OwnedFd>,
    pub out: OwnedFd,
    pub err: Option<OwnedFd>,
}

/// A shim started ahead of need, with pipes for stdio, waiting for its START (see
/// [`Spare::start`]): spawning a process costs ~10 ms under gVisor, and a spare takes one of the
/// two spawns (shim, command) off the path of a call.
pub struct Spare(Spawned);

impl Spare {
    /// Starts a shim with pipes for stdio and no START yet.
    pub fn spawn(exe: &Path) -> io::Result<Spare> {
        spawn_shim(exe, None).map(Spare)
    }

    /// Sends `start` (which must not ask for a tty); an error means the shim is gone (its fds
    /// are closed on drop, so it ends if it was not).
    pub fn start(self, start: &Start) -> io::Result<Spawned> {
        debug_assert!(!start.tty);
        started(self.0, start)
    }
}

/// Starts `exe shim FD` with the process's stdio and sends it `start`.
pub fn spawn(exe: &Path, start: &Start) -> io::Result<Spawned> {
    let tty = start.tty.then(|| start.size.unwrap_or((80, 24)));
    started(spawn_shim(exe, tty)?, start)
}

/// Starts `exe shim FD`: stdio on a new pty of `tty`'s size, or on pipes. The daemon is single
/// threaded, so clearing close-on-exec on the shim's end of the control socket for the spawn
/// leaks it into no other child. (std spawns with posix_spawn here: no fork of a large agent.)
fn spawn_shim(exe: &Path, tty: Option<(u16, u16)>) -> io::Result<Spawned> {
    let mut sv = [0 as RawFd; 2];
    sys::cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    })?;
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    sys::cvt(unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) })?;
    let mut cmd = Command::new(exe);
    cmd.arg("shim").arg(theirs.as_raw_fd().to_string());
    let master = if let Some(size) = tty {
        let (master, slave) = open_pty(size)?;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        Some(master)
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        None
    };
    let mut child = cmd.spawn()?;
    drop(cmd);
    drop(theirs);
    let (stdin, out, err) = match master {
        Some(ref m) => (None, m.try_clone()?, None),
        None => (
            child.stdin.take().map(OwnedFd::from),
            OwnedFd::from(child.stdout.take().ok_or(io::ErrorKind::BrokenPipe)?),
            child.stderr.take().map(OwnedFd::from),
        ),
    };
    Ok(Spawned {
        ctl: ours,
        stdin,
        master,
        out,
        err,
    })
}

/// Sends the START frame, blocking (the shim reads it at once); every other fd is made
/// non-blocking like the rest before, so that once START is sent nothing can fail (a caller
/// falling back to a fresh shim after that would start the command twice).
fn started(sp: Spawned, start: &Start) -> io::Result<Spawned> {
    for fd in [sp.stdin.as_ref(), Some(&sp.out), sp.err.as_ref(), sp.master.as_ref()]
        .into_iter()
        .flatten()
    {
        sys::set_nonblocking(fd.as_raw_fd())?;
    }
    sys::send_all(sp.ctl.as_raw_fd(), &frame(c2a::START, &start.encode()))?;
    // The control socket is only read when poll says so: blocking, should this fail, it still
    // works.
    let _ = sys::set_nonblocking(sp.ctl.as_raw_fd());
    Ok(sp)
}

/// Grows an output pipe to [`OUTPUT_PIPE`] (best effort) once a read found it full: a fast
/// writer then fills fewer, larger reads, and every syscall is dear under gVisor. Only then:
/// enlarged pipes count against the kernel's per-user pipe memory (`pipe-user-pages-soft`),
/// which sandboxes sharing a uid on a runc node would share.
pub fn grow_pipe(fd: RawFd) {
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, OUTPUT_PIPE) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_cap_bytes_by_offset() {
        let mut r = Ring::new(4);
        r.push(b"abc");
        assert_eq!((r.start(), r.end()), (0, 3));
        r.push(b"def");
        assert_eq!((r.start(), r.end()), (2, 6));
        let mut v = Vec::new();
        r.read_at(3, 10, &mut v);
        assert_eq!(v, b"def");
        v.clear();
        r.read_at(2, 2, &mut v);
        assert_eq!(v, b"cd");
        assert_eq!(r.room(None), usize::MAX);
        assert_eq!(r.room(Some(6)), 4);
        assert_eq!(r.room(Some(2)), 0);
        assert_eq!(r.room(Some(4)), 2);
    }
}
