//! The per-sandbox access token of the e2b daemon API (`envdAccessToken` and
//! `trafficAccessToken` at create; `X-Access-Token` or `E2B-Traffic-Access-Token` on each call): `<namespace>.<hex(HMAC-SHA256(agent key, "e2b-envd:" + UID))>`.
//!
//! It opens that sandbox's processes and files and nothing else ([`Principal::Sandbox`]), dies
//! with the sandbox (a new Sandbox of the same name has another UID), and is recomputed, never
//! stored. The `e2b-envd:` prefix keeps it apart from the agent's own token, derived from the bare
//! UID with the same key: one never opens what the other does.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use kube::ResourceExt;

use super::control::E2bError;
use super::{E2b, SandboxCall};
use crate::auth::Principal;

/// How long a Sandbox's UID is remembered for checking tokens.
pub const UID_CACHE_TTL: Duration = Duration::from_secs(10);

/// The access token of sandbox `namespace/name` with UID `uid`.
pub fn issue(key: &[u8], namespace: &str, uid: &str) -> String {
    format!("{namespace}.{}", airlock_crds::agent_token::derive(key, &format!("e2b-envd:{uid}")))
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who calls sandbox `id`: the holder of its access token, or an API-key caller.
pub(crate) async fn authenticate(e2b: &E2b, headers: &HeaderMap, id: &str) -> Result<SandboxCall, E2bError> {
    if !crate::validate::is_dns_label(id) {
        return Err(E2bError::new(StatusCode::BAD_REQUEST, format!("E2b-Sandbox-Id {id:?} is not a sandbox ID")));
    }
    // The code interpreter's calls carry the traffic token (the same value, see control.rs).
    let Some(token) = headers.get("x-access-token").or_else(|| headers.get("e2b-traffic-access-token")) else {
        let (principal, namespace) = e2b.caller(headers).await?;
        return Ok(SandboxCall { namespace, name: id.to_string(), principal });
    };
    let token = token.to_str().unwrap_or("");
    let bad = || E2bError::unauthenticated(format!("X-Access-Token is not the access token of sandbox {id}"));
    let Some((namespace, _)) = token.split_once('.') else {
        return Err(bad());
    };
    // No such sandbox answers as a wrong token does: a token tells nothing about other sandboxes.
    let uid = match e2b.sandbox_uid(namespace, id).await {
        Ok(uid) => uid,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(bad()),
        Err(e) => return Err(e),
    };
    if !same(issue(&e2b.key, namespace, &uid).as_bytes(), token.as_bytes()) {
        return Err(bad());
    }
    Ok(SandboxCall {
        namespace: namespace.to_string(),
        name: id.to_string(),
        principal: Principal::Sandbox { namespace: namespace.to_string(), name: id.to_string() },
    })
}

impl E2b {
    /// The UID of Sandbox `namespace/name`, cached for [`UID_CACHE_TTL`].
    pub(crate) async fn sandbox_uid(&self, namespace: &str, name: &str) -> Result<String, E2bError> {
        if !crate::validate::is_dns_label(namespace) {
            return Err(E2bError::unauthenticated("X-Access-Token is not an access token"));
        }
        let key = (namespace.to_string(), name.to_string());
        if let Some(uid) = self.uids.get(&key).await {
            return Ok(uid);
        }
        let s = crate::k8s::get_sandbox(&self.ctx.client, namespace, name)
            .await
            .map_err(|e| E2bError::from_status(&tonic::Status::from(e)))?;
        let uid = s.uid().unwrap_or_default();
        self.uids.insert(key, uid.clone()).await;
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_sandbox_and_apart_from_the_agent_token() {
        let key = [7u8; 32];
        let a = issue(&key, "team-a", "uid-1");
        assert!(a.starts_with("team-a."));
        assert_ne!(a, issue(&key, "team-a", "uid-2"));
        assert_ne!(a, issue(&[8u8; 32], "team-a", "uid-1"));
        assert!(!a.ends_with(&airlock_crds::agent_token::derive(&key, "uid-1")));
        assert!(same(a.as_bytes(), a.as_bytes()));
        assert!(!same(a.as_bytes(), &a.as_bytes()[1..]));
    }
}
