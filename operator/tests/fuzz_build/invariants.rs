//! What must hold of the plan and the pod built from any Sandbox (the NetworkPolicy's in
//! `netpol.rs`).

use super::*;

pub(crate) fn ensure(cond: bool, what: &str) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.to_string()) }
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[derive(Default, Debug)]
pub struct Stats {
    pub(crate) cases: u64,
    pub(crate) undecodable: u64,
    pub(crate) invalid: BTreeMap<String, u64>,
    pub(crate) planned: u64,
    pub(crate) pods: u64,
    pub(crate) build_errors: u64,
    pub(crate) egress: BTreeMap<&'static str, u64>,
}

/// Runs the pipeline on one sandbox and checks every invariant.
pub fn check(s: &Sandbox, config: &Config, stats: &mut Stats) -> Result<(), String> {
    let name = s.name_any();
    let result = validate(s, config);
    ensure(
        result == validate(s, config),
        "validate is not deterministic",
    )?;
    let plan = match result {
        Err(inv) => {
            let field = inv.problem.field();
            ensure(
                field.starts_with("spec.") || field.starts_with("metadata."),
                &format!("problem field {field:?} is not a path"),
            )?;
            let msg = inv.problem.to_string();
            ensure(
                msg.starts_with(&field),
                &format!("problem message {msg:?} does not start with its field {field:?}"),
            )?;
            ensure(inv.to_string().starts_with("Sandbox "), "Invalid display")?;
            if !is_dns_label(&name) {
                ensure(
                    field == "metadata.name",
                    "an invalid name must be reported first",
                )?;
            }
            *stats.invalid.entry(field).or_default() += 1;
            return Ok(());
        }
        Ok(plan) => plan,
    };
    stats.planned += 1;
    check_plan(s, &plan, config)?;

    let pod = build::pod(s, &plan, config);
    ensure(
        pod == build::pod(s, &plan, config),
        "pod is not deterministic",
    )?;
    let np = build::network_policy(s, config);
    let can_own =
        s.metadata.uid.is_some() && s.metadata.namespace.is_some() && s.metadata.name.is_some();
    match (&pod, &np) {
        (Ok(pod), Ok(np)) => {
            ensure(can_own, "children built without uid, namespace or name")?;
            stats.pods += 1;
            check_pod(s, &plan, config, pod)?;
            check_netpol(s, config, np, stats)?;
            // The policy must select the pod it fences.
            let sel = np.spec.as_ref().unwrap().pod_selector.as_ref().unwrap();
            for (k, v) in sel.match_labels.as_ref().unwrap() {
                ensure(
                    pod.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v),
                    "the NetworkPolicy does not select the pod",
                )?;
            }
        }
        (Err(e1), Err(e2)) => {
            ensure(
                !can_own,
                &format!("build failed for an ownable sandbox: {e1}"),
            )?;
            ensure(e1 == e2, "pod and netpol disagree on the error")?;
            ensure(
                match e1 {
                    BuildError::MissingNamespace { .. } => s.metadata.namespace.is_none(),
                    BuildError::MissingUid { .. } => {
                        s.metadata.uid.is_none() || s.metadata.name.is_none()
                    }
                },
                &format!("wrong build error {e1:?}"),
            )?;
            stats.build_errors += 1;
        }
        _ => return Err("pod and NetworkPolicy builds disagree (one failed)".into()),
    }
    Ok(())
}

