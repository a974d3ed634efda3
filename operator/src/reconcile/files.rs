//! Part of step 6: a sandbox's `spec.files`, written into it through its agent (direct path) once
//! its pod is Ready and before its status says Ready (for a claimed warm pod: right after the
//! claim). Each file is the agent's own `put` (a temporary file renamed into place, parents
//! created), started with START and fed its content as `exec` frames; `status.filesWrittenTime`
//! records that it is done, so it happens once.

use std::time::Duration;

use airlock_agent_protocol::{Client, ClientError, Exit, Reply, Start, c2a, frame};
use airlock_crds::{Sandbox, SandboxFile, agent_token, labels};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::config::DirectAgent;

/// How long the operator waits for the agent, per file.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `exec` DATA frame sent.
const CHUNK: usize = 32 * 1024;

/// Files that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The sandbox refused them (a path it cannot write, for example): reported in the status.
    #[error("spec.files[{index}] ({path}): {message}")]
    Refused {
        index: usize,
        path: String,
        message: String,
    },
    /// The operator has no direct path to agents.
    #[error("spec.files: writing files before Ready needs the direct agent path (operator --agent-key-file; chart agentDirect.enabled)")]
    NoDirectPath,
    /// The agent could not be reached or answered wrongly: retried.
    #[error("writing spec.files into pod {pod}: {message}")]
    Agent { pod: String, message: String },
}

/// Writes every file of `sandbox` into `pod`.
pub async fn write(direct: Option<&DirectAgent>, sandbox: &Sandbox, pod: &Pod) -> Result<(), FilesError> {
    let direct = direct.ok_or(FilesError::NoDirectPath)?;
    let agent_err = |message: String| FilesError::Agent {
        pod: pod.name_any(),
        message,
    };
    let addr = agent_token::agent_addr(pod).ok_or_else(|| agent_err("the pod has no agent address".into()))?;
    let token = agent_token::derive(&direct.key, &sandbox.uid().unwrap_or_default());
    let files = sandbox.spec.files.clone();
    let pod_name = pod.name_any();
    tokio::task::spawn_blocking(move || {
        for (index, f) in files.iter().enumerate() {
            match put(addr, &token, f) {
                Ok(None) => {}
                Ok(Some(message)) => {
                    return Err(FilesError::Refused {
                        index,
                        path: f.path.clone(),
                        message,
                    });
                }
                Err(e) => {
                    return Err(FilesError::Agent {
                        pod: pod_name.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| agent_err(e.to_string()))?
}

/// One file: `None` when written, `Some(why)` when the sandbox refused it.
fn put(addr: std::net::SocketAddr, token: &str, f: &SandboxFile) -> Result<Option<String>, ClientError> {
    let mut c = Client::connect_within(addr, token.as_bytes(), WRITE_TIMEOUT)?;
    let mode = format!("{:o}", f.mode.unwrap_or(0o644));
    let argv = [labels::AGENT_PATH, "put", f.path.as_str(), "--mode", mode.as_str(), "--parents"];
    let start = Start {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        attach: true,
        kill_on_disconnect: true,
        ..Start::default()
    };
    c.send(c2a::START, &start.encode())?;
    // The content as `exec` frames (DATA..., CLOSE: commit), each carried in a DATA frame.
    let mut input = Vec::new();
    for chunk in f.content.as_bytes().chunks(CHUNK) {
        input.extend_from_slice(&frame(0x01, chunk));
    }
    input.extend_from_slice(&frame(0x02, b""));
    c.send(c2a::DATA, &input)?;
    let (_, stderr, last) = c.collect(0, 0)?;
    match last {
        Reply::Exit(Exit { code: 0, .. }) => Ok(None),
        Reply::Exit(e) => Ok(Some(format!(
            "{} (exit {})",
            String::from_utf8_lossy(&stderr).trim(),
            e.code
        ))),
        other => Err(ClientError::Unexpected(Box::new(other))),
    }
}
