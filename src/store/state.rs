//! The store's in-memory state: active bans, per-network and per-jail
//! history, runtime allows, reader cursors and shadowed own bans, as the files describe
//! them, and how a record read back from disk changes them.
//!
//! Pure: it must not do any I/O (`replay.rs` feeds it the records read,
//! `files.rs` writes it out) and it makes no policy decisions.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use ipnet::IpNet;

use super::interner::Interner;
use super::jail_history::JailHistories;
use super::records::Record;
use super::{
    BanHistory, BanRecord, HISTORY_RETENTION_SECS, MAX_BAN_TEXT_BYTES, MAX_HISTORY_ENTRIES,
};
use crate::quote::cut as truncate_at_char_boundary;

/// A ban keyed (hashed and compared) by its network only, so the table needs
/// no separate key and `get(&IpNet)` works through `Borrow`.
pub(super) struct BanSlot(pub(super) BanRecord);

impl PartialEq for BanSlot {
    fn eq(&self, other: &Self) -> bool {
        self.0.net == other.0.net
    }
}

impl Eq for BanSlot {}

impl Hash for BanSlot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.net.hash(state);
    }
}

impl Borrow<IpNet> for BanSlot {
    fn borrow(&self) -> &IpNet {
        &self.0.net
    }
}

/// Everything the files describe. History is split so that the common case,
/// a net banned once and still banned, costs nothing beyond its ban: for an
/// active ban `last_banned == created` and the count is 1 unless listed in
/// `repeat_counts`; nets without an active ban keep theirs in `idle_history`.
pub(super) struct MemState {
    pub(super) bans: HashSet<BanSlot>,
    /// History count of actively banned nets banned more than once.
    pub(super) repeat_counts: HashMap<IpNet, u32>,
    /// History of nets with no active ban.
    pub(super) idle_history: HashMap<IpNet, BanHistory>,
    pub(super) allows: BTreeSet<IpNet>,
    /// Comments and expiries of runtime allows that have them (a subset
    /// of `allows`).
    pub(super) allow_notes: std::collections::BTreeMap<IpNet, super::AllowNote>,
    /// Log readers' positions, by key (see [`Store::set_cursors`]).
    pub(super) cursors: std::collections::BTreeMap<String, String>,
    /// How often each jail banned each network (see
    /// [`Store::record_jail_bans`]).
    pub(super) jail_histories: JailHistories,
    /// This host's own bans kept under a longer ban of another host (see
    /// [`Store::set_shadowed`]); few, so a plain map.
    pub(super) shadows: HashMap<IpNet, BanRecord>,
    pub(super) interner: Interner,
    /// Lower bound of every active ban's `expires` (lets purge skip scans).
    earliest_expiry: u64,
}

impl Default for MemState {
    fn default() -> Self {
        MemState {
            bans: HashSet::new(),
            repeat_counts: HashMap::new(),
            idle_history: HashMap::new(),
            allows: BTreeSet::new(),
            allow_notes: Default::default(),
            cursors: Default::default(),
            jail_histories: JailHistories::default(),
            shadows: HashMap::new(),
            interner: Interner::default(),
            earliest_expiry: u64::MAX,
        }
    }
}

impl MemState {
    pub(super) fn history(&self, net: &IpNet) -> BanHistory {
        match self.bans.get(net) {
            Some(slot) => self.active_history(&slot.0),
            None => self.idle_history.get(net).copied().unwrap_or_default(),
        }
    }

    pub(super) fn active_history(&self, active: &BanRecord) -> BanHistory {
        let repeated = if self.repeat_counts.is_empty() {
            None
        } else {
            self.repeat_counts.get(&active.net).copied()
        };
        BanHistory {
            count: repeated.unwrap_or(1),
            last_banned: active.created,
        }
    }

    /// Sizes the tables for a bulk load, so they need not grow step by step.
    pub(super) fn reserve(&mut self, bans: usize, histories: usize) {
        self.bans.reserve(bans);
        self.idle_history.reserve(histories);
    }

    /// Gives back what `reserve` over-estimated (e.g. bans found expired).
    pub(super) fn shrink_after_load(&mut self) {
        self.bans.shrink_to_fit();
        self.repeat_counts.shrink_to_fit();
        self.idle_history.shrink_to_fit();
    }

