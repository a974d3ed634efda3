//! Promises of the Sandbox spec and of the installed operator, held to the real cluster (issue
//! 18): `command` as the sandbox's main process (and what its exit does), `readOnlyRootFilesystem`,
//! `env` and `workingDir` with values that a shell or the kubelet would like to rewrite, the
//! operator's `/metrics`, `/healthz` and `/readyz`, and what `kubectl get/wait/explain` show for
//! Sandboxes. (`agentDelivery: InitContainer` and `crds.enabled=false` change the release, so they
//! are checked by `helm-lifecycle.sh`.)
//!
//! Assumes the release installed by `make install` (e2e/values-local.yaml). Execs go through an
//! exec gateway served in this process (the agent's exec path), or pods/exec where the test looks
//! at the container itself.

use std::time::Duration;

use airlock_crds::{Phase, Sandbox, condition};
use airlock_e2e::promises::{Gateway, http_get, kubectl, logs_containing, metric, wait_phase};
use airlock_e2e::release::{OPERATOR_SELECTOR, SYSTEM_NS, operator_ready};
use airlock_e2e::sandboxes::{count, create};
use airlock_e2e::{GVISOR, TestNamespace, client, exec, wait_for};
use airlock_api::bytes::Bytes;
use airlock_api::client::AirlockClient;
use airlock_api::tonic::Code;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Room for Python (the sandbox image's interpreter) on the two-CPU node.
fn python_room() -> serde_json::Value {
    json!({"cpu": "50m", "memory": "128Mi"})
}

async fn wait_ready(c: &Client, ns: &str, name: &str) -> Sandbox {
    let api: Api<Sandbox> = Api::namespaced(c.clone(), ns);
    wait_for(&api, name, READY_TIMEOUT, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await.expect("the Sandbox exists")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The main process: says it started (and who its parent is), leaves a file for an exec to find,
/// then waits for the test to ask it to end (the file /tmp/stop) and exits 3.
const MAIN: &str = "echo main-started ppid=$PPID; echo from-main > /tmp/main-marker; \
                    while [ ! -e /tmp/stop ]; do sleep 0.2; done; echo main-exiting; exit 3";

/// `command` (+ `args`) runs as the child of the agent (PID 1), its output is the pod's log, execs
/// still work beside it, and when it exits the sandbox ends: phase Failed, Ready=False with the
/// container's reason (`Error` and the exit code, or `Completed` for 0) and its last output, a
/// Warning event, and the pod is kept, not restarted or re-created.
#[tokio::test]
async fn command_is_the_main_process_and_its_exit_ends_the_sandbox() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "sf-cmd").await;
    let n = ns.name.as_str();
    let gw = Gateway::new(&c, n).await;
    create(&c, n, "main", json!({"command": ["sh", "-c"], "args": [MAIN], "resources": python_room()})).await.expect("create main");
    create(&c, n, "quick", json!({"command": ["sh", "-c", "echo quick-done"]})).await.expect("create quick");

    wait_ready(&c, n, "main").await;
    let logs = logs_containing(&c, n, "main", "main-started", READY_TIMEOUT).await;
    assert!(logs.contains("main-started ppid=1\n"), "the command is a child of PID 1 and writes the pod's log: {logs:?}");
    let pid1 = exec(&c, n, "main", &["cat", "/proc/1/cmdline"]).await;
    let argv: Vec<&str> = pid1.stdout.split('\0').filter(|s| !s.is_empty()).collect();
    let mut want = airlock_e2e::release::agent_argv(&c).await;
    want.extend(["sh", "-c", MAIN].map(String::from));
    assert_eq!(argv, want, "PID 1 is the agent running the command");
    assert_eq!(count(&gw.client, n, "main", &["sh", "-c", MAIN]).await, 1, "the main process runs");
    let marker = gw.client.exec_collect(AirlockClient::argv(n, "main", ["cat", "/tmp/main-marker"])).await.expect("exec beside the main process");
    assert_eq!((text(&marker.stdout), marker.exit_code), ("from-main\n".to_string(), 0));
    let pods: Api<Pod> = Api::namespaced(c.clone(), n);
    let pod_uid = pods.get("main").await.expect("pod").uid();

    // The main process exits 3: the sandbox ends.
    let stop = gw.client.exec_collect(AirlockClient::argv(n, "main", ["touch", "/tmp/stop"])).await.expect("touch /tmp/stop");
    assert_eq!(stop.exit_code, 0, "{stop:?}");
    let s = wait_phase(&c, n, "main", Phase::Failed, Duration::from_secs(120)).await;
    let ready = s.condition(condition::READY).expect("Ready condition");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Error"), "{ready:?}");
    assert!(ready.message.contains("exit code 3") && ready.message.contains("main-exiting"), "exit code and last output: {ready:?}");
    assert_eq!(s.condition(condition::STALLED).map(|c| c.status.as_str()), Some("True"), "kstatus: stalled");
    let events: Api<Event> = Api::namespaced(c.clone(), n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = events.list(&ListParams::default()).await.expect("events").items;
        let failed = list.iter().any(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("main")
                && e.reason.as_deref() == Some("Failed")
                && e.type_.as_deref() == Some("Warning")
                && e.note.as_deref().is_some_and(|m| m.contains("exit code 3"))
        });
        if failed {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Warning event Failed naming exit code 3 on the Sandbox");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pod = pods.get("main").await.expect("the finished pod is kept");
    assert_eq!(pod.uid(), pod_uid, "not re-created");
    let st = pod.status.as_ref().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.container_statuses.as_ref().unwrap()[0].restart_count, 0, "not restarted");
    let refused = gw.client.exec_collect(AirlockClient::argv(n, "main", ["true"])).await.expect_err("no exec in an ended sandbox");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // A command that exits 0 ends it too, as Completed.
    let q = wait_phase(&c, n, "quick", Phase::Failed, READY_TIMEOUT).await;
    let r = q.condition(condition::READY).expect("Ready condition");
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Completed"), "{r:?}");
    assert!(r.message.contains("exit code 0"), "{r:?}");
    logs_containing(&c, n, "quick", "quick-done\n", Duration::from_secs(30)).await;
    ns.cleanup().await;
}

/// Writes a file at each path given; prints `PATH ok` or `PATH <error>` per path.
const WRITE_PROBE: &str = "import sys\nfor p in sys.argv[1:]:\n  try:\n    open(p, 'w').write('x')\n    print(p, 'ok')\n  except OSError as e:\n    print(p, e.strerror)\n";

/// `readOnlyRootFilesystem: true`: writing into the image's filesystem fails (EROFS) while `/tmp`
/// stays writable, for execs and for file uploads; the same writes succeed in a sandbox without it.
#[tokio::test]
async fn read_only_root_filesystem_refuses_writes_to_the_image_but_not_to_tmp() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "sf-ro").await;
    let n = ns.name.as_str();
    let gw = Gateway::new(&c, n).await;
    create(&c, n, "ro", json!({"readOnlyRootFilesystem": true, "resources": python_room()})).await.expect("create ro");
    create(&c, n, "rw", json!({"resources": python_room()})).await.expect("create rw");
    wait_ready(&c, n, "ro").await;
    wait_ready(&c, n, "rw").await;

    let probe = |name: &'static str| {
        gw.client.exec_collect(AirlockClient::argv(n, name, ["python3", "-c", WRITE_PROBE, "/probe", "/usr/local/probe", "/tmp/probe"]))
    };
    let ro = probe("ro").await.expect("probe ro");
    assert_eq!(text(&ro.stdout), "/probe Read-only file system\n/usr/local/probe Read-only file system\n/tmp/probe ok\n", "stderr: {}", text(&ro.stderr));
    let rw = probe("rw").await.expect("probe rw");
    assert_eq!(text(&rw.stdout), "/probe ok\n/usr/local/probe ok\n/tmp/probe ok\n", "control; stderr: {}", text(&rw.stderr));

    // File uploads (the agent writes a temporary file beside the target, then renames it).
    let data = Bytes::from_static(b"uploaded\n");
    gw.client.upload_bytes(n, "ro", "/tmp/up.txt", 0o644, data.clone()).await.expect("upload into /tmp of a read-only root");
    assert_eq!(gw.client.download_bytes(n, "ro", "/tmp/up.txt").await.expect("download"), b"uploaded\n");
    let refused = gw.client.upload_bytes(n, "ro", "/up.txt", 0o644, data.clone()).await.expect_err("upload into the read-only root");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("/up.txt") && refused.message().contains("Read-only file system"), "says why: {refused:?}");
    gw.client.upload_bytes(n, "rw", "/up.txt", 0o644, data).await.expect("control: upload to / without readOnlyRootFilesystem");

    let pods: Api<Pod> = Api::namespaced(c.clone(), n);
    for (name, want) in [("ro", true), ("rw", false)] {
        let spec = pods.get(name).await.expect("pod").spec.unwrap();
        let sc = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(want), "{name}");
        let tmp = spec.containers[0].volume_mounts.iter().flatten().any(|m| m.mount_path == "/tmp");
        assert_eq!(tmp, want, "{name}: /tmp is a volume exactly with a read-only root");
    }
    ns.cleanup().await;
}

