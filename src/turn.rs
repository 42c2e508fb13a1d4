//! TURN: the coturn configuration Conclave renders and the ephemeral credentials it mints.
//! This is the only implementation of either; the operator, the prosody wiring and the tests
//! all call it.

use std::net::IpAddr;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use sha1::Sha1;

/// TURN REST API credentials (draft-uberti-behave-turn-rest): the username carries its own
/// expiry, the password is an HMAC of the username under the shared secret, so coturn can
/// check them without any state and nobody can extend or re-target them without the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Credentials are bearer secrets: never let them reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Mints credentials for `user` valid until `expires`.
pub fn credentials(secret: &[u8], user: &str, expires: DateTime<Utc>) -> Credentials {
    let username = format!("{}:{user}", expires.timestamp());
    Credentials {
        password: password_for(secret, &username),
        username,
    }
}

/// The password coturn expects for a REST API username.
pub fn password_for(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// What a coturn server is told. Paths are inside the container.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    pub realm: String,
    pub listening_port: u16,
    /// TLS listener; `None` disables TLS and DTLS (no certificate yet).
    pub tls: Option<TlsFiles>,
    pub relay_min_port: u16,
    pub relay_max_port: u16,
    pub denied: Vec<IpNet>,
    pub allowed: Vec<IpNet>,
    pub prometheus_port: u16,
    /// Addresses to listen on; empty means all.
    pub listening_ips: Vec<IpAddr>,
    /// Address(es) to relay from; empty means coturn's choice.
    pub relay_ips: Vec<IpAddr>,
    /// Public address advertised to clients when the server sits behind NAT.
    pub external_ip: Option<IpAddr>,
}

/// Certificate and key files for TURN over TLS.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsFiles {
    pub port: u16,
    pub cert: String,
    pub key: String,
}

/// Port coturn serves Prometheus metrics on.
pub const PROMETHEUS_PORT: u16 = 9641;
/// Where the Bridge's certificate is mounted in the coturn container.
pub const TLS_DIR: &str = "/etc/conclave/tls";

impl ServerConfig {
    /// The configuration of a Bridge's TURN servers, as the operator deploys it.
    /// `tls` is false until the Bridge has a certificate. Fails with the offending entry when a
    /// CIDR does not parse (admission already refuses those; this guards old objects).
    pub fn for_bridge(spec: &crate::api::BridgeSpec, tls: bool) -> Result<ServerConfig, String> {
        let t = &spec.turn;
        let port = |p: i32| u16::try_from(p).map_err(|_| format!("port {p}"));
        Ok(ServerConfig {
            realm: spec.domain.clone(),
            listening_port: port(t.port)?,
            tls: if tls {
                Some(TlsFiles {
                    port: port(t.tls_port)?,
                    cert: format!("{TLS_DIR}/tls.crt"),
                    key: format!("{TLS_DIR}/tls.key"),
                })
            } else {
                None
            },
            relay_min_port: port(t.relay_ports.min)?,
            relay_max_port: port(t.relay_ports.max)?,
            denied: parse_cidrs(&t.denied_peer_cidrs)?,
            allowed: parse_cidrs(&t.allowed_peer_cidrs)?,
            prometheus_port: PROMETHEUS_PORT,
            listening_ips: Vec::new(),
            relay_ips: Vec::new(),
            external_ip: None,
        })
    }
}

/// Renders `turnserver.conf` without the shared secret: the config lives in a ConfigMap, the
/// secret in a Secret, and the container joins the two at start (see [`secret_line`]).
pub fn render(c: &ServerConfig) -> String {
    let mut out = Vec::new();
    let mut line = |s: String| out.push(s);
    line("# Rendered by Conclave. Edits are overwritten.".into());
    line("use-auth-secret".into());
    line(format!("realm={}", c.realm));
    line(format!("listening-port={}", c.listening_port));
    for ip in &c.listening_ips {
        line(format!("listening-ip={ip}"));
    }
    for ip in &c.relay_ips {
        line(format!("relay-ip={ip}"));
    }
    if let Some(ip) = c.external_ip {
        line(format!("external-ip={ip}"));
    }
    match &c.tls {
        Some(t) => {
            line(format!("tls-listening-port={}", t.port));
            line(format!("cert={}", t.cert));
            line(format!("pkey={}", t.key));
        }
        None => {
            line("no-tls".into());
            line("no-dtls".into());
        }
    }
    line(format!("min-port={}", c.relay_min_port));
    line(format!("max-port={}", c.relay_max_port));
    line("fingerprint".into());
    line("no-cli".into());
    line("no-multicast-peers".into());
    line("no-software-attribute".into());
    line("stale-nonce=600".into());
    line("prometheus".into());
    line(format!("prometheus-port={}", c.prometheus_port));
    line("log-file=stdout".into());
    line("simple-log".into());
    line("pidfile=/tmp/turnserver.pid".into());
    // Every denied range is written out, IPv4-mapped IPv6 included: older coturn releases
    // (Debian's among them) check a mapped peer against the IPv6 list only.
    for r in c.denied.iter().filter_map(range) {
        line(format!("denied-peer-ip={r}"));
    }
    for r in c.allowed.iter().filter_map(range) {
        line(format!("allowed-peer-ip={r}"));
    }
    out.push(String::new());
    out.join("\n")
}

