//! The committed CRD YAML must be exactly what the Rust types generate.
#[test]
fn committed_crd_matches_types() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sandbox.yaml"))
        .expect("crds/sandbox.yaml exists (run `make crds`)");
    assert!(
        committed == airlock_crds::crd_yaml(),
        "crds/sandbox.yaml drifted from the Rust types: run `make crds` and commit the result"
    );
}
