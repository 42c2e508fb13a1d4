//! The browser scenario, inside the namespace: the control plane, the operator and its Bridge
//! and Meetings, then the servers with the operator's keys and rooms, then `standup` lived
//! through from its first two members to its end by the operator's clock, then the Meetings
//! still open (Preferred, and the Firefox call). Each step waits on conditions with deadlines;
//! "nothing arrives" is observed over a window measured in frames the others decode meanwhile.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use conclave::web::twirp::{self, Credentials, RoomService};
use serde_json::{Value, json};

use super::browser::Driver;
use super::cluster::{self, Cluster, DOMAIN};
pub use super::cluster::{FIRESIDE, HALLWAY, STANDUP};
use super::daemon::Daemon;
use super::servers;
pub use super::stats::{decoded, heard, inbound, remote};

pub const CHROMIUM_ENV: &str = "CONCLAVE_JOIN_PAGE_CHROMIUM";
pub const NODE_ENV: &str = "CONCLAVE_JOIN_PAGE_NODE";
pub const LIVEKIT_ENV: &str = "CONCLAVE_JOIN_PAGE_LIVEKIT";
pub const STATIC_ENV: &str = "CONCLAVE_JOIN_PAGE_STATIC";
pub const OUT_ENV: &str = "CONCLAVE_JOIN_PAGE_OUT";
/// Firefox ESR, when the outer test found it.
pub const FIREFOX_ENV: &str = "CONCLAVE_JOIN_PAGE_FIREFOX";
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
/// How long any one condition may take to become true.
const WAIT: Duration = Duration::from_secs(60);

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} not set by the outer test")))
}

pub struct World {
    pub driver: Driver,
    out: PathBuf,
    pub rt: tokio::runtime::Runtime,
    rooms: RoomService,
    rooms_dir: PathBuf,
    cluster: Cluster,
    /// Meeting → its credentials Secret (participant name or `guest` → link).
    links: BTreeMap<String, BTreeMap<String, String>>,
    standup_end: DateTime<Utc>,
    /// The passphrase in every `standup` link's fragment.
    pub key: String,
    livekit_url: String,
    opened: Vec<String>,
    expected_console: BTreeMap<String, Vec<&'static str>>,
    servers: Vec<Daemon>,
    _dir: tempfile::TempDir,
}

/// A link from a credentials Secret as the browser opens it. DNS, the Ingress and its TLS are
/// not part of this test, so `https://<domain>/` becomes the page's loopback address; room,
/// token and key are the operator's, untouched.
fn served(link: &str) -> String {
    let rest = link
        .strip_prefix(&format!("https://{DOMAIN}/"))
        .unwrap_or_else(|| panic!("a link on the Bridge's domain, not {link:?}"));
    format!("http://{WEB}/{rest}")
}

