//! The firewall event type, with the pure rules on it: what a batch of
//! kernel notifications means, how a burst merges, and whether hooks follow.
//! Every event source builds these; the core handles them.
//!
//! Pure: it must not call the core, run hooks or touch the kernel
//! (`events.rs` forwards events, the core decides).

use std::time::Instant;

use tokio::sync::mpsc;

use crate::firewall::monitor::KernelEvent;

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
    /// When the source saw it (merged: the latest of the burst).
    pub observed_at: Instant,
}

impl FirewallEvent {
    pub fn new(kind: EventKind, unit: Option<String>, cause: String) -> Self {
        FirewallEvent {
            kind,
            unit,
            cause,
            observed_at: Instant::now(),
        }
    }

    /// Whether hooks should run after this event, given whether the core
    /// had to re-apply the table. The firewall (re)loading, or anything
    /// that flushed rules, calls for them; a mere check or a stop does not.
    pub fn hook_event(&self, repaired: bool) -> Option<&'static str> {
        match self.kind {
            EventKind::Start | EventKind::Restart | EventKind::Reload | EventKind::Flush => {
                Some(self.kind.as_str())
            }
            EventKind::Check | EventKind::Stop if repaired => Some(EventKind::Flush.as_str()),
            EventKind::Check | EventKind::Stop => None,
        }
    }
}

/// Where event sources send; cheap to clone, usable from any thread.
pub type EventSender = mpsc::UnboundedSender<FirewallEvent>;

/// The firewall event a batch of kernel notifications calls for, if any:
/// another table deleted (a flush, `nft -f` of a file that flushes, a
/// reload) is a `Flush`, which also re-runs hooks; orch's own table deleted
/// (by anyone, orch's own full apply included) or lost notifications only
/// call for a check, which re-applies if something is missing.
pub fn from_kernel(batch: &[KernelEvent], own_table: &str) -> Option<FirewallEvent> {
    const NFPROTO_INET: u8 = 1;
    let mut own_deleted = false;
    let mut lost = false;
    let mut unheard = false;
    let mut others_deleted: Vec<&str> = Vec::new();
    for event in batch {
        match event {
            KernelEvent::TableDeleted { family, table }
                if *family == NFPROTO_INET && table == own_table =>
            {
                own_deleted = true;
            }
            KernelEvent::TableDeleted { table, .. } => others_deleted.push(table),
            KernelEvent::Overrun => lost = true,
            KernelEvent::Unheard => unheard = true,
            _ => {}
        }
    }
    if !others_deleted.is_empty() {
        let cause = format!(
            "ruleset flushed (table {} deleted)",
            others_deleted.join(", ")
        );
        return Some(FirewallEvent::new(EventKind::Flush, None, cause));
    }
    if own_deleted {
        let cause = format!("table inet {own_table} deleted in the kernel");
        return Some(FirewallEvent::new(EventKind::Check, None, cause));
    }
    let cause = match (lost, unheard) {
        (true, _) => "nftables events lost (ENOBUFS)",
        (false, true) => "nftables changed while a bulk change paused orch's monitor",
        (false, false) => return None,
    };
    Some(FirewallEvent::new(EventKind::Check, None, cause.into()))
}

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
        // The latest: hooks are skipped only when a run started after every
        // cause of the burst.
        observed_at: events
            .iter()
            .map(|e| e.observed_at)
            .max()
            .unwrap_or(strongest.observed_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, cause: &str) -> FirewallEvent {
        FirewallEvent::new(kind, Some("nftables.service".into()), cause.into())
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

    #[test]
    fn kernel_batches_become_flushes_or_checks() {
        let deleted = |table: &str| KernelEvent::TableDeleted {
            family: 1,
            table: table.into(),
        };
        let own = from_kernel(&[deleted("orch")], "orch").expect("an event");
        assert_eq!(own.kind, EventKind::Check);
        let flush = from_kernel(&[deleted("orch"), deleted("filter")], "orch").expect("an event");
        assert_eq!(flush.kind, EventKind::Flush);
        assert!(flush.cause.contains("filter"), "{}", flush.cause);
        assert_eq!(
            from_kernel(&[KernelEvent::Overrun], "orch").map(|e| e.kind),
            Some(EventKind::Check)
        );
        assert_eq!(
            from_kernel(&[KernelEvent::Unheard], "orch").map(|e| e.kind),
            Some(EventKind::Check)
        );
        let changed = KernelEvent::TableChanged {
            family: 1,
            table: "filter".into(),
        };
        assert_eq!(from_kernel(&[changed], "orch"), None);
    }

    #[test]
    fn hooks_follow_reloads_and_repairs_not_checks() {
        assert_eq!(
            event(EventKind::Reload, "r").hook_event(false),
            Some("reload")
        );
        assert_eq!(
            event(EventKind::Flush, "f").hook_event(false),
            Some("flush")
        );
        assert_eq!(event(EventKind::Check, "c").hook_event(false), None);
        assert_eq!(event(EventKind::Check, "c").hook_event(true), Some("flush"));
        assert_eq!(event(EventKind::Stop, "s").hook_event(false), None);
    }
}
