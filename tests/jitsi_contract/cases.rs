//! The matrix of Bridges, the cluster each one lives in, and what the operator SHOULD give each
//! container (the expectations are derived here from the spec and the cluster, never from the
//! operator's output).
//!
//! Between them the cases cover every `sfu.media.exposure`, every TLS source (Conclave's own
//! CA, `secretName`, `issuerRef` to an Issuer and a ClusterIssuer), `auth.mode` JWT and Open,
//! TURN off and on with each of its exposures, one to three SFU replicas, a NAT-advertised
//! address, an internal load balancer in a denied range, a TURN load balancer with only a DNS
//! name, an explicit `turn.host`, and a cluster with another DNS domain and IPv6. (A media port below 1024 is refused at admission: `tests/invalid/`.) Guest
//! links are a Meeting matter that changes nothing in a Bridge's containers (`ENABLE_GUESTS=0`
//! in every mode, see `conclave::engine::jitsi::auth_env`), so the matrix does not vary them.

use conclave::api::BridgeSpec;
use conclave::api::Exposure;
use conclave::api::bridge::AuthMode;
use k8s_openapi::api::core::v1::Node;
use kube::api::DynamicObject;
use serde_json::json;

/// What exists in the cluster around a Bridge: nodes with their external addresses, the
/// addresses its load balancers got, and what the operator's flags say about the cluster.
pub struct Cluster {
    pub nodes: &'static [(&'static str, &'static str)],
    /// (Service name suffix after `<bridge>-`, ingress IP or, for a load balancer that has
    /// only a DNS name, host name).
    pub load_balancers: &'static [(&'static str, &'static str)],
    /// The cluster's DNS domain (`--cluster-domain`).
    pub domain: &'static str,
    /// Whether pods have IPv6 (`--ipv6`).
    pub ipv6: bool,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            nodes: &[],
            load_balancers: &[],
            domain: "cluster.local",
            ipv6: false,
        }
    }
}

pub struct Case {
    pub id: &'static str,
    pub bridge: String,
    pub namespace: String,
    pub spec: serde_json::Value,
    pub cluster: Cluster,
}

pub fn all() -> Vec<Case> {
    vec![
        Case::new(
            "nodeport-ownca-jwt-turnlb",
            "meet",
            "conf",
            json!({"domain": "meet.example.com", "sfu": {"replicas": 2}}),
            Cluster {
                nodes: &[("node-a", "203.0.113.10"), ("node-b", "203.0.113.11")],
                load_balancers: &[("turn", "203.0.113.50")],
                ..Cluster::default()
            },
        ),
        Case::new(
            "hostport-secret-open-noturn",
            "town-hall",
            "events",
            json!({
                "domain": "townhall.example.org",
                "auth": {"mode": "Open"},
                "tls": {"secretName": "townhall-cert"},
                "sfu": {"replicas": 1, "media": {"exposure": "HostPort"}},
                "turn": {"enabled": false}
            }),
            Cluster {
                nodes: &[("node-1", "203.0.113.21")],
                load_balancers: &[],
                ..Cluster::default()
            },
        ),
        Case::new(
            "lb-clusterissuer-jwt-turnnodeport",
            "video",
            "team-a",
            json!({
                "domain": "video.example.net",
                "tls": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}},
                "sfu": {"replicas": 3, "media": {"exposure": "LoadBalancer"}},
                "turn": {"exposure": "NodePort", "port": 30478, "tlsPort": 30479, "credentialTTL": "30m"}
            }),
            Cluster {
                nodes: &[("n1", "203.0.113.31"), ("n2", "203.0.113.32")],
                load_balancers: &[
                    ("sfu-0", "203.0.113.60"),
                    ("sfu-1", "203.0.113.61"),
                    ("sfu-2", "203.0.113.62"),
                ],
                domain: "k8s.internal",
                ipv6: true,
            },
        ),
        Case::new(
            "lb-nat-issuer-open-turnhostport",
            "conf",
            "default",
            json!({
                "domain": "conf.example.com",
                "auth": {"mode": "Open"},
                "tls": {"issuerRef": {"name": "internal-ca"}},
                "sfu": {"replicas": 2, "media": {"exposure": "LoadBalancer", "port": 20000,
                         "advertiseAddresses": ["192.0.2.200"]}},
                "turn": {"exposure": "HostPort", "host": "turn.conf.example.com", "port": 3479, "tlsPort": 5350}
            }),
            Cluster {
                nodes: &[("w1", "203.0.113.41"), ("w2", "203.0.113.42")],
                load_balancers: &[("sfu-0", "10.30.0.1"), ("sfu-1", "10.30.0.2")],
                ..Cluster::default()
            },
        ),
        Case::new(
            "internal-lb-jwt-turnlb",
            "internal",
            "corp",
            json!({
                "domain": "internal.example.com",
                "sfu": {"replicas": 2, "media": {"exposure": "LoadBalancer"}}
            }),
            Cluster {
                nodes: &[("c1", "203.0.113.51")],
                // TURN behind a load balancer that has only a DNS name (AWS NLB style).
                load_balancers: &[
                    ("sfu-0", "10.20.0.5"),
                    ("sfu-1", "10.20.0.6"),
                    ("turn", "turn-7f3a.elb.example.com"),
                ],
                ..Cluster::default()
            },
        ),
        // A privileged media port (443) is refused at admission now (tests/invalid/); the
        // case keeps HostPort media with JWT and a TURN load balancer in the matrix.
        Case::new(
            "hostport-jwt-turnlb",
            "edge",
            "edge",
            json!({
                "domain": "edge.example.com",
                "sfu": {"replicas": 1, "media": {"exposure": "HostPort", "port": 4443}}
            }),
            Cluster {
                nodes: &[("e1", "203.0.113.81")],
                load_balancers: &[("turn", "203.0.113.82")],
                ..Cluster::default()
            },
        ),
    ]
}

