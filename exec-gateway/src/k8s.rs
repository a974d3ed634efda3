//! Reading Sandbox objects and mapping Kubernetes API errors to gRPC statuses.

use airlock_crds::Sandbox;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::convert;

/// Errors of the Kubernetes API, named by object.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("sandbox {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("{action} sandbox {namespace}/{name}: {source}")]
    Api {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl KubeError {
    pub fn api(action: &'static str, namespace: &str, name: &str, source: kube::Error) -> Self {
        if let kube::Error::Api(s) = &source
            && s.code == 404
            && action != "creating"
        {
            return KubeError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            };
        }
        KubeError::Api {
            action,
            namespace: namespace.into(),
            name: name.into(),
            source,
        }
    }
}

impl From<KubeError> for tonic::Status {
    fn from(e: KubeError) -> Self {
        let msg = e.to_string();
        match &e {
            KubeError::NotFound { .. } => tonic::Status::not_found(msg),
            KubeError::Api { source, action, .. } => match source {
                kube::Error::Api(s) => match s.code {
                    400 | 422 => tonic::Status::invalid_argument(msg),
                    401 => tonic::Status::internal(format!(
                        "the gateway's own Kubernetes credentials were refused: {msg}"
                    )),
                    403 if s.message.contains("exceeded quota") => {
                        tonic::Status::resource_exhausted(msg)
                    }
                    403 => tonic::Status::internal(format!(
                        "the gateway lacks Kubernetes permissions: {msg}"
                    )),
                    404 => tonic::Status::not_found(msg),
                    409 => tonic::Status::already_exists(msg),
                    429 => tonic::Status::resource_exhausted(msg),
                    500..=599 => tonic::Status::unavailable(msg),
                    _ => tonic::Status::internal(msg),
                },
                // No answer at all (connection refused or broken, API server restarting).
                _ if *action == "creating" => tonic::Status::unavailable(format!(
                    "{msg} (no answer from the Kubernetes API server: the sandbox may or may not have been created; GetSandbox tells)"
                )),
                _ => tonic::Status::unavailable(format!(
                    "{msg} (no answer from the Kubernetes API server)"
                )),
            },
        }
    }
}

