//! File commands: put, get, ls, stat, rm, mkdir, and install.
//!
//! Exit codes: 0 ok, 2 not found, 3 permission denied, 4 wrong kind / exists / not empty,
//! 5 bad usage, 1 other. Messages: one line on stderr.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::frame::{Event, Parser};
use crate::json;
use crate::sys::{self, pollfd};

pub const OK: i32 = 0;
pub const OTHER: i32 = 1;
pub const NOT_FOUND: i32 = 2;
pub const PERMISSION: i32 = 3;
pub const PRECONDITION: i32 = 4;
pub const USAGE: i32 = 5;

const BUF: usize = 64 * 1024;

#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub msg: String,
}

impl Fail {
    pub fn new(code: i32, msg: impl Into<String>) -> Self {
        Fail {
            code,
            msg: msg.into(),
        }
    }
}

pub type Res = Result<(), Fail>;

/// Exit code for an OS error.
pub fn code_for(e: &io::Error) -> i32 {
    match e.raw_os_error() {
        Some(libc::ENOENT) => NOT_FOUND,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => PERMISSION,
        Some(
            libc::EEXIST
            | libc::ENOTEMPTY
            | libc::EISDIR
            | libc::ENOTDIR
            | libc::ETXTBSY
            | libc::EBUSY,
        ) => PRECONDITION,
        Some(libc::ENAMETOOLONG | libc::EINVAL) => USAGE,
        _ => OTHER,
    }
}

fn io_fail(what: &str, path: &OsStr, e: io::Error) -> Fail {
    Fail::new(
        code_for(&e),
        format!("{what} {}: {}", sys::show(path), sys::err_text(&e)),
    )
}

fn kind_fail(path: &OsStr, what: &str) -> Fail {
    Fail::new(PRECONDITION, format!("{}: {what}", sys::show(path)))
}

fn absolute(path: &OsStr) -> Result<&Path, Fail> {
    if path.as_bytes().first() != Some(&b'/') {
        return Err(Fail::new(USAGE, "path must be absolute"));
    }
    Ok(Path::new(path))
}

fn stdout_fail(e: io::Error) -> Fail {
    Fail::new(OTHER, format!("writing stdout: {}", sys::err_text(&e)))
}

/// A temporary file next to the destination, removed on drop unless committed.
struct Temp {
    path: PathBuf,
    file: File,
    committed: bool,
}

