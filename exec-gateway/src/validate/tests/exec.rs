//! Exec and RunCode requests.

use super::*;

fn exec(f: impl FnOnce(&mut pb::ExecRequest)) -> Result<ExecSpec, Status> {
    let mut r = pb::ExecRequest {
        sandbox: sref("", "sb"),
        command: Some(pb::exec_request::Command::Argv(pb::Argv {
            args: vec!["true".into()],
        })),
        ..Default::default()
    };
    f(&mut r);
    exec_request(&r, "default")
}

#[test]
fn exec_request_fields() {
    let ok = exec(|_| {}).unwrap();
    assert_eq!((ok.namespace.as_str(), ok.name.as_str()), ("default", "sb"));
    assert_eq!(ok.options.argv, ["true"]);
    assert_eq!(ok.timeout, None);

    assert_eq!(msg(exec(|r| r.sandbox = None)), "sandbox: required");
    assert_eq!(
        msg(exec(|r| r.sandbox = sref("ns", ""))),
        "sandbox.name: must not be empty"
    );
    assert!(
        msg(exec(|r| r.sandbox = sref("ns", "Bad_Name")))
            .starts_with("sandbox.name: must be a DNS label")
    );
    assert!(
        msg(exec(|r| r.sandbox = sref("UPPER", "x")))
            .starts_with("sandbox.namespace: must be a DNS label")
    );
    assert!(
        msg(exec(|r| r.sandbox = sref("ns", &"a".repeat(64)))).starts_with("sandbox.name:")
    );
    assert_eq!(
        msg(exec(|r| r.command = None)),
        "command: set argv or shell"
    );
    assert_eq!(
        msg(exec(|r| r.command =
            Some(pb::exec_request::Command::Argv(pb::Argv {
                args: vec![]
            })))),
        "argv: must not be empty"
    );
    assert_eq!(
        msg(exec(|r| r.command =
            Some(pb::exec_request::Command::Argv(pb::Argv {
                args: vec!["".into()]
            })))),
        "argv: the program (first element) must not be empty"
    );
    assert_eq!(
        msg(exec(|r| r.command =
            Some(pb::exec_request::Command::Argv(pb::Argv {
                args: vec!["a\0b".into()]
            })))),
        "argv: arguments must not contain NUL bytes"
    );
    assert_eq!(
        msg(exec(
            |r| r.command = Some(pb::exec_request::Command::Shell("  ".into()))
        )),
        "shell: must not be empty"
    );
    assert_eq!(
        msg(exec(|r| r.cwd = "relative".into())),
        "cwd: must be absolute"
    );
    assert_eq!(
        msg(exec(|r| r.timeout = Some(prost_types::Duration {
            seconds: -1,
            nanos: 0
        }))),
        "timeout: must not be negative"
    );
    assert_eq!(
        msg(exec(|r| r.timeout = Some(prost_types::Duration {
            seconds: 0,
            nanos: -5
        }))),
        "timeout: must not be negative"
    );
    assert_eq!(
        msg(exec(|r| r.timeout = Some(prost_types::Duration {
            seconds: 1,
            nanos: 2_000_000_000
        }))),
        "timeout: nanos must be below 1000000000"
    );
    assert!(
        msg(exec(|r| r.timeout = Some(prost_types::Duration {
            seconds: i64::MAX,
            nanos: 0
        })))
        .starts_with("timeout: must be at most")
    );
    assert!(
        msg(exec(|r| {
            r.env.insert("1BAD".into(), "x".into());
        }))
        .starts_with("env: invalid variable name \"1BAD\"")
    );
    assert!(
        msg(exec(|r| {
            r.env.insert("A=B".into(), "x".into());
        }))
        .starts_with("env: invalid variable name")
    );
    assert_eq!(
        msg(exec(|r| {
            r.env.insert("A".into(), "x\0".into());
        })),
        "env: value of A must not contain NUL bytes"
    );
    assert!(
        msg(exec(|r| r.command =
            Some(pb::exec_request::Command::Argv(pb::Argv {
                args: vec!["x".repeat(MAX_COMMAND_BYTES + 1)]
            }))))
        .starts_with("argv: the command line")
    );

    let shell = exec(|r| {
        r.command = Some(pb::exec_request::Command::Shell("echo hi | wc -c".into()));
        r.timeout = Some(prost_types::Duration {
            seconds: 2,
            nanos: 500_000_000,
        });
        r.env.insert("B".into(), "2".into());
        r.env.insert("A".into(), "1".into());
        r.cwd = "/tmp".into();
        r.stdin = Some(Bytes::from_static(b"in"));
    })
    .unwrap();
    assert_eq!(shell.options.argv, ["/bin/sh", "-c", "echo hi | wc -c"]);
    assert_eq!(shell.timeout, Some(Duration::from_millis(2500)));
    assert_eq!(
        shell.options.env,
        [
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "2".to_string())
        ]
    );
    assert_eq!(shell.options.cwd.as_deref(), Some("/tmp"));
    assert_eq!(shell.stdin.as_deref(), Some(&b"in"[..]));
    assert_eq!(
        exec(|r| r.timeout = Some(prost_types::Duration::default()))
            .unwrap()
            .timeout,
        None
    );
}

#[test]
fn run_code_fields() {
    let base = pb::RunCodeRequest {
        sandbox: sref("ns", "sb"),
        language: pb::Language::Python as i32,
        code: "print(1+1)".into(),
        ..Default::default()
    };
    assert_eq!(
        run_code_request(&base, "d").unwrap().options.argv,
        ["python3", "-c", "print(1+1)"]
    );
    let node = pb::RunCodeRequest {
        language: pb::Language::Node as i32,
        ..base.clone()
    };
    assert_eq!(
        run_code_request(&node, "d").unwrap().options.argv,
        ["node", "-e", "print(1+1)"]
    );
    let sh = pb::RunCodeRequest {
        language: pb::Language::Shell as i32,
        ..base.clone()
    };
    assert_eq!(
        run_code_request(&sh, "d").unwrap().options.argv,
        ["/bin/sh", "-c", "print(1+1)"]
    );
    assert_eq!(
        msg(run_code_request(
            &pb::RunCodeRequest {
                language: 0,
                ..base.clone()
            },
            "d"
        )),
        "language: must be PYTHON, NODE or SHELL"
    );
    assert_eq!(
        msg(run_code_request(
            &pb::RunCodeRequest {
                language: 99,
                ..base.clone()
            },
            "d"
        )),
        "language: unknown value 99"
    );
    assert_eq!(
        msg(run_code_request(
            &pb::RunCodeRequest {
                code: " ".into(),
                ..base.clone()
            },
            "d"
        )),
        "code: must not be empty"
    );
    assert!(
        msg(run_code_request(
            &pb::RunCodeRequest {
                code: "x".repeat(MAX_CODE + 1),
                ..base.clone()
            },
            "d"
        ))
        .starts_with("code: must be at most")
    );
    assert_eq!(
        msg(run_code_request(
            &pb::RunCodeRequest {
                sandbox: None,
                ..base
            },
            "d"
        )),
        "sandbox: required"
    );
}
