//! Concurrent execs and streams through the gateway (in-process and, when it runs, in-cluster)
//! against the same straight to `pods/exec`.

use super::*;

impl Bench {
    /// Concurrent execs in a runc Sandbox: a level the node handles (the gateway against direct
    /// pods/exec), then N streams at once through the gateway whose memory is measured (the
    /// in-cluster one when it runs), against the same N straight.
    pub(crate) async fn exec_concurrency(
        &self,
        ns: &str,
        gw: &AirlockClient,
        _kube: &Client,
        incluster: Option<&(AirlockClient, String)>,
    ) -> Result<()> {
        let o = &self.opts;
        let name = "exec-runc";
        let direct = self.exec_sandbox(ns, name, RUNC).await?;
        for _ in 0..3 {
            gw_true(gw, ns, name).await?;
            direct.run(&["true"], false).await?;
        }
        let cap = Duration::from_secs(o.concurrency_cap_seconds);
        let mut metrics: Vec<Metric> = Vec::new();
        let mut ratios: Vec<Ratio> = Vec::new();

        // 1. A level this node's exec path handles.
        let low = o.concurrency_low;
        if low > 0 {
            let (mut s_gw, mut c_gw, gw_span) = concurrent2(low, |_| {
                let (gw, ns) = (gw.clone(), ns.to_string());
                async move {
                    gw_stream(&gw, &ns, "exec-runc", &["true"], Some(0))
                        .await
                        .map(|s| (ms(s.started), ms(s.total)))
                }
            })
            .await;
            c_gw.id = format!("exec.concurrent{low}.gateway");
            c_gw.name = format!("{low} concurrent `true`, gateway (in-process): per-call latency");
            c_gw.note = format!("all done in {:.0} ms", ms(gw_span));
            s_gw.id = format!("exec.concurrent{low}.gateway_started");
            s_gw.name = format!(
                "{low} concurrent `true`, gateway: call -> `started` (exec stream established)"
            );
            let (mut s_d, mut c_d, d_span) = concurrent2(low, |_| {
                let d = direct.clone();
                async move {
                    d.run(&["true"], false)
                        .await
                        .map(|r| (ms(r.connected), ms(r.total)))
                }
            })
            .await;
            c_d.id = format!("exec.concurrent{low}.direct");
            c_d.name = format!("{low} concurrent `true`, pods/exec: per-call latency");
            c_d.note = format!("all done in {:.0} ms", ms(d_span));
            s_d.id = format!("exec.concurrent{low}.direct_connected");
            s_d.name = format!("{low} concurrent `true`, pods/exec: call -> websocket upgraded");
            ratios.push(ratio(
                &format!("{low} concurrent `true`: gateway / direct"),
                &c_gw,
                &c_d,
            ));
            metrics.extend([c_gw, s_gw, c_d, s_d]);
            self.progress(&format!("{low} concurrent execs done"));
        }

        // 2. N streams at once, each call given at most `cap`.
        let n = o.concurrency;
        let fp_bytes = o.footprint_stream_mib * 1024 * 1024;
        let fp_cmd: Vec<String> = ["head", "-c", &fp_bytes.to_string(), "/dev/zero"]
            .map(String::from)
            .to_vec();
        // Calls whose exec stream was established (the gateway answered / the websocket was
        // upgraded), counted also for calls given up on.
        let established_gw = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let established_d = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let streams = |c: AirlockClient| {
            let (cmd, ns, est) = (fp_cmd.clone(), ns.to_string(), established_gw.clone());
            concurrent2(n, move |_| {
                let (c, cmd, ns, est) = (c.clone(), cmd.clone(), ns.clone(), est.clone());
                async move {
                    let t = Instant::now();
                    let work = async {
                        let mut s = c
                            .exec(AirlockClient::argv(
                                &ns,
                                "exec-runc",
                                cmd.iter().map(String::as_str),
                            ))
                            .await?;
                        let started = t.elapsed();
                        est.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (mut bytes, mut exit) = (0u64, None);
                        while let Some(ev) = s.message().await? {
                            match ev.event {
                                Some(pb::exec_event::Event::Stdout(b)) => bytes += b.len() as u64,
                                Some(pb::exec_event::Event::Exited(e)) => exit = Some(e.exit_code),
                                _ => {}
                            }
                        }
                        if exit != Some(0) || bytes != fp_bytes as u64 {
                            bail!("exit {exit:?}, {bytes} bytes");
                        }
                        Ok((ms(started), ms(t.elapsed())))
                    };
                    match tokio::time::timeout(cap, work).await {
                        Ok(r) => r,
                        Err(_) => Err(anyhow!("not finished after {cap:?}")),
                    }
                }
            })
        };
        let (which, client, proc_) = match incluster {
            Some((c, _)) => (
                "in-cluster gateway",
                c.clone(),
                self.process("exec-gateway")
                    .await
                    .map(|p| p.pid.to_string()),
            ),
            None => ("in-process gateway", gw.clone(), Some("self".to_string())),
        };
        let _ = gw_true(&client, ns, name).await;
        let before = proc_.as_deref().and_then(rss_kib).map(|r| r.0).unwrap_or(0);
        let sampler = proc_
            .clone()
            .map(|p| Sampler::start(p, Duration::from_millis(50)));
        let (mut s_gw, mut c_gw, span) = streams(client).await;
        let samples = match sampler {
            Some(s) => s.finish().await,
            None => Vec::new(),
        };
        let after = proc_.as_deref().and_then(rss_kib).map(|r| r.0).unwrap_or(0);
        c_gw.id = format!("exec.concurrent{n}.gateway");
        c_gw.name = format!(
            "{n} concurrent streams of {} MiB, {which}: per-call duration",
            o.footprint_stream_mib
        );
        c_gw.note = format!(
            "{}/{n} exec streams established; all done or given up in {:.0} ms; calls still running after {} s count as errors",
            established_gw.load(std::sync::atomic::Ordering::Relaxed),
            ms(span),
            cap.as_secs()
        );
        s_gw.id = format!("exec.concurrent{n}.gateway_started");
        s_gw.name =
            format!("{n} concurrent streams, {which}: call -> `started` (exec stream established)");
        self.footprint(
            "gateway_streams",
            json!({"which": which, "process": if incluster.is_some() { json!(self.gateway_proc.lock().unwrap().clone()) } else { json!("bench process (in-process gateway + clients)") },
                   "before_mib": mib(before), "max_during_streams_mib": mib(samples.iter().copied().max().unwrap_or(0)),
                   "after_mib": mib(after), "streams": n, "stream_mib": o.footprint_stream_mib, "errors": c_gw.errors, "samples": samples.len()}),
        );
        self.progress(&format!("{n} concurrent streams through the gateway done"));
        let (mut s_d, mut c_d, d_span) = concurrent2(n, |_| {
            let (d, cmd, est) = (direct.clone(), fp_cmd.clone(), established_d.clone());
            async move {
                let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
                match tokio::time::timeout(cap, d.run_counting(&argv, Some(&est))).await {
                    Ok(r) => r.map(|r| (ms(r.connected), ms(r.total))),
                    Err(_) => Err(anyhow!("not finished after {cap:?}")),
                }
            }
        })
        .await;
        c_d.id = format!("exec.concurrent{n}.direct");
        c_d.name = format!(
            "{n} concurrent streams of {} MiB, pods/exec: per-call duration",
            o.footprint_stream_mib
        );
        c_d.note = format!(
            "{}/{n} exec streams established; all done or given up in {:.0} ms; calls still running after {} s count as errors",
            established_d.load(std::sync::atomic::Ordering::Relaxed),
            ms(d_span),
            cap.as_secs()
        );
        s_d.id = format!("exec.concurrent{n}.direct_connected");
        s_d.name = format!("{n} concurrent streams, pods/exec: call -> websocket upgraded");
        self.progress(&format!("{n} concurrent streams straight done"));
        self.target(
            &format!("{n} concurrent execs through the gateway: p99 and errors"),
            "report",
            format!(
                "p99 {} ms, {} errors (straight pods/exec: p99 {} ms, {} errors)",
                c_gw.dist().map(|d| fmt_num(d.p99)).unwrap_or("-".into()),
                c_gw.errors,
                c_d.dist().map(|d| fmt_num(d.p99)).unwrap_or("-".into()),
                c_d.errors
            ),
            None,
        );
        ratios.push(ratio(
            &format!("{n} concurrent streams: gateway / direct"),
            &c_gw,
            &c_d,
        ));
        metrics.extend([c_gw, s_gw, c_d, s_d]);
        // Calls given up on may hold the node's exec path for a while longer: the Sandbox is
        // deleted without waiting for its pod to go.
        let _ = Api::<Sandbox>::namespaced(self.kube.clone(), ns)
            .delete(name, &DeleteParams::background())
            .await;
        let refs: Vec<&Metric> = metrics.iter().collect();
        self.metrics(&refs);
        let rrefs: Vec<&Ratio> = ratios.iter().collect();
        self.ratios(&rrefs);
        self.section(
            "Exec: concurrency",
            format!(
                "Calls started at once (a barrier) into one runc Sandbox (cpu {}; concurrent execs into one gVisor sandbox of \
                 this cluster are far slower, see the gVisor rows above, and would hide the gateway): {low} `true` through the \
                 in-process gateway (one gRPC connection) and straight; then {n} streams of {} MiB through the {which} (its memory \
                 is the footprint figure below) and straight, each call given at most {} s. The \"established\" rows show when \
                 each call had its exec stream from the API server; the rest of a call's time is the node running and finishing it.\n\n{}\n{}",
                o.exec_cpu,
                o.footprint_stream_mib,
                cap.as_secs(),
                table(&refs),
                ratio_table(&rrefs)
            ),
        );
        Ok(())
    }

