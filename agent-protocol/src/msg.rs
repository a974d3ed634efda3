//! The structured messages (field lists) of the agent's TCP service.

use crate::{Fields, ProtoError, fields, get_flag, get_i32, get_str, get_u32, get_u64};

/// Field tags (one namespace for every message, so a tag means the same thing everywhere).
pub mod tag {
    pub const TOKEN: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const ARGV: u8 = 3;
    pub const ENV: u8 = 4;
    pub const CWD: u8 = 5;
    pub const TTY: u8 = 6;
    pub const SIZE: u8 = 7;
    pub const TIMEOUT_MS: u8 = 8;
    pub const TAG: u8 = 9;
    pub const BUFFER: u8 = 10;
    pub const ATTACH: u8 = 11;
    pub const KILL_ON_DISCONNECT: u8 = 12;
    pub const STDIN: u8 = 13;
    pub const CLOSE_STDIN: u8 = 14;
    pub const PID: u8 = 15;
    pub const OUT_OFFSET: u8 = 16;
    pub const ERR_OFFSET: u8 = 17;
    pub const FOLLOW: u8 = 18;
    pub const DATA: u8 = 19;
    pub const SIGNAL: u8 = 20;
    pub const CODE: u8 = 21;
    pub const MESSAGE: u8 = 22;
    pub const TIMED_OUT: u8 = 23;
    pub const KILLED: u8 = 24;
    pub const OUT_END: u8 = 25;
    pub const ERR_END: u8 = 26;
    pub const OUT_START: u8 = 27;
    pub const ERR_START: u8 = 28;
    pub const RUNNING: u8 = 29;
    pub const STARTED_MS: u8 = 30;
    pub const PROC: u8 = 31;
    pub const PROCESSES: u8 = 32;
    pub const STREAMS: u8 = 33;
    pub const IDLE_SINCE_MS: u8 = 34;
    pub const NOW_MS: u8 = 35;
    pub const STREAM: u8 = 36;
    pub const ASKED: u8 = 37;
    pub const FIRST: u8 = 38;
    pub const EXIT: u8 = 39;
    pub const FD3: u8 = 40;
}

/// Error codes of ERROR frames (named after the gRPC codes the gateway maps them to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    Unauthenticated = 1,
    InvalidArgument = 2,
    NotFound = 3,
    AlreadyExists = 4,
    FailedPrecondition = 5,
    /// Output asked for was dropped from the buffer (see [`Dropped`]).
    OutOfRange = 6,
    ResourceExhausted = 7,
    Internal = 8,
}

impl ErrorCode {
    pub fn from_u32(v: u32) -> ErrorCode {
        match v {
            1 => ErrorCode::Unauthenticated,
            2 => ErrorCode::InvalidArgument,
            3 => ErrorCode::NotFound,
            4 => ErrorCode::AlreadyExists,
            5 => ErrorCode::FailedPrecondition,
            6 => ErrorCode::OutOfRange,
            7 => ErrorCode::ResourceExhausted,
            _ => ErrorCode::Internal,
        }
    }
}

/// Which process a request is about: its pid, or the tag given at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    Tag(String),
}

impl Target {
    fn put(&self, f: &mut Fields) {
        match self {
            Target::Pid(p) => f.u32(tag::PID, *p),
            Target::Tag(t) => f.bytes(tag::TAG, t.as_bytes()),
        };
    }
    fn from(fs: &[(u8, &[u8])]) -> Result<Target, ProtoError> {
        for &(t, v) in fs {
            match t {
                tag::PID => return Ok(Target::Pid(get_u32("pid", v)?)),
                tag::TAG => return Ok(Target::Tag(get_str("tag", v)?)),
                _ => {}
            }
        }
        Err(ProtoError::Missing {
            field: "pid or tag",
        })
    }
    /// A request naming only a process (CLOSE_STDIN, KILL, WAIT, FORGET).
    pub fn encode(&self) -> Vec<u8> {
        let mut f = Fields::new();
        self.put(&mut f);
        f.done()
    }
    pub fn decode(p: &[u8]) -> Result<Target, ProtoError> {
        Target::from(&fields(p)?)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pid(p) => write!(f, "pid {p}"),
            Target::Tag(t) => write!(f, "tag {t:?}"),
        }
    }
}

/// HELLO: the first frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub token: Vec<u8>,
    pub version: u32,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        Fields::new()
            .bytes(tag::TOKEN, &self.token)
            .u32(tag::VERSION, self.version)
            .done()
    }
    pub fn decode(p: &[u8]) -> Result<Hello, ProtoError> {
        let mut h = Hello {
            token: Vec::new(),
            version: 0,
        };
        for (t, v) in fields(p)? {
            match t {
                tag::TOKEN => h.token = v.to_vec(),
                tag::VERSION => h.version = get_u32("version", v)?,
                _ => {}
            }
        }
        Ok(h)
    }
}

