//! Gateway hardening against the local cluster:
//! - exec and file calls only go to the pod the Sandbox controls, whatever `status.podName` says;
//! - TLS end to end (a CA and a certificate made here, through a kubernetes.io/tls Secret, served
//!   by an in-process gateway on loopback that talks to the real cluster), including a renewed
//!   certificate picked up without a restart;
//! - RuntimeClasses outside the allowed list are refused;
//! - the installed gateway (chart defaults: token audience `airlock`, the operator's default
//!   RuntimeClass only) refuses a token minted for the API server and accepts one minted for it.
//!
//! The in-process gateways run in `kubernetes` auth mode (TokenReview + SubjectAccessReview
//! against the cluster) with tokens from the TokenRequest API.

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_e2e::sandboxes::{self, token_for, token_with_audiences};
use airlock_e2e::{GVISOR, RUNC, SANDBOX_AGENT_IMAGE, TestNamespace, client, exec, release, run_pod};
use airlock_api::client::{AirlockClient, ClientError, ClientTls};
use airlock_api::proto::v1 as pb;
use airlock_exec_gateway::tls::TlsFiles;
use airlock_api::tonic::Code;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::oneshot;

/// An in-process gateway on 127.0.0.1, stopped when dropped.
struct Gateway {
    addr: String,
    _stop: oneshot::Sender<()>,
}

async fn gateway(kube: &Client, ns: &str, tls: Option<TlsFiles>) -> Gateway {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (port, stop) = sandboxes::in_process_gateway(kube, ns, |config| config.tls = tls).await;
    Gateway { addr: format!("{scheme}://127.0.0.1:{port}"), _stop: stop }
}

fn started_pod(events: &[pb::ExecEvent]) -> Option<String> {
    events.iter().find_map(|e| match &e.event {
        Some(pb::exec_event::Event::Started(s)) => Some(s.pod_name.clone()),
        _ => None,
    })
}

