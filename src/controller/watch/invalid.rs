//! Objects that do not deserialize: kept out of the caches, and reported once per version in
//! the log, as a Warning Event on the object, and in `conclave_invalid_objects{kind}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;

use super::super::events::Events;
use crate::metrics::Metrics;

/// Reason of the Warning Event on an object that cannot be read.
pub const REASON: &str = "InvalidObject";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: &'static str,
    namespace: Option<String>,
    name: String,
}

struct Entry {
    resource_version: Option<String>,
    /// The (re)list it was last seen in.
    epoch: u64,
}

pub(in crate::controller) struct InvalidObjects {
    entries: Mutex<State>,
    metrics: Arc<Metrics>,
    events: Events,
}

#[derive(Default)]
struct State {
    entries: HashMap<Key, Entry>,
    epochs: HashMap<&'static str, u64>,
}

impl State {
    fn count(&self, kind: &str) -> i64 {
        self.entries.keys().filter(|k| k.kind == kind).count() as i64
    }
}

impl InvalidObjects {
    pub fn new(metrics: Arc<Metrics>, events: Events) -> InvalidObjects {
        InvalidObjects {
            entries: Mutex::new(State::default()),
            metrics,
            events,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A (re)list of `kind` begins.
    pub fn relist(&self, kind: &'static str) {
        *self.state().epochs.entry(kind).or_default() += 1;
    }

    /// `object` (of `kind`, at `resource_version`) does not deserialize, because of `error`.
    pub fn report(&self, kind: &'static str, object: ObjectReference, resource_version: Option<String>, error: &str) {
        let key = Key {
            kind,
            namespace: object.namespace.clone(),
            name: object.name.clone().unwrap_or_default(),
        };
        let mut state = self.state();
        let epoch = state.epochs.get(kind).copied().unwrap_or_default();
        let known = state
            .entries
            .get(&key)
            .is_some_and(|e| e.resource_version == resource_version);
        state.entries.insert(
            key,
            Entry {
                resource_version,
                epoch,
            },
        );
        self.metrics.set_invalid_objects(kind, state.count(kind));
        drop(state);
        if known {
            return;
        }
        let name = format!(
            "{}/{}",
            object.namespace.as_deref().unwrap_or_default(),
            object.name.as_deref().unwrap_or_default()
        );
        tracing::warn!(kind, object = %name, error, "skipping an object that does not match its schema");
        let note = format!("Conclave cannot read this {kind} and skips it until it is fixed: {error}");
        let events = self.events.clone();
        tokio::spawn(async move {
            events.warn(&object, REASON, "Read", note).await;
        });
    }

    /// `object` is valid again, or gone.
    pub fn forget(&self, kind: &'static str, meta: &kube::api::ObjectMeta) {
        let key = Key {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        };
        let mut state = self.state();
        if state.entries.remove(&key).is_some() {
            self.metrics.set_invalid_objects(kind, state.count(kind));
        }
    }

    /// A (re)list of `kind` is complete: what it did not report is no longer invalid.
    pub fn listed(&self, kind: &'static str) {
        let mut state = self.state();
        let epoch = state.epochs.get(kind).copied().unwrap_or_default();
        state.entries.retain(|k, e| k.kind != kind || e.epoch == epoch);
        let n = state.count(kind);
        self.metrics.set_invalid_objects(kind, n);
    }
}
