//! What admission cannot check about a Meeting because it needs its Bridge or its siblings.

use chrono::{DateTime, Utc};

use crate::api::bridge::{BridgeSpec, Engine};
use crate::api::meeting::{KeyDistribution, Meeting, MeetingSpec};
use crate::conditions::Reason;

/// Why a Meeting cannot be honoured: a condition reason and a message naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub reason: Reason,
    pub message: String,
}

/// Checks a Meeting against its Bridge.
pub fn against_bridge(spec: &MeetingSpec, bridge_name: &str, bridge: &BridgeSpec) -> Result<(), Invalid> {
    if let Some(policy) = spec.e2ee
        && !policy.at_least(bridge.e2ee)
    {
        return Err(Invalid {
            reason: Reason::E2eeWeakerThanBridge,
            message: format!(
                "spec.e2ee: {policy:?} is weaker than Bridge {bridge_name}'s {:?}; a Meeting may only be as strict or stricter",
                bridge.e2ee
            ),
        });
    }
    if spec.key_distribution == KeyDistribution::OutOfBand && bridge.engine == Engine::Jitsi {
        return Err(Invalid {
            reason: Reason::UnsupportedByEngine,
            message: format!(
                "spec.keyDistribution: OutOfBand needs a LiveKit Bridge; Bridge {bridge_name} runs Jitsi, whose clients make their own keys"
            ),
        });
    }
    Ok(())
}

/// A Meeting as its siblings see it: name, creation time, room and schedule.
#[derive(Clone, Debug)]
pub struct Booking<'a> {
    pub name: &'a str,
    pub created: Option<DateTime<Utc>>,
    pub room: String,
    pub spec: &'a MeetingSpec,
}

impl<'a> Booking<'a> {
    /// The order Meetings were booked in: by creation, then name. It decides who keeps a room
    /// and whose reservation comes first.
    pub fn booked_order(&self) -> (Option<DateTime<Utc>>, &'a str) {
        (self.created, self.name)
    }

    pub fn of(meeting: &'a Meeting) -> Booking<'a> {
        let name = meeting.metadata.name.as_deref().unwrap_or_default();
        Booking {
            name,
            created: meeting
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0)),
            room: super::room(name, &meeting.spec),
            spec: &meeting.spec,
        }
    }
}

fn overlaps(a: &MeetingSpec, b: &MeetingSpec) -> bool {
    let starts_before_end = |x: &MeetingSpec, y: &MeetingSpec| match (x.start, y.end) {
        (Some(s), Some(e)) => s < e,
        _ => true,
    };
    starts_before_end(a, b) && starts_before_end(b, a)
}

/// The first older Meeting on the same Bridge holding the same room at an overlapping time:
/// two Meetings in one room would hand out links to one conference under two policies.
pub fn room_taken_by<'a>(me: &Booking<'_>, others: &'a [Booking<'a>]) -> Option<&'a str> {
    others
        .iter()
        .filter(|o| o.name != me.name && o.room == me.room && overlaps(o.spec, me.spec))
        .filter(|o| o.booked_order() < me.booked_order())
        .map(|o| o.name)
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> MeetingSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn a_meeting_may_not_be_weaker_than_its_bridge() {
        let required: BridgeSpec = serde_json::from_value(serde_json::json!({"domain": "m.example.com"})).expect("b");
        let preferred: BridgeSpec =
            serde_json::from_value(serde_json::json!({"domain": "m.example.com", "e2ee": "Preferred"})).expect("b");
        let weak = spec(serde_json::json!({"bridge": "meet", "e2ee": "Preferred"}));
        let strict = spec(serde_json::json!({"bridge": "meet", "e2ee": "Required"}));
        let unset = spec(serde_json::json!({"bridge": "meet"}));
        let err = against_bridge(&weak, "meet", &required).expect_err("weaker");
        assert_eq!(err.reason, Reason::E2eeWeakerThanBridge);
        assert!(err.message.starts_with("spec.e2ee"));
        assert!(against_bridge(&strict, "meet", &preferred).is_ok());
        assert!(against_bridge(&weak, "meet", &preferred).is_ok());
        assert!(against_bridge(&unset, "meet", &required).is_ok());
    }

    #[test]
    fn out_of_band_keys_need_livekit() {
        let jitsi: BridgeSpec = serde_json::from_value(serde_json::json!({"domain": "m.example.com"})).expect("b");
        let livekit: BridgeSpec =
            serde_json::from_value(serde_json::json!({"domain": "m.example.com", "engine": "LiveKit"})).expect("b");
        let oob = spec(serde_json::json!({"bridge": "meet", "keyDistribution": "OutOfBand"}));
        let err = against_bridge(&oob, "meet", &jitsi).expect_err("jitsi");
        assert_eq!(err.reason, Reason::UnsupportedByEngine);
        assert!(err.message.starts_with("spec.keyDistribution"));
        assert!(against_bridge(&oob, "meet", &livekit).is_ok());
    }

    #[test]
    fn the_older_booking_keeps_the_room() {
        let a =
            spec(serde_json::json!({"bridge": "b", "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T11:00:00Z"}));
        let b =
            spec(serde_json::json!({"bridge": "b", "start": "2030-01-01T10:30:00Z", "end": "2030-01-01T12:00:00Z"}));
        let c =
            spec(serde_json::json!({"bridge": "b", "start": "2030-01-01T11:00:00Z", "end": "2030-01-01T12:00:00Z"}));
        let t0: DateTime<Utc> = "2029-01-01T00:00:00Z".parse().expect("t");
        let book = |name, spec, secs| Booking {
            name,
            created: Some(t0 + chrono::Duration::seconds(secs)),
            room: "standup".into(),
            spec,
        };
        let all = vec![book("a", &a, 0), book("b", &b, 1), book("c", &c, 2)];
        assert_eq!(room_taken_by(&all[0], &all), None);
        assert_eq!(room_taken_by(&all[1], &all), Some("a"));
        // c starts when a ends: no overlap with a, but it overlaps b.
        assert_eq!(room_taken_by(&all[2], &all), Some("b"));
    }
}
