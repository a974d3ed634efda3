//! The operator's configuration: command-line flags, each also settable through an `AIRLOCK_*`
//! environment variable (see `airlock-operator --help`), checked once at startup into a [`Config`].
//!
//! Longer than the usual 600 lines because every flag is a documented field (its doc comment is
//! its `--help` text); they stay together with their checks. Tests: `config/tests.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::bundle::{AgentBundle, BundleError};
use crate::cidr::Cidr;
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

    /// File with the key (at least 32 bytes) every sandbox's agent token derives from
    /// (HMAC-SHA256 of the sandbox's UID; the exec gateway reads the same key). With it, each
    /// sandbox's agent also serves the gateway directly on --agent-port (the direct path): the
    /// token reaches the agent through a per-sandbox Secret, and the sandbox's NetworkPolicy
    /// admits that port only from pods labelled `airlock.dev/agent-client=true` in
    /// --agent-client-namespace. Unset: commands reach sandboxes through `pods/exec` only.
    #[arg(long, env = "AIRLOCK_AGENT_KEY_FILE", value_name = "PATH")]
    pub agent_key_file: Option<PathBuf>,

    /// TCP port of the agent in every sandbox pod (with --agent-key-file).
    #[arg(long, env = "AIRLOCK_AGENT_PORT", default_value_t = 7070,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub agent_port: u16,

    /// An address no sandbox's NetworkPolicy allows (this operator pod's metrics port, as
    /// `$(POD_IP):PORT`): each sandbox's agent starts nothing and serves nothing while a
    /// connection to it succeeds, so nothing runs before the network plugin has put the sandbox's
    /// policy in force (see the agent's fence.rs). Unset: no such wait.
    #[arg(long, env = "AIRLOCK_FENCE_PROBE", value_name = "IP:PORT", value_parser = parse_probe)]
    pub fence_probe: Option<std::net::SocketAddr>,

    /// Namespace of the pods that may reach the agent port (the gateway's and the operator's);
    /// default: $POD_NAMESPACE.
    #[arg(long, env = "AIRLOCK_AGENT_CLIENT_NAMESPACE", value_name = "NAMESPACE")]
    pub agent_client_namespace: Option<String>,

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

    /// Refused when set (kept only so an old command line gets this explanation rather than
    /// "unexpected argument"): Kubernetes accepts only pods, cpu and memory in a
    /// PriorityClass-scoped ResourceQuota, so sandboxes' ephemeral storage is bounded per sandbox
    /// (--max-ephemeral-storage) and per namespace by --quota-pods x --max-ephemeral-storage.
    #[arg(
        long,
        env = "AIRLOCK_QUOTA_EPHEMERAL_STORAGE",
        value_name = "QUANTITY",
        hide = true
    )]
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

    /// RuntimeClasses a Sandbox may name in spec.runtimeClassName besides --default-runtime-class
    /// (always allowed). Repeat the flag or separate with commas. A Sandbox naming any other
    /// class gets no pod: phase Failed, condition Ready=False reason RuntimeClassNotAllowed.
    #[arg(
        long = "allowed-runtime-classes",
        env = "AIRLOCK_ALLOWED_RUNTIME_CLASSES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub allowed_runtime_classes: Vec<String>,

    /// Ranges no sandbox may reach in any egress mode, on top of --cluster-cidr (always denied):
    /// `egress: Internet` excludes them, an `AllowList` entry inside one is refused and an entry
    /// containing one gets it as an exception. Repeat the flag or separate with commas; the
    /// default is the cloud metadata endpoints and the link-local ranges.
    #[arg(
        long = "egress-deny-cidr",
        env = "AIRLOCK_EGRESS_DENY_CIDRS",
        value_delimiter = ',',
        default_values_t = DEFAULT_EGRESS_DENY.iter().map(|s| s.to_string()),
        value_name = "CIDR"
    )]
    pub egress_deny_cidrs: Vec<String>,

    /// Namespace of the cluster DNS pods that sandboxes with spec.network.dns may query (UDP and
    /// TCP port 53, nothing else).
    #[arg(
        long,
        env = "AIRLOCK_DNS_NAMESPACE",
        default_value = "kube-system",
        value_name = "NAMESPACE"
    )]
    pub dns_namespace: String,

    /// Labels (KEY=VALUE[,KEY=VALUE...]) of the cluster DNS pods in --dns-namespace.
    #[arg(
        long,
        env = "AIRLOCK_DNS_POD_SELECTOR",
        default_value = "k8s-app=kube-dns",
        value_name = "SELECTOR"
    )]
    pub dns_pod_selector: String,

    /// Further DNS server ranges sandboxes with spec.network.dns may query on port 53, for DNS
    /// servers that are not pods matched by --dns-pod-selector (e.g. NodeLocal DNSCache at
    /// 169.254.20.10/32). Repeat the flag or separate with commas; default none.
    #[arg(
        long = "dns-cidr",
        env = "AIRLOCK_DNS_CIDRS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub dns_cidrs: Vec<String>,

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
    #[error("--agent-key-file: {0}")]
    AgentKey(#[from] airlock_crds::agent_token::KeyError),
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
    #[error("--{flag} {cidr:?}: {reason}")]
    Cidr {
        flag: &'static str,
        cidr: String,
        reason: String,
    },
    #[error(
        "--quota-ephemeral-storage ({value}) cannot be applied: Kubernetes accepts only pods, cpu and memory in a PriorityClass-scoped ResourceQuota; bound storage with --max-ephemeral-storage (per sandbox) and --quota-pods (per namespace)"
    )]
    QuotaEphemeralStorage { value: String },
    #[error("--dns-pod-selector {selector:?}: expected KEY=VALUE[,KEY=VALUE...]")]
    DnsPodSelector { selector: String },
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

