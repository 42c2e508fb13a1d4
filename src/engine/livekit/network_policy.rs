//! The LiveKit components' flows: browsers and ingress controllers to the page and to
//! signalling, the page to LiveKit's API, media into each replica's port (UDP and ICE/TCP),
//! the SFU pods to Redis and nobody else to Redis.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPort};

use super::config::{METRICS_PORT, SIGNAL_PORT};
use super::redis::{self, Redis};
use super::web;
use crate::bridge::context::Ctx;
use crate::bridge::network_policy::{anywhere, egress, from_pods, ingress, pods, policy, port};
use crate::labels::Component;

/// One allow policy per LiveKit component, in a stable order.
pub fn build(ctx: &Ctx) -> Vec<NetworkPolicy> {
    let mut out = vec![web_policy(ctx), sfu_policy(ctx)];
    if redis::mode(&ctx.spec) == Redis::Operator {
        out.push(redis_policy(ctx));
    }
    out
}

/// The page: HTTP from anywhere (ingress controllers live in other namespaces); out to
/// LiveKit's API on the SFU pods.
fn web_policy(ctx: &Ctx) -> NetworkPolicy {
    policy(
        ctx,
        "allow-web",
        pods(ctx, Component::Web),
        vec![ingress(None, vec![port(web::HTTP_PORT, "TCP")])],
        vec![egress(
            Some(vec![from_pods(ctx, Component::Sfu)]),
            Some(vec![port(SIGNAL_PORT, "TCP")]),
        )],
    )
}

/// SFU pods: signalling and metrics from anywhere (ingress controllers, Prometheus), media on
/// each replica's port, UDP and TCP, from anywhere; out: UDP anywhere (media towards clients
/// and TURN relays) and TCP to Redis.
fn sfu_policy(ctx: &Ctx) -> NetworkPolicy {
    let mut ingress_rules = vec![ingress(None, vec![port(SIGNAL_PORT, "TCP"), port(METRICS_PORT, "TCP")])];
    let media: Vec<NetworkPolicyPort> = ctx
        .sfu
        .iter()
        .flat_map(|r| [port(r.port, "UDP"), port(r.port, "TCP")])
        .collect();
    if !media.is_empty() {
        ingress_rules.push(ingress(None, media));
    }
    let mut egress_rules = vec![egress(
        Some(anywhere()),
        Some(vec![NetworkPolicyPort {
            protocol: Some("UDP".into()),
            ..NetworkPolicyPort::default()
        }]),
    )];
    match redis::mode(&ctx.spec) {
        Redis::None => {}
        Redis::Operator => egress_rules.push(egress(
            Some(vec![from_pods(ctx, Component::Redis)]),
            Some(vec![port(redis::PORT, "TCP")]),
        )),
        Redis::External(e) => egress_rules.push(egress(
            Some(anywhere()),
            Some(redis::external_ports(e).into_iter().map(|p| port(p, "TCP")).collect()),
        )),
    }
    policy(ctx, "allow-sfu", pods(ctx, Component::Sfu), ingress_rules, egress_rules)
}

/// Redis: from the SFU pods only; no egress.
fn redis_policy(ctx: &Ctx) -> NetworkPolicy {
    policy(
        ctx,
        "allow-redis",
        pods(ctx, Component::Redis),
        vec![ingress(
            Some(vec![from_pods(ctx, Component::Sfu)]),
            vec![port(redis::PORT, "TCP")],
        )],
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::api::bridge::Engine;
    use crate::bridge::objects::fixtures::sample_ctx;

    fn livekit_ctx() -> Ctx {
        let mut ctx = sample_ctx();
        ctx.spec.engine = Engine::LiveKit;
        ctx
    }

    fn by_name(ctx: &Ctx, name: &str) -> NetworkPolicy {
        build(ctx)
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .expect(name)
    }

    #[test]
    fn media_ports_udp_and_tcp_per_replica() {
        let ctx = livekit_ctx();
        let rules = by_name(&ctx, "meet-allow-sfu")
            .spec
            .and_then(|s| s.ingress)
            .expect("ingress");
        let media: Vec<(Option<IntOrString>, Option<String>)> = rules[1]
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.port, p.protocol))
            .collect();
        assert_eq!(media.len(), 4);
        assert_eq!(media[0], (Some(IntOrString::Int(31000)), Some("UDP".into())));
        assert_eq!(media[3], (Some(IntOrString::Int(31001)), Some("TCP".into())));
    }

    #[test]
    fn only_sfu_pods_reach_redis() {
        let ctx = livekit_ctx();
        let spec = by_name(&ctx, "meet-allow-redis").spec.expect("spec");
        let from = spec.ingress.expect("ingress")[0].from.clone().expect("from");
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0].pod_selector.as_ref().and_then(|s| s.match_labels.clone()),
            Some(ctx.selector(Component::Sfu))
        );
        assert!(spec.egress.is_none());
        let mut one = livekit_ctx();
        one.spec.sfu.replicas = 1;
        assert!(
            build(&one)
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some("meet-allow-redis"))
        );
        let sfu_egress = by_name(&one, "meet-allow-sfu")
            .spec
            .and_then(|s| s.egress)
            .expect("egress");
        assert_eq!(sfu_egress.len(), 1, "no Redis, no TCP out");
    }
}
