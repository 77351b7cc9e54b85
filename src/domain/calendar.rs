//! Booking calendars: when an appointment bot can be booked.
//!
//! A [`Calendar`] describes opening hours per weekday in an IANA time zone,
//! cut into slots of `slot_minutes`, plus optional explicit slot starts.
//! [`Calendar::slots`] lists the slots from a moment on, earliest first; the
//! caller removes the ones already booked `capacity` times and hands the rest
//! to the engine as free slots.
//!
//! Invariants:
//! - slot starts and ends are UTC instants; labels are in the calendar's zone;
//! - local times are converted with chrono-tz, so daylight-saving changes are
//!   honoured: a local time that does not exist (spring forward) is skipped, and
//!   an ambiguous one (fall back) is offered once, at its earlier instant;
//! - listed slots are sorted, unique, start at or after `from` and before
//!   `from + horizon_days`;
//! - slots are computed lazily, in order: taking `n` slots costs about `n`
//!   steps times the ranges of a day (plus one step per day without a slot),
//!   never the whole horizon. A calendar whose `hours` repeat one range
//!   thousands of times, minute slots over a year, used to be expanded in
//!   full before being cut to the few offered (gigabytes per chat turn);
//! - [`Calendar::validate`] refuses what cannot be meant: overlapping or
//!   repeated ranges within a day, more than [`MAX_RANGES_PER_DAY`] ranges a
//!   day, more than [`MAX_EXPLICIT_SLOTS`] explicit slots. Calendars saved
//!   before those checks are still listed correctly and cheaply;
//! - an invalid calendar yields no slots; [`Calendar::validate`] says why.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::iter::Peekable;
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
/// Most opening-hour ranges one weekday may have (half-hour blocks all day).
pub const MAX_RANGES_PER_DAY: usize = 48;
/// Most explicit slot starts a calendar may list.
pub const MAX_EXPLICIT_SLOTS: usize = 1000;

