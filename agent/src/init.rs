//! `init`: PID 1 of the sandbox container. Reaps every zombie, forwards signals to the child and
//! exits with the child's status. Without a child it waits (blocked in read(2) on a signalfd,
//! no CPU use) until SIGTERM or SIGINT, and exits with 128 + the signal's number.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use libc::c_int;

use crate::sys::{self, msg};

pub const FORWARDED: [c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

pub fn run(argv: Vec<OsString>, fence_probe: Option<std::net::SocketAddr>) -> i32 {
    let mut sigs = vec![libc::SIGCHLD];
    sigs.extend_from_slice(&FORWARDED);
    // Blocked signals are queued even for a namespace's PID 1 (which otherwise drops signals it
    // has no handler for), and read from the signalfd in a blocking read.
    let sfd = match sys::signalfd(&sigs, false) {
        Ok(fd) => fd,
        Err(e) => {
            msg(&format!("signalfd: {}", sys::err_text(&e)));
            return 1;
        }
    };
    // When not PID 1 (tests, or a runtime that inserts its own init), orphans of the child are
    // re-parented to us all the same, so we reap them.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };

    if let Err(code) = crate::fence::before_start(fence_probe, sfd.as_raw_fd()) {
        return code;
    }
    let child = match spawn_child(&argv) {
        Ok(c) => c,
        Err(code) => return code,
    };

    loop {
        let sigs = match sys::read_signals(sfd.as_raw_fd()) {
            Ok(s) => s,
            Err(e) => {
                msg(&format!("signalfd: {}", sys::err_text(&e)));
                return 1;
            }
        };
        let mut child_status = None;
        for sig in sigs {
            if sig == libc::SIGCHLD {
                // One SIGCHLD may stand for many exits: reap until none is left.
                loop {
                    let mut st: c_int = 0;
                    let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
                    if pid <= 0 {
                        break;
                    }
                    if Some(pid) == child {
                        child_status = Some(st);
                    }
                }
            } else if let Some(pid) = child {
                if child_status.is_none() {
                    unsafe { libc::kill(pid, sig) };
                }
            } else if sig == libc::SIGTERM || sig == libc::SIGINT {
                // Stopped, not finished: a pod whose idle agent the kubelet stops (eviction, node
                // shutdown) must end Failed, not Succeeded/Completed.
                return 128 + sig;
            }
        }
        if let Some(st) = child_status {
            return sys::exit_code(st);
        }
    }
}

/// Starts the sandbox's main command (if any) with every signal unblocked. Err: the exit code
/// for a spawn failure (message printed).
pub fn spawn_child(argv: &[OsString]) -> Result<Option<libc::pid_t>, i32> {
    let Some((prog, args)) = argv.split_first() else {
        return Ok(None);
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    unsafe {
        cmd.pre_exec(|| {
            sys::child_reset_sigmask();
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(c) => Ok(Some(c.id() as libc::pid_t)),
        Err(e) => Err(sys::spawn_failure(prog, &e)),
    }
}
