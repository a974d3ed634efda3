//! envd's `/files`: `GET ?path=` streams a file out (raw bytes), `POST` writes the files of a
//! multipart form (field `file`; the path is `?path=` for a single file, else each part's file
//! name) or a raw `application/octet-stream` body. Both stream through the gateway's Files service
//! (the agent's `get` and `put`) without holding a whole file in memory. Relative paths are taken
//! from `/home/user`, e2b's home directory; missing parent directories are created, as envd does.
//! The `username` parameter is accepted and ignored: commands and files use the sandbox's user.

use airlock_api::proto::v1 as pb;
use airlock_api::proto::v1::files_server::Files;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Query, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::control::E2bError;
use super::{E2b, SandboxCall};

/// e2b's home directory: relative paths start there.
pub const HOME: &str = "/home/user";

#[derive(Debug, Default, Deserialize)]
struct FileQuery {
    path: Option<String>,
}

/// `p` made absolute from [`HOME`] (as envd does), and checked (`field` names it in errors).
pub(crate) fn absolute(field: &str, p: &str) -> Result<String, tonic::Status> {
    let abs = if p.starts_with('/') { p.to_string() } else { format!("{HOME}/{p}") };
    crate::validate::path(field, &abs)
}

fn resolve(p: &str) -> Result<String, E2bError> {
    absolute("path", p).map_err(|s| E2bError::from_status(&s))
}

pub(crate) async fn serve(e2b: &E2b, call: SandboxCall, parts: Parts, body: Body) -> Response {
    let q: FileQuery = Query::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
    let r = match parts.method {
        Method::GET => download(e2b, &call, q).await,
        Method::POST => upload(e2b, &call, q, Request::from_parts(parts, body)).await,
        ref m => Err(E2bError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{m} /files: use GET or POST"))),
    };
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn download(e2b: &E2b, call: &SandboxCall, q: FileQuery) -> Result<Response, E2bError> {
    let path = resolve(q.path.as_deref().ok_or_else(|| E2bError::new(StatusCode::BAD_REQUEST, "path: required"))?)?;
    let mut stream = e2b
        .files()
        .download(call.request(pb::DownloadRequest { sandbox: Some(call.sandbox_ref()), path: path.clone() }))
        .await
        .map_err(|s| E2bError::from_status(&s))?
        .into_inner();
    // The first message tells a missing file (404) from a file, before the status is sent.
    let first = match stream.next().await {
        Some(Err(s)) => return Err(E2bError::from_status(&s)),
        Some(Ok(m)) => Some(m.chunk),
        None => None,
    };
    let rest = stream.map(|m| m.map(|m| m.chunk).map_err(|s| std::io::Error::other(s.message().to_string())));
    let body = futures::stream::iter(first.map(Ok)).chain(rest);
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(body)).into_response())
}

/// Writes one file from a stream of chunks.
async fn put<S>(e2b: &E2b, call: &SandboxCall, path: &str, chunks: S) -> Result<(), E2bError>
where
    S: Stream<Item = Result<bytes::Bytes, tonic::Status>> + Send + Unpin,
{
    let header = pb::UploadRequest {
        part: Some(pb::upload_request::Part::Header(pb::UploadHeader {
            sandbox: Some(call.sandbox_ref()),
            path: path.to_string(),
            mode: 0,
            parents: true,
        })),
    };
    let msgs = futures::stream::iter([Ok(header)])
        .chain(chunks.map(|c| c.map(|chunk| pb::UploadRequest { part: Some(pb::upload_request::Part::Chunk(chunk)) })));
    e2b.files()
        .upload_from(call.request(Box::pin(msgs)))
        .await
        .map_err(|s| E2bError::from_status(&s))?;
    Ok(())
}

fn written(path: &str) -> serde_json::Value {
    let name = path.rsplit('/').next().unwrap_or("");
    json!({"name": name, "type": "file", "path": path})
}

async fn upload(e2b: &E2b, call: &SandboxCall, q: FileQuery, req: Request) -> Result<Response, E2bError> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if req.headers().get(header::CONTENT_ENCODING).is_some_and(|v| v != "identity") {
        return Err(E2bError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Encoding: compressed uploads are not supported; send the file uncompressed"));
    }
    let mut out = Vec::new();
    if ct.starts_with("application/octet-stream") {
        let path = resolve(q.path.as_deref().ok_or_else(|| E2bError::new(StatusCode::BAD_REQUEST, "path: required"))?)?;
        let body = req.into_body().into_data_stream().map(|c| c.map_err(|e| tonic::Status::invalid_argument(format!("reading the body: {e}"))));
        put(e2b, call, &path, body).await?;
        out.push(written(&path));
        return Ok(axum::Json(out).into_response());
    }
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| E2bError::new(StatusCode::BAD_REQUEST, format!("multipart form: {}", e.body_text())))?;
    let mut fields = 0;
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| E2bError::new(StatusCode::BAD_REQUEST, format!("multipart form: {}", e.body_text())))?;
        let Some(field) = field else { break };
        fields += 1;
        // envd: `?path=` names a single file; with several, each part's file name is its path.
        let target = match (fields, &q.path, field.file_name()) {
            (1, Some(p), _) => p.clone(),
            (_, _, Some(f)) if !f.is_empty() => f.to_string(),
            _ => return Err(E2bError::new(StatusCode::BAD_REQUEST, format!("multipart part {fields}: no path (set ?path= or the part's filename)"))),
        };
        let path = resolve(&target)?;
        let chunks = field.map(|c| c.map_err(|e| tonic::Status::invalid_argument(format!("multipart form: {}", e.body_text()))));
        put(e2b, call, &path, Box::pin(chunks)).await?;
        out.push(written(&path));
    }
    if out.is_empty() {
        return Err(E2bError::new(StatusCode::BAD_REQUEST, "multipart form: no file part"));
    }
    Ok(axum::Json(out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_from_home() {
        assert_eq!(resolve("a.txt").unwrap(), "/home/user/a.txt");
        assert_eq!(resolve("/tmp/a").unwrap(), "/tmp/a");
        assert_eq!(resolve("/tmp/\0").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(written("/tmp/x.txt")["name"], "x.txt");
    }
}
