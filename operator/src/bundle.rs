//! The agent bundle: what a sandbox pod needs to start the Airlock agent without an init container.
//!
//! An init container costs the kubelet one more round of its pod sync (about a second, measured
//! in bench/report.md), so by default the agent travels in a ConfigMap that the pod mounts:
//! `boot` (airlock-boot, a few KiB, no libc) and `agent.z` (the static agent, zlib-compressed to
//! fit the API server's 1 MiB limit on a ConfigMap). The container starts `boot`, which unpacks
//! the agent into the pod's memory-backed agent volume and execs it as PID 1.
//!
//! The operator loads both files from its own image once, at startup; the ConfigMap's name carries
//! a hash of its content, so a new operator version never rewrites what running pods mount.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Key of airlock-boot in the ConfigMap.
pub const BOOT_KEY: &str = "boot";
/// Key of the compressed agent in the ConfigMap.
pub const AGENT_KEY: &str = "agent.z";
/// The API server refuses ConfigMaps whose data adds up to more than this.
pub const CONFIG_MAP_LIMIT: usize = 1024 * 1024;
/// Prefix of the bundle ConfigMaps' names.
pub const NAME_PREFIX: &str = "airlock-agent-";

/// Why the bundle cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("reading the {what} at {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} at {path} is empty")]
    Empty { what: &'static str, path: PathBuf },
    #[error(
        "the agent bundle is {size} bytes (boot {boot}, compressed agent {agent}), over the ConfigMap limit of {CONFIG_MAP_LIMIT} bytes; use --agent-delivery=init-container"
    )]
    TooLarge {
        size: usize,
        boot: usize,
        agent: usize,
    },
}

/// airlock-boot and the compressed agent, with the name of the ConfigMap that holds them.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentBundle {
    pub boot: Vec<u8>,
    /// The agent, zlib-compressed.
    pub agent: Vec<u8>,
    /// `airlock-agent-<first 10 hex digits of the content's SHA-256>`.
    pub name: String,
}

impl fmt::Debug for AgentBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBundle")
            .field("name", &self.name)
            .field("boot_bytes", &self.boot.len())
            .field("agent_bytes", &self.agent.len())
            .finish()
    }
}

impl AgentBundle {
    /// Reads airlock-boot and the agent and compresses the agent.
    pub fn load(boot: &Path, agent: &Path) -> Result<AgentBundle, BundleError> {
        let read = |what, path: &Path| {
            let bytes = std::fs::read(path).map_err(|source| BundleError::Read {
                what,
                path: path.to_owned(),
                source,
            })?;
            if bytes.is_empty() {
                return Err(BundleError::Empty {
                    what,
                    path: path.to_owned(),
                });
            }
            Ok(bytes)
        };
        let boot = read("airlock-boot binary", boot)?;
        let agent = read("agent binary", agent)?;
        AgentBundle::new(boot, &agent)
    }

    /// The bundle of these two programs.
    pub fn new(boot: Vec<u8>, agent: &[u8]) -> Result<AgentBundle, BundleError> {
        let agent = miniz_oxide::deflate::compress_to_vec_zlib(agent, 9);
        let size = boot.len() + agent.len();
        if size > CONFIG_MAP_LIMIT {
            return Err(BundleError::TooLarge {
                size,
                boot: boot.len(),
                agent: agent.len(),
            });
        }
        let mut h = Sha256::new();
        h.update((boot.len() as u64).to_le_bytes());
        h.update(&boot);
        h.update(&agent);
        let name = format!("{NAME_PREFIX}{}", &hex::encode(h.finalize())[..10]);
        Ok(AgentBundle { boot, agent, name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_compressed_and_round_trips() {
        let agent: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let b = AgentBundle::new(b"boot".to_vec(), &agent).unwrap();
        assert!(b.agent.len() < agent.len() / 4, "{} bytes", b.agent.len());
        let back = miniz_oxide::inflate::decompress_to_vec_zlib(&b.agent).unwrap();
        assert_eq!(back, agent);
        assert!(b.name.starts_with(NAME_PREFIX) && b.name.len() == NAME_PREFIX.len() + 10);
    }

    #[test]
    fn the_name_follows_the_content() {
        let a = AgentBundle::new(b"boot".to_vec(), b"agent one").unwrap();
        let b = AgentBundle::new(b"boot".to_vec(), b"agent two").unwrap();
        let c = AgentBundle::new(b"boo".to_vec(), b"tagent one").unwrap();
        assert_eq!(a, AgentBundle::new(b"boot".to_vec(), b"agent one").unwrap());
        assert_ne!(a.name, b.name);
        assert_ne!(
            a.name, c.name,
            "the boundary between the two programs is hashed"
        );
    }

    #[test]
    fn too_large_is_refused_with_the_sizes() {
        // Random bytes do not compress.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let noise: Vec<u8> = (0..CONFIG_MAP_LIMIT + 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let e = AgentBundle::new(b"boot".to_vec(), &noise).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, BundleError::TooLarge { boot: 4, .. }), "{msg}");
        assert!(msg.contains("--agent-delivery=init-container"), "{msg}");
    }

    #[test]
    fn missing_and_empty_files_name_the_path() {
        let dir = std::env::temp_dir().join(format!("airlock-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let e = AgentBundle::load(&dir.join("nope"), &empty).unwrap_err();
        assert!(
            e.to_string().contains("airlock-boot binary at") && e.to_string().contains("nope"),
            "{e}"
        );
        let e = AgentBundle::load(&empty, &empty).unwrap_err();
        assert!(
            matches!(
                e,
                BundleError::Empty {
                    what: "airlock-boot binary",
                    ..
                }
            ),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
