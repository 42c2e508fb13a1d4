//! A reflected cache ([`Store`]) fed by a [`Sink`]: objects are slimmed before they enter it,
//! an object that does not deserialize is reported and kept out, and every change reaches the
//! kind's relations with the object as it was before and as it is now.

use std::sync::Arc;

use kube::Resource;
use kube::api::{DynamicObject, ObjectMeta};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;

use super::Compact;
use super::feed::{Sink, Trigger};
use super::invalid::InvalidObjects;
use super::lenient::Lenient;

/// What the relations of a kind do with a change: the object before (`None`: new) and after
/// (`None`: deleted), and the reconciles it asks for.
pub(super) type Hook<K> = Box<dyn FnMut(Option<&K>, Option<&K>, &mut Vec<Trigger>) + Send>;

/// Strips what no reconcile reads before an object enters the cache.
pub(super) type Slim<K> = Box<dyn Fn(&mut K) + Send>;

/// Called after every complete (re)list with the fresh cache, for state kept beside it.
pub(super) type Relisted<K> = Box<dyn FnMut(&Store<K>) + Send>;

/// An object as a watch delivers it, valid or not.
pub(super) trait Incoming<K> {
    fn into_lenient(self) -> Lenient<K>;
}

impl<K> Incoming<K> for Lenient<K> {
    fn into_lenient(self) -> Lenient<K> {
        self
    }
}

impl Incoming<Compact> for DynamicObject {
    fn into_lenient(self) -> Lenient<Compact> {
        Lenient::Valid(Compact::new(self))
    }
}

impl Incoming<k8s_openapi::api::core::v1::Node> for k8s_openapi::api::core::v1::Node {
    fn into_lenient(self) -> Lenient<k8s_openapi::api::core::v1::Node> {
        Lenient::Valid(self)
    }
}

pub(super) struct StoreSink<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    kind: &'static str,
    writer: Writer<K>,
    reader: Store<K>,
    dyntype: K::DynamicType,
    slim: Slim<K>,
    hook: Hook<K>,
    relisted: Option<Relisted<K>>,
    /// The cache as it was when the (re)list in progress began: what is not in the new list
    /// went away meanwhile. Shared objects, not copies; empty on the first list.
    before: Vec<Arc<K>>,
    invalid: Arc<InvalidObjects>,
}

impl<K> StoreSink<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub fn new(
        kind: &'static str,
        writer: Writer<K>,
        dyntype: K::DynamicType,
        slim: Slim<K>,
        hook: Hook<K>,
        invalid: Arc<InvalidObjects>,
    ) -> StoreSink<K> {
        StoreSink {
            kind,
            reader: writer.as_reader(),
            writer,
            dyntype,
            slim,
            hook,
            relisted: None,
            before: Vec::new(),
            invalid,
        }
    }

    pub fn on_relisted(mut self, f: Relisted<K>) -> StoreSink<K> {
        self.relisted = Some(f);
        self
    }

    fn key(&self, meta: &ObjectMeta) -> ObjectRef<K> {
        let r = ObjectRef::new_with(meta.name.as_deref().unwrap_or_default(), self.dyntype.clone());
        match meta.namespace.as_deref() {
            Some(ns) => r.within(ns),
            None => r,
        }
    }

    fn remove(&mut self, old: Arc<K>, out: &mut Vec<Trigger>) {
        self.writer.apply_watcher_event(&Event::Delete((*old).clone()));
        (self.hook)(Some(&old), None, out);
    }
}

impl<K, W> Sink<W> for StoreSink<K>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    W: Incoming<K>,
{
    fn relist(&mut self) {
        self.before = self.reader.state();
        self.writer.apply_watcher_event(&Event::Init);
        self.invalid.relist(self.kind);
    }

