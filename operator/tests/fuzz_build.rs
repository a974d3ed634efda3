//! Bounded fuzzing of the operator's pure pipeline: Sandbox -> `validate` -> Plan -> `build::pod`
//! and `build::network_policy`, on many generated Sandboxes.
//!
//! Inputs come from four generators:
//! - structured: a Sandbox built field by field from hostile values (unicode and control
//!   characters, huge strings, garbage quantities such as `1e999` or `9999999Ti`, out-of-range
//!   ports and malformed CIDRs, empty and huge lists, every egress mode, missing uid, namespace or
//!   creationTimestamp), under a randomly generated (but valid) operator configuration;
//! - JSON mutation: a valid Sandbox as JSON with random nodes replaced, removed or retyped,
//!   deserialized into `airlock_crds::Sandbox`;
//! - random JSON: free-form values with the Sandbox's key names;
//! - raw bytes: mutated JSON text and random bytes through `serde_json::from_slice`.
//!
//! The same generators and checks drive the cargo-fuzz target `fuzz/fuzz_targets/sandbox_build.rs`
//! (hence the `pub` items).
//!
//! Each case runs under `catch_unwind`; a panic or a broken invariant is reported with the seed,
//! the case number (to replay it alone) and the input.
//!
//! Knobs (environment): `FUZZ_SEED` (default fixed), `FUZZ_ITERATIONS` (default 20000),
//! `FUZZ_SECONDS` (default 10; whichever limit comes first), `FUZZ_CASE` (replay one case).
//! Longer run:
//! `FUZZ_SECONDS=600 FUZZ_ITERATIONS=100000000 cargo test -p airlock-operator --test fuzz_build -- --nocapture`
//!
//! Over 600 lines: the Sandbox generators and every invariant of the pure pipeline; sharing the
//! generators with the gateway fuzzer is issue 11 (layout).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_crds::{
    AgentSource, EgressMode, EgressPort, EgressRule, ExpiryPolicy, Lifetime, Network, Protocol,
    PullPolicy, Sandbox, SandboxEnvVar, SandboxResources, SandboxSpec, labels,
};
use airlock_operator::build::netpol::{BLOCKED_V4, BLOCKED_V6};
use airlock_operator::build::{self, BuildError, PRIORITY_CLASS};
use airlock_operator::bundle::AgentBundle;
use airlock_operator::cidr::Cidr;
use airlock_operator::config::{Agent, Cli, Config, parse_cidr};
use airlock_operator::quantity;
use airlock_operator::reconcile::validate::{Plan, validate};
use clap::Parser;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Deterministic PRNG (SplitMix64) and knobs.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
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
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// A list length: mostly small, sometimes empty, sometimes large.
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

