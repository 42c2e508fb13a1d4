//! Configuration for the programs under test. Secrets never appear in a configuration file
//! that the operator would keep in a ConfigMap: livekit-server takes its API key and Redis
//! password from the environment and the TURN secret from a file only its owner can read;
//! Redis and coturn read theirs from files written with mode 0600.
//!
//! livekit-server's configuration is written by hand here, to be replaced by the operator's
//! rendering once the LiveKit engine exists. coturn's is the operator's own rendering for a
//! Bridge, changed only in addresses and file paths.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use conclave::api::BridgeSpec;
use conclave::api::bridge::DEFAULT_DENIED_PEER_CIDRS;
use conclave::turn::{self, ServerConfig};

use super::random_hex;

/// The secrets of one deployment, generated fresh for each run.
#[derive(Clone)]
pub struct Secrets {
    pub api_key: String,
    /// livekit-server wants at least 32 characters.
    pub api_secret: String,
    pub turn_secret: String,
    pub redis_password: String,
}

impl Secrets {
    pub fn generate() -> Secrets {
        Secrets {
            api_key: format!("API{}", random_hex(6)),
            api_secret: random_hex(24),
            turn_secret: random_hex(32),
            redis_password: random_hex(16),
        }
    }
}

/// Writes a file only its owner can read (livekit-server refuses a TURN secret file that
/// others can read).
pub fn write_private(path: &Path, contents: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(contents.as_bytes()).expect("write private file");
}

/// `redis-server` with a password, no persistence, listening on one address.
pub fn redis_conf(addr: SocketAddr, dir: &Path, password: &str) -> String {
    format!(
        "bind {ip}\nport {port}\nprotected-mode yes\nrequirepass {password}\nsave \"\"\nappendonly no\n\
         dir {dir}\nlogfile \"\"\ndaemonize no\n",
        ip = addr.ip(),
        port = addr.port(),
        dir = dir.display(),
    )
}

/// The realm coturn runs under (the Bridge's domain).
pub const TURN_REALM: &str = "turn.test.example";

/// coturn as the operator configures it for a Bridge whose TURN must reach the SFU nodes at
/// `sfu_ips`: the default deny list plus `denied_extra` (the nodes' own range, as a cluster's
/// private node addresses are denied by default), and each SFU address allowed explicitly
/// through `allowedPeerCIDRs`. Listens and relays on `ip`.
pub fn coturn_conf(dir: &Path, ip: Ipv4Addr, denied_extra: &str, sfu_ips: &[Ipv4Addr], secret: &str) -> String {
    let mut denied: Vec<String> = DEFAULT_DENIED_PEER_CIDRS.iter().map(|s| s.to_string()).collect();
    denied.push(denied_extra.to_owned());
    let allowed: Vec<String> = sfu_ips.iter().map(|a| format!("{a}/32")).collect();
    let spec: BridgeSpec = serde_json::from_value(serde_json::json!({
        "domain": TURN_REALM,
        "turn": { "deniedPeerCIDRs": denied, "allowedPeerCIDRs": allowed },
    }))
    .expect("BridgeSpec");
    let operator = ServerConfig::for_bridge(&spec, false).expect("coturn config for the Bridge");
    let server = ServerConfig {
        listening_ips: vec![IpAddr::V4(ip)],
        relay_ips: vec![IpAddr::V4(ip)],
        ..operator
    };
    let extra = [
        format!("pidfile={}", dir.join("turnserver.pid").display()),
        format!("userdb={}", dir.join("turndb").display()),
        // One line per request: the test reads which credentials coturn accepted.
        "verbose".to_owned(),
    ];
    // Later lines win in coturn's config, so these override the rendered file paths.
    format!(
        "{}{}\n{}",
        turn::render(&server),
        extra.join("\n"),
        turn::secret_line(secret)
    )
}

/// The TURN port coturn listens on (the Bridge's default).
pub fn turn_port() -> u16 {
    let spec: BridgeSpec = serde_json::from_value(serde_json::json!({ "domain": TURN_REALM })).expect("BridgeSpec");
    u16::try_from(spec.turn.port).expect("port")
}

/// One livekit-server process: a node with its own address and ports.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: &'static str,
    pub ip: Ipv4Addr,
    /// Signalling and HTTP API.
    pub http_port: u16,
    /// ICE over TCP.
    pub tcp_port: u16,
    /// The one muxed UDP port all media uses.
    pub udp_port: u16,
}

impl Node {
    pub fn url(&self) -> String {
        format!("ws://{}:{}", self.ip, self.http_port)
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.http_port))
    }
}

/// What livekit-server is told about the TURN server it hands to clients.
pub struct Turn {
    pub host: Ipv4Addr,
    pub port: u16,
    pub ttl_seconds: u32,
    pub secret_file: PathBuf,
}

/// livekit-server's configuration for `node`: one muxed UDP port and an ICE/TCP port, the
/// node's address advertised as it is (`use_external_ip: false`, no STUN), Redis for routing
/// rooms across nodes, its own TURN server off and coturn handed to clients with credentials
/// livekit-server derives from the shared secret. `strict config` (the default) makes a
/// misspelt key fail the start.
///
/// `rtc.ips.includes` is this test's adaptation: both nodes share one namespace and so see
/// both addresses. Without it each node's UDP mux binds both, advertises both as `node_ip`,
/// and also sends from the other address, which coturn drops (no permission for that peer):
/// relay-only ICE then failed in 4 of 12 runs. A pod has one address; a node with several
/// (hostNetwork) would need the same filter.
pub fn livekit_yaml(node: &Node, redis: SocketAddr, turn: &Turn) -> String {
    format!(
        "\
port: {http}
bind_addresses:
  - {ip}
rtc:
  udp_port: {udp}
  tcp_port: {tcp}
  node_ip: {ip}
  use_external_ip: false
  ips:
    includes:
      - {ip}/32
  turn_servers:
    - host: {turn_host}
      port: {turn_port}
      protocol: udp
      secret_file: {secret_file}
      ttl: {ttl}
redis:
  address: {redis}
turn:
  enabled: false
room:
  auto_create: true
logging:
  level: info
",
        http = node.http_port,
        ip = node.ip,
        udp = node.udp_port,
        tcp = node.tcp_port,
        turn_host = turn.host,
        turn_port = turn.port,
        secret_file = turn.secret_file.display(),
        ttl = turn.ttl_seconds,
    )
}

/// The command that starts livekit-server with `config`, the API key and the Redis password
/// passed in the environment.
pub fn livekit_command(bin: &Path, config: &Path, secrets: &Secrets) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(config)
        .env("LIVEKIT_KEYS", format!("{}: {}", secrets.api_key, secrets.api_secret))
        .env("REDIS_PASSWORD", &secrets.redis_password);
    cmd
}
