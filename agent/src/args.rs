//! Command line parsing (no external crates). Arguments are OsStrings: paths may be any bytes.
//! (Just over 600 lines: the parser is under 400; the rest is its tests, one per subcommand.)

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

pub const USAGE: &str = "usage:
  airlock-agent install DEST
  airlock-agent init [--listen ADDR:PORT [--token-file PATH]] [--fence-probe IP:PORT] [-- CMD ARGS...]
    (--listen: also serve the gateway over TCP; token from --token-file or AIRLOCK_AGENT_TOKEN;
     --fence-probe: start nothing and serve nothing while IP:PORT answers, see fence.rs)
  airlock-agent exec [--cwd DIR] [--env K=V]... [--timeout-ms N] [--tty [--size COLSxROWS]] -- ARGV...
  airlock-agent put PATH [--mode OCTAL] [--parents]
  airlock-agent get PATH
  airlock-agent ls PATH
  airlock-agent stat PATH
  airlock-agent rm PATH [--recursive]
  airlock-agent mkdir PATH [--parents] [--mode OCTAL]
  airlock-agent mv PATH DEST
frames on stdin (exec, put): type u8, length u32 BE, payload;
  0x01 DATA, 0x02 CLOSE, 0x03 SIGNAL (i32 BE), 0x04 RESIZE (cols u16 BE, rows u16 BE)";

#[derive(Debug, PartialEq, Eq)]
pub struct ExecOpts {
    pub cwd: Option<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// None (or 0 on the command line) = no timeout.
    pub timeout_ms: Option<u64>,
    pub tty: bool,
    /// Initial terminal size (cols, rows) with `--tty`, set before the command starts.
    pub size: Option<(u16, u16)>,
    pub argv: Vec<OsString>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Cmd {
    Install {
        dest: OsString,
    },
    Init {
        argv: Vec<OsString>,
        listen: Option<OsString>,
        token_file: Option<OsString>,
        fence_probe: Option<std::net::SocketAddr>,
    },
    /// Internal: the supervisor of one daemon process (control socket fd).
    Shim {
        fd: OsString,
    },
    Exec(ExecOpts),
    Put {
        path: OsString,
        mode: Option<u32>,
        parents: bool,
    },
    Get {
        path: OsString,
    },
    Ls {
        path: OsString,
    },
    Stat {
        path: OsString,
    },
    Rm {
        path: OsString,
        recursive: bool,
    },
    Mv {
        path: OsString,
        dest: OsString,
    },
    Mkdir {
        path: OsString,
        parents: bool,
        mode: Option<u32>,
    },
    Help,
}

/// One token of a subcommand's arguments.
enum Tok {
    /// `--name` or `--name=value` (value inline).
    Flag(String, Option<OsString>),
    Pos(OsString),
    /// Everything after `--`.
    Rest(Vec<OsString>),
}

fn tokens(args: &[OsString]) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_bytes();
        if a == b"--" {
            out.push(Tok::Rest(args[i + 1..].to_vec()));
            break;
        }
        if a.starts_with(b"--") {
            let body = &a[2..];
            let (name, val) = match body.iter().position(|&b| b == b'=') {
                Some(p) => (&body[..p], Some(OsString::from_vec(body[p + 1..].to_vec()))),
                None => (body, None),
            };
            let name = std::str::from_utf8(name).map_err(|_| "invalid flag".to_string())?;
            out.push(Tok::Flag(name.to_string(), val));
        } else if a.len() > 1 && a[0] == b'-' {
            return Err(format!(
                "unknown flag {}",
                OsStr::from_bytes(a).to_string_lossy()
            ));
        } else {
            out.push(Tok::Pos(args[i].clone()));
        }
        i += 1;
    }
    Ok(out)
}

