//! Talking to the Airlock agent inside a sandbox: its command lines, its stdin framing, how its
//! exit status comes back through `pods/exec`, and how file-command exit codes map to gRPC codes;
//! which path a call takes ([`Routed`]); the direct path itself is in [`direct`].
//! (About 740 lines: `pods/exec` and the routing between the two paths; the routing moves out
//! with the next change to this file.)
//!
//! Frame format (see `docs/DESIGN-NOTES.md`): 1 byte type, 4 bytes big-endian payload length,
//! payload. EOF on the agent's stdin means "the client is gone": the agent kills the process group
//! of a running `exec` (CLOSE or not), and `put` without CLOSE discards its temporary file.
//!
//! Over 600 lines: the launch types, the `pods/exec` transport and the router between it and the
//! direct path (`agent/direct.rs`) share the error and process types here; the router (`Routed`,
//! `Transport`) is the next thing to move to its own file.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status as K8sStatus;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Frame type: bytes for the child's stdin (or the uploaded file).
pub const FRAME_DATA: u8 = 0x01;
/// Frame type: end of stdin (for `put`: commit the file).
pub const FRAME_CLOSE: u8 = 0x02;
/// Frame type: deliver a signal to the child's process group (payload: u32 BE signal number).
pub const FRAME_SIGNAL: u8 = 0x03;
/// Frame type: terminal size (payload: cols u16 BE, rows u16 BE).
pub const FRAME_RESIZE: u8 = 0x04;

/// Largest DATA payload the gateway puts in one frame; bigger writes are split.
pub const MAX_DATA_FRAME: usize = 64 * 1024;

/// Exit code `airlock-agent exec` reports for a child killed by SIGKILL (128 + 9).
pub const EXIT_SIGKILL: i32 = 128 + 9;

/// One encoded frame.
pub fn frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(kind);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// DATA frames carrying `data`, split so no payload exceeds [`MAX_DATA_FRAME`]. Empty input gives
/// no frame (an empty DATA frame would be a no-op anyway).
pub fn data_frames(data: &[u8]) -> Vec<Bytes> {
    data.chunks(MAX_DATA_FRAME)
        .map(|c| frame(FRAME_DATA, c))
        .collect()
}

/// The CLOSE frame.
pub fn close_frame() -> Bytes {
    frame(FRAME_CLOSE, &[])
}

/// A SIGNAL frame.
pub fn signal_frame(signal: u32) -> Bytes {
    frame(FRAME_SIGNAL, &signal.to_be_bytes())
}

/// A RESIZE frame.
pub fn resize_frame(cols: u16, rows: u16) -> Bytes {
    let mut p = [0u8; 4];
    p[..2].copy_from_slice(&cols.to_be_bytes());
    p[2..].copy_from_slice(&rows.to_be_bytes());
    frame(FRAME_RESIZE, &p)
}

/// Options of `airlock-agent exec`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOptions {
    pub cwd: Option<String>,
    /// Sorted by name (deterministic command lines).
    pub env: Vec<(String, String)>,
    /// The agent's own backstop timeout.
    pub timeout_ms: Option<u64>,
    pub tty: bool,
    /// Initial terminal size (cols, rows), with `tty`: set before the command starts.
    pub size: Option<(u16, u16)>,
    pub argv: Vec<String>,
    /// The same command for the direct path with its program text on fd 3 (RunCode: `python3
    /// /dev/fd/3`): no argv size limit (one argument may hold at most 128 KiB) and nothing of
    /// the code in a command line. `None`: `argv` everywhere.
    pub fd3: Option<(Vec<String>, Vec<u8>)>,
}

/// The full command line of `airlock-agent exec`.
pub fn exec_command(agent: &str, o: &ExecOptions) -> Vec<String> {
    let mut c = vec![agent.to_string(), "exec".to_string()];
    if let Some(cwd) = &o.cwd {
        c.push("--cwd".into());
        c.push(cwd.clone());
    }
    for (k, v) in &o.env {
        c.push("--env".into());
        c.push(format!("{k}={v}"));
    }
    if let Some(ms) = o.timeout_ms {
        c.push("--timeout-ms".into());
        c.push(ms.to_string());
    }
    if o.tty {
        c.push("--tty".into());
        if let Some((cols, rows)) = o.size {
            c.push("--size".into());
            c.push(format!("{cols}x{rows}"));
        }
    }
    c.push("--".into());
    c.extend(o.argv.iter().cloned());
    c
}

