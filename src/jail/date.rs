//! The timestamp at the start of a log line, as Unix seconds, for native
//! filters with `date = "line"` (the default).
//!
//! Two forms are understood, the ones syslog daemons write:
//! - BSD: `Nov 25 10:00:00` (day space-padded or not), in local time and
//!   without a year. The year is inferred: the most recent one that does not
//!   put the line in the future (with a day of slack for clock skew between
//!   the writer and us, so a line a few seconds "ahead" is not moved a year
//!   back).
//! - RFC 3339: `2026-11-25T10:00:00.123456+01:00` (fraction optional; `Z`
//!   for UTC; no offset means local time). The fraction is dropped. The
//!   same with slashes, `2026/11/25 10:00:00`, is nginx's error log.
//!
//! Anything else gives `None`, and the caller uses the arrival time.
//!
//! This module only converts text to numbers: it must not read the clock
//! (the caller passes `now`) or decide anything from the result. Local time
//! comes through [`Zone`], so tests can fix the offset.

use crate::timefmt::{civil_from_days, days_from_civil};

/// Slack for "not in the future" when inferring a BSD timestamp's year.
const FUTURE_SLACK: i64 = 86_400;

/// A time zone: the offset from UTC, in seconds, in effect at a moment.
pub trait Zone {
    /// Seconds east of UTC at Unix time `unix`; `None` if unknown.
    fn offset_at(&mut self, unix: i64) -> Option<i64>;
}

/// A fixed offset from UTC (tests, or a configured zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedZone(pub i64);

impl Zone for FixedZone {
    fn offset_at(&mut self, _unix: i64) -> Option<i64> {
        Some(self.0)
    }
}

/// The system's local time zone (`TZ`, `/etc/localtime`) through libc,
/// remembering the offsets of the last few hours asked about: log lines come
/// in time order (and "now" is asked about too), so almost every call is
/// answered without libc.
#[derive(Debug, Clone, Default)]
pub struct LocalZone {
    /// (Unix hour, offset in effect at its start), most recent first.
    hours: [Option<(i64, i64)>; 4],
}

impl Zone for LocalZone {
    fn offset_at(&mut self, unix: i64) -> Option<i64> {
        let hour = unix.div_euclid(3600);
        if let Some(found) = self.hours.iter().flatten().find(|(h, _)| *h == hour) {
            return Some(found.1);
        }
        let offset = libc_offset(hour * 3600)?;
        self.hours.rotate_right(1);
        self.hours[0] = Some((hour, offset));
        Some(offset)
    }
}

// time_t and tm_gmtoff are i64 here but narrower on some targets.
#[allow(clippy::useless_conversion)]
fn libc_offset(unix: i64) -> Option<i64> {
    let t: libc::time_t = unix.try_into().ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers are
    // valid for the call, and localtime_r is the thread-safe variant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let filled = unsafe { libc::localtime_r(&t, &mut tm) };
    if filled.is_null() {
        return None;
    }
    Some(i64::from(tm.tm_gmtoff))
}

/// [`line_time`] in the local zone, remembering the last BSD timestamp
/// read: consecutive lines often share their second, and then neither the
/// clock nor the zone is consulted.
#[derive(Debug, Clone, Default)]
pub struct LineDates {
    zone: LocalZone,
    /// The first 15 bytes of the last BSD-dated line, and its time.
    last: Option<([u8; 15], Option<i64>)>,
}

impl LineDates {
    /// The time `line` starts with; `now` is called only when the year of a
    /// new BSD timestamp has to be inferred.
    pub fn line_time(&mut self, line: &str, now: impl FnOnce() -> i64) -> Option<i64> {
        let key: Option<[u8; 15]> = line
            .as_bytes()
            .get(..15)
            .filter(|b| b[0].is_ascii_uppercase())
            .and_then(|b| b.try_into().ok());
        if let (Some(key), Some((last, time))) = (key, self.last)
            && key == last
        {
            return time;
        }
        let time = line_time(line, now(), &mut self.zone);
        if let Some(key) = key {
            self.last = Some((key, time));
        }
        time
    }
}

