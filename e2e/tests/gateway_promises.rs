//! What the README promises about the installed gateway (Helm release `airlock` in
//! `airlock-system`, auth mode `kubernetes`: TokenReview + SubjectAccessReview), checked through
//! it with ServiceAccount tokens minted for its audience:
//! - the `airlock` CLI end to end (run, exec exit codes, cp both ways, ls, extend, delete);
//! - the chart's roles aggregated into the built-in `edit` and `view` ClusterRoles decide who may
//!   do what, with nothing but ordinary RoleBindings;
//! - `CreateSandbox` with `wait_ready` past the call's deadline: DEADLINE_EXCEEDED naming the
//!   sandbox, and the sandbox deleted, as the proto documents;
//! - RunCode NODE in an image with Node.js (`airlock.local/sandbox-node:0.1.0`).
//!
//! The gateway is reached through its Service (`airlock_e2e::gw::Relay::to_service`: Service IPs
//! are not routed from this host). None of these tests restarts it.

use std::time::Duration;

use airlock_crds::Sandbox;
use airlock_e2e::gw::{self, Relay, bound_token, cli};
use airlock_e2e::release::SYSTEM_NS;
use airlock_e2e::sandboxes::token_for;
use airlock_e2e::{SANDBOX_IMAGE, TestNamespace, client, wait_for};
use airlock_api::bytes::Bytes;
use airlock_api::client::AirlockClient;
use airlock_api::proto::v1 as pb;
use airlock_api::tonic::{Code, Status};
use kube::Client;
use kube::api::Api;
use sha2::{Digest, Sha256};

async fn installed_gateway(kube: &Client) -> Relay {
    Relay::to_service(kube, SYSTEM_NS, gw::GATEWAY, gw::GATEWAY_PORT).await
}

