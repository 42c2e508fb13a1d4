//! Reading the page's hook and the browser's WebRTC stats: what one page received from whom.

use serde_json::Value;

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
