//! coturn enforces what Conclave renders. The coturn configuration comes from the operator's own
//! builder for a Bridge (default `deniedPeerCIDRs`, a generated secret, the default credential
//! TTL), changed only where a loopback-only test must (addresses, files, the switch that admits
//! loopback peers at all). A real `turnserver` then has to:
//!
//! 1. accept credentials minted by [`conclave::turn::credentials`] and relay data to a loopback
//!    peer the test allows explicitly through `allowedPeerCIDRs`;
//! 2. refuse expired credentials, credentials signed with another secret and tampered usernames;
//! 3. refuse to relay to every address class in the default deny list, IPv4-mapped IPv6 included.
//!
//! All of this runs in a network namespace with nothing but `lo`, so a failed deny cannot send a
//! packet off the machine: the outer test re-runs this binary under `unshare`, and the inner test
//! refuses to start anywhere else. Without namespaces the test skips loudly, and fails under CI.

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/netns.rs"]
mod netns;
#[path = "turn/stun.rs"]
mod stun;

use std::collections::BTreeSet;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use conclave::api::BridgeSpec;
use conclave::api::bridge::DEFAULT_DENIED_PEER_CIDRS;
use conclave::turn::{self, ServerConfig};
use daemon::Daemon;
use ipnet::IpNet;
use stun::{Client, Failure};

/// The inner test, run by the outer one inside the namespace.
const INNER: &str = "checks_inside_network_namespace";
/// Printed by the inner test when every check ran.
const DONE: &str = "conclave-turn: all coturn checks ran";

/// The loopback peer the Bridge allows explicitly. Not 127.0.0.1, so that 127.0.0.1 itself (the
/// TURN server's own address) is among the refused peers.
const ALLOWED_PEER: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);
const REALM: &str = "turn.test.example";

/// The Bridge under test: schema defaults for everything but the allowed loopback peer.
fn bridge_spec() -> BridgeSpec {
    serde_json::from_value(serde_json::json!({
        "domain": REALM,
        "turn": { "allowedPeerCIDRs": [format!("{ALLOWED_PEER}/32")] },
    }))
    .expect("BridgeSpec")
}

