//! A jail's health, as `orch status` and the `Jails` D-Bus property show
//! it: lines read per second, how far the jail is behind its log, searches
//! stopped at the PCRE2 match limit, and lines that could not be read as
//! written (too long, not UTF-8).
//!
//! The jail thread owns a [`HealthMeter`] (plain integers, nothing shared
//! per line) and publishes a [`Health`] snapshot into its `JailStats` about
//! once a second ([`PUBLISH_EVERY`]). The meter also raises the lag warning:
//! a jail more than `findtime / 2` behind is about to drop real failures
//! as stale (they are only counted within `findtime`), so that is logged
//! once, and once more when it has caught up.
//!
//! Everything here is pure: the caller passes the time in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often a jail publishes its health (at most).
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// lines/s is the rate over about this long.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// One published snapshot of a jail's health.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    /// Lines read per second over the last [`RATE_WINDOW`].
    pub lines_per_sec: f64,
    /// How far behind the log the jail is (see [`LagClock`]); zero when it
    /// has read everything there was.
    pub lag: Duration,
    /// Bytes between where the jail reads and the ends of its files; `None`
    /// for journal jails.
    pub bytes_behind: Option<u64>,
    /// Searches the PCRE2 engine stopped at its match limit (the line then
    /// counts as not matched).
    pub limit_hits: u64,
    /// Lines longer than the line cap (cut to it before the filter saw them).
    pub too_long: u64,
    /// Lines that were not valid UTF-8 (the invalid bytes were replaced by
    /// U+FFFD before the filter saw them).
    pub not_utf8: u64,
    /// Whether the lag warning is raised (lag passed `findtime / 2` and has
    /// not yet come back under `findtime / 4`).
    pub lagging: bool,
}

impl Health {
    /// The jail's line in `orch status`, after `health: `.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        if self.lagging {
            text.push_str("LAGGING (over half of findtime behind), ");
        }
        text.push_str(&format!(
            "{:.1} lines/s, lag {}",
            self.lines_per_sec,
            human_lag(self.lag)
        ));
        if let Some(bytes) = self.bytes_behind {
            text.push_str(&format!(" ({} unread)", human_bytes(bytes)));
        }
        text.push_str(&format!(
            ", {} match-limit hits, lines too long (cut) {}, not UTF-8 (replaced) {}",
            self.limit_hits, self.too_long, self.not_utf8
        ));
        text
    }
}

/// Lines per second over a sliding window of samples.
#[derive(Debug, Default)]
pub struct RateWindow {
    /// (when, lines read in all by then), oldest first.
    samples: VecDeque<(Instant, u64)>,
}

/// Samples kept: one per publication over the window, plus the base.
const RATE_SAMPLES: usize = 16;

impl RateWindow {
    /// Records that `total` lines had been read by `now` and returns the
    /// rate since the oldest sample still inside [`RATE_WINDOW`] (or the
    /// newest one just before it, so the span covers the whole window).
    pub fn sample(&mut self, now: Instant, total: u64) -> f64 {
        self.samples.push_back((now, total));
        // Keep exactly one sample at or before the window's start: the base.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > RATE_SAMPLES {
            self.samples.pop_front();
        }
        let Some(&(since, base)) = self.samples.front() else {
            return 0.0;
        };
        let span = now.saturating_duration_since(since).as_secs_f64();
        if span <= 0.0 {
            return 0.0;
        }
        total.saturating_sub(base) as f64 / span
    }
}

/// How long a jail has been behind its log.
///
/// A jail is behind from the moment it starts on work (a batch of file
/// bytes, a journal entry) until it has read everything there was. Every
/// line it reads in between was written after it was last caught up, so
/// the lag bounds how old those lines can be; that is what decides whether
/// their failures still count (`findtime`).
#[derive(Debug, Default)]
pub struct LagClock {
    behind_since: Option<Instant>,
}

impl LagClock {
    /// Work started at `now`; if the jail was caught up, it is behind from
    /// now on.
    pub fn start_work(&mut self, now: Instant) {
        self.behind_since.get_or_insert(now);
    }

    /// Everything there was has been read.
    pub fn caught_up(&mut self) {
        self.behind_since = None;
    }

    /// The lag at `now`. `entry_age` is the age of the newest entry read,
    /// when the source stamps its entries (the journal): the lag is then no
    /// more than that, so a backlog written while orch was stopped does not
    /// count as the jail being slow.
    pub fn lag(&self, now: Instant, entry_age: Option<Duration>) -> Duration {
        let behind = self
            .behind_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        entry_age.map_or(behind, |age| behind.min(age))
    }
}

/// A change of the lag warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagChange {
    /// The lag passed the threshold: log a warning.
    Raised,
    /// The lag came back under half the threshold: log that it recovered.
    Cleared,
}

/// The lag warning: raised once when the lag passes `findtime / 2`,
/// cleared once when it is back under `findtime / 4` (the gap keeps a lag
/// hovering at the threshold from logging every second).
#[derive(Debug)]
pub struct LagAlarm {
    threshold: Duration,
    raised: bool,
}

