//! The per-sandbox access token of the e2b daemon API (`envdAccessToken` and
//! `trafficAccessToken` at create; `X-Access-Token` or `E2B-Traffic-Access-Token` on each call): `<namespace>.<hex(HMAC-SHA256(agent key, "e2b-envd:" + UID))>`.
//!
//! It opens that sandbox's processes and files and nothing else ([`Principal::Sandbox`]), dies
//! with the sandbox (a new Sandbox of the same name has another UID; the UID is read on every
//! call), and is recomputed, never stored. The `e2b-envd:` prefix keeps it apart from the agent's own token, derived from the bare
//! UID with the same key: one never opens what the other does.

use axum::http::{HeaderMap, StatusCode};
use kube::ResourceExt;

use super::control::E2bError;
use super::{E2b, SandboxCall};
use crate::auth::Principal;

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
    // `<namespace>.<64 hex digits>`; anything else is refused before the API server is asked.
    let Some((namespace, mac)) = token.split_once('.') else {
        return Err(bad());
    };
    if mac.len() != 64 || !mac.bytes().all(|b| b.is_ascii_hexdigit()) || !crate::validate::is_dns_label(namespace) {
        return Err(bad());
    }
    // Read on every call, never cached: a token must not open a newer Sandbox of the same name.
    // Any failure answers as a wrong token does, so a token tells nothing about other sandboxes.
    let uid = match crate::k8s::get_sandbox(&e2b.ctx.client, namespace, id).await {
        Ok(s) => s.uid().unwrap_or_default(),
        Err(e) => {
            tracing::debug!(namespace, sandbox = id, error = %e, "checking an e2b access token");
            return Err(bad());
        }
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