/// Reads a Sandbox (NOT_FOUND when missing).
pub async fn get_sandbox(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Sandbox, KubeError> {
    let api: Api<Sandbox> = Api::namespaced(client.clone(), namespace);
    api.get(name)
        .await
        .map_err(|e| KubeError::api("reading", namespace, name, e))
}

/// The pod of a Sandbox that accepts commands, as a [`PodTarget`](crate::agent::PodTarget).
///
/// Answered from the gateway's watch cache when it holds the Sandbox Ready with its own Ready pod
/// (see [`crate::cache`]), else read from the API server.
///
/// The pod named by `status.podName` is only trusted when the Sandbox controls it (its
/// controller ownerReference has the Sandbox's UID) and it is in the Sandbox's namespace: a
/// status pointing anywhere else (a bug, or someone with write access to the status subresource)
/// would otherwise send a caller's commands and files into a pod that is not theirs.
pub(crate) async fn ready_sandbox(
    ctx: &crate::server::Ctx,
    namespace: &str,
    name: &str,
) -> Result<crate::agent::PodTarget, tonic::Status> {
    if let Some((sb, pod)) = ctx.cache.as_ref().and_then(|c| c.ready(namespace, name)) {
        ctx.metrics.sandbox_lookup("cache");
        let mut t = target(&sb, &pod);
        t.from_cache = true;
        return Ok(t);
    }
    read_ready_sandbox(ctx, namespace, name).await
}

/// Starts `launch` in the sandbox's pod ([`ready_sandbox`]); a pod from the cache whose agent
/// cannot be reached ([`AgentError::Stale`](crate::agent::AgentError::Stale), nothing started)
/// is looked up again in the API server and tried once more, so a cache behind a deleted or
/// replaced pod costs a retry, never a `pods/exec` into whatever pod has that name now.
pub(crate) async fn start_in(
    ctx: &crate::server::Ctx,
    namespace: &str,
    name: &str,
    launch: &crate::agent::Launch,
) -> Result<(crate::agent::PodTarget, Result<crate::agent::RemoteProcess, crate::agent::AgentError>), tonic::Status> {
    let target = ready_sandbox(ctx, namespace, name).await?;
    match ctx.exec.start(&target, launch).await {
        Err(crate::agent::AgentError::Stale { message }) => {
            tracing::info!(namespace, sandbox = name, reason = %message, "cached pod unreachable; reading the sandbox again");
            let target = read_ready_sandbox(ctx, namespace, name).await?;
            let r = ctx.exec.start(&target, launch).await;
            Ok((target, r))
        }
        r => Ok((target, r)),
    }
}

/// [`ready_sandbox`] from the API server only.
pub(crate) async fn read_ready_sandbox(
    ctx: &crate::server::Ctx,
    namespace: &str,
    name: &str,
) -> Result<crate::agent::PodTarget, tonic::Status> {
    ctx.metrics.sandbox_lookup("api");
    let client = &ctx.client;
    let sb = get_sandbox(client, namespace, name).await?;
    check_ready(&sb, namespace, name)?;
    let pod_name = sb
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .unwrap_or_else(|| airlock_crds::labels::pod_name(name));
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = match pods.get_opt(&pod_name).await {
        Ok(p) => p,
        Err(e) => {
            return Err(KubeError::Api {
                action: "reading the pod of",
                namespace: namespace.into(),
                name: name.into(),
                source: e,
            }
            .into());
        }
    };
    let Some(pod) = pod else {
        return Err(tonic::Status::failed_precondition(format!(
            "sandbox {namespace}/{name}: its pod {pod_name} does not exist"
        )));
    };
    if let Err(e) = check_pod_owner(&sb, &pod, namespace, name) {
        tracing::warn!(
            namespace,
            sandbox = name,
            pod = %pod_name,
            reason = e.message(),
            "refusing to use a pod the sandbox does not own"
        );
        return Err(e);
    }
    Ok(target(&sb, &pod))
}

/// Where commands for `sb` go: its (checked) pod, and a templated Sandbox's own env.
fn target(sb: &Sandbox, pod: &Pod) -> crate::agent::PodTarget {
    let mut target = crate::agent::PodTarget::of(sb.metadata.uid.as_deref().unwrap_or(""), pod);
    if sb.spec.template_ref.is_some() {
        target.env = sb.spec.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
    }
    target
}

/// FAILED_PRECONDITION unless `pod` is in the Sandbox's namespace and its controller
/// ownerReference is the Sandbox (kind and UID).
pub fn check_pod_owner(
    sb: &Sandbox,
    pod: &Pod,
    namespace: &str,
    name: &str,
) -> Result<(), tonic::Status> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let refuse = |why: String| {
        tonic::Status::failed_precondition(format!(
            "sandbox {namespace}/{name}: pod {pod_name} {why}; refusing to run anything in it"
        ))
    };
    let Some(uid) = sb.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
        return Err(refuse("cannot be checked (the sandbox has no UID)".into()));
    };
    let pod_ns = pod.metadata.namespace.as_deref().unwrap_or(namespace);
    if pod_ns != namespace {
        return Err(refuse(format!("is in namespace {pod_ns}")));
    }
    let controller = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(o) if o.uid == uid && o.kind == "Sandbox" => Ok(()),
        Some(o) => Err(refuse(format!(
            "is controlled by {} {} (uid {}), not by this sandbox (uid {uid})",
            o.kind, o.name, o.uid
        ))),
        None => Err(refuse(
            "has no controller, it is not this sandbox's pod".into(),
        )),
    }
}

