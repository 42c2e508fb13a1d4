//! Durations as the API writes them: Go-style strings that the CRDs validate with CEL
//! `duration()`.

use std::time::Duration;

/// Parses a Go-style duration (`1h`, `90m`, `1h30m`, `1.5h`, `250ms`, `0`): the format the CRD
/// validates with CEL `duration()`. Returns `None` for anything else, including overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int_part, tail) = rest.split_at(int_len);
        let (frac_part, tail) = match tail.strip_prefix('.') {
            Some(t) => {
                let n = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                t.split_at(n)
            }
            None => ("", tail),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let (unit, tail): (u128, &str) = if let Some(t) = tail.strip_prefix("ms") {
            (1_000_000, t)
        } else if let Some(t) = tail.strip_prefix('h') {
            (3_600_000_000_000, t)
        } else if let Some(t) = tail.strip_prefix('m') {
            (60_000_000_000, t)
        } else if let Some(t) = tail.strip_prefix('s') {
            (1_000_000_000, t)
        } else {
            return None;
        };
        let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
        let mut nanos = int.checked_mul(unit)?;
        // Fraction digits beyond nanosecond precision are dropped, as Go does.
        let mut scale = unit;
        for d in frac_part.chars().take(18) {
            scale /= 10;
            nanos = nanos.checked_add(u128::from(d.to_digit(10)?) * scale)?;
        }
        total = total.checked_add(nanos)?;
        rest = tail;
    }
    let nanos = u64::try_from(total).ok()?;
    Some(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(s);
        assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(d("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(d("2m3.5s"), Some(Duration::from_millis(123_500)));
        assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(d("1m250ms"), Some(Duration::from_millis(60_250)));
        assert_eq!(d("0s"), Some(Duration::ZERO));
        assert_eq!(d("0"), Some(Duration::ZERO));
        for bad in [
            "",
            "h",
            "1",
            "1d",
            "1.h5",
            "-1h",
            "1h ",
            " 1h",
            "1.5",
            "ms",
            "99999999999999999999h",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }
}
