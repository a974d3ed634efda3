//! File commands (put, get, ls, stat, rm, mkdir, install) run as a subprocess.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn put(path: &Path, extra: &[&str], content: &[u8], frame_size: usize) -> Out {
    let mut input = Vec::new();
    for c in content.chunks(frame_size) {
        input.extend(data(c));
    }
    input.extend(close());
    let mut args = vec!["put", s(path)];
    args.extend_from_slice(extra);
    run(&args, &input)
}

/// Names in `dir` (to check that no temporary file is left).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn put_get_round_trip_1mib() {
    let d = tmpdir("roundtrip");
    let f = d.join("blob.bin");
    let content = random_bytes(1 << 20, 42);
    let o = put(&f, &[], &content, 77_777);
    assert_eq!(
        (o.code, o.out().as_str()),
        (0, "{\"size\":1048576}\n"),
        "{o:?}"
    );
    assert_eq!(mode_of(&f), 0o644);
    assert_eq!(names(&d), vec!["blob.bin"]);
    let o = run(&["get", s(&f)], b"");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout == content,
        "get returned {} bytes, different",
        o.stdout.len()
    );
}

#[test]
fn put_replaces_and_modes() {
    let d = tmpdir("replace");
    let f = d.join("x");
    assert_eq!(put(&f, &["--mode", "0755"], b"one", 10).code, 0);
    assert_eq!(mode_of(&f), 0o755);
    // no --mode: existing permissions are kept
    assert_eq!(put(&f, &[], b"two", 1).code, 0);
    assert_eq!(std::fs::read(&f).unwrap(), b"two");
    assert_eq!(mode_of(&f), 0o755);
    assert_eq!(put(&f, &["--mode=600"], b"", 1).code, 0);
    assert_eq!(std::fs::read(&f).unwrap(), b"");
    assert_eq!(mode_of(&f), 0o600);
    assert_eq!(names(&d), vec!["x"]);
}

#[test]
fn put_without_close_leaves_nothing() {
    let d = tmpdir("noclose");
    let f = d.join("file");
    let mut input = data(b"some data");
    input.extend(data(&[0u8; 70_000]));
    let o = run_then_eof(&["put", s(&f)], &input);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr.contains("CLOSE"), "{:?}", o.stderr);
    assert!(names(&d).is_empty(), "{:?}", names(&d));
    // truncated in the middle of a frame
    let o = run_then_eof(&["put", s(&f)], &data(b"abcdef")[..8]);
    assert_eq!(o.code, 1);
    assert!(names(&d).is_empty(), "{:?}", names(&d));
    // an existing file is untouched
    std::fs::write(&f, b"old").unwrap();
    let o = run_then_eof(&["put", s(&f)], &data(b"new"));
    assert_eq!(o.code, 1);
    assert_eq!(std::fs::read(&f).unwrap(), b"old");
    assert_eq!(names(&d), vec!["file"]);
}

#[test]
fn put_parents_and_errors() {
    let d = tmpdir("parents");
    let f = d.join("a/b/c.txt");
    let o = put(&f, &[], b"x", 1);
    assert_eq!(o.code, 2, "{o:?}");
    let o = put(&f, &["--parents"], b"hello", 2);
    assert_eq!((o.code, o.out().as_str()), (0, "{\"size\":5}\n"), "{o:?}");
    assert_eq!(std::fs::read(&f).unwrap(), b"hello");
    // onto a directory
    let o = put(&d.join("a"), &[], b"x", 1);
    assert_eq!(o.code, 4, "{o:?}");
    // relative path
    let o = run(&["put", "rel/x"], &close());
    assert_eq!(o.code, 5);
    assert!(o.stderr.contains("path must be absolute"));
}

#[test]
fn get_errors() {
    let d = tmpdir("get");
    assert_eq!(run(&["get", s(&d.join("missing"))], b"").code, 2);
    assert_eq!(run(&["get", s(&d)], b"").code, 4);
    assert_eq!(run(&["get", "relative"], b"").code, 5);
    assert_eq!(run(&["get"], b"").code, 5);
}

