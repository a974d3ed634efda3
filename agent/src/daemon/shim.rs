//! `airlock-agent shim FD`: the supervisor of one process of the agent's table (internal; the
//! daemon starts it, one per process).
//!
//! Why a process of its own: it owns the command's process tree and ends it, all of it, when
//! the command exits, when the timeout passes, when the daemon asks (KILL on the control socket)
//! and when the daemon is gone (EOF on the control socket). The tree is found in /proc
//! (`tree.rs`): descendants by parent links, which hold for every descendant where the shim can
//! be a child subreaper (runc, Kata: orphans, also setsid() ones, are re-parented to it), plus
//! the processes that carry the tree's marker variable in their environment, for gVisor, which
//! refuses PR_SET_CHILD_SUBREAPER (EINVAL) and re-parents orphans to PID 1. No writable cgroup
//! is needed.
//!
//! Control socket FD (a socketpair end): the daemon sends one START frame, then maybe KILL; the
//! shim answers STARTED {pid} or ERROR {spawn failure}, and at the end EXIT {code, signal,
//! timed_out, killed}, then exits.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_agent_protocol::{
    ErrorCode, ErrorMsg, Exit, FrameReader, Start, Started, a2c, c2a, frame,
};
use libc::{c_int, pid_t};

use super::tree;
use crate::sys::{self, msg, pollfd};

pub fn run(fd: &OsStr) -> i32 {
    let Some(fd) = fd.to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
        msg("shim: bad control fd");
        return 5;
    };
    let ctl = unsafe { OwnedFd::from_raw_fd(fd) };
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut reader = FrameReader::new();
    let start = match read_start(&ctl, &mut reader) {
        Ok(s) => s,
        Err(e) => {
            msg(&format!("shim: reading the start request: {e}"));
            return 1;
        }
    };
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
    let sfd = match sys::signalfd(&[libc::SIGCHLD], true) {
        Ok(s) => s,
        Err(e) => {
            send(
                &ctl,
                a2c::ERROR,
                &ErrorMsg::new(
                    ErrorCode::Internal,
                    format!("signalfd: {}", sys::err_text(&e)),
                )
                .encode(),
            );
            return 1;
        }
    };
    // Inherited by the whole tree: how its members are found once their parent is gone and no
    // subreaper holds them (gVisor).
    let marker = format!(
        "{}.{}",
        unsafe { libc::getpid() },
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let main = match spawn(&start, &marker) {
        Ok(pid) => pid,
        Err(e) => {
            send(&ctl, a2c::ERROR, &e.encode());
            return 0;
        }
    };
    send(
        &ctl,
        a2c::STARTED,
        &Started {
            pid: main as u32,
            tag: None,
        }
        .encode(),
    );
    // The command has its own copies of stdin/stdout/stderr: drop ours, so the daemon sees EOF
    // (and a pty's EIO) as soon as the last process of the tree holding them is gone.
    detach_stdio();
    let _ = sys::set_nonblocking(ctl.as_raw_fd());

    let deadline = start
        .timeout_ms
        .filter(|&t| t > 0)
        .map(|t| Instant::now() + Duration::from_millis(t));
    let mut st = Shim {
        main,
        status: None,
        timed_out: false,
        killed: false,
    };
    let mut ctl_open = true;
    let mut buf = [0u8; 256];
    // A KILL may have come with START (the caller left at once).
    st.killed = kill_asked(&mut reader);
    while st.status.is_none() && !st.killed {
        let mut fds = vec![pollfd(sfd.as_raw_fd(), libc::POLLIN)];
        if ctl_open {
            fds.push(pollfd(ctl.as_raw_fd(), libc::POLLIN));
        }
        let timeout = deadline.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as c_int
                + 1
        });
        let _ = sys::poll(&mut fds, timeout);
        let _ = sys::read_signals(sfd.as_raw_fd());
        st.reap();
        if st.status.is_some() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            st.timed_out = true;
            break;
        }
        if ctl_open && fds.len() > 1 && fds[1].revents != 0 {
            match sys::read(ctl.as_raw_fd(), &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(0) | Err(_) => {
                    // The daemon is gone: nothing may outlive it.
                    ctl_open = false;
                    st.killed = true;
                }
                Ok(n) => {
                    reader.push(&buf[..n]);
                    st.killed = kill_asked(&mut reader);
                }
            }
        }
    }
    // The command exited, timed out or is to be killed: end everything below us.
    kill_tree(&sfd, &mut st, marker.as_bytes());
    let status = st.status.unwrap_or(libc::SIGKILL);
    let mut e = Exit {
        code: sys::exit_code(status),
        signal: if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            0
        },
        timed_out: st.timed_out,
        killed: st.killed,
        ..Exit::default()
    };
    if st.timed_out {
        e.code = 137;
    }
    if ctl_open {
        let _ = sys::set_blocking(ctl.as_raw_fd());
        send(&ctl, a2c::EXIT, &e.encode());
    }
    0
}

/// Whether the frames received so far hold a KILL.
fn kill_asked(reader: &mut FrameReader) -> bool {
    let mut kill = false;
    while let Ok(Some((t, _))) = reader.next_frame() {
        kill |= t == c2a::KILL;
    }
    kill
}

struct Shim {
    main: pid_t,
    status: Option<c_int>,
    timed_out: bool,
    killed: bool,
}

