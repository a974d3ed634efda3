//! When a sandbox ends. Pure.
//!
//! - TTL deadline = `creationTimestamp + ttlSeconds` (the operator's default TTL when unset).
//!   Raising `ttlSeconds` extends it.
//! - Idle deadline (only with `idleTimeoutSeconds`) = the latest of the last activity
//!   (annotation `airlock.dev/last-activity`, set by the exec gateway), the time the sandbox became
//!   Ready and its creation, plus `idleTimeoutSeconds`.
//! - `expiresAt` = the earlier of the two. Everything is computed from stored timestamps, so after
//!   an operator restart a deadline that passed while it was down is acted on at once.

use std::time::Duration;

use airlock_crds::{LAST_ACTIVITY_ANNOTATION, Sandbox};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

/// Why a sandbox ended (the `Expired` condition's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    TtlExpired,
    IdleTimeout,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::TtlExpired => "TTLExpired",
            EndReason::IdleTimeout => "IdleTimeout",
        }
    }
}

/// Problems computing a sandbox's deadlines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    #[error("Sandbox {sandbox} has no creationTimestamp")]
    NoCreationTimestamp { sandbox: String },
    #[error(
        "Sandbox {sandbox}: annotation {LAST_ACTIVITY_ANNOTATION} ({value:?}) is not an RFC 3339 time: {error}"
    )]
    BadActivity {
        sandbox: String,
        value: String,
        error: String,
    },
    #[error("Sandbox {sandbox}: deadline out of range")]
    OutOfRange { sandbox: String },
}

/// The deadlines of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub ttl: Timestamp,
    pub idle: Option<Timestamp>,
}

impl Deadlines {
    /// The earlier deadline.
    pub fn expires_at(&self) -> Timestamp {
        match self.idle {
            Some(idle) if idle < self.ttl => idle,
            _ => self.ttl,
        }
    }

    /// Whether the sandbox has ended at `now`, and why (the deadline reached first).
    pub fn ended(&self, now: Timestamp) -> Option<EndReason> {
        if now < self.expires_at() {
            return None;
        }
        Some(match self.idle {
            Some(idle) if idle < self.ttl => EndReason::IdleTimeout,
            _ => EndReason::TtlExpired,
        })
    }

    /// Time left until the earlier deadline (zero once it has passed).
    pub fn remaining(&self, now: Timestamp) -> Duration {
        let left = self.expires_at().duration_since(now);
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    }
}

fn key(sandbox: &Sandbox) -> String {
    format!(
        "{}/{}",
        sandbox.namespace().unwrap_or_default(),
        sandbox.name_any()
    )
}

/// The last activity the exec gateway recorded, if any, truncated to whole seconds.
pub fn last_activity(sandbox: &Sandbox) -> Result<Option<Timestamp>, LifetimeError> {
    let Some(value) = sandbox.annotations().get(LAST_ACTIVITY_ANNOTATION) else {
        return Ok(None);
    };
    let ts: Timestamp = value
        .trim()
        .parse()
        .map_err(|e: k8s_openapi::jiff::Error| LifetimeError::BadActivity {
            sandbox: key(sandbox),
            value: value.clone(),
            error: e.to_string(),
        })?;
    Ok(Some(whole_seconds(ts)))
}

/// The deadlines of `sandbox` given its TTL, when it became Ready and its last activity.
pub fn deadlines(
    sandbox: &Sandbox,
    ttl_seconds: i64,
    ready_time: Option<Timestamp>,
    last_activity: Option<Timestamp>,
) -> Result<Deadlines, LifetimeError> {
    let created = sandbox
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .ok_or_else(|| LifetimeError::NoCreationTimestamp {
            sandbox: key(sandbox),
        })?;
    let out_of_range = || LifetimeError::OutOfRange {
        sandbox: key(sandbox),
    };
    let ttl = created
        .checked_add(SignedDuration::from_secs(ttl_seconds))
        .map_err(|_| out_of_range())?;
    let idle = match sandbox.spec.lifetime.idle_timeout_seconds {
        None => None,
        Some(idle) => {
            let since = [Some(created), ready_time, last_activity]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(created);
            Some(
                since
                    .checked_add(SignedDuration::from_secs(idle))
                    .map_err(|_| out_of_range())?,
            )
        }
    };
    Ok(Deadlines { ttl, idle })
}

