//! The wire format of the agent's TCP service (`airlock-agent init --listen ADDR`), shared by the
//! agent (which must stay std + libc only) and the gateway. No dependencies.
//!
//! Everything is a frame: 1 byte type, 4 bytes big-endian payload length, payload (at most
//! [`MAX_FRAME`]). Structured payloads are a list of fields: 1 byte field tag, 4 bytes big-endian
//! length, bytes; integers are big-endian and fixed-size, a field may repeat (argv, env), unknown
//! fields are skipped. STDOUT/STDERR payloads are not fields: 8 bytes big-endian stream offset,
//! then the bytes. See docs/DESIGN-NOTES.md "Agent TCP service" for the conversation.

mod answer;
mod client;
mod msg;

pub use answer::*;
pub use client::{Client, ClientError, Reply};
pub use msg::*;

use std::fmt;

/// Largest frame payload either side accepts.
pub const MAX_FRAME: usize = 16 << 20;
/// Protocol version sent in HELLO; the agent refuses other versions.
pub const VERSION: u32 = 1;

/// Frame types, client to agent. 0x01..0x04 are the `exec` frames, here for the attached process.
pub mod c2a {
    pub const DATA: u8 = 0x01;
    pub const CLOSE: u8 = 0x02;
    pub const SIGNAL: u8 = 0x03;
    pub const RESIZE: u8 = 0x04;
    pub const HELLO: u8 = 0x10;
    pub const START: u8 = 0x20;
    pub const ATTACH: u8 = 0x21;
    pub const STDIN: u8 = 0x22;
    pub const CLOSE_STDIN: u8 = 0x23;
    pub const SIGNAL_PROC: u8 = 0x24;
    pub const RESIZE_PROC: u8 = 0x25;
    pub const KILL: u8 = 0x26;
    pub const WAIT: u8 = 0x27;
    pub const LIST: u8 = 0x28;
    pub const ACTIVITY: u8 = 0x29;
    pub const FORGET: u8 = 0x2a;
    /// The sandbox is claimed (a pool's pod given to a Sandbox): from now on the agent accepts
    /// the token in this frame (a [`crate::Hello`] payload) instead of the one it started with.
    /// Every other open connection is closed (ERROR UNAUTHENTICATED). Answer: OK.
    pub const CLAIM: u8 = 0x2b;
}

/// Frame types, agent to client.
pub mod a2c {
    pub const OK: u8 = 0x80;
    pub const ERROR: u8 = 0x81;
    pub const STARTED: u8 = 0x82;
    pub const STDOUT: u8 = 0x83;
    pub const STDERR: u8 = 0x84;
    pub const EXIT: u8 = 0x85;
    pub const PROCS: u8 = 0x86;
    pub const ACTIVITY: u8 = 0x87;
    pub const END: u8 = 0x88;
}

/// A malformed frame or message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    TooLarge {
        typ: u8,
        len: usize,
    },
    Truncated {
        what: &'static str,
    },
    BadField {
        field: &'static str,
        why: &'static str,
    },
    Missing {
        field: &'static str,
    },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::TooLarge { typ, len } => write!(
                f,
                "frame type 0x{typ:02x} of {len} bytes is over the limit of {MAX_FRAME} bytes"
            ),
            ProtoError::Truncated { what } => write!(f, "truncated {what}"),
            ProtoError::BadField { field, why } => write!(f, "field {field}: {why}"),
            ProtoError::Missing { field } => write!(f, "field {field} is required"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Appends one frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, typ: u8, payload: &[u8]) {
    out.push(typ);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// One frame, encoded.
pub fn frame(typ: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    put_frame(&mut v, typ, payload);
    v
}

/// Collects bytes and hands out whole frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next whole frame, if one has arrived. A length over [`MAX_FRAME`] is an error as soon
    /// as its header is in (nothing is allocated for it).
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, ProtoError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < 5 {
            return Ok(None);
        }
        let typ = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len > MAX_FRAME {
            return Err(ProtoError::TooLarge { typ, len });
        }
        if rest.len() < 5 + len {
            return Ok(None);
        }
        let payload = rest[5..5 + len].to_vec();
        self.pos += 5 + len;
        if self.pos > (1 << 20) && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        Ok(Some((typ, payload)))
    }
}