fn case_rng(seed: u64, case: u64) -> Rng {
    let mut r = Rng::new(seed ^ case.wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.next();
    r
}

// ---------------------------------------------------------------------------------------------
// Hostile values.

const NASTY: &[&str] = &[
    "",
    " ",
    "-",
    "a",
    "sbx-1",
    "A",
    "a.b",
    "-a",
    "a-",
    "a_b",
    "0",
    "kata",
    "gvisor",
    "runc",
    "/",
    "//",
    "/.",
    "/tmp/..",
    "../../etc/passwd",
    "/work",
    "relative/path",
    "\0",
    "a\0b",
    "\n",
    "\r\n",
    "\t",
    "\u{7f}",
    "\u{1b}[31m",
    "é",
    "ß",
    "🦀",
    "\u{202e}gnp.exe",
    "\u{feff}",
    "\u{fffd}",
    "İ",
    "%s%n%x",
    "${HOME}",
    "$(rm -rf /)",
    "`id`",
    "'; DROP TABLE sandboxes; --",
    "null",
    "true",
    "1e999",
    "-1",
    "NaN",
    "python:3.12-slim",
    "ghcr.io/acme/tools@sha256:0123456789abcdef",
    "--privileged",
    "--",
    "LD_PRELOAD",
    "PATH",
];

fn ascii_string(rng: &mut Rng, n: usize) -> String {
    (0..n).map(|_| (rng.below(128) as u8) as char).collect()
}

fn unicode_string(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| match rng.below(6) {
            0 => char::from_u32(rng.below(0x20) as u32).unwrap(),
            1 => char::from_u32(0x80 + rng.below(0x780) as u32).unwrap(),
            2 => char::from_u32(0x1F300 + rng.below(0x300) as u32).unwrap(),
            3 => *rng.pick(&[
                '\u{202e}',
                '\u{200b}',
                '\u{feff}',
                '\u{0}',
                '\u{7f}',
                '\u{10ffff}',
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

/// Any string: interesting constants, valid names, random ASCII, unicode, or huge.
fn string(rng: &mut Rng) -> String {
    match rng.below(16) {
        0..=4 => rng.pick(NASTY).to_string(),
        5..=7 => dns_label(rng),
        8..=10 => {
            let n = rng.range(0, 24) as usize;
            ascii_string(rng, n)
        }
        11..=13 => {
            let n = rng.range(0, 24) as usize;
            unicode_string(rng, n)
        }
        14 => {
            // Just around the limits the CRD and the validator care about.
            let n = *rng.pick(&[
                62usize, 63, 64, 252, 253, 254, 511, 512, 513, 4095, 4096, 4097,
            ]);
            "a".repeat(n)
        }
        _ => {
            if rng.one_in(8) {
                // Huge (up to 1 MiB), rarely: keeps throughput up.
                let n = rng.range(4096, 1 << 20) as usize;
                let c = *rng.pick(&["a", "é", "🦀", "\0", "/"]);
                c.repeat(n / c.len())
            } else {
                format!("{}{}", rng.pick(NASTY), rng.pick(NASTY))
            }
        }
    }
}

const QUANTITIES: &[&str] = &[
    "1",
    "2",
    "4",
    "500m",
    "4000m",
    "4001m",
    "0.5",
    ".5",
    "5.",
    "512Mi",
    "8Gi",
    "8193Mi",
    "1Gi",
    "20Gi",
    "21Gi",
    "1.5Gi",
    "0",
    "-0",
    "+0",
    "-1",
    "-500m",
    "",
    " ",
    " 1 ",
    "+1",
    "1e999",
    "1e40",
    "1e41",
    "1e-40",
    "1e-41",
    "1E+3",
    "1e+3",
    "1e-9",
    "1e-10",
    "1e",
    "e3",
    "9999999Ti",
    "8Ei",
    "9Ei",
    "9999999999999999999999999999999Ei",
    "0.1n",
    "1n",
    "1u",
    "1k",
    "1K",
    "1ki",
    "1Ki2",
    "1 Gi",
    "1..2",
    ".",
    "..",
    "Mi",
    "NaN",
    "inf",
    "-inf",
    "0x10",
    "१",
    "１",
    "1m1",
    "1\0",
    "1🦀",
    "000000000000000000000000000000000000001",
    "1000000000000000000000000000000",
    "10000000000000000000000000000000",
    "0.0000000000000000000000000000000000000000000000000000000001",
    "0.00000000000000000000000000000000000000000000000000000000000",
    "1.000000000000000000000000000000000000000000000000000000000000",
];

fn quantity_string(rng: &mut Rng) -> String {
    match rng.below(8) {
        0..=3 => rng.pick(QUANTITIES).to_string(),
        4 | 5 => {
            // number + suffix combinations
            let num = match rng.below(5) {
                0 => rng.below(10_000).to_string(),
                1 => format!("{}.{}", rng.below(100), rng.below(1000)),
                2 => format!("-{}", rng.below(100)),
                3 => "9".repeat(rng.range(1, 45) as usize),
                _ => format!(
                    "0.{}{}",
                    "0".repeat(rng.range(0, 50) as usize),
                    rng.below(10)
                ),
            };
            let suffix = *rng.pick(&[
                "",
                "n",
                "u",
                "m",
                "k",
                "M",
                "G",
                "T",
                "P",
                "E",
                "Ki",
                "Mi",
                "Gi",
                "Ti",
                "Pi",
                "Ei",
                "e3",
                "e-3",
                "E9",
                "e40",
                "e41",
                "e-41",
                "e999",
                "e2147483647",
                "x",
                "mm",
                "Ki ",
                "iK",
            ]);
            format!("{num}{suffix}")
        }
        6 => {
            let n = rng.range(0, 40) as usize;
            (0..n)
                .map(|_| *rng.pick(b"0123456789.+-eEkKmMgGiunTPx ") as char)
                .collect()
        }
        _ => string(rng),
    }
}

/// Mostly unset or reasonable (so that many sandboxes get as far as the builders), else hostile.
fn opt_quantity(rng: &mut Rng) -> Option<Quantity> {
    match rng.below(8) {
        0..=2 => None,
        3..=5 => Some(Quantity(
            rng.pick(&[
                "1", "500m", "2", "0.25", "256Mi", "1Gi", "2Gi", " 1 ", "+1", "1e3m",
            ])
            .to_string(),
        )),
        _ => Some(Quantity(quantity_string(rng))),
    }
}

fn cidr(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 | 1 => {
            let prefix = *rng.pick(&[0u64, 1, 8, 16, 24, 31, 32, 33, 64, 255, 256]);
            let a = rng.next() as u32;
            let a = if prefix == 0 {
                0
            } else if prefix < 32 && rng.bool() {
                a & (u32::MAX << (32 - prefix))
            } else {
                a
            };
            format!("{}/{prefix}", std::net::Ipv4Addr::from(a))
        }
        2 => {
            let prefix = *rng.pick(&[0u64, 7, 10, 32, 48, 64, 127, 128, 129]);
            let a = ((rng.next() as u128) << 64) | rng.next() as u128;
            let a = if prefix == 0 {
                0
            } else if prefix < 128 && rng.bool() {
                a & (u128::MAX << (128 - prefix))
            } else {
                a
            };
            format!("{}/{prefix}", std::net::Ipv6Addr::from(a))
        }
        3 | 4 => rng
            .pick(&[
                "10.0.0.0/8",
                "0.0.0.0/0",
                "::/0",
                "169.254.169.254/32",
                "203.0.113.0/24",
                "2001:db8::/32",
                "10.0.0.1/8",
                "10.0.0.0",
                "10.0.0.0/",
                "/8",
                "10.0.0.0/08",
                "10.0.0.0/-1",
                "10.0.0.0/8/8",
                "256.0.0.0/8",
                "::ffff:10.0.0.0/104",
                "fe80::1%eth0/64",
                " 10.0.0.0/8",
                "banana",
            ])
            .to_string(),
        _ => string(rng),
    }
}

fn port_number(rng: &mut Rng) -> i32 {
    match rng.below(4) {
        0 => *rng.pick(&[0, -1, 1, 53, 443, 65535, 65536, i32::MIN, i32::MAX]),
        1 => rng.next() as i32,
        _ => rng.range(1, 65535) as i32,
    }
}

fn seconds(rng: &mut Rng) -> Option<i64> {
    match rng.below(8) {
        0..=2 => None,
        3 => Some(*rng.pick(&[
            0,
            -1,
            1,
            3600,
            86400,
            86401,
            604800,
            604801,
            i64::MIN,
            i64::MAX,
            i64::from(i32::MAX) + 1,
        ])),
        4 => Some(rng.next() as i64),
        _ => Some(rng.range(1, 100_000)),
    }
}

fn vec_of<T>(rng: &mut Rng, large: usize, mut f: impl FnMut(&mut Rng) -> T) -> Vec<T> {
    let n = rng.len(large);
    (0..n).map(|_| f(rng)).collect()
}

/// A valid sandbox the structured generator starts from (what `kubectl apply` of a reasonable
/// manifest gives after admission).
fn base_sandbox(rng: &mut Rng) -> Sandbox {
    let mut s = Sandbox::new(
        &dns_label(rng),
        SandboxSpec {
            image: "python:3.12-slim".into(),
            ..SandboxSpec::default()
        },
    );
    s.metadata.namespace = Some(dns_label(rng));
    s.metadata.uid = Some(format!(
        "0b7c1d2e-0000-4000-8000-{:012x}",
        rng.next() & 0xffff_ffff_ffff
    ));
    s.metadata.generation = Some(1);
    s.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
    ));
    s
}

pub fn structured_sandbox(rng: &mut Rng) -> Sandbox {
    let mut s = base_sandbox(rng);
    // Each field: kept valid, or replaced by something hostile.
    let hostile = |rng: &mut Rng| rng.one_in(3);
    if rng.one_in(5) {
        match rng.below(4) {
            0 => s.metadata.name = None,
            1 => {
                s.metadata.name = None;
                s.metadata.generate_name = Some(string(rng));
            }
            _ => s.metadata.name = Some(string(rng)),
        }
    }
    if rng.one_in(6) {
        s.metadata.namespace = if rng.bool() { None } else { Some(string(rng)) };
    }
    if rng.one_in(6) {
        s.metadata.uid = if rng.bool() { None } else { Some(string(rng)) };
    }
    if rng.one_in(6) {
        s.metadata.creation_timestamp = None;
    }
    if rng.one_in(6) {
        s.metadata.generation = Some(rng.next() as i64);
    }
    if rng.one_in(8) {
        let mut labels = BTreeMap::new();
        for _ in 0..rng.len(20) {
            labels.insert(string(rng), string(rng));
        }
        if rng.bool() {
            labels.insert(labels::SANDBOX_NAME.into(), string(rng));
        }
        s.metadata.labels = Some(labels);
    }
    if rng.one_in(8) {
        s.metadata.annotations = Some(BTreeMap::from([(
            airlock_crds::LAST_ACTIVITY_ANNOTATION.to_string(),
            string(rng),
        )]));
    }

    let spec = &mut s.spec;
    if hostile(rng) {
        spec.image = string(rng);
    }
    spec.image_pull_policy = *rng.pick(&[
        None,
        Some(PullPolicy::Always),
        Some(PullPolicy::IfNotPresent),
        Some(PullPolicy::Never),
    ]);
    spec.command = vec_of(rng, 200, string);
    spec.args = vec_of(rng, 1000, string);
    spec.env = vec_of(rng, 300, |rng| SandboxEnvVar {
        name: if rng.bool() {
            "MODE".into()
        } else {
            string(rng)
        },
        value: string(rng),
    });
    spec.working_dir = match rng.below(3) {
        0 => None,
        1 => Some("/work".into()),
        _ => Some(string(rng)),
    };
    spec.runtime_class_name = match rng.below(6) {
        0..=2 => None,
        // The default class (allowed) when the config keeps the default.
        3 => Some("kata".into()),
        4 => Some(dns_label(rng)),
        _ => Some(string(rng)),
    };
    spec.resources = SandboxResources {
        cpu: opt_quantity(rng),
        memory: opt_quantity(rng),
        ephemeral_storage: opt_quantity(rng),
    };
    spec.lifetime = Lifetime {
        ttl_seconds: seconds(rng),
        idle_timeout_seconds: seconds(rng),
        extension_seconds: seconds(rng),
        on_expiry: *rng.pick(&[None, Some(ExpiryPolicy::Delete), Some(ExpiryPolicy::Retain)]),
    };
    spec.network = Network {
        egress: *rng.pick(&[
            EgressMode::None,
            EgressMode::Internet,
            EgressMode::AllowList,
        ]),
        allow: vec_of(rng, 200, |rng| EgressRule {
            cidr: cidr(rng),
            ports: vec_of(rng, 100, |rng| EgressPort {
                port: port_number(rng),
                protocol: *rng.pick(&[Protocol::TCP, Protocol::UDP, Protocol::SCTP]),
            }),
        }),
        dns: rng.bool(),
    };
    spec.read_only_root_filesystem = rng.bool();
    spec.agent = match rng.range(0, 3) {
        0 => None,
        1 => Some(AgentSource::Inject),
        _ => Some(AgentSource::Image),
    };
    s
}

// --- JSON generators --------------------------------------------------------------------------

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "generateName",
    "namespace",
    "uid",
    "generation",
    "creationTimestamp",
    "labels",
    "annotations",
    "spec",
    "status",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "value",
    "valueFrom",
    "workingDir",
    "runtimeClassName",
    "resources",
    "cpu",
    "memory",
    "ephemeralStorage",
    "lifetime",
    "ttlSeconds",
    "idleTimeoutSeconds",
    "onExpiry",
    "network",
    "egress",
    "allow",
    "cidr",
    "ports",
    "port",
    "protocol",
    "dns",
    "readOnlyRootFilesystem",
    "hostNetwork",
    "privileged",
    "phase",
    "",
];

const ENUM_WORDS: &[&str] = &[
    "None",
    "Internet",
    "AllowList",
    "none",
    "TCP",
    "UDP",
    "SCTP",
    "ICMP",
    "Delete",
    "Retain",
    "Always",
    "IfNotPresent",
    "Never",
    "airlock.dev/v1alpha1",
    "Sandbox",
    "2024-01-01T00:00:00Z",
    "not a time",
];

fn random_scalar(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(rng.next() as i64),
        3 => json!(*rng.pick(&[
            0i64,
            -1,
            1,
            53,
            65535,
            65536,
            604800,
            604801,
            i64::MAX,
            i64::MIN
        ])),
        4 => json!(*rng.pick(&[
            0.5f64,
            -0.0,
            1e300,
            -1e300,
            1e-300,
            2.5e10,
            f64::MAX,
            f64::MIN_POSITIVE
        ])),
        5 => json!(u64::MAX),
        6 => json!(rng.pick(ENUM_WORDS)),
        7 => json!(quantity_string(rng)),
        _ => json!(string(rng)),
    }
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    if depth == 0 || rng.below(3) != 0 {
        return random_scalar(rng);
    }
    if rng.bool() {
        let n = rng.len(20);
        Value::Array((0..n).map(|_| random_value(rng, depth - 1)).collect())
    } else {
        let n = rng.len(12);
        let mut m = serde_json::Map::new();
        for _ in 0..n {
            let k = if rng.one_in(6) {
                string(rng)
            } else {
                rng.pick(KEYS).to_string()
            };
            m.insert(k, random_value(rng, depth - 1));
        }
        Value::Object(m)
    }
}

