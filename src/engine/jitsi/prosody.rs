//! Prosody, the XMPP server all signalling goes through: one pod per Bridge (its MUC state is in
//! memory, so it is a singleton, replaced with `Recreate`), and a ClusterIP Service for jicofo,
//! the videobridges (c2s, 5222) and the web pods (BOSH and websocket, 5280).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Service, ServiceSpec};

use super::{Image, JVB_AUTH_USER, jitsi_env, jitsi_scratch};
use crate::api::bridge::AuthMode;
use crate::bridge::context::{Ctx, restricted_container, restricted_pod};
use crate::bridge::objects::{
    container_port, deployment, env, http_probe, invalid, pod_spec, requests, secret_env, service_port, tcp_probe,
    template,
};
use crate::bridge::secrets;
use crate::child::Child;
use crate::labels::Component;

/// Client-to-server XMPP port.
pub const XMPP_PORT: i32 = 5222;
/// HTTP port: BOSH (`/http-bind`) and `/xmpp-websocket`.
pub const HTTP_PORT: i32 = 5280;
/// `JWT_APP_ID`, and the only accepted `iss` and `aud` of join tokens: the operator is the
/// only issuer, so nothing else minted with the same key is accepted by accident.
pub const JWT_APP_ID: &str = "conclave";

/// MUC modules in JWT mode, all shipped in the image. `token_affiliation` is jitsi-meet's own
/// (under `/prosody-plugins`, which comes before the contrib directory on `plugin_paths`, so an
/// older contrib copy never shadows it); `token_no_wildcard` and `token_lobby_ondemand` come
/// from jitsi-contrib/prosody-plugins, which docker-jitsi-meet unpacks under
/// `/prosody-plugins-contrib`. `token_affiliation` makes exactly the participants whose token
/// says so moderators (with jicofo's own JWT roles and auto-owner turned off, see
/// [`super::jicofo`]); `token_no_wildcard` refuses tokens whose `room` or `sub` is `*`, so a
/// leaked token opens one room, not all; `token_lobby_ondemand` sends a holder whose token says
/// `context.user.lobby: true` (a Meeting's guest link with `guests.lobby`) to the lobby,
/// switching it on for the room, while invited participants go straight in.
pub const JWT_MUC_MODULES: &str = "token_affiliation,token_no_wildcard,token_lobby_ondemand";
/// VirtualHost modules in JWT mode: `persistent_lobby` (jitsi-meet's own) is what
/// `token_lobby_ondemand` needs.
pub const JWT_MODULES: &str = "persistent_lobby";

/// Prosody's Service and Deployment.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    Ok(vec![Child::new(&service(ctx))?, Child::new(&deploy(ctx)?)?])
}

