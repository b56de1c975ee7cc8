//! Bounded logging of bucket entries the session skips (malformed keys or
//! values): another host, or whoever holds its credentials, can write
//! thousands of them, and each catch-up reads them all again. The first
//! few in each minute are logged in full, the rest only counted, and the
//! count is logged as one line when the next minute begins.
//!
//! It must not decide what is skipped; `session.rs` does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Skipped entries logged in full per window.
const FULL_LINES_PER_WINDOW: u32 = 5;
/// The window.
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct SkipLog {
    state: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl SkipLog {
    /// Logs (or counts) one skipped entry.
    pub fn note(&self, what: &dyn std::fmt::Display) {
        for line in self.lines_for(Instant::now(), what) {
            tracing::warn!("{line}");
        }
    }

    /// The lines to log for one skipped entry at `now`: a summary of the
    /// window that ended, and the entry itself while the window allows.
    fn lines_for(&self, now: Instant, what: &dyn std::fmt::Display) -> Vec<String> {
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
                    "fleet: skipped {} more malformed entries in the minute before (not logged one by one)",
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
            lines.push(format!("fleet: skipping {what}"));
        } else {
            window.suppressed += 1;
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_skips_logs_a_few_lines_and_one_summary_a_minute() {
        let log = SkipLog::default();
        let start = Instant::now();
        let lines: usize = (0..20_000)
            .map(|i| {
                log.lines_for(start + Duration::from_millis(i), &"bad key")
                    .len()
            })
            .sum();
        assert_eq!(
            lines, FULL_LINES_PER_WINDOW as usize,
            "one window: five lines"
        );
        let next = log.lines_for(start + WINDOW + Duration::from_secs(1), &"bad key");
        assert_eq!(next.len(), 2, "{next:?}");
        assert!(next[0].contains("skipped 19995 more"), "{next:?}");
        assert_eq!(next[1], "fleet: skipping bad key");
    }
}
