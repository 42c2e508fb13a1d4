//! The operator process: caches of every child kind, the controllers, and their shared context.

pub mod bridge;
pub mod conditions;
pub mod leader;
pub mod meeting;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta, PostParams, TypeMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};

use crate::api::{Bridge, Meeting};
use crate::child::Child;
use crate::clock::Clock;
use crate::http::Health;
use crate::labels;
use crate::metrics::Metrics;
use tokio::sync::watch;

/// Why a reconcile failed. Each variant is a reason a human can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("building desired objects failed: {0}")]
    Build(String),
    #[error("applying {0} failed: {1}")]
    Apply(String, #[source] kube::Error),
    #[error("reading {0} failed: {1}")]
    Read(String, #[source] kube::Error),
    #[error("{0} changed since it was cached; retrying with the fresh version")]
    Stale(String),
    #[error("certificate authority: {0}")]
    Ca(#[from] crate::bridge::ca::CaError),
}

impl Error {
    /// A short stable name for the error, for metrics and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingField(_) => "MissingField",
            Error::Build(_) => "BuildFailed",
            Error::Apply(..) => "ApplyFailed",
            Error::Read(..) => "ReadFailed",
            Error::Stale(_) => "StaleCache",
            Error::Ca(_) => "CAFailed",
        }
    }
}

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

    fn of(resource: &ApiResource) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.resource().kind == resource.kind && k.resource().group == resource.group)
    }
}

/// What every reconcile shares: the client and the caches.
pub struct Context {
    pub client: Client,
    stores: Vec<(Kind, Store<DynamicObject>)>,
    pub nodes: Store<Node>,
    /// Whether cert-manager's Certificate kind is served (decided at start).
    pub cert_manager: bool,
    /// What "now" is for schedules and certificate renewal.
    pub clock: Clock,
    pub bridges: Store<Bridge>,
    pub meetings: Store<Meeting>,
    /// The credentials Secrets of Meetings.
    pub meeting_secrets: Store<DynamicObject>,
    pub metrics: Arc<Metrics>,
    synced: Synced,
    pub recorder: Recorder,
}

impl Context {
    /// Whether every cache has completed its first list. Reconciles wait for it: a plan made
    /// from a half-listed cache (no nodes yet) would create children only to change them.
    pub fn caches_synced(&self) -> bool {
        self.synced.pending.load(Ordering::SeqCst) == 0
    }

    /// The cache of one child kind (empty for a kind not watched).
    pub fn store(&self, kind: Kind) -> Store<DynamicObject> {
        self.stores
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| reflector::store::Writer::new(kind.resource()).as_reader())
    }

    /// Publishes an Event about `object`. Events are best effort: a failure is logged, never
    /// fails the reconcile.
    pub async fn event(&self, object: &ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, object).await {
            tracing::warn!(error = %e, reason, "publishing an Event failed");
        }
    }

    /// A Secret of a Bridge from the cache (the generated one, the CA, the serving certificate).
    pub fn cached_secret(&self, ns: &str, name: &str) -> Option<Arc<DynamicObject>> {
        self.store(Kind::Secret)
            .get(&ObjectRef::new_with(name, Kind::Secret.resource()).within(ns))
    }

    /// The cached live version of a desired child.
    pub fn live(&self, child: &Child) -> Option<Arc<DynamicObject>> {
        let kind = Kind::of(&child.resource)?;
        let ns = child.object.metadata.namespace.as_deref()?;
        self.store(kind)
            .get(&ObjectRef::new_with(child.name(), child.resource.clone()).within(ns))
    }

    /// Whether a cached Deployment, StatefulSet or DaemonSet has all its pods ready and is
    /// up to date with its spec.
    pub fn workload_ready(&self, kind: Kind, ns: &str, name: &str) -> bool {
        let Some(obj) = self
            .store(kind)
            .get(&ObjectRef::new_with(name, kind.resource()).within(ns))
        else {
            return false;
        };
        let status = obj.data.get("status");
        let int = |k: &str| {
            status
                .and_then(|s| s.get(k))
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0)
        };
        let observed = int("observedGeneration") >= obj.metadata.generation.unwrap_or(0);
        match kind {
            Kind::DaemonSet => {
                observed && int("desiredNumberScheduled") > 0 && int("numberReady") == int("desiredNumberScheduled")
            }
            _ => {
                let want = obj
                    .data
                    .get("spec")
                    .and_then(|s| s.get("replicas"))
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(1);
                observed && int("readyReplicas") >= want
            }
        }
    }
}