    /// A client of the chart's gateway (pod IP, ServiceAccount token), when it runs.
    pub(crate) async fn incluster_gateway(&self, ns: &str) -> Result<Option<(AirlockClient, String)>> {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), SYSTEM_NS);
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=exec-gateway"))
            .await?;
        let Some(p) = list.items.into_iter().find(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        }) else {
            return Ok(None);
        };
        let ip = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .ok_or_else(|| anyhow!("gateway pod has no IP"))?;
        let port = p
            .spec
            .as_ref()
            .and_then(|s| {
                s.containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|pt| pt.name.as_deref() == Some("grpc"))
                    .map(|pt| pt.container_port)
            })
            .unwrap_or(50051);
        let token = self.token(ns).await?;
        let addr = format!("http://{ip}:{port}");
        let c = AirlockClient::connect(&addr, Some(token)).await?;
        Ok(Some((c, format!("{addr} (pod {})", p.name_any()))))
    }

    /// A ServiceAccount allowed everything on sandboxes in `ns`, and a token for it.
    pub(crate) async fn token(&self, ns: &str) -> Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
        let pp = Self::pp();
        let sa = "airlock-bench";
        let sas: Api<ServiceAccount> = Api::namespaced(self.kube.clone(), ns);
        let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": sa}}))?;
        sas.create(&pp, &account).await?;
        let role: Role = serde_json::from_value(json!({
            "metadata": {"name": sa},
            "rules": [{"apiGroups": ["airlock.dev"], "resources": ["sandboxes", "sandboxes/exec", "sandboxes/files"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]
        }))?;
        Api::<Role>::namespaced(self.kube.clone(), ns)
            .create(&pp, &role)
            .await?;
        let rb: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
        }))?;
        Api::<RoleBinding>::namespaced(self.kube.clone(), ns)
            .create(&pp, &rb)
            .await?;
        // Minted for the gateway's audience (the chart's default gateway.auth.tokenAudiences).
        let tr = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                audiences: vec![airlock_e2e::GATEWAY_AUDIENCE.to_string()],
                ..Default::default()
            },
            ..Default::default()
        };
        let out = sas.create_token_request(sa, &pp, &tr).await?;
        Ok(out
            .status
            .ok_or_else(|| anyhow!("TokenRequest without status"))?
            .token)
    }

    /// Diagnostic: where N concurrent pods/exec calls spend their time (connect, status, EOF).
    pub(crate) async fn exec_probe(&self, ns: &str) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let name = "probe";
        pods.create(&Self::pp(), &self.bare_pod(name, RUNC, "500m", "128Mi")?)
            .await?;
        self.rec
            .wait(&key("pod", ns, name), "ready", Duration::from_secs(60))
            .await?;
        let n = self.opts.concurrency;
        let stagger = Duration::from_millis(env_usize("BENCH_PROBE_STAGGER_MS", 0) as u64);
        let client = Client::try_default().await?;
        let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (api, b) = (Api::<Pod>::namespaced(client.clone(), ns), barrier.clone());
                tokio::spawn(async move {
                    b.wait().await;
                    tokio::time::sleep(stagger * i as u32).await;
                    let t = Instant::now();
                    let mut ap = AttachParams::default()
                        .stdout(true)
                        .stderr(true)
                        .stdin(false);
                    ap.max_stdout_buf_size = Some(PIPE_BUF);
                    let mut p = api.exec("probe", ["true"], &ap).await?;
                    let connected = t.elapsed();
                    let mut out = p.stdout().unwrap();
                    let mut err = p.stderr().unwrap();
                    let st = p.take_status().unwrap();
                    let (mut a, mut c) = (Vec::new(), Vec::new());
                    let _ = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut c));
                    let eof = t.elapsed();
                    let _ = st.await;
                    let status = t.elapsed();
                    let _ = p.join().await;
                    Ok::<_, anyhow::Error>((connected, eof, status, t.elapsed()))
                })
            })
            .collect();
        barrier.wait().await;
        let mut rows = Vec::new();
        for h in hs {
            if let Ok(Ok(r)) = h.await {
                rows.push(r);
            }
        }
        let col = |f: fn(&(Duration, Duration, Duration, Duration)) -> Duration| {
            dist(&rows.iter().map(|r| ms(f(r))).collect::<Vec<_>>())
        };
        eprintln!("probe n={n}: connected {:?}", col(|r| r.0));
        eprintln!("probe n={n}: eof       {:?}", col(|r| r.1));
        eprintln!("probe n={n}: status    {:?}", col(|r| r.2));
        eprintln!("probe n={n}: joined    {:?}", col(|r| r.3));
        Ok(())
    }
}
