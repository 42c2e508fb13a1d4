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
    pub fn dynamic(resource: ApiResource, value: serde_json::Value) -> Result<Child, serde_json::Error> {
        let mut object: DynamicObject = serde_json::from_value(value)?;
        object.types = Some(kube::api::TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
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
