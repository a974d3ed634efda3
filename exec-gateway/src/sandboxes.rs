//! The Sandboxes service: Sandbox objects through the Kubernetes API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_crds::Sandbox;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use tonic::{Request, Response, Status};

use crate::auth::Access;
use crate::convert;
use crate::extend;
use crate::k8s::KubeError;
use airlock_api::proto::v1 as pb;
use crate::server::{Ctx, FIELD_MANAGER};
use crate::validate;

pub struct SandboxesService {
    pub(crate) ctx: Arc<Ctx>,
}

/// The call's deadline from its `grpc-timeout` header.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (num, unit) = v.split_at(v.len() - 1);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What waiting for readiness ended with.
#[derive(Debug)]
enum WaitOutcome {
    Ready(Box<Sandbox>),
    Failed(String),
    Quota(String),
    Expired,
    Deleted,
}

fn classify(s: Option<&Sandbox>) -> Option<WaitOutcome> {
    let Some(s) = s else {
        return Some(WaitOutcome::Deleted);
    };
    let msg = || {
        s.condition(airlock_crds::condition::READY)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .unwrap_or_default()
    };
    if s.is_ready() {
        Some(WaitOutcome::Ready(Box::new(s.clone())))
    } else if convert::quota_exceeded(s) {
        Some(WaitOutcome::Quota(msg()))
    } else if convert::expired(s) {
        Some(WaitOutcome::Expired)
    } else if convert::failed(s) {
        Some(WaitOutcome::Failed(msg()))
    } else {
        None
    }
}

impl SandboxesService {
    async fn wait_ready(
        &self,
        api: &Api<Sandbox>,
        ns: &str,
        name: &str,
        budget: Duration,
    ) -> Result<Sandbox, Status> {
        let watch = async {
            let mut o = None;
            let cond = |s: Option<&Sandbox>| classify(s).is_some();
            // The watch can break (API server restart): fall back to polling.
            match kube::runtime::wait::await_condition(api.clone(), name, cond).await {
                Ok(s) => o = classify(s.as_ref()),
                Err(e) => tracing::debug!(error = %e, "watch for readiness failed; polling"),
            }
            loop {
                if let Some(o) = o.take() {
                    return Ok::<_, Status>(o);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                match api.get_opt(name).await {
                    Ok(s) => o = classify(s.as_ref()),
                    Err(e) => tracing::debug!(error = %e, "polling readiness failed"),
                }
            }
        };
        let outcome = tokio::time::timeout(budget, watch).await.map_err(|_| {
            Status::deadline_exceeded(format!(
                "sandbox {ns}/{name} did not become ready within {}s",
                budget.as_secs()
            ))
        })??;
        match outcome {
            WaitOutcome::Ready(s) => Ok(*s),
            WaitOutcome::Quota(m) => Err(Status::resource_exhausted(format!(
                "sandbox {ns}/{name} refused by the namespace's quota ({m})"
            ))),
            WaitOutcome::Failed(m) => Err(Status::failed_precondition(format!(
                "sandbox {ns}/{name} failed ({m})"
            ))),
            WaitOutcome::Expired => Err(Status::failed_precondition(format!(
                "sandbox {ns}/{name} expired before it became ready"
            ))),
            WaitOutcome::Deleted => Err(Status::failed_precondition(format!(
                "sandbox {ns}/{name} was deleted before it became ready"
            ))),
        }
    }
}

#[tonic::async_trait]
impl pb::sandboxes_server::Sandboxes for SandboxesService {
    async fn create_sandbox(
        &self,
        req: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let received = Instant::now();
        let mut spec = validate::create_request(req.get_ref(), &self.ctx.default_namespace)?;
        spec.spec.security_context = crate::run_as::security_context(req.get_ref())?;
        self.ctx
            .allowed_runtime_classes
            .check(&req.get_ref().runtime_class_name)?;
        self.ctx
            .authorize(&req, Access::new("create", &spec.namespace, None))
            .await?;
        let ns = spec.namespace.clone();
        let sb = spec.sandbox();
        let api: Api<Sandbox> = Api::namespaced(self.ctx.client.clone(), &ns);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let display = spec
            .name
            .clone()
            .or(spec.generate_name.clone().map(|g| format!("{g}*")))
            .unwrap_or_default();
        let created = api
            .create(&pp, &sb)
            .await
            .map_err(|e| KubeError::api("creating", &ns, &display, e))?;
        let name = created.name_any();
        tracing::info!(namespace = %ns, sandbox = %name, image = %created.spec.image, wait_ready = spec.wait_ready, "sandbox created");
        if !spec.wait_ready {
            return Ok(Response::new(convert::sandbox(&created)));
        }
        // Leave a little of the caller's deadline to answer with DEADLINE_EXCEEDED ourselves.
        let budget = match grpc_timeout(req.metadata().as_ref()) {
            Some(t) => t
                .saturating_sub(received.elapsed())
                .saturating_sub(Duration::from_millis(250)),
            None => self.ctx.default_wait_ready,
        };
        match self.wait_ready(&api, &ns, &name, budget).await {
            Ok(s) => {
                tracing::info!(namespace = %ns, sandbox = %name, waited_ms = received.elapsed().as_millis() as u64, "sandbox ready");
                Ok(Response::new(convert::sandbox(&s)))
            }
            Err(status) => {
                // A failed create-and-wait leaves nothing behind.
                tracing::info!(namespace = %ns, sandbox = %name, reason = status.message(), "sandbox did not become ready: deleting it");
                let api = api.clone();
                tokio::spawn(async move {
                    if let Err(e) = api.delete(&name, &DeleteParams::background()).await {
                        tracing::warn!(sandbox = %name, error = %e, "deleting the sandbox that did not become ready failed");
                    }
                });
                Err(status)
            }
        }
    }

