//! Redis for a LiveKit Bridge whose pool can hold more than one replica: LiveKit keeps the
//! rooms, the nodes and the routing of signalling between nodes there, so a participant who
//! reaches any replica's signalling lands in the room wherever it runs.
//!
//! Unless `spec.redis` names an existing one, the operator runs a single Redis: no persistence
//! (the state is rebuilt by the nodes and the join page's room list within seconds of a
//! restart), a password from the generated Secret, the restricted Pod Security profile, and a
//! NetworkPolicy that admits only the SFU pods. The password reaches Redis as coturn's secret
//! reaches coturn: a shell appends a `requirepass` line to the ConfigMap's file in a
//! memory-backed emptyDir and `exec`s redis-server on it, so it is in neither the ConfigMap nor
//! any command line.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, Container, Service, ServiceSpec, Volume};

use crate::api::bridge::{BridgeSpec, Engine, Redis as External};
use crate::bridge::context::{Ctx, restricted_container, restricted_pod};
use crate::bridge::objects::{
    CONFIG_HASH_ANNOTATION, container_port, deployment, empty_dir, mount, pod_spec, requests, secret_env, service_port,
    tcp_probe, template,
};
use crate::bridge::secrets;
use crate::child::Child;
use crate::labels::{Component, content_hash};

/// Name suffix of the ConfigMap, Deployment and Service.
pub const SUFFIX: &str = "redis";
pub const PORT: i32 = 6379;
/// uid of `redis` in the official image.
pub const UID: i64 = 999;
/// Key of the configuration in the ConfigMap.
pub const CONFIG_KEY: &str = "redis.conf";
const CONFIG_DIR: &str = "/etc/redis";
const RUN_DIR: &str = "/run/redis";
const DATA_DIR: &str = "/data";

/// Which Redis the SFU replicas use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Redis<'a> {
    /// One replica at most: LiveKit needs none.
    None,
    /// The one the operator runs.
    Operator,
    /// `spec.redis`.
    External(&'a External),
}

/// The Redis of a Bridge: `spec.redis` when set, the operator's when the pool can grow past
/// one replica, none otherwise (and none for a Jitsi Bridge).
pub fn mode(spec: &BridgeSpec) -> Redis<'_> {
    match (&spec.redis, spec.engine) {
        (_, Engine::Jitsi) => Redis::None,
        (Some(e), Engine::LiveKit) => Redis::External(e),
        (None, Engine::LiveKit) if spec.sfu.max_replicas() > 1 => Redis::Operator,
        (None, Engine::LiveKit) => Redis::None,
    }
}

/// `redis.conf` without the password: in memory only, on every interface of the pod.
pub fn config() -> String {
    [
        "# Rendered by Conclave; the password is appended at container start.",
        "bind * -::*",
        &format!("port {PORT}"),
        "protected-mode yes",
        "save \"\"",
        "appendonly no",
        &format!("dir {DATA_DIR}"),
        "",
    ]
    .join("\n")
}

/// The container's start script: the password joins the config in memory, then redis-server
/// replaces the shell.
pub fn start_script() -> String {
    format!(
        "set -eu\numask 077\n{{ cat {CONFIG_DIR}/{CONFIG_KEY}; printf 'requirepass %s\\n' \"$REDIS_PASSWORD\"; }} > {RUN_DIR}/{CONFIG_KEY}\n\
         unset REDIS_PASSWORD\nexec redis-server {RUN_DIR}/{CONFIG_KEY}\n"
    )
}

