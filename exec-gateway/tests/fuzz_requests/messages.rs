//! Per-message checks: the validation each service runs first, then the invariants.

use super::*;

pub(crate) const DEFAULT_NS: &str = "default";

#[derive(Default)]
pub struct Stats {
    pub(crate) cases: u64,
    pub(crate) undecodable: u64,
    pub(crate) accepted: BTreeMap<&'static str, u64>,
    pub(crate) refused: BTreeMap<&'static str, u64>,
    pub(crate) crd_mismatch: BTreeMap<&'static str, u64>,
    pub(crate) frames: u64,
}

pub(crate) fn outcome<T>(stats: &mut Stats, what: &'static str, r: &Result<T, Status>) {
    let m = if r.is_ok() {
        &mut stats.accepted
    } else {
        &mut stats.refused
    };
    *m.entry(what).or_default() += 1;
}

pub(crate) fn check_exec(r: &pb::ExecRequest, stats: &mut Stats) -> Result<(), String> {
    let res = validate::exec_request(r, DEFAULT_NS);
    outcome(stats, "Exec", &res);
    match res {
        Err(s) => check_refusal(
            &s,
            &[
                "command", "argv", "shell", "sandbox", "env", "cwd", "timeout",
            ],
        ),
        Ok(spec) => {
            check_exec_spec(&spec, r.sandbox.as_ref().unwrap(), DEFAULT_NS)?;
            ensure(spec.stdin == r.stdin, || "stdin".into())?;
            match &r.command {
                Some(pb::exec_request::Command::Argv(a)) => {
                    ensure(spec.options.argv == a.args, || "argv rewritten".into())
                }
                Some(pb::exec_request::Command::Shell(sh)) => ensure(
                    spec.options.argv == ["/bin/sh", "-c", sh.as_str()] && !sh.trim().is_empty(),
                    || "shell argv".into(),
                ),
                None => Err("accepted without a command".into()),
            }
        }
    }
}

pub(crate) fn check_run_code(r: &pb::RunCodeRequest, stats: &mut Stats) -> Result<(), String> {
    let res = validate::run_code_request(r, DEFAULT_NS);
    outcome(stats, "RunCode", &res);
    match res {
        Err(s) => check_refusal(
            &s,
            &[
                "language", "code", "sandbox", "env", "cwd", "timeout", "argv",
            ],
        ),
        Ok(spec) => {
            check_exec_spec(&spec, r.sandbox.as_ref().unwrap(), DEFAULT_NS)?;
            let a = &spec.options.argv;
            ensure(
                a.len() == 3
                    && ["python3", "node", "/bin/sh"].contains(&a[0].as_str())
                    && a[2] == r.code,
                || format!("run-code argv {:?}", &a[..a.len().min(2)]),
            )?;
            ensure(
                !r.code.trim().is_empty() && r.code.len() <= validate::MAX_CODE,
                || "code".into(),
            )
        }
    }
}

pub(crate) fn check_create_req(r: &pb::CreateSandboxRequest, stats: &mut Stats) -> Result<(), String> {
    match airlock_exec_gateway::run_as::security_context(r) {
        Err(s) => check_refusal(&s, &["run_as_user", "run_as_group"])?,
        Ok(Some(sc)) => ensure(
            (1..=i64::from(i32::MAX)).contains(&sc.run_as_user)
                && (0..=i64::from(i32::MAX)).contains(&sc.group()),
            || format!("run_as accepted {sc:?}"),
        )?,
        Ok(None) => ensure(r.run_as_user.is_none() && r.run_as_group.is_none(), || {
            "run_as ignored".into()
        })?,
    }
    let res = validate::create_request(r, DEFAULT_NS);
    outcome(stats, "CreateSandbox", &res);
    match res {
        Err(s) => check_refusal(
            &s,
            &[
                "namespace",
                "name",
                "generate_name",
                "image",
                "template",
                "resources",
                "ttl_seconds",
                "idle_timeout_seconds",
                "network",
                "env",
                "labels",
                "runtime_class_name",
                "working_dir",
                // Set beside a template (which sets them).
                "read_only_root_filesystem",
                "agent_in_image",
                "run_as_user",
                "run_as_group",
                "files",
            ],
        ),
        Ok(c) => check_create(&c, r, DEFAULT_NS, stats),
    }
}