/// A `Go`-style duration as the API takes it (`1h`, `90m`, `1h30m`, `1.5h`, `500ms`).
fn parse_duration(s: &str) -> TimeDelta {
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or_else(|| panic!("unit missing in {s:?}"));
        let (number, tail) = rest.split_at(split);
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let n: f64 = number.parse().unwrap_or_else(|_| panic!("bad number in {s:?}"));
        total += n * match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => panic!("bad unit {unit:?} in {s:?}"),
        };
        rest = tail;
    }
    TimeDelta::milliseconds((total * 1000.0).round() as i64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything the inner test needs to run coturn the way the operator configures it.
struct Setup {
    server: ServerConfig,
    /// The full `turnserver.conf`: the operator's rendering, the test's additions, the secret.
    config: String,
    secret: String,
    ttl: TimeDelta,
}

impl Setup {
    fn new(dir: &Path, port: u16) -> Setup {
        let spec = bridge_spec();
        assert_eq!(
            spec.turn.denied_peer_cidrs, DEFAULT_DENIED_PEER_CIDRS,
            "the Bridge keeps the default deny list"
        );
        let ttl = parse_duration(&spec.turn.credential_ttl);
        // Generated like the operator's Secret: random, never rendered into the config.
        let secret = hex(&stun::random::<32>());
        let operator = ServerConfig::for_bridge(&spec, false).expect("config for the Bridge");
        // Loopback only, in both families, so IPv6 peers can be asked for too.
        let loopback = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
        let server = ServerConfig {
            listening_port: port,
            listening_ips: loopback.clone(),
            relay_ips: loopback,
            ..operator.clone()
        };
        assert_eq!(
            ServerConfig {
                listening_port: operator.listening_port,
                listening_ips: vec![],
                relay_ips: vec![],
                ..server.clone()
            },
            operator,
            "only addresses and the port differ from the operator's configuration"
        );
        let rendered = turn::render(&server);
        // Later lines win in coturn's config, so these override the rendered file paths.
        let extra = [
            // coturn refuses every loopback peer before it looks at allowed-peer-ip; without this
            // the allowed peer could not be reached. The deny list still covers 127/8 and ::1.
            "allow-loopback-peers".to_owned(),
            format!("pidfile={}", dir.join("turnserver.pid").display()),
            format!("userdb={}", dir.join("turndb").display()),
            // One log line per request, for the failure report.
            "verbose".to_owned(),
        ];
        let config = format!("{rendered}{}\n{}", extra.join("\n"), turn::secret_line(&secret));
        Setup {
            server,
            config,
            secret,
            ttl,
        }
    }
}

/// Peers that must be refused: every class of the default list, first and last
/// address, plus the addresses named in the issue and the allowed peer's neighbours.
fn denied_peers() -> Vec<IpAddr> {
    let mut peers: Vec<IpAddr> = [
        "127.0.0.1",
        "127.0.0.2",
        "127.77.0.0",
        "127.77.0.2",
        "127.255.255.254",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fd00::1",
        "fdff:ffff::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:127.77.0.2",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",
        "64:ff9b::7f00:1",
        // NAT64 local-use (RFC 8215), IPv4 embedded as RFC 6052 does at /96 and at /48 (where
        // bits 64-71 are skipped): 10.0.0.1 and 169.254.169.254.
        "64:ff9b:1::a00:1",
        "64:ff9b:1:a00:0:100::",
        "64:ff9b:1:a9fe:a9:fe00::",
        // 6to4: bits 16-47 are the IPv4 address: 10.0.0.1, 127.0.0.1, 169.254.169.254, 192.168.1.1.
        "2002:a00:1::1",
        "2002:7f00:1::1",
        "2002:a9fe:a9fe::1",
        "2002:c0a8:101::1",
        // Teredo: server 192.0.2.1, then the client's address XOR ffff:ffff in the last 32
        // bits: 10.0.0.1 (f5ff:fffe) and 127.0.0.1 (80ff:fffe).
        "2001:0:c000:201:0:0:f5ff:fffe",
        "2001:0:c000:201:8000:ffff:80ff:fffe",
    ]
    .iter()
    .map(|s| s.parse().expect("address"))
    .collect();
    for cidr in DEFAULT_DENIED_PEER_CIDRS {
        let net: IpNet = cidr.parse().expect("default CIDR");
        let first = net.hosts().next().unwrap_or(net.network());
        peers.extend([first, net.broadcast()]);
    }
    let mut seen = BTreeSet::new();
    peers.retain(|p| seen.insert(*p));
    let defaults: Vec<IpNet> = DEFAULT_DENIED_PEER_CIDRS
        .iter()
        .map(|c| c.parse().expect("default CIDR"))
        .collect();
    for p in &peers {
        assert_ne!(*p, IpAddr::V4(ALLOWED_PEER));
        assert!(
            defaults.iter().any(|n| n.contains(p)),
            "{p} is in no default class; the sample list is wrong"
        );
    }
    peers
}

/// The inclusive ranges of the config's `key=` lines (`a` or `a-b`).
fn ranges(config: &str, key: &str) -> Vec<(IpAddr, IpAddr)> {
    let prefix = format!("{key}=");
    config
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|v| {
            let (a, b) = v.split_once('-').unwrap_or((v, v));
            let parse = |s: &str| {
                s.parse::<IpAddr>()
                    .unwrap_or_else(|_| panic!("coturn ignores {key}={v}: not an address or a range"))
            };
            (parse(a), parse(b))
        })
        .collect()
}

/// Whether `ip` lies in `a..=b`, numerically and within one family.
fn in_range(ip: IpAddr, (a, b): (IpAddr, IpAddr)) -> bool {
    match (ip, a, b) {
        (IpAddr::V4(ip), IpAddr::V4(a), IpAddr::V4(b)) => a <= ip && ip <= b,
        (IpAddr::V6(ip), IpAddr::V6(a), IpAddr::V6(b)) => a <= ip && ip <= b,
        _ => false,
    }
}