/// The line that carries the shared secret, appended to the rendered config at container start.
pub fn secret_line(secret: &str) -> String {
    format!("static-auth-secret={secret}\n")
}

/// A CIDR as coturn's `first-last` range, the only form coturn accepts (it logs a CIDR as a
/// format error and starts without the rule). coturn reads the unspecified address (`0.0.0.0`,
/// `::`) as "unbounded", so `::` alone would deny every peer and is never written; coturn
/// refuses the unspecified address itself, and a range starting there starts one address later.
/// `None` for a CIDR that is exactly the unspecified address.
pub fn range(net: &IpNet) -> Option<String> {
    let first = net.network();
    let last = net.broadcast();
    let first = if first.is_unspecified() {
        if last.is_unspecified() {
            return None;
        }
        next(first)
    } else {
        first
    };
    if first == last {
        return Some(first.to_string());
    }
    Some(format!("{first}-{last}"))
}

fn next(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4).saturating_add(1)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).saturating_add(1)).into()),
    }
}

/// Parses CIDR strings from the API (already validated at admission). A string that still
/// fails to parse is returned as the error so the caller can name it in a condition.
pub fn parse_cidrs(cidrs: &[String]) -> Result<Vec<IpNet>, String> {
    cidrs
        .iter()
        .map(|c| c.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| c.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_rfc_hmac_sha1_base64() {
        // Known answer from coturn's documentation scheme: base64(HMAC-SHA1("secret", "1700000000:alice")).
        let c = credentials(
            b"secret",
            "alice",
            DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
        );
        assert_eq!(c.username, "1700000000:alice");
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(b"secret").expect("key");
        mac.update(b"1700000000:alice");
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(c.password, expected);
        assert_eq!(c.password.len(), 28, "20-byte digest in base64");
        assert_ne!(password_for(b"other", &c.username), c.password);
        assert_ne!(password_for(b"secret", "1700000000:mallory"), c.password);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = credentials(b"s", "u", DateTime::from_timestamp(1, 0).expect("valid"));
        let shown = format!("{c:?}");
        assert!(!shown.contains(&c.password) && !shown.contains("1:u"), "{shown}");
    }

    #[test]
    fn ranges() {
        let r = |s: &str| range(&s.parse::<IpNet>().expect("cidr"));
        assert_eq!(r("10.0.0.0/8").as_deref(), Some("10.0.0.0-10.255.255.255"));
        assert_eq!(r("169.254.169.254/32").as_deref(), Some("169.254.169.254"));
        assert_eq!(r("::1/128").as_deref(), Some("::1"));
        assert_eq!(
            r("::ffff:0:0/96").as_deref(),
            Some("::ffff:0.0.0.0-::ffff:255.255.255.255")
        );
        assert_eq!(
            r("fc00::/7").as_deref(),
            Some("fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
        );
        // The unspecified address means "unbounded" to coturn: never written as an endpoint.
        assert_eq!(r("0.0.0.0/8").as_deref(), Some("0.0.0.1-0.255.255.255"));
        assert_eq!(r("::/128"), None);
    }

    #[test]
    fn parse_truncates_host_bits_and_names_bad_entries() {
        let ok = parse_cidrs(&["10.1.2.3/8".into()]).expect("valid");
        assert_eq!(ok[0].to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidrs(&["10.0.0.0/8".into(), "nope".into()]), Err("nope".into()));
    }

    #[test]
    fn render_has_every_safety_line() {
        let cfg = ServerConfig {
            realm: "meet.example.com".into(),
            listening_port: 3478,
            tls: Some(TlsFiles {
                port: 5349,
                cert: "/tls/tls.crt".into(),
                key: "/tls/tls.key".into(),
            }),
            relay_min_port: 49152,
            relay_max_port: 65535,
            denied: parse_cidrs(&["10.0.0.0/8".into(), "::ffff:0:0/96".into()]).expect("cidrs"),
            allowed: parse_cidrs(&["203.0.113.7/32".into()]).expect("cidrs"),
            prometheus_port: 9641,
            listening_ips: vec![],
            relay_ips: vec![],
            external_ip: None,
        };
        let conf = render(&cfg);
        for want in [
            "use-auth-secret",
            "realm=meet.example.com",
            "listening-port=3478",
            "tls-listening-port=5349",
            "cert=/tls/tls.crt",
            "no-cli",
            "no-multicast-peers",
            "prometheus",
            "denied-peer-ip=10.0.0.0-10.255.255.255",
            "denied-peer-ip=::ffff:0.0.0.0-::ffff:255.255.255.255",
            "allowed-peer-ip=203.0.113.7",
        ] {
            assert!(conf.lines().any(|l| l == want), "missing {want:?} in\n{conf}");
        }
        assert!(
            !conf.contains("static-auth-secret"),
            "the secret never lands in the ConfigMap"
        );
    }
}
