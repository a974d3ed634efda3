//! Request validation. Every failure is `INVALID_ARGUMENT` with a message that starts with the
//! field's name, for example `sandbox.name: must not be empty`. Nothing here panics, whatever the
//! input.
//!
//! Over 600 lines: one validator per request message, with its tests; splitting it by service (and
//! moving API-level checks next to the API types) is issue 11 (layout).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tonic::Status;

use crate::agent::ExecOptions;
pub use airlock_crds::validation::cidr::is_cidr;
pub use airlock_crds::validation::names::{is_dns_label, is_env_name, is_label_key, is_label_value};
pub use airlock_crds::validation::quantity::is_quantity;
use airlock_api::proto::v1 as pb;

/// Longest path accepted (Linux PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Largest RunCode snippet.
pub const MAX_CODE: usize = 1024 * 1024;
/// Most arguments of one command.
pub const MAX_ARGS: usize = 4096;
/// Most bytes of one command line (arguments and environment together).
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// Most extra environment variables of one command.
pub const MAX_ENV: usize = 256;
/// Longest timeout (7 days, the longest a sandbox lives).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(airlock_crds::MAX_TTL_SECONDS as u64);

/// An `INVALID_ARGUMENT` status naming `field`.
pub fn invalid(field: &str, msg: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {msg}"))
}


const DNS_LABEL_HINT: &str = "must be a DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)";

/// A namespace, or the default one when empty.
pub fn namespace(field: &str, ns: &str, default: &str) -> Result<String, Status> {
    if ns.is_empty() {
        return Ok(default.to_string());
    }
    if !is_dns_label(ns) {
        return Err(invalid(field, DNS_LABEL_HINT));
    }
    Ok(ns.to_string())
}

/// A sandbox reference: (namespace, name).
pub fn sandbox_ref(
    field: &str,
    r: Option<&pb::SandboxRef>,
    default_ns: &str,
) -> Result<(String, String), Status> {
    let Some(r) = r else {
        return Err(invalid(field, "required"));
    };
    let ns = namespace(&format!("{field}.namespace"), &r.namespace, default_ns)?;
    let name_field = format!("{field}.name");
    if r.name.is_empty() {
        return Err(invalid(&name_field, "must not be empty"));
    }
    if !is_dns_label(&r.name) {
        return Err(invalid(&name_field, DNS_LABEL_HINT));
    }
    Ok((ns, r.name.clone()))
}

/// An absolute path inside a sandbox.
pub fn path(field: &str, p: &str) -> Result<String, Status> {
    if p.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if !p.starts_with('/') {
        return Err(invalid(field, "must be absolute"));
    }
    if p.contains('\0') {
        return Err(invalid(field, "must not contain NUL bytes"));
    }
    if p.len() > MAX_PATH {
        return Err(invalid(field, format!("must be at most {MAX_PATH} bytes")));
    }
    Ok(p.to_string())
}

/// Permission bits; 0 means "not set" (None).
pub fn mode(field: &str, m: u32) -> Result<Option<u32>, Status> {
    if m > 0o7777 {
        return Err(invalid(field, "must be at most 0o7777 (4095)"));
    }
    Ok((m != 0).then_some(m))
}


/// Longest environment value accepted (the Sandbox CRD's limit, so a create never fails later
/// at admission with a message that does not name the field).
pub const MAX_ENV_VALUE: usize = 32768;

/// Environment variables, sorted by name.
pub fn env(
    field: &str,
    env: &HashMap<String, String>,
    max: usize,
) -> Result<Vec<(String, String)>, Status> {
    if env.len() > max {
        return Err(invalid(field, format!("at most {max} variables")));
    }
    let sorted: BTreeMap<&String, &String> = env.iter().collect();
    let mut out = Vec::with_capacity(sorted.len());
    for (k, v) in sorted {
        if !is_env_name(k) {
            return Err(invalid(
                field,
                format!(
                    "invalid variable name {k:?} (letters, digits and '_', not starting with a digit)"
                ),
            ));
        }
        if v.contains('\0') {
            return Err(invalid(
                field,
                format!("value of {k} must not contain NUL bytes"),
            ));
        }
        if v.len() > MAX_ENV_VALUE {
            return Err(invalid(
                field,
                format!("value of {k} is longer than {MAX_ENV_VALUE} bytes"),
            ));
        }
        out.push((k.clone(), v.clone()));
    }
    Ok(out)
}