/// START: run a process. Program and arguments, environment (added to the agent's) and working
/// directory are bytes, as the kernel takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Start {
    pub argv: Vec<Vec<u8>>,
    /// `NAME=VALUE`.
    pub env: Vec<Vec<u8>>,
    pub cwd: Option<Vec<u8>>,
    pub tty: bool,
    /// (cols, rows) with `tty`.
    pub size: Option<(u16, u16)>,
    /// The agent kills the whole tree after this long (EXIT says timed_out).
    pub timeout_ms: Option<u64>,
    /// Caller-given name, unique among the agent's processes.
    pub tag: Option<String>,
    /// Bytes kept per stream (stdout, stderr); the agent's default when unset.
    pub buffer: Option<u64>,
    /// Stream the process's output on this connection (as ATTACH from offset 0).
    pub attach: bool,
    /// Kill the whole tree when this connection ends before the process does.
    pub kill_on_disconnect: bool,
    /// Bytes written to stdin first.
    pub stdin: Vec<u8>,
    /// Close stdin after `stdin`.
    pub close_stdin: bool,
    /// Bytes the command reads from fd 3 (a memfd at offset 0; `/dev/fd/3` by path), e.g. a
    /// RunCode source as `python3 /dev/fd/3`: no limit but the frame's, where one argv string is
    /// limited by the kernel to 128 KiB. Empty: no fd 3.
    pub fd3: Vec<u8>,
}

impl Start {
    pub fn encode(&self) -> Vec<u8> {
        let mut f = Fields::new();
        for a in &self.argv {
            f.bytes(tag::ARGV, a);
        }
        for e in &self.env {
            f.bytes(tag::ENV, e);
        }
        if let Some(c) = &self.cwd {
            f.bytes(tag::CWD, c);
        }
        f.flag(tag::TTY, self.tty);
        if let Some((c, r)) = self.size {
            f.u32(tag::SIZE, (c as u32) << 16 | r as u32);
        }
        if let Some(t) = self.timeout_ms {
            f.u64(tag::TIMEOUT_MS, t);
        }
        if let Some(t) = &self.tag {
            f.bytes(tag::TAG, t.as_bytes());
        }
        if let Some(b) = self.buffer {
            f.u64(tag::BUFFER, b);
        }
        f.flag(tag::ATTACH, self.attach)
            .flag(tag::KILL_ON_DISCONNECT, self.kill_on_disconnect);
        if !self.stdin.is_empty() {
            f.bytes(tag::STDIN, &self.stdin);
        }
        f.flag(tag::CLOSE_STDIN, self.close_stdin);
        if !self.fd3.is_empty() {
            f.bytes(tag::FD3, &self.fd3);
        }
        f.done()
    }

    pub fn decode(p: &[u8]) -> Result<Start, ProtoError> {
        let mut s = Start::default();
        for (t, v) in fields(p)? {
            match t {
                tag::ARGV => s.argv.push(v.to_vec()),
                tag::ENV => s.env.push(v.to_vec()),
                tag::CWD => s.cwd = Some(v.to_vec()),
                tag::TTY => s.tty = get_flag(v),
                tag::SIZE => {
                    let n = get_u32("size", v)?;
                    s.size = Some(((n >> 16) as u16, n as u16));
                }
                tag::TIMEOUT_MS => s.timeout_ms = Some(get_u64("timeout_ms", v)?),
                tag::TAG => s.tag = Some(get_str("tag", v)?),
                tag::BUFFER => s.buffer = Some(get_u64("buffer", v)?),
                tag::ATTACH => s.attach = get_flag(v),
                tag::KILL_ON_DISCONNECT => s.kill_on_disconnect = get_flag(v),
                tag::STDIN => s.stdin = v.to_vec(),
                tag::CLOSE_STDIN => s.close_stdin = get_flag(v),
                tag::FD3 => s.fd3 = v.to_vec(),
                _ => {}
            }
        }
        Ok(s)
    }
}

/// ATTACH: stream a process's output from these offsets (and, with `follow`, until it exits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    pub target: Target,
    pub out_offset: u64,
    pub err_offset: u64,
    /// Keep streaming until EXIT; otherwise send what is buffered and END.
    pub follow: bool,
}

