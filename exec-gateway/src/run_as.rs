//! CreateSandbox's `run_as_user` / `run_as_group`: the non-root user a sandbox runs as (Sandbox
//! `spec.securityContext`). Kept apart from [`crate::validate`], which is large already.

use airlock_crds::{MAX_ID, SandboxSecurityContext};
use tonic::Status;

use airlock_api::proto::v1 as pb;
use crate::validate::invalid;

/// The sandbox's `spec.securityContext` for this request: `None` when it asks for no user.
/// INVALID_ARGUMENT naming the field for uid 0 (a sandbox with a user runs with runAsNonRoot),
/// ids out of range, or a group without a user.
pub fn security_context(
    r: &pb::CreateSandboxRequest,
) -> Result<Option<SandboxSecurityContext>, Status> {
    let Some(uid) = r.run_as_user else {
        if r.run_as_group.is_some() {
            return Err(invalid(
                "run_as_group",
                "needs run_as_user (the group of which non-root user?)",
            ));
        }
        return Ok(None);
    };
    if uid == 0 {
        return Err(invalid(
            "run_as_user",
            "must not be 0: a sandbox with a user runs with runAsNonRoot; leave it unset to run as the image's user",
        ));
    }
    if !(1..=MAX_ID).contains(&uid) {
        return Err(invalid(
            "run_as_user",
            format!("must be between 1 and {MAX_ID}, got {uid}"),
        ));
    }
    if let Some(gid) = r.run_as_group
        && !(0..=MAX_ID).contains(&gid)
    {
        return Err(invalid(
            "run_as_group",
            format!("must be between 0 and {MAX_ID}, got {gid}"),
        ));
    }
    Ok(Some(SandboxSecurityContext {
        run_as_user: uid,
        run_as_group: r.run_as_group,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn req(user: Option<i64>, group: Option<i64>) -> pb::CreateSandboxRequest {
        pb::CreateSandboxRequest {
            run_as_user: user,
            run_as_group: group,
            ..Default::default()
        }
    }

    #[test]
    fn no_user_asked_for() {
        assert_eq!(security_context(&req(None, None)).unwrap(), None);
    }

    #[test]
    fn a_non_root_user_and_group() {
        let sc = security_context(&req(Some(1000), Some(0)))
            .unwrap()
            .unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_group), (1000, Some(0)));
        let sc = security_context(&req(Some(1000), None)).unwrap().unwrap();
        assert_eq!((sc.run_as_user, sc.group()), (1000, 1000));
    }

    #[test]
    fn bad_ids_are_invalid_arguments_naming_the_field() {
        for (r, field) in [
            (req(Some(0), None), "run_as_user"),
            (req(Some(-5), None), "run_as_user"),
            (req(Some(MAX_ID + 1), None), "run_as_user"),
            (req(Some(1000), Some(-1)), "run_as_group"),
            (req(None, Some(1000)), "run_as_group"),
        ] {
            let e = security_context(&r).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{r:?}");
            assert!(
                e.message().starts_with(&format!("{field}: ")),
                "{}",
                e.message()
            );
        }
        let e = security_context(&req(Some(0), None)).unwrap_err();
        assert!(e.message().contains("runAsNonRoot"), "{}", e.message());
    }
}