/// The Unix time of the timestamp `line` starts with, or `None` if it starts
/// with neither a BSD nor an RFC 3339 timestamp (or an impossible date).
/// `now` (Unix seconds) is only used to infer a BSD timestamp's year.
pub fn line_time(line: &str, now: i64, zone: &mut dyn Zone) -> Option<i64> {
    let b = line.as_bytes();
    if b.len() >= 15 && b[0].is_ascii_uppercase() {
        bsd(b, now, zone)
    } else if b.len() >= 19 && b[0].is_ascii_digit() {
        rfc3339(b, zone)
    } else {
        None
    }
}

/// Digits `b[at..at + n]` as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let mut value = 0i64;
    for &c in b.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(c - b'0');
    }
    Some(value)
}

/// `hh:mm:ss` at `b[at..at + 8]` as seconds of the day (a leap second
/// counts as :59).
fn clock(b: &[u8], at: usize) -> Option<i64> {
    if b.get(at + 2) != Some(&b':') || b.get(at + 5) != Some(&b':') {
        return None;
    }
    let (h, m, s) = (
        digits(b, at, 2)?,
        digits(b, at + 3, 2)?,
        digits(b, at + 6, 2)?,
    );
    (h < 24 && m < 60 && s <= 60).then_some(h * 3600 + m * 60 + s.min(59))
}

fn bsd(b: &[u8], now: i64, zone: &mut dyn Zone) -> Option<i64> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month = MONTHS.iter().position(|m| b[..3] == m[..])? as i64 + 1;
    if b[3] != b' ' || b[6] != b' ' || b.get(15).is_some_and(|&c| c != b' ') {
        return None;
    }
    let day = if b[4] == b' ' {
        digits(b, 5, 1)?
    } else {
        digits(b, 4, 2)?
    };
    let seconds = clock(b, 7)?;
    let this_year = civil_from_days((now + zone.offset_at(now)?).div_euclid(86_400)).0;
    for year in [this_year, this_year - 1] {
        if day < 1 || day > days_in_month(year, month) {
            continue;
        }
        let t = local_to_unix(days_from_civil(year, month, day) * 86_400 + seconds, zone)?;
        if t <= now + FUTURE_SLACK {
            return Some(t);
        }
    }
    None
}