impl Attach {
    pub fn encode(&self) -> Vec<u8> {
        let mut f = Fields::new();
        self.target.put(&mut f);
        f.u64(tag::OUT_OFFSET, self.out_offset)
            .u64(tag::ERR_OFFSET, self.err_offset)
            .flag(tag::FOLLOW, self.follow)
            .done()
    }
    pub fn decode(p: &[u8]) -> Result<Attach, ProtoError> {
        let fs = fields(p)?;
        let mut a = Attach {
            target: Target::from(&fs)?,
            out_offset: 0,
            err_offset: 0,
            follow: false,
        };
        for (t, v) in fs {
            match t {
                tag::OUT_OFFSET => a.out_offset = get_u64("out_offset", v)?,
                tag::ERR_OFFSET => a.err_offset = get_u64("err_offset", v)?,
                tag::FOLLOW => a.follow = get_flag(v),
                _ => {}
            }
        }
        Ok(a)
    }
}

/// STDIN (data), SIGNAL_PROC (signal) and RESIZE_PROC (size) by target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Stdin(Target, Vec<u8>),
    Signal(Target, i32),
    Resize(Target, u16, u16),
}

impl Control {
    pub fn encode(&self) -> Vec<u8> {
        let mut f = Fields::new();
        match self {
            Control::Stdin(t, d) => {
                t.put(&mut f);
                f.bytes(tag::DATA, d);
            }
            Control::Signal(t, s) => {
                t.put(&mut f);
                f.i32(tag::SIGNAL, *s);
            }
            Control::Resize(t, c, r) => {
                t.put(&mut f);
                f.u32(tag::SIZE, (*c as u32) << 16 | *r as u32);
            }
        }
        f.done()
    }

    /// Decodes the payload of frame type `typ` (STDIN, SIGNAL_PROC or RESIZE_PROC).
    pub fn decode(typ: u8, p: &[u8]) -> Result<Control, ProtoError> {
        let fs = fields(p)?;
        let target = Target::from(&fs)?;
        let find = |want: u8, name: &'static str| {
            fs.iter()
                .find(|(t, _)| *t == want)
                .map(|(_, v)| *v)
                .ok_or(ProtoError::Missing { field: name })
        };
        Ok(match typ {
            crate::c2a::STDIN => Control::Stdin(target, find(tag::DATA, "data")?.to_vec()),
            crate::c2a::SIGNAL_PROC => {
                Control::Signal(target, get_i32("signal", find(tag::SIGNAL, "signal")?)?)
            }
            _ => {
                let n = get_u32("size", find(tag::SIZE, "size")?)?;
                Control::Resize(target, (n >> 16) as u16, n as u16)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::*;

    #[test]
    fn messages_round_trip() {
        let s = Start {
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"\xff".to_vec()],
            env: vec![b"A=1".to_vec()],
            cwd: Some(b"/tmp".to_vec()),
            tty: true,
            size: Some((120, 40)),
            timeout_ms: Some(5),
            tag: Some("t".into()),
            buffer: Some(10),
            attach: true,
            kill_on_disconnect: true,
            stdin: b"in".to_vec(),
            close_stdin: true,
            fd3: b"print(1)".to_vec(),
        };
        assert_eq!(Start::decode(&s.encode()), Ok(s));
        let a = Attach {
            target: Target::Tag("x".into()),
            out_offset: 3,
            err_offset: 4,
            follow: true,
        };
        assert_eq!(Attach::decode(&a.encode()), Ok(a));
        for c in [
            Control::Stdin(Target::Pid(3), b"abc".to_vec()),
            Control::Signal(Target::Pid(3), 15),
            Control::Resize(Target::Tag("q".into()), 80, 24),
        ] {
            let typ = match c {
                Control::Stdin(..) => crate::c2a::STDIN,
                Control::Signal(..) => crate::c2a::SIGNAL_PROC,
                Control::Resize(..) => crate::c2a::RESIZE_PROC,
            };
            assert_eq!(Control::decode(typ, &c.encode()), Ok(c));
        }
        let e = Exit {
            code: 137,
            signal: 9,
            timed_out: true,
            killed: false,
            out_end: 5,
            err_end: 6,
        };
        let p = ProcInfo {
            pid: 7,
            tag: None,
            argv: vec![b"x".to_vec()],
            tty: false,
            started_unix_ms: 1,
            exit: Some(e.clone()),
            out_start: 1,
            out_end: 5,
            err_start: 0,
            err_end: 6,
        };
        assert_eq!(
            ProcInfo::decode_list(&ProcInfo::encode_list(&[p.clone(), p.clone()])),
            Ok(vec![p.clone(), p])
        );
        assert_eq!(Exit::decode(&e.encode()), Ok(e));
        let mut err = ErrorMsg::new(ErrorCode::OutOfRange, "gone");
        err.dropped = Some(Dropped {
            stream: "stdout".into(),
            asked: 0,
            first: 9,
        });
        assert_eq!(ErrorMsg::decode(&err.encode()), Ok(err));
        assert_eq!(
            Target::decode(b""),
            Err(ProtoError::Missing {
                field: "pid or tag"
            })
        );
    }
}
