//! `exec` and `run`: the request from the flags, and the streamed command.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use airlock_api::client::{AirlockClient, sandbox_ref};
use airlock_api::proto::v1 as pb;
use airlock_api::{bytes, prost_types};

use anyhow::bail;
use tokio::io::AsyncReadExt;

use crate::{ExecOpts, status_err};

pub(crate) fn exec_request(ns: &str, sandbox: &str, o: &ExecOpts) -> pb::ExecRequest {
    let command = if o.command.len() == 1 && o.command[0].contains(' ') {
        pb::exec_request::Command::Shell(o.command[0].clone())
    } else {
        pb::exec_request::Command::Argv(pb::Argv {
            args: o.command.clone(),
        })
    };
    let timeout = (o.timeout > 0.0).then(|| {
        let d = Duration::from_secs_f64(o.timeout.min(1e9));
        prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }
    });
    pb::ExecRequest {
        sandbox: sandbox_ref(ns, sandbox),
        command: Some(command),
        env: o.env.iter().cloned().collect(),
        cwd: o.cwd.clone(),
        timeout,
        stdin: None,
    }
}

/// Runs a command, streaming its output to this terminal; returns its exit code.
pub(crate) async fn exec_command(
    client: &AirlockClient,
    ns: &str,
    sandbox: &str,
    o: &ExecOpts,
) -> anyhow::Result<ExitCode> {
    use pb::exec_event::Event;
    let req = exec_request(ns, sandbox, o);
    let mut events = if o.interactive {
        let (tx, events) = client
            .exec_interactive(pb::ExecStart {
                request: Some(req),
                tty: false,
                size: None,
            })
            .await
            .map_err(status_err)?;
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let m = pb::ExecInput {
                            input: Some(pb::exec_input::Input::Stdin(
                                bytes::Bytes::copy_from_slice(&buf[..n]),
                            )),
                        };
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx
                .send(pb::ExecInput {
                    input: Some(pb::exec_input::Input::CloseStdin(pb::CloseStdin {})),
                })
                .await;
            // Keep the request stream open: the gateway reads a half-close as "close stdin"
            // too, so nothing more is needed; just hold the sender until the call ends.
            tx.closed().await;
        });
        events
    } else {
        client.exec(req).await.map_err(status_err)?
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        let msg = tokio::select! {
            m = events.message() => m.map_err(status_err)?,
            _ = tokio::signal::ctrl_c() => {
                // Dropping the stream cancels the call: the gateway kills the command.
                eprintln!("airlock: interrupted");
                return Ok(ExitCode::from(130));
            }
        };
        let Some(ev) = msg else {
            bail!("the gateway ended the stream without an exit status")
        };
        match ev.event {
            Some(Event::Stdout(b)) => {
                stdout.write_all(&b)?;
                stdout.flush()?;
            }
            Some(Event::Stderr(b)) => {
                stderr.write_all(&b)?;
                stderr.flush()?;
            }
            Some(Event::Exited(e)) => {
                if e.timed_out {
                    eprintln!("airlock: command timed out");
                }
                return Ok(ExitCode::from(e.exit_code.clamp(0, 255) as u8));
            }
            Some(Event::Started(_)) | None => {}
        }
    }
}
