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
//! `FUZZ_SECONDS` (default 10; whichever limit comes first, but the time limit never stops a run
//! before 2000 cases, and a run cut below 2000 by `FUZZ_ITERATIONS` fails its coverage checks
//! rather than skip them), `FUZZ_CASE` (replay one case).
//! Longer run:
//! `FUZZ_SECONDS=600 FUZZ_ITERATIONS=100000000 cargo test -p airlock-exec-gateway --test fuzz_requests -- --nocapture`
//!
//! Split by role: `generators.rs` (hostile values and messages; the PRNG and generic strings are
//! `airlock_testgen`'s, shared with the operator's fuzzer), `invariants.rs`, `messages.rs`
//! (per-message checks), `frames.rs` (agent framing); the driver here.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use airlock_exec_gateway::agent::{self, ExecOptions, FileCommand};
use airlock_api::bytes::Bytes;
use airlock_api::prost_types;
use airlock_api::proto::v1 as pb;
use airlock_api::tonic::{Code, Status};
use airlock_exec_gateway::validate::{self, CreateSpec, ExecSpec};
use airlock_testgen::{Knobs, PanicCapture, Rng, clip, dns_label, env_u64, panic_message, unicode_string};
use prost::Message;

/// The agent's stdin frame parser, compiled from the agent's source (the agent is a binary crate).
#[allow(dead_code, clippy::all)]
#[path = "../../../agent/src/frame.rs"]
mod agent_frame;

mod frames;
mod generators;
mod invariants;
mod messages;

pub(crate) use frames::*;
pub(crate) use generators::*;
pub(crate) use invariants::*;
pub(crate) use messages::*;

/// The generator of one case ([`airlock_testgen::case_rng`]) and how hostile it is.
pub fn case_rng(seed: u64, case: u64) -> Rng {
    let mut r = airlock_testgen::case_rng(seed, case);
    // Some cases are valid but for a field or two (they reach the checks on accepted
    // requests), others are hostile throughout.
    let percent = *r.pick(&[2, 5, 10, 20, 50, 100]);
    r.set_hostility(percent);
    r
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
    clip(format!("{m:?}"))
}

#[test]
fn fuzz_gateway_requests() {
    let knobs = Knobs::from_env(0x5EED_0F_A1_2C_0C_CA);
    let seed = knobs.seed;
    println!("{}", knobs.banner("fuzz_requests"));

    let capture = PanicCapture::new();
    let start = Instant::now();
    let mut stats = Stats::default();
    let mut failures: Vec<String> = Vec::new();
    for case in knobs.cases() {
        if knobs.out_of_time(start, stats.cases) {
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
    drop(capture);
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
    if knobs.check_coverage(stats.cases) {
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
    let mut rng = Rng::with_hostility(seed, 100);
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