/// ConfigMap, Deployment and Service of the operator's Redis; nothing otherwise.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    if mode(&ctx.spec) != Redis::Operator {
        return Ok(Vec::new());
    }
    let conf = config();
    let cm = ConfigMap {
        metadata: ctx.meta(SUFFIX, Component::Redis),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), conf.clone())])),
        ..ConfigMap::default()
    };
    let container = Container {
        name: "redis".into(),
        image: Some(ctx.images.redis.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), start_script()]),
        env: Some(vec![secret_env(ctx, "REDIS_PASSWORD", secrets::REDIS_PASSWORD)]),
        ports: Some(vec![container_port("redis", PORT, "TCP")]),
        readiness_probe: Some(tcp_probe(PORT, 2, 5, 3)),
        liveness_probe: Some(tcp_probe(PORT, 10, 20, 3)),
        resources: Some(requests("50m", "64Mi")),
        security_context: Some(restricted_container(false)),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount("run", RUN_DIR, false),
            mount("data", DATA_DIR, false),
        ]),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ctx.child_name(SUFFIX),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        empty_dir("run", true, "1Mi"),
        empty_dir("data", true, "256Mi"),
    ];
    let annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), content_hash(&conf))]);
    let pod = pod_spec(vec![container], volumes, restricted_pod(UID));
    // One Redis at a time: two would split LiveKit's view of rooms and nodes.
    let deploy = deployment(
        ctx,
        SUFFIX,
        Component::Redis,
        1,
        true,
        template(ctx, Component::Redis, &[], annotations, pod),
    );
    let svc = Service {
        metadata: ctx.meta(SUFFIX, Component::Redis),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(ctx.selector(Component::Redis)),
            ports: Some(vec![service_port("redis", PORT, PORT, "TCP")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Ok(vec![Child::new(&cm)?, Child::new(&deploy)?, Child::new(&svc)?])
}

/// The TCP ports the SFU pods reach an external Redis on: those of its address or Sentinels,
/// and with Sentinel also 6379, the usual port of the masters they name (which the Sentinels,
/// not the spec, tell).
pub fn external_ports(e: &External) -> Vec<i32> {
    let port = |a: &String| a.rsplit(':').next().and_then(|p| p.parse::<i32>().ok());
    let mut ports: Vec<i32> = e.address.iter().filter_map(port).collect();
    if let Some(s) = &e.sentinel {
        ports.extend(s.addresses.iter().filter_map(port));
        ports.push(PORT);
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::objects::fixtures::sample_ctx;

    fn livekit_ctx() -> Ctx {
        let mut ctx = sample_ctx();
        ctx.spec.engine = Engine::LiveKit;
        ctx
    }

    #[test]
    fn the_operator_runs_redis_only_when_the_pool_can_grow_past_one() {
        let mut ctx = livekit_ctx();
        assert_eq!(mode(&ctx.spec), Redis::Operator);
        let keys: Vec<String> = build(&ctx).expect("build").iter().map(Child::key).collect();
        assert_eq!(
            keys,
            ["ConfigMap/meet-redis", "Deployment/meet-redis", "Service/meet-redis"]
        );
        ctx.spec.sfu.replicas = 1;
        assert_eq!(mode(&ctx.spec), Redis::None);
        ctx.spec.sfu.max_replicas = Some(3);
        assert_eq!(mode(&ctx.spec), Redis::Operator, "maxReplicas counts");
        ctx.spec.redis = Some(serde_json::from_value(serde_json::json!({"address": "r:6380"})).expect("redis"));
        assert!(matches!(mode(&ctx.spec), Redis::External(_)));
        assert!(build(&ctx).expect("build").is_empty());
        ctx.spec.engine = Engine::Jitsi;
        assert_eq!(mode(&ctx.spec), Redis::None);
    }

    #[test]
    fn the_password_is_only_in_memory() {
        let script = start_script();
        assert!(
            script.contains("printf 'requirepass %s\\n' \"$REDIS_PASSWORD\""),
            "{script}"
        );
        assert!(script.contains("umask 077") && script.contains("unset REDIS_PASSWORD"));
        assert!(script.ends_with("exec redis-server /run/redis/redis.conf\n"));
        assert!(!config().contains("requirepass"));
        let ctx = livekit_ctx();
        let d = &build(&ctx).expect("build")[1];
        let v = serde_json::to_value(&d.object).expect("json");
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["env"][0]["valueFrom"]["secretKeyRef"]["key"], secrets::REDIS_PASSWORD);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(v["spec"]["template"]["spec"]["securityContext"]["runAsUser"], UID);
        assert_eq!(v["spec"]["strategy"]["type"], "Recreate");
    }

    #[test]
    fn external_redis_ports() {
        let e: External = serde_json::from_value(serde_json::json!({
            "sentinel": {"masterName": "m", "addresses": ["a:26379", "[2001:db8::1]:26380"]}
        }))
        .expect("redis");
        assert_eq!(external_ports(&e), vec![6379, 26379, 26380]);
        let e: External = serde_json::from_value(serde_json::json!({"address": "redis.example:6390"})).expect("redis");
        assert_eq!(external_ports(&e), vec![6390]);
    }
}
