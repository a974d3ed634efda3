//! The per-sandbox agent token: `hex(HMAC-SHA256(key, sandbox UID))`. The operator puts it in the
//! sandbox's Secret (the agent reads it at start); the gateway recomputes it from the same key, so
//! it reads no Secret, and one sandbox's token opens no other sandbox's agent.

use ring::hmac;

/// Shortest key accepted (bytes).
pub const MIN_KEY_LEN: usize = 32;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the agent key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent key {path} has {len} bytes (after trimming whitespace); at least {MIN_KEY_LEN} are needed")]
    TooShort { path: String, len: usize },
}

/// The key in `path`, surrounding whitespace trimmed (a Secret written by hand often ends in a
/// newline).
pub fn read_key(path: &std::path::Path) -> Result<Vec<u8>, KeyError> {
    let raw = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let key = raw.trim_ascii().to_vec();
    if key.len() < MIN_KEY_LEN {
        return Err(KeyError::TooShort {
            path: path.display().to_string(),
            len: key.len(),
        });
    }
    Ok(key)
}

/// Where a sandbox pod's agent serves the direct path: the pod's IP and its `sandbox` container's
/// port named [`crate::labels::AGENT_PORT_NAME`]. `None` for a pod without that port (created
/// without the direct path) or without an IP yet.
pub fn agent_addr(pod: &k8s_openapi::api::core::v1::Pod) -> Option<std::net::SocketAddr> {
    use crate::labels::{AGENT_PORT_NAME, MAIN_CONTAINER};
    let ip: std::net::IpAddr = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    let c = pod.spec.as_ref()?.containers.iter().find(|c| c.name == MAIN_CONTAINER)?;
    let port = c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(AGENT_PORT_NAME))?;
    Some(std::net::SocketAddr::new(ip, u16::try_from(port.container_port).ok()?))
}

/// The token of the sandbox with this UID: 64 lowercase hex digits.
pub fn derive(key: &[u8], sandbox_uid: &str) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), sandbox_uid.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_uid_and_per_key() {
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        let a = derive(&k1, "uid-a");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, derive(&k1, "uid-a"), "deterministic");
        assert_ne!(a, derive(&k1, "uid-b"), "another sandbox");
        assert_ne!(a, derive(&k2, "uid-a"), "another key");
    }

    #[test]
    fn rfc4231_case_2() {
        // HMAC-SHA256 test vector (RFC 4231, test case 2): key "Jefe".
        assert_eq!(
            derive(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn short_keys_are_refused_and_whitespace_trimmed() {
        let dir = std::env::temp_dir().join(format!("airlock-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        std::fs::write(&p, b"short\n").unwrap();
        assert!(matches!(read_key(&p), Err(KeyError::TooShort { len: 5, .. })));
        std::fs::write(&p, format!("{}\n", "k".repeat(40))).unwrap();
        assert_eq!(read_key(&p).unwrap().len(), 40);
        std::fs::remove_dir_all(&dir).ok();
    }
}
