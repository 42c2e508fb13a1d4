//! The `Bridge` API: one conferencing deployment serving one domain.

use std::collections::BTreeMap;

use crate::conditions::Condition;
use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{E2eePolicy, Exposure};
pub use super::redis::{Redis, SecretKeyRef, Sentinel};
use crate::images;

/// A private, end-to-end encrypted conferencing deployment for one domain: signalling, a pool
/// of SFU (selective forwarding unit) pods, TURN servers and TLS certificates.
// The printcolumn arguments repeat `type_ = ...` by design; clippy reads them as attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "conclave.dev",
    version = "v1alpha1",
    kind = "Bridge",
    doc = "A private, end-to-end encrypted conferencing deployment for one domain.",
    namespaced,
    status = "BridgeStatus",
    shortname = "br",
    category = "conclave",
    derive = "PartialEq",
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name: at most 40 characters, so the names of SFU StatefulSets, their pods and revisions stay within Kubernetes' 63"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "SFU",
        type_ = "integer",
        description = "SFU replicas ready",
        json_path = ".status.sfu.readyReplicas"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        description = "SFU replicas desired",
        json_path = ".status.sfu.replicas"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.turn) || !has(self.turn.host) || self.turn.host != self.domain || (self.turn.port != 443 && self.turn.tlsPort != 443)").message("spec.turn.host: equal to spec.domain, whose port 443 is the web front end's; give TURN its own name or ports other than 443").field_path(".turn.host"))]
#[x_kube(validation = Rule::new("self.engine != 'LiveKit' || self.auth.mode == 'JWT'").message("spec.auth.mode: LiveKit admits only holders of a Meeting's token; Open is not available with engine LiveKit").field_path(".auth.mode"))]
#[x_kube(validation = Rule::new("!has(self.redis) || self.engine == 'LiveKit'").message("spec.redis: only LiveKit Bridges use Redis").field_path(".redis"))]
#[x_kube(validation = Rule::new(MEDIA_CLEAR_OF_TURN_RULE).message("spec.sfu.media.port: the SFU replicas' ports (port to port + maxReplicas - 1, UDP and TCP) overlap TURN's port, tlsPort or relayPorts, which coturn binds on the same nodes with turn.exposure HostPort").field_path(".sfu.media.port"))]
pub struct BridgeSpec {
    /// Public DNS name the conference is served on, e.g. `meet.example.com`. Immutable: the
    /// XMPP domains, certificates and every issued join link depend on it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.domain is immutable; create a new Bridge for a new domain"))]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub domain: String,

    /// Conferencing engine: `Jitsi` (default) or `LiveKit`. Immutable: the two engines share
    /// no children, so switching would orphan every one of them.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.engine is immutable; create a new Bridge for another engine"))]
    pub engine: Engine,

    /// End-to-end encryption policy for every room on this Bridge. `Required` (default): media
    /// is encrypted end to end for everyone. `Preferred`: on by default, a moderator may turn it off.
    #[serde(default)]
    pub e2ee: E2eePolicy,

    /// Who may join rooms.
    #[serde(default)]
    pub auth: Auth,

    /// Where the TLS certificate for `domain` comes from: exactly one of `issuerRef`
    /// (cert-manager) or `secretName` (bring your own), or neither: Conclave runs its own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,

    /// Optional Ingress for the web front end at `https://<domain>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,

    /// The pool of media routers (videobridge pods).
    #[serde(default)]
    pub sfu: Sfu,

    /// TURN servers (coturn) for clients behind restrictive firewalls.
    #[serde(default)]
    pub turn: Turn,

    /// Redis for a LiveKit Bridge whose pool can have more than one SFU replica (LiveKit routes
    /// rooms across replicas through it). Unset: the operator runs one. Set: an existing Redis
    /// (or Sentinel), used whatever the pool's size. LiveKit only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<Redis>,

    /// Container images; unset fields use the images this operator version pins.
    #[serde(default, skip_serializing_if = "is_default")]
    pub images: Images,
}

