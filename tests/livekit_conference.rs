//! The real conference: a LiveKit Bridge and a Meeting reconciled by the operator against the
//! local control plane, then run for real with exactly what the operator rendered.
//!
//! Outside (the host's network namespace): the operator reconciles a LiveKit Bridge with two
//! SFU replicas behind load balancers (the test plays the load balancer and gives them
//! 192.0.2.10 and 192.0.2.11), TURN on, and Meeting `review` with three participants and
//! `maxParticipants: 3`; an earlier Meeting in the same room, issued while the operator's clock
//! stood in the past, provides an expired link. The test collects the rendered children (each
//! replica's livekit.yaml, coturn's and Redis's configuration, the rooms list, the web
//! Deployment's arguments), the generated secrets and the links from the credentials Secrets.
//!
//! Inside a network namespace of its own (no route out; see `common/netns.rs`): Redis, coturn,
//! two livekit-server processes and `conclave web`, each started with the operator's
//! configuration with only listen/bind addresses and file paths changed (asserted, key by key
//! or line by line); cluster names resolve through a hosts file in the test's own mount
//! namespace. `conclave web` creates the room through RoomService from the rendered list. Real
//! clients (`lkclient`, pion) join with the links: alice through replica 0, bob through replica 1
//! with ICE forced through coturn, carol with another key. Asserted: alice and bob exchange
//! encrypted audio and video and each verifies every frame with the link's key; carol decrypts
//! none; all three are in one room on one node (Redis routing); bob's media is relayed by coturn
//! with the credentials LiveKit issued; a fourth participant (a guest exchanged by `conclave
//! web`) is refused because the room is full; the earlier Meeting's expired link is refused.

mod common;
mod livekit;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::operator::Operator;
use common::{cluster, label_bridge, object, secret_strings as data, wait_ready};
use conclave::api::{Bridge, Meeting};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use livekit::Checks;
use livekit::client::{Client, Join, Received, Report};
use livekit::daemon::Daemon;
use livekit::netns::{self, Outer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use testenv::wait_for;

const INNER: &str = "conference_inside_network_namespace";
const DONE: &str = "conclave-conference: all checks ran";
const WORLD_ENV: &str = "CONCLAVE_CONFERENCE_WORLD";
const BIN_ENV: &str = "CONCLAVE_LIVEKIT_BIN";
const NODE_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)];
const DOMAIN: &str = "live.example.com";
const MEDIA_PORT: i32 = 7882;
/// Frames each receiver must verify on each remote track.
const FRAMES: u32 = 150;
const RUN: Duration = Duration::from_secs(90);

/// What the operator made, carried from the outer test to the inner one.
#[derive(Serialize, Deserialize)]
struct World {
    namespace: String,
    livekit: Vec<String>,
    turnserver: String,
    redis: String,
    rooms: String,
    web_args: Vec<String>,
    secrets: BTreeMap<String, String>,
    tls: BTreeMap<String, String>,
    links: BTreeMap<String, String>,
    expired_link: String,
}

async fn links_of(secrets: &Api<Secret>, name: &str, n: usize) -> BTreeMap<String, String> {
    wait_for(name, Duration::from_secs(60), || async {
        let d = data(&secrets.get_opt(name).await.ok()??);
        (d.len() == n).then_some(d)
    })
    .await
}

fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{program} is missing (Debian: apt-get install {package})");
}

