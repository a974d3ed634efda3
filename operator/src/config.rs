//! The operator's configuration: command-line flags, each also settable through an `AIRLOCK_*`
//! environment variable (see `airlock-operator --help`), checked once at startup into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::bundle::{AgentBundle, BundleError};
use crate::quantity::{self, Amount};

/// How the agent gets into a sandbox (`--agent-delivery`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentDelivery {
    /// A per-namespace ConfigMap with airlock-boot and the compressed agent.
    ConfigMap,
    /// An init container copying the agent from its image.
    InitContainer,
}

/// The agent's delivery, checked and (for a ConfigMap) loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum Agent {
    ConfigMap(Arc<AgentBundle>),
    InitContainer { image: String },
}

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with every tracing field as a JSON field.
    Json,
}

/// Airlock operator: turns Sandbox objects (airlock.dev/v1alpha1) into hardened pods on a
/// VM-isolating RuntimeClass, each fenced by its own NetworkPolicy, and reaps them when their
/// time-to-live or idle timeout runs out.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "airlock-operator", version, about, long_about = None)]
pub struct Cli {
    /// RuntimeClass for sandboxes that do not name one.
    #[arg(long, env = "AIRLOCK_DEFAULT_RUNTIME_CLASS", default_value = "kata")]
    pub default_runtime_class: String,