/// FAILED_PRECONDITION unless the Sandbox is Ready (and not expired or being deleted).
pub fn check_ready(sb: &Sandbox, namespace: &str, name: &str) -> Result<(), tonic::Status> {
    if convert::expired(sb) {
        return Err(tonic::Status::failed_precondition(format!(
            "sandbox {namespace}/{name} has expired"
        )));
    }
    if sb.metadata.deletion_timestamp.is_some() {
        return Err(tonic::Status::failed_precondition(format!(
            "sandbox {namespace}/{name} is being deleted"
        )));
    }
    if !sb.is_ready() {
        let phase = sb
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| p.as_str())
            .unwrap_or("Pending");
        let why = sb
            .condition(airlock_crds::condition::READY)
            .map(|c| format!(": {} {}", c.reason, c.message))
            .unwrap_or_default();
        return Err(tonic::Status::failed_precondition(format!(
            "sandbox {namespace}/{name} is not ready (phase {phase}{why})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_crds::{Phase, SandboxSpec, SandboxStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use tonic::Code;

    fn sb(phase: Phase, ready: &str, reason: &str) -> Sandbox {
        let mut s = Sandbox::new(
            "x",
            SandboxSpec {
                image: "i".into(),
                ..Default::default()
            },
        );
        s.status = Some(SandboxStatus {
            phase: Some(phase),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: reason.into(),
                message: "msg".into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        });
        s
    }

    #[test]
    fn readiness_decides_failed_precondition() {
        assert!(check_ready(&sb(Phase::Ready, "True", "Ready"), "n", "x").is_ok());
        let e = check_ready(&sb(Phase::Pending, "False", "PodPending"), "n", "x").unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(
            e.message(),
            "sandbox n/x is not ready (phase Pending: PodPending msg)"
        );
        let e = check_ready(&sb(Phase::Expired, "False", "Expired"), "n", "x").unwrap_err();
        assert_eq!(e.message(), "sandbox n/x has expired");
        assert!(convert::quota_exceeded(&sb(
            Phase::Pending,
            "False",
            "QuotaExceeded"
        )));
        assert!(!convert::failed(&sb(
            Phase::Failed,
            "False",
            "QuotaExceeded"
        )));
        assert!(convert::failed(&sb(Phase::Failed, "False", "PodFailed")));
    }

    fn pod(ns: &str, owner: Option<(&str, &str, bool)>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "namespace": ns, "ownerReferences": owner.map(|(kind, uid, controller)| vec![serde_json::json!({
                "apiVersion": "airlock.dev/v1alpha1", "kind": kind, "name": "x", "uid": uid, "controller": controller})])}
        }))
        .unwrap()
    }

    #[test]
    fn only_the_sandboxs_own_pod_is_used() {
        let mut s = sb(Phase::Ready, "True", "Ready");
        s.metadata.uid = Some("uid-1".into());
        assert!(check_pod_owner(&s, &pod("n", Some(("Sandbox", "uid-1", true))), "n", "x").is_ok());
        for (p, why) in [
            (
                pod("n", Some(("Sandbox", "uid-2", true))),
                "is controlled by Sandbox x (uid uid-2), not by this sandbox (uid uid-1)",
            ),
            (
                pod("n", Some(("Sandbox", "uid-1", false))),
                "has no controller",
            ),
            (
                pod("n", Some(("ReplicaSet", "uid-1", true))),
                "is controlled by ReplicaSet x",
            ),
            (pod("n", None), "has no controller"),
            (
                pod("other", Some(("Sandbox", "uid-1", true))),
                "is in namespace other",
            ),
        ] {
            let e = check_pod_owner(&s, &p, "n", "x").unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition);
            assert!(
                e.message().starts_with("sandbox n/x: pod x "),
                "{}",
                e.message()
            );
            assert!(e.message().contains(why), "{} / {why}", e.message());
        }
        s.metadata.uid = None;
        let e =
            check_pod_owner(&s, &pod("n", Some(("Sandbox", "uid-1", true))), "n", "x").unwrap_err();
        assert!(e.message().contains("no UID"), "{}", e.message());
    }

    fn api_err(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            ..Default::default()
        }))
    }

    #[test]
    fn kube_errors_map_to_grpc_codes() {
        let s: tonic::Status = KubeError::api("reading", "n", "x", api_err(404, "nope")).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "sandbox n/x not found")
        );
        let s: tonic::Status = KubeError::api("creating", "n", "x", api_err(409, "exists")).into();
        assert_eq!(s.code(), Code::AlreadyExists);
        let s: tonic::Status = KubeError::api("creating", "n", "x", api_err(422, "invalid")).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s: tonic::Status =
            KubeError::api("creating", "n", "x", api_err(403, "exceeded quota: q")).into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s: tonic::Status = KubeError::api("creating", "n", "x", api_err(503, "down")).into();
        assert_eq!(s.code(), Code::Unavailable);
        // No answer at all: UNAVAILABLE, and a creation says its outcome is unknown.
        let gone = || kube::Error::Service(Box::new(std::io::Error::other("connection refused")));
        let s: tonic::Status = KubeError::api("creating", "n", "x", gone()).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            s.message().starts_with("creating sandbox n/x: "),
            "{}",
            s.message()
        );
        assert!(
            s.message().contains("may or may not have been created"),
            "{}",
            s.message()
        );
        let s: tonic::Status = KubeError::api("reading", "n", "x", gone()).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            s.message()
                .ends_with("(no answer from the Kubernetes API server)"),
            "{}",
            s.message()
        );
    }
}