/// Default of `--egress-deny-cidr`: the cloud metadata endpoints (AWS, GCP, Azure and others at
/// 169.254.169.254; AWS's IPv6 one), the link-local ranges they live in, and the NAT64 ranges
/// (`64:ff9b::/96`, `64:ff9b:1::/48`) through which an `AllowList` entry would otherwise reach
/// a denied IPv4 address. (IPv4-mapped `::ffff:0:0/96` is not a range on the wire: the kernel
/// sends such traffic as IPv4, under the IPv4 rules; the API server even reads it as IPv4, so it
/// cannot be an exception of `::/0`. `AllowList` entries in it are refused instead.)
pub const DEFAULT_EGRESS_DENY: &[&str] = &[
    "169.254.169.254/32",
    "fd00:ec2::254/128",
    "169.254.0.0/16",
    "fe80::/10",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
];

/// Where sandboxes with `spec.network.dns` may send DNS queries.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// Namespace of the DNS pods.
    pub namespace: String,
    /// Labels of the DNS pods.
    pub pod_selector: BTreeMap<String, String>,
    /// Further DNS server ranges.
    pub cidrs: Vec<Cidr>,
}

/// The direct path to the agents (`--agent-key-file`).
#[derive(Clone, PartialEq)]
pub struct DirectAgent {
    /// The key the per-sandbox tokens derive from.
    pub key: Arc<Vec<u8>>,
    pub port: u16,
    /// Namespace of the pods the NetworkPolicies admit to the agent port.
    pub client_namespace: String,
}

impl std::fmt::Debug for DirectAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectAgent")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("port", &self.port)
            .field("client_namespace", &self.client_namespace)
            .finish()
    }
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
    /// RuntimeClasses a Sandbox may name; the default class first.
    pub allowed_runtime_classes: Vec<String>,
    /// Ranges no sandbox reaches in any egress mode: `--egress-deny-cidr` and `--cluster-cidr`.
    pub egress_deny: Vec<Cidr>,
    /// The cluster DNS a sandbox with `spec.network.dns` may query.
    pub dns: DnsConfig,
    /// `None`: no agent port, commands go through `pods/exec`.
    pub direct: Option<DirectAgent>,
    /// `--fence-probe`.
    pub fence_probe: Option<std::net::SocketAddr>,
}

