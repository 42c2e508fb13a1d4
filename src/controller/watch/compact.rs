//! A child as its cache holds it: typed (slim) metadata, and everything else as the JSON text
//! it came in, parsed again when a reconcile compares it or reads its status.
//!
//! A `serde_json::Value` tree takes several times the size of its text (a node of 32 bytes
//! per value, a map node per object, an allocation per string), and the children of a Bridge
//! (Deployments and StatefulSets with every default the API server fills in, Services, pods)
//! were most of the operator's memory per Bridge. A reconcile reads a few of them, once each.

use std::borrow::Cow;

use kube::Resource;
use kube::api::{ApiResource, DynamicObject, ObjectMeta, TypeMeta};
use kube::core::DynamicResourceScope;
use serde_json::Value;

/// A cached child: its metadata, and the rest of it (`spec`, `data`, `status`...) as JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct Compact {
    pub types: Option<TypeMeta>,
    pub metadata: ObjectMeta,
    /// A JSON object: every top-level field but `apiVersion`, `kind` and `metadata`.
    rest: Box<str>,
}

impl Compact {
    pub fn new(o: DynamicObject) -> Compact {
        // A `Value` always serializes; an empty object is the fallback of a type that cannot fail.
        let rest = serde_json::to_string(&o.data).unwrap_or_else(|_| "{}".into());
        Compact {
            types: o.types,
            metadata: o.metadata,
            rest: rest.into_boxed_str(),
        }
    }

    /// Everything but the metadata, parsed.
    pub fn data(&self) -> Value {
        serde_json::from_str(&self.rest).unwrap_or_else(|_| Value::Object(Default::default()))
    }

    /// The whole object, parsed.
    pub fn object(&self) -> DynamicObject {
        DynamicObject {
            types: self.types.clone(),
            metadata: self.metadata.clone(),
            data: self.data(),
        }
    }

    /// The whole object as JSON, as a reader of raw fields (placement) takes it.
    pub fn value(&self) -> Value {
        serde_json::to_value(self.object()).unwrap_or_default()
    }
}

impl Resource for Compact {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_comes_back_as_it_went_in() {
        let full: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "ns", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "ratio": 0.5, "big": u64::MAX, "neg": -3,
                     "template": {"spec": {"containers": [{"name": "c", "args": ["x", ""]}]}}},
            "status": {"readyReplicas": 1}
        }))
        .expect("object");
        let c = Compact::new(full.clone());
        assert_eq!(c.object(), full);
        assert_eq!(c.data()["status"]["readyReplicas"], 1);
        assert_eq!(c.value(), serde_json::to_value(&full).expect("json"));
        assert_eq!(c.meta().name.as_deref(), Some("d"));
    }
}
