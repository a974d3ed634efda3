//! `exec`: run ARGV in a new session (own process group), driven by frames on stdin.
//!
//! One poll loop, no threads: a signalfd (SIGCHLD + signals forwarded to the group), the agent's
//! stdin (frames), the child's input (pipe or pty master, non-blocking, with a bounded pending
//! buffer for backpressure) and, with `--tty`, the pty master's output.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libc::{c_int, pid_t};

use crate::args::ExecOpts;
use crate::frame::{Event, Parser};
use crate::sys::{self, msg, pollfd};

/// Signals the agent receives that are passed on to the child's process group.
const FORWARDED: [c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];
/// Stop reading frames while this much input for the child is not yet consumed.
const MAX_PENDING: usize = 1 << 20;
const BUF: usize = 64 * 1024;

pub fn run(o: ExecOpts) -> i32 {
    let mut sigs = vec![libc::SIGCHLD];
    sigs.extend_from_slice(&FORWARDED);
    let sfd = match sys::signalfd(&sigs, true) {
        Ok(fd) => fd,
        Err(e) => {
            msg(&format!("signalfd: {}", sys::err_text(&e)));
            return 1;
        }
    };

    if let Some(cwd) = &o.cwd {
        let err = match std::fs::metadata(cwd) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            msg(&format!("cwd {}: {}", sys::show(cwd), sys::err_text(&e)));
            return 126;
        }
    }

    let pty = if o.tty {
        match open_pty(o.size.unwrap_or((80, 24))) {
            Ok(p) => Some(p),
            Err(e) => {
                msg(&format!("cannot open a pty: {}", sys::err_text(&e)));
                return 126;
            }
        }
    } else {
        None
    };

    let mut cmd = Command::new(&o.argv[0]);
    cmd.args(&o.argv[1..]);
    // `exec` runs through `pods/exec`, whose processes get the container's environment, the
    // daemon's token included: the command does not.
    cmd.env_remove(crate::daemon::auth::TOKEN_ENV);
    for (k, v) in &o.env {
        cmd.env(k, v);
    }
    if let Some(cwd) = &o.cwd {
        cmd.current_dir(cwd);
    }
    let master = match pty {
        Some((master, slave)) => {
            let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
            match (dup(&slave), dup(&slave)) {
                (Ok(a), Ok(b)) => {
                    cmd.stdin(Stdio::from(slave)).stdout(a).stderr(b);
                }
                (Err(e), _) | (_, Err(e)) => {
                    msg(&format!("dup: {}", sys::err_text(&e)));
                    return 126;
                }
            }
            Some(master)
        }
        None => {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit());
            None
        }
    };
    let tty = master.is_some();
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            // Runs in the forked child: async-signal-safe calls only.
            sys::child_reset_sigmask();
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // If the agent itself dies (killed), do not leave the child running.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return sys::spawn_failure(&o.argv[0], &e),
    };
    let pid = child.id() as pid_t;
    let input = child.stdin.take().map(OwnedFd::from);
    drop(cmd); // closes the agent's copies of the pty slave

    if let Some(fd) = &input
        && let Err(e) = sys::set_nonblocking(fd.as_raw_fd())
    {
        msg(&format!("child stdin: {}", sys::err_text(&e)));
    }
    if let Some(m) = &master
        && let Err(e) = sys::set_nonblocking(m.as_raw_fd())
    {
        msg(&format!("pty: {}", sys::err_text(&e)));
    }

    let mut s = Supervisor {
        pid,
        sfd,
        master,
        master_eof: false,
        input,
        pending: Vec::new(),
        last_written: None,
        close_requested: false,
        input_closed: false,
        stdin_open: true,
        parser: Parser::new(),
        deadline: o
            .timeout_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms)),
        buf: vec![0u8; BUF],
    };
    s.run()
}

/// Opens a pty pair: (master, slave), both close-on-exec, with the given window (cols, rows).
pub fn open_pty(size: (u16, u16)) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    let m = sys::cvt(unsafe { libc::posix_openpt(flags) })?;
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    sys::cvt(unsafe { libc::unlockpt(m) })?;
    // TIOCGPTPEER opens the peer without a path lookup (Linux 4.13+); else go through ptsname.
    let s = unsafe { libc::ioctl(m, libc::TIOCGPTPEER as _, flags) };
    let s = if s >= 0 {
        s
    } else {
        let mut name = [0 as libc::c_char; 128];
        let r = unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        sys::cvt(unsafe { libc::open(name.as_ptr(), flags) })?
    };
    let slave = unsafe { OwnedFd::from_raw_fd(s) };
    set_winsize(m, size.0, size.1);
    Ok((master, slave))
}