/// `ts` without its fraction of a second: what the API server stores for `metav1.Time`, so a
/// status written and read back compares equal.
pub fn whole_seconds(ts: Timestamp) -> Timestamp {
    Timestamp::from_second(ts.as_second()).unwrap_or(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sandbox_created_at(created: &str, lifetime: &str) -> Sandbox {
        let mut s = sandbox(&format!("{MINIMAL}  lifetime:\n{lifetime}"));
        s.metadata.creation_timestamp = Some(Time(ts(created)));
        s
    }

    #[test]
    fn ttl_only() {
        let s = sandbox_created_at("2025-01-01T00:00:00Z", "    ttlSeconds: 60\n");
        let d = deadlines(&s, 60, None, None).unwrap();
        assert_eq!(d.expires_at(), ts("2025-01-01T00:01:00Z"));
        assert_eq!(d.idle, None);
        assert_eq!(d.ended(ts("2025-01-01T00:00:59Z")), None);
        assert_eq!(
            d.remaining(ts("2025-01-01T00:00:59.5Z")),
            Duration::from_millis(500)
        );
        assert_eq!(
            d.ended(ts("2025-01-01T00:01:00Z")),
            Some(EndReason::TtlExpired)
        );
        assert_eq!(d.remaining(ts("2025-01-02T00:00:00Z")), Duration::ZERO);
    }

    #[test]
    fn idle_counts_from_the_latest_of_creation_ready_and_activity() {
        let s = sandbox_created_at("2025-01-01T00:00:00Z", "    idleTimeoutSeconds: 100\n");
        // Only creation known.
        let d = deadlines(&s, 3600, None, None).unwrap();
        assert_eq!(d.expires_at(), ts("2025-01-01T00:01:40Z"));
        assert_eq!(
            d.ended(ts("2025-01-01T00:01:40Z")),
            Some(EndReason::IdleTimeout)
        );
        // Ready later than creation.
        let d = deadlines(&s, 3600, Some(ts("2025-01-01T00:00:30Z")), None).unwrap();
        assert_eq!(d.expires_at(), ts("2025-01-01T00:02:10Z"));
        // Activity later still.
        let d = deadlines(
            &s,
            3600,
            Some(ts("2025-01-01T00:00:30Z")),
            Some(ts("2025-01-01T00:10:00Z")),
        )
        .unwrap();
        assert_eq!(d.expires_at(), ts("2025-01-01T00:11:40Z"));
        // An activity older than readiness does not pull the deadline back.
        let d = deadlines(
            &s,
            3600,
            Some(ts("2025-01-01T00:00:30Z")),
            Some(ts("2024-12-31T00:00:00Z")),
        )
        .unwrap();
        assert_eq!(d.expires_at(), ts("2025-01-01T00:02:10Z"));
    }

    #[test]
    fn ttl_wins_when_earlier_than_idle() {
        let s = sandbox_created_at(
            "2025-01-01T00:00:00Z",
            "    ttlSeconds: 60\n    idleTimeoutSeconds: 100\n",
        );
        let d = deadlines(&s, 60, None, Some(ts("2025-01-01T00:00:50Z"))).unwrap();
        assert_eq!(d.expires_at(), ts("2025-01-01T00:01:00Z"));
        assert_eq!(
            d.ended(ts("2025-01-01T01:00:00Z")),
            Some(EndReason::TtlExpired)
        );
    }

    #[test]
    fn activity_annotation() {
        let mut s = sandbox(MINIMAL);
        assert_eq!(last_activity(&s).unwrap(), None);
        s.metadata.annotations = Some(
            [(
                LAST_ACTIVITY_ANNOTATION.to_string(),
                "2025-01-01T00:00:05.75Z".to_string(),
            )]
            .into(),
        );
        assert_eq!(last_activity(&s).unwrap(), Some(ts("2025-01-01T00:00:05Z")));
        s.metadata.annotations = Some(
            [(
                LAST_ACTIVITY_ANNOTATION.to_string(),
                "yesterday".to_string(),
            )]
            .into(),
        );
        let err = last_activity(&s).unwrap_err().to_string();
        assert!(
            err.contains("team-a/sbx-1") && err.contains("airlock.dev/last-activity"),
            "{err}"
        );
    }

    #[test]
    fn missing_creation_timestamp_is_an_error() {
        let s = sandbox(MINIMAL);
        assert!(matches!(
            deadlines(&s, 60, None, None),
            Err(LifetimeError::NoCreationTimestamp { .. })
        ));
    }
}
