//! Step 2 (lifetime), for the idle timeout: before a sandbox is expired as idle, the operator asks
//! its agent over the direct path (`ACTIVITY`, docs/DESIGN-NOTES.md "Agent TCP service") whether
//! anything runs there. A running process or an open stream (an exec in flight, a background
//! process, a client attached to one) is activity now; otherwise the agent says when its last
//! activity ended. The latest of that, the gateway's `airlock.dev/last-activity` annotation and
//! the status's `lastActivityTime` is the sandbox's last activity, so the idle timeout counts from
//! the end of the last activity, and work in progress is never reaped as idle.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_agent_protocol::{Activity, Client, Reply, c2a};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::config::DirectAgent;

/// How long the operator waits for an agent (connecting, and each answer).
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// What the agent said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Something runs: the sandbox is active at `now`.
    Active,
    /// Nothing runs since this time (in the operator's clock).
    IdleSince(Timestamp),
}

/// The agent's answer as of `now`: its own clock is used only for the time since its last
/// activity, so a skew between the node's and the operator's clocks does not matter.
pub fn seen(a: &Activity, now: Timestamp) -> Seen {
    if a.processes > 0 || a.streams > 0 || a.idle_since_unix_ms == 0 {
        return Seen::Active;
    }
    let ago = a.now_unix_ms.saturating_sub(a.idle_since_unix_ms);
    let ago = SignedDuration::from_millis(i64::try_from(ago).unwrap_or(i64::MAX));
    Seen::IdleSince(now.checked_sub(ago).unwrap_or(now))
}

/// Asks the agent at `addr` of the sandbox with `uid`.
pub async fn ask(direct: &DirectAgent, uid: &str, addr: SocketAddr, now: Timestamp) -> Result<Seen, String> {
    let token = airlock_crds::agent_token::derive(&direct.key, uid);
    let answer = tokio::task::spawn_blocking(move || {
        let mut c = Client::connect_within(addr, token.as_bytes(), ASK_TIMEOUT).map_err(|e| e.to_string())?;
        c.call(c2a::ACTIVITY, &[]).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    match answer {
        Reply::Activity(a) => Ok(seen(&a, now)),
        other => Err(format!("unexpected answer to ACTIVITY: {other:?}")),
    }
}

/// Whether the agent at `addr` of the sandbox with `uid` answers (connect and HELLO within
/// `within`).
pub async fn answers(direct: &DirectAgent, uid: &str, addr: SocketAddr, within: Duration) -> Result<(), String> {
    let token = airlock_crds::agent_token::derive(&direct.key, uid);
    tokio::task::spawn_blocking(move || {
        Client::connect_within(addr, token.as_bytes(), within).map(drop).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(processes: u32, streams: u32, idle_since: u64, agent_now: u64) -> Activity {
        Activity { processes, streams, idle_since_unix_ms: idle_since, now_unix_ms: agent_now }
    }

    #[test]
    fn running_processes_and_streams_are_activity_now() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        assert_eq!(seen(&a(1, 0, 0, 5_000), now), Seen::Active);
        assert_eq!(seen(&a(0, 2, 0, 5_000), now), Seen::Active);
        assert_eq!(seen(&a(0, 0, 0, 5_000), now), Seen::Active, "0: active (the agent's convention)");
    }

    #[test]
    fn idle_since_is_taken_relative_to_the_agents_clock() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        // The agent's clock is far off; it says its activity ended 30 s ago.
        let s = seen(&a(0, 0, 1_000_000, 1_030_000), now);
        assert_eq!(s, Seen::IdleSince("2026-01-01T00:09:30Z".parse().unwrap()));
    }
}