fn parse_range(r: &str) -> Option<(NaiveTime, NaiveTime)> {
    let (a, b) = r.split_once('-')?;
    let a = NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?;
    let b = NaiveTime::parse_from_str(b.trim(), "%H:%M").ok()?;
    (a < b).then_some((a, b))
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
            if ranges.len() > MAX_RANGES_PER_DAY {
                // One message for the day, not one per range.
                bad(
                    format!("hours.{day}"),
                    format!(
                        "{} ranges on {day}; at most {MAX_RANGES_PER_DAY} are allowed (merge ranges that touch or overlap)",
                        ranges.len()
                    ),
                );
                continue;
            }
            let mut parsed = Vec::new();
            for (i, r) in ranges.iter().enumerate() {
                match parse_range(r) {
                    Some((open, close)) => parsed.push((open, close, i)),
                    None => bad(
                        format!("hours.{day}[{i}]"),
                        format!("bad range {r:?}; write \"09:00-12:00\" with start before end"),
                    ),
                }
            }
            // Sorted by opening time, a range clashes with an earlier one
            // exactly when it opens before the latest close seen so far.
            // The first clash of a day is described, the others counted.
            parsed.sort();
            let mut latest: Option<(NaiveTime, NaiveTime, usize)> = None;
            let mut first_clash: Option<(usize, String)> = None;
            let mut clashes = 0usize;
            for (open, close, i) in parsed {
                if let Some((other_open, until, j)) = latest
                    && open < until
                {
                    clashes += 1;
                    if first_clash.is_none() {
                        let (first, second) = (i.min(j), i.max(j));
                        let what = if (open, close) == (other_open, until) {
                            "repeats"
                        } else {
                            "overlaps"
                        };
                        first_clash = Some((
                            second,
                            format!(
                                "{:?} {what} {:?} (hours.{day}[{first}]) on {day}",
                                ranges[second], ranges[first]
                            ),
                        ));
                    }
                }
                if latest.is_none_or(|(_, until, _)| close > until) {
                    latest = Some((open, close, i));
                }
            }
            if let Some((index, clash)) = first_clash {
                let more = match clashes - 1 {
                    0 => String::new(),
                    n => format!(", and {n} more of {day}'s ranges overlap or repeat others"),
                };
                bad(
                    format!("hours.{day}[{index}]"),
                    format!(
                        "{clash}{more}; ranges of one day must not overlap or repeat: merge them into one"
                    ),
                );
            }
        }
        if let Some(slots) = &self.slots
            && slots.len() > MAX_EXPLICIT_SLOTS
        {
            bad(
                "slots".into(),
                format!(
                    "{} explicit slots; at most {MAX_EXPLICIT_SLOTS} are allowed (use hours for regular openings)",
                    slots.len()
                ),
            );
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
        self.slots(from).take(count_limit).collect()
    }

    /// Slots starting at or after `from` and within the horizon, earliest
    /// first, computed one at a time as they are taken.
    pub fn slots(&self, from: DateTime<Utc>) -> Slots {
        let tz = self.tz();
        let valid_step = (1..=24 * 60).contains(&self.slot_minutes);
        let (Some(tz), true) = (tz, valid_step) else {
            return Slots::empty();
        };
        let horizon = self.horizon_days.min(MAX_HORIZON_DAYS);
        let until = from + Duration::days(i64::from(horizon));
        let step = self.slot_minutes * 60;

        let mut week: [Vec<(u32, u32)>; 7] = Default::default();
        for (day, ranges) in &self.hours {
            let Some(index) = WEEKDAYS.iter().position(|d| d == day) else {
                continue;
            };
            let mut secs: Vec<(u32, u32)> = ranges
                .iter()
                .filter_map(|r| parse_range(r))
                .map(|(a, b)| (a.num_seconds_from_midnight(), b.num_seconds_from_midnight()))
                .filter(|(a, b)| b - a >= step)
                .collect();
            secs.sort_unstable();
            secs.dedup();
            week[index] = secs;
        }
        let local_from = from.with_timezone(&tz);
        let hours = HourStarts {
            tz,
            step,
            from,
            until,
            week,
            day: local_from.date_naive(),
            // One day past the horizon's last local day: a clock set back
            // at a day boundary cannot hide a slot.
            last_day: until.with_timezone(&tz).date_naive() + Duration::days(1),
            // Local times earlier than `from`'s on its own day are earlier
            // instants too, so the day's scan starts there.
            cursor: local_from.time().num_seconds_from_midnight(),
            done: false,
        };
        let mut extra: Vec<DateTime<Utc>> = self
            .slots
            .iter()
            .flatten()
            .copied()
            .filter(|s| *s >= from && *s < until)
            .collect();
        extra.sort_unstable();
        extra.dedup();
        Slots {
            tz,
            step: Duration::seconds(i64::from(step)),
            hours: hours.peekable(),
            extra: extra.into_iter().peekable(),
        }
    }
}

/// The slots of a calendar in start order, from [`Calendar::slots`]: the
/// opening-hour starts merged with the explicit ones, each start once.
pub struct Slots {
    tz: Tz,
    step: Duration,
    hours: Peekable<HourStarts>,
    extra: Peekable<std::vec::IntoIter<DateTime<Utc>>>,
}

impl Slots {
    fn empty() -> Self {
        Slots {
            tz: Tz::UTC,
            step: Duration::zero(),
            hours: HourStarts {
                tz: Tz::UTC,
                step: 1,
                from: DateTime::<Utc>::MIN_UTC,
                until: DateTime::<Utc>::MIN_UTC,
                week: Default::default(),
                day: NaiveDate::MIN,
                last_day: NaiveDate::MIN,
                cursor: 0,
                done: true,
            }
            .peekable(),
            extra: Vec::new().into_iter().peekable(),
        }
    }
}

