//! State kept beside the caches, updated one change at a time: Meetings by Bridge (with their
//! schedule, to find the siblings a change affects), Meetings by phase, and the
//! resourceVersions of Secrets Conclave does not manage. The credentials Secrets, as digests,
//! are in [`super::credentials`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::credentials::CredentialsCache;
use crate::api::Meeting;

pub(super) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// `(namespace, name)`.
pub type Key = (String, String);

/// A Meeting's schedule as its siblings see it: unset ends are open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl Span {
    pub fn of(m: &Meeting) -> Span {
        Span {
            start: m.spec.start,
            end: m.spec.end,
        }
    }

    /// Whether the two overlap once each starts `lead` early (a reservation's lead time):
    /// Meetings that do not overlap so can neither share a room nor compete for capacity.
    pub fn overlaps(&self, other: &Span, lead: chrono::Duration) -> bool {
        let before = |a: &Span, b: &Span| match (a.start, b.end) {
            (Some(s), Some(e)) => s - lead < e,
            _ => true,
        };
        before(self, other) && before(other, self)
    }
}

/// Meetings by the Bridge they name.
#[derive(Default)]
pub struct Hosted(RwLock<HashMap<Key, BTreeMap<String, Span>>>);

impl Hosted {
    fn bridge_of(m: &Meeting) -> Key {
        (m.namespace().unwrap_or_default(), m.spec.bridge.clone())
    }

    /// Records `new` (and forgets `old`): either may be absent.
    pub fn update(&self, old: Option<&Meeting>, new: Option<&Meeting>) {
        let mut map = write(&self.0);
        if let Some(old) = old {
            let key = Self::bridge_of(old);
            if let Some(names) = map.get_mut(&key) {
                names.remove(&old.name_any());
                if names.is_empty() {
                    map.remove(&key);
                }
            }
        }
        if let Some(new) = new {
            map.entry(Self::bridge_of(new))
                .or_default()
                .insert(new.name_any(), Span::of(new));
        }
    }

    /// The names of the Meetings naming Bridge `bridge` in `ns`.
    pub fn names(&self, ns: &str, bridge: &str) -> Vec<String> {
        read(&self.0)
            .get(&(ns.to_string(), bridge.to_string()))
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The names of the Meetings on `bridge` whose span overlaps `span`.
    pub fn overlapping(&self, ns: &str, bridge: &str, span: &Span, lead: chrono::Duration) -> Vec<String> {
        read(&self.0)
            .get(&(ns.to_string(), bridge.to_string()))
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| s.overlaps(span, lead))
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Keeps only the Meetings for which `keep(namespace, name)` holds (after a relist).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut map = write(&self.0);
        map.retain(|(ns, _), names| {
            names.retain(|name, _| keep(ns, name));
            !names.is_empty()
        });
    }
}

/// Meetings by phase, for `conclave_meetings{phase}`: counted from each change, so no
/// reconcile has to count every Meeting.
#[derive(Default)]
pub struct PhaseCounts {
    pub counts: BTreeMap<String, i64>,
}

impl PhaseCounts {
    fn phase(m: &Meeting) -> Option<String> {
        m.status.as_ref()?.phase.map(|p| format!("{p:?}"))
    }

    /// A Meeting went from `old` to `new` (either absent: created or deleted).
    pub fn change(&mut self, old: Option<&Meeting>, new: Option<&Meeting>) {
        let (before, after) = (old.and_then(Self::phase), new.and_then(Self::phase));
        if before == after {
            return;
        }
        if let Some(p) = before {
            *self.counts.entry(p).or_default() -= 1;
        }
        if let Some(p) = after {
            *self.counts.entry(p).or_default() += 1;
        }
    }

    /// After a (re)list the cache is the truth.
    pub fn rebuild<'a>(&mut self, meetings: impl IntoIterator<Item = &'a Meeting>) {
        self.counts.values_mut().for_each(|n| *n = 0);
        for m in meetings {
            self.change(None, Some(m));
        }
    }
}

