//! Time to Ready: a Sandbox under gVisor and runc against a bare Pod (the floor) and the operator's
//! own pod created directly, with and without the agent.

use super::*;

impl Bench {
    pub(crate) async fn phase_ready(&self, ns: &str) -> Result<()> {
        let sbx_api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let pod_api: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let (cpu, mem) = (self.opts.ready_cpu.clone(), self.opts.ready_memory.clone());

        // The pod the operator builds, to replay it without the operator (and without its init
        // container): that splits the Sandbox's extra time into operator, init container and pod
        // shape.
        let template = {
            let name = "rd-template";
            sbx_api
                .create(
                    &Self::pp(),
                    &self.sandbox(name, "ready", GVISOR, &cpu, &mem, 3600)?,
                )
                .await?;
            self.rec
                .wait(&key("pod", ns, name), "created", Duration::from_secs(60))
                .await?;
            let pod = pod_api.get(name).await?;
            let _ = sbx_api.delete(name, &DeleteParams::background()).await;
            let _ = self
                .rec
                .wait(&key("pod", ns, name), "gone", Duration::from_secs(90))
                .await;
            pod
        };
        let decomp_runs = self.opts.decomp_runs.min(self.opts.ready_runs);
        let variants: Vec<Variant> = vec![
            Variant {
                id: "sandbox.gvisor",
                label: "Sandbox, gVisor",
                kind: Kind::Sandbox,
                rt: GVISOR,
                runs: self.opts.ready_runs,
            },
            Variant {
                id: "replica.gvisor",
                label: "operator's pod created directly, gVisor",
                kind: Kind::Replica,
                rt: GVISOR,
                runs: decomp_runs,
            },
            Variant {
                id: "replica_noinit.gvisor",
                label: "operator's pod without the agent, gVisor",
                kind: Kind::ReplicaNoInit,
                rt: GVISOR,
                runs: decomp_runs,
            },
            Variant {
                id: "bare.gvisor",
                label: "bare Pod, gVisor (floor)",
                kind: Kind::Bare,
                rt: GVISOR,
                runs: self.opts.ready_runs,
            },
            Variant {
                id: "sandbox_own_agent.gvisor",
                label: "Sandbox, agent in its image (spec.agent: Image), gVisor",
                kind: Kind::SandboxOwnAgent,
                rt: GVISOR,
                runs: self.opts.ready_runs,
            },
            Variant {
                id: "bare_agent_image.gvisor",
                label: "bare Pod of that image, gVisor (floor)",
                kind: Kind::BareAgentImage,
                rt: GVISOR,
                runs: self.opts.ready_runs,
            },
            Variant {
                id: "sandbox.runc",
                label: "Sandbox, runc",
                kind: Kind::Sandbox,
                rt: RUNC,
                runs: self.opts.runc_runs.min(self.opts.ready_runs),
            },
            Variant {
                id: "bare.runc",
                label: "bare Pod, runc (floor)",
                kind: Kind::Bare,
                rt: RUNC,
                runs: self.opts.runc_runs.min(self.opts.ready_runs),
            },
        ];
        let mut totals: Vec<Metric> = variants
            .iter()
            .map(|v| {
                Metric::new(
                    &format!("ready.{}", v.id),
                    &format!("{}: create -> Ready", v.label),
                    "ms",
                )
            })
            .collect();
        let mut timelines: Vec<Vec<BTreeMap<String, f64>>> = vec![Vec::new(); variants.len()];
        for r in 0..self.opts.ready_runs {
            for (vi, v) in variants.iter().enumerate() {
                if r >= v.runs {
                    continue;
                }
                let name = format!("rd-{}-{r:02}", v.id.replace(['.', '_'], "-"));
                let t0 = Instant::now();
                let created = match v.kind {
                    Kind::Sandbox => sbx_api
                        .create(
                            &Self::pp(),
                            &self.sandbox(&name, "ready", v.rt, &cpu, &mem, 3600)?,
                        )
                        .await
                        .map(|_| ()),
                    Kind::SandboxOwnAgent => sbx_api
                        .create(&Self::pp(), &self.sandbox_own_agent(&name, v.rt, &cpu, &mem)?)
                        .await
                        .map(|_| ()),
                    Kind::Bare => pod_api
                        .create(&Self::pp(), &self.bare_pod(&name, v.rt, &cpu, &mem)?)
                        .await
                        .map(|_| ()),
                    Kind::BareAgentImage => pod_api
                        .create(
                            &Self::pp(),
                            &self.bare_pod_of(SANDBOX_AGENT_IMAGE, &name, v.rt, &cpu, &mem)?,
                        )
                        .await
                        .map(|_| ()),
                    Kind::Replica | Kind::ReplicaNoInit => pod_api
                        .create(
                            &Self::pp(),
                            &replica(&template, &name, "ready", v.kind == Kind::ReplicaNoInit)?,
                        )
                        .await
                        .map(|_| ()),
                };
                let m = &mut totals[vi];
                if let Err(e) = created {
                    m.errors += 1;
                    self.report
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("creating {name}: {e}"));
                    continue;
                }
                let ready_key = if v.kind.is_sandbox() {
                    key("sbx", ns, &name)
                } else {
                    key("pod", ns, &name)
                };
                match self
                    .rec
                    .wait(&ready_key, "ready", Duration::from_secs(180))
                    .await
                {
                    Ok(t) => {
                        m.values.push(ms_between(t0, t));
                        let mut tl = BTreeMap::new();
                        for (k, x) in self.rec.all(&key("pod", ns, &name)) {
                            tl.insert(format!("pod.{k}"), ms_between(t0, x));
                        }
                        for (k, x) in self.rec.all(&key("sbx", ns, &name)) {
                            tl.insert(format!("sbx.{k}"), ms_between(t0, x));
                        }
                        timelines[vi].push(tl);
                    }
                    Err(e) => {
                        m.errors += 1;
                        self.report.lock().unwrap().errors.push(e.to_string());
                    }
                }
                if v.kind.is_sandbox() {
                    let _ = sbx_api.delete(&name, &DeleteParams::background()).await;
                } else {
                    let _ = pod_api
                        .delete(
                            &name,
                            &DeleteParams {
                                grace_period_seconds: Some(0),
                                ..DeleteParams::background()
                            },
                        )
                        .await;
                }
                if let Err(e) = self
                    .rec
                    .wait(&key("pod", ns, &name), "gone", Duration::from_secs(90))
                    .await
                {
                    self.note(format!("ready phase: {e}"));
                }
            }
        }
        let t = |id: &str| {
            totals
                .iter()
                .find(|m| m.id == format!("ready.{id}"))
                .expect("variant")
        };
        let ratios = [
            ratio(
                "Sandbox / bare Pod, gVisor",
                t("sandbox.gvisor"),
                t("bare.gvisor"),
            ),
            ratio(
                "Sandbox / bare Pod, runc",
                t("sandbox.runc"),
                t("bare.runc"),
            ),
            ratio(
                "Sandbox with the agent in its image / bare Pod of that image, gVisor",
                t("sandbox_own_agent.gvisor"),
                t("bare_agent_image.gvisor"),
            ),
            ratio(
                "Sandbox / operator's pod created directly, gVisor (operator's share)",
                t("sandbox.gvisor"),
                t("replica.gvisor"),
            ),
            ratio(
                "operator's pod / same pod without the agent, gVisor",
                t("replica.gvisor"),
                t("replica_noinit.gvisor"),
            ),
            ratio(
                "pod without the agent / bare Pod, gVisor",
                t("replica_noinit.gvisor"),
                t("bare.gvisor"),
            ),
            ratio(
                "Sandbox gVisor / Sandbox runc",
                t("sandbox.gvisor"),
                t("sandbox.runc"),
            ),
            ratio(
                "bare Pod gVisor / bare Pod runc",
                t("bare.gvisor"),
                t("bare.runc"),
            ),
        ];
        let refs: Vec<&Metric> = totals.iter().collect();
        self.metrics(&refs);
        let rrefs: Vec<&Ratio> = ratios.iter().collect();
        self.ratios(&rrefs);
        for (r, what) in [
            (&ratios[0], "gVisor"),
            (&ratios[1], "runc"),
            (&ratios[2], "gVisor, agent in the image (spec.agent: Image)"),
        ] {
            self.target(
                &format!("time to Ready vs bare Pod, {what} (p50 ratio)"),
                "<= 1.2x",
                r.p50.map(|x| format!("{x:.2}x")).unwrap_or("-".into()),
                r.p50.map(|x| x <= 1.2),
            );
        }

