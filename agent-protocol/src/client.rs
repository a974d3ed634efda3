//! A blocking client (std::net) for the agent's TCP service: the agent's tests use it, and it
//! documents the conversation the gateway's async client has to follow.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::{
    Activity, End, ErrorMsg, Exit, FrameReader, Hello, ProcInfo, ProtoError, Started, VERSION, a2c,
    c2a, frame, parse_output,
};

/// One frame from the agent, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Error(ErrorMsg),
    Started(Started),
    Stdout(u64, Vec<u8>),
    Stderr(u64, Vec<u8>),
    Exit(Exit),
    Procs(Vec<ProcInfo>),
    Activity(Activity),
    End(End),
}

impl Reply {
    pub fn decode(typ: u8, p: &[u8]) -> Result<Reply, ProtoError> {
        Ok(match typ {
            a2c::OK => Reply::Ok,
            a2c::ERROR => Reply::Error(ErrorMsg::decode(p)?),
            a2c::STARTED => Reply::Started(Started::decode(p)?),
            a2c::STDOUT => {
                let (o, d) = parse_output(p)?;
                Reply::Stdout(o, d.to_vec())
            }
            a2c::STDERR => {
                let (o, d) = parse_output(p)?;
                Reply::Stderr(o, d.to_vec())
            }
            a2c::EXIT => Reply::Exit(Exit::decode(p)?),
            a2c::PROCS => Reply::Procs(ProcInfo::decode_list(p)?),
            a2c::ACTIVITY => Reply::Activity(Activity::decode(p)?),
            a2c::END => Reply::End(End::decode(p)?),
            _ => {
                return Err(ProtoError::BadField {
                    field: "frame type",
                    why: "unknown",
                });
            }
        })
    }
}

#[derive(Debug)]
pub enum ClientError {
    Io(std::io::Error),
    Proto(ProtoError),
    /// The agent answered ERROR.
    Agent(ErrorMsg),
    /// The connection ended before the answer.
    Closed,
    /// An answer of the wrong kind.
    Unexpected(Box<Reply>),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "agent connection: {e}"),
            ClientError::Proto(e) => write!(f, "agent protocol: {e}"),
            ClientError::Agent(e) => write!(f, "agent: {e}"),
            ClientError::Closed => write!(f, "the agent closed the connection"),
            ClientError::Unexpected(r) => write!(f, "unexpected answer from the agent: {r:?}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}
impl From<ProtoError> for ClientError {
    fn from(e: ProtoError) -> Self {
        ClientError::Proto(e)
    }
}

/// One authenticated connection (one request; streams until EXIT/END/ERROR).
pub struct Client {
    stream: TcpStream,
    reader: FrameReader,
    buf: Vec<u8>,
}

impl Client {
    /// Connects and sends HELLO with `token`; waits for OK.
    pub fn connect(addr: SocketAddr, token: &[u8]) -> Result<Client, ClientError> {
        Client::connect_within(addr, token, Duration::from_secs(10))
    }

    /// [`Client::connect`], with `timeout` for connecting and for each read and write after it.
    pub fn connect_within(
        addr: SocketAddr,
        token: &[u8],
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut c = Client {
            stream,
            reader: FrameReader::new(),
            buf: vec![0; 64 * 1024],
        };
        let hello = Hello {
            token: token.to_vec(),
            version: VERSION,
        };
        c.send(c2a::HELLO, &hello.encode())?;
        match c.recv()? {
            Some(Reply::Ok) => Ok(c),
            Some(Reply::Error(e)) => Err(ClientError::Agent(e)),
            Some(r) => Err(ClientError::Unexpected(Box::new(r))),
            None => Err(ClientError::Closed),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<(), ClientError> {
        Ok(self.stream.set_read_timeout(t)?)
    }

    pub fn send(&mut self, typ: u8, payload: &[u8]) -> Result<(), ClientError> {
        Ok(self.stream.write_all(&frame(typ, payload))?)
    }

    /// Half-closes the sending side (the agent sees EOF: the caller went away).
    pub fn shutdown_write(&self) -> Result<(), ClientError> {
        Ok(self.stream.shutdown(Shutdown::Write)?)
    }

    /// The next frame; None when the agent closed the connection.
    pub fn recv(&mut self) -> Result<Option<Reply>, ClientError> {
        loop {
            if let Some((typ, p)) = self.reader.next_frame()? {
                return Ok(Some(Reply::decode(typ, &p)?));
            }
            let n = self.stream.read(&mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.reader.push(&self.buf[..n]);
        }
    }

    /// Sends one request and returns its single answer (ERROR becomes `ClientError::Agent`).
    pub fn call(&mut self, typ: u8, payload: &[u8]) -> Result<Reply, ClientError> {
        self.send(typ, payload)?;
        match self.recv()? {
            Some(Reply::Error(e)) => Err(ClientError::Agent(e)),
            Some(r) => Ok(r),
            None => Err(ClientError::Closed),
        }
    }

    /// Reads output until EXIT (or END), returning (stdout, stderr, the last frame). Offsets are
    /// checked: a frame that does not continue where the previous one ended is an error.
    pub fn collect(
        &mut self,
        mut out_at: u64,
        mut err_at: u64,
    ) -> Result<(Vec<u8>, Vec<u8>, Reply), ClientError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.recv()? {
                Some(Reply::Stdout(o, d)) => {
                    if o != out_at {
                        return Err(ClientError::Unexpected(Box::new(Reply::Stdout(o, d))));
                    }
                    out_at += d.len() as u64;
                    out.extend_from_slice(&d);
                }
                Some(Reply::Stderr(o, d)) => {
                    if o != err_at {
                        return Err(ClientError::Unexpected(Box::new(Reply::Stderr(o, d))));
                    }
                    err_at += d.len() as u64;
                    err.extend_from_slice(&d);
                }
                Some(Reply::Error(e)) => return Err(ClientError::Agent(e)),
                Some(r @ (Reply::Exit(_) | Reply::End(_))) => return Ok((out, err, r)),
                Some(Reply::Started(_)) => {}
                Some(r) => return Err(ClientError::Unexpected(Box::new(r))),
                None => return Err(ClientError::Closed),
            }
        }
    }
}
