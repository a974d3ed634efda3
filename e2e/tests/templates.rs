//! SandboxTemplates and SandboxPools on the real cluster: a pool fills and refills, a Sandbox naming
//! the template claims a Ready pool pod (status `startMode: Warm`) exactly once, even with 50
//! claims racing for 10 pods and the operator killed in the middle; what a claim sets for itself
//! (env, egress) is what it gets, never the pool's; a template change replaces the pool's pods and
//! leaves claimed ones alone; bad references are refused at admission or reported naming the
//! field.

use std::collections::BTreeSet;
use std::time::Duration;

use airlock_api::client::AirlockClient;
use airlock_api::proto::v1 as pb;
use airlock_crds::{Sandbox, SandboxPool, SandboxTemplate, StartMode, labels};
use airlock_e2e::net::{self, Case, TEST_IPS, tcp};
use airlock_e2e::pools::{pool, pool_ready, template};
use airlock_e2e::release::{self, ClusterLock};
use airlock_e2e::sandboxes::{self, in_process_gateway, token_for};
use airlock_e2e::{RUNC, SANDBOX_IMAGE, TestNamespace, client, run_pod, sleeper, wait_for};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(180);

/// A Sandbox made from `tpl` (with `spec` merged over `templateRef`), once Ready.
async fn claim(c: &Client, ns: &str, name: &str, tpl: &str, spec: Value) -> Sandbox {
    create_claim(c, ns, name, tpl, spec).await.unwrap_or_else(|e| panic!("creating {name}: {e}"));
    let api: Api<Sandbox> = Api::namespaced(c.clone(), ns);
    wait_for(&api, name, READY, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await.expect("sandbox")
}

async fn create_claim(c: &Client, ns: &str, name: &str, tpl: &str, spec: Value) -> Result<Sandbox, kube::Error> {
    let mut s = json!({"templateRef": {"name": tpl}});
    sandboxes::merge(&mut s, spec);
    let sb: Sandbox = serde_json::from_value(json!({
        "apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox", "metadata": {"name": name}, "spec": s
    }))
    .expect("sandbox");
    Api::namespaced(c.clone(), ns).create(&PostParams::default(), &sb).await
}

fn start_mode(s: &Sandbox) -> Option<StartMode> {
    s.status.as_ref().and_then(|st| st.start_mode)
}

fn pod_name(s: &Sandbox) -> String {
    s.status.as_ref().and_then(|st| st.pod_name.clone()).expect("status.podName")
}

async fn pods(c: &Client, ns: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(c.clone(), ns).list(&ListParams::default()).await.expect("pods").items
}

fn controller_uid(p: &Pod) -> Option<String> {
    p.owner_references().iter().find(|o| o.controller == Some(true)).map(|o| o.uid.clone())
}

#[tokio::test]
async fn a_pool_fills_claims_are_warm_with_their_own_env_and_token_and_the_pool_refills() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "tpl-warm").await;
    let n = ns.name.as_str();
    template(&c, n, "py", json!({"env": [{"name": "FROM", "value": "template"}, {"name": "BOTH", "value": "template"}]})).await;
    pool(&c, n, "py", 3).await;
    let filled = pool_ready(&c, n, "py", 3, READY).await;
    assert_eq!(filled.status.as_ref().unwrap().selector, "airlock.dev/pool=py");
    let warm: BTreeSet<String> = pods(&c, n).await.iter().map(|p| p.name_any()).collect();
    assert_eq!(warm.len(), 3, "{warm:?}");

    // Three claims: two as Sandbox objects, one through the gateway's CreateSandbox.
    let (port, _stop) = in_process_gateway(&c, n, |_| {}).await;
    let gw = AirlockClient::connect(&format!("http://127.0.0.1:{port}"), Some(token_for(&c, n, "tester").await)).await.expect("gateway");
    let env = [("BOTH".to_string(), "claim".to_string()), ("OWN".to_string(), "c".to_string())];
    let (a, b, grpc) = tokio::join!(
        claim(&c, n, "a", "py", json!({
            "env": [{"name": "BOTH", "value": "claim-a"}, {"name": "OWN", "value": "a"}],
            "files": [{"path": "/work/task/input.txt", "content": "claimed input\n", "mode": 0o600}],
        })),
        claim(&c, n, "b", "py", json!({})),
        gw.create_sandbox(pb::CreateSandboxRequest {
            namespace: n.into(),
            name: "g".into(),
            source: Some(pb::create_sandbox_request::Source::Template("py".into())),
            env: env.into_iter().collect(),
            files: vec![pb::InitialFile { path: "/tmp/g.txt".into(), content: "from grpc".into(), mode: None }],
            wait_ready: true,
            ..Default::default()
        }),
    );
    let grpc = grpc.expect("CreateSandbox with a template");
    assert_eq!((grpc.template.as_str(), grpc.ready), ("py", true));
    let g = Api::<Sandbox>::namespaced(c.clone(), n).get("g").await.expect("g");
    let claimed: Vec<&Sandbox> = vec![&a, &b, &g];
    let mut taken = BTreeSet::new();
    for s in &claimed {
        assert_eq!(start_mode(s), Some(StartMode::Warm), "{}: {:?}", s.name_any(), s.status);
        let pod = pod_name(s);
        assert!(warm.contains(&pod), "{} got {pod}, not one of the pool's {warm:?}", s.name_any());
        assert!(taken.insert(pod.clone()), "pod {pod} claimed twice");
        let p = Api::<Pod>::namespaced(c.clone(), n).get(&pod).await.expect("claimed pod");
        assert_eq!(controller_uid(&p), s.uid(), "{pod} belongs to its Sandbox now");
        assert_eq!(p.labels().get(labels::SANDBOX_NAME), Some(&s.name_any()));
        assert!(!p.labels().contains_key(labels::POOL), "{pod} left the pool");
        let tpl = s.status.as_ref().and_then(|st| st.template.clone()).expect("status.template");
        assert_eq!(tpl.name, "py");
    }
    assert_eq!(grpc.start_mode, "Warm");

    // Each claim's env reaches its commands (after the template's; the claim wins a shared name).
    let printenv = |name: &str| AirlockClient::argv(n, name, ["sh", "-c", "echo $FROM/$BOTH/$OWN"]);
    let out = |o: airlock_api::client::ExecOutput| String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(out(gw.exec_collect(printenv("a")).await.expect("exec a")), "template/claim-a/a");
    assert_eq!(out(gw.exec_collect(printenv("b")).await.expect("exec b")), "template/template/");
    assert_eq!(out(gw.exec_collect(printenv("g")).await.expect("exec g")), "template/claim/c");
    // Its files were there when it became Ready (written after the claim, parents created).
    let code = "import os; p = '/work/task/input.txt'; print(open(p).read(), oct(os.stat(p).st_mode & 0o7777))";
    let cat = AirlockClient::argv(n, "a", ["python3", "-c", code]);
    assert_eq!(out(gw.exec_collect(cat).await.expect("read the file")), "claimed input\n 0o600");
    assert!(a.status.as_ref().unwrap().files_written_time.is_some(), "{:?}", a.status);
    let cat_g = AirlockClient::argv(n, "g", ["cat", "/tmp/g.txt"]);
    assert_eq!(out(gw.exec_collect(cat_g).await.expect("cat g")), "from grpc");
    let mut own = AirlockClient::argv(n, "a", ["sh", "-c", "echo $OWN"]);
    own.env.insert("OWN".into(), "request".into());
    assert_eq!(out(gw.exec_collect(own).await.expect("exec a with env")), "request", "a request's env wins");
    // Background processes get it too (direct path).
    if let Some(key) = release::agent_key(&c).await {
        let sandbox = airlock_api::client::sandbox_ref(n, "a");
        gw.processes()
            .start_process(pb::StartProcessRequest {
                sandbox: sandbox.clone(),
                command: Some(pb::start_process_request::Command::Shell("echo bg-$OWN".into())),
                tag: "bg".into(),
                ..Default::default()
            })
            .await
            .expect("start a background process");
        let by_tag = Some(pb::ProcessSelector { selector: Some(pb::process_selector::Selector::Tag("bg".into())) });
        let mut stream = gw
            .processes()
            .connect_process(pb::ConnectProcessRequest { sandbox, process: by_tag, stdout_offset: 0, stderr_offset: 0, follow: true })
            .await
            .expect("ConnectProcess")
            .into_inner();
        let mut bg = Vec::new();
        while let Some(e) = stream.message().await.expect("process events") {
            match e.event {
                Some(pb::process_event::Event::Stdout(chunk)) => bg.extend_from_slice(&chunk.data),
                Some(pb::process_event::Event::Exited(_)) => break,
                _ => {}
            }
        }
        assert_eq!(String::from_utf8_lossy(&bg), "bg-a\n", "a background process gets the claim's env");
        // The agent answers the Sandbox's token now, and the pool pod's token no longer.
        let addr = airlock_crds::agent_token::agent_addr(&Api::<Pod>::namespaced(c.clone(), n).get(&pod_name(&a)).await.unwrap()).expect("agent address");
        let new = airlock_crds::agent_token::derive(&key, &a.uid().unwrap());
        let old = airlock_crds::agent_token::derive(&key, &labels::pool_pod_subject(n, &pod_name(&a)));
        let hello = |t: String| tokio::task::spawn_blocking(move || airlock_agent_protocol::Client::connect(addr, t.as_bytes()).map(drop));
        hello(new).await.unwrap().expect("the Sandbox's token opens its agent");
        assert!(hello(old).await.unwrap().is_err(), "the pool pod's token is dead after the claim");
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), n);
        let gone = wait_for(&secrets, &labels::agent_token_secret(&pod_name(&a)), Duration::from_secs(30), "deleted", |s| s.is_none()).await;
        assert!(gone.is_none(), "the pool pod's token Secret is deleted after the claim");
    }

    // The pool refills to 3 new pods and counts the 3 claims.
    let refilled = pool_ready(&c, n, "py", 3, READY).await;
    let st = refilled.status.unwrap();
    let now: BTreeSet<String> = pods(&c, n).await.iter().filter(|p| p.labels().contains_key(labels::POOL)).map(|p| p.name_any()).collect();
    assert!(now.is_disjoint(&taken), "refilled with new pods: {now:?} vs claimed {taken:?}");
    let claimed_count = wait_for(&Api::<SandboxPool>::namespaced(c.clone(), n), "py", Duration::from_secs(30), "3 claimed", |p| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.claimed_replicas == 3)
    })
    .await;
    assert!(claimed_count.is_some(), "{st:?}");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_claimed_sandbox_gets_its_own_egress_never_the_pools() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "tpl-egress").await;
    let n = ns.name.as_str();
    let ip = TEST_IPS[0];
    let port = net::host_tcp(ip, 0).await;
    let target = tcp(ip, port);
    // The template allows nothing; one claim asks for the listener, one asks for nothing.
    template(&c, n, "py", json!({})).await;
    pool(&c, n, "py", 3).await;
    pool_ready(&c, n, "py", 3, READY).await;
    run_pod(&c, n, sleeper("control", RUNC, json!({"app": "control"}))).await;
    let open = json!({"network": {"egress": "AllowList", "allow": [{"cidr": format!("{ip}/32"), "ports": [{"port": port}]}]}});
    let (o, s) = tokio::join!(claim(&c, n, "open", "py", open), claim(&c, n, "shut", "py", json!({})));
    assert_eq!((start_mode(&o), start_mode(&s)), (Some(StartMode::Warm), Some(StartMode::Warm)));
    // Right after Ready, the claim that asked for nothing reaches nothing.
    let r = net::probe(&c, n, &pod_name(&s), Some("sandbox"), std::slice::from_ref(&target)).await;
    assert_ne!(r[0].1, "OPEN", "a claim without egress reached the listener right after Ready: {r:?}");
    let spare = pods(&c, n)
        .await
        .into_iter()
        .find(|p| p.labels().contains_key(labels::POOL) && airlock_e2e::release::is_ready(p))
        .expect("an unclaimed Ready pool pod")
        .name_any();
    let cases = [
        Case { label: "control, no policy", pod: "control", container: None, expect: vec![(target.clone(), true)] },
        Case { label: "claim with AllowList", pod: &pod_name(&o), container: Some("sandbox"), expect: vec![(target.clone(), true)] },
        Case { label: "claim without egress", pod: &pod_name(&s), container: Some("sandbox"), expect: vec![(target.clone(), false)] },
        Case { label: "unclaimed pool pod", pod: &spare, container: Some("sandbox"), expect: vec![(target.clone(), false)] },
    ];
    net::settle(&c, n, &cases, Duration::from_secs(90)).await;
    ns.cleanup().await;
}

