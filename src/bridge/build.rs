//! Everything a Bridge wants to exist, as one ordered list, plus the small helpers the
//! component builders share. All of it is pure: the same [`Ctx`] always gives the same objects,
//! so `conclave render` and the reconciler agree and a re-apply never shows drift.

use std::collections::BTreeMap;
use std::time::Duration;

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
use super::{certificate, coturn, jicofo, network_policy, prosody, rooms, sfu, web};
use crate::api::Exposure;
use crate::api::bridge::AuthMode;
use crate::child::Child;
use crate::labels::Component;

/// Pod annotation carrying [`content_hash`] of a pod's mounted configuration, so a change to a
/// ConfigMap rolls the pods that read it only at start.
pub const CONFIG_HASH_ANNOTATION: &str = "conclave.dev/config-hash";
/// Pod annotation carrying the generated Secret's rotation, so rotated values restart the pods
/// that read them from their environment.
pub const SECRETS_REVISION_ANNOTATION: &str = "conclave.dev/secrets-revision";

/// Every child of a Bridge, in a stable order: certificate first (everything else mounts its
/// Secret), then signalling, web, media, TURN, and the network policies last.
pub fn desired(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let mut out = Vec::new();
    out.extend(certificate::build(ctx)?);
    out.extend(rooms::build(ctx)?);
    out.extend(prosody::build(ctx)?);
    out.extend(jicofo::build(ctx)?);
    out.extend(web::build(ctx)?);
    out.extend(sfu::build(ctx)?);
    out.extend(coturn::build(ctx)?);
    out.extend(network_policy::build(ctx)?);
    Ok(out)
}

/// Parses a Go-style duration (`1h`, `90m`, `1h30m`, `1.5h`, `250ms`, `0`): the format the CRD
/// validates with CEL `duration()`. Returns `None` for anything else, including overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int_part, tail) = rest.split_at(int_len);
        let (frac_part, tail) = match tail.strip_prefix('.') {
            Some(t) => {
                let n = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                t.split_at(n)
            }
            None => ("", tail),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let (unit, tail): (u128, &str) = if let Some(t) = tail.strip_prefix("ms") {
            (1_000_000, t)
        } else if let Some(t) = tail.strip_prefix('h') {
            (3_600_000_000_000, t)
        } else if let Some(t) = tail.strip_prefix('m') {
            (60_000_000_000, t)
        } else if let Some(t) = tail.strip_prefix('s') {
            (1_000_000_000, t)
        } else {
            return None;
        };
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
        let mut nanos = int.checked_mul(unit)?;
        // Fraction digits beyond nanosecond precision are dropped, as Go does.
        let mut scale = unit;
        for d in frac_part.chars().take(18) {
            scale /= 10;
            nanos = nanos.checked_add(u128::from(d.to_digit(10)?) * scale)?;
        }
        total = total.checked_add(nanos)?;
        rest = tail;
    }
    let nanos = u64::try_from(total).ok()?;
    Some(Duration::from_nanos(nanos))
}

/// A short, stable hash of some content (64-bit FNV-1a, 16 hex digits). Not cryptographic:
/// it only has to change when the content does, identically on every operator replica.
pub fn content_hash(content: &str) -> String {
    format!("{:016x}", crate::labels::stable_hash(content.as_bytes()))
}

/// Maps a message to the builders' error type, for the few inputs admission should have
/// refused but an old stored object may still carry.
pub(crate) fn invalid(msg: impl std::fmt::Display) -> serde_json::Error {
    <serde_json::Error as serde::ser::Error>::custom(msg)
}

// ---------------------------------------------------------------------------------------------
// XMPP naming shared by every Jitsi component. All four images must agree on these.

pub(crate) fn auth_domain(ctx: &Ctx) -> String {
    format!("auth.{}", ctx.spec.domain)
}
pub(crate) fn muc_domain(ctx: &Ctx) -> String {
    format!("muc.{}", ctx.spec.domain)
}
pub(crate) fn internal_muc_domain(ctx: &Ctx) -> String {
    format!("internal-muc.{}", ctx.spec.domain)
}
pub(crate) fn guest_domain(ctx: &Ctx) -> String {
    format!("guest.{}", ctx.spec.domain)
}
/// The brewery MUC the videobridges join and jicofo watches; must match on both sides.
pub const JVB_BREWERY_MUC: &str = "jvbbrewery";
/// XMPP account of the videobridges (`jvb@auth.<domain>`).
pub const JVB_AUTH_USER: &str = "jvb";

