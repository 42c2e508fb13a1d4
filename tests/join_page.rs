//! Conclave's join page in real browsers, against a real `livekit-server`, coturn and
//! `conclave web`, with links from a real Meeting's credentials Secret, in network, PID and mount
//! namespaces of the test's own.
//!
//! Inside the namespaces the test starts the local control plane (testenv, on loopback) and the
//! operator with a clock the test controls; the operator reconciles a LiveKit Bridge and three
//! Meetings (`standup` Required, `hallway` Preferred, `fireside` Required). livekit-server,
//! coturn and `conclave web` run with the keys from the Bridge's generated Secret, `conclave
//! web` with the rooms ConfigMap projected into its rooms volume; browsers open the links from
//! the Meetings' credentials Secrets. Headless Chromium (and Firefox ESR for one call), driven by
//! puppeteer-core (`web/test/driver.mjs`), and the test checks, through the page's
//! `window.conclave` hook, the browsers' WebRTC stats and LiveKit's RoomService, that:
//!
//! 1. two members see and hear each other (one through TURN only), every track encrypted, and
//!    the page and the SFU agree on each track's encryption;
//! 2. a member with the right token and a wrong key decodes nothing and shows "cannot decrypt";
//! 3. a client that publishes without encryption is not played, and the page names it;
//! 4. a guest waits in the lobby with no media until the moderator admits them; a denied guest
//!    never gets any; a link without its key asks for the passphrase;
//! 5. in a Preferred Meeting a link without its key may join unencrypted, openly, and the page
//!    does what README says for Preferred;
//! 6. once the operator's clock passes `standup`'s end, everyone in its room is disconnected
//!    and its links no longer join, while the other Meetings' rooms stay;
//! 7. two Firefox ESR pages hold an encrypted call;
//!
//! with screenshots of every page under `target/tmp/join-page/`, and no JavaScript error on any
//! page. The outer test builds what is missing (the control plane and livekit-server and
//! lkclient through `tests/tools/build.sh`, the page with npm) and re-runs itself inside the
//! namespaces; without namespaces, Chromium, Firefox ESR or node it skips loudly, and fails
//! under CI.

#[path = "join_page/browser.rs"]
mod browser;
#[path = "join_page/cluster.rs"]
mod cluster;
mod common;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "join_page/firefox.rs"]
mod firefox;
#[path = "join_page/guests.rs"]
mod guests;
#[path = "common/netns.rs"]
mod netns;
#[path = "join_page/plaintext.rs"]
mod plaintext;
#[path = "join_page/preferred.rs"]
mod preferred;
#[path = "join_page/scenario.rs"]
mod scenario;
#[path = "join_page/servers.rs"]
mod servers;
#[path = "join_page/stats.rs"]
mod stats;
#[path = "join_page/steps.rs"]
mod steps;

#[path = "join_page/tools.rs"]
mod tools;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The inner test, run by the outer one inside the namespace.
const INNER: &str = "browsers_inside_network_namespace";
/// Printed by the inner test when every check ran.
const DONE: &str = "conclave-join-page: every browser check ran";

#[test]
fn join_page_in_real_browsers() {
    let Some(chromium) = tools::chromium() else {
        return netns::skip(
            "the join-page browser test needs Chromium",
            "install Debian's chromium, or set CONCLAVE_CHROMIUM",
        );
    };
    let Some(node) = tools::node() else {
        return netns::skip(
            "the join-page browser test needs node and npm",
            "install Debian's nodejs and npm",
        );
    };
    if tools::turnserver().is_none() {
        return netns::skip("the join-page browser test needs coturn", "install Debian's coturn");
    }
    let static_dir = tools::build_page().unwrap_or_else(|e| panic!("building the page: {e}"));
    let livekit = tools::livekit_server().unwrap_or_else(|e| panic!("livekit-server: {e}"));
    // The control plane runs inside the namespace, which has no network to build it in.
    testenv::tools_bin_dir().unwrap_or_else(|e| panic!("the control plane's binaries: {e}"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("join-page");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("output dir");
    let lkclient = tools::lkclient().unwrap_or_else(|e| panic!("lkclient: {e}"));
    let mut env: Vec<(&str, OsString)> = vec![
        (scenario::CHROMIUM_ENV, chromium.into()),
        (scenario::NODE_ENV, node.into()),
        (scenario::LIVEKIT_ENV, livekit.into()),
        (scenario::STATIC_ENV, static_dir.into()),
        (scenario::OUT_ENV, out.clone().into()),
    ];
    if let Some(lkclient) = lkclient {
        env.push((scenario::LKCLIENT_ENV, lkclient.into()));
    }
    match tools::firefox() {
        Some(firefox) => env.push((scenario::FIREFOX_ENV, firefox.into())),
        // The rest still runs; only the Firefox call is skipped (and under CI, fails).
        None => netns::skip(
            "the join page's Firefox call (Firefox ESR as a second browser)",
            "install Debian's firefox-esr, or set CONCLAVE_FIREFOX",
        ),
    }
    let ran = netns::Outer {
        inner: INNER,
        done: DONE,
        what: "the join page",
        timeout: Duration::from_secs(600),
        env,
    }
    .run();
    if ran {
        println!("screenshots and logs: {}", out.display());
    }
}

#[test]
#[ignore = "runs only inside the network namespace join_page_in_real_browsers creates"]
fn browsers_inside_network_namespace() {
    if !netns::is_inner() {
        eprintln!("{INNER} runs only under join_page_in_real_browsers, in a network namespace; not running it here");
        return;
    }
    netns::enter([scenario::SFU_IP, scenario::TURN_IP]);
    scenario::run();
    println!("{DONE}");
}