/// The configuration text itself denies every sample and allows only the allowed peer. The
/// unspecified addresses are the exception: coturn refuses them built in, and reads them as
/// "unbounded" in a range, so they are never written (the live check covers them).
fn assert_config_denies(config: &str) {
    let denied = ranges(config, "denied-peer-ip");
    let allowed = ranges(config, "allowed-peer-ip");
    assert_eq!(
        allowed,
        [(IpAddr::V4(ALLOWED_PEER), IpAddr::V4(ALLOWED_PEER))],
        "allowed-peer-ip lines in\n{config}"
    );
    let mut missing = Vec::new();
    for peer in denied_peers() {
        if peer.is_unspecified() {
            continue;
        }
        if !denied.iter().any(|r| in_range(peer, *r)) {
            missing.push(peer.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "no denied-peer-ip line covers {missing:?} in\n{config}"
    );
    for (a, b) in &denied {
        assert!(
            !a.is_unspecified() && !b.is_unspecified(),
            "coturn reads {a}-{b} as unbounded"
        );
    }
    for line in [
        "no-multicast-peers",
        "use-auth-secret",
        "no-cli",
        "allow-loopback-peers",
    ] {
        assert!(config.lines().any(|l| l == line), "missing {line:?} in\n{config}");
    }
    assert_eq!(config.matches("static-auth-secret=").count(), 1, "exactly one secret");
}

#[test]
fn rendered_config_denies_every_default_class() {
    let dir = tempfile::tempdir().expect("tempdir");
    let setup = Setup::new(dir.path(), 3478);
    assert_config_denies(&setup.config);
    let rendered = turn::render(&setup.server);
    assert!(
        setup.config.starts_with(&rendered),
        "the operator's rendering is used unchanged"
    );
    assert!(
        !rendered.contains(&setup.secret),
        "the secret is not in the rendered ConfigMap"
    );
    assert_eq!(setup.ttl, TimeDelta::hours(1), "default credentialTTL");
}

#[test]
fn coturn_enforces_the_rendered_policy() {
    netns::Outer {
        inner: INNER,
        done: DONE,
        what: "TURN credentials or denied peers",
        timeout: Duration::from_secs(180),
        env: Vec::new(),
    }
    .run();
}

/// `turnserver` with `config`, killed however the test ends; ready once both listeners answer
/// a Binding request.
fn turnserver(config: &Path, dir: &Path, port: u16) -> Daemon {
    let mut cmd = Command::new("turnserver");
    cmd.arg("-c").arg(config);
    let mut server = Daemon::start("turnserver", cmd, dir);
    let servers = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ];
    let clients = servers.map(Client::new);
    let mut ready = [false; 2];
    server.wait_ready(
        &format!("answering Binding requests on {servers:?}"),
        Duration::from_secs(20),
        || {
            for (c, r) in clients.iter().zip(ready.iter_mut()) {
                *r = *r || c.binding(Duration::from_millis(100)).is_ok();
            }
            ready.iter().all(|r| *r)
        },
    );
    server
}

/// A port nothing in the namespace uses yet, for UDP and TCP.
fn free_port() -> u16 {
    netns::wait_until(Duration::from_secs(5), || {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
        let port = udp.local_addr().ok()?.port();
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).ok()?;
        UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).ok()?;
        Some(port)
    })
    .expect("a free port")
}

/// The results of the live checks: one line per case, and what went wrong.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    fn check(&mut self, case: &str, observed: String, ok: bool) {
        let line = format!("{} {case}: {observed}", if ok { "ok  " } else { "FAIL" });
        println!("{line}");
        if !ok {
            self.failures.push(line.clone());
        }
        self.lines.push(line);
    }
}