/// Conferencing engine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Engine {
    /// Jitsi Meet: web, prosody, jicofo and videobridge from docker-jitsi-meet.
    #[default]
    Jitsi,
    /// LiveKit: livekit-server as the SFU pool, Redis across replicas, and Conclave's own join
    /// page, which turns end-to-end encryption on before the first frame.
    LiveKit,
}

/// With TURN on the host network (`turn.exposure: HostPort`), coturn binds its ports and relay
/// range on the same nodes as SFU replicas exposed by HostPort or NodePort; their ports (UDP,
/// and TCP for LiveKit's ICE/TCP) must stay clear of them. The one-element lists bind names.
const MEDIA_CLEAR_OF_TURN_RULE: &str = "!self.turn.enabled || self.turn.exposure != 'HostPort' || self.sfu.media.exposure == 'LoadBalancer' || \
    [has(self.sfu.media.port) ? self.sfu.media.port : (self.sfu.media.exposure == 'NodePort' ? 31000 : 10000)].all(b, \
    [b + (has(self.sfu.maxReplicas) ? self.sfu.maxReplicas : self.sfu.replicas) - 1].all(e, \
    (self.turn.port < b || self.turn.port > e) && (self.turn.tlsPort < b || self.turn.tlsPort > e) && \
    (self.turn.relayPorts.max < b || self.turn.relayPorts.min > e)))";

/// Who may join rooms.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// `JWT` (default): only holders of a token issued for a Meeting can join, and only its room.
    /// `Open`: anyone who knows a room name can create and join it.
    #[serde(default)]
    pub mode: AuthMode,
}

/// Authentication mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AuthMode {
    /// Tokens issued per Meeting and participant.
    #[default]
    #[serde(rename = "JWT")]
    Jwt,
    /// No authentication.
    Open,
}

/// TLS certificate source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.issuerRef) && has(self.secretName))").message("spec.tls: set at most one of issuerRef and secretName"))]
pub struct Tls {
    /// A cert-manager Issuer or ClusterIssuer that signs the certificate for `domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// A Secret of type `kubernetes.io/tls` in the Bridge's namespace, managed by you.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
}

/// Reference to a cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (same namespace) or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// API group of the issuer.
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
}

fn default_issuer_group() -> String {
    "cert-manager.io".into()
}

/// Kind of a cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IssuerKind {
    /// A namespaced Issuer in the Bridge's namespace.
    #[default]
    Issuer,
    /// A cluster-wide ClusterIssuer.
    ClusterIssuer,
}