/// Prints one line `SHOW cwd:HEX arg:HEX... env:NAME:HEX|-...`: the working directory, argv[1:]
/// and the variables of [`ENV`], each UTF-8 in hex (python3-minimal has no json module).
const SHOW: &str = "import os, sys\n\
h = lambda s: s.encode('utf-8', 'surrogateescape').hex()\n\
names = ['FIRST', 'SPACES', 'QUOTES', 'DOLLARS', 'REF', 'ESCAPED_REF', 'BACKSLASHES', 'NEWLINES', 'UNICODE', 'EQUALS', 'EMPTY']\n\
words = ['cwd:' + h(os.getcwd())] + ['arg:' + h(a) for a in sys.argv[1:]]\n\
words += ['env:' + k + ':' + (h(os.environ[k]) if k in os.environ else '-') for k in names]\n\
print('SHOW ' + ' '.join(words), flush=True)\n";
/// The same, then waits (the sandbox's main process must keep running).
fn show_and_wait() -> String {
    format!("{SHOW}import signal\nsignal.pause()\n")
}
/// Values a shell, a YAML/JSON layer or the kubelet's `$(VAR)` expansion could rewrite.
const ENV: &[(&str, &str)] = &[
    ("FIRST", "one"),
    ("SPACES", "  two  words  "),
    ("QUOTES", "\"double\" 'single' `back`"),
    ("DOLLARS", "a$$b $HOME ${HOME} $1 $"),
    ("REF", "$(FIRST)"),
    ("ESCAPED_REF", "$$(FIRST)"),
    ("BACKSLASHES", "C:\\dir\\n \\t \\\\"),
    ("NEWLINES", "line1\nline2\n"),
    ("UNICODE", "héllo ✓ 日本 🙂"),
    ("EQUALS", "k=v=w"),
    ("EMPTY", ""),
];
const ARGS: &[&str] = &["$$ $(FIRST) \"q\" 'x'", "", "  spaced  ", "é✓"];
const WORKDIR: &str = "/tmp/work dir";

