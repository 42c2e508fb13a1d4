//! What every reconcile shares: the client, the caches of every child kind, the indexes kept
//! beside them, the clock, the metrics and the Event publisher.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::Error;
use super::events::Events;
use super::watch::{Compact, Credentials, Indexes, Synced, Timers};
use crate::api::{Bridge, Meeting};
use crate::child::Child;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::{apply, labels};

/// Child kinds the operator creates and caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ConfigMap,
    Secret,
    Service,
    Deployment,
    StatefulSet,
    DaemonSet,
    NetworkPolicy,
    Ingress,
    Certificate,
}

impl Kind {
    /// Every kind, all watched and all pruned when no longer desired.
    pub const ALL: [Kind; 9] = [
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Service,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::NetworkPolicy,
        Kind::Ingress,
        Kind::Certificate,
    ];

    pub fn resource(self) -> ApiResource {
        match self {
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::Secret => ApiResource::erase::<Secret>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            Kind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
            Kind::Ingress => ApiResource::erase::<Ingress>(&()),
            Kind::Certificate => ApiResource {
                group: "cert-manager.io".into(),
                version: "v1".into(),
                api_version: "cert-manager.io/v1".into(),
                kind: "Certificate".into(),
                plural: "certificates".into(),
            },
        }
    }

    /// The kind's name, as the API spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Ingress => "Ingress",
            Kind::Certificate => "Certificate",
        }
    }

    fn of(resource: &ApiResource) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.resource().kind == resource.kind && k.resource().group == resource.group)
    }
}

/// TLS Secrets Bridges bring, by `(namespace, name)`: the resourceVersion read and the Secret.
pub(super) type TlsSecrets = HashMap<(String, String), (String, Arc<Secret>)>;

/// The Pod resource, for the cache of SFU pods.
pub fn pod_resource() -> ApiResource {
    ApiResource::erase::<Pod>(&())
}

/// What every reconcile shares: the client and the caches.
pub struct Context {
    pub client: Client,
    pub(super) stores: Vec<(Kind, Store<Compact>)>,
    pub nodes: Store<Node>,
    /// The SFU pods of Bridges, to see one waiting for a node that cannot take it.
    pub pods: Store<Compact>,
    /// Whether cert-manager's Certificate kind is served (decided at start).
    pub cert_manager: bool,
    /// What "now" is for schedules and certificate renewal.
    pub clock: Clock,
    /// The cluster the Bridges run in, from the operator's flags.
    pub cluster: crate::bridge::context::Cluster,
    pub bridges: Store<Bridge>,
    pub meetings: Store<Meeting>,
    /// Meetings by Bridge, credentials Secrets as digests, other Secrets' versions.
    pub(super) indexes: Indexes,
    /// When each Meeting is next due (its next phase or token renewal).
    pub(super) timers: Arc<Timers>,
    /// TLS Secrets Bridges bring, as last read, with the resourceVersion read.
    pub(super) tls: Mutex<TlsSecrets>,
    pub metrics: Arc<Metrics>,
    pub(super) synced: Synced,
    pub(super) events: Events,
    /// Status writes the caches may not show yet.
    pub(super) written: Arc<super::status::Written>,
}

impl Context {
    /// Whether every cache has completed its first list. Reconciles wait for it: a plan made
    /// from a half-listed cache (no nodes yet) would create children only to change them.
    pub fn caches_synced(&self) -> bool {
        self.synced.all_listed()
    }

