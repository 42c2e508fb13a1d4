//! livekit-server's configuration for one SFU replica, as the YAML file livekit-server reads
//! (`--config`). It holds no secret: the API key and secret and the Redis passwords reach the
//! process through its environment, the TURN secret through a file only the pod can read (see
//! [`super::sfu`]).
//!
//! - One muxed UDP port per replica (`rtc.udp_port` = `media.port + N`) and an ICE/TCP port with
//!   the same number (`rtc.tcp_port`): TCP and UDP ports are separate spaces, so the replica's one
//!   number serves both, and any number of replicas share nodes and addresses.
//! - `rtc.node_ip` is exactly what the replica advertises (the same placement as Jitsi), and
//!   `use_external_ip: false`: LiveKit then rewrites every host candidate to it and never asks a
//!   STUN server what its address is.
//! - STUN: LiveKit hands clients Google's STUN servers, and asks them itself while it has no
//!   address, unless it is given others. With TURN on, coturn answers STUN on the TURN port;
//!   with TURN off the replica's own media endpoint stands in (clients already send media
//!   there; an SFU with a public address needs no server-reflexive candidate). No third party.
//! - TURN: LiveKit's embedded TURN is off; `rtc.turn_servers` names the Bridge's coturn and
//!   LiveKit mints each participant's credentials from the shared secret, exactly the TURN REST
//!   scheme coturn's `use-auth-secret` checks ([`crate::turn::credentials`]).
//! - Rooms are never created by joining (`room.auto_create: false`): only the rooms of open
//!   Meetings exist, created by the join page's server from [`super::rooms`].

use serde::Serialize;

use super::redis::{self, Redis};
use crate::bridge::context::{Ctx, SfuReplica};
use crate::bridge::objects::invalid;
use crate::duration::parse_duration;

/// Signalling (WebSocket `/rtc`), RoomService (`/twirp`) and the health check (`/`).
pub const SIGNAL_PORT: i32 = 7880;
/// Prometheus metrics.
pub const METRICS_PORT: i32 = 6789;
/// Where the pod finds the TURN secret; livekit-server refuses the file if others can read it.
pub const TURN_SECRET_FILE: &str = "/etc/livekit-secrets/turn-secret";
/// livekit-server's log level. `info` logs every join with the participant's identity (the
/// Meeting participant's `name`); `warn` keeps people out of the SFU's logs.
pub const LOG_LEVEL: &str = "warn";

