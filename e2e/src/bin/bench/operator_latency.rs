//! Operator latency: Sandbox created -> Pod object created (1, 50, 200 at once, and the first
//! Sandbox of a fresh namespace), with the operator's API calls replayed from here for comparison.

use super::*;

impl Bench {
    pub(crate) async fn phase_operator(&self, ns: &str) -> Result<()> {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let templates = self.operator_templates(ns).await?;
        let mut api_m = [
            Metric::new(
                "api.get_pod_missing",
                "API: GET the (not yet existing) pod",
                "ms",
            ),
            Metric::new(
                "api.apply_networkpolicy",
                "API: server-side apply of a new NetworkPolicy (the operator's)",
                "ms",
            ),
            Metric::new(
                "api.create_pod",
                "API: create the pod (the operator's, new name)",
                "ms",
            ),
        ];
        let mut single = Metric::new(
            "operator.single.watch_to_watch",
            "1 create: Sandbox seen -> Pod seen (operator's added latency)",
            "ms",
        );
        let mut single_call = Metric::new(
            "operator.single.call_to_pod",
            "1 create: create call returned -> Pod seen",
            "ms",
        );
        for i in 0..self.opts.single_creates {
            // The replayed API calls right before each create, so both see the same load.
            self.api_round_trip(ns, i, &templates, &mut api_m).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let name = format!("op1-{i:03}");
            let sb = self.sandbox(&name, "op1", NOWHERE_RC, "10m", "16Mi", 3600)?;
            if let Err(e) = api.create(&Self::pp(), &sb).await {
                single.errors += 1;
                self.report
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("creating {name}: {e}"));
                continue;
            }
            let returned = Instant::now();
            match self
                .rec
                .wait(&key("pod", ns, &name), "created", Duration::from_secs(60))
                .await
            {
                Ok(pod_t) => {
                    let sb_t = self
                        .rec
                        .get(&key("sbx", ns, &name), "created")
                        .unwrap_or(returned);
                    single.values.push(ms_between(sb_t, pod_t));
                    single_call.values.push(ms_between(returned, pod_t));
                }
                Err(e) => {
                    single.errors += 1;
                    self.report.lock().unwrap().errors.push(e.to_string());
                }
            }
            let _ = api.delete(&name, &DeleteParams::background()).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut all: Vec<Metric> = api_m.into_iter().collect();
        all.push(single);
        all.push(single_call);
        {
            let lp = ListParams::default().labels(&format!("{PHASE_LABEL}=api"));
            let _ = Api::<Pod>::namespaced(self.kube.clone(), ns)
                .delete_collection(&DeleteParams::background(), &lp)
                .await;
            let _ = Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(
                self.kube.clone(),
                ns,
            )
            .delete_collection(&DeleteParams::background(), &lp)
            .await;
        }
        self.progress("single creates done");
        self.settle_pods_gone(ns, "op1").await;

        for &n in &self.opts.bursts {
            let phase = format!("op{n}");
            let names: Vec<String> = (0..n).map(|i| format!("{phase}-{i:04}")).collect();
            let sbs: Vec<Sandbox> = names
                .iter()
                .map(|nm| self.sandbox(nm, &phase, NOWHERE_RC, "10m", "16Mi", 3600))
                .collect::<Result<_>>()?;
            let start = Instant::now();
            let created = futures::future::join_all(sbs.iter().map(|sb| {
                let api = api.clone();
                async move { api.create(&Self::pp(), sb).await.map(|_| Instant::now()) }
            }))
            .await;
            let create_errors = created.iter().filter(|r| r.is_err()).count();
            let pod_keys: Vec<String> = names.iter().map(|nm| key("pod", ns, nm)).collect();
            let got = self
                .rec
                .wait_all(&pod_keys, "created", Duration::from_secs(180))
                .await;
            let mut w2w = Metric::new(
                &format!("operator.burst{n}.watch_to_watch"),
                &format!("{n} concurrent creates: Sandbox seen -> Pod seen"),
                "ms",
            );
            let mut from_start = Metric::new(
                &format!("operator.burst{n}.start_to_pod"),
                &format!("{n} concurrent creates: burst start -> Pod seen"),
                "ms",
            );
            for (nm, c) in names.iter().zip(&created) {
                let Ok(_) = c else { continue };
                match (
                    self.rec.get(&key("sbx", ns, nm), "created"),
                    self.rec.get(&key("pod", ns, nm), "created"),
                ) {
                    (Some(s), Some(p)) => {
                        w2w.values.push(ms_between(s, p));
                        from_start.values.push(ms_between(start, p));
                    }
                    _ => w2w.errors += 1,
                }
            }
            w2w.errors += create_errors;
            w2w.note = format!("{got}/{n} pods created");
            all.push(w2w);
            all.push(from_start);
            self.progress(&format!("burst of {n} measured"));
            let _ = api
                .delete_collection(
                    &DeleteParams::background(),
                    &ListParams::default().labels(&format!("{PHASE_LABEL}={phase}")),
                )
                .await;
            self.settle_pods_gone(ns, &phase).await;
            self.progress(&format!("burst of {n} cleaned up"));
        }
        let templates = self.op_templates.lock().unwrap().clone();
        let replay_md = match (self.opts.bursts.iter().copied().max(), templates) {
            (Some(n), Some((pod, np))) if self.opts.replay => {
                let mut md = String::new();
                let mut rows = Vec::new();
                for limit in [None, Some(16usize)] {
                    let r = replay_burst(ns, &pod, &np, n, limit).await;
                    self.progress(&format!("replay of {n}, limit {limit:?} done"));
                    match r {
                        Ok((m, span, conns)) => {
                            let what = limit
                                .map(|l| format!("{l} at a time"))
                                .unwrap_or_else(|| "all at once".into());
                            rows.push(json!({"n": n, "concurrency": limit, "makespan_ms": ms(span), "connections": conns, "item": m.json()}));
                            md.push_str(&format!(
                                "| {what} | {} | {} | {} | {conns} |\n",
                                fmt_num(ms(span)),
                                m.dist().map(|d| fmt_num(d.p50)).unwrap_or("-".into()),
                                m.dist().map(|d| fmt_num(d.p99)).unwrap_or("-".into()),
                            ));
                        }
                        Err(e) => self
                            .report
                            .lock()
                            .unwrap()
                            .errors
                            .push(format!("replay: {e:#}")),
                    }
                }
                self.report
                    .lock()
                    .unwrap()
                    .results
                    .insert("operator.replay".into(), json!(rows));
                format!(
                    "\nReplay of the operator's API calls for {n} Sandboxes (GET pod, apply NetworkPolicy, create pod; each \
                     sequence in order, sequences concurrent) from a fresh client in this process, unbounded (as the operator's \
                     controller runs reconciles today) and with at most 16 sequences in flight. kube's client speaks HTTP/1.1, so \
                     every request in flight holds a TLS connection of its own.\n\n\
                     | concurrency | all done (ms) | per sequence p50 (ms) | p99 (ms) | TCP connections opened |\n|---|---:|---:|---:|---:|\n{md}"
                )
            }
            _ => String::new(),
        };
        let refs: Vec<&Metric> = all.iter().collect();
        self.metrics(&refs);
        let p50 = all
            .iter()
            .find(|m| m.id == "operator.single.watch_to_watch")
            .and_then(|m| m.dist())
            .map(|d| d.p50);
        self.target(
            "operator latency before the pod exists (1 create, p50)",
            "<= 20 ms",
            p50.map(|x| format!("{x:.1} ms")).unwrap_or("-".into()),
            p50.map(|x| x <= 20.0),
        );
        self.section(
            "Operator latency: Sandbox created -> Pod created",
            format!(
                "Pods use a RuntimeClass that schedules nowhere, so only the creation of the Pod object is measured and nothing starts. \
                 \"Sandbox seen -> Pod seen\": both times are when this process's watches first saw the object, so the watch delivery \
                 delay cancels out and what is left is the operator's own latency (its watch, reconcile, API writes). \
                 Namespace with a ResourceQuota already initialized (steady state). The \"API:\" rows replay, from this process, \
                 the calls the operator makes before the pod exists, with the objects it built, right before each single create.\n\n{}{replay_md}",
                table(&refs)
            ),
        );
        Ok(())
    }