impl Shim {
    /// Reaps every exited child (the command, and orphans re-parented to us).
    fn reap(&mut self) -> bool {
        let mut any_left = true;
        loop {
            let mut s: c_int = 0;
            let pid = unsafe { libc::waitpid(-1, &mut s, libc::WNOHANG) };
            if pid == self.main {
                self.status = Some(s);
            }
            if pid < 0 {
                any_left = false; // ECHILD: no children at all
                break;
            }
            if pid == 0 {
                break;
            }
        }
        any_left
    }
}

/// SIGKILLs every member of the tree ([`tree::members`]) again and again until none is alive:
/// processes forked while we scan are found in the next round.
fn kill_tree(sfd: &OwnedFd, st: &mut Shim, marker: &[u8]) {
    let me = unsafe { libc::getpid() };
    loop {
        let members = tree::members(me, marker);
        if members.is_empty() {
            st.reap();
            return;
        }
        for &pid in &members {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // Wait for a child to go (SIGCHLD; orphans adopted by PID 1 send us none), at most
        // 50 ms before looking again.
        let mut fds = [pollfd(sfd.as_raw_fd(), libc::POLLIN)];
        let _ = sys::poll(&mut fds, 50);
        let _ = sys::read_signals(sfd.as_raw_fd());
        st.reap();
    }
}

fn read_start(ctl: &OwnedFd, reader: &mut FrameReader) -> Result<Start, String> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.next_frame() {
            Ok(Some((c2a::START, p))) => return Start::decode(&p).map_err(|e| e.to_string()),
            Ok(Some((t, _))) => return Err(format!("frame type 0x{t:02x} instead of START")),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match sys::read(ctl.as_raw_fd(), &mut buf) {
            Ok(0) => return Err("the daemon closed the control socket".into()),
            Ok(n) => reader.push(&buf[..n]),
            Err(e) => return Err(sys::err_text(&e)),
        }
    }
}

/// Writes one frame to the control socket (errors ignored: the daemon may be gone).
fn send(ctl: &OwnedFd, typ: u8, payload: &[u8]) {
    let _ = sys::send_all(ctl.as_raw_fd(), &frame(typ, payload));
}

/// Starts the command with the shim's stdin/stdout/stderr, in a new session.
fn spawn(s: &Start, marker: &str) -> Result<pid_t, ErrorMsg> {
    let argv0 = OsStr::from_bytes(&s.argv[0]);
    if let Some(cwd) = &s.cwd {
        let cwd = OsStr::from_bytes(cwd);
        let err = match std::fs::metadata(cwd) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            return Err(ErrorMsg::new(
                ErrorCode::FailedPrecondition,
                format!("cwd {}: {}", sys::show(cwd), sys::err_text(&e)),
            ));
        }
    }
    let fd3 = if s.fd3.is_empty() {
        None
    } else {
        Some(memfd(&s.fd3).map_err(|e| {
            ErrorMsg::new(ErrorCode::Internal, format!("fd3: {}", sys::err_text(&e)))
        })?)
    };
    let failed = |e: io::Error| {
        let code = match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => ErrorCode::NotFound,
            _ => ErrorCode::FailedPrecondition,
        };
        ErrorMsg::new(code, format!("{}: {}", sys::show(argv0), sys::err_text(&e)))
    };
    // Without a terminal: posix_spawn (see spawn.rs), much cheaper under gVisor.
    if !s.tty {
        return super::spawn::spawn(&super::spawn::Spec {
            argv: &s.argv,
            env: &s.env,
            cwd: s.cwd.as_deref(),
            fd3: fd3.as_ref().map(|f| f.as_raw_fd()),
            marker: (tree::MARKER_ENV, marker),
        })
        .map_err(failed);
    }
    let tty = s.tty;
    let mut cmd = Command::new(argv0);
    for a in &s.argv[1..] {
        cmd.arg(OsStr::from_bytes(a));
    }
    for e in &s.env {
        if let Some(p) = e.iter().position(|&b| b == b'=') {
            cmd.env(OsStr::from_bytes(&e[..p]), OsStr::from_bytes(&e[p + 1..]));
        }
    }
    cmd.env(tree::MARKER_ENV, marker);
    if let Some(cwd) = &s.cwd {
        cmd.current_dir(OsStr::from_bytes(cwd));
    }
    let fd3_raw = fd3.as_ref().map(|f| f.as_raw_fd());
    unsafe {
        cmd.pre_exec(move || {
            sys::child_reset_sigmask();
            if let Some(fd) = fd3_raw {
                // dup2 onto 3 clears close-on-exec; the memfd itself keeps it.
                if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map(|c| c.id() as pid_t).map_err(failed)
}

/// A memfd holding `data`, at offset 0 (close-on-exec).
fn memfd(data: &[u8]) -> io::Result<OwnedFd> {
    let fd = sys::cvt(unsafe { libc::memfd_create(c"airlock-fd3".as_ptr(), libc::MFD_CLOEXEC) })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    sys::write_all(fd.as_raw_fd(), data)?;
    if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn detach_stdio() {
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    for fd in 0..3 {
        if null >= 0 {
            unsafe { libc::dup2(null, fd) };
        } else {
            unsafe { libc::close(fd) };
        }
    }
    if null > 2 {
        unsafe { libc::close(null) };
    }
}