impl Temp {
    fn create(dir: &Path) -> io::Result<Temp> {
        let pid = std::process::id();
        let mut last = io::Error::from_raw_os_error(libc::EEXIST);
        for attempt in 0..16u32 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = dir.join(format!(".airlock-tmp-{pid}-{nanos:x}-{attempt}"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Temp {
                        path,
                        file,
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// fsync, chmod, rename over `dest` (atomic replace), then fsync the directory.
    fn commit(mut self, dest: &Path, mode: u32) -> Result<(), Fail> {
        let d = dest.as_os_str();
        self.file.sync_all().map_err(|e| io_fail("fsync", d, e))?;
        self.file
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| io_fail("chmod", d, e))?;
        fs::rename(&self.path, dest).map_err(|e| io_fail("rename to", d, e))?;
        self.committed = true;
        if let Some(dir) = dest.parent()
            && let Ok(df) = File::open(dir)
        {
            let _ = df.sync_all();
        }
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn split(path: &Path) -> Result<(&Path, &OsStr), Fail> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !path.as_os_str().as_bytes().ends_with(b"/..") => {
            Ok((dir, name))
        }
        _ if path.parent().is_none() => Err(kind_fail(path.as_os_str(), "is a directory")),
        _ => Err(Fail::new(
            USAGE,
            format!("{}: not a file path", sys::show(path.as_os_str())),
        )),
    }
}

/// `put PATH [--mode OCTAL] [--parents]`: DATA frames, then CLOSE commits atomically.
/// Without --mode an existing file keeps its permission bits; a new one gets 0644.
pub fn put(path: &OsStr, mode: Option<u32>, parents: bool) -> Res {
    let p = absolute(path)?;
    let (dir, _) = split(p)?;
    // Signals that would end the agent: handle them so the temp file is removed.
    let sigs = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];
    let sfd = sys::signalfd(&sigs, true)
        .map_err(|e| Fail::new(OTHER, format!("signalfd: {}", sys::err_text(&e))))?;

    if parents {
        fs::create_dir_all(dir).map_err(|e| io_fail("mkdir", dir.as_os_str(), e))?;
    }
    let existing = match fs::metadata(p) {
        Ok(m) if m.is_dir() => return Err(kind_fail(path, "is a directory")),
        Ok(m) => Some(m.permissions().mode() & 0o7777),
        Err(_) => None,
    };
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(kind_fail(dir.as_os_str(), "not a directory")),
        Ok(_) => {}
        Err(e) => return Err(io_fail("directory", dir.as_os_str(), e)),
    }
    let mode = mode.or(existing).unwrap_or(0o644);
    let mut tmp =
        Temp::create(dir).map_err(|e| io_fail("create temporary file in", dir.as_os_str(), e))?;

    let mut parser = Parser::new();
    let mut buf = vec![0u8; BUF];
    let mut size: u64 = 0;
    loop {
        let mut fds = [
            pollfd(0, libc::POLLIN),
            pollfd(sfd.as_raw_fd(), libc::POLLIN),
        ];
        sys::poll(&mut fds, -1)
            .map_err(|e| Fail::new(OTHER, format!("poll: {}", sys::err_text(&e))))?;
        if fds[1].revents != 0 {
            let sigs = sys::read_signals(sfd.as_raw_fd()).unwrap_or_default();
            if let Some(s) = sigs.first() {
                return Err(Fail::new(
                    OTHER,
                    format!("interrupted by signal {s}; upload discarded"),
                ));
            }
        }
        if fds[0].revents == 0 {
            continue;
        }
        let n = match sys::read(0, &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                return Err(Fail::new(
                    OTHER,
                    format!("reading stdin: {}", sys::err_text(&e)),
                ));
            }
        };
        if n == 0 {
            let how = if parser.at_boundary() {
                ""
            } else {
                " in the middle of a frame"
            };
            return Err(Fail::new(
                OTHER,
                format!("stdin closed{how} before CLOSE; upload discarded"),
            ));
        }
        let mut input = &buf[..n];
        while let Some(ev) = parser.next(&mut input) {
            match ev {
                Event::Data(d) => {
                    tmp.file
                        .write_all(d)
                        .map_err(|e| io_fail("write", path, e))?;
                    size += d.len() as u64;
                }
                Event::Close => {
                    tmp.commit(p, mode)?;
                    sys::write_all(1, format!("{{\"size\":{size}}}\n").as_bytes())
                        .map_err(stdout_fail)?;
                    return Ok(());
                }
                Event::Signal(_) | Event::Resize { .. } => {}
            }
        }
    }
}

/// `get PATH`: the bytes of a regular file on stdout, streamed.
pub fn get(path: &OsStr) -> Res {
    let p = absolute(path)?;
    // O_NONBLOCK: opening a FIFO must not hang; it is refused below anyway.
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| io_fail("open", path, e))?;
    let md = f.metadata().map_err(|e| io_fail("stat", path, e))?;
    if md.is_dir() {
        return Err(kind_fail(path, "is a directory"));
    }
    if !md.is_file() {
        return Err(kind_fail(path, "not a regular file"));
    }
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_fail("read", path, e)),
        };
        sys::write_all(1, &buf[..n]).map_err(stdout_fail)?;
    }
}

/// `ls PATH`: one JSON object per entry (not following symlinks), sorted by name.
pub fn ls(path: &OsStr) -> Res {
    let p = absolute(path)?;
    let rd = fs::read_dir(p).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) => kind_fail(path, "not a directory"),
        _ => io_fail("list", path, e),
    })?;
    let mut entries = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| io_fail("list", path, e))?;
        match ent.metadata() {
            Ok(md) => entries.push((ent.file_name().into_vec(), md)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {} // removed meanwhile
            Err(e) => return Err(io_fail("stat", ent.path().as_os_str(), e)),
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = io::BufWriter::with_capacity(BUF, sys::Stdout);
    for (name, md) in &entries {
        let mut line = json::entry(name, md);
        line.push('\n');
        out.write_all(line.as_bytes()).map_err(stdout_fail)?;
    }
    out.flush().map_err(stdout_fail)
}

/// `stat PATH`: one JSON object, name = PATH as given; symlinks are not followed.
pub fn stat(path: &OsStr) -> Res {
    let p = absolute(path)?;
    let md = fs::symlink_metadata(p).map_err(|e| io_fail("stat", path, e))?;
    let mut line = json::entry(path.as_bytes(), &md);
    line.push('\n');
    sys::write_all(1, line.as_bytes()).map_err(stdout_fail)
}

/// `rm PATH [--recursive]`: a file or symlink is unlinked; a directory is removed if empty,
/// or with its contents with --recursive (symlinks inside are not followed).
pub fn rm(path: &OsStr, recursive: bool) -> Res {
    let p = absolute(path)?;
    // "/", "/.", "/a/.." ...: no last component to remove (and possibly the root).
    if p.file_name().is_none() {
        return Err(Fail::new(
            USAGE,
            format!("refusing to remove {}", sys::show(path)),
        ));
    }
    let md = fs::symlink_metadata(p).map_err(|e| io_fail("rm", path, e))?;
    if md.is_dir() {
        if recursive {
            fs::remove_dir_all(p).map_err(|e| io_fail("rm", path, e))
        } else {
            fs::remove_dir(p).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTEMPTY | libc::EEXIST) => {
                    kind_fail(path, "directory not empty (use --recursive)")
                }
                _ => io_fail("rm", path, e),
            })
        }
    } else {
        fs::remove_file(p).map_err(|e| io_fail("rm", path, e))
    }
}

