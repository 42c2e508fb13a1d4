//! How many SFU replicas a Bridge runs, from the Meetings it hosts: participants of Meetings
//! that are open or start within the lead time, divided by what one replica is planned for,
//! kept between `sfu.replicas` and `sfu.maxReplicas`.

use chrono::{DateTime, Utc};

use super::validate;
use crate::api::bridge::{Bridge, Sfu};
use crate::api::meeting::MeetingSpec;
use crate::conditions::Reason;
use crate::duration::parse_duration;

/// Guests a Meeting reserves for when it allows guests and sets no `maxParticipants`.
pub const GUEST_ALLOWANCE: i32 = 10;

/// Participants a Meeting reserves: `maxParticipants`, or its invitees plus
/// [`GUEST_ALLOWANCE`] when guests may join.
pub fn demand(spec: &MeetingSpec) -> i32 {
    spec.max_participants.unwrap_or_else(|| {
        let invited = i32::try_from(spec.participants.len()).unwrap_or(i32::MAX);
        invited.saturating_add(if spec.guests.allowed { GUEST_ALLOWANCE } else { 0 })
    })
}

/// Whether a Meeting holds its reservation at `now`, and when that next changes.
pub fn reserving(spec: &MeetingSpec, lead: chrono::Duration, now: DateTime<Utc>) -> (bool, Option<DateTime<Utc>>) {
    if spec.end.is_some_and(|end| now >= end) {
        return (false, None);
    }
    match spec.start.map(|s| s - lead) {
        Some(from) if now < from => (false, Some(from)),
        _ => (true, spec.end),
    }
}

/// The pool a Bridge needs at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub replicas: i32,
    /// Participants reserved by Meetings that count now.
    pub reserved: i32,
    /// Participants the pool takes at `maxReplicas`.
    pub max_capacity: i32,
    /// When a Meeting enters or leaves its reservation next.
    pub next_change: Option<DateTime<Utc>>,
}

impl Plan {
    /// Participants the pool can still take at its planned size.
    pub fn available(&self, sfu: &Sfu) -> i32 {
        (self.replicas.saturating_mul(sfu.participants_per_replica) - self.reserved).max(0)
    }
}

/// The lead time of a pool; an unparsable value (admission refuses those) counts as none.
pub fn lead_time(sfu: &Sfu) -> chrono::Duration {
    parse_duration(&sfu.reservation_lead_time)
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .unwrap_or_default()
}

