//! Step 6: a Preferred Meeting (`hallway`). Its links carry the key like a Required Meeting's,
//! and the page encrypts with it; only a page without the key offers to join unencrypted, and
//! one that does says so, publishes in the clear, and does not subscribe to the encrypted
//! participants it could not decrypt. The encrypted participant plays it, and her page says that
//! not everyone is encrypted (README, "The join page", Preferred).

use serde_json::json;

use super::scenario::{HALLWAY, World, decoded, heard, inbound, remote};
use super::steps::{WAIT, sfu_tracks_in, visible};

/// Video frames pat must decode from quinn while quinn is watched receiving nothing.
const WINDOW_FRAMES: u64 = 90;

fn badge(w: &mut World, id: &str) -> serde_json::Value {
    w.driver.eval(id, "document.getElementById('e2ee-state').textContent")
}

pub fn preferred(w: &mut World) {
    let pat_link = w.link(HALLWAY, "pat");
    assert!(
        pat_link.contains("#key="),
        "a Preferred Meeting's link carries the key too"
    );
    w.open("pat", &pat_link, false);
    let s = w.driver.wait_state("pat", "joined", WAIT);
    assert_eq!(s["policy"], "Preferred/Link", "pat: {s}");
    assert_eq!(s["e2ee"], true, "a Preferred page with the key encrypts: {s}");
    assert_eq!(badge(w, "pat"), json!("End-to-end encrypted"));
    let pat_tracks = sfu_tracks_in(w, HALLWAY, "pat", 2);
    assert!(
        pat_tracks.iter().all(|t| t.encrypted()),
        "the SFU records pat's tracks as encrypted: {pat_tracks:?}"
    );

    w.open("quinn", &w.link_with_key(HALLWAY, "quinn", None), false);
    w.driver.wait_state("quinn", "needs-key", WAIT);
    assert!(visible(w, "quinn", "#key-form"), "quinn is asked for the passphrase");
    assert!(
        visible(w, "quinn", "#join-unencrypted"),
        "a Preferred meeting offers to join without encryption"
    );
    assert!(!w.sfu_in(HALLWAY).contains_key("quinn"), "nobody joins before choosing");
    w.screenshot("quinn", "quinn-asked-for-passphrase-or-plain");
    w.driver.click("quinn", "#join-unencrypted");
    let s = w.driver.wait_state("quinn", "joined", WAIT);
    assert_eq!(s["e2ee"], false, "quinn joined without encryption: {s}");
    assert_eq!(badge(w, "quinn"), json!("NOT end-to-end encrypted"));
    let quinn_tracks = sfu_tracks_in(w, HALLWAY, "quinn", 2);
    assert!(
        quinn_tracks.iter().all(|t| !t.encrypted()),
        "the SFU records quinn's tracks as unencrypted: {quinn_tracks:?}"
    );

    // Pat plays quinn (a Preferred meeting admits media in the clear) and says so.
    let v = w.driver.wait_for(
        "pat to see and hear quinn, and quinn to have decoded nothing of pat meanwhile",
        WAIT,
        |d| json!({"pat": d.stats("pat"), "quinn": d.stats("quinn")}),
        |v| decoded(&v["pat"], "quinn") >= WINDOW_FRAMES && heard(&v["pat"], "quinn").1 > 0.0,
    );
    assert_eq!(
        inbound(&v["quinn"], "pat", "video").count() + inbound(&v["quinn"], "pat", "audio").count(),
        0,
        "quinn, without the key, receives nothing of pat's encrypted media: {}",
        v["quinn"]
    );
    let pat_view = w.driver.snapshot("pat");
    let q = remote(&pat_view, "quinn").unwrap_or_else(|| panic!("pat lists quinn: {pat_view}"));
    assert_eq!(q["tile"], "media", "pat plays quinn: {q}");
    assert!(
        q["tracks"]
            .as_array()
            .is_some_and(|t| t.len() == 2 && t.iter().all(|t| t["played"] == true && t["encrypted"] == false)),
        "pat plays both of quinn's unencrypted tracks: {q}"
    );
    assert!(
        q["message"]
            .as_str()
            .is_some_and(|m| m.contains("Quinn Plain") && m.contains("not end-to-end encrypted")),
        "pat's tile names quinn as not encrypted: {q}"
    );
    assert_eq!(
        badge(w, "pat"),
        json!("Not everyone is end-to-end encrypted"),
        "pat's badge does not claim a fully encrypted call"
    );
    let quinn_view = w.driver.snapshot("quinn");
    let p = remote(&quinn_view, "pat").unwrap_or_else(|| panic!("quinn lists pat: {quinn_view}"));
    assert_eq!(p["tile"], "needs-key", "quinn: {p}");
    assert!(
        p["tracks"]
            .as_array()
            .is_some_and(|t| t.len() == 2 && t.iter().all(|t| t["subscribed"] == false && t["played"] == false)),
        "quinn neither subscribes to nor plays pat's encrypted tracks: {p}"
    );
    assert!(
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("Pat Encrypted") && m.contains("passphrase")),
        "quinn's tile says why pat is not shown: {p}"
    );
    println!(
        "preferred: pat decoded {} frames from quinn (in the clear); quinn received nothing of pat's",
        decoded(&v["pat"], "quinn")
    );
    w.screenshot("pat", "pat-plays-unencrypted-quinn");
    w.screenshot("quinn", "quinn-joined-unencrypted");
    w.close("quinn");
    w.close("pat");
}
