//! The one status write, for Bridges and Meetings alike: the whole status, with Conclave's
//! field manager, sent only when it differs from what the object shows, and only to the object
//! it was computed for.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{Context, Error};
use crate::api::{BridgeStatus, MeetingStatus};
use crate::conditions::{self, Type, condition, keep_transition_times};
use crate::labels::FIELD_MANAGER;

/// Records a failed reconcile in `status`: `Reconciled=False` with the error's kind as the
/// reason, and `Ready=False` unless the failure is transient (the API server briefly away).
pub fn record_failure<S: Conditioned>(status: &mut S, err: &Error, generation: Option<i64>) {
    let message = err.to_string();
    let conds = status.conditions_mut();
    conditions::set(
        conds,
        condition(Type::Reconciled, false, err.reason(), &message, generation),
    );
    if !err.is_transient() {
        let ready = format!("the last reconcile failed: {message}");
        conditions::set(conds, condition(Type::Ready, false, err.reason(), &ready, generation));
    }
}

/// A status that carries conditions.
pub trait Conditioned {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

impl Conditioned for BridgeStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

impl Conditioned for MeetingStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// Writes `status` unless the object already shows it. A condition whose status did not change
/// keeps its transition time, so an unchanged object compares equal and costs no write.
/// Returns the previous status when a write was sent, for the caller to announce transitions.
///
/// The write tests the object's uid in the same request (a JSON patch `test` on the status
/// subresource): a reconcile that read an object deleted meanwhile must not write its status
/// onto a new object of the same name (met when a Bridge was deleted and created again at
/// once: the new one showed the old one's `Ready=True` before its first reconcile). A name that
/// now holds another object is no error: that object has its own reconcile.
pub async fn patch<K>(cx: &Context, obj: &K, mut status: K::Status) -> Result<Option<K::Status>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + HasStatus
        + Clone
        + Debug
        + DeserializeOwned,
    K::Status: Conditioned + Default + Clone + PartialEq + Serialize,
{
    let old = obj.status().cloned().unwrap_or_default();
    keep_transition_times(status.conditions_mut(), old.conditions());
    if status == old {
        return Ok(None);
    }
    let name = obj.name_any();
    let ns = obj.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = obj.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let key = format!("{}/{name}/status", K::kind(&()));
    let api: Api<K> = Api::namespaced(cx.client.clone(), &ns);
    let ops = json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "add", "path": "/status", "value": status},
    ]);
    let ops: json_patch::Patch = serde_json::from_value(ops).map_err(|e| Error::Build(e.to_string()))?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api.patch_status(&name, &params, &Patch::Json::<()>(ops)).await {
        Ok(_) => Ok(Some(old)),
        // 404: gone. 422: the test failed, or the status is invalid; only a name that holds
        // another object now (or none) is let go.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(kube::Error::Api(s)) if s.code == 422 => {
            let now = api
                .get_metadata_opt(&name)
                .await
                .map_err(|e| Error::Read(key.clone(), e))?;
            if now.is_some_and(|n| n.metadata.uid.as_deref() == Some(uid.as_str())) {
                Err(Error::Apply(key, kube::Error::Api(s)))
            } else {
                tracing::debug!(object = %key, "not written: the object was deleted, or replaced by a namesake");
                Ok(None)
            }
        }
        Err(e) => Err(Error::Apply(key, e)),
    }
}