    /// The cache of one child kind (empty for a kind not watched).
    pub fn store(&self, kind: Kind) -> Store<Compact> {
        self.stores
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| reflector::store::Writer::new(kind.resource()).as_reader())
    }

    /// The number of cached objects of `kind` Conclave manages (a Secret may be a Meeting's
    /// credentials, kept as a digest beside the cache).
    pub fn managed_objects(&self, kind: Kind) -> usize {
        let extra = if kind == Kind::Secret {
            self.indexes.credentials.len()
        } else {
            0
        };
        self.store(kind).len() + extra
    }

    /// Publishes an Event about `object`. Events are best effort: a failure is logged, never
    /// fails the reconcile.
    ///
    /// Every call makes an Event of its own. kube's `Recorder` folds a repeat of the same
    /// reason about the same object into a series that keeps the first note, so a second
    /// replica move or a refusal of another child would show the first one's message; the
    /// operator publishes only on transitions and writes, so there is no flood to fold.
    pub async fn event(&self, object: &ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
        self.events.publish(object, type_, reason, action, note).await;
    }

    /// The Meetings naming Bridge `bridge` in `ns`, from the index (not a scan of every Meeting).
    pub fn meetings_of(&self, ns: &str, bridge: &str) -> Vec<Arc<Meeting>> {
        self.indexes
            .hosted
            .names(ns, bridge)
            .iter()
            .filter_map(|name| self.meetings.get(&ObjectRef::new(name).within(ns)))
            .collect()
    }

    /// What the cache knows of Meeting `meeting`'s credentials Secret.
    pub fn credentials(&self, ns: &str, meeting: &str) -> Option<Credentials> {
        self.indexes.credentials.get(ns, meeting)
    }

    /// A TLS Secret a Bridge names: from the Bridge's cache when Conclave manages it (the one
    /// cert-manager writes carries Conclave's labels), else as last read if the metadata cache
    /// shows the same resourceVersion; read again only when it changed. `None`: it does not
    /// exist.
    pub async fn tls_secret(&self, ns: &str, name: &str) -> Result<Option<Arc<Secret>>, Error> {
        let cached = self
            .store(Kind::Secret)
            .get(&ObjectRef::new_with(name, Kind::Secret.resource()).within(ns));
        if let Some(cached) = cached {
            let secret = serde_json::to_value(cached.object())
                .and_then(serde_json::from_value)
                .map_err(|e| Error::Build(format!("Secret/{name}: {e}")))?;
            return Ok(Some(Arc::new(secret)));
        }
        let key = (ns.to_string(), name.to_string());
        let Some(version) = self.indexes.foreign_secrets.version(ns, name) else {
            self.lock_tls().remove(&key);
            return Ok(None);
        };
        if let Some((read, secret)) = self.lock_tls().get(&key)
            && *read == version
        {
            return Ok(Some(secret.clone()));
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let Some(secret) = api
            .get_opt(name)
            .await
            .map_err(|e| Error::Read(format!("Secret/{name}"), e))?
        else {
            return Ok(None);
        };
        let secret = Arc::new(secret);
        let read = secret.resource_version().unwrap_or_default();
        self.lock_tls().insert(key, (read, secret.clone()));
        Ok(Some(secret))
    }

    fn lock_tls(&self) -> std::sync::MutexGuard<'_, TlsSecrets> {
        self.tls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A Secret the operator made for the parent with uid `owner` (the generated values, the
    /// CA, the serving certificate), from the cache. A Secret of that name controlled by
    /// anything else (a deleted parent of the same name whose children the garbage collector
    /// has not removed yet, or someone's own) is not this parent's: its values are never used,
    /// and writing this parent's replaces the predecessor's or reports the foreign one.
    pub fn owned_secret(&self, ns: &str, name: &str, owner: &str) -> Option<DynamicObject> {
        self.store(Kind::Secret)
            .get(&ObjectRef::new_with(name, Kind::Secret.resource()).within(ns))
            .filter(|s| apply::controller_uid(&s.metadata) == Some(owner))
            .map(|s| s.object())
    }

    /// The cached live version of a desired child.
    pub fn live(&self, child: &Child) -> Option<DynamicObject> {
        let kind = Kind::of(&child.resource)?;
        let ns = child.object.metadata.namespace.as_deref()?;
        self.store(kind)
            .get(&ObjectRef::new_with(child.name(), child.resource.clone()).within(ns))
            .map(|c| c.object())
    }

    /// Whether a cached Deployment, StatefulSet or DaemonSet has all its pods ready and is
    /// up to date with its spec: its rollout is complete.
    pub fn workload_ready(&self, kind: Kind, ns: &str, name: &str) -> bool {
        let Some(obj) = self
            .store(kind)
            .get(&ObjectRef::new_with(name, kind.resource()).within(ns))
        else {
            return false;
        };
        let data = obj.data();
        let status = data.get("status");
        let int = |k: &str| {
            status
                .and_then(|s| s.get(k))
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0)
        };
        let observed = int("observedGeneration") >= obj.metadata.generation.unwrap_or(0);
        match kind {
            Kind::DaemonSet => {
                let desired = int("desiredNumberScheduled");
                observed && desired > 0 && int("updatedNumberScheduled") == desired && int("numberReady") == desired
            }
            _ => {
                let want = data
                    .get("spec")
                    .and_then(|s| s.get("replicas"))
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(1);
                // As `kubectl rollout status`: every pod on the current template and ready, and
                // none of an older one left (a Recreate rollout still counts old ready pods).
                observed && int("updatedReplicas") >= want && int("readyReplicas") >= want && int("replicas") <= want
            }
        }
    }
}