/// `mv PATH DEST`: rename(2), within one filesystem (replaces a file DEST, as `mv` does).
pub fn mv(path: &OsStr, dest: &OsStr) -> Res {
    let from = absolute(path)?;
    let to = absolute(dest)?;
    fs::symlink_metadata(from).map_err(|e| io_fail("mv", path, e))?;
    fs::rename(from, to).map_err(|e| io_fail("mv", dest, e))
}

/// `mkdir PATH [--parents] [--mode OCTAL]`: --mode is applied exactly (no umask) to PATH;
/// with --parents an existing directory is fine (left unchanged).
pub fn mkdir(path: &OsStr, parents: bool, mode: Option<u32>) -> Res {
    let p = absolute(path)?;
    if parents {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => return Err(kind_fail(path, "exists and is not a directory")),
            Err(_) => {}
        }
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).map_err(|e| io_fail("mkdir", dir.as_os_str(), e))?;
        }
    }
    match DirBuilder::new().mode(mode.unwrap_or(0o777)).create(p) {
        Ok(()) => {}
        Err(e) if parents && e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(kind_fail(path, "already exists"));
        }
        Err(e) => return Err(io_fail("mkdir", path, e)),
    }
    if let Some(m) = mode {
        fs::set_permissions(p, fs::Permissions::from_mode(m))
            .map_err(|e| io_fail("chmod", path, e))?;
    }
    Ok(())
}

/// `install DEST`: copies this executable to DEST atomically with mode 0755.
pub fn install(dest: &OsStr) -> Res {
    let d = Path::new(dest);
    let dir = match d.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err(kind_fail(dest, "is a directory")),
    };
    let mut src = match File::open("/proc/self/exe") {
        Ok(f) => f,
        Err(_) => {
            let me: OsString = std::env::args_os().next().unwrap_or_default();
            File::open(&me).map_err(|e| io_fail("open", &me, e))?
        }
    };
    let mut tmp =
        Temp::create(dir).map_err(|e| io_fail("create temporary file in", dir.as_os_str(), e))?;
    io::copy(&mut src, &mut tmp.file).map_err(|e| io_fail("copy to", dest, e))?;
    tmp.commit(d, 0o755)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let c = |n| code_for(&io::Error::from_raw_os_error(n));
        assert_eq!(c(libc::ENOENT), NOT_FOUND);
        assert_eq!(c(libc::EACCES), PERMISSION);
        assert_eq!(c(libc::EROFS), PERMISSION);
        assert_eq!(c(libc::ENOTEMPTY), PRECONDITION);
        assert_eq!(c(libc::EISDIR), PRECONDITION);
        assert_eq!(c(libc::ENOSPC), OTHER);
    }

    #[test]
    fn relative_paths_are_usage_errors() {
        for p in ["", "rel", "./x"] {
            assert_eq!(absolute(OsStr::new(p)).unwrap_err().code, USAGE);
        }
        assert!(absolute(OsStr::new("/x")).is_ok());
    }

    #[test]
    fn split_paths() {
        assert_eq!(split(Path::new("/")).unwrap_err().code, PRECONDITION);
        assert_eq!(split(Path::new("/a/..")).unwrap_err().code, USAGE);
        let (d, n) = split(Path::new("/a/b")).unwrap();
        assert_eq!((d, n), (Path::new("/a"), OsStr::new("b")));
    }
}