/// What [`SHOW`] printed.
#[derive(Debug, Default)]
struct Shown {
    cwd: String,
    argv: Vec<String>,
    env: std::collections::BTreeMap<String, Option<String>>,
}

fn parse_show(out: &str) -> Shown {
    let line = out.lines().find_map(|l| l.strip_prefix("SHOW ")).unwrap_or_else(|| panic!("no SHOW line in {out:?}"));
    let unhex = |h: &str| String::from_utf8(hex::decode(h).unwrap_or_else(|e| panic!("{h:?}: {e}"))).expect("UTF-8");
    let mut shown = Shown::default();
    for word in line.split(' ') {
        if let Some(h) = word.strip_prefix("cwd:") {
            shown.cwd = unhex(h);
        } else if let Some(h) = word.strip_prefix("arg:") {
            shown.argv.push(unhex(h));
        } else if let Some((k, h)) = word.strip_prefix("env:").and_then(|kv| kv.split_once(':')) {
            shown.env.insert(k.to_string(), (h != "-").then(|| unhex(h)));
        } else {
            panic!("unexpected word {word:?} in {line:?}");
        }
    }
    shown
}

/// What [`SHOW`] printed, against the spec: mismatches, one line each.
fn mismatches(what: &str, shown: &Shown, cwd: &str, argv: Option<&[&str]>) -> Vec<String> {
    let mut bad = Vec::new();
    if shown.cwd != cwd {
        bad.push(format!("{what}: cwd {:?} (want {cwd:?})", shown.cwd));
    }
    if let Some(argv) = argv
        && shown.argv != argv
    {
        bad.push(format!("{what}: argv {:?} (want {argv:?})", shown.argv));
    }
    for (k, v) in ENV {
        let got = shown.env.get(*k).cloned().flatten();
        if got.as_deref() != Some(*v) {
            bad.push(format!("{what}: {k}={got:?} (want {v:?})"));
        }
    }
    bad
}

