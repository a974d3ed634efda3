//! Names as the API server accepts them: DNS labels and subdomains (namespaces, object names,
//! RuntimeClass names), label keys and values, environment variable names. Shared by the operator
//! and the gateway, so both refuse what admission would.

/// True for an RFC 1123 DNS label (namespaces, sandbox names: pod and NetworkPolicy names and
/// label values must all accept it).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// True for an RFC 1123 DNS subdomain (dot-separated DNS labels, at most 253 characters).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// True for a Kubernetes label key (optional DNS-subdomain prefix, name of at most 63).
pub fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(is_dns_label))
    {
        return false;
    }
    is_label_value(name) && !name.is_empty()
}

/// True for a Kubernetes label value (may be empty).
pub fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && v.as_bytes()
                .first()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && v.as_bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// True for a POSIX-ish environment variable name.
pub fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= 256
}
