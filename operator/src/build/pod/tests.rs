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

/// The kubelet expands `$(NAME)` and turns `$$` into `$` in a container's command and env values
/// (k8s.io/kubernetes third_party/forked/golang/expansion): the pod carries every `$` of the
/// spec doubled, which the kubelet turns back into exactly the spec's words (checked against a
/// model of the kubelet's expansion in operator/tests/fuzz_build/kubelet.rs).
#[test]
fn command_args_and_env_values_reach_the_process_literally() {
    let p = build(
        r#"
apiVersion: airlock.dev/v1alpha1
kind: Sandbox
metadata: {name: sbx-1, namespace: team-a, uid: 0000-1111}
spec:
  image: python:3.12-slim
  command: ["sh", "-c", "echo $$ $(HOME) $"]
  args: ["$(FIRST)", "a$$$b"]
  env:
    - {name: FIRST, value: one}
    - {name: REF, value: "$(FIRST) $$ $HOME $"}
"#,
    );
    let c = main(&p);
    assert_eq!(
        &c.command.as_ref().unwrap()[3..],
        &["sh", "-c", "echo $$$$ $$(HOME) $$", "$$(FIRST)", "a$$$$$$b"]
    );
    let env = c.env.as_ref().unwrap();
    assert_eq!(env[0].value.as_deref(), Some("one"));
    assert_eq!(env[1].value.as_deref(), Some("$$(FIRST) $$$$ $$HOME $$"));
}

#[test]
fn with_the_direct_path_the_agent_listens_and_reads_its_token_from_the_sandboxs_secret() {
    let config = Config {
        allowed_runtime_classes: vec!["kata".into(), "gvisor".into()],
        ..Config::with_direct()
    };
    let s = sandbox(FULL);
    let plan = validate(&s, &config).unwrap();
    let p = pod(&s, &plan, &config).unwrap();
    let c = main(&p);
    let argv = c.command.as_ref().unwrap();
    assert_eq!(
        argv[..5],
        ["/.airlock/airlock-agent", "init", "--listen", "0.0.0.0:7070", "--"]
    );
    let ports = c.ports.as_ref().expect("the agent port is declared");
    assert_eq!(ports.len(), 1);
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].container_port, ports[0].protocol.as_deref()),
        (Some("airlock-agent"), 7070, Some("TCP"))
    );
    let env = c.env.as_ref().unwrap();
    let token = env.last().expect("the token variable comes last");
    assert_eq!(token.name, "AIRLOCK_AGENT_TOKEN");
    assert_eq!(token.value, None, "never the token itself in the pod spec");
    let r = token.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!(
        (r.name.as_str(), r.key.as_str(), r.optional),
        ("airlock-agent-token-sbx-full", "token", Some(false))
    );
    // The spec's own variables are still there, before it.
    assert!(env.len() > 1 && env[..env.len() - 1].iter().all(|v| v.value.is_some()));
}

#[test]
fn without_the_direct_path_no_port_and_no_token() {
    let p = build(FULL);
    let c = main(&p);
    assert_eq!(c.ports, None);
    assert!(!c.command.as_ref().unwrap().iter().any(|a| a == "--listen"));
    assert!(c.env.iter().flatten().all(|v| v.name != "AIRLOCK_AGENT_TOKEN"));
}

#[test]
fn with_a_fence_probe_the_agent_is_told_where_to_probe_before_it_starts_anything() {
    let config = Config {
        allowed_runtime_classes: vec!["kata".into(), "gvisor".into()],
        fence_probe: Some("10.244.0.5:8080".parse().unwrap()),
        ..Config::with_direct()
    };
    let s = sandbox(FULL);
    let plan = validate(&s, &config).unwrap();
    let p = pod(&s, &plan, &config).unwrap();
    let argv = main(&p).command.clone().unwrap();
    let dashes = argv.iter().position(|a| a == "--").unwrap();
    assert_eq!(
        argv[1..=dashes],
        ["init", "--listen", "0.0.0.0:7070", "--fence-probe=10.244.0.5:8080", "--"]
    );
    // Without it, no probe.
    let argv = main(&build(FULL)).command.clone().unwrap();
    assert!(!argv.iter().any(|a| a.starts_with("--fence-probe")), "{argv:?}");
}