#[test]
fn ls_outputs_json_lines() {
    let d = tmpdir("ls");
    std::fs::write(d.join("file.txt"), b"12345").unwrap();
    std::fs::set_permissions(d.join("file.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    symlink("file.txt", d.join("link")).unwrap();
    std::fs::write(d.join("we\"ird\nname"), b"").unwrap();
    let o = run(&["ls", s(&d)], b"");
    assert_eq!(o.code, 0, "{o:?}");
    let out = o.out();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with(r#"{"name":"file.txt","type":"file","size":5,"mode":416,"mtime":"#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(r#"{"name":"link","type":"symlink","size":8,"#),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(r#"{"name":"sub","type":"dir","#),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with(r#"{"name":"we\"ird\nname","type":"file","size":0,"#),
        "{}",
        lines[3]
    );
    for l in &lines {
        assert!(l.ends_with('}') && l.contains(",\"mtime\":"), "{l}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mtime: u64 = lines[0]
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('}')
        .parse()
        .unwrap();
    assert!(mtime.abs_diff(now) < 3600, "{mtime} vs {now}");

    assert_eq!(run(&["ls", s(&d.join("nope"))], b"").code, 2);
    assert_eq!(run(&["ls", s(&d.join("file.txt"))], b"").code, 4);
    let empty = d.join("sub");
    let o = run(&["ls", s(&empty)], b"");
    assert_eq!((o.code, o.stdout.len()), (0, 0));
}

#[test]
fn stat_outputs_one_object() {
    let d = tmpdir("stat");
    let f = d.join("f");
    std::fs::write(&f, b"abc").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(&["stat", s(&f)], b"");
    assert_eq!(o.code, 0);
    let want = format!(
        "{{\"name\":\"{}\",\"type\":\"file\",\"size\":3,\"mode\":384,\"mtime\":",
        s(&f)
    );
    assert!(
        o.out().starts_with(&want) && o.out().ends_with("}\n") && o.out().lines().count() == 1,
        "{}",
        o.out()
    );
    let o = run(&["stat", s(&d)], b"");
    assert!(o.out().contains("\"type\":\"dir\""), "{}", o.out());
    symlink("/nonexistent", d.join("dangling")).unwrap();
    let o = run(&["stat", s(&d.join("dangling"))], b"");
    assert_eq!(o.code, 0);
    assert!(o.out().contains("\"type\":\"symlink\""), "{}", o.out());
    let o = run(&["stat", s(&d.join("missing"))], b"");
    assert_eq!(o.code, 2);
    assert_eq!(o.stderr.lines().count(), 1, "{:?}", o.stderr);
}

#[test]
fn rm_files_and_dirs() {
    let d = tmpdir("rm");
    let f = d.join("f");
    std::fs::write(&f, b"x").unwrap();
    assert_eq!(run(&["rm", s(&f)], b"").code, 0);
    assert!(!f.exists());
    assert_eq!(run(&["rm", s(&f)], b"").code, 2);

    let tree = d.join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::write(tree.join("a/b/file"), b"x").unwrap();
    // a symlink inside pointing outside must not be followed
    let outside = d.join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"x").unwrap();
    symlink(&outside, tree.join("a/link")).unwrap();
    let o = run(&["rm", s(&tree)], b"");
    assert_eq!(o.code, 4, "{o:?}");
    assert!(tree.exists());
    assert_eq!(run(&["rm", s(&tree), "--recursive"], b"").code, 0);
    assert!(!tree.exists());
    assert!(outside.join("keep").exists());
    // empty dir without --recursive is fine
    assert_eq!(run(&["rm", s(&outside.join("keep"))], b"").code, 0);
    assert_eq!(run(&["rm", s(&outside)], b"").code, 0);
    for p in ["/", "//", "/.", "/..", "/tmp/.."] {
        assert_eq!(run(&["rm", p, "--recursive"], b"").code, 5, "{p}");
    }
    assert_eq!(run(&["rm", "x"], b"").code, 5);
}

#[test]
fn mkdir_modes_parents_and_errors() {
    let d = tmpdir("mkdir");
    let a = d.join("a");
    assert_eq!(run(&["mkdir", s(&a), "--mode", "0700"], b"").code, 0);
    assert!(a.is_dir());
    assert_eq!(mode_of(&a), 0o700);
    let o = run(&["mkdir", s(&a)], b"");
    assert_eq!(o.code, 4, "{o:?}");
    assert_eq!(run(&["mkdir", s(&d.join("x/y"))], b"").code, 2);
    let deep = d.join("x/y/z");
    assert_eq!(
        run(&["mkdir", s(&deep), "--parents", "--mode=751"], b"").code,
        0
    );
    assert_eq!(mode_of(&deep), 0o751);
    assert_eq!(run(&["mkdir", s(&deep), "--parents"], b"").code, 0);
    std::fs::write(d.join("file"), b"").unwrap();
    assert_eq!(
        run(&["mkdir", s(&d.join("file")), "--parents"], b"").code,
        4
    );
    assert_eq!(run(&["mkdir", s(&d.join("file/sub"))], b"").code, 4);
    assert_eq!(run(&["mkdir", s(&d.join("m")), "--mode", "9"], b"").code, 5);
}

#[test]
fn install_copies_itself() {
    let d = tmpdir("install");
    let dest = d.join("airlock-agent");
    let o = run(&["install", s(&dest)], b"");
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(mode_of(&dest), 0o755);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(bin()).unwrap());
    assert_eq!(names(&d), vec!["airlock-agent"]);
    // the copy works
    let out = std::process::Command::new(&dest)
        .arg("help")
        .output()
        .unwrap();
    assert!(out.status.success());
    // and installing again replaces it
    assert_eq!(run(&["install", s(&dest)], b"").code, 0);
    assert_eq!(run(&["install", s(&d.join("missing/x"))], b"").code, 2);
}
