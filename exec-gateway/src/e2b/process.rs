//! envd's `process.Process` service, served from the gateway's own background processes
//! (`airlock.v1.Processes`: StartProcess, ConnectProcess, ListProcesses, SendInput,
//! SignalProcess, KillProcess), so a process started through the e2b API is the same process
//! `airlock ps` and the gRPC API see, and outlives the HTTP request that started it.
//!
//! - `Start`: StartProcess following its output on the same agent connection: `start{pid}`, the
//!   output from offset 0 and `end`.
//! - `Connect`: output from the moment of the call (as envd does: nothing is replayed), then `end`.
//! - Streams send `keepalive` events when quiet (envd does the same) and stop reading from the
//!   agent when the client goes away; the process goes on running.

use std::time::Duration;

use airlock_api::proto::v1 as pb;
use airlock_api::proto::v1::processes_server::Processes;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::connect::{self, Codec, ConnectError};
use super::proto::process as ep;
use super::{E2b, SandboxCall};
use crate::processes::EVENT_BUFFER;

/// A stream with nothing to say for this long sends a keepalive event.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Serves one call of `process.Process/<method>`.
pub async fn serve(e2b: &E2b, call: SandboxCall, method: &str, headers: &HeaderMap, body: Bytes) -> Response {
    match method {
        "Start" | "Connect" => {
            let codec = match connect::stream_codec(headers) {
                Ok(c) => c,
                Err(e) => return e.into_response(),
            };
            let r = if method == "Start" {
                start(e2b, &call, codec, &body, timeout(headers)).await
            } else {
                attach(e2b, &call, codec, &body).await
            };
            r.unwrap_or_else(|e| connect::streaming_error(codec, e))
        }
        "StreamInput" => {
            let codec = match connect::stream_codec(headers) {
                Ok(c) => c,
                Err(e) => return e.into_response(),
            };
            match stream_input(e2b, &call, codec, &body).await {
                Ok(()) => connect::streaming(codec, futures::stream::iter([Ok(ep::StreamInputResponse {})])),
                Err(e) => connect::streaming_error(codec, e),
            }
        }
        _ => {
            let codec = match connect::unary_codec(headers) {
                Ok(c) => c,
                Err(e) => return e.into_response(),
            };
            let r = match method {
                "List" => list(e2b, &call, codec, &body).await,
                "SendInput" => send_input(e2b, &call, codec, &body).await,
                "CloseStdin" => close_stdin(e2b, &call, codec, &body).await,
                "SendSignal" => send_signal(e2b, &call, codec, &body).await,
                "Update" => update(e2b, &call, codec, &body).await,
                m => Err(ConnectError::new(tonic::Code::NotFound, format!("process.Process has no method {m}"))),
            };
            r.unwrap_or_else(IntoResponse::into_response)
        }
    }
}

fn selector(field: &str, s: Option<ep::ProcessSelector>) -> Result<pb::ProcessSelector, ConnectError> {
    use ep::process_selector::Selector as E;
    use pb::process_selector::Selector as P;
    let sel = match s.and_then(|s| s.selector) {
        Some(E::Pid(pid)) => P::Pid(i32::try_from(pid).map_err(|_| ConnectError::invalid(format!("{field}.pid: out of range")))?),
        Some(E::Tag(t)) => P::Tag(t),
        None => return Err(ConnectError::invalid(format!("{field}: a pid or a tag is required"))),
    };
    Ok(pb::ProcessSelector { selector: Some(sel) })
}

fn size(field: &str, pty: &ep::Pty) -> Result<pb::Resize, ConnectError> {
    match &pty.size {
        Some(s) => Ok(pb::Resize { cols: s.cols, rows: s.rows }),
        None => Err(ConnectError::invalid(format!("{field}.size: required"))),
    }
}

/// envd's end event for an exit: Go's `ProcessState` strings ("exit status 1", "signal: killed").
fn end(x: &pb::Exited) -> ep::process_event::Event {
    let (exit_code, exited, status) = if x.signal != 0 {
        (-1, false, format!("signal: {}", signal_name(x.signal)))
    } else {
        (x.exit_code, true, format!("exit status {}", x.exit_code))
    };
    let error = x.timed_out.then(|| "the command's timeout ran out: killed".to_string());
    ep::process_event::Event::End(ep::process_event::EndEvent { exit_code, exited, status, error })
}

