//! Sandbox -> Pod. The pod follows docs/DESIGN-NOTES.md ("Sandbox pod"): the Airlock agent reaches
//! a memory-backed volume (unpacked by airlock-boot from the namespace's agent ConfigMap, or copied
//! by an init container), the main container runs the user's image under the agent as PID 1, and
//! everything that could widen the sandbox's reach is switched off.

use std::collections::BTreeMap;

use airlock_crds::{AgentSource, Sandbox, labels};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, Pod, SecretKeySelector,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use super::{BuildError, PRIORITY_CLASS, agent, child_meta};
use crate::bundle;
use crate::config::{Agent, Config};
use crate::reconcile::validate::Plan;

/// Name of the init container that installs the agent (`--agent-delivery=init-container`).
pub const INSTALL_CONTAINER: &str = "airlock-install";
/// Volume holding the agent binary.
pub const AGENT_VOLUME: &str = "airlock";
/// Size limit of the agent volume (memory-backed).
pub const AGENT_VOLUME_SIZE: &str = "32Mi";
/// Volume of the agent ConfigMap (`--agent-delivery=config-map`).
pub const BOOT_VOLUME: &str = "airlock-boot";
/// Where the agent ConfigMap is mounted.
pub const BOOT_DIR: &str = "/.airlock-boot";
/// Scratch volume mounted at `/tmp` when the root filesystem is read-only.
pub const TMP_VOLUME: &str = "tmp";
/// Seconds the kubelet waits after SIGTERM before SIGKILL.
pub const TERMINATION_GRACE_SECONDS: i64 = 5;