/// Ingress for the web front end.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// IngressClass to use; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// Annotations added to the Ingress (e.g. for your ingress controller).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The SFU (videobridge) pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.maxReplicas) || self.maxReplicas >= self.replicas").message("spec.sfu.maxReplicas must be at least spec.sfu.replicas").field_path(".maxReplicas"))]
#[x_kube(validation = Rule::new("!has(self.media.port) || self.media.port + (has(self.maxReplicas) ? self.maxReplicas : self.replicas) - 1 <= 65535").message("spec.sfu.media.port: every replica needs its own port (port + maxReplicas - 1 must not exceed 65535)").field_path(".media.port"))]
#[x_kube(validation = Rule::new("!has(self.media.port) || self.media.port >= 1024").message("spec.sfu.media.port: must be at least 1024; the SFU runs unprivileged (no capabilities) and cannot bind a lower port").field_path(".media.port"))]
pub struct Sfu {
    /// Minimum number of SFU pods, kept even when no Meeting needs them.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Upper bound for the pool when Meetings reserve capacity. Defaults to `replicas` (a fixed pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: Option<i32>,
    /// Participants one SFU pod is planned for; the unit of capacity planning.
    #[serde(default = "default_participants_per_replica")]
    #[schemars(range(min = 1, max = 10000))]
    pub participants_per_replica: i32,
    /// How long before a Meeting's start its participants are reserved (the pool grows ahead of
    /// the meeting so new pods are ready when people join), as a duration. At most 24h.
    #[serde(default = "default_lead_time")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('24h')").message("spec.sfu.reservationLeadTime must be a duration between 0s and 24h"))]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^(0|([0-9]+(\.[0-9]+)?(h|m|s|ms))+)$"))]
    pub reservation_lead_time: String,
    /// How media (UDP) reaches each SFU pod.
    #[serde(default)]
    pub media: Media,
    /// How long a pod leaving the pool may keep serving its conferences before it is stopped,
    /// as a duration (`90m`, `2h`). At most 24h.
    #[serde(default = "default_drain_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('24h')").message("spec.sfu.drainTimeout must be a duration between 0s and 24h"))]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"))]
    pub drain_timeout: String,
    /// Compute resources of the videobridge container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector for SFU pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations for SFU pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity for SFU pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

impl Default for Sfu {
    fn default() -> Self {
        Sfu {
            replicas: 1,
            max_replicas: None,
            participants_per_replica: default_participants_per_replica(),
            reservation_lead_time: default_lead_time(),
            media: Media::default(),
            drain_timeout: default_drain_timeout(),
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
        }
    }
}

impl Sfu {
    /// The pool's upper bound, `replicas` when unset.
    pub fn max_replicas(&self) -> i32 {
        self.max_replicas.unwrap_or(self.replicas).max(self.replicas)
    }
}

fn one() -> i32 {
    1
}

fn default_participants_per_replica() -> i32 {
    100
}

fn default_lead_time() -> String {
    "15m".into()
}

fn default_drain_timeout() -> String {
    "1h".into()
}

/// How media reaches the SFU pods. Replica `N` always gets its own port `port + N`, so any
/// number of replicas can share nodes, Services and addresses without clashing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    /// `NodePort` (default), `HostPort` or `LoadBalancer`.
    #[serde(default)]
    pub exposure: Exposure,
    /// Base UDP port; replica N uses `port + N`. Defaults to 31000 for NodePort (inside the
    /// default NodePort range) and 10000 otherwise. At least 1024: the SFU runs as an
    /// unprivileged user without capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Addresses every replica advertises in ICE instead of the discovered ones (node ExternalIP
    /// or load balancer address); use when media arrives through NAT you manage, forwarding
    /// `port + N` to replica N.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 2, max = 45)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a))").message("spec.sfu.media.advertiseAddresses: every entry must be an IP address"))]
    pub advertise_addresses: Vec<String>,
}

impl Media {
    /// The base UDP port, with the per-exposure default applied.
    pub fn base_port(&self) -> i32 {
        self.port.unwrap_or(match self.exposure {
            Exposure::NodePort => 31000,
            Exposure::HostPort | Exposure::LoadBalancer => 10000,
        })
    }
}

