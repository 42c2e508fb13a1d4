//! Whether cert-manager is installed, followed as it changes: a watch on exactly one object,
//! cert-manager's Certificate CRD, by name. Which kinds the operator watches depends on it, so
//! a change restarts the controllers (with fresh caches) instead of waiting for the process to
//! be restarted.

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

/// The CRD that tells whether cert-manager is there.
pub const CERTIFICATE_CRD: &str = "certificates.cert-manager.io";

/// What the watch knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Not listed yet.
    Unknown,
    /// The watch is refused or failing (say, RBAC without the CRD rule): the operator falls
    /// back to asking discovery once, at start.
    Unwatchable,
    /// Whether `cert-manager.io/v1` Certificates are served.
    Known(bool),
}

/// Follows the Certificate CRD and publishes what it says into `tx`, until `tx` is dropped by
/// every receiver.
pub async fn follow(client: Client, tx: watch::Sender<Presence>) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={CERTIFICATE_CRD}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    // During a (re)list the answer is known only at its end.
    let mut listed = false;
    let mut listing = false;
    while let Some(event) = events.next().await {
        if tx.is_closed() {
            return;
        }
        let now = match event {
            Ok(watcher::Event::Init) => {
                listing = false;
                None
            }
            Ok(watcher::Event::InitApply(crd)) => {
                listing = serves(&crd);
                None
            }
            Ok(watcher::Event::InitDone) => {
                listed = true;
                Some(listing)
            }
            Ok(watcher::Event::Apply(crd)) => Some(serves(&crd)),
            Ok(watcher::Event::Delete(_)) => Some(false),
            Err(e) => {
                tracing::warn!(error = %e, crd = CERTIFICATE_CRD, "watching cert-manager's CRD failed");
                (!listed).then(|| {
                    tx.send_if_modified(|p| {
                        let changed = *p == Presence::Unknown;
                        if changed {
                            *p = Presence::Unwatchable;
                        }
                        changed
                    });
                });
                None
            }
        };
        if let Some(present) = now {
            tx.send_if_modified(|p| {
                let changed = *p != Presence::Known(present);
                *p = Presence::Known(present);
                changed
            });
        }
    }
}

/// Whether the CRD is established and serves `cert-manager.io/v1` `Certificate`.
fn serves(crd: &CustomResourceDefinition) -> bool {
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
    established
        && crd.metadata.deletion_timestamp.is_none()
        && crd.spec.names.kind == "Certificate"
        && crd.spec.versions.iter().any(|v| v.name == "v1" && v.served)
}

/// Whether discovery lists `kind` in `api_version` (the fallback).
pub async fn discovered(client: &Client, api_version: &str, kind: &str) -> bool {
    match client.list_api_group_resources(api_version).await {
        Ok(list) => list.resources.iter().any(|r| r.kind == kind),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(established: &str, served: bool, deleting: bool) -> CustomResourceDefinition {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": CERTIFICATE_CRD,
                         "deletionTimestamp": deleting.then_some("2030-01-01T00:00:00Z")},
            "spec": {"group": "cert-manager.io", "scope": "Namespaced",
                     "names": {"kind": "Certificate", "plural": "certificates"},
                     "versions": [{"name": "v1", "served": served, "storage": true}]},
            "status": {"conditions": [{"type": "Established", "status": established}]}
        }))
        .expect("crd")
    }

    #[test]
    fn only_an_established_served_crd_counts() {
        assert!(serves(&crd("True", true, false)));
        assert!(!serves(&crd("False", true, false)));
        assert!(!serves(&crd("True", false, false)));
        assert!(!serves(&crd("True", true, true)));
    }
}