/// Takes the value of flag `name`: inline (`--x=v`) or the next positional token.
fn value(
    name: &str,
    inline: Option<OsString>,
    it: &mut std::iter::Peekable<std::vec::IntoIter<Tok>>,
) -> Result<OsString, String> {
    if let Some(v) = inline {
        return Ok(v);
    }
    match it.next() {
        Some(Tok::Pos(v)) => Ok(v),
        _ => Err(format!("--{name} needs a value")),
    }
}

fn no_value(name: &str, inline: &Option<OsString>) -> Result<(), String> {
    if inline.is_some() {
        Err(format!("--{name} takes no value"))
    } else {
        Ok(())
    }
}

pub fn parse_mode(v: &OsStr) -> Result<u32, String> {
    let s = v.to_str().ok_or("invalid mode")?;
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!("invalid octal mode {s:?}"));
    }
    let m = u32::from_str_radix(digits, 8).map_err(|_| format!("invalid octal mode {s:?}"))?;
    if m > 0o7777 {
        return Err(format!("mode {s:?} out of range (max 7777)"));
    }
    Ok(m)
}

fn parse_u64(name: &str, v: &OsStr) -> Result<u64, String> {
    v.to_str()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| format!("--{name}: invalid number {:?}", v.to_string_lossy()))
}

fn parse_env(v: OsString) -> Result<(OsString, OsString), String> {
    let b = v.as_bytes();
    match b.iter().position(|&c| c == b'=') {
        Some(p) if p > 0 => Ok((
            OsString::from_vec(b[..p].to_vec()),
            OsString::from_vec(b[p + 1..].to_vec()),
        )),
        _ => Err(format!(
            "--env: expected K=V, got {:?}",
            v.to_string_lossy()
        )),
    }
}

/// Parses a file command: exactly one positional PATH plus the allowed flags.
struct FileArgs {
    path: OsString,
    mode: Option<u32>,
    parents: bool,
    recursive: bool,
}

fn file_args(args: &[OsString], allowed: &[&str]) -> Result<FileArgs, String> {
    let mut fa = FileArgs {
        path: OsString::new(),
        mode: None,
        parents: false,
        recursive: false,
    };
    let mut path: Option<OsString> = None;
    let mut it = tokens(args)?.into_iter().peekable();
    let mut set_path = |p: OsString| -> Result<(), String> {
        if path.replace(p).is_some() {
            Err("too many arguments".into())
        } else {
            Ok(())
        }
    };
    while let Some(t) = it.next() {
        match t {
            Tok::Pos(p) => set_path(p)?,
            Tok::Rest(rest) => {
                for p in rest {
                    set_path(p)?;
                }
            }
            Tok::Flag(name, inline) => {
                if !allowed.contains(&name.as_str()) {
                    return Err(format!("unknown flag --{name}"));
                }
                match name.as_str() {
                    "mode" => fa.mode = Some(parse_mode(&value(&name, inline, &mut it)?)?),
                    "parents" => {
                        no_value(&name, &inline)?;
                        fa.parents = true
                    }
                    "recursive" => {
                        no_value(&name, &inline)?;
                        fa.recursive = true
                    }
                    _ => return Err(format!("unknown flag --{name}")),
                }
            }
        }
    }
    fa.path = path.ok_or("missing PATH")?;
    Ok(fa)
}

/// `COLSxROWS`, both 1..=65535.
fn parse_size(v: &OsString) -> Option<(u16, u16)> {
    let s = v.to_str()?;
    let (c, r) = s.split_once('x')?;
    let (c, r): (u16, u16) = (c.parse().ok()?, r.parse().ok()?);
    (c > 0 && r > 0).then_some((c, r))
}

