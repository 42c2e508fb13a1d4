//! The watches: one per kind, each feeding one slim cache shared by both controllers; the
//! relations that turn a change into the reconciles it affects; health and readiness.
//!
//! | watch | cache | a change reconciles |
//! |---|---|---|
//! | Bridges | typed, slim | the Bridge (spec or metadata changed); its Meetings (spec, metadata or readiness changed) |
//! | Meetings | typed, slim, by Bridge | the Meeting (spec or metadata); its Bridge and overlapping siblings (spec) |
//! | each child kind of Bridges | slim metadata, the rest as JSON text | its Bridge; a rotated generated Secret also its Meetings |
//! | Secrets Conclave manages | Bridges' as text, Meetings' credentials as digests | the owner |
//! | other Secrets, metadata only | resourceVersion | Bridges naming one for TLS |
//! | SFU pods | slim metadata, the rest as text | their Bridge, while one waits for a node that cannot take it |
//! | Nodes | slim | every Bridge, when placement inputs changed (not on heartbeats) |

mod cache;
mod compact;
mod credentials;
mod feed;
mod index;
mod initial_list;
mod invalid;
mod lenient;
mod queue;
mod relations;
mod secrets;
mod slim;
mod synced;
mod throttle;
mod timers;

use std::collections::HashSet;

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta, TypeMeta};
use kube::runtime::controller::Config;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{Controller, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use compact::Compact;
pub use credentials::Credentials;
pub use index::Indexes;
pub use initial_list::{InitialList, PROBE_SELECTOR};
pub(super) use queue::split_key;
pub(super) use synced::Synced;
pub use timers::Timers;

use super::events::Events;
use super::{Context, Kind, Options, bridge, meeting, requested};
use crate::api::{Bridge, Meeting};
use crate::http::Health;
use crate::labels;
use crate::metrics::Metrics;
use cache::StoreSink;
use feed::{Sink, Triggers};
use invalid::InvalidObjects;
use lenient::Lenient;

/// Reconciles of one kind running at once. Each is mostly a wait on the API server, and its
/// state (about 13 KiB for a Meeting's) lives until it ends; the requests share one HTTP/2
/// connection (`crate::api_client`), whose streams the API server limits too. The bound must
/// still be well above what the API server can serve: at 16 Meetings at once (measured, 10
/// Bridges + 500 Meetings, release build) links came 4.4 s after the last create and a burst
/// of 20 creates had its links at p50 861 ms, against 0.4 s and 381 ms without a bound; at 32
/// (100 Bridges + 10,000 Meetings) links came 34 s after the last create, 24 s at 64.
///
/// A Bridge reconcile parses its children and builds them anew, several hundred KiB while it
/// runs: 16 at once made a burst of Meetings on 100 Bridges raise the peak by 6 MiB; at 8 the
/// peak was 2.6 MiB lower, with Bridges Ready as fast and links sooner (one run each).
const BRIDGE_CONCURRENCY: u16 = 8;
const MEETING_CONCURRENCY: usize = 64;

/// The namespace the operator watches (or all of them), and how each watch lists.
struct Scope {
    namespace: Option<String>,
    streaming: bool,
}

impl Scope {
    /// A watch's configuration: the initial list the operator chose.
    fn config(&self) -> watcher::Config {
        initial_list::config(self.streaming)
    }

    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    fn dynamic(&self, client: &Client, ar: &ApiResource) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        }
    }
}

/// Label selector of the children one kind of parent owns.
fn owned_by(scope: &Scope, owner_kind: &str) -> watcher::Config {
    scope.config().labels(&format!(
        "{}={},{}={owner_kind}",
        labels::MANAGED_BY_KEY,
        labels::MANAGED_BY,
        labels::OWNER_KIND
    ))
}

/// Tasks that end when this does: the feeds stop with the controllers, also when leadership
/// is lost and `lead` is dropped mid-way.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

/// Starts the feeds.
struct Feeds {
    tasks: Tasks,
    triggers: Triggers,
    health: Arc<Health>,
    synced: Synced,
}

impl Feeds {
    fn spawn<W, S>(
        &mut self,
        name: &'static str,
        events: impl futures::Stream<Item = Result<watcher::Event<W>, watcher::Error>> + Send + 'static,
        sink: S,
    ) where
        W: Send + 'static,
        S: Sink<W> + 'static,
    {
        self.synced.expect();
        let (triggers, health, synced) = (self.triggers.clone(), self.health.clone(), self.synced.clone());
        self.tasks
            .0
            .push(tokio::spawn(feed::drive(name, events, sink, triggers, health, synced)));
    }
}

