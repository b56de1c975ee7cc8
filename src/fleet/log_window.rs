//! Bounded logging of what another host can make happen thousands of
//! times: malformed bucket entries the session skips, and remote bans the
//! core refuses. Whoever holds one host's credentials can write as many as
//! they like, and each catch-up reads them all again. The first few lines
//! in each minute are logged in full, the rest only counted, and the count
//! is logged as one line when the next minute begins.
//!
//! It must not decide what is skipped or refused; `session.rs` and
//! `daemon::fleet_apply` do.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines logged in full per window.
const FULL_LINES_PER_WINDOW: u32 = 5;
/// The window.
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct LogWindow {
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogWindow {
    /// Logs `line` (built only if it is logged), or counts the `count`
    /// things it is about; `things` names them in the summary line
    /// ("malformed entries skipped").
    pub fn note(&self, line: impl FnOnce() -> String, count: u64, things: &str) {
        for line in self.lines_for(Instant::now(), line, count, things) {
            tracing::warn!("{line}");
        }
    }

    /// The lines to log at `now`: a summary of the window that ended, and
    /// the line itself while the window allows.
    fn lines_for(
        &self,
        now: Instant,
        line: impl FnOnce() -> String,
        count: u64,
        things: &str,
    ) -> Vec<String> {
        let Ok(mut window) = self.state.lock() else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        if window
            .started
            .is_none_or(|started| now.duration_since(started) >= WINDOW)
        {
            if window.suppressed > 0 {
                lines.push(format!(
                    "fleet: {} more {things} in the minute before (not logged one by one)",
                    window.suppressed
                ));
            }
            *window = Window {
                started: Some(now),
                ..Window::default()
            };
        }
        if window.logged < FULL_LINES_PER_WINDOW {
            window.logged += 1;
            lines.push(line());
        } else {
            window.suppressed += count;
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_few_lines_and_one_summary_a_minute() {
        let log = LogWindow::default();
        let start = Instant::now();
        let things = "malformed entries skipped";
        let line = || "fleet: skipping bad key".to_string();
        let lines: usize = (0..20_000)
            .map(|i| {
                log.lines_for(start + Duration::from_millis(i), line, 1, things)
                    .len()
            })
            .sum();
        assert_eq!(
            lines, FULL_LINES_PER_WINDOW as usize,
            "one window: five lines"
        );
        let next = log.lines_for(start + WINDOW + Duration::from_secs(1), line, 1, things);
        assert_eq!(next.len(), 2, "{next:?}");
        assert_eq!(
            next[0],
            "fleet: 19995 more malformed entries skipped in the minute before (not logged one by one)"
        );
        assert_eq!(next[1], "fleet: skipping bad key");
    }

    #[test]
    fn suppressed_batches_count_what_they_are_about() {
        let log = LogWindow::default();
        let start = Instant::now();
        for _ in 0..FULL_LINES_PER_WINDOW + 3 {
            log.lines_for(start, || "batch".to_string(), 10, "remote bans not applied");
        }
        let next = log.lines_for(start + WINDOW, || "batch".to_string(), 10, "x");
        assert!(next[0].starts_with("fleet: 30 more x"), "{next:?}");
    }
}
