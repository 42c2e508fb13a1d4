//! The checks, one function per behaviour of the page. Page ids double as screenshot names.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

use super::scenario::{FIRESIDE, HALLWAY, STANDUP, World, decoded, heard, inbound, remote};

pub(super) const WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// Console errors livekit-client logs when the server ends a session (removal, room deleted).
pub(super) const SERVER_CLOSED: &[&str] = &["DataChannel error on", "closed unexpectedly"];
/// Video frames the other members must decode while a "nothing arrives" check watches.
const WINDOW_FRAMES: u64 = 90;

/// Whether `selector` matches an element that is laid out on page `id`.
pub(super) fn visible(w: &mut World, id: &str, selector: &str) -> bool {
    let expr = format!(
        "(() => {{ const e = document.querySelector({}); return !!e && e.getClientRects().length > 0; }})()",
        json!(selector)
    );
    w.driver.eval(id, &expr) == json!(true)
}

/// What a page in `state` shows and hides.
pub(super) fn assert_layout(w: &mut World, id: &str, state: &str) {
    let joined = state == "joined";
    let connected = joined || state == "lobby";
    let want = if connected {
        "End-to-end encrypted"
    } else {
        "Not connected"
    };
    // livekit-client confirms the room's encryption from its E2EE worker, a moment after the
    // page has changed state: the badge follows then.
    w.driver.wait_for(
        &format!("{id} ({state}): the encryption badge to say {want}"),
        WAIT,
        |d| d.eval(id, "document.getElementById('e2ee-state').textContent"),
        |badge| *badge == json!(want),
    );
    for (selector, shown) in [
        ("#name-form", false),
        ("#key-form", false),
        ("#controls", joined),
        ("#tiles .tile", joined),
    ] {
        assert_eq!(
            visible(w, id, selector),
            shown,
            "{id} ({state}): {selector} visible: expected {shown}"
        );
    }
}

pub(super) fn identity(w: &mut World, id: &str) -> String {
    let s = w.driver.snapshot(id);
    s["local"]["identity"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} has no local identity: {s}"))
        .to_owned()
}

/// The tracks the SFU lists for `identity` in `standup`, once it lists `n` of them.
pub(super) fn sfu_tracks(w: &mut World, identity: &str, n: usize) -> Vec<conclave::web::twirp::Track> {
    sfu_tracks_in(w, STANDUP, identity, n)
}

