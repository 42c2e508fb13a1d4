//! The LiveKit test tools, proven against the real programs: two `livekit-server` nodes
//! routing one room through a real Redis, coturn relaying with credentials livekit-server
//! issues, and real WebRTC participants (`lkclient`, pion) exchanging end-to-end encrypted
//! audio and video that each receiver checks frame by frame.
//!
//! Everything runs in a network namespace of the test's own (see `common/netns.rs`), on a
//! veth pair carrying 192.0.2.10 and 192.0.2.11, which stand in for two nodes' ExternalIPs.
//! Nothing there has a route out.
//!
//! What must hold:
//! - two participants with the same passphrase, on different signalling nodes, each verify
//!   every frame they receive from the other, audio and video, with no failure, and land in
//!   the same room on one node (Redis routing);
//! - a participant with another passphrase receives the same frames and decrypts none;
//! - a participant publishing in clear is announced unencrypted and verified in clear, and
//!   without a key it can read none of the encrypted tracks;
//! - with ICE forced through TURN, media flows through coturn, which accepted credentials
//!   livekit-server derived from the shared secret;
//! - expired tokens, tokens signed with another secret and joins to a full room are refused
//!   with a clear result, and the refused token never reaches the client's output.

#[path = "livekit_tools/checks.rs"]
mod checks;
mod livekit;

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use checks::{check_media, check_refusals, check_routing, check_turn};
use livekit::Checks;
use livekit::client::{self, Client, Join, Report};
use livekit::config::Node;
use livekit::daemon::redis_ping;
use livekit::deployment::{Deployment, Plan};
use livekit::netns::{self, Outer};
use livekit::token::Grant;

const INNER: &str = "livekit_inside_network_namespace";
const DONE: &str = "conclave-livekit: all LiveKit checks ran";
/// The directory holding livekit-server and lkclient, from the outer test.
const BIN_ENV: &str = "CONCLAVE_LIVEKIT_BIN";
/// Set to keep the inner test's directory (configurations and every log) however it ends.
const KEEP_ENV: &str = "CONCLAVE_KEEP_TEST_DIR";
const NODE_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)];
/// Frames each receiver must get on each remote track: 5 s of video, 3 s of audio.
const FRAMES: u32 = 150;
const ROOM: &str = "conclave-e2ee";
/// Deadline for each participant's whole run.
const RUN: Duration = Duration::from_secs(90);

fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{program} is missing (Debian: apt-get install {package}); .ci/run installs it"
    );
}

#[test]
fn lkclient_e2ee_matches_livekit_go_sdk() {
    let bin = testenv::livekit_bin_dir().expect("LiveKit tools (tests/tools/build.sh livekit)");
    println!("{:#}", client::selftest(&bin));
}

#[test]
fn livekit_carries_e2ee_media_between_real_clients() {
    require("redis-server", "redis-server");
    require("turnserver", "coturn");
    require("ip", "iproute2");
    let bin = testenv::livekit_bin_dir().expect("LiveKit tools (tests/tools/build.sh livekit)");
    Outer {
        inner: INNER,
        done: DONE,
        what: "LiveKit, Redis routing, TURN relaying or E2EE media",
        timeout: Duration::from_secs(240),
        env: vec![(BIN_ENV, OsString::from(bin))],
    }
    .run();
}

/// The passphrase as a Meeting will carry it: 32 random bytes, base64url.
fn passphrase() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn grant<'a>(identity: &'a str, room: &'a str, now: i64) -> Grant<'a> {
    Grant {
        identity,
        name: identity,
        room,
        not_before: now - 60,
        expires: now + 600,
        max_participants: None,
    }
}

struct Media {
    alice: Report,
    bob: Report,
    henry: Report,
    carol: Report,
    dave: Report,
    elapsed: Duration,
}

struct Refusals {
    erin: Report,
    expired_token: String,
    mallory: Report,
    forged_token: String,
    frank: Report,
    gina: Report,
    full_token: String,
}

/// Starts the media participants: alice and bob hold the key, on different signalling
/// nodes; henry publishes in clear; carol holds another key; dave holds the key and may use
/// nothing but TURN relays. The three publishers keep publishing until the others are done.
fn start_media(d: &Deployment, bin: &Path, key: &str, now: i64) -> Vec<Client> {
    let [a, b] = &d.nodes;
    // Publishers expect the other two publishers' audio and video; receivers all six tracks.
    let join = |name: &str, node: &Node, key: Option<&str>| Join {
        url: node.url(),
        token: d.sign(&grant(name, ROOM, now)),
        key: key.map(str::to_owned),
        publish: "audio,video",
        relay_only: false,
        until_frames: FRAMES,
        verified_goal: false,
        expect_tracks: 4,
        hold: true,
        sdk_audio: false,
        timeout: RUN,
    };
    let receiver = |j: Join| Join {
        publish: "none",
        expect_tracks: 6,
        hold: false,
        ..j
    };
    let cast = [
        ("alice", join("alice", a, Some(key))),
        ("bob", join("bob", b, Some(key))),
        ("henry", join("henry", a, None)),
        ("carol", receiver(join("carol", b, Some("another passphrase entirely")))),
        (
            "dave",
            Join {
                relay_only: true,
                sdk_audio: true,
                verified_goal: true,
                ..receiver(join("dave", b, Some(key)))
            },
        ),
    ];
    cast.iter()
        .map(|(name, j)| Client::start(bin, &d.dir, name, j))
        .collect()
}