/// `env` and `workingDir` reach the main process and every exec (whose working directory defaults
/// to the sandbox's), with `$`, `$(VAR)`, quotes, backslashes, newlines and unicode intact, and so
/// do the words of `command`/`args`.
#[tokio::test]
async fn env_and_working_dir_reach_the_main_process_and_execs_as_written() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "sf-env").await;
    let n = ns.name.as_str();
    let gw = Gateway::new(&c, n).await;
    let env: Vec<_> = ENV.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
    let script = show_and_wait();
    let mut command = vec!["python3", "-c", script.as_str()];
    command.extend_from_slice(ARGS);
    create(&c, n, "env", json!({"command": command, "env": env, "workingDir": WORKDIR, "resources": python_room()})).await.expect("create");
    wait_ready(&c, n, "env").await;

    let main = parse_show(&logs_containing(&c, n, "env", "SHOW ", READY_TIMEOUT).await);
    let mut bad = mismatches("main process", &main, WORKDIR, Some(ARGS));
    let o = gw.client.exec_collect(AirlockClient::argv(n, "env", ["python3", "-c", SHOW])).await.expect("exec");
    assert_eq!(o.exit_code, 0, "{o:?}");
    bad.extend(mismatches("exec", &parse_show(&text(&o.stdout)), WORKDIR, Some(&[])));
    // An exec's own cwd wins over the sandbox's.
    let mut req = AirlockClient::argv(n, "env", ["python3", "-c", SHOW]);
    req.cwd = "/".into();
    let o = gw.client.exec_collect(req).await.expect("exec with cwd");
    bad.extend(mismatches("exec with cwd /", &parse_show(&text(&o.stdout)), "/", None));
    assert!(bad.is_empty(), "{} mismatch(es):\n{}", bad.len(), bad.join("\n"));
    ns.cleanup().await;
}

