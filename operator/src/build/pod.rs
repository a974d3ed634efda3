//! Sandbox -> Pod. The pod follows docs/DESIGN-NOTES.md ("Sandbox pod"): the Airlock agent reaches
//! a memory-backed volume (unpacked by airlock-boot from the namespace's agent ConfigMap, or copied
//! by an init container), the main container runs the user's image under the agent as PID 1, and
//! everything that could widen the sandbox's reach is switched off.

use std::collections::BTreeMap;

use airlock_crds::{AgentSource, Sandbox, labels};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, Pod,
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
    argv.extend(command(sandbox));
    let main = Container {
        name: labels::MAIN_CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(plan.image_pull_policy.as_str().into()),
        command: Some(argv),
        env: (!spec.env.is_empty()).then(|| spec.env.iter().map(EnvVar::from).collect()),
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

/// `["/.airlock/airlock-agent", "init", "--", command..., args...]`; nothing after `--` when the
/// sandbox has no command (the agent then idles as PID 1 until SIGTERM). With the ConfigMap
/// delivery the container's command is `[boot, agent.z]` followed by this: airlock-boot unpacks the
/// agent to `/.airlock/airlock-agent` and execs exactly this argv.
pub fn command(sandbox: &Sandbox) -> Vec<String> {
    let spec = &sandbox.spec;
    let mut argv = vec![labels::AGENT_PATH.to_string(), "init".into(), "--".into()];
    if !spec.command.is_empty() {
        argv.extend(spec.command.iter().cloned());
        argv.extend(spec.args.iter().cloned());
    }
    argv
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
mod tests {
    use super::*;
    use crate::build::fixtures::*;
    use crate::reconcile::validate::validate;

    fn build(yaml: &str) -> Pod {
        // FULL names the RuntimeClass gvisor.
        let config = Config::from_flags(&["--allowed-runtime-classes=gvisor"]);
        let s = sandbox(yaml);
        let plan = validate(&s, &config).unwrap();
        pod(&s, &plan, &config).unwrap()
    }

    fn main(pod: &Pod) -> &Container {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.containers.len(), 1);
        &spec.containers[0]
    }

    #[test]
    fn metadata_names_labels_and_owner() {
        let p = build(MINIMAL);
        assert_eq!(p.metadata.name.as_deref(), Some("sbx-1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(p.labels()["airlock.dev/sandbox"], "sbx-1");
        assert_eq!(
            p.labels()["app.kubernetes.io/managed-by"],
            "airlock-operator"
        );
        assert_eq!(p.labels()["app.kubernetes.io/component"], "sandbox");
        let o = &p.owner_references()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str(), o.controller),
            ("Sandbox", "sbx-1", Some(true))
        );
    }

    #[test]
    fn pod_level_hardening() {
        let p = build(MINIMAL);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.host_network, Some(false));
        assert_eq!(spec.host_pid, Some(false));
        assert_eq!(spec.host_ipc, Some(false));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(5));
        assert_eq!(spec.priority_class_name.as_deref(), Some("airlock-sandbox"));
        assert_eq!(
            spec.runtime_class_name.as_deref(),
            Some("kata"),
            "default runtime class from config"
        );
        assert_eq!(spec.hostname.as_deref(), Some("sbx-1"));
        assert_eq!(spec.service_account_name, None);
        let psc = spec.security_context.as_ref().unwrap();
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
    }

    #[test]
    fn every_container_is_hardened_with_requests_equal_to_limits() {
        let p = build(MINIMAL);
        let spec = p.spec.as_ref().unwrap();
        let all = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter());
        let mut n = 0;
        for c in all {
            n += 1;
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.privileged, Some(false), "{}", c.name);
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..]),
                "{}",
                c.name
            );
            assert_eq!(sc.capabilities.as_ref().unwrap().add, None, "{}", c.name);
            assert_eq!(
                sc.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault",
                "{}",
                c.name
            );
            let r = c.resources.as_ref().unwrap();
            assert_eq!(r.requests, r.limits, "{}: requests == limits", c.name);
            let l = r.limits.as_ref().unwrap();
            assert_eq!(l["cpu"].0, "1");
            assert_eq!(l["memory"].0, "512Mi");
            assert_eq!(l["ephemeral-storage"].0, "1Gi");
            let mounts = c.volume_mounts.as_ref().unwrap();
            assert!(
                mounts
                    .iter()
                    .any(|m| m.name == "airlock" && m.mount_path == "/.airlock"),
                "{}",
                c.name
            );
        }
        assert_eq!(n, 2);
        // The main container keeps a writable root unless asked otherwise.
        assert_eq!(
            main(&p)
                .security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(false)
        );
    }

    #[test]
    fn agent_from_the_config_map_bundle_without_init_container() {
        let config = Config::with_bundle();
        let Agent::ConfigMap(b) = &config.agent else {
            unreachable!()
        };
        let s = sandbox(MINIMAL);
        let p = pod(&s, &validate(&s, &config).unwrap(), &config).unwrap();
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.init_containers, None);
        let volumes = spec.volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 2);
        assert_eq!(
            volumes[0].empty_dir.as_ref().unwrap().medium.as_deref(),
            Some("Memory")
        );
        let cm = volumes[1].config_map.as_ref().unwrap();
        assert_eq!(
            (volumes[1].name.as_str(), cm.name.as_str()),
            ("airlock-boot", b.name.as_str())
        );
        assert_eq!((cm.default_mode, cm.optional), (Some(0o555), Some(false)));
        let c = main(&p);
        let mounts: Vec<_> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [("/.airlock", None), ("/.airlock-boot", Some(true))]
        );
        assert_eq!(
            c.command.as_ref().unwrap(),
            &[
                "/.airlock-boot/boot",
                "/.airlock-boot/agent.z",
                "/.airlock/airlock-agent",
                "init",
                "--"
            ]
        );
        assert_eq!(p.labels().get("airlock.dev/agent-bundle"), Some(&b.name));
        // Everything else is as with the init container.
        let mut q = build(MINIMAL);
        let qs = q.spec.as_mut().unwrap();
        qs.init_containers = None;
        qs.volumes.as_mut().unwrap().push(volumes[1].clone());
        qs.containers[0].volume_mounts = c.volume_mounts.clone();
        qs.containers[0].command = c.command.clone();
        q.metadata.labels = p.metadata.labels.clone();
        assert_eq!(p, q);
    }

    #[test]
    fn agent_from_the_image_means_no_volume_and_no_init_container() {
        for config in [Config::defaults(), Config::with_bundle()] {
            let s = sandbox(&format!("{MINIMAL}  agent: Image\n"));
            let p = pod(&s, &validate(&s, &config).unwrap(), &config).unwrap();
            let spec = p.spec.as_ref().unwrap();
            assert_eq!((&spec.init_containers, &spec.volumes), (&None, &None));
            let c = main(&p);
            assert_eq!(c.volume_mounts, None);
            assert_eq!(
                c.command.as_ref().unwrap(),
                &["/.airlock/airlock-agent", "init", "--"]
            );
            assert!(!p.labels().contains_key("airlock.dev/agent-bundle"));
        }
        // Only the scratch /tmp of a read-only root remains.
        let config = Config::with_bundle();
        let s = sandbox(&format!(
            "{MINIMAL}  agent: Image\n  readOnlyRootFilesystem: true\n"
        ));
        let p = pod(&s, &validate(&s, &config).unwrap(), &config).unwrap();
        let names: Vec<_> = p
            .spec
            .unwrap()
            .volumes
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["tmp"]);
    }

    #[test]
    fn agent_volume_and_init_container() {
        let p = build(MINIMAL);
        let spec = p.spec.as_ref().unwrap();
        let volumes = spec.volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 1);
        let ed = volumes[0].empty_dir.as_ref().unwrap();
        assert_eq!(volumes[0].name, "airlock");
        assert_eq!(ed.medium.as_deref(), Some("Memory"));
        assert_eq!(ed.size_limit.as_ref().unwrap().0, "32Mi");
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.name, "airlock-install");
        assert_eq!(init.image.as_deref(), Some("airlock.local/agent:0.1.0"));
        assert_eq!(
            init.command.as_ref().unwrap(),
            &["/airlock-agent", "install", "/.airlock/airlock-agent"]
        );
    }

    #[test]
    fn main_container_of_a_minimal_sandbox() {
        let p = build(MINIMAL);
        let c = main(&p);
        assert_eq!(c.name, "sandbox");
        assert_eq!(c.image.as_deref(), Some("python:3.12-slim"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.command.as_ref().unwrap(),
            &["/.airlock/airlock-agent", "init", "--"]
        );
        assert_eq!(c.args, None);
        assert_eq!(c.env, None);
        assert_eq!(c.working_dir, None);
    }

    #[test]
    fn main_container_of_a_full_sandbox() {
        let p = build(FULL);
        assert_eq!(p.metadata.namespace.as_deref(), Some("agents"));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        let c = main(&p);
        assert_eq!(c.image.as_deref(), Some("ghcr.io/acme/tools:1.2"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.command.as_ref().unwrap(),
            &[
                "/.airlock/airlock-agent",
                "init",
                "--",
                "python3",
                "-m",
                "http.server",
                "8000"
            ]
        );
        let env = c.env.as_ref().unwrap();
        assert_eq!(
            (env[0].name.as_str(), env[0].value.as_deref()),
            ("MODE", Some("test"))
        );
        assert_eq!(
            (env[1].name.as_str(), env[1].value.as_deref()),
            ("EMPTY", Some(""))
        );
        assert!(env.iter().all(|e| e.value_from.is_none()));
        assert_eq!(c.working_dir.as_deref(), Some("/work"));
        let l = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(
            (
                l["cpu"].0.as_str(),
                l["memory"].0.as_str(),
                l["ephemeral-storage"].0.as_str()
            ),
            ("500m", "2Gi", "4Gi")
        );
        // Read-only root, with /tmp writable.
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "tmp" && m.mount_path == "/tmp")
        );
        assert!(
            spec.volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "tmp")
        );
    }

    #[test]
    fn root_or_image_user_unless_a_user_is_asked_for() {
        let psc = build(MINIMAL).spec.unwrap().security_context.unwrap();
        assert_eq!(
            (
                psc.run_as_non_root,
                psc.run_as_user,
                psc.run_as_group,
                psc.fs_group
            ),
            (None, None, None, None),
            "the image's user"
        );
    }

    #[test]
    fn a_sandbox_user_runs_non_root_with_its_uid_and_gid() {
        let p = build(&format!(
            "{MINIMAL}  securityContext:\n    runAsUser: 1000\n    runAsGroup: 3000\n"
        ));
        let spec = p.spec.as_ref().unwrap();
        let psc = spec.security_context.as_ref().unwrap();
        assert_eq!(
            (
                psc.run_as_non_root,
                psc.run_as_user,
                psc.run_as_group,
                psc.fs_group
            ),
            (Some(true), Some(1000), Some(3000), Some(3000))
        );
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        // No container overrides it (Pod Security `restricted` forbids runAsNonRoot: false).
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(
                (sc.run_as_non_root, sc.run_as_user),
                (None, None),
                "{}",
                c.name
            );
        }
        // The group defaults to the uid.
        let p = build(&format!(
            "{MINIMAL}  securityContext:\n    runAsUser: 1000\n"
        ));
        let psc = p.spec.unwrap().security_context.unwrap();
        assert_eq!((psc.run_as_group, psc.fs_group), (Some(1000), Some(1000)));
    }

    #[test]
    fn the_operators_default_user_applies_only_to_sandboxes_without_one() {
        let mut config = Config::defaults();
        config.default_user = Some(airlock_crds::SandboxSecurityContext {
            run_as_user: 65532,
            run_as_group: None,
        });
        let psc = |yaml: &str| {
            let s = sandbox(yaml);
            let p = pod(&s, &validate(&s, &config).unwrap(), &config).unwrap();
            p.spec.unwrap().security_context.unwrap()
        };
        let d = psc(MINIMAL);
        assert_eq!(
            (d.run_as_non_root, d.run_as_user, d.run_as_group),
            (Some(true), Some(65532), Some(65532))
        );
        let own = psc(&format!(
            "{MINIMAL}  securityContext:\n    runAsUser: 1000\n"
        ));
        assert_eq!(own.run_as_user, Some(1000));
    }

    #[test]
    fn a_root_user_that_got_past_the_crd_is_refused_naming_the_field() {
        let s = sandbox(&format!("{MINIMAL}  securityContext:\n    runAsUser: 0\n"));
        let e = validate(&s, &Config::defaults()).unwrap_err();
        assert_eq!(e.problem.field(), "spec.securityContext.runAsUser");
        assert!(e.problem.to_string().contains("runAsNonRoot"), "{e}");
    }

    #[test]
    fn pod_serializes_to_the_api_shape() {
        let v = serde_json::to_value(build(MINIMAL)).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["spec"]["automountServiceAccountToken"], false);
        assert_eq!(
            v["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"][0],
            "ALL"
        );
        assert!(v.get("status").is_none());
    }
}