fn service(ctx: &Ctx) -> Service {
    Service {
        metadata: ctx.meta("prosody", Component::Prosody),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(ctx.selector(Component::Prosody)),
            ports: Some(vec![
                service_port("xmpp", XMPP_PORT, XMPP_PORT, "TCP"),
                service_port("http", HTTP_PORT, HTTP_PORT, "TCP"),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Prosody's environment: domains, accounts, auth, lobby and the TURN servers handed to clients.
///
/// `PROSODY_TRUSTED_PROXIES` stays at the image's loopback default on purpose. Trusting the web
/// pods would only make prosody take the `X-Forwarded-For` their nginx sets, which is nginx's
/// own peer (the Ingress controller), not the client, so no client address would be gained. And
/// nothing in prosody needs one: the per-IP limits (`mod_rate_limit`, `muc_rate_limit`) are off
/// unless `PROSODY_ENABLE_RATE_LIMITS` is set, which Conclave does not, and `mod_limits` throttles
/// each connection's bandwidth, not an address.
pub fn env_vars(ctx: &Ctx) -> Result<Vec<EnvVar>, serde_json::Error> {
    let mut e = jitsi_env(ctx, Image::Prosody);
    e.extend([
        env("PUBLIC_URL", format!("https://{}", ctx.spec.domain)),
        env("ENABLE_XMPP_WEBSOCKET", "1"),
        // The lobby component exists; moderators switch it on per room.
        env("ENABLE_LOBBY", "1"),
        // Loads Jitsi's muc_max_occupants, which enforces the per-room limits that
        // conclave_room_limits sets; this is only the limit of rooms without one.
        env("MAX_PARTICIPANTS", super::rooms::DEFAULT_LIMIT.to_string()),
        secret_env(ctx, "JICOFO_AUTH_PASSWORD", secrets::JICOFO_PASSWORD),
        env("JVB_AUTH_USER", JVB_AUTH_USER),
        secret_env(ctx, "JVB_AUTH_PASSWORD", secrets::JVB_PASSWORD),
    ]);
    if ctx.spec.auth.mode == AuthMode::Jwt {
        e.extend([
            env("JWT_APP_ID", JWT_APP_ID),
            secret_env(ctx, "JWT_APP_SECRET", secrets::JWT_APP_SECRET),
            env("JWT_ACCEPTED_ISSUERS", JWT_APP_ID),
            env("JWT_ACCEPTED_AUDIENCES", JWT_APP_ID),
            env("JWT_ALLOW_EMPTY", "0"),
            env(
                "XMPP_MUC_MODULES",
                format!("{JWT_MUC_MODULES},{}", super::rooms::MODULE),
            ),
            env("XMPP_MODULES", JWT_MODULES),
        ]);
    } else {
        e.push(env("XMPP_MUC_MODULES", super::rooms::MODULE));
    }
    e.extend(turn_env(ctx)?);
    Ok(e)
}

/// STUN and TURN servers announced to clients (XEP-0215, `mod_external_services`), with
/// time-limited TURN credentials prosody mints from the same secret coturn checks. coturn
/// answers STUN on its TURN port, so the first TURN address is also the STUN server, which gives
/// two-person peer-to-peer calls their server-reflexive candidates. TURN over TLS is announced
/// only at `spec.turn.host` when it is a DNS name (clients check the certificate against it).
/// Nothing is announced until the operator knows an address clients can reach TURN on.
fn turn_env(ctx: &Ctx) -> Result<Vec<EnvVar>, serde_json::Error> {
    let t = &ctx.spec.turn;
    let Some(first) = ctx.turn_hosts.first().filter(|_| t.enabled) else {
        return Ok(Vec::new());
    };
    let ttl = crate::duration::parse_duration(&t.credential_ttl).ok_or_else(|| {
        invalid(format!(
            "spec.turn.credentialTTL {:?} is not a duration",
            t.credential_ttl
        ))
    })?;
    let mut e = vec![
        env("STUN_HOST", first),
        env("STUN_PORT", t.port.to_string()),
        secret_env(ctx, "TURN_CREDENTIALS", secrets::TURN_SECRET),
        env("TURN_HOST", ctx.turn_hosts.join(",")),
        env("TURN_PORT", t.port.to_string()),
        env("TURN_TRANSPORT", "udp,tcp"),
        env("TURN_TTL", ttl.as_secs().max(1).to_string()),
    ];
    if let Some(host) = crate::bridge::coturn::tls_host(ctx) {
        e.extend([env("TURNS_HOST", host), env("TURNS_PORT", t.tls_port.to_string())]);
    }
    Ok(e)
}

fn deploy(ctx: &Ctx) -> Result<k8s_openapi::api::apps::v1::Deployment, serde_json::Error> {
    // Prosody writes its data path (and checks it is writable at start); accounts are
    // re-created from the Secret on every start, so an emptyDir is enough.
    let (mut volumes, mut mounts) = jitsi_scratch(&[("data", "/var/lib/prosody")], true);
    let (room_volumes, room_mounts) = super::rooms::volumes(ctx);
    volumes.extend(room_volumes);
    mounts.extend(room_mounts);
    let container = Container {
        name: "prosody".into(),
        image: Some(ctx.images.prosody.clone()),
        env: Some(env_vars(ctx)?),
        ports: Some(vec![
            container_port("xmpp", XMPP_PORT, "TCP"),
            container_port("http", HTTP_PORT, "TCP"),
        ]),
        // `/health` only answers loopback (403 to the kubelet); BOSH answering means the HTTP
        // side is up, the c2s port that the XMPP side is.
        readiness_probe: Some(http_probe("/http-bind", HTTP_PORT, 5, 10, 3)),
        liveness_probe: Some(tcp_probe(XMPP_PORT, 30, 20, 3)),
        resources: Some(requests("100m", "256Mi")),
        security_context: Some(restricted_container(false)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let pod = pod_spec(vec![container], volumes, restricted_pod(1000));
    Ok(deployment(
        ctx,
        "prosody",
        Component::Prosody,
        1,
        true,
        template(ctx, Component::Prosody, &[], BTreeMap::new(), pod),
    ))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;

    use super::*;
    use crate::bridge::objects::fixtures::{env_secret_key, env_value, sample_ctx};

    fn container(ctx: &Ctx) -> Container {
        let d: Deployment =
            serde_json::from_value(serde_json::to_value(&build(ctx).expect("builds")[1].object).expect("json"))
                .expect("deployment");
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.and_then(|s| s.type_).as_deref(), Some("Recreate"));
        let pod = spec.template.spec.expect("pod");
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.security_context.and_then(|s| s.run_as_user), Some(1000));
        pod.containers.into_iter().next().expect("container")
    }

    #[test]
    fn jwt_mode() {
        let ctx = sample_ctx();
        let c = container(&ctx);
        let v = |n| env_value(&c, n);
        assert_eq!(v("XMPP_DOMAIN").as_deref(), Some("meet.example.com"));
        assert_eq!(v("XMPP_AUTH_DOMAIN").as_deref(), Some("auth.meet.example.com"));
        assert_eq!(v("XMPP_GUEST_DOMAIN").as_deref(), Some("guest.meet.example.com"));
        assert_eq!(
            v("XMPP_SERVER"),
            None,
            "prosody is the server; only visitors mode reads it"
        );
        assert_eq!(v("ENABLE_SUBDOMAINS").as_deref(), Some("0"));
        assert_eq!(v("ENABLE_IPV6").as_deref(), Some("0"));
        assert_eq!(v("ENABLE_AUTH").as_deref(), Some("1"));
        assert_eq!(v("AUTH_TYPE").as_deref(), Some("jwt"));
        assert_eq!(v("ENABLE_GUESTS").as_deref(), Some("0"));
        assert_eq!(v("JWT_APP_ID").as_deref(), Some("conclave"));
        assert_eq!(v("JWT_ACCEPTED_ISSUERS").as_deref(), Some("conclave"));
        assert_eq!(v("JWT_ALLOW_EMPTY").as_deref(), Some("0"));
        assert_eq!(
            v("XMPP_MUC_MODULES").as_deref(),
            Some("token_affiliation,token_no_wildcard,token_lobby_ondemand,conclave_room_limits")
        );
        assert_eq!(
            v("S6_YES_I_WANT_A_WORLD_WRITABLE_RUN_BECAUSE_KUBERNETES").as_deref(),
            Some("1")
        );
        assert_eq!(
            env_secret_key(&c, "JWT_APP_SECRET").as_deref(),
            Some(secrets::JWT_APP_SECRET)
        );
        assert_eq!(
            env_secret_key(&c, "JICOFO_AUTH_PASSWORD").as_deref(),
            Some(secrets::JICOFO_PASSWORD)
        );
        assert_eq!(
            env_secret_key(&c, "JVB_AUTH_PASSWORD").as_deref(),
            Some(secrets::JVB_PASSWORD)
        );
        assert_eq!(
            env_secret_key(&c, "TURN_CREDENTIALS").as_deref(),
            Some(secrets::TURN_SECRET)
        );
        assert_eq!(v("STUN_HOST").as_deref(), Some("turn.example.com"));
        assert_eq!(v("STUN_PORT").as_deref(), Some("3478"));
        assert_eq!(v("TURN_HOST").as_deref(), Some("turn.example.com"));
        assert_eq!(v("TURNS_HOST").as_deref(), Some("turn.example.com"));
        assert_eq!(v("TURN_PORT").as_deref(), Some("3478"));
        assert_eq!(v("TURN_TRANSPORT").as_deref(), Some("udp,tcp"));
        assert_eq!(v("TURNS_PORT").as_deref(), Some("5349"));
        assert_eq!(v("TURN_TTL").as_deref(), Some("7200"));
        let mounts: Vec<String> = c
            .volume_mounts
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_path)
            .collect();
        for p in ["/run", "/tmp", "/config", "/var/lib/prosody"] {
            assert!(mounts.iter().any(|m| m == p), "{p} in {mounts:?}");
        }
        assert_eq!(c.security_context.and_then(|s| s.read_only_root_filesystem), Some(true));
        assert!(c.resources.and_then(|r| r.requests).is_some());
    }

    #[test]
    fn open_mode_and_no_turn() {
        let mut ctx = sample_ctx();
        ctx.spec.auth.mode = AuthMode::Open;
        ctx.spec.turn.enabled = false;
        let c = container(&ctx);
        assert_eq!(env_value(&c, "ENABLE_AUTH").as_deref(), Some("0"));
        assert_eq!(
            env_value(&c, "XMPP_MUC_MODULES").as_deref(),
            Some("conclave_room_limits"),
            "room limits apply without authentication too"
        );
        for gone in [
            "JWT_APP_ID",
            "JWT_APP_SECRET",
            "TURN_HOST",
            "TURN_CREDENTIALS",
            "TURNS_HOST",
        ] {
            assert!(
                c.env.as_ref().is_some_and(|e| !e.iter().any(|x| x.name == gone)),
                "{gone}"
            );
        }
    }

    #[test]
    fn turns_only_with_a_certificate_and_a_name() {
        let mut ctx = sample_ctx();
        ctx.tls_secret = None;
        let c = container(&ctx);
        assert!(env_value(&c, "TURN_HOST").is_some());
        assert!(env_value(&c, "TURNS_HOST").is_none());
        // A discovered address (no spec.turn.host): TURN and STUN, never TURN over TLS.
        let mut ctx = sample_ctx();
        ctx.spec.turn.host = None;
        ctx.turn_hosts = vec!["198.51.100.7".into(), "203.0.113.9".into()];
        let c = container(&ctx);
        assert_eq!(env_value(&c, "TURN_HOST").as_deref(), Some("198.51.100.7,203.0.113.9"));
        assert_eq!(env_value(&c, "STUN_HOST").as_deref(), Some("198.51.100.7"));
        assert!(env_value(&c, "TURNS_HOST").is_none());
    }

    #[test]
    fn nothing_announced_before_an_address_is_known() {
        let mut ctx = sample_ctx();
        ctx.turn_hosts.clear();
        let c = container(&ctx);
        for gone in ["STUN_HOST", "TURN_HOST", "TURNS_HOST", "TURN_CREDENTIALS"] {
            assert!(
                c.env.as_ref().is_some_and(|e| !e.iter().any(|x| x.name == gone)),
                "{gone}"
            );
        }
    }

    #[test]
    fn service_ports() {
        let ctx = sample_ctx();
        let s = &build(&ctx).expect("builds")[0];
        assert_eq!(s.key(), "Service/meet-prosody");
        let ports = serde_json::to_value(&s.object.data["spec"]["ports"]).expect("json");
        assert_eq!(ports[0]["port"], 5222);
        assert_eq!(ports[1]["port"], 5280);
    }
}
