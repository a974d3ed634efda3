//! Test helpers: a [`Context`] on a mocked API server (`tower_test::mock`, as in
//! kube-rs/controller-rs) and a small fake API server that answers the requests a reconcile makes
//! and records them for the test to check.

use std::sync::{Arc, Mutex};

use airlock_crds::Sandbox;
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use crate::config::Config;
use crate::controller::Context;
use crate::metrics::Metrics;

impl Context {
    /// A context whose client talks to a mock service, with fresh metrics.
    pub fn test(config: Config) -> (Arc<Context>, Handle<Request<Body>, Response<Body>>) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let reporter = Reporter {
            controller: "airlock-operator".into(),
            instance: Some("test".into()),
        };
        (
            Arc::new(Context::new(
                client,
                Arc::new(config),
                reporter,
                Metrics::default(),
            )),
            handle,
        )
    }
}

/// One request the reconcile made.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The `Accept` header (metadata-only reads ask for `PartialObjectMetadata`).
    pub accept: String,
    pub body: Value,
}

impl Recorded {
    /// `"GET /api/v1/..."`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    pub fn query_has(&self, pair: &str) -> bool {
        self.query.split('&').any(|p| p == pair)
    }
}

/// The state of the fake cluster.
#[derive(Default)]
pub struct FakeState {
    /// The Sandbox, returned (with the new status) by status patches.
    pub sandbox: Option<Sandbox>,
    /// The pod, if it exists.
    pub pod: Option<Value>,
    /// Refuse pod creation as a ResourceQuota would.
    pub quota_exceeded: bool,
    /// Refuse pod creation with this status code and message, as admission would.
    pub pod_refused: Option<(u16, String)>,
    /// Refuse the operator's ResourceQuota as invalid.
    pub quota_invalid: bool,
    /// The namespace is being deleted: creations are refused.
    pub terminating: bool,
    /// ConfigMaps of the namespace, by name (full objects; metadata-only reads get the metadata).
    pub config_maps: std::collections::BTreeMap<String, Value>,
    /// Refuse ConfigMap deletions (403), as an admission policy would.
    pub config_map_delete_forbidden: bool,
    /// ConfigMaps created so far (created ones get uid `cm-uid-<n>`).
    pub config_map_uids: u32,
    /// Pods (other than the sandbox's) listed by label selector `airlock.dev/agent-bundle=...`.
    pub bundle_users: Vec<String>,
    pub requests: Vec<Recorded>,
}

/// A fake API server on the mock handle.
pub struct FakeApi {
    pub state: Arc<Mutex<FakeState>>,
    task: JoinHandle<()>,
}

pub const QUOTA_MESSAGE: &str = "pods \"sbx-1\" is forbidden: exceeded quota: airlock-sandboxes, requested: pods=1, used: pods=1, limited: pods=1";

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

