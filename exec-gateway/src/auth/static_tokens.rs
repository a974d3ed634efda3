//! Tokens of the `static` auth mode.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

/// Errors of loading auth configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("static tokens file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("static tokens file, line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("static tokens file has no tokens")]
    Empty,
}

/// Namespaces a static token may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    All,
    Only(BTreeSet<String>),
}

impl Namespaces {
    pub fn allows(&self, ns: &str) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Only(set) => set.contains(ns),
        }
    }
}

/// Tokens of the `static` mode, stored by SHA-256 so the map never holds a raw token.
#[derive(Debug, Clone, Default)]
pub struct StaticTokens {
    tokens: HashMap<[u8; 32], (String, Namespaces)>,
}

pub(crate) fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl StaticTokens {
    /// Parses `TOKEN NAMESPACES` lines.
    pub fn parse(text: &str) -> Result<Self, AuthError> {
        let mut tokens = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| AuthError::Parse {
                line: line_no,
                message,
            };
            let mut parts = line.split_whitespace();
            let (Some(token), Some(spec), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err(
                    "expected `TOKEN NAMESPACE[,NAMESPACE...]` or `TOKEN *`".into(),
                ));
            };
            if token.len() < 8 {
                return Err(err("token must be at least 8 characters".into()));
            }
            let namespaces = if spec == "*" {
                Namespaces::All
            } else {
                let mut set = BTreeSet::new();
                for ns in spec.split(',') {
                    if !crate::validate::is_dns_label(ns) {
                        return Err(err(format!("invalid namespace {ns:?}")));
                    }
                    set.insert(ns.to_string());
                }
                Namespaces::Only(set)
            };
            let hash = sha256(token);
            let id = format!("static:{}", &hex::encode(hash)[..12]);
            if tokens.insert(hash, (id, namespaces)).is_some() {
                return Err(err("duplicate token".into()));
            }
        }
        if tokens.is_empty() {
            return Err(AuthError::Empty);
        }
        Ok(StaticTokens { tokens })
    }

    /// Reads and parses a tokens file.
    pub fn load(path: &std::path::Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The identity and namespaces of a token.
    pub fn lookup(&self, token: &str) -> Option<(&str, &Namespaces)> {
        self.tokens
            .get(&sha256(token))
            .map(|(id, ns)| (id.as_str(), ns))
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_tokens_parse() {
        let t = StaticTokens::parse("# comment\n\n tok-aaaaaaaa team-a,team-b \ntok-bbbbbbbb *\n")
            .unwrap();
        assert_eq!(t.len(), 2);
        let (_, ns) = t.lookup("tok-aaaaaaaa").unwrap();
        assert!(ns.allows("team-a") && ns.allows("team-b") && !ns.allows("team-c"));
        assert_eq!(t.lookup("tok-bbbbbbbb").unwrap().1, &Namespaces::All);
        assert!(t.lookup("tok-cccccccc").is_none());
        assert!(t.lookup("").is_none());

        let e = |s: &str| StaticTokens::parse(s).unwrap_err().to_string();
        assert_eq!(e(""), "static tokens file has no tokens");
        assert_eq!(e("# only\n"), "static tokens file has no tokens");
        assert!(e("tok-aaaaaaaa\n").starts_with("static tokens file, line 1: expected"));
        assert!(e("x\ntok-aaaaaaaa a b\n").starts_with("static tokens file, line 1:"));
        assert!(e("tok-aaaaaaaa a\ntok-aaaaaaaa b\n").contains("line 2: duplicate token"));
        assert!(e("tok-aaaaaaaa Bad_NS\n").contains("line 1: invalid namespace \"Bad_NS\""));
        assert!(e("tok-aaaaaaaa a,,b\n").contains("invalid namespace \"\""));
        assert!(e("short a\n").contains("at least 8"));
    }
}
