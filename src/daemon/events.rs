//! Firewall events from every source (systemd units, kernel notifications,
//! the periodic self-check, SIGHUP) merged into one stream of calls on the
//! core.
//!
//! A burst (systemd sends several state changes per restart; a flush shows
//! up as one deletion per table) becomes one call after the burst settles.
//! This module only merges and forwards; the core decides what to do.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::daemon::core::CoreHandle;

/// What happened to the firewall, strongest last: when a burst mixes kinds,
/// the merged event takes the strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// Something that deserves a look (a state change, a periodic check).
    Check,
    /// nftables.service stopped.
    Stop,
    /// nftables.service started.
    Start,
    /// nftables.service reloaded.
    Reload,
    /// nftables.service restarted.
    Restart,
    /// The ruleset was flushed or orch's table deleted outside systemd.
    Flush,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Check => "check",
            EventKind::Stop => "stop",
            EventKind::Start => "start",
            EventKind::Reload => "reload",
            EventKind::Restart => "restart",
            EventKind::Flush => "flush",
        }
    }
}

/// One event, with a human cause for the log and `orch status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallEvent {
    pub kind: EventKind,
    /// The unit behind it, if a systemd unit.
    pub unit: Option<String>,
    pub cause: String,
}

/// Where event sources send; cheap to clone, usable from any thread.
pub type EventSender = mpsc::UnboundedSender<FirewallEvent>;

/// How long the stream must be quiet before a burst is handed on, and the
/// longest a burst may be held back.
const QUIET: Duration = Duration::from_millis(50);
const MAX_HOLD: Duration = Duration::from_millis(500);

/// Merges a burst: the strongest kind, its unit, and every distinct cause.
pub fn merge(events: &[FirewallEvent]) -> Option<FirewallEvent> {
    let strongest = events.iter().max_by_key(|e| e.kind)?;
    let mut causes: Vec<&str> = Vec::new();
    for event in events {
        if !causes.contains(&event.cause.as_str()) {
            causes.push(&event.cause);
        }
    }
    Some(FirewallEvent {
        kind: strongest.kind,
        unit: strongest.unit.clone(),
        cause: causes.join("; "),
    })
}

/// Receives events until every sender is gone, handing each settled burst
/// to the core.
pub async fn run(mut events: mpsc::UnboundedReceiver<FirewallEvent>, core: CoreHandle) {
    while let Some(first) = events.recv().await {
        let mut burst = vec![first];
        let hold_until = tokio::time::Instant::now() + MAX_HOLD;
        loop {
            let quiet_until = (tokio::time::Instant::now() + QUIET).min(hold_until);
            match tokio::time::timeout_at(quiet_until, events.recv()).await {
                Ok(Some(next)) => burst.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let Some(merged) = merge(&burst) else {
            continue;
        };
        match core.call(move |core| core.on_firewall_event(&merged)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::error!("handling a firewall event failed: {err}"),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, cause: &str) -> FirewallEvent {
        FirewallEvent {
            kind,
            unit: Some("nftables.service".into()),
            cause: cause.into(),
        }
    }

    #[test]
    fn a_burst_takes_the_strongest_kind_and_every_cause_once() {
        let merged = merge(&[
            event(EventKind::Check, "nftables.service state-change"),
            event(EventKind::Restart, "nftables.service restart"),
            event(EventKind::Check, "nftables.service state-change"),
        ])
        .expect("non-empty");
        assert_eq!(merged.kind, EventKind::Restart);
        assert_eq!(
            merged.cause,
            "nftables.service state-change; nftables.service restart"
        );
        assert_eq!(merge(&[]), None);
    }
}
