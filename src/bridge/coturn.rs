//! TURN (coturn), only when `spec.turn.enabled`: the rendered `turnserver.conf` (without the
//! secret) in a ConfigMap, the servers, and their Service.
//!
//! The shared secret reaches coturn only at container start: a shell joins the ConfigMap file
//! and a `static-auth-secret=` line (written with the shell's builtin printf from an env var
//! read from the Secret) into a memory-backed emptyDir, then `exec`s turnserver on it. The
//! secret is thus in neither the ConfigMap nor any process command line, and is unset before
//! turnserver starts.
//!
//! coturn never re-reads its certificate on its own, only on SIGUSR2. A second container in the
//! same (shared) process namespace watches the mounted TLS Secret and signals turnserver when
//! it changes, so cert-manager renewals take effect without restarts or anyone acting.
//!
//! With `HostPort` exposure TURN runs as a DaemonSet on the host network: its relay ports are a
//! range of thousands, which cannot be mapped one by one as hostPorts. That is outside the
//! restricted (and baseline) Pod Security profile; the containers themselves stay restricted.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, PodSpec, SecretVolumeSource, Service, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::context::{Ctx, restricted_container, restricted_pod};
use super::objects::{
    CONFIG_HASH_ANNOTATION, bounded, container_port, deployment, empty_dir, external_service, invalid, mount, pod_spec,
    requests, secret_env, service_port, tcp_probe, template,
};
use super::secrets;
use crate::api::Exposure;
use crate::child::Child;
use crate::labels::{Component, content_hash};
use crate::turn::{self, ServerConfig};

/// Key of the rendered config in the ConfigMap.
pub const CONFIG_KEY: &str = "turnserver.conf";
/// Where the ConfigMap is mounted (read-only; shadows the image's own config).
pub const CONFIG_DIR: &str = "/etc/coturn";
/// Where the config with the secret is assembled (memory-backed emptyDir).
pub const RUN_DIR: &str = "/etc/coturn-run";
/// uid of `nobody`, which the coturn image runs as.
pub const UID: i64 = 65534;
/// How often the reloader compares the certificate, in seconds.
pub const RELOAD_CHECK_SECONDS: u32 = 60;

/// ConfigMap, servers and Service; nothing when TURN is off.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    if !ctx.spec.turn.enabled {
        return Ok(Vec::new());
    }
    let conf = rendered(ctx)?;
    let mut out = vec![Child::new(&config_map(ctx, &conf))?];
    if ctx.spec.turn.exposure == Exposure::HostPort {
        out.push(Child::new(&daemon_set(ctx, &conf))?);
    } else {
        out.push(Child::new(&deploy(ctx, &conf))?);
    }
    if let Some(svc) = service(ctx) {
        out.push(Child::new(&svc)?);
    }
    Ok(out)
}

/// `turnserver.conf` as [`turn::render`] writes it for this Bridge: the spec's peer rules, and
/// the Bridge's own SFU endpoints allowed although their range is denied.
pub fn rendered(ctx: &Ctx) -> Result<String, serde_json::Error> {
    let mut cfg = ServerConfig::for_bridge(&ctx.spec, ctx.tls_secret.is_some())
        .map_err(|e| invalid(format!("spec.turn: invalid entry {e:?}")))?;
    for (ip, _) in own_sfu_endpoints(ctx)? {
        let host = IpNet::from(ip);
        if !cfg.allowed.contains(&host) {
            cfg.allowed.push(host);
        }
    }
    Ok(turn::render(&cfg))
}

/// The media endpoints (address, UDP port) the Bridge's own SFU replicas advertise that sit in
/// a denied peer range and no allowed one: an internal load balancer, say, in 10.0.0.0/8. A
/// client relayed by TURN sends its media to exactly these, so TURN must reach them; they are
/// allowed one address at a time, nothing wider. (coturn's peer rules have no ports; the
/// NetworkPolicy adds the port.)
pub fn own_sfu_endpoints(ctx: &Ctx) -> Result<Vec<(IpAddr, i32)>, serde_json::Error> {
    let t = &ctx.spec.turn;
    let denied = turn::parse_cidrs(&t.denied_peer_cidrs)
        .map_err(|e| invalid(format!("spec.turn.deniedPeerCIDRs: {e:?} is not a CIDR")))?;
    let allowed = turn::parse_cidrs(&t.allowed_peer_cidrs)
        .map_err(|e| invalid(format!("spec.turn.allowedPeerCIDRs: {e:?} is not a CIDR")))?;
    let mut out = Vec::new();
    for r in &ctx.sfu {
        for a in &r.advertise {
            let (ip, port) = match a.split_once('#') {
                Some((ip, port)) => (ip, port.parse().unwrap_or(r.port)),
                None => (a.as_str(), r.port),
            };
            let Ok(ip) = ip.parse::<IpAddr>() else { continue };
            let denied_here = denied.iter().any(|n| n.contains(&ip));
            if denied_here && !allowed.iter().any(|n| n.contains(&ip)) && !out.contains(&(ip, port)) {
                out.push((ip, port));
            }
        }
    }
    Ok(out)
}