fn show<T: std::fmt::Debug>(r: &Result<T, Failure>) -> String {
    match r {
        Ok(v) => format!("success {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
#[ignore = "runs only inside the network namespace coturn_enforces_the_rendered_policy creates"]
fn checks_inside_network_namespace() {
    if !netns::is_inner() {
        eprintln!(
            "{INNER} runs only under coturn_enforces_the_rendered_policy, in a network namespace; not running it here"
        );
        return;
    }
    netns::enter_loopback();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let setup = Setup::new(dir.path(), port);
    assert_config_denies(&setup.config);
    let conf = dir.path().join("turnserver.conf");
    std::fs::write(&conf, &setup.config).expect("write turnserver.conf");
    let started = Instant::now();
    let server = turnserver(&conf, dir.path(), port);
    println!("turnserver ready on port {port} after {:?}", started.elapsed());

    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    let secret = setup.secret.as_bytes();
    let now = Utc::now();
    let mut report = Report::default();

    // 1. Valid credentials: allocation, permission and relaying both ways with the allowed peer.
    let good = turn::credentials(secret, "alice", now + setup.ttl);
    let mut client = Client::new(v4);
    let relayed = client.allocate(&good.username, &good.password, false);
    let relay_ports = setup.server.relay_min_port..=setup.server.relay_max_port;
    let ok = matches!(relayed, Ok(a) if a.ip() == Ipv4Addr::LOCALHOST && relay_ports.contains(&a.port()));
    report.check("valid credentials, IPv4 Allocate", show(&relayed), ok);
    let relayed = relayed.unwrap_or_else(|e| panic!("cannot continue without an allocation: {e}\n{}", server.log()));

    let peer = UdpSocket::bind((ALLOWED_PEER, 0)).expect("bind the allowed peer");
    let peer_addr = peer.local_addr().expect("peer address");
    let permitted = client.create_permission(peer_addr.ip());
    report.check(
        &format!("CreatePermission for the allowed peer {}", peer_addr.ip()),
        show(&permitted),
        permitted.is_ok(),
    );

    let payload = format!("conclave relay check {}", hex(&stun::random::<8>())).into_bytes();
    client.send(peer_addr, &payload);
    peer.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("peer timeout");
    let mut buf = [0; 2048];
    let arrived = peer.recv_from(&mut buf).map(|(n, from)| (from, buf[..n].to_vec()));
    let ok = matches!(&arrived, Ok((from, data)) if *from == relayed && *data == payload);
    let observed = match &arrived {
        Ok((from, data)) => format!("{} bytes from {from}: {:?}", data.len(), String::from_utf8_lossy(data)),
        Err(e) => format!("nothing within 5s: {e}"),
    };
    report.check(
        "Send indication reaches the allowed peer, from the relayed address",
        observed,
        ok,
    );

    let answer = format!("conclave relay answer {}", hex(&stun::random::<8>())).into_bytes();
    peer.send_to(&answer, relayed).expect("peer answers");
    let back = client.receive(Duration::from_secs(5));
    let ok = matches!(&back, Ok((from, data)) if *from == peer_addr && *data == answer);
    let observed = match &back {
        Ok((from, data)) => format!("{} bytes from {from}: {:?}", data.len(), String::from_utf8_lossy(data)),
        Err(e) => e.to_string(),
    };
    report.check("the peer's answer comes back as a Data indication", observed, ok);

    // 2. Bad credentials are refused with 401, each on its own transport.
    let expired = turn::credentials(secret, "alice", now - TimeDelta::seconds(60));
    let other = turn::credentials(b"another-secret", "alice", now + setup.ttl);
    // Tampering keeps a password the secret really signed and changes the username it signed.
    let tampered_user = good.username.replace(":alice", ":mallory");
    let extended_user = format!("{}:alice", (now + setup.ttl).timestamp());
    for (case, username, password) in [
        (
            "expired credentials (60s past expiry)",
            expired.username.as_str(),
            expired.password.as_str(),
        ),
        (
            "credentials signed with another secret",
            other.username.as_str(),
            other.password.as_str(),
        ),
        (
            "tampered username: user part changed",
            tampered_user.as_str(),
            good.password.as_str(),
        ),
        (
            "tampered username: expired expiry pushed forward",
            extended_user.as_str(),
            expired.password.as_str(),
        ),
    ] {
        let r = Client::new(v4).allocate(username, password, false);
        let ok = matches!(&r, Err(Failure::Refused { code: 401, .. }));
        report.check(case, show(&r), ok);
    }

    // 3. Denied peers: CreatePermission only (the address travels as data), never a Send.
    let mut client6 = Client::new(v6);
    let relayed6 = client6.allocate(&good.username, &good.password, true);
    let ok = matches!(relayed6, Ok(a) if a.ip() == Ipv6Addr::LOCALHOST);
    report.check("valid credentials, IPv6 Allocate (for IPv6 peers)", show(&relayed6), ok);
    // Control: the IPv6 relay grants a permission for an address outside the deny list
    // (documentation prefix; no route exists in the namespace and nothing is sent to it).
    let control: IpAddr = "2001:db8::1".parse().expect("address");
    let r = client6.create_permission(control);
    report.check(
        &format!("control: CreatePermission for {control} (not denied)"),
        show(&r),
        r.is_ok(),
    );
    for peer in denied_peers() {
        let via = if peer.is_ipv4() { &client } else { &client6 };
        let r = via.create_permission(peer);
        let ok = matches!(&r, Err(Failure::Refused { code: 403, .. }));
        report.check(&format!("CreatePermission for denied {peer}"), show(&r), ok);
    }

    // The test's file paths override the rendered ones (later lines win).
    let pidfile = dir.path().join("turnserver.pid");
    let ok = pidfile.exists();
    report.check(
        "turnserver writes its pidfile into the test's directory",
        format!("{} exists: {ok}", pidfile.display()),
        ok,
    );
    let log = server.log();
    drop(server);
    // coturn drops a peer rule it cannot parse with only a log line: that would fail open.
    let ok = !log.contains("Wrong address format");
    report.check(
        "coturn parsed every peer rule",
        if ok {
            "no format errors".into()
        } else {
            "Wrong address format in the log".into()
        },
        ok,
    );
    let mut seen = BTreeSet::new();
    let interesting: Vec<&str> = log
        .lines()
        .filter(|l| ["ERROR", "Bad configuration", "Wrong"].iter().any(|k| l.contains(k)))
        .filter(|l| seen.insert(*l))
        .collect();
    println!(
        "---- turnserver log (refusals and errors) ----\n{}",
        interesting.join("\n")
    );
    assert!(
        report.failures.is_empty(),
        "{} of {} checks failed:\n{}\n---- full turnserver log ----\n{log}",
        report.failures.len(),
        report.lines.len(),
        report.failures.join("\n")
    );
    println!(
        "{} checks passed in {:?}\n{DONE}",
        report.lines.len(),
        started.elapsed()
    );
}