impl Case {
    fn new(id: &'static str, bridge: &str, namespace: &str, spec: serde_json::Value, cluster: Cluster) -> Case {
        Case {
            id,
            bridge: bridge.into(),
            namespace: namespace.into(),
            spec,
            cluster,
        }
    }

    pub fn spec(&self) -> BridgeSpec {
        serde_json::from_value(self.spec.clone()).expect("the case's spec parses")
    }

    pub fn domain(&self) -> String {
        self.spec().domain
    }

    pub fn jwt(&self) -> bool {
        self.spec().auth.mode == AuthMode::Jwt
    }

    /// The name nginx (whose resolver has no search list) must be given for prosody.
    pub fn prosody_fqdn(&self) -> String {
        format!("{}-prosody.{}.svc.{}", self.bridge, self.namespace, self.cluster.domain)
    }

    /// What the operator is told about the cluster.
    pub fn operator_cluster(&self) -> conclave::bridge::context::Cluster {
        conclave::bridge::context::Cluster {
            domain: self.cluster.domain.into(),
            ipv6: self.cluster.ipv6,
        }
    }

    /// The Secret the Bridge's certificate lives in once issued.
    pub fn tls_secret_name(&self) -> String {
        self.spec()
            .tls
            .and_then(|t| t.secret_name)
            .unwrap_or_else(|| format!("{}-tls", self.bridge))
    }

    fn lb(&self, suffix: &str) -> Option<&'static str> {
        self.cluster
            .load_balancers
            .iter()
            .find(|(s, _)| *s == suffix)
            .map(|(_, ip)| *ip)
    }

    fn node_ips(&self) -> Vec<String> {
        let mut nodes = self.cluster.nodes.to_vec();
        nodes.sort();
        nodes.iter().map(|(_, ip)| ip.to_string()).collect()
    }

    /// The addresses clients can reach coturn on: the name the spec gives, else its load
    /// balancer (address or DNS name), or the nodes it listens on.
    pub fn expected_turn_hosts(&self) -> Vec<String> {
        let spec = self.spec();
        if !spec.turn.enabled {
            return Vec::new();
        }
        if let Some(host) = spec.turn.host {
            return vec![host];
        }
        match spec.turn.exposure {
            Exposure::LoadBalancer => self.lb("turn").map(str::to_string).into_iter().collect(),
            Exposure::NodePort | Exposure::HostPort => self.node_ips(),
        }
    }

    /// Where TURN over TLS can be announced: only at a DNS name the spec gives (which the
    /// certificate covers); clients check the certificate against the name they connect to.
    pub fn expected_turns_host(&self) -> Option<String> {
        let t = self.spec().turn;
        t.host.filter(|h| t.enabled && h.parse::<std::net::IpAddr>().is_err())
    }

    /// The address replica `i` must advertise: the NAT address given, its load balancer, or the
    /// node it is pinned to (replicas spread over the sorted nodes).
    pub fn expected_sfu_address(&self, i: i32) -> String {
        let spec = self.spec();
        if let Some(a) = spec.sfu.media.advertise_addresses.first() {
            return a.clone();
        }
        match spec.sfu.media.exposure {
            Exposure::LoadBalancer => self
                .lb(&format!("sfu-{i}"))
                .unwrap_or_else(|| panic!("case {}: no load balancer for sfu-{i}", self.id))
                .to_string(),
            Exposure::NodePort | Exposure::HostPort => {
                let ips = self.node_ips();
                ips[i as usize % ips.len()].clone()
            }
        }
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.cluster
            .nodes
            .iter()
            .map(|(name, ip)| {
                serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                    "status": {"addresses": [
                        {"type": "InternalIP", "address": "10.0.0.1"},
                        {"type": "ExternalIP", "address": ip},
                    ]}
                }))
                .expect("node")
            })
            .collect()
    }

    /// The Bridge's load-balanced Services, with the addresses the cloud gave them.
    pub fn load_balancers(&self) -> Vec<DynamicObject> {
        self.cluster
            .load_balancers
            .iter()
            .map(|(suffix, ip)| {
                serde_json::from_value(json!({
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": format!("{}-{suffix}", self.bridge), "namespace": self.namespace},
                    "spec": {"type": "LoadBalancer"},
                    "status": {"loadBalancer": {"ingress": [
                        if ip.parse::<std::net::IpAddr>().is_ok() { json!({"ip": ip}) } else { json!({"hostname": ip}) }
                    ]}}
                }))
                .expect("service")
            })
            .collect()
    }
}