fn config_map(ctx: &Ctx, conf: &str) -> ConfigMap {
    ConfigMap {
        metadata: ctx.meta("turn", Component::Turn),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), conf.to_string())])),
        ..ConfigMap::default()
    }
}

/// The start script of the coturn container. The `static-auth-secret` line has exactly the
/// form of [`turn::secret_line`], with the value substituted by printf.
pub fn start_script() -> String {
    let format = turn::secret_line("%s").replace('\n', "\\n");
    format!(
        "set -eu\numask 077\n{{ cat {CONFIG_DIR}/{CONFIG_KEY}; printf '{format}' \"$TURN_SECRET\"; }} > {RUN_DIR}/{CONFIG_KEY}\n\
         unset TURN_SECRET\nexec turnserver -c {RUN_DIR}/{CONFIG_KEY}\n"
    )
}

/// The reloader's script: checksum the certificate and key every minute; on a change, send
/// SIGUSR2 to every `turnserver` process (found through the shared process namespace; same
/// uid, so no capability is needed).
pub fn reload_script() -> String {
    let dir = turn::TLS_DIR;
    format!(
        "sum() {{ cat {dir}/tls.crt {dir}/tls.key 2>/dev/null | cksum; }}\n\
         last=$(sum)\n\
         while true; do\n\
         \x20 sleep {RELOAD_CHECK_SECONDS}\n\
         \x20 now=$(sum)\n\
         \x20 if [ \"$now\" != \"$last\" ]; then\n\
         \x20   for p in /proc/[0-9]*; do\n\
         \x20     if [ \"$(cat \"$p/comm\" 2>/dev/null)\" = turnserver ]; then\n\
         \x20       kill -USR2 \"${{p#/proc/}}\" && echo \"certificate changed: sent SIGUSR2 to turnserver ${{p#/proc/}}\"\n\
         \x20     fi\n\
         \x20   done\n\
         \x20   last=$now\n\
         \x20 fi\n\
         done\n"
    )
}

fn pod(ctx: &Ctx) -> PodSpec {
    let t = &ctx.spec.turn;
    let tls = ctx.tls_secret.as_ref();
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ctx.child_name("turn"),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        empty_dir("run", true, "1Mi"),
        empty_dir("tmp", false, "16Mi"),
        // Default sqlite user db location; unused with use-auth-secret but opened at start.
        empty_dir("data", false, "16Mi"),
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("run", RUN_DIR, false),
        mount("tmp", "/tmp", false),
        mount("tmp", "/var/tmp", false),
        mount("data", "/var/lib/coturn", false),
    ];
    if let Some(secret) = tls {
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        // Mounted as a directory (no subPath), so the kubelet swaps in renewed certificates.
        mounts.push(mount("tls", turn::TLS_DIR, true));
    }
    let mut ports = vec![
        container_port("turn-udp", t.port, "UDP"),
        container_port("turn-tcp", t.port, "TCP"),
    ];
    if tls.is_some() {
        ports.push(container_port("turns", t.tls_port, "TCP"));
    }
    ports.push(container_port("metrics", i32::from(turn::PROMETHEUS_PORT), "TCP"));
    let server = Container {
        name: "coturn".into(),
        image: Some(ctx.images.coturn.clone()),
        command: Some(vec!["sh".into(), "-c".into(), start_script()]),
        env: Some(vec![secret_env(ctx, "TURN_SECRET", secrets::TURN_SECRET)]),
        ports: Some(ports),
        readiness_probe: Some(tcp_probe(t.port, 2, 10, 3)),
        liveness_probe: Some(tcp_probe(t.port, 10, 20, 3)),
        resources: Some(requests("100m", "64Mi")),
        // NET_BIND_SERVICE is a file capability of turnserver; without it in the bounding set
        // the kernel refuses to exec the binary at all.
        security_context: Some(restricted_container(true)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let mut containers = vec![server];
    if tls.is_some() {
        containers.push(Container {
            name: "cert-reloader".into(),
            image: Some(ctx.images.coturn.clone()),
            command: Some(vec!["sh".into(), "-c".into(), reload_script()]),
            resources: Some(bounded("5m", "16Mi")),
            security_context: Some(restricted_container(false)),
            volume_mounts: Some(vec![mount("tls", turn::TLS_DIR, true)]),
            ..Container::default()
        });
    }
    let mut spec = pod_spec(containers, volumes, restricted_pod(UID));
    spec.share_process_namespace = tls.is_some().then_some(true);
    spec
}

fn annotations(conf: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), content_hash(conf))])
}