/// A timeout: unset or zero means none.
pub fn timeout(field: &str, d: Option<&prost_types::Duration>) -> Result<Option<Duration>, Status> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 {
        return Err(invalid(field, "must not be negative"));
    }
    if d.nanos >= 1_000_000_000 {
        return Err(invalid(field, "nanos must be below 1000000000"));
    }
    let t = Duration::new(d.seconds as u64, d.nanos as u32);
    if t > MAX_TIMEOUT {
        return Err(invalid(
            field,
            format!("must be at most {}s", MAX_TIMEOUT.as_secs()),
        ));
    }
    Ok(if t.is_zero() { None } else { Some(t) })
}

fn argv(field: &str, args: &[String]) -> Result<Vec<String>, Status> {
    if args.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if args[0].is_empty() {
        return Err(invalid(
            field,
            "the program (first element) must not be empty",
        ));
    }
    if args.len() > MAX_ARGS {
        return Err(invalid(field, format!("at most {MAX_ARGS} arguments")));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(invalid(field, "arguments must not contain NUL bytes"));
    }
    Ok(args.to_vec())
}

/// A validated command.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecSpec {
    pub namespace: String,
    pub name: String,
    /// `timeout_ms` not set here: the caller adds the agent's backstop.
    pub options: ExecOptions,
    pub timeout: Option<Duration>,
    pub stdin: Option<Bytes>,
}

fn common(
    sandbox: Option<&pb::SandboxRef>,
    env_map: &HashMap<String, String>,
    cwd: &str,
    t: Option<&prost_types::Duration>,
    stdin: Option<&Bytes>,
    argv: Vec<String>,
    default_ns: &str,
) -> Result<ExecSpec, Status> {
    let (namespace, name) = sandbox_ref("sandbox", sandbox, default_ns)?;
    let env = env("env", env_map, MAX_ENV)?;
    let cwd = if cwd.is_empty() {
        None
    } else {
        Some(path("cwd", cwd)?)
    };
    let timeout = timeout("timeout", t)?;
    let total: usize = argv.iter().map(|a| a.len() + 1).sum::<usize>()
        + env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    if total > MAX_COMMAND_BYTES {
        return Err(invalid(
            "argv",
            format!("the command line and environment must be at most {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    Ok(ExecSpec {
        namespace,
        name,
        options: ExecOptions {
            cwd,
            env,
            timeout_ms: None,
            tty: false,
            size: None,
            argv,
        },
        timeout,
        stdin: stdin.cloned(),
    })
}

/// Validates an Exec request.
pub fn exec_request(r: &pb::ExecRequest, default_ns: &str) -> Result<ExecSpec, Status> {
    let argv = match &r.command {
        None => return Err(invalid("command", "set argv or shell")),
        Some(pb::exec_request::Command::Argv(a)) => argv("argv", &a.args)?,
        Some(pb::exec_request::Command::Shell(s)) => {
            if s.trim().is_empty() {
                return Err(invalid("shell", "must not be empty"));
            }
            if s.contains('\0') {
                return Err(invalid("shell", "must not contain NUL bytes"));
            }
            vec!["/bin/sh".into(), "-c".into(), s.clone()]
        }
    };
    common(
        r.sandbox.as_ref(),
        &r.env,
        &r.cwd,
        r.timeout.as_ref(),
        r.stdin.as_ref(),
        argv,
        default_ns,
    )
}

/// The command line that runs `code` in `language`.
pub fn code_argv(language: pb::Language, code: &str) -> Option<Vec<String>> {
    let (prog, flag) = match language {
        pb::Language::Python => ("python3", "-c"),
        pb::Language::Node => ("node", "-e"),
        pb::Language::Shell => ("/bin/sh", "-c"),
        pb::Language::Unspecified => return None,
    };
    Some(vec![prog.into(), flag.into(), code.into()])
}

/// Validates a RunCode request.
pub fn run_code_request(r: &pb::RunCodeRequest, default_ns: &str) -> Result<ExecSpec, Status> {
    let language = pb::Language::try_from(r.language)
        .map_err(|_| invalid("language", format!("unknown value {}", r.language)))?;
    if r.code.trim().is_empty() {
        return Err(invalid("code", "must not be empty"));
    }
    if r.code.len() > MAX_CODE {
        return Err(invalid("code", format!("must be at most {MAX_CODE} bytes")));
    }
    if r.code.contains('\0') {
        return Err(invalid("code", "must not contain NUL bytes"));
    }
    let argv = code_argv(language, &r.code)
        .ok_or_else(|| invalid("language", "must be PYTHON, NODE or SHELL"))?;
    common(
        r.sandbox.as_ref(),
        &r.env,
        &r.cwd,
        r.timeout.as_ref(),
        r.stdin.as_ref(),
        argv,
        default_ns,
    )
}

/// A validated terminal size.
pub fn resize(field: &str, r: &pb::Resize) -> Result<(u16, u16), Status> {
    let cols = u16::try_from(r.cols)
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| invalid(&format!("{field}.cols"), "must be between 1 and 65535"))?;
    let rows = u16::try_from(r.rows)
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| invalid(&format!("{field}.rows"), "must be between 1 and 65535"))?;
    Ok((cols, rows))
}