/// A file command of the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum FileCommand {
    Put {
        path: String,
        mode: Option<u32>,
        parents: bool,
    },
    Get {
        path: String,
    },
    Ls {
        path: String,
    },
    Stat {
        path: String,
    },
    Rm {
        path: String,
        recursive: bool,
    },
    Mkdir {
        path: String,
        parents: bool,
        mode: Option<u32>,
    },
    Mv {
        path: String,
        dest: String,
    },
}

impl FileCommand {
    /// The agent subcommand name.
    pub fn name(&self) -> &'static str {
        match self {
            FileCommand::Put { .. } => "put",
            FileCommand::Get { .. } => "get",
            FileCommand::Ls { .. } => "ls",
            FileCommand::Stat { .. } => "stat",
            FileCommand::Rm { .. } => "rm",
            FileCommand::Mkdir { .. } => "mkdir",
            FileCommand::Mv { .. } => "mv",
        }
    }

    /// The path the command works on.
    pub fn path(&self) -> &str {
        match self {
            FileCommand::Put { path, .. }
            | FileCommand::Get { path }
            | FileCommand::Ls { path }
            | FileCommand::Stat { path }
            | FileCommand::Rm { path, .. }
            | FileCommand::Mkdir { path, .. }
            | FileCommand::Mv { path, .. } => path,
        }
    }

    /// The full command line. Paths are validated absolute (they start with `/`), so they can
    /// never be mistaken for a flag.
    pub fn command(&self, agent: &str) -> Vec<String> {
        let mut c = vec![
            agent.to_string(),
            self.name().to_string(),
            self.path().to_string(),
        ];
        match self {
            FileCommand::Put { mode, parents, .. } => {
                if let Some(mode) = mode {
                    c.push("--mode".into());
                    c.push(format!("{mode:o}"));
                }
                if *parents {
                    c.push("--parents".into());
                }
            }
            FileCommand::Rm { recursive, .. } => {
                if *recursive {
                    c.push("--recursive".into());
                }
            }
            FileCommand::Mkdir { parents, mode, .. } => {
                if *parents {
                    c.push("--parents".into());
                }
                if let Some(mode) = mode {
                    c.push("--mode".into());
                    c.push(format!("{mode:o}"));
                }
            }
            FileCommand::Mv { dest, .. } => c.push(dest.clone()),
            FileCommand::Get { .. } | FileCommand::Ls { .. } | FileCommand::Stat { .. } => {}
        }
        c
    }
}

/// Errors of running the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("starting the agent in pod {namespace}/{pod}: {source}")]
    Start {
        namespace: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {namespace}/{pod} not found")]
    PodNotFound { namespace: String, pod: String },
    #[error(
        "lost the connection to pod {pod} while the command ran (it closed without an exit status): the exit status and any output not yet delivered are lost, and whether the command finished is unknown"
    )]
    NoStatus { pod: String },
    #[error("pod {namespace}/{pod} has no agent port (created without the direct path), and --agent-transport=direct")]
    NoAgentPort { namespace: String, pod: String },
    #[error("{message}")]
    Unreachable { message: String },
    /// The agent of a pod found in the watch cache could not be reached, nothing started: the
    /// pod may be gone or replaced since; the caller looks the sandbox up again.
    #[error("{message} (pod found in the gateway's cache)")]
    Stale { message: String },
    #[error("the agent in pod {pod} could not run: {message}")]
    Failed { pod: String, message: String },
    #[error("reading the agent's output in pod {pod}: {source}")]
    Io {
        pod: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent in pod {pod} produced more than {limit} bytes of output")]
    TooMuchOutput { pod: String, limit: usize },
}

