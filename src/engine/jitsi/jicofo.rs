//! Jicofo, the conference focus: it joins every room, picks a videobridge from the brewery and
//! sets up the media sessions. One per Bridge (a second focus would fight over the rooms), so
//! `Recreate`. It needs no Service: nothing connects to it, it connects to prosody.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar};

use super::{Image, JVB_BREWERY_MUC, jitsi_env, jitsi_scratch};
use crate::api::bridge::AuthMode;
use crate::bridge::context::{Ctx, restricted_container, restricted_pod};
use crate::bridge::objects::{container_port, deployment, env, http_probe, pod_spec, requests, secret_env, template};
use crate::bridge::secrets;
use crate::child::Child;
use crate::labels::Component;

/// Jicofo's REST port (health, version, stats).
pub const REST_PORT: i32 = 8888;

/// Jicofo's Deployment.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    Ok(vec![Child::new(&deploy(ctx))?])
}

/// Jicofo's environment.
pub fn env_vars(ctx: &Ctx) -> Vec<EnvVar> {
    let mut e = jitsi_env(ctx, Image::Jicofo);
    e.extend([
        secret_env(ctx, "JICOFO_AUTH_PASSWORD", secrets::JICOFO_PASSWORD),
        env("JVB_BREWERY_MUC", JVB_BREWERY_MUC),
        // REST on 0.0.0.0 (loopback otherwise) so the kubelet can probe it, and the health
        // route registered at all.
        env("JICOFO_ENABLE_REST", "1"),
        env("JICOFO_ENABLE_HEALTH_CHECKS", "1"),
    ]);
    match ctx.spec.auth.mode {
        // With its own JWT auth on, jicofo makes every token holder a moderator, and with
        // auto-owner the first to join; both would override the per-token roles that prosody's
        // token_affiliation applies. Joining still needs a valid token: prosody checks it.
        AuthMode::Jwt => e.extend([env("JICOFO_ENABLE_AUTH", "0"), env("ENABLE_AUTO_OWNER", "0")]),
        // Without tokens there is no other source of moderators: the first participant owns.
        AuthMode::Open => e.push(env("ENABLE_AUTO_OWNER", "1")),
    }
    e
}

fn deploy(ctx: &Ctx) -> Deployment {
    let (volumes, mounts) = jitsi_scratch(&[], true);
    let container = Container {
        name: "jicofo".into(),
        image: Some(ctx.images.jicofo.clone()),
        env: Some(env_vars(ctx)),
        ports: Some(vec![container_port("http", REST_PORT, "TCP")]),
        // /about/health fails while no videobridge is operational: right for readiness (the
        // Bridge is not usable), wrong for liveness (a restart would not bring a bridge).
        readiness_probe: Some(http_probe("/about/health", REST_PORT, 10, 10, 3)),
        liveness_probe: Some(http_probe("/about/version", REST_PORT, 60, 20, 3)),
        resources: Some(requests("100m", "512Mi")),
        security_context: Some(restricted_container(false)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let pod = pod_spec(vec![container], volumes, restricted_pod(1000));
    deployment(
        ctx,
        "jicofo",
        Component::Jicofo,
        1,
        true,
        template(ctx, Component::Jicofo, &[], BTreeMap::new(), pod),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::objects::fixtures::{env_secret_key, env_value, sample_ctx};

    #[test]
    fn jicofo_settings() {
        let ctx = sample_ctx();
        let d = deploy(&ctx);
        assert_eq!(d.metadata.name.as_deref(), Some("meet-jicofo"));
        let spec = d.spec;
        assert_eq!(spec.strategy.and_then(|s| s.type_).as_deref(), Some("Recreate"));
        let pod = spec.template.spec.expect("pod");
        let c = &pod.containers[0];
        let v = |n| env_value(c, n);
        assert_eq!(v("XMPP_SERVER").as_deref(), Some("meet-prosody.conf.svc.cluster.local"));
        assert_eq!(
            v("XMPP_INTERNAL_MUC_DOMAIN").as_deref(),
            Some("internal-muc.meet.example.com")
        );
        assert_eq!(v("JVB_BREWERY_MUC").as_deref(), Some("jvbbrewery"));
        assert_eq!(v("AUTH_TYPE").as_deref(), Some("jwt"));
        for unread in ["ENABLE_GUESTS", "XMPP_GUEST_DOMAIN"] {
            assert_eq!(v(unread), None, "{unread}: the jicofo image does not read it");
        }
        assert_eq!(v("JICOFO_ENABLE_REST").as_deref(), Some("1"));
        assert_eq!(v("JICOFO_ENABLE_HEALTH_CHECKS").as_deref(), Some("1"));
        assert_eq!(v("JICOFO_ENABLE_AUTH").as_deref(), Some("0"));
        assert_eq!(v("ENABLE_AUTO_OWNER").as_deref(), Some("0"));
        assert_eq!(
            env_secret_key(c, "JICOFO_AUTH_PASSWORD").as_deref(),
            Some(secrets::JICOFO_PASSWORD)
        );
        let ready = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("http readiness");
        assert_eq!(ready.path.as_deref(), Some("/about/health"));
        let live = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("http liveness");
        assert_eq!(live.path.as_deref(), Some("/about/version"));
    }
}
