//! The one status write, for Bridges and Meetings alike: server-side apply of the whole status
//! with Conclave's field manager, sent only when it differs from what the object shows.

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
    let api: Api<K> = Api::namespaced(cx.client.clone(), &ns);
    let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::Apply(format!("{}/{name}/status", K::kind(&())), e))?;
    Ok(Some(old))
}
