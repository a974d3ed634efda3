//! Warm pools: a Sandbox naming a SandboxTemplate claims a Ready pod of a SandboxPool instead of
//! starting one. Create -> Ready of warm claims one at a time and N at once, beside a cold
//! templated Sandbox (a template without a pool) and a bare Pod of the same image, RuntimeClass
//! and resources; create -> first exec output through the gateway (what an agent feels); claims
//! of a drained pool (the cold fallback); refill of a pool scaled from 0.
//!
//! Timestamps as in `ready`: from the create call (taken right before it is sent) to the first
//! watch event showing the Ready condition True (the Sandbox's, the Pod's for the bare Pod).
//!
//! Over 600 lines (a benchmark, not product code): the five measurements share their pool,
//! template and namespace set-up and the report rows; split it by measurement when it grows.

use super::*;
use airlock_crds::{SandboxPool, StartMode, labels};

/// The template with a pool, and the same template without one.
const POOLED: &str = "wp";
const UNPOOLED: &str = "wc";
const PHASE: &str = "warm";
const TIMEOUT: Duration = Duration::from_secs(180);
/// Pause after the pool is back at its size, so the operator's caches and the pool's status
/// write are behind us.
const SETTLE: Duration = Duration::from_millis(300);

/// One measured start.
#[derive(Clone, Debug)]
pub(crate) struct Start {
    name: String,
    /// Create call sent -> Ready seen, ms.
    total: f64,
    /// Milestones, ms after the create call.
    marks: BTreeMap<String, f64>,
    mode: Option<StartMode>,
    pod: String,
}

impl Start {
    fn mode_str(&self) -> &'static str {
        self.mode.map(StartMode::as_str).unwrap_or("-")
    }
}

fn pool_marks(p: &SandboxPool) -> Vec<String> {
    let mut v = vec!["created".to_string()];
    if let Some(s) = &p.status {
        v.push(format!("ready:{}", s.ready_replicas));
        v.push(format!("replicas:{}", s.replicas));
    }
    v
}

/// Pods made by a pool that carry a Sandbox's label: claimed, as first seen.
fn claim_marks(p: &Pod) -> Vec<String> {
    let l = p.labels();
    match (l.get(labels::POOL_ORIGIN), l.get(labels::SANDBOX_NAME)) {
        (Some(_), Some(s)) => vec![format!("claimed:{s}")],
        _ => Vec::new(),
    }
}

/// The operator's pods: name and restart count.
async fn operator_pods(kube: &Client) -> Vec<(String, i32)> {
    let lp = ListParams::default().labels(airlock_e2e::release::OPERATOR_SELECTOR);
    match Api::<Pod>::namespaced(kube.clone(), SYSTEM_NS)
        .list(&lp)
        .await
    {
        Ok(l) => l
            .items
            .iter()
            .map(|p| (p.name_any(), airlock_e2e::release::restarts(p)))
            .collect(),
        Err(e) => vec![(format!("listing the operator's pods failed: {e}"), -1)],
    }
}

fn count_modes(starts: &[Start]) -> Value {
    let warm = starts
        .iter()
        .filter(|s| s.mode == Some(StartMode::Warm))
        .count();
    let cold = starts
        .iter()
        .filter(|s| s.mode == Some(StartMode::Cold))
        .count();
    json!({"warm": warm, "cold": cold, "unknown": starts.len() - warm - cold})
}

fn metric_of(id: &str, name: &str, starts: &[Start], errors: usize) -> Metric {
    let mut m = Metric::new(id, name, "ms");
    m.values = starts.iter().map(|s| s.total).collect();
    m.errors = errors;
    m
}

fn fmt_opt(x: Option<f64>, unit: &str) -> String {
    x.map(|x| format!("{} {unit}", fmt_num(x)))
        .unwrap_or_else(|| "-".into())
}

