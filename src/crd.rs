//! The CustomResourceDefinitions, generated from the Rust types. `crds/` holds exactly what
//! this module prints; a test fails when they drift.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{Bridge, Meeting};

/// Every CRD Conclave serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![Bridge::crd(), Meeting::crd()]
}

/// The file a CRD is kept in under `crds/`: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::ser_error::Error> {
    serde_saphyr::to_string(crd)
}
