//! CreateSandbox requests.

use super::*;

fn create(f: impl FnOnce(&mut pb::CreateSandboxRequest)) -> Result<CreateSpec, Status> {
    let mut r = pb::CreateSandboxRequest {
        source: Some(pb::create_sandbox_request::Source::Image(
            "python:3.12".into(),
        )),
        ..Default::default()
    };
    f(&mut r);
    create_request(&r, "default")
}

#[test]
fn create_request_fields() {
    let ok = create(|_| {}).unwrap();
    assert_eq!(ok.namespace, "default");
    assert_eq!(ok.generate_name.as_deref(), Some("sandbox-"));
    assert_eq!(ok.spec.image, "python:3.12");
    assert_eq!(ok.spec.agent, None, "the agent is injected unless asked");
    let own = create(|r| r.agent_in_image = true).unwrap();
    assert_eq!(own.spec.agent, Some(airlock_crds::AgentSource::Image));

    let full = create(|r| {
        r.namespace = "team-a".into();
        r.name = "my-box".into();
        r.resources = Some(pb::Resources {
            cpu: "500m".into(),
            memory: "512Mi".into(),
            ephemeral_storage: "1Gi".into(),
        });
        r.ttl_seconds = 600;
        r.idle_timeout_seconds = 60;
        r.network = Some(pb::Network {
            egress: pb::network::Egress::AllowList as i32,
            allow: vec![pb::EgressRule {
                cidr: "10.0.0.0/8".into(),
                ports: vec![pb::Port {
                    port: 443,
                    protocol: pb::port::Protocol::Udp as i32,
                }],
            }],
            dns: true,
        });
        r.env.insert("A".into(), "1".into());
        r.labels.insert("team".into(), "ml".into());
        r.labels.insert("example.com/x".into(), "".into());
        r.runtime_class_name = "gvisor".into();
        r.working_dir = "/work".into();
    })
    .unwrap();
    assert_eq!(full.name.as_deref(), Some("my-box"));
    assert_eq!(
        full.spec.resources.cpu.as_ref().map(|q| q.0.as_str()),
        Some("500m")
    );
    assert_eq!(full.spec.lifetime.ttl_seconds, Some(600));
    assert_eq!(
        full.spec.network.allow[0].ports[0].protocol,
        airlock_crds::Protocol::UDP
    );
    assert_eq!(full.spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(full.labels.len(), 2);

    let templated = |f: fn(&mut pb::CreateSandboxRequest)| {
        create(|r| {
            r.source = Some(pb::create_sandbox_request::Source::Template("py".into()));
            r.resources = None;
            r.runtime_class_name.clear();
            r.working_dir.clear();
            r.read_only_root_filesystem = false;
            f(r);
        })
    };
    let t = templated(|_| {}).unwrap();
    assert_eq!(t.spec.template_ref.as_ref().map(|t| t.name.as_str()), Some("py"));
    assert_eq!(t.spec.image, "");
    let with_env = templated(|r| {
        r.env.insert("MODE".into(), "claim".into());
        r.ttl_seconds = 60;
    })
    .unwrap();
    assert_eq!(with_env.spec.env[0].name, "MODE", "env is late-bound: it stays");
    assert_eq!(with_env.spec.lifetime.ttl_seconds, Some(60));
    for (f, field) in [
        ((|r| r.runtime_class_name = "gvisor".into()) as fn(&mut pb::CreateSandboxRequest), "runtime_class_name"),
        (|r| r.resources = Some(Default::default()), "resources"),
        (|r| r.working_dir = "/w".into(), "working_dir"),
        (|r| r.agent_in_image = true, "agent_in_image"),
        (|r| r.run_as_user = Some(1000), "run_as_user"),
    ] {
        assert_eq!(
            msg(templated(f)),
            format!("{field}: cannot be set with template: the SandboxTemplate sets it")
        );
    }
    assert_eq!(
        msg(templated(|r| r.source = Some(pb::create_sandbox_request::Source::Template("Not_A_Name".into())))),
        "template: must name a SandboxTemplate (a DNS subdomain name)"
    );

    assert_eq!(msg(create(|r| r.source = None)), "image: set image or template");
    assert_eq!(
        msg(create(
            |r| r.source = Some(pb::create_sandbox_request::Source::Image(" ".into()))
        )),
        "image: must not be empty"
    );
    assert!(
        msg(create(|r| r.source = Some(
            pb::create_sandbox_request::Source::Image("a b".into())
        )))
        .starts_with("image:")
    );
    assert_eq!(
        msg(create(|r| {
            r.name = "a".into();
            r.generate_name = "b-".into();
        })),
        "name: set at most one of name and generate_name"
    );
    assert!(msg(create(|r| r.name = "A".into())).starts_with("name: must be a DNS label"));
    assert!(msg(create(|r| r.generate_name = "-x".into())).starts_with("generate_name:"));
    assert!(msg(create(|r| r.generate_name = "x".repeat(59))).starts_with("generate_name:"));
    assert!(msg(create(|r| r.namespace = "a_b".into())).starts_with("namespace:"));
    assert!(
        msg(create(|r| r.resources = Some(pb::Resources {
            cpu: "lots".into(),
            ..Default::default()
        })))
        .starts_with("resources.cpu: must be a Kubernetes quantity")
    );
    assert!(
        msg(create(|r| r.resources = Some(pb::Resources {
            memory: "12XB".into(),
            ..Default::default()
        })))
        .starts_with("resources.memory:")
    );
    assert!(
        msg(create(|r| r.resources = Some(pb::Resources {
            ephemeral_storage: "-1Gi".into(),
            ..Default::default()
        })))
        .starts_with("resources.ephemeral_storage:")
    );
    assert_eq!(
        msg(create(|r| r.resources = Some(pb::Resources {
            cpu: "0".into(),
            ..Default::default()
        }))),
        "resources.cpu: must be positive"
    );
    assert_eq!(
        msg(create(|r| r.ttl_seconds = -1)),
        "ttl_seconds: must not be negative"
    );
    assert!(
        msg(create(|r| r.ttl_seconds = 604801)).starts_with("ttl_seconds: must be at most")
    );
    assert_eq!(
        msg(create(|r| r.idle_timeout_seconds = -5)),
        "idle_timeout_seconds: must not be negative"
    );
    assert!(
        msg(create(|r| {
            r.env.insert("9x".into(), "".into());
        }))
        .starts_with("env: invalid variable name")
    );
    assert!(
        msg(create(|r| {
            r.labels.insert("bad key".into(), "v".into());
        }))
        .starts_with("labels: invalid label key")
    );
    assert!(
        msg(create(|r| {
            r.labels.insert("airlock.dev/sandbox".into(), "v".into());
        }))
        .starts_with("labels: label key")
    );
    assert!(
        msg(create(|r| {
            r.labels.insert("k".into(), "-v".into());
        }))
        .starts_with("labels: invalid value")
    );
    assert!(
        msg(create(|r| r.runtime_class_name = "Kata!".into()))
            .starts_with("runtime_class_name:")
    );
    assert_eq!(
        msg(create(|r| r.working_dir = "work".into())),
        "working_dir: must be absolute"
    );
    let net = |n: pb::Network| create(move |r| r.network = Some(n));
    assert_eq!(
        msg(net(pb::Network {
            egress: 9,
            ..Default::default()
        })),
        "network.egress: unknown value 9"
    );
    assert_eq!(
        msg(net(pb::Network {
            egress: pb::network::Egress::Internet as i32,
            allow: vec![pb::EgressRule {
                cidr: "10.0.0.0/8".into(),
                ports: vec![]
            }],
            dns: false
        })),
        "network.allow: may only be set when network.egress is EGRESS_ALLOW_LIST"
    );
    assert_eq!(
        msg(net(pb::Network {
            egress: pb::network::Egress::AllowList as i32,
            ..Default::default()
        })),
        "network.allow: must list at least one destination when network.egress is EGRESS_ALLOW_LIST"
    );
    let allow = |cidr: &str, port: i32, protocol: i32| pb::Network {
        egress: pb::network::Egress::AllowList as i32,
        allow: vec![pb::EgressRule {
            cidr: cidr.into(),
            ports: vec![pb::Port { port, protocol }],
        }],
        dns: false,
    };
    assert_eq!(
        msg(net(allow("10.0.0.0", 80, 0))),
        "network.allow[0].cidr: must be a CIDR such as 10.1.2.0/24"
    );
    assert_eq!(
        msg(net(allow("10.0.0.0/33", 80, 0))),
        "network.allow[0].cidr: must be a CIDR such as 10.1.2.0/24"
    );
    assert_eq!(
        msg(net(allow("10.0.0.0/8", 0, 0))),
        "network.allow[0].ports[0].port: must be between 1 and 65535"
    );
    assert_eq!(
        msg(net(allow("2001:db8::/32", 80, 7))),
        "network.allow[0].ports[0].protocol: unknown value 7"
    );
}

#[test]
fn memory_at_or_below_the_crd_minimum_is_refused() {
    // The CRD refuses memory <= 4Mi; the gateway used to accept "1" and "500m" (found by the e2e
    // CRD oracle, e2e/tests/crd_oracle.rs).
    let with_memory = |m: &str| {
        let m = m.to_string();
        create(move |r| {
            r.resources = Some(pb::Resources {
                memory: m,
                ..Default::default()
            })
        })
    };
    for m in ["1", "500m", "4Mi", "4194304", "1Ki"] {
        assert_eq!(
            msg(with_memory(m)),
            "resources.memory: must be a quantity above 4Mi such as 512Mi",
            "{m}"
        );
    }
    for m in ["4194305", "5Mi", "512Mi", "1Gi"] {
        assert!(with_memory(m).is_ok(), "{m}");
    }
}

#[test]
fn initial_files_are_checked_field_by_field() {
    let file = |path: &str, content: &str, mode: Option<u32>| pb::InitialFile { path: path.into(), content: content.into(), mode };
    let ok = create(|r| r.files = vec![file("/w/in.txt", "x", Some(0o600))]).unwrap();
    assert_eq!(
        ok.spec.files,
        [airlock_crds::SandboxFile { path: "/w/in.txt".into(), content: "x".into(), mode: Some(0o600) }]
    );
    let big = "a".repeat(65537);
    for (f, message) in [
        (file("rel", "", None), "files[0].path: must be absolute"),
        (file("/dir/", "", None), "files[0].path: must name a file, not a directory"),
        (file("/a", &big, None), "files[0].content: at most 65536 bytes, got 65537"),
        (file("/a", "", Some(0o10000)), "files[0].mode: at most 0o7777 (4095), got 4096"),
    ] {
        let e = create(|r| r.files = vec![f]).unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, message));
    }
    let e = create(|r| r.files = (0..17).map(|i| file(&format!("/f{i}"), "", None)).collect()).unwrap_err();
    assert_eq!(e.message(), "files: at most 16 files, got 17");
}
