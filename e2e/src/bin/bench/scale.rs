//! Scale (`make bench-scale`; run only when `BENCH_ONLY` names `scale`): `BENCH_SCALE` Sandboxes
//! (10,000) on kwok's simulated nodes (RuntimeClass `kwok`, `e2e/cluster kwok-up`), created in
//! waves of `BENCH_SCALE_WAVE` (500, one after the other without a pause) spread over
//! `BENCH_SCALE_NAMESPACES` (20) namespaces, at most `BENCH_SCALE_PARALLEL` (32) create calls at
//! a time.
//!
//! Recorded: Sandboxes/s from the first create to the last Ready, beside the API server's own
//! ceiling for the same writes replayed from this client (`BENCH_SCALE_REPLAY` items: the objects
//! the operator writes per Sandbox, with a ConfigMap standing in for the Sandbox and its status);
//! the operator's CPU seconds and RSS every 2 s; the backlog (Sandboxes created and not yet
//! Ready); lost and duplicated pods; `ListSandboxes` through the gateway with every Sandbox there;
//! and the TTL reaper: every Sandbox's TTL is chosen so that all expire at the same second, and the
//! time from that second to the last one gone is set beside the time the API server takes for as
//! many deletes from one client.

use super::*;

/// One sample of the operator process.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    at_s: f64,
    rss_mib: f64,
    cpu_s: f64,
    created: usize,
    ready: usize,
}

/// User + system CPU time of a process, in seconds (`/proc/PID/stat`, clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