/// `sandbox_ref` + `path` (+ `mode`), as Download, ListDir, Stat, Remove, MakeDir and Upload run them.
pub(crate) fn check_file_request(
    what: &'static str,
    prefix: &str,
    sandbox: Option<&pb::SandboxRef>,
    p: &str,
    mode: Option<u32>,
    make: impl FnOnce(String, Option<u32>) -> FileCommand,
    stats: &mut Stats,
) -> Result<(), String> {
    let sandbox_field = format!("{prefix}sandbox");
    let path_field = format!("{prefix}path");
    let mode_field = format!("{prefix}mode");
    let res = (|| {
        let r = validate::sandbox_ref(&sandbox_field, sandbox, DEFAULT_NS)?;
        let p = validate::path(&path_field, p)?;
        let m = match mode {
            Some(m) => validate::mode(&mode_field, m)?,
            None => None,
        };
        Ok((r, p, m))
    })();
    outcome(stats, what, &res);
    match res {
        Err(s) => check_refusal(
            &s,
            &[prefix.trim_end_matches('.'), "sandbox", "path", "mode"]
                .map(|x| if x.is_empty() { "sandbox" } else { x }),
        ),
        Ok(((ns, name), checked, m)) => {
            check_sandbox(&ns, &name, sandbox.unwrap(), DEFAULT_NS)?;
            check_path(&checked, p)?;
            if let Some(m) = m {
                ensure(m != 0 && m <= 0o7777, || format!("mode {m:o}"))?;
            }
            ensure(mode.is_none_or(|given| (given == 0) == m.is_none()), || {
                "mode 0 is unset".into()
            })?;
            check_file_command(make(checked, m))
        }
    }
}

pub(crate) fn check_exec_input(r: &pb::ExecInput, stats: &mut Stats) -> Result<(), String> {
    use pb::exec_input::Input;
    match &r.input {
        None | Some(Input::Stdin(_)) | Some(Input::CloseStdin(_)) => Ok(()),
        Some(Input::Start(start)) => {
            let Some(req) = &start.request else {
                return Ok(());
            };
            check_exec(req, stats)?;
            if let Some(size) = &start.size {
                let res = validate::resize("start.size", size);
                outcome(stats, "ExecInput.start.size", &res);
                match res {
                    Err(s) => check_refusal(&s, &["start"])?,
                    Ok((c, rows)) => ensure(
                        c > 0
                            && rows > 0
                            && u32::from(c) == size.cols
                            && u32::from(rows) == size.rows,
                        || "size".into(),
                    )?,
                }
            }
            Ok(())
        }
        Some(Input::Resize(size)) => {
            let res = validate::resize("resize", size);
            outcome(stats, "ExecInput.resize", &res);
            match res {
                Err(s) => check_refusal(&s, &["resize"]),
                Ok((c, rows)) => {
                    ensure(
                        c > 0
                            && rows > 0
                            && u32::from(c) == size.cols
                            && u32::from(rows) == size.rows,
                        || "resize".into(),
                    )?;
                    // The frame the gateway sends parses to the same size in the agent.
                    let f = agent::resize_frame(c, rows);
                    let ev = parse_all(&f, 5);
                    ensure(ev == [Ev::Resize(c, rows)], || {
                        format!("resize frame parsed as {ev:?}")
                    })
                }
            }
        }
        Some(Input::Signal(sig)) => {
            let res = validate::signal("signal.number", sig);
            outcome(stats, "ExecInput.signal", &res);
            match res {
                Err(s) => check_refusal(&s, &["signal"]),
                Ok(n) => {
                    ensure((1..=64).contains(&n) && n as i32 == sig.number, || {
                        "signal".into()
                    })?;
                    let ev = parse_all(&agent::signal_frame(n), 3);
                    ensure(ev == [Ev::Signal(n as i32)], || {
                        format!("signal frame parsed as {ev:?}")
                    })
                }
            }
        }
    }
}

pub(crate) fn check_sandbox_only(
    what: &'static str,
    sandbox: Option<&pb::SandboxRef>,
    stats: &mut Stats,
) -> Result<(), String> {
    let res = validate::sandbox_ref("sandbox", sandbox, DEFAULT_NS);
    outcome(stats, what, &res);
    match res {
        Err(s) => check_refusal(&s, &["sandbox"]),
        Ok((ns, name)) => check_sandbox(&ns, &name, sandbox.unwrap(), DEFAULT_NS),
    }
}
