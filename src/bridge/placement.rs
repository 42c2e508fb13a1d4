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
