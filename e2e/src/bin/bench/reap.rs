//! Reap latency: TTL deadline -> Sandbox deleted -> pod deletion -> pod gone.

use super::*;

impl Bench {
    pub(crate) async fn phase_reap(&self, ns: &str) -> Result<()> {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let ttl = self.opts.reap_ttl_seconds;
        let stagger = Duration::from_millis((ttl as u64 * 1000) / 3);
        let mut tasks = Vec::new();
        for i in 0..self.opts.reap_runs {
            let name = format!("reap-{i:02}");
            let sb = self.sandbox(&name, "reap", GVISOR, &self.opts.reap_cpu, "128Mi", ttl)?;
            let (api, rec, ns) = (api.clone(), self.rec.clone(), ns.to_string());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(stagger * i as u32).await;
                let created = api.create(&PostParams::default(), &sb).await?;
                let ct = created
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .ok_or_else(|| anyhow!("no creationTimestamp"))?
                    .0;
                let deadline = UNIX_EPOCH + Duration::from_secs((ct.as_second() + ttl) as u64);
                let gone = rec
                    .wait(
                        &key("pod", &ns, &name),
                        "gone",
                        Duration::from_secs(ttl as u64 + 120),
                    )
                    .await?;
                let ready = rec.get(&key("pod", &ns, &name), "ready");
                let wall = |t: Instant| -> f64 {
                    let w = rec.wall(t);
                    match w.duration_since(deadline) {
                        Ok(d) => ms(d),
                        Err(e) => -ms(e.duration()),
                    }
                };
                Ok::<_, anyhow::Error>((
                    wall(gone),
                    rec.get(&key("sbx", &ns, &name), "gone").map(wall),
                    rec.get(&key("pod", &ns, &name), "deleting").map(wall),
                    ready.is_some_and(|r| rec.wall(r) < deadline),
                ))
            }));
        }
        let mut gone = Metric::new(
            "reap.deadline_to_pod_gone",
            "TTL deadline -> pod gone (deleted from the API)",
            "ms",
        );
        let mut sbx = Metric::new(
            "reap.deadline_to_sandbox_gone",
            "TTL deadline -> Sandbox deleted (operator)",
            "ms",
        );
        let mut del = Metric::new(
            "reap.deadline_to_pod_deleting",
            "TTL deadline -> pod deletion started (garbage collector)",
            "ms",
        );
        let mut not_ready = 0;
        for t in tasks {
            match t.await.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok((g, s, d, was_ready)) => {
                    if !was_ready {
                        not_ready += 1;
                    }
                    gone.values.push(g);
                    if let Some(s) = s {
                        sbx.values.push(s);
                    }
                    if let Some(d) = d {
                        del.values.push(d);
                    }
                }
                Err(e) => {
                    gone.errors += 1;
                    self.report
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("reap: {e}"));
                }
            }
        }
        gone.note = format!("{not_ready} of them not Ready at the deadline");
        self.metrics(&[&sbx, &del, &gone]);
        self.section(
            "Reap latency",
            format!(
                "gVisor Sandboxes with `ttlSeconds: {ttl}` (deadline = creationTimestamp + TTL, whole seconds as the operator \
                 computes it), started {:.1} s apart; times against the host clock.\n\n{}",
                stagger.as_secs_f64(),
                table(&[&sbx, &del, &gone])
            ),
        );
        Ok(())
    }
}
