//! Step 4 of the pipeline (and the write half of step 5): server-side apply of the built objects
//! and of the status, with the one field manager `airlock-operator`, and the deletions the
//! lifetime rules call for.
//!
//! Children are applied with `force`: the operator is their only rightful writer. The
//! per-namespace ResourceQuota is applied *without* `force`, so an administrator can take over
//! any of its fields (server-side apply with their own field manager) and the operator leaves
//! them alone.

use airlock_crds::{Sandbox, SandboxStatus};
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::{Api, Client, Resource, ResourceExt};

/// The field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "airlock-operator";

/// Failures to write.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {namespace}/{name} refused by the namespace's ResourceQuota: {message}")]
    QuotaExceeded {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("pod {namespace}/{name} waits for the quota controller: {message}")]
    QuotaNotReady {
        namespace: String,
        name: String,
        message: String,
    },
    /// Refused for good by admission or validation (an unknown RuntimeClass, Pod Security, a
    /// LimitRange, a policy engine): retrying at once would not help.
    #[error("pod {namespace}/{name} refused by the API server: {message}")]
    Rejected {
        namespace: String,
        name: String,
        message: String,
    },
    /// A pod of that name exists already (this sandbox's, made by an earlier reconcile whose
    /// status write did not happen, or someone else's): the reconcile reads it and goes on.
    #[error("pod {namespace}/{name} already exists")]
    PodExists { namespace: String, name: String },
    #[error("applying PriorityClass {name}: {source}")]
    PriorityClass {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of Sandbox {namespace}/{name}: {source}")]
    Status {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {namespace}/{name}: {source}")]
    Delete {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// A failed call about the ConfigMap `namespace/name`, as a `map_err` closure.
    pub fn config_map(namespace: &str, name: &str) -> impl Fn(kube::Error) -> ApplyError {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        move |source| ApplyError::Apply {
            kind: "ConfigMap",
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        }
    }

    /// Whether the API server reported a missing PriorityClass (someone deleted it).
    pub fn is_missing_priority_class(&self) -> bool {
        matches!(self, ApplyError::Apply { kind: "Pod", source: kube::Error::Api(s), .. }
            if s.message.contains("no PriorityClass with name"))
    }
}

fn api_status(e: &kube::Error) -> Option<(u16, &str)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.message.as_str())),
        _ => None,
    }
}

fn meta_of<K: Resource>(obj: &K) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Creates the sandbox's pod (a create, not an apply: a pod of that name that exists already —
/// maybe someone else's — is never written to; [`ApplyError::PodExists`] says so). A refusal by a
/// ResourceQuota is told apart from other failures: it is an expected state, not an error to
/// retry fast.
pub async fn create_pod(client: &Client, pod: &Pod) -> Result<Pod, ApplyError> {
    let (namespace, name) = meta_of(pod);
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, pod).await {
        Ok(p) => Ok(p),
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            Err(ApplyError::PodExists { namespace, name })
        }
        Err(e) => Err(classify_pod_error(namespace, name, e)),
    }
}

/// A failed pod create or apply as an [`ApplyError`]: a refusal by a ResourceQuota, a quota not
/// computed yet, a refusal of the pod itself (admission, validation), or another failure.
pub fn classify_pod_error(namespace: String, name: String, e: kube::Error) -> ApplyError {
    match api_status(&e) {
        Some((403, msg)) if msg.contains("exceeded quota") => ApplyError::QuotaExceeded {
            namespace,
            name,
            message: msg.to_string(),
        },
        // A quota created moments ago has no usage yet; admission refuses until the quota
        // controller has computed it (usually within a second).
        Some((403, msg)) if msg.contains("status unknown for quota") => ApplyError::QuotaNotReady {
            namespace,
            name,
            message: msg.to_string(),
        },
        Some((400 | 403 | 422, msg)) if is_rejection(msg) => ApplyError::Rejected {
            namespace,
            name,
            message: msg.to_string(),
        },
        _ => ApplyError::Apply {
            kind: "Pod",
            namespace,
            name,
            source: e,
        },
    }
}

