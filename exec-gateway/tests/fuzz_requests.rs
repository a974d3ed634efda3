//! Bounded fuzzing of the gateway's request handling: every request message the API takes is
//! decoded from random and mutated bytes with prost, or generated field by field from hostile
//! values, and fed to the validation the services run first (`airlock_exec_gateway::validate`).
//! Also: the agent stdin framing, encoded by the gateway (`agent::frame` and friends) and parsed
//! by the agent's own parser (`agent/src/frame.rs`, compiled in here), and random byte streams
//! into that parser.
//!
//! Checked: nothing panics; every refusal is INVALID_ARGUMENT (UNIMPLEMENTED for templates) with
//! a message that starts with a field of the request; everything accepted satisfies what the
//! services rely on (non-empty argv without NUL bytes, absolute paths, timeouts within bounds,
//! sorted valid environment, DNS-label names, agent command lines that round-trip, ...).
//!
//! The same checks drive the cargo-fuzz target `fuzz/fuzz_targets/gateway_requests.rs` (hence the
//! `pub` items and [`check_wire`]).
//!
//! Knobs (environment): `FUZZ_SEED` (default fixed), `FUZZ_ITERATIONS` (default 20000),
//! `FUZZ_SECONDS` (default 10; whichever limit comes first), `FUZZ_CASE` (replay one case).
//! Longer run:
//! `FUZZ_SECONDS=600 FUZZ_ITERATIONS=100000000 cargo test -p airlock-exec-gateway --test fuzz_requests -- --nocapture`
//!
//! Over 600 lines: generators for every request message; sharing them with the operator fuzzer in a
//! crate of their own is issue 11 (layout).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use airlock_exec_gateway::agent::{self, ExecOptions, FileCommand};
use airlock_api::bytes::Bytes;
use airlock_api::prost_types;
use airlock_api::proto::v1 as pb;
use airlock_api::tonic::{Code, Status};
use airlock_exec_gateway::validate::{self, CreateSpec, ExecSpec};
use prost::Message;

/// The agent's stdin frame parser, compiled from the agent's source (the agent is a binary crate).
#[allow(dead_code, clippy::all)]
#[path = "../../agent/src/frame.rs"]
mod agent_frame;

// ---------------------------------------------------------------------------------------------
// Deterministic PRNG (SplitMix64) and knobs.