    /// How the Airlock agent gets into every sandbox: `config-map` (default) mounts a per-namespace
    /// ConfigMap holding airlock-boot and the compressed agent (read from --agent-boot and
    /// --agent-binary at startup); `init-container` copies it from --agent-image in an init
    /// container, which costs about one more second before the sandbox is Ready.
    #[arg(
        long,
        env = "AIRLOCK_AGENT_DELIVERY",
        value_enum,
        default_value = "config-map"
    )]
    pub agent_delivery: AgentDelivery,

    /// The airlock-boot binary put in the agent ConfigMap (`--agent-delivery=config-map`).
    #[arg(
        long,
        env = "AIRLOCK_AGENT_BOOT",
        default_value = "/usr/local/bin/airlock-boot",
        value_name = "PATH"
    )]
    pub agent_boot: PathBuf,

    /// The static agent binary put, compressed, in the agent ConfigMap
    /// (`--agent-delivery=config-map`).
    #[arg(
        long,
        env = "AIRLOCK_AGENT_BINARY",
        default_value = "/usr/local/bin/airlock-agent",
        value_name = "PATH"
    )]
    pub agent_binary: PathBuf,

    /// Image holding the Airlock agent (`/airlock-agent`), copied into every sandbox by an init
    /// container (`--agent-delivery=init-container`).
    #[arg(
        long,
        env = "AIRLOCK_AGENT_IMAGE",
        default_value = "airlock.local/agent:0.1.0"
    )]
    pub agent_image: String,

    /// Non-root user (`UID` or `UID:GID`, the gid defaulting to the uid) of sandboxes that do not
    /// set spec.securityContext: their pods then run with runAsNonRoot, as Pod Security
    /// `restricted` requires. Unset: such sandboxes run as their image's user.
    #[arg(long, env = "AIRLOCK_DEFAULT_RUN_AS_USER", value_name = "UID[:GID]", value_parser = parse_user)]
    pub default_run_as_user: Option<airlock_crds::SandboxSecurityContext>,

    /// Time-to-live in seconds of sandboxes that do not set spec.lifetime.ttlSeconds.
    #[arg(
        long,
        env = "AIRLOCK_DEFAULT_TTL",
        default_value_t = 3600,
        value_name = "SECONDS"
    )]
    pub default_ttl: i64,

    /// Longest time-to-live in seconds a sandbox may ask for (the CRD allows up to 604800).
    #[arg(
        long,
        env = "AIRLOCK_MAX_TTL",
        default_value_t = 86400,
        value_name = "SECONDS"
    )]
    pub max_ttl: i64,

    /// CPU of sandboxes that do not set spec.resources.cpu.
    #[arg(
        long,
        env = "AIRLOCK_DEFAULT_CPU",
        default_value = "1",
        value_name = "QUANTITY"
    )]
    pub default_cpu: String,

    /// Memory of sandboxes that do not set spec.resources.memory.
    #[arg(
        long,
        env = "AIRLOCK_DEFAULT_MEMORY",
        default_value = "512Mi",
        value_name = "QUANTITY"
    )]
    pub default_memory: String,

    /// Ephemeral storage of sandboxes that do not set spec.resources.ephemeralStorage.
    #[arg(
        long,
        env = "AIRLOCK_DEFAULT_EPHEMERAL_STORAGE",
        default_value = "1Gi",
        value_name = "QUANTITY"
    )]
    pub default_ephemeral_storage: String,

    /// Most CPU one sandbox may ask for.
    #[arg(
        long,
        env = "AIRLOCK_MAX_CPU",
        default_value = "4",
        value_name = "QUANTITY"
    )]
    pub max_cpu: String,

    /// Most memory one sandbox may ask for.
    #[arg(
        long,
        env = "AIRLOCK_MAX_MEMORY",
        default_value = "8Gi",
        value_name = "QUANTITY"
    )]
    pub max_memory: String,

    /// Most ephemeral storage one sandbox may ask for.
    #[arg(
        long,
        env = "AIRLOCK_MAX_EPHEMERAL_STORAGE",
        default_value = "20Gi",
        value_name = "QUANTITY"
    )]
    pub max_ephemeral_storage: String,

    /// Manage the ResourceQuota `airlock-sandboxes` in every namespace that holds sandboxes.
    /// Fields of that quota that someone else has taken over with server-side apply are left as
    /// they are (set `--manage-quota=false` to manage quotas entirely by hand).
    #[arg(long, env = "AIRLOCK_MANAGE_QUOTA", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub manage_quota: bool,

    /// Quota: most sandbox pods per namespace.
    #[arg(
        long,
        env = "AIRLOCK_QUOTA_PODS",
        default_value_t = 50,
        value_name = "COUNT"
    )]
    pub quota_pods: u32,

    /// Quota: total CPU (requests and limits) of the sandboxes of one namespace.
    #[arg(
        long,
        env = "AIRLOCK_QUOTA_CPU",
        default_value = "32",
        value_name = "QUANTITY"
    )]
    pub quota_cpu: String,

    /// Quota: total memory (requests and limits) of the sandboxes of one namespace.
    #[arg(
        long,
        env = "AIRLOCK_QUOTA_MEMORY",
        default_value = "64Gi",
        value_name = "QUANTITY"
    )]
    pub quota_memory: String,

    /// Not applied, accepted so existing command lines keep working: Kubernetes refuses
    /// ephemeral storage in a PriorityClass-scoped ResourceQuota ("unsupported scope applied to
    /// resource"), so sandboxes' storage is bounded per sandbox (--max-ephemeral-storage) and
    /// per namespace only through --quota-pods.
    #[arg(long, env = "AIRLOCK_QUOTA_EPHEMERAL_STORAGE", value_name = "QUANTITY")]
    pub quota_ephemeral_storage: Option<String>,

    /// Create the PriorityClass `airlock-sandbox` (value 0, preemptionPolicy Never) at startup.
    #[arg(long, env = "AIRLOCK_MANAGE_PRIORITY_CLASS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub manage_priority_class: bool,

    /// Only handle Sandboxes in this namespace (default: all namespaces).
    #[arg(long, env = "AIRLOCK_WATCH_NAMESPACE", value_name = "NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Most Sandboxes reconciled at once. Each reconcile in flight holds its own connection to
    /// the API server (HTTP/1.1), so this bounds the operator's connections and memory in a burst.
    #[arg(
        long,
        env = "AIRLOCK_MAX_CONCURRENT_RECONCILES",
        default_value_t = 32,
        value_parser = clap::value_parser!(u16).range(1..),
        value_name = "COUNT"
    )]
    pub max_concurrent_reconciles: u16,

    /// Cluster network ranges (pod and service CIDRs) that `egress: Internet` must not reach, on
    /// top of the private, link-local, CGNAT and loopback ranges. Repeat the flag or separate
    /// with commas.
    #[arg(
        long = "cluster-cidr",
        env = "AIRLOCK_CLUSTER_CIDRS",
        value_delimiter = ',',
        default_values_t = [String::from("10.96.0.0/12"), String::from("10.244.0.0/16")],
        value_name = "CIDR"
    )]
    pub cluster_cidrs: Vec<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "AIRLOCK_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Log format.
    #[arg(long, env = "AIRLOCK_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax); `RUST_LOG` takes precedence when set.
    #[arg(long, env = "AIRLOCK_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Elect a leader through a Lease so only one replica reconciles at a time.
    #[arg(long, env = "AIRLOCK_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_election: bool,

    /// Namespace of the leader-election Lease `airlock-operator` (default: $POD_NAMESPACE, else
    /// the namespace of the kubeconfig context).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Identity of this replica in the Lease and in Events (default: $POD_NAME, else the host
    /// name and process id).
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub identity: Option<String>,
}