/// Runs `line` through the gateway: the pod it started in, or the status it was refused with.
async fn run(c: &AirlockClient, ns: &str, name: &str, line: &str) -> Result<String, airlock_api::tonic::Status> {
    let mut s = c.exec(AirlockClient::shell(ns, name, line)).await?;
    let mut events = Vec::new();
    while let Some(ev) = s.message().await? {
        events.push(ev);
    }
    Ok(started_pod(&events).expect("a Started event"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_refuses_a_pod_the_sandbox_does_not_own() {
    let kube = client().await;
    let ns = TestNamespace::new(&kube, "gw-owner").await;
    let n = ns.name.clone();
    let gw = gateway(&kube, &n, None).await;
    let token = token_for(&kube, &n, "tester").await;
    let c = AirlockClient::connect(&gw.addr, Some(token)).await.expect("connect");
    sandboxes::ready_sandbox(&kube, &n, "owner").await;
    // Another pod, not owned by the Sandbox, that an exec could run in: container "sandbox",
    // the agent at the path the gateway runs.
    run_pod(
        &kube,
        &n,
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim"},
            "spec": {"runtimeClassName": RUNC, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
                     "containers": [{"name": "sandbox", "image": SANDBOX_AGENT_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"]}]}
        }),
    )
    .await;

    // Control: the real pod takes commands.
    assert_eq!(run(&c, &n, "owner", "touch /tmp/control").await.expect("exec in the real pod"), "owner");
    assert_eq!(exec(&kube, &n, "owner", &["test", "-e", "/tmp/control"]).await.exit_code, 0);

    // status.podName pointed at the victim (status subresource, as admin). The operator
    // rewrites the status from the pod it owns, so it may put it back at any time: each round
    // re-points it and execs at once; an exec that still lands in "owner" saw the repaired
    // status and the round is repeated. Every exec that read "victim" must be refused.
    let status_api = sandboxes::raw(&kube, &n);
    let mut refused = 0;
    for round in 0..30 {
        status_api
            .patch_status("owner", &PatchParams::default(), &Patch::Merge(json!({"status": {"podName": "victim"}})))
            .await
            .expect("patching status.podName");
        match run(&c, &n, "owner", &format!("touch /tmp/hijack-{round}")).await {
            Err(e) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                assert!(e.message().starts_with(&format!("sandbox {n}/owner: pod victim ")), "{}", e.message());
                assert!(e.message().contains("this sandbox"), "{}", e.message());
                refused += 1;
                if refused >= 2 {
                    break;
                }
            }
            Ok(pod) => assert_eq!(pod, "owner", "an exec of sandbox owner ran in pod {pod}"),
        }
    }
    assert!(refused >= 1, "the operator repaired the status before every exec: nothing was tested");
    // File calls are refused the same way while the status is wrong.
    status_api
        .patch_status("owner", &PatchParams::default(), &Patch::Merge(json!({"status": {"podName": "victim"}})))
        .await
        .expect("patching status.podName");
    if let Err(e) = c.upload_bytes(&n, "owner", "/tmp/hijack-file", 0o644, airlock_api::bytes::Bytes::from_static(b"x")).await {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    }
    // The victim is untouched.
    let ls = exec(&kube, &n, "victim", &["ls", "-a", "/tmp"]).await;
    assert_eq!(ls.exit_code, 0, "{ls:?}");
    assert!(!ls.stdout.contains("hijack"), "files the refused calls would have made: {ls:?}");
    ns.cleanup().await;
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it (PEM).
fn ca_and_cert(cn: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, cn);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Writes tls.crt/tls.key into `dir` from the Secret as the API server returns it (the way the
/// kubelet projects it into the gateway's pod).
async fn project(secrets: &Api<Secret>, name: &str, dir: &std::path::Path) {
    let s = secrets.get(name).await.expect("reading the TLS Secret");
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = s.data.expect("Secret data");
    for k in ["tls.crt", "tls.key"] {
        let tmp = dir.join(format!(".{k}.tmp"));
        std::fs::write(&tmp, &data[k].0).unwrap();
        std::fs::rename(&tmp, dir.join(k)).unwrap();
    }
}

async fn put_secret(secrets: &Api<Secret>, name: &str, cert: &str, key: &str) {
    let mut data = BTreeMap::new();
    data.insert("tls.crt".to_string(), ByteString(cert.as_bytes().to_vec()));
    data.insert("tls.key".to_string(), ByteString(key.as_bytes().to_vec()));
    let s = Secret { metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() }, type_: Some("kubernetes.io/tls".into()), data: Some(data), ..Default::default() };
    match secrets.get_opt(name).await.unwrap() {
        None => {
            secrets.create(&PostParams::default(), &s).await.expect("creating the TLS Secret");
        }
        Some(_) => {
            secrets.replace(name, &PostParams::default(), &s).await.expect("updating the TLS Secret");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_end_to_end_with_a_renewed_certificate() {
    let kube = client().await;
    let ns = TestNamespace::new(&kube, "gw-tls").await;
    let n = ns.name.clone();
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &n);
    let dir = std::env::temp_dir().join(format!("airlock-e2e-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca1, cert1, key1) = ca_and_cert("airlock-e2e-ca-1");
    put_secret(&secrets, "gw-tls", &cert1, &key1).await;
    project(&secrets, "gw-tls", &dir).await;
    let mut files = TlsFiles::new(dir.join("tls.crt"), dir.join("tls.key"));
    files.reload_interval = Duration::from_secs(1);
    let gw = gateway(&kube, &n, Some(files)).await;
    let token = token_for(&kube, &n, "tester").await;
    let trust = |ca: &str| ClientTls { ca_pem: Some(ca.as_bytes().to_vec()), server_name: None };

    // Through TLS: create a Sandbox, exec in it, read a file back.
    let c = AirlockClient::connect_with(&gw.addr, Some(token.clone()), trust(&ca1)).await.expect("TLS connect with the CA");
    let req = pb::CreateSandboxRequest {
        namespace: n.clone(),
        name: "tls".into(),
        source: Some(pb::create_sandbox_request::Source::Image(airlock_e2e::SANDBOX_IMAGE.into())),
        resources: Some(pb::Resources { cpu: "50m".into(), memory: "128Mi".into(), ephemeral_storage: "64Mi".into() }),
        ttl_seconds: 1800,
        ..Default::default()
    };
    let sb = c.create_sandbox_ready(req, Duration::from_secs(180)).await.expect("CreateSandbox over TLS");
    assert!(sb.ready);
    let out = c.exec_collect(AirlockClient::shell(&n, "tls", "echo over-tls > /tmp/t; cat /tmp/t")).await.expect("exec over TLS");
    assert_eq!((out.exit_code, out.stdout.as_slice()), (0, b"over-tls\n".as_slice()));

    // Plaintext against the TLS port, TLS without the CA (system roots), and a CA with an
    // http:// address all fail.
    let plain = gw.addr.replace("https://", "http://");
    match AirlockClient::connect(&plain, Some(token.clone())).await {
        Err(_) => {}
        Ok(pc) => assert!(pc.list_sandboxes(&n, "").await.is_err(), "plaintext call answered by the TLS port"),
    }
    let untrusted = AirlockClient::connect(&gw.addr, Some(token.clone())).await;
    assert!(untrusted.is_err(), "a certificate of an unknown CA was accepted");
    assert!(matches!(AirlockClient::connect_with(&plain, None, trust(&ca1)).await, Err(ClientError::TlsWithoutHttps(_))));

    // Renewal: a certificate from another CA lands in the Secret and then in the files; new
    // connections get it without a restart, the existing connection keeps working.
    let (ca2, cert2, key2) = ca_and_cert("airlock-e2e-ca-2");
    put_secret(&secrets, "gw-tls", &cert2, &key2).await;
    project(&secrets, "gw-tls", &dir).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let c2 = loop {
        if let Ok(c2) = AirlockClient::connect_with(&gw.addr, Some(token.clone()), trust(&ca2)).await {
            break c2;
        }
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate was never served");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    c2.get_sandbox(&n, "tls").await.expect("call over the renewed certificate");
    assert!(AirlockClient::connect_with(&gw.addr, Some(token.clone()), trust(&ca1)).await.is_err(), "the old certificate is still served");
    c.get_sandbox(&n, "tls").await.expect("the connection made before the renewal still works");

    let _ = std::fs::remove_dir_all(&dir);
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_classes_outside_the_allowed_list_are_refused() {
    let kube = client().await;
    let ns = TestNamespace::new(&kube, "gw-rc").await;
    let n = ns.name.clone();
    let gw = gateway(&kube, &n, None).await;
    let token = token_for(&kube, &n, "tester").await;
    let c = AirlockClient::connect(&gw.addr, Some(token)).await.expect("connect");
    let req = |rc: &str| pb::CreateSandboxRequest {
        namespace: n.clone(),
        name: "rc".into(),
        source: Some(pb::create_sandbox_request::Source::Image(airlock_e2e::SANDBOX_IMAGE.into())),
        runtime_class_name: rc.into(),
        ..Default::default()
    };
    let e = c.create_sandbox(req(RUNC)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "runtime_class_name: RuntimeClass \"runc\" is not allowed (allowed: gvisor, or leave it empty for the default)");
    let (sbx, _) = sandboxes::list(&kube, &n).await;
    assert!(sbx.is_empty(), "a refused request created {} Sandbox(es)", sbx.len());
    // The allowed class and the default are accepted.
    c.create_sandbox(req(GVISOR)).await.expect("gvisor is allowed");
    let mut r = req("");
    r.name = "default".into();
    c.create_sandbox(r).await.expect("the default is allowed");
    ns.cleanup().await;
}

/// Against the gateway the chart installed (`make install` with this version): its defaults
/// are token audience `airlock` and only the operator's default RuntimeClass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_gateway_wants_tokens_for_its_audience() {
    let kube = client().await;
    let ns = TestNamespace::new(&kube, "gw-aud").await;
    let n = ns.name.clone();
    let (addr, pod) = release::in_cluster_gateway(&kube).await;
    let args: Vec<String> = pod.spec.as_ref().unwrap().containers[0].args.clone().unwrap_or_default();
    assert!(args.iter().any(|a| a == "--token-audience=airlock"), "installed gateway args: {args:?}");

    let good = token_for(&kube, &n, "tester").await;
    let api_server_token = token_with_audiences(&kube, &n, "tester", vec![]).await;
    let bad = AirlockClient::connect(&addr, Some(api_server_token)).await.expect("connect");
    let e = bad.list_sandboxes(&n, "").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("--audience airlock"), "{}", e.message());

    let ok = AirlockClient::connect(&addr, Some(good)).await.expect("connect");
    ok.list_sandboxes(&n, "").await.expect("a token minted for audience airlock is accepted");
    // The chart passes the operator's default RuntimeClass (gvisor on the local cluster) only.
    let e = ok
        .create_sandbox(pb::CreateSandboxRequest {
            namespace: n.clone(),
            name: "rc".into(),
            source: Some(pb::create_sandbox_request::Source::Image(airlock_e2e::SANDBOX_IMAGE.into())),
            runtime_class_name: RUNC.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("runtime_class_name: RuntimeClass \"runc\" is not allowed (allowed: gvisor"), "{}", e.message());
    ns.cleanup().await;
}