/// The decoded value of `key` in a cached Secret.
pub fn secret_value(secret: &DynamicObject, key: &str) -> Option<Vec<u8>> {
    let b64 = secret.data.get("data")?.get(key)?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// The keys of a cached Secret's data.
pub fn secret_keys(secret: &DynamicObject) -> BTreeSet<String> {
    secret
        .data
        .get("data")
        .and_then(serde_json::Value::as_object)
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

/// Creates a Secret the operator owns, or replaces the cached version of it. The replace
/// carries the cached resourceVersion, so a stale cache can never overwrite a newer value: the
/// conflict sends the reconcile round again with the fresh object. A Secret of that name that
/// the operator does not control is never replaced. `live` is the cached metadata of the Secret
/// (a Meeting's credentials are cached as their metadata and a digest); the content written
/// replaces the live one's whole, keys someone else added included.
pub async fn put_secret(client: &Client, mut secret: Secret, live: Option<&ObjectMeta>) -> Result<(), Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let key = format!("Secret/{name}");
    let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &Kind::Secret.resource());
    // A deleted parent's Secret of this name holds its values, never to be reused: it goes,
    // and this one is made afresh.
    let live = match live {
        Some(l) if apply::predecessor(&secret.metadata, l) => {
            apply::delete_predecessor(&dynamic, &key, l)
                .await
                .map_err(|e| Error::Apply(key.clone(), e))?;
            None
        }
        other => other,
    };
    if let Some(l) = live {
        apply::check_owner(&key, &secret.metadata, l).map_err(|e| Error::applying(key.clone(), e))?;
    }
    let exists = live.is_some();
    secret.metadata.resource_version = live.and_then(|l| l.resource_version.clone());
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams {
        field_manager: Some(labels::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let result = if exists {
        api.replace(&name, &pp, &secret).await
    } else {
        api.create(&pp, &secret).await
    };
    match result {
        Ok(_) => Ok(()),
        // It exists though the cache has none: the cache is behind (then it is ours and the
        // next round sees it), or someone else made it.
        Err(kube::Error::Api(s)) if s.code == 409 && live.is_none() => {
            let existing = dynamic.get_opt(&name).await.map_err(|e| Error::Read(key.clone(), e))?;
            if let Some(other) = existing {
                if apply::predecessor(&secret.metadata, &other.metadata) {
                    apply::delete_predecessor(&dynamic, &key, &other.metadata)
                        .await
                        .map_err(|e| Error::Apply(key.clone(), e))?;
                } else {
                    apply::check_owner(&key, &secret.metadata, &other.metadata)
                        .map_err(|e| Error::applying(key.clone(), e))?;
                }
            }
            Err(Error::Stale(key))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Stale(key)),
        Err(e) => Err(Error::Apply(key, e)),
    }
}
