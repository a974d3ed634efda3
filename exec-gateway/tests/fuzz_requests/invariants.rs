//! What must hold of every refusal and every accepted request (the checks each message shares).

use super::*;

pub(crate) fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

/// A refusal: INVALID_ARGUMENT naming a field of the request (one of `roots`, possibly with a
/// sub-path), or UNIMPLEMENTED for templates.
pub(crate) fn check_refusal(s: &Status, roots: &[&str]) -> Result<(), String> {
    let msg = s.message();
    if s.code() == Code::Unimplemented {
        return ensure(msg.starts_with("template: "), || {
            format!("UNIMPLEMENTED without template: {msg:?}")
        });
    }
    ensure(s.code() == Code::InvalidArgument, || {
        format!("code {:?} ({msg:?})", s.code())
    })?;
    let Some((field, rest)) = msg.split_once(": ") else {
        return Err(format!("message {msg:?} does not start with `field: `"));
    };
    ensure(!rest.trim().is_empty(), || {
        format!("message {msg:?} says nothing after the field")
    })?;
    ensure(
        field
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.[]".contains(&b)),
        || format!("field {field:?} of {msg:?} is not a field path"),
    )?;
    let root = field.split(['.', '[']).next().unwrap();
    ensure(roots.contains(&root), || {
        format!("field {field:?} of {msg:?} is not one of {roots:?}")
    })?;
    Ok(())
}

pub(crate) fn check_path(p: &str, given: &str) -> Result<(), String> {
    ensure(p == given, || "path was rewritten".into())?;
    ensure(p.starts_with('/'), || {
        format!("accepted relative path {p:?}")
    })?;
    ensure(!p.contains('\0'), || "accepted NUL in path".into())?;
    ensure(p.len() <= validate::MAX_PATH, || {
        "accepted an over-long path".into()
    })
}

pub(crate) fn check_sandbox(ns: &str, name: &str, r: &pb::SandboxRef, default_ns: &str) -> Result<(), String> {
    ensure(validate::is_dns_label(ns), || format!("namespace {ns:?}"))?;
    ensure(validate::is_dns_label(name), || format!("name {name:?}"))?;
    ensure(name == r.name, || "name rewritten".into())?;
    ensure(
        ns == if r.namespace.is_empty() {
            default_ns
        } else {
            &r.namespace
        },
        || "namespace".into(),
    )
}

/// Parses an `airlock-agent exec` command line back into options (what the agent's argument
/// parser sees), to prove the flags cannot be confused with the command.
pub(crate) fn parse_exec_command(c: &[String]) -> Result<ExecOptions, String> {
    ensure(
        c.len() >= 3 && c[0] == "/.airlock/airlock-agent" && c[1] == "exec",
        || format!("prefix {c:?}"),
    )?;
    let mut o = ExecOptions::default();
    let mut i = 2;
    loop {
        let flag = c.get(i).ok_or("no `--`")?;
        match flag.as_str() {
            "--" => {
                o.argv = c[i + 1..].to_vec();
                return Ok(o);
            }
            "--tty" => {
                o.tty = true;
                i += 1;
                continue;
            }
            "--size" => {
                let v = c.get(i + 1).ok_or("--size without value")?;
                let (cols, rows) = v.split_once('x').ok_or("--size without x")?;
                o.size = Some((
                    cols.parse().map_err(|_| "cols")?,
                    rows.parse().map_err(|_| "rows")?,
                ));
                i += 2;
                continue;
            }
            _ => {}
        }
        let v = c.get(i + 1).ok_or("flag without value")?;
        match flag.as_str() {
            "--cwd" => o.cwd = Some(v.clone()),
            "--env" => {
                let (k, val) = v.split_once('=').ok_or("--env without =")?;
                o.env.push((k.into(), val.into()));
            }
            "--timeout-ms" => o.timeout_ms = Some(v.parse().map_err(|_| "timeout")?),
            other => return Err(format!("unknown flag {other:?}")),
        }
        i += 2;
    }
}