#[tokio::test]
async fn conference_through_the_operators_configuration() {
    require("redis-server", "redis-server");
    require("turnserver", "coturn");
    require("ip", "iproute2");
    let bin = testenv::livekit_bin_dir().expect("LiveKit tools (tests/tools/build.sh livekit)");
    let started = Instant::now();
    let cp = cluster();
    let client = cp.client().await;
    let ns = testenv::namespace(&client, "conference").await;
    let dir = tempfile::Builder::new()
        .prefix("conclave-conference-")
        .tempdir()
        .expect("tempdir");
    let now = Utc::now();
    // The operator's clock starts in the past, for a Meeting whose links have expired by now.
    let operator = Operator::with_clock(
        "conclave-conference-test",
        &ns,
        dir.path(),
        now - chrono::Duration::minutes(150),
    );
    let bridges: Api<Bridge> = Api::namespaced(client.clone(), &ns);
    bridges
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge", "metadata": {"name": "live"},
                "spec": {"domain": DOMAIN, "engine": "LiveKit",
                         "sfu": {"replicas": 2, "media": {"exposure": "LoadBalancer", "port": MEDIA_PORT}}}
            })),
        )
        .await
        .expect("Bridge");
    // The test is the load balancer: each replica's Service gets a node's address, and TURN's
    // the first node's, where coturn listens (the operator announces TURN there).
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let addresses = NODE_IPS
        .iter()
        .enumerate()
        .map(|(i, ip)| (format!("live-sfu-{i}"), ip))
        .chain([("live-turn".to_string(), &NODE_IPS[0])]);
    for (name, ip) in addresses {
        wait_for(&format!("Service {name}"), Duration::from_secs(60), || async {
            services.get_opt(&name).await.ok()?
        })
        .await;
        services
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string()}]}}})),
            )
            .await
            .expect("load balancer address");
    }
    wait_ready(&bridges, "live").await;

    let meetings: Api<Meeting> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let meeting = |name: &str, spec: Value| -> Meeting {
        object(
            json!({"apiVersion": "conclave.dev/v1alpha1", "kind": "Meeting", "metadata": {"name": name}, "spec": spec}),
        )
    };
    meetings
        .create(
            &PostParams::default(),
            &meeting(
                "earlier",
                json!({"bridge": "live", "room": "review", "start": now - chrono::Duration::minutes(180),
                       "end": now - chrono::Duration::minutes(120), "participants": [{"name": "erin"}]}),
            ),
        )
        .await
        .expect("earlier Meeting");
    let expired_link = links_of(&secrets, "earlier-credentials", 1).await["erin"].clone();
    operator.set_now(now);
    label_bridge(&bridges, "live", "clock", "now").await;
    meetings
        .create(
            &PostParams::default(),
            &meeting(
                "review",
                json!({"bridge": "live", "start": now - chrono::Duration::minutes(5),
                       "end": now + chrono::Duration::hours(1), "maxParticipants": 3,
                       "participants": [{"name": "alice", "displayName": "Alice", "moderator": true},
                                        {"name": "bob"}, {"name": "carol"}],
                       "guests": {"allowed": true, "lobby": false}}),
            ),
        )
        .await
        .expect("review Meeting");
    let links = links_of(&secrets, "review-credentials", 4).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = |name: &'static str, key: &'static str| {
        let configmaps = configmaps.clone();
        async move { configmaps.get(name).await.expect(name).data.expect("data")[key].clone() }
    };
    let rooms = wait_for("the room listed as open", Duration::from_secs(60), || async {
        let r = configmaps
            .get("live-rooms")
            .await
            .ok()?
            .data?
            .get("rooms.json")?
            .clone();
        r.contains("\"review\"").then_some(r)
    })
    .await;
    let web: Deployment = Api::namespaced(client.clone(), &ns).get("live-web").await.expect("web");
    let web_args = web
        .spec
        .template
        .spec
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .expect("web args");
    let world = World {
        namespace: ns.clone(),
        livekit: vec![
            cm("live-sfu-0-config", "livekit.yaml").await,
            cm("live-sfu-1-config", "livekit.yaml").await,
        ],
        turnserver: cm("live-turn", "turnserver.conf").await,
        redis: cm("live-redis", "redis.conf").await,
        rooms,
        web_args,
        secrets: data(&secrets.get("live-secrets").await.expect("generated Secret")),
        tls: data(&secrets.get("live-tls").await.expect("TLS Secret")),
        links,
        expired_link,
    };
    let world_file = dir.path().join("world.json");
    std::fs::write(&world_file, serde_json::to_string(&world).expect("json")).expect("write world");
    println!("operator side ready after {:?}", started.elapsed());
    Outer {
        inner: INNER,
        done: DONE,
        what: "a conference through the operator's LiveKit configuration",
        timeout: Duration::from_secs(300),
        env: vec![(BIN_ENV, OsString::from(bin)), (WORLD_ENV, OsString::from(&world_file))],
    }
    .run();
    println!("conference test took {:?} in all", started.elapsed());
    drop(operator);
}

// ---- inside the network namespace ----

/// Paths (`a.b[2].c`) where two JSON values differ.
fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                differences(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                differences(u, v, &format!("{at}[{i}]"), out);
            }
        }
        _ if a != b => out.push(at.to_string()),
        _ => {}
    }
}

