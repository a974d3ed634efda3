//! Finding the members of a shim's process tree in /proc.
//!
//! 1. Descendants by parent links (`/proc/PID/stat`). Complete where the shim is a child
//!    subreaper (runc, Kata): a process whose parent exits, setsid() or not, is re-parented to
//!    the shim, so it stays a descendant.
//! 2. gVisor refuses PR_SET_CHILD_SUBREAPER, and orphans go to PID 1 (the agent). Every process
//!    of the tree inherits `AIRLOCK_TREE=<marker>` (unique per shim): among the processes whose
//!    parent is PID 1 or the agent (where orphans land), those whose environment has it are
//!    members, with their descendants. Only those few environments are read. What escapes
//!    there: an orphaned process that cleared its environment at exec, or that made itself
//!    non-dumpable (its environ cannot be read).

use std::os::unix::ffi::OsStrExt;

use libc::pid_t;

pub const MARKER_ENV: &str = "AIRLOCK_TREE";

/// Live (not zombie) members of the tree below `root` (root itself excluded).
pub fn members(root: pid_t, marker: &[u8]) -> Vec<pid_t> {
    let links = live_processes();
    let mut set = Vec::new();
    add_with_descendants(root, &links, &mut set);
    set.retain(|&p| p != root);
    let adopters = [1, unsafe { libc::getppid() }];
    let mut want = Vec::with_capacity(marker.len() + MARKER_ENV.len() + 2);
    want.extend_from_slice(MARKER_ENV.as_bytes());
    want.push(b'=');
    want.extend_from_slice(marker);
    for &(pid, ppid) in &links {
        if pid != root && adopters.contains(&ppid) && !set.contains(&pid) && has_env(pid, &want) {
            set.push(pid);
            add_with_descendants(pid, &links, &mut set);
        }
    }
    set
}

/// Adds the descendants of `p` (by parent links) to `set`.
fn add_with_descendants(p: pid_t, links: &[(pid_t, pid_t)], set: &mut Vec<pid_t>) {
    let mut frontier = vec![p];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in links {
            if pp == p && !set.contains(&c) {
                set.push(c);
                frontier.push(c);
            }
        }
    }
}

/// (pid, ppid) of every live process.
fn live_processes() -> Vec<(pid_t, pid_t)> {
    let mut links = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return links;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = std::str::from_utf8(name.as_bytes())
            .ok()
            .and_then(|s| s.parse::<pid_t>().ok())
        else {
            continue;
        };
        if let Some((state, ppid)) = stat(pid)
            && state != b'Z'
            && state != b'X'
        {
            links.push((pid, ppid));
        }
    }
    links
}

/// (state, ppid) from /proc/PID/stat.
fn stat(pid: pid_t) -> Option<(u8, pid_t)> {
    let s = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = s.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(s.get(close + 2..)?).ok()?;
    let mut it = rest.split(' ');
    let state = *it.next()?.as_bytes().first()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether the environment of `pid` has the entry `want` (`NAME=VALUE`) exactly.
fn has_env(pid: pid_t, want: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == want))
}