pub(crate) fn check_plan(s: &Sandbox, plan: &Plan, config: &Config) -> Result<(), String> {
    ensure(
        is_dns_label(&s.name_any()),
        "accepted a name that is not a DNS label",
    )?;
    ensure(
        (1..=config.max_ttl_seconds).contains(&plan.ttl_seconds),
        &format!(
            "ttl {} outside 1..={}",
            plan.ttl_seconds, config.max_ttl_seconds
        ),
    )?;
    let asked = s
        .spec
        .lifetime
        .ttl_seconds
        .unwrap_or(config.default_ttl_seconds)
        .saturating_add(s.spec.lifetime.extension_seconds.unwrap_or(0).max(0));
    ensure(
        plan.ttl_seconds == asked.min(config.max_ttl_seconds),
        "ttl is not (the spec's or the default) + the extension, clamped to the maximum",
    )?;
    ensure(
        (asked > config.max_ttl_seconds) != plan.adjustments.is_empty(),
        "a clamped ttl without a PolicyAdjusted adjustment (or the reverse)",
    )?;
    ensure(
        plan.runtime_class
            == s.spec
                .runtime_class_name
                .clone()
                .unwrap_or_else(|| config.default_runtime_class.clone()),
        "runtime class is neither the spec's nor the default",
    )?;
    ensure(
        plan.image_pull_policy == s.spec.image_pull_policy.unwrap_or(PullPolicy::IfNotPresent),
        "pull policy",
    )?;
    let r = &s.spec.resources;
    for (field, asked, got, default, max) in [
        (
            "cpu",
            &r.cpu,
            &plan.cpu,
            &config.default_resources.cpu,
            &config.max_resources.cpu,
        ),
        (
            "memory",
            &r.memory,
            &plan.memory,
            &config.default_resources.memory,
            &config.max_resources.memory,
        ),
        (
            "ephemeralStorage",
            &r.ephemeral_storage,
            &plan.ephemeral_storage,
            &config.default_resources.ephemeral_storage,
            &config.max_resources.ephemeral_storage,
        ),
    ] {
        let amount = quantity::parse(&got.0)
            .map_err(|e| format!("plan {field} {:?} does not parse: {e}", got.0))?;
        ensure(
            amount.is_positive(),
            &format!("plan {field} {:?} not positive", got.0),
        )?;
        ensure(
            amount <= max.amount,
            &format!("plan {field} {:?} over the maximum", got.0),
        )?;
        match asked {
            None => ensure(
                got == &default.quantity,
                &format!("plan {field} is not the default"),
            )?,
            Some(q) => ensure(
                got.0 == q.0.trim(),
                &format!("plan {field} is not the spec's"),
            )?,
        }
    }
    Ok(())
}

