//! Background processes: StartProcess, ConnectProcess, ListProcesses, SendInput, SignalProcess,
//! KillProcess of `airlock.v1.Processes`. Each call is one request on one connection to the
//! sandbox's agent over the direct path (docs/DESIGN-NOTES.md "Agent TCP service"); the agent
//! keeps the process table, the output buffers and the trees. Without the direct path (a gateway
//! without the agent key, or a sandbox whose pod has no agent port) they answer
//! FAILED_PRECONDITION saying which.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_agent_protocol::{
    self as proto, Attach, Control, End, ErrorCode, ErrorMsg, Exit, ProcInfo, Start,
    Started, Target, a2c, c2a,
};
use airlock_api::proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agent::direct::AgentConn;
use crate::auth::Access;
use crate::server::Ctx;
use crate::validate;

/// Longest tag (the agent's limit too).
pub const MAX_TAG: usize = 128;
/// Largest output buffer a caller may ask for, per stream.
pub const MAX_BUFFER: u64 = 64 << 20;
/// Most stdin bytes per SendInput (what the agent holds unwritten per process).
pub const MAX_INPUT: usize = 1 << 20;
/// Events of one ConnectProcess queued for a slow caller (then the agent waits).
const EVENT_BUFFER: usize = 16;
/// How long a request other than a following ConnectProcess may take in the agent.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub type ProcessStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ProcessEvent, Status>> + Send>>;

/// The agent's answer `e` about `what` in sandbox `ns/name`, as a gRPC status with the same code.
fn agent_status(ns: &str, name: &str, e: &ErrorMsg) -> Status {
    let msg = format!("sandbox {ns}/{name}: {}", e.message);
    match e.code {
        ErrorCode::InvalidArgument => Status::invalid_argument(msg),
        ErrorCode::NotFound => Status::not_found(msg),
        ErrorCode::AlreadyExists => Status::already_exists(msg),
        ErrorCode::FailedPrecondition => Status::failed_precondition(msg),
        ErrorCode::OutOfRange => Status::out_of_range(msg),
        ErrorCode::ResourceExhausted => Status::resource_exhausted(msg),
        ErrorCode::Unauthenticated => Status::unavailable(format!(
            "{msg} (the agent refused the gateway's token: the agent key changed since the sandbox was created?)"
        )),
        ErrorCode::Internal => Status::internal(msg),
    }
}

fn lost(ns: &str, name: &str, why: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("sandbox {ns}/{name}: connection to the agent: {why}"))
}

/// The process a request names.
fn target(field: &str, s: Option<&pb::ProcessSelector>) -> Result<Target, Status> {
    use pb::process_selector::Selector;
    match s.and_then(|s| s.selector.as_ref()) {
        None => Err(validate::invalid(field, "required: a pid or a tag")),
        Some(Selector::Pid(p)) if *p > 0 => Ok(Target::Pid(*p as u32)),
        Some(Selector::Pid(p)) => Err(validate::invalid(&format!("{field}.pid"), format!("must be positive, got {p}"))),
        Some(Selector::Tag(t)) => tag(&format!("{field}.tag"), t).map(Target::Tag),
    }
}

/// A tag: 1-128 of letters, digits, '.', '_', '-'.
fn tag(field: &str, t: &str) -> Result<String, Status> {
    if t.is_empty() || t.len() > MAX_TAG {
        return Err(validate::invalid(field, format!("must be 1-{MAX_TAG} characters, got {}", t.len())));
    }
    if let Some(c) = t.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(validate::invalid(field, format!("may hold letters, digits, '.', '_' and '-' only, got {c:?}")));
    }
    Ok(t.to_string())
}

fn exited(e: &Exit) -> pb::Exited {
    pb::Exited {
        exit_code: e.code,
        signal: if e.signal > 0 {
            e.signal
        } else if (129..=192).contains(&e.code) {
            e.code - 128
        } else {
            0
        },
        timed_out: e.timed_out,
        duration: None,
    }
}

