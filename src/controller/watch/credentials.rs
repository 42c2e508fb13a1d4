//! The Meetings' credentials Secrets as the cache holds them: digests and what replacing one
//! needs, never the links they hold.

use std::collections::HashMap;
use std::sync::RwLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use super::index::{Key, read, write};
use crate::api::Meeting;
use crate::meeting::credentials;
use crate::meeting::schedule::Window;

/// A credentials Secret as the Meeting reconciler sees it: not its links, only what it needs to
/// know whether the Secret already holds what it would write (see
/// [`crate::meeting::credentials::digest`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Credentials {
    /// Name, namespace, uid, resourceVersion and owners only: enough to replace it safely (see
    /// [`crate::controller::put_secret`]).
    pub meta: kube::api::ObjectMeta,
    /// The tokens' window recorded on it.
    pub window: Option<Window>,
    pub digest: u64,
}

/// What the cache keeps of a credentials Secret, one per Meeting: its name and namespace follow
/// from the key, and the rest of a whole `ObjectMeta` (about 360 bytes of empty fields) is not
/// kept.
#[derive(Debug)]
struct Held {
    uid: Option<String>,
    resource_version: Option<String>,
    owners: Owners,
    window: Option<Window>,
    digest: u64,
}

/// A credentials Secret's owner references as held. Nearly always they are exactly the
/// controller reference to the Meeting the Secret belongs to, as the operator wrote it: about
/// 300 bytes as an `OwnerReference` (a vector, a struct, four strings), kept as the Meeting's
/// uid. Anything else is kept as it is.
#[derive(Debug)]
enum Owners {
    Meeting(Box<str>),
    Other(Option<Vec<OwnerReference>>),
}

impl Owners {
    fn hold(meeting: &str, refs: Option<Vec<OwnerReference>>) -> Owners {
        if let Some([only]) = refs.as_deref()
            && *only == meeting_controller(meeting, &only.uid)
        {
            return Owners::Meeting(only.uid.as_str().into());
        }
        Owners::Other(refs)
    }

    fn get(&self, meeting: &str) -> Option<Vec<OwnerReference>> {
        match self {
            Owners::Meeting(uid) => Some(vec![meeting_controller(meeting, uid)]),
            Owners::Other(refs) => refs.clone(),
        }
    }
}

/// The reference a Meeting's credentials Secret carries to it (`Resource::controller_owner_ref`).
fn meeting_controller(meeting: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: Meeting::api_version(&()).into_owned(),
        kind: Meeting::kind(&()).into_owned(),
        name: meeting.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Credentials Secrets by `(namespace, Meeting name)`.
#[derive(Default)]
pub struct CredentialsCache(RwLock<HashMap<Key, Held>>);

impl CredentialsCache {
    pub fn get(&self, ns: &str, meeting: &str) -> Option<Credentials> {
        let map = read(&self.0);
        let held = map.get(&(ns.to_string(), meeting.to_string()))?;
        Some(Credentials {
            meta: kube::api::ObjectMeta {
                name: Some(credentials::secret_name(meeting)),
                namespace: Some(ns.to_string()),
                uid: held.uid.clone(),
                resource_version: held.resource_version.clone(),
                owner_references: held.owners.get(meeting),
                ..Default::default()
            },
            window: held.window,
            digest: held.digest,
        })
    }

    /// Stores `value`; returns whether its content differs from what was there.
    pub fn set(&self, key: Key, value: Credentials) -> bool {
        let mut map = write(&self.0);
        let changed = map
            .get(&key)
            .is_none_or(|old| old.digest != value.digest || old.window != value.window);
        let meta = value.meta;
        let owners = Owners::hold(&key.1, meta.owner_references);
        map.insert(
            key,
            Held {
                uid: meta.uid,
                resource_version: meta.resource_version,
                owners,
                window: value.window,
                digest: value.digest,
            },
        );
        changed
    }

    pub fn remove(&self, key: &Key) -> bool {
        write(&self.0).remove(key).is_some()
    }

    pub fn keys(&self) -> Vec<Key> {
        read(&self.0).keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        read(&self.0).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_back_with_the_secret_name_and_what_replacing_it_needs() {
        let cache = CredentialsCache::default();
        let owner = OwnerReference {
            api_version: "conclave.dev/v1alpha1".into(),
            kind: "Meeting".into(),
            name: "m1".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let meta = kube::api::ObjectMeta {
            name: Some(credentials::secret_name("m1")),
            namespace: Some("ns".into()),
            uid: Some("s1".into()),
            resource_version: Some("7".into()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        };
        let value = Credentials {
            meta,
            window: None,
            digest: 42,
        };
        let key = ("ns".to_string(), "m1".to_string());
        assert!(cache.set(key.clone(), value.clone()));
        assert_eq!(cache.get("ns", "m1"), Some(value.clone()));
        assert!(!cache.set(key.clone(), value.clone()), "same content");
        let mut newer = value.clone();
        newer.meta.resource_version = Some("8".into());
        assert!(
            !cache.set(key.clone(), newer.clone()),
            "a new version of the same content"
        );
        assert_eq!(cache.get("ns", "m1"), Some(newer.clone()));
        newer.digest = 43;
        assert!(cache.set(key, newer));
        assert_eq!(cache.get("ns", "m2"), None);
    }

    #[test]
    fn owner_references_come_back_exactly_and_the_usual_one_is_held_small() {
        let meeting: Meeting = serde_json::from_value(serde_json::json!({
            "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
            "metadata": {"name": "m1", "namespace": "ns", "uid": "u1"},
            "spec": {"bridge": "b", "participants": []}
        }))
        .expect("meeting");
        let usual = meeting.controller_owner_ref(&()).expect("owner");
        let blocking = OwnerReference {
            block_owner_deletion: Some(true),
            ..usual.clone()
        };
        let other = OwnerReference {
            name: "m2".into(),
            ..usual.clone()
        };
        let cases = [
            (Some(vec![usual.clone()]), true),
            (Some(vec![blocking]), false),
            (Some(vec![other]), false),
            (Some(vec![usual.clone(), usual]), false),
            (Some(vec![]), false),
            (None, false),
        ];
        for (refs, small) in cases {
            let cache = CredentialsCache::default();
            let value = Credentials {
                meta: kube::api::ObjectMeta {
                    name: Some(credentials::secret_name("m1")),
                    namespace: Some("ns".into()),
                    uid: Some("s1".into()),
                    resource_version: Some("7".into()),
                    owner_references: refs.clone(),
                    ..Default::default()
                },
                window: None,
                digest: 1,
            };
            cache.set(("ns".into(), "m1".into()), value.clone());
            assert_eq!(cache.get("ns", "m1"), Some(value), "{refs:?}");
            let held = read(&cache.0);
            let held = held.values().next().expect("held");
            assert_eq!(matches!(held.owners, Owners::Meeting(_)), small, "{refs:?}");
        }
    }
}
