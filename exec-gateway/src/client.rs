//! A small ergonomic client for the Airlock API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use airlock_exec_gateway::client::{AirlockClient, sandbox_ref};
//! use airlock_exec_gateway::proto::v1 as pb;
//! let client = AirlockClient::connect("http://127.0.0.1:50051", Some("TOKEN".into())).await?;
//! let sb = client
//!     .create_sandbox(pb::CreateSandboxRequest {
//!         source: Some(pb::create_sandbox_request::Source::Image("python:3.12-slim".into())),
//!         wait_ready: true,
//!         ..Default::default()
//!     })
//!     .await?;
//! let out = client.exec_collect(AirlockClient::argv(&sb.namespace, &sb.name, ["python3", "-c", "print(1+1)"])).await?;
//! assert_eq!(out.stdout, b"2\n");
//! client.delete_sandbox(&sb.namespace, &sb.name).await?;
//! # Ok(()) }
//! ```
//!
//! Over 600 lines (barely): connection (plain and TLS) and one method per RPC; the client moves to
//! its own crate, split by service, in issue 11 (layout).

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};

use crate::proto::v1 as pb;

/// Errors of connecting.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid gateway address {addr:?}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connecting to the gateway at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the token contains characters not allowed in a header")]
    Token,
    #[error("reading the CA certificate {path}: {source}")]
    CaCert {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} needs an https:// gateway address")]
    TlsWithoutHttps(&'static str),
    #[error("TLS settings for {addr}: {source}")]
    Tls {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// TLS settings of a connection to an `https://` address.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA certificate(s) to trust; `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Name the server certificate must carry; `None`: the address's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Reads the CA certificate file (`--ca-cert`, `AIRLOCK_CA_CERT`).
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<Self, ClientError> {
        self.ca_pem = Some(std::fs::read(path).map_err(|source| ClientError::CaCert {
            path: path.display().to_string(),
            source,
        })?);
        Ok(self)
    }
}

/// Adds `authorization: Bearer TOKEN` to every call.
#[derive(Clone)]
pub struct TokenInterceptor {
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, TokenInterceptor>;

/// Largest message the client accepts.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Chunk size of uploads.
pub const UPLOAD_CHUNK: usize = 256 * 1024;

/// Output of a command run to completion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub signal: i32,
    pub timed_out: bool,
}

/// Client of the three Airlock services over one connection.
#[derive(Clone)]
pub struct AirlockClient {
    channel: Channel,
    interceptor: TokenInterceptor,
}

/// A [`pb::SandboxRef`].
pub fn sandbox_ref(namespace: &str, name: &str) -> Option<pb::SandboxRef> {
    Some(pb::SandboxRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

fn normalize(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl AirlockClient {
    /// Connects to `addr` (`http://host:port`, `https://host:port` with the system's roots, or
    /// `host:port`), sending `token` on every call.
    pub async fn connect(addr: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::connect_with(addr, token, ClientTls::default()).await
    }

    /// Like [`AirlockClient::connect`], with TLS settings for an `https://` address (a CA or a
    /// server name with a plaintext `http://` address is an error, not silently ignored).
    pub async fn connect_with(
        addr: &str,
        token: Option<String>,
        tls: ClientTls,
    ) -> Result<Self, ClientError> {
        let url = normalize(addr);
        let https = url.starts_with("https://");
        if !https && tls.ca_pem.is_some() {
            return Err(ClientError::TlsWithoutHttps("a CA certificate"));
        }
        if !https && tls.server_name.is_some() {
            return Err(ClientError::TlsWithoutHttps("a TLS server name"));
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|source| ClientError::Address {
                addr: addr.to_string(),
                source,
            })?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if https {
            let mut cfg = tonic::transport::ClientTlsConfig::new();
            cfg = match &tls.ca_pem {
                Some(pem) => cfg.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                None => cfg.with_native_roots(),
            };
            if let Some(name) = &tls.server_name {
                cfg = cfg.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(cfg)
                .map_err(|source| ClientError::Tls {
                    addr: url.clone(),
                    source,
                })?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect { addr: url, source })?;
        Self::from_channel(channel, token)
    }

    /// Uses an existing channel.
    pub fn from_channel(channel: Channel, token: Option<String>) -> Result<Self, ClientError> {
        let header = match token.filter(|t| !t.is_empty()) {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| ClientError::Token)?,
            ),
            None => None,
        };
        Ok(AirlockClient {
            channel,
            interceptor: TokenInterceptor { header },
        })
    }

    /// The generated Sandboxes client.
    pub fn sandboxes(&self) -> pb::sandboxes_client::SandboxesClient<Svc> {
        pb::sandboxes_client::SandboxesClient::with_interceptor(
            self.channel.clone(),
            self.interceptor.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE)
    }

    /// The generated Processes client.
    pub fn processes(&self) -> pb::processes_client::ProcessesClient<Svc> {
        pb::processes_client::ProcessesClient::with_interceptor(
            self.channel.clone(),
            self.interceptor.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
    }

    /// The generated Files client.
    pub fn files(&self) -> pb::files_client::FilesClient<Svc> {
        pb::files_client::FilesClient::with_interceptor(
            self.channel.clone(),
            self.interceptor.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
    }

    // --- sandboxes -------------------------------------------------------------------------

    pub async fn create_sandbox(
        &self,
        req: pb::CreateSandboxRequest,
    ) -> Result<pb::Sandbox, Status> {
        self.sandboxes()
            .create_sandbox(req)
            .await
            .map(|r| r.into_inner())
    }

    /// Creates a sandbox and waits until it is Ready, at most `timeout`.
    pub async fn create_sandbox_ready(
        &self,
        mut req: pb::CreateSandboxRequest,
        timeout: Duration,
    ) -> Result<pb::Sandbox, Status> {
        req.wait_ready = true;
        let mut r = Request::new(req);
        r.set_timeout(timeout);
        self.sandboxes()
            .create_sandbox(r)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get_sandbox(&self, namespace: &str, name: &str) -> Result<pb::Sandbox, Status> {
        self.sandboxes()
            .get_sandbox(pb::GetSandboxRequest {
                sandbox: sandbox_ref(namespace, name),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn list_sandboxes(
        &self,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<pb::Sandbox>, Status> {
        self.sandboxes()
            .list_sandboxes(pb::ListSandboxesRequest {
                namespace: namespace.into(),
                label_selector: label_selector.into(),
            })
            .await
            .map(|r| r.into_inner().sandboxes)
    }

    pub async fn delete_sandbox(&self, namespace: &str, name: &str) -> Result<(), Status> {
        self.sandboxes()
            .delete_sandbox(pb::DeleteSandboxRequest {
                sandbox: sandbox_ref(namespace, name),
            })
            .await
            .map(|_| ())
    }

    pub async fn extend_sandbox(
        &self,
        namespace: &str,
        name: &str,
        add_seconds: i64,
    ) -> Result<pb::Sandbox, Status> {
        self.sandboxes()
            .extend_sandbox(pb::ExtendSandboxRequest {
                sandbox: sandbox_ref(namespace, name),
                add_seconds,
            })
            .await
            .map(|r| r.into_inner())
    }

    // --- processes -------------------------------------------------------------------------

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

    // --- files -----------------------------------------------------------------------------

    /// Uploads everything `reader` yields to `path` (atomic replace).
    pub async fn upload<R>(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        mode: u32,
        parents: bool,
        mut reader: R,
    ) -> Result<u64, Status>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<pb::UploadRequest>(4);
        let header = pb::UploadHeader {
            sandbox: sandbox_ref(namespace, name),
            path: path.into(),
            mode,
            parents,
        };
        tx.send(pb::UploadRequest {
            part: Some(pb::upload_request::Part::Header(header)),
        })
        .await
        .map_err(|_| Status::internal("upload channel closed"))?;
        let (err_tx, mut err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
        tokio::spawn(async move {
            loop {
                let mut buf = bytes::BytesMut::with_capacity(UPLOAD_CHUNK);
                match (&mut reader)
                    .take(UPLOAD_CHUNK as u64)
                    .read_buf(&mut buf)
                    .await
                {
                    Ok(0) => return,
                    Ok(_) => {
                        let chunk: Bytes = buf.freeze();
                        if tx
                            .send(pb::UploadRequest {
                                part: Some(pb::upload_request::Part::Chunk(chunk)),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        // Dropping tx without finishing would look like a clean end: keep the
                        // stream open until the error is reported and the call cancelled.
                        let _ = err_tx.send(e);
                        std::future::pending::<()>().await;
                        return;
                    }
                }
            }
        });
        let mut files = self.files();
        let call = files.upload(ReceiverStream::new(rx));
        tokio::select! {
            r = call => r.map(|r| r.into_inner().size),
            Ok(e) = &mut err_rx => Err(Status::cancelled(format!("reading the local file: {e}"))),
        }
    }

    /// Uploads `data` to `path`.
    pub async fn upload_bytes(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        mode: u32,
        data: Bytes,
    ) -> Result<u64, Status> {
        self.upload(
            namespace,
            name,
            path,
            mode,
            false,
            std::io::Cursor::new(data),
        )
        .await
    }

    /// Starts a download; the stream yields chunks.
    pub async fn download(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
    ) -> Result<Streaming<pb::DownloadResponse>, Status> {
        self.files()
            .download(pb::DownloadRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Downloads `path` into `w`; returns the number of bytes.
    pub async fn download_to<W: AsyncWrite + Unpin>(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        w: &mut W,
    ) -> Result<u64, Status> {
        let mut s = self.download(namespace, name, path).await?;
        let mut n = 0u64;
        while let Some(m) = s.message().await? {
            w.write_all(&m.chunk)
                .await
                .map_err(|e| Status::internal(format!("writing the local file: {e}")))?;
            n += m.chunk.len() as u64;
        }
        w.flush()
            .await
            .map_err(|e| Status::internal(format!("writing the local file: {e}")))?;
        Ok(n)
    }

    /// Downloads `path` into memory.
    pub async fn download_bytes(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
    ) -> Result<Vec<u8>, Status> {
        let mut v = Vec::new();
        self.download_to(namespace, name, path, &mut v).await?;
        Ok(v)
    }

    pub async fn list_dir(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
    ) -> Result<Vec<pb::FileInfo>, Status> {
        self.files()
            .list_dir(pb::ListDirRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
            })
            .await
            .map(|r| r.into_inner().entries)
    }

    pub async fn stat(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
    ) -> Result<pb::FileInfo, Status> {
        self.files()
            .stat(pb::StatRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn remove(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), Status> {
        self.files()
            .remove(pb::RemoveRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
                recursive,
            })
            .await
            .map(|_| ())
    }

    pub async fn make_dir(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        parents: bool,
        mode: u32,
    ) -> Result<(), Status> {
        self.files()
            .make_dir(pb::MakeDirRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
                parents,
                mode,
            })
            .await
            .map(|_| ())
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
                return Ok(out);
            }
            Some(Event::Started(_)) | None => {}
        }
    }
    Err(Status::unknown(
        "the command's event stream ended without an exit event",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses() {
        assert_eq!(
            super::normalize("localhost:50051"),
            "http://localhost:50051"
        );
        assert_eq!(super::normalize("https://x:1"), "https://x:1");
    }
}
