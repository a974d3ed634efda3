//! Starting a shim's command with `posix_spawn` (glibc: `clone(CLONE_VM | CLONE_VFORK)`), not
//! fork + exec: under gVisor a fork copies the shim's address space in the sentry, and starting
//! a command took 13-22 ms where a spawn takes ~10 (measured in a sandbox of the local cluster:
//! Python's fork + exec of `/bin/true` 20-22 ms, its `posix_spawn` 10 ms, both to the exit).
//!
//! Same result as the fork path of `shim.rs` (kept for terminals, which need `TIOCSCTTY` in the
//! child): a new session (`POSIX_SPAWN_SETSID`), every signal unblocked, SIGINT, SIGQUIT and
//! SIGPIPE at their default action, `fd3` on descriptor 3, the working directory, and the
//! environment of the shim with the request's variables and the tree marker over it. The
//! program is looked up in the `PATH` the command will have, as std's `Command` does.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use libc::pid_t;

/// `PATH` when the command's environment has none (glibc's `execvp` default, plus sbin).
const DEFAULT_PATH: &[u8] = b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to start.
pub struct Spec<'a> {
    pub argv: &'a [Vec<u8>],
    /// `NAME=VALUE`, over the shim's own environment.
    pub env: &'a [Vec<u8>],
    pub cwd: Option<&'a [u8]>,
    /// Put on descriptor 3 of the command.
    pub fd3: Option<RawFd>,
    /// `NAME=VALUE` set last (the tree marker).
    pub marker: (&'a str, &'a str),
}

/// Starts the command; the error is the one its exec would have given (ENOENT for a program
/// not found, EACCES, ...).
pub fn spawn(s: &Spec) -> io::Result<pid_t> {
    let env = environment(s);
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix(b"PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_vec();
    let program = resolve(&s.argv[0], &path, s.cwd)?;
    match spawn_as(s, &program, &s.argv, &env) {
        // A file without `#!`: as `execvp` does, run it with the shell.
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
            let mut argv = vec![b"/bin/sh".to_vec(), program.clone()];
            argv.extend(s.argv[1..].iter().cloned());
            spawn_as(s, b"/bin/sh", &argv, &env)
        }
        r => r,
    }
}

/// posix_spawn of `program` with `argv` and `env`, and `s`'s working directory and fd 3.
fn spawn_as(s: &Spec, program: &[u8], argv: &[Vec<u8>], env: &[Vec<u8>]) -> io::Result<pid_t> {
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let program = cstr(program)?;
    let argv: Vec<CString> = argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let envp: Vec<CString> = env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?;
    let cwd = s.cwd.map(cstr).transpose()?;
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    envp_p.push(std::ptr::null_mut());
    // dup2(3, 3) would leave close-on-exec set: a memfd that is descriptor 3 already goes through
    // a copy first.
    let moved = match s.fd3 {
        Some(3) => Some(unsafe {
            OwnedFd::from_raw_fd(crate::sys::cvt(libc::fcntl(3, libc::F_DUPFD_CLOEXEC, 10))?)
        }),
        _ => None,
    };
    let fd3 = moved.as_ref().map(|f| f.as_raw_fd()).or(s.fd3);

    let mut pid: pid_t = 0;
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut fa))?;
        let fa = Guard(&mut fa, |p| {
            libc::posix_spawn_file_actions_destroy(p);
        });
        check(libc::posix_spawnattr_init(&mut attr))?;
        let attr = Guard(&mut attr, |p| {
            libc::posix_spawnattr_destroy(p);
        });
        if let Some(fd) = fd3 {
            check(libc::posix_spawn_file_actions_adddup2(fa.0, fd, 3))?;
        }
        if let Some(dir) = &cwd {
            check(libc::posix_spawn_file_actions_addchdir_np(fa.0, dir.as_ptr()))?;
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        check(libc::posix_spawnattr_setsigmask(attr.0, &none))?;
        let mut default: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut default);
        for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGPIPE] {
            libc::sigaddset(&mut default, sig);
        }
        check(libc::posix_spawnattr_setsigdefault(attr.0, &default))?;
        let flags = libc::POSIX_SPAWN_SETSID as libc::c_int
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        check(libc::posix_spawnattr_setflags(attr.0, flags as libc::c_short))?;
        check(libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            fa.0,
            attr.0,
            argv_p.as_ptr(),
            envp_p.as_ptr(),
        ))?;
    }
    Ok(pid)
}

/// Runs its function on the pointer when dropped (the spawn attributes' destructors).
struct Guard<T>(*mut T, unsafe fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        unsafe { (self.1)(self.0) }
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(r)) }
}

