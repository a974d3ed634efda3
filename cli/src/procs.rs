//! Background processes: `start`, `ps`, `logs`, `kill`.

use std::io::Write;
use std::process::ExitCode;

use airlock_api::client::{AirlockClient, sandbox_ref};
use airlock_api::proto::v1 as pb;

use crate::exec::exec_request;
use crate::{ExecOpts, status_err};

/// A process named on the command line: a number is a pid, anything else a tag.
pub(crate) fn selector(s: &str) -> Option<pb::ProcessSelector> {
    use pb::process_selector::Selector;
    let selector = match s.parse::<i32>() {
        Ok(pid) => Selector::Pid(pid),
        Err(_) => Selector::Tag(s.to_string()),
    };
    Some(pb::ProcessSelector { selector: Some(selector) })
}

/// `airlock start`: starts a background process and prints its pid.
pub(crate) async fn start(client: &AirlockClient, ns: &str, sandbox: &str, tag: &str, exec: &ExecOpts) -> anyhow::Result<ExitCode> {
    if exec.interactive {
        anyhow::bail!("start: --interactive does not apply to a background process");
    }
    let r = exec_request(ns, sandbox, exec);
    let req = pb::StartProcessRequest {
        sandbox: r.sandbox,
        command: r.command.map(|c| match c {
            pb::exec_request::Command::Argv(a) => pb::start_process_request::Command::Argv(a),
            pb::exec_request::Command::Shell(s) => pb::start_process_request::Command::Shell(s),
        }),
        env: r.env,
        cwd: r.cwd,
        timeout: r.timeout,
        close_stdin: true,
        tag: tag.to_string(),
        ..Default::default()
    };
    let p = client.processes().start_process(req).await.map_err(status_err)?.into_inner();
    println!("{}", p.pid);
    Ok(ExitCode::SUCCESS)
}

/// `airlock ps`: the sandbox's background processes.
pub(crate) async fn ps(client: &AirlockClient, ns: &str, sandbox: &str) -> anyhow::Result<ExitCode> {
    let req = pb::ListProcessesRequest { sandbox: sandbox_ref(ns, sandbox) };
    let list = client.processes().list_processes(req).await.map_err(status_err)?.into_inner();
    println!("{:>7}  {:<16}  {:<12}  COMMAND", "PID", "TAG", "STATE");
    for p in &list.processes {
        let state = match (&p.exited, p.running) {
            (_, true) => "running".to_string(),
            (Some(e), false) if e.signal > 0 => format!("killed:{}", e.signal),
            (Some(e), false) => format!("exited:{}", e.exit_code),
            (None, false) => "ended".to_string(),
        };
        let tag = if p.tag.is_empty() { "-" } else { p.tag.as_str() };
        println!("{:>7}  {:<16}  {:<12}  {}", p.pid, tag, state, p.argv.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `airlock logs`: a process's output from its start (what the buffer still holds); with
/// `follow`, on until it exits, then exits with its code.
pub(crate) async fn logs(client: &AirlockClient, ns: &str, sandbox: &str, process: &str, follow: bool) -> anyhow::Result<ExitCode> {
    use pb::process_event::Event;
    let list = pb::ListProcessesRequest { sandbox: sandbox_ref(ns, sandbox) };
    // Start where the buffer starts, so a process whose first bytes were dropped still shows.
    let procs = client.processes().list_processes(list).await.map_err(status_err)?.into_inner();
    let sel = selector(process);
    let found = procs.processes.iter().find(|p| match sel.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(pb::process_selector::Selector::Pid(pid)) => p.pid == *pid,
        Some(pb::process_selector::Selector::Tag(t)) => &p.tag == t,
        None => false,
    });
    let (out_from, err_from) = found.map(|p| (p.stdout_start, p.stderr_start)).unwrap_or((0, 0));
    let req = pb::ConnectProcessRequest {
        sandbox: sandbox_ref(ns, sandbox),
        process: sel,
        stdout_offset: out_from,
        stderr_offset: err_from,
        follow,
    };
    let mut events = client.processes().connect_process(req).await.map_err(status_err)?.into_inner();
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    while let Some(e) = events.message().await.map_err(status_err)? {
        match e.event {
            Some(Event::Stdout(c)) => {
                stdout.write_all(&c.data)?;
                stdout.flush()?;
            }
            Some(Event::Stderr(c)) => {
                stderr.write_all(&c.data)?;
                stderr.flush()?;
            }
            Some(Event::Exited(x)) if follow => return Ok(ExitCode::from(x.exit_code.clamp(0, 255) as u8)),
            Some(Event::Exited(_)) | Some(Event::CaughtUp(_)) | None => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `airlock kill`: kills the process tree, or sends one signal to its process group.
pub(crate) async fn kill(client: &AirlockClient, ns: &str, sandbox: &str, process: &str, signal: Option<i32>) -> anyhow::Result<ExitCode> {
    let processes = client.processes();
    match signal {
        None => {
            let req = pb::KillProcessRequest { sandbox: sandbox_ref(ns, sandbox), process: selector(process) };
            processes.clone().kill_process(req).await.map_err(status_err)?;
        }
        Some(n) => {
            let req = pb::SignalProcessRequest {
                sandbox: sandbox_ref(ns, sandbox),
                process: selector(process),
                action: Some(pb::signal_process_request::Action::Signal(pb::Signal { number: n })),
            };
            processes.clone().signal_process(req).await.map_err(status_err)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