impl Iterator for Slots {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        let start = match (self.hours.peek().copied(), self.extra.peek().copied()) {
            (None, None) => return None,
            (Some(h), Some(e)) if e < h => self.extra.next(),
            (Some(h), Some(e)) if e == h => {
                self.extra.next();
                self.hours.next()
            }
            (Some(_), _) => self.hours.next(),
            (None, Some(_)) => self.extra.next(),
        }?;
        Some(Slot {
            start,
            end: start + self.step,
            label: start
                .with_timezone(&self.tz)
                .format("%a %d %b %H:%M")
                .to_string(),
        })
    }
}

/// Starts of the opening-hour slots, strictly increasing.
///
/// Within one local day, later local times are later instants (a missing
/// local time is skipped and an ambiguous one taken at its earlier instant),
/// and every local time of a day comes before those of the next day; so
/// scanning day by day, each time for the earliest grid point of any range
/// not before `cursor`, yields the starts in order and each once, however
/// the ranges overlap or repeat.
struct HourStarts {
    tz: Tz,
    /// Slot length, seconds.
    step: u32,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    /// Per weekday (Monday first): (open, close) in seconds since local
    /// midnight, sorted, each at least one slot long.
    week: [Vec<(u32, u32)>; 7],
    /// The local day being scanned.
    day: NaiveDate,
    last_day: NaiveDate,
    /// Earliest local start (seconds since midnight) still to consider on `day`.
    cursor: u32,
    done: bool,
}

impl Iterator for HourStarts {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        while !self.done && self.day <= self.last_day {
            let ranges = &self.week[self.day.weekday().num_days_from_monday() as usize];
            let (cursor, step) = (self.cursor, self.step);
            let next = ranges
                .iter()
                .filter_map(|&(open, close)| {
                    let start = open + cursor.saturating_sub(open).div_ceil(step) * step;
                    (start + step <= close).then_some(start)
                })
                .min();
            let Some(secs) = next else {
                self.day = self.day.succ_opt()?;
                self.cursor = 0;
                continue;
            };
            self.cursor = secs + 1;
            let time = NaiveTime::from_num_seconds_from_midnight_opt(secs, 0)?;
            let instant = match self.tz.from_local_datetime(&self.day.and_time(time)) {
                LocalResult::Single(x) | LocalResult::Ambiguous(x, _) => x.with_timezone(&Utc),
                LocalResult::None => continue,
            };
            if instant >= self.until {
                self.done = true;
                return None;
            }
            if instant >= self.from {
                return Some(instant);
            }
        }
        None
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

