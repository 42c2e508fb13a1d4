//! NetworkPolicies: deny everything to and from the Bridge's pods, then allow exactly the flows
//! the components need. Policies are additive, so each allow policy opens one component's flows
//! and nothing else. This module holds the policies every engine shares (default deny, DNS,
//! TURN) and the helpers engines write their own flows with.
//!
//! TURN egress mirrors `deniedPeerCIDRs`/`allowedPeerCIDRs` (and the Bridge's own SFU endpoints
//! in a denied range) at the network level, a second fence behind coturn's own peer check. IPv4-mapped IPv6 entries (`::ffff:0:0/96`) are left
//! out: Kubernetes refuses IPv4-mapped addresses in policies, and the kernel sends such
//! traffic as IPv4, where the IPv4 exceptions already apply.

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::context::Ctx;
use super::objects::invalid;
use crate::child::Child;
use crate::labels::{self, Component};
use crate::turn;

/// The default-deny policy, DNS for everyone, the engine's allow policies (one per component),
/// and TURN's.
pub fn build(ctx: &Ctx, engine: Vec<NetworkPolicy>) -> Result<Vec<Child>, serde_json::Error> {
    let mut out = vec![default_deny(ctx), dns(ctx)];
    out.extend(engine);
    if ctx.spec.turn.enabled {
        out.push(turn_policy(ctx)?);
    }
    out.iter().map(Child::new).collect()
}

/// Every pod of this Bridge, whatever its component.
fn all_pods(ctx: &Ctx) -> LabelSelector {
    let mut s = ctx.selector(Component::Network);
    s.remove(labels::COMPONENT);
    LabelSelector {
        match_labels: Some(s),
        ..LabelSelector::default()
    }
}

pub(crate) fn pods(ctx: &Ctx, c: Component) -> LabelSelector {
    LabelSelector {
        match_labels: Some(ctx.selector(c)),
        ..LabelSelector::default()
    }
}

pub(crate) fn from_pods(ctx: &Ctx, c: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(pods(ctx, c)),
        ..NetworkPolicyPeer::default()
    }
}

pub(crate) fn port(p: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    }
}

pub(crate) fn ip(cidr: &str, except: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: (!except.is_empty()).then_some(except),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// Anywhere, both families.
pub(crate) fn anywhere() -> Vec<NetworkPolicyPeer> {
    vec![ip("0.0.0.0/0", Vec::new()), ip("::/0", Vec::new())]
}

pub(crate) fn policy(
    ctx: &Ctx,
    suffix: &str,
    selector: LabelSelector,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ctx.meta(suffix, Component::Network),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: (!ingress.is_empty()).then_some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
        }),
    }
}

pub(crate) fn ingress(from: Option<Vec<NetworkPolicyPeer>>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from,
        ports: Some(ports),
    }
}

pub(crate) fn egress(
    to: Option<Vec<NetworkPolicyPeer>>,
    ports: Option<Vec<NetworkPolicyPort>>,
) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule { to, ports }
}

fn default_deny(ctx: &Ctx) -> NetworkPolicy {
    policy(ctx, "default-deny", all_pods(ctx), Vec::new(), Vec::new())
}

/// Name resolution for every pod, to whichever resolver the cluster uses (CoreDNS, NodeLocal
/// DNS on a link-local address, ...).
fn dns(ctx: &Ctx) -> NetworkPolicy {
    policy(
        ctx,
        "allow-dns",
        all_pods(ctx),
        Vec::new(),
        vec![egress(None, Some(vec![port(53, "UDP"), port(53, "TCP")]))],
    )
}

