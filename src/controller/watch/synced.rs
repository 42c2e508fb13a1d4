//! Readiness of the caches, and the moment the first reconciles may start.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::http::Health;

/// Readiness: true once every cache has completed its first list. Observed on the feeds
/// themselves rather than with `Store::wait_until_ready`, whose one-shot wakeup serves a single
/// waiter, and the controllers already wait on their stores.
#[derive(Clone)]
pub(crate) struct Synced {
    pending: Arc<AtomicUsize>,
    health: Arc<Health>,
    /// Told once, when the last cache completes its first list.
    all: Arc<tokio::sync::Notify>,
}

impl Synced {
    pub(super) fn new(health: Arc<Health>) -> Synced {
        Synced {
            // One for the start-up itself (`started`): a feed that lists before the rest are
            // registered must not make the operator ready, nor start the first reconciles.
            pending: Arc::new(AtomicUsize::new(1)),
            health,
            all: Arc::default(),
        }
    }

    /// Whether every cache has completed its first list.
    pub(crate) fn all_listed(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    /// One more cache to wait for.
    pub(super) fn expect(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// Every cache is registered.
    pub(super) fn started(&self) {
        self.listed("(start-up)");
    }

    /// A cache completed its first list.
    pub(super) fn listed(&self, watch: &'static str) {
        tracing::debug!(watch, "listed");
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.health.set_ready(true);
            tracing::info!("caches synced");
            self.all.notify_one();
        }
    }

    /// Returns once every cache has completed its first list.
    pub(super) async fn wait(&self) {
        if !self.all_listed() {
            self.all.notified().await;
        }
    }
}