/// Sizes the pool for `meetings` (the valid Meetings on this Bridge).
pub fn plan<'a>(sfu: &Sfu, meetings: impl IntoIterator<Item = &'a MeetingSpec>, now: DateTime<Utc>) -> Plan {
    let lead = lead_time(sfu);
    let mut reserved: i32 = 0;
    let mut next_change: Option<DateTime<Utc>> = None;
    for m in meetings {
        let (counts, next) = reserving(m, lead, now);
        if counts {
            reserved = reserved.saturating_add(demand(m));
        }
        next_change = match (next_change, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let per = sfu.participants_per_replica.max(1);
    let needed = reserved.saturating_add(per - 1) / per;
    Plan {
        replicas: needed.clamp(sfu.replicas, sfu.max_replicas()),
        reserved,
        max_capacity: sfu.max_replicas().saturating_mul(per),
        next_change,
    }
}

/// The Meeting's `CapacityReserved` condition: whether the Bridge's pool can hold this Meeting
/// at `maxReplicas`, alone and together with the Meetings that overlap it.
///
/// First come, first served: a Meeting counts only the Meetings booked before it (by creation,
/// then name), so a later booking that overbooks the pool is the one told, and the Meetings
/// already reserved keep their reservation (and their status: at 100 Meetings per Bridge, a
/// burst of running Meetings otherwise rewrote ten siblings' statuses each).
pub fn condition(
    bridge: &Bridge,
    me: &validate::Booking<'_>,
    bookings: &[validate::Booking<'_>],
    now: DateTime<Utc>,
) -> (bool, Reason, String) {
    let spec = me.spec;
    let sfu = &bridge.spec.sfu;
    let max = sfu.max_replicas().saturating_mul(sfu.participants_per_replica);
    let demand = demand(spec);
    if demand > max {
        return (
            false,
            Reason::ExceedsBridgeCapacity,
            format!(
                "reserves {demand} participants; Bridge {} holds at most {max} (sfu.maxReplicas {} x sfu.participantsPerReplica {})",
                spec.bridge,
                sfu.max_replicas(),
                sfu.participants_per_replica
            ),
        );
    }
    // The pool at the moment this Meeting's reservation begins (or now, if it has begun).
    let lead = lead_time(sfu);
    let at = spec.start.map_or(now, |s| (s - lead).max(now));
    let plan = plan(
        sfu,
        bookings
            .iter()
            .filter(|b| b.booked_order() <= me.booked_order())
            .map(|b| b.spec)
            .filter(|m| validate::against_bridge(m, &spec.bridge, &bridge.spec).is_ok()),
        at,
    );
    if plan.reserved > max {
        // Once the reservation has begun the moment is "now", never the clock: a message that
        // changed with every reconcile rewrote the status of every overbooked running Meeting
        // each time (found by the scale benchmark, 100 Meetings per Bridge).
        let when = if at > now {
            format!("at {}", fmt(at))
        } else {
            "now".to_string()
        };
        // Nor the number reserved: it moves with every Meeting booked on the Bridge, and each
        // move rewrote the status of every overbooked sibling (the Bridge's status shows it).
        return (
            false,
            Reason::Overbooked,
            format!(
                "Meetings on Bridge {} reserve more participants {when} than its pool holds (at most {max}; \
                 see the Bridge's status.reservedParticipants)",
                spec.bridge
            ),
        );
    }
    let (holding, _) = reserving(spec, lead, now);
    if holding {
        (
            true,
            Reason::Reserved,
            format!("{demand} participants reserved on Bridge {}", spec.bridge),
        )
    } else {
        (
            true,
            Reason::Planned,
            format!("{demand} participants will be reserved from {}", fmt(at)),
        )
    }
}

fn fmt(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    fn meeting(start: &str, end: &str, max: Option<i32>) -> MeetingSpec {
        serde_json::from_value(serde_json::json!({
            "bridge": "meet", "start": start, "end": end, "maxParticipants": max,
            "participants": [{"name": "a"}, {"name": "b"}],
        }))
        .expect("spec")
    }

    fn sfu(min: i32, max: i32, per: i32) -> Sfu {
        serde_json::from_value(serde_json::json!({
            "replicas": min, "maxReplicas": max, "participantsPerReplica": per, "reservationLeadTime": "15m",
        }))
        .expect("sfu")
    }

    #[test]
    fn demand_uses_max_then_invitees_plus_guest_allowance() {
        let mut m = meeting("2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z", Some(40));
        assert_eq!(demand(&m), 40);
        m.max_participants = None;
        assert_eq!(demand(&m), 2);
        m.guests.allowed = true;
        assert_eq!(demand(&m), 2 + GUEST_ALLOWANCE);
    }

    #[test]
    fn the_pool_grows_within_the_lead_time_and_shrinks_after_the_end() {
        let pool = sfu(1, 4, 50);
        let big = meeting("2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z", Some(120));
        let before = plan(&pool, [&big], t("2030-01-01T09:44:59Z"));
        assert_eq!((before.replicas, before.reserved), (1, 0));
        assert_eq!(before.next_change, Some(t("2030-01-01T09:45:00Z")));
        let ahead = plan(&pool, [&big], t("2030-01-01T09:45:00Z"));
        assert_eq!((ahead.replicas, ahead.reserved), (3, 120));
        assert_eq!(ahead.next_change, Some(t("2030-01-01T11:00:00Z")));
        assert_eq!(ahead.available(&pool), 30);
        let after = plan(&pool, [&big], t("2030-01-01T11:00:00Z"));
        assert_eq!((after.replicas, after.reserved, after.next_change), (1, 0, None));
    }

    #[test]
    fn the_pool_stays_within_bounds() {
        let pool = sfu(2, 3, 10);
        let huge = meeting("2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z", Some(1000));
        let p = plan(&pool, [&huge], t("2030-01-01T10:30:00Z"));
        assert_eq!(p.replicas, 3);
        assert_eq!(p.max_capacity, 30);
        assert_eq!(p.available(&pool), 0);
        assert_eq!(plan(&pool, [], t("2030-01-01T10:30:00Z")).replicas, 2);
    }

    fn one_replica_of_20() -> Bridge {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "conclave.dev/v1alpha1", "kind": "Bridge",
            "metadata": {"name": "meet", "namespace": "ns"},
            "spec": {"domain": "meet.example.com",
                     "sfu": {"replicas": 1, "maxReplicas": 1, "participantsPerReplica": 20}}
        }))
        .expect("bridge")
    }

    /// Bookings named `m0`, `m1`, ... created a minute apart in that order.
    fn booked<'a>(specs: &[&'a MeetingSpec]) -> Vec<validate::Booking<'a>> {
        const NAMES: [&str; 4] = ["m0", "m1", "m2", "m3"];
        specs
            .iter()
            .zip(NAMES)
            .enumerate()
            .map(|(i, (spec, name))| validate::Booking {
                name,
                created: Some(t("2029-12-01T00:00:00Z") + chrono::Duration::minutes(i as i64)),
                room: name.into(),
                spec,
            })
            .collect()
    }

    #[test]
    fn an_overbooked_running_meeting_says_the_same_at_every_reconcile() {
        let bridge = one_replica_of_20();
        let a = meeting("2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z", Some(15));
        let b = meeting("2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z", Some(15));
        let c = meeting("2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z", Some(15));
        let bookings = booked(&[&a, &b]);
        let during = |at: &str| condition(&bridge, &bookings[1], &bookings, t(at));
        let (ok, reason, first) = during("2030-01-01T10:05:00Z");
        assert!(!ok && reason == Reason::Overbooked, "{first}");
        assert_eq!(
            during("2030-01-01T10:06:01Z").2,
            first,
            "nothing in it moves with the clock"
        );
        let three = booked(&[&a, &b, &c]);
        assert_eq!(
            condition(&bridge, &three[1], &three, t("2030-01-01T10:05:00Z")).2,
            first,
            "nor with another Meeting booked: it would rewrite every overbooked sibling"
        );
        let (_, _, ahead) = during("2030-01-01T09:00:00Z");
        assert!(
            ahead.contains("at 2030-01-01T09:45:00Z"),
            "before it begins it says when: {ahead}"
        );
    }

    #[test]
    fn first_come_first_served_the_later_booking_is_the_overbooked_one() {
        let bridge = one_replica_of_20();
        let a = meeting("2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z", Some(15));
        let b = meeting("2030-01-01T10:00:00Z", "2030-01-01T11:30:00Z", Some(15));
        let bookings = booked(&[&a, &b]);
        let now = t("2030-01-01T09:00:00Z");
        let (ok, reason, _) = condition(&bridge, &bookings[0], &bookings, now);
        assert!(
            ok && reason == Reason::Planned,
            "the first booking keeps its reservation"
        );
        let (ok, reason, msg) = condition(&bridge, &bookings[1], &bookings, now);
        assert!(!ok && reason == Reason::Overbooked, "{msg}");
        // The first one gone, the second fits.
        let alone = booked(&[&b]);
        assert!(condition(&bridge, &alone[0], &alone, now).0);
    }

    #[test]
    fn overlapping_meetings_add_up() {
        let pool = sfu(1, 10, 10);
        let a = meeting("2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z", Some(15));
        let b = meeting("2030-01-01T10:30:00Z", "2030-01-01T12:00:00Z", Some(15));
        assert_eq!(plan(&pool, [&a, &b], t("2030-01-01T10:20:00Z")).replicas, 3);
        assert_eq!(plan(&pool, [&a, &b], t("2030-01-01T11:00:00Z")).replicas, 2);
    }
}
