//! `init --fence-probe IP:PORT`: nothing runs in the sandbox, and the agent does not serve, before
//! the sandbox's network is fenced.
//!
//! Some NetworkPolicy implementations let a new pod's traffic through until they have programmed
//! its rules, which can be seconds after the pod got its address (kube-router v2.1, measured on
//! the local cluster: ~4 s; others do the same by default). The probe address is a listener that
//! no sandbox policy ever allows (the operator's pod, inside the cluster ranges every egress mode
//! excludes): while a connection to it succeeds the fence is not in force; once [`FAILURES`]
//! attempts in a row fail (dropped or refused), it is: one failure alone could be a slow
//! moment of a busy node, not the fence. A probe address that does not answer at all (the
//! operator replica that made the pod is gone, or a policy of the platform fences the operator's
//! namespace) reads as fenced: the check then adds nothing, never holds a sandbox up, and the
//! agent says so in the pod's log. Still open after [`GIVE_UP`] means the cluster does not enforce
//! the policy at all: the agent exits with [`EXIT_UNFENCED`] rather than run anything. SIGTERM
//! and SIGINT end the wait (the pod is being stopped).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long one connection attempt may take.
pub const ATTEMPT: Duration = Duration::from_millis(200);
/// Pause between attempts while the probe still answers.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// How long the network may stay open before the agent gives up.
pub const GIVE_UP: Duration = Duration::from_secs(60);
/// The agent's exit code when the network stayed open.
pub const EXIT_UNFENCED: i32 = 6;
/// Failed attempts in a row that mean "fenced".
pub const FAILURES: u32 = 3;

/// How the wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Fenced {
    /// After this long; `opened`: whether any attempt got through first (false: the probe never
    /// answered, which proves nothing).
    After { took: Duration, opened: bool },
    /// A signal to stop arrived (its number).
    Stopped(i32),
}

/// Waits until [`FAILURES`] connections in a row to `probe` fail; an error after `give_up` of
/// connections that got through. `stop` is asked between attempts (a signal to stop).
pub fn wait(probe: SocketAddr, give_up: Duration, stop: &mut dyn FnMut() -> Option<i32>) -> Result<Fenced, String> {
    let start = Instant::now();
    let (mut failed, mut opened) = (0, false);
    loop {
        if let Some(sig) = stop() {
            return Ok(Fenced::Stopped(sig));
        }
        match TcpStream::connect_timeout(&probe, ATTEMPT) {
            Ok(s) => {
                drop(s);
                (failed, opened) = (0, true);
            }
            Err(_) => {
                failed += 1;
                if failed >= FAILURES {
                    return Ok(Fenced::After { took: start.elapsed(), opened });
                }
                continue;
            }
        }
        if start.elapsed() >= give_up {
            return Err(format!(
                "the sandbox's network still reaches {probe} after {} s: its NetworkPolicy is not enforced (does the cluster's network plugin enforce NetworkPolicies?); not starting anything",
                give_up.as_secs()
            ));
        }
        std::thread::sleep(INTERVAL);
    }
}

/// [`wait`] for `init`, stopped by SIGTERM or SIGINT read from `sfd` (the agent's signalfd);
/// `Err` is the exit code.
pub fn before_start(probe: Option<SocketAddr>, sfd: std::os::fd::RawFd) -> Result<(), i32> {
    let Some(probe) = probe else { return Ok(()) };
    let mut stop = || pending_stop(sfd);
    match wait(probe, GIVE_UP, &mut stop) {
        Ok(Fenced::After { took, opened: true }) => {
            crate::sys::msg(&format!("network fenced after {} ms", took.as_millis()));
            Ok(())
        }
        Ok(Fenced::After { .. }) => {
            crate::sys::msg(&format!(
                "fence probe {probe} never answered: fenced from the start, or the probe address is unreachable (the check proves nothing then)"
            ));
            Ok(())
        }
        Ok(Fenced::Stopped(sig)) => Err(128 + sig),
        Err(e) => {
            crate::sys::msg(&e);
            Err(EXIT_UNFENCED)
        }
    }
}

/// SIGTERM or SIGINT waiting in `sfd`, without blocking (other signals are dropped: nothing runs
/// yet to forward them to).
fn pending_stop(sfd: std::os::fd::RawFd) -> Option<i32> {
    let mut p = libc::pollfd { fd: sfd, events: libc::POLLIN, revents: 0 };
    if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
        return None;
    }
    crate::sys::read_signals(sfd)
        .ok()?
        .into_iter()
        .find(|s| *s == libc::SIGTERM || *s == libc::SIGINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn waits_while_the_probe_answers_and_returns_once_it_does_not() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(l);
        });
        let Fenced::After { took, opened } = wait(addr, Duration::from_secs(10), &mut || None).unwrap() else { panic!("stopped") };
        closer.join().unwrap();
        assert!(opened);
        assert!(took >= Duration::from_millis(300), "returned while the probe still answered: {took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn a_probe_that_keeps_answering_is_an_error_naming_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let e = wait(addr, Duration::from_millis(300), &mut || None).unwrap_err();
        assert!(e.contains(&addr.to_string()) && e.contains("not enforced"), "{e}");
        drop(l);
    }

    #[test]
    fn a_probe_that_never_answers_is_fenced_after_three_failures_and_says_so() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let mut asked = 0;
        let r = wait(addr, Duration::from_secs(10), &mut || {
            asked += 1;
            None
        });
        assert!(matches!(r, Ok(Fenced::After { opened: false, .. })), "{r:?}");
        assert_eq!(asked, FAILURES, "one attempt per ask");
    }

    #[test]
    fn a_stop_signal_ends_the_wait() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut n = 0;
        let r = wait(addr, Duration::from_secs(30), &mut || {
            n += 1;
            (n > 2).then_some(libc::SIGTERM)
        });
        assert_eq!(r, Ok(Fenced::Stopped(libc::SIGTERM)));
    }
}
