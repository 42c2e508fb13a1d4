//! How fast guest links are exchanged for access tokens.
//!
//! A guest link is meant to be passed on, so whoever holds one can mint guest identities, each
//! a new participant. A bound per link keeps a leaked link from filling a room (or its lobby)
//! faster than its moderators can deny; a bound on all exchanges together keeps token checks,
//! valid or not, from taking the CPU the page is served with. A refusal says when to try again.

use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

/// `n` (never zero here) as a `NonZeroU32`, usable in a constant.
const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// Per link: 20 guests at once, then one every 2 seconds.
pub const DEFAULT_BURST: NonZeroU32 = nonzero(20);
pub const DEFAULT_PER_MINUTE: NonZeroU32 = nonzero(30);
/// All exchanges together may go this many times faster than one link.
const ALL_LINKS_FACTOR: NonZeroU32 = nonzero(10);
/// Links whose bucket is full again are forgotten once this many are kept.
const FORGET_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub burst: NonZeroU32,
    pub per_minute: NonZeroU32,
}

/// A refused exchange: when the next one would be let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: Duration,
}

impl Refused {
    /// Whole seconds for a `Retry-After` header, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

pub struct GuestLimits {
    all: DefaultDirectRateLimiter,
    per_link: DefaultKeyedRateLimiter<u64>,
    /// Links are kept as keyed digests, never as tokens.
    hasher: std::collections::hash_map::RandomState,
    clock: DefaultClock,
}

impl GuestLimits {
    pub fn new(limits: Limits) -> GuestLimits {
        let quota = |burst: NonZeroU32, per_minute: NonZeroU32| Quota::per_minute(per_minute).allow_burst(burst);
        let times = |n: NonZeroU32| n.saturating_mul(ALL_LINKS_FACTOR);
        GuestLimits {
            all: DefaultDirectRateLimiter::direct(quota(times(limits.burst), times(limits.per_minute))),
            per_link: DefaultKeyedRateLimiter::keyed(quota(limits.burst, limits.per_minute)),
            hasher: std::collections::hash_map::RandomState::new(),
            clock: DefaultClock::default(),
        }
    }

    /// Before a token is checked: all exchanges together.
    pub fn check_all(&self) -> Result<(), Refused> {
        self.all.check().map_err(|wait| self.refused(wait))
    }

    /// After the token verified as a guest link: exchanges of this link.
    pub fn check_link(&self, link: &str) -> Result<(), Refused> {
        if self.per_link.len() > FORGET_ABOVE {
            self.per_link.retain_recent();
        }
        let key = self.hasher.hash_one(link);
        self.per_link.check_key(&key).map_err(|wait| self.refused(wait))
    }

    fn refused(&self, wait: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> Refused {
        Refused {
            retry_after: wait.wait_time_from(self.clock.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(burst: u32, per_minute: u32) -> GuestLimits {
        GuestLimits::new(Limits {
            burst: NonZeroU32::new(burst).expect("burst"),
            per_minute: NonZeroU32::new(per_minute).expect("rate"),
        })
    }

    #[test]
    fn a_link_gets_its_burst_then_waits_and_other_links_do_not() {
        let l = limits(3, 1);
        for _ in 0..3 {
            assert_eq!(l.check_link("link-a"), Ok(()));
        }
        let refused = l.check_link("link-a").expect_err("the fourth at once");
        assert!(refused.retry_after > Duration::from_secs(50), "{refused:?}");
        assert_eq!(
            refused.retry_after_secs(),
            refused.retry_after.as_secs_f64().ceil() as u64
        );
        assert_eq!(l.check_link("link-b"), Ok(()), "another link has its own bucket");
    }

    #[test]
    fn all_links_together_are_bounded_at_ten_times_one() {
        let l = limits(2, 1);
        for _ in 0..20 {
            assert_eq!(l.check_all(), Ok(()));
        }
        assert!(l.check_all().is_err());
    }

    #[test]
    fn a_refusal_asks_for_at_least_a_second() {
        let r = Refused {
            retry_after: Duration::from_millis(10),
        };
        assert_eq!(r.retry_after_secs(), 1);
    }
}
