//! What the LiveKit run must show, one named check at a time.

use std::net::SocketAddr;

use super::{FRAMES, Media, NODE_IPS, Refusals};
use crate::livekit::Checks;
use crate::livekit::client::{Received, Report};

fn in_node_range(ice: &str) -> bool {
    // "<type> <protocol> <ip>:<port>"
    ice.split_whitespace()
        .nth(2)
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .is_some_and(|a| NODE_IPS.iter().any(|n| a.ip() == *n))
}

fn frames(t: &Received) -> String {
    format!(
        "{} received, {} decrypted, {} verified, {} failed, {} mismatched, {} server-injected, {} foreign {}",
        t.frames_received,
        t.frames_decrypted,
        t.frames_verified,
        t.decrypt_failed,
        t.content_mismatch,
        t.server_injected,
        t.foreign_frames,
        t.first_error.as_deref().unwrap_or("")
    )
}

/// Every track from each of `from` arrives announced as `encryption` and verifies byte for
/// byte, `FRAMES` or more frames each, with nothing failed.
fn check_receiver(c: &mut Checks, who: &Report, from: &[(&str, &str)]) {
    for (peer, encryption) in from {
        let tracks = who.from(peer);
        let kinds: Vec<&str> = tracks.iter().map(|t| t.kind.as_str()).collect();
        c.check(
            &format!("{} receives audio and video from {peer}", who.name),
            kinds.len() == 2 && kinds.contains(&"audio") && kinds.contains(&"video"),
            format!("{kinds:?}"),
        );
        for t in tracks {
            c.check(
                &format!("{} sees {peer}'s {} announced {encryption}", who.name, t.kind),
                t.encryption == *encryption,
                &t.encryption,
            );
            // On a clear track the SFU may inject silence of its own, unmarked; on an encrypted
            // one it marks what it injects, and everything else must be ours.
            let all_ours = if *encryption == "NONE" {
                t.frames_verified + t.foreign_frames == t.frames_received
            } else {
                t.frames_decrypted + t.server_injected == t.frames_received && t.foreign_frames == 0
            };
            c.check(
                &format!("{} verifies {peer}'s {} byte for byte", who.name, t.kind),
                t.frames_verified >= u64::from(FRAMES)
                    && t.decrypt_failed == 0
                    && t.content_mismatch == 0
                    && t.undecryptable_without_key == 0
                    && all_ours,
                frames(t),
            );
        }
    }
}

fn check_publisher(c: &mut Checks, who: &Report, encryption: &str) {
    let sent: Vec<String> = who
        .published
        .iter()
        .map(|p| format!("{} {} {} frames", p.kind, p.encryption, p.frames_sent))
        .collect();
    c.check(
        &format!("{} publishes audio and video, {encryption}", who.name),
        who.published.len() == 2
            && who
                .published
                .iter()
                .all(|p| p.encryption == encryption && p.frames_sent > u64::from(FRAMES) && p.write_errors == 0),
        format!("{sent:?}"),
    );
}

pub fn check_media(c: &mut Checks, m: &Media) {
    for r in [&m.alice, &m.bob, &m.henry, &m.carol, &m.dave] {
        c.check(
            &format!("{} ran to its goal", r.name),
            r.outcome == "ok" && r.exit_code == 0,
            format!("{} (exit {}): {}", r.outcome, r.exit_code, r.reason),
        );
    }
    check_publisher(c, &m.alice, "GCM");
    check_publisher(c, &m.bob, "GCM");
    check_publisher(c, &m.henry, "NONE");
    check_receiver(c, &m.alice, &[("bob", "GCM"), ("henry", "NONE")]);
    check_receiver(c, &m.bob, &[("alice", "GCM"), ("henry", "NONE")]);
    check_receiver(c, &m.dave, &[("alice", "GCM"), ("bob", "GCM"), ("henry", "NONE")]);
    // dave opens audio with LiveKit's own Go SDK: this client's key derivation and frame
    // format must agree with LiveKit's, not only with themselves.
    let by_sdk: Vec<String> = m
        .dave
        .received
        .iter()
        .filter(|t| t.encryption == "GCM")
        .map(|t| format!("{} {}: {:?}", t.participant, t.kind, t.decrypted_with))
        .collect();
    c.check(
        "dave's encrypted audio is decrypted by LiveKit's Go SDK, video by lkclient",
        m.dave.received.iter().filter(|t| t.encryption == "GCM").all(|t| {
            let by = if t.kind == "audio" { "lksdk" } else { "lkclient" };
            t.decrypted_with.as_deref() == Some(by)
        }) && by_sdk.len() == 4,
        format!("{by_sdk:?}"),
    );
    // Another key decrypts nothing; the clear tracks still verify.
    for peer in ["alice", "bob"] {
        for t in m.carol.from(peer) {
            c.check(
                &format!("carol (another key) decrypts none of {peer}'s {}", t.kind),
                t.frames_received >= u64::from(FRAMES)
                    && t.frames_decrypted == 0
                    && t.frames_verified == 0
                    && t.decrypt_failed + t.server_injected == t.frames_received,
                frames(t),
            );
        }
    }
    check_receiver(c, &m.carol, &[("henry", "NONE")]);
    let seen: Vec<String> = m
        .henry
        .received
        .iter()
        .map(|t| format!("{} {} {}: {}", t.participant, t.kind, t.encryption, frames(t)))
        .collect();
    c.check(
        "henry (no key) receives the four encrypted tracks and can read none",
        m.henry.received.len() == 4
            && m.henry.received.iter().all(|t| {
                t.encryption == "GCM" && t.frames_verified == 0 && t.undecryptable_without_key >= u64::from(FRAMES)
            }),
        format!("{seen:?}"),
    );
    let encrypted: Vec<&Received> = [&m.alice, &m.bob, &m.henry, &m.carol, &m.dave]
        .iter()
        .flat_map(|r| r.received.iter())
        .filter(|t| t.encryption == "GCM")
        .collect();
    let frames_seen: u64 = encrypted.iter().map(|t| t.frames_received).sum();
    let clear: u64 = encrypted.iter().map(|t| t.plaintext_seen).sum();
    c.check(
        "no frame the SFU forwarded on an encrypted track shows plaintext",
        encrypted.len() == 16 && clear == 0,
        format!("{clear} of {frames_seen} frames on {} tracks", encrypted.len()),
    );
    let ice: Vec<&str> = [&m.alice, &m.bob, &m.henry, &m.carol, &m.dave]
        .iter()
        .flat_map(|r| r.received.iter())
        .filter_map(|t| t.ice.as_ref())
        .flat_map(|i| [i.local.as_str(), i.remote.as_str()])
        .collect();
    c.check(
        "every selected candidate uses the veth addresses, none loopback",
        !ice.is_empty() && ice.iter().all(|a| in_node_range(a)),
        format!("{} candidates", ice.len()),
    );
}

