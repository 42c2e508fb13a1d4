//! The web front end: nginx serving jitsi-meet and proxying BOSH and the XMPP websocket to
//! prosody. Stateless, so two replicas. TLS ends at the Ingress; the pods speak plain HTTP on
//! 8000 only.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, Container, EnvVar, Service, ServiceSpec, Volume};
use k8s_openapi::api::networking::v1::Ingress;

use super::{Image, jitsi_env, jitsi_scratch, prosody};
use crate::api::E2eePolicy;
use crate::bridge::context::{Ctx, restricted_container, restricted_pod};
use crate::bridge::ingress::Route;
use crate::bridge::objects::{
    CONFIG_HASH_ANNOTATION, container_port, deployment, env, http_probe, mount, pod_spec, requests, service_port,
    template,
};
use crate::child::Child;
use crate::labels::Component;
use crate::labels::content_hash;

/// nginx's HTTP port in the rootless images (80 up to stable-11031).
pub const HTTP_PORT: i32 = 8000;
/// Port of the web Service.
pub const SERVICE_PORT: i32 = 80;
/// Key of the client config snippet; the image appends `/config/custom-config.js` to the
/// generated `config.js`.
pub const CUSTOM_CONFIG: &str = "custom-config.js";
/// Web pods per Bridge.
pub const REPLICAS: i32 = 2;

/// ConfigMap, Deployment, Service and (when asked for) Ingress of the web front end.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let mut out = vec![
        Child::new(&config_map(ctx))?,
        Child::new(&deploy(ctx))?,
        Child::new(&service(ctx))?,
    ];
    if let Some(i) = ingress(ctx) {
        out.push(Child::new(&i)?);
    }
    Ok(out)
}

/// Client settings appended to the generated `config.js`.
///
/// E2EE is a client feature that jitsi-meet offers whenever the browser supports it, unless
/// `config.e2ee.disabled` is set; this never sets it, under either policy. It turns on
/// encoded-transform support, the standard API Firefox and Safari implement E2EE with (Chromium
/// also has the older insertable streams). What it turns off are the features that need a
/// server-side participant to see media or speech in clear (recording, live streaming,
/// transcription), which cannot work on encrypted media, local recording (the browser records
/// the decrypted conference to a file), and requests to third parties (avatars, external
/// scripts), which would leak who meets. Objects the image's `config.js` fills are merged, not
/// replaced, so its other keys (e.g. `transcription.disableClosedCaptions`) survive.
/// P2P (two participants, media not through the SFU) stays on as in upstream: it is
/// DTLS-SRTP between the two browsers, and jitsi-meet applies E2EE to it as well.
pub fn custom_config(ctx: &Ctx) -> String {
    let policy = match ctx.spec.e2ee {
        E2eePolicy::Required => "Required",
        E2eePolicy::Preferred => "Preferred",
    };
    [
        "// Rendered by Conclave; edits are overwritten.".to_string(),
        format!("// spec.e2ee: {policy}. Nothing below may disable end-to-end encryption."),
        "config.e2ee = Object.assign({}, config.e2ee, { externallyManagedKey: false });".into(),
        "config.enableEncodedTransformSupport = true;".into(),
        "config.recordingService = { enabled: false, sharingEnabled: false };".into(),
        "config.fileRecordingsEnabled = false;".into(),
        "config.liveStreaming = { enabled: false };".into(),
        "config.liveStreamingEnabled = false;".into(),
        "config.transcription = Object.assign({}, config.transcription, { enabled: false });".into(),
        "config.localRecording = Object.assign({}, config.localRecording, { disable: true });".into(),
        "config.disableThirdPartyRequests = true;".into(),
        String::new(),
    ]
    .join("\n")
}

fn config_map(ctx: &Ctx) -> ConfigMap {
    ConfigMap {
        metadata: ctx.meta("web-config", Component::Web),
        data: Some(BTreeMap::from([(CUSTOM_CONFIG.to_string(), custom_config(ctx))])),
        ..ConfigMap::default()
    }
}

/// The web pods' environment.
pub fn env_vars(ctx: &Ctx) -> Vec<EnvVar> {
    let mut e = jitsi_env(ctx, Image::Web);
    e.extend([
        // Must be https://: the image derives the BOSH and websocket URLs from it.
        env("PUBLIC_URL", format!("https://{}", ctx.spec.domain)),
        env(
            "XMPP_BOSH_URL_BASE",
            format!("http://{}:{}", ctx.service_host("prosody"), prosody::HTTP_PORT),
        ),
        env("ENABLE_XMPP_WEBSOCKET", "1"),
        // TLS ends at the Ingress; nginx then listens on 8000 only and needs no /storage.
        env("DISABLE_HTTPS", "1"),
        env("ENABLE_HTTP_REDIRECT", "0"),
        env("ENABLE_RECORDING", "0"),
    ]);
    e
}

