//! Sandboxes: create, get, list, delete, extend.

use std::time::Duration;

use tonic::{Request, Status};

use super::{AirlockClient, sandbox_ref};
use crate::proto::v1 as pb;

impl AirlockClient {
    pub async fn create_sandbox(
        &self,
        req: pb::CreateSandboxRequest,
    ) -> Result<pb::Sandbox, Status> {
        self.sandboxes()
            .create_sandbox(req)
            .await
            .map(|r| r.into_inner())
    }

    /// Creates a sandbox and waits until it is Ready, at most `timeout`.
    pub async fn create_sandbox_ready(
        &self,
        mut req: pb::CreateSandboxRequest,
        timeout: Duration,
    ) -> Result<pb::Sandbox, Status> {
        req.wait_ready = true;
        let mut r = Request::new(req);
        r.set_timeout(timeout);
        self.sandboxes()
            .create_sandbox(r)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get_sandbox(&self, namespace: &str, name: &str) -> Result<pb::Sandbox, Status> {
        self.sandboxes()
            .get_sandbox(pb::GetSandboxRequest {
                sandbox: sandbox_ref(namespace, name),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn list_sandboxes(
        &self,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<pb::Sandbox>, Status> {
        self.sandboxes()
            .list_sandboxes(pb::ListSandboxesRequest {
                namespace: namespace.into(),
                label_selector: label_selector.into(),
            })
            .await
            .map(|r| r.into_inner().sandboxes)
    }

    pub async fn delete_sandbox(&self, namespace: &str, name: &str) -> Result<(), Status> {
        self.sandboxes()
            .delete_sandbox(pb::DeleteSandboxRequest {
                sandbox: sandbox_ref(namespace, name),
            })
            .await
            .map(|_| ())
    }

    pub async fn extend_sandbox(
        &self,
        namespace: &str,
        name: &str,
        add_seconds: i64,
    ) -> Result<pb::Sandbox, Status> {
        self.sandboxes()
            .extend_sandbox(pb::ExtendSandboxRequest {
                sandbox: sandbox_ref(namespace, name),
                add_seconds,
            })
            .await
            .map(|r| r.into_inner())
    }
}
