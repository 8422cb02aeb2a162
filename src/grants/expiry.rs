//! When a share ends: an instant in UTC, to the second, as IAM's
//! `aws:CurrentTime` condition compares it, and the ways people write one
//! (`--until 2027-01-31`, `--for 7d`, the `user.share` value `alice;for=7d`).
//!
//! AWS enforces the end through the statement's `DateLessThan` condition,
//! whether or not sealfs runs; sealfs only prunes statements that have ended.
//! Pure: no clock here, callers pass `now`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first second a share no longer grants (exclusive end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Until {
    unix: i64,
}

/// The latest end sealfs writes (IAM dates are four-digit years).
const LAST_UNIX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

impl Until {
    /// The instant `unix` seconds after the epoch; `None` outside 1970..=9999.
    pub fn from_unix(unix: i64) -> Option<Until> {
        (0..=LAST_UNIX).contains(&unix).then_some(Until { unix })
    }

    pub fn unix(self) -> i64 {
        self.unix
    }

    /// True once the share has ended at `now`.
    pub fn has_passed(self, now: SystemTime) -> bool {
        unix_of(now) >= self.unix
    }

    /// `now + d`, for `--for`.
    pub fn after(now: SystemTime, d: Duration) -> Option<Until> {
        let secs = i64::try_from(d.as_secs()).ok()?;
        Until::from_unix(unix_of(now).checked_add(secs)?)
    }

    /// Reads an end as people write it: `2027-01-31` (a whole day: the share
    /// ends when that day ends, UTC), `2027-01-31T18:00Z`,
    /// `2027-01-31T18:00:00Z` or with an offset `+01:00`. Anything else,
    /// and impossible dates, are refused with the reason.
    pub fn parse_date(text: &str) -> Result<Until, String> {
        let bad = |why: &str| {
            format!("{text:?} is not an end time ({why}); write 2027-01-31 or 2027-01-31T18:00:00Z")
        };
        let t = text.trim();
        let (date, time) = match t.split_once(['T', 't', ' ']) {
            Some((d, rest)) => (d, Some(rest)),
            None => (t, None),
        };
        let parts: Vec<&str> = date.split('-').collect();
        let [y, m, d] = parts[..] else {
            return Err(bad("the date is YYYY-MM-DD"));
        };
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad("the date is YYYY-MM-DD"));
        }
        let (y, m, d) = (number(y), number(m), number(d));
        let (Some(y), Some(m), Some(d)) = (y, m, d) else {
            return Err(bad("the date is YYYY-MM-DD"));
        };
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return Err(bad("no such day"));
        }
        let day = days_from_civil(y, m, d) * 86_400;
        let unix = match time {
            // A date alone means that whole day.
            None => day + 86_400,
            Some(rest) => day + seconds_of_day(rest).map_err(bad)?,
        };
        Until::from_unix(unix).ok_or_else(|| bad("before 1970 or after 9999"))
    }

    /// `7d`, `12h`, `90m`, `2w`, `1d12h`, `3600s`: how long a share lasts.
    pub fn parse_duration(text: &str) -> Result<Duration, String> {
        let bad = || {
            format!("{text:?} is not a duration; write for example 7d, 12h, 30m or 1w2d (s, m, h, d, w)")
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit: u64 = match c {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                'w' => 604_800,
                _ => return Err(bad()),
            };
            let n: u64 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        if !digits.is_empty() || total == 0 {
            return Err(bad());
        }
        Ok(Duration::from_secs(total))
    }

    /// The end as IAM's `aws:CurrentTime` is compared with: `2027-01-31T00:00:00Z`.
    pub fn iso8601(self) -> String {
        let (y, m, d, hh, mm, ss) = self.civil();
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }

    /// Reads [`Until::iso8601`] back (what a grant policy holds); strict.
    pub fn from_iso8601(text: &str) -> Option<Until> {
        if text.len() != 20 || !text.ends_with('Z') {
            return None;
        }
        let u = Until::parse_date(text).ok()?;
        (u.iso8601() == text).then_some(u)
    }

    /// The end as a statement id suffix may carry it: `20270131T000000Z`.
    pub fn tag(self) -> String {
        let (y, m, d, hh, mm, ss) = self.civil();
        format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
    }

    /// Reads [`Until::tag`] back; strict.
    pub fn from_tag(tag: &str) -> Option<Until> {
        let b = tag.as_bytes();
        if !tag.is_ascii() || b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let iso = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &tag[0..4],
            &tag[4..6],
            &tag[6..8],
            &tag[9..11],
            &tag[11..13],
            &tag[13..15]
        );
        Until::from_iso8601(&iso)
    }

    fn civil(self) -> (i64, u32, u32, i64, i64, i64) {
        let days = self.unix.div_euclid(86_400);
        let secs = self.unix.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        (y, m, d, secs / 3_600, secs % 3_600 / 60, secs % 60)
    }
}

impl fmt::Display for Until {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.iso8601())
    }
}

