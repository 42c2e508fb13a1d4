//! The Jitsi engine: prosody (signalling), jicofo (the focus), the web front end and the
//! videobridges (the SFU pool), from the docker-jitsi-meet images, configured through the
//! environment their templates read.

pub mod jicofo;
pub mod jvb;
pub mod network_policy;
pub mod prosody;
pub mod rooms;
pub mod token;
pub mod web;

use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};

use crate::api::bridge::AuthMode;
use crate::bridge::context::Ctx;
use crate::bridge::objects::{empty_dir, env, mount};
use crate::child::Child;

/// The Deployments that carry signalling; all must be ready for the Bridge to be.
pub const SIGNALLING: [&str; 3] = ["prosody", "jicofo", "web"];

/// The Jitsi children of a Bridge, in a stable order: room limits, signalling, web, media.
pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let mut out = Vec::new();
    out.extend(rooms::build(ctx)?);
    out.extend(prosody::build(ctx)?);
    out.extend(jicofo::build(ctx)?);
    out.extend(web::build(ctx)?);
    out.extend(jvb::build(ctx)?);
    Ok(out)
}

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
/// jitsi-meet's E2EE "max mode" (`MAX_MODE_LIMIT` in its `e2ee` feature): from this many
/// participants in a room nobody can switch E2EE on any more, and from five more
/// (`MAX_MODE_THRESHOLD`) the client switches it off for everyone. The web image's client
/// decides this; no setting changes it.
pub const E2EE_MAX_MODE_LIMIT: i32 = 20;
/// The brewery MUC the videobridges join and jicofo watches; must match on both sides.
pub const JVB_BREWERY_MUC: &str = "jvbbrewery";
/// XMPP account of the videobridges (`jvb@auth.<domain>`).
pub const JVB_AUTH_USER: &str = "jvb";

/// The four docker-jitsi-meet images a Bridge runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Image {
    Web,
    Prosody,
    Jicofo,
    Jvb,
}

/// The settings the Jitsi images must agree on (XMPP domains, where prosody is, authentication,
/// the cluster's IP families), each given to exactly the images whose templates read it, so an
/// image's environment is its contract and nothing in it is dead (`tests/jitsi_contract.rs`
/// checks that every variable is read). Every image also gets `TZ` and the s6 switch that lets
/// s6-overlay v3 (uid 1000) accept the root-owned, world-writable emptyDir at `/run`.
///
/// `ENABLE_GUESTS=0` with JWT: a guest link is a token for its room too, so no anonymous
/// VirtualHost is needed, and without one a client that holds no token cannot connect at all
/// (with it, anonymous users could join any room a token holder had created).
/// `ENABLE_SUBDOMAINS=0`: Jitsi's multi-tenant URLs (`/<tenant>/<room>`) are not used; a Bridge
/// serves one domain, and prosody maps no tenant rooms.
/// `ENABLE_IPV6`: the images default to on, and web and prosody then fail to listen on a kernel
/// without IPv6.
pub(crate) fn jitsi_env(ctx: &Ctx, image: Image) -> Vec<EnvVar> {
    use Image::{Jicofo, Jvb, Prosody, Web};
    let jwt = ctx.spec.auth.mode == AuthMode::Jwt;
    let vars: Vec<(&str, String, &[Image])> = vec![
        (
            "S6_YES_I_WANT_A_WORLD_WRITABLE_RUN_BECAUSE_KUBERNETES",
            "1".into(),
            &[Web, Prosody, Jicofo, Jvb],
        ),
        ("TZ", "UTC".into(), &[Web, Prosody, Jicofo, Jvb]),
        ("XMPP_DOMAIN", ctx.spec.domain.clone(), &[Web, Prosody, Jicofo]),
        ("XMPP_AUTH_DOMAIN", auth_domain(ctx), &[Prosody, Jicofo, Jvb]),
        ("XMPP_MUC_DOMAIN", muc_domain(ctx), &[Web, Prosody, Jicofo]),
        (
            "XMPP_INTERNAL_MUC_DOMAIN",
            internal_muc_domain(ctx),
            &[Prosody, Jicofo, Jvb],
        ),
        ("XMPP_GUEST_DOMAIN", guest_domain(ctx), &[Web, Prosody]),
        ("XMPP_SERVER", ctx.service_host("prosody"), &[Jicofo, Jvb]),
        ("XMPP_PORT", prosody::XMPP_PORT.to_string(), &[Prosody, Jicofo, Jvb]),
        (
            "ENABLE_AUTH",
            if jwt { "1" } else { "0" }.into(),
            &[Web, Prosody, Jicofo],
        ),
        ("AUTH_TYPE", "jwt".into(), if jwt { &[Prosody, Jicofo] } else { &[] }),
        ("ENABLE_GUESTS", "0".into(), &[Web, Prosody]),
        ("ENABLE_SUBDOMAINS", "0".into(), &[Web, Prosody]),
        (
            "ENABLE_IPV6",
            if ctx.cluster.ipv6 { "1" } else { "0" }.into(),
            &[Web, Prosody],
        ),
    ];
    vars.into_iter()
        .filter(|(_, _, readers)| readers.contains(&image))
        .map(|(name, value, _)| env(name, value))
        .collect()
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
