//! Flags to [`Config`]: defaults, overrides, and errors naming the flag.

use super::*;
use clap::Parser;

/// The flags, with the init-container delivery (no files to read) unless they say otherwise.
fn cli(args: &[&str]) -> Cli {
    let delivery = if args.iter().any(|a| a.starts_with("--agent-")) {
        None
    } else {
        Some("--agent-delivery=init-container")
    };
    Cli::try_parse_from(
        std::iter::once("airlock-operator")
            .chain(delivery)
            .chain(args.iter().copied()),
    )
    .unwrap()
}

#[test]
fn config_map_delivery_loads_the_bundle_and_names_the_flags_when_it_cannot() {
    let dir = std::env::temp_dir().join(format!("airlock-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (boot, agent) = (dir.join("boot"), dir.join("agent"));
    std::fs::write(&boot, b"boot").unwrap();
    std::fs::write(&agent, vec![7u8; 100_000]).unwrap();
    let (b, a) = (boot.to_str().unwrap(), agent.to_str().unwrap());
    let c = cli(&["--agent-boot", b, "--agent-binary", a])
        .config()
        .unwrap();
    let Agent::ConfigMap(bundle) = &c.agent else {
        panic!("{:?}", c.agent)
    };
    assert_eq!(bundle.boot, b"boot");
    assert!(bundle.agent.len() < 1000);
    let e = cli(&["--agent-boot", b, "--agent-binary", "/nonexistent/agent"])
        .config()
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "--agent-boot/--agent-binary: reading the agent binary at /nonexistent/agent"
        ),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn defaults_match_the_documentation() {
    let c = Config::defaults();
    assert_eq!(c.default_runtime_class, "kata");
    assert_eq!(
        c.agent,
        Agent::InitContainer {
            image: "airlock.local/agent:0.1.0".into()
        }
    );
    let cli = Cli::parse_from(["airlock-operator"]);
    assert_eq!(cli.agent_delivery, AgentDelivery::ConfigMap);
    assert_eq!(cli.agent_boot, PathBuf::from("/usr/local/bin/airlock-boot"));
    assert_eq!(
        cli.agent_binary,
        PathBuf::from("/usr/local/bin/airlock-agent")
    );
    assert_eq!((c.default_ttl_seconds, c.max_ttl_seconds), (3600, 86400));
    assert_eq!(c.default_resources.cpu.quantity.0, "1");
    assert_eq!(c.default_resources.memory.quantity.0, "512Mi");
    assert_eq!(c.default_resources.ephemeral_storage.quantity.0, "1Gi");
    assert_eq!(c.max_resources.cpu.quantity.0, "4");
    assert_eq!(c.max_resources.memory.quantity.0, "8Gi");
    assert_eq!(c.max_resources.ephemeral_storage.quantity.0, "20Gi");
    let q = c.quota.unwrap();
    assert_eq!(
        (q.pods, q.cpu.0.as_str(), q.memory.0.as_str()),
        (50, "32", "64Gi")
    );
    assert!(c.manage_priority_class);
    assert_eq!(c.watch_namespace, None);
    assert_eq!(c.max_concurrent_reconciles, 32);
    assert!(Cli::try_parse_from(["airlock-operator", "--max-concurrent-reconciles=0"]).is_err());
    assert_eq!(c.cluster_cidrs, ["10.96.0.0/12", "10.244.0.0/16"]);
    assert_eq!(c.default_user, None);
}

#[test]
fn default_run_as_user_is_never_root() {
    let c = cli(&["--default-run-as-user=1000"]).config().unwrap();
    let u = c.default_user.unwrap();
    assert_eq!((u.run_as_user, u.group()), (1000, 1000));
    let u = cli(&["--default-run-as-user", "1000:0"])
        .config()
        .unwrap()
        .default_user;
    assert_eq!(u.map(|u| u.group()), Some(0));
    for bad in ["0", "0:0", "-1", "abc", "1000:x", "2147483648"] {
        let e = Cli::try_parse_from([
            "airlock-operator",
            "--agent-delivery=init-container",
            &format!("--default-run-as-user={bad}"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--default-run-as-user"), "{bad}: {e}");
    }
}

#[test]
fn flags_override_and_repeat() {
    let c = cli(&[
        "--default-runtime-class=gvisor",
        "--cluster-cidr=10.0.0.0/16",
        "--cluster-cidr",
        "fd00::/48,10.0.0.0/16",
        "--manage-quota=false",
        "--manage-priority-class",
        "false",
        "--watch-namespace=team-a",
    ])
    .config()
    .unwrap();
    assert_eq!(c.default_runtime_class, "gvisor");
    assert_eq!(c.cluster_cidrs, ["10.0.0.0/16", "fd00::/48"]);
    assert_eq!(c.quota, None);
    assert!(!c.manage_priority_class);
    assert_eq!(c.watch_namespace.as_deref(), Some("team-a"));
}

#[test]
fn bad_flags_are_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["--default-cpu=abc"], "--default-cpu"),
        (&["--max-memory=0"], "--max-memory"),
        (
            &["--default-memory=16Gi"],
            "--default-memory (16Gi) is larger than --max-memory",
        ),
        (&["--max-ttl=700000"], "--max-ttl"),
        (&["--default-ttl=90000"], "--default-ttl"),
        (&["--cluster-cidr=10.0.0.1/8"], "host bits"),
        (&["--cluster-cidr=banana"], "--cluster-cidr"),
        (&["--cluster-cidr=0.0.0.0/0"], "/0"),
        (
            &["--egress-deny-cidr=169.254.169.254/16"],
            "--egress-deny-cidr",
        ),
        (&["--dns-cidr=banana"], "--dns-cidr"),
        (&["--dns-pod-selector=kube-dns"], "--dns-pod-selector"),
        (&["--dns-namespace="], "--dns-namespace"),
        (
            &["--quota-ephemeral-storage=10Gi"],
            "--quota-ephemeral-storage (10Gi) cannot be applied: Kubernetes accepts only pods, cpu and memory in a PriorityClass-scoped ResourceQuota",
        ),
    ];
    for (args, want) in cases {
        let err = cli(args).config().unwrap_err().to_string();
        assert!(
            err.contains(want),
            "{args:?}: {err:?} should mention {want:?}"
        );
    }
}

#[test]
fn runtime_classes_deny_list_and_dns() {
    let c = Config::defaults();
    assert_eq!(c.allowed_runtime_classes, ["kata"]);
    let deny: Vec<String> = c.egress_deny.iter().map(Cidr::to_string).collect();
    assert_eq!(
        deny,
        [
            "169.254.169.254/32",
            "fd00:ec2::254/128",
            "169.254.0.0/16",
            "fe80::/10",
            "64:ff9b::/96",
            "64:ff9b:1::/48",
            "10.96.0.0/12",
            "10.244.0.0/16"
        ]
    );
    assert_eq!(c.dns.namespace, "kube-system");
    assert_eq!(
        c.dns.pod_selector,
        BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])
    );
    assert!(c.dns.cidrs.is_empty());

    let c = cli(&[
        "--default-runtime-class=gvisor",
        "--allowed-runtime-classes=runc, gvisor,,kata",
        "--egress-deny-cidr=192.0.2.0/24",
        "--cluster-cidr=10.0.0.0/16",
        "--dns-pod-selector=app=coredns,tier=dns",
    ])
    .config()
    .unwrap();
    assert_eq!(c.allowed_runtime_classes, ["gvisor", "runc", "kata"]);
    let deny: Vec<String> = c.egress_deny.iter().map(Cidr::to_string).collect();
    assert_eq!(
        deny,
        ["192.0.2.0/24", "10.0.0.0/16"],
        "cluster ranges always denied"
    );
    assert_eq!(c.dns.pod_selector.len(), 2);
    // An empty quota-ephemeral-storage (the chart's old default) is no error.
    assert!(cli(&["--quota-ephemeral-storage="]).config().is_ok());
}

#[test]
fn the_fence_probe_takes_ipv4_and_ipv6_with_or_without_brackets() {
    use super::parse_probe;
    assert_eq!(parse_probe("10.244.0.5:8080").unwrap().to_string(), "10.244.0.5:8080");
    assert_eq!(parse_probe("fd00::5:8080").unwrap().to_string(), "[fd00::5]:8080");
    assert_eq!(parse_probe("[fd00::5]:8080").unwrap().to_string(), "[fd00::5]:8080");
    assert!(parse_probe("operator:8080").is_err());
    assert!(parse_probe("10.244.0.5").is_err());
}