/// Redis routing: one room, hosted on one node, reached through both nodes' signalling.
pub fn check_routing(c: &mut Checks, m: &Media, node_ids: &[String]) {
    let rooms: Vec<(&str, &str, &str)> = [&m.alice, &m.bob, &m.henry, &m.carol, &m.dave]
        .iter()
        .map(|r| (r.name.as_str(), r.room_sid.as_str(), r.server_node.as_str()))
        .collect();
    let (_, room_sid, host) = rooms[0];
    c.check(
        "alice (node A) and bob (node B) are in the same room on the same node, as is everyone",
        !room_sid.is_empty()
            && rooms.iter().all(|r| (r.1, r.2) == (room_sid, host))
            && node_ids.iter().any(|n| n == host),
        format!("{rooms:?}, nodes {node_ids:?}"),
    );
}

/// dave's media came through coturn, which accepted the credentials livekit-server issued.
pub fn check_turn(c: &mut Checks, dave: &Report, coturn_log: &str, ttl: u32, now: i64) {
    let local: Vec<&str> = dave
        .received
        .iter()
        .filter_map(|t| t.ice.as_ref().map(|i| i.local.as_str()))
        .collect();
    c.check(
        "dave (relay only) receives through a TURN relay",
        local.len() == 6 && local.iter().all(|l| l.starts_with("relay ")),
        format!("{local:?}"),
    );
    let user = format!(":{}>", dave.participant_sid);
    let allocations: Vec<&str> = coturn_log
        .lines()
        .filter(|l| l.contains(&user) && l.contains("ALLOCATE processed, success"))
        .collect();
    let expiry = allocations
        .first()
        .and_then(|l| l.split("user <").nth(1))
        .and_then(|u| u.split(':').next())
        .and_then(|e| e.parse::<i64>().ok());
    c.check(
        "coturn allocated dave's relay with credentials livekit-server issued (`<expiry>:<participant SID>`, the configured TTL)",
        !dave.participant_sid.is_empty() && expiry.is_some_and(|e| (e - now - i64::from(ttl)).abs() < 120),
        format!("{} allocations, expiry {expiry:?}, now {now}", allocations.len()),
    );
}

fn check_refused(c: &mut Checks, case: &str, r: &Report, status: u16, reason_has: &str, token: &str) {
    c.check(
        case,
        r.outcome == "refused"
            && r.exit_code == 3
            && r.http_status == Some(status)
            && r.reason.contains(reason_has)
            && r.published.is_empty()
            && r.received.is_empty(),
        format!(
            "{} (exit {}, HTTP {:?}): {}",
            r.outcome, r.exit_code, r.http_status, r.reason
        ),
    );
    c.check(
        &format!("{case}, and the token is not in the client's output"),
        !r.raw.contains(token),
        if r.raw.contains(token) { "present" } else { "absent" },
    );
}

pub fn check_refusals(c: &mut Checks, r: &Refusals) {
    check_refused(
        c,
        "an expired token is refused",
        &r.erin,
        401,
        "expired",
        &r.expired_token,
    );
    check_refused(
        c,
        "a token signed with another secret is refused",
        &r.mallory,
        401,
        "signature",
        &r.forged_token,
    );
    c.check(
        "frank fills the one-participant room",
        r.frank.outcome == "ok" && r.frank.room == "small",
        format!("{} in {:?}", r.frank.outcome, r.frank.room),
    );
    // LiveKit answers a full room with a bare 500 ("connection closed by media" when the
    // join came through another node).
    check_refused(c, "a join to a full room is refused", &r.gina, 500, "", &r.full_token);
}
