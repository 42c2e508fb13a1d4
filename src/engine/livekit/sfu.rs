//! livekit-server, the SFU of a LiveKit Bridge: per replica a ConfigMap with its configuration
//! ([`super::config`]) and the pod [`crate::bridge::sfu`] makes a replica of the pool.
//!
//! Secrets reach the process without a ConfigMap, a command line or a literal in the pod spec:
//! the API key and secret are env vars read from the generated Secret, joined into
//! `LIVEKIT_KEYS` (`key: secret`) by Kubernetes' own `$(VAR)` expansion; the Redis passwords
//! are env vars livekit-server reads (`REDIS_PASSWORD`, `LIVEKIT_REDIS_SENTINEL_PASSWORD`); the
//! TURN secret is a file from the generated Secret, mode 0440 (livekit-server refuses a secret
//! file that others can read).
//!
//! Draining: on SIGTERM livekit-server marks itself as shutting down (no new rooms are placed
//! on it), waits for its last participant to leave, then exits; Kubernetes waits for it up to
//! `terminationGracePeriodSeconds` = `sfu.drainTimeout` + 30 s. No preStop hook is needed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, KeyToPath, SecretKeySelector,
    SecretVolumeSource, Volume,
};

use super::config::{self, METRICS_PORT, SIGNAL_PORT};
use super::redis::{self, Redis};
use crate::api::Exposure;
use crate::api::bridge::SecretKeyRef;
use crate::bridge::context::{Ctx, SfuReplica, restricted_container, restricted_pod};
use crate::bridge::objects::{
    CONFIG_HASH_ANNOTATION, container_port, empty_dir, env, http_probe, mount, requests, secret_env, service_port,
    tcp_probe,
};
use crate::bridge::secrets;
use crate::bridge::sfu::{self, ReplicaPod};
use crate::child::Child;
use crate::labels::{Component, content_hash};

/// Any non-root uid: the image is a static binary on alpine and writes nothing.
pub const UID: i64 = 65532;
/// Key of the configuration in each replica's ConfigMap, and where it is mounted.
pub const CONFIG_KEY: &str = "livekit.yaml";
pub const CONFIG_DIR: &str = "/etc/livekit";
const SECRETS_DIR: &str = "/etc/livekit-secrets";

/// Name suffix of replica `r`'s ConfigMap.
pub fn config_suffix(r: &SfuReplica) -> String {
    format!("{}-config", sfu::suffix(r))
}

/// Per replica: its ConfigMap, StatefulSet and (unless HostPort) Service.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let mut out = Vec::new();
    let mut rendered = BTreeMap::new();
    for r in &ctx.sfu {
        let yaml = config::render(ctx, r)?;
        out.push(Child::new(&ConfigMap {
            metadata: ctx.meta(&config_suffix(r), Component::Sfu),
            data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml.clone())])),
            ..ConfigMap::default()
        })?);
        rendered.insert(r.index, yaml);
    }
    out.extend(sfu::build(
        ctx,
        |r| {
            Ok(pod(
                ctx,
                r,
                rendered.get(&r.index).map(String::as_str).unwrap_or_default(),
            ))
        },
        |r| {
            vec![
                service_port("media", r.port, r.port, "UDP"),
                service_port("ice-tcp", r.port, r.port, "TCP"),
            ]
        },
    )?);
    Ok(out)
}

/// An env var from a key of a Secret that is not the generated one.
fn secret_ref_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The environment of every replica: secrets only, each by reference.
pub fn env_vars(ctx: &Ctx) -> Vec<EnvVar> {
    let mut e = vec![
        secret_env(ctx, "LIVEKIT_API_KEY", secrets::LIVEKIT_API_KEY),
        secret_env(ctx, "LIVEKIT_API_SECRET", secrets::LIVEKIT_API_SECRET),
        // Expanded by the kubelet from the two above; the pod spec holds only the references.
        env("LIVEKIT_KEYS", "$(LIVEKIT_API_KEY): $(LIVEKIT_API_SECRET)"),
    ];
    match redis::mode(&ctx.spec) {
        Redis::None => {}
        Redis::Operator => e.push(secret_env(ctx, "REDIS_PASSWORD", secrets::REDIS_PASSWORD)),
        Redis::External(x) => {
            if let Some(p) = &x.password_secret_ref {
                e.push(secret_ref_env("REDIS_PASSWORD", p));
            }
            if let Some(p) = x.sentinel.as_ref().and_then(|s| s.password_secret_ref.as_ref()) {
                e.push(secret_ref_env("LIVEKIT_REDIS_SENTINEL_PASSWORD", p));
            }
        }
    }
    e
}

