//! The gateway's CreateSandbox validation against the CRD's own schema: the API server is the
//! oracle. Each case is a request from the gateway fuzzer's generators
//! (`exec-gateway/tests/fuzz_requests/`, included below); every request the gateway accepts is
//! turned into the very Sandbox object the gateway would create (`CreateSpec::sandbox`) and sent as
//! a server-side dry-run create (`dryRun=All`: admission, the OpenAPI schema and the CEL rules run,
//! nothing is stored) into a namespace this test creates. A request the gateway accepts but the
//! API server refuses fails the test: the caller would get the API server's message instead of an
//! INVALID_ARGUMENT naming the request's field.
//!
//! Knobs: `FUZZ_SEED` (as the fuzzer's), `ORACLE_CASES` (default 1500 generated requests).

use airlock_crds::Sandbox;
use airlock_exec_gateway::runtime_classes::AllowedRuntimeClasses;
use airlock_exec_gateway::{run_as, validate};
use airlock_testgen::{Knobs, env_u64};
use kube::api::{Api, PostParams};

/// The gateway fuzzer: its generators and `case_rng` (its own tests are compiled in too and run
/// here as well; they take under a second).
#[allow(dead_code, unused_imports)]
#[path = "../../exec-gateway/tests/fuzz_requests/main.rs"]
mod fuzz;

/// Fewest accepted requests that make the run mean something.
const MIN_ACCEPTED: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_accepts_only_what_the_crd_accepts() {
    let kube = airlock_e2e::client().await;
    let ns = airlock_e2e::TestNamespace::new(&kube, "crd-oracle").await;
    let api: Api<Sandbox> = Api::namespaced(kube.clone(), &ns.name);
    let dry_run = PostParams { dry_run: true, field_manager: Some("airlock-exec-gateway".into()) };
    let seed = Knobs::from_env(0x0C0D_0AC1_E5EE_D001).seed;
    let cases = env_u64("ORACLE_CASES", 1500);

    let (mut accepted, mut refused_by_gateway) = (0usize, 0usize);
    let mut mismatches: Vec<String> = Vec::new();
    for case in 0..cases {
        let mut rng = fuzz::case_rng(seed, case);
        let req = fuzz::create_request(&mut rng);
        // What the gateway's CreateSandbox does before it calls the API server, in its order;
        // the default configuration (only the operator's default RuntimeClass).
        let spec = validate::create_request(&req, "default").and_then(|mut spec| {
            spec.spec.security_context = run_as::security_context(&req)?;
            AllowedRuntimeClasses::DefaultOnly.check(&req.runtime_class_name)?;
            Ok(spec)
        });
        let Ok(mut spec) = spec else {
            refused_by_gateway += 1;
            continue;
        };
        accepted += 1;
        // The generated namespace is only a name; the object goes to this test's namespace.
        spec.namespace = ns.name.clone();
        let object = spec.sandbox();
        match api.create(&dry_run, &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => mismatches.push(format!(
                "case {case} (FUZZ_SEED={seed:#x}): the gateway accepted it, the API server answered {} {}: {}\n  spec: {}",
                e.code,
                e.reason,
                e.message,
                fuzz_short(&object.spec)
            )),
            Err(e) => panic!("dry-run create of case {case} failed for another reason than a refusal: {e}"),
        }
        if mismatches.len() >= 10 {
            break;
        }
    }
    println!(
        "crd_oracle: {cases} requests, {accepted} accepted by the gateway ({refused_by_gateway} refused), {} refused by the API server",
        mismatches.len()
    );
    ns.cleanup().await;
    assert!(
        mismatches.is_empty(),
        "{} request(s) the gateway accepts but the CRD refuses:\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
    assert!(
        accepted >= MIN_ACCEPTED,
        "only {accepted} of {cases} generated requests were accepted by the gateway: too few to judge"
    );
}

fn fuzz_short(spec: &airlock_crds::SandboxSpec) -> String {
    airlock_testgen::clip(serde_json::to_string(spec).unwrap_or_default())
}