    /// The slots as they were listed before enumeration became lazy: every
    /// candidate of the horizon built, then sorted, deduplicated and cut.
    /// `early_exit` keeps that version's stop at the first start past the
    /// horizon, which is only right when each day's ranges are sorted and
    /// disjoint; without it this is the plain specification.
    fn eager(c: &Calendar, from: DateTime<Utc>, count_limit: usize, early_exit: bool) -> Vec<Slot> {
        let Some(tz) = c.tz() else {
            return Vec::new();
        };
        if c.slot_minutes == 0 || c.slot_minutes > 24 * 60 || count_limit == 0 {
            return Vec::new();
        }
        let horizon = c.horizon_days.min(MAX_HORIZON_DAYS);
        let until = from + Duration::days(i64::from(horizon));
        let step = Duration::minutes(i64::from(c.slot_minutes));
        let mut starts: Vec<DateTime<Utc>> = Vec::new();
        let first: NaiveDate = from.with_timezone(&tz).date_naive() - Duration::days(1);
        'days: for offset in 0..=i64::from(horizon) + 1 {
            let day = first + Duration::days(offset);
            let key = WEEKDAYS[day.weekday().num_days_from_monday() as usize];
            let Some(ranges) = c.hours.get(key) else {
                continue;
            };
            for (open, close) in ranges.iter().filter_map(|r| parse_range(r)) {
                let mut t = day.and_time(open);
                let close = day.and_time(close);
                while t + step <= close {
                    let instant = match tz.from_local_datetime(&t) {
                        LocalResult::Single(x) => Some(x),
                        LocalResult::Ambiguous(early, _) => Some(early),
                        LocalResult::None => None,
                    };
                    if let Some(x) = instant {
                        let x = x.with_timezone(&Utc);
                        if x >= until {
                            if early_exit {
                                break 'days;
                            }
                            break;
                        }
                        if x >= from {
                            starts.push(x);
                        }
                    }
                    t += step;
                }
            }
        }
        if let Some(extra) = &c.slots {
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
                label: c.label(start),
            })
            .collect()
    }

    const ZONES: [&str; 7] = [
        "UTC",
        "Europe/Madrid",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "America/Santiago",
    ];

    fn hhmm(minutes: u32) -> String {
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    }

    proptest::proptest! {
        /// Calendars as people write them (each day's ranges in order and
        /// disjoint) list exactly what they listed before.
        #[test]
        fn lazy_slots_are_the_slots_listed_before(
            zone in 0..ZONES.len(),
            slot_minutes in proptest::sample::select(vec![5u32, 15, 20, 30, 45, 60, 90, 240, 1440]),
            horizon in 1u32..12,
            days in proptest::collection::vec(proptest::collection::vec(0u32..1440, 0..6), 7),
            extra in proptest::collection::vec(0i64..(20 * 24 * 60), 0..4),
            from_minutes in 0i64..(366 * 24 * 60),
            count in 1usize..250,
        ) {
            let mut hours = BTreeMap::new();
            for (d, mut cuts) in days.into_iter().enumerate() {
                cuts.sort_unstable();
                cuts.dedup();
                // Consecutive pairs of cut points make sorted, disjoint ranges.
                let ranges: Vec<String> = cuts
                    .chunks_exact(2)
                    .map(|p| format!("{}-{}", hhmm(p[0]), hhmm(p[1])))
                    .collect();
                if !ranges.is_empty() {
                    hours.insert(WEEKDAYS[d].to_owned(), ranges);
                }
            }
            let from = utc("2025-01-01T00:00:00Z") + Duration::minutes(from_minutes);
            let c = Calendar {
                timezone: ZONES[zone].into(),
                slot_minutes,
                capacity: 1,
                horizon_days: horizon,
                hours,
                slots: Some(extra.iter().map(|m| from + Duration::minutes(*m)).collect()),
            };
            proptest::prop_assert_eq!(c.slots_between(from, count), eager(&c, from, count, true));
        }

        /// Any ranges at all — overlapping, repeated, out of order — list the
        /// sorted, unique union of their slots.
        #[test]
        fn lazy_slots_are_the_union_of_any_ranges(
            zone in 0..ZONES.len(),
            slot_minutes in proptest::sample::select(vec![7u32, 30, 60, 100]),
            ranges in proptest::collection::vec((0u32..1439, 1u32..600), 1..8),
            from_minutes in 0i64..(366 * 24 * 60),
            count in 1usize..120,
        ) {
            let ranges: Vec<String> = ranges
                .iter()
                .map(|(open, len)| format!("{}-{}", hhmm(*open), hhmm((open + len).min(1439))))
                .collect();
            let hours = WEEKDAYS
                .iter()
                .step_by(2)
                .map(|d| ((*d).to_owned(), ranges.clone()))
                .collect();
            let from = utc("2025-01-01T00:00:00Z") + Duration::minutes(from_minutes);
            let c = Calendar {
                timezone: ZONES[zone].into(),
                slot_minutes,
                capacity: 1,
                horizon_days: 9,
                hours,
                slots: None,
            };
            proptest::prop_assert_eq!(c.slots_between(from, count), eager(&c, from, count, false));
        }
    }

    /// A whole day repeated `copies` times on every weekday, minute slots, a
    /// year ahead: the calendar of the hostile bot file, built in code.
    fn repeated_day(copies: usize) -> Calendar {
        let day = vec!["00:00-23:59".to_owned(); copies];
        Calendar {
            timezone: "Europe/Madrid".into(),
            slot_minutes: 1,
            capacity: 1,
            horizon_days: MAX_HORIZON_DAYS,
            hours: WEEKDAYS
                .iter()
                .map(|d| ((*d).to_owned(), day.clone()))
                .collect(),
            slots: None,
        }
    }

    #[test]
    fn a_day_repeated_thousands_of_times_lists_only_what_is_taken() {
        let from = utc("2025-11-24T07:00:00Z");
        let once = repeated_day(1).slots_between(from, 200);
        assert_eq!(once.len(), 200);
        assert_eq!(once[0].label, "Mon 24 Nov 08:00");
        assert_eq!(once[199].label, "Mon 24 Nov 11:19");
        let started = std::time::Instant::now();
        let bomb = repeated_day(3000);
        assert_eq!(bomb.slots_between(from, 200), once);
        // Before, this built 3,000 × 1,439 × 366 starts (about 24 GB).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        // Distinct overlapping ranges (one opening per minute) cost one pass
        // over the day's ranges per slot taken, still only for the slots taken.
        let staggered = Calendar {
            hours: BTreeMap::from([(
                "mon".to_owned(),
                (0..1439).map(|m| format!("{}-23:59", hhmm(m))).collect(),
            )]),
            ..repeated_day(1)
        };
        let started = std::time::Instant::now();
        assert_eq!(staggered.slots_between(from, 200), once);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Ranges too short for a slot: a year of days with nothing to offer.
        let none = Calendar {
            slot_minutes: 60,
            hours: WEEKDAYS
                .iter()
                .map(|d| ((*d).to_owned(), vec!["09:00-09:30".to_owned(); 3000]))
                .collect(),
            ..repeated_day(1)
        };
        assert!(none.slots(from).next().is_none());
        // What the engine shows is pulled, not listed: the iterator is lazy.
        assert_eq!(bomb.slots(from).nth(5).unwrap().label, "Mon 24 Nov 08:05");
    }

    #[test]
    fn overlapping_repeated_and_too_many_ranges_are_refused_naming_the_day() {
        let c = cal(
            "{ timezone: UTC, slot_minutes: 30, hours: { mon: [\"09:00-12:00\", \"13:00-14:00\", \"09:00-12:00\"], tue: [\"09:00-12:00\", \"11:30-13:00\", \"12:00-12:30\"], wed: [\"09:00-12:00\", \"12:00-13:00\"] } }",
        );
        let errs = c.validate().unwrap_err();
        let found: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(found.len(), 2, "one error per day: {found:?}");
        assert_eq!(found[0].0, "hours.mon[2]");
        assert!(
            found[0]
                .1
                .starts_with("\"09:00-12:00\" repeats \"09:00-12:00\" (hours.mon[0]) on mon; "),
            "{}",
            found[0].1
        );
        assert_eq!(found[1].0, "hours.tue[1]");
        assert!(
            found[1].1.starts_with("\"11:30-13:00\" overlaps \"09:00-12:00\" (hours.tue[0]) on tue, and 1 more of tue's ranges"),
            "{}",
            found[1].1
        );
        // Touching ranges (wed) are fine.

        let bomb = repeated_day(3000);
        let errs = bomb.validate().unwrap_err();
        assert_eq!(errs.len(), 7, "one error per day, not one per range");
        assert_eq!(errs[0].field, "hours.fri");
        assert!(
            errs[0].message.contains("3000 ranges on fri; at most 48"),
            "{}",
            errs[0].message
        );

        let full_day: Vec<String> = (0..48)
            .map(|h| format!("{}-{}", hhmm(h * 30), hhmm(h * 30 + 29)))
            .collect();
        let c = Calendar {
            hours: BTreeMap::from([("mon".to_owned(), full_day)]),
            ..repeated_day(1)
        };
        assert!(c.validate().is_ok(), "{:?}", c.validate());

        let c = Calendar {
            hours: BTreeMap::new(),
            slots: Some(vec![utc("2025-01-01T10:00:00Z"); MAX_EXPLICIT_SLOTS + 1]),
            ..repeated_day(1)
        };
        assert_eq!(c.validate().unwrap_err()[0].field, "slots");
    }
}