/// Why the configuration is unusable. Every message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: {source}")]
    Quantity {
        flag: &'static str,
        source: quantity::QuantityError,
    },
    #[error("--{flag} must be positive, got {value:?}")]
    NotPositive { flag: &'static str, value: String },
    #[error("--{flag} ({default}) is larger than --{max_flag} ({max})")]
    DefaultOverMax {
        flag: &'static str,
        default: String,
        max_flag: &'static str,
        max: String,
    },
    #[error("--max-ttl ({max}) is outside 1..=604800 seconds (the CRD's limit)")]
    MaxTtl { max: i64 },
    #[error("--default-ttl ({default}) must be between 1 and --max-ttl ({max})")]
    DefaultTtl { default: i64, max: i64 },
    #[error("--cluster-cidr {cidr:?}: {reason}")]
    Cidr { cidr: String, reason: String },
    #[error("--{flag} must not be empty")]
    Empty { flag: &'static str },
    #[error("--agent-boot/--agent-binary: {0}")]
    Bundle(#[from] BundleError),
}

/// A resource amount as written (for the pod) and as a number (for comparisons).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub quantity: Quantity,
    pub amount: Amount,
}

impl Resource {
    fn parse(flag: &'static str, value: &str) -> Result<Resource, ConfigError> {
        let amount =
            quantity::parse(value).map_err(|source| ConfigError::Quantity { flag, source })?;
        if !amount.is_positive() {
            return Err(ConfigError::NotPositive {
                flag,
                value: value.to_string(),
            });
        }
        Ok(Resource {
            quantity: Quantity(value.trim().to_string()),
            amount,
        })
    }
}

/// CPU, memory and ephemeral storage.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub cpu: Resource,
    pub memory: Resource,
    pub ephemeral_storage: Resource,
}

/// Hard limits of the per-namespace ResourceQuota.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaConfig {
    pub pods: u32,
    pub cpu: Quantity,
    pub memory: Quantity,
}

/// Checked configuration the reconciler and the builders work from.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub default_runtime_class: String,
    pub agent: Agent,
    pub default_ttl_seconds: i64,
    pub max_ttl_seconds: i64,
    pub default_resources: Resources,
    pub max_resources: Resources,
    /// `None` when `--manage-quota=false`.
    pub quota: Option<QuotaConfig>,
    pub manage_priority_class: bool,
    pub watch_namespace: Option<String>,
    pub max_concurrent_reconciles: u16,
    /// IPv4 and IPv6 cluster ranges kept out of `egress: Internet`.
    pub cluster_cidrs: Vec<String>,
    /// `--default-run-as-user`.
    pub default_user: Option<airlock_crds::SandboxSecurityContext>,
}

/// Parses `UID[:GID]`: a uid of 1..=2147483647 (never root) and a gid of 0..=2147483647.
pub fn parse_user(s: &str) -> Result<airlock_crds::SandboxSecurityContext, String> {
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let id = |what: &str, v: &str, min: i64| -> Result<i64, String> {
        v.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=airlock_crds::MAX_ID).contains(n))
            .ok_or_else(|| {
                format!(
                    "{what} {v:?} must be a number from {min} to {}",
                    airlock_crds::MAX_ID
                )
            })
    };
    Ok(airlock_crds::SandboxSecurityContext {
        run_as_user: id("uid", uid, 1)?,
        run_as_group: gid.map(|g| id("gid", g, 0)).transpose()?,
    })
}