fn info(p: &ProcInfo) -> pb::ProcessInfo {
    let started = UNIX_EPOCH + Duration::from_millis(p.started_unix_ms);
    pb::ProcessInfo {
        pid: p.pid as i32,
        tag: p.tag.clone().unwrap_or_default(),
        argv: p.argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect(),
        tty: p.tty,
        running: p.exit.is_none(),
        exited: p.exit.as_ref().map(exited),
        stdout_start: p.out_start,
        stdout_end: p.out_end,
        stderr_start: p.err_start,
        stderr_end: p.err_end,
        started_at: Some(prost_types::Timestamp::from(started)),
    }
}

/// The background-process calls, sharing the gateway's state.
pub(crate) struct Background {
    pub ctx: Arc<Ctx>,
}

impl Background {
    /// Authorizes (`create sandboxes/exec`, as Exec), finds the Ready sandbox's agent and opens an
    /// authenticated connection to it.
    /// `touch`: the call counts as the sandbox's activity (not for reading: polling ListProcesses
    /// or following a process's output must not keep a sandbox alive by itself; the agent counts
    /// a following ConnectProcess as activity while it streams).
    async fn open<T>(&self, req: &Request<T>, sandbox: Option<&pb::SandboxRef>, touch: bool) -> Result<(String, String, AgentConn), Status> {
        self.open_target(req, sandbox, touch).await.map(|(ns, name, conn, _)| (ns, name, conn))
    }