    async fn get_sandbox(
        &self,
        req: Request<pb::GetSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let (ns, name) = validate::sandbox_ref(
            "sandbox",
            req.get_ref().sandbox.as_ref(),
            &self.ctx.default_namespace,
        )?;
        self.ctx
            .authorize(&req, Access::new("get", &ns, Some(&name)))
            .await?;
        let s = crate::k8s::get_sandbox(&self.ctx.client, &ns, &name).await?;
        Ok(Response::new(convert::sandbox(&s)))
    }

    async fn list_sandboxes(
        &self,
        req: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        let r = req.get_ref();
        let ns = validate::namespace("namespace", &r.namespace, &self.ctx.default_namespace)?;
        if r.label_selector.len() > 4096 {
            return Err(validate::invalid(
                "label_selector",
                "must be at most 4096 characters",
            ));
        }
        self.ctx
            .authorize(&req, Access::new("list", &ns, None))
            .await?;
        let api: Api<Sandbox> = Api::namespaced(self.ctx.client.clone(), &ns);
        let mut lp = ListParams::default();
        if !r.label_selector.is_empty() {
            lp = lp.labels(&r.label_selector);
        }
        let list = api.list(&lp).await.map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 400 => validate::invalid("label_selector", &s.message),
            _ => Status::from(KubeError::api("listing", &ns, "*", e)),
        })?;
        let mut sandboxes: Vec<pb::Sandbox> = list.items.iter().map(convert::sandbox).collect();
        sandboxes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListSandboxesResponse { sandboxes }))
    }

    async fn delete_sandbox(
        &self,
        req: Request<pb::DeleteSandboxRequest>,
    ) -> Result<Response<pb::DeleteSandboxResponse>, Status> {
        let (ns, name) = validate::sandbox_ref(
            "sandbox",
            req.get_ref().sandbox.as_ref(),
            &self.ctx.default_namespace,
        )?;
        self.ctx
            .authorize(&req, Access::new("delete", &ns, Some(&name)))
            .await?;
        let api: Api<Sandbox> = Api::namespaced(self.ctx.client.clone(), &ns);
        api.delete(&name, &DeleteParams::background())
            .await
            .map_err(|e| KubeError::api("deleting", &ns, &name, e))?;
        if let Some(cache) = &self.ctx.cache {
            cache.forget(&ns, &name);
        }
        tracing::info!(namespace = %ns, sandbox = %name, "sandbox deleted");
        Ok(Response::new(pb::DeleteSandboxResponse {}))
    }

    async fn extend_sandbox(
        &self,
        req: Request<pb::ExtendSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let r = req.get_ref();
        let (ns, name) =
            validate::sandbox_ref("sandbox", r.sandbox.as_ref(), &self.ctx.default_namespace)?;
        if r.add_seconds <= 0 {
            return Err(validate::invalid("add_seconds", "must be positive"));
        }
        let max_ttl = self.ctx.max_ttl_seconds;
        if r.add_seconds > max_ttl {
            return Err(validate::invalid(
                "add_seconds",
                format!("must be at most the operator's maximum time-to-live of {max_ttl}s"),
            ));
        }
        self.ctx
            .authorize(&req, Access::new("update", &ns, Some(&name)))
            .await?;
        let api: Api<Sandbox> = Api::namespaced(self.ctx.client.clone(), &ns);
        // Optimistic concurrency: the patch carries the resourceVersion it was computed from.
        for _ in 0..5 {
            let s = crate::k8s::get_sandbox(&self.ctx.client, &ns, &name).await?;
            if convert::expired(&s) {
                return Err(Status::failed_precondition(format!(
                    "sandbox {ns}/{name} has expired"
                )));
            }
            let ext = extend::plan(&s, r.add_seconds, max_ttl)?;
            // Only spec.lifetime.extensionSeconds, under the gateway's field manager: the
            // Git-owned ttlSeconds stays as it is (see `extend`).
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": s.resource_version()},
                "spec": {"lifetime": {"extensionSeconds": ext.extension_seconds}},
            });
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            match api.patch(&name, &pp, &Patch::Merge(&patch)).await {
                Ok(s) => {
                    tracing::info!(namespace = %ns, sandbox = %name, extension_seconds = ext.extension_seconds, ttl_seconds = ext.ttl_seconds, ttl_expires_at = %ext.ttl_expires_at, "sandbox extended");
                    let mut out = convert::sandbox(&s);
                    // The operator has not reconciled the change yet: report the new deadline.
                    out.ttl_expires_at = Some(convert::timestamp(&Time(ext.ttl_expires_at)));
                    return Ok(Response::new(out));
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(KubeError::api("extending", &ns, &name, e).into()),
            }
        }
        Err(Status::aborted(format!(
            "sandbox {ns}/{name} kept changing while extending it; retry"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeout() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&m)
        };
        assert_eq!(h("5S"), Some(Duration::from_secs(5)));
        assert_eq!(h("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(h("2M"), Some(Duration::from_secs(120)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("10u"), Some(Duration::from_micros(10)));
        assert_eq!(h("10n"), Some(Duration::from_nanos(10)));
        assert_eq!(h("S"), None);
        assert_eq!(h("5X"), None);
        assert_eq!(h("123456789S"), None);
        assert_eq!(h("-1S"), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
