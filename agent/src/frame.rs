//! Control frames on the agent's stdin: 1 byte type, 4 bytes big-endian payload length, payload.
//!
//! The parser is incremental: bytes are fed as they arrive and DATA payloads are handed out as
//! slices of the input (never buffered whole), so a frame of any size streams through a fixed
//! read buffer. Unknown frame types and control frames with a wrong payload length are skipped.

pub const DATA: u8 = 0x01;
pub const CLOSE: u8 = 0x02;
pub const SIGNAL: u8 = 0x03;
pub const RESIZE: u8 = 0x04;

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// (Part of) a DATA payload; a frame may be split over several events.
    Data(&'a [u8]),
    Close,
    Signal(i32),
    Resize {
        cols: u16,
        rows: u16,
    },
}

#[derive(Debug)]
enum State {
    Header { buf: [u8; 5], have: usize },
    Data { remaining: u32 },
    Control { typ: u8, buf: [u8; 4], have: usize },
    Skip { remaining: u32 },
}

#[derive(Debug)]
pub struct Parser {
    state: State,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    pub fn new() -> Self {
        Parser {
            state: State::Header {
                buf: [0; 5],
                have: 0,
            },
        }
    }

    /// True when no frame is partially received.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Consumes bytes from `input` until one event is complete; returns None when `input` is
    /// exhausted without completing an event.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Option<Event<'a>> {
        loop {
            match &mut self.state {
                State::Header { buf, have } => {
                    if input.is_empty() {
                        return None;
                    }
                    let n = (5 - *have).min(input.len());
                    buf[*have..*have + n].copy_from_slice(&input[..n]);
                    *have += n;
                    *input = &input[n..];
                    if *have < 5 {
                        return None;
                    }
                    let typ = buf[0];
                    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
                    self.state = match typ {
                        DATA if len > 0 => State::Data { remaining: len },
                        CLOSE => {
                            self.state = skip_or_header(len);
                            return Some(Event::Close);
                        }
                        SIGNAL | RESIZE if len == 4 => State::Control {
                            typ,
                            buf: [0; 4],
                            have: 0,
                        },
                        _ => skip_or_header(len),
                    };
                }
                State::Data { remaining } => {
                    if input.is_empty() {
                        return None;
                    }
                    let n = (*remaining as usize).min(input.len());
                    let (data, rest) = input.split_at(n);
                    *input = rest;
                    *remaining -= n as u32;
                    if *remaining == 0 {
                        self.state = skip_or_header(0);
                    }
                    return Some(Event::Data(data));
                }
                State::Control { typ, buf, have } => {
                    if input.is_empty() {
                        return None;
                    }
                    let n = (4 - *have).min(input.len());
                    buf[*have..*have + n].copy_from_slice(&input[..n]);
                    *have += n;
                    *input = &input[n..];
                    if *have < 4 {
                        return None;
                    }
                    let ev = if *typ == SIGNAL {
                        Event::Signal(i32::from_be_bytes(*buf))
                    } else {
                        Event::Resize {
                            cols: u16::from_be_bytes([buf[0], buf[1]]),
                            rows: u16::from_be_bytes([buf[2], buf[3]]),
                        }
                    };
                    self.state = skip_or_header(0);
                    return Some(ev);
                }
                State::Skip { remaining } => {
                    if input.is_empty() {
                        return None;
                    }
                    let n = (*remaining as usize).min(input.len());
                    *input = &input[n..];
                    *remaining -= n as u32;
                    if *remaining == 0 {
                        self.state = skip_or_header(0);
                    }
                }
            }
        }
    }
}

fn skip_or_header(len: u32) -> State {
    if len == 0 {
        State::Header {
            buf: [0; 5],
            have: 0,
        }
    } else {
        State::Skip { remaining: len }
    }
}