pub fn set_winsize(fd: RawFd, cols: u16, rows: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ as _, &ws) };
}

/// A resize during the session: sets the size and tells the terminal's foreground process group
/// (SIGWINCH), or `group` (the command's own process group) where the pty master cannot say which
/// group that is (gVisor). Linux sends SIGWINCH itself when the size changes; gVisor does not, and
/// full-screen programs there would never redraw. A second SIGWINCH on Linux only makes them read
/// the size again.
pub fn resize_and_notify(fd: RawFd, cols: u16, rows: u16, group: libc::pid_t) {
    set_winsize(fd, cols, rows);
    let pgrp = unsafe { libc::tcgetpgrp(fd) };
    let target = if pgrp > 1 { pgrp } else { group };
    if target > 1 {
        unsafe { libc::kill(-target, libc::SIGWINCH) };
    }
}

pub fn veof_char(fd: RawFd) -> u8 {
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) == 0 && t.c_cc[libc::VEOF] != 0 {
            t.c_cc[libc::VEOF]
        } else {
            4
        }
    }
}

struct Supervisor {
    pid: pid_t,
    sfd: OwnedFd,
    /// Pty master (`--tty`): the child's input and output.
    master: Option<OwnedFd>,
    master_eof: bool,
    /// Pipe to the child's stdin (no tty); None once closed.
    input: Option<OwnedFd>,
    /// Bytes for the child not yet written.
    pending: Vec<u8>,
    last_written: Option<u8>,
    close_requested: bool,
    input_closed: bool,
    stdin_open: bool,
    parser: Parser,
    deadline: Option<Instant>,
    buf: Vec<u8>,
}

enum Outcome {
    Exited,
    /// Client gone (EOF on stdin without CLOSE) or a fatal error.
    Abort,
    Timeout,
}

impl Supervisor {
    fn run(&mut self) -> i32 {
        let outcome = self.supervise();
        // Kill whatever is left of the group. The child has not been reaped yet (a zombie at
        // most), so its pid, which is the process group id, cannot have been reused.
        match outcome {
            Outcome::Exited => {
                self.drain_master(Duration::ZERO, Duration::from_millis(500));
                self.kill_group(libc::SIGKILL);
                self.drain_master(Duration::from_millis(200), Duration::from_secs(2));
            }
            Outcome::Abort => self.kill_group(libc::SIGKILL),
            Outcome::Timeout => {
                self.kill_group(libc::SIGKILL);
                self.drain_master(Duration::ZERO, Duration::from_millis(200));
            }
        }
        let code = match sys::wait_pid(self.pid) {
            Ok(st) => sys::exit_code(st),
            Err(e) => {
                msg(&format!("waitpid: {}", sys::err_text(&e)));
                1
            }
        };
        match outcome {
            Outcome::Timeout => 137,
            _ => code,
        }
    }

    fn kill_group(&self, sig: c_int) {
        unsafe { libc::kill(-self.pid, sig) };
    }

    /// The fd the child's input is written to.
    fn input_fd(&self) -> Option<RawFd> {
        match &self.master {
            Some(m) => Some(m.as_raw_fd()),
            None => self.input.as_ref().map(|f| f.as_raw_fd()),
        }
    }

