//! The operator's clock. Schedules (certificate renewal, meeting phases) are decided against
//! it, so tests can move time instead of waiting for it.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock: what the operator always uses in a cluster.
    #[default]
    System,
    /// The RFC 3339 instant written in a file, read at every call; for tests that control
    /// time. An unreadable file falls back to the system clock.
    File(PathBuf),
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::File(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(Utc::now),
        }
    }
}

/// How long until `at`, as a requeue delay: never negative, at least one second so a
/// transition that is due now is handled on the next turn rather than in a hot loop.
pub fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> std::time::Duration {
    (at - now)
        .to_std()
        .unwrap_or_default()
        .max(std::time::Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_clock_reads_the_file_each_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("now");
        let clock = Clock::File(path.clone());
        std::fs::write(&path, "2030-01-01T00:00:00Z\n").expect("write");
        assert_eq!(clock.now(), "2030-01-01T00:00:00Z".parse::<DateTime<Utc>>().expect("t"));
        std::fs::write(&path, "2030-01-02T00:00:00Z").expect("write");
        assert_eq!(clock.now(), "2030-01-02T00:00:00Z".parse::<DateTime<Utc>>().expect("t"));
    }

    #[test]
    fn until_is_at_least_a_second() {
        let now: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().expect("t");
        assert_eq!(until(now, now - chrono::Duration::hours(1)).as_secs(), 1);
        assert_eq!(until(now, now + chrono::Duration::minutes(2)).as_secs(), 120);
    }
}
