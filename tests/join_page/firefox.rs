//! Step 7: Firefox ESR as a second browser, driven through puppeteer-core's WebDriver BiDi
//! support. Two participants of `fireside` (Required) hold a call in Firefox: each decodes the
//! other's video and hears their audio, every track is encrypted (in the page's view and the
//! SFU's), and the page's own encryption is on. Firefox encrypts through
//! `RTCRtpScriptTransform`, Chromium through insertable streams: the same page, another path
//! through livekit-client's E2EE worker. The driver allows camera and microphone for every site
//! in Firefox: without that, Firefox gathers candidates only on the default route's interface,
//! and this namespace has none (see `FIREFOX_PREFS` in `web/test/driver.mjs`).

use std::path::Path;
use std::time::Instant;

use super::scenario::{FIRESIDE, World, decoded, heard};
use super::steps::{WAIT, encrypted_both_ways, see_and_hear, sfu_tracks_in};

pub fn call(w: &mut World, firefox: &Path) {
    let version = w.launch_firefox(firefox);
    println!("second browser: {version}");
    let t0 = Instant::now();
    for who in ["fiona", "felix"] {
        let link = w.link(FIRESIDE, who);
        w.open_in("firefox", who, &link);
    }
    for who in ["fiona", "felix"] {
        w.driver.wait_state(who, "joined", WAIT);
        let tracks = sfu_tracks_in(w, FIRESIDE, who, 2);
        assert!(
            tracks.len() == 2 && tracks.iter().all(|t| t.encrypted()),
            "the SFU records {who}'s (Firefox) camera and microphone as encrypted: {tracks:?}"
        );
    }
    let v = see_and_hear(w, ("fiona", "fiona"), ("felix", "felix"));
    let elapsed = t0.elapsed();
    let sfu = w.sfu_in(FIRESIDE);
    for (me, other) in [("fiona", "felix"), ("felix", "fiona")] {
        encrypted_both_ways(&sfu, &v, me, other);
    }
    let shots = [
        w.screenshot("fiona", "fiona-firefox-joined"),
        w.screenshot("felix", "felix-firefox-joined"),
    ];
    println!(
        "firefox: first frames both ways {:.1}s after opening; fiona decoded {} frames from felix, felix {} from fiona; audio {:?} / {:?} (samples, energy); screenshots {}, {}",
        elapsed.as_secs_f64(),
        decoded(&v["fiona"]["stats"], "felix"),
        decoded(&v["felix"]["stats"], "fiona"),
        heard(&v["fiona"]["stats"], "felix"),
        heard(&v["felix"]["stats"], "fiona"),
        shots[0].display(),
        shots[1].display()
    );
    let (fiona, felix) = (w.driver.stats("fiona"), w.driver.stats("felix"));
    println!(
        "firefox: by the end of the call fiona decoded {} frames from felix, felix {} from fiona",
        decoded(&fiona, "felix"),
        decoded(&felix, "fiona")
    );
    w.close("fiona");
    w.close("felix");
}
