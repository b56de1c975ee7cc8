//! When a batch of remote changes read from the bucket goes to the core:
//! a lone change at once, a burst in batches of hundreds. Pure timing, no
//! I/O; the session asks it and does the waiting.

use std::time::Duration;

use tokio::time::Instant;

/// A batch handed on with at least this many changes means a burst is
/// under way: the next batch then waits up to [`BURST_LINGER`] to fill.
pub(super) const BURST_BATCH: usize = 16;
/// How long a batch may wait to fill during a burst. Outside a burst a
/// change is handed on at once.
pub(super) const BURST_LINGER: Duration = Duration::from_millis(10);

/// When a batch of remote changes is due to go to the core: at once,
/// unless the batch before was large (a burst), then up to
/// [`BURST_LINGER`] after its first change was read.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchPacing {
    /// When the first change of the batch being filled was read.
    started: Instant,
    /// How many changes the batch before held.
    last_len: usize,
}

impl Default for BatchPacing {
    fn default() -> Self {
        BatchPacing {
            started: Instant::now(),
            last_len: 0,
        }
    }
}

impl BatchPacing {
    pub(super) fn started(&mut self, at: Instant) {
        self.started = at;
    }

    pub(super) fn handed_on(&mut self, len: usize) {
        self.last_len = len;
    }

    pub(super) fn due(&self) -> Instant {
        if self.last_len >= BURST_BATCH {
            self.started + BURST_LINGER
        } else {
            self.started
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_change_goes_at_once_and_a_burst_lingers_until_it_ends() {
        let start = Instant::now();
        let mut pacing = BatchPacing::default();
        pacing.started(start);
        assert_eq!(pacing.due(), start, "nothing before it: at once");
        pacing.handed_on(1);
        pacing.started(start);
        assert_eq!(pacing.due(), start, "after a lone change: at once");
        pacing.handed_on(BURST_BATCH);
        pacing.started(start);
        assert_eq!(pacing.due(), start + BURST_LINGER, "in a burst: lingers");
        pacing.handed_on(BURST_BATCH - 1);
        pacing.started(start);
        assert_eq!(pacing.due(), start, "the burst is over: at once again");
    }
}