/// Mutates one random node of `v` (in place).
fn mutate_json(rng: &mut Rng, v: &mut Value) {
    // Walk down a random path.
    if rng.below(4) != 0 {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let i = rng.below(m.len() as u64) as usize;
                let child = m.values_mut().nth(i).unwrap();
                return mutate_json(rng, child);
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len() as u64) as usize;
                return mutate_json(rng, &mut a[i]);
            }
            _ => {}
        }
    }
    let cur = v;
    match rng.below(6) {
        0 => *cur = random_scalar(rng),
        1 => *cur = random_value(rng, 3),
        2 => {
            if let Value::Object(m) = cur {
                if !m.is_empty() {
                    let k = m
                        .keys()
                        .nth(rng.below(m.len() as u64) as usize)
                        .unwrap()
                        .clone();
                    m.remove(&k);
                }
            } else {
                *cur = Value::Null;
            }
        }
        3 => {
            if let Value::Object(m) = cur {
                m.insert(rng.pick(KEYS).to_string(), random_value(rng, 2));
            } else if let Value::Array(a) = cur {
                let n = rng.len(500);
                let item = a.first().cloned().unwrap_or_else(|| random_scalar(rng));
                a.extend(std::iter::repeat_n(item, n));
            } else {
                *cur = Value::Array(vec![cur.clone()]);
            }
        }
        4 => {
            // Retype: number <-> string.
            *cur = match cur.take() {
                Value::String(s) => s
                    .parse::<f64>()
                    .map(|f| json!(f))
                    .unwrap_or(Value::String(s)),
                Value::Number(n) => Value::String(n.to_string()),
                other => json!([other]),
            };
        }
        _ => *cur = json!({}),
    }
}

