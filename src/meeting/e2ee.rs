//! Whether a Meeting's room stays small enough for its engine to keep E2EE on: Jitsi Meet's
//! client stops offering E2EE from 20 participants and switches it off from 25, so a `Required`
//! room that may hold more cannot be what it says. Admission cannot see the Bridge's engine, so
//! this is a condition on the Meeting.

use crate::api::bridge::{AuthMode, BridgeSpec};
use crate::api::common::E2eePolicy;
use crate::api::meeting::MeetingSpec;
use crate::conditions::Reason;
use crate::engine;

/// The most people the room may hold: `maxParticipants`; else, when only invitees can join
/// (JWT without guests), their number; `None` when nothing bounds it (guests or open rooms).
pub fn room_capacity(spec: &MeetingSpec, bridge: &BridgeSpec) -> Option<i32> {
    if let Some(max) = spec.max_participants {
        return Some(max);
    }
    let invitees_only = bridge.auth.mode == AuthMode::Jwt && !spec.guests.allowed;
    invitees_only.then(|| i32::try_from(spec.participants.len()).unwrap_or(i32::MAX))
}

/// The `E2EEAvailable` condition of a Meeting whose policy is `Required` on an engine with a
/// room limit for E2EE: (ok, reason, message). `None` otherwise (a `Preferred` room may go
/// unencrypted by design).
pub fn condition(spec: &MeetingSpec, bridge: &BridgeSpec) -> Option<(bool, Reason, String)> {
    let policy = spec.e2ee.unwrap_or(bridge.e2ee);
    if policy != E2eePolicy::Required {
        return None;
    }
    let limit = engine::e2ee_room_limit(bridge.engine)?;
    let engine_says = format!(
        "{:?} clients stop offering E2EE from {limit} participants in a room and switch it off for everyone from {}",
        bridge.engine,
        limit + 5
    );
    Some(match room_capacity(spec, bridge) {
        Some(n) if n < limit => (
            true,
            Reason::WithinE2eeLimit,
            format!("the room holds at most {n} participants; {engine_says}"),
        ),
        Some(n) => (
            false,
            Reason::AboveE2eeLimit,
            format!(
                "the room may hold {n} participants; {engine_says}: set spec.maxParticipants below {limit} to keep E2EE Required"
            ),
        ),
        None => (
            false,
            Reason::AboveE2eeLimit,
            format!(
                "nothing bounds the room (guests or an open Bridge, no spec.maxParticipants); {engine_says}: set spec.maxParticipants below {limit} to keep E2EE Required"
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meeting(v: serde_json::Value) -> MeetingSpec {
        let mut m = json!({"bridge": "meet"});
        m.as_object_mut()
            .expect("object")
            .extend(v.as_object().cloned().unwrap_or_default());
        serde_json::from_value(m).expect("meeting")
    }

    fn bridge(v: serde_json::Value) -> BridgeSpec {
        let mut b = json!({"domain": "meet.example.com"});
        b.as_object_mut()
            .expect("object")
            .extend(v.as_object().cloned().unwrap_or_default());
        serde_json::from_value(b).expect("bridge")
    }

    fn people(n: usize) -> serde_json::Value {
        json!((0..n).map(|i| json!({"name": format!("p{i}")})).collect::<Vec<_>>())
    }

    #[test]
    fn required_rooms_below_the_limit_are_within_it() {
        let b = bridge(json!({}));
        let c = condition(&meeting(json!({"participants": people(19)})), &b).expect("condition");
        assert_eq!((c.0, c.1), (true, Reason::WithinE2eeLimit), "{}", c.2);
        let c = condition(
            &meeting(json!({"maxParticipants": 19, "guests": {"allowed": true}})),
            &b,
        )
        .expect("c");
        assert_eq!((c.0, c.1), (true, Reason::WithinE2eeLimit), "{}", c.2);
    }

    #[test]
    fn required_rooms_at_or_above_the_limit_or_unbounded_are_not() {
        let b = bridge(json!({}));
        for m in [
            json!({"participants": people(20)}),
            json!({"maxParticipants": 50}),
            json!({"participants": people(3), "guests": {"allowed": true}}),
        ] {
            let c = condition(&meeting(m.clone()), &b).expect("condition");
            assert_eq!((c.0, c.1), (false, Reason::AboveE2eeLimit), "{m}: {}", c.2);
            assert!(c.2.contains("spec.maxParticipants below 20"), "{}", c.2);
        }
        let open = bridge(json!({"auth": {"mode": "Open"}}));
        let c = condition(&meeting(json!({"participants": people(2)})), &open).expect("condition");
        assert!(!c.0, "an open room is unbounded: {}", c.2);
    }

    #[test]
    fn preferred_rooms_carry_no_condition() {
        let preferred = bridge(json!({"e2ee": "Preferred"}));
        assert_eq!(condition(&meeting(json!({"maxParticipants": 50})), &preferred), None);
        // A Meeting stricter than its Bridge is held to its own policy.
        let c = condition(&meeting(json!({"maxParticipants": 50, "e2ee": "Required"})), &preferred);
        assert!(c.is_some_and(|c| !c.0));
    }
}
