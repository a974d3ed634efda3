//! Footprint: resident memory of the operator and the gateway, fresh, idle, with 1,000 Sandboxes
//! and under 100 concurrent streams.

use super::*;

impl Bench {
    /// Restarts the Helm install's operator and gateway pods (the ReplicaSets make new ones), so
    /// the idle and peak memory figures are those of fresh processes: glibc keeps what a process
    /// once used, so a previous run's peak would otherwise show up as "idle".
    pub(crate) async fn restart_components(&self) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), SYSTEM_NS);
        for component in ["operator", "exec-gateway"] {
            let lp =
                ListParams::default().labels(&format!("app.kubernetes.io/component={component}"));
            let old: Vec<String> = pods
                .list(&lp)
                .await?
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            if old.is_empty() {
                continue;
            }
            pods.delete_collection(&DeleteParams::default(), &lp)
                .await?;
            let t = Instant::now();
            loop {
                let list = pods.list(&lp).await?;
                let fresh_ready = list.items.iter().any(|p| {
                    !old.contains(&p.name_any())
                        && p.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .flatten()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                });
                let old_gone = list.items.iter().all(|p| !old.contains(&p.name_any()));
                if fresh_ready && old_gone {
                    break;
                }
                if t.elapsed() > Duration::from_secs(120) {
                    bail!(
                        "the {component} did not come back Ready within 120 s after its pods were restarted"
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        *self.operator.lock().unwrap() = None;
        *self.gateway_proc.lock().unwrap() = None;
        let _ = self.process("operator").await;
        let _ = self.process("exec-gateway").await;
        Ok(())
    }

    /// The process of a component, looked up again if the one found before has gone.
    pub(crate) async fn process(&self, component: &str) -> Option<Proc> {
        let (slot, binary) = match component {
            "operator" => (&self.operator, "airlock-operator"),
            _ => (&self.gateway_proc, "airlock-exec-gateway"),
        };
        let cur = slot.lock().unwrap().clone();
        if let Some(p) = &cur
            && argv0_base(&p.pid.to_string()).as_deref() == Some(binary)
        {
            return cur;
        }
        let (found, _) = find_process(&self.kube, component, binary).await;
        if let (Some(old), Some(new)) = (&cur, &found) {
            self.note(format!(
                "the {component} changed during the run: {} (pid {}) -> {} (pid {})",
                old.source, old.pid, new.source, new.pid
            ));
        }
        *slot.lock().unwrap() = found.clone();
        found
    }

    pub(crate) async fn sample_now(&self, label: &str) -> Value {
        let _ = self.process("operator").await;
        let _ = self.process("exec-gateway").await;
        let one = |p: &Option<Proc>| p.as_ref().and_then(proc_mem);
        let (op, gw) = (
            self.operator.lock().unwrap().clone(),
            self.gateway_proc.lock().unwrap().clone(),
        );
        json!({"label": label, "operator": one(&op), "gateway": one(&gw)})
    }

    pub(crate) async fn phase_footprint(&self) -> Result<()> {
        let n = self.opts.footprint_sandboxes;
        let _ = self.process("exec-gateway").await;
        let Some(op) = self.process("operator").await else {
            bail!("no operator process found on this host");
        };
        let ns = self.namespace("fp", true).await?;
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), &ns);
        let before = self.sample_now("before").await;
        let sampler = Sampler::start(op.pid.to_string(), Duration::from_millis(200));
        let names: Vec<String> = (0..n).map(|i| format!("fp-{i:04}")).collect();
        let start = Instant::now();
        let errors = futures::stream::iter(names.iter().map(|nm| {
            let api = api.clone();
            let sb = self.sandbox(nm, "fp", NOWHERE_RC, "10m", "16Mi", 3600);
            async move {
                api.create(&PostParams::default(), &sb?)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
        }))
        .buffer_unordered(32)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
        let created_in = start.elapsed();
        let pod_keys: Vec<String> = names.iter().map(|nm| key("pod", &ns, nm)).collect();
        let sbx_keys: Vec<String> = names.iter().map(|nm| key("sbx", &ns, nm)).collect();
        let pods = self
            .rec
            .wait_all(&pod_keys, "created", Duration::from_secs(300))
            .await;
        let statuses = self
            .rec
            .wait_all(&sbx_keys, "status", Duration::from_secs(120))
            .await;
        let last_pod = pod_keys
            .iter()
            .filter_map(|k| self.rec.get(k, "created"))
            .max();
        let settled_in = start.elapsed();
        // Let the operator settle (requeues, events), then read its memory.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let with_n = self.sample_now(&format!("with {n} Sandboxes")).await;
        let samples = sampler.finish().await;
        let peak = samples.iter().copied().max().unwrap_or(0);
        let op_rss = rss_kib(&op.pid.to_string()).map(|r| mib(r.0));
        self.footprint(
            "sandboxes",
            json!({"count": n, "create_errors": errors, "pods_created": pods, "statuses_written": statuses,
                   "create_calls_s": created_in.as_secs_f64(), "all_pods_s": last_pod.map(|t| (t - start).as_secs_f64()),
                   "settled_s": settled_in.as_secs_f64(), "before": before, "after": with_n, "operator_peak_rss_mib": mib(peak)}),
        );
        self.target(
            &format!("operator RSS with {n} Sandboxes"),
            "< 64 MiB",
            op_rss
                .map(|x| {
                    format!(
                        "{x:.1} MiB (peak {:.1} MiB while they were created)",
                        mib(peak)
                    )
                })
                .unwrap_or("-".into()),
            op_rss.map(|x| x < 64.0),
        );
        let _ = Api::<Namespace>::all(self.kube.clone())
            .delete(&ns, &DeleteParams::background())
            .await;
        Ok(())
    }
}
