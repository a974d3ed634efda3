//! `airlock`: command-line client of the Airlock exec gateway.
//!
//! The commands and their dispatch here; streaming exec in `exec.rs`, printing in `output.rs`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use airlock_api::client::{AirlockClient, ClientTls};
use airlock_api::proto::v1 as pb;
use airlock_api::tonic;
use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};

mod exec;
mod output;
mod procs;

use exec::exec_command;
use output::{phase, print_sandbox, ts};

/// Run commands in disposable, isolated Airlock sandboxes.
#[derive(Debug, Parser)]
#[command(version, name = "airlock")]
struct Cli {
    /// Address of the exec gateway: http://host:port (plaintext) or https://host:port (TLS).
    #[arg(
        long,
        env = "AIRLOCK_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    addr: String,
    /// PEM CA certificate to trust for an https:// address (default: the system's roots).
    #[arg(long, env = "AIRLOCK_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Name the gateway's certificate must carry, when it differs from the address's host
    /// (e.g. through `kubectl port-forward`: airlock-exec-gateway.airlock.svc).
    #[arg(long, env = "AIRLOCK_TLS_SERVER_NAME", global = true)]
    tls_server_name: Option<String>,
    /// Bearer token (a Kubernetes token minted for the gateway's audience, e.g.
    /// `kubectl create token SA --audience airlock`, or a static token of the gateway).
    #[arg(long, env = "AIRLOCK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Namespace (empty: the gateway's default).
    #[arg(
        short,
        long,
        env = "AIRLOCK_NAMESPACE",
        default_value = "",
        global = true
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct SandboxOpts {
    /// Container image (or --template).
    #[arg(long, required_unless_present = "template", conflicts_with = "template")]
    image: Option<String>,
    /// SandboxTemplate to make the sandbox from (claims a warm pod of its SandboxPool when one is
    /// Ready); the template sets image, resources, runtime class and user.
    #[arg(long, conflicts_with_all = ["cpu", "memory", "runtime_class", "agent_in_image", "user"])]
    template: Option<String>,
    /// Time-to-live in seconds (0: the operator's default).
    #[arg(long, default_value_t = 0)]
    ttl: i64,
    /// Idle timeout in seconds (0: none).
    #[arg(long, default_value_t = 0)]
    idle_timeout: i64,
    /// CPU, for example 500m.
    #[arg(long, default_value = "")]
    cpu: String,
    /// Memory, for example 512Mi.
    #[arg(long, default_value = "")]
    memory: String,
    /// RuntimeClass (empty: the operator's default).
    #[arg(long, default_value = "")]
    runtime_class: String,
    /// Egress: none, internet.
    #[arg(long, default_value = "none")]
    egress: String,
    /// Sandbox environment variable K=V (repeatable).
    #[arg(long = "sandbox-env", value_parser = parse_kv)]
    sandbox_env: Vec<(String, String)>,
    /// Label K=V (repeatable).
    #[arg(long = "label", value_parser = parse_kv)]
    labels: Vec<(String, String)>,
    /// How long to wait for the sandbox to become ready, in seconds.
    #[arg(long, default_value_t = 300)]
    ready_timeout: u64,
    /// The image already holds the Airlock agent at /.airlock/airlock-agent (starts sooner).
    #[arg(long)]
    agent_in_image: bool,
    /// Run the sandbox as this non-root user, UID or UID:GID (runAsNonRoot; needed in namespaces
    /// enforcing Pod Security `restricted` unless the operator has a default user).
    #[arg(long, value_name = "UID[:GID]", value_parser = parse_user)]
    user: Option<(i64, Option<i64>)>,
}

#[derive(Debug, Args)]
struct ExecOpts {
    /// Kill the command after this many seconds (0: no timeout).
    #[arg(long, default_value_t = 0.0)]
    timeout: f64,
    /// Environment variable K=V for the command (repeatable).
    #[arg(short, long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Working directory.
    #[arg(long, default_value = "")]
    cwd: String,
    /// Forward this terminal's stdin to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Command and arguments (after `--`). A single argument containing spaces is run with /bin/sh -c.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a sandbox, run one command in it, delete it; exits with the command's code.
    Run {
        #[command(flatten)]
        sandbox: SandboxOpts,
        /// Keep the sandbox afterwards (prints its name on stderr).
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        exec: ExecOpts,
    },
    /// Run a command in an existing sandbox; exits with the command's code.
    Exec {
        /// Sandbox name.
        sandbox: String,
        #[command(flatten)]
        exec: ExecOpts,
    },
    /// Copy a file: `airlock cp LOCAL SANDBOX:/path` or `airlock cp SANDBOX:/path LOCAL` (`-` is stdin/stdout).
    Cp {
        src: String,
        dst: String,
        /// Mode of an uploaded file (octal).
        #[arg(long, default_value = "644")]
        mode: String,
        /// Create missing parent directories of an uploaded file.
        #[arg(short, long)]
        parents: bool,
    },
    /// List a directory: `airlock ls SANDBOX:/path`.
    Ls { target: String },
    /// Create a sandbox and print its name.
    Create {
        /// Name (default: generated).
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        sandbox: SandboxOpts,
        /// Return at once instead of waiting until the sandbox is ready.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a sandbox.
    Get { sandbox: String },
    /// List sandboxes.
    List {
        /// Label selector, for example team=ml.
        #[arg(short = 'l', long, default_value = "")]
        selector: String,
    },
    /// Delete sandboxes.
    Delete {
        #[arg(required = true)]
        sandboxes: Vec<String>,
    },
    /// Extend a sandbox's time-to-live by SECONDS.
    Extend { sandbox: String, seconds: i64 },
    /// Start a command in the background (it outlives this call); prints its pid.
    Start {
        /// Sandbox name.
        sandbox: String,
        /// Name for the process, unique in the sandbox (use it instead of the pid).
        #[arg(long, default_value = "")]
        tag: String,
        #[command(flatten)]
        exec: ExecOpts,
    },
    /// List a sandbox's background processes.
    Ps { sandbox: String },
    /// Print a background process's output (PROCESS: pid or tag).
    Logs {
        sandbox: String,
        process: String,
        /// Keep printing until it exits, then exit with its code.
        #[arg(short, long)]
        follow: bool,
    },
    /// Kill a background process and everything it started (PROCESS: pid or tag).
    Kill {
        sandbox: String,
        process: String,
        /// Send this signal to its process group instead (for example 15).
        #[arg(short, long)]
        signal: Option<i32>,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected K=V, got {s:?}"))
}

/// `UID[:GID]` -> (uid, gid); the gateway checks the ranges.
fn parse_user(s: &str) -> Result<(i64, Option<i64>), String> {
    let num = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| format!("expected UID or UID:GID (numbers), got {s:?}"))
    };
    match s.split_once(':') {
        Some((u, g)) => Ok((num(u)?, Some(num(g)?))),
        None => Ok((num(s)?, None)),
    }
}

/// `SANDBOX:/path` -> (sandbox, path).
fn remote(s: &str) -> Option<(String, String)> {
    let (sb, path) = s.split_once(':')?;
    if sb.is_empty() || sb.contains('/') || !path.starts_with('/') {
        return None;
    }
    Some((sb.to_string(), path.to_string()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airlock: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub(crate) fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", s.code(), s.message())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut tls = ClientTls {
        server_name: cli.tls_server_name.clone(),
        ..Default::default()
    };
    if let Some(ca) = &cli.ca_cert {
        tls = tls.with_ca_file(ca)?;
    }
    let client = AirlockClient::connect_with(&cli.addr, cli.token.clone(), tls).await?;
    let ns = cli.namespace.clone();
    match cli.command {
        Command::Run {
            sandbox,
            keep,
            exec,
        } => {
            let req = create_request(&ns, "", &sandbox);
            let sb = client
                .create_sandbox_ready(req, Duration::from_secs(sandbox.ready_timeout))
                .await
                .map_err(status_err)
                .context("creating the sandbox")?;
            if keep {
                eprintln!("airlock: sandbox {}/{}", sb.namespace, sb.name);
            }
            let result = exec_command(&client, &sb.namespace, &sb.name, &exec).await;
            if !keep && let Err(e) = client.delete_sandbox(&sb.namespace, &sb.name).await {
                eprintln!("airlock: deleting sandbox {}: {}", sb.name, e.message());
            }
            result
        }
        Command::Exec { sandbox, exec } => exec_command(&client, &ns, &sandbox, &exec).await,
        Command::Start { sandbox, tag, exec } => procs::start(&client, &ns, &sandbox, &tag, &exec).await,
        Command::Ps { sandbox } => procs::ps(&client, &ns, &sandbox).await,
        Command::Logs { sandbox, process, follow } => procs::logs(&client, &ns, &sandbox, &process, follow).await,
        Command::Kill { sandbox, process, signal } => procs::kill(&client, &ns, &sandbox, &process, signal).await,
        Command::Cp {
            src,
            dst,
            mode,
            parents,
        } => {
            let mode = u32::from_str_radix(&mode, 8)
                .map_err(|_| anyhow!("--mode must be octal, got {mode:?}"))?;
            match (remote(&src), remote(&dst)) {
                (None, Some((sb, path))) => {
                    let size = if src == "-" {
                        client
                            .upload(&ns, &sb, &path, mode, parents, tokio::io::stdin())
                            .await
                    } else {
                        let f = tokio::fs::File::open(&src)
                            .await
                            .with_context(|| format!("opening {src}"))?;
                        client.upload(&ns, &sb, &path, mode, parents, f).await
                    }
                    .map_err(status_err)?;
                    eprintln!("{size} bytes");
                }
                (Some((sb, path)), None) => {
                    let n = if dst == "-" {
                        let mut out = tokio::io::stdout();
                        client
                            .download_to(&ns, &sb, &path, &mut out)
                            .await
                            .map_err(status_err)?
                    } else {
                        // Write next to the destination, rename when complete.
                        let dst = PathBuf::from(&dst);
                        let tmp = dst.with_extension("airlock-part");
                        let mut f = tokio::fs::File::create(&tmp)
                            .await
                            .with_context(|| format!("creating {}", tmp.display()))?;
                        let r = client.download_to(&ns, &sb, &path, &mut f).await;
                        match r {
                            Ok(n) => {
                                f.sync_all().await.ok();
                                tokio::fs::rename(&tmp, &dst)
                                    .await
                                    .with_context(|| format!("renaming to {}", dst.display()))?;
                                n
                            }
                            Err(e) => {
                                let _ = tokio::fs::remove_file(&tmp).await;
                                return Err(status_err(e));
                            }
                        }
                    };
                    eprintln!("{n} bytes");
                }
                _ => bail!("exactly one of SRC and DST must be SANDBOX:/absolute/path"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { target } => {
            let (sb, path) = remote(&target)
                .ok_or_else(|| anyhow!("expected SANDBOX:/absolute/path, got {target:?}"))?;
            let entries = client.list_dir(&ns, &sb, &path).await.map_err(status_err)?;
            let mut out = std::io::stdout().lock();
            for e in entries {
                let kind = match pb::FileType::try_from(e.r#type) {
                    Ok(pb::FileType::Dir) => 'd',
                    Ok(pb::FileType::Symlink) => 'l',
                    Ok(pb::FileType::File) => '-',
                    _ => '?',
                };
                let mtime = e.mtime.map(|t| t.seconds).unwrap_or(0);
                let when = chrono::DateTime::from_timestamp(mtime, 0)
                    .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default();
                writeln!(out, "{kind}{:04o} {:>12} {when} {}", e.mode, e.size, e.name)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Create {
            name,
            sandbox,
            no_wait,
        } => {
            let req = create_request(&ns, &name, &sandbox);
            let sb = if no_wait {
                client.create_sandbox(req).await
            } else {
                client
                    .create_sandbox_ready(req, Duration::from_secs(sandbox.ready_timeout))
                    .await
            }
            .map_err(status_err)?;
            println!("{}", sb.name);
            Ok(ExitCode::SUCCESS)
        }
        Command::Get { sandbox } => {
            let sb = client
                .get_sandbox(&ns, &sandbox)
                .await
                .map_err(status_err)?;
            print_sandbox(&sb);
            Ok(ExitCode::SUCCESS)
        }
        Command::List { selector } => {
            let list = client
                .list_sandboxes(&ns, &selector)
                .await
                .map_err(status_err)?;
            println!("{:<40} {:<10} {:<40} EXPIRES", "NAME", "PHASE", "IMAGE");
            for sb in list {
                println!(
                    "{:<40} {:<10} {:<40} {}",
                    sb.name,
                    phase(sb.phase),
                    output::source(&sb),
                    ts(sb.expires_at.as_ref())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { sandboxes } => {
            let mut failed = false;
            for sb in sandboxes {
                match client.delete_sandbox(&ns, &sb).await {
                    Ok(()) => println!("deleted {sb}"),
                    Err(e) => {
                        eprintln!("airlock: {sb}: {}", e.message());
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Extend { sandbox, seconds } => {
            let sb = client
                .extend_sandbox(&ns, &sandbox, seconds)
                .await
                .map_err(status_err)?;
            println!(
                "{} time-to-live now ends {}",
                sb.name,
                ts(sb.ttl_expires_at.as_ref())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn create_request(ns: &str, name: &str, o: &SandboxOpts) -> pb::CreateSandboxRequest {
    let egress = match o.egress.as_str() {
        "internet" => pb::network::Egress::Internet,
        _ => pb::network::Egress::None,
    };
    pb::CreateSandboxRequest {
        namespace: ns.into(),
        name: name.into(),
        source: Some(match &o.template {
            Some(t) => pb::create_sandbox_request::Source::Template(t.clone()),
            None => pb::create_sandbox_request::Source::Image(o.image.clone().unwrap_or_default()),
        }),
        resources: o.template.is_none().then(|| pb::Resources {
            cpu: o.cpu.clone(),
            memory: o.memory.clone(),
            ephemeral_storage: String::new(),
        }),
        ttl_seconds: o.ttl,
        idle_timeout_seconds: o.idle_timeout,
        network: Some(pb::Network {
            egress: egress as i32,
            allow: vec![],
            dns: false,
        }),
        env: o.sandbox_env.iter().cloned().collect(),
        labels: o.labels.iter().cloned().collect(),
        runtime_class_name: o.runtime_class.clone(),
        agent_in_image: o.agent_in_image,
        run_as_user: o.user.map(|(u, _)| u),
        run_as_group: o.user.and_then(|(_, g)| g),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::exec_request;

    #[test]
    fn remote_paths() {
        assert_eq!(remote("sb:/tmp/x"), Some(("sb".into(), "/tmp/x".into())));
        assert_eq!(remote("./local:file"), None);
        assert_eq!(remote("sb:relative"), None);
        assert_eq!(remote("/abs/path"), None);
        assert_eq!(parse_kv("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_kv("A").is_err());
    }

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from([
            "airlock", "run", "--image", "python:3", "--ttl", "60", "--", "python3", "-c",
            "print(1)",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Run { .. }));
        let c = Cli::try_parse_from(["airlock", "exec", "sb", "--timeout", "2", "--", "echo hi"])
            .unwrap();
        let Command::Exec { exec, .. } = c.command else {
            panic!()
        };
        assert!(matches!(
            exec_request("", "sb", &exec).command,
            Some(pb::exec_request::Command::Shell(_))
        ));
        assert!(Cli::try_parse_from(["airlock", "cp", "a", "sb:/b"]).is_ok());
    }

    #[test]
    fn user_flag() {
        assert_eq!(parse_user("1000"), Ok((1000, None)));
        assert_eq!(parse_user("1000:0"), Ok((1000, Some(0))));
        assert!(parse_user("alice").is_err());
        assert!(parse_user("1000:").is_err());
        let c = Cli::try_parse_from(["airlock", "create", "--image", "i", "--user", "1000:2000"])
            .unwrap();
        let Command::Create { sandbox, .. } = c.command else {
            panic!()
        };
        assert_eq!(sandbox.user, Some((1000, Some(2000))));
        let r = create_request("ns", "", &sandbox);
        assert_eq!((r.run_as_user, r.run_as_group), (Some(1000), Some(2000)));
    }
}
