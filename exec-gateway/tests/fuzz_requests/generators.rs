//! Generators of hostile requests: names, paths, strings, quantities, networks, whole messages
//! and their wire encodings.

use super::*;

/// The troublemakers of [`unicode_string`].
pub(crate) const UNICODE_SPECIALS: &[char] = &[
    '\u{202e}', '\u{200b}', '\u{feff}', '\u{0}', '\u{7f}', '\u{85}', '\u{3000}',
];

pub(crate) const NASTY: &[&str] = &[
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

pub(crate) fn string(rng: &mut Rng) -> String {
    match rng.below(16) {
        0..=4 => rng.pick(NASTY).to_string(),
        5..=7 => dns_label(rng),
        8..=10 => {
            let n = rng.range(0, 24) as usize;
            (0..n).map(|_| (rng.below(128) as u8) as char).collect()
        }
        11..=13 => {
            let n = rng.range(0, 24) as usize;
            unicode_string(rng, n, UNICODE_SPECIALS)
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

pub(crate) fn path(rng: &mut Rng) -> String {
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

pub(crate) fn sandbox_ref(rng: &mut Rng) -> Option<pb::SandboxRef> {
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

pub(crate) fn env_map(rng: &mut Rng, large: usize) -> HashMap<String, String> {
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

pub(crate) fn duration(rng: &mut Rng) -> Option<prost_types::Duration> {
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

pub(crate) fn bytes(rng: &mut Rng) -> Option<Bytes> {
    rng.bool().then(|| {
        let n = rng.len(100_000);
        Bytes::from((0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>())
    })
}

pub(crate) fn args(rng: &mut Rng) -> Vec<String> {
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

pub(crate) fn exec_request(rng: &mut Rng) -> pb::ExecRequest {
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

pub(crate) fn run_code_request(rng: &mut Rng) -> pb::RunCodeRequest {
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

pub(crate) fn quantity(rng: &mut Rng) -> String {
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

pub(crate) fn network(rng: &mut Rng) -> pb::Network {
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

pub(crate) fn create_request(rng: &mut Rng) -> pb::CreateSandboxRequest {
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
        files: if rng.hostile() {
            (0..rng.below(3))
                .map(|_| pb::InitialFile {
                    path: if rng.bool() { format!("/tmp/{}", dns_label(rng)) } else { string(rng) },
                    content: string(rng),
                    mode: rng.bool().then(|| rng.pick_or(&[0o644, 0o7777, 0o10000, u32::MAX], |r| r as u32)),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

pub(crate) fn resize(rng: &mut Rng) -> pb::Resize {
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

pub(crate) fn exec_input(rng: &mut Rng) -> pb::ExecInput {
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
pub(crate) fn wire(rng: &mut Rng, valid: impl FnOnce(&mut Rng) -> Vec<u8>) -> Vec<u8> {
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
