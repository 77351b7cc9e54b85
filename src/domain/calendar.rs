//! Booking calendars: when an appointment bot can be booked.
//!
//! A [`Calendar`] describes opening hours per weekday in an IANA time zone,
//! cut into slots of `slot_minutes`, plus optional explicit slot starts.
//! [`Calendar::slots_between`] lists the slots from a moment on; the caller
//! removes the ones already booked `capacity` times and hands the rest to the
//! engine as free slots.
//!
//! Invariants:
//! - slot starts and ends are UTC instants; labels are in the calendar's zone;
//! - local times are converted with chrono-tz, so daylight-saving changes are
//!   honoured: a local time that does not exist (spring forward) is skipped, and
//!   an ambiguous one (fall back) is offered once, at its earlier instant;
//! - listed slots are sorted, unique, start at or after `from`, start before
//!   `from + horizon_days`, and number at most `count_limit`;
//! - an invalid calendar yields no slots; [`Calendar::validate`] says why.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Weekday keys accepted in `hours`.
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// An appointment calendar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    /// IANA zone name (`Europe/Madrid`).
    pub timezone: String,
    /// Length of one slot, in minutes.
    pub slot_minutes: u32,
    /// How many bookings one slot takes (default 1).
    #[serde(default = "one")]
    pub capacity: u32,
    /// How many days ahead slots are offered (default 30).
    #[serde(default = "thirty")]
    pub horizon_days: u32,
    /// Opening hours per weekday (`mon` … `sun`), as `"HH:MM-HH:MM"` ranges.
    #[serde(default)]
    pub hours: BTreeMap<String, Vec<String>>,
    /// Extra slot starts as RFC 3339 instants, offered in addition to `hours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<Vec<DateTime<Utc>>>,
}

fn one() -> u32 {
    1
}
fn thirty() -> u32 {
    30
}

/// One bookable slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Start instant (UTC).
    pub start: DateTime<Utc>,
    /// End instant (UTC).
    pub end: DateTime<Utc>,
    /// Human label in the calendar's zone, e.g. `Mon 24 Nov 09:00`.
    pub label: String,
}

/// What is wrong with a calendar.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("calendar, field \"{field}\": {message}")]
pub struct CalendarError {
    /// Field path (`hours.mon[1]`).
    pub field: String,
    /// What to fix.
    pub message: String,
}

/// Longest horizon accepted.
pub const MAX_HORIZON_DAYS: u32 = 366;

fn parse_range(r: &str) -> Option<(NaiveTime, NaiveTime)> {
    let (a, b) = r.split_once('-')?;
    let a = NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?;
    let b = NaiveTime::parse_from_str(b.trim(), "%H:%M").ok()?;
    (a < b).then_some((a, b))
}

fn weekday_key(d: Weekday) -> &'static str {
    WEEKDAYS[d.num_days_from_monday() as usize]
}

impl Calendar {
    /// The parsed time zone, if the name is a known IANA zone.
    pub fn tz(&self) -> Option<Tz> {
        self.timezone.parse::<Tz>().ok()
    }