impl FakeApi {
    pub fn start(mut handle: Handle<Request<Body>, Response<Body>>, state: FakeState) -> FakeApi {
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                };
                let rec = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    accept: parts
                        .headers
                        .get(http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    body,
                };
                let response = respond(&mut shared.lock().unwrap(), &rec);
                shared.lock().unwrap().requests.push(rec);
                send.send_response(response);
            }
        });
        FakeApi { state, task }
    }

    /// The requests made so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// `"METHOD path"` of every request, in order.
    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Recorded::line).collect()
    }

    /// The first request matching method and path suffix.
    pub fn find(&self, method: &str, path_suffix: &str) -> Option<Recorded> {
        self.requests()
            .into_iter()
            .find(|r| r.method == method && r.path.ends_with(path_suffix))
    }

    /// Bodies of the events published.
    pub fn events(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains("/events"))
            .map(|r| r.body)
            .collect()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(state: &mut FakeState, r: &Recorded) -> Response<Body> {
    let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    match (r.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "v1", "namespaces", _, "pods", name]) => match &state.pod {
            Some(pod) => ok(pod),
            None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
        },
        ("POST", ["api", "v1", "namespaces", _, "pods"]) if state.pod.is_some() => {
            let name = r.body["metadata"]["name"].as_str().unwrap_or_default();
            status(409, "AlreadyExists", &format!("pods \"{name}\" already exists"))
        }
        ("PATCH", ["api", "v1", "namespaces", _, "pods", _]) | ("POST", ["api", "v1", "namespaces", _, "pods"]) => {
            if state.terminating {
                return status(
                    403,
                    "Forbidden",
                    "pods \"sbx-1\" is forbidden: unable to create new content in namespace team-a because it is being terminated",
                );
            }
            if state.quota_exceeded {
                return status(403, "Forbidden", QUOTA_MESSAGE);
            }
            if let Some((code, message)) = &state.pod_refused {
                return status(*code, "Forbidden", message);
            }
            let mut pod = r.body.clone();
            pod["metadata"]["uid"] = json!("pod-uid-1");
            state.pod = Some(pod.clone());
            ok(&pod)
        }
        ("GET", ["api", "v1", "namespaces", _, "configmaps", name]) => {
            match state.config_maps.get(*name) {
                Some(cm) if r.accept.contains("PartialObjectMetadata") => ok(&json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": cm["metadata"],
                })),
                Some(cm) => ok(cm),
                None => status(404, "NotFound", &format!("configmaps \"{name}\" not found")),
            }
        }
        ("POST", ["api", "v1", "namespaces", _, "configmaps"]) => {
            let name = r.body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state.config_maps.contains_key(&name) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("configmaps \"{name}\" already exists"),
                );
            }
            let mut cm = r.body.clone();
            state.config_map_uids += 1;
            cm["metadata"]["uid"] = json!(format!("cm-uid-{}", state.config_map_uids));
            state.config_maps.insert(name, cm.clone());
            ok(&cm)
        }
        ("GET", ["api", "v1", "namespaces", _, "configmaps"]) => ok(&json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {},
            "items": state.config_maps.values().map(|cm| json!({"metadata": cm["metadata"]})).collect::<Vec<_>>(),
        })),
        ("DELETE", ["api", "v1", "namespaces", _, "configmaps", name]) => {
            if state.config_map_delete_forbidden {
                return status(403, "Forbidden", "configmaps is forbidden: denied by test");
            }
            let want = &r.body["preconditions"]["uid"];
            let have = state
                .config_maps
                .get(*name)
                .map(|cm| &cm["metadata"]["uid"]);
            if want.is_string() && have.is_some_and(|h| h != want) {
                return status(
                    409,
                    "Conflict",
                    &format!(
                        "Precondition failed: UID in precondition: {want}, UID in object meta: {}",
                        have.unwrap()
                    ),
                );
            }
            match state.config_maps.remove(*name) {
                Some(cm) => ok(&cm),
                None => status(404, "NotFound", &format!("configmaps \"{name}\" not found")),
            }
        }
        ("GET", ["api", "v1", "namespaces", _, "pods"]) => {
            let selector = r
                .query
                .split('&')
                .find_map(|p| p.strip_prefix("labelSelector="))
                .unwrap_or_default();
            let items: Vec<Value> = state
                .bundle_users
                .iter()
                .filter(|b| {
                    selector.ends_with(&format!("%3D{b}")) || selector.ends_with(&format!("={b}"))
                })
                .map(|b| json!({"metadata": {"name": format!("user-of-{b}")}}))
                .collect();
            ok(
                &json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items}),
            )
        }
        ("DELETE", ["api", "v1", "namespaces", _, "pods", name]) => match state.pod.take() {
            Some(pod) => ok(&pod),
            None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
        },
        ("PATCH", ["api", "v1", "namespaces", _, "resourcequotas", _]) if state.quota_invalid => {
            status(
                422,
                "Invalid",
                "ResourceQuota \"airlock-sandboxes\" is invalid: unsupported scope applied to resource",
            )
        }
        (
            "PATCH",
            [
                "apis",
                "networking.k8s.io",
                "v1",
                "namespaces",
                _,
                "networkpolicies",
                _,
            ],
        )
        | ("PATCH", ["api", "v1", "namespaces", _, "resourcequotas", _])
        | ("PATCH", ["apis", "scheduling.k8s.io", "v1", "priorityclasses", _])
        | ("POST", ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => ok(&r.body),
        (
            "PATCH",
            [
                "apis",
                "airlock.dev",
                "v1alpha1",
                "namespaces",
                _,
                "sandboxes",
                _,
                "status",
            ],
        ) => {
            let mut sandbox = state
                .sandbox
                .clone()
                .expect("the test set FakeState::sandbox");
            sandbox.status = Some(
                serde_json::from_value(r.body["status"].clone())
                    .expect("status patch holds a valid status"),
            );
            state.sandbox = Some(sandbox.clone());
            ok(&serde_json::to_value(&sandbox).unwrap())
        }
        (
            "DELETE",
            [
                "apis",
                "airlock.dev",
                "v1alpha1",
                "namespaces",
                _,
                "sandboxes",
                _,
            ],
        ) => {
            let sandbox = state
                .sandbox
                .take()
                .expect("the test set FakeState::sandbox");
            ok(&serde_json::to_value(&sandbox).unwrap())
        }
        _ => status(
            500,
            "InternalError",
            &format!("fake API server: unexpected {} {}", r.method, r.path),
        ),
    }
}
