//! The Files service: the agent's `put`, `get`, `ls`, `stat`, `rm`, `mkdir` and `mv` subcommands,
//! run as a process of the agent (direct path) or through `pods/exec`. Agent exit codes map to
//! gRPC codes (see [`agent::file_status`]). Over 600 lines: seven RPCs that share one
//! exec-and-map path (and `upload_from`, which the e2b front end's `/files` also uses); to be
//! split by RPC when they move to requests of the agent's direct channel.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::agent::{self, AgentError, FileCommand, Launch, RemoteProcess, StdinWriter};
use crate::auth::Access;
use airlock_api::proto::v1 as pb;
use crate::server::Ctx;
use crate::validate;

/// Most bytes of `ls` output accepted (about 150 000 entries).
const MAX_LISTING: usize = 32 * 1024 * 1024;
/// Most bytes kept of the agent's stderr.
const MAX_STDERR: usize = 64 * 1024;
/// Longest a metadata command (ls, stat, rm, mkdir) may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(300);

pub type DownloadStream = Pin<Box<dyn Stream<Item = Result<pb::DownloadResponse, Status>> + Send>>;

pub struct FilesService {
    pub(crate) ctx: Arc<Ctx>,
}

/// One entry as the agent prints it.
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct AgentEntry {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub mode: u32,
    #[serde(default)]
    pub mtime: i64,
}

impl AgentEntry {
    fn into_info(self) -> pb::FileInfo {
        let t = match self.kind.as_str() {
            "file" => pb::FileType::File,
            "dir" => pb::FileType::Dir,
            "symlink" => pb::FileType::Symlink,
            "other" => pb::FileType::Other,
            _ => pb::FileType::Unspecified,
        };
        pb::FileInfo {
            name: self.name,
            r#type: t as i32,
            size: self.size,
            mode: self.mode & 0o7777,
            mtime: Some(crate::convert::timestamp_from_unix(self.mtime)),
        }
    }
}

/// Parses `ls` output: one JSON object per line, sorted by name.
pub(crate) fn parse_listing(out: &[u8]) -> Result<Vec<pb::FileInfo>, String> {
    let text = std::str::from_utf8(out).map_err(|e| format!("listing is not UTF-8: {e}"))?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: AgentEntry =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        entries.push(e.into_info());
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Reads a pipe to its end, failing past `limit` bytes.
async fn read_limited(
    mut r: Pin<Box<dyn AsyncRead + Send>>,
    limit: usize,
    pod: &str,
) -> Result<Vec<u8>, AgentError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.map_err(|source| AgentError::Io {
            pod: pod.to_string(),
            source,
        })?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(AgentError::TooMuchOutput {
                pod: pod.to_string(),
                limit,
            });
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads a pipe to its end keeping at most `limit` bytes (the rest is read and dropped).
async fn read_capped(mut r: Pin<Box<dyn AsyncRead + Send>>, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = limit.saturating_sub(out.len()).min(n);
                out.extend_from_slice(&buf[..room]);
            }
        }
    }
}

/// Output of a finished agent command.
struct Collected {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs a command that needs no stdin and collects its output.
async fn collect(
    proc: RemoteProcess,
    pod: &str,
    stdout_limit: usize,
) -> Result<Collected, AgentError> {
    let RemoteProcess {
        stdin,
        stdout,
        stderr,
        status,
        guard,
        ..
    } = proc;
    // Stdin stays open (and untouched) until the command ended: closing it early would tell the
    // agent that the client is gone.
    let writer = StdinWriter::spawn(stdin);
    let (out, err, code) = tokio::join!(
        read_limited(stdout, stdout_limit, pod),
        read_capped(stderr, MAX_STDERR),
        status
    );
    drop(writer);
    drop(guard);
    let code = code?;
    Ok(Collected {
        code,
        stdout: out?,
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}

impl FilesService {
    /// Validates the sandbox, authorizes, checks readiness, records activity and starts `cmd`.
    async fn start<T>(
        &self,
        req: &Request<T>,
        sandbox: Option<&pb::SandboxRef>,
        verb: &'static str,
        cmd: &FileCommand,
    ) -> Result<(RemoteProcess, String, String, String), Status> {
        let ctx = &self.ctx;
        let (ns, name) = validate::sandbox_ref("sandbox", sandbox, &ctx.default_namespace)?;
        ctx.authorize(
            req,
            Access::new(verb, &ns, Some(&name)).subresource("files"),
        )
        .await?;
        self.start_checked(ns, name, cmd).await
    }

    async fn start_checked(
        &self,
        ns: String,
        name: String,
        cmd: &FileCommand,
    ) -> Result<(RemoteProcess, String, String, String), Status> {
        let ctx = &self.ctx;
        tracing::info!(namespace = %ns, sandbox = %name, op = cmd.name(), path = cmd.path(), "file operation");
        let (target, started) = crate::k8s::start_in(ctx, &ns, &name, &Launch::File(cmd.clone())).await?;
        ctx.activity.touch(&ns, &name);
        let pod = target.pod.clone();
        let proc = started.map_err(|e| {
            tracing::warn!(namespace = %ns, sandbox = %name, op = cmd.name(), error = %e, "starting the agent failed");
            Status::from(e)
        })?;
        Ok((proc, ns, name, pod))
    }

    /// Runs a metadata command to completion; non-zero exit codes become statuses.
    async fn metadata<T>(
        &self,
        req: &Request<T>,
        sandbox: Option<&pb::SandboxRef>,
        verb: &'static str,
        cmd: FileCommand,
        limit: usize,
    ) -> Result<Vec<u8>, Status> {
        let (proc, _ns, _name, pod) = self.start(req, sandbox, verb, &cmd).await?;
        let c = tokio::time::timeout(METADATA_TIMEOUT, collect(proc, &pod, limit))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "{} {}: no answer within {}s",
                    cmd.name(),
                    cmd.path(),
                    METADATA_TIMEOUT.as_secs()
                ))
            })??;
        if c.code != 0 {
            return Err(agent::file_status(
                cmd.name(),
                cmd.path(),
                c.code,
                &c.stderr,
            ));
        }
        Ok(c.stdout)
    }
}