/// A validated signal number.
pub fn signal(field: &str, s: &pb::Signal) -> Result<u32, Status> {
    if !(1..=64).contains(&s.number) {
        return Err(invalid(field, "must be between 1 and 64"));
    }
    Ok(s.number as u32)
}


fn quantity(field: &str, q: &str, example: &str) -> Result<Option<String>, Status> {
    if q.is_empty() {
        return Ok(None);
    }
    if q.len() > 64 || !is_quantity(q) {
        return Err(invalid(
            field,
            format!("must be a Kubernetes quantity such as {example}"),
        ));
    }
    if q.trim_start_matches('+')
        .trim_start_matches(['0', '.'])
        .chars()
        .next()
        .is_none_or(|c| !c.is_ascii_digit())
    {
        return Err(invalid(field, "must be positive"));
    }
    Ok(Some(q.to_string()))
}




/// A validated CreateSandbox request.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub namespace: String,
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub spec: airlock_crds::SandboxSpec,
    pub labels: BTreeMap<String, String>,
    pub wait_ready: bool,
}

/// Validates a CreateSandbox request (`template` is refused with UNIMPLEMENTED).
pub fn create_request(
    r: &pb::CreateSandboxRequest,
    default_ns: &str,
) -> Result<CreateSpec, Status> {
    use airlock_crds::*;
    let namespace = namespace("namespace", &r.namespace, default_ns)?;
    let (name, generate_name) = match (r.name.is_empty(), r.generate_name.is_empty()) {
        (false, false) => return Err(invalid("name", "set at most one of name and generate_name")),
        (false, true) => {
            if !is_dns_label(&r.name) {
                return Err(invalid("name", DNS_LABEL_HINT));
            }
            (Some(r.name.clone()), None)
        }
        (true, false) => {
            let g = &r.generate_name;
            if g.len() > 58
                || !g
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                || !g.as_bytes()[0].is_ascii_alphanumeric()
            {
                return Err(invalid(
                    "generate_name",
                    "must be a DNS label prefix (lowercase letters, digits and '-', starting with a letter or digit, at most 58 characters)",
                ));
            }
            (None, Some(g.clone()))
        }
        (true, true) => (None, Some("sandbox-".to_string())),
    };
    let image = match &r.source {
        None => return Err(invalid("image", "must not be empty")),
        Some(pb::create_sandbox_request::Source::Template(_)) => {
            return Err(Status::unimplemented(
                "template: sandbox templates are not implemented yet; set image",
            ));
        }
        Some(pb::create_sandbox_request::Source::Image(i)) => i,
    };
    if image.trim().is_empty() {
        return Err(invalid("image", "must not be empty"));
    }
    if image.len() > 512 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "image",
            "must be an image reference without spaces, at most 512 characters",
        ));
    }
    let res = r.resources.clone().unwrap_or_default();
    let q = |v: Option<String>| v.map(k8s_openapi::apimachinery::pkg::api::resource::Quantity);
    let resources = SandboxResources {
        cpu: q(quantity("resources.cpu", &res.cpu, "500m or 2")?),
        memory: q(quantity("resources.memory", &res.memory, "512Mi")?),
        ephemeral_storage: q(quantity(
            "resources.ephemeral_storage",
            &res.ephemeral_storage,
            "1Gi",
        )?),
    };
    let secs = |field: &str, v: i64| -> Result<Option<i64>, Status> {
        if v < 0 {
            return Err(invalid(field, "must not be negative"));
        }
        if v > MAX_TTL_SECONDS {
            return Err(invalid(
                field,
                format!("must be at most {MAX_TTL_SECONDS} (7 days)"),
            ));
        }
        Ok((v > 0).then_some(v))
    };
    let lifetime = Lifetime {
        ttl_seconds: secs("ttl_seconds", r.ttl_seconds)?,
        idle_timeout_seconds: secs("idle_timeout_seconds", r.idle_timeout_seconds)?,
        extension_seconds: None,
        on_expiry: None,
    };
    let network = network(r.network.as_ref())?;
    let env = env("env", &r.env, 128)?
        .into_iter()
        .map(|(name, value)| SandboxEnvVar { name, value })
        .collect();
    let mut labels = BTreeMap::new();
    for (k, v) in &r.labels {
        if !is_label_key(k) {
            return Err(invalid("labels", format!("invalid label key {k:?}")));
        }
        if k.starts_with("airlock.dev/") || k.contains(".airlock.dev/") {
            return Err(invalid(
                "labels",
                format!("label key {k:?} uses the reserved prefix airlock.dev/"),
            ));
        }
        if !is_label_value(v) {
            return Err(invalid(
                "labels",
                format!("invalid value {v:?} of label {k}"),
            ));
        }
        labels.insert(k.clone(), v.clone());
    }
    let runtime_class_name = if r.runtime_class_name.is_empty() {
        None
    } else {
        let rc = &r.runtime_class_name;
        if rc.len() > 253 || !rc.split('.').all(is_dns_label) {
            return Err(invalid(
                "runtime_class_name",
                "must be a DNS subdomain name",
            ));
        }
        Some(rc.clone())
    };
    let working_dir = if r.working_dir.is_empty() {
        None
    } else {
        Some(path("working_dir", &r.working_dir)?)
    };
    Ok(CreateSpec {
        namespace,
        name,
        generate_name,
        spec: SandboxSpec {
            image: image.clone(),
            resources,
            lifetime,
            network,
            env,
            runtime_class_name,
            working_dir,
            read_only_root_filesystem: r.read_only_root_filesystem,
            agent: r.agent_in_image.then_some(airlock_crds::AgentSource::Image),
            ..Default::default()
        },
        labels,
        wait_ready: r.wait_ready,
    })
}