/// The shim's environment with `env` over it, then the marker: `NAME=VALUE` each, one per name.
fn environment(s: &Spec) -> Vec<Vec<u8>> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let mut set = |name: &[u8], value: &[u8]| {
        let (n, v) = (OsStr::from_bytes(name), OsStr::from_bytes(value));
        match vars.iter_mut().find(|(k, _)| k == n) {
            Some(slot) => slot.1 = v.to_owned(),
            None => vars.push((n.to_owned(), v.to_owned())),
        }
    };
    for e in s.env {
        if let Some(p) = e.iter().position(|&b| b == b'=') {
            set(&e[..p], &e[p + 1..]);
        }
    }
    set(s.marker.0.as_bytes(), s.marker.1.as_bytes());
    vars.into_iter()
        .map(|(k, v)| {
            let mut e = k.into_vec();
            e.push(b'=');
            e.extend(v.into_vec());
            e
        })
        .collect()
}

/// The file to execute for `program`: itself when it holds a `/`, else the first executable
/// regular file of that name in `path`'s directories (an empty entry is the working directory,
/// as for `execvp`; relative entries are looked up from `cwd`, where the command will run). Not
/// found: ENOENT, or EACCES when something of that name was there but could not be executed (a
/// directory, a file without the execute bit), as `execvp` says.
fn resolve(program: &[u8], path: &[u8], cwd: Option<&[u8]>) -> io::Result<Vec<u8>> {
    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.contains(&b'/') {
        return Ok(program.to_vec());
    }
    let mut denied = false;
    for dir in path.split(|&b| b == b':') {
        let mut candidate = if dir.is_empty() { b".".to_vec() } else { dir.to_vec() };
        candidate.push(b'/');
        candidate.extend_from_slice(program);
        // Checked where it will be run from: the command's working directory.
        let mut seen = match cwd {
            Some(c) if !candidate.starts_with(b"/") => {
                let mut p = c.to_vec();
                p.push(b'/');
                p.extend_from_slice(&candidate);
                p
            }
            _ => candidate.clone(),
        };
        seen.push(0);
        let Ok(c) = std::ffi::CStr::from_bytes_with_nul(&seen) else { continue };
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::stat(c.as_ptr(), &mut st) } != 0 {
            continue;
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFREG && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Ok(candidate);
        }
        denied = true;
    }
    Err(io::Error::from_raw_os_error(if denied { libc::EACCES } else { libc::ENOENT }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_in_the_commands_path() {
        assert_eq!(resolve(b"sh", b"/nonexistent:/bin:/usr/bin", None).unwrap(), b"/bin/sh");
        assert_eq!(resolve(b"./x", b"/bin", None).unwrap(), b"./x");
        assert_eq!(resolve(b"no-such-program-here", b"/bin", None).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        // /etc/passwd is a regular file, not executable; /bin is a directory: both as execvp.
        assert_eq!(resolve(b"passwd", b"/etc", None).unwrap_err().raw_os_error(), Some(libc::EACCES));
        assert_eq!(resolve(b"bin", b"/", None).unwrap_err().raw_os_error(), Some(libc::EACCES));
        // A relative entry is looked up from the command's working directory.
        assert_eq!(resolve(b"sh", b"bin", Some(b"/")).unwrap(), b"bin/sh");
        assert_eq!(resolve(b"sh", b"bin", Some(b"/nonexistent")).unwrap_err().raw_os_error(), Some(libc::ENOENT));
    }

    fn run(argv: &[&[u8]], env: &[&[u8]], cwd: Option<&[u8]>) -> io::Result<i32> {
        let argv: Vec<Vec<u8>> = argv.iter().map(|a| a.to_vec()).collect();
        let env: Vec<Vec<u8>> = env.iter().map(|a| a.to_vec()).collect();
        let pid = spawn(&Spec { argv: &argv, env: &env, cwd, fd3: None, marker: ("AIRLOCK_TREE", "t") })?;
        let mut st = 0;
        unsafe { libc::waitpid(pid, &mut st, 0) };
        Ok(libc::WEXITSTATUS(st))
    }

    #[test]
    fn scripts_without_a_shebang_and_relative_path_entries_run_as_with_execvp() {
        let dir = std::env::temp_dir().join(format!("airlock-spawn-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tools")).unwrap();
        let script = dir.join("tools/seven");
        std::fs::write(&script, "exit 7\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let d = dir.as_os_str().as_bytes();
        // No `#!`: run by /bin/sh, as execvp does.
        assert_eq!(run(&[script.as_os_str().as_bytes()], &[], None).unwrap(), 7);
        // PATH=tools, found from the command's working directory.
        assert_eq!(run(&[b"seven"], &[b"PATH=tools"], Some(d)).unwrap(), 7);
        assert_eq!(run(&[b"seven"], &[b"PATH=tools"], Some(b"/")).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_requests_variables_and_the_marker_go_over_the_shims() {
        let argv = vec![b"true".to_vec()];
        let env = vec![b"HOME=/work".to_vec(), b"NEW=a=b".to_vec()];
        let s = Spec { argv: &argv, env: &env, cwd: None, fd3: None, marker: ("AIRLOCK_TREE", "1.2") };
        let e = environment(&s);
        assert!(e.contains(&b"HOME=/work".to_vec()));
        assert!(e.contains(&b"NEW=a=b".to_vec()));
        assert!(e.contains(&b"AIRLOCK_TREE=1.2".to_vec()));
        assert_eq!(e.iter().filter(|v| v.starts_with(b"HOME=")).count(), 1);
    }
}
