//! When one action's events go out: bans that come close together are
//! gathered for a short window into one event, and a rate limit (at most
//! N events in any minute) holds further ones back, merged, until it
//! allows another. Nothing is lost: a held-back event's networks are
//! counted into the next one, and at most a capped number are listed.
//!
//! Pure: the caller passes the time and does the sending.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::daemon::ban_events::BanEvent;

/// The span the rate limit counts over.
const RATE_SPAN: Duration = Duration::from_secs(60);

/// What one delivery carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub event: BanEvent,
    /// How many of the core's events it holds (at least 1).
    pub merged: u64,
    /// Whether the rate limit held it past its window.
    pub rate_limited: bool,
}

/// The pending batch and the limit of one action.
#[derive(Debug)]
pub struct Batcher {
    window: Duration,
    per_minute: usize,
    max_addresses: usize,
    pending: Option<Pending>,
    /// When the last sends (at most `per_minute`) went out, oldest first.
    sent: VecDeque<Instant>,
}

#[derive(Debug)]
struct Pending {
    batch: Batch,
    /// When its window closes.
    ready_at: Instant,
}

impl Batcher {
    pub fn new(window: Duration, per_minute: u32, max_addresses: usize) -> Batcher {
        Batcher {
            window,
            per_minute: usize::try_from(per_minute).unwrap_or(usize::MAX).max(1),
            max_addresses,
            pending: None,
            sent: VecDeque::new(),
        }
    }

    /// Adds `event`: it opens a window, or joins the one open.
    pub fn push(&mut self, event: BanEvent, now: Instant) {
        match &mut self.pending {
            Some(pending) => {
                pending.batch.event.merge(event, self.max_addresses);
                pending.batch.merged = pending.batch.merged.saturating_add(1);
            }
            None => {
                let mut event = event;
                event.addresses.truncate(self.max_addresses);
                self.pending = Some(Pending {
                    batch: Batch {
                        event,
                        merged: 1,
                        rate_limited: false,
                    },
                    ready_at: now + self.window,
                });
            }
        }
    }

    /// When [`Batcher::take_due`] next has something: the window's end, or
    /// when the rate limit allows another send; `None` with nothing pending.
    pub fn next_due(&self) -> Option<Instant> {
        let pending = self.pending.as_ref()?;
        Some(match self.limit_until() {
            Some(allowed) => pending.ready_at.max(allowed),
            None => pending.ready_at,
        })
    }

    /// The batch to send now, if its window has closed and the rate limit
    /// allows; counts it as sent.
    pub fn take_due(&mut self, now: Instant) -> Option<Batch> {
        while self
            .sent
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= RATE_SPAN)
        {
            self.sent.pop_front();
        }
        let pending = self.pending.as_mut()?;
        if now < pending.ready_at {
            return None;
        }
        if self.sent.len() >= self.per_minute {
            pending.batch.rate_limited = true;
            return None;
        }
        self.sent.push_back(now);
        self.pending.take().map(|pending| pending.batch)
    }

    /// Until when the rate limit refuses a send; `None` when it allows one.
    fn limit_until(&self) -> Option<Instant> {
        if self.sent.len() < self.per_minute {
            return None;
        }
        let oldest = self.sent.front()?;
        Some(*oldest + RATE_SPAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::ban_events::{BanEventKind, MIXED};
    use std::sync::Arc;

    fn event(addresses: &[&str], source: &str) -> BanEvent {
        BanEvent {
            kind: BanEventKind::Ban,
            count: addresses.len() as u64,
            addresses: addresses.iter().map(|a| a.parse().expect("net")).collect(),
            source: Arc::from(source),
            jail: Arc::from(""),
            reason: Arc::from("r"),
            expires_at: Some(10),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn events_within_the_window_go_out_as_one() {
        let start = Instant::now();
        let mut batcher = Batcher::new(SECOND, 30, 2);
        assert_eq!(batcher.next_due(), None);
        batcher.push(event(&["192.0.2.1/32"], "sshd"), start);
        batcher.push(
            event(&["192.0.2.2/32", "192.0.2.3/32"], "sshd"),
            start + SECOND / 2,
        );
        assert_eq!(batcher.next_due(), Some(start + SECOND));
        assert_eq!(
            batcher.take_due(start + SECOND / 2),
            None,
            "window still open"
        );
        let batch = batcher.take_due(start + SECOND).expect("due");
        assert_eq!(batch.merged, 2);
        assert_eq!(batch.event.count, 3);
        assert_eq!(batch.event.addresses.len(), 2, "capped");
        assert!(batch.event.truncated());
        assert!(!batch.rate_limited);
        assert_eq!(&*batch.event.source, "sshd");
        assert_eq!(batcher.take_due(start + 2 * SECOND), None, "nothing left");
        batcher.push(event(&["192.0.2.9/32"], "manual"), start + 3 * SECOND);
        batcher.push(event(&["192.0.2.8/32"], "nginx"), start + 3 * SECOND);
        let batch = batcher.take_due(start + 4 * SECOND).expect("due");
        assert_eq!(&*batch.event.source, MIXED);
    }

    #[test]
    fn the_rate_limit_holds_back_and_merges_without_losing_counts() {
        let start = Instant::now();
        let mut batcher = Batcher::new(SECOND, 2, 1000);
        let mut sent = Vec::new();
        // One ban every two seconds for two minutes: 60 events.
        for i in 0..60u32 {
            let now = start + 2 * i * SECOND;
            batcher.push(event(&["192.0.2.1/32"], "sshd"), now);
            if let Some(batch) = batcher.take_due(now + SECOND) {
                sent.push((now + SECOND, batch));
            }
        }
        let end = start + 200 * SECOND;
        let due = batcher.next_due().expect("something held back");
        assert!(due <= end);
        sent.extend(batcher.take_due(end).map(|batch| (end, batch)));
        let total: u64 = sent.iter().map(|(_, batch)| batch.event.count).sum();
        assert_eq!(total, 60, "every ban counted once");
        let merged: u64 = sent.iter().map(|(_, batch)| batch.merged).sum();
        assert_eq!(merged, 60);
        for (at, _) in &sent {
            let in_minute = sent
                .iter()
                .filter(|(other, _)| *other <= *at && at.duration_since(*other) < RATE_SPAN)
                .count();
            assert!(in_minute <= 2, "{in_minute} sends within a minute");
        }
        assert!(
            sent.iter()
                .any(|(_, batch)| batch.rate_limited && batch.merged > 1)
        );
        assert!(sent.len() <= 6, "{} sends", sent.len());
    }

    #[test]
    fn next_due_waits_for_the_limit() {
        let start = Instant::now();
        let mut batcher = Batcher::new(SECOND, 1, 10);
        batcher.push(event(&["192.0.2.1/32"], "a"), start);
        assert!(batcher.take_due(start + SECOND).is_some());
        batcher.push(event(&["192.0.2.2/32"], "a"), start + 2 * SECOND);
        assert_eq!(batcher.next_due(), Some(start + SECOND + RATE_SPAN));
        assert_eq!(batcher.take_due(start + 10 * SECOND), None);
        let batch = batcher
            .take_due(start + SECOND + RATE_SPAN)
            .expect("allowed again");
        assert!(batch.rate_limited);
    }
}