    /// Makes `record` the active ban of its net with the given history count.
    pub(super) fn apply_ban(&mut self, record: BanRecord, history_count: u32) {
        let net = record.net;
        // The emptiness checks keep bulk loading to one hash per ban.
        if !self.idle_history.is_empty() {
            self.idle_history.remove(&net);
        }
        if history_count > 1 {
            self.repeat_counts.insert(net, history_count);
        } else if !self.repeat_counts.is_empty() {
            self.repeat_counts.remove(&net);
        }
        self.earliest_expiry = self.earliest_expiry.min(record.expires);
        self.bans.replace(BanSlot(record));
    }

    /// Ends the active ban of `net` (if any), keeping its history.
    pub(super) fn remove_ban(&mut self, net: &IpNet) -> Option<BanRecord> {
        let removed = self.bans.take(net)?.0;
        self.retire_history(&removed);
        Some(removed)
    }

    fn retire_history(&mut self, ended: &BanRecord) {
        let count = self.repeat_counts.remove(&ended.net).unwrap_or(1);
        let history = BanHistory {
            count,
            last_banned: ended.created,
        };
        self.idle_history.insert(ended.net, history);
    }

    /// Records history for a net whose latest ban had already ended by the
    /// time it was loaded.
    fn apply_ended_ban(&mut self, net: IpNet, history: BanHistory) {
        self.bans.remove(&net);
        self.repeat_counts.remove(&net);
        self.idle_history.insert(net, history);
    }

    fn apply_history(&mut self, net: IpNet, history: BanHistory) {
        if self.bans.contains(&net) {
            if history.count > 1 {
                self.repeat_counts.insert(net, history.count);
            }
        } else {
            self.idle_history.insert(net, history);
        }
    }

    pub(super) fn take_expired(&mut self, now: u64) -> Vec<BanRecord> {
        if now < self.earliest_expiry {
            return Vec::new();
        }
        let mut earliest_remaining = u64::MAX;
        let expired: Vec<BanRecord> = self
            .bans
            .extract_if(|slot| {
                let is_expired = slot.0.expires <= now;
                if !is_expired {
                    earliest_remaining = earliest_remaining.min(slot.0.expires);
                }
                is_expired
            })
            .map(|slot| slot.0)
            .collect();
        self.earliest_expiry = earliest_remaining;
        for record in &expired {
            self.retire_history(record);
        }
        expired
    }

    /// Forgets network and jail history whose last ban is older than
    /// [`HISTORY_RETENTION_SECS`], then, past [`MAX_HISTORY_ENTRIES`] of
    /// either kind, the least recently banned.
    pub(super) fn forget_old_history(&mut self, now: u64) {
        self.forget_history_beyond(now, MAX_HISTORY_ENTRIES);
    }

    fn forget_history_beyond(&mut self, now: u64, limit: usize) {
        let since = newest_cutoff(
            self.idle_history.len(),
            self.idle_history.values().map(|h| h.last_banned),
            limit,
        );
        self.idle_history
            .retain(|_, history| history_is_retained(history, now) && history.last_banned >= since);
        let since = newest_cutoff(
            self.jail_histories.len(),
            self.jail_histories.iter().map(|(_, _, h)| h.last_banned),
            limit,
        );
        self.jail_histories
            .retain(|history| history_is_retained(history, now) && history.last_banned >= since);
    }

    pub(super) fn drop_unused_strings_if_sparse(&mut self) {
        if self.interner.len() > 2 * self.bans.len() + 64 {
            self.interner.drop_unused();
        }
    }

    /// A ban read back from disk, its texts cut and interned.
    #[inline]
    fn decoded_ban(
        &mut self,
        net: IpNet,
        created: u64,
        expires: u64,
        reason: &str,
        source: &str,
    ) -> BanRecord {
        BanRecord {
            net,
            created,
            expires,
            reason: self
                .interner
                .intern(truncate_at_char_boundary(reason, MAX_BAN_TEXT_BYTES)),
            source: self
                .interner
                .intern(truncate_at_char_boundary(source, MAX_BAN_TEXT_BYTES)),
        }
    }

