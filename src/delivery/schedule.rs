//! When to try a failed delivery again.
//!
//! A [`RetrySchedule`] is a list of delays: the first is waited after the first
//! failed attempt, the second after the second, and so on; when the list is used
//! up the delivery is dead. The default list is
//! `5s,5m,30m,2h,5h,10h,14h,20h,24h` (ten attempts spread over about three days).
//!
//! Invariants of [`RetrySchedule::next_delay`]:
//! - it is a pure function: the caller supplies the random jitter, so tests and
//!   replays are deterministic;
//! - jitter moves a delay by at most ±[`JITTER_FRACTION`] (20 %);
//! - a `Retry-After` from the receiver can lengthen a delay but never shorten it,
//!   and is capped at [`MAX_RETRY_AFTER`] (24 h) so a hostile or buggy receiver
//!   cannot park a delivery for a year; it never adds attempts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

/// How far jitter may move a delay, as a fraction of it.
pub const JITTER_FRACTION: f64 = 0.2;
/// The longest `Retry-After` honoured; longer requests are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// The default schedule, in the textual form [`RetrySchedule::parse`] reads.
pub const DEFAULT_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,14h,20h,24h";

/// The delays between attempts of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// Why a schedule text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The text holds no delay at all.
    #[error("a retry schedule needs at least one delay, such as \"5s,5m,30m\"")]
    Empty,
    /// One entry is not `<number><unit>`.
    #[error(
        "retry delay {entry:?} is not a whole number followed by ms, s, m, h or d (e.g. \"30m\")"
    )]
    BadEntry {
        /// The entry as given.
        entry: String,
    },
    /// One entry is too large to represent.
    #[error("retry delay {entry:?} is too large")]
    TooLarge {
        /// The entry as given.
        entry: String,
    },
}

impl RetrySchedule {
    /// Parses a comma-separated list such as `5s,5m,30m,2h` (units `ms`, `s`,
    /// `m`, `h`, `d`; spaces around entries are ignored).
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let mut delays = Vec::new();
        for raw in text.split(',') {
            let entry = raw.trim();
            if entry.is_empty() {
                if text.trim().is_empty() {
                    return Err(ScheduleError::Empty);
                }
                return Err(ScheduleError::BadEntry {
                    entry: entry.to_string(),
                });
            }
            delays.push(parse_delay(entry)?);
        }
        Self::new(delays)
    }

    /// A schedule from delays already known; at least one is needed.
    pub fn new(delays: Vec<Duration>) -> Result<Self, ScheduleError> {
        if delays.is_empty() {
            return Err(ScheduleError::Empty);
        }
        Ok(RetrySchedule { delays })
    }

    /// The delays, in order.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// The most attempts a delivery gets: the first try plus one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// How long to wait before the next attempt, or `None` when the delivery is
    /// out of attempts.
    ///
    /// `attempts_made` counts the attempts already made (0 means none yet, and
    /// the answer is "now"). `jitter` is a random number in `[-1, 1]` from the
    /// caller, scaled to ±20 % of the delay; values outside are clamped, NaN
    /// counts as 0. `retry_after` is the receiver's `Retry-After`: the result is
    /// at least `min(retry_after, 24 h)` and at least the jittered delay.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempts_made == 0 {
            return Some(Duration::ZERO);
        }
        let index = usize::try_from(attempts_made - 1).ok()?;
        let base = *self.delays.get(index)?;
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(-1.0, 1.0)
        };
        let jittered = base.mul_f64(1.0 + JITTER_FRACTION * jitter);
        let floor = retry_after.map_or(Duration::ZERO, |ra| ra.min(MAX_RETRY_AFTER));
        Some(jittered.max(floor))
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            delays: [
                5,
                5 * 60,
                30 * 60,
                2 * 3600,
                5 * 3600,
                10 * 3600,
                14 * 3600,
                20 * 3600,
                24 * 3600,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        }
    }
}

impl FromStr for RetrySchedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RetrySchedule::parse(s)
    }
}

impl fmt::Display for RetrySchedule {
    /// The textual form [`RetrySchedule::parse`] reads back, in the largest exact unit.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.delays.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write_delay(f, *d)?;
        }
        Ok(())
    }
}

fn write_delay(f: &mut fmt::Formatter<'_>, d: Duration) -> fmt::Result {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return write!(f, "{}{unit}", ms / size);
        }
    }
    write!(f, "{ms}ms")
}

fn parse_delay(entry: &str) -> Result<Duration, ScheduleError> {
    let bad = || ScheduleError::BadEntry {
        entry: entry.to_string(),
    };
    let split = entry.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = entry.split_at(split);
    if digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| ScheduleError::TooLarge {
        entry: entry.to_string(),
    })?;
    let ms_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or(ScheduleError::TooLarge {
            entry: entry.to_string(),
        })
}

