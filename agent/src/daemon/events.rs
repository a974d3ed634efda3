//! What the processes' fds bring: output into the rings, and the shims' STARTED / ERROR / EXIT.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::time::Instant;

use airlock_agent_protocol::{Exit, a2c};

use super::conn::CState;
use super::{Daemon, READ_CHUNK, procs};
use crate::sys::{self, msg};

impl Daemon {
    pub(super) fn output(&mut self, i: usize, stderr: bool) {
        let (keep_out, keep_err) = self.readers_of(self.procs[i].key);
        let p = &mut self.procs[i];
        let tty = p.tty;
        let (fd, ring, keep, grown) = if stderr {
            (&mut p.err_fd, &mut p.err, keep_err, &mut p.grown[1])
        } else {
            (&mut p.out_fd, &mut p.out, keep_out, &mut p.grown[0])
        };
        let Some(f) = fd else { return };
        let want = ring.room(keep).min(READ_CHUNK);
        if want == 0 {
            return;
        }
        match sys::read(f.as_raw_fd(), &mut self.buf[..want]) {
            Ok(0) => {
                ring.eof = true;
                *fd = None;
            }
            Ok(n) => {
                ring.push(&self.buf[..n]);
                if n >= procs::DEFAULT_PIPE && !tty && !*grown {
                    procs::grow_pipe(f.as_raw_fd());
                    *grown = true;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                // EIO: the pty's last slave is closed.
                ring.eof = true;
                *fd = None;
            }
        }
    }

    pub(super) fn ctl_read(&mut self, i: usize) {
        let n = match self.procs[i]
            .ctl
            .as_ref()
            .map(|c| sys::read(c.as_raw_fd(), &mut self.buf))
        {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => return,
            _ => 0,
        };
        if n == 0 {
            let p = &mut self.procs[i];
            p.ctl = None;
            if p.pid == 0 {
                let key = p.key;
                self.start_failed(
                    key,
                    "the process supervisor ended before starting the command".into(),
                );
            } else if p.status.is_none() {
                msg(&format!(
                    "the supervisor of pid {} ended without an exit status",
                    p.pid
                ));
                p.status = Some(Exit {
                    code: 137,
                    signal: libc::SIGKILL,
                    killed: p.kill_sent,
                    ..Exit::default()
                });
                p.status_at = Some(Instant::now());
            }
            return;
        }
        let bytes = self.buf[..n].to_vec();
        let key = self.procs[i].key;
        self.procs[i].ctl_reader.push(&bytes);
        let mut frames = Vec::new();
        while let Ok(Some(f)) = self.procs[i].ctl_reader.next_frame() {
            frames.push(f);
        }
        for (typ, payload) in frames {
            let Some(i) = self.procs.iter().position(|p| p.key == key) else {
                return;
            };
            self.shim_frame(i, typ, &payload);
        }
    }

    /// STARTED / ERROR / EXIT from a shim.
    fn shim_frame(&mut self, i: usize, typ: u8, payload: &[u8]) {
        use airlock_agent_protocol::{ErrorMsg, Started};
        let key = self.procs[i].key;
        match typ {
            a2c::STARTED => {
                let Ok(s) = Started::decode(payload) else {
                    return;
                };
                // A pid the kernel reused: an exited entry that had it is forgotten (one still
                // draining its output keeps it a moment; lookups take the newest entry).
                self.procs
                    .retain(|p| !(p.pid == s.pid && p.key != key && p.exit.is_some()));
                let Some(p) = self.procs.iter_mut().find(|p| p.key == key) else {
                    return;
                };
                p.pid = s.pid;
                if !p.pending.is_empty() || p.close_requested {
                    p.flush_input();
                }
                let started = Started {
                    pid: s.pid,
                    tag: p.tag.clone(),
                };
                for c in &mut self.conns {
                    if let CState::Starting { proc, attach } = c.state
                        && proc == key
                    {
                        c.send(a2c::STARTED, &started.encode());
                        c.state = if attach {
                            CState::Attached {
                                proc,
                                out: 0,
                                err: 0,
                                follow: true,
                                output: true,
                            }
                        } else {
                            CState::Closing
                        };
                    }
                }
            }
            a2c::ERROR => {
                let m = ErrorMsg::decode(payload).unwrap_or_else(|e| {
                    ErrorMsg::new(airlock_agent_protocol::ErrorCode::Internal, e.to_string())
                });
                for c in &mut self.conns {
                    if matches!(c.state, CState::Starting { proc, .. } if proc == key) {
                        c.fail(m.code, m.message.clone());
                    }
                }
                self.procs.retain(|p| p.key != key);
            }
            a2c::EXIT => {
                if let Ok(e) = Exit::decode(payload) {
                    let p = &mut self.procs[i];
                    p.status = Some(e);
                    p.status_at = Some(Instant::now());
                }
            }
            _ => {}
        }
    }

    fn start_failed(&mut self, key: u64, why: String) {
        for c in &mut self.conns {
            if matches!(c.state, CState::Starting { proc, .. } if proc == key) {
                c.fail(airlock_agent_protocol::ErrorCode::Internal, why.clone());
            }
        }
        self.procs.retain(|p| p.key != key);
    }
}
