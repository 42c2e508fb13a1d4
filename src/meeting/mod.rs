//! The Meeting reconciler's pure parts: its schedule, its join tokens, the capacity it
//! reserves on its Bridge, whether its engine can keep E2EE on for its room, and the checks
//! admission cannot make.

pub mod capacity;
pub mod credentials;
pub mod e2ee;
pub mod e2ee_key;
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

/// The rooms of a LiveKit Bridge that exist at `now`: those of the Meetings naming it (given as
/// bookings) that it can honour, that hold their room (no older overlapping Meeting does), and
/// whose join window is open; each with its `maxParticipants`. Also when the set next changes.
/// `now` `None` lists every such Meeting's room, whatever the time (`conclave render`).
pub fn open_rooms(
    bookings: &[validate::Booking<'_>],
    bridge: &str,
    spec: &BridgeSpec,
    now: Option<DateTime<Utc>>,
) -> (BTreeMap<String, Option<i32>>, Option<DateTime<Utc>>) {
    let mut rooms = BTreeMap::new();
    let mut next: Option<DateTime<Utc>> = None;
    for b in bookings {
        if validate::against_bridge(b.spec, bridge, spec).is_err() || validate::room_taken_by(b, bookings).is_some() {
            continue;
        }
        let open = match now {
            None => true,
            Some(now) => {
                let (phase, change) = schedule::phase_at(b.spec, now);
                next = [next, change].into_iter().flatten().min();
                phase == Phase::Open
            }
        };
        if open {
            let limit = rooms.entry(b.room.clone()).or_insert(b.spec.max_participants);
            *limit = (*limit).max(b.spec.max_participants);
        }
    }
    (rooms, next)
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

    #[test]
    fn rooms_exist_while_their_meeting_is_open() {
        let bridge: BridgeSpec =
            serde_json::from_value(serde_json::json!({"domain": "m.example.com", "engine": "LiveKit"})).expect("b");
        let standup = spec(serde_json::json!({
            "bridge": "b", "maxParticipants": 3,
            "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T11:00:00Z"
        }));
        let standing = spec(serde_json::json!({"bridge": "b"}));
        // Younger, overlapping, same room: RoomInUse, so it opens nothing.
        let intruder = spec(serde_json::json!({"bridge": "b", "room": "standup", "maxParticipants": 50}));
        let t0: DateTime<Utc> = "2029-01-01T00:00:00Z".parse().expect("t");
        let book = |name, spec, secs| validate::Booking {
            name,
            created: Some(t0 + chrono::Duration::seconds(secs)),
            room: room(name, spec),
            spec,
        };
        let all = vec![
            book("standup", &standup, 0),
            book("lobby", &standing, 1),
            validate::Booking {
                room: "standup".into(),
                ..book("intruder", &intruder, 2)
            },
        ];
        let at = |s: &str| open_rooms(&all, "b", &bridge, Some(s.parse().expect("t")));
        assert_eq!(
            at("2030-01-01T09:00:00Z"),
            (
                BTreeMap::from([("lobby".to_string(), None)]),
                Some("2030-01-01T09:50:00Z".parse().expect("t"))
            ),
            "before the window: only the standing room"
        );
        let (open, next) = at("2030-01-01T09:50:00Z");
        assert_eq!(open.get("standup"), Some(&Some(3)), "from 10 minutes before the start");
        assert_eq!(next, Some("2030-01-01T11:00:00Z".parse().expect("t")));
        let (open, next) = at("2030-01-01T11:00:00Z");
        assert!(!open.contains_key("standup"), "closed at its end");
        assert_eq!(next, None);
        assert_eq!(open_rooms(&all, "b", &bridge, None).0.len(), 2);
    }
}
