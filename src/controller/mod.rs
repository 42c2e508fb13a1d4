//! The operator process: caches of every child kind, the controllers, and their shared context.

pub mod bridge;
pub mod leader;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::api::Bridge;
use crate::child::Child;
use crate::http::Health;
use crate::labels;
use crate::metrics::Metrics;

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
}

impl Error {
    /// A short, stable name for the metrics' `reason` label (the message itself varies).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingField(_) => "missing_field",
            Error::Build(_) => "build_failed",
            Error::Apply(..) => "apply_failed",
            Error::Read(..) => "read_failed",
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

/// What every reconcile shares: the client, the caches and the metrics.
pub struct Context {
    pub client: Client,
    stores: Vec<(Kind, Store<DynamicObject>)>,
    pub nodes: Store<Node>,
    /// Whether cert-manager's Certificate kind is served (decided at start).
    pub cert_manager: bool,
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// The cache of one child kind (empty for a kind not watched).
    pub fn store(&self, kind: Kind) -> Store<DynamicObject> {
        self.stores
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| reflector::store::Writer::new(kind.resource()).as_reader())
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

/// How `run` scopes its watches and whether it contends for leadership.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Watch Bridges and children in this namespace only; `None`: every namespace.
    pub watch_namespace: Option<String>,
    /// Run the controllers only while holding this Lease; `None`: always.
    pub lease: Option<leader::LeaseConfig>,
}

/// Why the operator stopped other than by a requested shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Lease(#[from] leader::LeaseError),
    #[error("cache {0} stopped")]
    CacheStopped(String),
}

/// Completes once a shutdown was requested (or nobody can request one any more).
pub async fn requested(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs the operator until `shutdown` turns true: caches first (a standby keeps them warm so a
/// takeover starts from synced caches), then, once leader (or at once without leader
/// election), the controllers. A requested shutdown stops taking work, lets the reconciles in
/// flight finish and releases the lease. Losing the lease returns an error at once, dropping
/// reconciles in flight, because another replica may already be leading.
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let cert_manager = serves(&client, "cert-manager.io/v1", "Certificate").await;
    let mut caches = Caches::start(&client, options.watch_namespace.as_deref(), cert_manager, &metrics);
    let ready = caches.ready();
    let readiness = tokio::spawn({
        let health = health.clone();
        let ready = ready.clone();
        async move {
            ready.await;
            // Ready regardless of leadership: a new replica starts as a standby, and a rolling
            // update waits for each new Pod to be ready before it stops an old one, so a standby
            // reporting unready would stall every rollout.
            health.set_ready(true);
            tracing::info!("caches synced");
        }
    });
    let cx = Arc::new(Context {
        client: client.clone(),
        stores: caches.stores.clone(),
        nodes: caches.nodes.clone(),
        cert_manager,
        metrics: metrics.clone(),
    });

    let result = match options.lease {
        None => {
            metrics.set_leader(true);
            lead(&cx, &mut caches, ready, shutdown, None).await
        }
        Some(config) => {
            let mut elector = leader::Elector::new(client, config).await?;
            tracing::info!(identity = %elector.identity(), "contending for leadership");
            let acquired = tokio::select! {
                _ = requested(shutdown.clone()) => false,
                () = elector.acquire() => true,
                name = caches.ended() => return Err(RunError::CacheStopped(name)),
            };
            if acquired {
                metrics.set_leader(true);
                let led = lead(&cx, &mut caches, ready, shutdown, Some(&mut elector)).await;
                metrics.set_leader(false);
                led?;
                elector.release().await?;
            }
            Ok(())
        }
    };
    readiness.abort();
    result
}

/// Runs the controllers until a requested shutdown has drained them, the lease is lost, or a
/// cache stops.
async fn lead(
    cx: &Arc<Context>,
    caches: &mut Caches,
    ready: impl Future<Output = ()>,
    shutdown: watch::Receiver<bool>,
    elector: Option<&mut leader::Elector>,
) -> Result<(), RunError> {
    let controller = caches.controller();
    let controllers = async {
        // Reconciling from half-filled caches would re-apply children that exist and plan SFU
        // replicas without nodes.
        tokio::select! {
            () = ready => {}
            () = requested(shutdown.clone()) => return,
        }
        tracing::info!("starting controllers");
        controller
            .graceful_shutdown_on(requested(shutdown))
            .run(bridge::reconcile, bridge::error_policy, cx.clone())
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "reconcile result");
                }
            })
            .await;
        tracing::info!("controllers stopped");
    };
    let lost = async {
        match elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = controllers => Ok(()),
        lost = lost => Err(lost.into()),
        name = caches.ended() => Err(RunError::CacheStopped(name)),
    }
}

