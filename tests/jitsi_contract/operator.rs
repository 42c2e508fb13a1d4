//! The one place the contract test calls the operator: a Bridge and a simulated cluster in, the
//! Jitsi pods the operator would run out, each with exactly the values its container would see.
//! Everything comes from the operator's own planning and builders (`placement::plan`, `Ctx`,
//! `engine::desired`); the only values made up here are those Kubernetes would supply: Secret
//! contents, downward-API fields and pod names.

use std::collections::BTreeMap;

use conclave::api::{Bridge, BridgeSpec};
use conclave::bridge::context::{Ctx, SfuReplica};
use conclave::bridge::{coturn, placement};
use conclave::child::Child;
use conclave::engine;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::cases::Case;

/// The address every pod gets from the simulated pod network (`status.podIP`, and the source
/// address `ip route get` reports inside the test's network namespace).
pub const POD_IP: &str = "198.51.100.23";

/// What a key of the operator's generated Secret holds in the test.
pub fn secret_value(key: &str) -> String {
    format!("test-{key}-value")
}

/// A Jitsi container as it would start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pod {
    /// `web`, `prosody`, `jicofo` or `jvb`: the docker-jitsi-meet image directory.
    pub image: String,
    /// Replica index for the videobridges.
    pub replica: Option<i32>,
    /// The pod's name (what `metadata.name` and `HOSTNAME` hold).
    pub name: String,
    /// The container's environment, every reference resolved, in the operator's order.
    pub env: Vec<(String, String)>,
    /// Files the operator mounts (ConfigMap volumes), by path in the container.
    pub files: BTreeMap<String, String>,
    /// Directories the operator mounts as emptyDirs.
    pub empty_dirs: Vec<String>,
    /// The container as the operator builds it (ports, security context).
    pub container: Container,
}

impl Pod {
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Everything the contract test looks at for one Bridge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Output {
    pub pods: Vec<Pod>,
    /// coturn's rendered configuration, when TURN is on.
    pub turnserver_conf: Option<String>,
    /// The TURN hosts the operator hands to clients (`placement::turn_hosts`).
    pub turn_hosts: Vec<String>,
}

/// Runs the operator's planning and builders for `case`.
pub fn render(case: &Case) -> Output {
    let spec: BridgeSpec = serde_json::from_value(case.spec.clone())
        .unwrap_or_else(|e| panic!("case {}: the spec does not parse: {e}", case.id));
    let mut bridge = Bridge::new(&case.bridge, spec.clone());
    bridge.metadata.namespace = Some(case.namespace.clone());
    bridge.metadata.uid = Some("00000000-0000-4000-8000-000000000000".into());

    let nodes = case.nodes();
    let services = case.load_balancers();
    // What the reconciler reads from its Service cache: the load balancer's status, by name.
    let lb = |name: &str| {
        services
            .iter()
            .find(|s| s.name_any() == name)
            .map(|s| placement::load_balancer(&s.data))
            .unwrap_or_default()
    };
    // No replica is placed yet (nothing current), so the instant plays no part.
    let sfu: Vec<SfuReplica> = placement::plan(
        &spec,
        &case.bridge,
        spec.sfu.replicas,
        &nodes,
        &Default::default(),
        chrono::DateTime::UNIX_EPOCH,
        |svc| lb(svc).ips.into_iter().next(),
    )
    .replicas;
    let owner = OwnerReference {
        api_version: "conclave.dev/v1alpha1".into(),
        kind: "Bridge".into(),
        name: case.bridge.clone(),
        uid: "00000000-0000-4000-8000-000000000000".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut ctx = Ctx::new(
        &case.bridge,
        &case.namespace,
        owner,
        &spec,
        sfu,
        &case.operator_cluster(),
    );
    ctx.turn_hosts = placement::turn_hosts(&spec, &nodes, &lb(&format!("{}-turn", case.bridge)));
    // The certificate has been issued: the state every Bridge spends its life in.
    ctx.tls_secret = Some(case.tls_secret_name());
    let children = engine::desired(&ctx).unwrap_or_else(|e| panic!("case {}: the builders fail: {e}", case.id));
    let pods = jitsi_pods(case, &ctx, &children);
    let turnserver_conf = spec
        .turn
        .enabled
        .then(|| coturn::rendered(&ctx).unwrap_or_else(|e| panic!("case {}: coturn config: {e}", case.id)));
    Output {
        pods,
        turnserver_conf,
        turn_hosts: ctx.turn_hosts.clone(),
    }
}

fn find<'a>(children: &'a [Child], kind: &str, name: &str) -> Option<&'a Child> {
    children.iter().find(|c| c.resource.kind == kind && c.name() == name)
}

