//! When a Meeting is open, and for how long its join tokens are valid.

use chrono::{DateTime, Duration, Utc};

use crate::api::meeting::{MeetingSpec, Phase};

/// Links work this long before `start`, so people can check their camera and sit down.
pub const EARLY_JOIN: Duration = Duration::minutes(10);
/// Tokens stay valid this long after `end`, for a late reconnect; the room's phase is `Ended`
/// from `end` on and its links are deleted then.
pub const GRACE: Duration = Duration::minutes(15);
/// A standing room (no `end`) gets tokens valid this long...
pub const STANDING_LIFETIME: Duration = Duration::hours(24);
/// ...re-issued when less than this is left, so a link fetched from the Secret is always
/// good for at least this long.
pub const STANDING_RENEW_BEFORE: Duration = Duration::hours(8);
/// Backdating of `nbf` for tokens issued now: prosody has no leeway for clock skew.
pub const SKEW: Duration = Duration::minutes(1);

/// The phase the schedule alone gives at `now` (ignoring the Bridge), and when it next changes.
pub fn phase_at(spec: &MeetingSpec, now: DateTime<Utc>) -> (Phase, Option<DateTime<Utc>>) {
    if spec.end.is_some_and(|end| now >= end) {
        return (Phase::Ended, None);
    }
    match spec.start.map(|s| s - EARLY_JOIN) {
        Some(opens) if now < opens => (Phase::Scheduled, Some(opens)),
        _ => (Phase::Open, spec.end),
    }
}

/// Validity of the tokens of one issuance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub not_before: DateTime<Utc>,
    pub expires: DateTime<Utc>,
}

impl Window {
    /// When the operator must issue new tokens (standing rooms only).
    pub fn renew_at(self) -> DateTime<Utc> {
        self.expires - STANDING_RENEW_BEFORE
    }
}

/// The token window for a Meeting at `now`. A scheduled meeting's window is fixed by its
/// schedule, so re-issuing gives the same tokens. A standing room reuses `current` (the window
/// of the tokens it has) until it is due for renewal, then moves to the next one.
///
/// Whatever the schedule leaves open is anchored at `created` (the Meeting's creation), never
/// at the moment of issuing: standing windows follow one another every
/// `STANDING_LIFETIME - STANDING_RENEW_BEFORE` from there. So the same Meeting gets the same
/// window at any moment of one period, and a credentials Secret lost before its window was
/// recorded (the operator crashed before writing status, then the Secret was deleted) comes
/// back with the very links that were handed out.
pub fn window(spec: &MeetingSpec, now: DateTime<Utc>, current: Option<Window>, created: DateTime<Utc>) -> Window {
    let anchor = created - SKEW;
    if let Some(end) = spec.end {
        let not_before = spec.start.map_or(anchor, |s| s - EARLY_JOIN);
        // Tokens issued before (by an operator that anchored them elsewhere) are kept.
        let not_before = match current {
            Some(c) if spec.start.is_none() && c.expires == end + GRACE => c.not_before,
            _ => not_before,
        };
        return Window {
            not_before,
            expires: end + GRACE,
        };
    }
    match current {
        Some(c) if now < c.renew_at() && c.expires - c.not_before <= STANDING_LIFETIME + SKEW => c,
        _ => standing(spec.start.map_or(anchor, |s| (s - EARLY_JOIN).max(anchor)), now),
    }
}

/// The standing window in force at `now` in the series that starts at `first`.
fn standing(first: DateTime<Utc>, now: DateTime<Utc>) -> Window {
    let period = (STANDING_LIFETIME - STANDING_RENEW_BEFORE).num_seconds();
    let periods = (now - first).num_seconds().max(0) / period;
    let not_before = first + Duration::seconds(periods * period);
    Window {
        not_before,
        expires: not_before + STANDING_LIFETIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    fn spec(start: Option<&str>, end: Option<&str>) -> MeetingSpec {
        serde_json::from_value(serde_json::json!({
            "bridge": "meet",
            "start": start,
            "end": end,
        }))
        .expect("spec")
    }

    #[test]
    fn phases_follow_the_clock_with_the_early_join_window() {
        let s = spec(Some("2030-01-07T09:00:00Z"), Some("2030-01-07T10:00:00Z"));
        assert_eq!(
            phase_at(&s, t("2030-01-07T08:00:00Z")),
            (Phase::Scheduled, Some(t("2030-01-07T08:50:00Z")))
        );
        assert_eq!(
            phase_at(&s, t("2030-01-07T08:50:00Z")),
            (Phase::Open, Some(t("2030-01-07T10:00:00Z")))
        );
        assert_eq!(phase_at(&s, t("2030-01-07T10:00:00Z")), (Phase::Ended, None));
    }

    #[test]
    fn standing_rooms_are_open_from_the_start_and_never_end() {
        assert_eq!(
            phase_at(&spec(None, None), t("2030-01-01T00:00:00Z")),
            (Phase::Open, None)
        );
        let s = spec(None, Some("2030-01-07T10:00:00Z"));
        assert_eq!(
            phase_at(&s, t("2030-01-07T09:00:00Z")),
            (Phase::Open, Some(t("2030-01-07T10:00:00Z")))
        );
    }

    #[test]
    fn scheduled_windows_are_fixed_by_the_schedule() {
        let s = spec(Some("2030-01-07T09:00:00Z"), Some("2030-01-07T10:00:00Z"));
        let created = t("2029-12-01T00:00:00Z");
        let a = window(&s, t("2030-01-01T00:00:00Z"), None, created);
        let b = window(&s, t("2030-01-07T09:30:00Z"), Some(a), created);
        assert_eq!(a, b);
        assert_eq!(a.not_before, t("2030-01-07T08:50:00Z"));
        assert_eq!(a.expires, t("2030-01-07T10:15:00Z"));
    }

    #[test]
    fn standing_windows_are_reused_until_renewal_then_replaced() {
        let s = spec(None, None);
        let now = t("2030-01-01T00:00:00Z");
        let w = window(&s, now, None, now);
        assert_eq!(w.not_before, now - SKEW);
        assert_eq!(w.expires, now - SKEW + STANDING_LIFETIME);
        let later = now + Duration::hours(10);
        assert_eq!(window(&s, later, Some(w), now), w);
        let due = w.renew_at();
        let renewed = window(&s, due, Some(w), now);
        assert_ne!(renewed, w);
        assert_eq!(renewed.not_before, due);
        assert_eq!(renewed.expires - due, STANDING_LIFETIME);
    }

    #[test]
    fn windows_do_not_depend_on_when_they_are_issued() {
        let created = t("2030-01-01T00:00:00Z");
        let standing = spec(None, None);
        let first = window(&standing, created + Duration::seconds(3), None, created);
        // Lost and issued again later in the same period: the same window.
        assert_eq!(window(&standing, created + Duration::hours(15), None, created), first);
        // In the next period, the next window, which starts where the first is renewed.
        let next = window(&standing, created + Duration::hours(17), None, created);
        assert_eq!(next.not_before, first.renew_at());
        // A room with an end and no start: from its creation, whenever issued.
        let ending = spec(None, Some("2030-01-03T00:00:00Z"));
        assert_eq!(
            window(&ending, created + Duration::hours(5), None, created),
            window(&ending, created + Duration::seconds(1), None, created)
        );
        // A standing room that starts later: from its start.
        let later = spec(Some("2030-01-02T00:00:00Z"), None);
        let w = window(&later, created, None, created);
        assert_eq!(w.not_before, t("2030-01-02T00:00:00Z") - EARLY_JOIN);
    }
}