#[tokio::test]
async fn fifty_claims_against_a_pool_of_ten_survive_an_operator_kill() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "tpl-race").await;
    let n = ns.name.as_str();
    // Room for 50 sandboxes and the pool's 10 (the operator's default quota is 50 pods): a quota
    // written first is left alone by the operator.
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "airlock-sandboxes"},
        "spec": {"hard": {"pods": "80", "requests.cpu": "32", "limits.cpu": "32", "requests.memory": "64Gi", "limits.memory": "64Gi"},
                 "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["airlock-sandbox"]}]}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(c.clone(), n)
        .patch("airlock-sandboxes", &PatchParams::apply("e2e-test").force(), &Patch::Apply(&quota))
        .await
        .expect("quota");
    template(&c, n, "tiny", json!({"resources": {"cpu": "10m", "memory": "32Mi", "ephemeralStorage": "64Mi"}})).await;
    pool(&c, n, "tiny", 10).await;
    pool_ready(&c, n, "tiny", 10, Duration::from_secs(300)).await;
    let warm: BTreeSet<String> = pods(&c, n).await.iter().map(|p| p.name_any()).collect();

    let _cluster = ClusterLock::acquire("50 claims").await;
    let names: Vec<String> = (0..50).map(|i| format!("s{i:02}")).collect();
    let creates = join_all(names.iter().map(|name| create_claim(&c, n, name, "tiny", json!({}))));
    let kill = async {
        // In the middle of the claims.
        tokio::time::sleep(Duration::from_millis(300)).await;
        release::kill_operator(&c).await
    };
    let (created, restarts_before) = tokio::join!(creates, kill);
    for r in created {
        r.expect("every Sandbox is accepted");
    }
    release::operator_restarted(&c, restarts_before, Duration::from_secs(180)).await;
    drop(_cluster);

    // Every Sandbox ends Ready, on exactly one pod it controls; no pod has two Sandboxes; every
    // pod belongs to a Sandbox or to the pool; the pool is back to 10.
    let api: Api<Sandbox> = Api::namespaced(c.clone(), n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(420);
    let sbx = loop {
        let list = api.list(&ListParams::default()).await.expect("sandboxes").items;
        if list.len() == 50 && list.iter().all(Sandbox::is_ready) {
            break list;
        }
        assert!(tokio::time::Instant::now() < deadline, "not all Ready: {:?}", sandboxes::phases(&list));
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let pool_obj = pool_ready(&c, n, "tiny", 10, Duration::from_secs(300)).await;
    let all = pods(&c, n).await;
    let live: Vec<&Pod> = all.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let mut problems = Vec::new();
    let mut warm_claims = 0;
    for s in &sbx {
        let owned: Vec<&&Pod> = live.iter().filter(|p| controller_uid(p) == s.uid()).collect();
        if owned.len() != 1 || owned[0].name_any() != pod_name(s) {
            problems.push(format!("{} owns {:?}, status says {}", s.name_any(), owned.iter().map(|p| p.name_any()).collect::<Vec<_>>(), pod_name(s)));
        }
        match start_mode(s) {
            Some(StartMode::Warm) => {
                warm_claims += 1;
                if !warm.contains(&pod_name(s)) && !pod_name(s).starts_with("tiny-") {
                    problems.push(format!("{} is Warm on {}", s.name_any(), pod_name(s)));
                }
            }
            Some(StartMode::Cold) => {}
            None => problems.push(format!("{} has no startMode", s.name_any())),
        }
    }
    let uids: BTreeSet<Option<String>> = sbx.iter().map(|s| s.uid()).chain([pool_obj.uid()]).collect();
    for p in &live {
        if !uids.contains(&controller_uid(p)) {
            problems.push(format!("pod {} is orphaned (controller {:?})", p.name_any(), controller_uid(p)));
        }
    }
    let in_pool = live.iter().filter(|p| p.labels().contains_key(labels::POOL)).count();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(in_pool, 10, "the pool holds 10 unclaimed pods again");
    assert!(warm_claims >= 1, "some claims found a warm pod");
    eprintln!("50 claims: {warm_claims} warm, {} cold", 50 - warm_claims);
    ns.cleanup().await;
}

#[tokio::test]
async fn bad_template_references_are_refused_or_reported_naming_the_field() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "tpl-bad").await;
    let n = ns.name.as_str();
    let refused = |r: Result<Sandbox, kube::Error>| match r {
        Err(kube::Error::Api(s)) => s.message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Both image and templateRef; neither; a field the template sets.
    let both = create_claim(&c, n, "both", "py", json!({"image": SANDBOX_IMAGE})).await;
    assert!(refused(both).contains("spec must set exactly one of spec.image and spec.templateRef"));
    let neither: Sandbox = serde_json::from_value(json!({"apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox", "metadata": {"name": "neither"}, "spec": {}})).unwrap();
    let r = Api::<Sandbox>::namespaced(c.clone(), n).create(&PostParams::default(), &neither).await;
    assert!(refused(r).contains("spec must set exactly one of spec.image and spec.templateRef"));
    let cmd = create_claim(&c, n, "cmd", "py", json!({"command": ["sleep", "1"]})).await;
    assert!(refused(cmd).contains("spec.command cannot be set with spec.templateRef: the SandboxTemplate sets it"));
    let rel = create_claim(&c, n, "rel", "py", json!({"files": [{"path": "relative.txt", "content": "x"}]})).await;
    assert!(refused(rel).contains("spec.files[].path must be an absolute path to a file"));
    let rc = create_claim(&c, n, "rc", "py", json!({"resources": {"cpu": "1"}})).await;
    assert!(refused(rc).contains("spec.resources cannot be set with spec.templateRef"));
    // A pool whose name is too long for its pods' host names, and a negative size.
    let long: SandboxPool = serde_json::from_value(json!({"apiVersion": "airlock.dev/v1alpha1", "kind": "SandboxPool",
        "metadata": {"name": "p".repeat(58)}, "spec": {"templateRef": {"name": "py"}, "replicas": 1}})).unwrap();
    match Api::<SandboxPool>::namespaced(c.clone(), n).create(&PostParams::default(), &long).await {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("metadata.name of a SandboxPool is at most 57 characters"), "{}", s.message),
        other => panic!("{other:?}"),
    }
    let neg: SandboxPool = serde_json::from_value(json!({"apiVersion": "airlock.dev/v1alpha1", "kind": "SandboxPool",
        "metadata": {"name": "neg"}, "spec": {"templateRef": {"name": "py"}, "replicas": -1}})).unwrap();
    match Api::<SandboxPool>::namespaced(c.clone(), n).create(&PostParams::default(), &neg).await {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("spec.replicas"), "{}", s.message),
        other => panic!("{other:?}"),
    }

    // A template that does not exist: the Sandbox is Failed, the reason names the field; the
    // pool says the same. Once the template is created, the Sandbox starts (cold: no pool pod).
    create_claim(&c, n, "later", "py", json!({"files": [{"path": "/tmp/x/hello", "content": "cold"}]})).await.expect("accepted");
    pool(&c, n, "py", 0).await;
    let api: Api<Sandbox> = Api::namespaced(c.clone(), n);
    let failed = wait_for(&api, "later", Duration::from_secs(60), "TemplateNotFound", |s| {
        s.and_then(|s| s.condition("Ready")).is_some_and(|c| c.reason == "TemplateNotFound")
    })
    .await
    .expect("reported");
    let msg = failed.condition("Ready").unwrap().message.clone();
    assert!(msg.starts_with("spec.templateRef.name: SandboxTemplate \"py\" not found in namespace"), "{msg}");
    let pools: Api<SandboxPool> = Api::namespaced(c.clone(), n);
    let p = wait_for(&pools, "py", Duration::from_secs(60), "TemplateNotFound", |p| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.conditions.iter().any(|c| c.reason == "TemplateNotFound"))
    })
    .await;
    assert!(p.is_some());
    template(&c, n, "py", json!({})).await;
    let s = wait_for(&api, "later", READY, "Ready", |s| s.is_some_and(Sandbox::is_ready)).await.expect("Ready");
    assert_eq!(start_mode(&s), Some(StartMode::Cold));
    assert_eq!(pod_name(&s), "later", "a cold start's pod is named after its Sandbox");
    assert!(s.status.as_ref().unwrap().files_written_time.is_some(), "files written before Ready: {:?}", s.status);
    let read = airlock_e2e::net::exec_in(&c, n, "later", Some("sandbox"), &["cat", "/tmp/x/hello"]).await;
    assert_eq!(read.stdout, "cold");
    ns.cleanup().await;
}

