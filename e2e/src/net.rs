//! Network checks for the cluster tests: listeners the test starts (on the node and in pods), a
//! probe run inside a pod, and [`settle`], which waits until every probe of a round gives the
//! expected answer (controls included) and keeps giving it.
//!
//! Targets are strings `MODE:IPv4:PORT`: `tcp` (connect and read the listener's `hello`), `udp`
//! (send a datagram, read `hello` back) or `conn` (the TCP connection is accepted: for servers
//! that are not ours and do not speak first, such as the API server). A probe gives `OPEN` (what
//! the mode asks for happened) or why not: `TIMEOUT`, `REFUSED`, `ERR <errno>`, `OTHER <data>`.
//! Every "blocked" needs a control that sees `OPEN` on the same target in the same round:
//! otherwise a listener that is down would pass for a fence.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, AttachParams, DeleteParams, PostParams};

use crate::{ExecOutput, exit_code};

/// The node's address (on `lo`, e2e/cluster `NODE_IP`): the API server and the kubelet listen
/// there.
pub const NODE_IP: &str = "10.200.0.1";
/// Machine-local test addresses on `lo` outside every cluster CIDR (e2e/cluster `TEST_IPS`):
/// private addresses that are not the cluster's, where tests start their own listeners.
pub const TEST_IPS: [&str; 2] = ["10.201.0.1", "10.201.0.2"];
/// A machine-local test address on `lo` that is neither private nor the cluster's (TEST-NET-1,
/// e2e/cluster `TEST_IPS`): where `egress: Internet` is shown to reach something, without any
/// traffic leaving the machine.
pub const PUBLIC_TEST_IP: &str = "192.0.2.1";
/// The CNI bridge the pods' default route points at (e2e/cluster `BRIDGE`).
pub const BRIDGE: &str = "airlock0";

/// Probes each target in its own thread (3 s timeouts) and prints `TARGET RESULT` per line, in
/// argument order.
pub const PROBE: &str = r#"import socket,sys,threading
def one(t):
  m,h,p=t.split(':'); s=None
  try:
    if m=='udp':
      s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(3); s.connect((h,int(p))); s.send(b'ping'); d=s.recv(16)
    else:
      s=socket.socket(); s.settimeout(3); s.connect((h,int(p))); d=b'hello' if m=='conn' else s.recv(5)
    return 'OPEN' if d==b'hello' else 'OTHER %r'%d
  except socket.timeout: return 'TIMEOUT'
  except ConnectionRefusedError: return 'REFUSED'
  except OSError as e: return 'ERR %s'%e.errno
  finally:
    if s: s.close()
res={}
th=[threading.Thread(target=lambda t=t: res.__setitem__(t,one(t))) for t in sys.argv[1:]]
for x in th: x.start()
for x in th: x.join()
for t in sys.argv[1:]: print(t,res[t])
"#;

/// A listener for pods: TCP and UDP on every port in argv, answering `hello` to each connection
/// and each datagram (the sandbox image has only python3-minimal).
pub const TCP_UDP_LISTENER: &str = r#"import socket,sys,threading
def tcp(p):
  s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',p)); s.listen(64)
  while True:
    c,_=s.accept(); c.sendall(b'hello'); c.close()
def udp(p):
  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(('0.0.0.0',p))
  while True:
    d,a=s.recvfrom(512); s.sendto(b'hello',a)
for p in sys.argv[1:]:
  for f in (tcp,udp): threading.Thread(target=f,args=(int(p),)).start()
"#;

pub fn tcp(host: &str, port: u16) -> String {
    format!("tcp:{host}:{port}")
}
pub fn udp(host: &str, port: u16) -> String {
    format!("udp:{host}:{port}")
}
pub fn conn(host: &str, port: u16) -> String {
    format!("conn:{host}:{port}")
}

/// A TCP listener on the node at `ip:port` (`port` 0: any free one) greeting every connection
/// with `hello`, for as long as the test's runtime lives; returns the port.
pub async fn host_tcp(ip: &str, port: u16) -> u16 {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind((ip, port))
        .await
        .unwrap_or_else(|e| panic!("listening on TCP {ip}:{port} on the node (e2e/cluster puts {ip} on lo): {e}"));
    let port = l.local_addr().expect("listener address").port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = sock.write_all(b"hello").await;
                let _ = sock.shutdown().await;
            });
        }
    });
    port
}

/// A UDP listener on the node at `ip:port` answering every datagram with `hello`.
pub async fn host_udp(ip: &str, port: u16) {
    let s = tokio::net::UdpSocket::bind((ip, port))
        .await
        .unwrap_or_else(|e| panic!("listening on UDP {ip}:{port} on the node: {e}"));
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(b"hello", from).await;
        }
    });
}

/// The node's IPv4 address on the CNI bridge (the pods' gateway), read with `ip`.
pub fn bridge_ip() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", BRIDGE])
        .output()
        .unwrap_or_else(|e| panic!("running `ip addr show dev {BRIDGE}`: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no IPv4 address on bridge {BRIDGE}: {text:?} {:?}", String::from_utf8_lossy(&out.stderr)))
}

