//! `conclave web` as a process, without a browser or an SFU: the routes, the headers every
//! response carries, the guest exchange and its refusals, and the start-up checks. The browser
//! test (`tests/join_page.rs`) covers the page against a real LiveKit.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use conclave::api::common::E2eePolicy;
use conclave::engine::livekit::token::{self, KeyDistribution, Participant, Policy};
use conclave::meeting::schedule::Window;

const KEY: &str = "APIwebtest";
const SECRET: &str = "0123456789abcdef0123456789abcdef-web";

struct Web {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn page_files(dir: &Path) {
    std::fs::write(dir.join("index.html"), "<!doctype html><title>page</title>").expect("index");
    std::fs::write(dir.join("app.js"), "console.log(1)").expect("app.js");
    std::fs::write(dir.join(".secret"), "never served").expect("dot file");
}

fn start_with(secret: &str, livekit_url: &str, extra: &[&str]) -> Result<Web, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    page_files(dir.path());
    // Port 0, and the address read back from the server's own log line: a port picked here and
    // bound later could be taken by a parallel test in between, and then this test would talk
    // to that test's server.
    let mut child = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["web", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--livekit-url", livekit_url])
        .arg("--static-dir")
        .arg(dir.path())
        .args(extra)
        .env("LIVEKIT_API_KEY", KEY)
        .env("LIVEKIT_API_SECRET", secret)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start conclave web");
    let listening = listening_address(child.stdout.take().expect("stdout"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(addr) = listening.recv_timeout(Duration::from_millis(50)) {
            return Ok(Web { child, addr, _dir: dir });
        }
        if let Some(status) = child.try_wait().expect("poll") {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            return Err(format!("exited {status}: {err}"));
        }
        assert!(Instant::now() < deadline, "conclave web did not say where it listens");
    }
}

/// Reads the server's JSON log lines for the one that names the bound address, and keeps
/// draining them afterwards so the server never blocks on a full pipe.
fn listening_address(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<SocketAddr> {
    const SERVING: &str = "serving the join page on ";
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let message = entry["fields"]["message"].as_str().unwrap_or_default();
            if let Some(addr) = message.strip_prefix(SERVING).and_then(|a| a.parse().ok()) {
                let _ = tx.send(addr);
            }
        }
    });
    rx
}

