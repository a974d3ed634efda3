//! Step 2 of the pipeline: check a Sandbox against the operator's configuration — what the CRD
//! schema cannot know (the configured maximum TTL and resources, the allowed RuntimeClasses, the
//! egress deny-list) — and resolve defaults into a
//! [`Plan`] the builders work from. Pure.

use airlock_crds::{EgressMode, PullPolicy, Sandbox};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::status::reason;
use crate::cidr::Cidr;
use crate::config::{Config, Resource};
use crate::quantity;

/// A Sandbox's spec with the operator's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub image_pull_policy: PullPolicy,
    pub runtime_class: String,
    pub cpu: Quantity,
    pub memory: Quantity,
    pub ephemeral_storage: Quantity,
    pub ttl_seconds: i64,
}

/// A Sandbox the operator refuses to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Sandbox {sandbox}: {problem}")]
pub struct Invalid {
    /// `namespace/name`.
    pub sandbox: String,
    pub problem: Problem,
}

/// What is wrong, naming the field (this text becomes the `Ready` condition's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("spec.lifetime.ttlSeconds ({ttl}) exceeds the operator's maximum of {max} seconds")]
    TtlOverMax { ttl: i64, max: i64 },
    #[error("spec.lifetime.ttlSeconds ({ttl}) must be at least 1")]
    TtlNotPositive { ttl: i64 },
    #[error("spec.resources.{field} ({value}) exceeds the operator's maximum of {max}")]
    ResourceOverMax {
        field: &'static str,
        value: String,
        max: String,
    },
    #[error("spec.resources.{field}: {error}")]
    BadQuantity {
        field: &'static str,
        error: quantity::QuantityError,
    },
    #[error("spec.resources.{field} ({value}) must be positive")]
    NotPositive { field: &'static str, value: String },
    #[error(
        "spec.runtimeClassName ({class}) is not allowed by the operator; allowed RuntimeClasses: {}",
        allowed.join(", ")
    )]
    RuntimeClassNotAllowed { class: String, allowed: Vec<String> },
    #[error("spec.network.allow[{index}].cidr ({cidr}): {error}")]
    BadCidr {
        index: usize,
        cidr: String,
        error: String,
    },
    #[error(
        "spec.network.allow[{index}].cidr ({cidr}) lies inside {denied}, which the operator's egress deny-list keeps every sandbox from reaching"
    )]
    EgressDenied {
        index: usize,
        cidr: String,
        denied: String,
    },
    #[error(
        "metadata.name ({name:?}) must be a DNS label (at most 63 lowercase letters, digits and '-'), because it becomes the pod's hostname and a label value"
    )]
    NameNotDnsLabel { name: String },
}

impl Problem {
    /// The field at fault, as a path in the Sandbox.
    pub fn field(&self) -> String {
        match self {
            Problem::TtlOverMax { .. } | Problem::TtlNotPositive { .. } => {
                "spec.lifetime.ttlSeconds".into()
            }
            Problem::ResourceOverMax { field, .. }
            | Problem::BadQuantity { field, .. }
            | Problem::NotPositive { field, .. } => {
                format!("spec.resources.{field}")
            }
            Problem::NameNotDnsLabel { .. } => "metadata.name".into(),
            Problem::RuntimeClassNotAllowed { .. } => "spec.runtimeClassName".into(),
            Problem::BadCidr { index, .. } | Problem::EgressDenied { index, .. } => {
                format!("spec.network.allow[{index}].cidr")
            }
        }
    }

    /// Whether this is the platform's policy (which may change under a running sandbox) rather
    /// than a fault of the spec itself.
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            Problem::RuntimeClassNotAllowed { .. } | Problem::EgressDenied { .. }
        )
    }

    /// The `Ready` condition's reason for this problem.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::RuntimeClassNotAllowed { .. } => reason::RUNTIME_CLASS_NOT_ALLOWED,
            Problem::EgressDenied { .. } => reason::EGRESS_DENIED,
            _ => reason::INVALID,
        }
    }
}

/// The TTL the sandbox lives by: its own or the configured default.
pub fn ttl_seconds(sandbox: &Sandbox, config: &Config) -> i64 {
    sandbox
        .spec
        .lifetime
        .ttl_seconds
        .unwrap_or(config.default_ttl_seconds)
}

/// Checks the sandbox against the configuration and resolves its defaults.
pub fn validate(sandbox: &Sandbox, config: &Config) -> Result<Plan, Invalid> {
    validate_with(sandbox, config, true)
}

/// [`validate`] without the platform policy (allowed RuntimeClasses, egress deny-list), for a
/// sandbox whose pod already runs: a policy changed since it started does not kill it.
pub fn validate_running(sandbox: &Sandbox, config: &Config) -> Result<Plan, Invalid> {
    validate_with(sandbox, config, false)
}