    fn supervise(&mut self) -> Outcome {
        if sys::has_exited(self.pid) {
            return Outcome::Exited;
        }
        loop {
            let mut fds = Vec::with_capacity(4);
            fds.push(pollfd(self.sfd.as_raw_fd(), libc::POLLIN));
            let stdin_ix = (self.stdin_open && self.pending.len() < MAX_PENDING).then(|| {
                fds.push(pollfd(0, libc::POLLIN));
                fds.len() - 1
            });
            let out_ix = match self.input_fd() {
                Some(fd) if !self.pending.is_empty() => {
                    fds.push(pollfd(fd, libc::POLLOUT));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let master_ix = match &self.master {
                Some(m) if !self.master_eof => {
                    fds.push(pollfd(m.as_raw_fd(), libc::POLLIN));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let timeout = match self.deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as c_int
                }
            };
            if let Err(e) = sys::poll(&mut fds, timeout) {
                msg(&format!("poll: {}", sys::err_text(&e)));
                return Outcome::Abort;
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Outcome::Timeout;
            }
            let ready = |ix: Option<usize>| ix.is_some_and(|i| fds[i].revents != 0);

            if fds[0].revents != 0 {
                match sys::read_signals(self.sfd.as_raw_fd()) {
                    Ok(sigs) => {
                        for sig in sigs {
                            if sig != libc::SIGCHLD {
                                self.kill_group(sig);
                            }
                        }
                    }
                    Err(e) => {
                        msg(&format!("signalfd: {}", sys::err_text(&e)));
                        return Outcome::Abort;
                    }
                }
                if sys::has_exited(self.pid) {
                    return Outcome::Exited;
                }
            }
            if ready(master_ix) {
                self.copy_master_output();
            }
            if ready(stdin_ix) && !self.read_frames() {
                return Outcome::Abort;
            }
            if ready(out_ix)
                || !self.pending.is_empty()
                || (self.close_requested && !self.input_closed)
            {
                self.flush_input();
            }
        }
    }

    /// Reads from the agent's stdin and applies the frames. False when the client is gone.
    fn read_frames(&mut self) -> bool {
        let mut buf = std::mem::take(&mut self.buf);
        let n = match sys::read(0, &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.buf = buf;
                return true;
            }
            Err(_) => 0,
        };
        if n == 0 {
            self.buf = buf;
            self.stdin_open = false;
            // EOF while the command runs means the connection is gone, CLOSE or not: the gateway
            // keeps the agent's stdin open until the command ends (a broken API-server or kubelet
            // connection, where it cannot send SIGNAL, must not leave the command running).
            return false;
        }
        let mut input = &buf[..n];
        while let Some(ev) = self.parser.next(&mut input) {
            match ev {
                Event::Data(d) => {
                    if !self.close_requested && self.input_fd().is_some() {
                        self.pending.extend_from_slice(d);
                    }
                }
                Event::Close => {
                    if !self.close_requested {
                        self.close_requested = true;
                        if let Some(m) = &self.master {
                            // A pty has no separate stdin to close: send end-of-file (VEOF),
                            // twice if a partial line is pending (the first one flushes it).
                            let veof = veof_char(m.as_raw_fd());
                            let last = self.pending.last().copied().or(self.last_written);
                            self.pending.push(veof);
                            if last.is_some_and(|b| b != b'\n') {
                                self.pending.push(veof);
                            }
                        }
                    }
                }
                Event::Signal(sig) => {
                    if (1..=64).contains(&sig) {
                        self.kill_group(sig);
                    }
                }
                Event::Resize { cols, rows } => {
                    if let Some(m) = &self.master {
                        resize_and_notify(m.as_raw_fd(), cols, rows, self.pid);
                    }
                }
            }
        }
        self.buf = buf;
        true
    }

    fn flush_input(&mut self) {
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
                    // The child closed its stdin (EPIPE) or the pty is gone: drop the input.
                    self.pending.clear();
                    self.input = None;
                    break;
                }
            }
        }
        if self.close_requested && !self.input_closed && self.pending.is_empty() {
            self.input = None; // closes the pipe: EOF for the child
            self.input_closed = true;
        }
    }

    /// Copies what the pty master has to the agent's stdout.
    fn copy_master_output(&mut self) -> bool {
        let Some(m) = self.master.as_ref().map(|m| m.as_raw_fd()) else {
            return false;
        };
        match sys::read(m, &mut self.buf) {
            Ok(0) => {
                self.master_eof = true;
                false
            }
            Ok(n) => {
                // If the client stopped reading, output is dropped; EOF on stdin ends things.
                let _ = sys::write_all(1, &self.buf[..n]);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => {
                // EIO: every slave fd is closed.
                self.master_eof = true;
                false
            }
        }
    }

    /// Copies the pty output until EOF/EIO, `idle` without data, or `cap` in total.
    fn drain_master(&mut self, idle: Duration, cap: Duration) {
        let Some(m) = self.master.as_ref().map(|m| m.as_raw_fd()) else {
            return;
        };
        let end = Instant::now() + cap;
        while !self.master_eof && Instant::now() < end {
            let mut fds = [pollfd(m, libc::POLLIN)];
            match sys::poll(&mut fds, idle.as_millis() as c_int) {
                Ok(_) if fds[0].revents != 0 => {
                    if !self.copy_master_output() && !self.master_eof {
                        // readable but nothing read: avoid spinning
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                _ => return,
            }
        }
    }
}