fn pod_spec(child: &Child) -> PodSpec {
    serde_json::from_value(child.object.data["spec"]["template"]["spec"].clone())
        .unwrap_or_else(|e| panic!("{}: pod template: {e}", child.key()))
}

fn jitsi_pods(case: &Case, ctx: &Ctx, children: &[Child]) -> Vec<Pod> {
    let mut out = Vec::new();
    for image in ["web", "prosody", "jicofo"] {
        let name = ctx.child_name(image);
        let child = find(children, "Deployment", &name).unwrap_or_else(|| panic!("no Deployment/{name}"));
        // A ReplicaSet hash and a random suffix, as Kubernetes names a Deployment's pods.
        out.push(pod(
            case,
            ctx,
            children,
            image,
            None,
            format!("{name}-7c9d8f6b5-q2w4x"),
            child,
        ));
    }
    for r in &ctx.sfu {
        let name = ctx.child_name(&format!("sfu-{}", r.index));
        let child = find(children, "StatefulSet", &name).unwrap_or_else(|| panic!("no StatefulSet/{name}"));
        out.push(pod(
            case,
            ctx,
            children,
            "jvb",
            Some(r.index),
            format!("{name}-0"),
            child,
        ));
    }
    out
}

fn pod(
    case: &Case,
    ctx: &Ctx,
    children: &[Child],
    image: &str,
    replica: Option<i32>,
    name: String,
    workload: &Child,
) -> Pod {
    let spec = pod_spec(workload);
    assert_eq!(spec.containers.len(), 1, "{}: one container", workload.key());
    let container = spec.containers[0].clone();
    let env = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), resolve(ctx, case, &name, e)))
        .collect();
    let mut files = BTreeMap::new();
    let mut empty_dirs = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap_or_else(|| panic!("{}: no volume {}", workload.key(), m.name));
        if volume.empty_dir.is_some() {
            empty_dirs.push(m.mount_path.clone());
        } else if let Some(cm) = &volume.config_map {
            let data = find(children, "ConfigMap", &cm.name)
                .map(|c| c.object.data["data"].clone())
                .unwrap_or_else(|| panic!("{}: no ConfigMap/{}", workload.key(), cm.name));
            let keys: Vec<(String, String)> = match &cm.items {
                Some(items) => items.iter().map(|i| (i.key.clone(), i.path.clone())).collect(),
                None => data
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| (k.clone(), k.clone()))
                    .collect(),
            };
            for (key, path) in keys {
                let content = data[&key].as_str().unwrap_or_default().to_string();
                files.insert(format!("{}/{path}", m.mount_path.trim_end_matches('/')), content);
            }
        } else {
            panic!(
                "{}: volume {} is neither an emptyDir nor a ConfigMap",
                workload.key(),
                m.name
            );
        }
    }
    Pod {
        image: image.into(),
        replica,
        name,
        env,
        files,
        empty_dirs,
        container,
    }
}

/// The value Kubernetes gives an env var: literal, from the generated Secret, or from the pod.
fn resolve(ctx: &Ctx, case: &Case, pod: &str, e: &EnvVar) -> String {
    if let Some(v) = &e.value {
        return v.clone();
    }
    let from = e.value_from.as_ref().unwrap_or_else(|| panic!("{}: no value", e.name));
    if let Some(s) = &from.secret_key_ref {
        assert_eq!(
            s.name, ctx.secret_name,
            "{}: reads a Secret the operator does not generate",
            e.name
        );
        return secret_value(&s.key);
    }
    if let Some(f) = &from.field_ref {
        return match f.field_path.as_str() {
            "metadata.name" => pod.to_string(),
            "metadata.namespace" => case.namespace.clone(),
            "status.podIP" => POD_IP.to_string(),
            other => panic!("{}: downward-API field {other} is not simulated", e.name),
        };
    }
    panic!("{}: value source {from:?} is not simulated", e.name)
}
