//! The browser scenario, inside the namespace: servers up, then one meeting lived through from
//! the first two members to the room's removal. Each step waits on conditions with deadlines;
//! "nothing arrives" is observed over a window measured in frames the others decode meanwhile.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use conclave::api::common::E2eePolicy;
use conclave::engine::livekit::token::{self, KeyDistribution, Participant, Policy};
use conclave::meeting::schedule::Window;
use conclave::web::twirp::{self, Credentials, RoomService};
use serde_json::{Value, json};

use super::browser::Driver;
use super::daemon::Daemon;
use super::servers;

pub const CHROMIUM_ENV: &str = "CONCLAVE_JOIN_PAGE_CHROMIUM";
pub const NODE_ENV: &str = "CONCLAVE_JOIN_PAGE_NODE";
pub const LIVEKIT_ENV: &str = "CONCLAVE_JOIN_PAGE_LIVEKIT";
pub const STATIC_ENV: &str = "CONCLAVE_JOIN_PAGE_STATIC";
pub const OUT_ENV: &str = "CONCLAVE_JOIN_PAGE_OUT";
/// lkclient, when the outer test found one.
pub const LKCLIENT_ENV: &str = "CONCLAVE_JOIN_PAGE_LKCLIENT";

/// The SFU's node address and coturn's, on the two ends of the veth pair.
pub const SFU_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const TURN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const LIVEKIT_PORT: u16 = 7880;
const TURN_PORT: u16 = 3478;
/// The page on loopback: a secure context for camera, microphone and WebCrypto over plain
/// HTTP; in a cluster the Ingress serves it over HTTPS.
const WEB: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
const ROOM: &str = "standup";
const API_KEY: &str = "APIconclavetest";
/// How long any one condition may take to become true.
const WAIT: Duration = Duration::from_secs(60);

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} not set by the outer test")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    hex(&b)
}

pub struct World {
    pub driver: Driver,
    out: PathBuf,
    rt: tokio::runtime::Runtime,
    rooms: RoomService,
    rooms_file: PathBuf,
    secret: String,
    pub key: String,
    window: Window,
    livekit_url: String,
    opened: Vec<String>,
    expected_console: BTreeMap<String, Vec<&'static str>>,
    servers: Vec<Daemon>,
    _dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        let out = env_path(OUT_ENV);
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = random_hex(24);
        let turn_secret = random_hex(32);

        let mut turn = servers::coturn(dir.path(), &out, IpAddr::V4(TURN_IP), TURN_PORT, &turn_secret);
        let turn_addr = SocketAddr::from((TURN_IP, TURN_PORT));
        turn.wait_ready("answering STUN", WAIT, || servers::stun_answers(turn_addr));

        let config = servers::livekit_config(IpAddr::V4(SFU_IP), LIVEKIT_PORT, 7882, 7881, turn_addr, &turn_secret);
        let mut livekit = servers::livekit(&env_path(LIVEKIT_ENV), dir.path(), &out, &config, API_KEY, &secret);
        let sfu = SocketAddr::from((SFU_IP, LIVEKIT_PORT));
        livekit.wait_ready("answering HTTP", WAIT, || {
            servers::http_get(sfu, "/").is_some_and(|(s, _)| s == 200)
        });

        let rooms_file = dir.path().join("rooms.json");
        servers::write_rooms(&rooms_file, &json!({"rooms": [{"name": ROOM, "maxParticipants": 10}]}));
        let livekit_url = format!("ws://{sfu}");
        let static_dir = env_path(STATIC_ENV);
        let mut web = servers::conclave_web(
            &out,
            &servers::WebArgs {
                listen: WEB,
                livekit_url: &livekit_url,
                static_dir: &static_dir,
                rooms_file: &rooms_file,
                api_key: API_KEY,
                api_secret: &secret,
            },
        );
        // Ready means the page is there and the rooms file has been applied to the SFU.
        web.wait_ready("ready", WAIT, || {
            servers::http_get(WEB, "/readyz").is_some_and(|(s, _)| s == 200)
        });

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let rooms = RoomService::new(
            &format!("http://{sfu}"),
            Credentials {
                api_key: API_KEY.into(),
                api_secret: secret.clone(),
            },
        )
        .expect("RoomService");
        let listed = rt.block_on(rooms.list_rooms()).expect("ListRooms");
        assert_eq!(
            listed
                .iter()
                .map(|r| (r.name.as_str(), r.max_participants))
                .collect::<Vec<_>>(),
            [(ROOM, 10)],
            "conclave web created the listed room with its limit, and only it"
        );

