//! The agent's answers (field lists): STARTED, EXIT, END, PROCS, ACTIVITY, ERROR.

use crate::msg::ErrorCode;
use crate::msg::tag;
use crate::{Fields, ProtoError, fields, get_flag, get_i32, get_str, get_u32, get_u64};

/// STARTED: the process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub pid: u32,
    pub tag: Option<String>,
}

impl Started {
    pub fn encode(&self) -> Vec<u8> {
        let mut f = Fields::new();
        f.u32(tag::PID, self.pid);
        if let Some(t) = &self.tag {
            f.bytes(tag::TAG, t.as_bytes());
        }
        f.done()
    }
    pub fn decode(p: &[u8]) -> Result<Started, ProtoError> {
        let mut s = Started { pid: 0, tag: None };
        for (t, v) in fields(p)? {
            match t {
                tag::PID => s.pid = get_u32("pid", v)?,
                tag::TAG => s.tag = Some(get_str("tag", v)?),
                _ => {}
            }
        }
        Ok(s)
    }
}

/// EXIT: how the process ended, and where its output ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; 128 + N when killed by signal N.
    pub code: i32,
    /// The signal that killed it (0: it exited).
    pub signal: i32,
    pub timed_out: bool,
    /// Ended by KILL (or by its caller disconnecting with kill_on_disconnect).
    pub killed: bool,
    pub out_end: u64,
    pub err_end: u64,
}

impl Exit {
    fn put(&self, f: &mut Fields) {
        f.i32(tag::CODE, self.code)
            .i32(tag::SIGNAL, self.signal)
            .flag(tag::TIMED_OUT, self.timed_out)
            .flag(tag::KILLED, self.killed)
            .u64(tag::OUT_END, self.out_end)
            .u64(tag::ERR_END, self.err_end);
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut f = Fields::new();
        self.put(&mut f);
        f.done()
    }
    pub fn decode(p: &[u8]) -> Result<Exit, ProtoError> {
        let mut e = Exit::default();
        for (t, v) in fields(p)? {
            match t {
                tag::CODE => e.code = get_i32("code", v)?,
                tag::SIGNAL => e.signal = get_i32("signal", v)?,
                tag::TIMED_OUT => e.timed_out = get_flag(v),
                tag::KILLED => e.killed = get_flag(v),
                tag::OUT_END => e.out_end = get_u64("out_end", v)?,
                tag::ERR_END => e.err_end = get_u64("err_end", v)?,
                _ => {}
            }
        }
        Ok(e)
    }
}

/// END: a non-following ATTACH has sent everything buffered (up to these offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub out_end: u64,
    pub err_end: u64,
    pub running: bool,
}

impl End {
    pub fn encode(&self) -> Vec<u8> {
        Fields::new()
            .u64(tag::OUT_END, self.out_end)
            .u64(tag::ERR_END, self.err_end)
            .flag(tag::RUNNING, self.running)
            .done()
    }
    pub fn decode(p: &[u8]) -> Result<End, ProtoError> {
        let mut e = End {
            out_end: 0,
            err_end: 0,
            running: false,
        };
        for (t, v) in fields(p)? {
            match t {
                tag::OUT_END => e.out_end = get_u64("out_end", v)?,
                tag::ERR_END => e.err_end = get_u64("err_end", v)?,
                tag::RUNNING => e.running = get_flag(v),
                _ => {}
            }
        }
        Ok(e)
    }
}

/// One entry of PROCS (the answer to LIST).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub tag: Option<String>,
    pub argv: Vec<Vec<u8>>,
    pub tty: bool,
    pub started_unix_ms: u64,
    /// None while it runs.
    pub exit: Option<Exit>,
    /// Output held: stdout bytes [out_start, out_end), stderr [err_start, err_end).
    pub out_start: u64,
    pub out_end: u64,
    pub err_start: u64,
    pub err_end: u64,
}

