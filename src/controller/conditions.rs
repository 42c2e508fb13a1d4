//! Status conditions as both reconcilers write them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition of the standard shape, stamped now; see [`keep_transition_times`].
pub fn condition(type_: &str, ok: bool, reason: &str, message: &str, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

/// A condition whose status did not change keeps the transition time it had: that is what the
/// field means, and it is what lets an unchanged object compare equal and cost no write.
pub fn keep_transition_times(new: &mut [Condition], old: &[Condition]) {
    for c in new {
        if let Some(prev) = old.iter().find(|p| p.type_ == c.type_ && p.status == c.status) {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_status_keeps_its_time_and_a_flip_takes_a_new_one() {
        let mut old = condition("Ready", true, "Ready", "a", Some(1));
        old.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut same = vec![condition("Ready", true, "Ready", "b", Some(2))];
        keep_transition_times(&mut same, std::slice::from_ref(&old));
        assert_eq!(same[0].last_transition_time, old.last_transition_time);
        let mut flipped = vec![condition("Ready", false, "NotReady", "c", Some(2))];
        keep_transition_times(&mut flipped, std::slice::from_ref(&old));
        assert_ne!(flipped[0].last_transition_time, old.last_transition_time);
    }
}
