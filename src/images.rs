//! Pinned default images. One place to bump them.

/// docker-jitsi-meet release the Jitsi images are pinned to. From stable-11146 on, the images
/// run as non-root with a read-only root filesystem, and are published only on GHCR.
pub const JITSI_TAG: &str = "stable-11146-2";
/// coturn release.
pub const COTURN_TAG: &str = "4.17.2";

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

/// The images a Bridge runs, after overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub web: String,
    pub prosody: String,
    pub jicofo: String,
    pub jvb: String,
    pub coturn: String,
}