fn finish_media(clients: Vec<Client>, started: Instant) -> Media {
    let [mut alice, mut bob, mut henry, carol, dave]: [Client; 5] =
        clients.try_into().unwrap_or_else(|_| panic!("five participants"));
    for p in [&mut alice, &mut bob, &mut henry] {
        let goal = p.wait_event("goal", RUN);
        println!("{} reached its goal: {goal}", p.name);
    }
    let carol = carol.finish(RUN);
    let dave = dave.finish(RUN);
    let elapsed = started.elapsed();
    let done = Duration::from_secs(30);
    Media {
        alice: alice.finish(done),
        bob: bob.finish(done),
        henry: henry.finish(done),
        carol,
        dave,
        elapsed,
    }
}

/// Joins that must be refused: an expired token, a forged one, and a full room.
fn refusals(d: &Deployment, bin: &Path, now: i64) -> Refusals {
    let [a, b] = &d.nodes;
    let start = |name: &str, node: &Node, token: &str| {
        let join = Join {
            url: node.url(),
            token: token.to_owned(),
            key: None,
            publish: "none",
            relay_only: false,
            until_frames: 0,
            verified_goal: false,
            expect_tracks: 0,
            hold: true,
            sdk_audio: false,
            timeout: Duration::from_secs(30),
        };
        Client::start(bin, &d.dir, name, &join)
    };
    let deadline = Duration::from_secs(30);
    // Past the one-minute leeway livekit-server (go-jose) allows on `exp`.
    let expired_token = d.sign(&Grant {
        not_before: now - 900,
        expires: now - 300,
        ..grant("erin", ROOM, now)
    });
    let erin = start("erin", a, &expired_token).finish(deadline);
    let forged_token = grant("mallory", ROOM, now).sign(&d.secrets.api_key, &passphrase());
    let mallory = start("mallory", b, &forged_token).finish(deadline);
    let small = |name| {
        d.sign(&Grant {
            max_participants: Some(1),
            ..grant(name, "small", now)
        })
    };
    let mut frank = start("frank", a, &small("frank"));
    frank.wait_event("joined", deadline);
    let full_token = small("gina");
    let gina = start("gina", b, &full_token).finish(deadline);
    Refusals {
        erin,
        expired_token,
        mallory,
        forged_token,
        frank: frank.finish(deadline),
        gina,
        full_token,
    }
}

#[test]
#[ignore = "runs only inside the network namespace livekit_carries_e2ee_media_between_real_clients creates"]
fn livekit_inside_network_namespace() {
    if !netns::is_inner() {
        eprintln!("{INNER} runs only under livekit_carries_e2ee_media_between_real_clients, in a network namespace");
        return;
    }
    let started = Instant::now();
    netns::enter(NODE_IPS);
    let bin = PathBuf::from(std::env::var_os(BIN_ENV).expect("the outer test names the LiveKit tools"));
    let mut tmp = tempfile::Builder::new()
        .prefix("conclave-livekit-")
        .tempdir()
        .expect("tempdir");
    if std::env::var_os(KEEP_ENV).is_some() {
        tmp.disable_cleanup(true);
        println!("{KEEP_ENV} is set: keeping {}", tmp.path().display());
    }
    let plan = Plan {
        bin: &bin,
        ips: NODE_IPS,
        node_range: "192.0.2.0/24",
        turn_ttl: 3600,
    };
    let mut d = Deployment::start(tmp.path(), &plan);
    println!("servers ready after {:?}: nodes {:?}", started.elapsed(), d.node_ids);
    let mut c = Checks::default();
    let unauthenticated = redis_ping(d.redis_addr, None);
    c.check(
        "Redis refuses a client without the password",
        unauthenticated.starts_with("-NOAUTH"),
        &unauthenticated,
    );
    let authenticated = redis_ping(d.redis_addr, Some(&d.secrets.redis_password));
    c.check(
        "Redis answers with the password",
        authenticated == "+PONG",
        &authenticated,
    );

    let now = chrono::Utc::now().timestamp();
    let media_started = Instant::now();
    let clients = start_media(&d, &bin, &passphrase(), now);
    let refused = refusals(&d, &bin, now);
    let media = finish_media(clients, media_started);
    for r in [&media.alice, &media.bob, &media.henry, &media.carol, &media.dave] {
        println!("---- {} ----\n{}", r.name, r.raw);
    }
    for r in [&refused.erin, &refused.mallory, &refused.frank, &refused.gina] {
        println!("---- {} ----\n{}", r.name, r.raw);
    }

    check_media(&mut c, &media);
    check_routing(&mut c, &media, &d.node_ids);
    check_turn(&mut c, &media.dave, &d.coturn.log(), d.turn_ttl, now);
    check_refusals(&mut c, &refused);
    d.assert_running();

    let logged = d.servers.iter().any(|s| s.log().contains(&refused.expired_token));
    println!(
        "note: livekit-server {} a refused token in its own log",
        if logged { "writes" } else { "does not write" }
    );
    let verified: u64 = media
        .alice
        .received
        .iter()
        .chain(&media.bob.received)
        .map(|t| t.frames_verified)
        .sum();
    println!(
        "media phase {:?}; alice and bob verified {verified} frames between them; total {:?}",
        media.elapsed,
        started.elapsed()
    );
    if !c.failures.is_empty() {
        drop(d);
        tmp.disable_cleanup(true);
        panic!(
            "{} of {} checks failed:\n{}\nEvery configuration and log is kept in {}",
            c.failures.len(),
            c.lines.len(),
            c.failures.join("\n"),
            tmp.path().display()
        );
    }
    println!("{} checks passed\n{DONE}", c.lines.len());
}