/// Replaces whole lines `from` by `to` (or appends `to` when `from` is empty), asserting that
/// each `from` is a line of the rendered file: only the lines named change.
fn adapt_lines(rendered: &str, changes: &[(&str, String)]) -> String {
    let mut lines: Vec<String> = rendered.lines().map(str::to_string).collect();
    for (from, to) in changes {
        if from.is_empty() {
            lines.push(to.clone());
            continue;
        }
        let i = lines
            .iter()
            .position(|l| l == from)
            .unwrap_or_else(|| panic!("the rendered file has no line {from:?}"));
        lines[i] = to.clone();
    }
    lines.join("\n") + "\n"
}

fn private(path: &Path, text: &str) {
    livekit::config::write_private(path, text);
}

fn secret_line(rendered: &str, secret: &str) -> String {
    // Exactly what the coturn container's start script appends.
    format!("{rendered}{}", conclave::turn::secret_line(secret))
}

fn http_post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

/// `(token, key)` from a link `https://<domain>/<room>?<param>=<token>[#key=<key>]`.
fn parts(link: &str, param: &str) -> (String, Option<String>) {
    let rest = link
        .split_once(&format!("?{param}="))
        .unwrap_or_else(|| panic!("a {param} link"))
        .1;
    match rest.split_once("#key=") {
        Some((t, k)) => (t.to_string(), Some(k.to_string())),
        None => (rest.to_string(), None),
    }
}

fn frames(t: &Received) -> String {
    format!(
        "{} {}: {} received, {} decrypted, {} verified, {} failed",
        t.participant, t.kind, t.frames_received, t.frames_decrypted, t.frames_verified, t.decrypt_failed
    )
}

struct Servers {
    _redis: Daemon,
    coturn: Daemon,
    livekit: Vec<Daemon>,
    web: Daemon,
}