impl FilesService {
    /// Upload from any stream of messages: the gRPC call's, or the e2b front end's (`/files`).
    pub(crate) async fn upload_from<S>(&self, req: Request<S>) -> Result<Response<pb::UploadResponse>, Status>
    where
        S: Stream<Item = Result<pb::UploadRequest, Status>> + Unpin + Send,
    {
        use futures::StreamExt;
        let mut req = req;
        let first = tokio::time::timeout(Duration::from_secs(30), async { req.get_mut().next().await.transpose() })
            .await
            .map_err(|_| Status::deadline_exceeded("header: no first message within 30s"))??;
        let Some(pb::UploadRequest {
            part: Some(pb::upload_request::Part::Header(h)),
        }) = first
        else {
            return Err(validate::invalid(
                "header",
                "the first message must be the header",
            ));
        };
        let (ns, name) = validate::sandbox_ref(
            "header.sandbox",
            h.sandbox.as_ref(),
            &self.ctx.default_namespace,
        )?;
        let path = validate::path("header.path", &h.path)?;
        let mode = validate::mode("header.mode", h.mode)?;
        // The caller, apart from the message stream (which need not be Sync).
        let (meta, extensions, mut input) = req.into_parts();
        let caller = Request::from_parts(meta, extensions, ());
        self.ctx
            .authorize(
                &caller,
                Access::new("create", &ns, Some(&name)).subresource("files"),
            )
            .await?;
        let cmd = FileCommand::Put {
            path: path.clone(),
            mode,
            parents: h.parents,
        };
        let (proc, ns, name, pod) = self.start_checked(ns, name, &cmd).await?;
        let RemoteProcess {
            stdin,
            stdout,
            stderr,
            mut status,
            guard,
            ..
        } = proc;
        let writer = StdinWriter::spawn(stdin);
        let out_task = tokio::spawn(read_capped(stdout, 4096));
        let err_task = tokio::spawn(read_capped(stderr, MAX_STDERR));
        let metrics = self.ctx.metrics.clone();

        // Feed the chunks while watching the agent: it may fail early (permission denied, ...).
        let fed: Result<(), Status> = loop {
            let msg = tokio::select! {
                m = input.next() => m.transpose(),
                r = &mut status => {
                    // The agent ended before the upload did: report its error.
                    let code = r.map_err(Status::from)?;
                    let err = err_task.await.unwrap_or_default();
                    if code != 0 {
                        return Err(agent::file_status("put", &path, code, &String::from_utf8_lossy(&err)));
                    }
                    return Err(Status::internal(format!("put {path}: the agent ended before the upload was complete")));
                }
                _ = self.ctx.hard_stop.cancelled() => break Err(Status::unavailable("the gateway is shutting down")),
            };
            match msg {
                Ok(Some(pb::UploadRequest {
                    part: Some(pb::upload_request::Part::Chunk(b)),
                })) => {
                    let n = b.len();
                    let mut ok = true;
                    for f in agent::data_frames(&b) {
                        if writer.normal.send(f).await.is_err() {
                            ok = false;
                            break;
                        }
                    }
                    if !ok {
                        break Err(Status::unavailable(format!(
                            "put {path}: the connection to the sandbox broke"
                        )));
                    }
                    metrics.add_bytes("upload", n);
                }
                Ok(Some(pb::UploadRequest {
                    part: Some(pb::upload_request::Part::Header(_)),
                })) => {
                    break Err(validate::invalid(
                        "header",
                        "may only be sent once, as the first message",
                    ));
                }
                Ok(Some(pb::UploadRequest { part: None })) => {
                    break Err(validate::invalid("part", "must be set"));
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let fed = match fed {
            Ok(()) => match writer.normal.send(agent::close_frame()).await {
                Ok(()) => Ok(()),
                Err(_) => Err(Status::unavailable(format!(
                    "put {path}: the connection to the sandbox broke"
                ))),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = fed {
            // No CLOSE: the agent discards its temporary file; the old file stays.
            writer.drop_stdin();
            tracing::info!(namespace = %ns, sandbox = %name, path = %path, error = %e.message(), "upload aborted");
            let st = tokio::time::timeout(agent::KILL_GRACE, &mut status).await;
            drop(guard);
            // A broken pipe usually means the agent refused the file and exited: its exit code
            // and message say why.
            if e.code() == tonic::Code::Unavailable
                && let Ok(Ok(code)) = st
                && code != 0
            {
                let err = tokio::time::timeout(agent::KILL_GRACE, err_task)
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or_default();
                return Err(agent::file_status(
                    "put",
                    &path,
                    code,
                    &String::from_utf8_lossy(&err),
                ));
            }
            return Err(e);
        }
        let code = tokio::time::timeout(METADATA_TIMEOUT, &mut status)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "put {path}: the agent did not commit the file within {}s",
                    METADATA_TIMEOUT.as_secs()
                ))
            })?
            .map_err(Status::from)?;
        let out = out_task.await.unwrap_or_default();
        let err = err_task.await.unwrap_or_default();
        drop(writer);
        drop(guard);
        if code != 0 {
            return Err(agent::file_status(
                "put",
                &path,
                code,
                &String::from_utf8_lossy(&err),
            ));
        }
        #[derive(Deserialize)]
        struct Size {
            size: u64,
        }
        let size = serde_json::from_slice::<Size>(out.trim_ascii())
            .map_err(|e| {
                Status::internal(format!(
                    "put {path}: unexpected agent output {:?}: {e}",
                    String::from_utf8_lossy(&out)
                ))
            })?
            .size;
        tracing::info!(namespace = %ns, sandbox = %name, pod = %pod, path = %path, size, "uploaded");
        Ok(Response::new(pb::UploadResponse { size }))
    }
}

#[tonic::async_trait]
impl pb::files_server::Files for FilesService {
    type DownloadStream = DownloadStream;

