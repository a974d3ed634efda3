//! Processes: exec (collected or streamed), interactive exec, run code.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{AirlockClient, ExecOutput, sandbox_ref};
use crate::proto::v1 as pb;

impl AirlockClient {
    /// An ExecRequest running `argv` directly.
    pub fn argv<I, S>(namespace: &str, name: &str, argv: I) -> pb::ExecRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        pb::ExecRequest {
            sandbox: sandbox_ref(namespace, name),
            command: Some(pb::exec_request::Command::Argv(pb::Argv {
                args: argv.into_iter().map(Into::into).collect(),
            })),
            ..Default::default()
        }
    }

    /// An ExecRequest running a shell line.
    pub fn shell(namespace: &str, name: &str, line: &str) -> pb::ExecRequest {
        pb::ExecRequest {
            sandbox: sandbox_ref(namespace, name),
            command: Some(pb::exec_request::Command::Shell(line.into())),
            ..Default::default()
        }
    }

    /// Starts a command; the stream yields its events.
    pub async fn exec(&self, req: pb::ExecRequest) -> Result<Streaming<pb::ExecEvent>, Status> {
        self.processes().exec(req).await.map(|r| r.into_inner())
    }

    /// Runs a command to completion, collecting its output.
    pub async fn exec_collect(&self, req: pb::ExecRequest) -> Result<ExecOutput, Status> {
        collect(self.exec(req).await?).await
    }

    /// Runs code to completion, collecting its output.
    pub async fn run_code(&self, req: pb::RunCodeRequest) -> Result<ExecOutput, Status> {
        collect(self.processes().run_code(req).await?.into_inner()).await
    }

    /// Starts an interactive command: send [`pb::ExecInput`] messages (not `start`, which is sent
    /// here) on the returned sender; drop it to half-close (closes the command's stdin).
    pub async fn exec_interactive(
        &self,
        start: pb::ExecStart,
    ) -> Result<(mpsc::Sender<pb::ExecInput>, Streaming<pb::ExecEvent>), Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(pb::ExecInput {
            input: Some(pb::exec_input::Input::Start(start)),
        })
        .await
        .map_err(|_| Status::internal("input channel closed"))?;
        let events = self
            .processes()
            .exec_interactive(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok((tx, events))
    }
}

/// Collects an event stream into an [`ExecOutput`]; fails when the stream ends without `exited`.
pub async fn collect(mut s: Streaming<pb::ExecEvent>) -> Result<ExecOutput, Status> {
    use pb::exec_event::Event;
    let mut out = ExecOutput::default();
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(Event::Stdout(b)) => out.stdout.extend_from_slice(&b),
            Some(Event::Stderr(b)) => out.stderr.extend_from_slice(&b),
            Some(Event::Exited(e)) => {
                out.exit_code = e.exit_code;
                out.signal = e.signal;
                out.timed_out = e.timed_out;
                // Read on to the end of the call (its status): dropping the stream right after
                // the exit event would cancel a call that succeeded, as the server sees it.
                while s.message().await?.is_some() {}
                return Ok(out);
            }
            Some(Event::Started(_)) | None => {}
        }
    }
    Err(Status::unknown(
        "the command's event stream ended without an exit event",
    ))
}
