//! The one status write, for Bridges and Meetings alike: the whole status, with Conclave's
//! field manager, sent only when it differs from what the object shows, and only to the object
//! it was computed for.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::conditions::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::core::object::HasStatus;
use kube::runtime::reflector::ObjectRef;
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

/// The statuses this operator wrote that its caches may not show yet, by object uid.
///
/// The caches learn of a status write through the watch, a moment later; a reconcile in between
/// reads the object as it was before the write. Comparing with that stale status once made a
/// Meeting stay `Ready=False` for good: it wrote `BridgeNotReady`, its Bridge turned Ready at
/// once, and the next reconcile computed `LinksIssued`, found it equal to the cached (pre-write)
/// status and wrote nothing, and the watch event of the first write triggers no reconcile (a
/// status the operator wrote itself changes no input). Found by the chaos test.
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, Record>>);

struct Record {
    /// The resourceVersion the write was computed from: while the cache still shows it, the
    /// cache has not seen the write.
    base: Option<String>,
    status: serde_json::Value,
    at: Instant,
}

impl Written {
    /// Records kept at most this long: by then the watch has long delivered the write, and a
    /// record of an object deleted meanwhile must not stay for ever.
    const KEEP: Duration = Duration::from_secs(300);

    /// The status the object has as far as this operator knows: the one it wrote last when the
    /// cache has not caught up with that write, else the cached one (`None`).
    fn current<S: DeserializeOwned>(&self, uid: &str, cached_version: Option<&str>) -> Option<S> {
        let mut records = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let record = records.get(uid)?;
        if record.base.as_deref() == cached_version && record.at.elapsed() < Self::KEEP {
            return serde_json::from_value(record.status.clone()).ok();
        }
        records.remove(uid);
        None
    }

    /// The watch delivered version `version` of object `uid`: a record computed from another
    /// version is now in the cache (or overtaken by someone else's write), and goes.
    pub fn observed(&self, uid: Option<&str>, version: Option<&str>) {
        let Some(uid) = uid else { return };
        let mut records = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if records.get(uid).is_some_and(|r| r.base.as_deref() != version) {
            records.remove(uid);
        }
    }

    /// Records a write computed from version `base`, unless the cache already shows another
    /// version (the watch was faster than the response). `cached` reads the cache's version
    /// under the lock that [`Written::observed`] takes after the cache is updated, so a record
    /// is either never made or removed by the watch: none lingers.
    fn record<S: Serialize>(
        &self,
        uid: &str,
        base: Option<String>,
        status: &S,
        cached: impl FnOnce() -> Option<String>,
    ) {
        let Ok(status) = serde_json::to_value(status) else {
            return;
        };
        let mut records = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cached() != base {
            records.remove(uid);
            return;
        }
        // Records go when the watch delivers the write; these are of objects deleted first.
        if records.len() >= 1024 {
            records.retain(|_, r| r.at.elapsed() < Self::KEEP);
        }
        records.insert(
            uid.to_string(),
            Record {
                base,
                status,
                at: Instant::now(),
            },
        );
    }

    fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

/// Bridges and Meetings: the resourceVersion their cache shows now.
pub trait Cached: Resource<DynamicType = ()> + Sized {
    fn cached_version(cx: &Context, obj: &Self) -> Option<String>;
}

impl Cached for crate::api::Bridge {
    fn cached_version(cx: &Context, obj: &Self) -> Option<String> {
        cx.bridges.get(&ObjectRef::from_obj(obj))?.resource_version()
    }
}

impl Cached for crate::api::Meeting {
    fn cached_version(cx: &Context, obj: &Self) -> Option<String> {
        cx.meetings.get(&ObjectRef::from_obj(obj))?.resource_version()
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
        + Cached
        + Clone
        + Debug
        + DeserializeOwned,
    K::Status: Conditioned + Default + Clone + PartialEq + Serialize + DeserializeOwned,
{
    let uid = obj.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let base = obj.resource_version();
    let old = match cx.written.current::<K::Status>(&uid, base.as_deref()) {
        Some(written) => written,
        None => obj.status().cloned().unwrap_or_default(),
    };
    keep_transition_times(status.conditions_mut(), old.conditions());
    if status == old {
        return Ok(None);
    }
    let name = obj.name_any();
    let ns = obj.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
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
        Ok(_) => {
            cx.written.record(&uid, base, &status, || K::cached_version(cx, obj));
            Ok(Some(old))
        }
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
        Err(e) => {
            // Whether the write took effect is unknown: compare with the cache again.
            cx.written.forget(&uid);
            Err(Error::Apply(key, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_written_counts_until_the_cache_shows_another_version() {
        let written = Written::default();
        let status = MeetingStatus {
            observed_generation: Some(2),
            ..MeetingStatus::default()
        };
        written.record("uid-1", Some("10".into()), &status, || Some("10".into()));
        // The cache still shows version 10, from before the write: what was written counts.
        assert_eq!(
            written.current::<MeetingStatus>("uid-1", Some("10")),
            Some(status.clone())
        );
        assert_eq!(
            written.current::<MeetingStatus>("uid-2", Some("10")),
            None,
            "another object"
        );
        // The cache caught up (version 11): the cache counts, and the record is gone.
        assert_eq!(written.current::<MeetingStatus>("uid-1", Some("11")), None);
        assert_eq!(written.current::<MeetingStatus>("uid-1", Some("10")), None);
        // The watch delivering the write removes the record too; a delivery of the version it
        // was computed from does not.
        written.record("uid-1", Some("11".into()), &status, || Some("11".into()));
        written.observed(Some("uid-1"), Some("11"));
        assert!(written.current::<MeetingStatus>("uid-1", Some("11")).is_some());
        written.observed(Some("uid-1"), Some("12"));
        assert_eq!(written.current::<MeetingStatus>("uid-1", Some("11")), None);
        // A write whose version the cache already shows (the watch beat the response) leaves
        // no record behind.
        written.record("uid-1", Some("12".into()), &status, || Some("13".into()));
        assert!(written.0.lock().expect("lock").is_empty(), "no record lingers");
    }
}