impl Bench {
    pub(crate) async fn phase_warm(&self) -> Result<()> {
        let o = self.opts.clone();
        // Tests that restart or scale the operator, or restart the API server, take this lock:
        // held for the phase, they wait instead of landing in the middle of the figures.
        let _lock = airlock_e2e::release::ClusterLock::acquire("bench warm").await;
        let operator_before = operator_pods(&self.kube).await;
        let ns = self.namespace("warm", true).await?;
        let ns = ns.as_str();
        // Pools' status and claimed pool pods, into the recorder.
        let (tx1, rx1) = tokio::sync::oneshot::channel();
        let (tx2, rx2) = tokio::sync::oneshot::channel();
        let h1 = spawn_watch(
            self.rec.clone(),
            Api::<SandboxPool>::namespaced(self.kube.clone(), ns),
            "pool",
            pool_marks,
            tx1,
        );
        let h2 = spawn_watch(
            self.rec.clone(),
            Api::<Pod>::namespaced(self.kube.clone(), ns),
            "claim",
            claim_marks,
            tx2,
        );
        self.watches.lock().unwrap().extend([h1, h2]);
        tokio::time::timeout(Duration::from_secs(30), async {
            let _ = rx1.await;
            let _ = rx2.await;
        })
        .await
        .map_err(|_| anyhow!("pool watches of {ns} did not start within 30s"))?;

        let (cpu, mem) = (o.warm_cpu.clone(), o.warm_memory.clone());
        for t in [POOLED, UNPOOLED] {
            self.create_template(ns, t, &cpu, &mem).await?;
        }
        self.create_pool(ns, POOLED, POOLED, o.warm_pool as i32)
            .await?;
        let t = Instant::now();
        self.pool_quiet(ns, POOLED, o.warm_pool, Duration::from_secs(300))
            .await?;
        self.progress(&format!(
            "warm: pool of {} Ready in {:.1} s",
            o.warm_pool,
            t.elapsed().as_secs_f64()
        ));
        // One claim unmeasured: the operator's template cache, connections.
        if let Ok(s) = self.claim_one(ns, "w-warmup", POOLED).await {
            self.delete_claims(ns, std::slice::from_ref(&s)).await;
        }

        let mut errs: BTreeMap<&str, usize> = BTreeMap::new();
        let (mut seq, mut cold, mut bare, mut drained, mut conc) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut anomalies: Vec<String> = Vec::new();

        // 1. One at a time, the pool back at its size before each; rounds alternate between a
        //    warm claim, a cold templated Sandbox and a bare Pod.
        let part: Result<()> = async {
        for r in 0..o.warm_runs.max(o.warm_cold_runs) {
            if r < o.warm_runs {
                self.pool_quiet(ns, POOLED, o.warm_pool, TIMEOUT).await?;
                tokio::time::sleep(SETTLE).await;
                match self.claim_one(ns, &format!("w-seq-{r:02}"), POOLED).await {
                    Ok(s) => {
                        if s.mode != Some(StartMode::Warm) {
                            anomalies.push(format!(
                                "sequential claim {} started {} ({} ms) with {} Ready pool pods before the claim (pod {})",
                                s.name, s.mode_str(), fmt_num(s.total), o.warm_pool, s.pod
                            ));
                        }
                        self.delete_claims(ns, std::slice::from_ref(&s)).await;
                        seq.push(s);
                    }
                    Err(e) => self.warm_error(&mut errs, "seq", e),
                }
            }
            if r < o.warm_cold_runs {
                self.pool_quiet(ns, POOLED, o.warm_pool, TIMEOUT).await?;
                tokio::time::sleep(SETTLE).await;
                match self.claim_one(ns, &format!("w-cold-{r:02}"), UNPOOLED).await {
                    Ok(s) => {
                        self.delete_claims(ns, std::slice::from_ref(&s)).await;
                        cold.push(s);
                    }
                    Err(e) => self.warm_error(&mut errs, "cold", e),
                }
                tokio::time::sleep(SETTLE).await;
                match self.bare_one(ns, &format!("w-bare-{r:02}"), &cpu, &mem).await {
                    Ok(s) => bare.push(s),
                    Err(e) => self.warm_error(&mut errs, "bare", e),
                }
            }
        }
        Ok(())
        }
        .await;
        if let Err(e) = part {
            self.warm_error(&mut errs, "seq", e);
        }
        self.progress(&format!(
            "warm: {} sequential claims, {} cold templated Sandboxes, {} bare Pods",
            seq.len(),
            cold.len(),
            bare.len()
        ));

        // 2. CreateSandbox{template, wait_ready} + Exec `echo hi` through the gateway.
        let (gw, stop, server) = self.warm_gateway(ns).await?;
        let exec_res = async {
            let mut runs: Vec<(bool, Result<ExecStart>)> = Vec::new();
            // Unmeasured: the gateway's first call, its connections.
            if let Ok(x) = self.create_exec(&gw, ns, "w-exec-warmup", POOLED).await {
                self.delete_by_name(ns, "w-exec-warmup", &x.pod).await;
            }
            for r in 0..o.warm_exec_runs.max(o.warm_exec_cold_runs) {
                if r < o.warm_exec_runs {
                    self.pool_quiet(ns, POOLED, o.warm_pool, TIMEOUT).await?;
                    tokio::time::sleep(SETTLE).await;
                    let name = format!("w-exec-{r:02}");
                    let x = self.create_exec(&gw, ns, &name, POOLED).await;
                    if let Ok(x) = &x {
                        self.delete_by_name(ns, &name, &x.pod).await;
                    }
                    runs.push((true, x));
                }
                if r < o.warm_exec_cold_runs {
                    self.pool_quiet(ns, POOLED, o.warm_pool, TIMEOUT).await?;
                    tokio::time::sleep(SETTLE).await;
                    let name = format!("w-exec-cold-{r:02}");
                    let x = self.create_exec(&gw, ns, &name, UNPOOLED).await;
                    if let Ok(x) = &x {
                        self.delete_by_name(ns, &name, &x.pod).await;
                    }
                    runs.push((false, x));
                }
            }
            Ok::<_, anyhow::Error>(runs)
        }
        .await;
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        let exec_runs = exec_res.unwrap_or_else(|e| {
            self.warm_error(&mut errs, "create+exec", e);
            Vec::new()
        });
        self.progress(&format!("warm: {} create+exec runs", exec_runs.len()));

        // 3. N at once against a pool of N Ready pods.
        let c = o.warm_concurrency;
        let mut makespans = Vec::new();
        let part: Result<()> = async {
        if o.warm_concurrent_rounds > 0 {
            self.scale_pool(ns, POOLED, c as i32).await?;
            for round in 0..o.warm_concurrent_rounds {
                let t = Instant::now();
                self.pool_quiet(ns, POOLED, c, Duration::from_secs(600))
                    .await?;
                self.progress(&format!(
                    "warm: pool of {c} Ready ({:.1} s), round {round}",
                    t.elapsed().as_secs_f64()
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
                // Connections for the creates, as the sequential claims had.
                let tpl: Api<airlock_crds::SandboxTemplate> =
                    Api::namespaced(self.kube.clone(), ns);
                let _ = futures::future::join_all((0..c).map(|_| tpl.get(POOLED))).await;
                let names: Vec<String> = (0..c).map(|i| format!("w-cc{round}-{i:02}")).collect();
                let objs: Vec<Sandbox> = names
                    .iter()
                    .map(|n| self.claim_object(n, POOLED))
                    .collect::<Result<_>>()?;
                let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
                let (sent, span) = all_at_once(c, |i| {
                    let (api, sb) = (api.clone(), objs[i].clone());
                    async move {
                        let t0 = Instant::now();
                        api.create(&PostParams::default(), &sb).await?;
                        Ok((t0, Instant::now()))
                    }
                })
                .await;
                let mut round_starts = Vec::new();
                for (name, r) in names.iter().zip(sent) {
                    let r = match r {
                        Ok((t0, t_ret)) => self.finish_start(ns, name, t0, t_ret).await,
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(s) => round_starts.push(s),
                        Err(e) => self.warm_error(&mut errs, "concurrent", e),
                    }
                }
                if let Some(d) = dist(&round_starts.iter().map(|s| s.total).collect::<Vec<_>>()) {
                    makespans.push(d.max);
                }
                let _ = span;
                for s in &round_starts {
                    if s.mode != Some(StartMode::Warm) {
                        anomalies.push(format!(
                            "concurrent round {round}: claim {} started {} ({} ms) with {c} Ready pool pods before the round (pod {})",
                            s.name,
                            s.mode_str(),
                            fmt_num(s.total),
                            s.pod
                        ));
                    }
                }
                self.delete_claims(ns, &round_starts).await;
                conc.extend(round_starts);
            }
        }
        Ok(())
        }
        .await;
        if let Err(e) = part {
            self.warm_error(&mut errs, "concurrent", e);
        }

        // 4. Drained: the pool scaled to 0, claims fall back to cold starts.
        let part: Result<()> = async {
            self.scale_pool(ns, POOLED, 0).await?;
            self.pool_quiet(ns, POOLED, 0, TIMEOUT).await?;
            for r in 0..o.warm_drained_runs {
                tokio::time::sleep(SETTLE).await;
                match self.claim_one(ns, &format!("w-drain-{r:02}"), POOLED).await {
                    Ok(s) => {
                        if s.mode != Some(StartMode::Cold) {
                            anomalies.push(format!(
                                "drained-pool claim {} started {} (pod {})",
                                s.name,
                                s.mode_str(),
                                s.pod
                            ));
                        }
                        self.delete_claims(ns, std::slice::from_ref(&s)).await;
                        drained.push(s);
                    }
                    Err(e) => self.warm_error(&mut errs, "drained", e),
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = part {
            self.warm_error(&mut errs, "drained", e);
        }
        self.progress(&format!(
            "warm: {} concurrent claims, {} drained-pool claims",
            conc.len(),
            drained.len()
        ));

        // 5. Refill: a new pool of the template at 0, scaled to N.
        let n = o.warm_refill_size;
        let mut m_refill = Metric::new(
            &format!("warm.refill{n}.status"),
            &format!("pool scaled 0 -> {n}: patch sent -> status.readyReplicas == {n}"),
            "ms",
        );
        let mut m_first = Metric::new(
            &format!("warm.refill{n}.first_pod_ready"),
            &format!("pool scaled 0 -> {n}: patch sent -> first pool pod Ready (pod watch)"),
            "ms",
        );
        let mut m_last = Metric::new(
            &format!("warm.refill{n}.last_pod_ready"),
            &format!(
                "pool scaled 0 -> {n}: patch sent -> last of the {n} pool pods Ready (pod watch)"
            ),
            "ms",
        );
        for r in 0..o.warm_refill_runs {
            match self.refill_one(ns, &format!("refill{r}"), n).await {
                Ok((status, first, last)) => {
                    m_refill.values.push(status);
                    m_first.values.push(first);
                    m_last.values.push(last);
                }
                Err(e) => {
                    m_refill.errors += 1;
                    self.report
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("warm refill {r}: {e:#}"));
                }
            }
        }
        self.progress(&format!("warm: {} refills of {n}", m_refill.values.len()));

        // Figures.
        let err = |k: &str| errs.get(k).copied().unwrap_or(0);
        let warm_only = |v: &[Start]| -> Vec<Start> {
            v.iter()
                .filter(|s| s.mode == Some(StartMode::Warm))
                .cloned()
                .collect()
        };
        let (seq_w, conc_w) = (warm_only(&seq), warm_only(&conc));
        let mut m_seq = metric_of(
            "warm.claim.sequential",
            &format!(
                "warm claim, one at a time (pool of {}, back at its size before each): create -> Ready",
                o.warm_pool
            ),
            &seq_w,
            err("seq"),
        );
        let mut m_seq_op = Metric::new(
            "warm.claim.sequential.seen_to_ready",
            "warm claim, one at a time: Sandbox seen (watch) -> Ready (the operator's claim: adopt, bind, status)",
            "ms",
        );
        m_seq_op.values = seq_w
            .iter()
            .filter_map(|s| Some(s.total - s.marks.get("sbx.created")?))
            .collect();
        let mut m_conc = metric_of(
            &format!("warm.claim.concurrent{c}"),
            &format!("{c} concurrent warm claims (pool of {c} Ready): create -> Ready"),
            &conc_w,
            err("concurrent"),
        );
        if !makespans.is_empty() {
            m_conc.note = format!(
                "{} round(s); last of the {c} Ready after {} ms",
                makespans.len(),
                makespans
                    .iter()
                    .map(|x| fmt_num(*x))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let m_cold = metric_of(
            "warm.cold_template",
            "templated Sandbox, no pool of its template (cold start): create -> Ready",
            &cold,
            err("cold"),
        );
        let m_bare = metric_of(
            "warm.bare.gvisor",
            "bare Pod, same image, RuntimeClass and resources (floor): create -> Ready",
            &bare,
            err("bare"),
        );
        let mut m_drained = metric_of(
            "warm.drained",
            "claim of a drained pool (scaled to 0, cold fallback): create -> Ready",
            &drained,
            err("drained"),
        );
        let dm = count_modes(&drained);
        m_drained.note = format!("startMode: {} Cold, {} Warm", dm["cold"], dm["warm"]);
        for (m, all, w) in [(&mut m_seq, &seq, &seq_w), (&mut m_conc, &conc, &conc_w)] {
            let cold_n = all.len() - w.len();
            if cold_n > 0 {
                m.errors += cold_n;
                let sep = if m.note.is_empty() { "" } else { "; " };
                m.note = format!(
                    "{}{sep}{cold_n} went Cold, counted as errors (see notes)",
                    m.note
                );
            }
        }

        // Create + exec.
        let mk = |id: &str, name: &str| Metric::new(id, name, "ms");
        let mut x_first = mk(
            "warm.exec.first_byte.warm",
            "warm: CreateSandbox{template, wait_ready} sent -> first stdout byte of Exec `echo hi`",
        );
        let mut x_created = mk(
            "warm.exec.create_returned.warm",
            "warm: CreateSandbox{template, wait_ready} sent -> returned",
        );
        let mut x_seen = mk(
            "warm.exec.ready_seen.warm",
            "warm: CreateSandbox sent -> Sandbox Ready seen by this process's watch",
        );
        let mut x_ttfb = mk(
            "warm.exec.ttfb.warm",
            "warm: Exec `echo hi` sent (after CreateSandbox returned) -> first stdout byte",
        );
        let mut x_again = mk(
            "warm.exec.ttfb_second.warm",
            "warm: a second Exec `echo hi` in the same sandbox -> first stdout byte",
        );
        let mut x_cold = mk(
            "warm.exec.first_byte.cold",
            "cold (template without a pool): CreateSandbox sent -> first stdout byte of Exec `echo hi`",
        );
        let mut x_modes: BTreeMap<String, usize> = BTreeMap::new();
        for (warm, r) in &exec_runs {
            match r {
                Ok(x) => {
                    *x_modes
                        .entry(format!(
                            "{}: {}",
                            if *warm {
                                "pooled template"
                            } else {
                                "template without a pool"
                            },
                            if x.mode.is_empty() { "-" } else { &x.mode }
                        ))
                        .or_default() += 1;
                    if *warm {
                        if x.mode != "Warm" {
                            anomalies.push(format!(
                                "CreateSandbox {} (pooled template, pool of {} Ready) started {:?} ({} ms to first byte)",
                                x.name, o.warm_pool, x.mode, fmt_num(x.first_byte)
                            ));
                            x_first.errors += 1;
                            continue;
                        }
                        x_first.values.push(x.first_byte);
                        x_created.values.push(x.returned);
                        x_ttfb.values.push(x.first_byte - x.returned);
                        if let Some(s) = x.seen {
                            x_seen.values.push(s);
                        }
                        match x.again {
                            Some(a) => x_again.values.push(a),
                            None => x_again.errors += 1,
                        }
                    } else {
                        x_cold.values.push(x.first_byte);
                    }
                }
                Err(e) => {
                    let m = if *warm { &mut x_first } else { &mut x_cold };
                    m.errors += 1;
                    self.report
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("warm create+exec: {e:#}"));
                }
            }
        }

        let ratios = [
            ratio("warm claim / cold templated Sandbox", &m_seq, &m_cold),
            ratio("warm claim / bare Pod, gVisor", &m_seq, &m_bare),
            ratio(
                "cold templated Sandbox / bare Pod, gVisor",
                &m_cold,
                &m_bare,
            ),
            ratio(
                &format!("{c} concurrent warm claims / one at a time"),
                &m_conc,
                &m_seq,
            ),
            ratio(
                "drained-pool claim (cold fallback) / templated Sandbox without a pool",
                &m_drained,
                &m_cold,
            ),
            ratio("create + first exec output: warm / cold", &x_first, &x_cold),
            ratio(
                "create + first exec output, warm / warm claim create -> Ready",
                &x_first,
                &m_seq,
            ),
            ratio(
                "first exec into a fresh claim / second exec in it (first stdout byte)",
                &x_ttfb,
                &x_again,
            ),
        ];
        let p50 = |m: &Metric| m.dist().map(|d| d.p50);
        let p99 = |m: &Metric| m.dist().map(|d| d.p99);
        let goals: Vec<(String, String, Option<f64>, Option<bool>)> = vec![
            (
                "warm claim create -> Ready, one at a time (p50)".into(),
                "<= 15 ms".into(),
                p50(&m_seq),
                p50(&m_seq).map(|x| x <= 15.0),
            ),
            (
                format!("warm claim create -> Ready, {c} concurrent (p99)"),
                "<= 100 ms".into(),
                p99(&m_conc),
                p99(&m_conc).map(|x| x <= 100.0),
            ),
            (
                "warm CreateSandbox{template, wait_ready} + Exec -> first output byte (p50)".into(),
                "<= 30 ms".into(),
                p50(&x_first),
                p50(&x_first).map(|x| x <= 30.0),
            ),
            (
                "warm claim p50 vs the peer kubernetes-sigs/agent-sandbox (17-18 ms p50 on this cluster; measured separately, not in this run)".into(),
                "< 17 ms".into(),
                p50(&m_seq),
                p50(&m_seq).map(|x| x < 17.0),
            ),
        ];
        let mut goals_md = String::from(
            "| goal (not an assertion) | target | measured | met |\n|---|---|---:|---|\n",
        );
        for (what, target, measured, met) in &goals {
            let m = fmt_opt(*measured, "ms");
            goals_md.push_str(&format!(
                "| {what} | {target} | {m} | {} |\n",
                match met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "-",
                }
            ));
            self.target(what, target, m, *met);
        }

        let start_metrics: Vec<&Metric> =
            vec![&m_seq, &m_seq_op, &m_conc, &m_cold, &m_bare, &m_drained];
        let exec_metrics: Vec<&Metric> =
            vec![&x_first, &x_created, &x_seen, &x_ttfb, &x_again, &x_cold];
        let refill_metrics: Vec<&Metric> = vec![&m_refill, &m_first, &m_last];
        let mut all: Vec<&Metric> = Vec::new();
        all.extend(start_metrics.iter().copied());
        all.extend(exec_metrics.iter().copied());
        all.extend(refill_metrics.iter().copied());
        self.metrics(&all);
        let rrefs: Vec<&Ratio> = ratios.iter().collect();
        self.ratios(&rrefs);

        // Milestones, p50 ms after the create call.
        let variants: [(&str, &str, &[Start]); 5] = [
            ("sequential", "warm, one at a time", &seq_w),
            ("concurrent", "warm, concurrent", &conc_w),
            ("cold_template", "cold templated Sandbox", &cold),
            ("drained", "drained-pool claim", &drained),
            ("bare", "bare Pod", &bare),
        ];
        let steps: &[(&str, &str)] = &[
            ("returned", "create call returned"),
            ("sbx.created", "Sandbox seen (watch ADDED)"),
            ("sbx.status", "first status written by the operator"),
            (
                "claimed",
                "pool pod seen carrying the Sandbox's label (adopted)",
            ),
            ("pod.created", "Pod seen (cold start)"),
            ("pod.scheduled", "Pod bound to the node"),
            ("pod.running", "main container running"),
            ("pod.ready", "Pod Ready condition"),
            ("sbx.ready", "Sandbox Ready condition"),
        ];
        let mut ms_md = String::from("| milestone (p50 ms after the create call) |");
        for (_, label, _) in &variants {
            ms_md.push_str(&format!(" {label} |"));
        }
        ms_md.push_str("\n|---|");
        for _ in &variants {
            ms_md.push_str("---:|");
        }
        ms_md.push('\n');
        let mut bjson = serde_json::Map::new();
        for (step, label) in steps {
            ms_md.push_str(&format!("| {label} |"));
            for (id, _, starts) in &variants {
                let vals: Vec<f64> = starts
                    .iter()
                    .filter_map(|s| s.marks.get(*step).copied())
                    .collect();
                ms_md.push_str(&format!(
                    " {} |",
                    dist(&vals)
                        .map(|d| fmt_num(d.p50))
                        .unwrap_or_else(|| "-".into())
                ));
                bjson
                    .entry(id.to_string())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .unwrap()
                    .insert(step.to_string(), json!(dist(&vals)));
            }
            ms_md.push('\n');
        }
        let modes = json!({
            "sequential": count_modes(&seq),
            "concurrent": count_modes(&conc),
            "cold_template": count_modes(&cold),
            "drained": count_modes(&drained),
            "create_exec": x_modes,
        });
        // The slowest warm claims, with their milestones (evidence for the tails).
        let mut slow: Vec<&Start> = seq_w.iter().chain(conc_w.iter()).collect();
        slow.sort_by(|a, b| b.total.total_cmp(&a.total));
        let slowest: Vec<Value> = slow
            .iter()
            .take(3)
            .map(
                |s| json!({"name": s.name, "pod": s.pod, "total_ms": s.total, "marks_ms": s.marks}),
            )
            .collect();
        {
            let mut r = self.report.lock().unwrap();
            r.breakdowns.insert(
                "warm".into(),
                json!({"milestones": Value::Object(bjson), "start_modes": modes, "slowest_warm_claims": slowest, "anomalies": anomalies}),
            );
        }
        let operator_after = operator_pods(&self.kube).await;
        if operator_after != operator_before {
            anomalies.push(format!(
                "the operator's pods changed during the phase (figures around that moment are disturbed): {operator_before:?} -> {operator_after:?}"
            ));
        }
        for a in &anomalies {
            self.note(format!("warm pools: {a}"));
        }
        let mode_line = |label: &str, v: &[Start]| {
            let m = count_modes(v);
            format!("{label}: {} Warm, {} Cold", m["warm"], m["cold"])
        };
        let slow_md = slow
            .iter()
            .take(3)
            .map(|s| {
                format!(
                    "`{}` {} ms ({})",
                    s.name,
                    fmt_num(s.total),
                    s.marks
                        .iter()
                        .map(|(k, v)| format!("{k} {}", fmt_num(*v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        self.section(
            "Warm pools",
            format!(
                "SandboxTemplate `{POOLED}` with a SandboxPool, and the same template `{UNPOOLED}` without one: image {SANDBOX_IMAGE} \
                 (imagePullPolicy Never), RuntimeClass {GVISOR}, cpu {cpu}, memory {mem} (requests = limits); the bare Pod has the \
                 same image, RuntimeClass and resources (`sleep infinity`). Create -> Ready is from the create call (taken right before \
                 it is sent) to the first watch event showing the Ready condition True (the Sandbox's; the Pod's for the bare Pod), as \
                 in \"Time to Ready\". One at a time: before every measurement the pool is back at its size ({} Ready pods, pool \
                 status and pod list agree) plus {} ms, and the previous object's pod is gone; rounds alternate between a warm claim, a \
                 cold templated Sandbox and a bare Pod. Concurrent: the pool is scaled to {c} and, once all are Ready, {c} Sandboxes \
                 are created at the same moment (each its own create call; the client's connections opened beforehand); a claim \
                 that went Cold is not in the warm figures (counted as an error, listed in the notes). Drained: the pool scaled \
                 to 0, claims naming its template. Create + exec: the gateway in-process (auth none, direct path to the agent) \
                 with `CreateSandbox{{template, wait_ready: true}}`, then `Exec echo hi` on the same client, timed to the first \
                 stdout byte; then the same exec once more (the steady state of an exec, for comparison). Refill: a new pool of the template created at 0 replicas, then `spec.replicas` patched to {n}; \
                 its status as seen by a watch. The phase holds the cluster lock (`/tmp/airlock-cluster.lock`), so tests that \
                 restart or scale the operator wait for it. A first claim and a first create+exec (not measured) warm the caches.\n\n\
                 {goals_md}\n\
                 Create -> Ready:\n\n{}\nCreate -> first exec output (what an agent feels):\n\n{}\nRefill:\n\n{}\n{}\n\
                 Start modes (`status.startMode`): {}; {}; {}; {}; create+exec: {}.\n\n\
                 Milestones as first seen by a watch:\n\n{ms_md}\nSlowest warm claims: {}.\n",
                o.warm_pool,
                SETTLE.as_millis(),
                table(&start_metrics),
                table(&exec_metrics),
                table(&refill_metrics),
                ratio_table(&rrefs),
                mode_line("one at a time", &seq),
                mode_line(&format!("{c} concurrent"), &conc),
                mode_line("template without a pool", &cold),
                mode_line("drained pool", &drained),
                serde_json::to_string(&modes["create_exec"]).unwrap_or_default(),
                if slow_md.is_empty() { "-".to_string() } else { slow_md },
            ),
        );
        Ok(())
    }

    fn warm_error(
        &self,
        errs: &mut BTreeMap<&'static str, usize>,
        what: &'static str,
        e: anyhow::Error,
    ) {
        let n = errs.entry(what).or_default();
        *n += 1;
        if *n <= 3 {
            eprintln!("bench: warm {what}: {e:#}");
        }
        self.report
            .lock()
            .unwrap()
            .errors
            .push(format!("warm {what}: {e:#}"));
    }

    async fn create_template(&self, ns: &str, name: &str, cpu: &str, mem: &str) -> Result<()> {
        let t: airlock_crds::SandboxTemplate = serde_json::from_value(json!({
            "apiVersion": "airlock.dev/v1alpha1", "kind": "SandboxTemplate",
            "metadata": {"name": name, "labels": {BENCH_LABEL: "true", PHASE_LABEL: PHASE}},
            "spec": {
                "image": SANDBOX_IMAGE, "imagePullPolicy": "Never", "runtimeClassName": GVISOR,
                "resources": {"cpu": cpu, "memory": mem},
                "lifetime": {"ttlSeconds": 3600}
            }
        }))?;
        Api::<airlock_crds::SandboxTemplate>::namespaced(self.kube.clone(), ns)
            .create(&Self::pp(), &t)
            .await
            .with_context(|| format!("creating SandboxTemplate {ns}/{name}"))?;
        Ok(())
    }

    async fn create_pool(&self, ns: &str, name: &str, template: &str, replicas: i32) -> Result<()> {
        let p: SandboxPool = serde_json::from_value(json!({
            "apiVersion": "airlock.dev/v1alpha1", "kind": "SandboxPool",
            "metadata": {"name": name, "labels": {BENCH_LABEL: "true", PHASE_LABEL: PHASE}},
            "spec": {"templateRef": {"name": template}, "replicas": replicas}
        }))?;
        Api::<SandboxPool>::namespaced(self.kube.clone(), ns)
            .create(&Self::pp(), &p)
            .await
            .with_context(|| format!("creating SandboxPool {ns}/{name}"))?;
        Ok(())
    }

    async fn scale_pool(&self, ns: &str, name: &str, replicas: i32) -> Result<()> {
        Api::<SandboxPool>::namespaced(self.kube.clone(), ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .with_context(|| format!("scaling SandboxPool {ns}/{name} to {replicas}"))?;
        Ok(())
    }

    /// Waits until the pool holds exactly `n` pods, all Ready and not being deleted, and its
    /// status says so.
    async fn pool_quiet(&self, ns: &str, pool: &str, n: usize, timeout: Duration) -> Result<()> {
        let pools: Api<SandboxPool> = Api::namespaced(self.kube.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let lp = ListParams::default().labels(&format!("{}={pool}", labels::POOL));
        let t = Instant::now();
        loop {
            let st = pools.get(pool).await?.status.unwrap_or_default();
            let list = pods.list(&lp).await?.items;
            let ready = list
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none() && airlock_e2e::release::is_ready(p)
                })
                .count();
            if st.ready_replicas as usize == n
                && st.replicas as usize == n
                && ready == n
                && list.len() == n
            {
                return Ok(());
            }
            if t.elapsed() > timeout {
                bail!(
                    "pool {ns}/{pool} not at {n} Ready pods after {timeout:?}: status ready {} of {}, {} pods listed, {ready} Ready",
                    st.ready_replicas,
                    st.replicas,
                    list.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn claim_object(&self, name: &str, template: &str) -> Result<Sandbox> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "airlock.dev/v1alpha1", "kind": "Sandbox",
            "metadata": {"name": name, "labels": {BENCH_LABEL: "true", PHASE_LABEL: PHASE}},
            "spec": {"templateRef": {"name": template}}
        }))?)
    }

    /// Creates a Sandbox naming `template` and waits until it is Ready.
    async fn claim_one(&self, ns: &str, name: &str, template: &str) -> Result<Start> {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        let sb = self.claim_object(name, template)?;
        let t0 = Instant::now();
        api.create(&Self::pp(), &sb)
            .await
            .with_context(|| format!("creating Sandbox {name}"))?;
        let t_ret = Instant::now();
        self.finish_start(ns, name, t0, t_ret).await
    }

    /// Waits for the Sandbox's Ready; its start mode, pod and milestones.
    async fn finish_start(
        &self,
        ns: &str,
        name: &str,
        t0: Instant,
        t_ret: Instant,
    ) -> Result<Start> {
        let ready = self
            .rec
            .wait(&key("sbx", ns, name), "ready", TIMEOUT)
            .await?;
        let s = Api::<Sandbox>::namespaced(self.kube.clone(), ns)
            .get(name)
            .await?;
        let st = s.status.as_ref();
        let mode = st.and_then(|s| s.start_mode);
        let pod = st
            .and_then(|s| s.pod_name.clone())
            .unwrap_or_else(|| labels::pod_name(name));
        let mut marks = BTreeMap::new();
        marks.insert("returned".to_string(), ms_between(t0, t_ret));
        for (k, x) in self.rec.all(&key("sbx", ns, name)) {
            marks.insert(format!("sbx.{k}"), ms_between(t0, x));
        }
        if mode == Some(StartMode::Warm) {
            if let Some(x) = self
                .rec
                .get(&key("claim", ns, &pod), &format!("claimed:{name}"))
            {
                marks.insert("claimed".into(), ms_between(t0, x));
            }
        } else {
            for (k, x) in self.rec.all(&key("pod", ns, &pod)) {
                marks.insert(format!("pod.{k}"), ms_between(t0, x));
            }
        }
        Ok(Start {
            name: name.to_string(),
            total: ms_between(t0, ready),
            marks,
            mode,
            pod,
        })
    }

    /// A bare Pod of the template's image, RuntimeClass and resources, to Ready, then deleted.
    async fn bare_one(&self, ns: &str, name: &str, cpu: &str, mem: &str) -> Result<Start> {
        let api: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
        let mut p = self.bare_pod(name, GVISOR, cpu, mem)?;
        p.metadata
            .labels
            .get_or_insert_default()
            .insert(PHASE_LABEL.into(), PHASE.into());
        if let Some(c) = p.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            c.image_pull_policy = Some("Never".into());
        }
        let t0 = Instant::now();
        api.create(&Self::pp(), &p).await?;
        let t_ret = Instant::now();
        let k = key("pod", ns, name);
        let r = self.rec.wait(&k, "ready", TIMEOUT).await;
        let mut marks = BTreeMap::new();
        marks.insert("returned".to_string(), ms_between(t0, t_ret));
        for (m, x) in self.rec.all(&k) {
            marks.insert(format!("pod.{m}"), ms_between(t0, x));
        }
        let _ = api
            .delete(
                name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::background()
                },
            )
            .await;
        if let Err(e) = self.rec.wait(&k, "gone", Duration::from_secs(120)).await {
            self.note(format!("warm phase: {e}"));
        }
        let ready = r?;
        Ok(Start {
            name: name.to_string(),
            total: ms_between(t0, ready),
            marks,
            mode: None,
            pod: name.to_string(),
        })
    }

    /// Deletes the Sandboxes and waits until their pods are gone.
    async fn delete_claims(&self, ns: &str, starts: &[Start]) {
        let api: Api<Sandbox> = Api::namespaced(self.kube.clone(), ns);
        for s in starts {
            let _ = api.delete(&s.name, &DeleteParams::background()).await;
        }
        for s in starts {
            if let Err(e) = self
                .rec
                .wait(&key("pod", ns, &s.pod), "gone", Duration::from_secs(120))
                .await
            {
                self.note(format!("warm phase: {e}"));
            }
        }
    }

    async fn delete_by_name(&self, ns: &str, name: &str, pod: &str) {
        let s = Start {
            name: name.into(),
            total: 0.0,
            marks: BTreeMap::new(),
            mode: None,
            pod: pod.into(),
        };
        self.delete_claims(ns, std::slice::from_ref(&s)).await;
    }

    /// The gateway in-process, as in `exec` (auth none, the release's agent key, direct path).
    pub(crate) async fn warm_gateway(
        &self,
        ns: &str,
    ) -> Result<(
        AirlockClient,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let mut config = airlock_exec_gateway::Config::new(AuthMode::None)
            .with_client(Client::try_default().await?)
            .with_default_namespace(ns);
        config.shutdown_grace = Duration::from_secs(1);
        config.agent_key = airlock_e2e::release::agent_key(&self.kube)
            .await
            .map(std::sync::Arc::new);
        if config.agent_key.is_some() {
            config.agent_transport = airlock_exec_gateway::agent::Transport::Direct;
        } else {
            self.note("warm pools: the release has no agent key (agentDirect off): the in-process gateway used pods/exec");
        }
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            if let Err(e) = airlock_exec_gateway::serve(config, listener, async move {
                let _ = stop_rx.await;
            })
            .await
            {
                eprintln!("bench: warm: in-process gateway: {e}");
            }
        });
        let gw = AirlockClient::connect(&addr, None).await?;
        Ok((gw, stop, server))
    }

    /// CreateSandbox{template, wait_ready} then Exec `echo hi`, timed from the create call.
    async fn create_exec(
        &self,
        gw: &AirlockClient,
        ns: &str,
        name: &str,
        template: &str,
    ) -> Result<ExecStart> {
        let t0 = Instant::now();
        let sb = gw
            .create_sandbox_ready(
                pb::CreateSandboxRequest {
                    namespace: ns.into(),
                    name: name.into(),
                    source: Some(pb::create_sandbox_request::Source::Template(
                        template.into(),
                    )),
                    ..Default::default()
                },
                TIMEOUT,
            )
            .await
            .with_context(|| format!("CreateSandbox {name} (template {template})"))?;
        let t1 = Instant::now();
        let s = gw_stream(gw, ns, name, &["echo", "hi"], Some(3))
            .await
            .with_context(|| format!("Exec echo hi in {name}"))?;
        let first_byte = ms_between(t0, t1) + ms(s.ttfb);
        // The same again: an exec into a sandbox that already served one.
        let again = gw_stream(gw, ns, name, &["echo", "hi"], Some(3))
            .await
            .map(|s| ms(s.ttfb))
            .ok();
        let seen = self
            .rec
            .get(&key("sbx", ns, name), "ready")
            .map(|t| ms_between(t0, t));
        Ok(ExecStart {
            name: name.into(),
            first_byte,
            returned: ms_between(t0, t1),
            seen,
            again,
            mode: sb.start_mode.clone(),
            pod: if sb.pod_name.is_empty() {
                labels::pod_name(name)
            } else {
                sb.pod_name
            },
        })
    }

    /// A new pool of the pooled template at 0, scaled to `n`: (status readyReplicas == n, first
    /// pod Ready, last pod Ready), ms after the patch; then the pool is deleted and its pods gone.
    async fn refill_one(&self, ns: &str, name: &str, n: usize) -> Result<(f64, f64, f64)> {
        self.create_pool(ns, name, POOLED, 0).await?;
        let pools: Api<SandboxPool> = Api::namespaced(self.kube.clone(), ns);
        let t = Instant::now();
        loop {
            let p = pools.get(name).await?;
            if p.status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .is_some_and(|g| Some(g) == p.metadata.generation)
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("pool {name}: no status after 60s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(SETTLE).await;
        let t0 = Instant::now();
        self.scale_pool(ns, name, n as i32).await?;
        let r = self
            .rec
            .wait(
                &key("pool", ns, name),
                &format!("ready:{n}"),
                Duration::from_secs(600),
            )
            .await;
        let lp = ListParams::default().labels(&format!("{}={name}", labels::POOL));
        let pods = Api::<Pod>::namespaced(self.kube.clone(), ns)
            .list(&lp)
            .await?
            .items;
        let readies: Vec<f64> = pods
            .iter()
            .filter_map(|p| self.rec.get(&key("pod", ns, &p.name_any()), "ready"))
            .map(|x| ms_between(t0, x))
            .collect();
        let _ = pools.delete(name, &DeleteParams::background()).await;
        for p in &pods {
            if let Err(e) = self
                .rec
                .wait(
                    &key("pod", ns, &p.name_any()),
                    "gone",
                    Duration::from_secs(180),
                )
                .await
            {
                self.note(format!("warm refill: {e}"));
            }
        }
        let status = ms_between(t0, r?);
        let d = dist(&readies).ok_or_else(|| anyhow!("pool {name}: no pod Ready seen"))?;
        if readies.len() != n {
            bail!("pool {name}: {} pods Ready, expected {n}", readies.len());
        }
        self.progress(&format!("warm: refill {name}: {} ms", fmt_num(status)));
        Ok((status, d.min, d.max))
    }
}

pub(crate) struct ExecStart {
    name: String,
    first_byte: f64,
    returned: f64,
    seen: Option<f64>,
    again: Option<f64>,
    mode: String,
    pod: String,
}
