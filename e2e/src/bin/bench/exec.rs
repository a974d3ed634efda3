//! Exec latency through the gateway against `pods/exec` straight from here, into the same pod:
//! round trip of `true`, time to first byte, stdout throughput; files.

use super::*;

impl Bench {
    pub(crate) async fn phase_exec(&self, ns: &str) -> Result<()> {
        // The gateway, in-process, with a Kubernetes client of its own (as a separate process
        // would have).
        let gw_kube = Client::try_default().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let mut config = airlock_exec_gateway::Config::new(AuthMode::None)
            .with_client(gw_kube)
            .with_default_namespace(ns);
        config.shutdown_grace = Duration::from_secs(1);
        // The direct path to the agent, as the installed gateway (the release's key); without
        // the key, `pods/exec` (noted in the report).
        config.agent_key = airlock_e2e::release::agent_key(&self.kube).await.map(std::sync::Arc::new);
        if config.agent_key.is_some() {
            config.agent_transport = airlock_exec_gateway::agent::Transport::Direct;
        } else {
            self.note("the release has no agent key (agentDirect off): the in-process gateway used pods/exec");
        }
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            airlock_exec_gateway::serve(config, listener, async move {
                let _ = stop_rx.await;
            })
            .await
        });
        let gw = AirlockClient::connect(&addr, None).await?;
        let direct_kube = Client::try_default().await?;
        let incluster = match self.incluster_gateway(ns).await {
            Ok(Some(x)) => Some(x),
            Ok(None) => {
                self.note("no in-cluster gateway running in airlock-system: only the in-process gateway was measured");
                None
            }
            Err(e) => {
                self.note(format!("in-cluster gateway not measured: {e:#}"));
                None
            }
        };
        let res = async {
            self.exec_latency(ns, &gw, &direct_kube, incluster.as_ref())
                .await?;
            self.exec_concurrency(ns, &gw, &direct_kube, incluster.as_ref())
                .await
        }
        .await;
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        res
    }

    /// Creates a Sandbox for exec measurements and waits until it is Ready; returns its pod.
    pub(crate) async fn exec_sandbox(&self, ns: &str, name: &str, rt: &str) -> Result<Direct> {
        self.exec_sandbox_with(ns, name, rt, &self.opts.exec_memory).await
    }

    /// [`Self::exec_sandbox`] with `memory` instead of the exec phase's.
    pub(crate) async fn exec_sandbox_with(&self, ns: &str, name: &str, rt: &str, memory: &str) -> Result<Direct> {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        api.create(
            &Self::pp(),
            &self.sandbox(name, "exec", rt, &self.opts.exec_cpu, memory, 3600)?,
        )
        .await?;
        self.rec
            .wait(&key("sbx", ns, name), "ready", Duration::from_secs(180))
            .await?;
        let pod = api
            .get(name)
            .await?
            .status
            .and_then(|s| s.pod_name)
            .unwrap_or_else(|| name.to_string());
        Ok(Direct {
            pods: Api::namespaced(Client::try_default().await?, ns),
            pod,
        })
    }

    pub(crate) async fn delete_sandbox_and_wait(&self, ns: &str, name: &str) {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let _ = api.delete(name, &DeleteParams::background()).await;
        let _ = self
            .rec
            .wait(&key("pod", ns, name), "gone", Duration::from_secs(90))
            .await;
    }

    /// Round trip, first byte and throughput in one gVisor Sandbox; the runtime's own scaling of
    /// concurrent execs.
    pub(crate) async fn exec_latency(
        &self,
        ns: &str,
        gw: &AirlockClient,
        _kube: &Client,
        incluster: Option<&(AirlockClient, String)>,
    ) -> Result<()> {
        let o = &self.opts;
        let name = "exec";
        let direct = self.exec_sandbox(ns, name, GVISOR).await?;
        self.progress("exec sandbox (gVisor) ready");
        // Warm up: connections, caches, the sandbox's first processes.
        for _ in 0..3 {
            gw_true(gw, ns, name).await?;
            direct.run(&["true"], false).await?;
            direct
                .run(&[AGENT_PATH, "exec", "--", "true"], true)
                .await?;
            if let Some((c, _)) = incluster {
                let _ = gw_true(c, ns, name).await;
            }
        }
        let sbx_api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let mut m_gw = Metric::new(
            "exec.rtt.gateway",
            "`true` through the gateway (in-process, direct path to the agent)",
            "ms",
        );
        let mut m_direct = Metric::new(
            "exec.rtt.direct",
            "`true` through pods/exec, straight (kubectl exec equivalent)",
            "ms",
        );
        let mut m_agent = Metric::new(
            "exec.rtt.direct_agent",
            "`airlock-agent exec -- true` through pods/exec (what the gateway runs)",
            "ms",
        );
        let mut m_inc = Metric::new(
            "exec.rtt.gateway_incluster",
            "`true` through the in-cluster gateway (pod IP, kubernetes auth)",
            "ms",
        );
        let mut m_get = Metric::new(
            "exec.get_sandbox",
            "GET Sandbox (the gateway's per-call readiness check)",
            "ms",
        );
        for _ in 0..o.exec_runs {
            push(&mut m_gw, gw_true(gw, ns, name).await);
            push(
                &mut m_direct,
                direct.run(&["true"], false).await.map(|r| ms(r.total)),
            );
            push(
                &mut m_agent,
                direct
                    .run(&[AGENT_PATH, "exec", "--", "true"], true)
                    .await
                    .map(|r| ms(r.total)),
            );
            if let Some((c, _)) = incluster {
                push(&mut m_inc, gw_true(c, ns, name).await);
            }
            let t = Instant::now();
            push(
                &mut m_get,
                sbx_api
                    .get(name)
                    .await
                    .map(|_| ms(t.elapsed()))
                    .map_err(anyhow::Error::from),
            );
        }
        self.progress("exec round trips done");
        let mut t_gw = Metric::new(
            "exec.ttfb.gateway",
            "`echo x`: call -> first stdout byte, gateway",
            "ms",
        );
        let mut t_direct = Metric::new(
            "exec.ttfb.direct",
            "`echo x`: call -> first stdout byte, pods/exec",
            "ms",
        );
        for _ in 0..o.ttfb_runs {
            push(
                &mut t_gw,
                gw_stream(gw, ns, name, &["echo", "x"], Some(2))
                    .await
                    .map(|s| ms(s.ttfb)),
            );
            push(
                &mut t_direct,
                direct
                    .run(&["echo", "x"], false)
                    .await
                    .and_then(|r| r.ttfb.map(ms).ok_or_else(|| anyhow!("no output"))),
            );
        }
        let bytes = o.stream_mib * 1024 * 1024;
        // dd with 1 MiB blocks: the command writes far faster than any path carries it (460
        // MiB/s into a pipe in a gVisor sandbox here), where `head -c` does 8 KiB writes and is
        // itself the bottleneck under gVisor (~37 MiB/s to /dev/null), hiding the paths.
        let count = o.stream_mib.to_string();
        let cmd_s = ["dd", "if=/dev/zero", "bs=1M", &format!("count={count}"), "status=none"].map(String::from);
        let cmd: Vec<&str> = cmd_s.iter().map(String::as_str).collect();
        let mut s_gw = Metric::new(
            "exec.throughput.gateway",
            &format!("stdout of `dd if=/dev/zero bs=1M count={}`, gateway", o.stream_mib),
            "MiB/s",
        );
        let mut s_direct = Metric::new(
            "exec.throughput.direct",
            &format!(
                "stdout of `dd if=/dev/zero bs=1M count={}`, pods/exec",
                o.stream_mib
            ),
            "MiB/s",
        );
        let mut s_inc = Metric::new(
            "exec.throughput.gateway_incluster",
            &format!(
                "stdout of `dd if=/dev/zero bs=1M count={}`, in-cluster gateway",
                o.stream_mib
            ),
            "MiB/s",
        );
        for _ in 0..o.stream_runs {
            push(
                &mut s_gw,
                gw_stream(gw, ns, name, &cmd, Some(bytes as u64))
                    .await
                    .map(|s| bytes as f64 / MIB / s.total.as_secs_f64()),
            );
            push(
                &mut s_direct,
                direct.run(&cmd, false).await.and_then(|r| {
                    if r.bytes != bytes as u64 {
                        bail!("got {} of {bytes} bytes", r.bytes)
                    }
                    Ok(bytes as f64 / MIB / r.total.as_secs_f64())
                }),
            );
            if let Some((c, _)) = incluster {
                push(
                    &mut s_inc,
                    gw_stream(c, ns, name, &cmd, Some(bytes as u64))
                        .await
                        .map(|s| bytes as f64 / MIB / s.total.as_secs_f64()),
                );
            }
        }
        self.progress("exec first byte and throughput done");

        // The runtime: N concurrent execs straight into this one gVisor sandbox.
        let mut scaling = Vec::new();
        for &n in &o.gvisor_concurrency {
            let (mut m, span) = concurrent(n, |_| {
                let d = direct.clone();
                async move { d.run(&["true"], false).await.map(|r| ms(r.total)) }
            })
            .await;
            m.id = format!("exec.gvisor_concurrent{n}.direct");
            m.name = format!(
                "{n} concurrent `true` into one gVisor sandbox, pods/exec: per-call latency"
            );
            m.note = format!("all done in {:.0} ms", ms(span));
            scaling.push(m);
        }
        self.progress("gVisor exec scaling done");
        self.delete_sandbox_and_wait(ns, name).await;

        let mut metrics: Vec<&Metric> = vec![&m_gw, &m_direct, &m_agent, &m_get];
        let mut rs = vec![
            ratio("exec RTT: gateway / direct pods/exec", &m_gw, &m_direct),
            ratio(
                "exec RTT: gateway / direct pods/exec of the agent",
                &m_gw,
                &m_agent,
            ),
            ratio(
                "exec RTT: direct agent / direct `true`",
                &m_agent,
                &m_direct,
            ),
            ratio("first byte: gateway / direct", &t_gw, &t_direct),
            ratio("throughput: gateway / direct", &s_gw, &s_direct),
        ];
        if incluster.is_some() {
            metrics.push(&m_inc);
            rs.push(ratio(
                "exec RTT: in-cluster gateway / direct",
                &m_inc,
                &m_direct,
            ));
            rs.push(ratio(
                "throughput: in-cluster gateway / direct",
                &s_inc,
                &s_direct,
            ));
        }
        metrics.extend([&t_gw, &t_direct, &s_gw, &s_direct]);
        if incluster.is_some() {
            metrics.push(&s_inc);
        }
        metrics.extend(scaling.iter());
        // The goals are about the in-cluster gateway (what users call); without one, the
        // in-process gateway stands in.
        let (rtt, thr, which) = if incluster.is_some() {
            (&rs[5], &rs[6], "in-cluster gateway")
        } else {
            (&rs[0], &rs[4], "in-process gateway")
        };
        let in_ms = if incluster.is_some() { &m_inc } else { &m_gw };
        self.target(
            &format!("exec RTT of `true`, {which} (direct path), p50"),
            "<= 10 ms",
            in_ms.dist().map(|d| format!("{:.1} ms", d.p50)).unwrap_or("-".into()),
            in_ms.dist().map(|d| d.p50 <= 10.0),
        );
        self.target(
            &format!("exec RTT, {which} (direct path) vs pods/exec (p50 ratio)"),
            "<= 0.1x",
            rtt.p50.map(|x| format!("{x:.2}x")).unwrap_or("-".into()),
            rtt.p50.map(|x| x <= 0.1),
        );
        self.target(
            &format!("stdout throughput, {which} (direct path) vs pods/exec (p50 ratio)"),
            ">= 5x",
            thr.p50.map(|x| format!("{x:.2}x")).unwrap_or("-".into()),
            thr.p50.map(|x| x >= 5.0),
        );
        self.metrics(&metrics);
        let rrefs: Vec<&Ratio> = rs.iter().collect();
        self.ratios(&rrefs);
        let where_ = incluster
            .map(|(_, w)| format!(" The in-cluster gateway is the Helm install's, reached at {w}."))
            .unwrap_or_default();
        self.section(
            "Exec: latency and throughput",
            format!(
                "One gVisor Sandbox (cpu {}, memory {}). The gateway runs in-process (`airlock_exec_gateway::serve`, auth `none`, \
                 127.0.0.1, its own Kubernetes client, the direct path to the agent's port), so its figures are its data path without a port-forward; \"direct\" is the \
                 `pods/exec` websocket from this process into the same container (what `kubectl exec` does; 64 KiB pipe buffers \
                 as in the gateway).{where_} Calls alternate between the paths.\n\n{}\n{}",
                o.exec_cpu,
                o.exec_memory,
                table(&metrics),
                ratio_table(&rrefs)
            ),
        );
        Ok(())
    }
}