/// The tracks the SFU lists for `identity` in `room`, once it lists `n` of them.
pub(super) fn sfu_tracks_in(w: &mut World, room: &str, identity: &str, n: usize) -> Vec<conclave::web::twirp::Track> {
    let deadline = Instant::now() + WAIT;
    loop {
        let tracks = w
            .sfu_in(room)
            .get(identity)
            .map(|p| p.tracks.clone())
            .unwrap_or_default();
        if tracks.len() >= n {
            return tracks;
        }
        assert!(
            Instant::now() < deadline,
            "the SFU lists {tracks:?} for {identity}, not {n} tracks"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Both pages have decoded video and received audio from each other, and present frames.
pub(super) fn see_and_hear(w: &mut World, a: (&str, &str), b: (&str, &str)) -> Value {
    w.driver.wait_for(
        &format!("{} and {} to see and hear each other", a.0, b.0),
        WAIT,
        |d| {
            json!({
                a.0: {"stats": d.stats(a.0), "snapshot": d.snapshot(a.0)},
                b.0: {"stats": d.stats(b.0), "snapshot": d.snapshot(b.0)},
            })
        },
        |v| {
            [(a, b), (b, a)].iter().all(|((me, _), (_, other))| {
                let stats = &v[*me]["stats"];
                let presented = remote(&v[*me]["snapshot"], other).and_then(|p| p["framesPresented"].as_u64());
                // Audio energy, not just samples: concealment of lost audio also counts samples.
                decoded(stats, other) > 0 && heard(stats, other).1 > 0.0 && presented.unwrap_or(0) > 0
            })
        },
    )
}

pub(super) fn assert_all_encrypted(snapshot: &Value, who: &str) {
    assert_eq!(snapshot["e2ee"], true, "{who}: E2EE on: {snapshot}");
    let local = &snapshot["local"]["tracks"];
    assert!(
        local
            .as_array()
            .is_some_and(|t| t.len() == 2 && t.iter().all(|t| t["encrypted"] == true)),
        "{who} publishes exactly camera and microphone, both encrypted: {local}"
    );
}

/// Step 1: two members, one of them reaching the SFU only through coturn.
pub fn members(w: &mut World) -> String {
    let t0 = Instant::now();
    let alice_link = w.link(STANDUP, "alice");
    let opened = w.open("alice", &alice_link, false);
    check_headers(&opened);
    let bob_link = w.link(STANDUP, "bob");
    w.open("bob", &bob_link, true);
    w.driver.wait_state("alice", "joined", WAIT);
    w.driver.wait_state("bob", "joined", WAIT);
    // What the SFU records first: a page that published in the clear fails here.
    for who in ["alice", "bob"] {
        let tracks = sfu_tracks(w, who, 2);
        assert!(
            tracks.len() == 2 && tracks.iter().all(|t| t.encrypted()),
            "the SFU records {who}'s camera and microphone as encrypted: {tracks:?}"
        );
    }
    for id in ["alice", "bob"] {
        let href = w.driver.eval(id, "location.href");
        assert_eq!(
            href,
            json!(w.page_url(STANDUP)),
            "{id}: token and key removed from the address"
        );
    }
    let v = see_and_hear(w, ("alice", "alice"), ("bob", "bob"));
    let elapsed = t0.elapsed();
    assert_layout(w, "alice", "joined");
    assert_layout(w, "bob", "joined");

    let sfu = w.sfu();
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        encrypted_both_ways(&sfu, &v, me, other);
    }
    let relayed: Vec<&Value> = inbound(&v["bob"]["stats"], "alice", "video").collect();
    assert!(
        !relayed.is_empty() && relayed.iter().all(|s| s["candidateType"] == "relay"),
        "bob (relay only) receives through coturn: {relayed:?}"
    );
    let (a_from_b, b_from_a) = (
        decoded(&v["alice"]["stats"], "bob"),
        decoded(&v["bob"]["stats"], "alice"),
    );
    println!(
        "audio: alice from bob {:?}, bob from alice {:?} (samples, energy)",
        heard(&v["alice"]["stats"], "bob"),
        heard(&v["bob"]["stats"], "alice")
    );
    let shots = [w.screenshot("alice", "alice-joined"), w.screenshot("bob", "bob-joined")];
    format!(
        "two members: first frames both ways {:.1}s after opening; at that point alice decoded {a_from_b} frames from bob, bob {b_from_a} from alice (bob via TURN relay); screenshots {}",
        elapsed.as_secs_f64(),
        shots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `me`'s page (its entry in `v`, as [`see_and_hear`] returns it) encrypts everything it
/// sends, plays `other`'s media, and sees exactly the tracks the SFU lists for `other`, all
/// encrypted.
pub(super) fn encrypted_both_ways(
    sfu: &BTreeMap<String, conclave::web::twirp::Participant>,
    v: &Value,
    me: &str,
    other: &str,
) {
    let snap = &v[me]["snapshot"];
    assert_all_encrypted(snap, me);
    let seen = remote(snap, other).unwrap_or_else(|| panic!("{me} does not list {other}: {snap}"));
    assert_eq!(seen["tile"], "media", "{me} shows {other}'s media: {seen}");
    assert_eq!(
        seen["encryptionStatus"], true,
        "{me}: the SDK reports {other} encrypted: {seen}"
    );
    // The page's view of the other's tracks is the SFU's, track by track.
    let page: Vec<(String, bool)> = seen["tracks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["sid"].as_str().unwrap_or_default().to_owned(), t["encrypted"] == true))
        .collect();
    let mut server: Vec<(String, bool)> = sfu
        .get(other)
        .unwrap_or_else(|| panic!("the SFU does not list {other}"))
        .tracks
        .iter()
        .map(|t| (t.sid.clone(), t.encrypted()))
        .collect();
    let mut page_sorted = page.clone();
    page_sorted.sort();
    server.sort();
    assert_eq!(page_sorted, server, "{me}'s view of {other}'s tracks equals the SFU's");
    assert!(
        server.len() == 2 && server.iter().all(|(_, e)| *e),
        "the SFU records {other}'s two tracks as encrypted: {server:?}"
    );
    assert!(
        seen["tracks"]
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["played"] == true)),
        "{me} plays every track of {other}: {seen}"
    );
}

fn check_headers(opened: &Value) {
    let h = &opened["headers"];
    assert_eq!(opened["status"], 200, "the page: {opened}");
    let csp = h["content-security-policy"].as_str().unwrap_or_default();
    println!("CSP as served: {csp}");
    assert_eq!(
        csp,
        "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; img-src 'self'; \
         media-src 'self'; connect-src 'self' ws://192.0.2.1:7880 http://192.0.2.1:7880; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'"
    );
    assert_eq!(
        h["cache-control"], "no-store",
        "the page that held a token is not stored"
    );
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
}

/// Frames `viewer` has decoded from `from` now.
pub(super) fn frames(w: &mut World, viewer: &str, from: &str) -> u64 {
    decoded(&w.driver.stats(viewer), from)
}

/// Waits until alice decoded `WINDOW_FRAMES` more frames from bob, and `cond` holds.
pub(super) fn watch(w: &mut World, what: &str, cond: impl Fn(&mut World) -> bool) {
    let start = frames(w, "alice", "bob");
    let deadline = Instant::now() + WAIT;
    loop {
        let now = frames(w, "alice", "bob");
        if now >= start + WINDOW_FRAMES && cond(w) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out watching {what} (alice decoded {} frames from bob meanwhile)",
            now - start
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

pub(super) fn tile(w: &mut World, viewer: &str, of: &str) -> Value {
    let s = w.driver.snapshot(viewer);
    remote(&s, of).cloned().unwrap_or(Value::Null)
}

/// Step 2: the right token with a wrong key.
pub fn wrong_key(w: &mut World) {
    let wrong = conclave::engine::livekit::token::new_passphrase();
    let link = w.link_with_key(STANDUP, "carol", Some(&wrong));
    for id in ["alice", "bob", "carol"] {
        w.expect_console(id, &["Decryption failed"]);
    }
    w.open("carol", &link, false);
    w.driver.wait_state("carol", "joined", WAIT);
    watch(w, "carol's page and the others to show cannot decrypt", |w| {
        ["alice", "bob"]
            .iter()
            .all(|o| tile(w, "carol", o)["tile"] == "cannot-decrypt")
            && ["alice", "bob"]
                .iter()
                .all(|o| tile(w, o, "carol")["tile"] == "cannot-decrypt")
    });
    let stats = w.driver.stats("carol");
    let snap = w.driver.snapshot("carol");
    for other in ["alice", "bob"] {
        assert_eq!(
            decoded(&stats, other),
            0,
            "carol decodes no video from {other}: {stats}"
        );
        assert_eq!(heard(&stats, other).1, 0.0, "carol hears nothing from {other}: {stats}");
        let t = remote(&snap, other).expect("carol lists them");
        assert_eq!(t["framesPresented"], 0, "carol presents no frame of {other}: {t}");
        let msg = t["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("Cannot decrypt")
                && msg.contains(if other == "alice" {
                    "Alice Moderator"
                } else {
                    "Bob Member"
                }),
            "{msg}"
        );
        assert!(
            inbound(&stats, other, "video").any(|s| s["bytesReceived"].as_u64().unwrap_or(0) > 0),
            "media from {other} did reach carol (it is the key that fails): {stats}"
        );
    }
    assert_eq!(frames(w, "alice", "carol"), 0, "nor does alice decode carol");
    println!(
        "audio with the wrong key: carol from alice {:?}, from bob {:?}; alice from bob now {:?} (samples, energy)",
        heard(&stats, "alice"),
        heard(&stats, "bob"),
        heard(&w.driver.stats("alice"), "bob")
    );
    w.screenshot("carol", "carol-wrong-key");
    w.screenshot("alice", "alice-sees-carol-undecryptable");
    w.close("carol");
}

/// Step 5: the operator's clock passes `standup`'s end; everyone in its room is disconnected, and
/// a link taken from its credentials Secret earlier, whose token has not expired, no longer
/// joins. The other Meetings' rooms stay.
pub fn ended(w: &mut World) {
    let gina = identity(w, "gina");
    let mut figures = Vec::new();
    for (viewer, viewer_id) in [("alice", "alice"), ("bob", "bob"), ("gina", gina.as_str())] {
        let stats = w.driver.stats(viewer);
        for other in ["alice", "bob", gina.as_str()] {
            if other != viewer_id {
                let shown = if other == gina { "gina" } else { other };
                figures.push(format!("{viewer}<-{shown}: {}", decoded(&stats, other)));
            }
        }
    }
    println!("video frames decoded by the end of the meeting: {}", figures.join(", "));
    for id in ["alice", "bob", "gina"] {
        w.expect_console(id, SERVER_CLOSED);
    }
    let t0 = Instant::now();
    w.end_standup();
    let ended_at = t0.elapsed();
    for id in ["alice", "bob", "gina"] {
        let s = w.driver.wait_state(id, "ended", WAIT);
        assert_eq!(s["reason"], "ROOM_DELETED", "{id}: {s}");
        assert_layout(w, id, "ended");
    }
    println!(
        "standup past its end: Ended with its room unlisted after {:.1}s, every page disconnected after {:.1}s",
        ended_at.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        w.sfu_rooms(),
        [FIRESIDE, HALLWAY],
        "the SFU closed standup's room and only it"
    );
    w.screenshot("alice", "alice-ended");
    assert!(
        w.token_verifies(STANDUP, "bob"),
        "bob's link, taken before the end, still holds a valid token: only the closed room refuses it"
    );
    let link = w.link(STANDUP, "bob");
    // Chromium itself logs the refused WebSocket and its 404.
    w.expect_console("bob-again", &["WebSocket connection to", "status of 404"]);
    w.open("bob-again", &link, false);
    let s = w.driver.wait_state("bob-again", "failed", WAIT);
    assert_layout(w, "bob-again", "failed");
    println!("a valid token after the room closed: {}", s["reason"]);
    w.screenshot("bob-again", "bob-after-end");
}
