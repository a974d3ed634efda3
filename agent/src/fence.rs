//! `init --fence-probe IP:PORT`: nothing runs in the sandbox, and the agent does not serve, before
//! the sandbox's network is fenced.
//!
//! Some NetworkPolicy implementations let a new pod's traffic through until they have programmed
//! its rules, which can be seconds after the pod got its address (kube-router v2.1, measured on
//! the local cluster: ~4 s; others do the same by default). The probe address is a listener that
//! no sandbox policy ever allows (the operator's pod, inside the cluster ranges every egress mode
//! excludes): while a connection to it succeeds the fence is not in force; once one fails
//! (dropped or refused), it is. A probe address that does not answer at all (the operator
//! replica that made the pod is gone) reads as fenced: the check then adds nothing, and never
//! holds a sandbox up. Still open after [`GIVE_UP`] means the cluster does not enforce the
//! policy at all: the agent exits with [`EXIT_UNFENCED`] rather than run anything.

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

/// Waits until a connection to `probe` fails; returns how long that took, or an error after
/// `give_up` of successful connections.
pub fn wait(probe: SocketAddr, give_up: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&probe, ATTEMPT) {
            Ok(s) => drop(s),
            Err(_) => return Ok(start.elapsed()),
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

/// [`wait`] for `init`: logs a wait that took a while; `Err` is the exit code.
pub fn before_start(probe: Option<SocketAddr>) -> Result<(), i32> {
    let Some(probe) = probe else { return Ok(()) };
    match wait(probe, GIVE_UP) {
        Ok(took) if took > ATTEMPT => {
            crate::sys::msg(&format!("network fenced after {} ms", took.as_millis()));
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            crate::sys::msg(&e);
            Err(EXIT_UNFENCED)
        }
    }
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
        let took = wait(addr, Duration::from_secs(10)).unwrap();
        closer.join().unwrap();
        assert!(took >= Duration::from_millis(300), "returned while the probe still answered: {took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn a_probe_that_keeps_answering_is_an_error_naming_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let e = wait(addr, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains(&addr.to_string()) && e.contains("not enforced"), "{e}");
        drop(l);
    }
}
