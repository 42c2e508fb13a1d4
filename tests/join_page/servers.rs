//! The real servers of the browser test, each killed however the test ends: coturn with the
//! operator's rendering, livekit-server with rooms not created on demand, and `conclave web`.

use super::daemon::Daemon;
pub use super::daemon::http_get;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use conclave::turn::{self, ServerConfig};

/// Whether a STUN Binding request to `addr` gets any answer within 200ms.
pub fn stun_answers(addr: SocketAddr) -> bool {
    let Ok(sock) = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)) else {
        return false;
    };
    // Binding request: type 0x0001, no attributes, magic cookie, a fixed transaction id.
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(b"conclave-jp1");
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 512];
    sock.send_to(&req, addr).is_ok()
        && sock
            .recv_from(&mut buf)
            .is_ok_and(|(n, _)| n >= 20 && buf[0..2] == [0x01, 0x01])
}

/// coturn as the operator configures it for a default Bridge, listening and relaying on `ip`.
pub fn coturn(dir: &Path, logs: &Path, ip: IpAddr, port: u16, secret: &str) -> Daemon {
    let spec: conclave::api::BridgeSpec =
        serde_json::from_value(serde_json::json!({"domain": "meet.test.example"})).expect("BridgeSpec");
    let operator = ServerConfig::for_bridge(&spec, false).expect("coturn config");
    let server = ServerConfig {
        listening_port: port,
        listening_ips: vec![ip],
        relay_ips: vec![ip],
        ..operator
    };
    let config = format!(
        // Later lines win in coturn's config: only file paths and a line of log per request.
        "{}pidfile={}\nuserdb={}\nverbose\n{}",
        turn::render(&server),
        dir.join("turnserver.pid").display(),
        dir.join("turndb").display(),
        turn::secret_line(secret)
    );
    let path = dir.join("turnserver.conf");
    std::fs::write(&path, config).expect("write turnserver.conf");
    let mut cmd = Command::new("turnserver");
    cmd.arg("-c").arg(&path);
    Daemon::start("turnserver", cmd, logs)
}

/// The livekit-server settings of the test: one node on `ip`, rooms only through RoomService,
/// TURN through the coturn at `turn`, its own TURN off. `rtc.ips` keeps ICE on `ip` alone: the
/// namespace also holds coturn's address, and a second host candidate mapped to the same
/// `node_ip` would let the SFU answer from coturn's address (an SFU pod has one interface).
pub fn livekit_config(
    ip: IpAddr,
    port: u16,
    udp_port: u16,
    tcp_port: u16,
    turn: SocketAddr,
    turn_secret: &str,
) -> String {
    format!(
        "port: {port}
bind_addresses: [\"{ip}\"]
rtc:
  udp_port: {udp_port}
  tcp_port: {tcp_port}
  node_ip: {ip}
  use_external_ip: false
  ips:
    includes: [\"{ip}/32\"]
  turn_servers:
    - host: \"{turn_ip}\"
      port: {turn_port}
      protocol: udp
      secret: \"{turn_secret}\"
      ttl: 3600
room:
  auto_create: false
turn:
  enabled: false
logging:
  level: info
",
        turn_ip = turn.ip(),
        turn_port = turn.port()
    )
}

pub fn livekit(binary: &Path, dir: &Path, logs: &Path, config: &str, api_key: &str, api_secret: &str) -> Daemon {
    let path = dir.join("livekit.yaml");
    std::fs::write(&path, config).expect("write livekit.yaml");
    let mut cmd = Command::new(binary);
    cmd.arg("--config")
        .arg(&path)
        .env("LIVEKIT_KEYS", format!("{api_key}: {api_secret}"));
    Daemon::start("livekit-server", cmd, logs)
}

pub struct WebArgs<'a> {
    pub listen: SocketAddr,
    pub livekit_url: &'a str,
    pub static_dir: &'a Path,
    pub rooms_file: &'a Path,
    pub api_key: &'a str,
    pub api_secret: &'a str,
}

pub fn conclave_web(logs: &Path, a: &WebArgs<'_>) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave"));
    cmd.arg("web")
        .arg("--listen")
        .arg(a.listen.to_string())
        .arg("--livekit-url")
        .arg(a.livekit_url)
        .arg("--static-dir")
        .arg(a.static_dir)
        .arg("--rooms-file")
        .arg(a.rooms_file)
        .args(["--rooms-interval", "500ms", "--log-format", "text"])
        .env("LIVEKIT_API_KEY", a.api_key)
        .env("LIVEKIT_API_SECRET", a.api_secret)
        .env("RUST_LOG", "info");
    Daemon::start("conclave-web", cmd, logs)
}