fn rfc3339(b: &[u8], zone: &mut dyn Zone) -> Option<i64> {
    // RFC 3339, and nginx's `2026/11/25 10:00:00` (local time).
    let separator = b[4];
    if !matches!(separator, b'-' | b'/')
        || b[7] != separator
        || !matches!(b[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let (year, month, day) = (digits(b, 0, 4)?, digits(b, 5, 2)?, digits(b, 8, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let naive = days_from_civil(year, month, day) * 86_400 + clock(b, 11)?;
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        at += 1;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
    }
    match b.get(at) {
        Some(b'Z' | b'z') => Some(naive),
        Some(&sign @ (b'+' | b'-')) => {
            if b.get(at + 3) != Some(&b':') {
                return None;
            }
            let (h, m) = (digits(b, at + 1, 2)?, digits(b, at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            Some(if sign == b'+' {
                naive - offset
            } else {
                naive + offset
            })
        }
        None | Some(b' ') => local_to_unix(naive, zone),
        Some(_) => None,
    }
}

/// Local wall-clock seconds (as if UTC) to Unix time. The offset is looked
/// up twice so a change of offset (summer time) between the two readings
/// is taken into account.
fn local_to_unix(naive: i64, zone: &mut dyn Zone) -> Option<i64> {
    let first = zone.offset_at(naive)?;
    let second = zone.offset_at(naive - first)?;
    Some(naive - second)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25T12:00:00Z.
    const NOW: i64 = 1_795_608_000;

    fn utc(line: &str) -> Option<i64> {
        line_time(line, NOW, &mut FixedZone(0))
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 11, 25) * 86_400 + 43_200, NOW);
        for days in [-1, 0, 59, 365, 11_016, 20_417, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn bsd_this_year() {
        assert_eq!(utc("Nov 25 10:00:00 host sshd[1]: x"), Some(NOW - 7200));
        assert_eq!(
            utc("Nov  5 10:00:00 host x"),
            Some(NOW - 20 * 86_400 - 7200)
        );
        assert_eq!(
            utc("Nov 05 10:00:00 host x"),
            Some(NOW - 20 * 86_400 - 7200)
        );
        // Later today and tomorrow: clock skew, still this year.
        assert_eq!(utc("Nov 25 13:00:00 h x"), Some(NOW + 3600));
        assert_eq!(utc("Nov 26 11:00:00 h x"), Some(NOW + 82_800));
    }

    #[test]
    fn bsd_future_date_is_last_year() {
        let dec = utc("Dec 31 23:59:59 h x").unwrap();
        assert_eq!(dec, days_from_civil(2025, 12, 31) * 86_400 + 86_399);
        // Not a leap year in 2026 or 2025.
        assert_eq!(utc("Feb 29 10:00:00 h x"), None);
    }

    #[test]
    fn bsd_in_local_time() {
        let east = line_time("Nov 25 10:00:00 h x", NOW, &mut FixedZone(3600));
        assert_eq!(east, Some(NOW - 7200 - 3600));
        let west = line_time("Nov 25 10:00:00 h x", NOW, &mut FixedZone(-5 * 3600));
        assert_eq!(west, Some(NOW - 7200 + 5 * 3600));
    }

    #[test]
    fn rfc3339_forms() {
        assert_eq!(utc("2026-11-25T10:00:00Z host x"), Some(NOW - 7200));
        assert_eq!(utc("2026-11-25T10:00:00.123456+00:00 h"), Some(NOW - 7200));
        assert_eq!(utc("2026-11-25T11:30:00+01:30 h"), Some(NOW - 7200));
        assert_eq!(utc("2026-11-25T05:00:00-05:00 h"), Some(NOW - 7200));
        // No offset: local time. Years are explicit, even in the future.
        let local = line_time("2026-11-25T10:00:00 h", NOW, &mut FixedZone(3600));
        assert_eq!(local, Some(NOW - 7200 - 3600));
        assert_eq!(
            utc("2027-01-01T00:00:00Z"),
            Some(days_from_civil(2027, 1, 1) * 86_400)
        );
    }

    #[test]
    fn garbage_is_none() {
        for line in [
            "",
            "Invalid user a from 192.0.2.1 port 2",
            "Nov 25 10:00 host",
            "Nov 25 25:00:00 host x",
            "Nov 32 10:00:00 host x",
            "Foo 25 10:00:00 host x",
            "Nov 25 10:00:00x",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-25T10:00:00+0100",
            "2026-11-25T10:00:00Q",
            "2026-11-25",
            "12345",
        ] {
            assert_eq!(utc(line), None, "{line:?}");
        }
    }

    #[test]
    fn line_dates_remember_the_last_second() {
        let mut dates = LineDates::default();
        let first = dates.line_time("Nov 25 10:00:00 h a", || NOW);
        assert!(first.is_some());
        // Same second: answered from memory, `now` is not asked.
        let again = dates.line_time("Nov 25 10:00:00 h b", || panic!("clock read"));
        assert_eq!(again, first);
        let next = dates.line_time("Nov 25 10:00:01 h c", || NOW).unwrap();
        assert_eq!(next, first.unwrap() + 1);
        assert_eq!(dates.line_time("no date", || NOW), None);
        assert!(dates.line_time("2026-11-25T10:00:00Z x", || NOW).is_some());
    }

    #[test]
    fn local_zone_is_consistent_with_libc() {
        let mut zone = LocalZone::default();
        let offset = zone.offset_at(NOW).expect("libc knows the local offset");
        assert!(offset.abs() <= 14 * 3600);
        assert_eq!(zone.offset_at(NOW + 1), Some(offset));
    }
}