impl World {
    fn start() -> World {
        let out = env_path(OUT_ENV);
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let t0 = Instant::now();
        let now = Utc::now();
        let cluster = rt.block_on(Cluster::start(dir.path(), now));
        let mut links = BTreeMap::new();
        for (name, spec, n) in cluster::meetings(now) {
            links.insert(name.to_owned(), rt.block_on(cluster.meeting(name, spec, n)));
        }
        let standup_end = cluster::standup_end(now);
        let rooms_data = rt.block_on(cluster.rooms(&[FIRESIDE, HALLWAY, STANDUP]));
        println!(
            "control plane, operator, Ready Bridge and three Meetings' links after {:.1}s",
            t0.elapsed().as_secs_f64()
        );
        let key = links[STANDUP]["alice"]
            .split_once("#key=")
            .map(|(_, k)| k.to_owned())
            .expect("a standup link carries the key");
        assert!(
            links[STANDUP].values().all(|l| l.ends_with(&format!("#key={key}"))),
            "every standup link carries the one passphrase"
        );
        let keys = &cluster.keys;

        let mut turn = servers::coturn(dir.path(), &out, IpAddr::V4(TURN_IP), TURN_PORT, &keys.turn_secret);
        let turn_addr = SocketAddr::from((TURN_IP, TURN_PORT));
        turn.wait_ready("answering STUN", WAIT, || servers::stun_answers(turn_addr));

        let config = servers::livekit_config(
            IpAddr::V4(SFU_IP),
            LIVEKIT_PORT,
            7882,
            7881,
            turn_addr,
            &keys.turn_secret,
        );
        let mut livekit = servers::livekit(
            &env_path(LIVEKIT_ENV),
            dir.path(),
            &out,
            &config,
            &keys.api_key,
            &keys.api_secret,
        );
        let sfu = SocketAddr::from((SFU_IP, LIVEKIT_PORT));
        livekit.wait_ready("answering HTTP", WAIT, || {
            servers::http_get(sfu, "/").is_some_and(|(s, _)| s == 200)
        });

        let rooms_dir = dir.path().join("rooms");
        cluster::project(&rooms_dir, &rooms_data);
        let livekit_url = format!("ws://{sfu}");
        let static_dir = env_path(STATIC_ENV);
        let mut web = servers::conclave_web(
            &out,
            &servers::WebArgs {
                listen: WEB,
                livekit_url: &livekit_url,
                static_dir: &static_dir,
                rooms_file: &rooms_dir.join("rooms.json"),
                api_key: &keys.api_key,
                api_secret: &keys.api_secret,
            },
        );
        // Ready means the page is there and the rooms file has been applied to the SFU.
        web.wait_ready("ready", WAIT, || {
            servers::http_get(WEB, "/readyz").is_some_and(|(s, _)| s == 200)
        });

        let rooms = RoomService::new(
            &format!("http://{sfu}"),
            Credentials {
                api_key: keys.api_key.clone(),
                api_secret: keys.api_secret.clone(),
            },
        )
        .expect("RoomService");
        let listed = rt.block_on(rooms.list_rooms()).expect("ListRooms");
        let mut listed: Vec<(&str, u32)> = listed.iter().map(|r| (r.name.as_str(), r.max_participants)).collect();
        listed.sort();
        assert_eq!(
            listed,
            [(FIRESIDE, 0), (HALLWAY, 0), (STANDUP, 10)],
            "conclave web created the operator's open rooms with their limits, and only them"
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
        World {
            driver,
            out,
            rt,
            rooms,
            rooms_dir,
            cluster,
            links,
            standup_end,
            key,
            livekit_url,
            opened: Vec::new(),
            expected_console: BTreeMap::new(),
            servers: vec![turn, livekit, web],
            _dir: dir,
        }
    }

    /// Participant `who`'s link to `meeting`, from its credentials Secret.
    pub fn link(&self, meeting: &str, who: &str) -> String {
        served(&self.links[meeting][who])
    }

    /// That link with another key in its fragment, or (`None`) none.
    pub fn link_with_key(&self, meeting: &str, who: &str, key: Option<&str>) -> String {
        let link = self.link(meeting, who);
        let base = link.split_once('#').map_or(link.as_str(), |(b, _)| b);
        match key {
            Some(k) => format!("{base}#key={k}"),
            None => base.to_owned(),
        }
    }

    /// The access token in participant `who`'s link.
    pub fn token(&self, meeting: &str, who: &str) -> String {
        let link = &self.links[meeting][who];
        let query = link
            .split_once("?token=")
            .map(|(_, q)| q)
            .expect("an access-token link");
        query.split('#').next().unwrap_or_default().to_owned()
    }

    /// Whether `who`'s token to `meeting` verifies now as LiveKit checks it (signature, issuer,
    /// `nbf`, `exp`), with the Bridge's keys.
    pub fn token_verifies(&self, meeting: &str, who: &str) -> bool {
        let k = &self.cluster.keys;
        conclave::engine::livekit::token::verify(&self.token(meeting, who), &k.api_key, k.api_secret.as_bytes()).is_ok()
    }

    pub fn livekit_url(&self) -> String {
        self.livekit_url.clone()
    }

    pub fn page_url(&self, room: &str) -> String {
        format!("http://{WEB}/{room}")
    }

    pub fn open(&mut self, id: &str, url: &str, relay_only: bool) -> Value {
        self.opened.push(id.to_owned());
        self.driver
            .call(json!({"cmd": "open", "id": id, "url": url, "relayOnly": relay_only}))
    }

    /// Page `id` in the browser named `browser` (`chromium`, `firefox`).
    pub fn open_in(&mut self, browser: &str, id: &str, url: &str) -> Value {
        self.opened.push(id.to_owned());
        self.driver
            .call(json!({"cmd": "open", "id": id, "url": url, "browser": browser}))
    }

    /// Starts Firefox beside Chromium; returns its version.
    pub fn launch_firefox(&mut self, firefox: &Path) -> Value {
        let profile = self._dir.path().join("firefox-profile");
        self.driver
            .call(json!({"cmd": "launch", "firefox": firefox, "userDataDir": profile}))
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

    /// The SFU's view of `standup`'s participants, by identity.
    pub fn sfu(&self) -> BTreeMap<String, twirp::Participant> {
        self.sfu_in(STANDUP)
    }

    /// The SFU's view of `room`'s participants, by identity.
    pub fn sfu_in(&self, room: &str) -> BTreeMap<String, twirp::Participant> {
        self.rt
            .block_on(self.rooms.list_participants(room))
            .expect("ListParticipants")
            .into_iter()
            .map(|p| (p.identity.clone(), p))
            .collect()
    }

    /// The SFU's rooms, sorted.
    pub fn sfu_rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .rt
            .block_on(self.rooms.list_rooms())
            .expect("ListRooms")
            .into_iter()
            .map(|r| r.name)
            .collect();
        rooms.sort();
        rooms
    }

    /// Ends `standup` the operator's way: its clock moves past the Meeting's `end`, the operator
    /// marks it Ended, deletes its links and drops its room from the rooms ConfigMap, which the
    /// test then projects into `conclave web`'s rooms volume as the kubelet would.
    pub fn end_standup(&self) {
        let after = self.standup_end + chrono::Duration::seconds(1);
        self.rt.block_on(self.cluster.move_clock_past_end(STANDUP, after));
        let data = self.rt.block_on(self.cluster.rooms(&[FIRESIDE, HALLWAY]));
        cluster::project(&self.rooms_dir, &data);
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
    // The Meetings still open after standup ended: their rooms work.
    super::preferred::preferred(&mut w);
    match std::env::var_os(FIREFOX_ENV) {
        Some(firefox) => super::firefox::call(&mut w, Path::new(&firefox)),
        None => println!("NOTE: no Firefox ESR here; the Firefox call did not run (the outer test said why)"),
    }
    w.servers_alive();
    w.check_all_pages();
    println!("{figures}");
    println!(
        "all browser checks passed in {:.1}s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        out_dir(&w).display()
    );
}
