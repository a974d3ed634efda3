//! Step 2 of the pipeline: check a Sandbox against the operator's configuration — what the CRD
//! schema cannot know (the configured maximum TTL and resources, the allowed RuntimeClasses, the
//! egress deny-list) — and resolve defaults into a
//! [`Plan`] the builders work from. Pure.
//!
//! A policy change never kills a running sandbox: [`validate_as`] with `running` (the sandbox's
//! pod exists) turns what a new sandbox would be refused for into [`Adjustment`]s instead — a
//! time-to-live over the maximum is clamped to it, resources over a lowered maximum are kept (the
//! pod has them already) — which the status reports as condition `PolicyAdjusted`. A sandbox
//! without a pod is refused as before.

use airlock_crds::{EgressMode, PullPolicy, Sandbox};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::status::reason;
use crate::cidr::Cidr;
use crate::config::{Config, Resource};
use crate::quantity;
use airlock_crds::validation::names::is_dns_label;

/// IPv4-mapped IPv6 addresses (`::ffff:0:0/96`): IPv4 traffic in IPv6 form.
const IPV4_MAPPED: Cidr = Cidr {
    addr: std::net::IpAddr::V6(std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)),
    prefix: 96,
};

/// A Sandbox's spec with the operator's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub image_pull_policy: PullPolicy,
    pub runtime_class: String,
    pub cpu: Quantity,
    pub memory: Quantity,
    pub ephemeral_storage: Quantity,
    pub ttl_seconds: i64,
    /// The non-root user the pod runs as: the spec's, else the operator's default, else none
    /// (the image's user).
    pub user: Option<airlock_crds::SandboxSecurityContext>,
    /// What the operator's policy changed or tolerated on a running sandbox.
    pub adjustments: Vec<Adjustment>,
}

/// What a running sandbox keeps although the operator's (since changed) policy refuses it for a new one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Adjustment {
    #[error(
        "spec.lifetime.ttlSeconds: asked {asked} seconds (ttlSeconds {spec} + extensionSeconds {extension}), applied {applied} seconds, the operator's maximum"
    )]
    TtlClamped {
        spec: i64,
        extension: i64,
        asked: i64,
        applied: i64,
    },
    #[error(
        "spec.resources.{field} ({value}) exceeds the operator's maximum of {max}; the running pod keeps it, a new sandbox with this spec would be refused"
    )]
    ResourceOverMax {
        field: &'static str,
        value: String,
        max: String,
    },
    /// A policy (allowed RuntimeClasses, egress deny-list) the running sandbox no longer meets.
    #[error("{0}; the running pod is kept, a new sandbox with this spec would be refused")]
    OutsidePolicy(Problem),
}

impl Adjustment {
    /// The `PolicyAdjusted` condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Adjustment::TtlClamped { .. } => "TTLClamped",
            Adjustment::ResourceOverMax { .. } => "OverMaximum",
            Adjustment::OutsidePolicy(problem) => problem.reason(),
        }
    }
}

/// The time-to-live of a sandbox, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// `spec.lifetime.ttlSeconds`, or the operator's default.
    pub spec: i64,
    /// `spec.lifetime.extensionSeconds` (0 when unset).
    pub extension: i64,
    /// `spec + extension`.
    pub asked: i64,
    /// `asked`, at most the operator's maximum: what the deadline is computed from.
    pub applied: i64,
}

/// The time-to-live the sandbox lives by: its own (or the default) plus its extension, clamped to
/// the operator's maximum.
pub fn ttl(sandbox: &Sandbox, config: &Config) -> Ttl {
    let spec = ttl_seconds(sandbox, config);
    let extension = sandbox.spec.lifetime.extension_seconds.unwrap_or(0).max(0);
    let asked = spec.saturating_add(extension);
    Ttl {
        spec,
        extension,
        asked,
        applied: asked.min(config.max_ttl_seconds),
    }
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
    #[error(
        "spec.securityContext.{field} ({value}) must be between {min} and 2147483647 (the sandbox runs with runAsNonRoot: true)"
    )]
    BadId {
        field: &'static str,
        value: i64,
        min: i64,
    },
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
            Problem::BadId { field, .. } => format!("spec.securityContext.{field}"),
            Problem::RuntimeClassNotAllowed { .. } => "spec.runtimeClassName".into(),
            Problem::BadCidr { index, .. } | Problem::EgressDenied { index, .. } => {
                format!("spec.network.allow[{index}].cidr")
            }
        }
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

