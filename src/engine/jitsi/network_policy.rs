//! The Jitsi components' flows: web to prosody, jicofo and the videobridges to prosody, media
//! into the videobridges. jicofo finds and drives the videobridges through prosody (the brewery
//! MUC and colibri over XMPP), never over their HTTP port, so no flow leads there.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPort};

use super::{prosody, web};
use crate::bridge::context::Ctx;
use crate::bridge::network_policy::{anywhere, egress, from_pods, ingress, pods, policy, port};
use crate::labels::Component;

/// One allow policy per Jitsi component, in a stable order.
pub fn build(ctx: &Ctx) -> Vec<NetworkPolicy> {
    vec![
        web_policy(ctx),
        prosody_policy(ctx),
        jicofo_policy(ctx),
        sfu_policy(ctx),
    ]
}

/// Web: HTTP from anywhere (Ingress controllers live in other namespaces); BOSH/websocket to prosody.
fn web_policy(ctx: &Ctx) -> NetworkPolicy {
    policy(
        ctx,
        "allow-web",
        pods(ctx, Component::Web),
        vec![ingress(None, vec![port(web::HTTP_PORT, "TCP")])],
        vec![egress(
            Some(vec![from_pods(ctx, Component::Prosody)]),
            Some(vec![port(prosody::HTTP_PORT, "TCP")]),
        )],
    )
}

/// Prosody: c2s from jicofo and the bridges, HTTP from the web pods. No egress.
fn prosody_policy(ctx: &Ctx) -> NetworkPolicy {
    policy(
        ctx,
        "allow-prosody",
        pods(ctx, Component::Prosody),
        vec![
            ingress(
                Some(vec![from_pods(ctx, Component::Jicofo), from_pods(ctx, Component::Sfu)]),
                vec![port(prosody::XMPP_PORT, "TCP")],
            ),
            ingress(
                Some(vec![from_pods(ctx, Component::Web)]),
                vec![port(prosody::HTTP_PORT, "TCP")],
            ),
        ],
        Vec::new(),
    )
}

/// Jicofo: to prosody (c2s) only. Its REST port is only probed by the kubelet, which policies
/// do not restrict.
fn jicofo_policy(ctx: &Ctx) -> NetworkPolicy {
    policy(
        ctx,
        "allow-jicofo",
        pods(ctx, Component::Jicofo),
        Vec::new(),
        vec![egress(
            Some(vec![from_pods(ctx, Component::Prosody)]),
            Some(vec![port(prosody::XMPP_PORT, "TCP")]),
        )],
    )
}

/// Bridges: media in on their own UDP ports from anywhere; out to prosody and UDP to anywhere
/// (ICE checks and media towards clients and TURN relays). Their HTTP port (health, drain) is
/// used by the kubelet and from inside the pod only.
fn sfu_policy(ctx: &Ctx) -> NetworkPolicy {
    let media: Vec<NetworkPolicyPort> = ctx.sfu.iter().map(|r| port(r.port, "UDP")).collect();
    let ingress_rules = if media.is_empty() {
        Vec::new()
    } else {
        vec![ingress(None, media)]
    };
    policy(
        ctx,
        "allow-sfu",
        pods(ctx, Component::Sfu),
        ingress_rules,
        vec![
            egress(
                Some(vec![from_pods(ctx, Component::Prosody)]),
                Some(vec![port(prosody::XMPP_PORT, "TCP")]),
            ),
            egress(
                Some(anywhere()),
                Some(vec![NetworkPolicyPort {
                    protocol: Some("UDP".into()),
                    ..NetworkPolicyPort::default()
                }]),
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::bridge::objects::fixtures::sample_ctx;

    fn by_name(ctx: &Ctx, name: &str) -> NetworkPolicy {
        build(ctx)
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .expect(name)
    }

    #[test]
    fn prosody_accepts_only_its_clients() {
        let ctx = sample_ctx();
        let rules = by_name(&ctx, "meet-allow-prosody")
            .spec
            .and_then(|s| s.ingress)
            .expect("ingress");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].from.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            rules[1].ports.as_ref().expect("ports")[0].port,
            Some(IntOrString::Int(5280))
        );
    }

    #[test]
    fn nothing_reaches_the_videobridges_http_port() {
        let ctx = sample_ctx();
        for p in build(&ctx) {
            let spec = p.spec.expect("spec");
            let ports = spec
                .ingress
                .iter()
                .flatten()
                .flat_map(|r| r.ports.clone().unwrap_or_default())
                .chain(
                    spec.egress
                        .iter()
                        .flatten()
                        .flat_map(|r| r.ports.clone().unwrap_or_default()),
                );
            for port in ports {
                assert_ne!(port.port, Some(IntOrString::Int(8080)), "{:?}", p.metadata.name);
            }
        }
    }

    #[test]
    fn sfu_media_ports() {
        let ctx = sample_ctx();
        let rules = by_name(&ctx, "meet-allow-sfu")
            .spec
            .and_then(|s| s.ingress)
            .expect("ingress");
        let media = rules.iter().find(|r| r.from.is_none()).expect("media rule");
        let ports: Vec<_> = media
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [Some(IntOrString::Int(31000)), Some(IntOrString::Int(31001))]);
    }
}
