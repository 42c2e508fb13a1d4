//! The operator process: caches of every child kind, the controllers, and their shared context.

pub mod bridge;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};

use crate::api::Bridge;
use crate::child::Child;
use crate::labels;

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

/// Runs the operator until a shutdown signal.
pub async fn run(client: Client) -> Result<(), kube::Error> {
    let cert_manager = serves(&client, "cert-manager.io/v1", "Certificate").await;
    let managed = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY_KEY, labels::MANAGED_BY));

    let bridges: Api<Bridge> = Api::all(client.clone());
    let mut controller = Controller::new(bridges, watcher::Config::default());
    let mut stores = Vec::new();
    for kind in Kind::ALL {
        if kind == Kind::Certificate && !cert_manager {
            continue;
        }
        let ar = kind.resource();
        let writer = reflector::store::Writer::new(ar.clone());
        stores.push((kind, writer.as_reader()));
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let stream = reflector::reflector(writer, watcher(api, managed.clone())).applied_objects();
        controller = controller.owns_stream_with(stream, ar);
    }
    // Nodes decide SFU addresses; any change re-plans every Bridge.
    let (nodes, node_writer) = reflector::store();
    let node_events = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .applied_objects()
    .filter_map(|n| async move { n.ok().map(|_| ()) });
    controller = controller.reconcile_all_on(node_events);

    let cx = Arc::new(Context {
        client,
        stores,
        nodes,
        cert_manager,
    });
    controller
        .shutdown_on_signal()
        .run(bridge::reconcile, bridge::error_policy, cx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile result");
            }
        })
        .await;
    Ok(())
}

async fn serves(client: &Client, api_version: &str, kind: &str) -> bool {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => list.resources.iter().any(|r| r.kind == kind),
        Err(_) => false,
    }
}
