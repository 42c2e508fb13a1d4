//! The one apply path: server-side apply with Conclave's field manager, skipped when the live
//! object already holds everything the operator wants, so a converged object costs no write.
//! An object of the same name that Conclave does not control is never taken over.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PropagationPolicy};
use serde_json::{Map, Value};

use crate::child::Child;
use crate::labels::FIELD_MANAGER;

/// Why a child was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// Another object holds the child's name; applying would silently take it over.
    #[error("{key} already exists and is not Conclave's ({holder}); rename or delete it")]
    Foreign { key: String, holder: String },
}

/// Maps whose keys are all the operator's: a key in the live object that the desired one lacks
/// is drift (a removed participant's link, a hand-added selector term), not someone else's
/// addition. Top-level data maps of Secrets and ConfigMaps, and label selectors anywhere (an
/// extra term changes what they select). Labels and annotations stay open to other tools.
fn exact(key: &str, depth: usize, desired: &Map<String, Value>) -> bool {
    (depth == 1 && matches!(key, "data" | "binaryData" | "stringData"))
        || matches!(key, "matchLabels" | "nodeSelector")
        || (key == "selector" && desired.values().all(Value::is_string))
}

/// Whether every field of `desired` is present in `live` with the same value, and the maps
/// that must match exactly (see [`exact`]) have no other keys. Other fields the API server or
/// other controllers add (defaults, status, annotations of others) are ignored; a field of ours
/// that someone changed by hand is not, so drift is repaired.
pub fn contains(live: &Value, desired: &Value) -> bool {
    contains_at(live, desired, None, 0)
}

fn contains_at(live: &Value, desired: &Value, key: Option<&str>, depth: usize) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            if key.is_some_and(|k| exact(k, depth, d)) && l.keys().any(|k| !d.contains_key(k)) {
                return false;
            }
            d.iter().all(|(k, dv)| match l.get(k) {
                Some(lv) => contains_at(lv, dv, Some(k), depth + 1),
                // An empty map or list we send and an absent one are the same to the server.
                None => {
                    dv.is_null()
                        || dv.as_object().is_some_and(|o| o.is_empty())
                        || dv.as_array().is_some_and(|a| a.is_empty())
                }
            })
        }
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| contains_at(lv, dv, None, depth + 1))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

/// A JSON merge patch removing the keys of exact maps (see [`exact`]) that `live` has and
/// `desired` lacks, reached through objects only; `None` when there are none. Server-side apply
/// removes keys the operator set before and no longer sends, but not keys another field
/// manager added (`kubectl edit`): those need this second, explicit write.
pub fn extra_keys(live: &Value, desired: &Value) -> Option<Value> {
    extra_at(live, desired, None, 0)
}