/// The sandbox's pod.
pub fn pod(sandbox: &Sandbox, plan: &Plan, config: &Config) -> Result<Pod, BuildError> {
    let name = sandbox.name_any();
    let spec = &sandbox.spec;
    let resources = resources(plan);

    // The agent lives in a memory-backed volume, unless the image brings it (then the pod has no
    // volume at all, which spares the kubelet's volume wait).
    let inject = spec.agent != Some(AgentSource::Image);
    let agent_mount = VolumeMount {
        name: AGENT_VOLUME.into(),
        mount_path: labels::AGENT_DIR.into(),
        ..VolumeMount::default()
    };
    let mut volumes = Vec::new();
    let mut main_mounts = Vec::new();
    if inject {
        volumes.push(Volume {
            name: AGENT_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity(AGENT_VOLUME_SIZE.into())),
            }),
            ..Volume::default()
        });
        main_mounts.push(agent_mount.clone());
    }
    if spec.read_only_root_filesystem {
        // The CRD promises writable scratch space under /tmp; it counts against ephemeral storage.
        volumes.push(Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(plan.ephemeral_storage.clone()),
            }),
            ..Volume::default()
        });
        main_mounts.push(VolumeMount {
            name: TMP_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        });
    }

    // How the agent arrives: the command's prefix, and an init container if it copies it.
    let mut metadata = child_meta(sandbox, labels::pod_name(&name))?;
    let (prefix, install_image) = match &config.agent {
        _ if !inject => (Vec::new(), None),
        Agent::ConfigMap(b) => {
            volumes.push(Volume {
                name: BOOT_VOLUME.into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: b.name.clone(),
                    default_mode: Some(0o555),
                    optional: Some(false),
                    items: None,
                }),
                ..Volume::default()
            });
            main_mounts.push(VolumeMount {
                name: BOOT_VOLUME.into(),
                mount_path: BOOT_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(agent::BUNDLE_LABEL.into(), b.name.clone());
            let prefix = vec![
                format!("{BOOT_DIR}/{}", bundle::BOOT_KEY),
                format!("{BOOT_DIR}/{}", bundle::AGENT_KEY),
            ];
            (prefix, None)
        }
        Agent::InitContainer { image } => (Vec::new(), Some(image)),
    };
    let install = install_image.map(|image| Container {
        name: INSTALL_CONTAINER.into(),
        image: Some(image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            "/airlock-agent".into(),
            "install".into(),
            labels::AGENT_PATH.into(),
        ]),
        volume_mounts: Some(vec![agent_mount]),
        // Same amounts as the main container: the pod's effective request is the larger of the
        // init and main containers, so this costs nothing, and quota admission (which wants limits
        // on every container) and Guaranteed QoS are satisfied.
        resources: Some(resources.clone()),
        security_context: Some(container_security_context(true)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    });

    let mut argv = prefix;
    let port = config.direct.as_ref().map(|d| d.port);
    argv.extend(command(sandbox, port, config.fence_probe));
    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .map(|v| EnvVar {
            name: v.name.clone(),
            value: Some(literal(&v.value)),
            value_from: None,
        })
        .collect();
    if port.is_some() {
        // Last, so it wins over a spec variable of the same name (the kubelet keeps the last).
        // The agent reads it and scrubs it from its environment before anything starts.
        env.push(EnvVar {
            name: labels::AGENT_TOKEN_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: labels::agent_token_secret(&name),
                    key: super::token::TOKEN_KEY.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    let main = Container {
        name: labels::MAIN_CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(plan.image_pull_policy.as_str().into()),
        command: Some(argv),
        env: (!env.is_empty()).then_some(env),
        ports: port.map(|p| {
            vec![ContainerPort {
                name: Some(labels::AGENT_PORT_NAME.into()),
                container_port: p.into(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]
        }),
        working_dir: spec.working_dir.clone(),
        volume_mounts: (!main_mounts.is_empty()).then_some(main_mounts),
        resources: Some(resources),
        security_context: Some(container_security_context(spec.read_only_root_filesystem)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    Ok(Pod {
        metadata,
        spec: Some(PodSpec {
            hostname: Some(name),
            init_containers: install.map(|c| vec![c]),
            containers: vec![main],
            volumes: (!volumes.is_empty()).then_some(volumes),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            runtime_class_name: Some(plan.runtime_class.clone()),
            priority_class_name: Some(PRIORITY_CLASS.into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            share_process_namespace: Some(false),
            security_context: Some(pod_security_context(plan)),
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// `["/.airlock/airlock-agent", "init", ["--listen", "0.0.0.0:PORT",] ["--fence-probe=IP:PORT",]
/// "--", command..., args...]`
/// (`--listen` with the direct path: the agent also serves the gateway there); nothing after `--` when the
/// sandbox has no command (the agent then idles as PID 1 until SIGTERM). With the ConfigMap
/// delivery the container's command is `[boot, agent.z]` followed by this: airlock-boot unpacks the
/// agent to `/.airlock/airlock-agent` and execs exactly this argv. The spec's words are
/// [`literal`]: the process gets them exactly as written.
pub fn command(
    sandbox: &Sandbox,
    agent_port: Option<u16>,
    fence_probe: Option<std::net::SocketAddr>,
) -> Vec<String> {
    let spec = &sandbox.spec;
    let mut argv = vec![labels::AGENT_PATH.to_string(), "init".into()];
    if let Some(p) = agent_port {
        argv.push("--listen".into());
        argv.push(format!("0.0.0.0:{p}"));
    }
    if let Some(probe) = fence_probe {
        argv.push(format!("--fence-probe={probe}"));
    }
    argv.push("--".into());
    if !spec.command.is_empty() {
        argv.extend(spec.command.iter().map(|a| literal(a)));
        argv.extend(spec.args.iter().map(|a| literal(a)));
    }
    argv
}

/// A container command word or env value the kubelet passes on unchanged. The kubelet expands
/// `$(NAME)` (from the container's earlier env vars) and turns `$$` into `$` in `command`, `args`
/// and env values, so every `$` is doubled: a Sandbox's command, args and env values are meant
/// literally, and `sh -c 'echo $$'` or a value `a$$b` must reach the process as written.
pub fn literal(s: &str) -> String {
    s.replace('$', "$$")
}

/// Requests == limits for CPU, memory and ephemeral storage (Guaranteed QoS).
fn resources(plan: &Plan) -> ResourceRequirements {
    let amounts = BTreeMap::from([
        ("cpu".to_string(), plan.cpu.clone()),
        ("memory".to_string(), plan.memory.clone()),
        (
            "ephemeral-storage".to_string(),
            plan.ephemeral_storage.clone(),
        ),
    ]);
    ResourceRequirements {
        limits: Some(amounts.clone()),
        requests: Some(amounts),
        ..ResourceRequirements::default()
    }
}

/// RuntimeDefault seccomp; with a user (spec.securityContext or the operator's default), also
/// runAsNonRoot with that uid and gid, and the gid as fsGroup so the pod's volumes (the agent's
/// memory volume, `/tmp` of a read-only root) are the group's to write.
fn pod_security_context(plan: &Plan) -> PodSecurityContext {
    let mut psc = PodSecurityContext {
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    };
    if let Some(user) = plan.user {
        psc.run_as_non_root = Some(true);
        psc.run_as_user = Some(user.run_as_user);
        psc.run_as_group = Some(user.group());
        psc.fs_group = Some(user.group());
    }
    psc
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

fn container_security_context(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        read_only_root_filesystem: Some(read_only_root),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests;
