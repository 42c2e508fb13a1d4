//! Every Meeting's next transition (start, end, token renewal) on one timer.
//!
//! Each Meeting waits for its next phase, most of them for days. Returned as a requeue, that
//! wait is an entry in kube-runtime's scheduler: the object reference held twice (a hash-map
//! key and a delay-queue slot) with its name, namespace, uid and resourceVersion, about 600
//! bytes a Meeting, 6 MiB at 10,000 Meetings (heap profile, `--features dhat-heap`). Here a
//! wait is one `namespace/name` string shared by an ordered set and a map, about 150 bytes.
//! When a Meeting's time comes it joins the Meetings' reconcile queue like any other trigger.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::queue::{self, Key, Queue};

#[derive(Default)]
struct Due {
    by_time: BTreeSet<(Instant, Key)>,
    by_key: HashMap<Key, Instant>,
}

impl Due {
    fn clear(&mut self, key: &str) -> Option<Key> {
        let (key, at) = self.by_key.remove_entry(key)?;
        self.by_time.remove(&(at, key.clone()));
        Some(key)
    }

    /// Removes and returns every key due at or before `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Key> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first()
            && *at <= now
        {
            if let Some((_, key)) = self.by_time.pop_first() {
                self.by_key.remove(&key);
                due.push(key);
            }
        }
        due
    }

    fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }
}

/// The Meetings' timers: at most one per Meeting, the latest set.
#[derive(Default)]
pub struct Timers {
    due: Mutex<Due>,
    changed: Notify,
}

impl Timers {
    fn lock(&self) -> MutexGuard<'_, Due> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Meeting `ns`/`name` is to be reconciled at `at`, instead of when it was before; `None`:
    /// it waits for nothing.
    pub fn set(&self, ns: &str, name: &str, at: Option<Instant>) {
        let key = queue::key(ns, name);
        let mut due = self.lock();
        let old = due.clear(&key);
        let Some(at) = at else { return };
        let key = old.unwrap_or(key);
        let earliest = due.next().is_none_or(|next| at < next);
        due.by_time.insert((at, key.clone()));
        due.by_key.insert(key, at);
        drop(due);
        if earliest {
            self.changed.notify_one();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues each Meeting for a reconcile when its time comes.
    pub async fn run(self: Arc<Self>, out: Arc<Queue>) {
        loop {
            let (due, next) = {
                let mut state = self.lock();
                (state.take_due(Instant::now()), state.next())
            };
            for key in due {
                out.push(key);
            }
            // A permit stored by `set` meanwhile makes this return at once: no wakeup is lost.
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_meeting_waits_once_for_its_latest_time() {
        let timers = Timers::default();
        let t0 = Instant::now();
        timers.set("ns", "a", Some(t0 + Duration::from_secs(10)));
        timers.set("ns", "a", Some(t0 + Duration::from_secs(5)));
        timers.set("ns", "b", Some(t0 + Duration::from_secs(7)));
        timers.set("other", "b", Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.len(), 3);
        let mut due = timers.lock();
        assert_eq!(due.by_time.len(), 3, "the earlier time of a was replaced");
        assert_eq!(due.next(), Some(t0 + Duration::from_secs(1)));
        let taken = due.take_due(t0 + Duration::from_secs(6));
        assert_eq!(
            taken.iter().map(|k| &**k).collect::<Vec<_>>(),
            ["other/b", "ns/a"],
            "in order of time"
        );
        assert_eq!(due.next(), Some(t0 + Duration::from_secs(7)));
        drop(due);
        timers.set("ns", "b", None);
        assert!(timers.is_empty(), "cleared");
    }

    #[tokio::test(start_paused = true)]
    async fn sends_each_meeting_when_its_time_comes() {
        let timers = Arc::new(Timers::default());
        let queue = Arc::new(Queue::default());
        tokio::spawn(timers.clone().run(queue.clone()));
        let t0 = Instant::now();
        timers.set("ns", "late", Some(t0 + Duration::from_secs(60)));
        timers.set("ns", "gone", Some(t0 + Duration::from_secs(20)));
        timers.set("ns", "gone", None);
        // Set after the runner went to sleep for the later one: it must wake earlier.
        tokio::task::yield_now().await;
        timers.set("ns", "soon", Some(t0 + Duration::from_secs(30)));

        let first = queue.next_waiting().await;
        assert_eq!((&*first, Instant::now() - t0), ("ns/soon", Duration::from_secs(30)));
        let second = queue.next_waiting().await;
        assert_eq!(&*second, "ns/late");
        assert_eq!(Instant::now() - t0, Duration::from_secs(60));
        assert!(timers.is_empty());
    }
}
