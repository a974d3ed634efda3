//! Milestones seen through watches: the first time a watch event shows a pod or Sandbox
//! state, on this node's clock.

use super::*;

/// The first time each milestone of each object was seen, on this process's monotonic clock.
pub(crate) struct Recorder {
    pub(crate) base_instant: Instant,
    pub(crate) base_wall: SystemTime,
    pub(crate) marks: Mutex<HashMap<String, BTreeMap<String, Instant>>>,
}

pub(crate) fn key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind}/{ns}/{name}")
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        Recorder {
            base_instant: Instant::now(),
            base_wall: SystemTime::now(),
            marks: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn mark(&self, key: &str, mark: &str, t: Instant) {
        let mut m = self.marks.lock().unwrap();
        m.entry(key.to_string())
            .or_default()
            .entry(mark.to_string())
            .or_insert(t);
    }

    pub(crate) fn get(&self, key: &str, mark: &str) -> Option<Instant> {
        self.marks
            .lock()
            .unwrap()
            .get(key)
            .and_then(|m| m.get(mark).copied())
    }

    pub(crate) fn all(&self, key: &str) -> BTreeMap<String, Instant> {
        self.marks
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) async fn wait(&self, key: &str, mark: &str, timeout: Duration) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.get(key, mark) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {key} to be {mark} (seen: {:?})",
                    self.all(key).keys().collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until every key has the mark; returns how many have it at the end.
    pub(crate) async fn wait_all(&self, keys: &[String], mark: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let n = {
                let m = self.marks.lock().unwrap();
                keys.iter()
                    .filter(|k| m.get(*k).is_some_and(|x| x.contains_key(mark)))
                    .count()
            };
            if n == keys.len() || Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wall-clock time of an instant.
    pub(crate) fn wall(&self, t: Instant) -> SystemTime {
        if t >= self.base_instant {
            self.base_wall + (t - self.base_instant)
        } else {
            self.base_wall - (self.base_instant - t)
        }
    }
}

pub(crate) fn pod_marks(p: &Pod) -> Vec<String> {
    let mut v = vec!["created".to_string()];
    if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
        v.push("scheduled".into());
    }
    if p.metadata.deletion_timestamp.is_some() {
        v.push("deleting".into());
    }
    let Some(st) = &p.status else { return v };
    for c in st.conditions.iter().flatten() {
        match (c.type_.as_str(), c.status.as_str()) {
            ("PodScheduled", "False") => v.push(format!(
                "unschedulable:{}",
                c.reason.as_deref().unwrap_or("")
            )),
            ("PodReadyToStartContainers", "True") => v.push("sandbox-ready".into()),
            ("Ready", "True") => v.push("ready".into()),
            _ => {}
        }
    }
    let inits = st.init_container_statuses.as_deref().unwrap_or_default();
    if !inits.is_empty() {
        if inits.iter().any(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        }) {
            v.push("init-started".into());
        }
        if inits
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
        {
            v.push("init-done".into());
        }
    }
    let mains = st.container_statuses.as_deref().unwrap_or_default();
    if !mains.is_empty()
        && mains
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    {
        v.push("running".into());
    }
    v
}

pub(crate) fn sandbox_marks(s: &Sandbox) -> Vec<String> {
    let mut v = vec!["created".to_string()];
    if s.metadata.deletion_timestamp.is_some() {
        v.push("deleting".into());
    }
    if let Some(st) = &s.status {
        if st.phase.is_some() {
            v.push("status".into());
        }
        if let Some(c) = s.condition(airlock_crds::condition::READY) {
            v.push(format!("reason:{}", c.reason));
        }
    }
    if s.is_ready() {
        v.push("ready".into());
    }
    v
}

/// Watches pods and Sandboxes of `ns` into the recorder; returns once both watches have listed.
pub(crate) async fn watch_namespace(
    rec: Arc<Recorder>,
    kube: &Client,
    ns: &str,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let (tx1, rx1) = tokio::sync::oneshot::channel();
    let (tx2, rx2) = tokio::sync::oneshot::channel();
    let h1 = spawn_watch(
        rec.clone(),
        Api::<Pod>::namespaced(kube.clone(), ns),
        "pod",
        pod_marks,
        tx1,
    );
    let h2 = spawn_watch(
        rec,
        Api::<Sandbox>::namespaced(kube.clone(), ns),
        "sbx",
        sandbox_marks,
        tx2,
    );
    tokio::time::timeout(Duration::from_secs(30), async {
        let _ = rx1.await;
        let _ = rx2.await;
    })
    .await
    .map_err(|_| anyhow!("watches of namespace {ns} did not start within 30s"))?;
    // The watch request itself starts right after the initial list: give it a moment so the first
    // measured event is not delivered late.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(vec![h1, h2])
}

pub(crate) fn spawn_watch<K>(
    rec: Arc<Recorder>,
    api: Api<K>,
    kind: &'static str,
    marks: fn(&K) -> Vec<String>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut s = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            let now = Instant::now();
            let Ok(ev) = ev else { continue };
            match ev {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    let k = key(kind, &o.namespace().unwrap_or_default(), &o.name_any());
                    for m in marks(&o) {
                        rec.mark(&k, &m, now);
                    }
                }
                watcher::Event::Delete(o) => {
                    let k = key(kind, &o.namespace().unwrap_or_default(), &o.name_any());
                    rec.mark(&k, "deleting", now);
                    rec.mark(&k, "gone", now);
                }
                watcher::Event::InitDone => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                watcher::Event::Init => {}
            }
        }
    })
}
