//! The operator's Prometheus metrics: one registry, the families in it, and the few methods the
//! reconcilers and caches call. Served on `/metrics` by [`crate::http`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `Content-Type` of what [`Metrics::encode`] returns (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapacityLabels {
    namespace: String,
    bridge: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

type HistogramFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

/// Every metric the operator exports. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily,
    managed: Family<KindLabels, Gauge>,
    capacity: Family<CapacityLabels, Gauge>,
    meetings: Family<PhaseLabels, Gauge>,
    invalid: Family<KindLabels, Gauge>,
    /// Phases set by the last `set_meetings_by_phase`, so a phase that empties drops to 0
    /// instead of keeping its last count.
    phases: Mutex<Vec<String>>,
    leader: Gauge,
}

fn duration_histogram() -> Histogram {
    // 5 ms .. ~41 s: a converged reconcile is milliseconds, one that applies every child of a
    // large Bridge against a slow API server takes seconds.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let reconciles = Family::<KindLabels, Counter>::default();
        registry.register(
            "conclave_reconciles",
            "Reconciles run, by kind of the reconciled object",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "conclave_reconcile_errors",
            "Reconciles that failed, by kind and reason",
            errors.clone(),
        );
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "conclave_reconcile_duration_seconds",
            "Time one reconcile took, by kind",
            duration.clone(),
        );
        let managed = Family::<KindLabels, Gauge>::default();
        registry.register(
            "conclave_managed_objects",
            "Objects carrying Conclave's managed-by label in the operator's caches, by kind",
            managed.clone(),
        );
        let capacity = Family::<CapacityLabels, Gauge>::default();
        registry.register(
            "conclave_bridge_capacity_participants",
            "SFU participant capacity of a Bridge, reserved by Meetings or still available",
            capacity.clone(),
        );
        let meetings = Family::<PhaseLabels, Gauge>::default();
        registry.register("conclave_meetings", "Meetings by phase", meetings.clone());
        let invalid = Family::<KindLabels, Gauge>::default();
        registry.register(
            "conclave_invalid_objects",
            "Objects skipped because they do not match their schema (written under an older one, or with validation off), by kind",
            invalid.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "conclave_leader",
            "1 while this process runs the controllers (holds the lease, or leader election is off)",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            managed,
            capacity,
            meetings,
            invalid,
            phases: Mutex::new(Vec::new()),
            leader,
        }
    }

    /// Records one finished reconcile of an object of `kind`; `result` carries the error's
    /// [`reason`](crate::controller::Error::reason) when it failed.
    pub fn reconcile_done(&self, kind: &str, duration: Duration, result: Result<(), &'static str>) {
        let labels = KindLabels { kind: kind.into() };
        self.reconciles.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(duration.as_secs_f64());
        if let Err(reason) = result {
            self.errors
                .get_or_create(&ErrorLabels {
                    kind: kind.into(),
                    reason: reason.into(),
                })
                .inc();
        }
    }

    /// The participant capacity of one Bridge: reserved by Meetings and still available.
    pub fn set_bridge_capacity(&self, namespace: &str, name: &str, reserved: i64, available: i64) {
        for (state, value) in [("reserved", reserved), ("available", available)] {
            self.capacity
                .get_or_create(&capacity_labels(namespace, name, state))
                .set(value);
        }
    }

    /// Drops a deleted Bridge's series, so dashboards do not show capacity that no longer exists.
    pub fn forget_bridge(&self, namespace: &str, name: &str) {
        for state in ["reserved", "available"] {
            self.capacity.remove(&capacity_labels(namespace, name, state));
        }
    }

    /// Sets the number of Meetings in each phase; a phase counted before and missing now is 0.
    pub fn set_meetings_by_phase(&self, counts: &BTreeMap<String, i64>) {
        let mut phases = self.phases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for phase in phases.iter().filter(|p| !counts.contains_key(*p)) {
            self.meetings
                .get_or_create(&PhaseLabels { phase: phase.clone() })
                .set(0);
        }
        for (phase, n) in counts {
            self.meetings
                .get_or_create(&PhaseLabels { phase: phase.clone() })
                .set(*n);
            if !phases.contains(phase) {
                phases.push(phase.clone());
            }
        }
    }

    /// The number of objects of one child kind in the caches.
    pub fn set_managed_objects(&self, kind: &str, count: usize) {
        self.managed
            .get_or_create(&KindLabels { kind: kind.into() })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The number of objects of `kind` skipped because they do not deserialize.
    pub fn set_invalid_objects(&self, kind: &str, count: i64) {
        self.invalid.get_or_create(&KindLabels { kind: kind.into() }).set(count);
    }

    /// Whether this process runs the controllers.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The whole registry in Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn capacity_labels(namespace: &str, name: &str, state: &'static str) -> CapacityLabels {
    CapacityLabels {
        namespace: namespace.into(),
        bridge: name.into(),
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_its_labels() {
        let m = Metrics::new();
        m.reconcile_done("Bridge", Duration::from_millis(12), Ok(()));
        m.reconcile_done("Bridge", Duration::from_millis(40), Err("apply_failed"));
        m.set_bridge_capacity("ns", "meet", 20, 80);
        m.set_managed_objects("Deployment", 4);
        m.set_meetings_by_phase(&BTreeMap::from([("Open".to_string(), 2), ("Pending".to_string(), 1)]));
        m.set_meetings_by_phase(&BTreeMap::from([("Open".to_string(), 3)]));
        m.set_leader(true);
        m.set_invalid_objects("Meeting", 1);
        let text = m.encode().expect("encodes");
        for line in [
            "conclave_reconciles_total{kind=\"Bridge\"} 2",
            "conclave_reconcile_errors_total{kind=\"Bridge\",reason=\"apply_failed\"} 1",
            "conclave_reconcile_duration_seconds_count{kind=\"Bridge\"} 2",
            "conclave_reconcile_duration_seconds_bucket{kind=\"Bridge\",le=\"0.02\"} 1",
            "conclave_bridge_capacity_participants{namespace=\"ns\",bridge=\"meet\",state=\"reserved\"} 20",
            "conclave_bridge_capacity_participants{namespace=\"ns\",bridge=\"meet\",state=\"available\"} 80",
            "conclave_managed_objects{kind=\"Deployment\"} 4",
            "conclave_meetings{phase=\"Open\"} 3",
            "conclave_meetings{phase=\"Pending\"} 0",
            "conclave_leader 1",
            "conclave_invalid_objects{kind=\"Meeting\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
        m.forget_bridge("ns", "meet");
        let text = m.encode().expect("encodes");
        assert!(!text.contains("bridge=\"meet\""), "{text}");
    }
}