fn signal_name(s: i32) -> String {
    match s {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        9 => "killed".into(),
        13 => "broken pipe".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// Turns a ConnectProcess stream into envd events (after `start{pid}`), with keepalives, through a
/// bounded channel whose reader is the HTTP body: when the client goes away the task ends.
///
/// `upstream` is awaited inside the task: ConnectProcess answers only with the process's first
/// output or its end, and the SDKs wait for `start` (sent at once) before they go on.
fn events<R, F>(codec: Codec, pid: u32, tty: bool, upstream: F, wrap: fn(ep::ProcessEvent) -> R) -> Response
where
    R: prost::Message + serde::Serialize + Send + 'static,
    F: std::future::Future<Output = Result<crate::background::ProcessStream, tonic::Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<R, ConnectError>>(EVENT_BUFFER);
    let ev = move |e: ep::process_event::Event| Ok(wrap(ep::ProcessEvent { event: Some(e) }));
    let _ = tx.try_send(ev(ep::process_event::Event::Start(ep::process_event::StartEvent { pid })));
    tokio::spawn(async move {
        use ep::process_event::data_event::Output;
        use ep::process_event::{DataEvent, Event};
        // Keepalives also while ConnectProcess waits for the process's first output.
        let mut pending = Box::pin(upstream);
        let mut upstream = loop {
            tokio::select! {
                u = &mut pending => match u {
                    Ok(u) => break u,
                    Err(s) => {
                        let _ = tx.send(Err(ConnectError::from(s))).await;
                        return;
                    }
                },
                _ = tx.closed() => return,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(ev(Event::Keepalive(ep::process_event::KeepAlive {}))).await.is_err() {
                        return;
                    }
                }
            }
        };
        loop {
            let next = tokio::select! {
                n = upstream.next() => n,
                _ = tx.closed() => return,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(ev(Event::Keepalive(ep::process_event::KeepAlive {}))).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let mut last = false;
            let out = match next {
                None => return,
                Some(Err(s)) => {
                    last = true;
                    Err(ConnectError::from(s))
                }
                Some(Ok(pb::ProcessEvent { event: None })) => continue,
                Some(Ok(pb::ProcessEvent { event: Some(e) })) => match e {
                    pb::process_event::Event::Stdout(c) => {
                        let o = if tty { Output::Pty(c.data) } else { Output::Stdout(c.data) };
                        ev(Event::Data(DataEvent { output: Some(o) }))
                    }
                    pb::process_event::Event::Stderr(c) => ev(Event::Data(DataEvent { output: Some(Output::Stderr(c.data)) })),
                    pb::process_event::Event::Exited(x) => {
                        last = true;
                        ev(end(&x))
                    }
                    pb::process_event::Event::CaughtUp(_) => continue,
                },
            };
            if tx.send(out).await.is_err() || last {
                return;
            }
        }
    });
    connect::streaming(codec, ReceiverStream::new(rx))
}

/// `Connect-Timeout-Ms` of a Start: the command's lifetime, as envd keeps it (0 or none: no limit).
fn timeout(headers: &HeaderMap) -> Option<prost_types::Duration> {
    let ms: u64 = headers.get("connect-timeout-ms")?.to_str().ok()?.trim().parse().ok()?;
    (ms > 0).then(|| prost_types::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 })
}

