//! Files: upload, download, list, stat, remove, make directories.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{AirlockClient, UPLOAD_CHUNK, sandbox_ref};
use crate::proto::v1 as pb;

impl AirlockClient {
    /// Uploads everything `reader` yields to `path` (atomic replace).
    pub async fn upload<R>(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        mode: u32,
        parents: bool,
        mut reader: R,
    ) -> Result<u64, Status>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<pb::UploadRequest>(4);
        let header = pb::UploadHeader {
            sandbox: sandbox_ref(namespace, name),
            path: path.into(),
            mode,
            parents,
        };
        tx.send(pb::UploadRequest {
            part: Some(pb::upload_request::Part::Header(header)),
        })
        .await
        .map_err(|_| Status::internal("upload channel closed"))?;
        let (err_tx, mut err_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
        tokio::spawn(async move {
            loop {
                let mut buf = bytes::BytesMut::with_capacity(UPLOAD_CHUNK);
                match (&mut reader)
                    .take(UPLOAD_CHUNK as u64)
                    .read_buf(&mut buf)
                    .await
                {
                    Ok(0) => return,
                    Ok(_) => {
                        let chunk: Bytes = buf.freeze();
                        if tx
                            .send(pb::UploadRequest {
                                part: Some(pb::upload_request::Part::Chunk(chunk)),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        // Dropping tx without finishing would look like a clean end: keep the
                        // stream open until the error is reported and the call cancelled.
                        let _ = err_tx.send(e);
                        std::future::pending::<()>().await;
                        return;
                    }
                }
            }
        });
        let mut files = self.files();
        let call = files.upload(ReceiverStream::new(rx));
        tokio::select! {
            r = call => r.map(|r| r.into_inner().size),
            Ok(e) = &mut err_rx => Err(Status::cancelled(format!("reading the local file: {e}"))),
        }
    }

    /// Uploads `data` to `path`.
    pub async fn upload_bytes(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        mode: u32,
        data: Bytes,
    ) -> Result<u64, Status> {
        self.upload(
            namespace,
            name,
            path,
            mode,
            false,
            std::io::Cursor::new(data),
        )
        .await
    }

    /// Starts a download; the stream yields chunks.
    pub async fn download(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
    ) -> Result<Streaming<pb::DownloadResponse>, Status> {
        self.files()
            .download(pb::DownloadRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Downloads `path` into `w`; returns the number of bytes.
    pub async fn download_to<W: AsyncWrite + Unpin>(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        w: &mut W,
    ) -> Result<u64, Status> {
        let mut s = self.download(namespace, name, path).await?;
        let mut n = 0u64;
        while let Some(m) = s.message().await? {
            w.write_all(&m.chunk)
                .await
                .map_err(|e| Status::internal(format!("writing the local file: {e}")))?;
            n += m.chunk.len() as u64;
        }
        w.flush()
            .await
            .map_err(|e| Status::internal(format!("writing the local file: {e}")))?;
        Ok(n)
    }

    /// Downloads `path` into memory.
    pub async fn download_bytes(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
    ) -> Result<Vec<u8>, Status> {
        let mut v = Vec::new();
        self.download_to(namespace, name, path, &mut v).await?;
        Ok(v)
    }

    pub async fn list_dir(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
    ) -> Result<Vec<pb::FileInfo>, Status> {
        self.files()
            .list_dir(pb::ListDirRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
            })
            .await
            .map(|r| r.into_inner().entries)
    }

    pub async fn stat(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
    ) -> Result<pb::FileInfo, Status> {
        self.files()
            .stat(pb::StatRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn remove(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), Status> {
        self.files()
            .remove(pb::RemoveRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
                recursive,
            })
            .await
            .map(|_| ())
    }

    pub async fn make_dir(
        &self,
        namespace: &str,
        name: &str,
        path: &str,
        parents: bool,
        mode: u32,
    ) -> Result<(), Status> {
        self.files()
            .make_dir(pb::MakeDirRequest {
                sandbox: sandbox_ref(namespace, name),
                path: path.into(),
                parents,
                mode,
            })
            .await
            .map(|_| ())
    }
}