impl Bench {
    pub(crate) async fn phase_scale(&self) -> Result<()> {
        let (n, nss, wave, par) = (
            self.opts.scale_sandboxes,
            self.opts.scale_namespaces.max(1),
            self.opts.scale_wave.max(1),
            self.opts.scale_parallel.max(1),
        );
        if Api::<RuntimeClass>::all(self.kube.clone()).get_opt("kwok").await?.is_none() {
            bail!("no RuntimeClass kwok: start the simulated nodes with `e2e/cluster kwok-up` (`make bench-scale` does)");
        }
        let op = self.process("operator").await.ok_or_else(|| anyhow!("the operator process was not found on this host"))?;
        let pid = op.pid.to_string();
        let mut namespaces = Vec::new();
        for i in 0..nss {
            namespaces.push(self.namespace(&format!("scale-{i:02}"), true).await?);
        }

        // The reference first, on a quiet cluster.
        let replay_ns = self.namespace("scale-replay", true).await?;
        let (replay_rate, delete_rate) = self.scale_replay(&replay_ns, self.opts.scale_replay, par).await?;
        self.progress(&format!("replay: {replay_rate:.1} Sandboxes/s, {delete_rate:.1} deletes/s"));

        // Every Sandbox expires at the same second: TTL = that second - its creation.
        let est = (n as f64 / (replay_rate * 0.5).max(5.0)) as u64 + 120;
        let reap_at = SystemTime::now() + Duration::from_secs(est);
        let reap_at_unix = reap_at.duration_since(UNIX_EPOCH)?.as_secs();

        let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let keys: Vec<(String, String)> = (0..n).map(|i| (namespaces[i % nss].clone(), format!("s{i:05}"))).collect();
        let ready_count = {
            let rec = self.rec.clone();
            let keys = keys.clone();
            move || keys.iter().filter(|(ns, name)| rec.get(&key("sbx", ns, name), "ready").is_some()).count()
        };
        let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sampler = {
            let (samples, created, pid, base) = (samples.clone(), created.clone(), pid.clone(), Instant::now());
            let ready_count = ready_count.clone();
            tokio::spawn(async move {
                loop {
                    let s = Sample {
                        at_s: base.elapsed().as_secs_f64(),
                        rss_mib: rss_kib(&pid).map(|(r, _)| mib(r)).unwrap_or(0.0),
                        cpu_s: cpu_seconds(&pid).unwrap_or(0.0),
                        created: created.load(std::sync::atomic::Ordering::Relaxed),
                        ready: ready_count(),
                    };
                    samples.lock().unwrap().push(s);
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            })
        };

        let first_create = Instant::now();
        let cpu0 = cpu_seconds(&pid).unwrap_or(0.0);
        let mut create_errors = Vec::new();
        for (w, chunk) in keys.chunks(wave).enumerate() {
            let results: Vec<Result<()>> = futures::stream::iter(chunk.iter().cloned())
                .map(|(ns, name)| {
                    let created = created.clone();
                    async move {
                        let ttl = reap_at_unix as i64 - SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
                        let sb = self.sandbox(&name, "scale", "kwok", "10m", "16Mi", ttl.max(60))?;
                        Api::<Sandbox>::namespaced(self.kube.clone(), &ns)
                            .create(&Self::pp(), &sb)
                            .await
                            .with_context(|| format!("creating {ns}/{name}"))?;
                        created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok(())
                    }
                })
                .buffer_unordered(par)
                .collect()
                .await;
            create_errors.extend(results.into_iter().filter_map(|r| r.err().map(|e| format!("{e:#}"))));
            // Waves follow each other at once (as the replay streams): a wave is a unit of
            // progress, not a pause.
            self.progress(&format!("scale: wave {w} created ({} in all, {} Ready)", created.load(std::sync::atomic::Ordering::Relaxed), ready_count()));
        }
        let created_by = SystemTime::now();
        let all_keys: Vec<String> = keys.iter().map(|(ns, name)| key("sbx", ns, name)).collect();
        let ready_n = self.rec.wait_all(&all_keys, "ready", Duration::from_secs(300)).await;
        let readies: Vec<Instant> = all_keys.iter().filter_map(|k| self.rec.get(k, "ready")).collect();
        let last_ready = readies.iter().max().copied().unwrap_or(first_create);
        let span = last_ready.duration_since(first_create).as_secs_f64();
        let rate = ready_n as f64 / span.max(0.001);
        let cpu_used = cpu_seconds(&pid).unwrap_or(0.0) - cpu0;
        let mut to_ready = Metric::new("scale.create_to_ready", "Sandbox created (watch) -> Ready (watch), at scale", "ms");
        for k in &all_keys {
            match (self.rec.get(k, "created"), self.rec.get(k, "ready")) {
                (Some(c), Some(r)) => to_ready.values.push(ms_between(c, r)),
                _ => to_ready.errors += 1,
            }
        }

        // Lost and duplicated pods: every Sandbox has exactly one pod, owned by it, and no pod of
        // the run is owned by nothing.
        let (mut lost, mut duplicated, mut orphans) = (0usize, 0usize, 0usize);
        for ns in &namespaces {
            let sbs = Api::<Sandbox>::namespaced(self.kube.clone(), ns).list(&ListParams::default()).await?;
            let pods = Api::<Pod>::namespaced(self.kube.clone(), ns).list(&ListParams::default()).await?;
            let mut owned: HashMap<String, usize> = HashMap::new();
            for p in &pods.items {
                match p.owner_references().iter().find(|o| o.controller == Some(true)) {
                    Some(o) => *owned.entry(o.uid.clone()).or_default() += 1,
                    None => orphans += 1,
                }
            }
            for s in &sbs.items {
                match owned.get(s.metadata.uid.as_deref().unwrap_or_default()) {
                    None => lost += 1,
                    Some(1) => {}
                    Some(_) => duplicated += 1,
                }
            }
        }

        // ListSandboxes through the gateway (in-process, as in `exec`), every Sandbox there.
        let mut list = Metric::new("scale.list_sandboxes", &format!("gateway ListSandboxes of one namespace ({} Sandboxes)", n / nss), "ms");
        let mut list_all = Metric::new("scale.list_sandboxes_all", "the same, of every namespace in turn (one round)", "ms");
        {
            let (gw, stop, server) = self.warm_gateway(&namespaces[0]).await?;
            for round in 0..3 {
                let t_round = Instant::now();
                for ns in &namespaces {
                    let t = Instant::now();
                    match gw.list_sandboxes(ns, "").await {
                        Ok(v) if round > 0 => {
                            list.values.push(ms(t.elapsed()));
                            if v.len() != n / nss && v.len() != n / nss + 1 {
                                list.note = format!("{ns}: {} Sandboxes listed", v.len());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            list.errors += 1;
                            create_errors.push(format!("ListSandboxes {ns}: {e}"));
                        }
                    }
                }
                if round > 0 {
                    list_all.values.push(ms(t_round.elapsed()));
                }
            }
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }

        // The reaper: every Sandbox expires at `reap_at`.
        let wait = reap_at.duration_since(SystemTime::now()).unwrap_or_default();
        self.progress(&format!("scale: waiting {} s for the common TTL deadline", wait.as_secs()));
        tokio::time::sleep(wait).await;
        let deadline = Instant::now();
        let gone = self.rec.wait_all(&all_keys, "gone", Duration::from_secs(1800)).await;
        let last_gone = all_keys.iter().filter_map(|k| self.rec.get(k, "gone")).max().unwrap_or(deadline);
        let reap_s = last_gone.saturating_duration_since(deadline).as_secs_f64();
        // Only meaningful when every Sandbox was made (and Ready, and counted) before the deadline.
        let reap_valid = created_by + Duration::from_secs(30) < reap_at && wait > Duration::ZERO;
        let reap_ref_s = n as f64 / delete_rate.max(0.001);
        let _ = stop_tx.send(());
        let _ = sampler.await;

        // Report.
        let samples = samples.lock().unwrap().clone();
        let peak = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
        let at_n = samples.iter().filter(|s| s.ready >= ready_n).map(|s| s.rss_mib).next().unwrap_or(peak);
        let backlog = samples.iter().map(|s| s.created.saturating_sub(s.ready)).max().unwrap_or(0);
        let mut body = format!(
            "{n} Sandboxes (RuntimeClass `kwok`: simulated nodes, the pods run nothing) in waves of {wave} over {nss} namespaces, at most {par} create calls at a time. The reference replays, from this process at the same parallelism, the writes of {} Sandboxes: a ConfigMap created and patched twice (standing in for the Sandbox and its two status writes), the NetworkPolicy and token Secret applied, the pod created (same RuntimeClass, so scheduled and made Ready by kwok alike).\n\n",
            self.opts.scale_replay
        );
        body.push_str("| measurement | value | reference (same run) | ratio |\n|---|---:|---:|---:|\n");
        body.push_str(&format!("| Sandboxes/s, first create -> last Ready ({ready_n} of {n} Ready, {span:.1} s) | {rate:.1} | {replay_rate:.1} (API replay) | {:.2}x |\n", rate / replay_rate.max(0.001)));
        if reap_valid {
            body.push_str(&format!("| reaping: common TTL deadline -> last Sandbox gone ({gone} of {n} gone) | {reap_s:.1} s | {reap_ref_s:.1} s ({n} deletes at {delete_rate:.1}/s from one client) | {:.2}x |\n", reap_s / reap_ref_s.max(0.001)));
        } else {
            body.push_str("| reaping | not measured: creating took past the common deadline (raise the estimate) | | |\n");
        }
        body.push_str(&format!("| operator CPU while creating | {cpu_used:.1} s | | |\n| operator RSS with {ready_n} Ready Sandboxes / peak | {at_n:.1} MiB / {peak:.1} MiB | | |\n| largest backlog (created, not yet Ready) | {backlog} | | |\n"));
        body.push_str(&format!("| pods lost / duplicated / without an owner | {lost} / {duplicated} / {orphans} | | |\n| create errors | {} | | |\n\n", create_errors.len()));
        body.push_str(&table(&[&to_ready, &list, &list_all]));
        body.push_str("\nOperator samples (every 2 s; first, then every tenth, then last):\n\n| t (s) | RSS (MiB) | CPU (s) | created | Ready |\n|---:|---:|---:|---:|---:|\n");
        for (i, s) in samples.iter().enumerate() {
            if i == 0 || i % 10 == 0 || i + 1 == samples.len() {
                body.push_str(&format!("| {:.0} | {:.1} | {:.1} | {} | {} |\n", s.at_s, s.rss_mib, s.cpu_s, s.created, s.ready));
            }
        }
        self.section("Scale (kwok)", body);
        self.metrics(&[&to_ready, &list, &list_all]);
        self.footprint("scale_samples", json!(samples));
        self.target("sustained Sandboxes/s at scale vs the API server's replay", ">= 0.8x", format!("{:.2}x ({rate:.1}/s vs {replay_rate:.1}/s)", rate / replay_rate.max(0.001)), Some(rate >= 0.8 * replay_rate));
        self.target(&format!("operator RSS with {n} Sandboxes"), "<= 128 MiB", format!("{at_n:.1} MiB (peak {peak:.1})"), Some(peak <= 128.0));
        self.target("pods lost or duplicated", "0", format!("{lost} lost, {duplicated} duplicated"), Some(lost + duplicated == 0));
        if reap_valid {
            self.target("reaping vs the API server's deletes alone", "<= 2x", format!("{:.2}x ({reap_s:.1} s vs {reap_ref_s:.1} s)", reap_s / reap_ref_s.max(0.001)), Some(reap_s <= 2.0 * reap_ref_s));
        }
        let mut r = self.report.lock().unwrap();
        r.errors.extend(create_errors.into_iter().take(20));
        Ok(())
    }

    /// The API server's ceiling for the operator's writes, from this client: `m` items at `par`
    /// at a time; returns (items per second to pod Ready, pod deletes per second).
    async fn scale_replay(&self, ns: &str, m: usize, par: usize) -> Result<(f64, f64)> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        let t0 = Instant::now();
        let results: Vec<Result<()>> = futures::stream::iter(0..m)
            .map(|i| async move {
                let name = format!("r{i:05}");
                let cms: Api<ConfigMap> = Api::namespaced(self.kube.clone(), ns);
                let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name, "labels": {BENCH_LABEL: "true"}}, "data": {"phase": "new"}}))?;
                cms.create(&Self::pp(), &cm).await?;
                let np: NetworkPolicy = serde_json::from_value(json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": name, "labels": {BENCH_LABEL: "true"}},
                    "spec": {"podSelector": {"matchLabels": {"replay": name}}, "policyTypes": ["Ingress", "Egress"]}
                }))?;
                let secret: Secret = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("t-{name}"), "labels": {BENCH_LABEL: "true"}},
                    "stringData": {"token": "0".repeat(64)}
                }))?;
                let mut pod = self.bare_pod_of(SANDBOX_IMAGE, &name, "kwok", "10m", "16Mi")?;
                pod.metadata.labels.get_or_insert_default().insert("replay".into(), name.clone());
                let pp = PatchParams::apply("airlock-bench").force();
                let (nps, secrets, pods): (Api<NetworkPolicy>, Api<Secret>, Api<Pod>) = (
                    Api::namespaced(self.kube.clone(), ns),
                    Api::namespaced(self.kube.clone(), ns),
                    Api::namespaced(self.kube.clone(), ns),
                );
                let (np, secret, secret_name, post) = (Patch::Apply(&np), Patch::Apply(&secret), format!("t-{name}"), Self::pp());
                let (a, b, c) = tokio::join!(
                    nps.patch(&name, &pp, &np),
                    secrets.patch(&secret_name, &pp, &secret),
                    pods.create(&post, &pod)
                );
                a?;
                b?;
                c?;
                for phase in ["Pending", "Ready"] {
                    cms.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"data": {"phase": phase}}))).await?;
                }
                Ok(())
            })
            .buffer_unordered(par)
            .collect()
            .await;
        let errors = results.iter().filter(|r| r.is_err()).count();
        if errors > 0 {
            let first = results.into_iter().find_map(|r| r.err()).map(|e| format!("{e:#}")).unwrap_or_default();
            bail!("replay: {errors} of {m} items failed, the first: {first}");
        }
        let keys: Vec<String> = (0..m).map(|i| key("pod", ns, &format!("r{i:05}"))).collect();
        let got = self.rec.wait_all(&keys, "ready", Duration::from_secs(300)).await;
        let last = keys.iter().filter_map(|k| self.rec.get(k, "ready")).max().unwrap_or(t0);
        let rate = got as f64 / last.duration_since(t0).as_secs_f64().max(0.001);
        // Deletes: the replay's pods, one call each, at the same parallelism.
        let t1 = Instant::now();
        let _: Vec<_> = futures::stream::iter(0..m)
            .map(|i| async move {
                let _ = Api::<Pod>::namespaced(self.kube.clone(), ns)
                    .delete(&format!("r{i:05}"), &DeleteParams::default())
                    .await;
            })
            .buffer_unordered(par)
            .collect()
            .await;
        let delete_rate = m as f64 / t1.elapsed().as_secs_f64().max(0.001);
        // The rest of the replay goes too, so that nothing of it (policies for the network plugin
        // to process) weighs on the measured run.
        use k8s_openapi::api::core::v1::ConfigMap as Cm;
        let all = ListParams::default().labels(&format!("{BENCH_LABEL}=true"));
        let dp = DeleteParams::background();
        let _ = Api::<NetworkPolicy>::namespaced(self.kube.clone(), ns).delete_collection(&dp, &all).await;
        let _ = Api::<Secret>::namespaced(self.kube.clone(), ns).delete_collection(&dp, &all).await;
        let _ = Api::<Cm>::namespaced(self.kube.clone(), ns).delete_collection(&dp, &all).await;
        Ok((rate, delete_rate))
    }
}
