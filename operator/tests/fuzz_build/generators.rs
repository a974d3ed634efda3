//! Structured Sandboxes: built field by field from hostile values.

use super::*;

/// The troublemakers of [`unicode_string`].
pub(crate) const UNICODE_SPECIALS: &[char] = &['\u{202e}', '\u{200b}', '\u{feff}', '\u{0}', '\u{7f}', '\u{10ffff}'];

pub(crate) const NASTY: &[&str] = &[
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

/// Any string: interesting constants, valid names, random ASCII, unicode, or huge.
pub(crate) fn string(rng: &mut Rng) -> String {
    match rng.below(16) {
        0..=4 => rng.pick(NASTY).to_string(),
        5..=7 => dns_label(rng),
        8..=10 => {
            let n = rng.range(0, 24) as usize;
            ascii_string(rng, n)
        }
        11..=13 => {
            let n = rng.range(0, 24) as usize;
            unicode_string(rng, n, UNICODE_SPECIALS)
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

pub(crate) const QUANTITIES: &[&str] = &[
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

pub(crate) fn quantity_string(rng: &mut Rng) -> String {
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
pub(crate) fn opt_quantity(rng: &mut Rng) -> Option<Quantity> {
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

pub(crate) fn cidr(rng: &mut Rng) -> String {
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

pub(crate) fn port_number(rng: &mut Rng) -> i32 {
    match rng.below(4) {
        0 => *rng.pick(&[0, -1, 1, 53, 443, 65535, 65536, i32::MIN, i32::MAX]),
        1 => rng.next() as i32,
        _ => rng.range(1, 65535) as i32,
    }
}

pub(crate) fn seconds(rng: &mut Rng) -> Option<i64> {
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

pub(crate) fn vec_of<T>(rng: &mut Rng, large: usize, mut f: impl FnMut(&mut Rng) -> T) -> Vec<T> {
    let n = rng.len(large);
    (0..n).map(|_| f(rng)).collect()
}

/// A valid sandbox the structured generator starts from (what `kubectl apply` of a reasonable
/// manifest gives after admission).
pub(crate) fn base_sandbox(rng: &mut Rng) -> Sandbox {
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
