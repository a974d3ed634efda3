//! The Processes service: commands in a sandbox, streamed. (Just over 600 lines: the background
//! process RPCs delegate to `background.rs`; what stays is the streamed command.)
//!
//! One call = one process started by the agent: directly over its TCP port (the direct path), or
//! one `pods/exec` of `airlock-agent exec ... -- ARGV` in the sandbox's `sandbox` container, with
//! stdin always attached: either way stdin carries the control frames (DATA, CLOSE, SIGNAL,
//! RESIZE). Output flows through bounded buffers only (the websocket pipes, then a
//! channel of [`EVENT_BUFFER`] messages to tonic), so a slow client slows the command down
//! instead of growing the gateway's memory.
//!
//! Endings:
//! - the command exits: all its output is delivered, then `Exited`;
//! - its `timeout` runs out: the gateway sends SIGNAL 9 to the process group (stdin is dropped
//!   if that cannot be delivered within [`KILL_GRACE`]), discards output from then on, and reports
//!   `Exited { timed_out: true }`. The agent also has its own backstop (`--timeout-ms`, the
//!   timeout plus [`AGENT_TIMEOUT_SLACK`]);
//! - the client goes away (cancels, disconnects, stops the stream): the gateway drops the
//!   agent's stdin WITHOUT a CLOSE frame; the agent sees EOF and kills the process group.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::agent::{self, AgentError, KILL_GRACE, RemoteProcess, StdinWriter};
use crate::auth::Access;
use airlock_api::proto::v1 as pb;
use crate::server::Ctx;
use crate::validate::{self, ExecSpec};

/// Messages buffered between a command's output and the client.
pub const EVENT_BUFFER: usize = 16;
/// Largest output chunk put in one message.
pub const CHUNK: usize = 64 * 1024;
/// Added to the caller's timeout for the agent's own backstop, so the gateway's deadline fires
/// first and is the one reported.
pub const AGENT_TIMEOUT_SLACK: Duration = Duration::from_secs(2);

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ExecEvent, Status>> + Send>>;

pub struct ProcessesService {
    pub(crate) ctx: Arc<Ctx>,
}

fn event(e: pb::exec_event::Event) -> pb::ExecEvent {
    pb::ExecEvent { event: Some(e) }
}

/// Copies a pipe into the client channel chunk by chunk, reading only when the previous chunk was
/// accepted (bounded channel = backpressure). After `discard` is cancelled (timeout, client gone)
/// it keeps reading to EOF but drops the data, so the exec connection never stalls.
pub(crate) async fn forward<T>(
    mut r: Pin<Box<dyn AsyncRead + Send>>,
    tx: mpsc::Sender<Result<T, Status>>,
    make: fn(Bytes) -> T,
    discard: CancellationToken,
    on_bytes: impl Fn(usize),
) {
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut dropping = false;
    loop {
        buf.reserve(CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let chunk = buf.split().freeze();
        if dropping || discard.is_cancelled() {
            continue;
        }
        let n = chunk.len();
        tokio::select! {
            biased;
            res = tx.send(Ok(make(chunk))) => match res {
                Ok(()) => on_bytes(n),
                Err(_) => dropping = true,
            },
            _ = discard.cancelled() => {}
        }
    }
}

/// How a command call ended (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Exited,
    TimedOut,
    ClientGone,
    Shutdown,
    Error,
}

impl Ending {
    fn label(self) -> &'static str {
        match self {
            Ending::Exited => "exited",
            Ending::TimedOut => "timed_out",
            Ending::ClientGone => "cancelled",
            Ending::Shutdown => "shutdown",
            Ending::Error => "error",
        }
    }
}

/// Everything a running command needs.
struct Run {
    ctx: Arc<Ctx>,
    namespace: String,
    sandbox: String,
    pod: String,
    timeout: Option<Duration>,
    tx: mpsc::Sender<Result<pb::ExecEvent, Status>>,
    /// Cancelled by the input reader when the client's request stream broke or was invalid.
    abort: CancellationToken,
}

