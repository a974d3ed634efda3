//! Thin wrappers over libc: raw fd I/O, signals (signalfd), poll, wait status, messages.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use libc::c_int;

pub fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Writes one line `airlock-agent: MSG` to stderr; errors are ignored (never panics).
pub fn msg(m: &str) {
    let mut line = String::with_capacity(m.len() + 16);
    line.push_str("airlock-agent: ");
    // Keep it on one line whatever the message contains.
    for c in m.chars() {
        line.push(if c == '\n' || c == '\r' { ' ' } else { c });
    }
    line.push('\n');
    let _ = write_all(2, line.as_bytes());
}

/// A path for messages: lossy UTF-8, control characters escaped.
pub fn show(p: &OsStr) -> String {
    let mut s = String::new();
    for c in String::from_utf8_lossy(p.as_bytes()).chars() {
        if c.is_control() {
            s.push_str(&c.escape_default().to_string());
        } else {
            s.push(c);
        }
    }
    s
}

/// io::Error text without the " (os error N)" suffix.
pub fn err_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One write (EINTR retried); may be partial; EAGAIN is returned as WouldBlock.
pub fn write_some(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = write_some(fd, buf)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// `std::io::Write` on fd 1 without std's line buffering or panics.
pub struct Stdout;

impl io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_some(1, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// send(2) with MSG_NOSIGNAL (a closed peer is EPIPE, never SIGPIPE); may be partial.
pub fn send_some(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// All of `buf` on a blocking socket.
pub fn send_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = send_some(fd, buf)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

pub fn set_blocking(fd: RawFd) -> io::Result<()> {
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) })?;
    Ok(())
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) })?;
    Ok(())
}

pub fn sigset(sigs: &[c_int]) -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks `sigs` and returns a signalfd receiving them (close-on-exec).
pub fn signalfd(sigs: &[c_int], nonblock: bool) -> io::Result<OwnedFd> {
    let set = sigset(sigs);
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    let mut flags = libc::SFD_CLOEXEC;
    if nonblock {
        flags |= libc::SFD_NONBLOCK;
    }
    let fd = cvt(unsafe { libc::signalfd(-1, &set, flags) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads pending signals from a signalfd. Empty when none are pending (non-blocking fd).
pub fn read_signals(fd: RawFd) -> io::Result<Vec<c_int>> {
    const N: usize = 16;
    let mut infos: [libc::signalfd_siginfo; N] = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    let buf = unsafe { std::slice::from_raw_parts_mut(infos.as_mut_ptr().cast::<u8>(), size * N) };
    match read(fd, buf) {
        Ok(n) => Ok(infos[..n / size]
            .iter()
            .map(|i| i.ssi_signo as c_int)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Called in the forked child before exec: unblock every signal, and give the signals a shell
/// started in the background ignores (SIGINT, SIGQUIT; inherited through every exec) their default
/// action again, so a command's SIGINT works however the agent itself was started.
/// Only async-signal-safe calls.
pub fn child_reset_sigmask() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for sig in [libc::SIGINT, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: c_int) -> io::Result<usize> {
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Exit code for a wait status: the exit code, or 128+N when killed by signal N.
pub fn exit_code(status: c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Blocking waitpid on one pid (EINTR retried). Returns the status.
pub fn wait_pid(pid: libc::pid_t) -> io::Result<c_int> {
    let mut st: c_int = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            return Ok(st);
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(e);
    }
}

/// True when `pid` has exited (it is left a zombie, not reaped: its pid and process group id
/// stay reserved until `wait_pid`).
pub fn has_exited(pid: libc::pid_t) -> bool {
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() == pid
    }
}

/// Exit code and message for a failed spawn: 127 not found, 126 otherwise.
pub fn spawn_failure(what: &OsStr, e: &io::Error) -> i32 {
    msg(&format!("{}: {}", show(what), err_text(e)));
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
        _ => 126,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        // Wait status encoding on Linux: exit code << 8, or the signal number.
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(libc::SIGKILL), 137);
        assert_eq!(exit_code(libc::SIGTERM), 143);
    }

    #[test]
    fn error_text() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(err_text(&e), "No such file or directory");
        assert_eq!(show(OsStr::new("/a\nb")), "/a\\nb");
    }
}