impl LagAlarm {
    /// The alarm of a jail with this `findtime`.
    pub fn new(find_time: Duration) -> LagAlarm {
        LagAlarm {
            threshold: find_time / 2,
            raised: false,
        }
    }

    /// The lag above which the warning is raised.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Whether the warning is raised.
    pub fn raised(&self) -> bool {
        self.raised
    }

    /// Takes the current lag; returns a change to log, if any.
    pub fn update(&mut self, lag: Duration) -> Option<LagChange> {
        if !self.raised && lag > self.threshold {
            self.raised = true;
            Some(LagChange::Raised)
        } else if self.raised && lag <= self.threshold / 2 {
            self.raised = false;
            Some(LagChange::Cleared)
        } else {
            None
        }
    }
}

/// What the jail thread keeps to publish its health: owned by the thread,
/// touched per line only through [`HealthMeter::line_read`].
#[derive(Debug)]
pub struct HealthMeter {
    pub clock: LagClock,
    rate: RateWindow,
    alarm: LagAlarm,
    last_publish: Option<Instant>,
    /// Lines since the clock was last looked at.
    unchecked: u32,
    /// The source's own figures, set when the source can say (files:
    /// between reads), published with the rest.
    pub bytes_behind: Option<u64>,
    pub too_long: u64,
    pub not_utf8: u64,
    /// Unix seconds of the newest entry read, for sources that stamp them.
    pub newest_entry: Option<u64>,
}

/// Lines between two looks at the clock while reading.
const LINES_PER_CHECK: u32 = 16;

impl HealthMeter {
    /// The meter of a jail with this `findtime`.
    pub fn new(find_time: Duration) -> HealthMeter {
        HealthMeter {
            clock: LagClock::default(),
            rate: RateWindow::default(),
            alarm: LagAlarm::new(find_time),
            last_publish: None,
            unchecked: 0,
            bytes_behind: None,
            too_long: 0,
            not_utf8: 0,
            newest_entry: None,
        }
    }

    /// Counts one line; true every [`LINES_PER_CHECK`] lines, when the
    /// caller should see whether a publication is due.
    pub fn line_read(&mut self) -> bool {
        self.unchecked += 1;
        if self.unchecked < LINES_PER_CHECK {
            return false;
        }
        self.unchecked = 0;
        true
    }

    /// Whether a publication is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.last_publish
            .is_none_or(|last| now.saturating_duration_since(last) >= PUBLISH_EVERY)
    }

    /// The snapshot at `now` (`now_unix` for entry ages), given the lines
    /// read in all and the filter's limit hits, and the lag warning's
    /// change, if any.
    pub fn snapshot(
        &mut self,
        now: Instant,
        now_unix: u64,
        lines: u64,
        limit_hits: u64,
    ) -> (Health, Option<LagChange>) {
        self.last_publish = Some(now);
        let entry_age = self
            .newest_entry
            .map(|time| Duration::from_secs(now_unix.saturating_sub(time)));
        let lag = self.clock.lag(now, entry_age);
        let change = self.alarm.update(lag);
        let health = Health {
            lines_per_sec: self.rate.sample(now, lines),
            lag,
            bytes_behind: self.bytes_behind,
            limit_hits,
            too_long: self.too_long,
            not_utf8: self.not_utf8,
            lagging: self.alarm.raised(),
        };
        (health, change)
    }

    /// The lag above which the warning is raised.
    pub fn threshold(&self) -> Duration {
        self.alarm.threshold()
    }
}

/// A duration for people: `0.4 s`, `12 s`, `5m 3s`.
pub fn human_lag(lag: Duration) -> String {
    let secs = lag.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else if secs < 120.0 {
        format!("{secs:.0} s")
    } else {
        humantime::format_duration(Duration::from_secs(lag.as_secs())).to_string()
    }
}