fn extra_at(live: &Value, desired: &Value, key: Option<&str>, depth: usize) -> Option<Value> {
    let (Value::Object(l), Value::Object(d)) = (live, desired) else {
        return None;
    };
    let mut patch = Map::new();
    if key.is_some_and(|k| exact(k, depth, d)) {
        for k in l.keys().filter(|k| !d.contains_key(*k)) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    for (k, dv) in d {
        if let Some(sub) = l.get(k).and_then(|lv| extra_at(lv, dv, Some(k), depth + 1)) {
            patch.insert(k.clone(), sub);
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// Whether `live` already satisfies `child` (only the parts the operator sets are compared).
pub fn is_satisfied(child: &Child, live: &DynamicObject) -> bool {
    let (Ok(desired), Ok(live)) = (serde_json::to_value(&child.object), serde_json::to_value(live)) else {
        return false;
    };
    contains(&comparable(&live), &comparable(&desired))
}

/// apiVersion and kind are in `types`; metadata other than labels, annotations and owner
/// references is the server's.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| matches!(k.as_str(), "labels" | "annotations" | "ownerReferences" | "name"));
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    v
}

/// The controller reference of an object, if it has one.
fn controller(meta: &kube::api::ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// The uid of an object's controller, if it has one.
pub fn controller_uid(meta: &kube::api::ObjectMeta) -> Option<&str> {
    controller(meta).map(|o| o.uid.as_str())
}

/// Whether `live` is controlled by a predecessor of `desired`'s controller: a parent of the
/// same kind and name with another uid. Names are unique in a namespace, so while the current
/// parent exists that predecessor has been deleted: what it left is garbage the collector has
/// not removed yet, never someone else's object.
pub fn predecessor(desired: &kube::api::ObjectMeta, live: &kube::api::ObjectMeta) -> bool {
    let group = |api_version: &str| api_version.split_once('/').map_or("", |(g, _)| g).to_string();
    match (controller(desired), controller(live)) {
        (Some(d), Some(l)) => {
            l.uid != d.uid && l.kind == d.kind && l.name == d.name && group(&l.api_version) == group(&d.api_version)
        }
        _ => false,
    }
}

/// `Err` unless `live` is controlled by the same owner as `desired` (when `desired` names one).
pub fn check_owner(key: &str, desired: &kube::api::ObjectMeta, live: &kube::api::ObjectMeta) -> Result<(), ApplyError> {
    let Some(uid) = controller_uid(desired) else {
        return Ok(());
    };
    if controller_uid(live) == Some(uid) {
        return Ok(());
    }
    let holder = match controller(live) {
        Some(o) => format!("it is controlled by {} {} (uid {})", o.kind, o.name, o.uid),
        None => "it has no controller".to_string(),
    };
    Err(ApplyError::Foreign {
        key: key.to_string(),
        holder,
    })
}

/// Deletes what a deleted predecessor of the parent left under a child's name (see
/// [`predecessor`]), so a parent re-created under the same name does not wait for the garbage
/// collector, which can lag for minutes after an API server outage. Only that very object (its
/// uid) is deleted, in the background.
pub async fn delete_predecessor(api: &Api<DynamicObject>, key: &str, live: &ObjectMeta) -> Result<(), kube::Error> {
    tracing::info!(
        child = key,
        "deleting what a deleted parent of the same name left under this name"
    );
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: live.uid.clone().map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(live.name.as_deref().unwrap_or_default(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies `child` unless `live` already satisfies it. Returns whether a write was sent.
///
/// `live` is the cached object. When the cache has none, the object is read first: the caches
/// hold only objects with Conclave's labels, and server-side apply would merge into an object
/// someone else made under the same name. That read happens only on the create path.
pub async fn apply(client: &Client, child: &Child, live: Option<&DynamicObject>) -> Result<bool, ApplyError> {
    let ns = child.object.metadata.namespace.as_deref();
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &child.resource),
        None => Api::all_with(client.clone(), &child.resource),
    };
    let mut live = match live {
        Some(l) => Some(Cow::Borrowed(l)),
        None => api.get_opt(child.name()).await?.map(Cow::Owned),
    };
    if let Some(l) = live
        .as_deref()
        .filter(|l| predecessor(&child.object.metadata, &l.metadata))
    {
        delete_predecessor(&api, &child.key(), &l.metadata).await?;
        live = None;
    }
    if let Some(l) = &live {
        check_owner(&child.key(), &child.object.metadata, &l.metadata)?;
        if is_satisfied(child, l) {
            return Ok(false);
        }
    }
    let applied = api
        .patch(
            child.name(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&child.object),
        )
        .await?;
    let (Ok(applied), Ok(desired)) = (serde_json::to_value(&applied), serde_json::to_value(&child.object)) else {
        return Ok(true);
    };
    if let Some(removal) = extra_keys(&applied, &desired) {
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(child.name(), &pp, &Patch::Merge(&removal)).await?;
    }
    Ok(true)
}

/// Deletes an orphaned child (one the operator made that is no longer desired). Foreground
/// propagation so a removed StatefulSet takes its pods through their graceful shutdown.
pub async fn delete(client: &Client, resource: &kube::api::ApiResource, obj: &ObjectMeta) -> Result<(), kube::Error> {
    let (Some(name), ns) = (obj.name.as_deref(), obj.namespace.as_deref()) else {
        return Ok(());
    };
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        // Only the version the caller looked at: an object replaced in between is not ours to
        // delete on that evidence.
        preconditions: obj.uid.clone().map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_live_fields_are_fine() {
        let desired =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let live = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10,
            "template": {"spec": {"containers": [{"name": "a", "image": "x", "terminationMessagePath": "/dev/termination-log"}]}}}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn only_a_namesake_with_another_uid_is_a_predecessor() {
        let meta = |kind: &str, name: &str, uid: &str| -> kube::api::ObjectMeta {
            serde_json::from_value(json!({"ownerReferences": [{
                "apiVersion": "conclave.dev/v1alpha1", "kind": kind, "name": name, "uid": uid, "controller": true
            }]}))
            .expect("meta")
        };
        let desired = meta("Bridge", "b", "new");
        assert!(predecessor(&desired, &meta("Bridge", "b", "old")));
        assert!(!predecessor(&desired, &meta("Bridge", "b", "new")), "its own");
        assert!(
            !predecessor(&desired, &meta("Bridge", "other", "old")),
            "another Bridge's"
        );
        assert!(!predecessor(&desired, &meta("Meeting", "b", "old")), "a Meeting's");
        assert!(!predecessor(&desired, &kube::api::ObjectMeta::default()), "someone's");
    }

    #[test]
    fn hand_edits_are_drift() {
        let desired =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let edited =
            json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        assert!(!contains(&edited, &desired));
        let removed = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": []}}}});
        assert!(!contains(&removed, &desired));
    }

    #[test]
    fn data_maps_and_selectors_match_exactly_labels_stay_open() {
        let desired = json!({"metadata": {"labels": {"a": "1"}}, "data": {"alice": "x"}});
        let removed = json!({"metadata": {"labels": {"a": "1"}}, "data": {"alice": "x", "bob": "y"}});
        assert!(!contains(&removed, &desired), "a removed key in data is drift");
        assert_eq!(extra_keys(&removed, &desired), Some(json!({"data": {"bob": null}})));
        let labelled = json!({"metadata": {"labels": {"a": "1", "argocd": "app"}}, "data": {"alice": "x"}});
        assert!(contains(&labelled, &desired), "labels others add are fine");
        assert_eq!(extra_keys(&labelled, &desired), None);
        let sel = json!({"spec": {"selector": {"app": "web"}, "template": {"spec": {"nodeSelector": {"n": "1"}}}}});
        let widened =
            json!({"spec": {"selector": {"app": "web", "x": "y"}, "template": {"spec": {"nodeSelector": {"n": "1"}}}}});
        assert!(!contains(&widened, &sel));
        assert_eq!(
            extra_keys(&widened, &sel),
            Some(json!({"spec": {"selector": {"x": null}}}))
        );
        let pinned =
            json!({"spec": {"selector": {"app": "web"}, "template": {"spec": {"nodeSelector": {"n": "1", "m": "2"}}}}});
        assert!(!contains(&pinned, &sel));
        let policy = json!({"spec": {"podSelector": {"matchLabels": {"app": "web"}}}});
        let narrowed = json!({"spec": {"podSelector": {"matchLabels": {"app": "web", "x": "y"}}}});
        assert!(!contains(&narrowed, &policy));
        // A LabelSelector object named `selector` is open (its terms are checked inside).
        let deploy = json!({"spec": {"selector": {"matchLabels": {"app": "web"}}}});
        let defaulted = json!({"spec": {"selector": {"matchLabels": {"app": "web"}, "matchExpressions": []}}});
        assert!(contains(&defaulted, &deploy));
        // `data` deeper down is not a data map.
        let nested = json!({"spec": {"data": {"a": 1}}});
        assert!(contains(&json!({"spec": {"data": {"a": 1, "b": 2}}}), &nested));
    }

    #[test]
    fn foreign_objects_are_refused() {
        let owned = |uid: Option<&str>| kube::api::ObjectMeta {
            owner_references: uid.map(|u| {
                vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "conclave.dev/v1alpha1".into(),
                    kind: "Bridge".into(),
                    name: "meet".into(),
                    uid: u.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..Default::default()
        };
        assert!(check_owner("ConfigMap/x", &owned(Some("u1")), &owned(Some("u1"))).is_ok());
        let err = check_owner("ConfigMap/x", &owned(Some("u1")), &owned(None)).expect_err("no controller");
        assert!(
            err.to_string()
                .contains("ConfigMap/x already exists and is not Conclave's (it has no controller)"),
            "{err}"
        );
        let err = check_owner("ConfigMap/x", &owned(Some("u1")), &owned(Some("u0"))).expect_err("other");
        assert!(err.to_string().contains("controlled by Bridge meet (uid u0)"), "{err}");
    }

    #[test]
    fn numbers_compare_by_value_and_empties_match_absent() {
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
        assert!(contains(&json!({}), &json!({"a": {}, "b": [], "c": null})));
        assert!(!contains(&json!({}), &json!({"a": {"b": 1}})));
    }
}
