//! A small ergonomic client for the Airlock API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use airlock_api::client::{AirlockClient, sandbox_ref};
//! use airlock_api::proto::v1 as pb;
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
//! Connection (plain and TLS) and the generated clients here; the convenience methods of each
//! service in `sandboxes.rs`, `processes.rs` and `files.rs` beside this file.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::proto::v1 as pb;

mod files;
mod processes;
mod sandboxes;

pub use processes::collect;

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