pub(crate) fn check_exec_spec(
    s: &ExecSpec,
    r_sandbox: &pb::SandboxRef,
    default_ns: &str,
) -> Result<(), String> {
    check_sandbox(&s.namespace, &s.name, r_sandbox, default_ns)?;
    let o = &s.options;
    ensure(!o.argv.is_empty() && !o.argv[0].is_empty(), || {
        "empty argv or program".into()
    })?;
    ensure(o.argv.len() <= validate::MAX_ARGS, || {
        "too many args".into()
    })?;
    ensure(o.argv.iter().all(|a| !a.contains('\0')), || {
        "NUL in argv".into()
    })?;
    ensure(!o.tty && o.timeout_ms.is_none(), || {
        "tty/timeout_ms set by validation".into()
    })?;
    if let Some(cwd) = &o.cwd {
        check_path(cwd, cwd)?;
    }
    ensure(o.env.len() <= validate::MAX_ENV, || "too many env".into())?;
    ensure(o.env.windows(2).all(|w| w[0].0 < w[1].0), || {
        "env not sorted/unique".into()
    })?;
    for (k, v) in &o.env {
        ensure(validate::is_env_name(k) && !k.contains('='), || {
            format!("env name {k:?}")
        })?;
        ensure(!v.contains('\0'), || "NUL in env value".into())?;
    }
    let total: usize = o.argv.iter().map(|a| a.len() + 1).sum::<usize>()
        + o.env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    ensure(total <= validate::MAX_COMMAND_BYTES, || {
        "command line too long".into()
    })?;
    if let Some(t) = s.timeout {
        ensure(!t.is_zero() && t <= validate::MAX_TIMEOUT, || {
            format!("timeout {t:?}")
        })?;
    }
    // The direct path's fd 3 form (RunCode) runs an interpreter on the same program text.
    if let Some((argv, code)) = &o.fd3 {
        ensure(argv == &["python3", "-c", validate::PYTHON_FD3] && o.argv[0] == "python3", || {
            format!("fd 3 command {argv:?} for {:?}", o.argv)
        })?;
        ensure(o.argv.last().is_some_and(|c| c.as_bytes() == code.as_slice()), || {
            "fd 3 holds other text than the command line's program".into()
        })?;
    }
    // The command line the gateway runs (over pods/exec, where fd 3 has no part) parses back to
    // the same options.
    let mut with_backstop = o.clone();
    with_backstop.timeout_ms = s.timeout.map(|t| t.as_millis() as u64 + 5000);
    with_backstop.fd3 = None;
    let line = agent::exec_command("/.airlock/airlock-agent", &with_backstop);
    let back = parse_exec_command(&line)?;
    ensure(back == with_backstop, || {
        format!("exec command line does not round-trip: {line:?}")
    })?;
    Ok(())
}

pub(crate) fn check_file_command(cmd: FileCommand) -> Result<(), String> {
    let c = cmd.command("/.airlock/airlock-agent");
    ensure(c[1] == cmd.name() && c[2] == cmd.path(), || {
        "file command shape".into()
    })?;
    ensure(!c[2].starts_with('-'), || {
        "path could be taken for a flag".into()
    })
}

/// Rough mirror of the CRD schema (crds/src/lib.rs) for what the gateway writes: a spec the
/// gateway accepts but the API server would refuse is not a safety problem (the API server's 422
/// becomes INVALID_ARGUMENT), but its message then does not come from the gateway. Counted and
/// reported, not failed.
pub(crate) fn crd_mismatches(spec: &airlock_crds::SandboxSpec) -> Vec<&'static str> {
    let mut out = Vec::new();
    if spec.env.iter().any(|e| e.value.len() > 32768) {
        out.push("env value longer than the CRD's 32768");
    }
    if spec.env.iter().any(|e| e.name.len() > 256) {
        out.push("env name longer than 256");
    }
    if spec.image.is_empty() || spec.image.len() > 512 {
        out.push("image length");
    }
    if spec.network.allow.iter().any(|a| a.cidr.len() > 64) {
        out.push("cidr longer than 64");
    }
    out
}

