//! How the exec benchmarks drive calls: all at once, N concurrently, through the gateway client,
//! and `pods/exec` straight from this process ([`Direct`]).

use super::*;

/// Spawns `n` copies of `f`, releases them at the same moment, and awaits them all; returns each
/// result (a panicked task as an error) and the makespan.
pub(crate) async fn all_at_once<T, F, Fut>(n: usize, f: F) -> (Vec<Result<T>>, Duration)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let fut = f(i);
            let b = barrier.clone();
            tokio::spawn(async move {
                b.wait().await;
                fut.await
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.map_err(anyhow::Error::from).and_then(|r| r));
    }
    (out, start.elapsed())
}

/// Like [`concurrent`], for calls that report (time to connected, total) in ms.
pub(crate) async fn concurrent2<F, Fut>(n: usize, f: F) -> (Metric, Metric, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(f64, f64)>> + Send + 'static,
{
    let (results, elapsed) = all_at_once(n, f).await;
    let (mut first, mut total) = (Metric::new("", "", "ms"), Metric::new("", "", "ms"));
    for r in results {
        match r {
            Ok((a, b)) => {
                first.values.push(a);
                total.values.push(b);
            }
            Err(e) => {
                push(&mut total, Err(e));
                first.errors += 1;
            }
        }
    }
    (first, total, elapsed)
}

/// Runs `n` copies of `f` at once; returns their latencies (errors counted) and the makespan.
pub(crate) async fn concurrent<F, Fut>(n: usize, f: F) -> (Metric, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<f64>> + Send + 'static,
{
    let (results, elapsed) = all_at_once(n, f).await;
    let mut m = Metric::new("", "", "ms");
    for r in results {
        push(&mut m, r);
    }
    (m, elapsed)
}

pub(crate) async fn gw_true(c: &AirlockClient, ns: &str, name: &str) -> Result<f64> {
    let t = Instant::now();
    let out = c
        .exec_collect(AirlockClient::argv(ns, name, ["true"]))
        .await?;
    if out.exit_code != 0 {
        bail!(
            "true exited {}: {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(ms(t.elapsed()))
}

pub(crate) struct StreamResult {
    /// Until the gateway's `started` event (its pods/exec is established).
    pub(crate) started: Duration,
    pub(crate) ttfb: Duration,
    pub(crate) total: Duration,
}

/// Runs argv through the gateway, counting stdout; checks the exit code and, when given, the
/// number of bytes.
pub(crate) async fn gw_stream(
    c: &AirlockClient,
    ns: &str,
    name: &str,
    argv: &[&str],
    expect: Option<u64>,
) -> Result<StreamResult> {
    use pb::exec_event::Event;
    let t = Instant::now();
    let mut s = c
        .exec(AirlockClient::argv(ns, name, argv.iter().copied()))
        .await?;
    let (mut first, mut n, mut exit, mut started) = (None, 0u64, None, None);
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(Event::Stdout(b)) => {
                if first.is_none() && !b.is_empty() {
                    first = Some(t.elapsed());
                }
                n += b.len() as u64;
            }
            Some(Event::Exited(e)) => exit = Some(e.exit_code),
            Some(Event::Started(_)) => started = started.or(Some(t.elapsed())),
            _ => {}
        }
    }
    let total = t.elapsed();
    match exit {
        Some(0) => {}
        other => bail!("{argv:?}: exit {other:?}"),
    }
    if let Some(e) = expect
        && e != n
    {
        bail!("{argv:?}: {n} bytes, expected {e}");
    }
    Ok(StreamResult {
        started: started.unwrap_or(total),
        ttfb: first.unwrap_or(total),
        total,
    })
}

/// `pods/exec` straight from this process into the sandbox container.
#[derive(Clone)]
pub(crate) struct Direct {
    pub(crate) pods: Api<Pod>,
    pub(crate) pod: String,
}

pub(crate) struct DirectResult {
    /// Until the websocket is upgraded (the API server accepted the exec).
    pub(crate) connected: Duration,
    pub(crate) ttfb: Option<Duration>,
    pub(crate) total: Duration,
    pub(crate) bytes: u64,
}

impl Direct {
    /// Runs argv; with `agent_stdin`, attaches stdin and sends the agent's CLOSE frame (what the
    /// gateway does for a non-interactive call).
    pub(crate) async fn run(&self, argv: &[&str], agent_stdin: bool) -> Result<DirectResult> {
        self.run_inner(argv, agent_stdin, None).await
    }

    /// [`Direct::run`] without stdin, counting the call in `established` once its websocket is up.
    pub(crate) async fn run_counting(
        &self,
        argv: &[&str],
        established: Option<&std::sync::atomic::AtomicUsize>,
    ) -> Result<DirectResult> {
        self.run_inner(argv, false, established).await
    }

    pub(crate) async fn run_inner(
        &self,
        argv: &[&str],
        agent_stdin: bool,
        established: Option<&std::sync::atomic::AtomicUsize>,
    ) -> Result<DirectResult> {
        let t = Instant::now();
        let mut ap = AttachParams::default()
            .container(airlock_crds::labels::MAIN_CONTAINER)
            .stdout(true)
            .stderr(true)
            .stdin(agent_stdin);
        ap.max_stdin_buf_size = Some(PIPE_BUF);
        ap.max_stdout_buf_size = Some(PIPE_BUF);
        ap.max_stderr_buf_size = Some(PIPE_BUF);
        let mut p = self
            .pods
            .exec(&self.pod, argv.iter().map(|s| s.to_string()), &ap)
            .await?;
        let connected = t.elapsed();
        if let Some(e) = established {
            e.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if agent_stdin {
            let mut w = p.stdin().ok_or_else(|| anyhow!("no stdin"))?;
            w.write_all(&airlock_exec_gateway::agent::close_frame())
                .await?;
            w.flush().await?;
            drop(w);
        }
        let mut out = p.stdout().ok_or_else(|| anyhow!("no stdout"))?;
        let mut err = p.stderr().ok_or_else(|| anyhow!("no stderr"))?;
        let status = p.take_status().ok_or_else(|| anyhow!("no status"))?;
        let read_out = async {
            let mut buf = vec![0u8; PIPE_BUF];
            let (mut first, mut n) = (None, 0u64);
            loop {
                let k = out.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                if first.is_none() {
                    first = Some(t.elapsed());
                }
                n += k as u64;
            }
            Ok::<_, std::io::Error>((first, n))
        };
        let mut e = Vec::new();
        let (o, er) = tokio::join!(read_out, err.read_to_end(&mut e));
        let (ttfb, bytes) = o?;
        er?;
        let st = status.await;
        let code = airlock_e2e::exit_code(st.as_ref());
        let _ = p.join().await;
        let total = t.elapsed();
        if code != 0 {
            bail!("{argv:?} exited {code}: {}", String::from_utf8_lossy(&e));
        }
        Ok(DirectResult {
            connected,
            ttfb,
            total,
            bytes,
        })
    }
}