        // Milestones: median time of each after the create call.
        let steps: &[(&str, &str)] = &[
            ("sbx.created", "Sandbox object seen (API write + watch)"),
            ("pod.created", "Pod object seen"),
            ("pod.scheduled", "Pod bound to the node (scheduler)"),
            (
                "pod.sandbox-ready",
                "pod sandbox + network ready (PodReadyToStartContainers)",
            ),
            ("pod.init-done", "init container done (agent copied; init-container delivery only)"),
            ("pod.running", "main container running"),
            ("pod.ready", "Pod Ready condition"),
            ("sbx.ready", "Sandbox Ready condition (operator status)"),
        ];
        let mut md = String::from("| milestone (p50 ms after the create call) |");
        for v in &variants {
            md.push_str(&format!(" {} |", v.label));
        }
        md.push_str("\n|---|");
        for _ in &variants {
            md.push_str("---:|");
        }
        md.push('\n');
        let mut bjson = serde_json::Map::new();
        for (step, label) in steps {
            md.push_str(&format!("| {label} |"));
            for (vi, v) in variants.iter().enumerate() {
                let vals: Vec<f64> = timelines[vi]
                    .iter()
                    .filter_map(|tl| tl.get(*step).copied())
                    .collect();
                md.push_str(&format!(
                    " {} |",
                    dist(&vals)
                        .map(|d| fmt_num(d.p50))
                        .unwrap_or_else(|| "-".into())
                ));
                bjson
                    .entry(v.id.to_string())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .unwrap()
                    .insert(step.to_string(), json!(dist(&vals)));
            }
            md.push('\n');
        }
        self.report
            .lock()
            .unwrap()
            .breakdowns
            .insert("ready_milestones".into(), Value::Object(bjson));
        self.section(
            "Time to Ready",
            format!(
                "Create call -> Ready condition (the Sandbox's for Sandboxes, the Pod's otherwise), as first seen by a watch. \
                 Variants, all with the same image, RuntimeClass and resources (cpu {cpu}, memory {mem}, requests = limits): a \
                 Sandbox; the pod the operator built for a Sandbox, created directly (no operator); that pod without the agent \
                 (no init container, main command `sleep infinity`, same volumes and hardening); a bare Pod (`sleep infinity`, the floor). \
                 Rounds alternate between the variants; each pod is deleted and gone before the next one starts.\n\n{}\n{}\n\
                 Milestones as first seen by a watch (a step the kubelet reports in the same status update as the next one takes \
                 no time of its own):\n\n{md}",
                table(&refs),
                ratio_table(&rrefs)
            ),
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sandbox,
    /// A Sandbox whose image holds the agent (`spec.agent: Image`).
    SandboxOwnAgent,
    Replica,
    ReplicaNoInit,
    Bare,
    /// A bare Pod of the image that holds the agent.
    BareAgentImage,
}

impl Kind {
    pub(crate) fn is_sandbox(self) -> bool {
        matches!(self, Kind::Sandbox | Kind::SandboxOwnAgent)
    }
}

pub(crate) struct Variant {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    pub(crate) kind: Kind,
    pub(crate) rt: &'static str,
    pub(crate) runs: usize,
}
