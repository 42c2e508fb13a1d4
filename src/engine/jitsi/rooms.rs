//! Per-room occupancy limits: a ConfigMap with the limits of this Bridge's Meetings and the
//! small prosody module that applies them (see `mod_conclave_room_limits.lua`). Prosody reads
//! the file at each room creation, and a ConfigMap volume follows changes without a restart,
//! so adding a Meeting never restarts signalling.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, KeyToPath, Volume, VolumeMount};

use crate::bridge::context::Ctx;
use crate::bridge::objects::mount;
use crate::child::Child;
use crate::labels::Component;

/// Name suffix of the ConfigMap.
pub const SUFFIX: &str = "rooms";
/// The prosody module's name (`XMPP_MUC_MODULES`) and file.
pub const MODULE: &str = "conclave_room_limits";
const MODULE_FILE: &str = "mod_conclave_room_limits.lua";
pub const MODULE_SOURCE: &str = include_str!("mod_conclave_room_limits.lua");
/// Key and mount of the limits file; the module's default path.
const LIMITS_KEY: &str = "limits";
const LIMITS_DIR: &str = "/conclave/rooms";
/// docker-jitsi-meet's prosody loads modules from here (empty in the image).
const PLUGINS_DIR: &str = "/prosody-plugins-custom";
/// Occupancy of rooms without a Meeting limit: the API's largest `maxParticipants`. Setting a
/// global is what makes Jitsi's `muc_max_occupants` load and honour per-room limits at all.
pub const DEFAULT_LIMIT: i32 = 1000;

/// `room=limit` lines, sorted, one per room.
pub fn limits_file(limits: &BTreeMap<String, i32>) -> String {
    limits.iter().map(|(room, n)| format!("{room}={n}\n")).collect()
}

pub fn build(ctx: &Ctx) -> Result<Vec<Child>, serde_json::Error> {
    let cm = ConfigMap {
        metadata: ctx.meta(SUFFIX, Component::Prosody),
        data: Some(BTreeMap::from([
            (LIMITS_KEY.to_string(), limits_file(&ctx.room_limits)),
            (MODULE_FILE.to_string(), MODULE_SOURCE.to_string()),
        ])),
        ..ConfigMap::default()
    };
    Ok(vec![Child::new(&cm)?])
}

/// The prosody pod's volumes and mounts for the module and the limits. Whole-directory mounts
/// (no subPath), so an updated ConfigMap reaches the running pod.
pub fn volumes(ctx: &Ctx) -> (Vec<Volume>, Vec<VolumeMount>) {
    let item = |key: &str| {
        vec![KeyToPath {
            key: key.into(),
            path: key.into(),
            ..KeyToPath::default()
        }]
    };
    let volume = |name: &str, key: &str| Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: ctx.child_name(SUFFIX),
            items: Some(item(key)),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    (
        vec![volume("room-module", MODULE_FILE), volume("room-limits", LIMITS_KEY)],
        vec![
            mount("room-module", PLUGINS_DIR, true),
            mount("room-limits", LIMITS_DIR, true),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::objects::fixtures::sample_ctx;

    #[test]
    fn limits_are_sorted_lines_and_the_module_rides_along() {
        let mut ctx = sample_ctx();
        ctx.room_limits = BTreeMap::from([("standup".into(), 25), ("all-hands".into(), 300)]);
        let children = build(&ctx).expect("build");
        let cm: ConfigMap =
            serde_json::from_value(serde_json::to_value(&children[0].object).expect("json")).expect("configmap");
        let data = cm.data.expect("data");
        assert_eq!(data["limits"], "all-hands=300\nstandup=25\n");
        assert!(data[MODULE_FILE].contains("room._data.max_occupants = limit"));
        assert_eq!(cm.metadata.name.as_deref(), Some("meet-rooms"));
    }

    #[test]
    fn empty_limits_give_an_empty_file() {
        assert_eq!(limits_file(&BTreeMap::new()), "");
    }

    #[test]
    fn mounts_are_whole_directories() {
        let (volumes, mounts) = volumes(&sample_ctx());
        assert_eq!(volumes.len(), 2);
        assert!(mounts.iter().all(|m| m.sub_path.is_none()));
        assert!(mounts.iter().any(|m| m.mount_path == "/prosody-plugins-custom"));
        assert!(mounts.iter().any(|m| m.mount_path == "/conclave/rooms"));
    }
}
