//! The Jitsi videobridge (JVB), the SFU of a Jitsi Bridge: the container each replica of the
//! pool runs ([`crate::bridge::sfu`] makes it a replica). Replicas are found by jicofo through
//! the brewery MUC in prosody, not through a Service.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar, ExecAction, Lifecycle, LifecycleHandler};

use super::{Image, JVB_AUTH_USER, JVB_BREWERY_MUC, jitsi_env, jitsi_scratch};
use crate::api::Exposure;
use crate::bridge::context::{Ctx, SfuReplica, restricted_container, restricted_pod};
use crate::bridge::objects::{container_port, env, field_env, http_probe, invalid, requests, secret_env, service_port};
use crate::bridge::secrets;
use crate::bridge::sfu::{self, ReplicaPod};
use crate::child::Child;

/// The videobridge's private HTTP port: health, colibri stats, shutdown, drain.
pub const HTTP_PORT: i32 = 8080;
/// Script that asks the bridge to stop taking conferences and waits until its last one ends.
pub const GRACEFUL_SHUTDOWN: &str = "/usr/share/jitsi-videobridge/graceful_shutdown.sh";

/// The pool: a StatefulSet (and Service) per replica running the videobridge.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    sfu::build(
        ctx,
        |r| {
            // Admission refuses these; an object stored before that rule may still carry one.
            if r.port < 1024 {
                return Err(invalid(format!(
                    "spec.sfu.media.port: replica {} would listen on {}, below 1024, which the unprivileged videobridge cannot bind",
                    r.index, r.port
                )));
            }
            Ok(pod(ctx, r))
        },
        |r| vec![service_port("media", r.port, r.port, "UDP")],
    )
}

/// One replica's environment.
pub fn env_vars(ctx: &Ctx, r: &SfuReplica) -> Vec<EnvVar> {
    let mut e = jitsi_env(ctx, Image::Jvb);
    e.extend([
        env("JVB_AUTH_USER", JVB_AUTH_USER),
        secret_env(ctx, "JVB_AUTH_PASSWORD", secrets::JVB_PASSWORD),
        env("JVB_BREWERY_MUC", JVB_BREWERY_MUC),
        env("JVB_PORT", r.port.to_string()),
        // STUN behind SNAT learns the wrong port; the operator knows the right address.
        env("JVB_DISABLE_STUN", "1"),
        // The pod's own addresses reach nobody outside the cluster; offered as ICE candidates
        // they only leak the pod network to every client.
        env("JVB_ADVERTISE_PRIVATE_CANDIDATES", "false"),
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

/// The videobridge pod of one replica; its preStop hook drains it.
fn pod(ctx: &Ctx, r: &SfuReplica) -> ReplicaPod {
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
    ReplicaPod {
        container,
        volumes,
        security: restricted_pod(1000),
        annotations: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::{Affinity, Service};

    use super::*;
    use crate::bridge::objects::fixtures::{env_secret_key, env_value, sample_ctx};
    use crate::labels::SFU_INDEX;

    fn child<T: serde::de::DeserializeOwned>(ctx: &Ctx, key: &str) -> Option<T> {
        let c = build(ctx).expect("builds").into_iter().find(|c| c.key() == key)?;
        Some(serde_json::from_value(serde_json::to_value(&c.object).expect("json")).expect("typed"))
    }

    fn sts(ctx: &Ctx, i: usize) -> StatefulSet {
        child(ctx, &format!("StatefulSet/meet-sfu-{i}")).expect("statefulset")
    }

    fn svc(ctx: &Ctx, i: usize) -> Option<Service> {
        child(ctx, &format!("Service/meet-sfu-{i}"))
    }

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
        let s = sts(&ctx, r.index as usize);
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
        assert_eq!(v("JVB_ADVERTISE_PRIVATE_CANDIDATES").as_deref(), Some("false"));
        for unread in ["XMPP_DOMAIN", "XMPP_MUC_DOMAIN", "XMPP_GUEST_DOMAIN"] {
            assert_eq!(v(unread), None, "{unread}: the videobridge image does not read it");
        }
        assert_eq!(v("COLIBRI_REST_ENABLED").as_deref(), Some("true"));
        assert_eq!(v("SHUTDOWN_REST_ENABLED").as_deref(), Some("true"));
        assert_eq!(v("XMPP_SERVER").as_deref(), Some("meet-prosody.conf.svc.cluster.local"));
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
        let s = sts(&ctx, 1);
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
        let nodeport = svc(&ctx, 1).expect("nodeport");
        let spec = nodeport.spec.expect("spec");
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
        let spec = svc(&ctx, 0).and_then(|s| s.spec).expect("lb");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.expect("ports")[0].node_port, None);

        ctx.spec.sfu.media.exposure = Exposure::HostPort;
        assert!(svc(&ctx, 0).is_none());
        let keys: Vec<String> = build(&ctx).expect("builds").iter().map(Child::key).collect();
        assert_eq!(keys, ["StatefulSet/meet-sfu-0", "StatefulSet/meet-sfu-1"]);
        let s = sts(&ctx, 0);
        let spec = s.spec;
        assert_eq!(spec.service_name, None);
        let c = &spec.template.spec.expect("pod").containers[0];
        assert_eq!(c.ports.as_ref().expect("ports")[0].host_port, Some(31000));
    }

    #[test]
    fn a_privileged_port_is_refused_not_rendered() {
        let mut ctx = sample_ctx();
        ctx.sfu[1].port = 1023;
        let err = build(&ctx).expect_err("refused");
        assert!(err.to_string().contains("spec.sfu.media.port"), "{err}");
        ctx.sfu[1].port = 1024;
        assert!(build(&ctx).is_ok());
    }

    #[test]
    fn resources_from_spec() {
        let mut ctx = sample_ctx();
        let want = requests("2", "4Gi");
        ctx.spec.sfu.resources = Some(want.clone());
        let s = sts(&ctx, 0);
        assert_eq!(s.spec.template.spec.expect("pod").containers[0].resources, Some(want));
    }
}