fn network(n: Option<&pb::Network>) -> Result<airlock_crds::Network, Status> {
    use airlock_crds::{EgressMode, EgressPort, EgressRule, Network, Protocol};
    let Some(n) = n else {
        return Ok(Network::default());
    };
    let egress = match pb::network::Egress::try_from(n.egress) {
        Ok(pb::network::Egress::Unspecified | pb::network::Egress::None) => EgressMode::None,
        Ok(pb::network::Egress::Internet) => EgressMode::Internet,
        Ok(pb::network::Egress::AllowList) => EgressMode::AllowList,
        Err(_) => {
            return Err(invalid(
                "network.egress",
                format!("unknown value {}", n.egress),
            ));
        }
    };
    if egress != EgressMode::AllowList && !n.allow.is_empty() {
        return Err(invalid(
            "network.allow",
            "may only be set when network.egress is EGRESS_ALLOW_LIST",
        ));
    }
    if egress == EgressMode::AllowList && n.allow.is_empty() {
        return Err(invalid(
            "network.allow",
            "must list at least one destination when network.egress is EGRESS_ALLOW_LIST",
        ));
    }
    if n.allow.len() > 64 {
        return Err(invalid("network.allow", "at most 64 destinations"));
    }
    let mut allow = Vec::with_capacity(n.allow.len());
    for (i, rule) in n.allow.iter().enumerate() {
        if !is_cidr(&rule.cidr) {
            return Err(invalid(
                &format!("network.allow[{i}].cidr"),
                "must be a CIDR such as 10.1.2.0/24",
            ));
        }
        if rule.ports.len() > 32 {
            return Err(invalid(
                &format!("network.allow[{i}].ports"),
                "at most 32 ports",
            ));
        }
        let mut ports = Vec::with_capacity(rule.ports.len());
        for (j, p) in rule.ports.iter().enumerate() {
            if !(1..=65535).contains(&p.port) {
                return Err(invalid(
                    &format!("network.allow[{i}].ports[{j}].port"),
                    "must be between 1 and 65535",
                ));
            }
            let protocol = match pb::port::Protocol::try_from(p.protocol) {
                Ok(pb::port::Protocol::Unspecified | pb::port::Protocol::Tcp) => Protocol::TCP,
                Ok(pb::port::Protocol::Udp) => Protocol::UDP,
                Ok(pb::port::Protocol::Sctp) => Protocol::SCTP,
                Err(_) => {
                    return Err(invalid(
                        &format!("network.allow[{i}].ports[{j}].protocol"),
                        format!("unknown value {}", p.protocol),
                    ));
                }
            };
            ports.push(EgressPort {
                port: p.port,
                protocol,
            });
        }
        allow.push(EgressRule {
            cidr: rule.cidr.clone(),
            ports,
        });
    }
    Ok(Network {
        egress,
        allow,
        dns: n.dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn sref(ns: &str, name: &str) -> Option<pb::SandboxRef> {
        Some(pb::SandboxRef {
            namespace: ns.into(),
            name: name.into(),
        })
    }

    fn msg<T: std::fmt::Debug>(r: Result<T, Status>) -> String {
        let e = r.expect_err("expected an error");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        e.message().to_string()
    }

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

    fn create(f: impl FnOnce(&mut pb::CreateSandboxRequest)) -> Result<CreateSpec, Status> {
        let mut r = pb::CreateSandboxRequest {
            source: Some(pb::create_sandbox_request::Source::Image(
                "python:3.12".into(),
            )),
            ..Default::default()
        };
        f(&mut r);
        create_request(&r, "default")
    }

    #[test]
    fn create_request_fields() {
        let ok = create(|_| {}).unwrap();
        assert_eq!(ok.namespace, "default");
        assert_eq!(ok.generate_name.as_deref(), Some("sandbox-"));
        assert_eq!(ok.spec.image, "python:3.12");
        assert_eq!(ok.spec.agent, None, "the agent is injected unless asked");
        let own = create(|r| r.agent_in_image = true).unwrap();
        assert_eq!(own.spec.agent, Some(airlock_crds::AgentSource::Image));

        let full = create(|r| {
            r.namespace = "team-a".into();
            r.name = "my-box".into();
            r.resources = Some(pb::Resources {
                cpu: "500m".into(),
                memory: "512Mi".into(),
                ephemeral_storage: "1Gi".into(),
            });
            r.ttl_seconds = 600;
            r.idle_timeout_seconds = 60;
            r.network = Some(pb::Network {
                egress: pb::network::Egress::AllowList as i32,
                allow: vec![pb::EgressRule {
                    cidr: "10.0.0.0/8".into(),
                    ports: vec![pb::Port {
                        port: 443,
                        protocol: pb::port::Protocol::Udp as i32,
                    }],
                }],
                dns: true,
            });
            r.env.insert("A".into(), "1".into());
            r.labels.insert("team".into(), "ml".into());
            r.labels.insert("example.com/x".into(), "".into());
            r.runtime_class_name = "gvisor".into();
            r.working_dir = "/work".into();
        })
        .unwrap();
        assert_eq!(full.name.as_deref(), Some("my-box"));
        assert_eq!(
            full.spec.resources.cpu.as_ref().map(|q| q.0.as_str()),
            Some("500m")
        );
        assert_eq!(full.spec.lifetime.ttl_seconds, Some(600));
        assert_eq!(
            full.spec.network.allow[0].ports[0].protocol,
            airlock_crds::Protocol::UDP
        );
        assert_eq!(full.spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(full.labels.len(), 2);

        let unimpl =
            create(|r| r.source = Some(pb::create_sandbox_request::Source::Template("t".into())))
                .unwrap_err();
        assert_eq!(unimpl.code(), Code::Unimplemented);
        assert!(unimpl.message().starts_with("template:"));

        assert_eq!(msg(create(|r| r.source = None)), "image: must not be empty");
        assert_eq!(
            msg(create(
                |r| r.source = Some(pb::create_sandbox_request::Source::Image(" ".into()))
            )),
            "image: must not be empty"
        );
        assert!(
            msg(create(|r| r.source = Some(
                pb::create_sandbox_request::Source::Image("a b".into())
            )))
            .starts_with("image:")
        );
        assert_eq!(
            msg(create(|r| {
                r.name = "a".into();
                r.generate_name = "b-".into();
            })),
            "name: set at most one of name and generate_name"
        );
        assert!(msg(create(|r| r.name = "A".into())).starts_with("name: must be a DNS label"));
        assert!(msg(create(|r| r.generate_name = "-x".into())).starts_with("generate_name:"));
        assert!(msg(create(|r| r.generate_name = "x".repeat(59))).starts_with("generate_name:"));
        assert!(msg(create(|r| r.namespace = "a_b".into())).starts_with("namespace:"));
        assert!(
            msg(create(|r| r.resources = Some(pb::Resources {
                cpu: "lots".into(),
                ..Default::default()
            })))
            .starts_with("resources.cpu: must be a Kubernetes quantity")
        );
        assert!(
            msg(create(|r| r.resources = Some(pb::Resources {
                memory: "12XB".into(),
                ..Default::default()
            })))
            .starts_with("resources.memory:")
        );
        assert!(
            msg(create(|r| r.resources = Some(pb::Resources {
                ephemeral_storage: "-1Gi".into(),
                ..Default::default()
            })))
            .starts_with("resources.ephemeral_storage:")
        );
        assert_eq!(
            msg(create(|r| r.resources = Some(pb::Resources {
                cpu: "0".into(),
                ..Default::default()
            }))),
            "resources.cpu: must be positive"
        );
        assert_eq!(
            msg(create(|r| r.ttl_seconds = -1)),
            "ttl_seconds: must not be negative"
        );
        assert!(
            msg(create(|r| r.ttl_seconds = 604801)).starts_with("ttl_seconds: must be at most")
        );
        assert_eq!(
            msg(create(|r| r.idle_timeout_seconds = -5)),
            "idle_timeout_seconds: must not be negative"
        );
        assert!(
            msg(create(|r| {
                r.env.insert("9x".into(), "".into());
            }))
            .starts_with("env: invalid variable name")
        );
        assert!(
            msg(create(|r| {
                r.labels.insert("bad key".into(), "v".into());
            }))
            .starts_with("labels: invalid label key")
        );
        assert!(
            msg(create(|r| {
                r.labels.insert("airlock.dev/sandbox".into(), "v".into());
            }))
            .starts_with("labels: label key")
        );
        assert!(
            msg(create(|r| {
                r.labels.insert("k".into(), "-v".into());
            }))
            .starts_with("labels: invalid value")
        );
        assert!(
            msg(create(|r| r.runtime_class_name = "Kata!".into()))
                .starts_with("runtime_class_name:")
        );
        assert_eq!(
            msg(create(|r| r.working_dir = "work".into())),
            "working_dir: must be absolute"
        );
        let net = |n: pb::Network| create(move |r| r.network = Some(n));
        assert_eq!(
            msg(net(pb::Network {
                egress: 9,
                ..Default::default()
            })),
            "network.egress: unknown value 9"
        );
        assert_eq!(
            msg(net(pb::Network {
                egress: pb::network::Egress::Internet as i32,
                allow: vec![pb::EgressRule {
                    cidr: "10.0.0.0/8".into(),
                    ports: vec![]
                }],
                dns: false
            })),
            "network.allow: may only be set when network.egress is EGRESS_ALLOW_LIST"
        );
        assert_eq!(
            msg(net(pb::Network {
                egress: pb::network::Egress::AllowList as i32,
                ..Default::default()
            })),
            "network.allow: must list at least one destination when network.egress is EGRESS_ALLOW_LIST"
        );
        let allow = |cidr: &str, port: i32, protocol: i32| pb::Network {
            egress: pb::network::Egress::AllowList as i32,
            allow: vec![pb::EgressRule {
                cidr: cidr.into(),
                ports: vec![pb::Port { port, protocol }],
            }],
            dns: false,
        };
        assert_eq!(
            msg(net(allow("10.0.0.0", 80, 0))),
            "network.allow[0].cidr: must be a CIDR such as 10.1.2.0/24"
        );
        assert_eq!(
            msg(net(allow("10.0.0.0/33", 80, 0))),
            "network.allow[0].cidr: must be a CIDR such as 10.1.2.0/24"
        );
        assert_eq!(
            msg(net(allow("10.0.0.0/8", 0, 0))),
            "network.allow[0].ports[0].port: must be between 1 and 65535"
        );
        assert_eq!(
            msg(net(allow("2001:db8::/32", 80, 7))),
            "network.allow[0].ports[0].protocol: unknown value 7"
        );
    }
}

#[cfg(test)]
mod env_limits {
    use super::*;

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
}
