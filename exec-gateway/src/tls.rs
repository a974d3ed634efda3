//! The gateway's TLS certificate: PEM files (`--tls-cert`, `--tls-key`), reloaded when they
//! change.
//!
//! cert-manager renews certificates by updating the Secret; the kubelet then swaps the files of
//! the mounted volume. The gateway re-reads both files every [`TlsFiles::reload_interval`] and,
//! when their bytes changed and they parse into a matching certificate and key, serves the new
//! certificate to new connections (open connections keep theirs). A broken pair (half-written,
//! key not matching the certificate) is logged and the previous certificate stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// Errors of loading the certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: invalid PEM certificate: {message}")]
    Certificate { path: String, message: String },
    #[error("{path}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {message}")]
    Key { path: String, message: String },
    #[error("{key} does not match the certificate in {cert}: {source}")]
    Mismatch {
        cert: String,
        key: String,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// Where the certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

impl TlsFiles {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            reload_interval: Duration::from_secs(30),
        }
    }

    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }
}

/// Parses a PEM certificate chain and key into a checked [`CertifiedKey`].
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    files: &TlsFiles,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: cert_path.clone(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Key {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|source| TlsError::Mismatch {
        cert: cert_path,
        key: key_path,
        source,
    })?;
    Ok(Arc::new(ck))
}

/// Serves the current certificate; [`ReloadingCert::reload`] swaps it.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    state: RwLock<(Arc<CertifiedKey>, Vec<u8>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Loads the files (an error here stops the gateway from starting).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let (c, k) = files.read()?;
        let ck = certified_key(&c, &k, &files)?;
        Ok(Arc::new(ReloadingCert {
            files,
            state: RwLock::new((ck, c, k)),
        }))
    }

    /// Re-reads the files; `Ok(true)` when a new certificate is now served, `Ok(false)` when
    /// they did not change, `Err` (old certificate kept) when they changed but are unusable.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (c, k) = self.files.read()?;
        {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            if st.1 == c && st.2 == k {
                return Ok(false);
            }
        }
        let ck = certified_key(&c, &k, &self.files)?;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = (ck, c, k);
        Ok(true)
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// rustls server configuration (TLS 1.2/1.3, ALPN h2) serving this certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The same certificate for HTTP/1.1 (the e2b API's port).
    pub fn http1_server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg = (*self.server_config()?).clone();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Checks the files every `reload_interval` until `stop`.
    pub fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.files.reload_interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match me.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %me.files.cert.display(), "TLS certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS certificate files changed but cannot be used; still serving the previous certificate")
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    #[test]
    fn loads_and_reloads_only_good_pairs() {
        let dir = std::env::temp_dir().join(format!("airlock-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles::new(dir.join("tls.crt"), dir.join("tls.key"));
        let write = |(c, k): &(String, String)| {
            std::fs::write(&files.cert, c).unwrap();
            std::fs::write(&files.key, k).unwrap();
        };
        let a = pair("a.example");
        write(&a);
        let r = ReloadingCert::load(files.clone()).unwrap();
        let first = r.current().cert[0].clone();
        assert!(!r.reload().unwrap(), "unchanged files are not reloaded");

        // Rotated: the new certificate is served.
        let b = pair("b.example");
        write(&b);
        assert!(r.reload().unwrap());
        let second = r.current().cert[0].clone();
        assert_ne!(first, second);

        // Half-rotated (new cert, old key): refused, the previous one stays.
        std::fs::write(&files.cert, &a.0).unwrap();
        let e = r.reload().unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert_eq!(r.current().cert[0], second);

        // Garbage.
        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(matches!(
            r.reload().unwrap_err(),
            TlsError::NoCertificate { .. }
        ));
        std::fs::write(&files.cert, &b.0).unwrap();
        std::fs::write(&files.key, "nope").unwrap();
        let e = r.reload().unwrap_err();
        assert!(e.to_string().contains("no usable PEM private key"), "{e}");
        assert_eq!(r.current().cert[0], second);

        std::fs::remove_file(&files.key).unwrap();
        assert!(
            ReloadingCert::load(files.clone())
                .unwrap_err()
                .to_string()
                .starts_with("reading ")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
