//! Where each SFU replica runs and what it advertises: its port, its node (when pinned) and
//! the addresses clients send media to. Pure: the reconciler feeds it the cached Nodes and the
//! replica Services' load-balancer addresses, `conclave render` feeds it nothing.

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