/// Checks a sandbox that has no pod yet against the configuration and resolves its defaults.
pub fn validate(sandbox: &Sandbox, config: &Config) -> Result<Plan, Invalid> {
    validate_as(sandbox, config, false)
}

/// Checks the sandbox against the configuration and resolves its defaults; `running`: its pod
/// exists, so what can have changed since it started (the maxima, the TTL, the allowed
/// RuntimeClasses, the egress deny-list) is adjusted or reported, not refused.
pub fn validate_as(sandbox: &Sandbox, config: &Config, running: bool) -> Result<Plan, Invalid> {
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
    let t = ttl(sandbox, config);
    if t.spec < 1 {
        return Err(invalid(Problem::TtlNotPositive { ttl: t.spec }));
    }
    // The extension only ever comes after the start (ExtendSandbox): clamped, never refused.
    if t.spec > config.max_ttl_seconds && !running {
        return Err(invalid(Problem::TtlOverMax {
            ttl: t.spec,
            max: config.max_ttl_seconds,
        }));
    }
    let mut adjustments = Vec::new();
    if t.asked > t.applied {
        adjustments.push(Adjustment::TtlClamped {
            spec: t.spec,
            extension: t.extension,
            asked: t.asked,
            applied: t.applied,
        });
    }
    let runtime_class = sandbox
        .spec
        .runtime_class_name
        .clone()
        .unwrap_or_else(|| config.default_runtime_class.clone());
    // The platform's policy: refused for a new sandbox; reported for a running one (the policy
    // changed since it started), whose NetworkPolicy still gets the current deny-list.
    let mut policy = |problem: Problem| {
        if running {
            adjustments.push(Adjustment::OutsidePolicy(problem));
            Ok(())
        } else {
            Err(invalid(problem))
        }
    };
    if !config.allowed_runtime_classes.contains(&runtime_class) {
        policy(Problem::RuntimeClassNotAllowed {
            class: runtime_class.clone(),
            allowed: config.allowed_runtime_classes.clone(),
        })?;
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
            if IPV4_MAPPED.contains(&cidr) {
                return Err(invalid(Problem::BadCidr {
                    index,
                    cidr: allow.cidr.clone(),
                    error: "an IPv4-mapped IPv6 range (inside ::ffff:0:0/96), which the kernel \
                            sends as IPv4: write it in IPv4 form, where the egress deny-list applies"
                        .into(),
                }));
            }
            if let Some(denied) = config.egress_deny.iter().find(|d| d.contains(&cidr)) {
                policy(Problem::EgressDenied {
                    index,
                    cidr: allow.cidr.clone(),
                    denied: denied.to_string(),
                })?;
            }
        }
    }
    let r = &sandbox.spec.resources;
    let (d, m) = (&config.default_resources, &config.max_resources);
    let mut check = |field, asked: Option<&Quantity>, default, max| match resource(
        field, asked, default, max,
    ) {
        Err(Problem::ResourceOverMax { field, value, max }) if running => {
            adjustments.push(Adjustment::ResourceOverMax { field, value, max });
            Ok(Quantity(
                asked.map(|q| q.0.trim().to_string()).unwrap_or_default(),
            ))
        }
        other => other.map_err(invalid),
    };
    let cpu = check("cpu", r.cpu.as_ref(), &d.cpu, &m.cpu)?;
    let memory = check("memory", r.memory.as_ref(), &d.memory, &m.memory)?;
    let ephemeral_storage = check(
        "ephemeralStorage",
        r.ephemeral_storage.as_ref(),
        &d.ephemeral_storage,
        &m.ephemeral_storage,
    )?;
    // The CRD refuses these already; checked again in case its validation was bypassed.
    let user = sandbox.spec.security_context.or(config.default_user);
    if let Some(u) = &sandbox.spec.security_context {
        for (field, value, min) in [
            ("runAsUser", u.run_as_user, 1),
            ("runAsGroup", u.group(), 0),
        ] {
            if !(min..=airlock_crds::MAX_ID).contains(&value) {
                return Err(invalid(Problem::BadId { field, value, min }));
            }
        }
    }
    Ok(Plan {
        image_pull_policy: sandbox
            .spec
            .image_pull_policy
            .unwrap_or(PullPolicy::IfNotPresent),
        runtime_class,
        cpu,
        memory,
        ephemeral_storage,
        ttl_seconds: t.applied,
        user,
        adjustments,
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

#[cfg(test)]
mod tests;
