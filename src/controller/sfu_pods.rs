//! SFU pods as the Bridge reconcile reads and tends them: where each replica is pinned and
//! whether its pod waits for a node, and pods a deleted StatefulSet left behind.
//!
//! A StatefulSet deleted by hand is re-created at once, but its pod stays until the garbage
//! collector removes it, and the new StatefulSet cannot create its pod under the same name
//! meanwhile. After an API server restart the collector lagged for over a minute (chaos seed
//! 1796187304144462976): the replica was down all that time and the Bridge `Starting`. The pod's
//! controller is gone, so it is garbage already; deleting it, gracefully (its preStop hook and
//! drain budget let its conferences finish), only does the collector's work sooner.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::ObjectRef;

use super::context::pod_resource;
use super::watch::Compact;
use super::{Context, Error, Kind};
use crate::api::bridge::BridgeSpec;
use crate::bridge::placement;
use crate::{apply, labels};

/// Replica `i`'s cached StatefulSet and pod.
fn replica(
    cx: &Context,
    ns: &str,
    bridge: &str,
    i: i32,
) -> Option<(std::sync::Arc<Compact>, Option<std::sync::Arc<Compact>>)> {
    let sts_name = labels::child_name(bridge, &format!("sfu-{i}"));
    let sts = cx
        .store(Kind::StatefulSet)
        .get(&ObjectRef::new_with(&sts_name, Kind::StatefulSet.resource()).within(ns))?;
    let pod = cx
        .pods
        .get(&ObjectRef::new_with(&format!("{sts_name}-0"), pod_resource()).within(ns));
    Some((sts, pod))
}

/// Where each SFU replica of Bridge `name` is pinned now (from its cached StatefulSet), and
/// whether its pod waits for a node that cannot take it (from the cached pod).
pub fn current_placement(cx: &Context, spec: &BridgeSpec, ns: &str, name: &str) -> BTreeMap<i32, placement::Current> {
    (0..spec.sfu.max_replicas())
        .filter_map(|i| {
            let (sts, pod) = replica(cx, ns, name, i)?;
            Some((
                i,
                placement::Current {
                    node: placement::pinned_node(&sts.value()),
                    unschedulable_since: pod.and_then(|p| placement::unschedulable_since(&p.value())),
                },
            ))
        })
        .collect()
}

/// Whether `pod` is controlled by an earlier StatefulSet of `sts`'s name (another uid), and is
/// not already going.
pub fn left_behind(sts: &Compact, pod: &Compact) -> bool {
    let (Some(uid), None) = (sts.uid(), pod.metadata.deletion_timestamp.as_ref()) else {
        return false;
    };
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .is_some_and(|o| o.kind == "StatefulSet" && o.name == sts.name_any() && o.uid != uid)
}

/// Deletes the pods earlier StatefulSets of Bridge `name`'s replicas left behind; returns how
/// many.
pub async fn delete_left_behind(cx: &Context, spec: &BridgeSpec, ns: &str, name: &str) -> Result<usize, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(cx.client.clone(), ns, &pod_resource());
    let mut deleted = 0;
    for i in 0..spec.sfu.max_replicas() {
        let Some((sts, Some(pod))) = replica(cx, ns, name, i) else {
            continue;
        };
        if !left_behind(&sts, &pod) {
            continue;
        }
        let key = format!("Pod/{}", pod.name_any());
        apply::delete_predecessor(&api, &key, &pod.metadata)
            .await
            .map_err(|e| Error::Apply(key, e))?;
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> Compact {
        Compact::new(serde_json::from_value(v).expect("object"))
    }

    fn pod(owner_uid: &str, deleting: bool) -> Compact {
        let mut p = obj(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "b-sfu-0-0", "uid": "p",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "b-sfu-0",
                                              "uid": owner_uid, "controller": true}]}
        }));
        if deleting {
            p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        }
        p
    }

    #[test]
    fn only_a_live_pod_of_an_earlier_statefulset_of_the_same_name_is_left_behind() {
        let sts = obj(serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                                         "metadata": {"name": "b-sfu-0", "uid": "new"}}));
        assert!(left_behind(&sts, &pod("old", false)));
        assert!(!left_behind(&sts, &pod("new", false)), "its own pod");
        assert!(!left_behind(&sts, &pod("old", true)), "already going");
        let other = obj(serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                                           "metadata": {"name": "b-sfu-1", "uid": "new"}}));
        assert!(!left_behind(&other, &pod("old", false)), "another replica's name");
        let mut orphan = pod("old", false);
        orphan.metadata.owner_references = None;
        assert!(!left_behind(&sts, &orphan), "no controller: the StatefulSet adopts it");
    }
}
