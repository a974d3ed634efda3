//! The direct path: the gateway talks to the agent's TCP service in the pod
//! (`airlock-agent init --listen`, docs/DESIGN-NOTES.md "Agent TCP service") instead of going
//! through the API server, the kubelet and CRI exec.
//!
//! A call is one connection: HELLO with the sandbox's token (`HMAC-SHA256(key, sandbox UID)`),
//! then START with `attach` and `kill_on_disconnect`, then the agent streams STDOUT/STDERR and
//! EXIT. The gateway's side is the same [`RemoteProcess`] as over `pods/exec`:
//! - a command ([`Launch::Exec`]) is started natively by the agent's process table; what the
//!   gateway writes to its stdin are already the `exec` frames (DATA, CLOSE, SIGNAL, RESIZE),
//!   which the agent takes on a streaming connection as they are, so they are passed through
//!   whole (a partial frame left by an abandoned write is dropped);
//! - a file command ([`Launch::File`]) runs `airlock-agent get/put/...` as the process, and the
//!   bytes the gateway writes to its stdin (the file command's own frames) travel in DATA frames.
//!
//! Closing stdin means what it means over `pods/exec`: for a command, the caller is gone (the
//! agent gets SIGNAL 9 for the process group, and its shim ends the rest of the tree); for a file
//! command, end of input (CLOSE). Dropping the [`RemoteProcess`] closes the connection, and the
//! agent kills the whole tree (`kill_on_disconnect`).
//!
//! Nothing has started until the agent answered START, so an unreachable agent or a refused
//! HELLO is [`DirectError::Unreachable`], after which the caller may use `pods/exec` instead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_agent_protocol::{
    self as proto, ErrorCode, ErrorMsg, Exit, FrameReader, Hello, Start, Started, a2c, c2a,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

use super::{AgentError, Launch, PodTarget, RemoteProcess, signal_frame};

/// Bytes between the agent connection and the gateway's readers and writers, per pipe: bounded,
/// so a slow caller stalls the agent (which stops reading the process's output) instead of
/// growing memory.
const PIPE_BUF: usize = 64 * 1024;

/// How long the agent may take to answer HELLO at least (longer within the call's patience).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest single connection attempt.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(1);
/// Pause between connection attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a call that must go direct (`--agent-transport direct`, background processes) keeps
/// trying to connect.
pub const DIRECT_PATIENCE: Duration = Duration::from_secs(30);
/// How long `--agent-transport auto` tries before it takes `pods/exec` instead.
pub const AUTO_PATIENCE: Duration = Duration::from_secs(1);

/// TCP keepalive of agent connections: first probe after this long without traffic...
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ...then one every this long...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and the connection is dead after this many unanswered.
const KEEPALIVE_RETRIES: u32 = 3;

/// Failures of the direct path.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// Nothing was started: the caller may fall back to `pods/exec`.
    #[error("agent of pod {namespace}/{pod} at {addr} not reachable: {why}")]
    Unreachable {
        namespace: String,
        pod: String,
        addr: SocketAddr,
        why: String,
    },
    /// After START was sent: the process may be running, so no fallback.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Reaches agents directly with tokens derived from `key`.
pub struct DirectExec {
    key: Arc<Vec<u8>>,
    agent_path: String,
}

impl DirectExec {
    pub fn new(key: Arc<Vec<u8>>, agent_path: String) -> Self {
        DirectExec { key, agent_path }
    }