fn unix_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Digits only (no sign, no spaces), as a number.
fn number(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `HH:MM[:SS](Z|+HH:MM|-HH:MM)` as seconds after midnight UTC (may be
/// negative or past a day with an offset).
fn seconds_of_day(text: &str) -> Result<i64, &'static str> {
    let (clock, offset) = if let Some(c) = text.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = text.rfind(['+', '-']) {
        let (c, o) = text.split_at(i);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let Some((oh, om)) = o[1..].split_once(':') else {
            return Err("the offset is +HH:MM");
        };
        let (Some(oh), Some(om)) = (number(oh), number(om)) else {
            return Err("the offset is +HH:MM");
        };
        if oh > 23 || om > 59 {
            return Err("the offset is +HH:MM");
        }
        (c, sign * (oh * 3_600 + om * 60))
    } else {
        return Err("a time needs Z or an offset");
    };
    let fields: Vec<&str> = clock.split(':').collect();
    let (h, m, s) = match fields[..] {
        [h, m] => (h, m, "00"),
        [h, m, s] => (h, m, s),
        _ => return Err("the time is HH:MM or HH:MM:SS"),
    };
    if h.len() != 2 || m.len() != 2 || s.len() != 2 {
        return Err("the time is HH:MM or HH:MM:SS");
    }
    let (Some(h), Some(m), Some(s)) = (number(h), number(m), number(s)) else {
        return Err("the time is HH:MM or HH:MM:SS");
    };
    if h > 23 || m > 59 || s > 59 {
        return Err("no such time of day");
    }
    Ok(h * 3_600 + m * 60 + s - offset)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    #[test]
    fn a_date_alone_lasts_the_whole_day() {
        let u = Until::parse_date("2027-01-31").unwrap();
        assert_eq!(u.iso8601(), "2027-02-01T00:00:00Z");
        assert!(!u.has_passed(at(u.unix() as u64 - 1)));
        assert!(u.has_passed(at(u.unix() as u64)));
    }

    #[test]
    fn times_with_zone_or_offset() {
        assert_eq!(
            Until::parse_date("2027-01-31T18:00Z").unwrap().iso8601(),
            "2027-01-31T18:00:00Z"
        );
        assert_eq!(
            Until::parse_date("2027-01-31T18:00:30+01:30")
                .unwrap()
                .iso8601(),
            "2027-01-31T16:30:30Z"
        );
        assert_eq!(
            Until::parse_date("2027-12-31T23:00:00-02:00")
                .unwrap()
                .iso8601(),
            "2028-01-01T01:00:00Z"
        );
        assert_eq!(
            Until::parse_date("2028-02-29").unwrap().iso8601(),
            "2028-03-01T00:00:00Z"
        );
    }

    #[test]
    fn impossible_or_vague_ends_are_refused_with_the_reason() {
        for bad in [
            "",
            "tomorrow",
            "2027-02-29",
            "2027-13-01",
            "2027-00-10",
            "2027-1-31",
            "27-01-31",
            "2027-01-31T18:00",
            "2027-01-31T24:00Z",
            "2027-01-31T18:60Z",
            "2027-01-31T18:00+1",
            "1969-12-30",
            "+2027-01-31",
            "2027-01-31T-1:00Z",
        ] {
            let e = Until::parse_date(bad).unwrap_err();
            assert!(e.contains("not an end time"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        let d = |s| Until::parse_duration(s).unwrap().as_secs();
        assert_eq!(d("7d"), 7 * 86_400);
        assert_eq!(d("1w2d"), 9 * 86_400);
        assert_eq!(d("1d12h"), 36 * 3_600);
        assert_eq!(d("90m"), 5_400);
        assert_eq!(d("3600s"), 3_600);
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "0d",
            "-1d",
            "1.5d",
            "99999999999999999999d",
            "7 d",
        ] {
            assert!(Until::parse_duration(bad).is_err(), "{bad}");
        }
        let now = at(1_800_000_000);
        assert_eq!(
            Until::after(now, Duration::from_secs(86_400))
                .unwrap()
                .unix(),
            1_800_086_400
        );
        assert!(Until::after(now, Duration::from_secs(u64::MAX)).is_none());
    }

    #[test]
    fn tags_and_iso_are_strict() {
        let u = Until::parse_date("2027-01-31T07:08:09Z").unwrap();
        assert_eq!(u.tag(), "20270131T070809Z");
        assert_eq!(Until::from_tag(&u.tag()), Some(u));
        assert_eq!(Until::from_iso8601(&u.iso8601()), Some(u));
        for bad in [
            "20270231T000000Z",
            "20270131T000000",
            "2027013T0000000Z",
            "x",
        ] {
            assert_eq!(Until::from_tag(bad), None, "{bad}");
        }
        assert_eq!(Until::from_iso8601("2027-01-31T07:08:09+00:00"), None);
        assert_eq!(Until::from_iso8601("2027-01-31"), None);
    }

    proptest! {
        /// Every instant sealfs can write reads back to itself, in both forms,
        /// and the calendar agrees with the day count.
        #[test]
        fn forms_round_trip(unix in 0i64..=LAST_UNIX) {
            let u = Until::from_unix(unix).unwrap();
            prop_assert_eq!(Until::from_iso8601(&u.iso8601()), Some(u));
            prop_assert_eq!(Until::from_tag(&u.tag()), Some(u));
            let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
            prop_assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), unix.div_euclid(86_400));
        }

        /// Anything typed as an end is an end or a refusal, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(s in "[0-9TZtz:+ -]{0,30}|\\PC{0,30}") {
            let _ = Until::parse_date(&s);
            let _ = Until::parse_duration(&s);
        }
    }
}
