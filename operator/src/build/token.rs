//! Sandbox -> its agent token Secret (with the direct path, `--agent-key-file`). The token is
//! `hex(HMAC-SHA256(key, sandbox UID))` ([`airlock_crds::agent_token`]): the gateway recomputes
//! it, so nothing but this Secret (read by the kubelet into the agent's environment) holds it.

use std::collections::BTreeMap;

use airlock_crds::{Sandbox, agent_token, labels};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::{BuildError, child_meta};
use crate::config::DirectAgent;

/// Key of the token in the Secret.
pub const TOKEN_KEY: &str = "token";

/// The Secret `airlock-agent-token-<sandbox>`, owned by the Sandbox. Not immutable: a Sandbox
/// re-created under the same name before the old Secret is collected gets its new token applied.
pub fn token_secret(sandbox: &Sandbox, direct: &DirectAgent) -> Result<Secret, BuildError> {
    let name = sandbox.name_any();
    let meta = child_meta(sandbox, labels::agent_token_secret(&name))?;
    // child_meta has checked the UID.
    let uid = sandbox.uid().unwrap_or_default();
    let token = agent_token::derive(&direct.key, &uid);
    Ok(Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            ByteString(token.into_bytes()),
        )])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::*;
    use crate::config::Config;

    #[test]
    fn the_secret_holds_the_token_the_gateway_derives_and_belongs_to_the_sandbox() {
        let config = Config::with_direct();
        let direct = config.direct.as_ref().unwrap();
        let s = sandbox(MINIMAL);
        let secret = token_secret(&s, direct).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("airlock-agent-token-sbx-1"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Sandbox", s.uid().unwrap().as_str(), Some(true)));
        let token = &secret.data.as_ref().unwrap()[TOKEN_KEY].0;
        assert_eq!(token, agent_token::derive(&[7; 32], &s.uid().unwrap()).as_bytes());
        // Another sandbox gets another token.
        let mut other = sandbox(MINIMAL);
        other.metadata.uid = Some("0b7c1d2e-0000-4000-8000-000000000002".into());
        assert_ne!(&token_secret(&other, direct).unwrap().data.unwrap()[TOKEN_KEY].0, token);
    }
}