impl From<AgentError> for tonic::Status {
    fn from(e: AgentError) -> Self {
        match &e {
            AgentError::PodNotFound { .. } => {
                tonic::Status::failed_precondition(format!("sandbox is not running: {e}"))
            }
            AgentError::Start { source, .. } => match source {
                kube::Error::Api(s) if s.code == 404 => {
                    tonic::Status::failed_precondition(format!("sandbox is not running: {e}"))
                }
                _ => tonic::Status::unavailable(e.to_string()),
            },
            AgentError::NoStatus { .. }
            | AgentError::Io { .. }
            | AgentError::NoAgentPort { .. }
            | AgentError::Unreachable { .. }
            | AgentError::Stale { .. } => tonic::Status::unavailable(e.to_string()),
            AgentError::Failed { .. } | AgentError::TooMuchOutput { .. } => {
                tonic::Status::internal(e.to_string())
            }
        }
    }
}

/// Exit code of a remote command from the `pods/exec` status channel: `Success` is 0; a
/// `NonZeroExitCode` failure carries the code in the `ExitCode` cause. Anything else (the command
/// could not be started at all, the container is gone) is an error with the API server's message.
pub fn exit_code_from_status(status: &K8sStatus) -> Result<i32, String> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let causes = status.details.as_ref().and_then(|d| d.causes.as_ref());
    if let Some(code) = causes
        .into_iter()
        .flatten()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.trim().parse::<i32>().ok())
    {
        return Ok(code);
    }
    Err(status
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| status.reason.clone())
        .unwrap_or_else(|| "unknown failure".to_string()))
}

/// Signal number inferred from the 128+N convention (0 when the code does not look like one).
pub fn signal_from_exit_code(code: i32) -> i32 {
    if (129..=192).contains(&code) {
        code - 128
    } else {
        0
    }
}

/// Maps a failed file command to a gRPC status: 2 NOT_FOUND, 3 PERMISSION_DENIED,
/// 4 FAILED_PRECONDITION, 5 INVALID_ARGUMENT, anything else INTERNAL. The message names the
/// operation and path and carries the agent's stderr line.
pub fn file_status(op: &str, path: &str, code: i32, stderr: &str) -> tonic::Status {
    let detail = stderr.trim();
    let detail = if detail.is_empty() {
        format!("exit code {code}")
    } else {
        truncate(detail, 1024)
    };
    let msg = format!("{op} {path}: {detail}");
    match code {
        2 => tonic::Status::not_found(msg),
        3 => tonic::Status::permission_denied(msg),
        4 => tonic::Status::failed_precondition(msg),
        5 => tonic::Status::invalid_argument(msg),
        // 126/127: the agent binary itself could not be run.
        _ => tonic::Status::internal(msg),
    }
}

fn truncate(s: &str, max: usize) -> String {
    airlock_crds::validation::text::truncate(s, max, "...")
}

/// A process started through `pods/exec` (or a stand-in in tests).
pub struct RemoteProcess {
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// Resolves with the exit code once the remote command ended.
    pub status: BoxFuture<'static, Result<i32, AgentError>>,
    /// Keeps the connection alive; dropping it tears the connection down.
    pub guard: Box<dyn Send + Sync>,
    /// The process's pid in the sandbox; 0 when not known (over `pods/exec`).
    pub pid: u32,
}

/// What to run in a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub enum Launch {
    /// A command; its stdin carries the `exec` frames.
    Exec(ExecOptions),
    /// A file command of the agent; its stdin carries that command's frames.
    File(FileCommand),
}

impl Launch {
    /// The agent command line that runs it over `pods/exec`.
    pub fn command(&self, agent: &str) -> Vec<String> {
        match self {
            Launch::Exec(o) => exec_command(agent, o),
            Launch::File(f) => f.command(agent),
        }
    }
}

