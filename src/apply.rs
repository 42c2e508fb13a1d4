//! The one apply path: server-side apply with Conclave's field manager, skipped when the live
//! object already holds everything the operator wants, so a converged object costs no write.

use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use serde_json::Value;

use crate::child::Child;
use crate::labels::FIELD_MANAGER;

/// Whether every field of `desired` is present in `live` with the same value. Fields the API
/// server or other controllers add (defaults, status, annotations of others) are ignored; a
/// field of ours that someone changed by hand is not, so drift is repaired.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            d.iter().all(|(k, dv)| match l.get(k) {
                Some(lv) => contains(lv, dv),
                // An empty map or list we send and an absent one are the same to the server.
                None => {
                    dv.is_null()
                        || dv.as_object().is_some_and(|o| o.is_empty())
                        || dv.as_array().is_some_and(|a| a.is_empty())
                }
            })
        }
        (Value::Array(d), Value::Array(l)) => d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| contains(lv, dv)),
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

/// Whether `live` already satisfies `child` (only the parts the operator sets are compared).
pub fn is_satisfied(child: &Child, live: &DynamicObject) -> bool {
    let (Ok(desired), Ok(live)) = (serde_json::to_value(&child.object), serde_json::to_value(live)) else {
        return false;
    };
    // apiVersion and kind are in `types`; metadata other than labels, annotations and owner
    // references is the server's.
    let pick = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| matches!(k.as_str(), "labels" | "annotations" | "ownerReferences" | "name"));
        }
        if let Some(obj) = v.as_object_mut() {
            obj.remove("status");
        }
        v
    };
    contains(&pick(&live), &pick(&desired))
}

/// Applies `child` unless `live` already satisfies it. Returns whether a write was sent.
pub async fn apply(client: &Client, child: &Child, live: Option<&DynamicObject>) -> Result<bool, kube::Error> {
    if live.is_some_and(|l| is_satisfied(child, l)) {
        return Ok(false);
    }
    let ns = child.object.metadata.namespace.as_deref();
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &child.resource),
        None => Api::all_with(client.clone(), &child.resource),
    };
    api.patch(
        child.name(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&child.object),
    )
    .await?;
    Ok(true)
}

/// Deletes an orphaned child (one the operator made that is no longer desired). Foreground
/// propagation so a removed StatefulSet takes its pods through their graceful shutdown.
pub async fn delete(
    client: &Client,
    resource: &kube::api::ApiResource,
    obj: &DynamicObject,
) -> Result<(), kube::Error> {
    let (Some(name), ns) = (obj.metadata.name.as_deref(), obj.metadata.namespace.as_deref()) else {
        return Ok(());
    };
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
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
    fn numbers_compare_by_value_and_empties_match_absent() {
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
        assert!(contains(&json!({}), &json!({"a": {}, "b": [], "c": null})));
        assert!(!contains(&json!({}), &json!({"a": {"b": 1}})));
    }
}
