//! Accepting connections: a global bound on open connections, and TLS when configured.
//!
//! The gRPC server bounds each connection (`max_concurrent_streams`, the HTTP/2 limit of
//! concurrent streams, and `concurrency_per_connection`, requests being handled at once); this
//! module bounds how many connections are open at once ([`ServerLimits::max_connections`]): at
//! the limit the gateway stops accepting until one closes, so the total number of streams is at
//! most `max_connections * max_concurrent_streams`. TLS handshakes run off the accept loop (a
//! slow client cannot stall it) and must finish within [`HANDSHAKE_TIMEOUT`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection and stream limits of the gRPC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once (all clients together).
    pub max_connections: usize,
    /// HTTP/2 streams (calls) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Requests being handled at once on one connection; 0: no such limit. Off by default:
    /// tonic's per-connection limit is released when a response's headers are sent, so it does
    /// not bound streaming calls (`max_concurrent_streams` does), and with it enabled tonic's
    /// service stack changes how an exec stream that its client drops right after `Exited`
    /// ends (counted CANCELLED rather than OK by the metrics; see exec-gateway/tests).
    pub concurrency_per_connection: usize,
}

impl Default for ServerLimits {
    /// 1024 connections, 256 streams per connection, no per-connection request limit.
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            max_concurrent_streams: 256,
            concurrency_per_connection: 0,
        }
    }
}

/// An accepted connection (plaintext or TLS), holding its slot until closed.
pub struct Conn {
    io: Io,
    _slot: OwnedSemaphorePermit,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        match &self.io {
            Io::Plain(s) => s.connect_info(),
            Io::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` (at most `max_connections` open at once), completing the
/// TLS handshake first when `tls` is set. The accept loop ends when the returned stream is
/// dropped (the server stopped accepting).
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(16);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let slot = if let Ok(p) = slots.clone().try_acquire_owned() {
                warned = false;
                p
            } else {
                if !warned {
                    tracing::warn!(
                        max_connections,
                        "connection limit reached: not accepting until a connection closes"
                    );
                    warned = true;
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                }
            };
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            match &acceptor {
                None => {
                    if tx
                        .send(Ok(Conn {
                            io: Io::Plain(tcp),
                            _slot: slot,
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Some(acceptor) => {
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let _ = tx
                                    .send(Ok(Conn {
                                        io: Io::Tls(Box::new(s)),
                                        _slot: slot,
                                    }))
                                    .await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// [`incoming`] as an axum listener (the e2b HTTP API): the same connection limit and TLS.
pub struct AxumIncoming {
    conns: ReceiverStream<io::Result<Conn>>,
    addr: std::net::SocketAddr,
}

impl AxumIncoming {
    pub fn new(listener: TcpListener, max_connections: usize, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        Ok(AxumIncoming { conns: incoming(listener, max_connections, tls), addr })
    }
}

impl axum::serve::Listener for AxumIncoming {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Conn, std::net::SocketAddr) {
        use futures::StreamExt;
        loop {
            match self.conns.next().await {
                Some(Ok(c)) => {
                    let peer = c.connect_info().remote_addr().unwrap_or(self.addr);
                    return (c, peer);
                }
                // A failed handshake or accept was logged by `incoming`; wait for the next.
                Some(Err(_)) => continue,
                // The accept loop ended: accept nothing more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn at_most_max_connections_are_accepted_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = incoming(listener, 2, None);
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let _c3 = TcpStream::connect(addr).await.unwrap();
        let a = conns.next().await.unwrap().unwrap();
        let _b = conns.next().await.unwrap().unwrap();
        // The third is connected at the TCP level (backlog) but not handed to the server...
        let third = tokio::time::timeout(Duration::from_millis(200), conns.next()).await;
        assert!(
            third.is_err(),
            "a third connection was accepted beyond the limit"
        );
        // ...until one of the first two closes.
        drop(a);
        conns.next().await.unwrap().unwrap();
    }
}