    /// An authenticated connection to the pod's agent at `addr` (HELLO answered OK): ready for
    /// one request. Connecting is tried again for up to `patience`: a pod that just became Ready
    /// may not be admitted by its NetworkPolicy yet (the CNI programs it a moment later).
    pub async fn open(
        &self,
        target: &PodTarget,
        addr: SocketAddr,
        patience: Duration,
    ) -> Result<AgentConn, DirectError> {
        let unreachable = |why: String| DirectError::Unreachable {
            namespace: target.namespace.clone(),
            pod: target.pod.clone(),
            addr,
            why,
        };
        let token = airlock_crds::agent_token::derive(&self.key, &target.sandbox_uid);
        let until = tokio::time::Instant::now() + patience;
        let stream = loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            let attempt = left.min(CONNECT_ATTEMPT).max(Duration::from_millis(100));
            let why = match tokio::time::timeout(attempt, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => break s,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no connection within {attempt:?}"),
            };
            if tokio::time::Instant::now() + RETRY_PAUSE >= until {
                return Err(unreachable(format!("{why} (tried for {patience:?})")));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        };
        let _ = stream.set_nodelay(true);
        // A node or pod that vanishes without a FIN must not leave a call waiting forever: the
        // connection is given up after about a minute without answers to keepalive probes.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (rd, mut wr) = stream.into_split();
        let mut rd = Frames::new(rd);
        let hello = Hello {
            token: token.into_bytes(),
            version: proto::VERSION,
        };
        wr.write_all(&proto::frame(c2a::HELLO, &hello.encode()))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // A busy agent (hundreds of connections at once, a sandbox with little CPU) may answer
        // late: it is alive, so the call waits for it as long as its patience lasts.
        let hello_wait = HELLO_TIMEOUT.max(until.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(hello_wait, rd.next()).await {
            Err(_) => Err(unreachable(format!("no answer to HELLO within {hello_wait:?}"))),
            Ok(Err(e)) => Err(unreachable(e)),
            Ok(Ok(None)) => Err(unreachable("closed before answering HELLO".into())),
            Ok(Ok(Some((a2c::OK, _)))) => Ok(AgentConn { rd, wr }),
            Ok(Ok(Some((a2c::ERROR, p)))) => Err(unreachable(match ErrorMsg::decode(&p) {
                Ok(e) => format!("HELLO refused: {e}"),
                Err(e) => format!("HELLO refused: {e}"),
            })),
            Ok(Ok(Some((t, _)))) => Err(unreachable(format!("answer 0x{t:02x} to HELLO"))),
        }
    }

    /// Starts `launch` in the pod's agent at `addr`.
    pub async fn start(
        &self,
        target: &PodTarget,
        addr: SocketAddr,
        launch: &Launch,
        patience: Duration,
    ) -> Result<RemoteProcess, DirectError> {
        let failed = |message: String| {
            DirectError::Agent(AgentError::Failed {
                pod: target.pod.clone(),
                message,
            })
        };
        let AgentConn { mut rd, mut wr } = self.open(target, addr, patience).await?;

        let passthrough = matches!(launch, Launch::Exec(_));
        let start = start_message(launch, &self.agent_path);
        wr.write_all(&proto::frame(c2a::START, &start.encode()))
            .await
            .map_err(|e| failed(format!("sending START: {e}")))?;
        let started = match rd.next().await.map_err(&failed)? {
            Some((a2c::STARTED, p)) => Started::decode(&p).map_err(|e| failed(e.to_string()))?,
            Some((a2c::ERROR, p)) => {
                let e = ErrorMsg::decode(&p).map_err(|e| failed(e.to_string()))?;
                return spawn_failure(&e).ok_or_else(|| failed(e.to_string()));
            }
            Some((t, _)) => return Err(failed(format!("answer 0x{t:02x} to START"))),
            None => return Err(failed("the agent closed the connection after START".into())),
        };
        tracing::debug!(namespace = %target.namespace, pod = %target.pod, pid = started.pid, "started through the agent's direct path");

        // Duplex pipes (one end each way): dropping an end closes the pipe for the other, so a
        // caller that lets go of stdin is end of input, and one that drops stdout stops nothing
        // else. (`tokio::io::simplex` halves do not close on drop.)
        let (stdout_r, stdout_w) = tokio::io::duplex(PIPE_BUF);
        let (stderr_r, stderr_w) = tokio::io::duplex(PIPE_BUF);
        let (stdin_r, stdin_w) = tokio::io::duplex(PIPE_BUF);
        let (status_tx, status_rx) = tokio::sync::oneshot::channel();
        let closed = CancellationToken::new();
        let exited = CancellationToken::new();
        let pod = target.pod.clone();
        tokio::spawn(read_output(rd, stdout_w, stderr_w, status_tx, exited.clone(), closed.clone(), pod.clone()));
        tokio::spawn(write_input(stdin_r, wr, passthrough, closed.clone(), exited));
        let status = Box::pin(async move {
            match status_rx.await {
                Ok(r) => r,
                Err(_) => Err(AgentError::NoStatus { pod }),
            }
        });
        Ok(RemoteProcess {
            stdin: Box::pin(stdin_w),
            stdout: Box::pin(stdout_r),
            stderr: Box::pin(stderr_r),
            status,
            guard: Box::new(closed.drop_guard()),
            pid: started.pid,
        })
    }
}

/// START for `launch`: always attached and killed with the connection.
fn start_message(launch: &Launch, agent_path: &str) -> Start {
    let bytes = |v: &[String]| v.iter().map(|s| s.as_bytes().to_vec()).collect();
    let mut s = match launch {
        Launch::Exec(o) => Start {
            argv: bytes(o.fd3.as_ref().map_or(&o.argv, |(argv, _)| argv)),
            fd3: o.fd3.as_ref().map(|(_, code)| code.clone()).unwrap_or_default(),
            env: o.env.iter().map(|(k, v)| format!("{k}={v}").into_bytes()).collect(),
            cwd: o.cwd.as_ref().map(|c| c.as_bytes().to_vec()),
            tty: o.tty,
            size: if o.tty { o.size } else { None },
            timeout_ms: o.timeout_ms,
            ..Start::default()
        },
        Launch::File(f) => Start {
            argv: bytes(&f.command(agent_path)),
            ..Start::default()
        },
    };
    s.attach = true;
    s.kill_on_disconnect = true;
    s
}

/// A START the agent refused because the program could not be run is, as over `pods/exec`, a
/// process that wrote `airlock-agent: <why>` to stderr and exited 127 (not found) or 126.
fn spawn_failure(e: &ErrorMsg) -> Option<RemoteProcess> {
    let code = match e.code {
        ErrorCode::NotFound => 127,
        ErrorCode::FailedPrecondition => 126,
        _ => return None,
    };
    let stderr = format!("airlock-agent: {}\n", e.message).into_bytes();
    Some(RemoteProcess {
        stdin: Box::pin(tokio::io::sink()),
        stdout: Box::pin(tokio::io::empty()),
        stderr: Box::pin(std::io::Cursor::new(stderr)),
        status: Box::pin(async move { Ok(code) }),
        guard: Box::new(()),
        pid: 0,
    })
}

/// Output frames into the two pipes; EXIT (after the last output byte) resolves the status and
/// ends the pipes. A caller that stopped reading a pipe does not stop the rest.
async fn read_output(
    rd: Frames,
    stdout: tokio::io::DuplexStream,
    stderr: tokio::io::DuplexStream,
    status: tokio::sync::oneshot::Sender<Result<i32, AgentError>>,
    exited: CancellationToken,
    closed: CancellationToken,
    pod: String,
) {
    // Once the caller lets go of the process, the connection goes entirely (this read half
    // with it), whatever the agent was sending.
    tokio::select! {
        _ = closed.cancelled() => {}
        _ = relay_output(rd, stdout, stderr, status, exited, pod) => {}
    }
}

async fn relay_output(
    mut rd: Frames,
    mut stdout: tokio::io::DuplexStream,
    mut stderr: tokio::io::DuplexStream,
    status: tokio::sync::oneshot::Sender<Result<i32, AgentError>>,
    exited: CancellationToken,
    pod: String,
) {
    let failed = |message: String| AgentError::Failed {
        pod: pod.clone(),
        message,
    };
    let (mut out_at, mut err_at) = (0u64, 0u64);
    let (mut out_open, mut err_open) = (true, true);
    let result = loop {
        let (typ, p) = match rd.next().await {
            Ok(Some(f)) => f,
            Ok(None) => break Err(AgentError::NoStatus { pod: pod.clone() }),
            Err(e) => break Err(failed(e)),
        };
        match typ {
            a2c::STDOUT | a2c::STDERR => {
                let Ok((offset, data)) = proto::parse_output(&p) else {
                    break Err(failed("malformed output frame".into()));
                };
                let (at, open, pipe) = if typ == a2c::STDOUT {
                    (&mut out_at, &mut out_open, &mut stdout)
                } else {
                    (&mut err_at, &mut err_open, &mut stderr)
                };
                if offset != *at {
                    break Err(failed(format!("output at offset {offset}, expected {at}")));
                }
                *at += data.len() as u64;
                if *open && pipe.write_all(data).await.is_err() {
                    *open = false;
                }
            }
            a2c::EXIT => match Exit::decode(&p) {
                Ok(e) => break Ok(e.code),
                Err(e) => break Err(failed(e.to_string())),
            },
            a2c::ERROR => {
                break Err(failed(match ErrorMsg::decode(&p) {
                    Ok(e) => e.to_string(),
                    Err(e) => e.to_string(),
                }));
            }
            // Answers to the frames the gateway sends on the stream (none expected).
            _ => {}
        }
    };
    exited.cancel();
    let _ = stdout.shutdown().await;
    let _ = stderr.shutdown().await;
    drop((stdout, stderr));
    let _ = status.send(result);
}

/// What the gateway writes to the process's stdin, to the connection (see the module notes);
/// the connection stays open until the process's guard is dropped.
async fn write_input(
    mut stdin: tokio::io::DuplexStream,
    mut wr: OwnedWriteHalf,
    passthrough: bool,
    closed: CancellationToken,
    exited: CancellationToken,
) {
    let mut buf = vec![0u8; PIPE_BUF];
    let mut frames = FrameReader::new();
    let forward = async {
        loop {
            let n = match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let out = if passthrough {
                frames.push(&buf[..n]);
                let mut whole = Vec::new();
                while let Ok(Some((t, p))) = frames.next_frame() {
                    proto::put_frame(&mut whole, t, &p);
                }
                whole
            } else {
                proto::frame(c2a::DATA, &buf[..n])
            };
            if !out.is_empty() && wr.write_all(&out).await.is_err() {
                return false;
            }
        }
        // End of input.
        let last = if passthrough {
            signal_frame(9).to_vec()
        } else {
            proto::frame(c2a::CLOSE, &[])
        };
        if passthrough && exited.is_cancelled() {
            return true;
        }
        wr.write_all(&last).await.is_ok()
    };
    tokio::select! {
        _ = closed.cancelled() => return,
        _ = forward => {}
    }
    // Keep the connection until the caller lets go of the process.
    closed.cancelled().await;
}

/// An authenticated connection to an agent, for one request (docs/DESIGN-NOTES.md "Agent TCP
/// service").
pub struct AgentConn {
    rd: Frames,
    wr: OwnedWriteHalf,
}

impl AgentConn {
    /// Sends one frame.
    pub async fn send(&mut self, typ: u8, payload: &[u8]) -> Result<(), String> {
        self.wr
            .write_all(&proto::frame(typ, payload))
            .await
            .map_err(|e| format!("writing to the agent: {e}"))
    }

    /// The next frame; `None` when the agent closed the connection.
    pub async fn next(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        self.rd.next().await
    }
}

/// Frames from the agent.
struct Frames {
    rd: BufReader<OwnedReadHalf>,
}

impl Frames {
    fn new(rd: OwnedReadHalf) -> Self {
        Frames {
            rd: BufReader::with_capacity(PIPE_BUF, rd),
        }
    }

    /// The next frame; `None` at a clean end of the connection.
    async fn next(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let mut head = [0u8; 5];
        match self.rd.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(format!("reading from the agent: {e}")),
        }
        self.rd
            .read_exact(&mut head[1..])
            .await
            .map_err(|e| format!("reading from the agent: {e}"))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > proto::MAX_FRAME {
            return Err(format!("frame of {len} bytes from the agent is over the limit"));
        }
        let mut p = vec![0u8; len];
        self.rd
            .read_exact(&mut p)
            .await
            .map_err(|e| format!("reading from the agent: {e}"))?;
        Ok(Some((head[0], p)))
    }
}