/// resourceVersions of the Secrets Conclave does not manage (a TLS Secret a Bridge names may be
/// one of them), by `(namespace, name)`.
#[derive(Default)]
pub struct ForeignSecrets(RwLock<HashMap<Key, String>>);

impl ForeignSecrets {
    pub fn version(&self, ns: &str, name: &str) -> Option<String> {
        read(&self.0).get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// Stores `version`; returns whether it differs from what was there.
    pub fn set(&self, key: Key, version: String) -> bool {
        write(&self.0).insert(key, version.clone()).as_ref() != Some(&version)
    }

    pub fn remove(&self, key: &Key) -> bool {
        write(&self.0).remove(key).is_some()
    }

    pub fn keys(&self) -> Vec<Key> {
        read(&self.0).keys().cloned().collect()
    }
}

/// Shared handles, for the Context.
#[derive(Clone, Default)]
pub struct Indexes {
    pub hosted: Arc<Hosted>,
    pub credentials: Arc<CredentialsCache>,
    pub foreign_secrets: Arc<ForeignSecrets>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting(name: &str, bridge: &str, start: Option<&str>, end: Option<&str>, phase: Option<&str>) -> Meeting {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"bridge": bridge, "start": start, "end": end},
            "status": phase.map(|p| serde_json::json!({"phase": p})),
        }))
        .expect("meeting")
    }

    #[test]
    fn meetings_are_found_by_bridge_and_by_overlap() {
        let h = Hosted::default();
        let a = meeting(
            "a",
            "b1",
            Some("2030-01-01T10:00:00Z"),
            Some("2030-01-01T11:00:00Z"),
            None,
        );
        let b = meeting(
            "b",
            "b1",
            Some("2030-01-01T11:10:00Z"),
            Some("2030-01-01T12:00:00Z"),
            None,
        );
        let c = meeting("c", "b2", None, None, None);
        for m in [&a, &b, &c] {
            h.update(None, Some(m));
        }
        assert_eq!(h.names("ns", "b1"), vec!["a", "b"]);
        let span = Span::of(&b);
        assert_eq!(h.overlapping("ns", "b1", &span, chrono::Duration::zero()), vec!["b"]);
        // With a 15-minute lead, b's reservation begins before a ends.
        assert_eq!(
            h.overlapping("ns", "b1", &span, chrono::Duration::minutes(15)),
            vec!["a", "b"]
        );
        // A standing room overlaps everything.
        assert_eq!(h.overlapping("ns", "b2", &span, chrono::Duration::zero()), vec!["c"]);
        h.update(Some(&a), None);
        assert_eq!(h.names("ns", "b1"), vec!["b"]);
        h.retain(|_, name| name != "c");
        assert!(h.names("ns", "b2").is_empty());
    }

    #[test]
    fn phase_counts_follow_changes_and_relists() {
        let mut c = PhaseCounts::default();
        let s = meeting("a", "b", None, None, Some("Scheduled"));
        let o = meeting("a", "b", None, None, Some("Open"));
        c.change(None, Some(&s));
        c.change(None, Some(&meeting("b", "b", None, None, Some("Scheduled"))));
        c.change(Some(&s), Some(&o));
        c.change(Some(&o), Some(&o));
        c.change(None, Some(&meeting("c", "b", None, None, None)));
        assert_eq!(
            c.counts,
            BTreeMap::from([("Open".to_string(), 1), ("Scheduled".to_string(), 1)])
        );
        c.change(Some(&o), None);
        assert_eq!(c.counts["Open"], 0);
        c.rebuild([&meeting("d", "b", None, None, Some("Ended"))]);
        assert_eq!(
            c.counts,
            BTreeMap::from([
                ("Ended".to_string(), 1),
                ("Open".to_string(), 0),
                ("Scheduled".to_string(), 0)
            ])
        );
    }
}