    fn apply(&mut self, obj: W, listing: bool, out: &mut Vec<Trigger>) {
        match obj.into_lenient() {
            Lenient::Valid(mut obj) => {
                (self.slim)(&mut obj);
                self.invalid.forget(self.kind, obj.meta());
                let old = self.reader.get(&self.key(obj.meta()));
                let event = if listing {
                    Event::InitApply(obj)
                } else {
                    Event::Apply(obj)
                };
                self.writer.apply_watcher_event(&event);
                if let Event::InitApply(new) | Event::Apply(new) = &event {
                    (self.hook)(old.as_deref(), Some(new), out);
                }
            }
            Lenient::Invalid { metadata, error } => {
                let reference = k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some(K::api_version(&self.dyntype).into_owned()),
                    kind: Some(K::kind(&self.dyntype).into_owned()),
                    name: metadata.name.clone(),
                    namespace: metadata.namespace.clone(),
                    uid: metadata.uid.clone(),
                    ..Default::default()
                };
                self.invalid
                    .report(self.kind, reference, metadata.resource_version.clone(), &error);
                // A stale valid version must not keep being reconciled. During a list, leaving
                // it out of the new list is enough: it leaves the cache when the list completes.
                let key = self.key(&metadata);
                if let (false, Some(old)) = (listing, self.reader.get(&key)) {
                    self.remove(old, out);
                }
            }
        }
    }

    fn delete(&mut self, obj: W, out: &mut Vec<Trigger>) {
        let obj = obj.into_lenient();
        let metadata = match &obj {
            Lenient::Valid(k) => k.meta().clone(),
            Lenient::Invalid { metadata, .. } => (**metadata).clone(),
        };
        self.invalid.forget(self.kind, &metadata);
        let key = self.key(&metadata);
        match (self.reader.get(&key), obj) {
            (Some(old), _) => self.remove(old, out),
            (None, Lenient::Valid(gone)) => (self.hook)(Some(&gone), None, out),
            (None, Lenient::Invalid { .. }) => {}
        }
    }

    fn listed(&mut self, out: &mut Vec<Trigger>) {
        // The new list replaces the cache here; a set of the keys listed (about 250 bytes per
        // object, all at once after a restart) is not needed to tell what vanished.
        self.writer.apply_watcher_event(&Event::InitDone);
        for old in std::mem::take(&mut self.before) {
            if self.reader.get(&self.key(old.meta())).is_none() {
                (self.hook)(Some(&old), None, out);
            }
        }
        self.invalid.listed(self.kind);
        if let Some(f) = self.relisted.as_mut() {
            f(&self.reader);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use kube::ResourceExt;

    use super::*;
    use crate::api::Meeting;
    use crate::controller::events::Events;
    use crate::metrics::Metrics;

    type Calls = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

    fn meeting(name: &str) -> Lenient<Meeting> {
        Lenient::Valid(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"bridge": "b", "participants": []}
            }))
            .expect("meeting"),
        )
    }

    fn list(sink: &mut StoreSink<Meeting>, names: &[&str]) {
        let mut out = Vec::new();
        Sink::<Lenient<Meeting>>::relist(sink);
        for name in names {
            sink.apply(meeting(name), true, &mut out);
        }
        Sink::<Lenient<Meeting>>::listed(sink, &mut out);
    }

    #[tokio::test]
    async fn a_relist_reports_what_vanished_and_keeps_the_rest() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let invalid = Arc::new(InvalidObjects::new(Arc::new(Metrics::new()), Events::new(client, None)));
        let calls = Calls::default();
        let log = calls.clone();
        let hook: Hook<Meeting> = Box::new(move |old, new, _| {
            let name = |m: Option<&Meeting>| m.map(|m| m.name_any());
            log.lock().expect("lock").push((name(old), name(new)));
        });
        let writer = Writer::<Meeting>::default();
        let reader = writer.as_reader();
        let mut sink = StoreSink::new("Meeting", writer, (), Box::new(|_| {}), hook, invalid);

        list(&mut sink, &["a", "b"]);
        let some = |n: &str| Some(n.to_string());
        assert_eq!(*calls.lock().expect("lock"), [(None, some("a")), (None, some("b"))]);
        calls.lock().expect("lock").clear();

        list(&mut sink, &["b", "c"]);
        assert_eq!(
            *calls.lock().expect("lock"),
            [(some("b"), some("b")), (None, some("c")), (some("a"), None)],
            "b changed, c came, a went: reported once the new list replaced the cache"
        );
        let mut names: Vec<String> = reader.state().iter().map(|m| m.name_any()).collect();
        names.sort();
        assert_eq!(names, ["b", "c"]);
    }
}