    async fn upload(
        &self,
        req: Request<Streaming<pb::UploadRequest>>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        self.upload_from(req).await
    }

    async fn download(
        &self,
        req: Request<pb::DownloadRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let path = validate::path("path", &req.get_ref().path)?;
        let cmd = FileCommand::Get { path: path.clone() };
        let (proc, ns, name, _pod) = self
            .start(&req, req.get_ref().sandbox.as_ref(), "get", &cmd)
            .await?;
        let RemoteProcess {
            stdin,
            stdout,
            stderr,
            mut status,
            guard,
            ..
        } = proc;
        let (tx, rx) =
            mpsc::channel::<Result<pb::DownloadResponse, Status>>(crate::processes::EVENT_BUFFER);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let writer = StdinWriter::spawn(stdin);
            let discard = CancellationToken::new();
            let m = ctx.metrics.clone();
            let out = tokio::spawn(crate::processes::forward(
                stdout,
                tx.clone(),
                |chunk| pb::DownloadResponse { chunk },
                discard.clone(),
                move |n| m.add_bytes("download", n),
            ));
            let err = tokio::spawn(read_capped(stderr, MAX_STDERR));
            let r = tokio::select! {
                r = &mut status => Some(r),
                _ = tx.closed() => None,
                _ = ctx.hard_stop.cancelled() => None,
            };
            match r {
                None => {
                    discard.cancel();
                    writer.kill_and_close();
                    let _ = tokio::time::timeout(agent::KILL_GRACE, &mut status).await;
                    tracing::info!(namespace = %ns, sandbox = %name, path = %path, "download cancelled");
                }
                Some(r) => {
                    let delivered = tokio::select! {
                        _ = out => true,
                        _ = tx.closed() => false,
                    };
                    let err = err.await.unwrap_or_default();
                    if delivered {
                        match r {
                            Ok(0) => {
                                tracing::info!(namespace = %ns, sandbox = %name, path = %path, "downloaded")
                            }
                            Ok(code) => {
                                let _ = tx
                                    .send(Err(agent::file_status(
                                        "get",
                                        &path,
                                        code,
                                        &String::from_utf8_lossy(&err),
                                    )))
                                    .await;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                            }
                        }
                    }
                }
            }
            drop(writer);
            drop(guard);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_dir(
        &self,
        req: Request<pb::ListDirRequest>,
    ) -> Result<Response<pb::ListDirResponse>, Status> {
        let path = validate::path("path", &req.get_ref().path)?;
        let out = self
            .metadata(
                &req,
                req.get_ref().sandbox.as_ref(),
                "get",
                FileCommand::Ls { path: path.clone() },
                MAX_LISTING,
            )
            .await?;
        let entries = parse_listing(&out)
            .map_err(|e| Status::internal(format!("ls {path}: unexpected agent output: {e}")))?;
        Ok(Response::new(pb::ListDirResponse { entries }))
    }

    async fn stat(&self, req: Request<pb::StatRequest>) -> Result<Response<pb::FileInfo>, Status> {
        let path = validate::path("path", &req.get_ref().path)?;
        let out = self
            .metadata(
                &req,
                req.get_ref().sandbox.as_ref(),
                "get",
                FileCommand::Stat { path: path.clone() },
                64 * 1024,
            )
            .await?;
        let mut entries = parse_listing(&out)
            .map_err(|e| Status::internal(format!("stat {path}: unexpected agent output: {e}")))?;
        if entries.len() != 1 {
            return Err(Status::internal(format!(
                "stat {path}: expected one entry from the agent, got {}",
                entries.len()
            )));
        }
        let mut info = entries.remove(0);
        info.name = path;
        Ok(Response::new(info))
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let path = validate::path("path", &req.get_ref().path)?;
        if path.trim_end_matches('/').is_empty() {
            return Err(validate::invalid("path", "refusing to remove /"));
        }
        let cmd = FileCommand::Rm {
            path,
            recursive: req.get_ref().recursive,
        };
        self.metadata(
            &req,
            req.get_ref().sandbox.as_ref(),
            "create",
            cmd,
            64 * 1024,
        )
        .await?;
        Ok(Response::new(pb::RemoveResponse {}))
    }

    async fn make_dir(
        &self,
        req: Request<pb::MakeDirRequest>,
    ) -> Result<Response<pb::MakeDirResponse>, Status> {
        let path = validate::path("path", &req.get_ref().path)?;
        let mode = validate::mode("mode", req.get_ref().mode)?;
        let cmd = FileCommand::Mkdir {
            path,
            parents: req.get_ref().parents,
            mode,
        };
        self.metadata(
            &req,
            req.get_ref().sandbox.as_ref(),
            "create",
            cmd,
            64 * 1024,
        )
        .await?;
        Ok(Response::new(pb::MakeDirResponse {}))
    }

    async fn r#move(&self, req: Request<pb::MoveRequest>) -> Result<Response<pb::MoveResponse>, Status> {
        let path = validate::path("source", &req.get_ref().source)?;
        let dest = validate::path("destination", &req.get_ref().destination)?;
        if path.trim_end_matches('/').is_empty() {
            return Err(validate::invalid("source", "refusing to move /"));
        }
        let cmd = FileCommand::Mv { path, dest };
        self.metadata(&req, req.get_ref().sandbox.as_ref(), "create", cmd, 64 * 1024).await?;
        Ok(Response::new(pb::MoveResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listings() {
        let out = br#"{"name":"b","type":"dir","size":4096,"mode":16877,"mtime":1700000000}
{"name":"a.txt","type":"file","size":3,"mode":33188,"mtime":1700000001}

{"name":"l","type":"symlink","size":1,"mode":41471,"mtime":0,"extra":true}
"#;
        let e = parse_listing(out).unwrap();
        assert_eq!(
            e.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["a.txt", "b", "l"]
        );
        assert_eq!(e[0].r#type, pb::FileType::File as i32);
        assert_eq!(e[0].mode, 0o644);
        assert_eq!(e[1].r#type, pb::FileType::Dir as i32);
        assert_eq!(e[1].mode, 0o755);
        assert_eq!(e[2].r#type, pb::FileType::Symlink as i32);
        assert_eq!(e[0].mtime.as_ref().unwrap().seconds, 1700000001);
        assert!(parse_listing(b"").unwrap().is_empty());
        assert!(
            parse_listing(b"not json\n")
                .unwrap_err()
                .starts_with("line 1:")
        );
        assert!(parse_listing(&[0xff, 0xfe]).is_err());
    }
}
