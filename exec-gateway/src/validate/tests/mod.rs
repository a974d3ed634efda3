//! Tests of the request validation, by role like the code.

use super::*;
use tonic::Code;

mod create;
mod exec;

pub(super) fn sref(ns: &str, name: &str) -> Option<pb::SandboxRef> {
    Some(pb::SandboxRef {
        namespace: ns.into(),
        name: name.into(),
    })
}

pub(super) fn msg<T: std::fmt::Debug>(r: Result<T, Status>) -> String {
    let e = r.expect_err("expected an error");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    e.message().to_string()
}

#[test]
fn paths_modes_signals_sizes() {
    assert_eq!(msg(path("path", "")), "path: must not be empty");
    assert_eq!(msg(path("path", "etc/passwd")), "path: must be absolute");
    assert_eq!(
        msg(path("path", "/a\0b")),
        "path: must not contain NUL bytes"
    );
    assert!(
        msg(path("path", &format!("/{}", "a".repeat(MAX_PATH))))
            .starts_with("path: must be at most")
    );
    assert_eq!(path("path", "/tmp/x").unwrap(), "/tmp/x");
    assert_eq!(
        msg(mode("mode", 0o10000)),
        "mode: must be at most 0o7777 (4095)"
    );
    assert_eq!(mode("mode", 0).unwrap(), None);
    assert_eq!(mode("mode", 0o755).unwrap(), Some(0o755));
    assert_eq!(
        msg(signal("signal.number", &pb::Signal { number: 0 })),
        "signal.number: must be between 1 and 64"
    );
    assert_eq!(
        msg(signal("signal.number", &pb::Signal { number: 65 })),
        "signal.number: must be between 1 and 64"
    );
    assert_eq!(
        signal("signal.number", &pb::Signal { number: 15 }).unwrap(),
        15
    );
    assert_eq!(
        msg(resize("resize", &pb::Resize { cols: 0, rows: 1 })),
        "resize.cols: must be between 1 and 65535"
    );
    assert_eq!(
        msg(resize(
            "resize",
            &pb::Resize {
                cols: 1,
                rows: 70000
            }
        )),
        "resize.rows: must be between 1 and 65535"
    );
    assert_eq!(
        resize(
            "resize",
            &pb::Resize {
                cols: 120,
                rows: 40
            }
        )
        .unwrap(),
        (120, 40)
    );
}

// Environment values over the CRD limit.

#[test]
fn env_values_over_the_crd_limit_name_the_field() {
    let mut m = HashMap::new();
    m.insert("BIG".to_string(), "x".repeat(MAX_ENV_VALUE + 1));
    let err = env("env", &m, 128).expect_err("too long");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("env"), "{}", err.message());
    m.insert("BIG".to_string(), "x".repeat(MAX_ENV_VALUE));
    assert!(env("env", &m, 128).is_ok(), "the limit itself is accepted");
}