/// SplitMix64 state, and how hostile (0-100, percent per field) the generators are in this case.
pub struct Rng(u64, u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    /// Whether this field gets a hostile value.
    fn hostile(&mut self) -> bool {
        self.below(100) < self.1
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// One of `xs`, or (as often as any one of them) a random value.
    fn pick_or<T: Copy>(&mut self, xs: &[T], random: fn(u64) -> T) -> T {
        let i = self.below(xs.len() as u64 + 1) as usize;
        if i == xs.len() {
            random(self.next())
        } else {
            xs[i]
        }
    }
    /// A list length: mostly small, sometimes empty, sometimes up to `large`.
    fn len(&mut self, large: usize) -> usize {
        match self.below(20) {
            0..=4 => 0,
            5..=16 => self.range(1, 4) as usize,
            17 | 18 => self.range(5, 40.min(large as i64)) as usize,
            _ => self.range(5, large.max(5) as i64) as usize,
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        _ => default,
    }
}

pub fn case_rng(seed: u64, case: u64) -> Rng {
    let mut r = Rng(seed ^ case.wrapping_mul(0xD1B5_4A32_D192_ED03), 0);
    r.next();
    // Some cases are valid but for a field or two (they reach the checks on accepted
    // requests), others are hostile throughout.
    r.1 = *r.pick(&[2, 5, 10, 20, 50, 100]);
    r
}

// ---------------------------------------------------------------------------------------------
// Hostile values.

const NASTY: &[&str] = &[
    "",
    " ",
    "-",
    "a",
    "sb",
    "A",
    "a.b",
    "-a",
    "a-",
    "a_b",
    "0",
    "default",
    "kube-system",
    "/",
    "//",
    "/.",
    "/..",
    "/tmp",
    "/tmp/x",
    "/tmp/../etc/passwd",
    "/./a//b/",
    "tmp",
    "./x",
    "../x",
    "--help",
    "-rf",
    "--",
    "\0",
    "/a\0b",
    "\n",
    "\r\n",
    "\t",
    "\u{7f}",
    "\u{1b}[31m",
    "é",
    "🦀",
    "/🦀",
    "\u{202e}",
    "\u{feff}",
    "\u{a0}",
    "\u{2028}",
    "%s%n",
    "$(id)",
    "A=B",
    "PATH",
    "_",
    "1X",
    "python:3.12",
    "a b",
    "500m",
    "1e999",
    "1e-999",
    "-1",
    "+1",
    "0.0",
    "10.0.0.0/8",
    "example.com/x",
    "airlock.dev/sandbox",
    "x.airlock.dev/y",
    "gvisor",
    "a..b",
    ".a",
];

fn unicode_string(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| match rng.below(6) {
            0 => char::from_u32(rng.below(0x20) as u32).unwrap(),
            1 => char::from_u32(0x80 + rng.below(0x780) as u32).unwrap(),
            2 => char::from_u32(0x1F300 + rng.below(0x300) as u32).unwrap(),
            3 => *rng.pick(&[
                '\u{202e}', '\u{200b}', '\u{feff}', '\u{0}', '\u{7f}', '\u{85}', '\u{3000}',
            ]),
            _ => (b'a' + rng.below(26) as u8) as char,
        })
        .collect()
}

fn dns_label(rng: &mut Rng) -> String {
    let n = rng.range(1, 63) as usize;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    let mut s: Vec<u8> = (0..n).map(|_| *rng.pick(alphabet)).collect();
    if s[0] == b'-' {
        s[0] = b'a';
    }
    if s[n - 1] == b'-' {
        s[n - 1] = b'z';
    }
    String::from_utf8(s).unwrap()
}

fn string(rng: &mut Rng) -> String {
    match rng.below(16) {
        0..=4 => rng.pick(NASTY).to_string(),
        5..=7 => dns_label(rng),
        8..=10 => {
            let n = rng.range(0, 24) as usize;
            (0..n).map(|_| (rng.below(128) as u8) as char).collect()
        }
        11..=13 => {
            let n = rng.range(0, 24) as usize;
            unicode_string(rng, n)
        }
        14 => {
            let n = *rng.pick(&[
                57usize, 58, 59, 62, 63, 64, 252, 253, 254, 511, 512, 513, 4095, 4096, 4097,
            ]);
            let c = *rng.pick(&["a", "/", "é"]);
            let mut s = c.repeat(n / c.len());
            if rng.bool() && c.len() == 1 {
                s.replace_range(0..1, "/");
            }
            s
        }
        _ => {
            if rng.one_in(8) {
                let n = rng.range(4096, 1 << 20) as usize;
                let c = *rng.pick(&["a", "é", "🦀", "\0", "/", " "]);
                c.repeat(n / c.len())
            } else {
                format!("{}{}", rng.pick(NASTY), rng.pick(NASTY))
            }
        }
    }
}

fn path(rng: &mut Rng) -> String {
    if !rng.hostile() {
        return format!("/tmp/{}", dns_label(rng));
    }
    match rng.below(4) {
        0 => {
            let n = rng.range(1, 6);
            (0..n)
                .map(|_| {
                    format!(
                        "/{}",
                        rng.pick(&["a", ".", "..", "", "tmp", "é", "x y", "\0", "🦀"])
                    )
                })
                .collect()
        }
        1 => format!("/{}", dns_label(rng)),
        _ => string(rng),
    }
}

fn sandbox_ref(rng: &mut Rng) -> Option<pb::SandboxRef> {
    if !rng.hostile() {
        return Some(pb::SandboxRef {
            namespace: String::new(),
            name: dns_label(rng),
        });
    }
    match rng.below(6) {
        0 => None,
        1 | 2 => Some(pb::SandboxRef {
            namespace: string(rng),
            name: string(rng),
        }),
        _ => Some(pb::SandboxRef {
            namespace: if rng.bool() {
                String::new()
            } else {
                dns_label(rng)
            },
            name: dns_label(rng),
        }),
    }
}

fn env_map(rng: &mut Rng, large: usize) -> HashMap<String, String> {
    if !rng.hostile() {
        return (0..rng.below(4))
            .map(|i| (format!("V{i}"), dns_label(rng)))
            .collect();
    }
    let n = rng.len(large);
    (0..n)
        .map(|_| {
            let k = if rng.bool() {
                format!("V{}", rng.below(1000))
            } else {
                string(rng)
            };
            (k, string(rng))
        })
        .collect()
}

fn duration(rng: &mut Rng) -> Option<prost_types::Duration> {
    if !rng.hostile() {
        return rng.bool().then(|| prost_types::Duration {
            seconds: rng.range(0, 600),
            nanos: 0,
        });
    }
    match rng.below(5) {
        0 => None,
        1 => Some(prost_types::Duration {
            seconds: rng.next() as i64,
            nanos: rng.next() as i32,
        }),
        2 => Some(prost_types::Duration {
            seconds: *rng.pick(&[0, -1, 1, 604799, 604800, 604801, i64::MIN, i64::MAX]),
            nanos: *rng.pick(&[0, -1, 1, 999_999_999, 1_000_000_000, i32::MIN, i32::MAX]),
        }),
        _ => Some(prost_types::Duration {
            seconds: rng.range(0, 1000),
            nanos: rng.range(0, 999_999_999) as i32,
        }),
    }
}

fn bytes(rng: &mut Rng) -> Option<Bytes> {
    rng.bool().then(|| {
        let n = rng.len(100_000);
        Bytes::from((0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>())
    })
}

fn args(rng: &mut Rng) -> Vec<String> {
    if !rng.hostile() {
        return (0..rng.range(1, 4))
            .map(|i| if i == 0 { "ls".into() } else { dns_label(rng) })
            .collect();
    }
    let n = match rng.below(30) {
        0 => 0,
        1 => *rng.pick(&[4095usize, 4096, 4097]),
        _ => rng.range(1, 6) as usize,
    };
    (0..n)
        .map(|i| {
            if i == 0 && rng.bool() {
                "ls".into()
            } else {
                string(rng)
            }
        })
        .collect()
}

fn exec_request(rng: &mut Rng) -> pb::ExecRequest {
    pb::ExecRequest {
        sandbox: sandbox_ref(rng),
        command: match if rng.hostile() { rng.below(5) } else { 4 } {
            0 => None,
            1 => Some(pb::exec_request::Command::Shell(string(rng))),
            _ => Some(pb::exec_request::Command::Argv(pb::Argv {
                args: args(rng),
            })),
        },
        env: env_map(rng, 300),
        cwd: if rng.bool() { String::new() } else { path(rng) },
        timeout: duration(rng),
        stdin: bytes(rng),
    }
}

fn run_code_request(rng: &mut Rng) -> pb::RunCodeRequest {
    pb::RunCodeRequest {
        sandbox: sandbox_ref(rng),
        language: if !rng.hostile() {
            rng.range(1, 3) as i32
        } else if rng.one_in(4) {
            rng.next() as i32
        } else {
            rng.range(0, 4) as i32
        },
        code: if !rng.hostile() {
            "print(1)".into()
        } else if rng.one_in(50) {
            "x".repeat(validate::MAX_CODE - 1 + rng.below(3) as usize)
        } else {
            string(rng)
        },
        env: env_map(rng, 300),
        cwd: if rng.bool() { String::new() } else { path(rng) },
        timeout: duration(rng),
        stdin: bytes(rng),
    }
}

fn quantity(rng: &mut Rng) -> String {
    if !rng.hostile() {
        return rng.pick(&["", "1", "500m", "512Mi", "1Gi"]).to_string();
    }
    match rng.below(4) {
        0 => String::new(),
        1 => rng
            .pick(&[
                "1",
                "500m",
                "0",
                "-1",
                "+1",
                "0.0",
                "0.5",
                ".5",
                "5.",
                "1e3",
                "1E+2",
                "1e-3",
                "1e999",
                "1e-999",
                "1e1000",
                "9999999Ti",
                "1Ki",
                "1ki",
                "1 Gi",
                "Gi",
                ".",
                "1..2",
                "00",
                "0e5",
                "+0.1",
                "++1",
                "1e+",
                "1e+-1",
            ])
            .to_string(),
        2 => {
            let n = rng.range(0, 12) as usize;
            (0..n)
                .map(|_| *rng.pick(b"0123456789.+-eEkKmMgGiun ") as char)
                .collect()
        }
        _ => string(rng),
    }
}

fn network(rng: &mut Rng) -> pb::Network {
    let egress = if rng.hostile() && rng.one_in(5) {
        rng.next() as i32
    } else {
        rng.range(0, 3) as i32
    };
    pb::Network {
        egress,
        allow: (0..if rng.hostile() {
            rng.len(70)
        } else if egress == 3 {
            rng.range(1, 3) as usize
        } else {
            0
        })
            .map(|_| pb::EgressRule {
                cidr: match if rng.hostile() { rng.below(3) } else { 3 } {
                    0 => string(rng),
                    3 => rng
                        .pick(&["10.0.0.0/8", "203.0.113.0/24", "2001:db8::/32", "0.0.0.0/0"])
                        .to_string(),
                    1 => rng
                        .pick(&[
                            "10.0.0.0/8",
                            "0.0.0.0/0",
                            "::/0",
                            "10.0.0.1/8",
                            "1.2.3.4/08",
                            "1.2.3.4/33",
                            "::/129",
                            "fe80::1%eth0/64",
                            "1.2.3.4/+8",
                            "1.2.3.4/ 8",
                        ])
                        .to_string(),
                    _ => format!(
                        "{}.{}.{}.{}/{}",
                        rng.below(300),
                        rng.below(256),
                        rng.below(256),
                        rng.below(256),
                        rng.below(40)
                    ),
                },
                ports: (0..rng.len(40))
                    .map(|_| pb::Port {
                        port: if !rng.hostile() {
                            rng.range(1, 65535) as i32
                        } else {
                            rng.pick_or(&[0, -1, 1, 443, 65535, 65536, i32::MIN, i32::MAX], |r| {
                                r as i32
                            })
                        },
                        protocol: if rng.hostile() && rng.one_in(5) {
                            rng.next() as i32
                        } else {
                            rng.range(0, 3) as i32
                        },
                    })
                    .collect(),
            })
            .collect(),
        dns: rng.bool(),
    }
}

fn create_request(rng: &mut Rng) -> pb::CreateSandboxRequest {
    let mut labels = HashMap::new();
    for _ in 0..if rng.hostile() {
        rng.len(20)
    } else {
        rng.below(3) as usize
    } {
        let k = if !rng.hostile() {
            format!("{}/{}", dns_label(rng), dns_label(rng))
        } else {
            string(rng)
        };
        labels.insert(
            k,
            if !rng.hostile() {
                dns_label(rng)
            } else {
                string(rng)
            },
        );
    }
    pb::CreateSandboxRequest {
        namespace: if !rng.hostile() {
            String::new()
        } else {
            string(rng)
        },
        name: if !rng.hostile() {
            if rng.bool() {
                dns_label(rng)
            } else {
                String::new()
            }
        } else {
            string(rng)
        },
        generate_name: if !rng.hostile() {
            String::new()
        } else {
            string(rng)
        },
        source: match if rng.hostile() { rng.below(6) } else { 2 } {
            0 => None,
            1 => Some(pb::create_sandbox_request::Source::Template(string(rng))),
            2 | 3 => Some(pb::create_sandbox_request::Source::Image(
                "python:3.12".into(),
            )),
            _ => Some(pb::create_sandbox_request::Source::Image(string(rng))),
        },
        resources: rng.bool().then(|| pb::Resources {
            cpu: quantity(rng),
            memory: quantity(rng),
            ephemeral_storage: quantity(rng),
        }),
        ttl_seconds: if !rng.hostile() {
            600
        } else {
            rng.pick_or(
                &[0, 0, 1, -1, 3600, 604800, 604801, i64::MIN, i64::MAX],
                |r| r as i64,
            )
        },
        idle_timeout_seconds: if !rng.hostile() {
            0
        } else {
            rng.pick_or(&[0, 0, 1, -1, 60, 604800, 604801], |r| r as i64)
        },
        network: rng.bool().then(|| network(rng)),
        env: env_map(rng, 150),
        labels,
        wait_ready: rng.bool(),
        runtime_class_name: if !rng.hostile() {
            String::new()
        } else {
            string(rng)
        },
        working_dir: if rng.bool() { String::new() } else { path(rng) },
        read_only_root_filesystem: rng.bool(),
        agent_in_image: rng.bool(),
        run_as_user: rng.bool().then(|| {
            rng.pick_or(&[1000, 0, -1, 1, 2147483647, 2147483648, i64::MIN], |r| {
                r as i64
            })
        }),
        run_as_group: rng
            .bool()
            .then(|| rng.pick_or(&[1000, 0, -1, 2147483648], |r| r as i64)),
    }
}

fn resize(rng: &mut Rng) -> pb::Resize {
    if !rng.hostile() {
        return pb::Resize {
            cols: rng.range(1, 300) as u32,
            rows: rng.range(1, 100) as u32,
        };
    }
    pb::Resize {
        cols: rng.pick_or(&[0, 1, 80, 65535, 65536, u32::MAX], |r| r as u32),
        rows: rng.pick_or(&[0, 1, 24, 65535, 65536, u32::MAX], |r| r as u32),
    }
}

fn exec_input(rng: &mut Rng) -> pb::ExecInput {
    use pb::exec_input::Input;
    pb::ExecInput {
        input: match rng.below(6) {
            0 => None,
            1 => Some(Input::Start(pb::ExecStart {
                request: (!rng.one_in(8)).then(|| exec_request(rng)),
                tty: rng.bool(),
                size: rng.bool().then(|| resize(rng)),
            })),
            2 => Some(Input::Stdin(bytes(rng).unwrap_or_default())),
            3 => Some(Input::CloseStdin(pb::CloseStdin {})),
            4 => Some(Input::Resize(resize(rng))),
            _ => Some(Input::Signal(pb::Signal {
                number: rng.pick_or(&[0, 1, 9, 15, 64, 65, -1, i32::MIN, i32::MAX], |r| r as i32),
            })),
        },
    }
}

/// Random bytes, or a structured message's encoding with a few bytes changed.
fn wire(rng: &mut Rng, valid: impl FnOnce(&mut Rng) -> Vec<u8>) -> Vec<u8> {
    let mut b = if rng.one_in(3) {
        let n = rng.len(2048);
        (0..n).map(|_| rng.next() as u8).collect()
    } else {
        valid(rng)
    };
    for _ in 0..rng.range(0, 6) {
        if b.is_empty() {
            break;
        }
        let i = rng.below(b.len() as u64) as usize;
        match rng.below(5) {
            0 => b[i] = rng.next() as u8,
            1 => b[i] ^= 1 << rng.below(8),
            2 => {
                b.remove(i);
            }
            3 => b.insert(
                i,
                *rng.pick(&[0x00, 0x08, 0x0a, 0x12, 0x1a, 0x22, 0x7f, 0x80, 0xff]),
            ),
            _ => b.truncate(i),
        }
    }
    b
}

// ---------------------------------------------------------------------------------------------
// Invariants.

fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

/// A refusal: INVALID_ARGUMENT naming a field of the request (one of `roots`, possibly with a
/// sub-path), or UNIMPLEMENTED for templates.
fn check_refusal(s: &Status, roots: &[&str]) -> Result<(), String> {
    let msg = s.message();
    if s.code() == Code::Unimplemented {
        return ensure(msg.starts_with("template: "), || {
            format!("UNIMPLEMENTED without template: {msg:?}")
        });
    }
    ensure(s.code() == Code::InvalidArgument, || {
        format!("code {:?} ({msg:?})", s.code())
    })?;
    let Some((field, rest)) = msg.split_once(": ") else {
        return Err(format!("message {msg:?} does not start with `field: `"));
    };
    ensure(!rest.trim().is_empty(), || {
        format!("message {msg:?} says nothing after the field")
    })?;
    ensure(
        field
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.[]".contains(&b)),
        || format!("field {field:?} of {msg:?} is not a field path"),
    )?;
    let root = field.split(['.', '[']).next().unwrap();
    ensure(roots.contains(&root), || {
        format!("field {field:?} of {msg:?} is not one of {roots:?}")
    })?;
    Ok(())
}

fn check_path(p: &str, given: &str) -> Result<(), String> {
    ensure(p == given, || "path was rewritten".into())?;
    ensure(p.starts_with('/'), || {
        format!("accepted relative path {p:?}")
    })?;
    ensure(!p.contains('\0'), || "accepted NUL in path".into())?;
    ensure(p.len() <= validate::MAX_PATH, || {
        "accepted an over-long path".into()
    })
}

fn check_sandbox(ns: &str, name: &str, r: &pb::SandboxRef, default_ns: &str) -> Result<(), String> {
    ensure(validate::is_dns_label(ns), || format!("namespace {ns:?}"))?;
    ensure(validate::is_dns_label(name), || format!("name {name:?}"))?;
    ensure(name == r.name, || "name rewritten".into())?;
    ensure(
        ns == if r.namespace.is_empty() {
            default_ns
        } else {
            &r.namespace
        },
        || "namespace".into(),
    )
}

/// Parses an `airlock-agent exec` command line back into options (what the agent's argument
/// parser sees), to prove the flags cannot be confused with the command.
fn parse_exec_command(c: &[String]) -> Result<ExecOptions, String> {
    ensure(
        c.len() >= 3 && c[0] == "/.airlock/airlock-agent" && c[1] == "exec",
        || format!("prefix {c:?}"),
    )?;
    let mut o = ExecOptions::default();
    let mut i = 2;
    loop {
        let flag = c.get(i).ok_or("no `--`")?;
        match flag.as_str() {
            "--" => {
                o.argv = c[i + 1..].to_vec();
                return Ok(o);
            }
            "--tty" => {
                o.tty = true;
                i += 1;
                continue;
            }
            "--size" => {
                let v = c.get(i + 1).ok_or("--size without value")?;
                let (cols, rows) = v.split_once('x').ok_or("--size without x")?;
                o.size = Some((
                    cols.parse().map_err(|_| "cols")?,
                    rows.parse().map_err(|_| "rows")?,
                ));
                i += 2;
                continue;
            }
            _ => {}
        }
        let v = c.get(i + 1).ok_or("flag without value")?;
        match flag.as_str() {
            "--cwd" => o.cwd = Some(v.clone()),
            "--env" => {
                let (k, val) = v.split_once('=').ok_or("--env without =")?;
                o.env.push((k.into(), val.into()));
            }
            "--timeout-ms" => o.timeout_ms = Some(v.parse().map_err(|_| "timeout")?),
            other => return Err(format!("unknown flag {other:?}")),
        }
        i += 2;
    }
}

fn check_exec_spec(
    s: &ExecSpec,
    r_sandbox: &pb::SandboxRef,
    default_ns: &str,
) -> Result<(), String> {
    check_sandbox(&s.namespace, &s.name, r_sandbox, default_ns)?;
    let o = &s.options;
    ensure(!o.argv.is_empty() && !o.argv[0].is_empty(), || {
        "empty argv or program".into()
    })?;
    ensure(o.argv.len() <= validate::MAX_ARGS, || {
        "too many args".into()
    })?;
    ensure(o.argv.iter().all(|a| !a.contains('\0')), || {
        "NUL in argv".into()
    })?;
    ensure(!o.tty && o.timeout_ms.is_none(), || {
        "tty/timeout_ms set by validation".into()
    })?;
    if let Some(cwd) = &o.cwd {
        check_path(cwd, cwd)?;
    }
    ensure(o.env.len() <= validate::MAX_ENV, || "too many env".into())?;
    ensure(o.env.windows(2).all(|w| w[0].0 < w[1].0), || {
        "env not sorted/unique".into()
    })?;
    for (k, v) in &o.env {
        ensure(validate::is_env_name(k) && !k.contains('='), || {
            format!("env name {k:?}")
        })?;
        ensure(!v.contains('\0'), || "NUL in env value".into())?;
    }
    let total: usize = o.argv.iter().map(|a| a.len() + 1).sum::<usize>()
        + o.env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    ensure(total <= validate::MAX_COMMAND_BYTES, || {
        "command line too long".into()
    })?;
    if let Some(t) = s.timeout {
        ensure(!t.is_zero() && t <= validate::MAX_TIMEOUT, || {
            format!("timeout {t:?}")
        })?;
    }
    // The command line the gateway runs parses back to the same options.
    let mut with_backstop = o.clone();
    with_backstop.timeout_ms = s.timeout.map(|t| t.as_millis() as u64 + 5000);
    let line = agent::exec_command("/.airlock/airlock-agent", &with_backstop);
    let back = parse_exec_command(&line)?;
    ensure(back == with_backstop, || {
        format!("exec command line does not round-trip: {line:?}")
    })?;
    Ok(())
}

fn check_file_command(cmd: FileCommand) -> Result<(), String> {
    let c = cmd.command("/.airlock/airlock-agent");
    ensure(c[1] == cmd.name() && c[2] == cmd.path(), || {
        "file command shape".into()
    })?;
    ensure(!c[2].starts_with('-'), || {
        "path could be taken for a flag".into()
    })
}

/// Rough mirror of the CRD schema (crds/src/lib.rs) for what the gateway writes: a spec the
/// gateway accepts but the API server would refuse is not a safety problem (the API server's 422
/// becomes INVALID_ARGUMENT), but its message then does not come from the gateway. Counted and
/// reported, not failed.
fn crd_mismatches(spec: &airlock_crds::SandboxSpec) -> Vec<&'static str> {
    let mut out = Vec::new();
    if spec.env.iter().any(|e| e.value.len() > 32768) {
        out.push("env value longer than the CRD's 32768");
    }
    if spec.env.iter().any(|e| e.name.len() > 256) {
        out.push("env name longer than 256");
    }
    if spec.image.is_empty() || spec.image.len() > 512 {
        out.push("image length");
    }
    if spec.network.allow.iter().any(|a| a.cidr.len() > 64) {
        out.push("cidr longer than 64");
    }
    out
}

fn check_create(
    c: &CreateSpec,
    r: &pb::CreateSandboxRequest,
    default_ns: &str,
    stats: &mut Stats,
) -> Result<(), String> {
    ensure(validate::is_dns_label(&c.namespace), || "namespace".into())?;
    ensure(
        c.namespace
            == if r.namespace.is_empty() {
                default_ns
            } else {
                &r.namespace
            },
        || "namespace".into(),
    )?;
    match (&c.name, &c.generate_name) {
        (Some(n), None) => ensure(validate::is_dns_label(n), || format!("name {n:?}"))?,
        (None, Some(g)) => ensure(
            !g.is_empty()
                && g.len() <= 58
                && validate::is_dns_label(g.trim_end_matches('-'))
                && validate::is_dns_label(&format!("{g}abcde")),
            || format!("generate_name {g:?}: generated names would not be DNS labels"),
        )?,
        other => return Err(format!("name/generate_name {other:?}")),
    }
    let s = &c.spec;
    ensure(
        !s.image.trim().is_empty()
            && s.image.len() <= 512
            && !s
                .image
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control()),
        || format!("image {:?}", s.image),
    )?;
    ensure(
        matches!(&r.source, Some(pb::create_sandbox_request::Source::Image(i)) if *i == s.image),
        || "image".into(),
    )?;
    for q in [
        &s.resources.cpu,
        &s.resources.memory,
        &s.resources.ephemeral_storage,
    ]
    .into_iter()
    .flatten()
    {
        ensure(validate::is_quantity(&q.0) && q.0.len() <= 64, || {
            format!("quantity {:?}", q.0)
        })?;
        ensure(q.0.bytes().any(|b| (b'1'..=b'9').contains(&b)), || {
            format!("zero quantity {:?}", q.0)
        })?;
    }
    for t in [s.lifetime.ttl_seconds, s.lifetime.idle_timeout_seconds]
        .into_iter()
        .flatten()
    {
        ensure((1..=airlock_crds::MAX_TTL_SECONDS).contains(&t), || {
            format!("seconds {t}")
        })?;
    }
    let n = &s.network;
    ensure(
        (n.egress == airlock_crds::EgressMode::AllowList) == !n.allow.is_empty(),
        || "allow iff AllowList".into(),
    )?;
    ensure(n.allow.len() <= 64, || "allow count".into())?;
    for a in &n.allow {
        ensure(validate::is_cidr(&a.cidr), || format!("cidr {:?}", a.cidr))?;
        ensure(
            a.ports.len() <= 32 && a.ports.iter().all(|p| (1..=65535).contains(&p.port)),
            || "ports".into(),
        )?;
    }
    ensure(s.env.len() <= 128, || "env count".into())?;
    ensure(s.env.windows(2).all(|w| w[0].name < w[1].name), || {
        "env not sorted".into()
    })?;
    for e in &s.env {
        ensure(
            validate::is_env_name(&e.name) && !e.value.contains('\0'),
            || format!("env {:?}", e.name),
        )?;
    }
    for (k, v) in &c.labels {
        ensure(
            validate::is_label_key(k) && validate::is_label_value(v),
            || format!("label {k:?}={v:?}"),
        )?;
        ensure(
            !k.starts_with("airlock.dev/") && !k.contains(".airlock.dev/"),
            || format!("reserved label {k:?}"),
        )?;
    }
    if let Some(rc) = &s.runtime_class_name {
        ensure(
            rc.len() <= 253 && rc.split('.').all(validate::is_dns_label),
            || format!("runtime class {rc:?}"),
        )?;
    }
    if let Some(wd) = &s.working_dir {
        check_path(wd, &r.working_dir)?;
    }
    ensure(
        s.command.is_empty() && s.args.is_empty() && s.image_pull_policy.is_none(),
        || "fields set from nowhere".into(),
    )?;
    // What the gateway writes, the operator reads back unchanged.
    let json = serde_json::to_string(s).map_err(|e| format!("spec does not serialize: {e}"))?;
    let back: airlock_crds::SandboxSpec =
        serde_json::from_str(&json).map_err(|e| format!("spec does not deserialize: {e}"))?;
    ensure(&back == s, || {
        "spec does not round-trip through JSON".into()
    })?;
    for m in crd_mismatches(s) {
        *stats.crd_mismatch.entry(m).or_default() += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Per-message checks: (the validation each service runs first, the invariants).

const DEFAULT_NS: &str = "default";

#[derive(Default)]
pub struct Stats {
    cases: u64,
    undecodable: u64,
    accepted: BTreeMap<&'static str, u64>,
    refused: BTreeMap<&'static str, u64>,
    crd_mismatch: BTreeMap<&'static str, u64>,
    frames: u64,
}

fn outcome<T>(stats: &mut Stats, what: &'static str, r: &Result<T, Status>) {
    let m = if r.is_ok() {
        &mut stats.accepted
    } else {
        &mut stats.refused
    };
    *m.entry(what).or_default() += 1;
}

fn check_exec(r: &pb::ExecRequest, stats: &mut Stats) -> Result<(), String> {
    let res = validate::exec_request(r, DEFAULT_NS);
    outcome(stats, "Exec", &res);
    match res {
        Err(s) => check_refusal(
            &s,
            &[
                "command", "argv", "shell", "sandbox", "env", "cwd", "timeout",
            ],
        ),
        Ok(spec) => {
            check_exec_spec(&spec, r.sandbox.as_ref().unwrap(), DEFAULT_NS)?;
            ensure(spec.stdin == r.stdin, || "stdin".into())?;
            match &r.command {
                Some(pb::exec_request::Command::Argv(a)) => {
                    ensure(spec.options.argv == a.args, || "argv rewritten".into())
                }
                Some(pb::exec_request::Command::Shell(sh)) => ensure(
                    spec.options.argv == ["/bin/sh", "-c", sh.as_str()] && !sh.trim().is_empty(),
                    || "shell argv".into(),
                ),
                None => Err("accepted without a command".into()),
            }
        }
    }
}

fn check_run_code(r: &pb::RunCodeRequest, stats: &mut Stats) -> Result<(), String> {
    let res = validate::run_code_request(r, DEFAULT_NS);
    outcome(stats, "RunCode", &res);
    match res {
        Err(s) => check_refusal(
            &s,
            &[
                "language", "code", "sandbox", "env", "cwd", "timeout", "argv",
            ],
        ),
        Ok(spec) => {
            check_exec_spec(&spec, r.sandbox.as_ref().unwrap(), DEFAULT_NS)?;
            let a = &spec.options.argv;
            ensure(
                a.len() == 3
                    && ["python3", "node", "/bin/sh"].contains(&a[0].as_str())
                    && a[2] == r.code,
                || format!("run-code argv {:?}", &a[..a.len().min(2)]),
            )?;
            ensure(
                !r.code.trim().is_empty() && r.code.len() <= validate::MAX_CODE,
                || "code".into(),
            )
        }
    }
}

fn check_create_req(r: &pb::CreateSandboxRequest, stats: &mut Stats) -> Result<(), String> {
    match airlock_exec_gateway::run_as::security_context(r) {
        Err(s) => check_refusal(&s, &["run_as_user", "run_as_group"])?,
        Ok(Some(sc)) => ensure(
            (1..=i64::from(i32::MAX)).contains(&sc.run_as_user)
                && (0..=i64::from(i32::MAX)).contains(&sc.group()),
            || format!("run_as accepted {sc:?}"),
        )?,
        Ok(None) => ensure(r.run_as_user.is_none() && r.run_as_group.is_none(), || {
            "run_as ignored".into()
        })?,
    }
    let res = validate::create_request(r, DEFAULT_NS);
    outcome(stats, "CreateSandbox", &res);
    match res {
        Err(s) => check_refusal(
            &s,
            &[
                "namespace",
                "name",
                "generate_name",
                "image",
                "template",
                "resources",
                "ttl_seconds",
                "idle_timeout_seconds",
                "network",
                "env",
                "labels",
                "runtime_class_name",
                "working_dir",
            ],
        ),
        Ok(c) => check_create(&c, r, DEFAULT_NS, stats),
    }
}

/// `sandbox_ref` + `path` (+ `mode`), as Download, ListDir, Stat, Remove, MakeDir and Upload run them.
fn check_file_request(
    what: &'static str,
    prefix: &str,
    sandbox: Option<&pb::SandboxRef>,
    p: &str,
    mode: Option<u32>,
    make: impl FnOnce(String, Option<u32>) -> FileCommand,
    stats: &mut Stats,
) -> Result<(), String> {
    let sandbox_field = format!("{prefix}sandbox");
    let path_field = format!("{prefix}path");
    let mode_field = format!("{prefix}mode");
    let res = (|| {
        let r = validate::sandbox_ref(&sandbox_field, sandbox, DEFAULT_NS)?;
        let p = validate::path(&path_field, p)?;
        let m = match mode {
            Some(m) => validate::mode(&mode_field, m)?,
            None => None,
        };
        Ok((r, p, m))
    })();
    outcome(stats, what, &res);
    match res {
        Err(s) => check_refusal(
            &s,
            &[prefix.trim_end_matches('.'), "sandbox", "path", "mode"]
                .map(|x| if x.is_empty() { "sandbox" } else { x }),
        ),
        Ok(((ns, name), checked, m)) => {
            check_sandbox(&ns, &name, sandbox.unwrap(), DEFAULT_NS)?;
            check_path(&checked, p)?;
            if let Some(m) = m {
                ensure(m != 0 && m <= 0o7777, || format!("mode {m:o}"))?;
            }
            ensure(mode.is_none_or(|given| (given == 0) == m.is_none()), || {
                "mode 0 is unset".into()
            })?;
            check_file_command(make(checked, m))
        }
    }
}

fn check_exec_input(r: &pb::ExecInput, stats: &mut Stats) -> Result<(), String> {
    use pb::exec_input::Input;
    match &r.input {
        None | Some(Input::Stdin(_)) | Some(Input::CloseStdin(_)) => Ok(()),
        Some(Input::Start(start)) => {
            let Some(req) = &start.request else {
                return Ok(());
            };
            check_exec(req, stats)?;
            if let Some(size) = &start.size {
                let res = validate::resize("start.size", size);
                outcome(stats, "ExecInput.start.size", &res);
                match res {
                    Err(s) => check_refusal(&s, &["start"])?,
                    Ok((c, rows)) => ensure(
                        c > 0
                            && rows > 0
                            && u32::from(c) == size.cols
                            && u32::from(rows) == size.rows,
                        || "size".into(),
                    )?,
                }
            }
            Ok(())
        }
        Some(Input::Resize(size)) => {
            let res = validate::resize("resize", size);
            outcome(stats, "ExecInput.resize", &res);
            match res {
                Err(s) => check_refusal(&s, &["resize"]),
                Ok((c, rows)) => {
                    ensure(
                        c > 0
                            && rows > 0
                            && u32::from(c) == size.cols
                            && u32::from(rows) == size.rows,
                        || "resize".into(),
                    )?;
                    // The frame the gateway sends parses to the same size in the agent.
                    let f = agent::resize_frame(c, rows);
                    let ev = parse_all(&f, 5);
                    ensure(ev == [Ev::Resize(c, rows)], || {
                        format!("resize frame parsed as {ev:?}")
                    })
                }
            }
        }
        Some(Input::Signal(sig)) => {
            let res = validate::signal("signal.number", sig);
            outcome(stats, "ExecInput.signal", &res);
            match res {
                Err(s) => check_refusal(&s, &["signal"]),
                Ok(n) => {
                    ensure((1..=64).contains(&n) && n as i32 == sig.number, || {
                        "signal".into()
                    })?;
                    let ev = parse_all(&agent::signal_frame(n), 3);
                    ensure(ev == [Ev::Signal(n as i32)], || {
                        format!("signal frame parsed as {ev:?}")
                    })
                }
            }
        }
    }
}

fn check_sandbox_only(
    what: &'static str,
    sandbox: Option<&pb::SandboxRef>,
    stats: &mut Stats,
) -> Result<(), String> {
    let res = validate::sandbox_ref("sandbox", sandbox, DEFAULT_NS);
    outcome(stats, what, &res);
    match res {
        Err(s) => check_refusal(&s, &["sandbox"]),
        Ok((ns, name)) => check_sandbox(&ns, &name, sandbox.unwrap(), DEFAULT_NS),
    }
}

// ---------------------------------------------------------------------------------------------
// Agent framing: gateway encoder -> agent parser.

#[derive(Debug, PartialEq, Clone)]
enum Ev {
    Data(Vec<u8>),
    Close,
    Signal(i32),
    Resize(u16, u16),
}

/// Feeds `bytes` to the agent's parser in chunks of at most `chunk`; adjacent DATA events are
/// merged. Checks the parser consumes everything it is given.
fn parse_all(bytes: &[u8], chunk: usize) -> Vec<Ev> {
    let mut p = agent_frame::Parser::new();
    let mut out: Vec<Ev> = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        let mut input = c;
        let mut guard = 0usize;
        while let Some(ev) = p.next(&mut input) {
            guard += 1;
            assert!(
                guard <= c.len() + 1,
                "the agent's parser returns events without consuming input"
            );
            match ev {
                agent_frame::Event::Data(d) => {
                    assert!(!d.is_empty(), "empty DATA event");
                    if let Some(Ev::Data(prev)) = out.last_mut() {
                        prev.extend_from_slice(d);
                    } else {
                        out.push(Ev::Data(d.to_vec()));
                    }
                }
                agent_frame::Event::Close => out.push(Ev::Close),
                agent_frame::Event::Signal(s) => out.push(Ev::Signal(s)),
                agent_frame::Event::Resize { cols, rows } => out.push(Ev::Resize(cols, rows)),
            }
        }
        assert!(input.is_empty(), "the agent's parser left input unconsumed");
    }
    out
}

fn check_frames(rng: &mut Rng, stats: &mut Stats) -> Result<(), String> {
    stats.frames += 1;
    if rng.one_in(3) {
        // Random byte stream straight into the agent's parser: no panic, all input consumed.
        let n = rng.len(4096);
        let b: Vec<u8> = (0..n)
            .map(|_| {
                if rng.one_in(4) {
                    *rng.pick(&[0u8, 1, 2, 3, 4, 0xff])
                } else {
                    rng.next() as u8
                }
            })
            .collect();
        let chunk = rng.range(1, 64) as usize;
        let whole = parse_all(&b, b.len().max(1));
        ensure(parse_all(&b, chunk) == whole, || {
            "parse depends on chunking".into()
        })?;
        return Ok(());
    }
    // A random session, encoded by the gateway, parsed by the agent in random chunks.
    let mut wire: Vec<u8> = Vec::new();
    let mut want: Vec<Ev> = Vec::new();
    for _ in 0..rng.range(0, 8) {
        match rng.below(4) {
            0 => {
                let n = if rng.one_in(10) {
                    rng.range(60_000, 200_000) as usize
                } else {
                    rng.len(100)
                };
                let d: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                let frames = agent::data_frames(&d);
                ensure(
                    frames.len() == d.len().div_ceil(agent::MAX_DATA_FRAME),
                    || "frame count".into(),
                )?;
                for f in &frames {
                    ensure(
                        f.len() <= 5 + agent::MAX_DATA_FRAME && f[0] == agent::FRAME_DATA,
                        || "data frame".into(),
                    )?;
                    wire.extend_from_slice(f);
                }
                if !d.is_empty() {
                    if let Some(Ev::Data(prev)) = want.last_mut() {
                        prev.extend_from_slice(&d);
                    } else {
                        want.push(Ev::Data(d));
                    }
                }
            }
            1 => {
                wire.extend_from_slice(&agent::close_frame());
                want.push(Ev::Close);
            }
            2 => {
                let s = rng.next() as u32;
                wire.extend_from_slice(&agent::signal_frame(s));
                want.push(Ev::Signal(s as i32));
            }
            _ => {
                let (c, r) = (rng.next() as u16, rng.next() as u16);
                wire.extend_from_slice(&agent::resize_frame(c, r));
                want.push(Ev::Resize(c, r));
            }
        }
    }
    let chunk = *rng.pick(&[1usize, 2, 3, 4, 5, 6, 7, 64, 4096, 1 << 20]);
    let got = parse_all(&wire, chunk);
    ensure(got == want, || {
        format!(
            "frames do not round-trip (chunk {chunk}): {} events vs {}",
            got.len(),
            want.len()
        )
    })
}

/// Decodes `bytes` as request message number `kind` (and, for the last kind, feeds them to the
/// agent's frame parser) and runs that message's checks. Undecodable input is fine.
pub fn check_wire(kind: u8, bytes: &[u8], stats: &mut Stats) -> Result<(), String> {
    fn d<M: Message + Default>(b: &[u8]) -> Option<M> {
        M::decode(b).ok()
    }
    match kind % 14 {
        0 => d::<pb::ExecRequest>(bytes).map_or(Ok(()), |r| check_exec(&r, stats)),
        1 => d::<pb::RunCodeRequest>(bytes).map_or(Ok(()), |r| check_run_code(&r, stats)),
        2 => d::<pb::CreateSandboxRequest>(bytes).map_or(Ok(()), |r| check_create_req(&r, stats)),
        3 => match d::<pb::UploadRequest>(bytes) {
            Some(pb::UploadRequest {
                part: Some(pb::upload_request::Part::Header(h)),
            }) => check_file_request(
                "Upload",
                "header.",
                h.sandbox.as_ref(),
                &h.path,
                Some(h.mode),
                |path, mode| FileCommand::Put {
                    path,
                    mode,
                    parents: h.parents,
                },
                stats,
            ),
            _ => Ok(()),
        },
        4 => d::<pb::DownloadRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "Download",
                "",
                r.sandbox.as_ref(),
                &r.path,
                None,
                |path, _| FileCommand::Get { path },
                stats,
            )
        }),
        5 => d::<pb::ListDirRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "ListDir",
                "",
                r.sandbox.as_ref(),
                &r.path,
                None,
                |path, _| FileCommand::Ls { path },
                stats,
            )
        }),
        6 => d::<pb::StatRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "Stat",
                "",
                r.sandbox.as_ref(),
                &r.path,
                None,
                |path, _| FileCommand::Stat { path },
                stats,
            )
        }),
        7 => d::<pb::RemoveRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "Remove",
                "",
                r.sandbox.as_ref(),
                &r.path,
                None,
                |path, _| FileCommand::Rm {
                    path,
                    recursive: r.recursive,
                },
                stats,
            )
        }),
        8 => d::<pb::MakeDirRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "MakeDir",
                "",
                r.sandbox.as_ref(),
                &r.path,
                Some(r.mode),
                |path, mode| FileCommand::Mkdir {
                    path,
                    parents: r.parents,
                    mode,
                },
                stats,
            )
        }),
        9 => d::<pb::ExecInput>(bytes).map_or(Ok(()), |r| check_exec_input(&r, stats)),
        10 => d::<pb::GetSandboxRequest>(bytes).map_or(Ok(()), |r| {
            check_sandbox_only("GetSandbox", r.sandbox.as_ref(), stats)
        }),
        11 => d::<pb::DeleteSandboxRequest>(bytes).map_or(Ok(()), |r| {
            check_sandbox_only("DeleteSandbox", r.sandbox.as_ref(), stats)
        }),
        12 => d::<pb::ExtendSandboxRequest>(bytes).map_or(Ok(()), |r| {
            check_sandbox_only("ExtendSandbox", r.sandbox.as_ref(), stats)
        }),
        _ => {
            let whole = parse_all(bytes, bytes.len().max(1));
            let chunk = 1 + bytes.first().map_or(0, |b| *b as usize % 7);
            ensure(parse_all(bytes, chunk) == whole, || {
                "parse depends on chunking".into()
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driver.

fn decode<M: Message + Default>(b: &[u8], stats: &mut Stats) -> Option<M> {
    match M::decode(b) {
        Ok(m) => Some(m),
        Err(_) => {
            stats.undecodable += 1;
            None
        }
    }
}

pub fn run_case(
    rng: &mut Rng,
    stats: &mut Stats,
    input: &mut Option<Box<dyn Debug>>,
) -> Result<(), String> {
    let structured = rng.bool();
    macro_rules! msg {
        ($ty:ty, $gen:expr) => {{
            let m: Option<$ty> = if structured {
                Some($gen(&mut *rng))
            } else {
                let b = wire(rng, |rng| $gen(rng).encode_to_vec());
                *input = Some(Box::new(format!("bytes {:02x?}", &b[..b.len().min(512)])));
                decode::<$ty>(&b, stats)
            };
            if let Some(m) = &m {
                *input = Some(Box::new(m.clone()));
            }
            m
        }};
    }
    match rng.below(14) {
        0 | 1 => {
            if let Some(r) = msg!(pb::ExecRequest, exec_request) {
                check_exec(&r, stats)?;
            }
        }
        2 => {
            if let Some(r) = msg!(pb::RunCodeRequest, run_code_request) {
                check_run_code(&r, stats)?;
            }
        }
        3 | 4 => {
            if let Some(r) = msg!(pb::CreateSandboxRequest, create_request) {
                check_create_req(&r, stats)?;
            }
        }
        5 => {
            let gen_upload = |rng: &mut Rng| pb::UploadRequest {
                part: match rng.below(4) {
                    0 => None,
                    1 => Some(pb::upload_request::Part::Chunk(
                        bytes(rng).unwrap_or_default(),
                    )),
                    _ => Some(pb::upload_request::Part::Header(pb::UploadHeader {
                        sandbox: sandbox_ref(rng),
                        path: path(rng),
                        mode: rng.pick_or(&[0, 0o644, 0o7777, 0o10000, u32::MAX], |r| r as u32),
                        parents: rng.bool(),
                    })),
                },
            };
            if let Some(pb::UploadRequest {
                part: Some(pb::upload_request::Part::Header(h)),
            }) = msg!(pb::UploadRequest, gen_upload)
            {
                check_file_request(
                    "Upload",
                    "header.",
                    h.sandbox.as_ref(),
                    &h.path,
                    Some(h.mode),
                    |path, mode| FileCommand::Put {
                        path,
                        mode,
                        parents: h.parents,
                    },
                    stats,
                )?;
            }
        }
        6 => {
            let g = |rng: &mut Rng| pb::DownloadRequest {
                sandbox: sandbox_ref(rng),
                path: path(rng),
            };
            if let Some(r) = msg!(pb::DownloadRequest, g) {
                check_file_request(
                    "Download",
                    "",
                    r.sandbox.as_ref(),
                    &r.path,
                    None,
                    |path, _| FileCommand::Get { path },
                    stats,
                )?;
            }
        }
        7 => {
            let g = |rng: &mut Rng| pb::ListDirRequest {
                sandbox: sandbox_ref(rng),
                path: path(rng),
            };
            if let Some(r) = msg!(pb::ListDirRequest, g) {
                check_file_request(
                    "ListDir",
                    "",
                    r.sandbox.as_ref(),
                    &r.path,
                    None,
                    |path, _| FileCommand::Ls { path },
                    stats,
                )?;
            }
        }
        8 => {
            let g = |rng: &mut Rng| pb::StatRequest {
                sandbox: sandbox_ref(rng),
                path: path(rng),
            };
            if let Some(r) = msg!(pb::StatRequest, g) {
                check_file_request(
                    "Stat",
                    "",
                    r.sandbox.as_ref(),
                    &r.path,
                    None,
                    |path, _| FileCommand::Stat { path },
                    stats,
                )?;
            }
        }
        9 => {
            let g = |rng: &mut Rng| pb::RemoveRequest {
                sandbox: sandbox_ref(rng),
                path: path(rng),
                recursive: rng.bool(),
            };
            if let Some(r) = msg!(pb::RemoveRequest, g) {
                check_file_request(
                    "Remove",
                    "",
                    r.sandbox.as_ref(),
                    &r.path,
                    None,
                    |path, _| FileCommand::Rm {
                        path,
                        recursive: r.recursive,
                    },
                    stats,
                )?;
            }
        }
        10 => {
            let g = |rng: &mut Rng| pb::MakeDirRequest {
                sandbox: sandbox_ref(rng),
                path: path(rng),
                parents: rng.bool(),
                mode: rng.pick_or(&[0, 0o755, 0o7777, 0o10000, u32::MAX], |r| r as u32),
            };
            if let Some(r) = msg!(pb::MakeDirRequest, g) {
                check_file_request(
                    "MakeDir",
                    "",
                    r.sandbox.as_ref(),
                    &r.path,
                    Some(r.mode),
                    |path, mode| FileCommand::Mkdir {
                        path,
                        parents: r.parents,
                        mode,
                    },
                    stats,
                )?;
            }
        }
        11 => {
            if let Some(r) = msg!(pb::ExecInput, exec_input) {
                check_exec_input(&r, stats)?;
            }
        }
        12 => match rng.below(4) {
            0 => {
                let g = |rng: &mut Rng| pb::GetSandboxRequest {
                    sandbox: sandbox_ref(rng),
                };
                if let Some(r) = msg!(pb::GetSandboxRequest, g) {
                    check_sandbox_only("GetSandbox", r.sandbox.as_ref(), stats)?;
                }
            }
            1 => {
                let g = |rng: &mut Rng| pb::DeleteSandboxRequest {
                    sandbox: sandbox_ref(rng),
                };
                if let Some(r) = msg!(pb::DeleteSandboxRequest, g) {
                    check_sandbox_only("DeleteSandbox", r.sandbox.as_ref(), stats)?;
                }
            }
            2 => {
                let g = |rng: &mut Rng| pb::ExtendSandboxRequest {
                    sandbox: sandbox_ref(rng),
                    add_seconds: rng.next() as i64,
                };
                if let Some(r) = msg!(pb::ExtendSandboxRequest, g) {
                    check_sandbox_only("ExtendSandbox", r.sandbox.as_ref(), stats)?;
                }
            }
            _ => {
                let g = |rng: &mut Rng| pb::ListSandboxesRequest {
                    namespace: string(rng),
                    label_selector: string(rng),
                };
                if let Some(r) = msg!(pb::ListSandboxesRequest, g) {
                    let res = validate::namespace("namespace", &r.namespace, DEFAULT_NS);
                    outcome(stats, "ListSandboxes", &res);
                    match res {
                        Err(s) => check_refusal(&s, &["namespace"])?,
                        Ok(ns) => {
                            ensure(validate::is_dns_label(&ns), || format!("namespace {ns:?}"))?
                        }
                    }
                }
            }
        },
        _ => {
            *input = Some(Box::new("frames"));
            check_frames(rng, stats)?;
        }
    }
    Ok(())
}

fn short(m: &impl Debug) -> String {
    let mut s = format!("{m:?}");
    if s.len() > 4000 {
        let mut cut = 4000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...<truncated>");
    }
    s
}

thread_local! {
    /// Where the last caught panic happened (set by the panic hook).
    static PANIC_AT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic>".into());
    format!("{msg} (at {})", PANIC_AT.with(|a| a.borrow().clone()))
}

#[test]
fn fuzz_gateway_requests() {
    let seed = env_u64("FUZZ_SEED", 0x5EED_0F_A1_2C_0C_CA);
    let iterations = env_u64("FUZZ_ITERATIONS", 20_000);
    let budget = Duration::from_secs(env_u64("FUZZ_SECONDS", 10));
    let only = std::env::var("FUZZ_CASE")
        .ok()
        .map(|c| c.trim().parse::<u64>().expect("FUZZ_CASE"));
    println!(
        "fuzz_requests: FUZZ_SEED={seed:#x} FUZZ_ITERATIONS={iterations} FUZZ_SECONDS={}",
        budget.as_secs()
    );

    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    }));
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut failures: Vec<String> = Vec::new();
    let cases: Box<dyn Iterator<Item = u64>> = match only {
        Some(c) => Box::new(std::iter::once(c)),
        None => Box::new(0..iterations),
    };
    for case in cases {
        if only.is_none() && start.elapsed() > budget {
            break;
        }
        stats.cases += 1;
        let mut rng = case_rng(seed, case);
        let mut input: Option<Box<dyn Debug>> = None;
        let r = catch_unwind(AssertUnwindSafe(|| {
            run_case(&mut rng, &mut stats, &mut input)
        }));
        let problem = match r {
            Ok(Ok(())) => continue,
            Ok(Err(v)) => format!("invariant violated: {v}"),
            Err(p) => format!("PANIC: {}", panic_message(&*p)),
        };
        failures.push(format!(
            "case {case} (replay: FUZZ_SEED={seed:#x} FUZZ_CASE={case}): {problem}\n  input: {}",
            short(&input)
        ));
        if failures.len() >= 20 {
            break;
        }
    }
    std::panic::set_hook(default_hook);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz_requests: {} cases in {secs:.1}s ({:.0}/s); {} undecodable; {} frame sessions\n  accepted: {:?}\n  refused:  {:?}\n  accepted by the gateway, refused by the CRD schema (reported, not failed): {:?}",
        stats.cases,
        stats.cases as f64 / secs.max(1e-9),
        stats.undecodable,
        stats.frames,
        stats.accepted,
        stats.refused,
        stats.crd_mismatch,
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    if only.is_none() && stats.cases >= 2000 {
        for what in [
            "Exec",
            "RunCode",
            "CreateSandbox",
            "Upload",
            "MakeDir",
            "ExecInput.signal",
        ] {
            assert!(
                stats.accepted.get(what).copied().unwrap_or(0) > 0,
                "no {what} request was ever accepted"
            );
            assert!(
                stats.refused.get(what).copied().unwrap_or(0) > 0,
                "no {what} request was ever refused"
            );
        }
    }
}

/// Raw random bytes as every message kind through [`check_wire`] (the entry point of the
/// cargo-fuzz target), so it is exercised on stable too.
#[test]
fn fuzz_raw_bytes_every_kind() {
    let seed = env_u64("FUZZ_SEED", 0x5EED_0F_A1_2C_0C_CA) ^ 0xB17E5;
    let mut stats = Stats::default();
    let mut rng = Rng(seed, 100);
    for _ in 0..env_u64("FUZZ_ITERATIONS", 20_000).min(20_000) {
        let kind = rng.below(14) as u8;
        let b = wire(&mut rng, |rng| {
            let n = rng.len(512);
            (0..n).map(|_| rng.next() as u8).collect()
        });
        if let Err(e) = check_wire(kind, &b, &mut stats) {
            panic!("kind {kind}, bytes {b:02x?}: {e}");
        }
    }
}