    /// [`Self::open`], also giving the sandbox's pod target.
    async fn open_target<T>(&self, req: &Request<T>, sandbox: Option<&pb::SandboxRef>, touch: bool) -> Result<(String, String, AgentConn, crate::agent::PodTarget), Status> {
        let ctx = &self.ctx;
        let (ns, name) = validate::sandbox_ref("sandbox", sandbox, &ctx.default_namespace)?;
        ctx.authorize(req, Access::new("create", &ns, Some(&name)).subresource("exec")).await?;
        let direct = ctx.direct.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "background processes need the direct path to the sandbox's agent, and this gateway has no agent key (--agent-key-file; chart agentDirect.enabled)",
            )
        })?;
        let no_port = || {
            Status::failed_precondition(format!(
                "sandbox {ns}/{name}: its pod has no agent port (created without the direct path): background processes need it (Exec works)"
            ))
        };
        let mut target = crate::k8s::ready_sandbox(ctx, &ns, &name).await?;
        let mut addr = target.agent.ok_or_else(no_port)?;
        if touch {
            ctx.activity.touch(&ns, &name);
        }
        // A pod from the cache that does not answer may be gone or replaced: read the sandbox
        // again before waiting on it.
        if target.from_cache {
            match direct.open(&target, addr, crate::agent::direct::AUTO_PATIENCE).await {
                Ok(conn) => return Ok((ns, name, conn, target)),
                Err(e) => {
                    tracing::info!(namespace = %ns, sandbox = %name, reason = %e, "cached pod unreachable; reading the sandbox again");
                    target = crate::k8s::read_ready_sandbox(ctx, &ns, &name).await?;
                    addr = target.agent.ok_or_else(no_port)?;
                }
            }
        }
        let conn = direct.open(&target, addr, crate::agent::direct::DIRECT_PATIENCE).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok((ns, name, conn, target))
    }

    /// One request and its one answer (ERROR becomes the matching status).
    async fn call(ns: &str, name: &str, conn: &mut AgentConn, typ: u8, payload: &[u8]) -> Result<(u8, Vec<u8>), Status> {
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            conn.send(typ, payload).await?;
            conn.next().await
        })
        .await
        .map_err(|_| lost(ns, name, format!("no answer within {CALL_TIMEOUT:?}")))?
        .map_err(|e| lost(ns, name, e))?;
        match answer {
            None => Err(lost(ns, name, "closed before answering")),
            Some((a2c::ERROR, p)) => Err(agent_status(ns, name, &ErrorMsg::decode(&p).map_err(|e| lost(ns, name, e))?)),
            Some(f) => Ok(f),
        }
    }

    pub async fn start(&self, req: Request<pb::StartProcessRequest>) -> Result<Response<pb::ProcessInfo>, Status> {
        let (info, _) = self.start_with(req, false).await?;
        Ok(Response::new(info))
    }

    /// Starts a background process and follows its output from its first byte on the same agent
    /// connection (one connection instead of StartProcess then ConnectProcess; the e2b API's
    /// Start). The process outlives the stream.
    pub async fn start_attached(&self, req: Request<pb::StartProcessRequest>) -> Result<(pb::ProcessInfo, ProcessStream), Status> {
        let (info, follow) = self.start_with(req, true).await?;
        Ok((info, follow.expect("attached start has a stream")))
    }

    async fn start_with(&self, req: Request<pb::StartProcessRequest>, attach: bool) -> Result<(pb::ProcessInfo, Option<ProcessStream>), Status> {
        let r = req.get_ref();
        // The command, environment, cwd, timeout and stdin are checked as Exec checks them.
        let as_exec = pb::ExecRequest {
            sandbox: r.sandbox.clone(),
            command: r.command.clone().map(|c| match c {
                pb::start_process_request::Command::Argv(a) => pb::exec_request::Command::Argv(a),
                pb::start_process_request::Command::Shell(s) => pb::exec_request::Command::Shell(s),
            }),
            env: r.env.clone(),
            cwd: r.cwd.clone(),
            timeout: r.timeout,
            stdin: r.stdin.clone(),
        };
        let spec = validate::exec_request(&as_exec, &self.ctx.default_namespace)?;
        let tag = (!r.tag.is_empty()).then(|| tag("tag", &r.tag)).transpose()?;
        let size = match (&r.size, r.tty) {
            (Some(_), false) => return Err(validate::invalid("size", "only allowed with tty")),
            (Some(s), true) => Some(validate::resize("size", s)?),
            (None, true) => Some((80, 24)),
            (None, false) => None,
        };
        if r.buffer_bytes > MAX_BUFFER {
            return Err(validate::invalid("buffer_bytes", format!("at most {MAX_BUFFER} (64 MiB), got {}", r.buffer_bytes)));
        }
        let (ns, name, mut conn, target) = self.open_target(&req, r.sandbox.as_ref(), true).await?;
        let o = &spec.options;
        let env = target.merged_env(&o.env);
        let start = Start {
            argv: o.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()).collect(),
            cwd: o.cwd.as_ref().map(|c| c.as_bytes().to_vec()),
            tty: r.tty,
            size,
            timeout_ms: spec.timeout.map(|t| t.as_millis() as u64),
            tag: tag.clone(),
            buffer: (r.buffer_bytes > 0).then_some(r.buffer_bytes),
            attach,
            kill_on_disconnect: false,
            stdin: spec.stdin.as_ref().map(|b| b.to_vec()).unwrap_or_default(),
            close_stdin: r.close_stdin,
            fd3: Vec::new(),
        };
        let (typ, p) = Self::call(&ns, &name, &mut conn, c2a::START, &start.encode()).await?;
        if typ != a2c::STARTED {
            return Err(lost(&ns, &name, format!("answer 0x{typ:02x} to START")));
        }
        let started = Started::decode(&p).map_err(|e| lost(&ns, &name, e))?;
        tracing::info!(namespace = %ns, sandbox = %name, pid = started.pid, tag = tag.as_deref().unwrap_or(""),
            program = %o.argv.first().map(String::as_str).unwrap_or(""), "background process started");
        let info = pb::ProcessInfo {
            pid: started.pid as i32,
            tag: started.tag.unwrap_or_default(),
            argv: o.argv.clone(),
            tty: r.tty,
            running: true,
            started_at: Some(prost_types::Timestamp::from(SystemTime::now())),
            ..Default::default()
        };
        let follow = attach.then(|| self.follow(ns, name, conn, None));
        Ok((info, follow))
    }

    pub async fn connect(&self, req: Request<pb::ConnectProcessRequest>) -> Result<Response<ProcessStream>, Status> {
        let r = req.get_ref();
        let target = target("process", r.process.as_ref())?;
        let attach = Attach { target, out_offset: r.stdout_offset, err_offset: r.stderr_offset, follow: r.follow };
        let (ns, name, mut conn) = self.open(&req, r.sandbox.as_ref(), false).await?;
        conn.send(c2a::ATTACH, &attach.encode()).await.map_err(|e| lost(&ns, &name, e))?;
        // The first frame: an error (no such process, offset dropped) fails the call itself.
        let first = conn.next().await.map_err(|e| lost(&ns, &name, e))?;
        let first = match first {
            None => return Err(lost(&ns, &name, "closed before answering")),
            Some((a2c::ERROR, p)) => {
                return Err(agent_status(&ns, &name, &ErrorMsg::decode(&p).map_err(|e| lost(&ns, &name, e))?));
            }
            Some(f) => f,
        };
        Ok(Response::new(self.follow(ns, name, conn, Some(first))))
    }

    /// Streams a process's frames from `conn` (after `first`, if one was read already) as
    /// ProcessEvents through a bounded channel, until EXIT, END or an error; stops reading when
    /// the caller goes away.
    fn follow(&self, ns: String, name: String, mut conn: AgentConn, first: Option<(u8, Vec<u8>)>) -> ProcessStream {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let (hard_stop, metrics) = (self.ctx.hard_stop.clone(), self.ctx.metrics.clone());
        tokio::spawn(async move {
            let mut next = first;
            loop {
                let (typ, p) = match next.take() {
                    Some(f) => f,
                    None => {
                        let f = tokio::select! {
                            f = conn.next() => f,
                            _ = tx.closed() => return,
                            _ = hard_stop.cancelled() => {
                                let _ = tx.send(Err(Status::unavailable("the gateway is shutting down; connect again"))).await;
                                return;
                            }
                        };
                        match f {
                            Ok(Some(f)) => f,
                            Ok(None) => {
                                let _ = tx.send(Err(lost(&ns, &name, "closed before the end"))).await;
                                return;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(lost(&ns, &name, e))).await;
                                return;
                            }
                        }
                    }
                };
                use pb::process_event::Event;
                let (event, last) = match typ {
                    a2c::STDOUT | a2c::STDERR => {
                        let Ok((offset, data)) = proto::parse_output(&p) else {
                            let _ = tx.send(Err(lost(&ns, &name, "malformed output frame"))).await;
                            return;
                        };
                        let stream = if typ == a2c::STDOUT { "stdout" } else { "stderr" };
                        metrics.add_bytes(stream, data.len());
                        let chunk = pb::OutputChunk { offset, data: bytes::Bytes::copy_from_slice(data) };
                        (Ok(if typ == a2c::STDOUT { Event::Stdout(chunk) } else { Event::Stderr(chunk) }), false)
                    }
                    a2c::EXIT => match Exit::decode(&p) {
                        Ok(e) => (Ok(Event::Exited(exited(&e))), true),
                        Err(e) => (Err(lost(&ns, &name, e)), true),
                    },
                    a2c::END => match End::decode(&p) {
                        Ok(e) => (Ok(Event::CaughtUp(pb::CaughtUp { stdout_end: e.out_end, stderr_end: e.err_end, running: e.running })), true),
                        Err(e) => (Err(lost(&ns, &name, e)), true),
                    },
                    a2c::ERROR => match ErrorMsg::decode(&p) {
                        Ok(e) => (Err(agent_status(&ns, &name, &e)), true),
                        Err(e) => (Err(lost(&ns, &name, e)), true),
                    },
                    a2c::STARTED | a2c::OK => continue,
                    t => (Err(lost(&ns, &name, format!("unexpected frame 0x{t:02x}"))), true),
                };
                let event = event.map(|e| pb::ProcessEvent { event: Some(e) });
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    pub async fn list(&self, req: Request<pb::ListProcessesRequest>) -> Result<Response<pb::ListProcessesResponse>, Status> {
        let (ns, name, mut conn) = self.open(&req, req.get_ref().sandbox.as_ref(), false).await?;
        let (typ, p) = Self::call(&ns, &name, &mut conn, c2a::LIST, &[]).await?;
        if typ != a2c::PROCS {
            return Err(lost(&ns, &name, format!("answer 0x{typ:02x} to LIST")));
        }
        let procs = ProcInfo::decode_list(&p).map_err(|e| lost(&ns, &name, e))?;
        Ok(Response::new(pb::ListProcessesResponse { processes: procs.iter().map(info).collect() }))
    }

    pub async fn send_input(&self, req: Request<pb::SendInputRequest>) -> Result<Response<pb::SendInputResponse>, Status> {
        let r = req.get_ref();
        let t = target("process", r.process.as_ref())?;
        if r.data.len() > MAX_INPUT {
            return Err(validate::invalid("data", format!("at most {MAX_INPUT} bytes (1 MiB) per call, got {}", r.data.len())));
        }
        if r.data.is_empty() && !r.close {
            return Err(validate::invalid("data", "empty, and close not set: nothing to do"));
        }
        if !r.data.is_empty() {
            let (ns, name, mut conn) = self.open(&req, r.sandbox.as_ref(), true).await?;
            Self::call(&ns, &name, &mut conn, c2a::STDIN, &Control::Stdin(t.clone(), r.data.to_vec()).encode()).await?;
        }
        if r.close {
            let (ns, name, mut conn) = self.open(&req, r.sandbox.as_ref(), true).await?;
            Self::call(&ns, &name, &mut conn, c2a::CLOSE_STDIN, &t.encode()).await?;
        }
        Ok(Response::new(pb::SendInputResponse {}))
    }

    pub async fn signal(&self, req: Request<pb::SignalProcessRequest>) -> Result<Response<pb::SignalProcessResponse>, Status> {
        use pb::signal_process_request::Action;
        let r = req.get_ref();
        let t = target("process", r.process.as_ref())?;
        let (typ, payload) = match &r.action {
            None => return Err(validate::invalid("action", "required: signal or resize")),
            Some(Action::Signal(s)) => (c2a::SIGNAL_PROC, Control::Signal(t, validate::signal("signal", s)? as i32).encode()),
            Some(Action::Resize(s)) => {
                let (cols, rows) = validate::resize("resize", s)?;
                (c2a::RESIZE_PROC, Control::Resize(t, cols, rows).encode())
            }
        };
        let (ns, name, mut conn) = self.open(&req, r.sandbox.as_ref(), true).await?;
        Self::call(&ns, &name, &mut conn, typ, &payload).await?;
        Ok(Response::new(pb::SignalProcessResponse {}))
    }

    pub async fn kill(&self, req: Request<pb::KillProcessRequest>) -> Result<Response<pb::KillProcessResponse>, Status> {
        let r = req.get_ref();
        let t = target("process", r.process.as_ref())?;
        let (ns, name, mut conn) = self.open(&req, r.sandbox.as_ref(), true).await?;
        Self::call(&ns, &name, &mut conn, c2a::KILL, &t.encode()).await?;
        tracing::info!(namespace = %ns, sandbox = %name, process = %t, "background process killed");
        Ok(Response::new(pb::KillProcessResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_tags_are_checked_naming_the_field() {
        assert_eq!(target("process", None).unwrap_err().code(), tonic::Code::InvalidArgument);
        let pid = |p| pb::ProcessSelector { selector: Some(pb::process_selector::Selector::Pid(p)) };
        let tagged = |t: &str| pb::ProcessSelector { selector: Some(pb::process_selector::Selector::Tag(t.into())) };
        assert_eq!(target("process", Some(&pid(7))).unwrap(), Target::Pid(7));
        let e = target("process", Some(&pid(0))).unwrap_err();
        assert!(e.message().contains("process.pid"), "{e:?}");
        assert_eq!(target("process", Some(&tagged("web-1.a_b"))).unwrap(), Target::Tag("web-1.a_b".into()));
        let e = target("process", Some(&tagged("a b"))).unwrap_err();
        assert!(e.message().contains("process.tag") && e.message().contains("' '"), "{e:?}");
        assert!(target("process", Some(&tagged(""))).is_err());
        assert!(target("process", Some(&tagged(&"x".repeat(129)))).is_err());
    }

    #[test]
    fn exits_report_the_signal() {
        let e = |code, signal| exited(&Exit { code, signal, ..Exit::default() });
        assert_eq!((e(0, 0).exit_code, e(0, 0).signal), (0, 0));
        assert_eq!((e(137, 9).exit_code, e(137, 9).signal), (137, 9));
        assert_eq!(e(130, 0).signal, 2);
        assert_eq!(e(3, 0).signal, 0);
    }

    #[test]
    fn agent_errors_keep_their_code_and_name_the_sandbox() {
        let s = agent_status("ns", "box", &ErrorMsg::new(ErrorCode::OutOfRange, "stdout: 10 bytes dropped"));
        assert_eq!(s.code(), tonic::Code::OutOfRange);
        assert_eq!(s.message(), "sandbox ns/box: stdout: 10 bytes dropped");
        assert_eq!(agent_status("ns", "box", &ErrorMsg::new(ErrorCode::AlreadyExists, "x")).code(), tonic::Code::AlreadyExists);
    }
}
