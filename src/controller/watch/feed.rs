//! One watch feeding one cache: the retry policy, health, readiness, and the triggers each
//! change sends to the controllers.
//!
//! Every watched kind runs one [`drive`] loop (its own task), so each kind is listed and
//! watched exactly once whatever number of controllers and relations read it. What a change
//! means (which Bridges and Meetings to reconcile) is decided by the kind's [`Sink`] from the
//! object before and after the change, so an update that touches nothing a reconcile reads
//! (a status the operator wrote itself, a node heartbeat) triggers nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::{Backoff, StreamBackoff};
use kube::runtime::watcher;

use super::Synced;
use super::queue::{self, Queue};
use super::throttle::Throttle;
use crate::api::{Bridge, Meeting};
use crate::http::Health;

/// A reconcile the change of an object asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    Bridge(ObjectRef<Bridge>),
    Meeting(ObjectRef<Meeting>),
    /// A Bridge whose Meetings' bookings changed: throttled (see [`Throttle`]).
    Booking(ObjectRef<Bridge>),
    /// Every Bridge (a node changed: SFU placement and addresses).
    AllBridges,
}

/// Where triggers go: each controller's queue.
#[derive(Clone)]
pub(super) struct Triggers {
    pub bridges: UnboundedSender<ObjectRef<Bridge>>,
    pub meetings: Arc<Queue>,
    pub bridge_store: Store<Bridge>,
    pub meeting_store: Store<Meeting>,
    pub bookings: Throttle,
}

impl Triggers {
    /// Every cached Bridge and Meeting.
    pub(super) fn reconcile_all(&self) {
        self.send(Trigger::AllBridges);
        for m in self.meeting_store.state() {
            let ns = m.metadata.namespace.as_deref().unwrap_or_default();
            self.meetings
                .push(queue::key(ns, m.metadata.name.as_deref().unwrap_or_default()));
        }
    }

    fn send(&self, trigger: Trigger) {
        // A closed queue means the controller is shutting down; nothing to do then.
        match trigger {
            Trigger::Bridge(r) => {
                let _ = self.bridges.unbounded_send(r);
            }
            Trigger::Meeting(r) => {
                let ns = r.namespace.as_deref().unwrap_or_default();
                self.meetings.push(queue::key(ns, &r.name));
            }
            Trigger::Booking(r) => self.bookings.send(r),
            Trigger::AllBridges => {
                for b in self.bridge_store.state() {
                    let _ = self.bridges.unbounded_send(ObjectRef::from_obj(&*b));
                }
            }
        }
    }
}

/// A cache fed by one watch. `listing` is true between a (re)list's start and its end: the
/// objects then replace the cache as a whole at [`Sink::listed`].
pub(super) trait Sink<W>: Send {
    /// A (re)list begins.
    fn relist(&mut self);
    /// An object was added or changed (or listed).
    fn apply(&mut self, obj: W, listing: bool, out: &mut Vec<Trigger>);
    /// An object was deleted.
    fn delete(&mut self, obj: W, out: &mut Vec<Trigger>);
    /// The (re)list is complete: objects not listed are gone.
    fn listed(&mut self, out: &mut Vec<Trigger>);
}

/// Watch retries: 100 ms doubling to at most 2 s, with jitter, and back to 100 ms as soon as
/// the watch delivers anything. kube-runtime's default (800 ms doubling to 30 s, reset only
/// after 120 s without an error) left the operator blind for 20–50 s after a 5 s API outage:
/// the errors of the outage itself (connection refused, then `410 Gone` on the first watch
/// after it) had grown the delay, and nothing reset it.
pub(super) struct RetryBackoff {
    next: Duration,
}

impl RetryBackoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    /// Also the longest a watch waits after the API server is back; its first answers may
    /// still be errors (custom resources are served a moment after `/readyz` passes), and a cap
    /// of 5 s left the Meeting watch 6 s behind the others.
    pub const CAP: Duration = Duration::from_secs(2);

    pub fn new() -> RetryBackoff {
        RetryBackoff { next: Self::FIRST }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        // Up to a quarter less, so that many watches failing together do not retry in step.
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);
        Some(base - jitter)
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Runs one watch into its sink until the stream ends (it does not: the watcher retries).
pub(super) async fn drive<W, S>(
    name: &'static str,
    events: impl Stream<Item = Result<watcher::Event<W>, watcher::Error>> + Send,
    mut sink: S,
    triggers: Triggers,
    health: Arc<Health>,
    synced: Synced,
) where
    S: Sink<W>,
{
    let events = StreamBackoff::new(events, RetryBackoff::new());
    futures::pin_mut!(events);
    let mut listing = false;
    let mut listed_once = false;
    let mut failing = false;
    let mut pending = Vec::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                health.watch_failed(name);
                // The first error of a streak is worth a warning; the retries that follow are not.
                if failing {
                    tracing::debug!(watch = name, error = %e, "watch still failing; retrying");
                } else {
                    tracing::warn!(watch = name, error = %e, "watch failed; retrying");
                }
                failing = true;
                continue;
            }
        };
        if failing {
            tracing::info!(watch = name, "watch working again");
            failing = false;
        }
        health.watch_worked(name);
        match event {
            watcher::Event::Init => {
                listing = true;
                sink.relist();
            }
            watcher::Event::InitApply(obj) => sink.apply(obj, true, &mut pending),
            watcher::Event::InitDone => {
                sink.listed(&mut pending);
                listing = false;
                if !listed_once {
                    listed_once = true;
                    synced.listed(name);
                }
            }
            watcher::Event::Apply(obj) => sink.apply(obj, false, &mut pending),
            watcher::Event::Delete(obj) => sink.delete(obj, &mut pending),
        }
        // Until every cache has its first list, triggers are moot: the first sync reconciles
        // every Bridge and Meeting once (`lead`), from caches holding all a trigger would
        // have pointed at. Holding them meant one per object after a restart, and reconciles
        // that could only wait for the other caches.
        if !synced.all_listed() {
            pending.clear();
        }
        // Triggers of a list wait for its end: until then the cache still holds the old list.
        if !listing {
            for t in pending.drain(..) {
                triggers.send(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_small_grow_to_the_cap_and_reset() {
        let mut b = RetryBackoff::new();
        let first = b.next().expect("delay");
        assert!(first <= RetryBackoff::FIRST && first >= RetryBackoff::FIRST.mul_f64(0.75));
        let delays: Vec<Duration> = (0..10).filter_map(|_| b.next()).collect();
        assert!(delays.iter().all(|d| *d <= RetryBackoff::CAP));
        assert!(delays[9] >= RetryBackoff::CAP.mul_f64(0.75), "{delays:?}");
        b.reset();
        assert!(b.next().expect("delay") <= RetryBackoff::FIRST);
    }
}