fn start(secret: &str, extra: &[&str]) -> Result<Web, String> {
    start_with(secret, "wss://meet.example.com", extra)
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn request(addr: SocketAddr, method: &str, path: &str, content_type: Option<&str>, body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn window(from_now: chrono::Duration, length: chrono::Duration) -> Window {
    let start = Utc::now() + from_now;
    Window {
        not_before: start,
        expires: start + length,
    }
}

fn policy() -> Policy {
    Policy {
        e2ee: E2eePolicy::Required,
        key_distribution: KeyDistribution::Link,
    }
}

fn guest_token(lobby: bool, w: Window, secret: &str) -> String {
    token::sign(
        &token::guest_claims(KEY, "standup", policy(), lobby, w),
        secret.as_bytes(),
    )
    .expect("sign")
}

fn exchange(web: &Web, guest: &str, name: &str) -> Reply {
    let body = serde_json::json!({"guest": guest, "name": name}).to_string();
    request(web.addr, "POST", "/_conclave/guest", Some("application/json"), &body)
}

#[test]
fn serves_the_page_with_strict_headers() {
    let web = start(SECRET, &[]).expect("start");
    let csp = "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; img-src 'self'; \
               media-src 'self'; connect-src 'self' wss://meet.example.com https://meet.example.com; \
               base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    for path in ["/", "/standup", "/standup?token=a.b.c", "/index.html"] {
        let r = request(web.addr, "GET", path, None, "");
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body.contains("<title>page</title>"), "{path}: {}", r.body);
        assert_eq!(r.header("content-security-policy"), Some(csp), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    }
    let js = request(web.addr, "GET", "/app.js", None, "");
    assert_eq!((js.status, js.body.as_str()), (200, "console.log(1)"));
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(js.header("cache-control"), Some("no-cache"));
    assert_eq!(js.header("content-security-policy"), Some(csp));

    let dot = request(web.addr, "GET", "/.secret", None, "");
    assert!(!dot.body.contains("never served"), "dot files stay private");
    for path in ["/a/b", "/../Cargo.toml", "/%2e%2e/Cargo.toml"] {
        let r = request(web.addr, "GET", path, None, "");
        assert!(
            r.status == 404 || !r.body.contains("[package]"),
            "{path}: {} {}",
            r.status,
            r.body
        );
    }
    let head = request(web.addr, "HEAD", "/standup", None, "");
    assert_eq!(head.status, 200);

    let config = request(web.addr, "GET", "/_conclave/config", None, "");
    assert_eq!(
        config.json(),
        serde_json::json!({"livekitUrl": "wss://meet.example.com"})
    );
    assert_eq!(config.header("cache-control"), Some("no-store"));
    assert_eq!(request(web.addr, "GET", "/healthz", None, "").status, 200);
    assert_eq!(
        request(web.addr, "GET", "/readyz", None, "").status,
        200,
        "no rooms file: ready with the page"
    );
    assert_eq!(request(web.addr, "DELETE", "/standup", None, "").status, 405);
    assert_eq!(request(web.addr, "GET", "/_conclave/guest", None, "").status, 405);
}

#[test]
fn guest_exchange_issues_fresh_identities_and_refuses_bad_links() {
    let web = start(SECRET, &[]).expect("start");
    let hour = chrono::Duration::hours(1);
    let valid = window(chrono::Duration::minutes(-1), hour);
    let guest = guest_token(true, valid, SECRET);

    let a = exchange(&web, &guest, "  Gina  ");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let ta = a.json()["token"].as_str().expect("token").to_owned();
    let ca = token::verify(&ta, KEY, SECRET.as_bytes()).expect("a LiveKit token signed with the API secret");
    assert_eq!(ca.name, "Gina");
    assert!(ca.sub.starts_with(token::GUEST_IDENTITY_PREFIX));
    assert!(
        ca.video.room_join && ca.video.can_subscribe == Some(false),
        "lobby: no media yet"
    );
    let b = exchange(&web, &guest, "Gina");
    let cb = token::verify(b.json()["token"].as_str().expect("token"), KEY, SECRET.as_bytes()).expect("verify");
    assert_ne!(ca.sub, cb.sub, "the same link twice gives two identities");

    let open = exchange(&web, &guest_token(false, valid, SECRET), "Gus");
    let co = token::verify(open.json()["token"].as_str().expect("token"), KEY, SECRET.as_bytes()).expect("verify");
    assert_eq!(co.video.can_subscribe, Some(true), "no lobby: member grants");

    let member = token::access_claims(
        KEY,
        "standup",
        Participant {
            identity: "alice",
            name: "Alice",
            moderator: true,
        },
        policy(),
        valid,
    );
    let member = token::sign(&member, SECRET.as_bytes()).expect("sign");
    let refused = [
        (
            exchange(&web, &member, "Mallory"),
            403,
            "a member's token is not a guest link",
        ),
        (
            exchange(&web, &guest_token(true, valid, "another secret of 32 characters!"), "M"),
            403,
            "wrong secret",
        ),
        (
            exchange(&web, &guest_token(true, window(-hour * 2, hour), SECRET), "M"),
            403,
            "expired",
        ),
        (
            exchange(&web, &guest_token(true, window(hour, hour), SECRET), "M"),
            403,
            "not yet valid",
        ),
        (exchange(&web, "not-a-jwt", "M"), 403, "garbage"),
        (exchange(&web, &guest, "   "), 400, "empty name"),
        (exchange(&web, &guest, &"x".repeat(65)), 400, "name too long"),
        (
            request(web.addr, "POST", "/_conclave/guest", Some("text/plain"), "{}"),
            415,
            "not JSON",
        ),
        (
            request(
                web.addr,
                "POST",
                "/_conclave/guest",
                Some("application/json"),
                "{\"guest\":1}",
            ),
            400,
            "malformed",
        ),
        (
            request(
                web.addr,
                "POST",
                "/_conclave/guest",
                Some("application/json"),
                &format!("{{\"guest\":\"{}\",\"name\":\"x\"}}", "a".repeat(20_000)),
            ),
            413,
            "too large",
        ),
    ];
    for (reply, status, why) in refused {
        assert_eq!(reply.status, status, "{why}: {}", reply.body);
        assert!(reply.json()["error"].is_string(), "{why}: a reason is given");
        assert!(!reply.body.contains("token\""), "{why}: no token");
    }
}

#[test]
fn a_guest_link_lets_in_its_burst_then_asks_to_wait() {
    let web = start(SECRET, &["--guest-burst", "2", "--guest-per-minute", "1"]).expect("start");
    let valid = window(chrono::Duration::minutes(-1), chrono::Duration::hours(1));
    let (link, other) = (guest_token(true, valid, SECRET), guest_token(false, valid, SECRET));
    for name in ["Gina", "Gus"] {
        let r = exchange(&web, &link, name);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let refused = exchange(&web, &link, "Greta");
    assert_eq!(refused.status, 429, "{}", refused.body);
    let wait: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&wait), "one more guest per minute: {wait}");
    let said = refused.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        said.contains("this link") && said.contains(&format!("{wait} s")),
        "{said}"
    );
    assert!(refused.json().get("token").is_none());
    assert_eq!(
        exchange(&web, &other, "Gus").status,
        200,
        "another link is not held back"
    );
}

#[test]
fn refuses_to_start_without_usable_settings() {
    let err = start("short", &[]).err().expect("a short secret is refused");
    assert!(err.contains("shorter than 32"), "{err}");
    let err = start_with(SECRET, "ftp://x", &[]).err().expect("bad URL refused");
    assert!(err.contains("scheme"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["web", "--livekit-url", "wss://x", "--api-key", KEY])
        .env_remove("LIVEKIT_API_SECRET")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LIVEKIT_API_SECRET"));
}

#[test]
fn readiness_waits_for_the_rooms_file_to_be_applied() {
    // A port held by a listener that never answers: the rooms can never be applied, and no
    // parallel test can take the port meanwhile.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let api = format!("http://{}", silent.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("tempdir");
    let rooms = dir.path().join("rooms.json");
    std::fs::write(&rooms, r#"{"rooms":[{"name":"standup"}]}"#).expect("rooms");
    let web = start(
        SECRET,
        &[
            "--rooms-file",
            rooms.to_str().expect("utf-8"),
            "--livekit-api-url",
            &api,
            "--rooms-interval",
            "100ms",
        ],
    )
    .expect("start");
    let r = request(web.addr, "GET", "/readyz", None, "");
    assert_eq!((r.status, r.body.trim()), (503, "rooms not yet in sync"));
    assert_eq!(request(web.addr, "GET", "/healthz", None, "").status, 200);
}
