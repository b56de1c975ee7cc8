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
use std::sync::{Arc, Mutex, PoisonError, RwLock};

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
    /// Networks newly banned since the start (not re-bans of a banned
    /// one), counted as they are stored, for the metrics.
    additions: Arc<AtomicU64>,
    /// Full re-applies of the table since the start, by cause.
    restores: Arc<Mutex<RestoreTally>>,
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

    /// Networks newly banned so far (see the field).
    pub fn additions(&self) -> u64 {
        self.additions.load(Ordering::Acquire)
    }

    /// Counts `count` newly banned networks.
    pub(super) fn count_additions(&self, count: usize) {
        self.additions.fetch_add(count as u64, Ordering::Release);
    }

    /// Full re-applies so far, by cause.
    pub fn restores(&self) -> RestoreTally {
        self.restores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts one full re-apply of the table.
    pub(super) fn count_restore(&self, sync: &SyncInfo) {
        self.restores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(&sync.cause, sync.duration_ms);
    }

    /// Replaces the publication; readers holding the old one keep it.
    pub(super) fn publish(&self, published: Published) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(published));
        }
    }
}

/// Causes counted by name; further ones are counted under
/// [`OTHER_CAUSES`]. Causes name units, tables and D-Bus events, so they are
/// few, but a merged burst joins several into one text.
const COUNTED_CAUSES: usize = 32;
/// Where restores of causes beyond [`COUNTED_CAUSES`] are counted.
pub const OTHER_CAUSES: &str = "(other causes)";
/// Longest cause kept as a name, in bytes.
const CAUSE_MAX_BYTES: usize = 120;

/// Full re-applies of the table by cause: how many, and how long they took
/// in all (milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreTally {
    pub by_cause: BTreeMap<String, (u64, u64)>,
}

impl RestoreTally {
    fn add(&mut self, cause: &str, duration_ms: u64) {
        let cause = crate::quote::cut(cause, CAUSE_MAX_BYTES);
        let key = if self.by_cause.contains_key(cause) || self.by_cause.len() < COUNTED_CAUSES {
            cause
        } else {
            OTHER_CAUSES
        };
        let (count, total_ms) = self.by_cause.entry(key.to_string()).or_default();
        *count += 1;
        *total_ms = total_ms.saturating_add(duration_ms);
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

    #[test]
    fn restores_are_counted_per_cause_within_bounds() {
        let mut tally = RestoreTally::default();
        for i in 0..40 {
            tally.add(&format!("cause {i}"), 10);
        }
        tally.add("cause 0", 5);
        tally.add(&"é".repeat(100), 1);
        assert_eq!(tally.by_cause.len(), COUNTED_CAUSES + 1);
        assert_eq!(tally.by_cause["cause 0"], (2, 15));
        assert_eq!(tally.by_cause[OTHER_CAUSES], (9, 81));
        assert!(
            tally
                .by_cause
                .keys()
                .all(|cause| cause.len() <= CAUSE_MAX_BYTES)
        );
    }
}
