//! An existing Redis for a LiveKit Bridge (`Bridge.spec.redis`).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An existing Redis for a LiveKit Bridge: a server's address or a Sentinel deployment, and the
/// password. Secrets stay in your Secrets; pods read them by reference.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.address) != has(self.sentinel)").message("spec.redis: set exactly one of address and sentinel"))]
pub struct Redis {
    /// `host:port` of the Redis server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 261),
        regex(pattern = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([-.A-Za-z0-9]*[A-Za-z0-9])?):[0-9]{1,5}$")
    )]
    pub address: Option<String>,
    /// A Sentinel deployment that names the current master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<Sentinel>,
    /// The Redis password: a key of a Secret in the Bridge's namespace. Unset: no password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// Redis Sentinel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sentinel {
    /// Name of the monitored master.
    #[schemars(length(min = 1, max = 253))]
    pub master_name: String,
    /// `host:port` of each Sentinel.
    #[schemars(
        length(min = 1, max = 16),
        inner(
            length(min = 3, max = 261),
            regex(pattern = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([-.A-Za-z0-9]*[A-Za-z0-9])?):[0-9]{1,5}$")
        )
    )]
    pub addresses: Vec<String>,
    /// The Sentinels' own password, when they require one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the Bridge's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The key in it.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}
