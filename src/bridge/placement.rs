//! Where each SFU replica runs and what it advertises: its port, its node (when pinned) and
//! the addresses clients send media to; and the addresses clients reach TURN at. Pure: the reconciler feeds it the cached Nodes, where
//! each replica is pinned now and whether its pod is stuck, and the replica Services'
//! load-balancer addresses; `conclave render` feeds it nothing.
//!
//! Placement is stable: a replica stays on the node it is pinned to for as long as that node
//! exists, is schedulable, matches `sfu.nodeSelector` and can take its pod. It moves when the
//! node is deleted or cordoned, no longer matches, or its pod has waited [`UNSCHEDULABLE_GRACE`]
//! for a node the scheduler says cannot take it. A move changes the StatefulSet's pod template,
//! so the old pod is deleted gracefully: its preStop hook drains its conferences (at most
//! `sfu.drainTimeout`) before the new pod starts on the new node, advertising the new address.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Node, Taint, Toleration};
use kube::ResourceExt;

use super::context::SfuReplica;
use crate::api::BridgeSpec;
use crate::api::Exposure;
use crate::labels;

/// How long a replica's pod may wait for its pinned node to take it before the replica is
/// placed elsewhere. Long enough to ride out a squeeze (another pod being replaced, a node
/// briefly short of room); short enough that a replica does not stay away for long.
pub const UNSCHEDULABLE_GRACE: chrono::Duration = chrono::Duration::minutes(2);

/// The node label replicas are pinned by.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// What the cluster says about a replica as it runs now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// The node its StatefulSet is pinned to.
    pub node: Option<String>,
    /// Since when its pod has been waiting for a node the scheduler says cannot take it.
    pub unschedulable_since: Option<DateTime<Utc>>,
}

/// Why a replica leaves its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    NodeGone,
    Cordoned,
    NotSelected,
    DoesNotFit,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::NodeGone => "the node is gone",
            Why::Cordoned => "the node is cordoned",
            Why::NotSelected => "the node no longer matches spec.sfu.nodeSelector",
            Why::DoesNotFit => "its pod has waited too long for the node to take it",
        }
    }
}

/// A replica moving from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub index: i32,
    pub from: String,
    pub to: String,
    pub why: Why,
}

/// The replicas, the moves among them, and when to look again at a replica whose pod waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub replicas: Vec<SfuReplica>,
    pub moves: Vec<Move>,
    pub recheck_at: Option<DateTime<Utc>>,
}

/// Works out, for each of `count` SFU replicas of Bridge `name`, its port, its node and the
/// address it advertises. A replica keeps its current node unless it must move (see the module
/// documentation); a new or moving replica goes to the eligible node with the fewest replicas
/// of this Bridge, by name among equals. `lb_address` gives the load-balancer address of a
/// replica's Service, by Service name.
pub fn plan<'a>(
    spec: &BridgeSpec,
    name: &str,
    count: i32,
    nodes: impl IntoIterator<Item = &'a Node>,
    current: &BTreeMap<i32, Current>,
    now: DateTime<Utc>,
    lb_address: impl Fn(&str) -> Option<String>,
) -> Plan {
    let sfu = &spec.sfu;
    let base = sfu.media.base_port();
    let nodes: BTreeMap<String, &Node> = nodes.into_iter().map(|n| (n.name_any(), n)).collect();
    let pinned = matches!(sfu.media.exposure, Exposure::HostPort | Exposure::NodePort);
    let mut assigned: BTreeMap<i32, String> = BTreeMap::new();
    let mut leaving: Vec<(i32, String, Why)> = Vec::new();
    let mut recheck_at: Option<DateTime<Utc>> = None;
    for i in (0..count).filter(|_| pinned) {
        let Some(cur) = current.get(&i) else { continue };
        let Some(node) = &cur.node else { continue };
        let why = match nodes.get(node) {
            None => Some(Why::NodeGone),
            Some(n) if unschedulable(n) => Some(Why::Cordoned),
            Some(n) if !selected(spec, n) => Some(Why::NotSelected),
            Some(_) => match cur.unschedulable_since {
                Some(since) if now >= since + UNSCHEDULABLE_GRACE => Some(Why::DoesNotFit),
                Some(since) => {
                    let at = since + UNSCHEDULABLE_GRACE;
                    recheck_at = Some(recheck_at.map_or(at, |r| r.min(at)));
                    None
                }
                None => None,
            },
        };
        match why {
            Some(why) => leaving.push((i, node.clone(), why)),
            None => {
                assigned.insert(i, node.clone());
            }
        }
    }
    let eligible: Vec<&str> = nodes
        .iter()
        .filter(|(_, n)| !unschedulable(n) && selected(spec, n) && tolerated(&sfu.tolerations, n))
        .map(|(name, _)| name.as_str())
        .collect();
    let mut moves = Vec::new();
    for i in (0..count).filter(|_| pinned) {
        if assigned.contains_key(&i) {
            continue;
        }
        let from = leaving.iter().find(|(j, ..)| *j == i);
        let avoid = from.map(|(_, node, _)| node.as_str());
        let target = least_loaded(&eligible, &assigned, avoid);
        match (target, from) {
            (Some(to), Some((_, old, why))) => {
                moves.push(Move {
                    index: i,
                    from: old.clone(),
                    to: to.to_string(),
                    why: *why,
                });
                assigned.insert(i, to.to_string());
            }
            (Some(to), None) => {
                assigned.insert(i, to.to_string());
            }
            // Nowhere better to go: a replica stays on a node that still exists.
            (None, Some((_, old, why))) if *why != Why::NodeGone => {
                assigned.insert(i, old.clone());
            }
            (None, _) => {}
        }
    }
    let replicas = (0..count)
        .map(|i| {
            let node = assigned.get(&i).cloned();
            let discovered = match sfu.media.exposure {
                Exposure::LoadBalancer => lb_address(&labels::child_name(name, &format!("sfu-{i}"))),
                Exposure::HostPort | Exposure::NodePort => {
                    node.as_ref().and_then(|n| nodes.get(n)).and_then(|n| external_ip(n))
                }
            };
            let advertise = if sfu.media.advertise_addresses.is_empty() {
                discovered.into_iter().collect()
            } else {
                sfu.media.advertise_addresses.clone()
            };
            SfuReplica {
                index: i,
                port: base + i,
                node,
                advertise,
            }
        })
        .collect();
    Plan {
        replicas,
        moves,
        recheck_at,
    }
}