/// Server-side apply must not send empty lists (the API server drops them, so every apply would
/// change the object).
pub(crate) fn no_empty_lists(v: &Value, path: &str) -> Result<(), String> {
    match v {
        Value::Array(a) => {
            ensure(!a.is_empty(), &format!("empty list at {path}"))?;
            for (i, x) in a.iter().enumerate() {
                no_empty_lists(x, &format!("{path}[{i}]"))?;
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                no_empty_lists(x, &format!("{path}.{k}"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

pub(crate) fn check_container(c: &Container, config: &Config) -> Result<(), String> {
    let what = |m: &str| format!("container {}: {m}", c.name);
    let sc = c
        .security_context
        .as_ref()
        .ok_or_else(|| what("no securityContext"))?;
    ensure(
        sc.allow_privilege_escalation == Some(false),
        &what("allowPrivilegeEscalation not false"),
    )?;
    ensure(sc.privileged == Some(false), &what("privileged not false"))?;
    let caps = sc
        .capabilities
        .as_ref()
        .ok_or_else(|| what("no capabilities"))?;
    ensure(
        caps.drop.as_deref() == Some(&["ALL".to_string()][..]),
        &what("does not drop ALL"),
    )?;
    ensure(
        caps.add.as_ref().is_none_or(|a| a.is_empty()),
        &what("adds capabilities"),
    )?;
    ensure(
        sc.seccomp_profile
            .as_ref()
            .is_some_and(|p| p.type_ == "RuntimeDefault"),
        &what("seccomp not RuntimeDefault"),
    )?;
    ensure(
        sc.run_as_user != Some(0) || sc.run_as_non_root != Some(false),
        &what("runs as root explicitly"),
    )?;
    ensure(
        sc.proc_mount.is_none() && sc.se_linux_options.is_none(),
        &what("procMount/seLinux"),
    )?;
    let res = c.resources.as_ref().ok_or_else(|| what("no resources"))?;
    ensure(
        res.requests.is_some() && res.requests == res.limits,
        &what("requests != limits"),
    )?;
    let limits = res.limits.as_ref().unwrap();
    let keys: Vec<&str> = limits.keys().map(String::as_str).collect();
    ensure(
        keys == ["cpu", "ephemeral-storage", "memory"],
        &what(&format!("resource keys {keys:?}")),
    )?;
    for (k, max) in [
        ("cpu", &config.max_resources.cpu),
        ("memory", &config.max_resources.memory),
        ("ephemeral-storage", &config.max_resources.ephemeral_storage),
    ] {
        let q = &limits[k];
        let amount = quantity::parse(&q.0).map_err(|e| what(&format!("{k} {:?}: {e}", q.0)))?;
        ensure(
            amount.is_positive() && amount <= max.amount,
            &what(&format!("{k} {:?} out of bounds", q.0)),
        )?;
    }
    for e in c.env.iter().flatten() {
        ensure(
            e.value_from.is_none(),
            &what("env valueFrom (secret/configmap reference)"),
        )?;
    }
    ensure(c.env_from.is_none(), &what("envFrom"))?;
    ensure(c.ports.is_none(), &what("exposes ports"))?;
    ensure(
        c.args.is_none(),
        &what("args set (would bypass the agent's argv)"),
    )?;
    ensure(
        c.stdin != Some(true) && c.tty != Some(true),
        &what("stdin/tty"),
    )?;
    Ok(())
}

pub(crate) fn check_pod(s: &Sandbox, plan: &Plan, config: &Config, pod: &Pod) -> Result<(), String> {
    let name = s.name_any();
    let value = serde_json::to_value(pod).map_err(|e| format!("pod does not serialize: {e}"))?;
    no_empty_lists(&value, "pod")?;
    let spec = pod.spec.as_ref().ok_or("pod without spec")?;
    ensure(
        spec.automount_service_account_token == Some(false),
        "automountServiceAccountToken not false",
    )?;
    ensure(
        spec.enable_service_links == Some(false),
        "enableServiceLinks not false",
    )?;
    ensure(spec.host_network == Some(false), "hostNetwork")?;
    ensure(spec.host_pid == Some(false), "hostPID")?;
    ensure(spec.host_ipc == Some(false), "hostIPC")?;
    ensure(
        spec.host_users.is_none() || spec.host_users == Some(false),
        "hostUsers",
    )?;
    ensure(
        spec.share_process_namespace == Some(false),
        "shareProcessNamespace",
    )?;
    ensure(spec.service_account_name.is_none(), "service account set")?;
    ensure(
        spec.node_name.is_none() && spec.node_selector.is_none(),
        "node pinning from spec",
    )?;
    ensure(spec.ephemeral_containers.is_none(), "ephemeral containers")?;
    ensure(
        spec.restart_policy.as_deref() == Some("Never"),
        "restartPolicy",
    )?;
    ensure(
        spec.priority_class_name.as_deref() == Some(PRIORITY_CLASS),
        "priorityClassName",
    )?;
    match &spec.runtime_class_name {
        Some(rc) => ensure(
            rc == &plan.runtime_class,
            "runtimeClassName is not the plan's",
        )?,
        None => return Err("runtimeClassName not set".into()),
    }
    ensure(spec.hostname.as_deref() == Some(name.as_str()), "hostname")?;
    ensure(
        spec.security_context
            .as_ref()
            .and_then(|p| p.seccomp_profile.as_ref())
            .is_some_and(|p| p.type_ == "RuntimeDefault"),
        "pod seccomp",
    )?;
    // Volumes: memory/disk scratch only, never host paths, secrets or projected tokens.
    for v in spec.volumes.iter().flatten() {
        let j = serde_json::to_value(v).unwrap();
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        let bundle = matches!(&config.agent, Agent::ConfigMap(b)
            if v.name == build::pod::BOOT_VOLUME && v.config_map.as_ref().is_some_and(|c| c.name == b.name));
        ensure(
            keys.iter()
                .all(|k| *k == "name" || *k == "emptyDir" || (bundle && *k == "configMap")),
            &format!("volume {} has sources {keys:?}", v.name),
        )?;
    }
    let tmp = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == build::pod::TMP_VOLUME);
    ensure(
        tmp == s.spec.read_only_root_filesystem,
        "tmp volume iff read-only root",
    )?;

    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let in_image = s.spec.agent == Some(AgentSource::Image);
    let (n_inits, prefix) = match &config.agent {
        _ if in_image => (0, 0),
        Agent::InitContainer { .. } => (1, 0),
        Agent::ConfigMap(_) => (0, 2),
    };
    let agent_volume = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == build::pod::AGENT_VOLUME);
    ensure(
        agent_volume != in_image,
        "agent volume iff the agent is injected",
    )?;
    ensure(
        inits.len() == n_inits && spec.containers.len() == 1,
        "container count",
    )?;
    for c in inits.iter().chain(&spec.containers) {
        check_container(c, config)?;
        for m in c.volume_mounts.iter().flatten() {
            ensure(
                spec.volumes.iter().flatten().any(|v| v.name == m.name),
                "mount of an unknown volume",
            )?;
        }
    }
    match &config.agent {
        _ if in_image => {}
        Agent::InitContainer { image } => ensure(
            inits[0].image.as_deref() == Some(image.as_str()),
            "init image is not the agent",
        )?,
        Agent::ConfigMap(_) => {
            let cmd = spec.containers[0].command.as_deref().unwrap_or_default();
            ensure(
                cmd.len() >= 2
                    && cmd[0] == "/.airlock-boot/boot"
                    && cmd[1] == "/.airlock-boot/agent.z",
                "the container does not start airlock-boot",
            )?
        }
    }
    let main = &spec.containers[0];
    ensure(main.name == labels::MAIN_CONTAINER, "main container name")?;
    ensure(
        main.image.as_deref() == Some(s.spec.image.as_str()),
        "main image",
    )?;
    let cmd = &main
        .command
        .as_deref()
        .ok_or("main container without command")?[prefix..];
    ensure(
        cmd.len() >= 3 && cmd[0] == labels::AGENT_PATH && cmd[1] == "init" && cmd[2] == "--",
        "the agent is not PID 1",
    )?;
    let mut user: Vec<String> = Vec::new();
    if !s.spec.command.is_empty() {
        user.extend(s.spec.command.iter().cloned());
        user.extend(s.spec.args.iter().cloned());
    }
    let expanded: Vec<String> = cmd[3..].iter().map(|w| kubelet::expand(w)).collect();
    ensure(
        expanded == user,
        "main argv is not command + args once the kubelet expanded it",
    )?;
    ensure(
        main.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem
            == Some(s.spec.read_only_root_filesystem),
        "readOnlyRootFilesystem",
    )?;
    ensure(main.working_dir == s.spec.working_dir, "workingDir")?;
    let env: Vec<(String, Option<String>)> = main
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.as_deref().map(kubelet::expand)))
        .collect();
    let want: Vec<(String, Option<String>)> = s
        .spec
        .env
        .iter()
        .map(|e| (e.name.clone(), Some(e.value.clone())))
        .collect();
    ensure(
        env == want,
        "env is not the spec's once the kubelet expanded it",
    )?;
    // Metadata: namespace, labels, controller owner.
    ensure(
        pod.metadata.namespace == s.metadata.namespace,
        "pod namespace",
    )?;
    ensure(
        pod.metadata.name.as_deref() == Some(name.as_str()),
        "pod name",
    )?;
    ensure(
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::SANDBOX_NAME))
            == Some(&name),
        "pod sandbox label",
    )?;
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    ensure(
        owners.len() == 1
            && owners[0].controller == Some(true)
            && Some(&owners[0].uid) == s.metadata.uid.as_ref()
            && owners[0].kind == "Sandbox",
        "pod owner reference",
    )?;
    Ok(())
}