/// Environment every Jitsi container gets: the XMPP domains, where prosody is, and the s6 switch
/// that lets s6-overlay v3 (uid 1000) accept the root-owned, world-writable emptyDir at `/run`.
pub(crate) fn jitsi_env(ctx: &Ctx) -> Vec<EnvVar> {
    vec![
        env("S6_YES_I_WANT_A_WORLD_WRITABLE_RUN_BECAUSE_KUBERNETES", "1"),
        env("TZ", "UTC"),
        env("XMPP_DOMAIN", &ctx.spec.domain),
        env("XMPP_AUTH_DOMAIN", auth_domain(ctx)),
        env("XMPP_MUC_DOMAIN", muc_domain(ctx)),
        env("XMPP_INTERNAL_MUC_DOMAIN", internal_muc_domain(ctx)),
        env("XMPP_GUEST_DOMAIN", guest_domain(ctx)),
        env("XMPP_SERVER", ctx.service_host("prosody")),
        env("XMPP_PORT", prosody::XMPP_PORT.to_string()),
    ]
}

/// Authentication switches read by web, prosody and jicofo.
///
/// `ENABLE_GUESTS=0` with JWT: a guest link is a token for its room too, so no anonymous
/// VirtualHost is needed, and without one a client that holds no token cannot connect at all
/// (with it, anonymous users could join any room a token holder had created).
pub(crate) fn auth_env(ctx: &Ctx) -> Vec<EnvVar> {
    match ctx.spec.auth.mode {
        AuthMode::Jwt => vec![
            env("ENABLE_AUTH", "1"),
            env("AUTH_TYPE", "jwt"),
            env("ENABLE_GUESTS", "0"),
        ],
        AuthMode::Open => vec![env("ENABLE_AUTH", "0"), env("ENABLE_GUESTS", "0")],
    }
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

/// The writable scratch space a stable-11146 Jitsi image needs under a read-only root: `/run`
/// (s6 state and the rendered config; needs exec, so it is a plain emptyDir in memory), `/tmp`
/// (JVM tmpdir), and an empty `/config` (input-only since 11146; an emptyDir guarantees no stale
/// input). `extra` adds image-specific directories, e.g. prosody's `/var/lib/prosody`.
pub(crate) fn jitsi_scratch(extra: &[(&str, &str)], with_config: bool) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut dirs: Vec<(&str, &str, bool, &str)> = vec![("run", "/run", true, "64Mi"), ("tmp", "/tmp", false, "256Mi")];
    if with_config {
        dirs.push(("config", "/config", false, "16Mi"));
    }
    dirs.extend(extra.iter().map(|(n, p)| (*n, *p, false, "256Mi")));
    let volumes = dirs.iter().map(|(n, _, mem, size)| empty_dir(n, *mem, size)).collect();
    let mounts = dirs.iter().map(|(n, p, _, _)| mount(n, p, false)).collect();
    (volumes, mounts)
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
            "turn": {"credentialTTL": "2h", "allowedPeerCIDRs": ["10.1.2.3/32"]}
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
            secret_name: "meet-secrets".into(),
            tls_secret: Some("meet-tls".into()),
            secrets_revision: None,
            room_limits: Default::default(),
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
            turn_hosts: vec!["198.51.100.7".into(), "turn.example.com".into()],
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::fixtures::sample_ctx;
    use super::*;
    use crate::labels;

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(s);
        assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(d("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(d("2m3.5s"), Some(Duration::from_millis(123_500)));
        assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(d("1m250ms"), Some(Duration::from_millis(60_250)));
        assert_eq!(d("0s"), Some(Duration::ZERO));
        assert_eq!(d("0"), Some(Duration::ZERO));
        for bad in [
            "",
            "h",
            "1",
            "1d",
            "1.h5",
            "-1h",
            "1h ",
            " 1h",
            "1.5",
            "ms",
            "99999999999999999999h",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        assert_eq!(content_hash(""), "cbf29ce484222325");
        assert_eq!(content_hash("a"), "af63dc4c8601ec8c");
        assert_ne!(content_hash("x=1"), content_hash("x=2"));
    }

    #[test]
    fn children_are_unique_owned_and_labelled() {
        let ctx = sample_ctx();
        let children = desired(&ctx).expect("builds");
        let mut seen = BTreeSet::new();
        for c in &children {
            assert!(seen.insert(c.key()), "duplicate {}", c.key());
            let m = &c.object.metadata;
            assert_eq!(m.namespace.as_deref(), Some("conf"), "{}", c.key());
            assert_eq!(
                m.owner_references.as_deref(),
                Some(&[ctx.owner.clone()][..]),
                "{}",
                c.key()
            );
            let l = m.labels.clone().unwrap_or_default();
            assert_eq!(
                l.get(labels::MANAGED_BY_KEY).map(String::as_str),
                Some(labels::MANAGED_BY),
                "{}",
                c.key()
            );
            let component = l.get(labels::COMPONENT).cloned().unwrap_or_default();
            let allowed: BTreeSet<String> = [
                labels::NAME,
                labels::INSTANCE,
                labels::COMPONENT,
                labels::PART_OF,
                labels::MANAGED_BY_KEY,
                labels::OWNER_KIND,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            assert_eq!(l.keys().cloned().collect::<BTreeSet<_>>(), allowed, "{}", c.key());
            assert_eq!(l.get(labels::INSTANCE).map(String::as_str), Some("meet"));
            assert_eq!(l.get(labels::OWNER_KIND).map(String::as_str), Some("bridge"));
            assert!(!component.is_empty());
            assert!(c.name().starts_with("meet-"), "{}", c.key());
        }
        let kinds: BTreeSet<&str> = children.iter().map(|c| c.resource.kind.as_str()).collect();
        for k in [
            "Certificate",
            "ConfigMap",
            "Deployment",
            "Service",
            "StatefulSet",
            "Ingress",
            "NetworkPolicy",
        ] {
            assert!(kinds.contains(k), "missing {k}: {kinds:?}");
        }
    }

    #[test]
    fn optional_parts_follow_the_spec() {
        let mut ctx = sample_ctx();
        ctx.spec.turn.enabled = false;
        ctx.spec.tls = None;
        ctx.spec.ingress = None;
        let children = desired(&ctx).expect("builds");
        let keys: Vec<String> = children.iter().map(Child::key).collect();
        assert!(!keys.iter().any(|k| k.contains("turn")), "{keys:?}");
        assert!(!keys.iter().any(|k| k.starts_with("Certificate/")), "{keys:?}");
        assert!(!keys.iter().any(|k| k.starts_with("Ingress/")), "{keys:?}");
    }

    /// Walks every JSON object; secret-carrying env vars must only ever use `valueFrom`.
    fn check_no_literal(v: &serde_json::Value, secret_names: &[&str]) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(n)) = m.get("name")
                    && secret_names.contains(&n.as_str())
                    && m.contains_key("value")
                {
                    panic!("{n} has a literal value: {v}");
                }
                m.values().for_each(|x| check_no_literal(x, secret_names));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| check_no_literal(x, secret_names)),
            serde_json::Value::String(s) => {
                // The TURN secret line only exists at container start, as a printf format.
                if let Some(i) = s.find("static-auth-secret=") {
                    assert!(
                        s[i..].starts_with("static-auth-secret=%s"),
                        "secret line in an object: {s}"
                    );
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_secret_value_is_ever_literal() {
        let ctx = sample_ctx();
        let names = [
            "JWT_APP_SECRET",
            "TURN_CREDENTIALS",
            "JICOFO_AUTH_PASSWORD",
            "JVB_AUTH_PASSWORD",
            "TURN_SECRET",
        ];
        for c in desired(&ctx).expect("builds") {
            check_no_literal(&serde_json::to_value(&c.object).expect("json"), &names);
        }
    }

    #[test]
    fn is_deterministic() {
        let ctx = sample_ctx();
        assert_eq!(desired(&ctx).expect("a"), desired(&ctx).expect("b"));
    }
}