/// Builds a field list.
#[derive(Debug, Default, Clone)]
pub struct Fields(pub Vec<u8>);

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn bytes(&mut self, tag: u8, v: &[u8]) -> &mut Self {
        self.0.push(tag);
        self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.0.extend_from_slice(v);
        self
    }
    pub fn u64(&mut self, tag: u8, v: u64) -> &mut Self {
        self.bytes(tag, &v.to_be_bytes())
    }
    pub fn u32(&mut self, tag: u8, v: u32) -> &mut Self {
        self.bytes(tag, &v.to_be_bytes())
    }
    pub fn i32(&mut self, tag: u8, v: i32) -> &mut Self {
        self.bytes(tag, &v.to_be_bytes())
    }
    pub fn flag(&mut self, tag: u8, v: bool) -> &mut Self {
        if v { self.bytes(tag, &[1]) } else { self }
    }
    pub fn done(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Splits a field list into (tag, value) pairs.
pub fn fields(mut p: &[u8]) -> Result<Vec<(u8, &[u8])>, ProtoError> {
    let mut v = Vec::new();
    while !p.is_empty() {
        if p.len() < 5 {
            return Err(ProtoError::Truncated {
                what: "field header",
            });
        }
        let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
        if p.len() - 5 < len {
            return Err(ProtoError::Truncated {
                what: "field value",
            });
        }
        v.push((p[0], &p[5..5 + len]));
        p = &p[5 + len..];
    }
    Ok(v)
}

pub fn get_u64(field: &'static str, v: &[u8]) -> Result<u64, ProtoError> {
    let a: [u8; 8] = v.try_into().map_err(|_| ProtoError::BadField {
        field,
        why: "want 8 bytes",
    })?;
    Ok(u64::from_be_bytes(a))
}

pub fn get_u32(field: &'static str, v: &[u8]) -> Result<u32, ProtoError> {
    let a: [u8; 4] = v.try_into().map_err(|_| ProtoError::BadField {
        field,
        why: "want 4 bytes",
    })?;
    Ok(u32::from_be_bytes(a))
}

pub fn get_i32(field: &'static str, v: &[u8]) -> Result<i32, ProtoError> {
    get_u32(field, v).map(|u| u as i32)
}

pub fn get_flag(v: &[u8]) -> bool {
    v.first().is_some_and(|&b| b != 0)
}

pub fn get_str(field: &'static str, v: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(v.to_vec()).map_err(|_| ProtoError::BadField {
        field,
        why: "not UTF-8",
    })
}

/// STDOUT/STDERR payload: 8 bytes offset, then the data.
pub fn output_payload(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Splits a STDOUT/STDERR payload.
pub fn parse_output(p: &[u8]) -> Result<(u64, &[u8]), ProtoError> {
    if p.len() < 8 {
        return Err(ProtoError::Truncated {
            what: "output offset",
        });
    }
    Ok((get_u64("offset", &p[..8])?, &p[8..]))
}

/// Compares two secrets in time that depends only on `expected`'s length.
pub fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = (expected.len() ^ given.len()) as u8 | ((expected.len() != given.len()) as u8);
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= e ^ g;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_arrive_whole_in_any_chunking() {
        let mut bytes = frame(c2a::HELLO, b"abc");
        bytes.extend(frame(c2a::CLOSE, b""));
        bytes.extend(frame(a2c::STDOUT, &output_payload(7, b"xyz")));
        for chunk in 1..bytes.len() {
            let mut r = FrameReader::new();
            let mut got = Vec::new();
            for c in bytes.chunks(chunk) {
                r.push(c);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert_eq!(got[0], (c2a::HELLO, b"abc".to_vec()));
            assert_eq!(parse_output(&got[2].1).unwrap(), (7, &b"xyz"[..]));
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut r = FrameReader::new();
        let mut h = vec![c2a::START];
        h.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        r.push(&h);
        assert_eq!(
            r.next_frame(),
            Err(ProtoError::TooLarge {
                typ: c2a::START,
                len: MAX_FRAME + 1
            })
        );
    }

    #[test]
    fn fields_round_trip_and_truncation_is_an_error() {
        let p = Fields::new()
            .bytes(1, b"a")
            .u64(2, 9)
            .flag(3, true)
            .flag(4, false)
            .done();
        let f = fields(&p).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(get_u64("x", f[1].1), Ok(9));
        assert!(get_flag(f[2].1));
        assert!(fields(&p[..p.len() - 1]).is_err());
        assert!(get_u64("x", b"abc").is_err());
    }

    #[test]
    fn random_input_never_panics() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..300 {
            let mut bytes = Vec::new();
            for _ in 0..(round * 7 % 600) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // small values often, so headers with short lengths occur
                let b = seed as u8;
                bytes.push(if seed & 0x300 != 0 { b % 8 } else { b });
            }
            let mut r = FrameReader::new();
            r.push(&bytes);
            while let Ok(Some((typ, p))) = r.next_frame() {
                let _ = crate::Reply::decode(typ, &p);
                let _ = crate::Start::decode(&p);
                let _ = crate::Attach::decode(&p);
                let _ = crate::Control::decode(typ, &p);
                let _ = crate::Hello::decode(&p);
            }
            let _ = fields(&bytes);
            let _ = crate::Start::decode(&bytes);
            let _ = crate::ProcInfo::decode_list(&bytes);
            let _ = crate::ErrorMsg::decode(&bytes);
        }
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret-token", b"secret-toke"));
        assert!(!constant_time_eq(b"secret-token", b"secret-token!"));
        assert!(!constant_time_eq(b"secret-token", b""));
        assert!(!constant_time_eq(b"a", b"\x9e"));
    }
}