/// How the operator runs: what it watches, whether it contends for a Lease, its clock.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Watch only this namespace (`None`: all).
    pub watch_namespace: Option<String>,
    /// Contend for this Lease and reconcile only while holding it.
    pub lease: Option<leader::LeaseConfig>,
    pub clock: Clock,
}

/// Why the operator stopped other than by a shutdown request.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Lease(#[from] leader::LeaseError),
}

/// Resolves once a shutdown was requested.
pub async fn requested(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs the operator until `shutdown` turns true (or, with a Lease, until it is lost).
///
/// With leader election a standby reports ready at once: it has nothing to serve, and a
/// standby that stayed unready would stall every rolling update of the Deployment. The leader
/// starts its caches and controllers only once it holds the Lease; the caches of a small
/// cluster list in well under a second, far inside the takeover bounds.
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let Some(config) = options.lease.clone() else {
        metrics.set_leader(true);
        lead(client, &options, metrics, health, shutdown).await;
        return Ok(());
    };
    health.set_ready(true);
    let mut elector = leader::Elector::new(client.clone(), config).await?;
    tracing::info!(identity = %elector.identity(), "contending for leadership");
    let acquired = tokio::select! {
        _ = requested(shutdown.clone()) => false,
        () = elector.acquire() => true,
    };
    if !acquired {
        return Ok(());
    }
    tracing::info!("acquired the lease; leading");
    metrics.set_leader(true);
    let lost = tokio::select! {
        () = lead(client, &options, metrics.clone(), health, shutdown) => None,
        lost = elector.hold() => Some(lost),
    };
    metrics.set_leader(false);
    if let Some(lost) = lost {
        return Err(lost.into());
    }
    elector.release().await?;
    tracing::info!("released the lease");
    Ok(())
}

/// The namespace the operator watches, or all of them.
struct Scope(Option<String>);

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.0 {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    fn dynamic(&self, client: &Client, ar: &ApiResource) -> Api<DynamicObject> {
        match &self.0 {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        }
    }
}

/// The decoded value of `key` in a cached Secret.
pub fn secret_value(secret: &DynamicObject, key: &str) -> Option<Vec<u8>> {
    let b64 = secret.data.get("data")?.get(key)?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// Creates a Secret the operator owns, or replaces the cached version of it. The replace
/// carries the cached resourceVersion, so a stale cache can never overwrite a newer value: the
/// conflict sends the reconcile round again with the fresh object.
pub async fn put_secret(client: &Client, mut secret: Secret, live: Option<&DynamicObject>) -> Result<(), Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    secret.metadata.resource_version = live.and_then(|l| l.resource_version());
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let pp = PostParams {
        field_manager: Some(labels::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let result = match live {
        None => api.create(&pp, &secret).await,
        Some(_) => api.replace(&name, &pp, &secret).await,
    };
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Stale(format!("Secret/{name}"))),
        Err(e) => Err(Error::Apply(format!("Secret/{name}"), e)),
    }
}

/// Requeue after a failed reconcile: at once (almost) when only the cache was stale, after a
/// back-off otherwise, so a broken API server is not hammered.
pub fn retry_after(err: &Error) -> Action {
    tracing::warn!(error = %err, reason = err.reason(), "reconcile failed");
    match err {
        Error::Stale(_) => Action::requeue(std::time::Duration::from_secs(1)),
        _ => Action::requeue(std::time::Duration::from_secs(5)),
    }
}

