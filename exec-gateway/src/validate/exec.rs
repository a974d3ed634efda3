//! Processes requests: Exec, RunCode, and the interactive exec's resize and signal messages.

use super::*;

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
            fd3: None,
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
    let mut spec = common(
        r.sandbox.as_ref(),
        &r.env,
        &r.cwd,
        r.timeout.as_ref(),
        r.stdin.as_ref(),
        argv,
        default_ns,
    )?;
    spec.options.fd3 = code_from_fd3(language).map(|argv| (argv, r.code.as_bytes().to_vec()));
    Ok(spec)
}

/// The command line that runs a program read from fd 3 (the direct path), where the program
/// behaves exactly as under `-c`: Python compiles fd 3's text as `<string>` in `__main__`, so
/// `sys.argv[0]` stays `-c` and `sys.path[0]` the working directory. Shell and Node keep `-c`/`-e`
/// (a script path would change `$0`; Node resolves `/dev/fd/3` to the memfd's name).
pub fn code_from_fd3(language: pb::Language) -> Option<Vec<String>> {
    match language {
        pb::Language::Python => Some(vec!["python3".into(), "-c".into(), PYTHON_FD3.into()]),
        pb::Language::Shell | pb::Language::Node | pb::Language::Unspecified => None,
    }
}

/// Python's `-c` program that runs the program text on fd 3 (and closes it).
pub const PYTHON_FD3: &str =
    "exec(compile(open(3, encoding='utf-8', closefd=True).read(), '<string>', 'exec'))";

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
