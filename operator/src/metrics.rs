//! Prometheus metrics, served on `/metrics` by [`crate::http`].

use std::time::Duration;

use airlock_crds::Sandbox;
use kube::core::DeserializeGuard;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed, by error kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub duration: Histogram,
    /// Sandboxes by phase (computed from the controller's cache at scrape time).
    pub sandboxes: Family<PhaseLabels, Gauge>,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// Agent ConfigMaps found with content other than the operator's bundle, and replaced.
    pub agent_bundles_replaced: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconciles: Counter::default(),
            errors: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            sandboxes: Family::default(),
            leader: Gauge::default(),
            agent_bundles_replaced: Counter::default(),
        }
    }
}

/// Phases reported by the `sandboxes` gauge, including objects without a status yet and objects
/// that cannot be read.
pub const PHASES: &[&str] = &[
    "Pending",
    "Starting",
    "Ready",
    "Expired",
    "Failed",
    "Unknown",
    "Malformed",
];

impl Metrics {
    /// Registers every metric under `airlock_operator_`.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("airlock_operator");
        r.register(
            "reconciles",
            "Sandbox reconciles run",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Sandbox reconciles that failed, by reason",
            self.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of Sandbox reconciles",
            self.duration.clone(),
        );
        r.register("sandboxes", "Sandboxes by phase", self.sandboxes.clone());
        r.register(
            "leader",
            "1 while this replica is the leader",
            self.leader.clone(),
        );
        r.register(
            "agent_bundles_replaced",
            "Agent ConfigMaps found with content other than the operator's bundle and replaced",
            self.agent_bundles_replaced.clone(),
        );
        self
    }

    pub fn reconcile_error(&self, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn observe_duration(&self, d: Duration) {
        self.duration.observe(d.as_secs_f64());
    }

    /// Recounts the sandboxes by phase.
    pub fn count_sandboxes<'a>(
        &self,
        sandboxes: impl IntoIterator<Item = &'a DeserializeGuard<Sandbox>>,
    ) {
        let mut counts: std::collections::HashMap<&'static str, i64> =
            PHASES.iter().map(|p| (*p, 0)).collect();
        for s in sandboxes {
            let phase = match &s.0 {
                Ok(s) => s
                    .status
                    .as_ref()
                    .and_then(|st| st.phase)
                    .map_or("Unknown", |p| p.as_str()),
                Err(_) => "Malformed",
            };
            *counts.entry(phase).or_default() += 1;
        }
        for (phase, n) in counts {
            self.sandboxes
                .get_or_create(&PhaseLabels {
                    phase: phase.to_string(),
                })
                .set(n);
        }
    }
}

/// Encodes the registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_prefix() {
        let mut registry = Registry::default();
        let m = Metrics::default().register(&mut registry);
        m.reconciles.inc();
        m.reconcile_error("apply");
        m.observe_duration(Duration::from_millis(20));
        m.count_sandboxes(std::iter::empty());
        let text = encode(&registry);
        assert!(
            text.contains("airlock_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains("airlock_operator_reconcile_errors_total{reason=\"apply\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("airlock_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("airlock_operator_sandboxes{phase=\"Ready\"} 0"),
            "{text}"
        );
        assert!(text.contains("airlock_operator_leader 0"), "{text}");
        assert!(
            text.contains("airlock_operator_agent_bundles_replaced_total 0"),
            "{text}"
        );
    }
}
