//! The videobridges (SFU). Every replica is its own StatefulSet of one pod with its own UDP port
//! and (for NodePort and LoadBalancer) its own Service: ICE state lives in one bridge, so a
//! Service balancing several bridges would hand packets to the wrong one. Replicas are found by
//! jicofo through the brewery MUC in prosody, not through a Service.
//!
//! With `HostPort` exposure the pod binds its port on the node, which neither the restricted nor
//! the baseline Pod Security profile allows; everything else about the pod (non-root, no
//! capabilities, read-only root, seccomp) stays restricted.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, ExecAction, Lifecycle, LifecycleHandler, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::build::{
    JVB_AUTH_USER, JVB_BREWERY_MUC, container_port, env, external_service, field_env, http_probe, invalid, jitsi_env,
    jitsi_scratch, parse_duration, pod_spec, requests, secret_env, service_port, template,
};
use super::context::{Ctx, SfuReplica, restricted_container, restricted_pod};
use super::secrets;
use crate::api::Exposure;
use crate::child::Child;
use crate::labels::{Component, SFU_INDEX};

/// The videobridge's private HTTP port: health, colibri stats, shutdown, drain.
pub const HTTP_PORT: i32 = 8080;
/// Script that asks the bridge to stop taking conferences and waits until its last one ends.
pub const GRACEFUL_SHUTDOWN: &str = "/usr/share/jitsi-videobridge/graceful_shutdown.sh";
/// Added to the drain timeout for the bridge's own shutdown after its last participant left
/// (`shutting-down-delay`, 1 min upstream, hidden behind the 10 s polling of the script).
pub const SHUTDOWN_MARGIN_SECONDS: i64 = 30;

/// A StatefulSet, and a Service unless exposure is `HostPort`, per replica.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let grace = grace_seconds(ctx)?;
    let mut out = Vec::new();
    for r in &ctx.sfu {
        let svc = service(ctx, r);
        out.push(Child::new(&stateful_set(ctx, r, grace, svc.is_some()))?);
        if let Some(s) = svc {
            out.push(Child::new(&s)?);
        }
    }
    Ok(out)
}

/// `terminationGracePeriodSeconds`: the drain timeout plus a margin, so Kubernetes waits for the
/// preStop drain instead of killing conferences.
fn grace_seconds(ctx: &Ctx) -> Result<i64, serde_json::Error> {
    let d = &ctx.spec.sfu.drain_timeout;
    let drain = parse_duration(d).ok_or_else(|| invalid(format!("spec.sfu.drainTimeout {d:?} is not a duration")))?;
    Ok(i64::try_from(drain.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(SHUTDOWN_MARGIN_SECONDS))
}

/// Name suffix of replica `r`'s StatefulSet and Service.
pub fn suffix(r: &SfuReplica) -> String {
    format!("sfu-{}", r.index)
}

/// The labels that select exactly one replica's pod.
fn replica_selector(ctx: &Ctx, r: &SfuReplica) -> BTreeMap<String, String> {
    let mut s = ctx.selector(Component::Sfu);
    s.insert(SFU_INDEX.into(), r.index.to_string());
    s
}

/// One replica's environment.
pub fn env_vars(ctx: &Ctx, r: &SfuReplica) -> Vec<EnvVar> {
    let mut e = jitsi_env(ctx);
    e.extend([
        env("JVB_AUTH_USER", JVB_AUTH_USER),
        secret_env(ctx, "JVB_AUTH_PASSWORD", secrets::JVB_PASSWORD),
        env("JVB_BREWERY_MUC", JVB_BREWERY_MUC),
        env("JVB_PORT", r.port.to_string()),
        // STUN behind SNAT learns the wrong port; the operator knows the right address.
        env("JVB_DISABLE_STUN", "1"),
        // Identity in the brewery; must be unique, and HOSTNAME is the node's with hostNetwork.
        field_env("JVB_MUC_NICKNAME", "metadata.name"),
        // Both are needed by graceful_shutdown.sh (POST /colibri/shutdown, GET /colibri/stats).
        env("COLIBRI_REST_ENABLED", "true"),
        env("SHUTDOWN_REST_ENABLED", "true"),
    ]);
    if !r.advertise.is_empty() {
        e.push(env("JVB_ADVERTISE_IPS", r.advertise.join(",")));
    }
    e
}

/// Pinned replicas require their node; others take the pool's placement settings.
fn affinity(ctx: &Ctx, r: &SfuReplica) -> Option<Affinity> {
    match &r.node {
        Some(node) => Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.clone()]),
                        }]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        }),
        None => ctx.spec.sfu.affinity.clone(),
    }
}

