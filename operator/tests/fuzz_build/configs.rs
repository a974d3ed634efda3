//! Operator configurations: random but valid, from flags as the operator parses them.

use super::*;

/// A random operator configuration accepted by `Cli::config` (or the defaults).
pub fn random_config(rng: &mut Rng) -> Config {
    let config = random_flags(rng);
    if rng.bool() {
        return config;
    }
    // The ConfigMap delivery (its files are not read here: a bundle of two small programs).
    let bundle = AgentBundle::new(b"boot".to_vec(), b"agent").expect("small bundle");
    Config {
        agent: Agent::ConfigMap(Arc::new(bundle)),
        ..config
    }
}

/// A random configuration from flags, with the init-container delivery.
pub(crate) fn random_flags(rng: &mut Rng) -> Config {
    let default = Cli::parse_from(["airlock-operator", "--agent-delivery=init-container"])
        .config()
        .expect("defaults are valid");
    if rng.bool() {
        return default;
    }
    for _ in 0..32 {
        let cidrs: Vec<String> = (0..rng.range(0, 4)).map(|_| cidr(rng)).collect();
        let flags = [
            ("default-runtime-class", dns_label(rng)),
            ("max-ttl", rng.range(-5, 700_000).to_string()),
            ("default-ttl", rng.range(-5, 700_000).to_string()),
            ("max-cpu", quantity_string(rng)),
            ("default-cpu", quantity_string(rng)),
            ("max-memory", quantity_string(rng)),
            ("default-memory", quantity_string(rng)),
            ("max-ephemeral-storage", quantity_string(rng)),
            ("default-ephemeral-storage", quantity_string(rng)),
            ("cluster-cidr", cidrs.join(",")),
        ];
        let mut args = vec![
            "airlock-operator".to_string(),
            "--agent-delivery=init-container".to_string(),
        ];
        for (name, value) in flags {
            if rng.bool() {
                args.push(format!("--{name}={value}"));
            }
        }
        // Cli::config must never panic, whatever the flags.
        let parsed = catch_unwind(|| Cli::try_parse_from(&args).map(|c| c.config()));
        match parsed {
            Err(_) => panic!("Cli::try_parse_from/config panicked on {args:?}"),
            Ok(Ok(Ok(config))) => {
                check_config(&config).unwrap_or_else(|e| panic!("config from {args:?}: {e}"));
                return config;
            }
            Ok(_) => {}
        }
    }
    default
}

/// What `Cli::config` promises about a configuration.
pub(crate) fn check_config(c: &Config) -> Result<(), String> {
    ensure(
        !c.default_runtime_class.trim().is_empty(),
        "empty default runtime class",
    )?;
    ensure(
        (1..=c.max_ttl_seconds).contains(&c.default_ttl_seconds)
            && c.max_ttl_seconds <= airlock_crds::MAX_TTL_SECONDS,
        "ttl bounds",
    )?;
    for (d, m) in [
        (&c.default_resources.cpu, &c.max_resources.cpu),
        (&c.default_resources.memory, &c.max_resources.memory),
        (
            &c.default_resources.ephemeral_storage,
            &c.max_resources.ephemeral_storage,
        ),
    ] {
        ensure(
            d.amount.is_positive() && d.amount <= m.amount,
            "default resources within max",
        )?;
        ensure(
            quantity::parse(&d.quantity.0) == Ok(d.amount),
            "default quantity/amount agree",
        )?;
        ensure(
            quantity::parse(&m.quantity.0) == Ok(m.amount),
            "max quantity/amount agree",
        )?;
    }
    for cidr in &c.cluster_cidrs {
        let (_, prefix) = parse_cidr(cidr).map_err(|e| format!("cluster cidr {cidr}: {e}"))?;
        ensure(prefix > 0, "cluster cidr /0")?;
    }
    Ok(())
}