/// pods/exec of `argv` in `container` (or the pod's first), collecting output and exit code.
pub async fn exec_in(c: &Client, ns: &str, pod: &str, container: Option<&str>, argv: &[&str]) -> ExecOutput {
    use tokio::io::AsyncReadExt;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let mut ap = AttachParams::default().stdout(true).stderr(true).stdin(false);
    if let Some(ct) = container {
        ap = ap.container(ct);
    }
    let mut p = pods.exec(pod, argv.iter().copied(), &ap).await.unwrap_or_else(|e| panic!("exec in {ns}/{pod}: {e}"));
    let mut out = p.stdout().expect("stdout");
    let mut err = p.stderr().expect("stderr");
    let status = p.take_status().expect("status channel");
    let (mut so, mut se) = (Vec::new(), Vec::new());
    let (a, b) = tokio::join!(out.read_to_end(&mut so), err.read_to_end(&mut se));
    a.unwrap_or_else(|e| panic!("reading stdout of exec in {ns}/{pod}: {e}"));
    b.unwrap_or_else(|e| panic!("reading stderr of exec in {ns}/{pod}: {e}"));
    let code = exit_code(status.await.as_ref());
    let _ = p.join().await;
    ExecOutput { stdout: String::from_utf8_lossy(&so).into(), stderr: String::from_utf8_lossy(&se).into(), exit_code: code }
}

/// Runs [`PROBE`] in the pod against `targets`; returns `(target, result)` in order.
pub async fn probe(c: &Client, ns: &str, pod: &str, container: Option<&str>, targets: &[String]) -> Vec<(String, String)> {
    let mut argv = vec!["python3", "-c", PROBE];
    argv.extend(targets.iter().map(String::as_str));
    let out = exec_in(c, ns, pod, container, &argv).await;
    assert_eq!(out.exit_code, 0, "probe from {ns}/{pod}: {out:?}");
    let res: Vec<(String, String)> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(res.len(), targets.len(), "probe from {ns}/{pod}: {out:?}");
    res
}

/// One prober and what it must see: `(target, reaches)`. A control is a `Case` whose pod no
/// NetworkPolicy selects and whose every target must be reached.
pub struct Case<'a> {
    pub label: &'a str,
    pub pod: &'a str,
    pub container: Option<&'a str>,
    pub expect: Vec<(String, bool)>,
}

/// Rounds that must agree in a row before [`settle`] returns.
pub const HOLD_ROUNDS: usize = 3;

/// Probes every case each round (all at once) until a whole round matches every expectation
/// [`HOLD_ROUNDS`] times in a row, so a fence seen once is a fence that holds; panics at
/// `deadline` naming every target whose answer was wrong in the last round. Returns the number of
/// rounds it took.
pub async fn settle(c: &Client, ns: &str, cases: &[Case<'_>], deadline: Duration) -> usize {
    let end = tokio::time::Instant::now() + deadline;
    let (mut rounds, mut in_a_row) = (0usize, 0usize);
    loop {
        rounds += 1;
        let results = futures::future::join_all(cases.iter().map(|k| {
            let targets: Vec<String> = k.expect.iter().map(|(t, _)| t.clone()).collect();
            async move { probe(c, ns, k.pod, k.container, &targets).await }
        }))
        .await;
        let mut wrong = Vec::new();
        for (k, res) in cases.iter().zip(&results) {
            for ((target, reach), (_, got)) in k.expect.iter().zip(res) {
                if (got == "OPEN") != *reach {
                    let want = if *reach { "reach" } else { "NOT reach" };
                    wrong.push(format!("{} ({}) must {want} {target}, got {got}", k.label, k.pod));
                }
            }
        }
        if wrong.is_empty() {
            in_a_row += 1;
            if in_a_row == HOLD_ROUNDS {
                for (k, res) in cases.iter().zip(&results) {
                    eprintln!("{} ({}): {res:?}", k.label, k.pod);
                }
                return rounds;
            }
            continue;
        }
        in_a_row = 0;
        if tokio::time::Instant::now() >= end {
            panic!("after {rounds} probe rounds ({deadline:?}): {}", wrong.join("; "));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A namespace with a fixed name the operator is configured with (such as the DNS namespace of
/// e2e/values-local.yaml), labelled `airlock.dev/e2e=true`. One test run at a time holds it: an
/// exclusive lock on `/tmp/airlock-e2e-ns-<name>.lock`, held until the value is dropped, makes a
/// second run wait; a namespace left by an earlier run is deleted first.
/// [`FixedNamespace::cleanup`] deletes it; a panicking test starts the deletion from `Drop`.
pub struct FixedNamespace {
    pub name: String,
    client: Client,
    cleaned: bool,
    _lock: std::fs::File,
}

impl FixedNamespace {
    pub async fn new(c: &Client, name: &str) -> Self {
        let path = format!("/tmp/airlock-e2e-ns-{name}.lock");
        let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("creating {path}: {e}"));
        let lock = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .expect("lock task")
            .unwrap_or_else(|e| panic!("locking {path}: {e}"));
        let api = Api::<Namespace>::all(c.clone());
        let end = tokio::time::Instant::now() + Duration::from_secs(180);
        while let Some(old) = api.get_opt(name).await.unwrap_or_else(|e| panic!("reading namespace {name}: {e}")) {
            if old.metadata.deletion_timestamp.is_none() {
                let _ = api.delete(name, &DeleteParams::background()).await;
            }
            assert!(tokio::time::Instant::now() < end, "namespace {name} from an earlier run never went away");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"airlock.dev/e2e": "true"}}
        }))
        .expect("namespace literal");
        api.create(&PostParams::default(), &ns).await.unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(c.clone(), name);
        crate::wait_for(&sas, "default", Duration::from_secs(30), "default ServiceAccount", |s| s.is_some()).await;
        FixedNamespace { name: name.to_string(), client: c.clone(), cleaned: false, _lock: lock }
    }

    pub async fn cleanup(mut self) {
        self.cleaned = true;
        let _ = Api::<Namespace>::all(self.client.clone()).delete(&self.name, &DeleteParams::background()).await;
    }
}

impl Drop for FixedNamespace {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        crate::delete_namespace_now(&self.name);
    }
}
