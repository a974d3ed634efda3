//! Sandboxes the operator's policy refuses (RuntimeClass allow-list, egress deny-list), policy
//! changes under a running sandbox, and pods the API server refuses (reported, backed off).

use super::*;

#[tokio::test]
async fn a_runtime_class_not_allowed_fails_the_sandbox_without_a_pod() {
    let s = sbx("  runtimeClassName: runc\n");
    let (_, api) = run(&s, FakeState::default(), "2025-01-01T00:00:10Z").await;
    assert_eq!(
        api.lines(),
        [
            format!("GET {POD}"),
            format!("PATCH {SBX_BASE}/status"),
            format!("POST {EVENTS}")
        ],
        "no quota, no NetworkPolicy, no pod"
    );
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Failed");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "RuntimeClassNotAllowed");
    assert_eq!(
        ready["message"],
        "spec.runtimeClassName (runc) is not allowed by the operator; allowed RuntimeClasses: kata"
    );
    assert_eq!(event_reasons(&api), ["RuntimeClassNotAllowed"]);

    // Allowed by --allowed-runtime-classes: the pod runs under it.
    let config = Config::from_flags(&["--allowed-runtime-classes=gvisor,runc"]);
    let (_, api) = run_with(config, &s, FakeState::default(), "2025-01-01T00:00:10Z").await;
    assert_eq!(
        api.find("POST", PODS).expect("pod created").body["spec"]["runtimeClassName"],
        "runc"
    );
}

#[tokio::test]
async fn an_allow_list_entry_inside_the_deny_list_fails_the_sandbox() {
    let s = sbx(
        "  network:\n    egress: AllowList\n    allow:\n      - cidr: 203.0.113.0/24\n      - cidr: 169.254.169.254/32\n",
    );
    let (_, api) = run(&s, FakeState::default(), "2025-01-01T00:00:10Z").await;
    assert!(api.find("PATCH", NETPOL).is_none() && api.find("POST", PODS).is_none());
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Failed");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["reason"], "EgressDenied");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "spec.network.allow[1].cidr (169.254.169.254/32) lies inside 169.254.169.254/32"
        ),
        "{message}"
    );
}

const PSA_MESSAGE: &str =
    "pods \"sbx-1\" is forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot != true";

#[tokio::test]
async fn a_pod_the_api_server_refuses_fails_the_sandbox_and_backs_off() {
    let s = sbx("");
    let (ctx, handle) = Context::test(Config::defaults());
    let api = FakeApi::start(
        handle,
        FakeState {
            sandbox: Some(s.clone()),
            pod_refused: Some((403, PSA_MESSAGE.into())),
            ..FakeState::default()
        },
    );
    let reconcile = |s: Sandbox, now: &'static str| {
        let ctx = ctx.clone();
        async move {
            reconcile_at(&DeserializeGuard(Ok(s)), &ctx, ts(now))
                .await
                .expect("a refused pod is a status, not a reconcile error")
        }
    };
    let action = reconcile(s.clone(), "2025-01-01T00:00:10Z").await;
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status.get("podName"), None);
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "PodRejected");
    assert_eq!(
        ready["message"],
        format!("the API server refused the sandbox's pod: {PSA_MESSAGE}")
    );
    assert_eq!(event_reasons(&api), ["Failed"]);
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));

    // Refused again: the same status (not written again, no new event), a longer wait.
    let mut s2 = s.clone();
    s2.status = Some(serde_json::from_value(status).unwrap());
    let writes = |api: &FakeApi| {
        api.lines()
            .iter()
            .filter(|l| l.ends_with("/status"))
            .count()
    };
    let action = reconcile(s2.clone(), "2025-01-01T00:00:20Z").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(20)));
    let action = reconcile(s2.clone(), "2025-01-01T00:00:40Z").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(40)));
    assert_eq!(writes(&api), 1);
    assert_eq!(event_reasons(&api), ["Failed"]);

    // Once the API server accepts the pod, the sandbox carries on and the back-off starts over.
    api.state.lock().unwrap().pod_refused = None;
    reconcile(s2.clone(), "2025-01-01T00:01:20Z").await;
    let pending: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/status"))
        .collect();
    assert_eq!(pending.last().unwrap().body["status"]["phase"], "Pending");
    api.state.lock().unwrap().pod = None;
    api.state.lock().unwrap().pod_refused = Some((422, "Pod \"sbx-1\" is invalid".into()));
    let action = reconcile(s2, "2025-01-01T00:01:30Z").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
}

#[tokio::test]
async fn an_unknown_runtime_class_refusal_is_reported_with_the_api_servers_words() {
    let message = "pods \"sbx-1\" is forbidden: pod rejected: RuntimeClass \"kata\" not found";
    let state = FakeState {
        pod_refused: Some((403, message.into())),
        ..FakeState::default()
    };
    let (_, api) = run(&sbx(""), state, "2025-01-01T00:00:10Z").await;
    let ready = condition(&status_patch(&api), "Ready").clone();
    assert_eq!(ready["reason"], "PodRejected");
    assert!(ready["message"].as_str().unwrap().ends_with(message));
}

#[tokio::test]
async fn quota_refusals_stay_quota_exceeded_not_pod_rejected() {
    let state = FakeState {
        pod_refused: Some((403, QUOTA_MESSAGE.into())),
        ..FakeState::default()
    };
    let (action, api) = run(&sbx(""), state, "2025-01-01T00:00:10Z").await;
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Pending");
    assert_eq!(condition(&status, "Ready")["reason"], "QuotaExceeded");
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
}

#[tokio::test]
async fn a_policy_change_does_not_kill_a_running_sandbox() {
    // Running under runc, allowed when it started; the allow-list no longer names runc.
    let s = sbx("  runtimeClassName: runc\n");
    let state = FakeState {
        pod: Some(owned_pod("Running", true)),
        ..FakeState::default()
    };
    let (_, api) = run(&s, state, "2025-01-01T00:00:10Z").await;
    assert!(
        api.find("DELETE", POD).is_none(),
        "the running pod is kept: {:?}",
        api.lines()
    );
    let status = status_patch(&api);
    assert_eq!(status["phase"], "Ready");
    let adjusted = condition(&status, "PolicyAdjusted");
    assert_eq!(adjusted["status"], "True");
    assert_eq!(adjusted["reason"], "RuntimeClassNotAllowed");
    assert!(
        adjusted["message"]
            .as_str()
            .unwrap()
            .contains("the running pod is kept"),
        "{adjusted}"
    );
    let warning = api
        .events()
        .into_iter()
        .find(|e| e["reason"] == "PolicyAdjusted")
        .expect("a Warning event tells the owner");
    assert_eq!(warning["type"], "Warning");
}
