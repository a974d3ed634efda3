//! Agent framing: the gateway's encoder against the agent's parser, in any chunking.

use super::*;

#[derive(Debug, PartialEq, Clone)]
pub(crate) enum Ev {
    Data(Vec<u8>),
    Close,
    Signal(i32),
    Resize(u16, u16),
}

/// Feeds `bytes` to the agent's parser in chunks of at most `chunk`; adjacent DATA events are
/// merged. Checks the parser consumes everything it is given.
pub(crate) fn parse_all(bytes: &[u8], chunk: usize) -> Vec<Ev> {
    let mut p = agent_frame::Parser::new();
    let mut out: Vec<Ev> = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        let mut input = c;
        let mut guard = 0usize;
        while let Some(ev) = p.next(&mut input) {
            guard += 1;
            assert!(
                guard <= c.len() + 1,
                "the agent's parser returns events without consuming input"
            );
            match ev {
                agent_frame::Event::Data(d) => {
                    assert!(!d.is_empty(), "empty DATA event");
                    if let Some(Ev::Data(prev)) = out.last_mut() {
                        prev.extend_from_slice(d);
                    } else {
                        out.push(Ev::Data(d.to_vec()));
                    }
                }
                agent_frame::Event::Close => out.push(Ev::Close),
                agent_frame::Event::Signal(s) => out.push(Ev::Signal(s)),
                agent_frame::Event::Resize { cols, rows } => out.push(Ev::Resize(cols, rows)),
            }
        }
        assert!(input.is_empty(), "the agent's parser left input unconsumed");
    }
    out
}

pub(crate) fn check_frames(rng: &mut Rng, stats: &mut Stats) -> Result<(), String> {
    stats.frames += 1;
    if rng.one_in(3) {
        // Random byte stream straight into the agent's parser: no panic, all input consumed.
        let n = rng.len(4096);
        let b: Vec<u8> = (0..n)
            .map(|_| {
                if rng.one_in(4) {
                    *rng.pick(&[0u8, 1, 2, 3, 4, 0xff])
                } else {
                    rng.next() as u8
                }
            })
            .collect();
        let chunk = rng.range(1, 64) as usize;
        let whole = parse_all(&b, b.len().max(1));
        ensure(parse_all(&b, chunk) == whole, || {
            "parse depends on chunking".into()
        })?;
        return Ok(());
    }
    // A random session, encoded by the gateway, parsed by the agent in random chunks.
    let mut wire: Vec<u8> = Vec::new();
    let mut want: Vec<Ev> = Vec::new();
    for _ in 0..rng.range(0, 8) {
        match rng.below(4) {
            0 => {
                let n = if rng.one_in(10) {
                    rng.range(60_000, 200_000) as usize
                } else {
                    rng.len(100)
                };
                let d: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                let frames = agent::data_frames(&d);
                ensure(
                    frames.len() == d.len().div_ceil(agent::MAX_DATA_FRAME),
                    || "frame count".into(),
                )?;
                for f in &frames {
                    ensure(
                        f.len() <= 5 + agent::MAX_DATA_FRAME && f[0] == agent::FRAME_DATA,
                        || "data frame".into(),
                    )?;
                    wire.extend_from_slice(f);
                }
                if !d.is_empty() {
                    if let Some(Ev::Data(prev)) = want.last_mut() {
                        prev.extend_from_slice(&d);
                    } else {
                        want.push(Ev::Data(d));
                    }
                }
            }
            1 => {
                wire.extend_from_slice(&agent::close_frame());
                want.push(Ev::Close);
            }
            2 => {
                let s = rng.next() as u32;
                wire.extend_from_slice(&agent::signal_frame(s));
                want.push(Ev::Signal(s as i32));
            }
            _ => {
                let (c, r) = (rng.next() as u16, rng.next() as u16);
                wire.extend_from_slice(&agent::resize_frame(c, r));
                want.push(Ev::Resize(c, r));
            }
        }
    }
    let chunk = *rng.pick(&[1usize, 2, 3, 4, 5, 6, 7, 64, 4096, 1 << 20]);
    let got = parse_all(&wire, chunk);
    ensure(got == want, || {
        format!(
            "frames do not round-trip (chunk {chunk}): {} events vs {}",
            got.len(),
            want.len()
        )
    })
}

