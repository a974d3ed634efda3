//! The per-sandbox token the daemon requires in HELLO, and keeping it from the sandbox's own
//! processes.
//!
//! Sources: `--token-file PATH` (read, then unlinked when the directory allows it), else the
//! environment variable `AIRLOCK_AGENT_TOKEN`. Either way, before anything is started:
//! - the variable is removed from the agent's environment (children never inherit it) and its
//!   bytes in the original environment block are overwritten with NULs, since /proc/1/environ
//!   shows that block, not the current environment;
//! - the agent makes itself non-dumpable (PR_SET_DUMPABLE 0): /proc/1/{environ,mem,fd,maps} and
//!   ptrace are then refused to every process without CAP_SYS_PTRACE, root included (sandboxes
//!   drop every capability), so the user's processes, which run as the agent's uid, cannot read
//!   the token from its memory. The shims and commands are exec'd and dumpable again; they never
//!   see the token.

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;

use libc::c_char;

pub const TOKEN_ENV: &str = "AIRLOCK_AGENT_TOKEN";
/// Shorter tokens are refused at startup (the operator derives 64 hex digits).
pub const MIN_TOKEN: usize = 16;

unsafe extern "C" {
    static mut environ: *mut *mut c_char;
}

/// Reads the token. Must run before any thread or child is started.
pub fn load(token_file: Option<&OsStr>) -> Result<Vec<u8>, String> {
    let from_env = std::env::var_os(TOKEN_ENV).map(|v| v.as_bytes().to_vec());
    scrub_env();
    let mut token = match token_file {
        Some(path) => {
            let t = std::fs::read(path).map_err(|e| {
                format!(
                    "--token-file {}: {}",
                    crate::sys::show(path),
                    crate::sys::err_text(&e)
                )
            })?;
            // A Secret or ConfigMap volume is read-only; a file the agent may remove, it removes.
            let _ = std::fs::remove_file(path);
            t
        }
        None => from_env.ok_or_else(|| {
            format!("--listen needs a token: set {TOKEN_ENV} or give --token-file")
        })?,
    };
    while token.last().is_some_and(|b| b.is_ascii_whitespace()) {
        token.pop();
    }
    if token.len() < MIN_TOKEN {
        return Err(format!(
            "the token is {} bytes, fewer than {MIN_TOKEN}",
            token.len()
        ));
    }
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong) };
    Ok(token)
}

/// Zeroes the value of TOKEN_ENV in the environment block and removes it from the environment.
fn scrub_env() {
    let prefix = format!("{TOKEN_ENV}=");
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let s = *p;
            let bytes = CStr::from_ptr(s).to_bytes();
            if bytes.starts_with(prefix.as_bytes()) {
                let n = bytes.len();
                std::ptr::write_bytes(s.add(prefix.len()), 0, n - prefix.len());
            }
            p = p.add(1);
        }
        std::env::remove_var(TOKEN_ENV);
    }
}