    /// The pod and NetworkPolicy the operator builds for a Sandbox (templates for replays).
    pub(crate) async fn operator_templates(
        &self,
        ns: &str,
    ) -> Result<(Pod, k8s_openapi::api::networking::v1::NetworkPolicy)> {
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let name = "op-template";
        api.create(
            &Self::pp(),
            &self.sandbox(name, "op-template", NOWHERE_RC, "10m", "16Mi", 3600)?,
        )
        .await?;
        self.rec
            .wait(&key("pod", ns, name), "created", Duration::from_secs(60))
            .await?;
        let pod = Api::<Pod>::namespaced(self.kube.clone(), ns)
            .get(name)
            .await?;
        let np = Api::<NetworkPolicy>::namespaced(self.kube.clone(), ns)
            .get(name)
            .await?;
        let _ = api.delete(name, &DeleteParams::background()).await;
        let _ = self
            .rec
            .wait(&key("pod", ns, name), "gone", Duration::from_secs(60))
            .await;
        *self.op_templates.lock().unwrap() = Some((pod.clone(), np.clone()));
        Ok((pod, np))
    }

    /// One replay, from this process, of the API calls the operator makes before a pod exists
    /// (read the pod, apply the NetworkPolicy, create the pod), with the objects it built.
    pub(crate) async fn api_round_trip(
        &self,
        ns: &str,
        i: usize,
        t: &(Pod, k8s_openapi::api::networking::v1::NetworkPolicy),
        m: &mut [Metric; 3],
    ) -> Result<()> {
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let nps: Api<NetworkPolicy> = Api::namespaced(self.kube.clone(), ns);
        let clock = Instant::now();
        push(
            &mut m[0],
            pods.get_opt(&format!("api-missing-{i}"))
                .await
                .map(|_| ms(clock.elapsed()))
                .map_err(anyhow::Error::from),
        );
        let mut v = serde_json::to_value(&t.1)?;
        v["metadata"] = json!({"name": format!("api-np-{i:03}"), "namespace": ns, "labels": {BENCH_LABEL: "true", PHASE_LABEL: "api"}});
        let clock = Instant::now();
        push(
            &mut m[1],
            nps.patch(
                &format!("api-np-{i:03}"),
                &PatchParams::apply("airlock-bench").force(),
                &Patch::Apply(&v),
            )
            .await
            .map(|_| ms(clock.elapsed()))
            .map_err(anyhow::Error::from),
        );
        let p = replica(&t.0, &format!("api-pod-{i:03}"), "api", false)?;
        let clock = Instant::now();
        push(
            &mut m[2],
            pods.create(&Self::pp(), &p)
                .await
                .map(|_| ms(clock.elapsed()))
                .map_err(anyhow::Error::from),
        );
        Ok(())
    }