impl ProcInfo {
    fn encode(&self) -> Vec<u8> {
        let mut f = Fields::new();
        f.u32(tag::PID, self.pid);
        if let Some(t) = &self.tag {
            f.bytes(tag::TAG, t.as_bytes());
        }
        for a in &self.argv {
            f.bytes(tag::ARGV, a);
        }
        f.flag(tag::TTY, self.tty)
            .u64(tag::STARTED_MS, self.started_unix_ms)
            .flag(tag::RUNNING, self.exit.is_none())
            .u64(tag::OUT_START, self.out_start)
            .u64(tag::OUT_END, self.out_end)
            .u64(tag::ERR_START, self.err_start)
            .u64(tag::ERR_END, self.err_end);
        if let Some(e) = &self.exit {
            f.bytes(tag::EXIT, &e.encode());
        }
        f.done()
    }
    fn decode(p: &[u8]) -> Result<ProcInfo, ProtoError> {
        let mut i = ProcInfo::default();
        for (t, v) in fields(p)? {
            match t {
                tag::PID => i.pid = get_u32("pid", v)?,
                tag::TAG => i.tag = Some(get_str("tag", v)?),
                tag::ARGV => i.argv.push(v.to_vec()),
                tag::TTY => i.tty = get_flag(v),
                tag::STARTED_MS => i.started_unix_ms = get_u64("started_ms", v)?,
                tag::OUT_START => i.out_start = get_u64("out_start", v)?,
                tag::OUT_END => i.out_end = get_u64("out_end", v)?,
                tag::ERR_START => i.err_start = get_u64("err_start", v)?,
                tag::ERR_END => i.err_end = get_u64("err_end", v)?,
                tag::EXIT => i.exit = Some(Exit::decode(v)?),
                _ => {}
            }
        }
        Ok(i)
    }

    pub fn encode_list(list: &[ProcInfo]) -> Vec<u8> {
        let mut f = Fields::new();
        for p in list {
            f.bytes(tag::PROC, &p.encode());
        }
        f.done()
    }
    pub fn decode_list(p: &[u8]) -> Result<Vec<ProcInfo>, ProtoError> {
        fields(p)?
            .into_iter()
            .filter(|(t, _)| *t == tag::PROC)
            .map(|(_, v)| ProcInfo::decode(v))
            .collect()
    }
}

/// ACTIVITY: what the idle timeout needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    /// Processes of the table still running.
    pub processes: u32,
    /// Connections streaming (ATTACH, WAIT, START with attach) or in a request other than
    /// ACTIVITY and LIST.
    pub streams: u32,
    /// When activity last ended (Unix ms); 0 while there is activity.
    pub idle_since_unix_ms: u64,
    /// The agent's clock (Unix ms), to compare with.
    pub now_unix_ms: u64,
}

impl Activity {
    pub fn encode(&self) -> Vec<u8> {
        Fields::new()
            .u32(tag::PROCESSES, self.processes)
            .u32(tag::STREAMS, self.streams)
            .u64(tag::IDLE_SINCE_MS, self.idle_since_unix_ms)
            .u64(tag::NOW_MS, self.now_unix_ms)
            .done()
    }
    pub fn decode(p: &[u8]) -> Result<Activity, ProtoError> {
        let mut a = Activity::default();
        for (t, v) in fields(p)? {
            match t {
                tag::PROCESSES => a.processes = get_u32("processes", v)?,
                tag::STREAMS => a.streams = get_u32("streams", v)?,
                tag::IDLE_SINCE_MS => a.idle_since_unix_ms = get_u64("idle_since_ms", v)?,
                tag::NOW_MS => a.now_unix_ms = get_u64("now_ms", v)?,
                _ => {}
            }
        }
        Ok(a)
    }
}

/// Output the caller asked for that is no longer buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// "stdout" or "stderr".
    pub stream: String,
    pub asked: u64,
    /// The first offset still held.
    pub first: u64,
}

/// ERROR: the request failed; the connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    pub message: String,
    pub dropped: Option<Dropped>,
}

impl ErrorMsg {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorMsg {
        ErrorMsg {
            code,
            message: message.into(),
            dropped: None,
        }
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut f = Fields::new();
        f.u32(tag::CODE, self.code as u32)
            .bytes(tag::MESSAGE, self.message.as_bytes());
        if let Some(d) = &self.dropped {
            f.bytes(tag::STREAM, d.stream.as_bytes())
                .u64(tag::ASKED, d.asked)
                .u64(tag::FIRST, d.first);
        }
        f.done()
    }
    pub fn decode(p: &[u8]) -> Result<ErrorMsg, ProtoError> {
        let mut e = ErrorMsg::new(ErrorCode::Internal, "");
        let mut d = Dropped {
            stream: String::new(),
            asked: 0,
            first: 0,
        };
        let mut has_d = false;
        for (t, v) in fields(p)? {
            match t {
                tag::CODE => e.code = ErrorCode::from_u32(get_u32("code", v)?),
                tag::MESSAGE => e.message = String::from_utf8_lossy(v).into_owned(),
                tag::STREAM => {
                    has_d = true;
                    d.stream = String::from_utf8_lossy(v).into_owned()
                }
                tag::ASKED => d.asked = get_u64("asked", v)?,
                tag::FIRST => d.first = get_u64("first", v)?,
                _ => {}
            }
        }
        if has_d {
            e.dropped = Some(d);
        }
        Ok(e)
    }
}

impl std::fmt::Display for ErrorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}
