//! The open rooms of a LiveKit Bridge. livekit-server creates no room on its own
//! (`room.auto_create: false`), so a link, whatever its token's expiry, joins only while its
//! Meeting's room exists. The operator lists the rooms of the Meetings that are open now (from
//! their join window's start until their end) in ConfigMap `<bridge>-rooms`; `conclave web`
//! reads it and creates and deletes rooms through LiveKit's RoomService to match, each with its
//! Meeting's `maxParticipants`, which LiveKit enforces. An ended or deleted Meeting's room is
//! deleted, which disconnects whoever is still in it.
//!
//! ```json
//! {"rooms":[{"name":"standup","maxParticipants":25}]}
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, Volume, VolumeMount};
use serde::Serialize;

use crate::bridge::context::Ctx;
use crate::bridge::objects::mount;
use crate::child::Child;
use crate::labels::Component;

/// Name suffix of the ConfigMap.
pub const SUFFIX: &str = "rooms";
/// Key of the list in the ConfigMap.
pub const KEY: &str = "rooms.json";
/// Where `conclave web` finds it (a whole-directory mount, so updates reach the pod).
pub const DIR: &str = "/conclave/rooms";

#[derive(Serialize)]
struct File<'a> {
    rooms: Vec<Entry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_participants: Option<i32>,
}

/// The file: every open room by name, with its limit when its Meeting sets one.
pub fn file(open: &BTreeMap<String, Option<i32>>) -> Result<String, serde_json::Error> {
    let rooms = open
        .iter()
        .map(|(name, max)| Entry {
            name,
            max_participants: *max,
        })
        .collect();
    Ok(serde_json::to_string(&File { rooms })? + "\n")
}

pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let cm = ConfigMap {
        metadata: ctx.meta(SUFFIX, Component::Web),
        data: Some(BTreeMap::from([(KEY.to_string(), file(&ctx.open_rooms)?)])),
        ..ConfigMap::default()
    };
    Ok(vec![Child::new(&cm)?])
}

/// The web pod's volume and mount for the list.
pub fn volume(ctx: &Ctx) -> (Volume, VolumeMount) {
    (
        Volume {
            name: "rooms".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: ctx.child_name(SUFFIX),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        mount("rooms", DIR, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_format() {
        let open = BTreeMap::from([("standup".to_string(), Some(25)), ("all-hands".to_string(), None)]);
        assert_eq!(
            file(&open).expect("json"),
            "{\"rooms\":[{\"name\":\"all-hands\"},{\"name\":\"standup\",\"maxParticipants\":25}]}\n"
        );
        assert_eq!(file(&BTreeMap::new()).expect("json"), "{\"rooms\":[]}\n");
    }

    #[test]
    fn conclave_web_reads_what_the_operator_writes() {
        let open = BTreeMap::from([("standup".to_string(), Some(25)), ("all-hands".to_string(), None)]);
        let read = crate::web::rooms::parse(&file(&open).expect("json"), "rooms.json").expect("parses");
        assert_eq!(
            read,
            BTreeMap::from([("standup".to_string(), 25), ("all-hands".to_string(), 0)])
        );
    }
}
