//! Where each SFU replica runs and what it advertises: its port, its node (when pinned) and
//! the addresses clients send media to; and the addresses clients reach TURN at. Pure: the
//! reconciler feeds it the cached Nodes and the Services' load-balancer addresses,
//! `conclave render` feeds it nothing.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::context::SfuReplica;
use crate::api::BridgeSpec;
use crate::api::Exposure;
use crate::labels;

/// Works out, for each of `count` SFU replicas of Bridge `name`, its port, its node and the
/// address it advertises. Node pinning keeps a replica where it runs so its advertised address
/// stays true; replica `i` goes to the `i`-th eligible node (by name), round robin.
/// `lb_address` gives the load-balancer address of a replica's Service, by Service name.
pub fn plan<'a>(
    spec: &BridgeSpec,
    name: &str,
    count: i32,
    nodes: impl IntoIterator<Item = &'a Node>,
    lb_address: impl Fn(&str) -> Option<String>,
) -> Vec<SfuReplica> {
    let sfu = &spec.sfu;
    let base = sfu.media.base_port();
    let mut eligible: Vec<(String, Option<String>)> = nodes
        .into_iter()
        .filter(|n| !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false))
        .filter(|n| sfu.node_selector.iter().all(|(k, v)| n.labels().get(k) == Some(v)))
        .map(|n| (n.name_any(), external_ip(n)))
        .collect();
    eligible.sort();
    (0..count)
        .map(|i| {
            let port = base + i;
            let (node, discovered) = match sfu.media.exposure {
                Exposure::LoadBalancer => (None, lb_address(&labels::child_name(name, &format!("sfu-{i}")))),
                Exposure::HostPort | Exposure::NodePort => {
                    if eligible.is_empty() {
                        (None, None)
                    } else {
                        let (node, ip) = &eligible[(i as usize) % eligible.len()];
                        (Some(node.clone()), ip.clone())
                    }
                }
            };
            let advertise = if sfu.media.advertise_addresses.is_empty() {
                discovered.into_iter().collect()
            } else {
                sfu.media.advertise_addresses.clone()
            };
            SfuReplica {
                index: i,
                port,
                node,
                advertise,
            }
        })
        .collect()
}

/// The addresses a Service's load balancer reports in its status: IPs, and host names for
/// load balancers that only have a DNS name (AWS NLB, for one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadBalancer {
    pub ips: Vec<String>,
    pub hostnames: Vec<String>,
}

/// What `status.loadBalancer.ingress` of a Service (as JSON) holds; empty while pending.
pub fn load_balancer(service: &serde_json::Value) -> LoadBalancer {
    let mut lb = LoadBalancer::default();
    let ingress = service
        .pointer("/status/loadBalancer/ingress")
        .and_then(|i| i.as_array())
        .into_iter()
        .flatten();
    for i in ingress {
        let field = |k: &str| i.get(k).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
        if let Some(ip) = field("ip") {
            lb.ips.push(ip.to_string());
        } else if let Some(host) = field("hostname") {
            lb.hostnames.push(host.to_string());
        }
    }
    lb
}

/// The addresses clients reach TURN at: `spec.turn.host` when set; else the TURN Service's
/// load balancer (its IPs, or the host names of one that has only names), or for `NodePort`
/// and `HostPort` the ExternalIP of every node (sorted, so the list is stable). Empty until one
/// is known, and when TURN is off.
pub fn turn_hosts<'a>(spec: &BridgeSpec, nodes: impl IntoIterator<Item = &'a Node>, lb: &LoadBalancer) -> Vec<String> {
    let t = &spec.turn;
    if !t.enabled {
        return Vec::new();
    }
    if let Some(host) = &t.host {
        return vec![host.clone()];
    }
    let mut hosts: Vec<String> = match t.exposure {
        Exposure::LoadBalancer if lb.ips.is_empty() => lb.hostnames.clone(),
        Exposure::LoadBalancer => lb.ips.clone(),
        Exposure::NodePort | Exposure::HostPort => nodes.into_iter().filter_map(external_ip).collect(),
    };
    hosts.sort();
    hosts.dedup();
    hosts
}

/// A Node's ExternalIP, the address media reaches it on.
pub fn external_ip(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "ExternalIP")
        .map(|a| a.address.clone())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, external: Option<&str>) -> Node {
        let mut addresses = vec![json!({"type": "InternalIP", "address": "10.0.0.1"})];
        addresses.extend(external.map(|a| json!({"type": "ExternalIP", "address": a})));
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {"addresses": addresses}})).expect("node")
    }

    fn spec(turn: serde_json::Value) -> BridgeSpec {
        serde_json::from_value(json!({"domain": "meet.example.com", "turn": turn})).expect("spec")
    }

    #[test]
    fn load_balancer_status_gives_ips_and_host_names() {
        let svc = json!({"status": {"loadBalancer": {"ingress": [
            {"ip": "203.0.113.5"},
            {"hostname": "abc.elb.example.com"},
            {"ip": ""}
        ]}}});
        let lb = load_balancer(&svc);
        assert_eq!(lb.ips, ["203.0.113.5"]);
        assert_eq!(lb.hostnames, ["abc.elb.example.com"]);
        assert_eq!(
            load_balancer(&json!({"status": {"loadBalancer": {}}})),
            LoadBalancer::default()
        );
    }

    #[test]
    fn turn_is_announced_where_clients_reach_it() {
        let nodes = [
            node("b", Some("203.0.113.2")),
            node("a", Some("203.0.113.1")),
            node("c", None),
        ];
        let pending = LoadBalancer::default();
        let named = LoadBalancer {
            ips: vec![],
            hostnames: vec!["abc.elb.example.com".into()],
        };
        let both = LoadBalancer {
            ips: vec!["198.51.100.9".into()],
            hostnames: vec!["abc.elb.example.com".into()],
        };
        let lb = spec(json!({}));
        assert!(
            turn_hosts(&lb, &nodes, &pending).is_empty(),
            "pending: nothing to announce"
        );
        assert_eq!(turn_hosts(&lb, &nodes, &named), ["abc.elb.example.com"]);
        assert_eq!(turn_hosts(&lb, &nodes, &both), ["198.51.100.9"]);
        for exposure in ["NodePort", "HostPort"] {
            let s = spec(json!({"exposure": exposure}));
            assert_eq!(turn_hosts(&s, &nodes, &both), ["203.0.113.1", "203.0.113.2"]);
            assert!(turn_hosts(&s, &[node("c", None)], &both).is_empty());
        }
        let explicit = spec(json!({"host": "turn.example.com", "exposure": "NodePort"}));
        assert_eq!(turn_hosts(&explicit, &nodes, &both), ["turn.example.com"]);
        let off = spec(json!({"enabled": false, "host": "turn.example.com"}));
        assert!(turn_hosts(&off, &nodes, &both).is_empty());
    }
}