fn deploy(ctx: &Ctx, conf: &str) -> Deployment {
    let tmpl = template(ctx, Component::Turn, &[], annotations(conf), pod(ctx));
    deployment(ctx, "turn", Component::Turn, ctx.spec.turn.replicas, false, tmpl)
}

fn daemon_set(ctx: &Ctx, conf: &str) -> DaemonSet {
    let mut spec = pod(ctx);
    spec.host_network = Some(true);
    spec.dns_policy = Some("ClusterFirstWithHostNet".into());
    DaemonSet {
        metadata: ctx.meta("turn", Component::Turn),
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(ctx.selector(Component::Turn)),
                ..LabelSelector::default()
            },
            template: template(ctx, Component::Turn, &[], annotations(conf), spec),
            revision_history_limit: Some(3),
            ..DaemonSetSpec::default()
        },
        ..DaemonSet::default()
    }
}

/// `None` with HostPort exposure: the DaemonSet's host network is the exposure.
fn service(ctx: &Ctx) -> Option<Service> {
    let t = &ctx.spec.turn;
    let mut ports = vec![
        service_port("turn-udp", t.port, t.port, "UDP"),
        service_port("turn-tcp", t.port, t.port, "TCP"),
    ];
    if ctx.tls_secret.is_some() {
        ports.push(service_port("turns", t.tls_port, t.tls_port, "TCP"));
    }
    // With NodePort, clients reach TURN on the node at the very port it is announced on.
    if t.exposure == Exposure::NodePort {
        for p in &mut ports {
            p.node_port = Some(p.port);
        }
    }
    // Local traffic policy keeps the client's address, which coturn sees as the allocation's source.
    external_service(
        ctx.meta("turn", Component::Turn),
        t.exposure,
        ctx.selector(Component::Turn),
        ports,
    )
}

/// The one name TURN over TLS is announced at: `spec.turn.host` when it is a DNS name and the
/// Bridge has a certificate (which then covers it, see [`Ctx::certificate_names`]).
pub fn tls_host(ctx: &Ctx) -> Option<&str> {
    ctx.tls_secret.as_ref()?;
    ctx.spec.turn.tls_host()
}

