//! The Meeting reconciler's pure parts: its schedule, its join tokens, the capacity it
//! reserves on its Bridge, whether its engine can keep E2EE on for its room, and the checks
//! admission cannot make.

pub mod capacity;
pub mod credentials;
pub mod e2ee;
pub mod schedule;
pub mod validate;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use kube::ResourceExt;

use crate::api::bridge::BridgeSpec;
use crate::api::meeting::{Meeting, MeetingSpec, Phase};

/// `conclave.dev/owner-kind` of every Meeting child.
pub const OWNER_KIND: &str = "meeting";

/// The room name: `spec.room`, or the Meeting's name.
pub fn room(name: &str, spec: &MeetingSpec) -> String {
    spec.room.clone().unwrap_or_else(|| name.to_string())
}

/// The room's URL, without any token.
pub fn room_url(domain: &str, room: &str) -> String {
    format!("https://{domain}/{room}")
}

/// The Meetings a Bridge hosts and can honour: in its namespace, naming it, and not weaker
/// than its policy. These reserve capacity and set room limits.
pub fn hosted_by<'a>(
    meetings: impl IntoIterator<Item = &'a Meeting>,
    namespace: &str,
    bridge: &str,
    spec: &BridgeSpec,
) -> Vec<&'a Meeting> {
    meetings
        .into_iter()
        .filter(|m| m.namespace().as_deref() == Some(namespace) && m.spec.bridge == bridge)
        .filter(|m| validate::against_bridge(&m.spec, bridge, spec).is_ok())
        .collect()
}

/// Occupancy limits by room for prosody: each Meeting (given as name and spec) that sets
/// `maxParticipants` and has not ended at `now` (`None`: regardless of time). Two Meetings of
/// one room at different times get the larger limit, so neither is cut short.
pub fn room_limits<'a>(
    meetings: impl IntoIterator<Item = (&'a str, &'a MeetingSpec)>,
    now: Option<DateTime<Utc>>,
) -> BTreeMap<String, i32> {
    let mut limits = BTreeMap::new();
    for (name, spec) in meetings {
        let ended = now.is_some_and(|now| schedule::phase_at(spec, now).0 == Phase::Ended);
        if let (Some(max), false) = (spec.max_participants, ended) {
            let limit = limits.entry(room(name, spec)).or_insert(max);
            *limit = (*limit).max(max);
        }
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> MeetingSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn limits_come_from_meetings_that_set_them_and_have_not_ended() {
        let a = spec(serde_json::json!({"bridge": "b", "maxParticipants": 25, "end": "2030-01-01T10:00:00Z"}));
        let b = spec(serde_json::json!({"bridge": "b", "room": "standup", "maxParticipants": 40}));
        let c = spec(serde_json::json!({"bridge": "b"}));
        let all = [("standup", &a), ("later", &b), ("open", &c)];
        let before: DateTime<Utc> = "2030-01-01T09:00:00Z".parse().expect("t");
        let after: DateTime<Utc> = "2030-01-01T11:00:00Z".parse().expect("t");
        assert_eq!(
            room_limits(all, Some(before)),
            BTreeMap::from([("standup".to_string(), 40)])
        );
        assert_eq!(room_limits([("standup", &a)], Some(after)), BTreeMap::new());
        assert_eq!(
            room_limits([("standup", &a)], None),
            BTreeMap::from([("standup".to_string(), 25)])
        );
    }
}