/// Reads a `Retry-After` header: delay-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, also the obsolete RFC 850 and asctime
/// forms). A date in the past gives zero; anything unreadable gives `None`.
/// No cap is applied here: [`RetrySchedule::next_delay`] applies it.
pub fn parse_retry_after(header_value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = header_value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings saturate rather than fail: they mean "a long time".
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let when = parse_http_date(v)?;
    let delta = when.signed_duration_since(now);
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn parse_http_date(v: &str) -> Option<DateTime<Utc>> {
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT". RFC 2822 parsing accepts it.
    if let Ok(dt) = DateTime::parse_from_rfc2822(v) {
        return Some(dt.with_timezone(&Utc));
    }
    // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"; asctime: "Sun Nov  6 08:49:37 1994".
    for fmt in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(v, fmt) {
            return Some(naive.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn default_matches_the_documented_list() {
        assert_eq!(RetrySchedule::default(), DEFAULT_SCHEDULE.parse().unwrap());
        assert_eq!(
            RetrySchedule::default().to_string(),
            "5s,5m,30m,2h,5h,10h,14h,20h,1d"
        );
        assert_eq!(RetrySchedule::default().max_attempts(), 10);
    }

    #[test]
    fn parse_units_and_errors() {
        let s = RetrySchedule::parse("1ms, 2s,3m ,4h,5d").unwrap();
        assert_eq!(
            s.delays(),
            &[
                Duration::from_millis(1),
                secs(2),
                secs(180),
                secs(4 * 3600),
                secs(5 * 86400)
            ]
        );
        assert_eq!(
            RetrySchedule::parse("1ms,1ms").unwrap().delays(),
            &[Duration::from_millis(1); 2]
        );
        assert_eq!(RetrySchedule::parse(""), Err(ScheduleError::Empty));
        assert_eq!(RetrySchedule::parse("  "), Err(ScheduleError::Empty));
        for bad in ["5", "s", "5x", "5 s s", "-5s", "5s,,5s", "1.5h", "5S"] {
            assert!(
                matches!(
                    RetrySchedule::parse(bad),
                    Err(ScheduleError::BadEntry { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            RetrySchedule::parse("99999999999999999999s"),
            Err(ScheduleError::TooLarge { .. })
        ));
        assert!(matches!(
            RetrySchedule::parse("9999999999999999d"),
            Err(ScheduleError::TooLarge { .. })
        ));
        let msg = RetrySchedule::parse("5x").unwrap_err().to_string();
        assert!(
            msg.contains("\"5x\"") && msg.contains("ms, s, m, h or d"),
            "{msg}"
        );
    }

    #[test]
    fn next_delay_walks_the_list_then_stops() {
        let s = RetrySchedule::default();
        assert_eq!(s.next_delay(0, 0.0, None), Some(Duration::ZERO));
        assert_eq!(s.next_delay(1, 0.0, None), Some(secs(5)));
        assert_eq!(s.next_delay(2, 0.0, None), Some(secs(300)));
        assert_eq!(s.next_delay(9, 0.0, None), Some(secs(86_400)));
        assert_eq!(s.next_delay(10, 0.0, None), None);
        assert_eq!(s.next_delay(u32::MAX, 0.0, Some(secs(1))), None);
        assert_eq!(s.next_delay(1, 1.0, None), Some(secs(6)));
        assert_eq!(s.next_delay(1, -1.0, None), Some(secs(4)));
        assert_eq!(s.next_delay(1, 7.0, None), Some(secs(6)));
        assert_eq!(s.next_delay(1, f64::NAN, None), Some(secs(5)));
    }

    #[test]
    fn retry_after_is_bounded() {
        let s = RetrySchedule::default();
        // Longer than the schedule: honoured.
        assert_eq!(s.next_delay(1, 0.0, Some(secs(120))), Some(secs(120)));
        // Shorter than the schedule: the schedule wins.
        assert_eq!(s.next_delay(2, 0.0, Some(secs(1))), Some(secs(300)));
        // Absurd: capped at 24 h.
        assert_eq!(
            s.next_delay(1, 0.0, Some(secs(10 * 86_400))),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_header_forms() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 0).unwrap();
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(secs(0)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:30 GMT", now),
            Some(secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:29:00 2015", now),
            Some(secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "-5", "1.5", "soon", "Wed, 99 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn jitter_stays_within_twenty_percent(
            ms in proptest::collection::vec(1u64..10_000_000_000, 1..12),
            attempt in 1u32..12,
            jitter in -1.0f64..=1.0,
        ) {
            let s = RetrySchedule::new(ms.iter().copied().map(Duration::from_millis).collect()).unwrap();
            match s.next_delay(attempt, jitter, None) {
                None => prop_assert!(attempt as usize > ms.len()),
                Some(d) => {
                    let base = ms[attempt as usize - 1] as f64;
                    let got = d.as_secs_f64() * 1000.0;
                    prop_assert!(got >= base * 0.8 - 1.0 && got <= base * 1.2 + 1.0, "{got} vs {base}");
                }
            }
        }

        #[test]
        fn retry_after_never_shortens_and_is_capped(
            attempt in 1u32..10,
            jitter in any::<f64>(),
            ra_secs in any::<u64>(),
        ) {
            let s = RetrySchedule::default();
            let ra = Duration::from_secs(ra_secs);
            let with = s.next_delay(attempt, jitter, Some(ra)).unwrap();
            let without = s.next_delay(attempt, jitter, None).unwrap();
            prop_assert!(with >= without);
            prop_assert!(with >= ra.min(MAX_RETRY_AFTER));
            prop_assert!(with <= without.max(MAX_RETRY_AFTER));
        }

        #[test]
        fn exhausted_exactly_after_the_list(len in 1usize..20, extra in 0u32..100) {
            let s = RetrySchedule::new(vec![Duration::from_millis(1); len]).unwrap();
            prop_assert!(s.next_delay(len as u32, 0.0, None).is_some());
            prop_assert!(s.next_delay(len as u32 + 1 + extra, 0.0, None).is_none());
            prop_assert_eq!(s.max_attempts(), len as u32 + 1);
        }

        #[test]
        fn display_parse_roundtrip(ms in proptest::collection::vec(1u64..1_000_000_000_000, 1..10)) {
            let s = RetrySchedule::new(ms.into_iter().map(Duration::from_millis).collect()).unwrap();
            prop_assert_eq!(RetrySchedule::parse(&s.to_string()).unwrap(), s);
        }

        #[test]
        fn parsers_never_panic(text in ".{0,40}") {
            let _ = RetrySchedule::parse(&text);
            let _ = parse_retry_after(&text, Utc::now());
        }
    }
}