/// TURN (coturn) servers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.port != self.tlsPort").message("spec.turn.tlsPort must differ from spec.turn.port").field_path(".tlsPort"))]
#[x_kube(validation = Rule::new("self.relayPorts.min <= self.relayPorts.max").message("spec.turn.relayPorts.min must not exceed spec.turn.relayPorts.max").field_path(".relayPorts"))]
pub struct Turn {
    /// Run TURN servers. Turning it off removes every TURN object.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Number of coturn pods (ignored with `HostPort`, which runs one per eligible node).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 20))]
    pub replicas: i32,
    /// How the TURN ports reach clients.
    #[serde(default = "default_turn_exposure")]
    pub exposure: Exposure,
    /// The DNS name (or IP address) clients reach TURN at, for DNS or NAT you manage. Unset: the
    /// address Conclave discovers, the TURN Service's load balancer (IP or host name) or, for
    /// `NodePort` and `HostPort`, the nodes' ExternalIPs. TURN over TLS (`turns:`) is announced
    /// only at a DNS name set here, and Conclave adds it to the Bridge's certificate (with an
    /// ACME issuer, validate it by DNS-01: HTTP-01 would reach TURN, not the Ingress); with
    /// `tls.secretName` your certificate must cover it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(TURN_HOST_RULE).message("spec.turn.host must be a lowercase DNS name or an IP address"))]
    pub host: Option<String>,
    /// TURN port for UDP and TCP.
    #[serde(default = "default_turn_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TURN over TLS port (`turns:`); 443 gets through most firewalls.
    #[serde(default = "default_turn_tls_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub tls_port: i32,
    /// Ports the server relays media from.
    #[serde(default)]
    pub relay_ports: PortRange,
    /// Lifetime of the ephemeral TURN credentials handed to clients, as a duration. At most 24h.
    #[serde(default = "default_credential_ttl", rename = "credentialTTL")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s') && duration(self) <= duration('24h')").message("spec.turn.credentialTTL must be a duration above 0s and at most 24h"))]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(h|m|s|ms))+$"))]
    pub credential_ttl: String,
    /// Peer addresses TURN never relays to. The defaults cover loopback, private, shared,
    /// link-local (with cloud metadata), multicast and reserved ranges, for IPv4, IPv6 and the
    /// IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo). Replacing the
    /// list replaces the defaults.
    #[serde(default = "default_denied_peer_cidrs", rename = "deniedPeerCIDRs")]
    #[schemars(length(max = 64), inner(length(min = 3, max = 49)))]
    #[x_kube(validation = Rule::new(MAPPED_OR_CIDR_RULE).message("spec.turn.deniedPeerCIDRs: every entry must be a CIDR such as 10.0.0.0/8"))]
    pub denied_peer_cidrs: Vec<String>,
    /// Peer ranges TURN may relay to even though they are denied; opens a hole on purpose.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "allowedPeerCIDRs")]
    #[schemars(length(max = 64), inner(length(min = 3, max = 49)))]
    #[x_kube(validation = Rule::new(MAPPED_OR_CIDR_RULE).message("spec.turn.allowedPeerCIDRs: every entry must be a CIDR such as 203.0.113.0/24"))]
    pub allowed_peer_cidrs: Vec<String>,
}