    /// Waits (bounded) until the pods of a phase are gone, so the next measurement starts clean.
    pub(crate) async fn settle_pods_gone(&self, ns: &str, phase: &str) {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            match pods
                .list(&ListParams::default().labels(&format!(
                    "{}={}",
                    airlock_crds::labels::COMPONENT,
                    airlock_crds::labels::COMPONENT_SANDBOX
                )))
                .await
            {
                Ok(l)
                    if l.items
                        .iter()
                        .all(|p| !p.name_any().starts_with(&format!("{phase}-"))) =>
                {
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// First Sandbox of a namespace the operator has never seen (it creates the quota first).
    pub(crate) async fn phase_cold(&self) -> Result<()> {
        let mut m = Metric::new(
            "operator.cold.watch_to_watch",
            "first Sandbox of a new namespace: Sandbox seen -> Pod seen",
            "ms",
        );
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..self.opts.cold_runs {
            let ns = self.namespace(&format!("cold{i}"), false).await?;
            let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), &ns);
            api.create(
                &Self::pp(),
                &self.sandbox("first", "cold", NOWHERE_RC, "10m", "16Mi", 3600)?,
            )
            .await?;
            match self
                .rec
                .wait(
                    &key("pod", &ns, "first"),
                    "created",
                    Duration::from_secs(60),
                )
                .await
            {
                Ok(p) => {
                    let s = self
                        .rec
                        .get(&key("sbx", &ns, "first"), "created")
                        .unwrap_or(p);
                    m.values.push(ms_between(s, p));
                    for k in self.rec.all(&key("sbx", &ns, "first")).keys() {
                        if let Some(r) = k.strip_prefix("reason:") {
                            *reasons.entry(r.to_string()).or_default() += 1;
                        }
                    }
                }
                Err(e) => {
                    m.errors += 1;
                    self.report.lock().unwrap().errors.push(e.to_string());
                }
            }
            let _ = Api::<Namespace>::all(self.kube.clone())
                .delete(&ns, &DeleteParams::background())
                .await;
        }
        if !reasons.is_empty() {
            m.note = format!(
                "Ready reasons seen before the pod: {}",
                reasons
                    .iter()
                    .map(|(k, v)| format!("{k} x{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.metrics(&[&m]);
        self.section(
            "Operator latency: first Sandbox of a new namespace",
            format!(
                "The operator applies the namespace's ResourceQuota before the first pod; the API server refuses pods while a new \
                 quota's usage is not computed yet (\"status unknown for quota\"), and the operator retries after a fixed delay.\n\n{}",
                table(&[&m])
            ),
        );
        Ok(())
    }
}

/// A copy of an operator-built pod under a new name, with no owner (so the operator ignores it);
/// `no_init`: without the init container, the main container sleeping instead of running the agent.
pub(crate) fn replica(template: &Pod, name: &str, phase: &str, no_init: bool) -> Result<Pod> {
    let mut v = serde_json::to_value(template)?;
    let mut labels = serde_json::Map::new();
    labels.insert(BENCH_LABEL.into(), json!("true"));
    labels.insert(PHASE_LABEL.into(), json!(phase));
    v["metadata"] = json!({"name": name, "labels": labels});
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(spec) = v["spec"].as_object_mut() {
        spec.remove("nodeName");
        if no_init {
            spec.remove("initContainers");
        }
    }
    // The agent token comes from the Sandbox's Secret, which goes with the Sandbox: a literal
    // of the same length keeps the pod's shape without it (nothing calls these agents).
    for c in v["spec"]["containers"].as_array_mut().into_iter().flatten() {
        for e in c["env"].as_array_mut().into_iter().flatten() {
            if e.get("valueFrom").and_then(|f| f.get("secretKeyRef")).is_some() {
                *e = json!({"name": e["name"].clone(), "value": "0".repeat(64)});
            }
        }
    }
    if no_init {
        v["spec"]["containers"][0]["command"] = json!(["sleep", "infinity"]);
        if let Some(c) = v["spec"]["containers"][0].as_object_mut() {
            c.remove("args");
        }
    }
    Ok(serde_json::from_value(v)?)
}

/// Replays the operator's pre-pod API calls for `n` sandboxes with a fresh client, `limit` at a
/// time; returns per-sequence latency, makespan and the connections the client opened.
pub(crate) async fn replay_burst(
    ns: &str,
    pod: &Pod,
    np: &k8s_openapi::api::networking::v1::NetworkPolicy,
    n: usize,
    limit: Option<usize>,
) -> Result<(Metric, Duration, usize)> {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let client = Client::try_default().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let nps: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let tag = limit
        .map(|l| format!("l{l}"))
        .unwrap_or_else(|| "all".into());
    let mut items = Vec::new();
    for i in 0..n {
        let name = format!("rp-{tag}-{i:04}");
        let p = replica(pod, &name, "replay", false)?;
        let mut v = serde_json::to_value(np)?;
        v["metadata"] = json!({"name": name, "namespace": ns, "labels": {BENCH_LABEL: "true", PHASE_LABEL: "replay"}});
        items.push((name, p, v));
    }
    let before = tcp_established("self");
    let start = Instant::now();
    let run = |(name, p, v): (String, Pod, Value)| {
        let (pods, nps) = (pods.clone(), nps.clone());
        async move {
            let t = Instant::now();
            pods.get_opt(&name).await?;
            nps.patch(
                &name,
                &PatchParams::apply("airlock-bench").force(),
                &Patch::Apply(&v),
            )
            .await?;
            pods.create(&PostParams::default(), &p).await?;
            Ok::<_, anyhow::Error>(ms(t.elapsed()))
        }
    };
    let results: Vec<Result<f64>> = futures::stream::iter(items.into_iter().map(run))
        .buffer_unordered(limit.unwrap_or(n))
        .collect()
        .await;
    let span = start.elapsed();
    let conns = tcp_established("self").saturating_sub(before);
    let mut m = Metric::new("operator.replay", "replayed pre-pod API calls", "ms");
    for r in results {
        push(&mut m, r);
    }
    let lp = ListParams::default().labels(&format!("{PHASE_LABEL}=replay"));
    let _ = pods
        .delete_collection(&DeleteParams::background(), &lp)
        .await;
    let _ = nps
        .delete_collection(&DeleteParams::background(), &lp)
        .await;
    // Let the deletions pass before the next measurement.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60)
        && !pods
            .list(&lp)
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((m, span, conns))
}
