//! Reaching gateways from the tests: a loopback TCP relay (to a fixed address, or to whatever pod
//! a Service's EndpointSlices call ready, as kube-proxy would route the Service), ServiceAccounts
//! bound to a ClusterRole with a token for the gateway, and the `airlock` CLI binary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The installed gateway's Deployment and Service (in [`crate::release::SYSTEM_NS`]) and the
/// Service's gRPC port name.
pub const GATEWAY: &str = "airlock-exec-gateway";
pub const GATEWAY_PORT: &str = "grpc";

/// Where a [`Relay`] sends a new connection.
#[derive(Clone)]
enum Target {
    Fixed(SocketAddr),
    /// The first ready endpoint of the Service (namespace, name, port name).
    Service(Client, String, String, String),
}

impl Target {
    async fn resolve(&self) -> Option<SocketAddr> {
        match self {
            Target::Fixed(a) => Some(*a),
            Target::Service(c, ns, svc, port) => ready_endpoint(c, ns, svc, port).await,
        }
    }
}

/// A ready endpoint (`ip:port` of the named port) of a Service, from its EndpointSlices.
pub async fn ready_endpoint(c: &Client, ns: &str, svc: &str, port_name: &str) -> Option<SocketAddr> {
    let slices = Api::<EndpointSlice>::namespaced(c.clone(), ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .ok()?;
    for s in slices.items {
        let port = s.ports.iter().flatten().find(|p| p.name.as_deref() == Some(port_name)).and_then(|p| p.port);
        let Some(port) = port else { continue };
        for e in &s.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                && let Some(ip) = e.addresses.first().and_then(|a| a.parse().ok())
            {
                return Some(SocketAddr::new(ip, port as u16));
            }
        }
    }
    None
}

/// A TCP relay on 127.0.0.1: every accepted connection is joined to a new connection to the
/// target, resolved per connection (a Service target thus follows its pods, like a Service IP).
/// A connection with nowhere to go is closed at once. Stops when dropped.
pub struct Relay {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    last: Arc<Mutex<Option<SocketAddr>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Relays to a fixed address.
    pub async fn to(target: SocketAddr) -> Relay {
        Relay::start(Target::Fixed(target)).await
    }

    /// Relays to a ready endpoint of Service `ns/svc`, port `port_name`, looked up per connection.
    pub async fn to_service(c: &Client, ns: &str, svc: &str, port_name: &str) -> Relay {
        Relay::start(Target::Service(c.clone(), ns.into(), svc.into(), port_name.into())).await
    }

    async fn start(target: Target) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay on loopback");
        let addr = listener.local_addr().expect("relay address");
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let last: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (conns2, last2) = (conns.clone(), last.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, last) = (target.clone(), last2.clone());
                let task = tokio::spawn(async move {
                    let Some(to) = target.resolve().await else { return };
                    let Ok(Ok(outbound)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(to)).await else { return };
                    *last.lock().unwrap() = Some(to);
                    let (mut a, mut b) = (inbound, outbound);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
                let mut list = conns2.lock().unwrap();
                list.retain(|t| !t.is_finished());
                list.push(task);
            }
        });
        Relay { addr, conns, last, accept }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every open relayed connection (both sockets), as a network cut or a client whose
    /// process died would; returns how many were open. New connections are still accepted.
    pub fn cut(&self) -> usize {
        let mut list = self.conns.lock().unwrap();
        let open = list.iter().filter(|t| !t.is_finished()).count();
        for t in list.drain(..) {
            t.abort();
        }
        open
    }

    /// Where the latest relayed connection went.
    pub fn last_target(&self) -> Option<SocketAddr> {
        *self.last.lock().unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A ServiceAccount `sa` in `ns`, bound by a RoleBinding in `ns` to ClusterRole `cluster_role`
/// (none: no binding at all), and a token for it minted for the gateway's audience. With a role,
/// waits until the API server's authorizer lets the account do `verb` on `sandboxes` in `ns`
/// (the gateway would cache a denial seen before the binding is in effect).
pub async fn bound_token(c: &Client, ns: &str, sa: &str, cluster_role: Option<&str>, verb: &str) -> String {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let pp = PostParams::default();
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap();
    Api::<ServiceAccount>::namespaced(c.clone(), ns).create(&pp, &account).await.unwrap_or_else(|e| panic!("creating ServiceAccount {ns}/{sa}: {e}"));
    if let Some(role) = cluster_role {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{sa}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(c.clone(), ns).create(&pp, &binding).await.unwrap_or_else(|e| panic!("creating RoleBinding {ns}/{sa}-{role}: {e}"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !allowed(c, ns, sa, verb, "sandboxes", "").await {
            assert!(tokio::time::Instant::now() < deadline, "RoleBinding of {ns}/{sa} to {role} does not allow {verb} sandboxes after 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    crate::sandboxes::token_with_audiences(c, ns, sa, vec![crate::GATEWAY_AUDIENCE.to_string()]).await
}

/// What the API server's authorizer says about ServiceAccount `ns/sa` doing `verb` on
/// `airlock.dev` `resource` (`subresource` empty for none) in `ns`.
pub async fn allowed(c: &Client, ns: &str, sa: &str, verb: &str, resource: &str, subresource: &str) -> bool {
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{sa}")),
            groups: Some(vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}"), "system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.into()),
                group: Some("airlock.dev".into()),
                resource: Some(resource.into()),
                subresource: (!subresource.is_empty()).then(|| subresource.into()),
                verb: Some(verb.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = Api::<SubjectAccessReview>::all(c.clone()).create(&PostParams::default(), &review).await.unwrap_or_else(|e| panic!("SubjectAccessReview for {ns}/{sa}: {e}"));
    out.status.is_some_and(|s| s.allowed)
}

/// The `airlock` CLI next to the test binaries (`target/debug/airlock`, built by `make install`
/// or `cargo build -p airlock-cli`); panics saying so when it is missing.
pub fn cli_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug/airlock
    let bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("airlock")).expect("target directory");
    assert!(bin.is_file(), "{} missing: build the CLI first (`cargo build -p airlock-cli`; `make install` does)", bin.display());
    bin
}

/// What one run of the CLI did.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the CLI with `AIRLOCK_ADDR`, `AIRLOCK_TOKEN` and `AIRLOCK_NAMESPACE` set, at most 300 s.
pub async fn cli(addr: &str, token: &str, ns: &str, args: &[&str]) -> CliRun {
    let mut cmd = tokio::process::Command::new(cli_binary());
    cmd.args(args)
        .env("AIRLOCK_ADDR", addr)
        .env("AIRLOCK_TOKEN", token)
        .env("AIRLOCK_NAMESPACE", ns)
        .env_remove("AIRLOCK_CA_CERT")
        .env_remove("AIRLOCK_TLS_SERVER_NAME")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("airlock {args:?} still running after 300 s"))
        .unwrap_or_else(|e| panic!("running airlock {args:?}: {e}"));
    let run = CliRun { code: out.status.code(), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() };
    eprintln!("airlock {args:?} -> {:?}", run.code);
    run
}