impl Run {
    async fn run(
        self,
        proc: RemoteProcess,
        initial: Vec<Bytes>,
        input: Option<(Streaming<pb::ExecInput>, bool)>,
    ) {
        let started = Instant::now();
        let RemoteProcess {
            stdin,
            stdout,
            stderr,
            mut status,
            guard,
            ..
        } = proc;
        let writer = StdinWriter::spawn(stdin);
        let metrics = self.ctx.metrics.clone();

        // Initial stdin (and CLOSE for non-interactive calls) is fed by its own task: the command
        // may not read it, and that must not hold up the deadline or the output.
        let normal = writer.normal.clone();
        let m = metrics.clone();
        let feeder = tokio::spawn(async move {
            for f in initial {
                let n = f.len().saturating_sub(5);
                if normal.send(f).await.is_err() {
                    return;
                }
                if n > 0 {
                    m.add_bytes("stdin", n);
                }
            }
        });
        let input_task = input.map(|(stream, tty)| {
            let (normal, urgent) = (writer.normal.clone(), writer.urgent.clone());
            let (tx, abort, m) = (self.tx.clone(), self.abort.clone(), metrics.clone());
            tokio::spawn(read_input(stream, tty, normal, urgent, tx, abort, m))
        });

        let discard = CancellationToken::new();
        let m1 = metrics.clone();
        let out = tokio::spawn(forward(
            stdout,
            self.tx.clone(),
            |b| event(pb::exec_event::Event::Stdout(b)),
            discard.clone(),
            move |n| m1.add_bytes("stdout", n),
        ));
        let m2 = metrics.clone();
        let err = tokio::spawn(forward(
            stderr,
            self.tx.clone(),
            |b| event(pb::exec_event::Event::Stderr(b)),
            discard.clone(),
            move |n| m2.add_bytes("stderr", n),
        ));

        let deadline = self.timeout.map(|t| started + t);
        let far = started + Duration::from_secs(100 * 365 * 24 * 3600);
        let mut kill_stage = 0u8;
        let mut kill_at = far;
        let mut timed_out = false;
        enum Next {
            Status(Result<i32, AgentError>),
            Gone,
            Shutdown,
            GaveUp,
        }
        let next = loop {
            tokio::select! {
                biased;
                _ = self.ctx.hard_stop.cancelled() => break Next::Shutdown,
                _ = self.tx.closed() => break Next::Gone,
                _ = self.abort.cancelled() => break Next::Gone,
                r = &mut status => break Next::Status(r),
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && !timed_out => {
                    timed_out = true;
                    discard.cancel();
                    tracing::info!(namespace = %self.namespace, sandbox = %self.sandbox, timeout_ms = self.timeout.map(|t| t.as_millis() as u64), "command timed out: sending SIGKILL");
                    writer.kill();
                    kill_stage = 1;
                    kill_at = Instant::now() + KILL_GRACE;
                }
                _ = tokio::time::sleep_until(kill_at), if kill_stage > 0 => {
                    if kill_stage == 1 {
                        tracing::warn!(namespace = %self.namespace, sandbox = %self.sandbox, "command still running after SIGKILL: closing the agent's stdin");
                        writer.drop_stdin();
                        kill_stage = 2;
                        kill_at = Instant::now() + KILL_GRACE;
                    } else {
                        break Next::GaveUp;
                    }
                }
            }
        };

        let ending = match next {
            Next::Gone | Next::Shutdown => {
                // SIGNAL 9 to the process group, then close stdin (before a CLOSE frame that alone
                // makes the agent kill the group). Keep draining the output (discarded) so the
                // connection keeps moving, for a bounded time.
                discard.cancel();
                writer.kill_and_close();
                let shutdown = matches!(next, Next::Shutdown);
                if shutdown {
                    let _ = self
                        .tx
                        .try_send(Err(Status::unavailable("the gateway is shutting down")));
                }
                match tokio::time::timeout(KILL_GRACE, &mut status).await {
                    Ok(r) => {
                        tracing::debug!(exit = ?r.ok(), "command ended after its client went away")
                    }
                    Err(_) => {
                        tracing::warn!(namespace = %self.namespace, sandbox = %self.sandbox, "no exit status within the grace period after the client went away")
                    }
                }
                if shutdown {
                    Ending::Shutdown
                } else {
                    Ending::ClientGone
                }
            }
            Next::GaveUp => {
                let _ = self
                    .tx
                    .send(Ok(event(exited(
                        agent::EXIT_SIGKILL,
                        true,
                        started.elapsed(),
                    ))))
                    .await;
                Ending::TimedOut
            }
            Next::Status(r) => {
                // Deliver everything the command wrote before it ended.
                let joined = async {
                    let _ = out.await;
                    let _ = err.await;
                };
                let finished = tokio::select! {
                    _ = joined => true,
                    _ = self.tx.closed() => false,
                    _ = self.ctx.hard_stop.cancelled() => false,
                };
                if !finished {
                    Ending::ClientGone
                } else {
                    match r {
                        Ok(code) => {
                            // The agent's backstop may fire a moment before the gateway's.
                            let timed_out = timed_out
                                || (deadline.is_some_and(|d| Instant::now() >= d)
                                    && code == agent::EXIT_SIGKILL);
                            let _ = self
                                .tx
                                .send(Ok(event(exited(code, timed_out, started.elapsed()))))
                                .await;
                            if timed_out {
                                Ending::TimedOut
                            } else {
                                Ending::Exited
                            }
                        }
                        Err(e) if timed_out => {
                            tracing::debug!(error = %e, "exec stream ended without status after the timeout");
                            let _ = self
                                .tx
                                .send(Ok(event(exited(
                                    agent::EXIT_SIGKILL,
                                    true,
                                    started.elapsed(),
                                ))))
                                .await;
                            Ending::TimedOut
                        }
                        Err(e) => {
                            tracing::warn!(namespace = %self.namespace, sandbox = %self.sandbox, pod = %self.pod, error = %e, "command failed");
                            let _ = self.tx.send(Err(e.into())).await;
                            Ending::Error
                        }
                    }
                }
            }
        };
        feeder.abort();
        if let Some(t) = input_task {
            t.abort();
        }
        drop(writer);
        drop(guard);
        tracing::info!(
            namespace = %self.namespace,
            sandbox = %self.sandbox,
            ending = ending.label(),
            duration_ms = started.elapsed().as_millis() as u64,
            "command finished"
        );
        metrics.exec_result(ending.label());
    }
}

