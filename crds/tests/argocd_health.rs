//! The Argo CD health check shipped in the chart (`charts/airlock/files/argocd-health-sandbox.lua`),
//! run by a real Lua interpreter (`lua5.4`, Debian package `lua5.4`; Argo CD runs gopher-lua, a
//! Lua 5.1 dialect, so the script uses nothing newer) against sample Sandboxes.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const SCRIPT: &str = include_str!("../../charts/airlock/files/argocd-health-sandbox.lua");

/// `v` as a Lua table constructor.
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs the health check on `obj`: (status, message).
fn health(obj: Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{SCRIPT}\nend)()\nio.write(hs.status, \"\\n\", hs.message)\n",
        lua(&obj)
    );
    let mut child = Command::new("lua5.4")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lua5.4 runs the Argo CD health check test: apt-get install -y lua5.4");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(program.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap();
    (status.to_string(), message.to_string())
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "observedGeneration": 2, "lastTransitionTime": "2025-01-01T00:00:05Z"})
}

fn sandbox(generation: i64, status: Value) -> Value {
    json!({
        "apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox",
        "metadata": {"name": "sbx", "namespace": "team-a", "generation": generation},
        "spec": {"image": "python:3.12-slim"},
        "status": status,
    })
}

fn ready() -> Value {
    json!({"phase": "Ready", "observedGeneration": 2, "conditions": [
        cond("Ready", "True", "PodReady", "the sandbox is ready"),
        cond("Expired", "False", "NotExpired", "expires at 2025-01-01T01:00:00Z (time-to-live)"),
        cond("PolicyAdjusted", "False", "AsSpecified", ""),
    ]})
}

#[test]
fn ready_is_healthy() {
    assert_eq!(
        health(sandbox(2, ready())),
        ("Healthy".into(), "Sandbox is ready".into())
    );
}

#[test]
fn ready_but_adjusted_by_policy_is_healthy_and_says_so() {
    let mut st = ready();
    st["conditions"][2] = cond(
        "PolicyAdjusted",
        "True",
        "TTLClamped",
        "spec.lifetime.ttlSeconds: asked 90000 seconds",
    );
    let (status, message) = health(sandbox(2, st));
    assert_eq!(status, "Healthy");
    assert!(
        message.contains("TTLClamped: spec.lifetime.ttlSeconds"),
        "{message}"
    );
}

#[test]
fn starting_and_pending_are_progressing() {
    let st = json!({"phase": "Starting", "observedGeneration": 2, "conditions": [
        cond("Ready", "False", "ImagePullBackOff", "container sandbox: Back-off pulling image"),
    ]});
    assert_eq!(
        health(sandbox(2, st)),
        (
            "Progressing".into(),
            "Starting: ImagePullBackOff: container sandbox: Back-off pulling image".into()
        )
    );
    let st = json!({"phase": "Pending", "observedGeneration": 2, "conditions": [
        cond("Ready", "False", "QuotaExceeded", "exceeded quota"),
    ]});
    assert_eq!(health(sandbox(2, st)).0, "Progressing");
}

#[test]
fn failed_is_degraded_with_the_reason() {
    let st = json!({"phase": "Failed", "observedGeneration": 2, "conditions": [
        cond("Ready", "False", "Invalid", "spec.lifetime.ttlSeconds (90000) exceeds the operator's maximum of 86400 seconds"),
    ]});
    assert_eq!(
        health(sandbox(2, st)),
        (
            "Degraded".into(),
            "Invalid: spec.lifetime.ttlSeconds (90000) exceeds the operator's maximum of 86400 seconds".into()
        )
    );
}

#[test]
fn expired_is_suspended() {
    let st = json!({"phase": "Expired", "observedGeneration": 2, "conditions": [
        cond("Ready", "False", "Expired", "time-to-live ran out; the pod was deleted"),
        cond("Expired", "True", "TTLExpired", "time-to-live ran out at 2025-01-01T01:00:00Z"),
    ]});
    assert_eq!(
        health(sandbox(2, st)),
        (
            "Suspended".into(),
            "TTLExpired: time-to-live ran out at 2025-01-01T01:00:00Z".into()
        )
    );
}

#[test]
fn a_status_for_an_older_generation_is_progressing() {
    // Ready, but for generation 2 while the spec is at 3: not yet known.
    assert_eq!(
        health(sandbox(3, ready())),
        (
            "Progressing".into(),
            "Waiting for the Airlock operator to observe generation 3".into()
        )
    );
    let mut no_observed = ready();
    no_observed
        .as_object_mut()
        .unwrap()
        .remove("observedGeneration");
    assert_eq!(health(sandbox(2, no_observed)).0, "Progressing");
}

#[test]
fn no_status_yet_is_progressing() {
    let (status, message) = health(sandbox(1, Value::Null));
    assert_eq!(status, "Progressing");
    assert!(
        message.contains("Waiting for the Airlock operator"),
        "{message}"
    );
}