    /// Applies a record read back from disk that is not about one net's
    /// active ban (allowlist changes, reader cursors, jail history,
    /// shadowed own bans);
    /// see `net_change` for the others. A shadowed ban already over by
    /// `now` is not kept.
    pub(super) fn apply_side_record(&mut self, record: &Record<'_>, now: u64) {
        match *record {
            Record::Shadow {
                net,
                created,
                expires,
                reason,
                source,
            } => {
                if expires > now {
                    let record = self.decoded_ban(net, created, expires, reason, source);
                    self.shadows.insert(net, record);
                } else {
                    self.shadows.remove(&net);
                }
            }
            Record::Unshadow { net } => {
                self.shadows.remove(&net);
            }
            Record::Allow { net } => {
                self.allows.insert(net);
                self.allow_notes.remove(&net);
            }
            Record::AllowNoted {
                net,
                expires,
                comment,
            } => {
                self.allows.insert(net);
                let note = super::AllowNote {
                    expires: (expires != 0).then_some(expires),
                    comment: truncate_at_char_boundary(comment, super::MAX_ALLOW_COMMENT_BYTES)
                        .to_string(),
                };
                self.allow_notes.insert(net, note);
            }
            Record::Disallow { net } => {
                self.allows.remove(&net);
                self.allow_notes.remove(&net);
            }
            Record::JailHistory {
                jail,
                net,
                count,
                last_banned,
            } => self
                .jail_histories
                .set(jail, net, BanHistory { count, last_banned }),
            Record::Cursor { key, value } if self.jail_histories.take_legacy_cursor(key, value) => {
            }
            Record::Cursor { key, value } => {
                if value.is_empty() {
                    self.cursors.remove(key);
                } else {
                    self.cursors.insert(key.to_string(), value.to_string());
                }
            }
            _ => {}
        }
    }

    /// What a record read back from disk does to one net's ban state;
    /// `None` for records that are not about a net's bans. Bans that ended
    /// by `now` only leave history behind; active ones get interned strings.
    pub(super) fn net_change(&mut self, record: &Record<'_>, now: u64) -> Option<NetChange> {
        let change = match *record {
            Record::Ban {
                net,
                created,
                expires,
                history_count,
                reason,
                source,
            } => {
                let history_count = history_count.max(1);
                if expires <= now {
                    let history = BanHistory {
                        count: history_count,
                        last_banned: created,
                    };
                    return Some(NetChange::BanEnded { net, history });
                }
                let record = self.decoded_ban(net, created, expires, reason, source);
                NetChange::Ban {
                    record,
                    history_count,
                }
            }
            Record::Unban { net } => NetChange::Unban { net },
            Record::History {
                net,
                count,
                last_banned,
            } => NetChange::History {
                net,
                history: BanHistory { count, last_banned },
            },
            Record::Allow { .. }
            | Record::AllowNoted { .. }
            | Record::Disallow { .. }
            | Record::Cursor { .. }
            | Record::JailHistory { .. }
            | Record::Shadow { .. }
            | Record::Unshadow { .. }
            | Record::SnapshotEnd { .. } => {
                return None;
            }
        };
        Some(change)
    }

    pub(super) fn apply_net_change(&mut self, change: NetChange) {
        match change {
            NetChange::Ban {
                record,
                history_count,
            } => self.apply_ban(record, history_count),
            NetChange::BanEnded { net, history } => self.apply_ended_ban(net, history),
            NetChange::Unban { net } => {
                self.remove_ban(&net);
            }
            NetChange::History { net, history } => self.apply_history(net, history),
        }
    }
}

/// A replayed record's effect on one net's bans and history. Changes to
/// different nets commute; changes to the same net must keep file order.
#[derive(Clone)]
pub(super) enum NetChange {
    Ban {
        record: BanRecord,
        history_count: u32,
    },
    /// A ban that had already expired when it was loaded.
    BanEnded {
        net: IpNet,
        history: BanHistory,
    },
    Unban {
        net: IpNet,
    },
    History {
        net: IpNet,
        history: BanHistory,
    },
}

/// The time of the `limit`-th most recent ban among `histories`: keeping
/// those banned since then keeps about `limit` (ties may keep a few more).
/// 0 (keep all) when there are no more than `limit`.
fn newest_cutoff(count: usize, last_banned: impl Iterator<Item = u64>, limit: usize) -> u64 {
    if count <= limit {
        return 0;
    }
    let mut times: Vec<u64> = last_banned.collect();
    let drop = times.len() - limit.clamp(1, times.len());
    let (_, cutoff, _) = times.select_nth_unstable(drop);
    *cutoff
}

