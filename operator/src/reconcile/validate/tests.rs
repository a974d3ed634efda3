use super::*;
use crate::build::fixtures::*;

#[test]
fn defaults_are_resolved_from_config() {
    let config = Config::defaults();
    let plan = validate(&sandbox(MINIMAL), &config).unwrap();
    assert_eq!(plan.image_pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(plan.runtime_class, "kata");
    assert_eq!(
        (
            plan.cpu.0.as_str(),
            plan.memory.0.as_str(),
            plan.ephemeral_storage.0.as_str()
        ),
        ("1", "512Mi", "1Gi")
    );
    assert_eq!(plan.ttl_seconds, 3600);
}

/// The defaults with `gvisor` allowed too (FULL names it).
fn gvisor_allowed() -> Config {
    let mut config = Config::defaults();
    config.allowed_runtime_classes.push("gvisor".into());
    config
}

#[test]
fn spec_values_win_over_defaults() {
    let plan = validate(&sandbox(FULL), &gvisor_allowed()).unwrap();
    assert_eq!(plan.image_pull_policy, PullPolicy::Always);
    assert_eq!(plan.runtime_class, "gvisor");
    assert_eq!(
        (
            plan.cpu.0.as_str(),
            plan.memory.0.as_str(),
            plan.ephemeral_storage.0.as_str()
        ),
        ("500m", "2Gi", "4Gi")
    );
    assert_eq!(plan.ttl_seconds, 600);
}

fn problem(yaml_spec_tail: &str) -> Invalid {
    let yaml = format!("{MINIMAL}{yaml_spec_tail}");
    validate(&sandbox(&yaml), &Config::defaults()).unwrap_err()
}

#[test]
fn ttl_over_the_configured_maximum_is_invalid() {
    let err = problem("  lifetime:\n    ttlSeconds: 90000\n");
    assert_eq!(
        err.problem,
        Problem::TtlOverMax {
            ttl: 90000,
            max: 86400
        }
    );
    assert_eq!(err.problem.field(), "spec.lifetime.ttlSeconds");
    assert_eq!(
        err.to_string(),
        "Sandbox team-a/sbx-1: spec.lifetime.ttlSeconds (90000) exceeds the operator's maximum of 86400 seconds"
    );
}

#[test]
fn a_running_sandbox_over_a_lowered_maximum_is_clamped_not_refused() {
    let yaml = format!("{MINIMAL}  lifetime:\n    ttlSeconds: 90000\n");
    let plan = validate_as(&sandbox(&yaml), &Config::defaults(), true).unwrap();
    assert_eq!(plan.ttl_seconds, 86400, "clamped to --max-ttl");
    assert_eq!(
        plan.adjustments,
        vec![Adjustment::TtlClamped {
            spec: 90000,
            extension: 0,
            asked: 90000,
            applied: 86400
        }]
    );
    assert_eq!(plan.adjustments[0].reason(), "TTLClamped");
    assert_eq!(
        plan.adjustments[0].to_string(),
        "spec.lifetime.ttlSeconds: asked 90000 seconds (ttlSeconds 90000 + extensionSeconds 0), applied 86400 seconds, the operator's maximum"
    );
    // Resources over a maximum lowered after the start: kept, reported.
    let yaml = format!("{MINIMAL}  resources:\n    cpu: \"6\"\n");
    assert!(validate(&sandbox(&yaml), &Config::defaults()).is_err());
    let plan = validate_as(&sandbox(&yaml), &Config::defaults(), true).unwrap();
    assert_eq!(plan.cpu.0, "6");
    assert_eq!(
        plan.adjustments,
        vec![Adjustment::ResourceOverMax {
            field: "cpu",
            value: "6".into(),
            max: "4".into()
        }]
    );
    // What no policy change explains is still refused.
    let yaml = format!("{MINIMAL}  resources:\n    cpu: abc\n");
    assert!(validate_as(&sandbox(&yaml), &Config::defaults(), true).is_err());
}

#[test]
fn extension_adds_to_the_ttl_and_is_clamped_even_before_the_start() {
    let yaml =
        format!("{MINIMAL}  lifetime:\n    ttlSeconds: 600\n    extensionSeconds: 300\n");
    let t = ttl(&sandbox(&yaml), &Config::defaults());
    assert_eq!(
        t,
        Ttl {
            spec: 600,
            extension: 300,
            asked: 900,
            applied: 900
        }
    );
    let plan = validate(&sandbox(&yaml), &Config::defaults()).unwrap();
    assert_eq!((plan.ttl_seconds, plan.adjustments.len()), (900, 0));
    // Default TTL (3600) + an extension past the maximum (86400).
    let yaml = format!("{MINIMAL}  lifetime:\n    extensionSeconds: 86000\n");
    let plan = validate(&sandbox(&yaml), &Config::defaults()).unwrap();
    assert_eq!(plan.ttl_seconds, 86400);
    assert!(matches!(
        plan.adjustments[..],
        [Adjustment::TtlClamped {
            spec: 3600,
            extension: 86000,
            asked: 89600,
            applied: 86400
        }]
    ));
}

#[test]
fn resources_over_the_maximum_are_invalid() {
    let err = problem("  resources:\n    cpu: 4100m\n");
    assert_eq!(
        err.problem.to_string(),
        "spec.resources.cpu (4100m) exceeds the operator's maximum of 4"
    );
    let err = problem("  resources:\n    memory: 9Gi\n");
    assert_eq!(err.problem.field(), "spec.resources.memory");
    let err = problem("  resources:\n    ephemeralStorage: 21Gi\n");
    assert_eq!(err.problem.field(), "spec.resources.ephemeralStorage");
    // Exactly the maximum is fine.
    let yaml = format!(
        "{MINIMAL}  resources:\n    cpu: 4\n    memory: 8Gi\n    ephemeralStorage: 20Gi\n"
    );
    assert!(validate(&sandbox(&yaml), &Config::defaults()).is_ok());
}

#[test]
fn quantities_the_schema_should_have_caught_are_still_handled() {
    let err = problem("  resources:\n    cpu: abc\n");
    assert!(
        matches!(err.problem, Problem::BadQuantity { field: "cpu", .. }),
        "{err}"
    );
    let err = problem("  resources:\n    memory: \"0\"\n");
    assert_eq!(
        err.problem,
        Problem::NotPositive {
            field: "memory",
            value: "0".into()
        }
    );
}

#[test]
fn name_must_be_a_dns_label() {
    let yaml = MINIMAL.replace("name: sbx-1", "name: a.b");
    let err = validate(&sandbox(&yaml), &Config::defaults()).unwrap_err();
    assert_eq!(err.problem.field(), "metadata.name");
    let long = format!("name: {}", "a".repeat(64));
    let err = validate(
        &sandbox(&MINIMAL.replace("name: sbx-1", &long)),
        &Config::defaults(),
    )
    .unwrap_err();
    assert_eq!(err.problem.field(), "metadata.name");
}

#[test]
fn only_allowed_runtime_classes() {
    // The default class is always allowed, named or not.
    assert!(validate(&sandbox(MINIMAL), &Config::defaults()).is_ok());
    let named = format!("{MINIMAL}  runtimeClassName: kata\n");
    assert!(validate(&sandbox(&named), &Config::defaults()).is_ok());
    let err = problem("  runtimeClassName: runc\n");
    assert_eq!(err.problem.field(), "spec.runtimeClassName");
    assert_eq!(err.problem.reason(), "RuntimeClassNotAllowed");
    assert_eq!(
        err.problem.to_string(),
        "spec.runtimeClassName (runc) is not allowed by the operator; allowed RuntimeClasses: kata"
    );
    // Allowed by the flag.
    let mut config = gvisor_allowed();
    config.allowed_runtime_classes.push("runc".into());
    let plan = validate(
        &sandbox(&format!("{MINIMAL}  runtimeClassName: runc\n")),
        &config,
    );
    assert_eq!(plan.unwrap().runtime_class, "runc");
    // The default class itself must be allowed, also when a Sandbox leaves it out.
    let mut config = Config::defaults();
    config.allowed_runtime_classes = vec!["gvisor".into()];
    let err = validate(&sandbox(MINIMAL), &config).unwrap_err();
    assert_eq!(err.problem.field(), "spec.runtimeClassName");
}

fn allow_list(cidrs: &[&str]) -> String {
    let mut y = String::from("  network:\n    egress: AllowList\n    allow:\n");
    for c in cidrs {
        y.push_str(&format!("      - cidr: {c}\n"));
    }
    y
}

#[test]
fn allow_list_entries_inside_the_deny_list_are_refused() {
    let err = problem(&allow_list(&["203.0.113.0/24", "169.254.169.254/32"]));
    assert_eq!(err.problem.field(), "spec.network.allow[1].cidr");
    assert_eq!(err.problem.reason(), "EgressDenied");
    assert_eq!(
        err.problem.to_string(),
        "spec.network.allow[1].cidr (169.254.169.254/32) lies inside 169.254.169.254/32, which the operator's egress deny-list keeps every sandbox from reaching"
    );
    let err = problem(&allow_list(&["169.254.20.0/24"]));
    assert!(
        err.problem.to_string().contains("inside 169.254.0.0/16"),
        "{err}"
    );
    let err = problem(&allow_list(&["fd00:ec2::254/128"]));
    assert_eq!(err.problem.field(), "spec.network.allow[0].cidr");
    // The cluster's own ranges are denied too.
    let err = problem(&allow_list(&["10.96.0.10/32"]));
    assert!(
        err.problem.to_string().contains("inside 10.96.0.0/12"),
        "{err}"
    );
    // Ranges merely containing a denied range are accepted (they get it as an exception).
    assert!(
        validate(
            &sandbox(&format!(
                "{MINIMAL}{}",
                allow_list(&["0.0.0.0/0", "10.0.0.0/8"])
            )),
            &Config::defaults()
        )
        .is_ok()
    );
    // IPv4 in IPv6 form would slip past the IPv4 deny-list: refused, asking for the IPv4 form.
    let err = problem(&allow_list(&["::ffff:a9fe:a9fe/128"]));
    assert_eq!(err.problem.field(), "spec.network.allow[0].cidr");
    assert!(err.problem.to_string().contains("IPv4-mapped"), "{err}");
        // A CIDR the schema should have refused is named, not a panic.
    let err = problem(&allow_list(&["10.0.0.1/8"]));
    assert_eq!(err.problem.field(), "spec.network.allow[0].cidr");
    assert_eq!(err.problem.reason(), "Invalid");
}

#[test]
fn a_running_sandbox_outside_a_changed_policy_is_reported_not_refused() {
    let yaml = format!(
        "{MINIMAL}  runtimeClassName: runc\n{}",
        allow_list(&["169.254.169.254/32"])
    );
    let config = Config::defaults();
    assert_eq!(
        validate(&sandbox(&yaml), &config).unwrap_err().problem.reason(),
        "RuntimeClassNotAllowed"
    );
    let plan = validate_as(&sandbox(&yaml), &config, true).unwrap();
    assert_eq!(plan.runtime_class, "runc");
    let reasons: Vec<_> = plan.adjustments.iter().map(|a| a.reason()).collect();
    assert_eq!(reasons, ["RuntimeClassNotAllowed", "EgressDenied"]);
    assert!(
        plan.adjustments[0]
            .to_string()
            .starts_with("spec.runtimeClassName (runc) is not allowed"),
        "{}",
        plan.adjustments[0]
    );
    // The sandbox's own faults are refused, running or not.
    let err = validate_as(
        &sandbox(&format!("{MINIMAL}  resources:\n    cpu: \"0\"\n")),
        &config,
        true,
    )
    .unwrap_err();
    assert_eq!(err.problem.field(), "spec.resources.cpu");
}