fn pod(ctx: &Ctx, r: &SfuReplica, yaml: &str) -> ReplicaPod {
    let host_port = (ctx.spec.sfu.media.exposure == Exposure::HostPort).then_some(r.port);
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ctx.child_name(&config_suffix(r)),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        empty_dir("tmp", true, "16Mi"),
    ];
    let mut mounts = vec![mount("config", CONFIG_DIR, true), mount("tmp", "/tmp", false)];
    if ctx.spec.turn.enabled {
        volumes.push(Volume {
            name: "turn-secret".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ctx.secret_name.clone()),
                items: Some(vec![KeyToPath {
                    key: secrets::TURN_SECRET.into(),
                    path: secrets::TURN_SECRET.into(),
                    ..KeyToPath::default()
                }]),
                // Owner and group (fsGroup) only: livekit-server refuses anything others can read.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("turn-secret", SECRETS_DIR, true));
    }
    let container = Container {
        name: "livekit".into(),
        image: Some(ctx.images.livekit.clone()),
        args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/{CONFIG_KEY}")]),
        env: Some(env_vars(ctx)),
        ports: Some(vec![
            ContainerPort {
                host_port,
                ..container_port("media", r.port, "UDP")
            },
            ContainerPort {
                host_port,
                ..container_port("ice-tcp", r.port, "TCP")
            },
            container_port("signal", SIGNAL_PORT, "TCP"),
            container_port("metrics", METRICS_PORT, "TCP"),
        ]),
        // LiveKit's `/` answers 200 while the node's stats are fresh.
        readiness_probe: Some(http_probe("/", SIGNAL_PORT, 5, 10, 3)),
        // Not `/`: with Redis, it fails on every node at once when Redis blips, and restarting
        // every SFU would cut every conference for a problem a restart does not fix.
        liveness_probe: Some(tcp_probe(SIGNAL_PORT, 30, 20, 3)),
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
        security: restricted_pod(UID),
        annotations: BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), content_hash(yaml))]),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Service;

    use super::*;
    use crate::api::bridge::Engine;
    use crate::bridge::objects::fixtures::{env_secret_key, env_value, sample_ctx};

    fn livekit_ctx() -> Ctx {
        let mut ctx = sample_ctx();
        ctx.spec.engine = Engine::LiveKit;
        ctx
    }

    fn child<T: serde::de::DeserializeOwned>(ctx: &Ctx, key: &str) -> T {
        let c = build(ctx)
            .expect("builds")
            .into_iter()
            .find(|c| c.key() == key)
            .unwrap_or_else(|| panic!("{key}"));
        serde_json::from_value(serde_json::to_value(&c.object).expect("json")).expect("typed")
    }

    #[test]
    fn a_configmap_statefulset_and_service_per_replica() {
        let keys: Vec<String> = build(&livekit_ctx()).expect("builds").iter().map(Child::key).collect();
        assert_eq!(
            keys,
            [
                "ConfigMap/meet-sfu-0-config",
                "ConfigMap/meet-sfu-1-config",
                "StatefulSet/meet-sfu-0",
                "Service/meet-sfu-0",
                "StatefulSet/meet-sfu-1",
                "Service/meet-sfu-1"
            ]
        );
    }

    #[test]
    fn the_pod_reads_its_config_and_secrets_by_reference() {
        let ctx = livekit_ctx();
        let s: StatefulSet = child(&ctx, "StatefulSet/meet-sfu-1");
        let tmpl = s.spec.template;
        let cm: ConfigMap = child(&ctx, "ConfigMap/meet-sfu-1-config");
        let yaml = cm.data.expect("data")[CONFIG_KEY].clone();
        assert_eq!(
            tmpl.metadata.and_then(|m| m.annotations).expect("annotations")[CONFIG_HASH_ANNOTATION],
            content_hash(&yaml)
        );
        let pod = tmpl.spec.expect("pod");
        assert_eq!(pod.termination_grace_period_seconds, Some(5400 + 30));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_deref(),
            Some(&["--config".to_string(), "/etc/livekit/livekit.yaml".to_string()][..])
        );
        assert_eq!(
            env_secret_key(c, "LIVEKIT_API_KEY").as_deref(),
            Some(secrets::LIVEKIT_API_KEY)
        );
        assert_eq!(
            env_secret_key(c, "LIVEKIT_API_SECRET").as_deref(),
            Some(secrets::LIVEKIT_API_SECRET)
        );
        assert_eq!(
            env_value(c, "LIVEKIT_KEYS").as_deref(),
            Some("$(LIVEKIT_API_KEY): $(LIVEKIT_API_SECRET)")
        );
        assert_eq!(
            env_secret_key(c, "REDIS_PASSWORD").as_deref(),
            Some(secrets::REDIS_PASSWORD)
        );
        let names: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let pos = |n| names.iter().position(|x| *x == n).expect(n);
        assert!(
            pos("LIVEKIT_KEYS") > pos("LIVEKIT_API_SECRET"),
            "$(VAR) expands only earlier vars"
        );
        let secret = pod
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.secret.clone())
            .expect("turn secret volume");
        assert_eq!(secret.default_mode, Some(0o440));
        assert_eq!(secret.items.expect("items")[0].key, secrets::TURN_SECRET);
        let ports: Vec<(i32, String, Option<i32>)> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.container_port, p.protocol.clone().unwrap_or_default(), p.host_port))
            .collect();
        assert_eq!(
            ports,
            [
                (31001, "UDP".into(), None),
                (31001, "TCP".into(), None),
                (7880, "TCP".into(), None),
                (6789, "TCP".into(), None)
            ]
        );
        assert!(c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).is_some());
        assert!(c.liveness_probe.as_ref().and_then(|p| p.tcp_socket.as_ref()).is_some());
        assert!(c.lifecycle.is_none(), "SIGTERM drains; no preStop");
    }

    #[test]
    fn the_replica_service_carries_udp_and_tcp_on_one_port() {
        let ctx = livekit_ctx();
        let s: Service = child(&ctx, "Service/meet-sfu-0");
        let ports: Vec<(i32, Option<i32>, String)> = s
            .spec
            .expect("spec")
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.port, p.node_port, p.protocol.unwrap_or_default()))
            .collect();
        assert_eq!(
            ports,
            [(31000, Some(31000), "UDP".into()), (31000, Some(31000), "TCP".into())]
        );
    }

    #[test]
    fn hostport_and_external_redis_passwords() {
        let mut ctx = livekit_ctx();
        ctx.spec.sfu.media.exposure = Exposure::HostPort;
        ctx.spec.turn.enabled = false;
        ctx.spec.redis = Some(
            serde_json::from_value(serde_json::json!({
                "sentinel": {"masterName": "m", "addresses": ["s:26379"], "passwordSecretRef": {"name": "sent", "key": "pw"}},
                "passwordSecretRef": {"name": "redis-auth", "key": "password"}
            }))
            .expect("redis"),
        );
        let s: StatefulSet = child(&ctx, "StatefulSet/meet-sfu-0");
        let pod = s.spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert!(c.ports.iter().flatten().take(2).all(|p| p.host_port == Some(31000)));
        let from = |n: &str| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == n)
                .and_then(|e| e.value_from.clone())
                .and_then(|v| v.secret_key_ref)
                .map(|s| (s.name, s.key))
        };
        assert_eq!(from("REDIS_PASSWORD"), Some(("redis-auth".into(), "password".into())));
        assert_eq!(
            from("LIVEKIT_REDIS_SENTINEL_PASSWORD"),
            Some(("sent".into(), "pw".into()))
        );
        assert!(
            pod.volumes.iter().flatten().all(|v| v.secret.is_none()),
            "no TURN secret without TURN"
        );
    }
}