async fn start(
    e2b: &E2b,
    call: &SandboxCall,
    codec: Codec,
    body: &[u8],
    timeout: Option<prost_types::Duration>,
) -> Result<Response, ConnectError> {
    let r: ep::StartRequest = connect::stream_request(codec, body)?;
    let cfg = r.process.ok_or_else(|| ConnectError::invalid("process: required"))?;
    if cfg.cmd.is_empty() {
        return Err(ConnectError::invalid("process.cmd: required"));
    }
    let tty = r.pty.is_some();
    let size = r.pty.as_ref().map(|p| size("pty", p)).transpose()?;
    let mut args = vec![cfg.cmd];
    args.extend(cfg.args);
    let req = pb::StartProcessRequest {
        sandbox: Some(call.sandbox_ref()),
        command: Some(pb::start_process_request::Command::Argv(pb::Argv { args })),
        env: cfg.envs.into_iter().collect(),
        cwd: cfg.cwd.unwrap_or_default(),
        tag: r.tag.unwrap_or_default(),
        tty,
        size,
        // envd keeps stdin open unless the caller says `stdin: false`.
        close_stdin: r.stdin == Some(false),
        timeout,
        ..Default::default()
    };
    let (info, upstream) = e2b.processes().start_attached(call.request(req)).await?;
    let pid = info.pid as u32;
    let upstream = async move { Ok(upstream) };
    Ok(events(codec, pid, tty, upstream, |e| ep::StartResponse { event: Some(e) }))
}

async fn find(e2b: &E2b, call: &SandboxCall, sel: &pb::ProcessSelector) -> Result<pb::ProcessInfo, ConnectError> {
    let list = e2b
        .processes()
        .list_processes(call.request(pb::ListProcessesRequest { sandbox: Some(call.sandbox_ref()) }))
        .await?
        .into_inner();
    let hit = list.processes.into_iter().find(|p| match &sel.selector {
        Some(pb::process_selector::Selector::Pid(pid)) => p.pid == *pid,
        Some(pb::process_selector::Selector::Tag(t)) => &p.tag == t,
        None => false,
    });
    hit.ok_or_else(|| ConnectError::new(tonic::Code::NotFound, format!("process {} not found in sandbox {}", describe(sel), call.name)))
}

/// The selected process, which must be running (envd answers not_found for an ended one).
async fn running(e2b: &E2b, call: &SandboxCall, sel: &pb::ProcessSelector) -> Result<pb::ProcessInfo, ConnectError> {
    let p = find(e2b, call, sel).await?;
    if !p.running {
        return Err(ConnectError::new(tonic::Code::NotFound, format!("process {} of sandbox {} has ended", describe(sel), call.name)));
    }
    Ok(p)
}

fn describe(sel: &pb::ProcessSelector) -> String {
    match &sel.selector {
        Some(pb::process_selector::Selector::Pid(p)) => format!("with pid {p}"),
        Some(pb::process_selector::Selector::Tag(t)) => format!("with tag {t:?}"),
        None => "-".into(),
    }
}

async fn attach(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ep::ConnectRequest = connect::stream_request(codec, body)?;
    let sel = selector("process", r.process)?;
    let p = find(e2b, call, &sel).await?;
    let (processes, req) = (e2b.processes(), call.request(pb::ConnectProcessRequest {
        sandbox: Some(call.sandbox_ref()),
        process: Some(sel),
        stdout_offset: p.stdout_end,
        stderr_offset: p.stderr_end,
        follow: true,
    }));
    let upstream = async move { processes.connect_process(req).await.map(tonic::Response::into_inner) };
    Ok(events(codec, p.pid as u32, p.tty, upstream, |e| ep::ConnectResponse { event: Some(e) }))
}

async fn list(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let _: ep::ListRequest = connect::decode(codec, body)?;
    let list = e2b
        .processes()
        .list_processes(call.request(pb::ListProcessesRequest { sandbox: Some(call.sandbox_ref()) }))
        .await?
        .into_inner();
    let processes = list
        .processes
        .into_iter()
        // The code interpreter's contexts are the interpreter's, not commands (as in e2b).
        .filter(|p| p.running && !p.tag.starts_with(super::interpreter::TAG_PREFIX))
        .map(|p| {
            let mut argv = p.argv.into_iter();
            ep::ProcessInfo {
                config: Some(ep::ProcessConfig {
                    cmd: argv.next().unwrap_or_default(),
                    args: argv.collect(),
                    envs: Default::default(),
                    cwd: None,
                }),
                pid: p.pid as u32,
                tag: (!p.tag.is_empty()).then_some(p.tag),
            }
        })
        .collect();
    Ok(connect::unary(codec, &ep::ListResponse { processes }))
}