impl Default for Turn {
    fn default() -> Self {
        Turn {
            enabled: true,
            replicas: 1,
            exposure: default_turn_exposure(),
            host: None,
            port: default_turn_port(),
            tls_port: default_turn_tls_port(),
            relay_ports: PortRange::default(),
            credential_ttl: default_credential_ttl(),
            denied_peer_cidrs: default_denied_peer_cidrs(),
            allowed_peer_cidrs: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_turn_exposure() -> Exposure {
    Exposure::LoadBalancer
}

fn default_turn_port() -> i32 {
    3478
}

fn default_turn_tls_port() -> i32 {
    5349
}

fn default_credential_ttl() -> String {
    "1h".into()
}

/// A DNS name of lowercase labels, or an IP address.
const TURN_HOST_RULE: &str =
    "isIP(self) || self.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?[.])*[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";

impl Turn {
    /// `host` when it is a DNS name: the one name TURN over TLS can be announced at, since
    /// clients check the certificate against it.
    pub fn tls_host(&self) -> Option<&str> {
        self.host.as_deref().filter(|h| h.parse::<std::net::IpAddr>().is_err())
    }
}

/// Kubernetes' `isCIDR` refuses IPv4-mapped IPv6 prefixes, which are exactly the ones a TURN
/// deny list needs (`::ffff:0:0/96`), so those are matched by shape here and parsed for real by
/// the operator, which reports a bad one as a condition.
const MAPPED_OR_CIDR_RULE: &str =
    "self.all(c, isCIDR(c) || c.matches('^::ffff:[0-9a-fA-F:.]+/(9[6-9]|1[01][0-9]|12[0-8])$'))";

/// The peer ranges a TURN server must never relay to unless explicitly allowed.
pub const DEFAULT_DENIED_PEER_CIDRS: &[&str] = &[
    "0.0.0.0/8",      // "this network"
    "10.0.0.0/8",     // RFC 1918
    "100.64.0.0/10",  // CGNAT shared space
    "127.0.0.0/8",    // loopback
    "169.254.0.0/16", // link-local, includes 169.254.169.254 cloud metadata
    "172.16.0.0/12",  // RFC 1918
    "192.0.0.0/24",   // IETF protocol assignments
    "192.168.0.0/16", // RFC 1918
    "198.18.0.0/15",  // benchmarking
    "224.0.0.0/4",    // multicast
    "240.0.0.0/4",    // reserved, includes broadcast 255.255.255.255
    "::/128",         // unspecified
    "::1/128",        // loopback
    "::ffff:0:0/96",  // IPv4-mapped IPv6: would reach every IPv4 range above
    "64:ff9b::/96",   // NAT64 well-known prefix, also maps onto IPv4
    "64:ff9b:1::/48", // NAT64 local-use prefix (RFC 8215): a site's own translator
    "2001::/32",      // Teredo: the client's IPv4 address, obfuscated, in the last 32 bits
    "2002::/16",      // 6to4: bits 16-47 are an IPv4 address (2002:a00:1::1 is 10.0.0.1)
    "fc00::/7",       // unique local
    "fe80::/10",      // link-local
    "ff00::/8",       // multicast
];

fn default_denied_peer_cidrs() -> Vec<String> {
    DEFAULT_DENIED_PEER_CIDRS.iter().map(|s| s.to_string()).collect()
}

/// An inclusive port range.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// First port.
    #[schemars(range(min = 1024, max = 65535))]
    pub min: i32,
    /// Last port.
    #[schemars(range(min = 1024, max = 65535))]
    pub max: i32,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange { min: 49152, max: 65535 }
    }
}

/// Container images. Each unset field means the image this operator version pins, so an
/// operator upgrade also upgrades the Bridge; set a field to mirror or hold back an image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Images {
    /// Jitsi Meet web front end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub web: Option<String>,
    /// Prosody XMPP server (signalling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub prosody: Option<String>,
    /// Jicofo conference focus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub jicofo: Option<String>,
    /// Jitsi Videobridge (the SFU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub jvb: Option<String>,
    /// coturn TURN server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub coturn: Option<String>,
    /// livekit-server, the SFU of a LiveKit Bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub livekit: Option<String>,
    /// Redis, run by the operator for a LiveKit Bridge with more than one SFU replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub redis: Option<String>,
    /// Conclave itself, which serves a LiveKit Bridge's join page (`conclave web`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub conclave: Option<String>,
}

impl Images {
    /// The effective images: overrides where set, pinned defaults elsewhere.
    pub fn resolve(&self) -> images::Resolved {
        let pick = |o: &Option<String>, d: fn() -> String| o.clone().unwrap_or_else(d);
        images::Resolved {
            web: pick(&self.web, images::web),
            prosody: pick(&self.prosody, images::prosody),
            jicofo: pick(&self.jicofo, images::jicofo),
            jvb: pick(&self.jvb, images::jvb),
            coturn: pick(&self.coturn, images::coturn),
            livekit: pick(&self.livekit, images::livekit),
            redis: pick(&self.redis, images::redis),
            conclave: pick(&self.conclave, images::conclave),
        }
    }
}

/// Observed state of a Bridge.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BridgeStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `CertificateReady`, `SignallingReady`, `SFUReady` and `TURNReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// URL of the conference web front end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// TURN URIs handed to clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "turnURIs")]
    pub turn_uris: Vec<String>,
    /// The SFU pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sfu: Option<SfuStatus>,
}

/// Observed state of the SFU pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SfuStatus {
    /// Desired replicas (minimum pool plus reservations, within bounds).
    pub replicas: i32,
    /// Replicas whose videobridge is ready.
    pub ready_replicas: i32,
    /// The media endpoint (`address:port`) each replica advertises, by replica index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Participants reserved by Meetings that are open or start within the lead time.
    #[serde(default)]
    pub reserved_participants: i32,
    /// Participants the pool can still take at its current size.
    #[serde(default)]
    pub available_participants: i32,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
