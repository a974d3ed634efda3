//! CreateSandbox: the request, its resources and its network.

use super::*;

fn quantity(field: &str, q: &str, example: &str) -> Result<Option<String>, Status> {
    if q.is_empty() {
        return Ok(None);
    }
    if q.len() > 64 || !is_quantity(q) {
        return Err(invalid(
            field,
            format!("must be a Kubernetes quantity such as {example}"),
        ));
    }
    if q.trim_start_matches('+')
        .trim_start_matches(['0', '.'])
        .chars()
        .next()
        .is_none_or(|c| !c.is_ascii_digit())
    {
        return Err(invalid(field, "must be positive"));
    }
    Ok(Some(q.to_string()))
}

/// A validated CreateSandbox request.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub namespace: String,
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub spec: airlock_crds::SandboxSpec,
    pub labels: BTreeMap<String, String>,
    pub wait_ready: bool,
}

impl CreateSpec {
    /// The Sandbox object the gateway creates for this request (also what the e2e CRD oracle
    /// dry-runs against the API server).
    pub fn sandbox(&self) -> airlock_crds::Sandbox {
        let mut sb = airlock_crds::Sandbox::new(self.name.as_deref().unwrap_or(""), self.spec.clone());
        sb.metadata.name = self.name.clone();
        sb.metadata.generate_name = self.generate_name.clone();
        sb.metadata.namespace = Some(self.namespace.clone());
        if !self.labels.is_empty() {
            sb.metadata.labels = Some(self.labels.clone());
        }
        sb
    }
}

/// Validates a CreateSandbox request.
pub fn create_request(
    r: &pb::CreateSandboxRequest,
    default_ns: &str,
) -> Result<CreateSpec, Status> {
    use airlock_crds::*;
    let namespace = namespace("namespace", &r.namespace, default_ns)?;
    let (name, generate_name) = match (r.name.is_empty(), r.generate_name.is_empty()) {
        (false, false) => return Err(invalid("name", "set at most one of name and generate_name")),
        (false, true) => {
            if !is_dns_label(&r.name) {
                return Err(invalid("name", DNS_LABEL_HINT));
            }
            (Some(r.name.clone()), None)
        }
        (true, false) => {
            let g = &r.generate_name;
            if g.len() > 58
                || !g
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                || !g.as_bytes()[0].is_ascii_alphanumeric()
            {
                return Err(invalid(
                    "generate_name",
                    "must be a DNS label prefix (lowercase letters, digits and '-', starting with a letter or digit, at most 58 characters)",
                ));
            }
            (None, Some(g.clone()))
        }
        (true, true) => (None, Some("sandbox-".to_string())),
    };
    let (image, template_ref) = match &r.source {
        None => return Err(invalid("image", "set image or template")),
        Some(pb::create_sandbox_request::Source::Template(t)) => {
            if t.is_empty() || t.len() > 253 || !t.split('.').all(is_dns_label) {
                return Err(invalid(
                    "template",
                    "must name a SandboxTemplate (a DNS subdomain name)",
                ));
            }
            // What the template decides cannot be given beside it.
            for (field, set) in [
                ("resources", r.resources.is_some()),
                ("runtime_class_name", !r.runtime_class_name.is_empty()),
                ("working_dir", !r.working_dir.is_empty()),
                ("read_only_root_filesystem", r.read_only_root_filesystem),
                ("agent_in_image", r.agent_in_image),
                ("run_as_user", r.run_as_user.is_some()),
                ("run_as_group", r.run_as_group.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        field,
                        "cannot be set with template: the SandboxTemplate sets it",
                    ));
                }
            }
            (String::new(), Some(TemplateRef { name: t.clone() }))
        }
        Some(pb::create_sandbox_request::Source::Image(i)) => {
            if i.trim().is_empty() {
                return Err(invalid("image", "must not be empty"));
            }
            if i.len() > 512 || i.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "image",
                    "must be an image reference without spaces, at most 512 characters",
                ));
            }
            (i.clone(), None)
        }
    };
    let res = r.resources.clone().unwrap_or_default();
    let q = |v: Option<String>| v.map(k8s_openapi::apimachinery::pkg::api::resource::Quantity);
    let resources = SandboxResources {
        cpu: q(quantity("resources.cpu", &res.cpu, "500m or 2")?),
        memory: q(memory(&res.memory)?),
        ephemeral_storage: q(quantity(
            "resources.ephemeral_storage",
            &res.ephemeral_storage,
            "1Gi",
        )?),
    };
    let secs = |field: &str, v: i64| -> Result<Option<i64>, Status> {
        if v < 0 {
            return Err(invalid(field, "must not be negative"));
        }
        if v > MAX_TTL_SECONDS {
            return Err(invalid(
                field,
                format!("must be at most {MAX_TTL_SECONDS} (7 days)"),
            ));
        }
        Ok((v > 0).then_some(v))
    };
    let lifetime = Lifetime {
        ttl_seconds: secs("ttl_seconds", r.ttl_seconds)?,
        idle_timeout_seconds: secs("idle_timeout_seconds", r.idle_timeout_seconds)?,
        extension_seconds: None,
        on_expiry: None,
    };
    let network = network(r.network.as_ref())?;
    let env = env("env", &r.env, 128)?
        .into_iter()
        .map(|(name, value)| SandboxEnvVar { name, value })
        .collect();
    let mut labels = BTreeMap::new();
    for (k, v) in &r.labels {
        if !is_label_key(k) {
            return Err(invalid("labels", format!("invalid label key {k:?}")));
        }
        if k.starts_with("airlock.dev/") || k.contains(".airlock.dev/") {
            return Err(invalid(
                "labels",
                format!("label key {k:?} uses the reserved prefix airlock.dev/"),
            ));
        }
        if !is_label_value(v) {
            return Err(invalid(
                "labels",
                format!("invalid value {v:?} of label {k}"),
            ));
        }
        labels.insert(k.clone(), v.clone());
    }
    let runtime_class_name = if r.runtime_class_name.is_empty() {
        None
    } else {
        let rc = &r.runtime_class_name;
        if rc.len() > 253 || !rc.split('.').all(is_dns_label) {
            return Err(invalid(
                "runtime_class_name",
                "must be a DNS subdomain name",
            ));
        }
        Some(rc.clone())
    };
    let working_dir = if r.working_dir.is_empty() {
        None
    } else {
        Some(path("working_dir", &r.working_dir)?)
    };
    if r.files.len() > 16 {
        return Err(invalid("files", format!("at most 16 files, got {}", r.files.len())));
    }
    let mut files = Vec::with_capacity(r.files.len());
    for (i, f) in r.files.iter().enumerate() {
        let p = path(&format!("files[{i}].path"), &f.path)?;
        if p.ends_with('/') || p.len() < 2 {
            return Err(invalid(&format!("files[{i}].path"), "must name a file, not a directory"));
        }
        if f.content.len() > 65536 {
            return Err(invalid(&format!("files[{i}].content"), format!("at most 65536 bytes, got {}", f.content.len())));
        }
        let mode = match f.mode {
            Some(m) if m > 0o7777 => {
                return Err(invalid(&format!("files[{i}].mode"), format!("at most 0o7777 (4095), got {m}")));
            }
            Some(m) => Some(m as i32),
            None => None,
        };
        files.push(SandboxFile { path: p, content: f.content.clone(), mode });
    }
    Ok(CreateSpec {
        namespace,
        name,
        generate_name,
        spec: SandboxSpec {
            image,
            template_ref,
            resources,
            lifetime,
            network,
            env,
            runtime_class_name,
            working_dir,
            read_only_root_filesystem: r.read_only_root_filesystem,
            agent: r.agent_in_image.then_some(airlock_crds::AgentSource::Image),
            files,
            ..Default::default()
        },
        labels,
        wait_ready: r.wait_ready,
    })
}