/// Whether a 400/403/422 on a pod create is a refusal of the pod itself, rather than a state the
/// reconcile handles (a missing PriorityClass it re-creates, a namespace being deleted) or a
/// permission problem of the operator.
fn is_rejection(message: &str) -> bool {
    !(message.contains("no PriorityClass with name")
        || message.contains("because it is being terminated")
        || message.contains("cannot patch resource")
        || message.contains("cannot create resource"))
}

/// Applies the sandbox's NetworkPolicy.
pub async fn network_policy(
    client: &Client,
    np: &NetworkPolicy,
) -> Result<NetworkPolicy, ApplyError> {
    let (namespace, name) = meta_of(np);
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(np),
    )
    .await
    .map_err(|source| ApplyError::Apply {
        kind: "NetworkPolicy",
        namespace,
        name,
        source,
    })
}

/// Applies the sandbox's agent token Secret (direct path).
pub async fn token_secret(client: &Client, secret: &Secret) -> Result<(), ApplyError> {
    let (namespace, name) = meta_of(secret);
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(secret),
    )
    .await
    .map(drop)
    .map_err(|source| ApplyError::Apply {
        kind: "Secret",
        namespace,
        name,
        source,
    })
}

/// Result of applying the quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaApplied {
    Applied,
    /// Someone else manages some of its fields with other values; theirs stay.
    LeftToOthers(String),
}

/// Applies the namespace's ResourceQuota, without taking fields over from other managers.
pub async fn resource_quota(
    client: &Client,
    quota: &ResourceQuota,
) -> Result<QuotaApplied, ApplyError> {
    let (namespace, name) = meta_of(quota);
    let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &namespace);
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(quota),
        )
        .await
    {
        Ok(_) => Ok(QuotaApplied::Applied),
        Err(e) => match api_status(&e) {
            Some((409, msg)) => Ok(QuotaApplied::LeftToOthers(msg.to_string())),
            _ => Err(ApplyError::Apply {
                kind: "ResourceQuota",
                namespace,
                name,
                source: e,
            }),
        },
    }
}

/// Applies the cluster's PriorityClass for sandboxes. `value` and `preemptionPolicy` are
/// immutable: if someone created the class differently, the API server refuses and the error says
/// so.
pub async fn priority_class(client: &Client, pc: &PriorityClass) -> Result<(), ApplyError> {
    let name = pc.name_any();
    let api: Api<PriorityClass> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(pc),
    )
    .await
    .map(|_| ())
    .map_err(|source| ApplyError::PriorityClass { name, source })
}

/// Writes the sandbox's status (server-side apply on the status subresource).
pub async fn status(
    client: &Client,
    sandbox: &Sandbox,
    status: &SandboxStatus,
) -> Result<(), ApplyError> {
    let (namespace, name) = meta_of(sandbox);
    let api: Api<Sandbox> = Api::namespaced(client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": Sandbox::api_version(&()),
        "kind": Sandbox::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(|source| ApplyError::Status {
        namespace,
        name,
        source,
    })
}

/// Deletes an object by name if it still has the given uid; gone already is fine.
async fn delete<K>(
    api: Api<K>,
    kind: &'static str,
    namespace: String,
    name: String,
    uid: Option<String>,
) -> Result<(), ApplyError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        // 404: already gone. 409: the uid precondition failed, so it is a newer object of the
        // same name, which is not ours to delete.
        Err(e) if matches!(api_status(&e), Some((404 | 409, _))) => Ok(()),
        Err(source) => Err(ApplyError::Delete {
            kind,
            namespace,
            name,
            source,
        }),
    }
}

/// Deletes the sandbox's pod.
pub async fn delete_pod(client: &Client, pod: &Pod) -> Result<(), ApplyError> {
    let (namespace, name) = meta_of(pod);
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    delete(api, "Pod", namespace, name, pod.uid()).await
}

/// Deletes the Sandbox itself; garbage collection removes its pod and NetworkPolicy.
pub async fn delete_sandbox(client: &Client, sandbox: &Sandbox) -> Result<(), ApplyError> {
    let (namespace, name) = meta_of(sandbox);
    let api: Api<Sandbox> = Api::namespaced(client.clone(), &namespace);
    delete(api, "Sandbox", namespace, name, sandbox.uid()).await
}