pub(crate) fn check_create(
    c: &CreateSpec,
    r: &pb::CreateSandboxRequest,
    default_ns: &str,
    stats: &mut Stats,
) -> Result<(), String> {
    ensure(validate::is_dns_label(&c.namespace), || "namespace".into())?;
    ensure(
        c.namespace
            == if r.namespace.is_empty() {
                default_ns
            } else {
                &r.namespace
            },
        || "namespace".into(),
    )?;
    match (&c.name, &c.generate_name) {
        (Some(n), None) => ensure(validate::is_dns_label(n), || format!("name {n:?}"))?,
        (None, Some(g)) => ensure(
            !g.is_empty()
                && g.len() <= 58
                && validate::is_dns_label(g.trim_end_matches('-'))
                && validate::is_dns_label(&format!("{g}abcde")),
            || format!("generate_name {g:?}: generated names would not be DNS labels"),
        )?,
        other => return Err(format!("name/generate_name {other:?}")),
    }
    let s = &c.spec;
    ensure(
        !s.image.trim().is_empty()
            && s.image.len() <= 512
            && !s
                .image
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control()),
        || format!("image {:?}", s.image),
    )?;
    ensure(
        matches!(&r.source, Some(pb::create_sandbox_request::Source::Image(i)) if *i == s.image),
        || "image".into(),
    )?;
    for q in [
        &s.resources.cpu,
        &s.resources.memory,
        &s.resources.ephemeral_storage,
    ]
    .into_iter()
    .flatten()
    {
        ensure(validate::is_quantity(&q.0) && q.0.len() <= 64, || {
            format!("quantity {:?}", q.0)
        })?;
        ensure(q.0.bytes().any(|b| (b'1'..=b'9').contains(&b)), || {
            format!("zero quantity {:?}", q.0)
        })?;
    }
    for t in [s.lifetime.ttl_seconds, s.lifetime.idle_timeout_seconds]
        .into_iter()
        .flatten()
    {
        ensure((1..=airlock_crds::MAX_TTL_SECONDS).contains(&t), || {
            format!("seconds {t}")
        })?;
    }
    let n = &s.network;
    ensure(
        (n.egress == airlock_crds::EgressMode::AllowList) == !n.allow.is_empty(),
        || "allow iff AllowList".into(),
    )?;
    ensure(n.allow.len() <= 64, || "allow count".into())?;
    for a in &n.allow {
        ensure(validate::is_cidr(&a.cidr), || format!("cidr {:?}", a.cidr))?;
        ensure(
            a.ports.len() <= 32 && a.ports.iter().all(|p| (1..=65535).contains(&p.port)),
            || "ports".into(),
        )?;
    }
    ensure(s.env.len() <= 128, || "env count".into())?;
    ensure(s.env.windows(2).all(|w| w[0].name < w[1].name), || {
        "env not sorted".into()
    })?;
    for e in &s.env {
        ensure(
            validate::is_env_name(&e.name) && !e.value.contains('\0'),
            || format!("env {:?}", e.name),
        )?;
    }
    for (k, v) in &c.labels {
        ensure(
            validate::is_label_key(k) && validate::is_label_value(v),
            || format!("label {k:?}={v:?}"),
        )?;
        ensure(
            !k.starts_with("airlock.dev/") && !k.contains(".airlock.dev/"),
            || format!("reserved label {k:?}"),
        )?;
    }
    if let Some(rc) = &s.runtime_class_name {
        ensure(
            rc.len() <= 253 && rc.split('.').all(validate::is_dns_label),
            || format!("runtime class {rc:?}"),
        )?;
    }
    if let Some(wd) = &s.working_dir {
        check_path(wd, &r.working_dir)?;
    }
    ensure(
        s.command.is_empty() && s.args.is_empty() && s.image_pull_policy.is_none(),
        || "fields set from nowhere".into(),
    )?;
    // What the gateway writes, the operator reads back unchanged.
    let json = serde_json::to_string(s).map_err(|e| format!("spec does not serialize: {e}"))?;
    let back: airlock_crds::SandboxSpec =
        serde_json::from_str(&json).map_err(|e| format!("spec does not deserialize: {e}"))?;
    ensure(&back == s, || {
        "spec does not round-trip through JSON".into()
    })?;
    for m in crd_mismatches(s) {
        *stats.crd_mismatch.entry(m).or_default() += 1;
    }
    Ok(())
}
