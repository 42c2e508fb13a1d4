//! The Kubernetes object helpers every builder shares: env vars, probes, volumes, pod specs,
//! Deployments and Services in the one shape the operator writes them. A leaf module: it builds
//! on [`Ctx`] and nothing that builds children, so engines and shared builders can all use it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecretKeySelector, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::context::Ctx;
use crate::api::Exposure;
use crate::labels::Component;

/// Pod annotation carrying [`content_hash`] of a pod's mounted configuration, so a change to a
/// ConfigMap rolls the pods that read it only at start.
pub const CONFIG_HASH_ANNOTATION: &str = "conclave.dev/config-hash";
/// Pod annotation carrying the generated Secret's rotation, so rotated values restart the pods
/// that read them from their environment.
pub const SECRETS_REVISION_ANNOTATION: &str = "conclave.dev/secrets-revision";

/// Maps a message to the builders' error type, for the few inputs admission should have
/// refused but an old stored object may still carry.
pub(crate) fn invalid(msg: impl std::fmt::Display) -> serde_json::Error {
    <serde_json::Error as serde::ser::Error>::custom(msg)
}

pub(crate) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// An env var read from the operator's generated Secret: values never appear in any object.
pub(crate) fn secret_env(ctx: &Ctx, name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: ctx.secret_name.clone(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An env var from the pod's own metadata (downward API).
pub(crate) fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Requests only: the JVMs size their heaps from their own settings, and a memory limit below
/// those would turn load into OOM kills in the middle of conferences.
pub(crate) fn requests(cpu: &str, memory: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        ..ResourceRequirements::default()
    }
}

/// Requests and limits for small helper containers whose usage is known and tiny.
pub(crate) fn bounded(cpu: &str, memory: &str) -> ResourceRequirements {
    let r = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.into())),
        ("memory".to_string(), Quantity(memory.into())),
    ]);
    ResourceRequirements {
        requests: Some(r),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity(memory.into()))])),
        ..ResourceRequirements::default()
    }
}

pub(crate) fn empty_dir(name: &str, memory: bool, size: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".to_string()),
            size_limit: Some(Quantity(size.into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

pub(crate) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

pub(crate) fn http_probe(path: &str, port: i32, initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

pub(crate) fn tcp_probe(port: i32, initial_delay: i32, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            ..TCPSocketAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// A pod spec with what every Bridge pod shares: no API token (no component talks to the API
/// server), no Service env vars (they leak every Service in the namespace into the environment
/// and can clash with the images' own variables, e.g. `JVB_PORT`).
pub(crate) fn pod_spec(containers: Vec<Container>, volumes: Vec<Volume>, security: PodSecurityContext) -> PodSpec {
    PodSpec {
        containers,
        volumes: (!volumes.is_empty()).then_some(volumes),
        security_context: Some(security),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

/// A pod template labelled with the component's labels, plus extra pod labels and annotations.
pub(crate) fn template(
    ctx: &Ctx,
    component: Component,
    extra_labels: &[(&str, String)],
    annotations: BTreeMap<String, String>,
    spec: PodSpec,
) -> PodTemplateSpec {
    let mut labels = ctx.labels(component);
    labels.extend(extra_labels.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let mut annotations = annotations;
    if let Some(rev) = &ctx.secrets_revision {
        annotations.insert(SECRETS_REVISION_ANNOTATION.to_string(), rev.clone());
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(spec),
    }
}

/// A Deployment selecting its component. `recreate` for the singletons (prosody, jicofo): two of
/// them at once would split the conference state.
pub(crate) fn deployment(
    ctx: &Ctx,
    suffix: &str,
    component: Component,
    replicas: i32,
    recreate: bool,
    template: PodTemplateSpec,
) -> Deployment {
    Deployment {
        metadata: ctx.meta(suffix, component),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(ctx.selector(component)),
                ..LabelSelector::default()
            },
            strategy: recreate.then(|| DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            revision_history_limit: Some(3),
            template,
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

pub(crate) fn container_port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some(protocol.into()),
        ..ContainerPort::default()
    }
}

/// A Service that exposes `ports` outside the cluster as `exposure` says; `None` for HostPort,
/// where the pod's own host port (or host network) is the exposure. Local traffic policy keeps
/// the client's source address (ICE and TURN both see it) and skips a second hop.
pub(crate) fn external_service(
    metadata: ObjectMeta,
    exposure: Exposure,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
) -> Option<Service> {
    let type_ = match exposure {
        Exposure::HostPort => return None,
        Exposure::NodePort => "NodePort",
        Exposure::LoadBalancer => "LoadBalancer",
    };
    Some(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector),
            ports: Some(ports),
            external_traffic_policy: Some("Local".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub(crate) fn service_port(name: &str, port: i32, target: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some(protocol.into()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use crate::api::BridgeSpec;
    use crate::bridge::context::{Ctx, SfuReplica};

    /// A Bridge with everything on: JWT, TLS from a cert-manager issuer, an Ingress, two SFU
    /// replicas on NodePort, TURN on a LoadBalancer.
    pub fn sample_ctx() -> Ctx {
        let spec: BridgeSpec = serde_json::from_value(serde_json::json!({
            "domain": "meet.example.com",
            "tls": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}},
            "ingress": {"className": "nginx", "annotations": {"example.com/a": "b"}},
            "sfu": {"replicas": 2, "drainTimeout": "1h30m"},
            "turn": {"host": "turn.example.com", "credentialTTL": "2h", "allowedPeerCIDRs": ["10.1.2.3/32"]}
        }))
        .expect("valid spec");
        Ctx {
            name: "meet".into(),
            namespace: "conf".into(),
            owner: OwnerReference {
                api_version: "conclave.dev/v1alpha1".into(),
                kind: "Bridge".into(),
                name: "meet".into(),
                uid: "0000-1111".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            images: spec.images.resolve(),
            cluster: Default::default(),
            secret_name: "meet-secrets".into(),
            tls_secret: Some("meet-tls".into()),
            secrets_revision: None,
            room_limits: Default::default(),
            open_rooms: Default::default(),
            sfu: vec![
                SfuReplica {
                    index: 0,
                    port: 31000,
                    node: Some("node-a".into()),
                    advertise: vec!["203.0.113.10".into()],
                },
                SfuReplica {
                    index: 1,
                    port: 31001,
                    node: None,
                    advertise: vec![],
                },
            ],
            turn_hosts: vec!["turn.example.com".into()],
            spec,
        }
    }

    /// The env var `name` of a container, as plain value.
    pub fn env_value(c: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
        c.env
            .as_ref()?
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    /// The Secret key an env var of a container reads.
    pub fn env_secret_key(c: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
        let e = c.env.as_ref()?.iter().find(|e| e.name == name)?;
        e.value_from.as_ref()?.secret_key_ref.as_ref().map(|s| s.key.clone())
    }
}