fn stateful_set(ctx: &Ctx, r: &SfuReplica, grace: i64, has_service: bool) -> StatefulSet {
    let (volumes, mounts) = jitsi_scratch(&[], true);
    let host_port = ctx.spec.sfu.media.exposure == Exposure::HostPort;
    let container = Container {
        name: "jvb".into(),
        image: Some(ctx.images.jvb.clone()),
        env: Some(env_vars(ctx, r)),
        ports: Some(vec![
            ContainerPort {
                host_port: host_port.then_some(r.port),
                ..container_port("media", r.port, "UDP")
            },
            container_port("http", HTTP_PORT, "TCP"),
        ]),
        readiness_probe: Some(http_probe("/about/health", HTTP_PORT, 10, 10, 3)),
        liveness_probe: Some(http_probe("/about/health", HTTP_PORT, 60, 20, 3)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![GRACEFUL_SHUTDOWN.into()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(
            ctx.spec
                .sfu
                .resources
                .clone()
                .unwrap_or_else(|| requests("500m", "1Gi")),
        ),
        security_context: Some(restricted_container(false)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut pod = pod_spec(vec![container], volumes, restricted_pod(1000));
    pod.termination_grace_period_seconds = Some(grace);
    pod.affinity = affinity(ctx, r);
    pod.node_selector = (!ctx.spec.sfu.node_selector.is_empty()).then(|| ctx.spec.sfu.node_selector.clone());
    pod.tolerations = (!ctx.spec.sfu.tolerations.is_empty()).then(|| ctx.spec.sfu.tolerations.clone());
    let name = suffix(r);
    StatefulSet {
        metadata: ctx.meta(&name, Component::Sfu),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: has_service.then(|| ctx.child_name(&name)),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(replica_selector(ctx, r)),
                ..LabelSelector::default()
            },
            template: template(
                ctx,
                Component::Sfu,
                &[(SFU_INDEX, r.index.to_string())],
                BTreeMap::new(),
                pod,
            ),
            revision_history_limit: Some(3),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// The replica's own Service: `NodePort` on exactly its port, or a `LoadBalancer`. Local
/// traffic policy keeps the client's source address (ICE checks it) and skips a second hop.
fn service(ctx: &Ctx, r: &SfuReplica) -> Option<Service> {
    let exposure = ctx.spec.sfu.media.exposure;
    let mut port = service_port("media", r.port, r.port, "UDP");
    port.node_port = (exposure == Exposure::NodePort).then_some(r.port);
    external_service(
        ctx.meta(&suffix(r), Component::Sfu),
        exposure,
        replica_selector(ctx, r),
        vec![port],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::build::fixtures::{env_secret_key, env_value, sample_ctx};

    #[test]
    fn one_statefulset_and_service_per_replica() {
        let ctx = sample_ctx();
        let keys: Vec<String> = build(&ctx).expect("builds").iter().map(Child::key).collect();
        assert_eq!(
            keys,
            [
                "StatefulSet/meet-sfu-0",
                "Service/meet-sfu-0",
                "StatefulSet/meet-sfu-1",
                "Service/meet-sfu-1"
            ]
        );
    }

    #[test]
    fn replica_settings() {
        let ctx = sample_ctx();
        let r = &ctx.sfu[0];
        let s = stateful_set(&ctx, r, grace_seconds(&ctx).expect("grace"), true);
        let spec = s.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.service_name.as_deref(), Some("meet-sfu-0"));
        let sel = spec.selector.match_labels.expect("selector");
        assert_eq!(sel.get(SFU_INDEX).map(String::as_str), Some("0"));
        let tmpl_labels = spec.template.metadata.and_then(|m| m.labels).expect("labels");
        assert!(
            sel.iter().all(|(k, v)| tmpl_labels.get(k) == Some(v)),
            "template matches its selector"
        );
        let pod = spec.template.spec.expect("pod");
        assert_eq!(pod.termination_grace_period_seconds, Some(5400 + 30));
        let terms = pod
            .affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution);
        let req = &terms.expect("pinned").node_selector_terms[0]
            .match_expressions
            .clone()
            .expect("expr")[0];
        assert_eq!(
            (req.key.as_str(), req.values.clone()),
            ("kubernetes.io/hostname", Some(vec!["node-a".to_string()]))
        );
        let c = &pod.containers[0];
        let v = |n| env_value(c, n);
        assert_eq!(v("JVB_PORT").as_deref(), Some("31000"));
        assert_eq!(v("JVB_ADVERTISE_IPS").as_deref(), Some("203.0.113.10"));
        assert_eq!(v("JVB_DISABLE_STUN").as_deref(), Some("1"));
        assert_eq!(v("COLIBRI_REST_ENABLED").as_deref(), Some("true"));
        assert_eq!(v("SHUTDOWN_REST_ENABLED").as_deref(), Some("true"));
        assert_eq!(v("XMPP_SERVER").as_deref(), Some("meet-prosody.conf.svc"));
        assert_eq!(
            env_secret_key(c, "JVB_AUTH_PASSWORD").as_deref(),
            Some(secrets::JVB_PASSWORD)
        );
        let nick = c
            .env
            .as_ref()
            .and_then(|e| e.iter().find(|x| x.name == "JVB_MUC_NICKNAME").cloned())
            .expect("nick");
        assert_eq!(
            nick.value_from
                .and_then(|f| f.field_ref)
                .map(|f| f.field_path)
                .as_deref(),
            Some("metadata.name")
        );
        let media = &c.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (media.container_port, media.protocol.as_deref(), media.host_port),
            (31000, Some("UDP"), None)
        );
        let pre = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|p| p.exec.as_ref())
            .expect("preStop");
        assert_eq!(pre.command.as_deref(), Some(&[GRACEFUL_SHUTDOWN.to_string()][..]));
        assert_eq!(c.security_context.as_ref().and_then(|s| s.run_as_non_root), Some(true));
    }

    #[test]
    fn unpinned_replica_uses_pool_placement() {
        let mut ctx = sample_ctx();
        ctx.spec.sfu.node_selector.insert("media".into(), "yes".into());
        ctx.spec.sfu.affinity = Some(Affinity::default());
        let s = stateful_set(&ctx, &ctx.sfu[1], 60, true);
        let pod = s.spec.template.spec.expect("pod");
        assert_eq!(pod.affinity, Some(Affinity::default()));
        assert_eq!(
            pod.node_selector.expect("ns").get("media").map(String::as_str),
            Some("yes")
        );
        assert!(
            pod.containers[0]
                .env
                .as_ref()
                .is_some_and(|e| !e.iter().any(|x| x.name == "JVB_ADVERTISE_IPS"))
        );
    }

    #[test]
    fn exposures() {
        let mut ctx = sample_ctx();
        let svc = service(&ctx, &ctx.sfu[1]).expect("nodeport");
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(
            spec.selector.expect("sel").get(SFU_INDEX).map(String::as_str),
            Some("1")
        );
        let p = &spec.ports.expect("ports")[0];
        assert_eq!(
            (p.port, p.node_port, p.protocol.as_deref()),
            (31001, Some(31001), Some("UDP"))
        );

        ctx.spec.sfu.media.exposure = Exposure::LoadBalancer;
        let spec = service(&ctx, &ctx.sfu[0]).and_then(|s| s.spec).expect("lb");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.expect("ports")[0].node_port, None);

        ctx.spec.sfu.media.exposure = Exposure::HostPort;
        assert!(service(&ctx, &ctx.sfu[0]).is_none());
        let keys: Vec<String> = build(&ctx).expect("builds").iter().map(Child::key).collect();
        assert_eq!(keys, ["StatefulSet/meet-sfu-0", "StatefulSet/meet-sfu-1"]);
        let s = stateful_set(&ctx, &ctx.sfu[0], 60, false);
        let spec = s.spec;
        assert_eq!(spec.service_name, None);
        let c = &spec.template.spec.expect("pod").containers[0];
        assert_eq!(c.ports.as_ref().expect("ports")[0].host_port, Some(31000));
    }

    #[test]
    fn resources_from_spec() {
        let mut ctx = sample_ctx();
        let want = requests("2", "4Gi");
        ctx.spec.sfu.resources = Some(want.clone());
        let s = stateful_set(&ctx, &ctx.sfu[0], 60, true);
        assert_eq!(s.spec.template.spec.expect("pod").containers[0].resources, Some(want));
    }
}