/// The TURN URIs clients get: the same hosts and ports the engine hands out.
pub fn uris(ctx: &Ctx) -> Vec<String> {
    let t = &ctx.spec.turn;
    if !t.enabled {
        return Vec::new();
    }
    let mut v = Vec::new();
    for host in &ctx.turn_hosts {
        v.push(format!("turn:{host}:{}?transport=udp", t.port));
        v.push(format!("turn:{host}:{}?transport=tcp", t.port));
    }
    if let Some(host) = tls_host(ctx).filter(|_| !ctx.turn_hosts.is_empty()) {
        v.push(format!("turns:{host}:{}?transport=tcp", t.tls_port));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::objects::fixtures::sample_ctx;

    #[test]
    fn objects_per_exposure() {
        let mut ctx = sample_ctx();
        let keys = |ctx: &Ctx| build(ctx).expect("builds").iter().map(Child::key).collect::<Vec<_>>();
        assert_eq!(
            keys(&ctx),
            ["ConfigMap/meet-turn", "Deployment/meet-turn", "Service/meet-turn"]
        );
        ctx.spec.turn.exposure = Exposure::HostPort;
        assert_eq!(keys(&ctx), ["ConfigMap/meet-turn", "DaemonSet/meet-turn"]);
        let ds = daemon_set(&ctx, "x");
        assert_eq!(ds.spec.template.spec.and_then(|p| p.host_network), Some(true));
        ctx.spec.turn.enabled = false;
        assert!(keys(&ctx).is_empty());
    }

    #[test]
    fn config_and_secret_handling() {
        let ctx = sample_ctx();
        let conf = rendered(&ctx).expect("renders");
        assert!(conf.contains("tls-listening-port=5349") && !conf.contains("static-auth-secret"));
        let cm = config_map(&ctx, &conf);
        assert_eq!(cm.data.expect("data").get(CONFIG_KEY), Some(&conf));
        let script = start_script();
        assert!(
            script.contains("printf 'static-auth-secret=%s\\n' \"$TURN_SECRET\""),
            "{script}"
        );
        assert!(
            script.contains("exec turnserver -c /etc/coturn-run/turnserver.conf"),
            "{script}"
        );
        assert!(script.contains("unset TURN_SECRET"));
        let d = deploy(&ctx, &conf);
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        let tmpl = spec.template;
        let hash = tmpl
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned());
        assert_eq!(hash, Some(content_hash(&conf)));
        let pod = tmpl.spec.expect("pod");
        assert_eq!(pod.security_context.as_ref().and_then(|s| s.run_as_user), Some(65534));
        assert_eq!(pod.share_process_namespace, Some(true));
        let c = &pod.containers[0];
        let caps = c
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.clone());
        assert_eq!(caps, Some(vec!["NET_BIND_SERVICE".to_string()]));
        let e = &c.env.as_ref().expect("env")[0];
        assert_eq!(e.name, "TURN_SECRET");
        assert!(e.value.is_none() && e.value_from.is_some());
        let mounts = c.volume_mounts.as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_path == turn::TLS_DIR && m.sub_path.is_none())
        );
        let run = pod
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find(|v| v.name == "run")
            .expect("run");
        assert_eq!(run.empty_dir.as_ref().and_then(|e| e.medium.as_deref()), Some("Memory"));
        let reloader = &pod.containers[1];
        let script = &reloader.command.as_ref().expect("cmd")[2];
        assert!(script.contains("kill -USR2") && script.contains("sleep 60"), "{script}");
    }

    #[test]
    fn own_sfu_endpoints_in_denied_ranges_are_allowed_exactly() {
        let mut ctx = sample_ctx();
        ctx.sfu[0].advertise = vec!["10.20.0.5".into()];
        ctx.sfu[1].advertise = vec!["203.0.113.11".into()];
        let conf = rendered(&ctx).expect("renders");
        let allowed: Vec<&str> = conf
            .lines()
            .filter_map(|l| l.strip_prefix("allowed-peer-ip="))
            .collect();
        // The spec's own exception, then the internal SFU address; the public one needs none.
        assert_eq!(allowed, ["10.1.2.3", "10.20.0.5"]);
        assert_eq!(
            own_sfu_endpoints(&ctx).expect("endpoints"),
            [("10.20.0.5".parse().expect("ip"), 31000)]
        );
        // Already allowed by the spec: nothing added.
        ctx.sfu[0].advertise = vec!["10.1.2.3".into()];
        assert!(own_sfu_endpoints(&ctx).expect("endpoints").is_empty());
    }

    #[test]
    fn no_tls_no_reloader_no_turns() {
        let mut ctx = sample_ctx();
        ctx.tls_secret = None;
        let conf = rendered(&ctx).expect("renders");
        assert!(conf.contains("no-tls"));
        let pod = deploy(&ctx, &conf).spec.template.spec.expect("pod");
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.share_process_namespace, None);
        let ports = service(&ctx)
            .expect("a Service outside HostPort")
            .spec
            .and_then(|s| s.ports)
            .expect("ports");
        assert!(!ports.iter().any(|p| p.name.as_deref() == Some("turns")));
    }

    #[test]
    fn node_port_turn_listens_where_it_is_announced() {
        let mut ctx = sample_ctx();
        ctx.spec.turn.exposure = Exposure::NodePort;
        ctx.spec.turn.port = 30478;
        ctx.spec.turn.tls_port = 30479;
        let ports = service(&ctx).and_then(|s| s.spec).and_then(|s| s.ports).expect("ports");
        let pairs: Vec<(i32, Option<i32>)> = ports.iter().map(|p| (p.port, p.node_port)).collect();
        assert_eq!(
            pairs,
            [(30478, Some(30478)), (30478, Some(30478)), (30479, Some(30479))]
        );
    }

    #[test]
    fn service_ports() {
        let ctx = sample_ctx();
        let spec = service(&ctx).expect("a Service outside HostPort").spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        let ports: Vec<(String, i32, String)> = spec
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.port, p.protocol.unwrap_or_default()))
            .collect();
        assert_eq!(
            ports,
            [
                ("turn-udp".into(), 3478, "UDP".into()),
                ("turn-tcp".into(), 3478, "TCP".into()),
                ("turns".into(), 5349, "TCP".into())
            ]
        );
    }
}
