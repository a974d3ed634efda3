//! airlock-agent: the static helper put in every Airlock sandbox container.
//! PID 1 init, process-group exec supervisor, file operations, and (init --listen) the TCP
//! service the gateway drives processes through (see docs/DESIGN-NOTES.md,
//! "Agent command line"). Depends on std and libc only.

mod args;
mod daemon;
mod exec;
mod files;
mod frame;
mod fence;
mod init;
mod json;
mod sys;

use std::ffi::OsString;

use args::Cmd;

fn main() {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(run(argv));
}

fn run(argv: Vec<OsString>) -> i32 {
    let cmd = match args::parse(&argv) {
        Ok(c) => c,
        Err(e) => {
            sys::msg(&e);
            let _ = sys::write_all(2, args::USAGE.as_bytes());
            let _ = sys::write_all(2, b"\n");
            return files::USAGE;
        }
    };
    let res = match cmd {
        Cmd::Help => {
            let _ = sys::write_all(1, args::USAGE.as_bytes());
            let _ = sys::write_all(1, b"\n");
            Ok(())
        }
        Cmd::Exec(o) => return exec::run(o),
        Cmd::Init {
            argv,
            listen: None,
            fence_probe,
            ..
        } => return init::run(argv, fence_probe),
        Cmd::Init {
            argv,
            listen: Some(listen),
            token_file,
            fence_probe,
        } => {
            return daemon::run(daemon::Opts {
                listen: listen.to_string_lossy().into_owned(),
                token_file,
                argv,
                fence_probe,
            });
        }
        Cmd::Shim { fd } => return daemon::shim::run(&fd),
        Cmd::Install { dest } => files::install(&dest),
        Cmd::Put {
            path,
            mode,
            parents,
        } => files::put(&path, mode, parents),
        Cmd::Get { path } => files::get(&path),
        Cmd::Ls { path } => files::ls(&path),
        Cmd::Stat { path } => files::stat(&path),
        Cmd::Rm { path, recursive } => files::rm(&path, recursive),
        Cmd::Mv { path, dest } => files::mv(&path, &dest),
        Cmd::Mkdir {
            path,
            parents,
            mode,
        } => files::mkdir(&path, parents, mode),
    };
    match res {
        Ok(()) => files::OK,
        Err(f) => {
            sys::msg(&f.msg);
            f.code
        }
    }
}
