//! A desired child object of any kind, in the one form the apply path takes.

use kube::Resource;
use kube::api::{ApiResource, DynamicObject};
use serde::Serialize;

/// A child object as the operator wants it to be.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

impl Child {
    /// Wraps a typed Kubernetes object. Serialization of k8s-openapi types cannot fail; a
    /// failure here is a programming error in a builder, reported as such.
    pub fn new<K>(object: &K) -> Result<Child, serde_json::Error>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
        Child::dynamic(ApiResource::erase::<K>(&()), serde_json::to_value(object)?)
    }

    /// Wraps an object of a kind without Rust types (e.g. cert-manager's Certificate).
    ///
    /// The object is taken apart by hand: `DynamicObject`'s own deserializer (a flattened
    /// field) copies the whole tree into serde's buffer and builds it again, three trees at
    /// once per child. Every Bridge reconcile builds all its children, and 16 reconciles at
    /// once made that the operator's largest heap use (heap profile, 20 Bridges reconciled
    /// together).
    pub fn dynamic(resource: ApiResource, value: serde_json::Value) -> Result<Child, serde_json::Error> {
        let serde_json::Value::Object(mut fields) = value else {
            return Err(serde::de::Error::custom("an object must be a JSON object"));
        };
        let metadata = match fields.remove("metadata") {
            Some(m) => serde_json::from_value(m)?,
            None => Default::default(),
        };
        fields.remove("apiVersion");
        fields.remove("kind");
        let object = DynamicObject {
            types: Some(kube::api::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            }),
            metadata,
            data: serde_json::Value::Object(fields),
        };
        Ok(Child { resource, object })
    }

    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }

    /// `Kind/name`, for messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.resource.kind, self.name())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    #[test]
    fn an_object_taken_apart_by_hand_equals_the_one_serde_builds() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "namespace": "ns", "labels": {"a": "1"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u"}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "1"}},
                     "template": {"spec": {"containers": [{"name": "c", "args": ["x", ""]}]}}}
        }))
        .expect("deployment");
        let config_map = ConfigMap {
            data: Some([("k".to_string(), "v".to_string())].into()),
            ..ConfigMap::default()
        };
        for (child, value) in [
            (Child::new(&deployment), serde_json::to_value(&deployment)),
            (Child::new(&config_map), serde_json::to_value(&config_map)),
        ] {
            let child = child.expect("child");
            let mut by_serde: DynamicObject = serde_json::from_value(value.expect("json")).expect("object");
            by_serde.types = child.object.types.clone();
            assert_eq!(child.object, by_serde);
        }
        assert!(Child::dynamic(ApiResource::erase::<ConfigMap>(&()), serde_json::json!([1])).is_err());
    }
}
