//! e2b's code interpreter (the e2b-code-interpreter SDK's port 49999): `POST /execute` streams
//! e2b's execution messages as JSON lines; `/contexts` creates, lists, restarts and deletes
//! contexts. Python only (other languages answer 400).
//!
//! A context is a background process of the sandbox (`airlock.v1` StartProcess, tag
//! `e2b-context-<id>`): `python3 -u -c <interpreter.py> CWD`, a REPL whose globals persist between
//! executions. An execution is one JSON line written to its stdin (SendInput); the answer is read
//! from its stdout (ConnectProcess from the offset the stream had before the request), keeping the
//! lines that carry the request's ID. Contexts therefore live in the sandbox, not in the gateway:
//! any gateway replica serves them, and they survive a gateway restart. No Jupyter is needed; a
//! result is the `repr` of a cell's last expression (text only: no rich formats or charts).

use std::collections::BTreeMap;
use std::time::Duration;

use airlock_api::proto::v1 as pb;
use airlock_api::proto::v1::processes_server::Processes;
use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{E2b, SandboxCall};
use crate::processes::EVENT_BUFFER;

/// The REPL of one context.
const DRIVER: &str = include_str!("interpreter.py");
/// Tag prefix of context processes.
pub const TAG_PREFIX: &str = "e2b-context-";
/// The context `/execute` uses without `context_id` (started on first use).
pub const DEFAULT_CONTEXT: &str = "default";
/// e2b's default working directory.
pub const DEFAULT_CWD: &str = "/home/user";
/// Output kept per context stream (stdout, stderr) for executions to read.
const BUFFER_BYTES: u64 = 8 * 1024 * 1024;
/// A quiet execution sends a keepalive line this often (as e2b's server does).
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Longest protocol line kept while waiting for its end.
const MAX_LINE: usize = 4 * 1024 * 1024;
/// Largest `/execute` or `/contexts` body.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// An error as the code interpreter answers it: a status and a plain-text message.
#[derive(Debug)]
struct Fail(StatusCode, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, [("should-retry", "false")], self.1).into_response()
    }
}

impl From<tonic::Status> for Fail {
    fn from(s: tonic::Status) -> Self {
        let e = super::control::E2bError::from_status(&s);
        // 502 means "the sandbox timed out" to the SDKs: never send it for anything else.
        let status = if e.status == StatusCode::BAD_GATEWAY { StatusCode::INTERNAL_SERVER_ERROR } else { e.status };
        Fail(status, e.message)
    }
}

pub(crate) async fn serve(e2b: &E2b, call: SandboxCall, parts: Parts, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return Fail(StatusCode::PAYLOAD_TOO_LARGE, format!("reading the request: {e}")).into_response(),
    };
    let path = parts.uri.path().trim_end_matches('/');
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let r = match (&parts.method, segments.as_slice()) {
        (&Method::POST, ["execute"]) => execute(e2b, &call, &body).await,
        (&Method::POST, ["contexts"]) => create(e2b, &call, &body).await,
        (&Method::GET, ["contexts"]) => list(e2b, &call).await.map(|c| axum::Json(c).into_response()),
        (&Method::DELETE, ["contexts", id]) => delete(e2b, &call, id).await,
        (&Method::POST, ["contexts", id, "restart"]) => restart(e2b, &call, id).await,
        (m, _) => Err(Fail(StatusCode::NOT_FOUND, format!("{m} {path} is not part of the code interpreter API"))),
    };
    r.unwrap_or_else(IntoResponse::into_response)
}

fn json_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, Fail> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Fail(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

fn python(field: &str, language: Option<&str>) -> Result<(), Fail> {
    match language.map(str::to_ascii_lowercase).as_deref() {
        None | Some("python") | Some("python3") => Ok(()),
        Some(other) => Err(Fail(StatusCode::BAD_REQUEST, format!("{field}: {other:?} is not supported by Airlock's code interpreter (only python)"))),
    }
}

fn valid_id(id: &str) -> Result<(), Fail> {
    if id.is_empty() || id.len() > 100 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(Fail(StatusCode::NOT_FOUND, format!("Context {id} not found")));
    }
    Ok(())
}

fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    let a = h.finish();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())
}

/// A running context: its ID, working directory and process.
struct Context {
    id: String,
    cwd: String,
    process: pb::ProcessInfo,
}

impl Context {
    fn json(&self) -> Value {
        json!({"id": self.id, "language": "python", "cwd": self.cwd})
    }
}

async fn contexts(e2b: &E2b, call: &SandboxCall) -> Result<Vec<Context>, Fail> {
    let list = e2b
        .processes()
        .list_processes(call.request(pb::ListProcessesRequest { sandbox: Some(call.sandbox_ref()) }))
        .await?
        .into_inner();
    let mut out: Vec<Context> = list
        .processes
        .into_iter()
        .filter(|p| p.running)
        .filter_map(|p| {
            let id = p.tag.strip_prefix(TAG_PREFIX)?.to_string();
            let cwd = p.argv.get(4).cloned().unwrap_or_default();
            Some(Context { id, cwd, process: p })
        })
        .collect();
    out.sort_by_key(|c| c.process.started_at.map(|t| (t.seconds, t.nanos)));
    Ok(out)
}

async fn find(e2b: &E2b, call: &SandboxCall, id: &str) -> Result<Context, Fail> {
    valid_id(id)?;
    contexts(e2b, call)
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| Fail(StatusCode::NOT_FOUND, format!("Context {id} not found")))
}

