//! envd's `filesystem.Filesystem` service on the gateway's Files service (the agent's `stat`,
//! `ls`, `mkdir`, `rm` and `mv`). The watchers answer `unimplemented`: the agent has no watch
//! operation yet.

use airlock_api::proto::v1 as pb;
use airlock_api::proto::v1::files_server::Files;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::connect::{self, Codec, ConnectError};
use super::proto::filesystem as ef;
use super::{E2b, SandboxCall};

/// Deepest `ListDir` depth served (each level is one listing per directory).
pub const MAX_DEPTH: u32 = 8;
/// Most entries one `ListDir` returns.
pub const MAX_ENTRIES: usize = 100_000;

/// Serves one call of `filesystem.Filesystem/<method>`.
pub async fn serve(e2b: &E2b, call: SandboxCall, method: &str, headers: &HeaderMap, body: Bytes) -> Response {
    if matches!(method, "WatchDir") {
        let codec = connect::stream_codec(headers).unwrap_or(Codec::Json);
        return connect::streaming_error(codec, watch_unimplemented());
    }
    let codec = match connect::unary_codec(headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let r = match method {
        "Stat" => stat(e2b, &call, codec, &body).await,
        "MakeDir" => make_dir(e2b, &call, codec, &body).await,
        "ListDir" => list_dir(e2b, &call, codec, &body).await,
        "Remove" => remove(e2b, &call, codec, &body).await,
        "Move" => rename(e2b, &call, codec, &body).await,
        "CreateWatcher" | "GetWatcherEvents" | "RemoveWatcher" => Err(watch_unimplemented()),
        m => Err(ConnectError::new(tonic::Code::NotFound, format!("filesystem.Filesystem has no method {m}"))),
    };
    r.unwrap_or_else(IntoResponse::into_response)
}

fn watch_unimplemented() -> ConnectError {
    ConnectError::unimplemented("watching directories is not supported by Airlock yet")
}

/// Relative paths start at e2b's home, as in `/files`.
fn path(field: &str, p: &str) -> Result<String, ConnectError> {
    super::files::absolute(field, p).map_err(ConnectError::from)
}

fn base_name(p: &str) -> String {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string()
}

fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// `ls -l`'s permission string ("drwxr-xr-x").
fn permissions(t: pb::FileType, mode: u32) -> String {
    let kind = match t {
        pb::FileType::Dir => 'd',
        pb::FileType::Symlink => 'l',
        pb::FileType::Other => '?',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// envd's entry for `info` at `path`.
fn entry(path: &str, info: &pb::FileInfo) -> ef::EntryInfo {
    let t = pb::FileType::try_from(info.r#type).unwrap_or(pb::FileType::Unspecified);
    ef::EntryInfo {
        name: base_name(path),
        r#type: match t {
            pb::FileType::File => ef::FileType::File,
            pb::FileType::Dir => ef::FileType::Directory,
            pb::FileType::Symlink => ef::FileType::Symlink,
            _ => ef::FileType::Unspecified,
        } as i32,
        path: path.to_string(),
        size: info.size as i64,
        mode: info.mode,
        permissions: permissions(t, info.mode),
        owner: String::new(),
        group: String::new(),
        modified_time: info.mtime.map(|t| pbjson_types::Timestamp { seconds: t.seconds, nanos: t.nanos }),
        symlink_target: None,
        metadata: Default::default(),
        is_symlink: t == pb::FileType::Symlink,
    }
}

async fn stat_path(e2b: &E2b, call: &SandboxCall, p: &str) -> Result<ef::EntryInfo, ConnectError> {
    let info = e2b
        .files()
        .stat(call.request(pb::StatRequest { sandbox: Some(call.sandbox_ref()), path: p.to_string() }))
        .await?
        .into_inner();
    Ok(entry(p, &info))
}

async fn stat(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ef::StatRequest = connect::decode(codec, body)?;
    let p = path("path", &r.path)?;
    let entry = stat_path(e2b, call, &p).await?;
    Ok(connect::unary(codec, &ef::StatResponse { entry: Some(entry) }))
}

async fn make_dir(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ef::MakeDirRequest = connect::decode(codec, body)?;
    let p = path("path", &r.path)?;
    // envd answers already_exists for an existing path (the SDKs' make_dir then returns false).
    match stat_path(e2b, call, &p).await {
        Ok(_) => return Err(ConnectError::new(tonic::Code::AlreadyExists, format!("{p} already exists in sandbox {}", call.name))),
        Err(e) if e.code == tonic::Code::NotFound => {}
        Err(e) => return Err(e),
    }
    e2b.files()
        .make_dir(call.request(pb::MakeDirRequest { sandbox: Some(call.sandbox_ref()), path: p.clone(), parents: true, mode: 0 }))
        .await?;
    let entry = stat_path(e2b, call, &p).await?;
    Ok(connect::unary(codec, &ef::MakeDirResponse { entry: Some(entry) }))
}

async fn list_dir(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ef::ListDirRequest = connect::decode(codec, body)?;
    let root = path("path", &r.path)?;
    if r.depth > MAX_DEPTH {
        return Err(ConnectError::invalid(format!("depth: at most {MAX_DEPTH}, got {}", r.depth)));
    }
    let depth = r.depth.max(1);
    let mut entries = Vec::new();
    let mut level = vec![root];
    for _ in 0..depth {
        let mut next = Vec::new();
        for dir in level {
            let list = e2b
                .files()
                .list_dir(call.request(pb::ListDirRequest { sandbox: Some(call.sandbox_ref()), path: dir.clone() }))
                .await?
                .into_inner();
            for info in list.entries {
                let p = join(&dir, &info.name);
                if info.r#type == pb::FileType::Dir as i32 {
                    next.push(p.clone());
                }
                entries.push(entry(&p, &info));
                if entries.len() > MAX_ENTRIES {
                    return Err(ConnectError::new(tonic::Code::ResourceExhausted, format!("more than {MAX_ENTRIES} entries: list a smaller depth")));
                }
            }
        }
        level = next;
    }
    Ok(connect::unary(codec, &ef::ListDirResponse { entries }))
}

async fn rename(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ef::MoveRequest = connect::decode(codec, body)?;
    let (source, destination) = (path("source", &r.source)?, path("destination", &r.destination)?);
    e2b.files()
        .r#move(call.request(pb::MoveRequest { sandbox: Some(call.sandbox_ref()), source, destination: destination.clone() }))
        .await?;
    let entry = stat_path(e2b, call, &destination).await?;
    Ok(connect::unary(codec, &ef::MoveResponse { entry: Some(entry) }))
}

async fn remove(e2b: &E2b, call: &SandboxCall, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let r: ef::RemoveRequest = connect::decode(codec, body)?;
    let p = path("path", &r.path)?;
    e2b.files()
        .remove(call.request(pb::RemoveRequest { sandbox: Some(call.sandbox_ref()), path: p, recursive: true }))
        .await?;
    Ok(connect::unary(codec, &ef::RemoveResponse {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_look_like_envds() {
        assert_eq!(permissions(pb::FileType::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(permissions(pb::FileType::File, 0o640), "-rw-r-----");
        assert_eq!(base_name("/home/user/a.txt"), "a.txt");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/x/", "a"), "/x/a");
        let info = pb::FileInfo { name: "a.txt".into(), r#type: pb::FileType::File as i32, size: 5, mode: 0o644, mtime: None };
        let e = serde_json::to_value(entry("/home/user/a.txt", &info)).unwrap();
        assert_eq!(e["type"], "FILE_TYPE_FILE");
        assert_eq!(e["size"], "5");
        assert_eq!(e["path"], "/home/user/a.txt");
    }
}