/// The pod a call goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    pub namespace: String,
    pub pod: String,
    /// The Sandbox's UID (its agent token derives from it).
    pub sandbox_uid: String,
    /// Where the pod's agent serves the direct path (pod IP and the `airlock-agent` container
    /// port); `None`: the pod has no agent port.
    pub agent: Option<SocketAddr>,
    /// Environment every command in the sandbox gets before its own: a Sandbox made from a
    /// template has its own `env` here (its pod may be a pool's, started before the Sandbox
    /// existed, so the pod's environment cannot hold it).
    pub env: Vec<(String, String)>,
    /// Found in the gateway's watch cache: an agent that cannot be reached is then
    /// [`AgentError::Stale`], never a `pods/exec` fallback by this (maybe old) pod name.
    pub from_cache: bool,
}

impl PodTarget {
    /// A target reached through `pods/exec` only.
    pub fn pods_exec(namespace: &str, pod: &str) -> Self {
        PodTarget {
            namespace: namespace.into(),
            pod: pod.into(),
            sandbox_uid: String::new(),
            agent: None,
            env: Vec::new(),
            from_cache: false,
        }
    }

    /// The target of a Sandbox's pod (checked to be the Sandbox's own).
    pub fn of(sandbox_uid: &str, pod: &Pod) -> Self {
        let agent = airlock_crds::agent_token::agent_addr(pod);
        PodTarget {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            sandbox_uid: sandbox_uid.into(),
            agent,
            env: Vec::new(),
            from_cache: false,
        }
    }

    /// [`Launch`] with the sandbox's [`PodTarget::env`] put before the command's own (which
    /// wins for a name in both).
    pub fn with_env(&self, launch: &Launch) -> Launch {
        match launch {
            Launch::Exec(o) if !self.env.is_empty() => {
                let mut o = o.clone();
                o.env = self.merged_env(&o.env);
                Launch::Exec(o)
            }
            other => other.clone(),
        }
    }

    /// The sandbox's environment followed by a command's `own` (a name in both: `own`'s).
    pub fn merged_env(&self, own: &[(String, String)]) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.retain(|(k, _)| !own.iter().any(|(k2, _)| k2 == k));
        env.extend(own.iter().cloned());
        env
    }
}

/// Starts agent commands in a pod. Implemented by [`KubeExec`] and [`Routed`]; tests use a local
/// stand-in.
pub trait PodExec: Send + Sync + 'static {
    fn start(
        &self,
        target: &PodTarget,
        launch: &Launch,
    ) -> BoxFuture<'static, Result<RemoteProcess, AgentError>>;
}

/// How the gateway reaches agents (`--agent-transport`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The direct path where the pod's agent serves it; `pods/exec` for pods without an agent
    /// port, and when the agent cannot be reached (nothing was started then).
    Auto,
    /// The direct path only: UNAVAILABLE when the agent cannot be reached.
    Direct,
    /// `pods/exec` only.
    PodsExec,
}

/// The gateway's [`PodExec`]: the direct path ([`direct::DirectExec`]) per [`Transport`], with
/// `fallback` (normally [`KubeExec`]) for the rest.
pub struct Routed {
    pub direct: Option<Arc<direct::DirectExec>>,
    pub transport: Transport,
    pub fallback: Arc<dyn PodExec>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl PodExec for Routed {
    fn start(
        &self,
        target: &PodTarget,
        launch: &Launch,
    ) -> BoxFuture<'static, Result<RemoteProcess, AgentError>> {
        let launch = &target.with_env(launch);
        let direct = match (self.transport, &self.direct, target.agent) {
            (Transport::PodsExec, _, _) | (_, None, _) => None,
            (Transport::Auto, Some(_), None) => None,
            (Transport::Direct, Some(_), None) => {
                let e = AgentError::NoAgentPort {
                    namespace: target.namespace.clone(),
                    pod: target.pod.clone(),
                };
                return Box::pin(async move { Err(e) });
            }
            (_, Some(d), Some(addr)) => Some((d.clone(), addr)),
        };
        let Some((d, addr)) = direct else {
            self.metrics.agent_transport("pods_exec");
            return self.fallback.start(target, launch);
        };
        let (fallback, transport, metrics) = (self.fallback.clone(), self.transport, self.metrics.clone());
        let (target, launch) = (target.clone(), launch.clone());
        Box::pin(async move {
            // A pod from the cache gets the short patience: if it is gone, the caller reads the
            // sandbox again (AgentError::Stale) rather than waiting on an old address.
            let patience = match transport {
                Transport::Direct if !target.from_cache => direct::DIRECT_PATIENCE,
                _ => direct::AUTO_PATIENCE,
            };
            match d.start(&target, addr, &launch, patience).await {
                Ok(p) => {
                    metrics.agent_transport("direct");
                    Ok(p)
                }
                Err(direct::DirectError::Agent(e)) => Err(e),
                Err(e @ direct::DirectError::Unreachable { .. }) if target.from_cache => {
                    Err(AgentError::Stale { message: e.to_string() })
                }
                Err(e @ direct::DirectError::Unreachable { .. }) if transport == Transport::Auto => {
                    tracing::warn!(namespace = %target.namespace, pod = %target.pod, error = %e, "direct path unavailable, using pods/exec");
                    metrics.agent_transport("pods_exec_fallback");
                    fallback.start(&target, &launch).await
                }
                Err(e) => Err(AgentError::Unreachable { message: e.to_string() }),
            }
        })
    }
}

