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
//! `FUZZ_SECONDS` (default 10; whichever limit comes first, but the time limit never stops a run
//! before 2000 cases, and a run cut below 2000 by `FUZZ_ITERATIONS` fails its coverage checks
//! rather than skip them), `FUZZ_CASE` (replay one case).
//! Longer run:
//! `FUZZ_SECONDS=600 FUZZ_ITERATIONS=100000000 cargo test -p airlock-operator --test fuzz_build -- --nocapture`
//!
//! Split by role: `generators.rs` (structured Sandboxes from hostile values; the PRNG and generic
//! strings are `airlock_testgen`'s, shared with the gateway's fuzzer), `json.rs` (JSON and byte
//! mutations), `configs.rs` (operator configurations), `invariants.rs` and `netpol.rs`; the driver here.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

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

pub use airlock_testgen::Rng;
use airlock_testgen::{Knobs, PanicCapture, ascii_string, case_rng, clip, dns_label, panic_message, unicode_string};

mod configs;
mod generators;
mod invariants;
mod json;
mod kubelet;
mod netpol;

pub(crate) use configs::*;
pub(crate) use generators::*;
pub(crate) use invariants::*;
pub(crate) use json::*;
pub(crate) use netpol::*;

// ---------------------------------------------------------------------------------------------
// Driver.

fn describe(s: &Sandbox) -> String {
    clip(serde_json::to_string(s).unwrap_or_else(|e| format!("<unserializable: {e}>")))
}

#[test]
fn fuzz_sandbox_pipeline() {
    let knobs = Knobs::from_env(0xA1B2_C3D4_E5F6_0718);
    let (seed, only) = (knobs.seed, knobs.only);
    println!("{}", knobs.banner("fuzz_build"));

    // Quiet the default hook: panics are caught and reported below with their input.
    let capture = PanicCapture::new();

    let start = Instant::now();
    let mut stats = Stats::default();
    let mut failures: Vec<String> = Vec::new();
    let mut config_rng = Rng::new(seed ^ 0xC0FF_EE00);
    let mut config = random_config(&mut config_rng);
    for case in knobs.cases() {
        if knobs.out_of_time(start, stats.cases) {
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
    drop(capture);

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
    if knobs.check_coverage(stats.cases) {
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