pub(super) fn history_is_retained(history: &BanHistory, now: u64) -> bool {
    history.last_banned.saturating_add(HISTORY_RETENTION_SECS) > now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::test_support::{HOUR, NOW, ban, net, open};

    #[test]
    fn past_the_history_cap_the_least_recently_banned_are_forgotten() {
        let mut state = MemState::default();
        for (index, text) in ["192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32"]
            .into_iter()
            .enumerate()
        {
            let history = BanHistory {
                count: 1,
                last_banned: NOW + index as u64,
            };
            state.apply_history(net(text), history);
            state.jail_histories.set("sshd", net(text), history);
        }
        state.forget_history_beyond(NOW + 10, 2);
        assert_eq!(state.history(&net("192.0.2.1/32")), BanHistory::default());
        assert_eq!(state.history(&net("192.0.2.3/32")).count, 1);
        assert_eq!(state.idle_history.len(), 2);
        assert_eq!(state.jail_histories.get("sshd", &net("192.0.2.1/32")), None);
        assert_eq!(state.jail_histories.len(), 2);
    }

    #[test]
    fn expired_bans_are_dropped_at_open_but_history_stays() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[
                    ban("192.0.2.1/32", NOW, NOW + 10, "short"),
                    ban("192.0.2.2/32", NOW, NOW + HOUR, "long"),
                ])
                .unwrap();
        }
        let store = Store::open(dir.path(), NOW + 10).unwrap();
        assert_eq!(store.ban_count(), 1);
        assert!(store.get_ban(&net("192.0.2.1/32")).is_none());
        assert!(store.get_ban(&net("192.0.2.2/32")).is_some());
        assert_eq!(
            store.history(&net("192.0.2.1/32")),
            BanHistory {
                count: 1,
                last_banned: NOW
            }
        );
    }

    #[test]
    fn replacing_ban_with_expired_one_removes_it_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "long")])
                .unwrap();
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + 5, "short")])
                .unwrap();
        }
        let store = Store::open(dir.path(), NOW + 6).unwrap();
        assert!(store.get_ban(&net("192.0.2.1/32")).is_none());
        assert_eq!(store.history(&net("192.0.2.1/32")).count, 2);
    }

    #[test]
    fn purge_expired_returns_expired_and_keeps_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store
            .insert_bans(&[
                ban("192.0.2.1/32", NOW, NOW + 10, "a"),
                ban("192.0.2.2/32", NOW, NOW + 20, "b"),
                ban("2001:db8::/64", NOW, NOW + 30, "c"),
            ])
            .unwrap();
        assert!(store.purge_expired(NOW + 9).is_empty());
        let mut purged = store.purge_expired(NOW + 20);
        purged.sort_by_key(|record| record.net);
        let purged_nets: Vec<IpNet> = purged.iter().map(|record| record.net).collect();
        assert_eq!(purged_nets, vec![net("192.0.2.1/32"), net("192.0.2.2/32")]);
        assert_eq!(store.ban_count(), 1);
        assert!(store.purge_expired(NOW + 20).is_empty());
        assert_eq!(
            store.history(&net("192.0.2.2/32")),
            BanHistory {
                count: 1,
                last_banned: NOW
            }
        );
        assert_eq!(store.purge_expired(NOW + 30).len(), 1);
        assert_eq!(store.ban_count(), 0);
        drop(store);

        let store = Store::open(dir.path(), NOW + 20).unwrap();
        assert_eq!(
            store.ban_count(),
            1,
            "only the ban still live at NOW+20 returns"
        );
        assert_eq!(store.history(&net("192.0.2.1/32")).count, 1);
    }

    #[test]
    fn purge_notices_expiry_brought_forward_by_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store
            .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
            .unwrap();
        assert!(store.purge_expired(NOW + 1).is_empty());
        store
            .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + 2, "b")])
            .unwrap();
        assert_eq!(store.purge_expired(NOW + 2).len(), 1);
    }

    #[test]
    fn old_history_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let old = net("192.0.2.1/32");
        let recent = net("192.0.2.2/32");
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[
                    ban("192.0.2.1/32", NOW, NOW + 1, "a"),
                    ban("192.0.2.2/32", NOW + 2 * HOUR, NOW + 2 * HOUR + 1, "b"),
                ])
                .unwrap();
        }
        let later = NOW + HISTORY_RETENTION_SECS + HOUR;
        let mut store = Store::open(dir.path(), later).unwrap();
        assert_eq!(store.history(&old), BanHistory::default());
        assert_eq!(store.history(&recent).count, 1);
        store.compact().unwrap();
        drop(store);
        let store = Store::open(dir.path(), later).unwrap();
        assert_eq!(store.history(&old), BanHistory::default());
        assert_eq!(store.history(&recent).count, 1);
    }
}