/// Buffer of each pipe between the websocket and the gateway: bounded, so a slow reader stalls the
/// websocket (and through TCP flow control the kubelet and the process) instead of growing memory.
const PIPE_BUF: usize = 64 * 1024;

/// [`PodExec`] through the Kubernetes API's `pods/exec` (websocket), container `sandbox`.
#[derive(Clone)]
pub struct KubeExec {
    pub client: kube::Client,
    /// Path of the agent in the container.
    pub agent_path: String,
}

impl PodExec for KubeExec {
    fn start(
        &self,
        target: &PodTarget,
        launch: &Launch,
    ) -> BoxFuture<'static, Result<RemoteProcess, AgentError>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
        let (namespace, pod) = (target.namespace.clone(), target.pod.clone());
        let command = launch.command(&self.agent_path);
        Box::pin(async move {
            let mut ap = AttachParams::default()
                .container(airlock_crds::labels::MAIN_CONTAINER)
                .stdin(true)
                .stdout(true)
                .stderr(true)
                .tty(false);
            ap.max_stdin_buf_size = Some(PIPE_BUF);
            ap.max_stdout_buf_size = Some(PIPE_BUF);
            ap.max_stderr_buf_size = Some(PIPE_BUF);
            let mut attached =
                api.exec(&pod, command, &ap)
                    .await
                    .map_err(|source| match &source {
                        kube::Error::Api(s) if s.code == 404 => AgentError::PodNotFound {
                            namespace: namespace.clone(),
                            pod: pod.clone(),
                        },
                        _ => AgentError::Start {
                            namespace: namespace.clone(),
                            pod: pod.clone(),
                            source,
                        },
                    })?;
            let missing = |what: &str| AgentError::Failed {
                pod: pod.clone(),
                message: format!("no {what} stream"),
            };
            let stdin = attached.stdin().ok_or_else(|| missing("stdin"))?;
            let stdout = attached.stdout().ok_or_else(|| missing("stdout"))?;
            let stderr = attached.stderr().ok_or_else(|| missing("stderr"))?;
            let status_fut = attached.take_status().ok_or_else(|| missing("status"))?;
            // The status resolves when kube-client's websocket task ends, with the exit status or
            // (connection broken) without. On a broken connection that task returns without
            // shutting the stdout/stderr pipes down, so their readers would wait forever: they are
            // told the connection ended ([`UntilEnded`]). Awaited by a task of its own so that
            // this does not depend on the caller polling the status.
            let ended = CancellationToken::new();
            let (status_tx, status_rx) = tokio::sync::oneshot::channel();
            let e = ended.clone();
            tokio::spawn(async move {
                let s = status_fut.await;
                e.cancel();
                let _ = status_tx.send(s);
            });
            let pod2 = pod.clone();
            let status = Box::pin(async move {
                match status_rx.await.ok().flatten() {
                    None => Err(AgentError::NoStatus { pod: pod2 }),
                    Some(s) => exit_code_from_status(&s)
                        .map_err(|message| AgentError::Failed { pod: pod2, message }),
                }
            });
            Ok(RemoteProcess {
                stdin: Box::pin(stdin),
                stdout: Box::pin(UntilEnded::new(stdout, ended.clone())),
                stderr: Box::pin(UntilEnded::new(stderr, ended)),
                status,
                guard: Box::new(std::sync::Mutex::new(attached)),
                pid: 0,
            })
        })
    }
}

