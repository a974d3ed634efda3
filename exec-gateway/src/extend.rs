//! `ExtendSandbox`, the pure half: what an extension writes, and whether it is allowed.
//!
//! An extension never touches `spec.lifetime.ttlSeconds` (a Sandbox kept in Git owns that field;
//! its GitOps controller would revert it). It raises `spec.lifetime.extensionSeconds`, a field
//! manifests leave out and the gateway writes under its own field manager; the operator's TTL
//! deadline is creation + `ttlSeconds` (or its default) + `extensionSeconds`, at most its
//! `--max-ttl`. The gateway is given the same maximum (`--max-ttl`) and refuses an extension past
//! it, so an extension never turns into a clamp.
//!
//! The current time-to-live is the TTL alone, never `status.expiresAt` (the earlier of the TTL and
//! idle deadlines: counting from it would shorten a sandbox that has an idle timeout).

use airlock_crds::Sandbox;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use tonic::Status;

use crate::validate;

/// What an extension writes, and the deadline it gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The new `spec.lifetime.extensionSeconds`.
    pub extension_seconds: i64,
    /// The time-to-live the sandbox then has (`ttlSeconds` or the default, plus the extension).
    pub ttl_seconds: i64,
    /// When that time-to-live runs out.
    pub ttl_expires_at: Timestamp,
}

/// The extension of `s` by `add` seconds, against the operator's maximum `max_ttl`.
pub fn plan(s: &Sandbox, add: i64, max_ttl: i64) -> Result<Extension, Status> {
    let key = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
    if add <= 0 {
        return Err(validate::invalid("add_seconds", "must be positive"));
    }
    let created = s
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .ok_or_else(|| {
            Status::failed_precondition(format!("sandbox {key} has no creationTimestamp"))
        })?;
    let extension = s.spec.lifetime.extension_seconds.unwrap_or(0).max(0);
    let current = match s.spec.lifetime.ttl_seconds {
        Some(ttl) => ttl.saturating_add(extension),
        // TTL left to the operator's default, which the gateway does not know: take the TTL the
        // operator applied, when its status describes the current spec.
        None => applied_ttl(s, created).ok_or_else(|| {
            Status::unavailable(format!(
                "sandbox {key} uses the operator's default time-to-live and the operator has not reported it for the current spec yet; retry in a moment"
            ))
        })?,
    };
    let ttl_seconds = current.saturating_add(add);
    if ttl_seconds > max_ttl {
        return Err(validate::invalid(
            "add_seconds",
            format!(
                "extending sandbox {key} by {add}s would make its time-to-live {ttl_seconds}s, above the operator's maximum of {max_ttl}s"
            ),
        ));
    }
    let ttl_expires_at = created
        .checked_add(SignedDuration::from_secs(ttl_seconds))
        .map_err(|_| validate::invalid("add_seconds", "deadline out of range"))?;
    Ok(Extension {
        extension_seconds: extension + add,
        ttl_seconds,
        ttl_expires_at,
    })
}

/// The time-to-live the operator applied (`status.ttlSeconds`, else `status.ttlExpiresAt` minus
/// creation), if its status is for the current generation.
fn applied_ttl(s: &Sandbox, created: Timestamp) -> Option<i64> {
    let status = s.status.as_ref()?;
    if status.observed_generation.is_none() || status.observed_generation != s.metadata.generation {
        return None;
    }
    status.ttl_seconds.or_else(|| {
        let at = status.ttl_expires_at.as_ref()?.0;
        Some(at.as_second() - created.as_second()).filter(|t| *t > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_crds::{Lifetime, SandboxSpec, SandboxStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use tonic::Code;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sandbox(lifetime: Lifetime, status: Option<SandboxStatus>) -> Sandbox {
        let mut s = Sandbox::new(
            "sbx",
            SandboxSpec {
                image: "i".into(),
                lifetime,
                ..Default::default()
            },
        );
        s.metadata.namespace = Some("team-a".into());
        s.metadata.generation = Some(2);
        s.metadata.creation_timestamp = Some(Time(ts("2025-01-01T00:00:00Z")));
        s.status = status;
        s
    }

    /// Status of a sandbox with a 1 h TTL and a 10 min idle timeout whose idle deadline comes first.
    fn idle_first(observed: i64, ttl_seconds: Option<i64>) -> SandboxStatus {
        SandboxStatus {
            observed_generation: Some(observed),
            expires_at: Some(Time(ts("2025-01-01T00:10:00Z"))),
            idle_expires_at: Some(Time(ts("2025-01-01T00:10:00Z"))),
            ttl_expires_at: Some(Time(ts("2025-01-01T01:00:00Z"))),
            ttl_seconds,
            ..Default::default()
        }
    }

    #[test]
    fn extends_from_the_ttl_not_from_the_earlier_idle_deadline() {
        let lifetime = Lifetime {
            idle_timeout_seconds: Some(600),
            ..Default::default()
        };
        // status.ttlSeconds, and without it status.ttlExpiresAt: both give 3600 + 600.
        for status in [idle_first(2, Some(3600)), idle_first(2, None)] {
            let s = sandbox(lifetime.clone(), Some(status));
            let e = plan(&s, 600, 86400).unwrap();
            assert_eq!(
                e,
                Extension {
                    extension_seconds: 600,
                    ttl_seconds: 4200,
                    ttl_expires_at: ts("2025-01-01T01:10:00Z"),
                },
                "the deadline moves later, never earlier"
            );
        }
    }

    #[test]
    fn extends_the_spec_ttl_plus_earlier_extensions_without_touching_ttl_seconds() {
        let s = sandbox(
            Lifetime {
                ttl_seconds: Some(1800),
                extension_seconds: Some(600),
                ..Default::default()
            },
            None,
        );
        let e = plan(&s, 300, 86400).unwrap();
        assert_eq!((e.extension_seconds, e.ttl_seconds), (900, 2700));
        assert_eq!(e.ttl_expires_at, ts("2025-01-01T00:45:00Z"));
    }

    #[test]
    fn refuses_past_the_operator_maximum_naming_it() {
        let s = sandbox(
            Lifetime {
                ttl_seconds: Some(3600),
                ..Default::default()
            },
            None,
        );
        // Within the CRD's 7 days, past the operator's 1 day.
        let err = plan(&s, 86400, 86400).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "add_seconds: extending sandbox team-a/sbx by 86400s would make its time-to-live 90000s, above the operator's maximum of 86400s"
        );
        // Exactly the maximum is fine.
        assert_eq!(plan(&s, 82800, 86400).unwrap().ttl_seconds, 86400);
        // A sandbox already clamped (maximum lowered) cannot be extended further.
        let clamped = sandbox(
            Lifetime {
                ttl_seconds: Some(90000),
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            plan(&clamped, 1, 86400).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            plan(&s, 0, 86400).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn default_ttl_needs_a_status_for_the_current_spec() {
        let lifetime = Lifetime::default();
        // No status yet, or one for an older generation: retry later.
        for status in [None, Some(idle_first(1, Some(3600)))] {
            let err = plan(&sandbox(lifetime.clone(), status), 60, 86400).unwrap_err();
            assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        }
        let e = plan(
            &sandbox(lifetime, Some(idle_first(2, Some(3600)))),
            60,
            86400,
        )
        .unwrap();
        assert_eq!((e.extension_seconds, e.ttl_seconds), (60, 3660));
    }
}