fn exec_args(args: &[OsString]) -> Result<ExecOpts, String> {
    let mut o = ExecOpts {
        cwd: None,
        env: Vec::new(),
        timeout_ms: None,
        tty: false,
        size: None,
        argv: Vec::new(),
    };
    let mut it = tokens(args)?.into_iter().peekable();
    while let Some(t) = it.next() {
        match t {
            Tok::Rest(rest) => {
                o.argv = rest;
                break;
            }
            Tok::Pos(_) => return Err("ARGV must follow --".into()),
            Tok::Flag(name, inline) => match name.as_str() {
                "cwd" => o.cwd = Some(value(&name, inline, &mut it)?),
                "env" => o.env.push(parse_env(value(&name, inline, &mut it)?)?),
                "timeout-ms" => {
                    let n = parse_u64(&name, &value(&name, inline, &mut it)?)?;
                    o.timeout_ms = if n == 0 { None } else { Some(n) };
                }
                "tty" => {
                    no_value(&name, &inline)?;
                    o.tty = true
                }
                "size" => {
                    let v = value(&name, inline, &mut it)?;
                    o.size = Some(parse_size(&v).ok_or_else(|| {
                        format!("--size: want COLSxROWS, got {}", v.to_string_lossy())
                    })?);
                }
                _ => return Err(format!("unknown flag --{name}")),
            },
        }
    }
    if o.size.is_some() && !o.tty {
        return Err("--size needs --tty".into());
    }
    if o.argv.is_empty() {
        return Err("missing ARGV after --".into());
    }
    if o.argv[0].is_empty() {
        return Err("empty command".into());
    }
    Ok(o)
}

fn init_args(args: &[OsString]) -> Result<Cmd, String> {
    let (mut listen, mut token_file, mut fence_probe, mut argv) = (None, None, None, Vec::new());
    let mut it = tokens(args)?.into_iter().peekable();
    while let Some(t) = it.next() {
        match t {
            Tok::Rest(rest) => {
                argv = rest;
                break;
            }
            Tok::Pos(_) => return Err("init: expected -- before the command".into()),
            Tok::Flag(name, inline) => match name.as_str() {
                "listen" => listen = Some(value(&name, inline, &mut it)?),
                "token-file" => token_file = Some(value(&name, inline, &mut it)?),
                "fence-probe" => {
                    let v = value(&name, inline, &mut it)?;
                    // An address, never a name: resolving would pull the resolver into the binary.
                    fence_probe = Some(v.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                        format!("--fence-probe: want IP:PORT, got {}", v.to_string_lossy())
                    })?);
                }
                _ => return Err(format!("unknown flag --{name}")),
            },
        }
    }
    if token_file.is_some() && listen.is_none() {
        return Err("--token-file needs --listen".into());
    }
    Ok(Cmd::Init {
        argv,
        listen,
        token_file,
        fence_probe,
    })
}

