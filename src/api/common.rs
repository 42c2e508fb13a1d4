//! Types shared by the Bridge and Meeting APIs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How strictly end-to-end encryption is applied to conferences.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum E2eePolicy {
    /// E2EE is on for every participant; clients that cannot encrypt cannot take part in media.
    #[default]
    Required,
    /// E2EE is on by default, but a moderator may turn it off (e.g. for a dial-in or recording).
    Preferred,
}

impl E2eePolicy {
    /// Whether `self` is at least as strict as `other`.
    pub fn at_least(self, other: E2eePolicy) -> bool {
        // Required sorts before Preferred, so "stricter" is "smaller".
        self <= other
    }
}

/// How a UDP/TCP endpoint is exposed outside the cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Exposure {
    /// A port on the node the pod runs on (`hostPort`). Needs nodes with a public address and
    /// is not allowed by the restricted (or baseline) Pod Security profile.
    HostPort,
    /// A NodePort Service per replica; every node forwards the port.
    #[default]
    NodePort,
    /// A LoadBalancer Service per replica; needs a load balancer that carries UDP.
    LoadBalancer,
}

/// DNS-1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// DNS-1123 subdomain, as Kubernetes object names are.
pub const DNS_SUBDOMAIN_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