/// The operator's caches: Bridges, every child kind (only objects with Conclave's managed-by
/// label) and Nodes. Each is driven by a task of its own from the start, whether or not this
/// replica leads, and fans its events out to whichever controller is running.
struct Caches {
    bridges: Store<Bridge>,
    stores: Vec<(Kind, Store<DynamicObject>)>,
    nodes: Store<Node>,
    triggers: Triggers,
    tasks: JoinSet<String>,
}

/// Where cache events go. Broadcast channels never block a cache: with no controller running
/// nothing is kept, and a controller that falls behind reconciles everything instead.
#[derive(Clone)]
struct Triggers {
    bridges: broadcast::Sender<Arc<Bridge>>,
    owners: broadcast::Sender<ObjectRef<Bridge>>,
    all: broadcast::Sender<()>,
}

const TRIGGER_BUFFER: usize = 1024;

impl Caches {
    fn start(client: &Client, namespace: Option<&str>, cert_manager: bool, metrics: &Arc<Metrics>) -> Caches {
        let triggers = Triggers {
            bridges: broadcast::channel(TRIGGER_BUFFER).0,
            owners: broadcast::channel(TRIGGER_BUFFER).0,
            all: broadcast::channel(TRIGGER_BUFFER).0,
        };
        let mut tasks = JoinSet::new();

        let writer = reflector::store::Writer::<Bridge>::default();
        let bridges = writer.as_reader();
        let api: Api<Bridge> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        tasks.spawn(drive("Bridge".into(), events, {
            let (tx, metrics, store) = (triggers.bridges.clone(), metrics.clone(), bridges.clone());
            let mut known = BTreeSet::new();
            move |event| match event {
                watcher::Event::Apply(b) | watcher::Event::InitApply(b) => {
                    known.insert(key(&b));
                    let _ = tx.send(Arc::new(b));
                }
                watcher::Event::Delete(b) => {
                    let (ns, name) = key(&b);
                    metrics.forget_bridge(&ns, &name);
                    known.remove(&(ns, name));
                }
                // A relist misses deletes that happened while the watch was down.
                watcher::Event::InitDone => {
                    let now: BTreeSet<_> = store.state().iter().map(|b| key(b)).collect();
                    for (ns, name) in known.difference(&now) {
                        metrics.forget_bridge(ns, name);
                    }
                    known = now;
                }
                watcher::Event::Init => {}
            }
        }));

        let managed = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY_KEY, labels::MANAGED_BY));
        let mut stores = Vec::new();
        for kind in Kind::ALL {
            if kind == Kind::Certificate && !cert_manager {
                continue;
            }
            let ar = kind.resource();
            let writer = reflector::store::Writer::new(ar.clone());
            let store = writer.as_reader();
            stores.push((kind, store.clone()));
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            // Items of a list carry no apiVersion and kind (only the list does); without them a
            // child cached at start-up never compares equal to its desired version, and every
            // reconcile after a restart or takeover would re-apply it.
            let types = TypeMeta {
                api_version: ar.api_version.clone(),
                kind: ar.kind.clone(),
            };
            let events = watcher(api, managed.clone())
                .default_backoff()
                .modify(move |o: &mut DynamicObject| o.types = Some(types.clone()))
                .reflect(writer);
            let (tx, metrics) = (triggers.owners.clone(), metrics.clone());
            tasks.spawn(drive(ar.kind.clone(), events, move |event| {
                match &event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) => {
                        if let Some(owner) = bridge_owner(o) {
                            let _ = tx.send(owner);
                        }
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                metrics.set_managed_objects(&ar.kind, store.len());
            }));
        }

        // Nodes decide SFU addresses; any change re-plans every Bridge. Nodes are cluster-scoped,
        // so they are watched everywhere even with a watch namespace.
        let writer = reflector::store::Writer::<Node>::default();
        let nodes = writer.as_reader();
        let events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        let tx = triggers.all.clone();
        tasks.spawn(drive("Node".into(), events, move |event| match event {
            watcher::Event::Apply(_) | watcher::Event::InitApply(_) | watcher::Event::Delete(_) => {
                let _ = tx.send(());
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }));

        Caches {
            bridges,
            stores,
            nodes,
            triggers,
            tasks,
        }
    }

    /// Completes once every cache has listed its objects.
    fn ready(&self) -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
        let mut waits = vec![wait_ready(self.bridges.clone()), wait_ready(self.nodes.clone())];
        waits.extend(self.stores.iter().map(|(_, s)| wait_ready(s.clone())));
        futures::future::join_all(waits).map(|_| ()).boxed().shared()
    }

    /// A Bridge controller fed from the caches: Bridge changes, changes of children (to their
    /// owning Bridge), and, first of all, every Bridge, since events before it subscribed were
    /// not kept.
    fn controller(&self) -> Controller<Bridge> {
        let t = &self.triggers;
        let all = futures::stream::once(async {}).chain(receive(t.all.subscribe(), t.all.clone()));
        Controller::for_shared_stream(receive(t.bridges.subscribe(), t.all.clone()), self.bridges.clone())
            .reconcile_on(receive(t.owners.subscribe(), t.all.clone()))
            .reconcile_all_on(all)
    }

    /// The name of the first cache whose task ended. Watches retry forever, so this means a
    /// panic or a bug; pending while every cache runs.
    async fn ended(&mut self) -> String {
        match self.tasks.join_next().await {
            Some(Ok(name)) => name,
            Some(Err(e)) => format!("task ({e})"),
            None => std::future::pending().await,
        }
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn wait_ready<K>(store: Store<K>) -> futures::future::BoxFuture<'static, ()>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    async move {
        // Only fails when the writer is gone, and then `Caches::ended` reports it.
        let _ = store.wait_until_ready().await;
    }
    .boxed()
}