/// `args` excludes the program name.
pub fn parse(args: &[OsString]) -> Result<Cmd, String> {
    let Some(sub) = args.first() else {
        return Err("missing subcommand".into());
    };
    let rest = &args[1..];
    let sub = sub.to_str().unwrap_or("");
    Ok(match sub {
        "install" => {
            if rest.len() != 1 || rest[0].is_empty() || rest[0].as_bytes().starts_with(b"-") {
                return Err("install needs exactly one DEST".into());
            }
            Cmd::Install {
                dest: rest[0].clone(),
            }
        }
        "init" => init_args(rest)?,
        "shim" => match rest {
            [fd] => Cmd::Shim { fd: fd.clone() },
            _ => return Err("shim needs exactly one FD".into()),
        },
        "exec" => Cmd::Exec(exec_args(rest)?),
        "put" => {
            let f = file_args(rest, &["mode", "parents"])?;
            Cmd::Put {
                path: f.path,
                mode: f.mode,
                parents: f.parents,
            }
        }
        "get" => Cmd::Get {
            path: file_args(rest, &[])?.path,
        },
        "ls" => Cmd::Ls {
            path: file_args(rest, &[])?.path,
        },
        "stat" => Cmd::Stat {
            path: file_args(rest, &[])?.path,
        },
        "rm" => {
            let f = file_args(rest, &["recursive"])?;
            Cmd::Rm {
                path: f.path,
                recursive: f.recursive,
            }
        }
        "mkdir" => {
            let f = file_args(rest, &["mode", "parents"])?;
            Cmd::Mkdir {
                path: f.path,
                parents: f.parents,
                mode: f.mode,
            }
        }
        "mv" => {
            let mut paths = Vec::new();
            for t in tokens(rest)? {
                match t {
                    Tok::Pos(p) => paths.push(p),
                    Tok::Rest(r) => paths.extend(r),
                    Tok::Flag(name, _) => return Err(format!("unknown flag --{name}")),
                }
            }
            match <[OsString; 2]>::try_from(paths) {
                Ok([path, dest]) => Cmd::Mv { path, dest },
                Err(_) => return Err("mv needs exactly PATH and DEST".into()),
            }
        }
        "help" | "--help" | "-h" => Cmd::Help,
        _ => {
            return Err(format!(
                "unknown subcommand {:?}",
                args[0].to_string_lossy()
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cmd, String> {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&v)
    }
    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn size_needs_tty_and_parses() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        match parse(&a(&["exec", "--tty", "--size", "120x40", "--", "sh"])) {
            Ok(Cmd::Exec(o)) => assert_eq!(o.size, Some((120, 40))),
            other => panic!("{other:?}"),
        }
        assert!(parse(&a(&["exec", "--size", "120x40", "--", "sh"])).is_err());
        assert!(parse(&a(&["exec", "--tty", "--size", "0x40", "--", "sh"])).is_err());
        assert!(parse(&a(&["exec", "--tty", "--size", "big", "--", "sh"])).is_err());
    }

    #[test]
    fn exec_flags() {
        let c = p(&[
            "exec",
            "--cwd",
            "/tmp",
            "--env",
            "A=1",
            "--env=B=x=y",
            "--timeout-ms",
            "300",
            "--tty",
            "--",
            "ls",
            "-l",
            "--",
            "x",
        ])
        .unwrap();
        assert_eq!(
            c,
            Cmd::Exec(ExecOpts {
                cwd: Some("/tmp".into()),
                env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
                timeout_ms: Some(300),
                tty: true,
                size: None,
                argv: os(&["ls", "-l", "--", "x"]),
            })
        );
        let c = p(&["exec", "--timeout-ms=0", "--", "true"]).unwrap();
        assert!(matches!(
            c,
            Cmd::Exec(ExecOpts {
                timeout_ms: None,
                tty: false,
                size: None,
                ..
            })
        ));
    }

    #[test]
    fn exec_errors() {
        for bad in [
            &["exec"][..],
            &["exec", "--"],
            &["exec", "ls"],
            &["exec", "--env", "NOEQ", "--", "x"],
            &["exec", "--env", "=v", "--", "x"],
            &["exec", "--timeout-ms", "-1", "--", "x"],
            &["exec", "--timeout-ms", "abc", "--", "x"],
            &["exec", "--timeout-ms"],
            &["exec", "--cwd"],
            &["exec", "--tty=yes", "--", "x"],
            &["exec", "--bogus", "--", "x"],
            &["exec", "-x", "--", "x"],
            &["exec", "--", ""],
        ] {
            assert!(p(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn file_commands() {
        assert_eq!(
            p(&["put", "/a", "--mode", "0755", "--parents"]).unwrap(),
            Cmd::Put {
                path: "/a".into(),
                mode: Some(0o755),
                parents: true
            }
        );
        assert_eq!(
            p(&["put", "--mode=600", "/a"]).unwrap(),
            Cmd::Put {
                path: "/a".into(),
                mode: Some(0o600),
                parents: false
            }
        );
        assert_eq!(p(&["get", "/x"]).unwrap(), Cmd::Get { path: "/x".into() });
        assert_eq!(
            p(&["ls", "--", "/x"]).unwrap(),
            Cmd::Ls { path: "/x".into() }
        );
        assert_eq!(
            p(&["stat", "rel"]).unwrap(),
            Cmd::Stat { path: "rel".into() }
        );
        assert_eq!(
            p(&["mv", "/a", "--", "/b"]).unwrap(),
            Cmd::Mv {
                path: "/a".into(),
                dest: "/b".into()
            }
        );
        assert!(p(&["mv", "/a"]).is_err());
        assert!(p(&["mv", "/a", "/b", "/c"]).is_err());
        assert!(p(&["mv", "/a", "/b", "--force"]).is_err());
        assert_eq!(
            p(&["rm", "/x", "--recursive"]).unwrap(),
            Cmd::Rm {
                path: "/x".into(),
                recursive: true
            }
        );
        assert_eq!(
            p(&["mkdir", "/x", "--parents", "--mode", "700"]).unwrap(),
            Cmd::Mkdir {
                path: "/x".into(),
                parents: true,
                mode: Some(0o700)
            }
        );
        for bad in [
            &["get"][..],
            &["get", "/a", "/b"],
            &["get", "/a", "--recursive"],
            &["rm", "/a", "--parents"],
            &["put", "/a", "--mode"],
            &["put", "/a", "--mode", "999"],
            &["put", "/a", "--mode", "17777"],
            &["put", "/a", "--mode", ""],
            &["put", "/a", "--parents=1"],
            &["mkdir", "/a", "--mode", "rwx"],
        ] {
            assert!(p(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn other_commands() {
        let init = |argv: &[&str]| Cmd::Init {
            argv: os(argv),
            listen: None,
            token_file: None,
            fence_probe: None,
        };
        assert_eq!(p(&["init"]).unwrap(), init(&[]));
        assert_eq!(p(&["init", "--"]).unwrap(), init(&[]));
        assert_eq!(
            p(&["init", "--", "sh", "-c", "x"]).unwrap(),
            init(&["sh", "-c", "x"])
        );
        assert!(p(&["init", "sh"]).is_err());
        assert_eq!(
            p(&[
                "init",
                "--listen",
                "0.0.0.0:7070",
                "--token-file=/t",
                "--",
                "x"
            ])
            .unwrap(),
            Cmd::Init {
                argv: os(&["x"]),
                listen: Some("0.0.0.0:7070".into()),
                token_file: Some("/t".into()),
                fence_probe: None,
            }
        );
        assert_eq!(
            p(&["init", "--fence-probe=10.244.0.5:8080", "--", "x"]).unwrap(),
            Cmd::Init {
                argv: os(&["x"]),
                listen: None,
                token_file: None,
                fence_probe: Some("10.244.0.5:8080".parse().unwrap()),
            }
        );
        let e = p(&["init", "--fence-probe", "operator:8080"]).unwrap_err();
        assert_eq!(e, "--fence-probe: want IP:PORT, got operator:8080");
        assert!(p(&["init", "--token-file", "/t"]).is_err());
        assert!(p(&["init", "--listen"]).is_err());
        assert_eq!(p(&["shim", "3"]).unwrap(), Cmd::Shim { fd: "3".into() });
        assert!(p(&["shim"]).is_err());
        assert_eq!(
            p(&["install", "/d/x"]).unwrap(),
            Cmd::Install {
                dest: "/d/x".into()
            }
        );
        assert!(p(&["install"]).is_err());
        assert!(p(&["install", "a", "b"]).is_err());
        assert!(p(&[]).is_err());
        assert!(p(&["frobnicate"]).is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode(OsStr::new("0o644")), Ok(0o644));
        assert_eq!(parse_mode(OsStr::new("4755")), Ok(0o4755));
        assert_eq!(parse_mode(OsStr::new("0")), Ok(0));
        assert!(parse_mode(OsStr::new("8")).is_err());
        assert!(parse_mode(OsStr::new("+x")).is_err());
    }

    #[test]
    fn non_utf8_paths_pass_through() {
        let path = OsString::from_vec(b"/tmp/\xff\xfe".to_vec());
        let c = parse(&[OsString::from("get"), path.clone()]).unwrap();
        assert_eq!(c, Cmd::Get { path });
    }
}
