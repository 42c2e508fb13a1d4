//! The front of a LiveKit Bridge: the join page (`conclave web`, from the operator's own
//! image), the signalling Service over every SFU pod, and the Ingress that routes
//! `https://<domain>/rtc` (WebSocket) and `/twirp` (RoomService) to signalling and everything
//! else to the page.
//!
//! `conclave web` needs no Kubernetes access: the LiveKit API key and secret come from the
//! generated Secret by env (to exchange guest links and to keep the SFU's rooms equal to the
//! list in [`super::rooms`]), the room list from a mounted ConfigMap. Two replicas; both apply
//! the same list, and RoomService's create and delete are idempotent.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service, ServiceSpec};
use k8s_openapi::api::networking::v1::Ingress;

use super::config::SIGNAL_PORT;
use super::rooms;
use crate::bridge::context::{Ctx, restricted_container, restricted_pod};
use crate::bridge::ingress::{self, Route};
use crate::bridge::objects::{
    container_port, deployment, env, http_probe, pod_spec, requests, secret_env, service_port, template,
};
use crate::bridge::secrets;
use crate::child::Child;
use crate::labels::Component;

/// `conclave web`'s port.
pub const HTTP_PORT: i32 = 8080;
/// Port of the web Service.
pub const SERVICE_PORT: i32 = 80;
/// Web pods per Bridge.
pub const REPLICAS: i32 = 2;
/// Name suffix of the Service over every SFU pod's signalling.
pub const SIGNALLING: &str = "signalling";
/// The distroless image's `nonroot` user.
pub const UID: i64 = 65532;

/// Deployment and Service of the page, the signalling Service, and the Ingress when asked for.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let mut out = vec![
        Child::new(&deploy(ctx))?,
        Child::new(&service(ctx, "web", Component::Web, SERVICE_PORT, HTTP_PORT))?,
        Child::new(&service(ctx, SIGNALLING, Component::Sfu, SIGNAL_PORT, SIGNAL_PORT))?,
    ];
    if let Some(i) = ingress(ctx) {
        out.push(Child::new(&i)?);
    }
    Ok(out)
}

/// `conclave web`'s arguments: the URL browsers connect to, and the one it reaches LiveKit's
/// API on from inside the cluster.
pub fn args(ctx: &Ctx) -> Vec<String> {
    [
        "web".to_string(),
        "--listen".into(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--livekit-url".into(),
        format!("wss://{}", ctx.spec.domain),
        "--livekit-api-url".into(),
        format!("http://{}:{SIGNAL_PORT}", ctx.service_host(SIGNALLING)),
        "--rooms-file".into(),
        format!("{}/{}", rooms::DIR, rooms::KEY),
    ]
    .into()
}

fn deploy(ctx: &Ctx) -> Deployment {
    let (volume, mount) = rooms::volume(ctx);
    let container = Container {
        name: "web".into(),
        image: Some(ctx.images.conclave.clone()),
        args: Some(args(ctx)),
        env: Some(vec![
            secret_env(ctx, "LIVEKIT_API_KEY", secrets::LIVEKIT_API_KEY),
            secret_env(ctx, "LIVEKIT_API_SECRET", secrets::LIVEKIT_API_SECRET),
            env("CONCLAVE_LOG_FORMAT", "json"),
        ]),
        ports: Some(vec![container_port("http", HTTP_PORT, "TCP")]),
        readiness_probe: Some(http_probe("/readyz", HTTP_PORT, 2, 10, 3)),
        liveness_probe: Some(http_probe("/healthz", HTTP_PORT, 10, 20, 3)),
        resources: Some(requests("50m", "64Mi")),
        security_context: Some(restricted_container(false)),
        volume_mounts: Some(vec![mount]),
        ..Container::default()
    };
    let pod = pod_spec(vec![container], vec![volume], restricted_pod(UID));
    deployment(
        ctx,
        "web",
        Component::Web,
        REPLICAS,
        false,
        template(ctx, Component::Web, &[], BTreeMap::new(), pod),
    )
}

fn service(ctx: &Ctx, suffix: &str, component: Component, port: i32, target: i32) -> Service {
    let name = if component == Component::Web { "http" } else { "signal" };
    Service {
        metadata: ctx.meta(suffix, component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(ctx.selector(component)),
            ports: Some(vec![service_port(name, port, target, "TCP")]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `/rtc` and `/twirp` to signalling, the rest to the page. Ingress controllers pick the
/// longest matching prefix, whatever the order.
fn ingress(ctx: &Ctx) -> Option<Ingress> {
    let signalling = |path| Route {
        path,
        service: SIGNALLING,
        port: SIGNAL_PORT,
    };
    let page = Route {
        path: "/",
        service: "web",
        port: SERVICE_PORT,
    };
    ingress::build(ctx, &[signalling("/rtc"), signalling("/twirp"), page])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::bridge::Engine;
    use crate::bridge::objects::fixtures::{env_secret_key, sample_ctx};

    fn livekit_ctx() -> Ctx {
        let mut ctx = sample_ctx();
        ctx.spec.engine = Engine::LiveKit;
        ctx
    }

    #[test]
    fn the_page_runs_the_operators_image_with_the_api_secret_by_reference() {
        let ctx = livekit_ctx();
        let d = deploy(&ctx);
        let pod = d.spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(crate::images::conclave().as_str()));
        assert_eq!(
            c.args.clone().expect("args"),
            [
                "web",
                "--listen",
                "0.0.0.0:8080",
                "--livekit-url",
                "wss://meet.example.com",
                "--livekit-api-url",
                "http://meet-signalling.conf.svc.cluster.local:7880",
                "--rooms-file",
                "/conclave/rooms/rooms.json"
            ]
        );
        assert_eq!(
            env_secret_key(c, "LIVEKIT_API_SECRET").as_deref(),
            Some(secrets::LIVEKIT_API_SECRET)
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let sc = c.security_context.clone().expect("security");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(pod.security_context.and_then(|s| s.run_as_non_root), Some(true));
        let m = &c.volume_mounts.clone().expect("mounts")[0];
        assert_eq!(
            (m.mount_path.as_str(), m.sub_path.as_deref()),
            ("/conclave/rooms", None)
        );
    }

    #[test]
    fn ingress_routes_signalling_and_the_page() {
        let ctx = livekit_ctx();
        let i = ingress(&ctx).expect("ingress");
        let rule = &i.spec.expect("spec").rules.expect("rules")[0];
        let routes: Vec<(String, String, i32)> = rule
            .http
            .clone()
            .expect("http")
            .paths
            .into_iter()
            .map(|p| {
                let s = p.backend.service.expect("service");
                (
                    p.path.unwrap_or_default(),
                    s.name,
                    s.port.and_then(|p| p.number).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("/rtc".into(), "meet-signalling".into(), 7880),
                ("/twirp".into(), "meet-signalling".into(), 7880),
                ("/".into(), "meet-web".into(), 80)
            ]
        );
        let sig = service(&ctx, SIGNALLING, Component::Sfu, SIGNAL_PORT, SIGNAL_PORT);
        let sel = sig.spec.expect("spec").selector.expect("selector");
        assert_eq!(sel, ctx.selector(Component::Sfu), "every SFU pod, not one replica");
    }
}