async fn input(e2b: &E2b, call: &SandboxCall, sel: pb::ProcessSelector, data: Bytes, close: bool) -> Result<(), ConnectError> {
    running(e2b, call, &sel).await?;
    e2b.processes()
        .send_input(call.request(pb::SendInputRequest { sandbox: Some(call.sandbox_ref()), process: Some(sel), data, close }))
        .await?;
    Ok(())
}

fn input_bytes(i: Option<ep::ProcessInput>) -> Bytes {
    match i.and_then(|i| i.input) {
        Some(ep::process_input::Input::Stdin(b)) | Some(ep::process_input::Input::Pty(b)) => b,
        None => Bytes::new(),
    }
}

async fn send_input(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ep::SendInputRequest = connect::decode(codec, body)?;
    let sel = selector("process", r.process)?;
    input(e2b, call, sel, input_bytes(r.input), false).await?;
    Ok(connect::unary(codec, &ep::SendInputResponse {}))
}

async fn close_stdin(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ep::CloseStdinRequest = connect::decode(codec, body)?;
    let sel = selector("process", r.process)?;
    input(e2b, call, sel, Bytes::new(), true).await?;
    Ok(connect::unary(codec, &ep::CloseStdinResponse {}))
}

async fn send_signal(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ep::SendSignalRequest = connect::decode(codec, body)?;
    let sel = selector("process", r.process)?;
    running(e2b, call, &sel).await?;
    match ep::Signal::try_from(r.signal) {
        // SIGKILL ends the whole tree, as envd's kill does; answered once the process has ended,
        // so a kill that returned is not followed by a process still listed as running.
        Ok(ep::Signal::Sigkill) => {
            e2b.processes()
                .kill_process(call.request(pb::KillProcessRequest { sandbox: Some(call.sandbox_ref()), process: Some(sel.clone()) }))
                .await?;
            for _ in 0..100 {
                match find(e2b, call, &sel).await {
                    Ok(p) if p.running => tokio::time::sleep(Duration::from_millis(20)).await,
                    _ => break,
                }
            }
        }
        Ok(ep::Signal::Sigterm) => {
            e2b.processes()
                .signal_process(call.request(pb::SignalProcessRequest {
                    sandbox: Some(call.sandbox_ref()),
                    process: Some(sel),
                    action: Some(pb::signal_process_request::Action::Signal(pb::Signal { number: 15 })),
                }))
                .await?;
        }
        _ => return Err(ConnectError::invalid(format!("signal: {} is not SIGTERM or SIGKILL", r.signal))),
    }
    Ok(connect::unary(codec, &ep::SendSignalResponse {}))
}

async fn update(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ep::UpdateRequest = connect::decode(codec, body)?;
    let sel = selector("process", r.process)?;
    running(e2b, call, &sel).await?;
    if let Some(pty) = &r.pty {
        let s = size("pty", pty)?;
        e2b.processes()
            .signal_process(call.request(pb::SignalProcessRequest {
                sandbox: Some(call.sandbox_ref()),
                process: Some(sel),
                action: Some(pb::signal_process_request::Action::Resize(s)),
            }))
            .await?;
    }
    Ok(connect::unary(codec, &ep::UpdateResponse {}))
}

/// Client streaming: a `start` naming the process, then `data` messages in order. The body is
/// read whole (HTTP/1.1 clients send it at once); each message goes to the process in order.
async fn stream_input(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<(), ConnectError> {
    use ep::stream_input_request::Event;
    let mut sel = None;
    for m in connect::envelopes(body)? {
        let r: ep::StreamInputRequest = connect::decode(codec, m)?;
        match r.event {
            Some(Event::Start(s)) => sel = Some(selector("start.process", s.process)?),
            Some(Event::Data(d)) => {
                let s = sel.clone().ok_or_else(|| ConnectError::invalid("data before start: the first message names the process"))?;
                input(e2b, call, s, input_bytes(d.input), false).await?;
            }
            Some(Event::Keepalive(_)) | None => {}
        }
    }
    Ok(())
}
