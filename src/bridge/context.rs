//! The inputs of the Bridge builders: everything read from the cluster and validated, as plain
//! data, so every builder is a pure function of it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::BridgeSpec;
use crate::images;
use crate::labels::{self, Component};

/// `conclave.dev/owner-kind` of every Bridge child.
pub const OWNER_KIND: &str = "bridge";

/// What the operator knows about the cluster it runs in, from its flags; the same for every
/// Bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's DNS domain (the kubelet's `--cluster-domain`). Components reach each other
    /// by fully-qualified Service names: nginx's resolver, for one, ignores the search list.
    pub domain: String,
    /// Whether pods have IPv6. Off, the Jitsi web and prosody listen on IPv4 only; on, on both
    /// families (they fail to start on a kernel without IPv6).
    pub ipv6: bool,
}

/// Kubernetes' default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            domain: DEFAULT_CLUSTER_DOMAIN.into(),
            ipv6: false,
        }
    }
}

/// What the builders of one Bridge work from.
#[derive(Clone, Debug, PartialEq)]
pub struct Ctx {
    /// The Bridge's name (the `instance` label of every child).
    pub name: String,
    pub namespace: String,
    /// Controller reference to the Bridge, set on every child.
    pub owner: OwnerReference,
    pub spec: BridgeSpec,
    pub cluster: Cluster,
    pub images: images::Resolved,
    /// The operator-generated Secret (keys in [`super::secrets`]).
    pub secret_name: String,
    /// Secret with `tls.crt`/`tls.key` for `spec.domain`, once one exists.
    pub tls_secret: Option<String>,
    /// Rotation the generated Secret's values belong to (see [`super::secrets::ROTATE_ANNOTATION`]);
    /// pods carry it so a rotation restarts them with the new values. `None` before any rotation.
    pub secrets_revision: Option<String>,
    /// SFU replicas to run, by index.
    pub sfu: Vec<SfuReplica>,
    /// Occupancy limit by room, from the Meetings on this Bridge that set `maxParticipants`.
    pub room_limits: BTreeMap<String, i32>,
    /// Rooms whose Meeting is open now, with its `maxParticipants` (LiveKit: the SFU creates
    /// no room on its own, so these are the only rooms that exist).
    pub open_rooms: BTreeMap<String, Option<i32>>,
    /// Host names or addresses clients reach TURN at ([`super::placement::turn_hosts`]); empty
    /// until one is known.
    pub turn_hosts: Vec<String>,
}

/// One SFU (videobridge) replica: its own UDP port, its node (when pinned) and exactly the
/// addresses it advertises in ICE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SfuReplica {
    pub index: i32,
    /// UDP port the replica listens on and that is exposed for it: `media.port + index`.
    pub port: i32,
    /// Node the replica is pinned to (HostPort and NodePort exposure), so the address it
    /// advertises is the address its packets arrive at.
    pub node: Option<String>,
    /// `JVB_ADVERTISE_IPS` entries (`ip` or `ip#port`); empty until an address is known.
    pub advertise: Vec<String>,
}

impl SfuReplica {
    /// The media endpoint (`address:port`) the replica advertises, for status.
    pub fn endpoint(&self) -> String {
        match self.advertise.first() {
            Some(a) if a.contains('#') => a.replace('#', ":"),
            Some(a) => format!("{a}:{}", self.port),
            None => format!("<pending>:{}", self.port),
        }
    }
}

impl Ctx {
    /// The inputs for a Bridge, before its secrets and certificate are known: the one place
    /// the reconciler and `conclave render` both build them.
    pub fn new(
        name: &str,
        namespace: &str,
        owner: OwnerReference,
        spec: &BridgeSpec,
        sfu: Vec<SfuReplica>,
        cluster: &Cluster,
    ) -> Ctx {
        Ctx {
            name: name.to_string(),
            namespace: namespace.to_string(),
            owner,
            spec: spec.clone(),
            cluster: cluster.clone(),
            images: spec.images.resolve(),
            secret_name: labels::child_name(name, super::secrets::SUFFIX),
            tls_secret: None,
            secrets_revision: None,
            sfu,
            room_limits: BTreeMap::new(),
            open_rooms: BTreeMap::new(),
            turn_hosts: Vec::new(),
        }
    }

    /// Name of a child of this Bridge.
    pub fn child_name(&self, suffix: &str) -> String {
        labels::child_name(&self.name, suffix)
    }

    /// Labels of a child of this Bridge.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        labels::labels(OWNER_KIND, &self.name, component)
    }

    /// Pod selector of one component.
    pub fn selector(&self, component: Component) -> BTreeMap<String, String> {
        labels::selector(OWNER_KIND, &self.name, component)
    }

    /// Metadata of a child: name, namespace, labels, controller reference.
    pub fn meta(&self, suffix: &str, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.child_name(suffix)),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// The names the Bridge's certificate covers: `spec.domain`, and `spec.turn.host` when TURN
    /// over TLS is announced there (clients check the certificate against it).
    pub fn certificate_names(&self) -> Vec<&str> {
        let mut names = vec![self.spec.domain.as_str()];
        let turn = &self.spec.turn;
        if let Some(host) = turn.tls_host().filter(|h| turn.enabled && *h != self.spec.domain) {
            names.push(host);
        }
        names
    }

    /// Fully-qualified in-cluster DNS name of a Service of this Bridge.
    pub fn service_host(&self, suffix: &str) -> String {
        format!(
            "{}.{}.svc.{}",
            self.child_name(suffix),
            self.namespace,
            self.cluster.domain
        )
    }
}

/// Pod-level security context of the restricted Pod Security profile. The Jitsi images from
/// stable-11146 run as uid 1000; coturn as nobody (65534).
pub fn restricted_pod(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Container-level security context of the restricted profile, read-only root, optionally
/// keeping NET_BIND_SERVICE (the only capability the restricted profile allows adding).
pub fn restricted_container(bind_low_ports: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: bind_low_ports.then(|| vec!["NET_BIND_SERVICE".into()]),
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}