/// Polls a reflected watch stream for ever, handing each event to `on_event`.
async fn drive<K>(
    name: String,
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    mut on_event: impl FnMut(watcher::Event<K>),
) -> String {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => on_event(event),
            Err(e) => tracing::warn!(cache = %name, error = %e, "watch failed; retrying"),
        }
    }
    name
}

/// A broadcast receiver as a stream. Events missed because the receiver lagged become a
/// reconcile of everything on `lagged`.
fn receive<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    lagged: broadcast::Sender<()>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold((rx, lagged), |(mut rx, lagged)| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, (rx, lagged))),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "controller fell behind the caches; reconciling everything");
                    let _ = lagged.send(());
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn key(b: &Bridge) -> (String, String) {
    (b.namespace().unwrap_or_default(), b.name_any())
}

/// The Bridge that controls a child, if any.
fn bridge_owner(obj: &DynamicObject) -> Option<ObjectRef<Bridge>> {
    let ns = obj.metadata.namespace.as_deref()?;
    let group = format!("{}/", Bridge::group(&()));
    obj.owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == Bridge::kind(&()) && o.api_version.starts_with(&group))
        .map(|o| ObjectRef::new(&o.name).within(ns))
}

async fn serves(client: &Client, api_version: &str, kind: &str) -> bool {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => list.resources.iter().any(|r| r.kind == kind),
        Err(_) => false,
    }
}