/// A pipe of an exec connection that reads EOF once the connection has ended (`ended` cancelled)
/// and everything written before that was read, even if the writing side was dropped without
/// shutting the pipe down.
pub struct UntilEnded<R> {
    inner: R,
    ended: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl<R> UntilEnded<R> {
    pub fn new(inner: R, ended: CancellationToken) -> Self {
        UntilEnded {
            inner,
            ended: Box::pin(ended.cancelled_owned()),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for UntilEnded<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        use std::task::Poll;
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        if self.ended.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The writer is gone: anything it wrote is buffered already; after that, EOF.
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => Poll::Ready(Ok(())),
        }
    }
}

/// Writes frames to the agent's stdin from two queues, urgent (signals, resizes) before normal
/// (data, close). Keeps stdin open when both queues are closed: only [`StdinWriter::drop_stdin`],
/// [`StdinWriter::kill_and_close`] or dropping the writer closes it.
///
/// Closing stdin while the command runs tells the agent the client is gone (it kills the process
/// group), CLOSE sent or not; ending a command early sends SIGNAL 9 first all the same
/// ([`kill_and_close`]).
///
/// [`kill_and_close`]: StdinWriter::kill_and_close
pub struct StdinWriter {
    pub normal: mpsc::Sender<Bytes>,
    pub urgent: mpsc::Sender<Bytes>,
    /// Stop now, even in the middle of a frame.
    hard: CancellationToken,
    /// Stop once the urgent queue is written.
    soft: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl StdinWriter {
    pub fn spawn(mut stdin: Pin<Box<dyn AsyncWrite + Send>>) -> Self {
        let (normal, mut normal_rx) = mpsc::channel::<Bytes>(8);
        let (urgent, mut urgent_rx) = mpsc::channel::<Bytes>(4);
        let hard = CancellationToken::new();
        let soft = CancellationToken::new();
        let (h, s) = (hard.clone(), soft.clone());
        let task = tokio::spawn(async move {
            let (mut normal_open, mut urgent_open) = (true, true);
            loop {
                let next = tokio::select! {
                    biased;
                    _ = h.cancelled() => return,
                    f = urgent_rx.recv(), if urgent_open => match f { Some(f) => f, None => { urgent_open = false; continue } },
                    _ = s.cancelled() => return,
                    f = normal_rx.recv(), if normal_open => match f { Some(f) => f, None => { normal_open = false; continue } },
                };
                tokio::select! {
                    biased;
                    _ = h.cancelled() => return,
                    r = async { stdin.write_all(&next).await?; stdin.flush().await } => if r.is_err() { return },
                }
            }
        });
        StdinWriter {
            normal,
            urgent,
            hard,
            soft,
            task,
        }
    }

    /// Closes the agent's stdin at once (mid-frame if need be). Before CLOSE was sent this makes
    /// the agent kill the command.
    pub fn drop_stdin(&self) {
        self.hard.cancel();
    }

    /// Sends SIGNAL 9 to the command's process group, then closes stdin. When the urgent queue
    /// is full, closes stdin at once instead.
    pub fn kill_and_close(&self) {
        if self.urgent.try_send(signal_frame(9)).is_err() {
            self.hard.cancel();
        }
        self.soft.cancel();
    }

    /// Sends SIGNAL 9 without closing stdin; when the urgent queue is full, closes stdin.
    pub fn kill(&self) {
        if self.urgent.try_send(signal_frame(9)).is_err() {
            self.hard.cancel();
        }
    }
}

impl Drop for StdinWriter {
    fn drop(&mut self) {
        self.hard.cancel();
        self.task.abort();
    }
}

/// How long the gateway waits for a command to end after it sent SIGKILL (or closed stdin)
/// before it gives up on the connection.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

pub mod direct;

#[cfg(test)]
mod tests;