/// The configuration file, in livekit-server's key names and in the order it is written.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Config {
    pub port: i32,
    pub prometheus: Prometheus,
    pub rtc: Rtc,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    pub turn: EmbeddedTurn,
    pub room: Room,
    pub logging: Logging,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Prometheus {
    pub port: i32,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Rtc {
    pub udp_port: i32,
    pub tcp_port: i32,
    /// `<ipv4>`, `<ipv6>` or `<ipv4>,<ipv6>`; absent until the replica's address is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<String>,
    pub use_external_ip: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stun_servers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub turn_servers: Vec<TurnServer>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct TurnServer {
    pub host: String,
    pub port: i32,
    /// `udp`, `tcp` or `tls`.
    pub protocol: &'static str,
    pub secret_file: String,
    /// Lifetime of the credentials LiveKit mints, in seconds.
    pub ttl: u64,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct RedisConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_master_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sentinel_addresses: Vec<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct EmbeddedTurn {
    pub enabled: bool,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Room {
    pub auto_create: bool,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Logging {
    pub level: &'static str,
    pub json: bool,
}

/// `rtc.node_ip` from the replica's advertised addresses: the first of each family (LiveKit
/// takes at most one IPv4 and one IPv6).
pub fn node_ip(r: &SfuReplica) -> Option<String> {
    let parsed: Vec<std::net::IpAddr> = r.advertise.iter().filter_map(|a| a.parse().ok()).collect();
    let v4 = parsed.iter().find(|a| a.is_ipv4());
    let v6 = parsed.iter().find(|a| a.is_ipv6());
    let ips: Vec<String> = v4.into_iter().chain(v6).map(ToString::to_string).collect();
    (!ips.is_empty()).then(|| ips.join(","))
}

/// The configuration of replica `r`.
pub fn config(ctx: &Ctx, r: &SfuReplica) -> Result<Config, serde_json::Error> {
    let t = &ctx.spec.turn;
    let node_ip = node_ip(r);
    // Never empty: livekit-server hands clients public STUN servers (Google's) when it has
    // neither STUN nor TURN servers, which tells a third party who joins. The replica's own
    // address, or while that is unknown the Bridge's domain: only the Bridge's own hosts.
    let own_stun = || match &node_ip {
        Some(ips) => ips.split(',').map(|ip| host_port(ip, r.port)).collect::<Vec<_>>(),
        None => vec![host_port(&ctx.spec.domain, r.port)],
    };
    // TURN is announced where clients reach it; until that address is known (TURNReady
    // AwaitingAddress) the SFU hands out its own address for STUN and no TURN server.
    let (stun_servers, turn_servers) = if t.enabled && !ctx.turn_hosts.is_empty() {
        let ttl = parse_duration(&t.credential_ttl)
            .ok_or_else(|| {
                invalid(format!(
                    "spec.turn.credentialTTL {:?} is not a duration",
                    t.credential_ttl
                ))
            })?
            .as_secs()
            .max(1);
        let server = |host: &str, port: i32, protocol| TurnServer {
            host: host.to_string(),
            port,
            protocol,
            secret_file: TURN_SECRET_FILE.into(),
            ttl,
        };
        let mut servers = Vec::new();
        for host in &ctx.turn_hosts {
            servers.push(server(host, t.port, "udp"));
            servers.push(server(host, t.port, "tcp"));
        }
        // TURN over TLS only at the DNS name the certificate holds, as for Jitsi.
        if let Some(host) = t.tls_host().filter(|_| ctx.tls_secret.is_some()) {
            servers.push(server(host, t.tls_port, "tls"));
        }
        let stun = ctx.turn_hosts.iter().map(|h| host_port(h, t.port)).collect();
        (stun, servers)
    } else {
        (own_stun(), Vec::new())
    };
    Ok(Config {
        port: SIGNAL_PORT,
        prometheus: Prometheus { port: METRICS_PORT },
        rtc: Rtc {
            udp_port: r.port,
            tcp_port: r.port,
            node_ip,
            use_external_ip: false,
            stun_servers,
            turn_servers,
        },
        redis: match redis::mode(&ctx.spec) {
            Redis::None => None,
            Redis::Operator => Some(RedisConfig {
                address: Some(format!("{}:{}", ctx.service_host(redis::SUFFIX), redis::PORT)),
                sentinel_master_name: None,
                sentinel_addresses: Vec::new(),
            }),
            Redis::External(e) => Some(RedisConfig {
                address: e.address.clone(),
                sentinel_master_name: e.sentinel.as_ref().map(|s| s.master_name.clone()),
                sentinel_addresses: e.sentinel.as_ref().map(|s| s.addresses.clone()).unwrap_or_default(),
            }),
        },
        turn: EmbeddedTurn { enabled: false },
        room: Room { auto_create: false },
        logging: Logging {
            level: LOG_LEVEL,
            json: true,
        },
    })
}

/// `host:port`, with brackets around an IPv6 address.
fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The YAML file of replica `r`.
pub fn render(ctx: &Ctx, r: &SfuReplica) -> Result<String, serde_json::Error> {
    let c = config(ctx, r)?;
    let yaml = serde_saphyr::to_string(&c).map_err(|e| invalid(format!("writing livekit.yaml: {e}")))?;
    Ok(format!(
        "# livekit-server configuration of SFU replica {} of Bridge {}, rendered by Conclave.\n\
         # Secrets are not here: the API keys and Redis passwords come from the environment.\n{yaml}",
        r.index, ctx.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::bridge::Engine;
    use crate::bridge::objects::fixtures::sample_ctx;

    fn livekit_ctx() -> Ctx {
        let mut ctx = sample_ctx();
        ctx.spec.engine = Engine::LiveKit;
        ctx
    }

    fn yaml(ctx: &Ctx, i: usize) -> serde_json::Value {
        serde_saphyr::from_str(&render(ctx, &ctx.sfu[i]).expect("render")).expect("yaml")
    }

    #[test]
    fn one_port_per_replica_for_udp_and_tcp_and_the_advertised_address() {
        let ctx = livekit_ctx();
        let a = yaml(&ctx, 0);
        assert_eq!(a["port"], 7880);
        assert_eq!(a["rtc"]["udp_port"], 31000);
        assert_eq!(a["rtc"]["tcp_port"], 31000);
        assert_eq!(a["rtc"]["node_ip"], "203.0.113.10");
        assert_eq!(a["rtc"]["use_external_ip"], false);
        assert_eq!(a["room"]["auto_create"], false);
        assert_eq!(a["turn"]["enabled"], false);
        assert_eq!(a["prometheus"]["port"], 6789);
        let b = yaml(&ctx, 1);
        assert_eq!(b["rtc"]["udp_port"], 31001);
        assert!(b["rtc"].get("node_ip").is_none(), "no address yet: {b}");
    }

    #[test]
    fn turn_servers_are_the_bridges_coturn_with_a_secret_file() {
        let mut ctx = livekit_ctx();
        ctx.turn_hosts = vec!["198.51.100.7".into(), "turn.example.com".into()];
        ctx.spec.turn.host = Some("turn.example.com".into());
        let a = yaml(&ctx, 0);
        let servers = a["rtc"]["turn_servers"].as_array().expect("turn servers").clone();
        let got: Vec<(String, i64, String)> = servers
            .iter()
            .map(|s| {
                assert_eq!(s["secret_file"], TURN_SECRET_FILE);
                assert_eq!(s["ttl"], 7200, "spec.turn.credentialTTL 2h");
                assert!(s.get("secret").is_none(), "no secret in the file");
                (
                    s["host"].as_str().unwrap_or_default().to_string(),
                    s["port"].as_i64().unwrap_or_default(),
                    s["protocol"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        // TLS only at the DNS name the certificate holds.
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], ("198.51.100.7".into(), 3478, "udp".into()));
        assert_eq!(got[1], ("198.51.100.7".into(), 3478, "tcp".into()));
        assert_eq!(got[4], ("turn.example.com".into(), 5349, "tls".into()));
        assert_eq!(
            a["rtc"]["stun_servers"],
            serde_json::json!(["198.51.100.7:3478", "turn.example.com:3478"])
        );
    }

    #[test]
    fn turn_address_unknown_means_own_stun_and_no_turn() {
        let mut ctx = livekit_ctx();
        ctx.turn_hosts.clear();
        let a = yaml(&ctx, 0);
        assert!(a["rtc"].get("turn_servers").is_none(), "{a}");
        assert_eq!(a["rtc"]["stun_servers"], serde_json::json!(["203.0.113.10:31000"]));
        // Replica 1 has no address yet either: the Bridge's own domain, never a third party.
        let b = yaml(&ctx, 1);
        assert_eq!(b["rtc"]["stun_servers"], serde_json::json!(["meet.example.com:31001"]));
    }

    #[test]
    fn without_turn_no_third_party_stun() {
        let mut ctx = livekit_ctx();
        ctx.spec.turn.enabled = false;
        let a = yaml(&ctx, 0);
        assert!(a["rtc"].get("turn_servers").is_none());
        assert_eq!(a["rtc"]["stun_servers"], serde_json::json!(["203.0.113.10:31000"]));
    }

    #[test]
    fn node_ip_takes_one_address_per_family() {
        let r = SfuReplica {
            index: 0,
            port: 1,
            node: None,
            advertise: vec!["2001:db8::1".into(), "192.0.2.1".into(), "192.0.2.2".into()],
        };
        assert_eq!(node_ip(&r).as_deref(), Some("192.0.2.1,2001:db8::1"));
        assert_eq!(host_port("2001:db8::1", 3478), "[2001:db8::1]:3478");
    }

    #[test]
    fn redis_follows_the_pool() {
        let mut ctx = livekit_ctx();
        assert_eq!(
            yaml(&ctx, 0)["redis"]["address"],
            "meet-redis.conf.svc.cluster.local:6379",
            "two replicas: the operator's Redis"
        );
        ctx.spec.sfu.replicas = 1;
        ctx.spec.sfu.max_replicas = None;
        assert!(yaml(&ctx, 0).get("redis").is_none(), "one replica: no Redis");
        ctx.spec.redis = Some(
            serde_json::from_value(
                serde_json::json!({"sentinel": {"masterName": "lk", "addresses": ["s1:26379", "s2:26379"]}}),
            )
            .expect("redis"),
        );
        let r = &yaml(&ctx, 0)["redis"];
        assert_eq!(r["sentinel_master_name"], "lk");
        assert_eq!(r["sentinel_addresses"], serde_json::json!(["s1:26379", "s2:26379"]));
        assert!(r.get("password").is_none());
    }

    #[test]
    fn secrets_never_reach_the_file() {
        let text = render(&livekit_ctx(), &livekit_ctx().sfu[0]).expect("render");
        for word in ["keys:", "secret:", "password:", "key_file"] {
            assert!(!text.contains(word), "{word} in {text}");
        }
    }
}