fn exited(code: i32, timed_out: bool, d: Duration) -> pb::exec_event::Event {
    pb::exec_event::Event::Exited(pb::Exited {
        exit_code: code,
        signal: agent::signal_from_exit_code(code),
        timed_out,
        duration: Some(prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
    })
}

/// Reads the interactive client's messages and turns them into frames. A broken request stream
/// means the client is gone; an invalid message ends the call with INVALID_ARGUMENT; a clean
/// half-close closes the command's stdin.
async fn read_input(
    mut input: Streaming<pb::ExecInput>,
    tty: bool,
    normal: mpsc::Sender<Bytes>,
    urgent: mpsc::Sender<Bytes>,
    tx: mpsc::Sender<Result<pb::ExecEvent, Status>>,
    abort: CancellationToken,
    metrics: Arc<crate::metrics::Metrics>,
) {
    use pb::exec_input::Input;
    let mut closed = false;
    let fail = |s: Status| {
        abort.cancel();
        let tx = tx.clone();
        async move {
            let _ = tx.send(Err(s)).await;
        }
    };
    loop {
        let msg = match input.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                if !closed {
                    let _ = normal.send(agent::close_frame()).await;
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "interactive request stream ended with an error: client gone");
                abort.cancel();
                return;
            }
        };
        match msg.input {
            None => return fail(validate::invalid("input", "must be set")).await,
            Some(Input::Start(_)) => {
                return fail(validate::invalid(
                    "start",
                    "may only be sent once, as the first message",
                ))
                .await;
            }
            Some(Input::Stdin(b)) => {
                if closed {
                    return fail(validate::invalid("stdin", "stdin was already closed")).await;
                }
                for f in agent::data_frames(&b) {
                    if normal.send(f).await.is_err() {
                        return;
                    }
                }
                metrics.add_bytes("stdin", b.len());
            }
            Some(Input::CloseStdin(_)) => {
                if !closed {
                    closed = true;
                    if normal.send(agent::close_frame()).await.is_err() {
                        return;
                    }
                }
            }
            Some(Input::Resize(r)) => {
                if !tty {
                    return fail(validate::invalid(
                        "resize",
                        "only allowed when the command runs with tty",
                    ))
                    .await;
                }
                match validate::resize("resize", &r) {
                    Ok((c, rws)) => {
                        if urgent.send(agent::resize_frame(c, rws)).await.is_err() {
                            return;
                        }
                    }
                    Err(s) => return fail(s).await,
                }
            }
            Some(Input::Signal(s)) => match validate::signal("signal.number", &s) {
                Ok(n) => {
                    if urgent.send(agent::signal_frame(n)).await.is_err() {
                        return;
                    }
                }
                Err(s) => return fail(s).await,
            },
        }
    }
}

