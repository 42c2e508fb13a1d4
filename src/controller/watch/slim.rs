//! What the caches drop before an object enters them: nothing a reconcile reads, everything it
//! does not. `managedFields` alone is often as large as the rest of an object, and
//! `kubectl.kubernetes.io/last-applied-configuration` repeats the whole object as a string.

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use kube::api::{ObjectMeta, TypeMeta};

use super::Compact;

/// The annotation `kubectl apply` writes: a copy of the object as last applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops managed fields and kubectl's copy of the object.
pub fn meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
    if let Some(a) = m.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            m.annotations = None;
        }
    }
}

/// A child as cached: slim metadata, and its apiVersion and kind (lists omit them), so that it
/// compares equal to its desired form.
pub fn child(o: &mut Compact, types: &TypeMeta) {
    meta(&mut o.metadata);
    o.types = Some(types.clone());
}

/// A Node as placement reads it: name and labels, whether it is schedulable and its taints,
/// its addresses, allocatable resources and whether it is Ready. Images, volumes, daemon
/// endpoints, node info and heartbeat times go.
pub fn node(n: &mut Node) {
    let meta = std::mem::take(&mut n.metadata);
    n.metadata = ObjectMeta {
        name: meta.name,
        labels: meta.labels,
        uid: meta.uid,
        resource_version: meta.resource_version,
        deletion_timestamp: meta.deletion_timestamp,
        ..ObjectMeta::default()
    };
    n.spec = n.spec.take().map(|s| NodeSpec {
        unschedulable: s.unschedulable,
        taints: s.taints,
        ..NodeSpec::default()
    });
    n.status = n.status.take().map(|s| NodeStatus {
        addresses: s.addresses,
        allocatable: s.allocatable,
        capacity: s.capacity,
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .map(|c| NodeCondition {
                    type_: c.type_,
                    status: c.status,
                    ..NodeCondition::default()
                })
                .collect()
        }),
        ..NodeStatus::default()
    });
}

/// Whether two slim Nodes differ in anything placement reads (not in their resourceVersion).
pub fn node_changed(old: &Node, new: &Node) -> bool {
    old.metadata.labels != new.metadata.labels
        || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || old.spec != new.spec
        || old.status != new.status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_what_placement_reads_and_heartbeats_change_nothing() {
        let full = |heartbeat: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n1", "labels": {"zone": "a"}, "resourceVersion": heartbeat,
                             "annotations": {"big": "x"},
                             "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
                "spec": {"unschedulable": true, "podCIDR": "10.0.0.0/24",
                         "taints": [{"key": "k", "effect": "NoSchedule"}]},
                "status": {
                    "addresses": [{"type": "ExternalIP", "address": "203.0.113.1"}],
                    "allocatable": {"cpu": "4"},
                    "images": [{"names": ["registry/image:1"], "sizeBytes": 1}],
                    "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat,
                                    "reason": "KubeletReady", "message": "ok"}],
                    "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                                 "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                                 "machineID": "", "operatingSystem": "", "osImage": "", "systemUUID": ""}
                }
            }))
            .expect("node")
        };
        let mut a = full("2030-01-01T00:00:00Z");
        node(&mut a);
        let status = a.status.as_ref().expect("status");
        assert!(status.images.is_none() && status.node_info.is_none());
        assert_eq!(
            crate::bridge::placement::external_ip(&a).as_deref(),
            Some("203.0.113.1")
        );
        assert_eq!(a.spec.as_ref().and_then(|s| s.unschedulable), Some(true));
        assert!(a.metadata.annotations.is_none() && a.metadata.managed_fields.is_none());
        let mut b = full("2030-01-01T00:01:00Z");
        node(&mut b);
        assert!(!node_changed(&a, &b), "a heartbeat is not a change");
        b.metadata.labels = None;
        assert!(node_changed(&a, &b));
    }

    #[test]
    fn metadata_loses_managed_fields_and_the_last_applied_copy() {
        let mut m: ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "m", "annotations": {LAST_APPLIED: "{...}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
        }))
        .expect("meta");
        meta(&mut m);
        assert_eq!((m.annotations, m.managed_fields), (None, None));
    }
}