/// The eligible node carrying the fewest of `assigned`, by name among equals, other than
/// `avoid` unless it is the only one.
fn least_loaded<'n>(eligible: &[&'n str], assigned: &BTreeMap<i32, String>, avoid: Option<&str>) -> Option<&'n str> {
    let load = |n: &str| assigned.values().filter(|a| a.as_str() == n).count();
    eligible
        .iter()
        .copied()
        .filter(|n| Some(*n) != avoid)
        .min_by_key(|n| (load(n), *n))
}

fn unschedulable(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

fn selected(spec: &BridgeSpec, node: &Node) -> bool {
    spec.sfu
        .node_selector
        .iter()
        .all(|(k, v)| node.labels().get(k) == Some(v))
}

/// Whether the pool's tolerations admit a new pod on `node` (taints that keep pods off:
/// `NoSchedule` and `NoExecute`).
fn tolerated(tolerations: &[Toleration], node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// Kubernetes' matching of one toleration against one taint.
fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect = tol.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
    let exists = tol.operator.as_deref() == Some("Exists");
    let key = match tol.key.as_deref() {
        None | Some("") => exists,
        Some(k) => k == taint.key,
    };
    let value = exists || tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default();
    effect && key && value
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

/// The node a replica's StatefulSet (as JSON) is pinned to by required node affinity.
pub fn pinned_node(statefulset: &serde_json::Value) -> Option<String> {
    let terms = statefulset
        .pointer("/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?;
    terms.iter().find_map(|t| {
        t.get("matchExpressions")?.as_array()?.iter().find_map(|e| {
            let pins = e.get("key")?.as_str()? == HOSTNAME_LABEL && e.get("operator")?.as_str()? == "In";
            pins.then(|| e.get("values")?.as_array()?.first()?.as_str().map(str::to_string))
                .flatten()
        })
    })
}

/// Since when a pod (as JSON) has waited for a node that cannot take it: a Pending pod whose
/// `PodScheduled` condition is `False` for `Unschedulable`.
pub fn unschedulable_since(pod: &serde_json::Value) -> Option<DateTime<Utc>> {
    if pod.pointer("/metadata/deletionTimestamp").is_some()
        || pod.pointer("/status/phase").and_then(|p| p.as_str()) != Some("Pending")
    {
        return None;
    }
    let conditions = pod.pointer("/status/conditions")?.as_array()?;
    let c = conditions
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("PodScheduled"))?;
    let waiting = c.get("status")?.as_str()? == "False" && c.get("reason")?.as_str()? == "Unschedulable";
    waiting
        .then(|| c.get("lastTransitionTime")?.as_str()?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ip: &str, extra: serde_json::Value) -> Node {
        let mut v = json!({
            "metadata": {"name": name, "labels": {"pool": "sfu"}},
            "spec": {},
            "status": {"addresses": [{"type": "ExternalIP", "address": ip}]}
        });
        if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
            for (k, x) in more {
                obj.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).expect("node")
    }

    fn spec() -> BridgeSpec {
        serde_json::from_value(json!({
            "domain": "meet.example.com",
            "sfu": {"media": {"exposure": "NodePort"}, "nodeSelector": {"pool": "sfu"}}
        }))
        .expect("spec")
    }

    fn pins(current: &[(i32, &str)]) -> BTreeMap<i32, Current> {
        current
            .iter()
            .map(|(i, n)| {
                (
                    *i,
                    Current {
                        node: Some(n.to_string()),
                        unschedulable_since: None,
                    },
                )
            })
            .collect()
    }

    fn nodes_of(p: &Plan) -> Vec<Option<&str>> {
        p.replicas.iter().map(|r| r.node.as_deref()).collect()
    }

    fn t0() -> DateTime<Utc> {
        "2030-01-01T00:00:00Z".parse().expect("time")
    }

    #[test]
    fn new_replicas_spread_and_pins_stay_when_nodes_come() {
        let (b, c) = (
            node("b", "198.51.100.2", json!({})),
            node("c", "198.51.100.3", json!({})),
        );
        let p = plan(&spec(), "meet", 3, [&b, &c], &BTreeMap::new(), t0(), |_| None);
        assert_eq!(nodes_of(&p), [Some("b"), Some("c"), Some("b")]);
        assert_eq!(p.replicas[1].advertise, ["198.51.100.3"]);
        // A node that sorts first arrives: nobody moves, and only a new replica goes there.
        let a = node("a", "198.51.100.1", json!({}));
        let p = plan(
            &spec(),
            "meet",
            4,
            [&a, &b, &c],
            &pins(&[(0, "b"), (1, "c"), (2, "b")]),
            t0(),
            |_| None,
        );
        assert_eq!(nodes_of(&p), [Some("b"), Some("c"), Some("b"), Some("a")]);
        assert!(p.moves.is_empty());
    }

    #[test]
    fn replicas_leave_gone_cordoned_and_unselected_nodes() {
        let a = node("a", "198.51.100.1", json!({}));
        let b = node("b", "198.51.100.2", json!({"spec": {"unschedulable": true}}));
        let c = node(
            "c",
            "198.51.100.3",
            json!({"metadata": {"name": "c", "labels": {"pool": "other"}}}),
        );
        let d = node("d", "198.51.100.4", json!({}));
        let current = pins(&[(0, "a"), (1, "b"), (2, "c"), (3, "gone")]);
        let p = plan(&spec(), "meet", 4, [&a, &b, &c, &d], &current, t0(), |_| None);
        assert_eq!(nodes_of(&p), [Some("a"), Some("d"), Some("a"), Some("d")]);
        let why: Vec<(i32, Why, &str)> = p.moves.iter().map(|m| (m.index, m.why, m.to.as_str())).collect();
        assert_eq!(
            why,
            [
                (1, Why::Cordoned, "d"),
                (2, Why::NotSelected, "a"),
                (3, Why::NodeGone, "d")
            ]
        );
        assert_eq!(p.replicas[1].advertise, ["198.51.100.4"], "the address follows");
    }

    #[test]
    fn a_pod_that_cannot_fit_moves_after_the_grace_period() {
        let (a, b) = (
            node("a", "198.51.100.1", json!({})),
            node("b", "198.51.100.2", json!({})),
        );
        let mut current = pins(&[(0, "a")]);
        current.get_mut(&0).expect("pin").unschedulable_since = Some(t0());
        let p = plan(
            &spec(),
            "meet",
            1,
            [&a, &b],
            &current,
            t0() + chrono::Duration::seconds(30),
            |_| None,
        );
        assert_eq!(nodes_of(&p), [Some("a")], "waits first");
        assert_eq!(p.recheck_at, Some(t0() + UNSCHEDULABLE_GRACE));
        let p = plan(
            &spec(),
            "meet",
            1,
            [&a, &b],
            &current,
            t0() + UNSCHEDULABLE_GRACE,
            |_| None,
        );
        assert_eq!(nodes_of(&p), [Some("b")]);
        assert_eq!(p.moves[0].why, Why::DoesNotFit);
    }

    #[test]
    fn with_nowhere_to_go_a_replica_stays_and_taints_keep_new_ones_off() {
        let a = node("a", "198.51.100.1", json!({"spec": {"unschedulable": true}}));
        let p = plan(&spec(), "meet", 1, [&a], &pins(&[(0, "a")]), t0(), |_| None);
        assert_eq!(nodes_of(&p), [Some("a")]);
        assert!(p.moves.is_empty());
        let tainted = node(
            "t",
            "198.51.100.9",
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        );
        let p = plan(&spec(), "meet", 1, [&tainted], &BTreeMap::new(), t0(), |_| None);
        assert_eq!(nodes_of(&p), [None]);
        let mut tolerant = spec();
        tolerant.sfu.tolerations = serde_json::from_value(
            json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]),
        )
        .expect("tolerations");
        let p = plan(&tolerant, "meet", 1, [&tainted], &BTreeMap::new(), t0(), |_| None);
        assert_eq!(nodes_of(&p), [Some("t")]);
    }

    #[test]
    fn pins_and_waiting_pods_are_read_from_json() {
        let sts = json!({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}
        ]}}}}}}});
        assert_eq!(pinned_node(&sts).as_deref(), Some("n1"));
        assert_eq!(pinned_node(&json!({"spec": {}})), None);
        let pod = json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "lastTransitionTime": "2030-01-01T00:00:00Z"}]}});
        assert_eq!(unschedulable_since(&pod), Some(t0()));
        let running = json!({"status": {"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2030-01-01T00:00:00Z"}]}});
        assert_eq!(unschedulable_since(&running), None);
    }
}

#[cfg(test)]
mod turn_tests {
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