/// Label selector of the children one kind of parent owns.
fn owned_by(owner_kind: &str) -> watcher::Config {
    watcher::Config::default().labels(&format!(
        "{}={},{}={owner_kind}",
        labels::MANAGED_BY_KEY,
        labels::MANAGED_BY,
        labels::OWNER_KIND
    ))
}

/// A cache of one child kind: a reflected watch whose objects carry their apiVersion and kind
/// (list responses omit them), so a cached child compares equal to its desired form.
fn child_cache(
    scope: &Scope,
    client: &Client,
    ar: &ApiResource,
    owner_kind: &str,
    synced: &Synced,
) -> (
    Store<DynamicObject>,
    impl futures::Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static,
) {
    let writer = reflector::store::Writer::new(ar.clone());
    let store = writer.as_reader();
    let types = TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    };
    let stream = synced
        .track(
            watcher(scope.dynamic(client, ar), owned_by(owner_kind))
                .default_backoff()
                .modify(move |o: &mut DynamicObject| o.types = Some(types.clone()))
                .reflect(writer),
        )
        .applied_objects();
    (store, stream)
}

/// Meetings by phase for the metrics, kept up to date from the Meeting watch one event at a
/// time, so no reconcile has to count every Meeting.
#[derive(Default)]
struct PhaseCounts {
    phase_of: BTreeMap<(String, String), String>,
    counts: BTreeMap<String, i64>,
}

impl PhaseCounts {
    fn key(m: &Meeting) -> (String, String) {
        (m.namespace().unwrap_or_default(), m.name_any())
    }

    fn phase(m: &Meeting) -> Option<String> {
        m.status.as_ref()?.phase.map(|p| format!("{p:?}"))
    }

    fn set(&mut self, m: &Meeting) {
        let old = match Self::phase(m) {
            Some(p) => {
                *self.counts.entry(p.clone()).or_default() += 1;
                self.phase_of.insert(Self::key(m), p)
            }
            None => self.phase_of.remove(&Self::key(m)),
        };
        if let Some(old) = old {
            *self.counts.entry(old).or_default() -= 1;
        }
    }

    fn remove(&mut self, m: &Meeting) {
        if let Some(old) = self.phase_of.remove(&Self::key(m)) {
            *self.counts.entry(old).or_default() -= 1;
        }
    }

    /// After a (re)list the cache is the truth; deletions missed while disconnected vanish.
    fn rebuild(&mut self, meetings: &[Arc<Meeting>]) {
        self.phase_of.clear();
        self.counts.values_mut().for_each(|n| *n = 0);
        meetings.iter().for_each(|m| self.set(m));
    }
}

/// Readiness: true once every cache has completed its first list. Observed on the event
/// streams themselves rather than with `Store::wait_until_ready`, whose one-shot wakeup serves
/// a single waiter, and the controllers already wait on their stores.
#[derive(Clone)]
struct Synced {
    pending: Arc<AtomicUsize>,
    health: Arc<Health>,
}

impl Synced {
    fn new(health: Arc<Health>) -> Synced {
        Synced {
            pending: Arc::new(AtomicUsize::new(0)),
            health,
        }
    }

    /// Counts `events` as a cache to wait for, until its first `InitDone`.
    fn track<K, S>(&self, events: S) -> impl futures::Stream<Item = S::Item> + Send + 'static
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let listed = AtomicBool::new(false);
        let me = self.clone();
        events.inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone))
                && !listed.swap(true, Ordering::SeqCst)
                && me.pending.fetch_sub(1, Ordering::SeqCst) == 1
            {
                me.health.set_ready(true);
                tracing::info!("caches synced");
            }
        })
    }
}