    /// Checks the calendar; every problem is reported.
    pub fn validate(&self) -> Result<(), Vec<CalendarError>> {
        let mut errs = Vec::new();
        let mut bad = |field: String, message: String| errs.push(CalendarError { field, message });
        if self.tz().is_none() {
            bad(
                "timezone".into(),
                format!(
                    "unknown time zone {:?}; use an IANA name like Europe/Madrid",
                    self.timezone
                ),
            );
        }
        if self.slot_minutes == 0 || self.slot_minutes > 24 * 60 {
            bad("slot_minutes".into(), "must be between 1 and 1440".into());
        }
        if self.capacity == 0 {
            bad("capacity".into(), "must be at least 1".into());
        }
        if self.horizon_days == 0 || self.horizon_days > MAX_HORIZON_DAYS {
            bad(
                "horizon_days".into(),
                format!("must be between 1 and {MAX_HORIZON_DAYS}"),
            );
        }
        for (day, ranges) in &self.hours {
            if !WEEKDAYS.contains(&day.as_str()) {
                bad(
                    format!("hours.{day}"),
                    "unknown weekday; use mon, tue, wed, thu, fri, sat, sun".into(),
                );
            }
            for (i, r) in ranges.iter().enumerate() {
                if parse_range(r).is_none() {
                    bad(
                        format!("hours.{day}[{i}]"),
                        format!("bad range {r:?}; write \"09:00-12:00\" with start before end"),
                    );
                }
            }
        }
        if self.hours.values().all(Vec::is_empty) && self.slots.as_ref().is_none_or(Vec::is_empty) {
            bad(
                "hours".into(),
                "the calendar has no opening hours and no slots".into(),
            );
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    /// The label of a slot starting at `start`, in the calendar's zone.
    pub fn label(&self, start: DateTime<Utc>) -> String {
        match self.tz() {
            Some(tz) => start
                .with_timezone(&tz)
                .format("%a %d %b %H:%M")
                .to_string(),
            None => start.format("%a %d %b %H:%M").to_string(),
        }
    }

    /// Slots starting at or after `from` and within the horizon, at most `count_limit`.
    pub fn slots_between(&self, from: DateTime<Utc>, count_limit: usize) -> Vec<Slot> {
        let Some(tz) = self.tz() else {
            return Vec::new();
        };
        if self.slot_minutes == 0 || self.slot_minutes > 24 * 60 || count_limit == 0 {
            return Vec::new();
        }
        let horizon = self.horizon_days.min(MAX_HORIZON_DAYS);
        let until = from + Duration::days(i64::from(horizon));
        let step = Duration::minutes(i64::from(self.slot_minutes));
        let mut starts: Vec<DateTime<Utc>> = Vec::new();

        let ranges: BTreeMap<&str, Vec<(NaiveTime, NaiveTime)>> = self
            .hours
            .iter()
            .map(|(d, rs)| {
                (
                    d.as_str(),
                    rs.iter().filter_map(|r| parse_range(r)).collect(),
                )
            })
            .collect();
        // One local day earlier than `from` covers zones behind UTC.
        let first: NaiveDate = from.with_timezone(&tz).date_naive() - Duration::days(1);
        'days: for offset in 0..=i64::from(horizon) + 1 {
            let day = first + Duration::days(offset);
            let Some(day_ranges) = ranges.get(weekday_key(day.weekday())) else {
                continue;
            };
            for (open, close) in day_ranges {
                let mut t = day.and_time(*open);
                let close = day.and_time(*close);
                while t + step <= close {
                    let instant = match tz.from_local_datetime(&t) {
                        LocalResult::Single(x) => Some(x),
                        LocalResult::Ambiguous(early, _) => Some(early),
                        LocalResult::None => None,
                    };
                    if let Some(x) = instant {
                        let x = x.with_timezone(&Utc);
                        if x >= until {
                            break 'days;
                        }
                        if x >= from {
                            starts.push(x);
                        }
                    }
                    t += step;
                }
            }
        }
        if let Some(extra) = &self.slots {
            starts.extend(extra.iter().filter(|s| **s >= from && **s < until));
        }
        starts.sort();
        starts.dedup();
        starts.truncate(count_limit);
        starts
            .into_iter()
            .map(|start| Slot {
                start,
                end: start + step,
                label: start
                    .with_timezone(&tz)
                    .format("%a %d %b %H:%M")
                    .to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(yaml: &str) -> Calendar {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn weekday_slots_with_labels() {
        let c = cal(
            "{ timezone: Europe/Madrid, slot_minutes: 30, hours: { mon: [\"09:00-10:00\", \"13:00-14:00\"] } }",
        );
        assert!(c.validate().is_ok());
        // Monday 24 Nov 2025, 07:00 UTC = 08:00 in Madrid (CET, +1).
        let s = c.slots_between(utc("2025-11-24T07:00:00Z"), 10);
        let labels: Vec<&str> = s.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels[..4],
            [
                "Mon 24 Nov 09:00",
                "Mon 24 Nov 09:30",
                "Mon 24 Nov 13:00",
                "Mon 24 Nov 13:30"
            ]
        );
        assert_eq!(s[0].start, utc("2025-11-24T08:00:00Z"));
        assert_eq!(s[0].end, utc("2025-11-24T08:30:00Z"));
        assert_eq!(s[4].label, "Mon 01 Dec 09:00");
        assert_eq!(s.len(), 10);
        // Slots already started are not offered.
        let later = c.slots_between(utc("2025-11-24T08:10:00Z"), 1);
        assert_eq!(later[0].label, "Mon 24 Nov 09:30");
    }

    #[test]
    fn dst_spring_forward_skips_missing_times() {
        // 30 Mar 2025: Madrid clocks jump from 02:00 to 03:00.
        let c = cal(
            "{ timezone: Europe/Madrid, slot_minutes: 30, horizon_days: 1, hours: { sun: [\"01:00-04:00\"] } }",
        );
        let s = c.slots_between(utc("2025-03-29T23:00:00Z"), 20);
        let labels: Vec<&str> = s.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Sun 30 Mar 01:00",
                "Sun 30 Mar 01:30",
                "Sun 30 Mar 03:00",
                "Sun 30 Mar 03:30"
            ]
        );
        assert_eq!(s[1].start, utc("2025-03-30T00:30:00Z"));
        assert_eq!(s[2].start, utc("2025-03-30T01:00:00Z")); // 03:00 CEST
    }

    #[test]
    fn dst_fall_back_offers_ambiguous_time_once() {
        // 26 Oct 2025: Madrid clocks go back from 03:00 to 02:00.
        let c = cal(
            "{ timezone: Europe/Madrid, slot_minutes: 60, horizon_days: 1, hours: { sun: [\"01:00-04:00\"] } }",
        );
        let s = c.slots_between(utc("2025-10-25T22:00:00Z"), 20);
        let starts: Vec<DateTime<Utc>> = s.iter().map(|s| s.start).collect();
        assert_eq!(
            starts,
            [
                utc("2025-10-25T23:00:00Z"),
                utc("2025-10-26T00:00:00Z"),
                utc("2025-10-26T02:00:00Z")
            ]
        );
    }

    #[test]
    fn explicit_slots_and_horizon() {
        let c = cal(
            "{ timezone: UTC, slot_minutes: 45, horizon_days: 2, slots: [\"2025-01-01T10:00:00Z\", \"2025-01-05T10:00:00Z\", \"2024-12-31T10:00:00Z\"] }",
        );
        assert!(c.validate().is_ok());
        let s = c.slots_between(utc("2025-01-01T00:00:00Z"), 10);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].end, utc("2025-01-01T10:45:00Z"));
        assert_eq!(s[0].label, "Wed 01 Jan 10:00");
    }

    #[test]
    fn validation_reports_every_problem() {
        let c = cal(
            "{ timezone: Mars/Olympus, slot_minutes: 0, capacity: 0, horizon_days: 0, hours: { mon: [\"12:00-09:00\", \"x\"], funday: [] } }",
        );
        let fields: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "timezone",
                "slot_minutes",
                "capacity",
                "horizon_days",
                "hours.funday",
                "hours.mon[0]",
                "hours.mon[1]"
            ]
        );
        assert!(c.slots_between(Utc::now(), 5).is_empty());
    }
}