fn request(ns: &str, name: &str, cpu: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        namespace: ns.into(),
        name: name.into(),
        source: Some(pb::create_sandbox_request::Source::Image(SANDBOX_IMAGE.into())),
        resources: Some(pb::Resources { cpu: cpu.into(), memory: "128Mi".into(), ephemeral_storage: "64Mi".into() }),
        ttl_seconds: 1800,
        ..Default::default()
    }
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `status.expiresAt` of a Sandbox, in Unix seconds.
async fn expires_at(api: &Api<Sandbox>, name: &str) -> Option<i64> {
    api.get(name).await.unwrap_or_else(|e| panic!("reading {name}: {e}")).status.and_then(|s| s.expires_at).map(|t| t.0.as_second())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_end_to_end() {
    let kube = client().await;
    let ns = TestNamespace::new(&kube, "cli").await;
    let n = ns.name.as_str();
    let relay = installed_gateway(&kube).await;
    let addr = relay.url();
    let token = token_for(&kube, n, "agent").await;
    let sandboxes: Api<Sandbox> = Api::namespaced(kube.clone(), n);
    let dir = std::env::temp_dir().join(format!("airlock-e2e-{n}"));
    std::fs::create_dir_all(&dir).unwrap();

    // run: create, one command (its code and both streams come back), delete.
    let r = cli(&addr, &token, n, &["run", "--image", SANDBOX_IMAGE, "--cpu", "50m", "--memory", "128Mi", "--", "sh", "-c", "echo run-out; echo run-err >&2; exit 7"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (Some(7), "run-out\n"), "{r:?}");
    assert!(r.stderr.contains("run-err"), "{r:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = sandboxes.list(&Default::default()).await.unwrap().items;
        if left.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "`airlock run` left {} Sandbox(es)", left.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // create, exec with its exit code.
    let r = cli(&addr, &token, n, &["create", "--name", "cli", "--image", SANDBOX_IMAGE, "--ttl", "600", "--cpu", "50m", "--memory", "128Mi"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "cli\n"), "{r:?}");
    let r = cli(&addr, &token, n, &["exec", "cli", "--", "sh", "-c", "echo out; exit 3"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (Some(3), "out\n"), "{r:?}");

    // cp in: 3 MiB of random bytes, checked inside the sandbox and read back.
    let mut data = vec![0u8; 3 << 20];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data).unwrap();
    let local = dir.join("in.bin");
    std::fs::write(&local, &data).unwrap();
    let r = cli(&addr, &token, n, &["cp", "-p", local.to_str().unwrap(), "cli:/tmp/up/in.bin"]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let r = cli(&addr, &token, n, &["exec", "cli", "--", "sha256sum", "/tmp/up/in.bin"]).await;
    assert_eq!(r.stdout.split_whitespace().next(), Some(sha(&data).as_str()), "{r:?}");
    let back = dir.join("back.bin");
    let r = cli(&addr, &token, n, &["cp", "cli:/tmp/up/in.bin", back.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(sha(&std::fs::read(&back).unwrap()), sha(&data), "the file read back differs");
    // cp out: random bytes made in the sandbox, checked against its own checksum.
    let r = cli(&addr, &token, n, &["exec", "cli", "--", "sh", "-c", "head -c 3145728 /dev/urandom > /tmp/out.bin && sha256sum /tmp/out.bin"]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let remote = r.stdout.split_whitespace().next().expect("a checksum").to_string();
    let out = dir.join("out.bin");
    let r = cli(&addr, &token, n, &["cp", "cli:/tmp/out.bin", out.to_str().unwrap()]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let got = std::fs::read(&out).unwrap();
    assert_eq!((got.len(), sha(&got)), (3 << 20, remote), "downloaded file");

    // ls: the file with its size and mode, the directory as a directory.
    let r = cli(&addr, &token, n, &["ls", "cli:/tmp"]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("-0644 ") && l.contains(" 3145728 ") && l.ends_with(" out.bin")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with('d') && l.ends_with(" up")), "{lines:?}");

    // extend: status.expiresAt (as the operator reports it) moves by the extension.
    let before = wait_for(&sandboxes, "cli", Duration::from_secs(60), "status.expiresAt", |s| {
        s.and_then(|s| s.status.as_ref()).and_then(|st| st.expires_at.as_ref()).is_some()
    })
    .await;
    let before = before.and_then(|s| s.status).and_then(|s| s.expires_at).map(|t| t.0.as_second()).unwrap();
    let r = cli(&addr, &token, n, &["extend", "cli", "600"]).await;
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.starts_with("cli time-to-live now ends "), "{r:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut now = expires_at(&sandboxes, "cli").await;
    while now != Some(before + 600) {
        assert!(tokio::time::Instant::now() < deadline, "status.expiresAt {now:?}, want {before} + 600");
        tokio::time::sleep(Duration::from_millis(250)).await;
        now = expires_at(&sandboxes, "cli").await;
    }

    // delete: the Sandbox is gone (NotFound for the API server and for the CLI).
    let r = cli(&addr, &token, n, &["delete", "cli"]).await;
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "deleted cli\n"), "{r:?}");
    wait_for(&sandboxes, "cli", Duration::from_secs(60), "Sandbox gone", |s| s.is_none()).await;
    let r = cli(&addr, &token, n, &["get", "cli"]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("NotFound"), "{r:?}");

    let _ = std::fs::remove_dir_all(&dir);
    ns.cleanup().await;
}

fn denied(what: &str, r: Result<impl std::fmt::Debug, Status>, want: &str) {
    match r {
        Err(e) if e.code() == Code::PermissionDenied && e.message().contains(want) => {}
        other => panic!("{what}: {other:?}, want PERMISSION_DENIED naming {want:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_edit_and_view_roles_decide() {
    let kube = client().await;
    let ns = TestNamespace::new(&kube, "roles").await;
    let n = ns.name.as_str();
    let relay = installed_gateway(&kube).await;
    // Plain RoleBindings to the built-in ClusterRoles: the chart's roles reach them only by
    // aggregation.
    let editor = AirlockClient::connect(&relay.url(), Some(bound_token(&kube, n, "editor", Some("edit"), "create").await)).await.unwrap();
    let viewer = AirlockClient::connect(&relay.url(), Some(bound_token(&kube, n, "viewer", Some("view"), "list").await)).await.unwrap();
    let nobody = AirlockClient::connect(&relay.url(), Some(bound_token(&kube, n, "nobody", None, "").await)).await.unwrap();

    // edit: create and wait, exec, files, extend.
    let sb = editor.create_sandbox_ready(request(n, "ed", "50m"), Duration::from_secs(180)).await.unwrap_or_else(|e| panic!("editor creates: {e:?}"));
    assert!(sb.ready, "{sb:?}");
    let o = editor.exec_collect(AirlockClient::shell(n, "ed", "echo edit-ok")).await.expect("editor execs");
    assert_eq!((o.stdout.as_slice(), o.exit_code), (b"edit-ok\n".as_slice(), 0));
    editor.upload_bytes(n, "ed", "/tmp/f", 0o644, Bytes::from_static(b"file")).await.expect("editor uploads");
    assert_eq!(editor.download_bytes(n, "ed", "/tmp/f").await.expect("editor downloads"), b"file");
    editor.extend_sandbox(n, "ed", 60).await.expect("editor extends");

    // view: list and get only.
    let listed = viewer.list_sandboxes(n, "").await.expect("viewer lists");
    assert_eq!(listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["ed"]);
    assert!(viewer.get_sandbox(n, "ed").await.expect("viewer gets").ready);
    denied("viewer creates", viewer.create_sandbox(request(n, "vw", "50m")).await, &format!("create sandboxes in namespace {n}"));
    denied("viewer execs", viewer.exec_collect(AirlockClient::shell(n, "ed", "true")).await, &format!("create sandboxes/exec in namespace {n}"));
    denied("viewer downloads", viewer.download_bytes(n, "ed", "/tmp/f").await, &format!("get sandboxes/files in namespace {n}"));
    denied("viewer uploads", viewer.upload_bytes(n, "ed", "/tmp/g", 0o644, Bytes::from_static(b"x")).await, "sandboxes/files");
    denied("viewer extends", viewer.extend_sandbox(n, "ed", 60).await, &format!("update sandboxes in namespace {n}"));
    denied("viewer deletes", viewer.delete_sandbox(n, "ed").await, &format!("delete sandboxes in namespace {n}"));

    // No binding: nothing.
    denied("unbound lists", nobody.list_sandboxes(n, "").await, &format!("list sandboxes in namespace {n}"));
    denied("unbound gets", nobody.get_sandbox(n, "ed").await, &format!("get sandboxes in namespace {n}"));
    denied("unbound creates", nobody.create_sandbox(request(n, "nb", "50m")).await, &format!("create sandboxes in namespace {n}"));

    // Nothing the refused calls asked for exists; the editor deletes its sandbox.
    let names: Vec<String> = editor.list_sandboxes(n, "").await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["ed"]);
    assert_eq!(editor.exec_collect(AirlockClient::argv(n, "ed", ["test", "-e", "/tmp/g"])).await.unwrap().exit_code, 1, "the viewer's upload landed");
    editor.delete_sandbox(n, "ed").await.expect("editor deletes");
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_wait_past_the_deadline_is_deadline_exceeded_and_cleans_up() {
    let kube = client().await;
    let ns = TestNamespace::new(&kube, "deadline").await;
    let n = ns.name.clone();
    let relay = installed_gateway(&kube).await;
    let c = AirlockClient::connect(&relay.url(), Some(token_for(&kube, &n, "agent").await)).await.unwrap();
    let sandboxes: Api<Sandbox> = Api::namespaced(kube.clone(), &n);

    // 3 CPUs on the 2-CPU node (under the chart's maximum of 4): the pod can never be scheduled.
    let call = {
        let (c, n) = (c.clone(), n.clone());
        tokio::spawn(async move { c.create_sandbox_ready(request(&n, "stuck", "3"), Duration::from_secs(20)).await })
    };
    // While the call waits: the Sandbox exists and is not Ready because its pod cannot schedule.
    let seen = wait_for(&sandboxes, "stuck", Duration::from_secs(20), "Ready=False reason Unschedulable", |s| {
        s.and_then(|s| s.condition(airlock_crds::condition::READY)).is_some_and(|c| c.status == "False" && c.reason == "Unschedulable")
    })
    .await;
    assert!(seen.is_some());
    let err = tokio::time::timeout(Duration::from_secs(60), call).await.expect("the call ended").expect("call task").unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().starts_with(&format!("sandbox {n}/stuck did not become ready within ")), "{}", err.message());
    // Deleted, as documented for wait_ready (DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
    // FAILED_PRECONDITION): NOT_FOUND, and its pod gone too.
    wait_for(&sandboxes, "stuck", Duration::from_secs(60), "the Sandbox deleted", |s| s.is_none()).await;
    assert_eq!(c.get_sandbox(&n, "stuck").await.unwrap_err().code(), Code::NotFound);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(kube.clone(), &n);
    wait_for(&pods, "stuck", Duration::from_secs(60), "the pod deleted", |p| p.is_none()).await;
    ns.cleanup().await;
}

/// Image with Debian's Node.js (and python3), built by e2e/lib/images.sh.
const NODE_IMAGE: &str = "airlock.local/sandbox-node:0.1.0";

/// RunCode NODE (the README: "RunCode (Python, Node, shell)") in an image that has node: its
/// output on the right streams and its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_code_node() {
    let kube = client().await;
    let ns = TestNamespace::new(&kube, "node").await;
    let n = ns.name.as_str();
    let relay = installed_gateway(&kube).await;
    let c = AirlockClient::connect(&relay.url(), Some(token_for(&kube, n, "agent").await)).await.unwrap();
    let mut req = request(n, "node", "100m");
    req.source = Some(pb::create_sandbox_request::Source::Image(NODE_IMAGE.into()));
    req.resources.as_mut().unwrap().memory = "256Mi".into();
    c.create_sandbox_ready(req, Duration::from_secs(180)).await.unwrap_or_else(|e| panic!("a sandbox of {NODE_IMAGE} (built by e2e/lib/images.sh): {e:?}"));
    let out = c
        .run_code(pb::RunCodeRequest {
            sandbox: airlock_api::client::sandbox_ref(n, "node"),
            language: pb::Language::Node as i32,
            code: "console.log(6 * 7, process.versions.node.split('.')[0] > 0); console.error('to stderr'); process.exitCode = 5".into(),
            ..Default::default()
        })
        .await
        .expect("RunCode NODE");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!((text(&out.stdout).as_str(), text(&out.stderr).as_str(), out.exit_code), ("42 true\n", "to stderr\n", 5), "{out:?}");
    ns.cleanup().await;
}