#[tokio::test]
async fn a_template_change_rolls_the_pool_and_leaves_claimed_sandboxes_alone() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "tpl-roll").await;
    let n = ns.name.as_str();
    template(&c, n, "py", json!({"env": [{"name": "V", "value": "1"}]})).await;
    pool(&c, n, "py", 2).await;
    pool_ready(&c, n, "py", 2, READY).await;
    let kept = claim(&c, n, "kept", "py", json!({"files": [{"path": "/tmp/kept.txt", "content": "kept"}]})).await;
    assert_eq!(start_mode(&kept), Some(StartMode::Warm));
    let kept_pod = Api::<Pod>::namespaced(c.clone(), n).get(&pod_name(&kept)).await.expect("pod");
    pool_ready(&c, n, "py", 2, READY).await;
    let before: BTreeSet<String> = pods(&c, n).await.iter().filter(|p| p.labels().contains_key(labels::POOL)).map(|p| p.name_any()).collect();

    // Change the template: the pool's pods are replaced by pods of the new revision.
    let patch = json!({"spec": {"env": [{"name": "V", "value": "2"}]}});
    let changed = Api::<SandboxTemplate>::namespaced(c.clone(), n)
        .patch("py", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("template change");
    let rev = format!("{}/{}", changed.uid().unwrap(), changed.metadata.generation.unwrap());
    let deadline = tokio::time::Instant::now() + READY;
    loop {
        let now: Vec<Pod> = pods(&c, n).await.into_iter().filter(|p| p.labels().contains_key(labels::POOL) && p.metadata.deletion_timestamp.is_none()).collect();
        let fresh = now.iter().filter(|p| p.annotations().get(labels::TEMPLATE_REVISION) == Some(&rev) && release::is_ready(p)).count();
        if now.len() == 2 && fresh == 2 && now.iter().all(|p| !before.contains(&p.name_any())) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "pool not rolled: {:?}", now.iter().map(|p| p.name_any()).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The claimed sandbox keeps its pod, Ready.
    let still = Api::<Pod>::namespaced(c.clone(), n).get(&pod_name(&kept)).await.expect("claimed pod still there");
    assert_eq!(still.uid(), kept_pod.uid());
    assert!(still.metadata.deletion_timestamp.is_none());
    let s = Api::<Sandbox>::namespaced(c.clone(), n).get("kept").await.unwrap();
    assert!(s.is_ready());
    // A new claim gets the new revision.
    let fresh = claim(&c, n, "fresh", "py", json!({})).await;
    let p = Api::<Pod>::namespaced(c.clone(), n).get(&pod_name(&fresh)).await.unwrap();
    assert_eq!(p.annotations().get(labels::TEMPLATE_REVISION), Some(&rev));
    assert_eq!(start_mode(&fresh), Some(StartMode::Warm));

    // The claimed pod goes away (an eviction, a deletion): the Sandbox gets another pod, which is
    // bound to its token and gets its files again, like the first.
    pool_ready(&c, n, "py", 2, READY).await;
    Api::<Pod>::namespaced(c.clone(), n).delete(&pod_name(&kept), &Default::default()).await.expect("delete the claimed pod");
    let api: Api<Sandbox> = Api::namespaced(c.clone(), n);
    let old_uid = kept_pod.uid();
    let again = wait_for(&api, "kept", READY, "Ready on another pod", |s| {
        s.is_some_and(|s| s.is_ready() && s.status.as_ref().and_then(|st| st.pod_uid.clone()) != old_uid)
    })
    .await
    .expect("Ready again");
    let (port, _stop) = in_process_gateway(&c, n, |cfg| cfg.agent_transport = airlock_exec_gateway::agent::Transport::Direct).await;
    let gw = AirlockClient::connect(&format!("http://127.0.0.1:{port}"), Some(token_for(&c, n, "tester").await)).await.expect("gateway");
    let o = gw.exec_collect(AirlockClient::argv(n, "kept", ["cat", "/tmp/kept.txt"])).await.expect("exec over the direct path on the new pod");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "kept", "files written again on the new pod ({:?})", again.status);
    ns.cleanup().await;
}