impl Cli {
    /// Checks the flags and turns them into a [`Config`]; with `--agent-delivery=config-map` this
    /// reads the agent bundle's two files.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let default_resources = Resources {
            cpu: Resource::parse("default-cpu", &self.default_cpu)?,
            memory: Resource::parse("default-memory", &self.default_memory)?,
            ephemeral_storage: Resource::parse(
                "default-ephemeral-storage",
                &self.default_ephemeral_storage,
            )?,
        };
        let max_resources = Resources {
            cpu: Resource::parse("max-cpu", &self.max_cpu)?,
            memory: Resource::parse("max-memory", &self.max_memory)?,
            ephemeral_storage: Resource::parse(
                "max-ephemeral-storage",
                &self.max_ephemeral_storage,
            )?,
        };
        for (flag, max_flag, d, m) in [
            (
                "default-cpu",
                "max-cpu",
                &default_resources.cpu,
                &max_resources.cpu,
            ),
            (
                "default-memory",
                "max-memory",
                &default_resources.memory,
                &max_resources.memory,
            ),
            (
                "default-ephemeral-storage",
                "max-ephemeral-storage",
                &default_resources.ephemeral_storage,
                &max_resources.ephemeral_storage,
            ),
        ] {
            if d.amount > m.amount {
                return Err(ConfigError::DefaultOverMax {
                    flag,
                    default: d.quantity.0.clone(),
                    max_flag,
                    max: m.quantity.0.clone(),
                });
            }
        }
        if !(1..=airlock_crds::MAX_TTL_SECONDS).contains(&self.max_ttl) {
            return Err(ConfigError::MaxTtl { max: self.max_ttl });
        }
        if !(1..=self.max_ttl).contains(&self.default_ttl) {
            return Err(ConfigError::DefaultTtl {
                default: self.default_ttl,
                max: self.max_ttl,
            });
        }
        let quota = if self.manage_quota {
            Some(QuotaConfig {
                pods: self.quota_pods,
                cpu: Resource::parse("quota-cpu", &self.quota_cpu)?.quantity,
                memory: Resource::parse("quota-memory", &self.quota_memory)?.quantity,
            })
        } else {
            None
        };
        let mut cluster_cidrs: Vec<String> = Vec::new();
        for c in &self.cluster_cidrs {
            let c = c.trim();
            if c.is_empty() {
                continue;
            }
            let (_, prefix) = parse_cidr(c).map_err(|reason| ConfigError::Cidr {
                cidr: c.to_string(),
                reason,
            })?;
            if prefix == 0 {
                return Err(ConfigError::Cidr {
                    cidr: c.to_string(),
                    reason: "a /0 range would block everything".into(),
                });
            }
            if !cluster_cidrs.iter().any(|x| x == c) {
                cluster_cidrs.push(c.to_string());
            }
        }
        for (flag, v) in [
            ("default-runtime-class", &self.default_runtime_class),
            ("agent-image", &self.agent_image),
        ] {
            if v.trim().is_empty() {
                return Err(ConfigError::Empty { flag });
            }
        }
        let agent = match self.agent_delivery {
            AgentDelivery::InitContainer => Agent::InitContainer {
                image: self.agent_image.clone(),
            },
            AgentDelivery::ConfigMap => Agent::ConfigMap(Arc::new(AgentBundle::load(
                &self.agent_boot,
                &self.agent_binary,
            )?)),
        };
        Ok(Config {
            default_runtime_class: self.default_runtime_class.clone(),
            agent,
            default_ttl_seconds: self.default_ttl,
            max_ttl_seconds: self.max_ttl,
            default_resources,
            max_resources,
            quota,
            manage_priority_class: self.manage_priority_class,
            watch_namespace: self.watch_namespace.clone().filter(|n| !n.is_empty()),
            max_concurrent_reconciles: self.max_concurrent_reconciles,
            cluster_cidrs,
            default_user: self.default_run_as_user,
        })
    }
}

/// Parses `ADDRESS/PREFIX`; the address must be the network address (no host bits set), as the
/// API server requires for NetworkPolicy ipBlocks.
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    use std::net::IpAddr;
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| "expected ADDRESS/PREFIX".to_string())?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
    let (bits, host_bits_set) = match addr {
        IpAddr::V4(a) => (32, prefix < 32 && (u32::from(a) << prefix) != 0),
        IpAddr::V6(a) => (128, prefix < 128 && (u128::from(a) << prefix) != 0),
    };
    if prefix > bits {
        return Err(format!("prefix /{prefix} is longer than {bits} bits"));
    }
    if host_bits_set {
        return Err("host bits are set; use the network address".into());
    }
    Ok((addr, prefix))
}

#[cfg(test)]
impl Config {
    /// The configuration with every flag at its default, for tests, except that the agent comes
    /// from an init container (a ConfigMap bundle would read files): see [`Config::with_bundle`].
    pub fn defaults() -> Config {
        use clap::Parser;
        Cli::parse_from(["airlock-operator", "--agent-delivery=init-container"])
            .config()
            .expect("default flags are valid")
    }

    /// The defaults with the agent in a ConfigMap bundle of two small fake programs.
    pub fn with_bundle() -> Config {
        let bundle = AgentBundle::new(b"boot".to_vec(), b"agent").expect("small bundle");
        Config {
            agent: Agent::ConfigMap(Arc::new(bundle)),
            ..Config::defaults()
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert!(
            Cli::try_parse_from(["airlock-operator", "--max-concurrent-reconciles=0"]).is_err()
        );
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
    fn cidrs() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("10.1.2.3/32").is_ok());
        assert!(parse_cidr("fc00::/7").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0.0").is_err());
        assert!(parse_cidr("fe80::1/10").is_err());
    }
}