fn deploy(ctx: &Ctx) -> k8s_openapi::api::apps::v1::Deployment {
    // /config holds only custom-config.js from the ConfigMap (the image reads /config and never
    // writes it since 11146). The whole directory is mounted, not a subPath, so the file is
    // the ConfigMap's current one; it is read at start, hence the hash annotation.
    let (mut volumes, mut mounts) = jitsi_scratch(&[], false);
    volumes.push(Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: ctx.child_name("web-config"),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    mounts.push(mount("config", "/config", true));
    let container = Container {
        name: "web".into(),
        image: Some(ctx.images.web.clone()),
        env: Some(env_vars(ctx)),
        ports: Some(vec![container_port("http", HTTP_PORT, "TCP")]),
        readiness_probe: Some(http_probe("/", HTTP_PORT, 5, 10, 3)),
        liveness_probe: Some(http_probe("/", HTTP_PORT, 30, 20, 3)),
        resources: Some(requests("50m", "64Mi")),
        security_context: Some(restricted_container(false)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), content_hash(&custom_config(ctx)))]);
    let pod = pod_spec(vec![container], volumes, restricted_pod(1000));
    deployment(
        ctx,
        "web",
        Component::Web,
        REPLICAS,
        false,
        template(ctx, Component::Web, &[], annotations, pod),
    )
}

fn service(ctx: &Ctx) -> Service {
    Service {
        metadata: ctx.meta("web", Component::Web),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(ctx.selector(Component::Web)),
            ports: Some(vec![service_port("http", SERVICE_PORT, HTTP_PORT, "TCP")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `https://<domain>/` to the web Service.
fn ingress(ctx: &Ctx) -> Option<Ingress> {
    let web = Route {
        path: "/",
        service: "web",
        port: SERVICE_PORT,
    };
    crate::bridge::ingress::build(ctx, &[web])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::context::Cluster;
    use crate::bridge::objects::fixtures::{env_value, sample_ctx};

    #[test]
    fn web_settings() {
        let ctx = sample_ctx();
        let d = deploy(&ctx);
        let pod = d.spec.template;
        let hash = pod
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned());
        assert_eq!(hash, Some(content_hash(&custom_config(&ctx))));
        let c = &pod.spec.expect("pod").containers[0];
        let v = |n| env_value(c, n);
        assert_eq!(v("PUBLIC_URL").as_deref(), Some("https://meet.example.com"));
        assert_eq!(
            v("XMPP_BOSH_URL_BASE").as_deref(),
            Some("http://meet-prosody.conf.svc.cluster.local:5280")
        );
        assert_eq!(v("DISABLE_HTTPS").as_deref(), Some("1"));
        assert_eq!(v("ENABLE_IPV6").as_deref(), Some("0"));
        assert_eq!(v("ENABLE_SUBDOMAINS").as_deref(), Some("0"));
        for unread in [
            "AUTH_TYPE",
            "XMPP_AUTH_DOMAIN",
            "XMPP_INTERNAL_MUC_DOMAIN",
            "XMPP_PORT",
            "XMPP_SERVER",
        ] {
            assert_eq!(v(unread), None, "{unread}: the web image does not read it");
        }
        assert_eq!(v("ENABLE_XMPP_WEBSOCKET").as_deref(), Some("1"));
        assert_eq!(v("XMPP_MUC_DOMAIN").as_deref(), Some("muc.meet.example.com"));
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_path == "/config" && m.read_only == Some(true) && m.sub_path.is_none())
        );
        assert!(mounts.iter().any(|m| m.mount_path == "/run"));
    }

    #[test]
    fn cluster_domain_and_ipv6_come_from_the_operator() {
        let mut ctx = sample_ctx();
        ctx.cluster = Cluster {
            domain: "k8s.internal".into(),
            ipv6: true,
        };
        let e = env_vars(&ctx);
        let v = |n: &str| e.iter().find(|x| x.name == n).and_then(|x| x.value.clone());
        assert_eq!(
            v("XMPP_BOSH_URL_BASE").as_deref(),
            Some("http://meet-prosody.conf.svc.k8s.internal:5280")
        );
        assert_eq!(v("ENABLE_IPV6").as_deref(), Some("1"));
    }

    #[test]
    fn e2ee_is_never_disabled() {
        let mut ctx = sample_ctx();
        for p in [E2eePolicy::Required, E2eePolicy::Preferred] {
            ctx.spec.e2ee = p;
            let js = custom_config(&ctx);
            assert!(!js.contains("disabled"), "{js}");
            assert!(!js.contains("disableE2EE"), "{js}");
            assert!(js.contains("recordingService = { enabled: false"), "{js}");
            assert!(js.contains("config.enableEncodedTransformSupport = true;"), "{js}");
            assert!(js.contains("config.localRecording, { disable: true }"), "{js}");
        }
    }

    #[test]
    fn service_and_ingress() {
        let ctx = sample_ctx();
        let s = service(&ctx);
        let p = &s.spec.expect("spec").ports.expect("ports")[0];
        assert_eq!((p.port, p.name.as_deref()), (80, Some("http")));
        let i = ingress(&ctx).expect("ingress");
        let spec = i.spec.expect("spec");
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(spec.tls.expect("tls")[0].secret_name.as_deref(), Some("meet-tls"));
        let rule = &spec.rules.expect("rules")[0];
        assert_eq!(rule.host.as_deref(), Some("meet.example.com"));
        assert_eq!(
            i.metadata
                .annotations
                .expect("annotations")
                .get("example.com/a")
                .map(String::as_str),
            Some("b")
        );
        let mut no_tls = sample_ctx();
        no_tls.tls_secret = None;
        assert!(ingress(&no_tls).and_then(|i| i.spec).and_then(|s| s.tls).is_none());
    }
}