fn network(n: Option<&pb::Network>) -> Result<airlock_crds::Network, Status> {
    use airlock_crds::{EgressMode, EgressPort, EgressRule, Network, Protocol};
    let Some(n) = n else {
        return Ok(Network::default());
    };
    let egress = match pb::network::Egress::try_from(n.egress) {
        Ok(pb::network::Egress::Unspecified | pb::network::Egress::None) => EgressMode::None,
        Ok(pb::network::Egress::Internet) => EgressMode::Internet,
        Ok(pb::network::Egress::AllowList) => EgressMode::AllowList,
        Err(_) => {
            return Err(invalid(
                "network.egress",
                format!("unknown value {}", n.egress),
            ));
        }
    };
    if egress != EgressMode::AllowList && !n.allow.is_empty() {
        return Err(invalid(
            "network.allow",
            "may only be set when network.egress is EGRESS_ALLOW_LIST",
        ));
    }
    if egress == EgressMode::AllowList && n.allow.is_empty() {
        return Err(invalid(
            "network.allow",
            "must list at least one destination when network.egress is EGRESS_ALLOW_LIST",
        ));
    }
    if n.allow.len() > 64 {
        return Err(invalid("network.allow", "at most 64 destinations"));
    }
    let mut allow = Vec::with_capacity(n.allow.len());
    for (i, rule) in n.allow.iter().enumerate() {
        if !is_cidr(&rule.cidr) {
            return Err(invalid(
                &format!("network.allow[{i}].cidr"),
                "must be a CIDR such as 10.1.2.0/24",
            ));
        }
        if rule.ports.len() > 32 {
            return Err(invalid(
                &format!("network.allow[{i}].ports"),
                "at most 32 ports",
            ));
        }
        let mut ports = Vec::with_capacity(rule.ports.len());
        for (j, p) in rule.ports.iter().enumerate() {
            if !(1..=65535).contains(&p.port) {
                return Err(invalid(
                    &format!("network.allow[{i}].ports[{j}].port"),
                    "must be between 1 and 65535",
                ));
            }
            let protocol = match pb::port::Protocol::try_from(p.protocol) {
                Ok(pb::port::Protocol::Unspecified | pb::port::Protocol::Tcp) => Protocol::TCP,
                Ok(pb::port::Protocol::Udp) => Protocol::UDP,
                Ok(pb::port::Protocol::Sctp) => Protocol::SCTP,
                Err(_) => {
                    return Err(invalid(
                        &format!("network.allow[{i}].ports[{j}].protocol"),
                        format!("unknown value {}", p.protocol),
                    ));
                }
            };
            ports.push(EgressPort {
                port: p.port,
                protocol,
            });
        }
        allow.push(EgressRule {
            cidr: rule.cidr.clone(),
            ports,
        });
    }
    Ok(Network {
        egress,
        allow,
        dns: n.dns,
    })
}

/// Memory: a positive quantity above the CRD's minimum (`crds::validation::quantity::MIN_MEMORY`,
/// the rule on `spec.resources.memory`), so the API server never refuses what passed here.
fn memory(q: &str) -> Result<Option<String>, Status> {
    use airlock_crds::validation::quantity::{MIN_MEMORY, parse};
    let m = quantity("resources.memory", q, "512Mi")?;
    if let (Some(m), Ok(min)) = (&m, parse(MIN_MEMORY))
        && parse(m).is_ok_and(|a| a <= min)
    {
        return Err(invalid(
            "resources.memory",
            format!("must be a quantity above {MIN_MEMORY} such as 512Mi"),
        ));
    }
    Ok(m)
}