/// Encodes one frame.
#[cfg(test)]
pub fn encode(typ: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(typ);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in chunks of `chunk` and collects owned events (DATA parts concatenated
    /// into one event when adjacent).
    fn parse_chunked(bytes: &[u8], chunk: usize) -> (Vec<Owned>, bool) {
        let mut p = Parser::new();
        let mut out: Vec<Owned> = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            let mut input = c;
            while let Some(ev) = p.next(&mut input) {
                match ev {
                    Event::Data(d) => {
                        if let Some(Owned::Data(prev)) = out.last_mut() {
                            prev.extend_from_slice(d);
                        } else {
                            out.push(Owned::Data(d.to_vec()));
                        }
                    }
                    Event::Close => out.push(Owned::Close),
                    Event::Signal(s) => out.push(Owned::Signal(s)),
                    Event::Resize { cols, rows } => out.push(Owned::Resize(cols, rows)),
                }
            }
            assert!(input.is_empty());
        }
        (out, p.at_boundary())
    }

    #[derive(Debug, PartialEq)]
    enum Owned {
        Data(Vec<u8>),
        Close,
        Signal(i32),
        Resize(u16, u16),
    }

    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(encode(DATA, b"hello "));
        b.extend(encode(RESIZE, &[0, 120, 0, 40]));
        b.extend(encode(DATA, b"world"));
        b.extend(encode(SIGNAL, &15i32.to_be_bytes()));
        b.extend(encode(CLOSE, b""));
        b
    }

    #[test]
    fn parses_all_frame_types_in_any_chunking() {
        let want = vec![
            Owned::Data(b"hello ".to_vec()),
            Owned::Resize(120, 40),
            Owned::Data(b"world".to_vec()),
            Owned::Signal(15),
            Owned::Close,
        ];
        let bytes = sample();
        for chunk in 1..=bytes.len() {
            let (got, boundary) = parse_chunked(&bytes, chunk);
            assert_eq!(got, want, "chunk size {chunk}");
            assert!(boundary);
        }
    }

    #[test]
    fn large_data_frame_streams_as_slices() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let bytes = encode(DATA, &payload);
        let (got, _) = parse_chunked(&bytes, 4096);
        assert_eq!(got, vec![Owned::Data(payload)]);
    }

    #[test]
    fn skips_unknown_and_malformed_frames() {
        let mut b = Vec::new();
        b.extend(encode(0x7f, b"whatever"));
        b.extend(encode(SIGNAL, &[0, 0, 9])); // wrong length
        b.extend(encode(RESIZE, &[1, 2, 3, 4, 5])); // wrong length
        b.extend(encode(DATA, b"")); // empty data: no event
        b.extend(encode(0x00, b""));
        b.extend(encode(DATA, b"x"));
        b.extend(encode(CLOSE, b"ignored payload"));
        b.extend(encode(SIGNAL, &9i32.to_be_bytes()));
        let (got, boundary) = parse_chunked(&b, 3);
        assert_eq!(
            got,
            vec![Owned::Data(b"x".to_vec()), Owned::Close, Owned::Signal(9)]
        );
        assert!(boundary);
    }

    #[test]
    fn truncated_frame_is_not_at_boundary() {
        let b = encode(DATA, b"abcdef");
        let (_, boundary) = parse_chunked(&b[..7], 100);
        assert!(!boundary);
        let (_, boundary) = parse_chunked(&b[..3], 100);
        assert!(!boundary);
        let (got, boundary) = parse_chunked(&[], 100);
        assert!(got.is_empty() && boundary);
    }

    #[test]
    fn huge_length_does_not_allocate() {
        let mut b = vec![DATA];
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        b.extend_from_slice(b"abc");
        let (got, boundary) = parse_chunked(&b, 2);
        assert_eq!(got, vec![Owned::Data(b"abc".to_vec())]);
        assert!(!boundary);
    }

    #[test]
    fn random_input_never_panics() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let mut bytes = Vec::new();
            for _ in 0..(round * 13 % 700) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // bias towards small types and lengths so real frames occur
                let b = seed as u8;
                bytes.push(if seed & 0x100 != 0 { b % 5 } else { b });
            }
            for chunk in [1, 7, 64, 4096] {
                let _ = parse_chunked(&bytes, chunk);
            }
        }
    }
}