/// TURN: its listeners and relay range from anywhere; out to anywhere except the denied peer
/// ranges, plus the explicitly allowed ones.
fn turn_policy(ctx: &Ctx) -> Result<NetworkPolicy, serde_json::Error> {
    let t = &ctx.spec.turn;
    let mut ports = vec![port(t.port, "UDP"), port(t.port, "TCP")];
    if ctx.tls_secret.is_some() {
        ports.extend([port(t.tls_port, "TCP"), port(t.tls_port, "UDP")]);
    }
    ports.push(NetworkPolicyPort {
        port: Some(IntOrString::Int(t.relay_ports.min)),
        end_port: Some(t.relay_ports.max),
        protocol: Some("UDP".into()),
    });
    let denied =
        turn::parse_cidrs(&t.denied_peer_cidrs).map_err(|e| invalid(format!("spec.turn.deniedPeerCIDRs: {e:?}")))?;
    let allowed =
        turn::parse_cidrs(&t.allowed_peer_cidrs).map_err(|e| invalid(format!("spec.turn.allowedPeerCIDRs: {e:?}")))?;
    let mut to = Vec::new();
    for (all, v4) in [("0.0.0.0/0", true), ("::/0", false)] {
        let family: Vec<&IpNet> = denied.iter().filter(|n| matches!(n, IpNet::V4(_)) == v4).collect();
        if family.iter().any(|n| n.prefix_len() == 0) {
            continue; // the whole family is denied
        }
        let except: Vec<String> = family
            .iter()
            .filter(|n| !is_v4_mapped(n))
            .map(|n| n.to_string())
            .collect();
        to.push(ip(all, except));
    }
    to.extend(
        allowed
            .iter()
            .filter(|n| !is_v4_mapped(n))
            .map(|n| ip(&n.to_string(), Vec::new())),
    );
    let mut egress_rules = if to.is_empty() {
        Vec::new()
    } else {
        vec![egress(Some(to), None)]
    };
    // The Bridge's own SFU endpoints in a denied range: that address, that UDP port only.
    for (addr, p) in super::coturn::own_sfu_endpoints(ctx)? {
        let host = IpNet::from(addr).to_string();
        egress_rules.push(egress(Some(vec![ip(&host, Vec::new())]), Some(vec![port(p, "UDP")])));
    }
    Ok(policy(
        ctx,
        "allow-turn",
        pods(ctx, Component::Turn),
        vec![ingress(None, ports)],
        egress_rules,
    ))
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`), which a policy cannot carry.
fn is_v4_mapped(n: &IpNet) -> bool {
    match n {
        IpNet::V6(v6) => v6.prefix_len() >= 96 && v6.network().to_ipv4_mapped().is_some(),
        IpNet::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::objects::fixtures::sample_ctx;
    use crate::engine::jitsi;

    fn by_name(ctx: &Ctx, name: &str) -> NetworkPolicy {
        let all = [default_deny(ctx), dns(ctx)];
        all.into_iter()
            .chain(jitsi::network_policy::build(ctx))
            .chain(turn_policy(ctx).ok())
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .expect(name)
    }

    #[test]
    fn default_deny_selects_the_whole_bridge() {
        let ctx = sample_ctx();
        let p = by_name(&ctx, "meet-default-deny");
        let spec = p.spec.expect("spec");
        let sel = spec.pod_selector.and_then(|s| s.match_labels).expect("selector");
        assert_eq!(sel.get(labels::INSTANCE).map(String::as_str), Some("meet"));
        assert_eq!(sel.get(labels::NAME).map(String::as_str), Some("conclave"));
        assert_eq!(sel.get(labels::OWNER_KIND).map(String::as_str), Some("bridge"));
        assert!(!sel.contains_key(labels::COMPONENT));
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
        assert!(spec.ingress.is_none() && spec.egress.is_none());
        assert_eq!(
            p.metadata
                .labels
                .expect("labels")
                .get(labels::COMPONENT)
                .map(String::as_str),
            Some("network")
        );
    }

    #[test]
    fn turn_egress_excludes_denied_peers() {
        let ctx = sample_ctx();
        let spec = by_name(&ctx, "meet-allow-turn").spec.expect("spec");
        let to = spec.egress.expect("egress")[0].to.clone().expect("to");
        let v4 = to[0].ip_block.clone().expect("v4");
        assert_eq!(v4.cidr, "0.0.0.0/0");
        let except = v4.except.expect("except");
        assert!(except.contains(&"10.0.0.0/8".to_string()) && except.contains(&"169.254.0.0/16".to_string()));
        let v6 = to[1].ip_block.clone().expect("v6");
        assert_eq!(v6.cidr, "::/0");
        let except6 = v6.except.expect("except");
        assert!(except6.contains(&"fc00::/7".to_string()));
        assert!(!except6.iter().any(|c| c.starts_with("::ffff")), "{except6:?}");
        assert_eq!(to[2].ip_block.as_ref().map(|b| b.cidr.as_str()), Some("10.1.2.3/32"));
        let ingress = spec.ingress.expect("ingress");
        let relay = ingress[0]
            .ports
            .as_ref()
            .expect("ports")
            .iter()
            .find(|p| p.end_port.is_some())
            .cloned()
            .expect("relay");
        assert_eq!(
            (relay.port, relay.end_port),
            (Some(IntOrString::Int(49152)), Some(65535))
        );
    }

    #[test]
    fn turn_reaches_its_own_internal_sfu_on_its_port_only() {
        let mut ctx = sample_ctx();
        ctx.sfu[1].advertise = vec!["10.20.0.6".into()];
        let egress = by_name(&ctx, "meet-allow-turn")
            .spec
            .and_then(|s| s.egress)
            .expect("egress");
        let own = egress.last().expect("rule");
        let to = own.to.clone().expect("to");
        assert_eq!(to[0].ip_block.as_ref().map(|b| b.cidr.as_str()), Some("10.20.0.6/32"));
        let ports = own.ports.clone().expect("ports");
        assert_eq!(
            (ports[0].port.clone(), ports[0].protocol.as_deref()),
            (Some(IntOrString::Int(31001)), Some("UDP"))
        );
    }

    #[test]
    fn no_turn_policy_without_turn() {
        let mut ctx = sample_ctx();
        ctx.spec.turn.enabled = false;
        assert!(
            build(&ctx, Vec::new())
                .expect("builds")
                .iter()
                .all(|c| !c.name().contains("turn"))
        );
    }
}
