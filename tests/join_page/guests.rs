//! Guests: one waits in the lobby without media until the moderator admits them, another is
//! denied and never gets any. And a member whose link lost its key: asked for the passphrase,
//! never joined without it.

use serde_json::json;

use super::scenario::{STANDUP, World, decoded};
use super::steps::{SERVER_CLOSED, WAIT, assert_layout, identity, see_and_hear, visible, watch};

/// Step 4.
pub fn lobby(w: &mut World) {
    let link = w.link(STANDUP, "guest");
    w.open("gina", &link, false);
    w.driver
        .call(json!({"cmd": "type", "id": "gina", "selector": "#name-input", "text": "Gina Guest"}));
    w.driver.click("gina", "#name-submit");
    w.driver.wait_state("gina", "lobby", WAIT);
    assert_layout(w, "gina", "lobby");
    let gina = identity(w, "gina");
    assert!(gina.starts_with("guest-"), "a fresh guest identity: {gina}");
    w.driver.wait_for(
        "alice to see gina waiting",
        WAIT,
        |d| d.snapshot("alice"),
        |s| {
            s["waiting"]
                .as_array()
                .is_some_and(|l| l.iter().any(|i| *i == json!(gina)))
        },
    );
    let admit_buttons = w.driver.eval("bob", "document.querySelectorAll('[data-admit]').length");
    assert_eq!(admit_buttons, 0, "bob is no moderator and gets no Admit button");
    watch(w, "gina to stay without media in the lobby", |_| true);
    let (stats, snap) = (w.driver.stats("gina"), w.driver.snapshot("gina"));
    assert!(
        stats
            .as_array()
            .is_some_and(|s| s.iter().all(|x| x["framesDecoded"] == 0 && x["bytesReceived"] == 0)),
        "gina receives nothing while waiting: {stats}"
    );
    assert_eq!(
        snap["local"]["tracks"],
        json!([]),
        "gina publishes nothing while waiting: {snap}"
    );
    let on_sfu = w.sfu().get(&gina).cloned().expect("the SFU lists gina");
    assert!(on_sfu.tracks.is_empty(), "{on_sfu:?}");
    let perm = on_sfu.permission.clone().unwrap_or_default();
    assert!(
        !perm.can_subscribe && !perm.can_publish,
        "gina may neither subscribe nor publish: {on_sfu:?}"
    );
    w.screenshot("gina", "gina-lobby");
    w.screenshot("alice", "alice-sees-gina-waiting");

    w.driver.click("alice", &format!("[data-admit=\"{gina}\"]"));
    w.driver.wait_state("gina", "joined", WAIT);
    see_and_hear(w, ("gina", &gina.clone()), ("alice", "alice"));
    w.driver
        .wait_for("gina to see bob", WAIT, |d| d.stats("gina"), |s| decoded(s, "bob") > 0);
    let on_sfu = w.sfu().get(&gina).cloned().expect("gina");
    assert!(
        on_sfu.tracks.len() == 2 && on_sfu.tracks.iter().all(twirp_encrypted),
        "gina publishes encrypted once admitted: {on_sfu:?}"
    );
    assert_layout(w, "gina", "joined");
    let waiting = w.driver.snapshot("alice")["waiting"].clone();
    assert_eq!(waiting, json!([]), "nobody waits any more");
    w.screenshot("gina", "gina-admitted");

    let link = w.link(STANDUP, "guest");
    w.open("dan", &link, false);
    w.driver
        .call(json!({"cmd": "type", "id": "dan", "selector": "#name-input", "text": "Dan Denied"}));
    w.driver.click("dan", "#name-submit");
    w.driver.wait_state("dan", "lobby", WAIT);
    let dan = identity(w, "dan");
    assert_ne!(dan, gina, "every guest gets an identity of their own");
    w.driver.wait_for(
        "alice to see dan waiting",
        WAIT,
        |d| d.snapshot("alice"),
        |s| {
            s["waiting"]
                .as_array()
                .is_some_and(|l| l.iter().any(|i| *i == json!(dan)))
        },
    );
    // The SDK logs the data channels the server closes when it removes a participant.
    w.expect_console("dan", SERVER_CLOSED);
    w.driver.click("alice", &format!("[data-deny=\"{dan}\"]"));
    w.driver.wait_state("dan", "denied", WAIT);
    assert_layout(w, "dan", "denied");
    let stats = w.driver.stats("dan");
    assert!(
        stats
            .as_array()
            .is_none_or(|s| s.iter().all(|x| x["framesDecoded"] == 0 && x["bytesReceived"] == 0)),
        "dan never received media: {stats}"
    );
    assert!(!w.sfu().contains_key(&dan), "dan is gone from the room");
    w.screenshot("dan", "dan-denied");
}

fn twirp_encrypted(t: &conclave::web::twirp::Track) -> bool {
    t.encrypted()
}

/// Step 4b: a link without its fragment. The meeting is Required: the page asks for the
/// passphrase, offers no way in without it, and joins encrypted once it is typed.
pub fn passphrase(w: &mut World) {
    let link = w.link_with_key(STANDUP, "erin", None);
    w.open("erin", &link, false);
    w.driver.wait_state("erin", "needs-key", WAIT);
    assert!(visible(w, "erin", "#key-form"), "erin is asked for the passphrase");
    assert!(
        !visible(w, "erin", "#join-unencrypted"),
        "a Required meeting offers no unencrypted way in"
    );
    // Nothing is connected while the page waits for the key.
    watch(w, "erin to stay outside without a key", |_| true);
    assert!(!w.sfu().contains_key("erin"), "erin has not joined without a key");
    w.screenshot("erin", "erin-asked-for-passphrase");
    let key = w.key.clone();
    w.driver
        .call(json!({"cmd": "type", "id": "erin", "selector": "#key-input", "text": key}));
    w.driver.click("erin", "#key-submit");
    w.driver.wait_state("erin", "joined", WAIT);
    see_and_hear(w, ("erin", "erin"), ("alice", "alice"));
    w.close("erin");
}
