//! The two Secret caches that hold no Secret: the Meetings' credentials Secrets as digests,
//! and the resourceVersions of the Secrets Conclave does not manage.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use kube::api::DynamicObject;

use super::Compact;
use super::cache::StoreSink;
use super::credentials::{Credentials, CredentialsCache};
use super::feed::{Sink, Trigger};
use super::index::{ForeignSecrets, Key};
use crate::api::Bridge;
use crate::controller::bridge;
use crate::labels;
use crate::meeting::credentials;

/// The credentials Secrets, by `(namespace, Meeting)`: listed and watched in full (the digest
/// needs the data), kept as a few bytes each.
pub(super) struct CredentialsSink {
    pub cache: Arc<CredentialsCache>,
    pub seen: HashSet<Key>,
}

fn meeting_of(s: &Secret) -> Option<Key> {
    Some((s.namespace()?, s.labels().get(labels::INSTANCE)?.clone()))
}

fn meeting_trigger((ns, name): &Key) -> Trigger {
    Trigger::Meeting(ObjectRef::new(name).within(ns))
}

impl Sink<Secret> for CredentialsSink {
    fn relist(&mut self) {
        self.seen.clear();
    }

    fn apply(&mut self, s: Secret, listing: bool, out: &mut Vec<Trigger>) {
        let Some(key) = meeting_of(&s) else { return };
        if listing {
            self.seen.insert(key.clone());
        }
        let value = Credentials {
            meta: kube::api::ObjectMeta {
                name: s.metadata.name.clone(),
                namespace: s.metadata.namespace.clone(),
                uid: s.metadata.uid.clone(),
                resource_version: s.metadata.resource_version.clone(),
                owner_references: s.metadata.owner_references.clone(),
                ..Default::default()
            },
            window: credentials::recorded_window(s.annotations()),
            digest: credentials::digest(&s),
        };
        if self.cache.set(key.clone(), value) {
            out.push(meeting_trigger(&key));
        }
    }

    fn delete(&mut self, s: Secret, out: &mut Vec<Trigger>) {
        if let Some(key) = meeting_of(&s)
            && self.cache.remove(&key)
        {
            out.push(meeting_trigger(&key));
        }
    }

    fn listed(&mut self, out: &mut Vec<Trigger>) {
        for key in self.cache.keys() {
            if !self.seen.contains(&key) && self.cache.remove(&key) {
                out.push(meeting_trigger(&key));
            }
        }
        self.seen = HashSet::new();
    }
}

/// Secrets Conclave does not manage, metadata only: a change reconciles the Bridges that name
/// the Secret for their TLS.
pub(super) struct ForeignSink {
    pub versions: Arc<ForeignSecrets>,
    pub bridges: Store<Bridge>,
    pub seen: HashSet<Key>,
}

impl ForeignSink {
    fn users(&self, (ns, name): &Key, out: &mut Vec<Trigger>) {
        out.extend(
            self.bridges
                .state()
                .iter()
                .filter(|b| b.namespace().as_deref() == Some(ns.as_str()) && bridge::uses_secret(b, name))
                .map(|b| Trigger::Bridge(ObjectRef::from_obj(&**b))),
        );
    }
}

fn key(s: &PartialObjectMeta<Secret>) -> Key {
    (s.namespace().unwrap_or_default(), s.name_any())
}

impl Sink<PartialObjectMeta<Secret>> for ForeignSink {
    fn relist(&mut self) {
        self.seen.clear();
    }

    fn apply(&mut self, s: PartialObjectMeta<Secret>, listing: bool, out: &mut Vec<Trigger>) {
        let key = key(&s);
        if listing {
            self.seen.insert(key.clone());
        }
        if self.versions.set(key.clone(), s.resource_version().unwrap_or_default()) {
            self.users(&key, out);
        }
    }

    fn delete(&mut self, s: PartialObjectMeta<Secret>, out: &mut Vec<Trigger>) {
        let key = key(&s);
        if self.versions.remove(&key) {
            self.users(&key, out);
        }
    }

    fn listed(&mut self, out: &mut Vec<Trigger>) {
        for key in self.versions.keys() {
            if !self.seen.contains(&key) && self.versions.remove(&key) {
                self.users(&key, out);
            }
        }
        self.seen = HashSet::new();
    }
}

/// Every Secret Conclave manages, from one watch: a Meeting's credentials become a digest; the
/// others (a Bridge's generated one, its CA and certificate, a Meeting's E2EE passphrase) go to
/// the Secret cache in full.
pub(super) struct OwnedSink {
    pub bridges: StoreSink<Compact>,
    pub credentials: CredentialsSink,
}

/// A Meeting's credentials Secret (its other Secrets, an E2EE passphrase, are few and small,
/// and cached whole like a Bridge's).
fn credentials_of_meeting(s: &Secret) -> bool {
    s.labels().get(labels::OWNER_KIND).map(String::as_str) == Some(crate::meeting::OWNER_KIND)
        && s.labels()
            .get(labels::INSTANCE)
            .is_some_and(|m| s.metadata.name.as_deref() == Some(credentials::secret_name(m).as_str()))
}

/// A Bridge's Secret as the Bridge's cache holds it (few and small: converting is cheap).
fn dynamic(s: Secret) -> Option<DynamicObject> {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
}

impl Sink<Secret> for OwnedSink {
    fn relist(&mut self) {
        Sink::<DynamicObject>::relist(&mut self.bridges);
        self.credentials.relist();
    }

    fn apply(&mut self, s: Secret, listing: bool, out: &mut Vec<Trigger>) {
        if credentials_of_meeting(&s) {
            self.credentials.apply(s, listing, out);
        } else if let Some(d) = dynamic(s) {
            self.bridges.apply(d, listing, out);
        }
    }

    fn delete(&mut self, s: Secret, out: &mut Vec<Trigger>) {
        if credentials_of_meeting(&s) {
            self.credentials.delete(s, out);
        } else if let Some(d) = dynamic(s) {
            self.bridges.delete(d, out);
        }
    }

    fn listed(&mut self, out: &mut Vec<Trigger>) {
        Sink::<DynamicObject>::listed(&mut self.bridges, out);
        self.credentials.listed(out);
    }
}