fn mutated_json_sandbox(rng: &mut Rng) -> Result<Sandbox, String> {
    let base = structured_sandbox(rng);
    let mut v = serde_json::to_value(&base).map_err(|e| format!("serialize base: {e}"))?;
    for _ in 0..rng.range(1, 4) {
        mutate_json(rng, &mut v);
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

fn random_json_sandbox(rng: &mut Rng) -> Result<Sandbox, String> {
    let mut v = random_value(rng, 5);
    if rng.bool() {
        // Give it a chance to get past the required fields.
        v = json!({
            "apiVersion": "airlock.dev/v1alpha1",
            "kind": "Sandbox",
            "metadata": random_value(rng, 3),
            "spec": {"image": random_scalar(rng), "resources": random_value(rng, 2),
                     "network": random_value(rng, 3), "lifetime": random_value(rng, 2)},
        });
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

fn bytes_sandbox(rng: &mut Rng) -> Result<Sandbox, String> {
    let mut text = if rng.one_in(4) {
        let n = rng.len(4096);
        (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>()
    } else {
        serde_json::to_vec(&structured_sandbox(rng)).unwrap()
    };
    for _ in 0..rng.range(1, 8) {
        if text.is_empty() {
            break;
        }
        let i = rng.below(text.len() as u64) as usize;
        match rng.below(4) {
            0 => text[i] = rng.next() as u8,
            1 => text[i] ^= 1 << rng.below(8),
            2 => {
                text.remove(i);
            }
            _ => {
                let b = *rng.pick(b"{}[]\":,0123456789-.eE\\ntfu");
                text.insert(i, b);
            }
        }
    }
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}

// --- Configurations -----------------------------------------------------------------------------

/// A random operator configuration accepted by `Cli::config` (or the defaults).
pub fn random_config(rng: &mut Rng) -> Config {
    let config = random_flags(rng);
    if rng.bool() {
        return config;
    }
    // The ConfigMap delivery (its files are not read here: a bundle of two small programs).
    let bundle = AgentBundle::new(b"boot".to_vec(), b"agent").expect("small bundle");
    Config {
        agent: Agent::ConfigMap(Arc::new(bundle)),
        ..config
    }
}

/// A random configuration from flags, with the init-container delivery.
fn random_flags(rng: &mut Rng) -> Config {
    let default = Cli::parse_from(["airlock-operator", "--agent-delivery=init-container"])
        .config()
        .expect("defaults are valid");
    if rng.bool() {
        return default;
    }
    for _ in 0..32 {
        let cidrs: Vec<String> = (0..rng.range(0, 4)).map(|_| cidr(rng)).collect();
        let flags = [
            ("default-runtime-class", dns_label(rng)),
            ("max-ttl", rng.range(-5, 700_000).to_string()),
            ("default-ttl", rng.range(-5, 700_000).to_string()),
            ("max-cpu", quantity_string(rng)),
            ("default-cpu", quantity_string(rng)),
            ("max-memory", quantity_string(rng)),
            ("default-memory", quantity_string(rng)),
            ("max-ephemeral-storage", quantity_string(rng)),
            ("default-ephemeral-storage", quantity_string(rng)),
            ("cluster-cidr", cidrs.join(",")),
        ];
        let mut args = vec![
            "airlock-operator".to_string(),
            "--agent-delivery=init-container".to_string(),
        ];
        for (name, value) in flags {
            if rng.bool() {
                args.push(format!("--{name}={value}"));
            }
        }
        // Cli::config must never panic, whatever the flags.
        let parsed = catch_unwind(|| Cli::try_parse_from(&args).map(|c| c.config()));
        match parsed {
            Err(_) => panic!("Cli::try_parse_from/config panicked on {args:?}"),
            Ok(Ok(Ok(config))) => {
                check_config(&config).unwrap_or_else(|e| panic!("config from {args:?}: {e}"));
                return config;
            }
            Ok(_) => {}
        }
    }
    default
}

/// What `Cli::config` promises about a configuration.
fn check_config(c: &Config) -> Result<(), String> {
    ensure(
        !c.default_runtime_class.trim().is_empty(),
        "empty default runtime class",
    )?;
    ensure(
        (1..=c.max_ttl_seconds).contains(&c.default_ttl_seconds)
            && c.max_ttl_seconds <= airlock_crds::MAX_TTL_SECONDS,
        "ttl bounds",
    )?;
    for (d, m) in [
        (&c.default_resources.cpu, &c.max_resources.cpu),
        (&c.default_resources.memory, &c.max_resources.memory),
        (
            &c.default_resources.ephemeral_storage,
            &c.max_resources.ephemeral_storage,
        ),
    ] {
        ensure(
            d.amount.is_positive() && d.amount <= m.amount,
            "default resources within max",
        )?;
        ensure(
            quantity::parse(&d.quantity.0) == Ok(d.amount),
            "default quantity/amount agree",
        )?;
        ensure(
            quantity::parse(&m.quantity.0) == Ok(m.amount),
            "max quantity/amount agree",
        )?;
    }
    for cidr in &c.cluster_cidrs {
        let (_, prefix) = parse_cidr(cidr).map_err(|e| format!("cluster cidr {cidr}: {e}"))?;
        ensure(prefix > 0, "cluster cidr /0")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Invariants.

fn ensure(cond: bool, what: &str) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.to_string()) }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[derive(Default, Debug)]
pub struct Stats {
    cases: u64,
    undecodable: u64,
    invalid: BTreeMap<String, u64>,
    planned: u64,
    pods: u64,
    build_errors: u64,
    egress: BTreeMap<&'static str, u64>,
}

/// Runs the pipeline on one sandbox and checks every invariant.
pub fn check(s: &Sandbox, config: &Config, stats: &mut Stats) -> Result<(), String> {
    let name = s.name_any();
    let result = validate(s, config);
    ensure(
        result == validate(s, config),
        "validate is not deterministic",
    )?;
    let plan = match result {
        Err(inv) => {
            let field = inv.problem.field();
            ensure(
                field.starts_with("spec.") || field.starts_with("metadata."),
                &format!("problem field {field:?} is not a path"),
            )?;
            let msg = inv.problem.to_string();
            ensure(
                msg.starts_with(&field),
                &format!("problem message {msg:?} does not start with its field {field:?}"),
            )?;
            ensure(inv.to_string().starts_with("Sandbox "), "Invalid display")?;
            if !is_dns_label(&name) {
                ensure(
                    field == "metadata.name",
                    "an invalid name must be reported first",
                )?;
            }
            *stats.invalid.entry(field).or_default() += 1;
            return Ok(());
        }
        Ok(plan) => plan,
    };
    stats.planned += 1;
    check_plan(s, &plan, config)?;

    let pod = build::pod(s, &plan, config);
    ensure(
        pod == build::pod(s, &plan, config),
        "pod is not deterministic",
    )?;
    let np = build::network_policy(s, config);
    let can_own =
        s.metadata.uid.is_some() && s.metadata.namespace.is_some() && s.metadata.name.is_some();
    match (&pod, &np) {
        (Ok(pod), Ok(np)) => {
            ensure(can_own, "children built without uid, namespace or name")?;
            stats.pods += 1;
            check_pod(s, &plan, config, pod)?;
            check_netpol(s, config, np, stats)?;
            // The policy must select the pod it fences.
            let sel = np.spec.as_ref().unwrap().pod_selector.as_ref().unwrap();
            for (k, v) in sel.match_labels.as_ref().unwrap() {
                ensure(
                    pod.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v),
                    "the NetworkPolicy does not select the pod",
                )?;
            }
        }
        (Err(e1), Err(e2)) => {
            ensure(
                !can_own,
                &format!("build failed for an ownable sandbox: {e1}"),
            )?;
            ensure(e1 == e2, "pod and netpol disagree on the error")?;
            ensure(
                match e1 {
                    BuildError::MissingNamespace { .. } => s.metadata.namespace.is_none(),
                    BuildError::MissingUid { .. } => {
                        s.metadata.uid.is_none() || s.metadata.name.is_none()
                    }
                },
                &format!("wrong build error {e1:?}"),
            )?;
            stats.build_errors += 1;
        }
        _ => return Err("pod and NetworkPolicy builds disagree (one failed)".into()),
    }
    Ok(())
}

fn check_plan(s: &Sandbox, plan: &Plan, config: &Config) -> Result<(), String> {
    ensure(
        is_dns_label(&s.name_any()),
        "accepted a name that is not a DNS label",
    )?;
    ensure(
        (1..=config.max_ttl_seconds).contains(&plan.ttl_seconds),
        &format!(
            "ttl {} outside 1..={}",
            plan.ttl_seconds, config.max_ttl_seconds
        ),
    )?;
    let asked = s
        .spec
        .lifetime
        .ttl_seconds
        .unwrap_or(config.default_ttl_seconds)
        .saturating_add(s.spec.lifetime.extension_seconds.unwrap_or(0).max(0));
    ensure(
        plan.ttl_seconds == asked.min(config.max_ttl_seconds),
        "ttl is not (the spec's or the default) + the extension, clamped to the maximum",
    )?;
    ensure(
        (asked > config.max_ttl_seconds) == !plan.adjustments.is_empty(),
        "a clamped ttl without a PolicyAdjusted adjustment (or the reverse)",
    )?;
    ensure(
        plan.runtime_class
            == s.spec
                .runtime_class_name
                .clone()
                .unwrap_or_else(|| config.default_runtime_class.clone()),
        "runtime class is neither the spec's nor the default",
    )?;
    ensure(
        plan.image_pull_policy == s.spec.image_pull_policy.unwrap_or(PullPolicy::IfNotPresent),
        "pull policy",
    )?;
    let r = &s.spec.resources;
    for (field, asked, got, default, max) in [
        (
            "cpu",
            &r.cpu,
            &plan.cpu,
            &config.default_resources.cpu,
            &config.max_resources.cpu,
        ),
        (
            "memory",
            &r.memory,
            &plan.memory,
            &config.default_resources.memory,
            &config.max_resources.memory,
        ),
        (
            "ephemeralStorage",
            &r.ephemeral_storage,
            &plan.ephemeral_storage,
            &config.default_resources.ephemeral_storage,
            &config.max_resources.ephemeral_storage,
        ),
    ] {
        let amount = quantity::parse(&got.0)
            .map_err(|e| format!("plan {field} {:?} does not parse: {e}", got.0))?;
        ensure(
            amount.is_positive(),
            &format!("plan {field} {:?} not positive", got.0),
        )?;
        ensure(
            amount <= max.amount,
            &format!("plan {field} {:?} over the maximum", got.0),
        )?;
        match asked {
            None => ensure(
                got == &default.quantity,
                &format!("plan {field} is not the default"),
            )?,
            Some(q) => ensure(
                got.0 == q.0.trim(),
                &format!("plan {field} is not the spec's"),
            )?,
        }
    }
    Ok(())
}

/// Server-side apply must not send empty lists (the API server drops them, so every apply would
/// change the object).
fn no_empty_lists(v: &Value, path: &str) -> Result<(), String> {
    match v {
        Value::Array(a) => {
            ensure(!a.is_empty(), &format!("empty list at {path}"))?;
            for (i, x) in a.iter().enumerate() {
                no_empty_lists(x, &format!("{path}[{i}]"))?;
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                no_empty_lists(x, &format!("{path}.{k}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_container(c: &Container, config: &Config) -> Result<(), String> {
    let what = |m: &str| format!("container {}: {m}", c.name);
    let sc = c
        .security_context
        .as_ref()
        .ok_or_else(|| what("no securityContext"))?;
    ensure(
        sc.allow_privilege_escalation == Some(false),
        &what("allowPrivilegeEscalation not false"),
    )?;
    ensure(sc.privileged == Some(false), &what("privileged not false"))?;
    let caps = sc
        .capabilities
        .as_ref()
        .ok_or_else(|| what("no capabilities"))?;
    ensure(
        caps.drop.as_deref() == Some(&["ALL".to_string()][..]),
        &what("does not drop ALL"),
    )?;
    ensure(
        caps.add.as_ref().is_none_or(|a| a.is_empty()),
        &what("adds capabilities"),
    )?;
    ensure(
        sc.seccomp_profile
            .as_ref()
            .is_some_and(|p| p.type_ == "RuntimeDefault"),
        &what("seccomp not RuntimeDefault"),
    )?;
    ensure(
        sc.run_as_user != Some(0) || sc.run_as_non_root != Some(false),
        &what("runs as root explicitly"),
    )?;
    ensure(
        sc.proc_mount.is_none() && sc.se_linux_options.is_none(),
        &what("procMount/seLinux"),
    )?;
    let res = c.resources.as_ref().ok_or_else(|| what("no resources"))?;
    ensure(
        res.requests.is_some() && res.requests == res.limits,
        &what("requests != limits"),
    )?;
    let limits = res.limits.as_ref().unwrap();
    let keys: Vec<&str> = limits.keys().map(String::as_str).collect();
    ensure(
        keys == ["cpu", "ephemeral-storage", "memory"],
        &what(&format!("resource keys {keys:?}")),
    )?;
    for (k, max) in [
        ("cpu", &config.max_resources.cpu),
        ("memory", &config.max_resources.memory),
        ("ephemeral-storage", &config.max_resources.ephemeral_storage),
    ] {
        let q = &limits[k];
        let amount = quantity::parse(&q.0).map_err(|e| what(&format!("{k} {:?}: {e}", q.0)))?;
        ensure(
            amount.is_positive() && amount <= max.amount,
            &what(&format!("{k} {:?} out of bounds", q.0)),
        )?;
    }
    for e in c.env.iter().flatten() {
        ensure(
            e.value_from.is_none(),
            &what("env valueFrom (secret/configmap reference)"),
        )?;
    }
    ensure(c.env_from.is_none(), &what("envFrom"))?;
    ensure(c.ports.is_none(), &what("exposes ports"))?;
    ensure(
        c.args.is_none(),
        &what("args set (would bypass the agent's argv)"),
    )?;
    ensure(
        c.stdin != Some(true) && c.tty != Some(true),
        &what("stdin/tty"),
    )?;
    Ok(())
}

fn check_pod(s: &Sandbox, plan: &Plan, config: &Config, pod: &Pod) -> Result<(), String> {
    let name = s.name_any();
    let value = serde_json::to_value(pod).map_err(|e| format!("pod does not serialize: {e}"))?;
    no_empty_lists(&value, "pod")?;
    let spec = pod.spec.as_ref().ok_or("pod without spec")?;
    ensure(
        spec.automount_service_account_token == Some(false),
        "automountServiceAccountToken not false",
    )?;
    ensure(
        spec.enable_service_links == Some(false),
        "enableServiceLinks not false",
    )?;
    ensure(spec.host_network == Some(false), "hostNetwork")?;
    ensure(spec.host_pid == Some(false), "hostPID")?;
    ensure(spec.host_ipc == Some(false), "hostIPC")?;
    ensure(
        spec.host_users.is_none() || spec.host_users == Some(false),
        "hostUsers",
    )?;
    ensure(
        spec.share_process_namespace == Some(false),
        "shareProcessNamespace",
    )?;
    ensure(spec.service_account_name.is_none(), "service account set")?;
    ensure(
        spec.node_name.is_none() && spec.node_selector.is_none(),
        "node pinning from spec",
    )?;
    ensure(spec.ephemeral_containers.is_none(), "ephemeral containers")?;
    ensure(
        spec.restart_policy.as_deref() == Some("Never"),
        "restartPolicy",
    )?;
    ensure(
        spec.priority_class_name.as_deref() == Some(PRIORITY_CLASS),
        "priorityClassName",
    )?;
    match &spec.runtime_class_name {
        Some(rc) => ensure(
            rc == &plan.runtime_class,
            "runtimeClassName is not the plan's",
        )?,
        None => return Err("runtimeClassName not set".into()),
    }
    ensure(spec.hostname.as_deref() == Some(name.as_str()), "hostname")?;
    ensure(
        spec.security_context
            .as_ref()
            .and_then(|p| p.seccomp_profile.as_ref())
            .is_some_and(|p| p.type_ == "RuntimeDefault"),
        "pod seccomp",
    )?;
    // Volumes: memory/disk scratch only, never host paths, secrets or projected tokens.
    for v in spec.volumes.iter().flatten() {
        let j = serde_json::to_value(v).unwrap();
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        let bundle = matches!(&config.agent, Agent::ConfigMap(b)
            if v.name == build::pod::BOOT_VOLUME && v.config_map.as_ref().is_some_and(|c| c.name == b.name));
        ensure(
            keys.iter()
                .all(|k| *k == "name" || *k == "emptyDir" || (bundle && *k == "configMap")),
            &format!("volume {} has sources {keys:?}", v.name),
        )?;
    }
    let tmp = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == build::pod::TMP_VOLUME);
    ensure(
        tmp == s.spec.read_only_root_filesystem,
        "tmp volume iff read-only root",
    )?;

    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let in_image = s.spec.agent == Some(AgentSource::Image);
    let (n_inits, prefix) = match &config.agent {
        _ if in_image => (0, 0),
        Agent::InitContainer { .. } => (1, 0),
        Agent::ConfigMap(_) => (0, 2),
    };
    let agent_volume = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == build::pod::AGENT_VOLUME);
    ensure(
        agent_volume != in_image,
        "agent volume iff the agent is injected",
    )?;
    ensure(
        inits.len() == n_inits && spec.containers.len() == 1,
        "container count",
    )?;
    for c in inits.iter().chain(&spec.containers) {
        check_container(c, config)?;
        for m in c.volume_mounts.iter().flatten() {
            ensure(
                spec.volumes.iter().flatten().any(|v| v.name == m.name),
                "mount of an unknown volume",
            )?;
        }
    }
    match &config.agent {
        _ if in_image => {}
        Agent::InitContainer { image } => ensure(
            inits[0].image.as_deref() == Some(image.as_str()),
            "init image is not the agent",
        )?,
        Agent::ConfigMap(_) => {
            let cmd = spec.containers[0].command.as_deref().unwrap_or_default();
            ensure(
                cmd.len() >= 2
                    && cmd[0] == "/.airlock-boot/boot"
                    && cmd[1] == "/.airlock-boot/agent.z",
                "the container does not start airlock-boot",
            )?
        }
    }
    let main = &spec.containers[0];
    ensure(main.name == labels::MAIN_CONTAINER, "main container name")?;
    ensure(
        main.image.as_deref() == Some(s.spec.image.as_str()),
        "main image",
    )?;
    let cmd = &main
        .command
        .as_deref()
        .ok_or("main container without command")?[prefix..];
    ensure(
        cmd.len() >= 3 && cmd[0] == labels::AGENT_PATH && cmd[1] == "init" && cmd[2] == "--",
        "the agent is not PID 1",
    )?;
    let mut user: Vec<String> = Vec::new();
    if !s.spec.command.is_empty() {
        user.extend(s.spec.command.iter().cloned());
        user.extend(s.spec.args.iter().cloned());
    }
    let expanded: Vec<String> = cmd[3..].iter().map(|w| kubelet_expand(w)).collect();
    ensure(
        expanded == user,
        "main argv is not command + args once the kubelet expanded it",
    )?;
    ensure(
        main.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem
            == Some(s.spec.read_only_root_filesystem),
        "readOnlyRootFilesystem",
    )?;
    ensure(main.working_dir == s.spec.working_dir, "workingDir")?;
    let env: Vec<(String, Option<String>)> = main
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.as_deref().map(kubelet_expand)))
        .collect();
    let want: Vec<(String, Option<String>)> = s
        .spec
        .env
        .iter()
        .map(|e| (e.name.clone(), Some(e.value.clone())))
        .collect();
    ensure(
        env == want,
        "env is not the spec's once the kubelet expanded it",
    )?;
    // Metadata: namespace, labels, controller owner.
    ensure(
        pod.metadata.namespace == s.metadata.namespace,
        "pod namespace",
    )?;
    ensure(
        pod.metadata.name.as_deref() == Some(name.as_str()),
        "pod name",
    )?;
    ensure(
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::SANDBOX_NAME))
            == Some(&name),
        "pod sandbox label",
    )?;
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    ensure(
        owners.len() == 1
            && owners[0].controller == Some(true)
            && Some(&owners[0].uid) == s.metadata.uid.as_ref()
            && owners[0].kind == "Sandbox",
        "pod owner reference",
    )?;
    Ok(())
}

fn is_dns_rule(r: &NetworkPolicyEgressRule) -> bool {
    let Some(to) = &r.to else { return false };
    let ports: Vec<(Option<&IntOrString>, Option<&str>)> = r
        .ports
        .iter()
        .flatten()
        .map(|p| (p.port.as_ref(), p.protocol.as_deref()))
        .collect();
    to.len() == 1
        && to[0].ip_block.is_none()
        && to[0]
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|m| {
                m.len() == 1
                    && m.get("kubernetes.io/metadata.name").map(String::as_str)
                        == Some("kube-system")
            })
        && to[0]
            .pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|m| {
                m.len() == 1 && m.get("k8s-app").map(String::as_str) == Some("kube-dns")
            })
        && ports
            == [
                (Some(&IntOrString::Int(53)), Some("UDP")),
                (Some(&IntOrString::Int(53)), Some("TCP")),
            ]
}

fn check_netpol(
    s: &Sandbox,
    config: &Config,
    np: &NetworkPolicy,
    stats: &mut Stats,
) -> Result<(), String> {
    let name = s.name_any();
    let value = serde_json::to_value(np).map_err(|e| format!("netpol does not serialize: {e}"))?;
    no_empty_lists(&value, "networkPolicy")?;
    let spec = np.spec.as_ref().ok_or("netpol without spec")?;
    ensure(
        spec.policy_types.as_deref() == Some(&["Ingress".to_string(), "Egress".to_string()][..]),
        "policyTypes is not [Ingress, Egress]",
    )?;
    ensure(
        spec.ingress.as_ref().is_none_or(|i| i.is_empty()),
        "ingress rules present",
    )?;
    let sel = spec.pod_selector.as_ref().ok_or("no podSelector")?;
    ensure(
        sel.match_expressions.is_none()
            && sel.match_labels
                == Some(BTreeMap::from([(
                    labels::SANDBOX_NAME.to_string(),
                    name.clone(),
                )])),
        "podSelector does not select exactly this sandbox",
    )?;
    ensure(
        np.metadata.namespace == s.metadata.namespace,
        "netpol namespace",
    )?;
    let rules = spec.egress.as_deref().unwrap_or_default();
    let net = &s.spec.network;
    let (dns_rules, other): (Vec<_>, Vec<_>) = rules.iter().partition(|r| is_dns_rule(r));
    ensure(
        dns_rules.len() == usize::from(net.dns),
        "DNS rule present iff spec.network.dns",
    )?;
    if net.dns {
        ensure(is_dns_rule(rules.last().unwrap()), "DNS rule is not last")?;
    }
    match net.egress {
        EgressMode::None => {
            *stats.egress.entry("None").or_default() += 1;
            ensure(other.is_empty(), "egress None allows more than DNS")?;
        }
        EgressMode::Internet => {
            *stats.egress.entry("Internet").or_default() += 1;
            ensure(other.len() == 1, "egress Internet: one rule")?;
            let r = other[0];
            ensure(r.ports.is_none(), "egress Internet: all ports")?;
            let to = r.to.as_deref().unwrap_or_default();
            ensure(to.len() == 2, "egress Internet: two ip blocks")?;
            for (peer, all, blocked, v6) in [
                (&to[0], "0.0.0.0/0", BLOCKED_V4, false),
                (&to[1], "::/0", BLOCKED_V6, true),
            ] {
                let b = peer
                    .ip_block
                    .as_ref()
                    .ok_or("egress Internet: no ipBlock")?;
                ensure(
                    peer.namespace_selector.is_none() && peer.pod_selector.is_none(),
                    "selector next to ipBlock",
                )?;
                ensure(b.cidr == all, "egress Internet: block cidr")?;
                let except = b.except.as_deref().unwrap_or_default();
                for x in blocked {
                    ensure(
                        except.iter().any(|e| e == x),
                        &format!("egress Internet does not exclude {x}"),
                    )?;
                }
                for c in &config.cluster_cidrs {
                    if c.contains(':') == v6 {
                        ensure(
                            except.contains(c),
                            &format!("egress Internet does not exclude cluster range {c}"),
                        )?;
                    }
                }
                for d in &config.egress_deny {
                    if d.is_ipv6() == v6 {
                        ensure(
                            except.contains(&d.to_string()),
                            &format!("egress Internet does not exclude deny-listed {d}"),
                        )?;
                    }
                }
                for e in except {
                    let (addr, _) = parse_cidr(e).map_err(|err| format!("except {e}: {err}"))?;
                    ensure(
                        addr.is_ipv6() == v6,
                        &format!("except {e} in the wrong address family"),
                    )?;
                }
            }
        }
        EgressMode::AllowList => {
            *stats.egress.entry("AllowList").or_default() += 1;
            ensure(
                other.len() == net.allow.len(),
                "egress AllowList: one rule per destination",
            )?;
            for (r, a) in other.iter().zip(&net.allow) {
                let to = r.to.as_deref().unwrap_or_default();
                ensure(to.len() == 1, "AllowList rule: one peer")?;
                let b = to[0]
                    .ip_block
                    .as_ref()
                    .ok_or("AllowList rule: no ipBlock")?;
                ensure(
                    to[0].namespace_selector.is_none() && to[0].pod_selector.is_none(),
                    "AllowList selector",
                )?;
                ensure(b.cidr == a.cidr, "AllowList cidr")?;
                // Never inside a deny-listed range (validation refuses those); every deny-listed
                // range inside it is excepted, directly or through a larger excepted one.
                let entry = Cidr::parse(&a.cidr).map_err(|e| format!("allow {}: {e}", a.cidr))?;
                ensure(
                    !config.egress_deny.iter().any(|d| d.contains(&entry)),
                    "AllowList entry inside the deny-list was planned",
                )?;
                let except: Vec<Cidr> = b
                    .except
                    .iter()
                    .flatten()
                    .map(|e| Cidr::parse(e).map_err(|err| format!("except {e}: {err}")))
                    .collect::<Result<_, _>>()?;
                ensure(
                    except.iter().all(|e| entry.contains(e) && *e != entry),
                    "AllowList except outside its cidr",
                )?;
                for d in config.egress_deny.iter().filter(|d| entry.contains(d)) {
                    ensure(
                        except.iter().any(|e| e.contains(d)),
                        &format!("AllowList {} does not except deny-listed {d}", a.cidr),
                    )?;
                }
                let ports: Vec<(i32, &str)> = r
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| match (&p.port, p.protocol.as_deref()) {
                        (Some(IntOrString::Int(n)), Some(proto)) => (*n, proto),
                        _ => (-1, "?"),
                    })
                    .collect();
                let want: Vec<(i32, &str)> = a
                    .ports
                    .iter()
                    .map(|p| (p.port, p.protocol.as_str()))
                    .collect();
                ensure(ports == want, "AllowList ports")?;
                ensure(
                    r.ports.is_none() == a.ports.is_empty(),
                    "AllowList: no ports means every port",
                )?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Driver.

fn describe(s: &Sandbox) -> String {
    let mut j = serde_json::to_string(s).unwrap_or_else(|e| format!("<unserializable: {e}>"));
    if j.len() > 4000 {
        let mut cut = 4000;
        while !j.is_char_boundary(cut) {
            cut -= 1;
        }
        j.truncate(cut);
        j.push_str("...<truncated>");
    }
    j
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
fn fuzz_sandbox_pipeline() {
    let seed = env_u64("FUZZ_SEED", 0xA1B2_C3D4_E5F6_0718);
    let iterations = env_u64("FUZZ_ITERATIONS", 20_000);
    let budget = Duration::from_secs(env_u64("FUZZ_SECONDS", 10));
    let only = std::env::var("FUZZ_CASE")
        .ok()
        .map(|c| c.trim().parse::<u64>().expect("FUZZ_CASE"));
    println!(
        "fuzz_build: FUZZ_SEED={seed:#x} FUZZ_ITERATIONS={iterations} FUZZ_SECONDS={}",
        budget.as_secs()
    );

    // Quiet the default hook: panics are caught and reported below with their input.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        PANIC_AT.with(|p| *p.borrow_mut() = at);
    }));

    let start = Instant::now();
    let mut stats = Stats::default();
    let mut failures: Vec<String> = Vec::new();
    let mut config_rng = Rng::new(seed ^ 0xC0FF_EE00);
    let mut config = random_config(&mut config_rng);
    let cases: Box<dyn Iterator<Item = u64>> = match only {
        Some(c) => Box::new(std::iter::once(c)),
        None => Box::new(0..iterations),
    };
    for case in cases {
        if only.is_none() && start.elapsed() > budget {
            break;
        }
        if only.is_none() && case % 256 == 0 && case > 0 {
            config = random_config(&mut config_rng);
        }
        let mut rng = case_rng(seed, case);
        stats.cases += 1;
        let kind = rng.below(10);
        let input = catch_unwind(AssertUnwindSafe(|| match kind {
            0..=4 => Ok(structured_sandbox(&mut rng)),
            5..=7 => mutated_json_sandbox(&mut rng),
            8 => random_json_sandbox(&mut rng),
            _ => bytes_sandbox(&mut rng),
        }));
        let sandbox = match input {
            Err(p) => {
                failures.push(format!(
                    "case {case} (kind {kind}): deserializing panicked: {}",
                    panic_message(&*p)
                ));
                continue;
            }
            Ok(Err(_)) => {
                stats.undecodable += 1;
                continue;
            }
            Ok(Ok(s)) => s,
        };
        let result = catch_unwind(AssertUnwindSafe(|| check(&sandbox, &config, &mut stats)));
        let problem = match result {
            Ok(Ok(())) => continue,
            Ok(Err(violation)) => format!("invariant violated: {violation}"),
            Err(p) => format!("PANIC: {}", panic_message(&*p)),
        };
        failures.push(format!(
            "case {case} (replay: FUZZ_SEED={seed:#x} FUZZ_CASE={case}): {problem}\n  config: runtime={} maxCpu={} maxMem={} maxDisk={} maxTtl={} cidrs={:?}\n  input: {}",
            config.default_runtime_class,
            config.max_resources.cpu.quantity.0,
            config.max_resources.memory.quantity.0,
            config.max_resources.ephemeral_storage.quantity.0,
            config.max_ttl_seconds,
            config.cluster_cidrs,
            describe(&sandbox)
        ));
        if failures.len() >= 20 {
            break;
        }
    }
    std::panic::set_hook(default_hook);

    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz_build: {} cases in {secs:.1}s ({:.0}/s): {} undecodable, {} invalid by field {:?}, {} planned, {} pods built, {} build errors (no uid/namespace), egress modes {:?}",
        stats.cases,
        stats.cases as f64 / secs.max(1e-9),
        stats.undecodable,
        stats.invalid.values().sum::<u64>(),
        stats.invalid,
        stats.planned,
        stats.pods,
        stats.build_errors,
        stats.egress,
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    if only.is_none() && stats.cases >= 2000 {
        // The generators must reach both sides of every branch that matters.
        assert!(
            stats.pods > stats.cases / 20,
            "too few pods built: the generator is too hostile"
        );
        assert!(
            stats.invalid.len() >= 4,
            "too few kinds of invalid sandbox: {:?}",
            stats.invalid
        );
        assert!(
            stats.egress.len() == 3,
            "not every egress mode reached: {:?}",
            stats.egress
        );
    }
}

/// What the kubelet makes of a container's command word or env value
/// (k8s.io/kubernetes third_party/forked/golang/expansion `Expand`): `$$` becomes `$`, `$(NAME)`
/// a variable's value (here a marker, so any expansion shows), anything else stays.
fn kubelet_expand(input: &str) -> String {
    let b = input.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let (mut checkpoint, mut cursor) = (0, 0);
    while cursor < b.len() {
        if b[cursor] == b'$' && cursor + 1 < b.len() {
            out.extend_from_slice(&b[checkpoint..cursor]);
            let rest = &b[cursor + 1..];
            let advance = match rest[0] {
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => match rest.iter().position(|&c| c == b')') {
                    Some(close) => {
                        out.extend_from_slice(b"<expanded ");
                        out.extend_from_slice(&rest[1..close]);
                        out.push(b'>');
                        close + 1
                    }
                    None => {
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                c => {
                    out.push(b'$');
                    out.push(c);
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&b[checkpoint.min(b.len())..]);
    String::from_utf8(out).expect("expansion splits no UTF-8 sequence")
}

#[test]
fn the_kubelet_expansion_model() {
    for (input, want) in [
        ("a$$b", "a$b"),
        ("$(X) $$(X)", "<expanded X> $(X)"),
        ("$(unclosed", "$(unclosed"),
        ("$HOME $", "$HOME $"),
        ("é$$✓", "é$✓"),
    ] {
        assert_eq!(kubelet_expand(input), want, "{input}");
    }
}
