//! Request validation. Every failure is `INVALID_ARGUMENT` with a message that starts with the
//! field's name, for example `sandbox.name: must not be empty`. Nothing here panics, whatever the
//! input.
//!
//! Split by role: fields every request shares here (names, paths, modes, environment, timeouts);
//! the Processes requests in `exec.rs`, CreateSandbox in `create.rs`; the API-level checks
//! (quantities, CIDRs, names) are `airlock_crds::validation`'s, re-exported below.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tonic::Status;

use crate::agent::ExecOptions;
pub use airlock_crds::validation::cidr::is_cidr;
pub use airlock_crds::validation::names::{is_dns_label, is_env_name, is_label_key, is_label_value};
pub use airlock_crds::validation::quantity::is_quantity;
use airlock_api::proto::v1 as pb;

mod create;
mod exec;

pub use create::{CreateSpec, create_request};
pub use exec::{
    ExecSpec, PYTHON_FD3, code_argv, code_from_fd3, exec_request, resize, run_code_request, signal,
};

/// Longest path accepted (Linux PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Largest RunCode snippet.
pub const MAX_CODE: usize = 1024 * 1024;
/// Most arguments of one command.
pub const MAX_ARGS: usize = 4096;
/// Most bytes of one command line (arguments and environment together).
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// Most extra environment variables of one command.
pub const MAX_ENV: usize = 256;
/// Longest timeout (7 days, the longest a sandbox lives).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(airlock_crds::MAX_TTL_SECONDS as u64);

/// An `INVALID_ARGUMENT` status naming `field`.
pub fn invalid(field: &str, msg: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {msg}"))
}

const DNS_LABEL_HINT: &str = "must be a DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)";

/// A namespace, or the default one when empty.
pub fn namespace(field: &str, ns: &str, default: &str) -> Result<String, Status> {
    if ns.is_empty() {
        return Ok(default.to_string());
    }
    if !is_dns_label(ns) {
        return Err(invalid(field, DNS_LABEL_HINT));
    }
    Ok(ns.to_string())
}

/// A sandbox reference: (namespace, name).
pub fn sandbox_ref(
    field: &str,
    r: Option<&pb::SandboxRef>,
    default_ns: &str,
) -> Result<(String, String), Status> {
    let Some(r) = r else {
        return Err(invalid(field, "required"));
    };
    let ns = namespace(&format!("{field}.namespace"), &r.namespace, default_ns)?;
    let name_field = format!("{field}.name");
    if r.name.is_empty() {
        return Err(invalid(&name_field, "must not be empty"));
    }
    if !is_dns_label(&r.name) {
        return Err(invalid(&name_field, DNS_LABEL_HINT));
    }
    Ok((ns, r.name.clone()))
}

/// An absolute path inside a sandbox.
pub fn path(field: &str, p: &str) -> Result<String, Status> {
    if p.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if !p.starts_with('/') {
        return Err(invalid(field, "must be absolute"));
    }
    if p.contains('\0') {
        return Err(invalid(field, "must not contain NUL bytes"));
    }
    if p.len() > MAX_PATH {
        return Err(invalid(field, format!("must be at most {MAX_PATH} bytes")));
    }
    Ok(p.to_string())
}

/// Permission bits; 0 means "not set" (None).
pub fn mode(field: &str, m: u32) -> Result<Option<u32>, Status> {
    if m > 0o7777 {
        return Err(invalid(field, "must be at most 0o7777 (4095)"));
    }
    Ok((m != 0).then_some(m))
}

/// Longest environment value accepted (the Sandbox CRD's limit, so a create never fails later
/// at admission with a message that does not name the field).
pub const MAX_ENV_VALUE: usize = 32768;

/// Environment variables, sorted by name.
pub fn env(
    field: &str,
    env: &HashMap<String, String>,
    max: usize,
) -> Result<Vec<(String, String)>, Status> {
    if env.len() > max {
        return Err(invalid(field, format!("at most {max} variables")));
    }
    let sorted: BTreeMap<&String, &String> = env.iter().collect();
    let mut out = Vec::with_capacity(sorted.len());
    for (k, v) in sorted {
        if !is_env_name(k) {
            return Err(invalid(
                field,
                format!(
                    "invalid variable name {k:?} (letters, digits and '_', not starting with a digit)"
                ),
            ));
        }
        if v.contains('\0') {
            return Err(invalid(
                field,
                format!("value of {k} must not contain NUL bytes"),
            ));
        }
        if v.len() > MAX_ENV_VALUE {
            return Err(invalid(
                field,
                format!("value of {k} is longer than {MAX_ENV_VALUE} bytes"),
            ));
        }
        out.push((k.clone(), v.clone()));
    }
    Ok(out)
}

/// A timeout: unset or zero means none.
pub fn timeout(field: &str, d: Option<&prost_types::Duration>) -> Result<Option<Duration>, Status> {
    let Some(d) = d else { return Ok(None) };
    if d.seconds < 0 || d.nanos < 0 {
        return Err(invalid(field, "must not be negative"));
    }
    if d.nanos >= 1_000_000_000 {
        return Err(invalid(field, "nanos must be below 1000000000"));
    }
    let t = Duration::new(d.seconds as u64, d.nanos as u32);
    if t > MAX_TIMEOUT {
        return Err(invalid(
            field,
            format!("must be at most {}s", MAX_TIMEOUT.as_secs()),
        ));
    }
    Ok(if t.is_zero() { None } else { Some(t) })
}

#[cfg(test)]
mod tests;
