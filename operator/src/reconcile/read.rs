//! Step 1 of the pipeline: read what exists. The Sandbox itself comes from the controller's cache;
//! its pod is read from the API server (a fresh read: the pod's state decides the status).

use airlock_crds::{Sandbox, labels};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, ResourceExt};

/// Failure to read a sandbox's children.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the pod of Sandbox {namespace}/{name}: {source}")]
    Pod {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The sandbox's children as they are.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The pod named after the sandbox, if any.
    pub pod: Option<Pod>,
}

impl Observed {
    /// The pod, if it is this sandbox's (controller owner reference with the sandbox's uid).
    pub fn own_pod(&self, sandbox: &Sandbox) -> Option<&Pod> {
        self.pod.as_ref().filter(|p| is_owned_by(p, sandbox))
    }

    /// A pod with the sandbox's name that belongs to someone else (for example the previous
    /// Sandbox of the same name, still being garbage-collected).
    pub fn foreign_pod(&self, sandbox: &Sandbox) -> Option<&Pod> {
        self.pod.as_ref().filter(|p| !is_owned_by(p, sandbox))
    }
}

/// Whether `pod` is controlled by `sandbox`.
pub fn is_owned_by(pod: &Pod, sandbox: &Sandbox) -> bool {
    let Some(uid) = sandbox.metadata.uid.as_deref() else {
        return false;
    };
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Reads the sandbox's pod: the first of `other_names` (a claimed pool pod keeps the pool's name)
/// that is the sandbox's, else the pod named after the sandbox.
pub async fn observe(
    client: &Client,
    sandbox: &Sandbox,
    other_names: &[String],
) -> Result<Observed, ReadError> {
    let namespace = sandbox.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let get = |name: String| {
        let pods = pods.clone();
        let namespace = namespace.clone();
        async move {
            pods.get_opt(&name).await.map_err(|source| ReadError::Pod {
                namespace,
                name,
                source,
            })
        }
    };
    for name in other_names {
        if let Some(pod) = get(name.clone()).await?
            && is_owned_by(&pod, sandbox)
        {
            return Ok(Observed { pod: Some(pod) });
        }
    }
    let pod = get(labels::pod_name(&sandbox.name_any())).await?;
    Ok(Observed { pod })
}