fn start_servers(world: &World, bin: &Path, dir: &Path, c: &mut Checks) -> Servers {
    let s = &world.secrets;
    // Redis: the operator's file plus the line its start script appends; bind and dir adapted.
    let redis_conf = adapt_lines(
        &world.redis,
        &[
            ("bind * -::*", format!("bind {}", NODE_IPS[0])),
            ("dir /data", format!("dir {}", dir.display())),
            ("", format!("requirepass {}", s["redis-password"])),
        ],
    );
    let redis_path = dir.join("redis.conf");
    private(&redis_path, &redis_conf);
    let mut redis_cmd = Command::new("redis-server");
    redis_cmd.arg(&redis_path);
    let mut redis = Daemon::start("redis", redis_cmd, dir);
    redis.wait_tcp(SocketAddr::from((NODE_IPS[0], 6379)), Duration::from_secs(20));

    // coturn: the operator's file and secret line; certificate, pid and database paths adapted.
    for (k, v) in &world.tls {
        private(&dir.join(k), v);
    }
    let turn = adapt_lines(
        &secret_line(&world.turnserver, &s["turn-secret"]),
        &[
            (
                "cert=/etc/conclave/tls/tls.crt",
                format!("cert={}", dir.join("tls.crt").display()),
            ),
            (
                "pkey=/etc/conclave/tls/tls.key",
                format!("pkey={}", dir.join("tls.key").display()),
            ),
            (
                "pidfile=/tmp/turnserver.pid",
                format!("pidfile={}", dir.join("turnserver.pid").display()),
            ),
            ("", format!("userdb={}", dir.join("turndb").display())),
        ],
    );
    let turn_path = dir.join("turnserver.conf");
    private(&turn_path, &turn);
    let mut turn_cmd = Command::new("turnserver");
    turn_cmd.arg("-c").arg(&turn_path);
    let mut coturn = Daemon::start("coturn", turn_cmd, dir);
    coturn.wait_tcp(SocketAddr::from((NODE_IPS[0], 3478)), Duration::from_secs(20));

    // livekit-server: the operator's file per replica; bind addresses, the interface it gathers
    // on (both replicas share this namespace) and the TURN secret's path adapted.
    let secret_file = dir.join("turn-secret");
    private(&secret_file, &s["turn-secret"]);
    let mut livekit = Vec::new();
    for (i, (rendered, ip)) in world.livekit.iter().zip(NODE_IPS).enumerate() {
        let original: Value = serde_saphyr::from_str(rendered).expect("livekit.yaml");
        let mut adapted = original.clone();
        adapted["bind_addresses"] = json!([ip.to_string()]);
        adapted["rtc"]["ips"] = json!({"includes": [format!("{ip}/32")]});
        for t in adapted["rtc"]["turn_servers"].as_array_mut().expect("turn servers") {
            t["secret_file"] = json!(secret_file.display().to_string());
        }
        let mut diff = Vec::new();
        differences(&original, &adapted, "", &mut diff);
        let allowed = |p: &String| {
            p == "bind_addresses"
                || p == "rtc.ips"
                || (p.starts_with("rtc.turn_servers[") && p.ends_with("].secret_file"))
        };
        c.check(
            &format!("replica {i}: only bind addresses and file paths differ from the operator's livekit.yaml"),
            diff.iter().all(allowed) && diff.len() == 2 + adapted["rtc"]["turn_servers"].as_array().map_or(0, Vec::len),
            format!("{diff:?}"),
        );
        let turn_hosts: Vec<&Value> = original["rtc"]["turn_servers"]
            .as_array()
            .map(|a| a.iter().map(|t| &t["host"]).collect())
            .unwrap_or_default();
        c.check(
            &format!(
                "replica {i} hands out TURN at the TURN load balancer's address {}",
                NODE_IPS[0]
            ),
            !turn_hosts.is_empty() && turn_hosts.iter().all(|h| **h == json!(NODE_IPS[0].to_string())),
            format!("{turn_hosts:?}"),
        );
        c.check(
            &format!("replica {i} advertises {ip} on UDP and TCP {}", MEDIA_PORT + i as i32),
            original["rtc"]["node_ip"] == json!(ip.to_string())
                && original["rtc"]["udp_port"] == json!(MEDIA_PORT + i as i32)
                && original["rtc"]["tcp_port"] == json!(MEDIA_PORT + i as i32)
                && original["room"]["auto_create"] == json!(false),
            format!("{}", original["rtc"]),
        );
        let path = dir.join(format!("livekit-{i}.yaml"));
        std::fs::write(&path, serde_json::to_string_pretty(&adapted).expect("yaml")).expect("write");
        let mut cmd = Command::new(bin.join("livekit-server"));
        cmd.arg("--config")
            .arg(&path)
            // What the pod's env holds, the key and secret joined as the kubelet expands them.
            .env(
                "LIVEKIT_KEYS",
                format!("{}: {}", s["livekit-api-key"], s["livekit-api-secret"]),
            )
            .env("REDIS_PASSWORD", &s["redis-password"]);
        livekit.push(Daemon::start(&format!("livekit-{i}"), cmd, dir));
    }
    for (d, ip) in livekit.iter_mut().zip(NODE_IPS) {
        d.wait_http_ok(SocketAddr::from((ip, 7880)), "/", Duration::from_secs(40));
    }

    // conclave web, with the Deployment's arguments; its listen address and the rooms file's
    // path adapted.
    let rooms_file = dir.join("rooms.json");
    std::fs::write(&rooms_file, &world.rooms).expect("rooms");
    let mut args = world.web_args.clone();
    let set = |args: &mut Vec<String>, flag: &str, value: String| {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("no {flag}"));
        args[i + 1] = value;
    };
    set(&mut args, "--listen", format!("{}:8080", NODE_IPS[0]));
    set(&mut args, "--rooms-file", rooms_file.display().to_string());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave"));
    cmd.args(&args)
        .env("LIVEKIT_API_KEY", &s["livekit-api-key"])
        .env("LIVEKIT_API_SECRET", &s["livekit-api-secret"])
        .env("CONCLAVE_LOG_FORMAT", "text");
    let mut web = Daemon::start("conclave-web", cmd, dir);
    let log = web.log_path().to_path_buf();
    web.wait_ready(
        "conclave web opening the Meeting's room",
        Duration::from_secs(30),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("room opened on the SFU") && l.contains("review")),
    );
    Servers {
        _redis: redis,
        coturn,
        livekit,
        web,
    }
}

fn join(url: String, token: String, key: Option<String>, publish: &'static str, expect: u32) -> Join {
    Join {
        url,
        token,
        key,
        publish,
        relay_only: false,
        until_frames: FRAMES,
        verified_goal: false,
        expect_tracks: expect,
        hold: publish != "none",
        sdk_audio: false,
        timeout: RUN,
    }
}

fn refused(bin: &Path, dir: &Path, name: &str, url: String, token: String) -> Report {
    let j = Join {
        publish: "none",
        until_frames: 0,
        hold: false,
        timeout: Duration::from_secs(30),
        ..join(url, token, None, "none", 0)
    };
    Client::start(bin, dir, name, &j).finish(Duration::from_secs(40))
}

