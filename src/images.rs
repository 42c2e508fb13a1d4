//! Pinned default images. One place to bump them.

/// docker-jitsi-meet release the Jitsi images are pinned to. From stable-11146 on, the images
/// run as non-root with a read-only root filesystem, and are published only on GHCR.
pub const JITSI_TAG: &str = "stable-11146-2";
/// coturn release.
pub const COTURN_TAG: &str = "4.17.2";
/// livekit-server release; the conference test runs this version, built from the Go module proxy.
pub const LIVEKIT_TAG: &str = "v1.13.5";
/// Redis release (the last BSD-licensed line) for LiveKit's room routing.
pub const REDIS_TAG: &str = "7.2.7-alpine";

fn jitsi(name: &str) -> String {
    format!("ghcr.io/jitsi/{name}:{JITSI_TAG}")
}

/// Jitsi Meet web front end.
pub fn web() -> String {
    jitsi("web")
}

/// Prosody XMPP server.
pub fn prosody() -> String {
    jitsi("prosody")
}

/// Jicofo conference focus.
pub fn jicofo() -> String {
    jitsi("jicofo")
}

/// Jitsi Videobridge.
pub fn jvb() -> String {
    jitsi("jvb")
}

/// coturn TURN server.
pub fn coturn() -> String {
    format!("docker.io/coturn/coturn:{COTURN_TAG}")
}

/// livekit-server.
pub fn livekit() -> String {
    format!("docker.io/livekit/livekit-server:{LIVEKIT_TAG}")
}

/// Redis.
pub fn redis() -> String {
    format!("docker.io/library/redis:{REDIS_TAG}")
}

/// This operator's own image, which also serves LiveKit join pages; the same version as the
/// operator, as the Helm chart's `appVersion` and `deploy/` pin it.
pub fn conclave() -> String {
    format!("ghcr.io/conclave-dev/conclave:{}", env!("CARGO_PKG_VERSION"))
}

/// The images a Bridge runs, after overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub web: String,
    pub prosody: String,
    pub jicofo: String,
    pub jvb: String,
    pub coturn: String,
    pub livekit: String,
    pub redis: String,
    pub conclave: String,
}
