//! The committed CRD YAML must be exactly what the Rust types generate.
#[test]
fn committed_crds_match_types() {
    for file in airlock_crds::CRD_FILES {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("crds/{file} exists (run `make crds`): {e}"));
        assert!(
            committed == airlock_crds::crd_yaml_of(file).unwrap(),
            "crds/{file} drifted from the Rust types: run `make crds` and commit the result"
        );
    }
}

/// Optional enums list their values only: no `null` (which the API server's error for a wrong
/// value would offer as a "supported value") and not nullable; the fields stay optional.
#[test]
fn optional_enums_offer_only_their_values() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(airlock_crds::Sandbox::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for (field, values) in [
        ("agent", vec!["Inject", "Image"]),
        ("imagePullPolicy", vec!["Always", "IfNotPresent", "Never"]),
    ] {
        let schema = &spec["properties"][field];
        assert_eq!(schema["enum"], serde_json::json!(values), "{field}");
        assert_eq!(schema["type"], "string", "{field}");
        assert!(schema.get("nullable").is_none(), "{field}: {schema}");
        let required = spec["required"].as_array().cloned().unwrap_or_default();
        assert!(
            !required.contains(&serde_json::json!(field)),
            "{field} stays optional"
        );
    }
    // Absent, the field deserializes as before.
    let s: airlock_crds::SandboxSpec = serde_json::from_str(r#"{"image": "busybox"}"#).unwrap();
    assert_eq!((s.agent, s.image_pull_policy), (None, None));
}