        let mut driver = Driver::start(
            &env_path(NODE_ENV),
            &super::tools::repo().join("web/test/driver.mjs"),
            &out.join("driver.log"),
        );
        let profile = dir.path().join("chromium-profile");
        let version = driver.call(json!({
            "cmd": "launch",
            "chromium": env_path(CHROMIUM_ENV),
            "userDataDir": profile,
            "args": ["--disable-pings", "--media-router=0", "--no-default-browser-check"],
        }));
        println!("browser: {version}");
        let now = Utc::now();
        World {
            driver,
            out,
            rt,
            rooms,
            rooms_file,
            secret,
            key: token::new_passphrase(),
            window: Window {
                not_before: now - chrono::Duration::minutes(1),
                expires: now + chrono::Duration::hours(1),
            },
            livekit_url,
            opened: Vec::new(),
            expected_console: BTreeMap::new(),
            servers: vec![turn, livekit, web],
            _dir: dir,
        }
    }

    fn policy() -> Policy {
        Policy {
            e2ee: E2eePolicy::Required,
            key_distribution: KeyDistribution::Link,
        }
    }

    /// An access token as the operator mints it.
    pub fn token(&self, identity: &str, name: &str, moderator: bool) -> String {
        let who = Participant {
            identity,
            name,
            moderator,
        };
        let claims = token::access_claims(API_KEY, ROOM, who, Self::policy(), self.window);
        token::sign(&claims, self.secret.as_bytes()).expect("sign")
    }

    /// The test serves plain HTTP on loopback; the link is otherwise the operator's.
    fn http(link: String) -> String {
        link.replacen("https://", "http://", 1)
    }

    pub fn link(&self, token: &str, key: Option<&str>) -> String {
        Self::http(token::join_link(&WEB.to_string(), ROOM, token, key))
    }

    pub fn guest_link(&self, lobby: bool) -> String {
        let claims = token::guest_claims(API_KEY, ROOM, Self::policy(), lobby, self.window);
        let guest = token::sign(&claims, self.secret.as_bytes()).expect("sign");
        Self::http(token::guest_link(&WEB.to_string(), ROOM, &guest, Some(&self.key)))
    }

    pub fn livekit_url(&self) -> String {
        self.livekit_url.clone()
    }

    pub fn page_url(&self) -> String {
        format!("http://{WEB}/{ROOM}")
    }

    pub fn open(&mut self, id: &str, url: &str, relay_only: bool) -> Value {
        self.opened.push(id.to_owned());
        self.driver
            .call(json!({"cmd": "open", "id": id, "url": url, "relayOnly": relay_only}))
    }

    /// A client joining with LiveKit's SDK and no encryption.
    pub fn open_rogue(&mut self, id: &str, token: &str) -> Value {
        let url = format!("http://{WEB}/");
        let livekit_url = self.livekit_url.clone();
        self.driver
            .call(json!({"cmd": "rogue", "id": id, "url": url, "livekitUrl": livekit_url, "token": token}))
    }

    pub fn close(&mut self, id: &str) {
        self.check_page_errors(id);
        self.driver.call(json!({"cmd": "close", "id": id}));
        self.opened.retain(|o| o != id);
    }

    pub fn screenshot(&mut self, id: &str, name: &str) -> PathBuf {
        let path = self.out.join(format!("{name}.png"));
        self.driver.screenshot(id, &path);
        path
    }

    /// The SFU's view of the room's participants, by identity.
    pub fn sfu(&self) -> BTreeMap<String, twirp::Participant> {
        self.rt
            .block_on(self.rooms.list_participants(ROOM))
            .expect("ListParticipants")
            .into_iter()
            .map(|p| (p.identity.clone(), p))
            .collect()
    }

    pub fn sfu_rooms(&self) -> Vec<String> {
        self.rt
            .block_on(self.rooms.list_rooms())
            .expect("ListRooms")
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    pub fn close_room(&self) {
        servers::write_rooms(&self.rooms_file, &json!({"rooms": []}));
    }

    pub fn servers_alive(&mut self) {
        for s in &mut self.servers {
            s.assert_running();
        }
    }

    /// Fails on any uncaught error, unhandled rejection, CSP violation or error the page itself
    /// recorded, and on any console error but those `expected` for this page (by substring).
    /// The console goes to `<id>.console.log`, with access tokens redacted.
    pub fn check_page_errors(&mut self, id: &str) {
        let expected = self.expected_console.get(id).cloned().unwrap_or_default();
        let seen = self.driver.call(json!({"cmd": "problems", "id": id}));
        let lines: Vec<String> = seen["console"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(redact))
            .collect();
        let log = self.out.join(format!("{id}.console.log"));
        std::fs::write(&log, lines.join("\n")).expect("write console log");
        let problems: Vec<String> = seen["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(redact))
            .filter(|p| p.starts_with("pageerror") || !expected.iter().any(|e| p.contains(e)))
            .collect();
        let hook = self
            .driver
            .eval(id, "window.conclave ? window.conclave.snapshot().errors : []");
        assert!(
            problems.is_empty() && hook.as_array().is_none_or(Vec::is_empty),
            "page {id} had JavaScript errors: {problems:?} {hook}; console in {}",
            log.display()
        );
    }

    /// Console errors page `id` may show (the SDK logs a failed decryption as an error).
    pub fn expect_console(&mut self, id: &str, substrings: &[&'static str]) {
        self.expected_console
            .entry(id.to_owned())
            .or_default()
            .extend(substrings);
    }

    pub fn check_all_pages(&mut self) {
        for id in self.opened.clone() {
            self.check_page_errors(&id);
        }
    }
}

/// A console line with any `access_token=` value cut out (Chromium logs failed WebSocket URLs).
fn redact(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("access_token=") {
        let (head, tail) = rest.split_at(i + "access_token=".len());
        out.push_str(head);
        out.push_str("<redacted>");
        rest = tail.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || "-_.~%".contains(c));
    }
    out.push_str(rest);
    out
}

/// Decoded video frames page `stats` got from `identity`.
pub fn decoded(stats: &Value, identity: &str) -> u64 {
    inbound(stats, identity, "video")
        .map(|s| s["framesDecoded"].as_u64().unwrap_or(0))
        .sum()
}

/// Audio samples and energy page `stats` got from `identity`.
pub fn heard(stats: &Value, identity: &str) -> (u64, f64) {
    inbound(stats, identity, "audio").fold((0, 0.0), |(n, e), s| {
        (
            n + s["totalSamplesReceived"].as_u64().unwrap_or(0),
            e + s["totalAudioEnergy"].as_f64().unwrap_or(0.0),
        )
    })
}

pub fn inbound<'a>(stats: &'a Value, identity: &'a str, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    stats
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |s| s["identity"] == identity && s["kind"] == kind)
}

/// Page snapshot's view of a remote participant.
pub fn remote<'a>(snapshot: &'a Value, identity: &str) -> Option<&'a Value> {
    snapshot["participants"]
        .as_array()?
        .iter()
        .find(|p| p["identity"] == identity)
}

pub fn out_dir(w: &World) -> &Path {
    &w.out
}

pub fn run() {
    let started = Instant::now();
    let mut w = World::start();
    println!("servers ready after {:.1}s", started.elapsed().as_secs_f64());
    let figures = super::steps::members(&mut w);
    super::steps::wrong_key(&mut w);
    let lkclient = std::env::var_os(LKCLIENT_ENV).map(PathBuf::from);
    super::plaintext::unencrypted(&mut w, lkclient.as_deref());
    super::guests::lobby(&mut w);
    super::guests::passphrase(&mut w);
    super::steps::ended(&mut w);
    w.servers_alive();
    w.check_all_pages();
    println!("{figures}");
    println!(
        "all browser checks passed in {:.1}s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        out_dir(&w).display()
    );
}