/// A byte count for people: `512 B`, `3.4 KiB`, `12.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_rate_covers_the_last_ten_seconds() {
        let start = Instant::now();
        let mut rate = RateWindow::default();
        assert_eq!(rate.sample(start, 0), 0.0, "one sample has no rate");
        // 100 lines/s for 30 s, sampled each second.
        for second in 1..=30u32 {
            let r = rate.sample(start + S * second, u64::from(second) * 100);
            assert!((r - 100.0).abs() < 1e-9, "second {second}: {r}");
        }
        // Then 1000 lines/s for 5 s: the window mixes both.
        let mut total = 3000;
        for second in 31..=35u32 {
            total += 1000;
            rate.sample(start + S * second, total);
        }
        let mixed = rate.sample(start + S * 35, total);
        assert!((mixed - 550.0).abs() < 1e-9, "{mixed}");
        // Then nothing: the rate decays to zero within the window.
        let idle = rate.sample(start + S * 46, total);
        assert_eq!(idle, 0.0);
    }

    #[test]
    fn the_rate_survives_sparse_samples() {
        let start = Instant::now();
        let mut rate = RateWindow::default();
        rate.sample(start, 0);
        // One sample a minute: the base is the one before.
        let r = rate.sample(start + S * 60, 600);
        assert!((r - 10.0).abs() < 1e-9, "{r}");
        let r = rate.sample(start + S * 120, 600);
        assert_eq!(r, 0.0);
    }

    #[test]
    fn lag_counts_from_the_first_unfinished_work_until_caught_up() {
        let start = Instant::now();
        let mut clock = LagClock::default();
        assert_eq!(clock.lag(start, None), Duration::ZERO);
        clock.start_work(start);
        // More work while still behind does not reset the start.
        clock.start_work(start + S * 3);
        assert_eq!(clock.lag(start + S * 5, None), S * 5);
        clock.caught_up();
        assert_eq!(clock.lag(start + S * 6, None), Duration::ZERO);
        clock.start_work(start + S * 7);
        assert_eq!(clock.lag(start + S * 8, None), S);
    }

    #[test]
    fn stamped_entries_cap_the_lag_and_old_backlogs_do_not_count() {
        let start = Instant::now();
        let mut clock = LagClock::default();
        clock.start_work(start);
        // A backlog from while orch was stopped: entries an hour old, read
        // for 2 s: the jail is 2 s behind, not an hour.
        assert_eq!(clock.lag(start + S * 2, Some(S * 3600)), S * 2);
        // A flood the jail cannot keep up with: behind for 60 s, reading
        // entries 40 s old.
        assert_eq!(clock.lag(start + S * 60, Some(S * 40)), S * 40);
    }

    #[test]
    fn the_lag_warning_is_raised_once_per_episode() {
        // findtime 10 min: raised above 5 min, cleared at 2.5 min or less.
        let mut alarm = LagAlarm::new(S * 600);
        assert_eq!(alarm.threshold(), S * 300);
        assert_eq!(alarm.update(S * 300), None, "at the threshold: not yet");
        assert_eq!(alarm.update(S * 301), Some(LagChange::Raised));
        assert_eq!(alarm.update(S * 900), None, "still behind: no repeat");
        assert_eq!(alarm.update(S * 200), None, "between: still raised");
        assert!(alarm.raised());
        assert_eq!(alarm.update(S * 150), Some(LagChange::Cleared));
        assert_eq!(alarm.update(Duration::ZERO), None);
        assert_eq!(alarm.update(S * 400), Some(LagChange::Raised));
    }

    #[test]
    fn the_meter_publishes_at_most_once_a_second() {
        let start = Instant::now();
        let mut meter = HealthMeter::new(S * 20);
        assert!(meter.due(start));
        let checks = (0..32).filter(|_| meter.line_read()).count();
        assert_eq!(checks, 2, "the clock is looked at every 16 lines");
        meter.clock.start_work(start);
        meter.too_long = 2;
        meter.bytes_behind = Some(4096);
        let (health, change) = meter.snapshot(start, 1000, 32, 7);
        assert_eq!(change, None);
        assert_eq!(
            (health.limit_hits, health.too_long, health.bytes_behind),
            (7, 2, Some(4096))
        );
        assert!(!meter.due(start + Duration::from_millis(999)));
        assert!(meter.due(start + S));
        // 11 s behind with findtime 20 s: raised, and shown.
        let (health, change) = meter.snapshot(start + S * 11, 1011, 32, 7);
        assert_eq!(change, Some(LagChange::Raised));
        assert!(health.lagging);
        assert_eq!(health.lag, S * 11);
        meter.clock.caught_up();
        let (health, change) = meter.snapshot(start + S * 12, 1012, 32, 7);
        assert_eq!(change, Some(LagChange::Cleared));
        assert!(!health.lagging);
    }

    #[test]
    fn the_status_line_names_every_figure() {
        let health = Health {
            lines_per_sec: 12.34,
            lag: Duration::from_millis(300),
            bytes_behind: Some(2048),
            limit_hits: 3,
            too_long: 1,
            not_utf8: 2,
            lagging: false,
        };
        assert_eq!(
            health.describe(),
            "12.3 lines/s, lag 0.3 s (2.0 KiB unread), 3 match-limit hits, lines too long (cut) 1, not UTF-8 (replaced) 2"
        );
        let journal = Health {
            bytes_behind: None,
            lagging: true,
            lag: S * 400,
            ..health
        };
        assert_eq!(
            journal.describe(),
            "LAGGING (over half of findtime behind), 12.3 lines/s, lag 6m 40s, 3 match-limit hits, lines too long (cut) 1, not UTF-8 (replaced) 2"
        );
    }

    #[test]
    fn figures_for_people() {
        assert_eq!(human_lag(Duration::from_millis(400)), "0.4 s");
        assert_eq!(human_lag(S * 42), "42 s");
        assert_eq!(human_lag(S * 303), "5m 3s");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 + 400), "3.4 KiB");
        assert_eq!(human_bytes(12 << 20), "12.0 MiB");
    }
}