async fn start(e2b: &E2b, call: &SandboxCall, id: &str, cwd: &str) -> Result<(), Fail> {
    let req = pb::StartProcessRequest {
        sandbox: Some(call.sandbox_ref()),
        command: Some(pb::start_process_request::Command::Argv(pb::Argv {
            args: vec!["python3".into(), "-u".into(), "-c".into(), DRIVER.into(), cwd.into()],
        })),
        tag: format!("{TAG_PREFIX}{id}"),
        buffer_bytes: BUFFER_BYTES,
        ..Default::default()
    };
    match e2b.processes().start_process(call.request(req)).await {
        Ok(_) => Ok(()),
        // Started meanwhile by another call.
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(Fail::from(s)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct NewContext {
    language: Option<String>,
    cwd: Option<String>,
}

async fn create(e2b: &E2b, call: &SandboxCall, body: &Bytes) -> Result<Response, Fail> {
    let r: NewContext = json_body(body)?;
    python("language", r.language.as_deref())?;
    let cwd = r.cwd.filter(|c| !c.is_empty()).unwrap_or_else(|| DEFAULT_CWD.to_string());
    crate::validate::path("cwd", &cwd)?;
    let id = new_id();
    start(e2b, call, &id, &cwd).await?;
    tracing::info!(namespace = %call.namespace, sandbox = %call.name, context = %id, "code interpreter context started");
    Ok(axum::Json(json!({"id": id, "language": "python", "cwd": cwd})).into_response())
}

async fn list(e2b: &E2b, call: &SandboxCall) -> Result<Vec<Value>, Fail> {
    Ok(contexts(e2b, call).await?.iter().map(Context::json).collect())
}

/// Kills the context's process and waits (up to 5 s) until the agent has reaped it, so the
/// context is gone from the list and its tag is free when this returns.
async fn kill(e2b: &E2b, call: &SandboxCall, id: &str) -> Result<(), Fail> {
    let sel = pb::ProcessSelector { selector: Some(pb::process_selector::Selector::Tag(format!("{TAG_PREFIX}{id}"))) };
    e2b.processes()
        .kill_process(call.request(pb::KillProcessRequest { sandbox: Some(call.sandbox_ref()), process: Some(sel) }))
        .await?;
    for _ in 0..50 {
        if contexts(e2b, call).await?.iter().all(|x| x.id != id) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Fail(StatusCode::INTERNAL_SERVER_ERROR, format!("context {id} was killed but still runs after 5 s")))
}

async fn delete(e2b: &E2b, call: &SandboxCall, id: &str) -> Result<Response, Fail> {
    find(e2b, call, id).await?;
    kill(e2b, call, id).await?;
    Ok(axum::Json(Value::Null).into_response())
}

async fn restart(e2b: &E2b, call: &SandboxCall, id: &str) -> Result<Response, Fail> {
    let c = find(e2b, call, id).await?;
    kill(e2b, call, id).await?;
    start(e2b, call, id, &c.cwd).await?;
    Ok(axum::Json(Value::Null).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct Execute {
    #[serde(default)]
    code: String,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<BTreeMap<String, String>>,
}

async fn execute(e2b: &E2b, call: &SandboxCall, body: &Bytes) -> Result<Response, Fail> {
    let r: Execute = json_body(body)?;
    if r.context_id.is_some() && r.language.is_some() {
        return Err(Fail(StatusCode::BAD_REQUEST, "Only one of context_id or language can be provided".into()));
    }
    python("language", r.language.as_deref())?;
    let id = r.context_id.clone().unwrap_or_else(|| DEFAULT_CONTEXT.to_string());
    let ctx = match find(e2b, call, &id).await {
        Ok(c) => c,
        Err(_) if r.context_id.is_none() => {
            start(e2b, call, &id, DEFAULT_CWD).await?;
            find(e2b, call, &id).await?
        }
        Err(e) => return Err(e),
    };
    let env = r.env_vars.unwrap_or_default();
    if let Some(k) = env.keys().find(|k| !crate::validate::is_env_name(k)) {
        return Err(Fail(StatusCode::BAD_REQUEST, format!("env_vars: {k:?} is not an environment variable name")));
    }
    // By pid, not tag: a context restarted meanwhile is another process (not running: an error).
    let sel = || pb::ProcessSelector { selector: Some(pb::process_selector::Selector::Pid(ctx.process.pid)) };
    let request_id = new_id();
    let processes = e2b.processes();
    processes
        .send_input(call.request(pb::SendInputRequest {
            sandbox: Some(call.sandbox_ref()),
            process: Some(sel()),
            data: Bytes::from(request(&request_id, &r.code, &env)),
            close: false,
        }))
        .await?;
    // Read from where the context's output stood before the request: everything after is this
    // request's or another's (told apart by ID). ConnectProcess answers with the first output,
    // so the answer starts at once and the relay waits for it (with keepalives).
    let upstream_req = call.request(pb::ConnectProcessRequest {
        sandbox: Some(call.sandbox_ref()),
        process: Some(sel()),
        stdout_offset: ctx.process.stdout_end,
        stderr_offset: ctx.process.stderr_end,
        follow: true,
    });
    let upstream = async move { processes.connect_process(upstream_req).await.map(tonic::Response::into_inner) };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(EVENT_BUFFER);
    tokio::spawn(relay(upstream, request_id, tx));
    Ok((StatusCode::OK, Body::from_stream(ReceiverStream::new(rx))).into_response())
}

/// One request as interpreter.py reads it: a header line, the variables, the code, byte-counted.
fn request(id: &str, code: &str, env: &BTreeMap<String, String>) -> Vec<u8> {
    let mut b = format!("{id} {} {}\n", code.len(), env.len()).into_bytes();
    for (k, v) in env {
        b.extend_from_slice(format!("{} {}\n", k.len(), v.len()).as_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b.extend_from_slice(code.as_bytes());
    b
}

/// Copies this request's lines (its `id` removed) from the context's stdout to the client, until
/// `end_of_execution`, the context's exit or the client's departure. A line longer than
/// [`MAX_LINE`] (interpreter.py splits output into smaller messages; only a cell writing to the
/// protocol's fd could) is dropped, not buffered.
async fn relay<F>(upstream: F, request_id: String, tx: mpsc::Sender<Result<Bytes, std::io::Error>>)
where
    F: std::future::Future<Output = Result<crate::background::ProcessStream, tonic::Status>>,
{
    let line = |v: Value| {
        let mut b = serde_json::to_vec(&v).unwrap_or_default();
        b.push(b'\n');
        Ok(Bytes::from(b))
    };
    let ended = |why: String| json!({"type": "error", "name": "ContextEnded", "value": why, "traceback": ""});
    let mut pending_upstream = Box::pin(upstream);
    let mut upstream = loop {
        tokio::select! {
            u = &mut pending_upstream => match u {
                Ok(u) => break u,
                Err(s) => {
                    let _ = tx.send(line(ended(format!("reading the context's output: {}", s.message())))).await;
                    let _ = tx.send(line(json!({"type": "end_of_execution"}))).await;
                    return;
                }
            },
            _ = tx.closed() => return,
            _ = tokio::time::sleep(KEEPALIVE) => {
                if tx.send(line(json!({"type": "keepalive"}))).await.is_err() {
                    return;
                }
            }
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut skipping = false;
    loop {
        let next = tokio::select! {
            n = upstream.next() => n,
            _ = tx.closed() => return,
            _ = tokio::time::sleep(KEEPALIVE) => {
                if tx.send(line(json!({"type": "keepalive"}))).await.is_err() {
                    return;
                }
                continue;
            }
        };
        match next {
            Some(Ok(pb::ProcessEvent { event: Some(pb::process_event::Event::Stdout(c)) })) => {
                pending.extend_from_slice(&c.data);
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let raw: Vec<u8> = pending.drain(..=i).collect();
                    if std::mem::take(&mut skipping) {
                        continue;
                    }
                    let Ok(mut v) = serde_json::from_slice::<Value>(&raw) else { continue };
                    if v.get("id").and_then(Value::as_str) != Some(&request_id) {
                        continue;
                    }
                    if let Some(o) = v.as_object_mut() {
                        o.remove("id");
                    }
                    let end = v.get("type").and_then(Value::as_str) == Some("end_of_execution");
                    if tx.send(line(v)).await.is_err() || end {
                        return;
                    }
                }
                if pending.len() > MAX_LINE {
                    pending.clear();
                    skipping = true;
                }
            }
            Some(Ok(pb::ProcessEvent { event: Some(pb::process_event::Event::Exited(x)) })) => {
                let why = format!("the context's interpreter exited (code {}, signal {}) during the execution", x.exit_code, x.signal);
                let _ = tx.send(line(ended(why))).await;
                let _ = tx.send(line(json!({"type": "end_of_execution"}))).await;
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(s)) => {
                let _ = tx.send(line(ended(format!("reading the context's output: {}", s.message())))).await;
                let _ = tx.send(line(json!({"type": "end_of_execution"}))).await;
                return;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_languages() {
        assert!(valid_id("default").is_ok());
        assert!(valid_id(&new_id()).is_ok());
        assert_ne!(new_id(), new_id());
        assert!(valid_id("../x").is_err());
        assert!(valid_id("").is_err());
        assert!(python("language", Some("Python")).is_ok());
        assert!(python("language", None).is_ok());
        assert_eq!(python("language", Some("r")).unwrap_err().0, StatusCode::BAD_REQUEST);
        let e: Execute = json_body(&Bytes::from_static(br#"{"code":"x","context_id":null,"language":null,"env_vars":null}"#)).unwrap();
        assert_eq!(e.code, "x");
        assert!(e.context_id.is_none());
    }

    #[test]
    fn requests_are_byte_counted() {
        let env = BTreeMap::from([("K".to_string(), "vé".to_string())]);
        assert_eq!(request("r1", "print('é')\n", &env), "r1 12 1\n1 3\nKvéprint('é')\n".as_bytes());
    }
}