fn validate_with(sandbox: &Sandbox, config: &Config, policy: bool) -> Result<Plan, Invalid> {
    let invalid = |problem| Invalid {
        sandbox: format!(
            "{}/{}",
            sandbox.namespace().unwrap_or_default(),
            sandbox.name_any()
        ),
        problem,
    };
    let name = sandbox.name_any();
    if !is_dns_label(&name) {
        return Err(invalid(Problem::NameNotDnsLabel { name }));
    }
    let ttl = ttl_seconds(sandbox, config);
    if ttl < 1 {
        return Err(invalid(Problem::TtlNotPositive { ttl }));
    }
    if ttl > config.max_ttl_seconds {
        return Err(invalid(Problem::TtlOverMax {
            ttl,
            max: config.max_ttl_seconds,
        }));
    }
    let runtime_class = sandbox
        .spec
        .runtime_class_name
        .clone()
        .unwrap_or_else(|| config.default_runtime_class.clone());
    if policy && !config.allowed_runtime_classes.contains(&runtime_class) {
        return Err(invalid(Problem::RuntimeClassNotAllowed {
            class: runtime_class,
            allowed: config.allowed_runtime_classes.clone(),
        }));
    }
    if sandbox.spec.network.egress == EgressMode::AllowList {
        for (index, allow) in sandbox.spec.network.allow.iter().enumerate() {
            let cidr = Cidr::parse(&allow.cidr).map_err(|error| {
                invalid(Problem::BadCidr {
                    index,
                    cidr: allow.cidr.clone(),
                    error,
                })
            })?;
            if let Some(denied) = config
                .egress_deny
                .iter()
                .find(|d| policy && d.contains(&cidr))
            {
                return Err(invalid(Problem::EgressDenied {
                    index,
                    cidr: allow.cidr.clone(),
                    denied: denied.to_string(),
                }));
            }
        }
    }
    let r = &sandbox.spec.resources;
    let (d, m) = (&config.default_resources, &config.max_resources);
    let cpu = resource("cpu", r.cpu.as_ref(), &d.cpu, &m.cpu).map_err(invalid)?;
    let memory = resource("memory", r.memory.as_ref(), &d.memory, &m.memory).map_err(invalid)?;
    let ephemeral_storage = resource(
        "ephemeralStorage",
        r.ephemeral_storage.as_ref(),
        &d.ephemeral_storage,
        &m.ephemeral_storage,
    )
    .map_err(invalid)?;
    Ok(Plan {
        image_pull_policy: sandbox
            .spec
            .image_pull_policy
            .unwrap_or(PullPolicy::IfNotPresent),
        runtime_class,
        cpu,
        memory,
        ephemeral_storage,
        ttl_seconds: ttl,
    })
}

fn resource(
    field: &'static str,
    asked: Option<&Quantity>,
    default: &Resource,
    max: &Resource,
) -> Result<Quantity, Problem> {
    let Some(q) = asked else {
        return Ok(default.quantity.clone());
    };
    let amount = quantity::parse(&q.0).map_err(|error| Problem::BadQuantity { field, error })?;
    if !amount.is_positive() {
        return Err(Problem::NotPositive {
            field,
            value: q.0.clone(),
        });
    }
    if amount > max.amount {
        return Err(Problem::ResourceOverMax {
            field,
            value: q.0.clone(),
            max: max.quantity.0.clone(),
        });
    }
    Ok(Quantity(q.0.trim().to_string()))
}

/// RFC 1123 label: what a hostname and a label value both accept.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
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
        // A CIDR the schema should have refused is named, not a panic.
        let err = problem(&allow_list(&["10.0.0.1/8"]));
        assert_eq!(err.problem.field(), "spec.network.allow[0].cidr");
        assert_eq!(err.problem.reason(), "Invalid");
    }

    #[test]
    fn a_running_sandbox_is_only_checked_against_its_own_faults() {
        let yaml = format!(
            "{MINIMAL}  runtimeClassName: runc\n{}",
            allow_list(&["169.254.169.254/32"])
        );
        let config = Config::defaults();
        assert!(
            validate(&sandbox(&yaml), &config)
                .unwrap_err()
                .problem
                .is_policy()
        );
        assert_eq!(
            validate_running(&sandbox(&yaml), &config)
                .unwrap()
                .runtime_class,
            "runc"
        );
        let err = validate_running(
            &sandbox(&format!("{MINIMAL}  lifetime:\n    ttlSeconds: 90000\n")),
            &config,
        )
        .unwrap_err();
        assert!(!err.problem.is_policy());
    }
}
