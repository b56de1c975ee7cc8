//! What readers see without asking the core: the core publishes its status
//! and ban counts after every job, and D-Bus property reads (`BanCount`,
//! `Firewall`, `Jails`, `Fleet`) are answered from the last publication.
//! A flood of reads therefore costs the core nothing.
//!
//! It must not hold the bans themselves (that would double what 1M bans
//! cost in memory); listings are bounded jobs on the core's read lane.
//! Counts are kept as the store changes, so publishing is cheap; they
//! include bans that expired since the last purge (at most 30 s).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::firewall_event::EventKind;
use super::reconciler::SyncInfo;
use crate::firewall::FirewallStatus;
use crate::fleet::remote_change::FLEET_SOURCE_PREFIX;
use crate::store::BanRecord;

/// A snapshot of the daemon for `orch status`.
#[derive(Debug, Clone)]
pub struct CoreStatus {
    pub ban_count: usize,
    pub firewall: FirewallStatus,
    pub table: String,
    pub static_allows: usize,
    pub runtime_allows: usize,
    pub last_sync: Option<SyncInfo>,
    /// Watched systemd units: name -> (ActiveState, when seen).
    pub units: Vec<(String, String, u64)>,
    /// The last firewall event handled: (kind, cause, when).
    pub last_event: Option<(EventKind, String, u64)>,
    /// Set while the daemon runs on a fallback because the configuration
    /// on disk is invalid: what is wrong, and what runs instead.
    pub config_error: Option<String>,
}

/// One publication: the daemon's status and its bans counted by source.
#[derive(Debug, Clone)]
pub struct Published {
    pub status: CoreStatus,
    /// Stored bans per source (jail name, "manual", "fleet:<host>", ...).
    pub by_source: BTreeMap<String, usize>,
}

/// The latest publication, shared between the core and its readers.
#[derive(Clone, Default)]
pub struct ReadView {
    current: Arc<RwLock<Option<Arc<Published>>>>,
    /// Bans removed since the start (unbans, expiry), counted as they go,
    /// without a publication: a reader holding an answer about a ban (a
    /// jail's recent asks) knows it may be stale once this moved.
    removals: Arc<AtomicU64>,
}

impl ReadView {
    /// The latest publication (`None` only before the core's first).
    pub fn get(&self) -> Option<Arc<Published>> {
        self.current.read().ok().and_then(|current| current.clone())
    }

    /// Bans removed so far (see the field).
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Acquire)
    }

    /// Counts `count` removed bans.
    pub(super) fn count_removals(&self, count: usize) {
        self.removals.fetch_add(count as u64, Ordering::Release);
    }

    /// Replaces the publication; readers holding the old one keep it.
    pub(super) fn publish(&self, published: Published) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(published));
        }
    }
}

/// Stored bans per source, updated by the core at each store change.
#[derive(Debug, Default)]
pub struct SourceCounts {
    counts: HashMap<Arc<str>, usize>,
    total: usize,
}

impl SourceCounts {
    /// Counts every ban of `bans`.
    pub fn of<'a>(bans: impl Iterator<Item = &'a BanRecord>) -> SourceCounts {
        let mut counts = SourceCounts::default();
        for record in bans {
            counts.add(record);
        }
        counts
    }

    pub fn add(&mut self, record: &BanRecord) {
        *self.counts.entry(record.source.clone()).or_insert(0) += 1;
        self.total += 1;
    }

    pub fn remove(&mut self, record: &BanRecord) {
        if let Some(count) = self.counts.get_mut(&record.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(&record.source);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Stored bans in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Whether any stored ban has a source starting with `prefix` (a
    /// handful of sources: jails, manual, one per fleet origin).
    pub fn any_from(&self, prefix: &str) -> bool {
        self.counts.keys().any(|source| source.starts_with(prefix))
    }

    /// Stored bans per source, sorted by source.
    pub fn by_source(&self) -> BTreeMap<String, usize> {
        self.counts
            .iter()
            .map(|(source, count)| (source.to_string(), *count))
            .collect()
    }
}

/// Bans per origin host, from bans per source (`fleet:<host>` sources).
pub fn by_origin(by_source: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    by_source
        .iter()
        .filter_map(|(source, count)| {
            source
                .strip_prefix(FLEET_SOURCE_PREFIX)
                .map(|origin| (origin.to_string(), *count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(net: &str, source: &str) -> BanRecord {
        BanRecord {
            net: net.parse().unwrap(),
            created: 1,
            expires: 2,
            reason: Arc::from(""),
            source: Arc::from(source),
        }
    }

    #[test]
    fn counts_follow_adds_and_removes_per_source() {
        let a = record("192.0.2.1/32", "sshd");
        let b = record("192.0.2.2/32", "fleet:web2");
        let c = record("192.0.2.3/32", "sshd");
        let mut counts = SourceCounts::of([&a, &b].into_iter());
        counts.add(&c);
        assert_eq!(counts.total(), 3);
        assert_eq!(counts.by_source().get("sshd"), Some(&2));
        counts.remove(&a);
        counts.remove(&b);
        counts.remove(&b);
        assert_eq!(
            counts.total(),
            1,
            "removing what is not counted changes nothing"
        );
        assert_eq!(
            counts.by_source().into_iter().collect::<Vec<_>>(),
            vec![("sshd".to_string(), 1)]
        );
        let by_source = BTreeMap::from([("fleet:web2".to_string(), 4), ("sshd".to_string(), 1)]);
        assert_eq!(
            by_origin(&by_source).into_iter().collect::<Vec<_>>(),
            vec![("web2".to_string(), 4)]
        );
    }
}