#[test]
#[ignore = "runs only inside the network namespace conference_through_the_operators_configuration creates"]
fn conference_inside_network_namespace() {
    if !netns::is_inner() {
        eprintln!("{INNER} runs only under conference_through_the_operators_configuration");
        return;
    }
    let started = Instant::now();
    netns::enter(NODE_IPS);
    let world: World = serde_json::from_str(
        &std::fs::read_to_string(std::env::var_os(WORLD_ENV).expect("world file")).expect("read world"),
    )
    .expect("world");
    let bin = PathBuf::from(std::env::var_os(BIN_ENV).expect("LiveKit tools"));
    let tmp = tempfile::Builder::new()
        .prefix("conclave-conference-inner-")
        .tempdir()
        .expect("tempdir");
    let dir_buf = tmp.path().to_path_buf();
    let dir = dir_buf.as_path();
    // Cluster names as cluster DNS would resolve them: Redis's Service and the signalling
    // Service (replica 0 stands behind it here), fully qualified as the operator writes them.
    let ns = &world.namespace;
    netns::hosts(
        dir,
        NODE_IPS[0],
        &[
            format!("live-redis.{ns}.svc.cluster.local"),
            format!("live-signalling.{ns}.svc.cluster.local"),
        ],
    );
    let mut c = Checks::default();
    let mut servers = start_servers(&world, &bin, dir, &mut c);
    println!("servers ready after {:?}", started.elapsed());

    let url = |i: usize| format!("ws://{}:7880", NODE_IPS[i]);
    let (alice_token, key) = parts(&world.links["alice"], "token");
    let key = key.expect("the link carries the key");
    let (bob_token, bob_key) = parts(&world.links["bob"], "token");
    let (carol_token, _) = parts(&world.links["carol"], "token");
    c.check(
        "every link carries the same key",
        bob_key.as_deref() == Some(key.as_str()),
        "",
    );
    let media_started = Instant::now();
    let mut alice = Client::start(
        &bin,
        dir,
        "alice",
        &join(url(0), alice_token, Some(key.clone()), "audio,video", 2),
    );
    let mut bob = Client::start(
        &bin,
        dir,
        "bob",
        &Join {
            relay_only: true,
            ..join(url(1), bob_token, Some(key.clone()), "audio,video", 2)
        },
    );
    let mut carol = Client::start(
        &bin,
        dir,
        "carol",
        &join(url(1), carol_token, Some("not the meeting's key".into()), "none", 4),
    );
    for p in [&mut alice, &mut bob, &mut carol] {
        p.wait_event("joined", RUN);
    }
    // A fourth person: the guest link, exchanged by conclave web for an access token.
    let (guest_token, _) = parts(&world.links["guest"], "guest");
    let (status, body) = http_post_json(
        SocketAddr::from((NODE_IPS[0], 8080)),
        "/_conclave/guest",
        &json!({"guest": guest_token, "name": "Dave"}).to_string(),
    );
    c.check("conclave web exchanges the guest link", status == 200, status);
    let dave_token = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string));
    let dave = refused(&bin, dir, "dave", url(0), dave_token.unwrap_or_default());
    let (expired, _) = parts(&world.expired_link, "token");
    let erin = refused(&bin, dir, "erin", url(0), expired.clone());

    for p in [&mut alice, &mut bob] {
        p.wait_event("goal", RUN);
    }
    let carol = carol.finish(RUN);
    let alice = alice.finish(Duration::from_secs(30));
    let bob = bob.finish(Duration::from_secs(30));
    let media = media_started.elapsed();
    for r in [&alice, &bob, &carol, &dave, &erin] {
        println!("---- {} ----\n{}", r.name, r.raw);
    }

    for r in [&alice, &bob, &carol] {
        c.check(
            &format!("{} ran to its goal", r.name),
            r.outcome == "ok" && r.exit_code == 0,
            format!("{}: {}", r.outcome, r.reason),
        );
    }
    for (who, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let tracks = who.from(peer);
        c.check(
            &format!("{} receives {peer}'s audio and video, encrypted", who.name),
            tracks.len() == 2 && tracks.iter().all(|t| t.encryption == "GCM"),
            format!(
                "{:?}",
                tracks.iter().map(|t| (&t.kind, &t.encryption)).collect::<Vec<_>>()
            ),
        );
        for t in tracks {
            c.check(
                &format!(
                    "{} decrypts every frame of {peer}'s {} with the link's key",
                    who.name, t.kind
                ),
                t.frames_verified >= u64::from(FRAMES)
                    && t.decrypt_failed == 0
                    && t.content_mismatch == 0
                    && t.frames_decrypted + t.server_injected == t.frames_received,
                frames(t),
            );
        }
        c.check(
            &format!("{} publishes encrypted audio and video", who.name),
            who.published.len() == 2 && who.published.iter().all(|p| p.encryption == "GCM" && p.frames_sent > 0),
            format!(
                "{:?}",
                who.published
                    .iter()
                    .map(|p| (&p.kind, p.frames_sent))
                    .collect::<Vec<_>>()
            ),
        );
    }
    c.check(
        "carol (another key) receives the four tracks and decrypts none",
        carol.received.len() == 4
            && carol
                .received
                .iter()
                .all(|t| t.frames_received > 0 && t.frames_decrypted == 0 && t.frames_verified == 0),
        format!("{:?}", carol.received.iter().map(frames).collect::<Vec<_>>()),
    );
    let rooms: Vec<(&str, &str, &str)> = [&alice, &bob, &carol]
        .iter()
        .map(|r| (r.name.as_str(), r.room_sid.as_str(), r.server_node.as_str()))
        .collect();
    c.check(
        "alice (replica 0's signalling) and bob and carol (replica 1's) are in one room on one node",
        !rooms[0].1.is_empty() && rooms.iter().all(|r| (r.1, r.2) == (rooms[0].1, rooms[0].2)),
        format!("{rooms:?}"),
    );
    let bob_ice: Vec<&str> = bob
        .received
        .iter()
        .filter_map(|t| t.ice.as_ref().map(|i| i.local.as_str()))
        .collect();
    c.check(
        "bob's media is relayed by coturn",
        !bob_ice.is_empty()
            && bob_ice
                .iter()
                .all(|l| l.starts_with("relay ") && l.contains(&NODE_IPS[0].to_string())),
        format!("{bob_ice:?}"),
    );
    // bob's only ICE servers are the ones LiveKit handed him, with credentials LiveKit minted
    // from the TURN secret: a relay candidate on coturn's address exists only if coturn
    // accepted them (coturn at its rendered log level does not log allocations).
    c.check(
        "coturn is alive and bob's relay candidate is its address: it accepted LiveKit's credentials",
        servers.coturn.log().contains("turn server id=0 created")
            && bob_ice.iter().all(|l| l.starts_with("relay udp 192.0.2.10:")),
        format!("{bob_ice:?}"),
    );
    c.check(
        "the fourth participant is refused: the room holds 3",
        dave.outcome == "refused" && dave.published.is_empty() && dave.received.is_empty(),
        format!("{} (HTTP {:?}): {}", dave.outcome, dave.http_status, dave.reason),
    );
    c.check(
        "an expired link is refused",
        erin.outcome == "refused" && erin.http_status == Some(401) && erin.reason.contains("expired"),
        format!("{} (HTTP {:?}): {}", erin.outcome, erin.http_status, erin.reason),
    );
    c.check(
        "conclave web logged no token or key",
        !servers.web.log().contains(&key) && !servers.web.log().contains(&expired),
        "",
    );
    for d in &mut servers.livekit {
        d.assert_running();
    }
    let sent: u64 = [&alice, &bob]
        .iter()
        .flat_map(|r| &r.published)
        .map(|p| p.frames_sent)
        .sum();
    let verified: u64 = [&alice, &bob]
        .iter()
        .flat_map(|r| &r.received)
        .map(|t| t.frames_verified)
        .sum();
    println!(
        "frames: alice and bob sent {sent}, verified {verified} of each other's; carol decrypted 0 of {}; media {media:?}, inner total {:?}",
        carol.received.iter().map(|t| t.frames_received).sum::<u64>(),
        started.elapsed()
    );
    if !c.failures.is_empty() {
        let mut tmp = tmp;
        tmp.disable_cleanup(true);
        panic!(
            "{} of {} checks failed:\n{}\nlogs kept in {}",
            c.failures.len(),
            c.lines.len(),
            c.failures.join("\n"),
            dir.display()
        );
    }
    println!("{} checks passed\n{DONE}", c.lines.len());
}