/// Builds both controllers and runs them until `shutdown`; in-flight reconciles finish first.
async fn lead(
    client: Client,
    options: &Options,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) {
    let scope = Scope(options.watch_namespace.clone());
    let cert_manager = serves(&client, "cert-manager.io/v1", "Certificate").await;

    let synced = Synced::new(health);
    let bridges: Api<Bridge> = scope.api(&client);
    let meetings: Api<Meeting> = scope.api(&client);
    let (bridge_store, writer) = reflector::store();
    // A deleted Bridge is never reconciled again: its capacity series go when it goes. A
    // deletion missed while disconnected is caught at the relist that follows.
    let forget = metrics.clone();
    let known = bridge_store.clone();
    let mut seen = BTreeSet::new();
    let stream = synced
        .track(
            watcher(bridges.clone(), watcher::Config::default())
                .default_backoff()
                .reflect(writer),
        )
        .inspect(move |event| match event {
            Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b)) => {
                seen.insert((b.namespace().unwrap_or_default(), b.name_any()));
            }
            Ok(watcher::Event::Delete(b)) => {
                let key = (b.namespace().unwrap_or_default(), b.name_any());
                forget.forget_bridge(&key.0, &key.1);
                seen.remove(&key);
            }
            Ok(watcher::Event::InitDone) => {
                let now: BTreeSet<_> = known
                    .state()
                    .iter()
                    .map(|b| (b.namespace().unwrap_or_default(), b.name_any()))
                    .collect();
                for (ns, name) in seen.difference(&now) {
                    forget.forget_bridge(ns, name);
                }
                seen = now;
            }
            _ => {}
        });
    let mut bridge_ctrl = Controller::for_stream(stream.applied_objects(), bridge_store.clone());
    let (meeting_store, writer) = reflector::store();
    let mut phases = PhaseCounts::default();
    let (counted, phase_metrics) = (meeting_store.clone(), metrics.clone());
    let stream = synced
        .track(
            watcher(meetings.clone(), watcher::Config::default())
                .default_backoff()
                .reflect(writer),
        )
        .inspect(move |event| {
            match event {
                Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => phases.set(m),
                Ok(watcher::Event::Delete(m)) => phases.remove(m),
                Ok(watcher::Event::InitDone) => phases.rebuild(&counted.state()),
                _ => return,
            }
            phase_metrics.set_meetings_by_phase(&phases.counts);
        });
    let mut meeting_ctrl = Controller::for_stream(stream.applied_objects(), meeting_store.clone());

    let mut stores = Vec::new();
    for kind in Kind::ALL {
        if kind == Kind::Certificate && !cert_manager {
            continue;
        }
        let ar = kind.resource();
        let (store, stream) = child_cache(&scope, &client, &ar, bridge::OWNER_KIND, &synced);
        stores.push((kind, store));
        bridge_ctrl = bridge_ctrl.owns_stream_with(stream, ar);
    }
    let secret_ar = Kind::Secret.resource();
    let (meeting_secrets, stream) = child_cache(&scope, &client, &secret_ar, meeting::OWNER_KIND, &synced);
    meeting_ctrl = meeting_ctrl.owns_stream_with(stream, secret_ar);

    // Nodes decide SFU addresses; any change re-plans every Bridge.
    let (nodes, node_writer) = reflector::store();
    let node_events = synced
        .track(
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .reflect(node_writer),
        )
        .applied_objects()
        .filter_map(|n| async move { n.ok().map(|_| ()) });
    bridge_ctrl = bridge_ctrl.reconcile_all_on(node_events);
    // Meetings size their Bridge's SFU pool.
    bridge_ctrl = bridge_ctrl.watches(meetings, watcher::Config::default(), |m: Meeting| {
        m.namespace()
            .map(|ns| ObjectRef::<Bridge>::new(&m.spec.bridge).within(&ns))
    });
    // A TLS Secret the user names may appear, change or vanish after the Bridge: only its
    // metadata is watched, to find the Bridges that name it.
    let referencing = bridge_store.clone();
    bridge_ctrl = bridge_ctrl.watches_stream(
        watcher(
            scope.api::<PartialObjectMeta<Secret>>(&client),
            watcher::Config::default(),
        )
        .default_backoff()
        .touched_objects(),
        move |s| {
            let (name, ns) = (s.name_any(), s.namespace());
            referencing
                .state()
                .into_iter()
                .filter(|b| b.namespace() == ns && bridge::uses_secret(b, &name))
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        },
    );
    // A Bridge's readiness and its app secret decide its Meetings' phase and tokens.
    let hosted = meeting_store.clone();
    let meetings_of = move |ns: Option<String>, bridge: String| {
        hosted
            .state()
            .into_iter()
            .filter(|m| m.namespace() == ns && m.spec.bridge == bridge)
            .map(|m| ObjectRef::from_obj(&*m))
            .collect::<Vec<_>>()
    };
    let of_bridge = meetings_of.clone();
    meeting_ctrl = meeting_ctrl.watches(bridges, watcher::Config::default(), move |b: Bridge| {
        of_bridge(b.namespace(), b.name_any())
    });
    let app_secrets = watcher::Config::default().labels(&format!(
        "{}={},{}={},{}={}",
        labels::MANAGED_BY_KEY,
        labels::MANAGED_BY,
        labels::OWNER_KIND,
        bridge::OWNER_KIND,
        labels::COMPONENT,
        labels::Component::Secrets.as_str()
    ));
    meeting_ctrl = meeting_ctrl.watches(scope.api::<Secret>(&client), app_secrets, move |s: Secret| {
        match s.labels().get(labels::INSTANCE) {
            Some(bridge) => meetings_of(s.namespace(), bridge.clone()),
            None => Vec::new(),
        }
    });

    let reporter = Reporter {
        controller: "conclave".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let cx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        stores,
        nodes,
        cert_manager,
        clock: options.clock.clone(),
        bridges: bridge_store,
        meetings: meeting_store,
        meeting_secrets,
        metrics,
        synced,
    });
    tracing::info!("starting controllers");
    let bridges = bridge_ctrl
        .graceful_shutdown_on(requested(shutdown.clone()))
        .run(bridge::reconcile, bridge::error_policy, cx.clone())
        .for_each(log_result);
    let meetings = meeting_ctrl
        .graceful_shutdown_on(requested(shutdown))
        .run(meeting::reconcile, meeting::error_policy, cx)
        .for_each(log_result);
    futures::join!(bridges, meetings);
    tracing::info!("controllers stopped");
}

async fn log_result<T, E: std::fmt::Display>(res: Result<T, E>) {
    if let Err(e) = res {
        tracing::debug!(error = %e, "reconcile result");
    }
}

async fn serves(client: &Client, api_version: &str, kind: &str) -> bool {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => list.resources.iter().any(|r| r.kind == kind),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting(name: &str, phase: Option<&str>) -> Meeting {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"bridge": "meet"},
            "status": phase.map(|p| serde_json::json!({"phase": p})),
        }))
        .expect("meeting")
    }

    #[test]
    fn phase_counts_follow_events_and_relists() {
        let mut c = PhaseCounts::default();
        c.set(&meeting("a", Some("Scheduled")));
        c.set(&meeting("b", Some("Scheduled")));
        c.set(&meeting("a", Some("Open")));
        c.set(&meeting("a", Some("Open")));
        c.set(&meeting("c", None));
        assert_eq!(
            c.counts,
            BTreeMap::from([("Open".to_string(), 1), ("Scheduled".to_string(), 1)])
        );
        c.remove(&meeting("b", Some("Scheduled")));
        assert_eq!(c.counts["Scheduled"], 0);
        c.rebuild(&[Arc::new(meeting("d", Some("Ended")))]);
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
