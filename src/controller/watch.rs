//! The watches: one reflected cache per child kind, the Bridge and Meeting streams, the
//! relations that map an event on one object to the reconciles it affects, and readiness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ApiResource, DynamicObject, PartialObjectMeta, TypeMeta};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::{Context, Kind, Options, bridge, meeting, requested};
use crate::api::{Bridge, Meeting};
use crate::http::Health;
use crate::labels;
use crate::metrics::Metrics;

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
    cache(scope, client, ar, owned_by(owner_kind), synced)
}

/// A reflected watch of `ar` with `config`, tracked for readiness, its objects typed.
fn cache(
    scope: &Scope,
    client: &Client,
    ar: &ApiResource,
    config: watcher::Config,
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
            watcher(scope.dynamic(client, ar), config)
                .default_backoff()
                .modify(move |o: &mut DynamicObject| o.types = Some(types.clone()))
                .reflect(writer),
        )
        // Deletions too: a child deleted by hand must bring its parent's reconcile.
        .touched_objects();
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
pub(super) struct Synced {
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

    /// Whether every tracked cache has completed its first list.
    pub(super) fn all_listed(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
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
pub(super) async fn lead(
    client: Client,
    options: &Options,
    cert_manager: bool,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) {
    let scope = Scope(options.watch_namespace.clone());

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

    // SFU pods: one waiting for a node that cannot take it re-plans its Bridge (placement).
    let pod_ar = super::context::pod_resource();
    let sfu_pods = watcher::Config::default().labels(&format!(
        "{}={},{}={},{}={}",
        labels::MANAGED_BY_KEY,
        labels::MANAGED_BY,
        labels::OWNER_KIND,
        bridge::OWNER_KIND,
        labels::COMPONENT,
        labels::Component::Sfu.as_str()
    ));
    let (pods, stream) = cache(&scope, &client, &pod_ar, sfu_pods, &synced);
    bridge_ctrl = bridge_ctrl.watches_stream_with(
        stream,
        |pod: DynamicObject| {
            let waiting = serde_json::to_value(&pod)
                .ok()
                .and_then(|p| crate::bridge::placement::unschedulable_since(&p))
                .is_some();
            let bridge = pod.labels().get(labels::INSTANCE).cloned();
            match (waiting, bridge, pod.namespace()) {
                (true, Some(b), Some(ns)) => Some(ObjectRef::<Bridge>::new(&b).within(&ns)),
                _ => None,
            }
        },
        pod_ar,
    );
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
        reporter,
        client,
        stores,
        nodes,
        pods,
        cert_manager,
        clock: options.clock.clone(),
        cluster: options.cluster.clone(),
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
