//! The agent bundle end to end on this host: the operator's [`AgentBundle`] compresses a program,
//! the real airlock-boot (built here from agent/boot) unpacks it into place and execs it with the
//! arguments and environment it was given, as a sandbox container's start does. Failures exit 127
//! with a message naming what failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use airlock_operator::bundle::AgentBundle;

/// Builds airlock-boot once (its own workspace; flags in agent/boot/.cargo/config.toml, which cargo
/// reads from the working directory) and returns its bytes.
fn boot() -> &'static [u8] {
    static BOOT: OnceLock<Vec<u8>> = OnceLock::new();
    BOOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("boot");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "--release", "--target-dir"])
            .arg(&target)
            .current_dir(root.join("agent/boot"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(st.success(), "building airlock-boot failed");
        std::fs::read(target.join("release/airlock-boot")).unwrap()
    })
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("airlock-boot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lays the bundle out as the ConfigMap volume does and runs `boot agent.z DST ARGS...`.
fn start(dir: &Path, bundle: &AgentBundle, dst: &Path, args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let boot = dir.join("boot");
    std::fs::write(&boot, &bundle.boot).unwrap();
    std::fs::set_permissions(&boot, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::write(dir.join("agent.z"), &bundle.agent).unwrap();
    Command::new(&boot)
        .arg(dir.join("agent.z"))
        .arg(dst)
        .args(args)
        .env("AIRLOCK_TEST_VAR", "passed through")
        .output()
        .unwrap()
}

#[test]
fn boot_unpacks_the_program_and_execs_it_with_args_and_env() {
    let d = Dir::new("ok");
    let env = std::fs::read("/usr/bin/env").unwrap();
    let bundle = AgentBundle::new(boot().to_vec(), &env).unwrap();
    let dst = d.0.join("bin-env");
    let out = start(&d.0, &bundle, &dst, &["-u", "PATH"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout
            .lines()
            .any(|l| l == "AIRLOCK_TEST_VAR=passed through"),
        "{stdout}"
    );
    assert!(
        !stdout.lines().any(|l| l.starts_with("PATH=")),
        "the arguments reach the program: {stdout}"
    );
    assert_eq!(std::fs::read(&dst).unwrap(), env, "unpacked byte for byte");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777,
        0o555
    );
    assert!(
        !d.0.join("bin-env.tmp").exists(),
        "the temporary name is renamed away"
    );
    // Starting again (a restarted container) replaces the file.
    let out = start(&d.0, &bundle, &dst, &["-u", "PATH"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn boot_failures_exit_127_and_say_what_failed() {
    let d = Dir::new("bad");
    let env = std::fs::read("/usr/bin/env").unwrap();
    let good = AgentBundle::new(boot().to_vec(), &env).unwrap();

    let out = start(&d.0, &good, Path::new("/nonexistent/dir/agent"), &["x"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "airlock-boot: cannot create /nonexistent/dir/agent.tmp: errno 2\n"
    );

    let mut truncated = good.clone();
    truncated.agent.truncate(truncated.agent.len() / 2);
    let out = start(&d.0, &truncated, &d.0.join("agent"), &["x"]);
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("airlock-boot: not a complete zlib stream"),
        "{err}"
    );
    assert!(!d.0.join("agent").exists());

    let out = Command::new(d.0.join("boot"))
        .arg("only-one-arg")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: airlock-boot SRC DST ARGS..."));
}