/// The operator's HTTP port, as the chart exposes it: the metrics Service routes to the operator
/// pod; `/healthz` and `/readyz` (the pod's probes) answer 200; `/metrics` is OpenMetrics text with
/// the operator's metric names, and its reconcile counters grow when a Sandbox is reconciled.
#[tokio::test]
async fn operator_serves_metrics_health_and_readiness() {
    let c = client().await;
    let op = operator_ready(&c, Duration::from_secs(120)).await;
    let ip = op.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("operator pod IP");
    let ctr = &op.spec.as_ref().unwrap().containers[0];
    let port = ctr.ports.iter().flatten().find(|p| p.name.as_deref() == Some("http-metrics")).expect("container port http-metrics");
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        p.as_ref().and_then(|p| p.http_get.as_ref()).map(|h| {
            let port = match &h.port {
                IntOrString::String(s) => s.clone(),
                IntOrString::Int(i) => i.to_string(),
            };
            (h.path.clone().unwrap_or_default(), port)
        })
    };
    assert_eq!(probe(&ctr.liveness_probe), Some(("/healthz".to_string(), "http-metrics".to_string())), "liveness probe");
    assert_eq!(probe(&ctr.readiness_probe), Some(("/readyz".to_string(), "http-metrics".to_string())), "readiness probe");

    // The chart's metrics Service selects the operator pod on that port.
    let svc = Api::<Service>::namespaced(c.clone(), SYSTEM_NS).get("airlock-operator-metrics").await.expect("Service airlock-operator-metrics");
    let sp = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!((sp.name.as_deref(), sp.port), (Some("http-metrics"), port.container_port), "{sp:?}");
    let slices = Api::<EndpointSlice>::namespaced(c.clone(), SYSTEM_NS)
        .list(&ListParams::default().labels("kubernetes.io/service-name=airlock-operator-metrics"))
        .await
        .expect("EndpointSlices");
    let addresses: Vec<String> = slices.items.iter().flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone())).collect();
    assert_eq!(addresses, std::slice::from_ref(&ip), "the Service's endpoint is the operator pod ({})", OPERATOR_SELECTOR);

    let addr = format!("{ip}:{}", port.container_port);
    let health = http_get(&addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"), "{health:?}");
    let ready = http_get(&addr, "/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ok (leader)\n"), "the only replica leads: {ready:?}");
    let missing = http_get(&addr, "/no-such-page").await;
    assert_eq!(missing.status, 404, "{missing:?}");

    let before = http_get(&addr, "/metrics").await;
    assert_eq!(before.status, 200, "{before:?}");
    assert!(before.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")), "{:?}", before.headers);
    assert!(before.body.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF");
    for series in [
        "airlock_operator_reconciles_total",
        "airlock_operator_reconcile_duration_seconds_count",
        "airlock_operator_reconcile_duration_seconds_sum",
        "airlock_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"}",
        "airlock_operator_sandboxes{phase=\"Ready\"}",
        "airlock_operator_sandboxes{phase=\"Failed\"}",
        "airlock_operator_leader",
        "airlock_operator_agent_bundles_replaced_total",
    ] {
        assert!(metric(&before.body, series).is_some(), "{series} in /metrics:\n{}", before.body);
    }
    assert_eq!(metric(&before.body, "airlock_operator_leader"), Some(1.0));
    let reconciles = metric(&before.body, "airlock_operator_reconciles_total").unwrap();
    let durations = metric(&before.body, "airlock_operator_reconcile_duration_seconds_count").unwrap();

    let ns = TestNamespace::new(&c, "sf-metrics").await;
    create(&c, &ns.name, "counted", json!({})).await.expect("create");
    wait_ready(&c, &ns.name, "counted").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = http_get(&addr, "/metrics").await;
        let r = metric(&now.body, "airlock_operator_reconciles_total").unwrap_or(0.0);
        let d = metric(&now.body, "airlock_operator_reconcile_duration_seconds_count").unwrap_or(0.0);
        let ready = metric(&now.body, "airlock_operator_sandboxes{phase=\"Ready\"}").unwrap_or(0.0);
        if r > reconciles && d > durations && ready >= 1.0 {
            eprintln!("reconciles {reconciles} -> {r}, durations {durations} -> {d}, Ready sandboxes {ready}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reconciles {reconciles} -> {r}, durations {durations} -> {d}, Ready sandboxes {ready}: the counters did not grow with a reconciled Sandbox"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ns.cleanup().await;
}

/// Whitespace-separated cells of each line of a `kubectl get` table.
fn table(out: &str) -> Vec<Vec<String>> {
    out.lines().filter(|l| !l.trim().is_empty()).map(|l| l.split_whitespace().map(String::from).collect()).collect()
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The description the CRD (generated from the Rust doc comments) gives a field, e.g.
/// `spec/properties/command`.
fn crd_description(path: &str) -> String {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(Sandbox::crd()).expect("CRD as JSON");
    let pointer = format!("/spec/versions/0/schema/openAPIV3Schema/properties/{path}/description");
    crd.pointer(&pointer).and_then(|d| d.as_str()).unwrap_or_else(|| panic!("no description at {pointer}")).to_string()
}

/// `kubectl get sbx` shows the CRD's printer columns with a Ready sandbox's values (and the
/// priority-1 ones with `-o wide`), `kubectl wait --for=condition=Ready` returns 0 for a ready
/// sandbox and times out non-zero for one that cannot become ready, and `kubectl explain` shows the
/// fields' descriptions.
#[tokio::test]
async fn kubectl_get_wait_and_explain_sandboxes() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "sf-kubectl").await;
    let n = ns.name.as_str();
    create(&c, n, "good", json!({})).await.expect("create good");
    create(&c, n, "stuck", json!({"image": "airlock.local/no-such-image:0", "imagePullPolicy": "Never"})).await.expect("create stuck");

    let waited = kubectl(&["wait", "--for=condition=Ready", "sbx/good", "-n", n, "--timeout=180s"]).await;
    assert!(waited.ok(), "{waited:?}");
    assert_eq!(waited.stdout.trim(), "sandbox.airlock.dev/good condition met");
    // `stuck` cannot become ready: its image is not on the node and may not be pulled.
    let api: Api<Sandbox> = Api::namespaced(c.clone(), n);
    wait_for(&api, "stuck", READY_TIMEOUT, "Ready=False reason ErrImageNeverPull", |s| {
        s.and_then(|s| s.condition(condition::READY)).is_some_and(|r| r.status == "False" && r.reason == "ErrImageNeverPull")
    })
    .await;
    let timed_out = kubectl(&["wait", "--for=condition=Ready", "sbx/stuck", "-n", n, "--timeout=10s"]).await;
    assert!(!timed_out.ok() && timed_out.code.is_some(), "kubectl wait must fail for a sandbox that cannot become ready: {timed_out:?}");
    assert!(timed_out.stderr.contains("timed out waiting for the condition"), "{timed_out:?}");

    let good = api.get("good").await.expect("good");
    let stuck = api.get("stuck").await.expect("stuck");
    let expires = |s: &Sandbox| {
        serde_json::to_value(&s.status.as_ref().unwrap().expires_at).unwrap().as_str().expect("expiresAt set").to_string()
    };
    let got = kubectl(&["get", "sbx", "-n", n]).await;
    assert!(got.ok(), "{got:?}");
    let rows = table(&got.stdout);
    assert_eq!(rows[0], ["NAME", "PHASE", "RUNTIME", "AGE", "EXPIRES"], "{}", got.stdout);
    assert_eq!(rows.len(), 3, "{}", got.stdout);
    let g = &rows[1];
    assert_eq!((g[0].as_str(), g[1].as_str(), g[2].as_str(), g[4].clone()), ("good", "Ready", GVISOR, expires(&good)), "{}", got.stdout);
    assert!(g[3].chars().next().is_some_and(|ch| ch.is_ascii_digit()), "an age: {}", got.stdout);
    let phase = stuck.status.as_ref().and_then(|st| st.phase).expect("stuck has a phase").as_str();
    assert_eq!((rows[2][0].as_str(), rows[2][1].as_str()), ("stuck", phase), "{}", got.stdout);

    let wide = kubectl(&["get", "sbx", "good", "-n", n, "-o", "wide"]).await;
    // Cells by the header's columns (TEMPLATE and START are empty for a Sandbox made from an image).
    let mut lines = wide.stdout.lines();
    let header = lines.next().unwrap_or_default();
    let row = lines.next().unwrap_or_default();
    let names: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(names, ["NAME", "PHASE", "RUNTIME", "TEMPLATE", "START", "POD", "NODE", "AGE", "EXPIRES"], "{}", wide.stdout);
    let starts: Vec<usize> = names.iter().map(|h| header.find(h).expect("column")).collect();
    let cell = |i: usize| row.get(starts[i]..starts.get(i + 1).copied().unwrap_or(row.len()).min(row.len())).unwrap_or("").trim().to_string();
    let node = good.status.as_ref().and_then(|st| st.node_name.clone()).expect("nodeName");
    let cells: Vec<String> = (0..7).map(cell).collect();
    assert_eq!(cells, ["good", "Ready", GVISOR, "", "", "good", node.as_str()], "{}", wide.stdout);
    let category = kubectl(&["get", "airlock", "-n", n, "-o", "name"]).await;
    assert_eq!(category.stdout.lines().collect::<Vec<_>>(), ["sandbox.airlock.dev/good", "sandbox.airlock.dev/stuck"], "category airlock: {category:?}");

    for (field, path) in [
        ("spec.command", "spec/properties/command"),
        ("spec.env", "spec/properties/env"),
        ("spec.workingDir", "spec/properties/workingDir"),
        ("spec.readOnlyRootFilesystem", "spec/properties/readOnlyRootFilesystem"),
        ("spec.network.egress", "spec/properties/network/properties/egress"),
        ("status.phase", "status/properties/phase"),
    ] {
        let out = kubectl(&["explain", &format!("sandbox.{field}")]).await;
        assert!(out.ok(), "{out:?}");
        let want = squash(&crd_description(path));
        assert!(squash(&out.stdout).contains(&want), "kubectl explain sandbox.{field} shows {want:?}:\n{}", out.stdout);
    }
    let unknown = kubectl(&["explain", "sandbox.spec.noSuchField"]).await;
    assert!(!unknown.ok() && unknown.stderr.contains("noSuchField"), "{unknown:?}");
    ns.cleanup().await;
}