/// Builds the caches and both controllers and runs them until `shutdown`; reconciles in flight
/// finish first.
pub(super) async fn lead(
    client: Client,
    options: &Options,
    cert_manager: bool,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) {
    // Streaming or not is decided by asking the API server, about Bridges in this scope.
    let mut scope = Scope {
        namespace: options.watch_namespace.clone(),
        streaming: false,
    };
    scope.streaming = options.initial_list.streaming(&client, scope.api(&client)).await;
    let events = Events::new(client.clone(), std::env::var("POD_NAME").ok());
    let invalid = Arc::new(InvalidObjects::new(metrics.clone(), events.clone()));
    let indexes = Indexes::default();
    let written = Arc::new(super::status::Written::default());

    let bridge_writer: Writer<Bridge> = Writer::default();
    let meeting_writer: Writer<Meeting> = Writer::default();
    let (bridge_store, meeting_store) = (bridge_writer.as_reader(), meeting_writer.as_reader());
    let (bridge_tx, bridge_rx) = mpsc::unbounded();
    let meeting_queue = Arc::new(queue::Queue::default());
    let timers = Arc::new(Timers::default());
    let synced = Synced::new(health.clone());
    let mut feeds = Feeds {
        tasks: Tasks::default(),
        triggers: Triggers {
            bookings: throttle::Throttle::new(throttle::Throttle::WINDOW, bridge_tx.clone()),
            bridges: bridge_tx,
            meetings: meeting_queue.clone(),
            bridge_store: bridge_store.clone(),
            meeting_store: meeting_store.clone(),
        },
        health,
        synced: synced.clone(),
    };

    let sink = StoreSink::new(
        "Bridge",
        bridge_writer,
        (),
        Box::new(|b: &mut Bridge| slim::meta(&mut b.metadata)),
        relations::bridge(metrics.clone(), indexes.hosted.clone(), written.clone()),
        invalid.clone(),
    );
    let bridges = watcher(scope.api::<Lenient<Bridge>>(&client), scope.config());
    feeds.spawn("bridges", bridges, sink);

    let phases = Arc::new(Mutex::new(index::PhaseCounts::default()));
    let (counted, hosted) = (phases.clone(), indexes.hosted.clone());
    let phase_metrics = metrics.clone();
    let sink = StoreSink::new(
        "Meeting",
        meeting_writer,
        (),
        Box::new(|m: &mut Meeting| slim::meta(&mut m.metadata)),
        relations::meeting(
            phases,
            metrics.clone(),
            indexes.hosted.clone(),
            bridge_store.clone(),
            written.clone(),
            timers.clone(),
        ),
        invalid.clone(),
    )
    .on_relisted(Box::new(move |store| {
        let all = store.state();
        let mut phases = counted.lock().unwrap_or_else(|p| p.into_inner());
        phases.rebuild(all.iter().map(|m| &**m));
        phase_metrics.set_meetings_by_phase(&phases.counts);
        hosted.retain(|ns, name| {
            store
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
                .is_some()
        });
    }));
    let meetings = watcher(scope.api::<Lenient<Meeting>>(&client), scope.config());
    feeds.spawn("meetings", meetings, sink);

    let mut stores = Vec::new();
    let mut bridge_secrets = None;
    for kind in Kind::ALL {
        if kind == Kind::Certificate && !cert_manager {
            continue;
        }
        let ar = kind.resource();
        let writer = Writer::<Compact>::new(ar.clone());
        stores.push((kind, writer.as_reader()));
        let types = TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        };
        let sink = StoreSink::new(
            kind.name(),
            writer,
            ar.clone(),
            Box::new(move |o: &mut Compact| slim::child(o, &types)),
            relations::child(kind, indexes.hosted.clone()),
            invalid.clone(),
        );
        if kind == Kind::Secret {
            // Secrets come with the Meetings' credentials, from one watch (below).
            bridge_secrets = Some(sink);
            continue;
        }
        let children = watcher(scope.dynamic(&client, &ar), owned_by(&scope, bridge::OWNER_KIND));
        feeds.spawn(kind.name(), children, sink);
    }
    if let Some(bridge_secrets) = bridge_secrets {
        let sink = secrets::OwnedSink {
            bridges: bridge_secrets,
            credentials: secrets::CredentialsSink {
                cache: indexes.credentials.clone(),
                seen: HashSet::new(),
            },
        };
        let managed = scope
            .config()
            .labels(&format!("{}={}", labels::MANAGED_BY_KEY, labels::MANAGED_BY));
        feeds.spawn("secrets", watcher(scope.api::<Secret>(&client), managed), sink);
    }
    // Secrets Conclave does not manage: a TLS Secret a Bridge names may appear, change or
    // vanish after the Bridge. Metadata only.
    let foreign = scope
        .config()
        .labels(&format!("{}!={}", labels::MANAGED_BY_KEY, labels::MANAGED_BY));
    let sink = secrets::ForeignSink {
        versions: indexes.foreign_secrets.clone(),
        bridges: bridge_store.clone(),
        seen: HashSet::new(),
    };
    feeds.spawn(
        "foreign-secrets",
        watcher(scope.api::<PartialObjectMeta<Secret>>(&client), foreign),
        sink,
    );

    // SFU pods: one waiting for a node that cannot take it re-plans its Bridge (placement).
    let pod_ar = super::context::pod_resource();
    let pod_writer = Writer::<Compact>::new(pod_ar.clone());
    let pods = pod_writer.as_reader();
    let pod_types = TypeMeta {
        api_version: pod_ar.api_version.clone(),
        kind: pod_ar.kind.clone(),
    };
    let sink = StoreSink::new(
        "Pod",
        pod_writer,
        pod_ar.clone(),
        Box::new(move |o: &mut Compact| slim::child(o, &pod_types)),
        relations::sfu_pod(),
        invalid.clone(),
    );
    let sfu_pods = scope.config().labels(&format!(
        "{}={},{}={},{}={}",
        labels::MANAGED_BY_KEY,
        labels::MANAGED_BY,
        labels::OWNER_KIND,
        bridge::OWNER_KIND,
        labels::COMPONENT,
        labels::Component::Sfu.as_str()
    ));
    feeds.spawn("sfu-pods", watcher(scope.dynamic(&client, &pod_ar), sfu_pods), sink);

    // Nodes decide SFU placement and addresses.
    let node_writer: Writer<Node> = Writer::default();
    let nodes = node_writer.as_reader();
    let sink = StoreSink::new(
        "Node",
        node_writer,
        (),
        Box::new(slim::node),
        relations::node(),
        invalid,
    );
    feeds.spawn("nodes", watcher(Api::<Node>::all(client.clone()), scope.config()), sink);

    let cx = Arc::new(Context {
        client,
        stores,
        nodes,
        pods,
        cert_manager,
        clock: options.clock.clone(),
        cluster: options.cluster.clone(),
        bridges: bridge_store.clone(),
        meetings: meeting_store.clone(),
        indexes,
        timers: timers.clone(),
        tls: Default::default(),
        metrics,
        synced: synced.clone(),
        events,
        written,
    });
    let triggers = feeds.triggers.clone();
    feeds.tasks.0.push(tokio::spawn(timers.run(meeting_queue.clone())));
    let first_sync = reconcile_all_once_synced(synced.clone(), triggers);
    feeds.tasks.0.push(tokio::spawn(first_sync));
    synced.started();
    tracing::info!("starting controllers");
    let bridges = Controller::for_stream(futures::stream::pending(), bridge_store)
        .with_config(Config::default().concurrency(BRIDGE_CONCURRENCY))
        .reconcile_on(bridge_rx)
        .graceful_shutdown_on(requested(shutdown.clone()))
        .run(bridge::reconcile, bridge::error_policy, cx.clone())
        .for_each(log_result);
    let meetings = queue::run(meeting_queue, MEETING_CONCURRENCY, requested(shutdown), move |key| {
        meeting::reconcile_queued(key, cx.clone())
    });
    // Each controller on its own task, so the two kinds reconcile in parallel.
    let mut controllers = Tasks(vec![tokio::spawn(bridges), tokio::spawn(meetings)]);
    for task in &mut controllers.0 {
        let _ = task.await;
    }
    drop(feeds);
    tracing::info!("controllers stopped");
}

/// The first sync's reconcile of every Bridge and Meeting: the feeds send no triggers before
/// it (see `feed::drive`).
async fn reconcile_all_once_synced(synced: Synced, triggers: Triggers) {
    synced.wait().await;
    triggers.reconcile_all();
}

async fn log_result<T, E: std::fmt::Display>(res: Result<T, E>) {
    if let Err(e) = res {
        tracing::debug!(error = %e, "reconcile result");
    }
}