impl ProcessesService {
    fn background(&self) -> crate::background::Background {
        crate::background::Background {
            ctx: self.ctx.clone(),
        }
    }

    /// StartProcess, following the output on the same agent connection (the e2b API's Start).
    pub(crate) async fn start_attached(
        &self,
        req: Request<pb::StartProcessRequest>,
    ) -> Result<(pb::ProcessInfo, crate::background::ProcessStream), Status> {
        self.background().start_attached(req).await
    }

    /// Checks everything, starts the agent and returns the event stream.
    async fn start(
        &self,
        spec: ExecSpec,
        tty: bool,
        initial_size: Option<(u16, u16)>,
        input: Option<Streaming<pb::ExecInput>>,
    ) -> Result<Response<EventStream>, Status> {
        let ctx = self.ctx.clone();
        let mut options = spec.options.clone();
        options.tty = tty;
        options.size = if tty { initial_size } else { None };
        options.timeout_ms = spec
            .timeout
            .map(|t| (t + AGENT_TIMEOUT_SLACK).as_millis() as u64);
        tracing::info!(
            namespace = %spec.namespace,
            sandbox = %spec.name,
            program = %options.argv.first().map(String::as_str).unwrap_or(""),
            args = options.argv.len(),
            tty,
            interactive = input.is_some(),
            timeout_ms = spec.timeout.map(|t| t.as_millis() as u64),
            "starting command"
        );
        let launch = agent::Launch::Exec(options.clone());
        let (target, started) = crate::k8s::start_in(&ctx, &spec.namespace, &spec.name, &launch).await?;
        ctx.activity.touch(&spec.namespace, &spec.name);
        let pod = target.pod.clone();
        let proc = started.map_err(|e| {
            tracing::warn!(namespace = %spec.namespace, sandbox = %spec.name, error = %e, "starting the agent failed");
            Status::from(e)
        })?;

        let mut initial = Vec::new();
        if let Some(stdin) = &spec.stdin {
            initial.extend(agent::data_frames(stdin));
        }
        if input.is_none() {
            initial.push(agent::close_frame());
        }

        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        // Cannot fail: the channel is new and has room.
        let _ = tx.try_send(Ok(event(pb::exec_event::Event::Started(pb::Started {
            pid: i32::try_from(proc.pid).unwrap_or(0),
            pod_name: pod.clone(),
        }))));
        let run = Run {
            ctx: ctx.clone(),
            namespace: spec.namespace.clone(),
            sandbox: spec.name.clone(),
            pod,
            timeout: spec.timeout,
            tx,
            abort: CancellationToken::new(),
        };
        tokio::spawn(run.run(proc, initial, input.map(|s| (s, tty))));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl pb::processes_server::Processes for ProcessesService {
    type ExecStream = EventStream;
    type ExecInteractiveStream = EventStream;
    type RunCodeStream = EventStream;
    type ConnectProcessStream = crate::background::ProcessStream;

    async fn start_process(
        &self,
        req: Request<pb::StartProcessRequest>,
    ) -> Result<Response<pb::ProcessInfo>, Status> {
        self.background().start(req).await
    }

    async fn connect_process(
        &self,
        req: Request<pb::ConnectProcessRequest>,
    ) -> Result<Response<Self::ConnectProcessStream>, Status> {
        self.background().connect(req).await
    }

    async fn list_processes(
        &self,
        req: Request<pb::ListProcessesRequest>,
    ) -> Result<Response<pb::ListProcessesResponse>, Status> {
        self.background().list(req).await
    }

    async fn send_input(
        &self,
        req: Request<pb::SendInputRequest>,
    ) -> Result<Response<pb::SendInputResponse>, Status> {
        self.background().send_input(req).await
    }

    async fn signal_process(
        &self,
        req: Request<pb::SignalProcessRequest>,
    ) -> Result<Response<pb::SignalProcessResponse>, Status> {
        self.background().signal(req).await
    }

    async fn kill_process(
        &self,
        req: Request<pb::KillProcessRequest>,
    ) -> Result<Response<pb::KillProcessResponse>, Status> {
        self.background().kill(req).await
    }

    async fn exec(&self, req: Request<pb::ExecRequest>) -> Result<Response<EventStream>, Status> {
        let spec = validate::exec_request(req.get_ref(), &self.ctx.default_namespace)?;
        self.ctx
            .authorize(
                &req,
                Access::new("create", &spec.namespace, Some(&spec.name)).subresource("exec"),
            )
            .await?;
        self.start(spec, false, None, None).await
    }

    async fn run_code(
        &self,
        req: Request<pb::RunCodeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let spec = validate::run_code_request(req.get_ref(), &self.ctx.default_namespace)?;
        self.ctx
            .authorize(
                &req,
                Access::new("create", &spec.namespace, Some(&spec.name)).subresource("exec"),
            )
            .await?;
        self.start(spec, false, None, None).await
    }

    async fn exec_interactive(
        &self,
        req: Request<Streaming<pb::ExecInput>>,
    ) -> Result<Response<EventStream>, Status> {
        let first = tokio::time::timeout(Duration::from_secs(30), async {
            let mut s = req;
            let m = s.get_mut().message().await;
            (s, m)
        })
        .await
        .map_err(|_| Status::deadline_exceeded("start: no first message within 30s"))?;
        let (req, msg) = first;
        let msg =
            msg?.ok_or_else(|| validate::invalid("start", "the first message must be start"))?;
        let Some(pb::exec_input::Input::Start(start)) = msg.input else {
            return Err(validate::invalid(
                "start",
                "the first message must be start",
            ));
        };
        let Some(request) = start.request.as_ref() else {
            return Err(validate::invalid("start.request", "required"));
        };
        let spec = validate::exec_request(request, &self.ctx.default_namespace)?;
        let size = match (&start.size, start.tty) {
            (Some(_), false) => {
                return Err(validate::invalid("start.size", "only allowed with tty"));
            }
            (Some(s), true) => Some(validate::resize("start.size", s)?),
            (None, _) => None,
        };
        self.ctx
            .authorize(
                &req,
                Access::new("create", &spec.namespace, Some(&spec.name)).subresource("exec"),
            )
            .await?;
        self.start(spec, start.tty, size, Some(req.into_inner()))
            .await
    }
}