/// Parses `IP:PORT`, the IP of an IPv6 address with or without brackets (`$(POD_IP):PORT` in a
/// pod spec gives `fd00::5:8080`).
pub fn parse_probe(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let bad = || format!("{s:?}: want IP:PORT");
    let (ip, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    Ok(std::net::SocketAddr::new(ip, port.parse().map_err(|_| bad())?))
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
        if let Some(value) = self
            .quota_ephemeral_storage
            .as_deref()
            .filter(|v| !v.trim().is_empty())
        {
            return Err(ConfigError::QuotaEphemeralStorage {
                value: value.to_string(),
            });
        }
        let cluster = cidrs("cluster-cidr", &self.cluster_cidrs, false)?;
        let cluster_cidrs: Vec<String> = cluster.iter().map(Cidr::to_string).collect();
        let mut egress_deny = cidrs("egress-deny-cidr", &self.egress_deny_cidrs, false)?;
        for c in cluster {
            if !egress_deny.contains(&c) {
                egress_deny.push(c);
            }
        }
        let dns = DnsConfig {
            namespace: self.dns_namespace.trim().to_string(),
            pod_selector: label_selector(&self.dns_pod_selector)?,
            cidrs: cidrs("dns-cidr", &self.dns_cidrs, true)?,
        };
        if dns.namespace.is_empty() {
            return Err(ConfigError::Empty {
                flag: "dns-namespace",
            });
        }
        let direct = match &self.agent_key_file {
            None => None,
            Some(path) => {
                let key = airlock_crds::agent_token::read_key(path)?;
                let client_namespace = self
                    .agent_client_namespace
                    .clone()
                    .or_else(|| self.leader_election_namespace.clone())
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .ok_or(ConfigError::Empty {
                        flag: "agent-client-namespace",
                    })?;
                Some(DirectAgent {
                    key: Arc::new(key),
                    port: self.agent_port,
                    client_namespace,
                })
            }
        };
        let mut allowed_runtime_classes = vec![self.default_runtime_class.trim().to_string()];
        for rc in &self.allowed_runtime_classes {
            let rc = rc.trim();
            if !rc.is_empty() && !allowed_runtime_classes.iter().any(|x| x == rc) {
                allowed_runtime_classes.push(rc.to_string());
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
            allowed_runtime_classes,
            egress_deny,
            dns,
            direct,
            fence_probe: self.fence_probe,
        })
    }
}

/// The ranges of a CIDR-list flag, without blanks and duplicates; `/0` only if `allow_all`.
fn cidrs(flag: &'static str, values: &[String], allow_all: bool) -> Result<Vec<Cidr>, ConfigError> {
    let mut out: Vec<Cidr> = Vec::new();
    for v in values {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let c = Cidr::parse(v).map_err(|reason| ConfigError::Cidr {
            flag,
            cidr: v.to_string(),
            reason,
        })?;
        if c.prefix == 0 && !allow_all {
            return Err(ConfigError::Cidr {
                flag,
                cidr: v.to_string(),
                reason: "a /0 range would block everything".into(),
            });
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

/// `KEY=VALUE[,KEY=VALUE...]`, at least one pair.
fn label_selector(s: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let bad = || ConfigError::DnsPodSelector {
        selector: s.to_string(),
    };
    let mut labels = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(bad)?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.contains('=') {
            return Err(bad());
        }
        labels.insert(k.to_string(), v.to_string());
    }
    if labels.is_empty() {
        return Err(bad());
    }
    Ok(labels)
}

pub use crate::cidr::parse_cidr;

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

    /// The configuration from these flags (on top of the init-container delivery).
    pub fn from_flags(flags: &[&str]) -> Config {
        use clap::Parser;
        Cli::parse_from(
            ["airlock-operator", "--agent-delivery=init-container"]
                .iter()
                .chain(flags),
        )
        .config()
        .expect("valid flags")
    }

    /// The defaults with the direct path on: a fixed test key, port 7070, agent clients in
    /// `airlock-system`.
    pub fn with_direct() -> Config {
        Config {
            direct: Some(DirectAgent {
                key: Arc::new(vec![7; 32]),
                port: 7070,
                client_namespace: "airlock-system".into(),
            }),
            ..Config::defaults()
        }
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
mod tests;