/// Decodes `bytes` as request message number `kind` (and, for the last kind, feeds them to the
/// agent's frame parser) and runs that message's checks. Undecodable input is fine.
pub fn check_wire(kind: u8, bytes: &[u8], stats: &mut Stats) -> Result<(), String> {
    fn d<M: Message + Default>(b: &[u8]) -> Option<M> {
        M::decode(b).ok()
    }
    match kind % 14 {
        0 => d::<pb::ExecRequest>(bytes).map_or(Ok(()), |r| check_exec(&r, stats)),
        1 => d::<pb::RunCodeRequest>(bytes).map_or(Ok(()), |r| check_run_code(&r, stats)),
        2 => d::<pb::CreateSandboxRequest>(bytes).map_or(Ok(()), |r| check_create_req(&r, stats)),
        3 => match d::<pb::UploadRequest>(bytes) {
            Some(pb::UploadRequest {
                part: Some(pb::upload_request::Part::Header(h)),
            }) => check_file_request(
                "Upload",
                "header.",
                h.sandbox.as_ref(),
                &h.path,
                Some(h.mode),
                |path, mode| FileCommand::Put {
                    path,
                    mode,
                    parents: h.parents,
                },
                stats,
            ),
            _ => Ok(()),
        },
        4 => d::<pb::DownloadRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "Download",
                "",
                r.sandbox.as_ref(),
                &r.path,
                None,
                |path, _| FileCommand::Get { path },
                stats,
            )
        }),
        5 => d::<pb::ListDirRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "ListDir",
                "",
                r.sandbox.as_ref(),
                &r.path,
                None,
                |path, _| FileCommand::Ls { path },
                stats,
            )
        }),
        6 => d::<pb::StatRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "Stat",
                "",
                r.sandbox.as_ref(),
                &r.path,
                None,
                |path, _| FileCommand::Stat { path },
                stats,
            )
        }),
        7 => d::<pb::RemoveRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "Remove",
                "",
                r.sandbox.as_ref(),
                &r.path,
                None,
                |path, _| FileCommand::Rm {
                    path,
                    recursive: r.recursive,
                },
                stats,
            )
        }),
        8 => d::<pb::MakeDirRequest>(bytes).map_or(Ok(()), |r| {
            check_file_request(
                "MakeDir",
                "",
                r.sandbox.as_ref(),
                &r.path,
                Some(r.mode),
                |path, mode| FileCommand::Mkdir {
                    path,
                    parents: r.parents,
                    mode,
                },
                stats,
            )
        }),
        9 => d::<pb::ExecInput>(bytes).map_or(Ok(()), |r| check_exec_input(&r, stats)),
        10 => d::<pb::GetSandboxRequest>(bytes).map_or(Ok(()), |r| {
            check_sandbox_only("GetSandbox", r.sandbox.as_ref(), stats)
        }),
        11 => d::<pb::DeleteSandboxRequest>(bytes).map_or(Ok(()), |r| {
            check_sandbox_only("DeleteSandbox", r.sandbox.as_ref(), stats)
        }),
        12 => d::<pb::ExtendSandboxRequest>(bytes).map_or(Ok(()), |r| {
            check_sandbox_only("ExtendSandbox", r.sandbox.as_ref(), stats)
        }),
        _ => {
            let whole = parse_all(bytes, bytes.len().max(1));
            let chunk = 1 + bytes.first().map_or(0, |b| *b as usize % 7);
            ensure(parse_all(bytes, chunk) == whole, || {
                "parse depends on chunking".into()
            })
        }
    }
}
