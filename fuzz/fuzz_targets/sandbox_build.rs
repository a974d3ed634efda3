//! libFuzzer target: Sandbox -> validate -> Plan -> Pod + NetworkPolicy, with the invariants of
//! `operator/tests/fuzz_build/` (whose generators and checks are compiled in here).
//!
//! Input: first byte picks the mode and the configuration; then either
//! - JSON text deserialized into `airlock_crds::Sandbox` (mode even), or
//! - the seed of the structured generator (mode odd: hostile field values built in Rust).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../operator/tests/fuzz_build/main.rs"]
mod checks;

use checks::{Rng, Stats, check, random_config, structured_sandbox};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    // A handful of configurations: the defaults (mode < 128) or one generated from the mode byte.
    let config = if mode < 128 {
        use clap::Parser;
        airlock_operator::config::Cli::parse_from(["airlock-operator", "--agent-delivery=init-container"]).config().unwrap()
    } else {
        random_config(&mut Rng::new(u64::from(mode)))
    };
    let sandbox = if mode % 2 == 0 {
        match serde_json::from_slice::<airlock_crds::Sandbox>(rest) {
            Ok(s) => s,
            Err(_) => return,
        }
    } else {
        let mut seed = [0u8; 8];
        for (i, b) in rest.iter().enumerate() {
            seed[i % 8] ^= b.rotate_left(i as u32 / 8);
        }
        structured_sandbox(&mut Rng::new(u64::from_le_bytes(seed)))
    };
    if let Err(violation) = check(&sandbox, &config, &mut Stats::default()) {
        panic!(
            "invariant violated: {violation}\ninput: {}",
            serde_json::to_string(&sandbox).unwrap_or_default()
        );
    }
});
