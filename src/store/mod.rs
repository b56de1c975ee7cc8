//! Crash-safe ban store: active bans, per-network ban history and runtime
//! allowlist additions, kept in memory and persisted as a snapshot file plus
//! an append-only log (format and crash-safety argument: `docs/design.md`,
//! section "Store").
//!
//! This is the only module that persists state. It must not touch the kernel
//! or the firewall and it makes no policy decisions: callers decide what to
//! ban or allow, the store only remembers it durably. Every mutating call is
//! on disk (fdatasync'd) before it returns.
//!
//! One file per job:
//! - `mod.rs`: the [`Store`] and its public API, the on-disk constants and
//!   [`StoreError`];
//! - `state.rs`: the in-memory state and how replayed records change it;
//! - `interner.rs`: one shared allocation per reason/source text;
//! - `jail_history.rs`: how often each jail banned each network;
//! - `records.rs`: record kinds and the encoding of their payloads;
//! - `frames.rs`: file headers, record frames (length, checksum), resync
//!   after damage;
//! - `replay.rs`: replaying a file's records into the state (torn tail or
//!   damage);
//! - `files.rs`: loading, writing and atomically replacing the files;
//! - `fallback.rs`: rebuilding a damaged snapshot from the previous one;
//! - `lock.rs`: the directory lock;
//! - `repair.rs`: `orch store verify` and `orch store salvage`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

mod fallback;
mod files;
mod frames;
mod interner;
mod jail_history;
mod lock;
mod records;
pub mod repair;
mod replay;
mod state;
#[cfg(test)]
mod test_support;

use fallback::fall_back_to_previous;
use files::{
    create_log, create_private_dir, keep_as_previous, load_snapshot, open_log,
    remove_leftover_tmp_files, rename_into_place, sync_dir, write_empty_snapshot,
    write_snapshot_tmp,
};
use frames::encode_record;
use lock::lock_dir;
use records::{Record, ban_record_payload, jail_history_record, shadow_record};
#[cfg(test)]
use state::BanSlot;
use state::MemState;

/// Longest `reason` or `source` of a ban kept, in bytes; longer text is cut
/// at a char boundary on insert and on replay. Every ban's text is returned
/// by every listing, so it is kept short whoever sent it (a D-Bus caller, a
/// jail, another fleet host).
pub const MAX_BAN_TEXT_BYTES: usize = 256;

/// Longest comment of a runtime allowlist entry, in bytes.
pub const MAX_ALLOW_COMMENT_BYTES: usize = 256;

/// What a runtime allowlist entry says beyond its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowNote {
    /// Unix seconds; the entry is over once `now >= expires`. `None`: never.
    pub expires: Option<u64>,
    /// Why it is there (at most [`MAX_ALLOW_COMMENT_BYTES`]); may be empty.
    pub comment: String,
}

/// Longest key or value of a cursor record (log positions), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// History of a network with no active ban is forgotten once its last ban is
/// this old (applied at open and at compaction) so history cannot grow forever.
pub const HISTORY_RETENTION_SECS: u64 = 365 * 24 * 60 * 60;

/// Most histories kept of networks without an active ban, and most per-jail
/// histories (each about 50 bytes in memory): past this, the least
/// recently banned are forgotten at open and at compaction, so a flood of
/// distinct addresses cannot grow memory for the year of retention.
/// fail2ban keeps a day's (`dbpurgeage`).
pub const MAX_HISTORY_ENTRIES: usize = 500_000;

/// The log is compacted once it is larger than this and than the snapshot.
pub const COMPACT_MIN_LOG_BYTES: u64 = 4 * 1024 * 1024;

const SNAPSHOT_FILE: &str = "bans.snap";
const SNAPSHOT_TMP_FILE: &str = "bans.snap.tmp";
const LOG_FILE: &str = "bans.log";
const LOG_TMP_FILE: &str = "bans.log.tmp";
const LOCK_FILE: &str = "bans.lock";
/// The snapshot before the current one, and the log that was appended to
/// it: together they rebuild the current snapshot if that one is damaged.
const SNAPSHOT_PREV_FILE: &str = "bans.snap.prev";
const LOG_PREV_FILE: &str = "bans.log.prev";
/// Where a hard link to a file about to become a `.prev` is staged.
const PREV_LINK_TMP_FILE: &str = "bans.prev.tmp";

/// How a damaged store is examined and repaired; part of every message
/// about damage the store cannot get past on its own.
pub const REPAIR_HINT: &str = "`orch store verify` lists the damage; `orch store salvage` \
(with orch stopped: systemctl stop orch) keeps every valid record and writes a fresh snapshot";

const SNAPSHOT_MAGIC: [u8; 8] = *b"ORCHSNAP";
const LOG_MAGIC: [u8; 8] = *b"ORCHBLOG";
const FORMAT_VERSION: u32 = 1;

/// magic (8) + version (4) + generation (8) + crc32 of those 20 bytes (4).
const FILE_HEADER_LEN: usize = 24;
const HEADER_VERSION_OFFSET: usize = 8;
const HEADER_GENERATION_OFFSET: usize = 12;
const FILE_HEADER_CRC_OFFSET: usize = 20;
/// payload length (4) + crc32 over length and payload (4).
const RECORD_HEADER_LEN: usize = 8;
/// Largest well-formed payload is a cursor with two maximal strings (~2.1 KiB);
/// anything claiming more is damage, not data.
const MAX_PAYLOAD_LEN: usize = 4096;

const KIND_BAN: u8 = 1;
const KIND_UNBAN: u8 = 2;
const KIND_ALLOW: u8 = 3;
const KIND_DISALLOW: u8 = 4;
const KIND_HISTORY: u8 = 5;
const KIND_SNAPSHOT_END: u8 = 6;
const KIND_CURSOR: u8 = 7;
const KIND_SHADOW: u8 = 8;
const KIND_UNSHADOW: u8 = 9;
const KIND_JAIL_HISTORY: u8 = 10;
/// A runtime allow with a comment and an expiry (orch before this kind
/// wrote only [`KIND_ALLOW`]; both replay, the later one wins).
const KIND_ALLOW_NOTED: u8 = 11;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;
const SNAPSHOT_WRITE_BUFFER: usize = 1 << 20;

/// Why the store could not be opened or updated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ban store: cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("ban store file {path} is damaged at byte {offset}: {detail}. {REPAIR_HINT}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// A bad frame with intact records after it: not a torn tail from a
    /// crash (that is cut away silently), so opening would lose them.
    #[error(
        "ban store log {path} is damaged at byte {offset} ({detail}) and {intact_after} intact \
record(s) follow the damage: this is not a torn tail from a crash, and orch does not start \
rather than drop them. {REPAIR_HINT}"
    )]
    LogDamaged {
        path: PathBuf,
        offset: u64,
        detail: String,
        intact_after: u64,
    },
    #[error(
        "ban store file {path} has format version {found}; this build reads version {supported}"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "ban store {dir} is in use{} (lock file {LOCK_FILE} is held); stop orch first: systemctl stop orch",
        holder_text(.pid)
    )]
    Locked { dir: PathBuf, pid: Option<u32> },
}

/// One active ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRecord {
    /// Normalised by the caller (host bits zero); one address is /32 or /128.
    pub net: IpNet,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the ban is over once `now >= expires`.
    pub expires: u64,
    pub reason: Arc<str>,
    /// "manual", a jail name, "fleet:host", ...
    pub source: Arc<str>,
}

/// How often a network has been banned, and when last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BanHistory {
    pub count: u32,
    pub last_banned: u64,
}

/// The persistent ban store. Holds an exclusive lock on its directory for
/// as long as it lives.
pub struct Store {
    dir: PathBuf,
    log_path: PathBuf,
    log: File,
    /// Bytes of the log known to be valid and durable; appends go here.
    log_len: u64,
    log_health: LogHealth,
    snapshot_len: u64,
    /// Generation of the snapshot on disk; the log must carry the same one.
    generation: u64,
    /// Largest `now` seen (open, purge_expired); compaction's notion of time.
    latest_now: u64,
    state: MemState,
    /// Held only for its lock; released when the store is dropped.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("generation", &self.generation)
            .field("bans", &self.state.bans.len())
            .field("runtime_allows", &self.state.allows.len())
            .field("log_len", &self.log_len)
            .finish_non_exhaustive()
    }
}

/// The size in bytes of each store file in `dir` that exists (snapshot,
/// log and the previous pair), by file name. Only reads the directory, so
/// anyone may ask while the daemon holds the store.
pub fn file_sizes(dir: &Path) -> Vec<(&'static str, u64)> {
    [SNAPSHOT_FILE, LOG_FILE, SNAPSHOT_PREV_FILE, LOG_PREV_FILE]
        .into_iter()
        .filter_map(|name| Some((name, fs::metadata(dir.join(name)).ok()?.len())))
        .collect()
}

impl Store {
    /// Opens (creating dir and files if missing) the store in `dir`, replays
    /// it, drops bans already expired at `now`. A torn tail in the log (a
    /// crash mid-append: a bad frame with nothing sound after it) is
    /// truncated away with a warning, not an error; a bad frame with sound
    /// records after it is [`StoreError::LogDamaged`]. A damaged snapshot
    /// is rebuilt from the previous one and its log, with a loud warning
    /// (the damaged file is kept as `bans.snap.damaged-<now>`); when that
    /// cannot be done it is [`StoreError::Corrupt`]. Every damage error
    /// names `orch store verify` and `orch store salvage`.
    pub fn open(dir: &Path, now: u64) -> Result<Store, StoreError> {
        create_private_dir(dir)?;
        let lock = lock_dir(dir)?;
        remove_leftover_tmp_files(dir);

        let mut state = MemState::default();
        let snapshot = match load_snapshot(&dir.join(SNAPSHOT_FILE), &mut state, now) {
            Ok(None) if dir.join(SNAPSHOT_PREV_FILE).exists() => {
                let missing = corrupt(&dir.join(SNAPSHOT_FILE), 0, "the snapshot is missing");
                state = MemState::default();
                Some(fall_back_to_previous(dir, &mut state, now, missing)?)
            }
            Ok(loaded) => loaded,
            Err(damage @ StoreError::Corrupt { .. }) => {
                state = MemState::default();
                Some(fall_back_to_previous(dir, &mut state, now, damage)?)
            }
            Err(other) => return Err(other),
        };
        let generation = snapshot.as_ref().map_or(0, |loaded| loaded.generation);
        let log = open_log(dir, generation, &mut state, now)?;
        let snapshot_len = match snapshot {
            Some(loaded) => loaded.len,
            None => write_empty_snapshot(dir, generation)?,
        };
        state.forget_old_history(now);
        state.shrink_after_load();
        state.interner.drop_unused();

        Ok(Store {
            dir: dir.to_path_buf(),
            log_path: dir.join(LOG_FILE),
            log: log.file,
            log_len: log.len,
            log_health: LogHealth::Clean,
            snapshot_len,
            generation,
            latest_now: now,
            state,
            _lock: lock,
        })
    }

    /// The directory the store lives in, as given to `open`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of active bans (including any expired but not yet purged).
    pub fn ban_count(&self) -> usize {
        self.state.bans.len()
    }

    /// Every active ban, in no particular order.
    pub fn bans(&self) -> impl Iterator<Item = &BanRecord> {
        self.state.bans.iter().map(|slot| &slot.0)
    }

    /// The active ban of exactly `net` (no prefix matching).
    pub fn get_ban(&self, net: &IpNet) -> Option<&BanRecord> {
        self.state.bans.get(net).map(|slot| &slot.0)
    }

    /// Inserts or replaces (latest wins) the bans, updates each net's history
    /// (count+1, last_banned=created), writes them with ONE append and ONE
    /// fdatasync before returning. Empty slice = no I/O. `reason` and
    /// `source` longer than [`MAX_BAN_TEXT_BYTES`] are cut at a char boundary.
    /// On error nothing changed, in memory or on disk. A crash in the
    /// middle may leave the first records of the batch on disk, which the
    /// next start replays: they were never acknowledged, and nothing
    /// acknowledged is lost (tests/store_crash_props.rs).
    pub fn insert_bans(&mut self, bans: &[BanRecord]) -> Result<(), StoreError> {
        if bans.is_empty() {
            return Ok(());
        }
        let staged = self.prepare_bans(bans);
        let mut encoded = Vec::with_capacity(staged.len() * 64);
        for (record, history_count) in &staged {
            encode_record(&mut encoded, &ban_record_payload(record, *history_count));
        }
        self.append_durably(&encoded)?;
        for (record, history_count) in staged {
            self.state.apply_ban(record, history_count);
        }
        Ok(())
    }

    /// Removes a ban; durable (fsynced) before returning. Returns the removed
    /// record, or None (no I/O) if absent.
    pub fn remove_ban(&mut self, net: &IpNet) -> Result<Option<BanRecord>, StoreError> {
        Ok(self.remove_bans(std::slice::from_ref(net))?.pop())
    }

    /// Removes several bans with ONE append and ONE fdatasync; networks
    /// without a ban are skipped (none at all: no I/O). Returns the removed
    /// records.
    pub fn remove_bans(&mut self, nets: &[IpNet]) -> Result<Vec<BanRecord>, StoreError> {
        let mut encoded = Vec::new();
        let mut present = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(nets.len());
        for net in nets {
            if self.state.bans.contains(net) && seen.insert(*net) {
                encode_record(&mut encoded, &Record::Unban { net: *net });
                present.push(*net);
            }
        }
        if present.is_empty() {
            return Ok(Vec::new());
        }
        self.append_durably(&encoded)?;
        Ok(present
            .iter()
            .filter_map(|net| self.state.remove_ban(net))
            .collect())
    }

    /// Drops from memory every ban with `expires <= now` and returns them.
    /// No I/O: replay at open drops the same bans, and compaction omits them.
    pub fn purge_expired(&mut self, now: u64) -> Vec<BanRecord> {
        self.latest_now = self.latest_now.max(now);
        // Strings of bans handed out earlier are released once the caller
        // has dropped them, so the check runs before this round's removal.
        self.state.drop_unused_strings_if_sparse();
        self.state.take_expired(now)
    }

    /// How often `net` has been banned; `Default` if never (or not within
    /// [`HISTORY_RETENTION_SECS`]).
    pub fn history(&self, net: &IpNet) -> BanHistory {
        self.state.history(net)
    }

    /// Runtime allowlist additions, sorted.
    pub fn runtime_allows(&self) -> impl Iterator<Item = &IpNet> {
        self.state.allows.iter()
    }

    /// Adds a runtime allowlist entry; true if newly added. Durable before
    /// returning; no I/O if already present.
    pub fn add_allow(&mut self, net: IpNet) -> Result<bool, StoreError> {
        if self.state.allows.contains(&net) {
            return Ok(false);
        }
        self.append_record(&Record::Allow { net })?;
        self.state.allows.insert(net);
        Ok(true)
    }

    /// Removes a runtime allowlist entry; true if it was there. Durable
    /// before returning; no I/O if absent.
    pub fn remove_allow(&mut self, net: &IpNet) -> Result<bool, StoreError> {
        if !self.state.allows.contains(net) {
            return Ok(false);
        }
        self.append_record(&Record::Disallow { net: *net })?;
        self.state.allows.remove(net);
        self.state.allow_notes.remove(net);
        Ok(true)
    }

    /// Adds a runtime allowlist entry with `note`, or gives an entry
    /// already there this note instead of its own; true unless it was
    /// there with this very note. A comment longer than
    /// [`MAX_ALLOW_COMMENT_BYTES`] is cut. Durable before returning.
    pub fn add_allow_noted(&mut self, net: IpNet, note: AllowNote) -> Result<bool, StoreError> {
        let comment = crate::quote::cut(&note.comment, MAX_ALLOW_COMMENT_BYTES);
        let note = AllowNote {
            expires: note.expires,
            comment: comment.to_string(),
        };
        if self.state.allows.contains(&net) && self.state.allow_notes.get(&net) == Some(&note) {
            return Ok(false);
        }
        self.append_record(&records::allow_noted_record(net, &note))?;
        self.state.allows.insert(net);
        self.state.allow_notes.insert(net, note);
        Ok(true)
    }

    /// The comment and expiry of a runtime allowlist entry, if it has them.
    pub fn allow_note(&self, net: &IpNet) -> Option<&AllowNote> {
        self.state.allow_notes.get(net)
    }

    /// The runtime allowlist entries over by `now` (still stored: remove
    /// them with [`Store::remove_allow`]).
    pub fn expired_allows(&self, now: u64) -> Vec<IpNet> {
        self.state
            .allow_notes
            .iter()
            .filter(|(_, note)| note.expires.is_some_and(|expires| expires <= now))
            .map(|(net, _)| *net)
            .collect()
    }

    /// This host's own ban of `net` kept under another host's longer ban,
    /// if any (see [`Store::set_shadowed`]).
    pub fn shadowed(&self, net: &IpNet) -> Option<&BanRecord> {
        self.state.shadows.get(net)
    }

    /// Every shadowed own ban, in no particular order.
    pub fn shadowed_bans(&self) -> impl Iterator<Item = &BanRecord> {
        self.state.shadows.values()
    }

    /// Keeps (`Some`) or forgets (`None`) the own ban of a network that is
    /// shadowed: while another host's longer ban is the active ban of the
    /// network, this host's own ban waits here, so that it is in force
    /// again when the other ends early. The store keeps it and nothing
    /// else: which ban is in force is the caller's decision. All changes
    /// with one append and one fdatasync; unchanged ones cost nothing.
    pub fn set_shadowed(
        &mut self,
        changes: &[(IpNet, Option<BanRecord>)],
    ) -> Result<(), StoreError> {
        let mut encoded = Vec::new();
        let mut changed = Vec::new();
        for (net, shadow) in changes {
            match shadow {
                Some(record) if self.state.shadows.get(net) != Some(record) => {
                    encode_record(&mut encoded, &shadow_record(record));
                }
                None if self.state.shadows.contains_key(net) => {
                    encode_record(&mut encoded, &Record::Unshadow { net: *net });
                }
                _ => continue,
            }
            changed.push((*net, shadow));
        }
        if encoded.is_empty() {
            return Ok(());
        }
        self.append_durably(&encoded)?;
        for (net, shadow) in changed {
            match shadow {
                Some(record) => {
                    let record = BanRecord {
                        reason: self.state.interner.intern_shared(&record.reason),
                        source: self.state.interner.intern_shared(&record.source),
                        ..record.clone()
                    };
                    self.state.shadows.insert(net, record);
                }
                None => {
                    self.state.shadows.remove(&net);
                }
            }
        }
        Ok(())
    }

    /// Drops from memory every shadowed ban with `expires <= now` and
    /// returns them. No I/O, as for [`Store::purge_expired`].
    pub fn purge_expired_shadows(&mut self, now: u64) -> Vec<BanRecord> {
        if self.state.shadows.is_empty() {
            return Vec::new();
        }
        self.state
            .shadows
            .extract_if(|_, shadow| shadow.expires <= now)
            .map(|(_, shadow)| shadow)
            .collect()
    }

    /// How often the jail `jail` banned `net` and when it last did;
    /// `Default` if never, or not within [`HISTORY_RETENTION_SECS`] of `now`.
    pub fn jail_history(&self, jail: &str, net: &IpNet, now: u64) -> BanHistory {
        self.state
            .jail_histories
            .get(jail, net)
            .filter(|history| state::history_is_retained(history, now))
            .unwrap_or_default()
    }

    /// Records that the jail `jail` banned each of `nets` at `now`: one
    /// more ban in each one's history (history past retention starts again
    /// at 1). All with one append and one fdatasync before returning.
    pub fn record_jail_bans(
        &mut self,
        jail: &str,
        nets: &[IpNet],
        now: u64,
    ) -> Result<(), StoreError> {
        let jail = crate::quote::cut(jail, MAX_BAN_TEXT_BYTES);
        let mut encoded = Vec::new();
        let mut changed: HashMap<IpNet, BanHistory> = HashMap::with_capacity(nets.len());
        for net in nets {
            let before = match changed.get(net) {
                Some(history) => *history,
                None => self.jail_history(jail, net, now),
            };
            let history = BanHistory {
                count: before.count.saturating_add(1),
                last_banned: now,
            };
            encode_record(&mut encoded, &jail_history_record(jail, *net, history));
            changed.insert(*net, history);
        }
        if encoded.is_empty() {
            return Ok(());
        }
        self.append_durably(&encoded)?;
        for (net, history) in changed {
            self.state.jail_histories.set(jail, net, history);
        }
        Ok(())
    }

    /// Every jail's history of every network, within
    /// [`HISTORY_RETENTION_SECS`] of `now`, in no particular order.
    pub fn jail_histories(&self, now: u64) -> impl Iterator<Item = (&str, IpNet, BanHistory)> {
        self.state
            .jail_histories
            .iter()
            .filter(move |(_, _, history)| state::history_is_retained(history, now))
    }

    /// Where the log reader `key` stopped, as saved by [`Store::set_cursors`].
    pub fn cursor(&self, key: &str) -> Option<&str> {
        self.state.cursors.get(key).map(String::as_str)
    }

    /// Every cursor whose key starts with `prefix`, in key order.
    pub fn cursors_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.state
            .cursors
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// Saves log readers' positions (key, value), all with one append and one
    /// fdatasync; unchanged ones cost nothing. An empty value forgets the
    /// key. Keys and values longer than [`MAX_TEXT_BYTES`] are refused, since
    /// a cut position would be wrong.
    pub fn set_cursors(&mut self, cursors: &[(String, String)]) -> Result<(), StoreError> {
        let mut encoded = Vec::new();
        let mut changed = Vec::new();
        for (key, value) in cursors {
            if key.is_empty() || key.len() > MAX_TEXT_BYTES || value.len() > MAX_TEXT_BYTES {
                continue;
            }
            let current = self.state.cursors.get(key).map(String::as_str);
            if current == Some(value.as_str()) || (current.is_none() && value.is_empty()) {
                continue;
            }
            encode_record(&mut encoded, &Record::Cursor { key, value });
            changed.push((key, value));
        }
        if encoded.is_empty() {
            return Ok(());
        }
        self.append_durably(&encoded)?;
        for (key, value) in changed {
            if value.is_empty() {
                self.state.cursors.remove(key);
            } else {
                self.state.cursors.insert(key.clone(), value.clone());
            }
        }
        Ok(())
    }

    /// Compacts when the log has outgrown both [`COMPACT_MIN_LOG_BYTES`] and
    /// the snapshot; otherwise a cheap comparison.
    pub fn compact_if_needed(&mut self) -> Result<(), StoreError> {
        if self.log_len > COMPACT_MIN_LOG_BYTES.max(self.snapshot_len) {
            self.compact()
        } else {
            Ok(())
        }
    }

    /// Unconditional compaction: writes the current state as a new snapshot
    /// (generation + 1) via tmp file + fsync, keeps the current snapshot and
    /// log as `bans.snap.prev` and `bans.log.prev` (hard links), renames the
    /// new snapshot into place + directory fsync, then replaces the log with
    /// an empty one of the new generation. Bans expired
    /// at the latest `now` seen are left out (but stay in memory until
    /// `purge_expired` hands them to the caller); stale history is dropped.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        // The log kept as the previous snapshot's must be of its generation.
        self.make_log_writable()?;
        self.state.forget_old_history(self.latest_now);
        self.state.interner.drop_unused();
        let next_generation = self.generation + 1;
        let written = write_snapshot_tmp(&self.dir, next_generation, &self.state, self.latest_now)?;
        keep_as_previous(&self.dir)?;
        rename_into_place(&self.dir, SNAPSHOT_TMP_FILE, SNAPSHOT_FILE)?;
        // The new snapshot may now be what a restart sees, and it makes the
        // current log stale: nothing may be appended to it any more.
        self.generation = next_generation;
        self.snapshot_len = written;
        self.log_health = LogHealth::Stale;
        sync_dir(&self.dir)?;
        self.make_log_writable()
    }

    /// Resolves reason/source through the interner and computes each ban's
    /// resulting history count (a net may appear more than once in `bans`).
    fn prepare_bans(&mut self, bans: &[BanRecord]) -> Vec<(BanRecord, u32)> {
        let mut counts_in_batch: HashMap<IpNet, u32> = HashMap::new();
        bans.iter()
            .map(|ban| {
                let previous = counts_in_batch
                    .get(&ban.net)
                    .copied()
                    .unwrap_or_else(|| self.state.history(&ban.net).count);
                let history_count = previous.saturating_add(1);
                counts_in_batch.insert(ban.net, history_count);
                let record = BanRecord {
                    net: ban.net,
                    created: ban.created,
                    expires: ban.expires,
                    reason: self.state.interner.intern_shared(&ban.reason),
                    source: self.state.interner.intern_shared(&ban.source),
                };
                (record, history_count)
            })
            .collect()
    }

    fn append_record(&mut self, record: &Record<'_>) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(64);
        encode_record(&mut encoded, record);
        self.append_durably(&encoded)
    }

    /// Writes `encoded` at the end of the valid log and fdatasyncs it. On
    /// failure the tail is cut back so a half-written batch can never sit in
    /// front of later, successful appends.
    fn append_durably(&mut self, encoded: &[u8]) -> Result<(), StoreError> {
        self.make_log_writable()?;
        let written = self
            .log
            .write_all_at(encoded, self.log_len)
            .and_then(|()| self.log.sync_data());
        match written {
            Ok(()) => {
                self.log_len += encoded.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.log_health = LogHealth::TailDirty;
                if let Err(repair_error) = self.make_log_writable() {
                    tracing::warn!(
                        error = %repair_error,
                        "ban store: could not roll back a failed log append; will retry"
                    );
                }
                Err(io_error("append to", &self.log_path, source))
            }
        }
    }

    /// Brings the log back to a state where appending is safe.
    fn make_log_writable(&mut self) -> Result<(), StoreError> {
        match self.log_health {
            LogHealth::Clean => return Ok(()),
            LogHealth::TailDirty => {
                self.log
                    .set_len(self.log_len)
                    .and_then(|()| self.log.sync_data())
                    .map_err(|source| io_error("roll back", &self.log_path, source))?;
            }
            LogHealth::Stale => {
                self.log = create_log(&self.dir, self.generation)?;
                self.log_len = FILE_HEADER_LEN as u64;
            }
        }
        self.log_health = LogHealth::Clean;
        Ok(())
    }

    /// Rough heap footprint of the in-memory tables (tests: memory budget).
    #[cfg(test)]
    fn approx_table_bytes(&self) -> usize {
        fn table_bytes<T>(capacity: usize) -> usize {
            let buckets = (capacity * 8 / 7).next_power_of_two();
            buckets * (std::mem::size_of::<T>() + 1)
        }
        table_bytes::<BanSlot>(self.state.bans.capacity())
            + table_bytes::<(IpNet, u32)>(self.state.repeat_counts.capacity())
            + table_bytes::<(IpNet, BanHistory)>(self.state.idle_history.capacity())
            + table_bytes::<Arc<str>>(self.state.interner.strings.capacity())
    }
}

/// Whether the open log file may be appended to as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogHealth {
    Clean,
    /// An append failed; bytes past `log_len` may exist and must be cut.
    TailDirty,
    /// A newer snapshot was renamed into place; the log must be recreated
    /// with the new generation before anything is appended.
    Stale,
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// " by pid N" when the lock file names the process holding it.
fn holder_text(pid: &Option<u32>) -> String {
    pid.map(|pid| format!(" by pid {pid}")).unwrap_or_default()
}

fn corrupt(path: &Path, offset: usize, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{
        HOUR, NOW, append_garbage, ban, file_len, log_path, many_bans, net, open, sorted_bans,
    };
    use super::*;

    #[test]
    fn noted_allows_survive_reopen_and_compaction_and_plain_ones_clear_notes() {
        let dir = tempfile::tempdir().unwrap();
        let note = |expires: Option<u64>, comment: &str| AllowNote {
            expires,
            comment: comment.to_string(),
        };
        let vpn = net("198.51.100.7/32");
        let lab = net("2001:db8:ab::/48");
        {
            let mut store = open(dir.path());
            // An entry of an older orch (no note) gets one.
            assert!(store.add_allow(lab).unwrap());
            assert!(store.add_allow_noted(lab, note(None, "lab")).unwrap());
            assert!(
                store
                    .add_allow_noted(vpn, note(Some(NOW + HOUR), "vendor VPN"))
                    .unwrap()
            );
            assert!(
                !store
                    .add_allow_noted(vpn, note(Some(NOW + HOUR), "vendor VPN"))
                    .unwrap()
            );
            let long = "é".repeat(MAX_ALLOW_COMMENT_BYTES);
            assert!(
                store
                    .add_allow_noted(net("192.0.2.99/32"), note(None, &long))
                    .unwrap()
            );
            let cut = store.allow_note(&net("192.0.2.99/32")).unwrap();
            assert_eq!(cut.comment.len(), MAX_ALLOW_COMMENT_BYTES);
            assert!(store.remove_allow(&net("192.0.2.99/32")).unwrap());
        }
        for round in ["from the log", "from a snapshot"] {
            let mut store = open(dir.path());
            assert_eq!(
                store.allow_note(&vpn),
                Some(&note(Some(NOW + HOUR), "vendor VPN")),
                "{round}"
            );
            assert_eq!(store.allow_note(&lab), Some(&note(None, "lab")), "{round}");
            assert_eq!(store.allow_note(&net("192.0.2.99/32")), None, "{round}");
            assert_eq!(store.runtime_allows().count(), 2, "{round}");
            assert_eq!(store.expired_allows(NOW + HOUR - 1), Vec::<IpNet>::new());
            assert_eq!(store.expired_allows(NOW + HOUR), vec![vpn]);
            store.compact().unwrap();
        }
        let mut store = open(dir.path());
        assert!(store.remove_allow(&vpn).unwrap());
        assert!(store.allow_note(&vpn).is_none());
        // Plain Allow (as an older orch writes it) after a noted one: no note.
        store.append_record(&Record::Allow { net: lab }).unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.allow_note(&lab), None);
        assert_eq!(
            store.runtime_allows().copied().collect::<Vec<_>>(),
            vec![lab]
        );
        assert!(store.expired_allows(u64::MAX).is_empty());
    }

    #[test]
    fn bans_allows_and_history_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let mut store = open(dir.path());
            store
                .insert_bans(&[
                    ban("192.0.2.7/32", NOW, NOW + HOUR, "ssh brute force"),
                    ban("2001:db8::1/128", NOW, NOW + HOUR, "ssh brute force"),
                    ban("198.51.100.0/24", NOW, NOW + 2 * HOUR, "scanner"),
                    ban("2001:db8:1::/48", NOW, NOW + 3 * HOUR, "scanner"),
                ])
                .unwrap();
            assert!(store.add_allow(net("203.0.113.5/32")).unwrap());
            assert!(store.add_allow(net("2001:db8:ffff::/64")).unwrap());
            assert!(!store.add_allow(net("203.0.113.5/32")).unwrap());
            sorted_bans(&store)
        };
        let store = open(dir.path());
        assert_eq!(sorted_bans(&store), expected);
        assert_eq!(store.ban_count(), 4);
        let allows: Vec<IpNet> = store.runtime_allows().copied().collect();
        assert_eq!(
            allows,
            vec![net("203.0.113.5/32"), net("2001:db8:ffff::/64")]
        );
        let history = store.history(&net("198.51.100.0/24"));
        assert_eq!(
            history,
            BanHistory {
                count: 1,
                last_banned: NOW
            }
        );
        assert_eq!(store.history(&net("192.0.2.8/32")), BanHistory::default());
        let v6 = store.get_ban(&net("2001:db8:1::/48")).unwrap();
        assert_eq!(v6.expires, NOW + 3 * HOUR);
        assert_eq!(&*v6.reason, "scanner");
        assert_eq!(&*v6.source, "manual");
    }

    #[test]
    fn shadowed_bans_survive_reopen_and_compaction_until_they_end() {
        let dir = tempfile::tempdir().unwrap();
        let own = ban("192.0.2.7/32", NOW - 10, NOW + HOUR, "jail sshd");
        let ended_soon = ban("192.0.2.8/32", NOW - 10, NOW + 5, "short");
        let forgotten = ban("2001:db8::1/128", NOW - 10, NOW + HOUR, "gone");
        {
            let mut store = open(dir.path());
            store
                .set_shadowed(&[
                    (own.net, Some(own.clone())),
                    (ended_soon.net, Some(ended_soon.clone())),
                    (forgotten.net, Some(forgotten.clone())),
                ])
                .unwrap();
            let before = file_len(&log_path(dir.path()));
            // Unchanged shadows and absent ones cost no I/O.
            store
                .set_shadowed(&[(own.net, Some(own.clone())), (net("10.0.0.1/32"), None)])
                .unwrap();
            assert_eq!(file_len(&log_path(dir.path())), before);
            store.set_shadowed(&[(forgotten.net, None)]).unwrap();
            // Shadows are not active bans.
            assert_eq!(store.ban_count(), 0);
        }
        let mut store = open(dir.path());
        assert_eq!(store.shadowed(&own.net), Some(&own));
        assert_eq!(store.shadowed(&ended_soon.net), Some(&ended_soon));
        assert_eq!(store.shadowed(&forgotten.net), None);
        assert_eq!(
            store.purge_expired_shadows(NOW + 5),
            vec![ended_soon.clone()]
        );
        store.compact().unwrap();
        drop(store);
        let store = open(dir.path());
        let kept: Vec<&BanRecord> = store.shadowed_bans().collect();
        assert_eq!(kept, vec![&own]);
        drop(store);
        // Once over, a shadow is not loaded again.
        let store = Store::open(dir.path(), NOW + HOUR).expect("store opens");
        assert_eq!(store.shadowed_bans().count(), 0);
    }

    #[test]
    fn cursors_survive_reopen_and_compaction_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        {
            let mut store = open(dir.path());
            assert_eq!(store.cursor("jail/sshd/file:/var/log/auth.log"), None);
            store
                .set_cursors(&[
                    pair("jail/sshd/file:/var/log/auth.log", "2049:77:1234"),
                    pair("jail/sshd/journal", "s=abc;i=1"),
                    pair("jail/old/journal", "s=x"),
                ])
                .unwrap();
            let before = file_len(&log_path(dir.path()));
            // Unchanged values cost no I/O.
            store
                .set_cursors(&[pair("jail/sshd/journal", "s=abc;i=1")])
                .unwrap();
            assert_eq!(file_len(&log_path(dir.path())), before);
            store
                .set_cursors(&[
                    pair("jail/sshd/journal", "s=abc;i=2"),
                    pair("jail/old/journal", ""),
                ])
                .unwrap();
        }
        let mut store = open(dir.path());
        assert_eq!(store.cursor("jail/sshd/journal"), Some("s=abc;i=2"));
        assert_eq!(store.cursor("jail/old/journal"), None);
        store.compact().unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(
            store.cursor("jail/sshd/file:/var/log/auth.log"),
            Some("2049:77:1234")
        );
        assert_eq!(store.cursor("jail/sshd/journal"), Some("s=abc;i=2"));
        assert_eq!(store.cursor("jail/old/journal"), None);
        let sshd: Vec<&str> = store
            .cursors_with_prefix("jail/sshd/")
            .map(|(key, _)| key)
            .collect();
        assert_eq!(
            sshd,
            ["jail/sshd/file:/var/log/auth.log", "jail/sshd/journal"]
        );
    }

    #[test]
    fn jail_history_counts_per_jail_and_survives_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let addr = net("192.0.2.7/32");
        {
            let mut store = open(dir.path());
            assert_eq!(
                store.jail_history("sshd", &addr, NOW),
                BanHistory::default()
            );
            store.record_jail_bans("sshd", &[addr], NOW).unwrap();
            store.record_jail_bans("sshd", &[addr], NOW + HOUR).unwrap();
            assert_eq!(store.jail_history("sshd", &addr, NOW + HOUR).count, 2);
            store.record_jail_bans("nginx", &[addr], NOW).unwrap();
        }
        let mut store = open(dir.path());
        let expected = BanHistory {
            count: 2,
            last_banned: NOW + HOUR,
        };
        assert_eq!(store.jail_history("sshd", &addr, NOW + HOUR), expected);
        assert_eq!(store.jail_history("nginx", &addr, NOW + HOUR).count, 1);
        // Jail history is not a log position.
        assert_eq!(store.cursors_with_prefix("").count(), 0);
        store.compact().unwrap();
        drop(store);
        let store = Store::open(dir.path(), NOW + HOUR).expect("store opens");
        assert_eq!(store.jail_history("sshd", &addr, NOW + HOUR), expected);
        assert_eq!(store.jail_histories(NOW + HOUR).count(), 2);
        // Past retention, history counts for nothing and is not listed.
        let later = NOW + HOUR + HISTORY_RETENTION_SECS;
        assert_eq!(
            store.jail_history("sshd", &addr, later),
            BanHistory::default()
        );
        assert_eq!(store.jail_histories(later).count(), 0);
    }

    #[test]
    fn jail_history_kept_as_cursors_by_older_stores_is_read_as_jail_history() {
        let dir = tempfile::tempdir().unwrap();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        {
            let mut store = open(dir.path());
            // What a store written before jail history had a record kind holds.
            store
                .set_cursors(&[
                    pair("jailhist/sshd/2001:db8::/64", &format!("4:{NOW}")),
                    pair("jail/sshd/journal", "s=abc;i=1"),
                ])
                .unwrap();
        }
        let mut store = open(dir.path());
        let v6 = net("2001:db8::/64");
        assert_eq!(store.jail_history("sshd", &v6, NOW).count, 4);
        assert_eq!(store.cursor("jailhist/sshd/2001:db8::/64"), None);
        assert_eq!(store.cursor("jail/sshd/journal"), Some("s=abc;i=1"));
        // One call counts each network once per time it is named.
        store.record_jail_bans("sshd", &[v6, v6], NOW).unwrap();
        assert_eq!(store.jail_history("sshd", &v6, NOW).count, 6);
        store.compact().unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.jail_history("sshd", &v6, NOW).count, 6);
    }

    #[test]
    fn latest_insert_wins_and_counts_history() {
        let dir = tempfile::tempdir().unwrap();
        let target = net("192.0.2.1/32");
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + 10 * HOUR, "first")])
                .unwrap();
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW + 5, NOW + HOUR, "second")])
                .unwrap();
            let current = store.get_ban(&target).unwrap();
            assert_eq!(&*current.reason, "second");
            assert_eq!(current.expires, NOW + HOUR);
            assert_eq!(
                store.history(&target),
                BanHistory {
                    count: 2,
                    last_banned: NOW + 5
                }
            );
            assert_eq!(store.ban_count(), 1);
        }
        let store = open(dir.path());
        let current = store.get_ban(&target).unwrap();
        assert_eq!(&*current.reason, "second");
        assert_eq!(current.expires, NOW + HOUR);
        assert_eq!(
            store.history(&target),
            BanHistory {
                count: 2,
                last_banned: NOW + 5
            }
        );
    }

    #[test]
    fn same_net_twice_in_one_batch_counts_twice_and_last_wins() {
        let dir = tempfile::tempdir().unwrap();
        let target = net("2001:db8::/64");
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[
                    ban("2001:db8::/64", NOW, NOW + HOUR, "a"),
                    ban("2001:db8::/64", NOW + 1, NOW + 2 * HOUR, "b"),
                ])
                .unwrap();
            assert_eq!(store.history(&target).count, 2);
            assert_eq!(&*store.get_ban(&target).unwrap().reason, "b");
        }
        let store = open(dir.path());
        assert_eq!(
            store.history(&target),
            BanHistory {
                count: 2,
                last_banned: NOW + 1
            }
        );
        assert_eq!(&*store.get_ban(&target).unwrap().reason, "b");
    }

    #[test]
    fn empty_insert_does_no_io() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let before = file_len(&log_path(dir.path()));
        store.insert_bans(&[]).unwrap();
        assert_eq!(store.remove_ban(&net("192.0.2.1/32")).unwrap(), None);
        assert!(!store.remove_allow(&net("192.0.2.1/32")).unwrap());
        assert_eq!(file_len(&log_path(dir.path())), before);
    }

    #[test]
    fn removed_ban_stays_removed_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let gone = net("192.0.2.9/32");
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[
                    ban("192.0.2.9/32", NOW, NOW + HOUR, "x"),
                    ban("192.0.2.10/32", NOW, NOW + HOUR, "x"),
                ])
                .unwrap();
            let removed = store.remove_ban(&gone).unwrap().expect("was banned");
            assert_eq!(removed.net, gone);
            assert!(store.get_ban(&gone).is_none());
            assert_eq!(
                store.history(&gone),
                BanHistory {
                    count: 1,
                    last_banned: NOW
                }
            );
            assert!(store.add_allow(net("198.51.100.1/32")).unwrap());
            assert!(store.remove_allow(&net("198.51.100.1/32")).unwrap());
        }
        let mut store = open(dir.path());
        assert!(store.get_ban(&gone).is_none());
        assert_eq!(store.ban_count(), 1);
        assert_eq!(
            store.history(&gone),
            BanHistory {
                count: 1,
                last_banned: NOW
            }
        );
        assert_eq!(store.runtime_allows().count(), 0);
        // Banning again continues the history.
        store
            .insert_bans(&[ban("192.0.2.9/32", NOW + 9, NOW + HOUR, "again")])
            .unwrap();
        assert_eq!(
            store.history(&gone),
            BanHistory {
                count: 2,
                last_banned: NOW + 9
            }
        );
    }

    #[test]
    fn compaction_preserves_state_and_shrinks_log() {
        let dir = tempfile::tempdir().unwrap();
        let (bans_before, allows_before) = {
            let mut store = open(dir.path());
            for round in 0..5u64 {
                let bans: Vec<BanRecord> = (0..100u32)
                    .map(|i| {
                        ban(
                            &format!("10.1.{round}.{i}/32"),
                            NOW + round,
                            NOW + HOUR,
                            "flood",
                        )
                    })
                    .collect();
                store.insert_bans(&bans).unwrap();
            }
            store
                .insert_bans(&[ban("10.1.0.1/32", NOW + 50, NOW + 2 * HOUR, "again")])
                .unwrap();
            store.remove_ban(&net("10.1.4.99/32")).unwrap();
            store
                .insert_bans(&[ban("2001:db8::/56", NOW, NOW + 1, "gone soon")])
                .unwrap();
            store.add_allow(net("2001:db8:abcd::/48")).unwrap();
            let log_before = file_len(&log_path(dir.path()));
            store.compact_if_needed().unwrap();
            assert_eq!(
                file_len(&log_path(dir.path())),
                log_before,
                "small log is left alone"
            );

            store.compact().unwrap();
            assert_eq!(file_len(&log_path(dir.path())), FILE_HEADER_LEN as u64);
            assert!(!dir.path().join(SNAPSHOT_TMP_FILE).exists());
            store
                .insert_bans(&[ban("10.9.9.9/32", NOW, NOW + HOUR, "after compaction")])
                .unwrap();
            (
                sorted_bans(&store),
                store.runtime_allows().copied().collect::<Vec<_>>(),
            )
        };
        let store = open(dir.path());
        assert_eq!(sorted_bans(&store), bans_before);
        assert_eq!(
            store.runtime_allows().copied().collect::<Vec<_>>(),
            allows_before
        );
        assert_eq!(
            store.history(&net("10.1.0.1/32")),
            BanHistory {
                count: 2,
                last_banned: NOW + 50
            }
        );
        assert_eq!(
            store.history(&net("10.1.4.99/32")),
            BanHistory {
                count: 1,
                last_banned: NOW + 4
            }
        );
        assert_eq!(store.generation, 1);
    }

    #[test]
    fn failed_append_changes_nothing_and_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store
            .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
            .unwrap();
        let read_only = File::open(log_path(dir.path())).unwrap();
        let writable = std::mem::replace(&mut store.log, read_only);

        let failed = store.insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")]);
        assert!(matches!(failed, Err(StoreError::Io { .. })), "{failed:?}");
        assert!(store.get_ban(&net("192.0.2.2/32")).is_none());
        assert_eq!(store.history(&net("192.0.2.2/32")), BanHistory::default());
        assert_eq!(store.log_health, LogHealth::TailDirty);

        // Whatever the failed write left behind is cut before the next append.
        append_garbage(dir.path(), b"half of a record");
        store.log = writable;
        store
            .insert_bans(&[ban("192.0.2.3/32", NOW, NOW + HOUR, "c")])
            .unwrap();
        drop(store);
        let store = open(dir.path());
        let nets: Vec<IpNet> = sorted_bans(&store)
            .iter()
            .map(|record| record.net)
            .collect();
        assert_eq!(nets, vec![net("192.0.2.1/32"), net("192.0.2.3/32")]);
    }

    #[test]
    fn twenty_thousand_bans_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let mut store = open(dir.path());
            let bans = many_bans(20_000, &["ssh brute force", "http scan", "smtp auth"]);
            for (index, chunk) in bans.chunks(1000).enumerate() {
                store.insert_bans(chunk).unwrap();
                if index == 10 {
                    store.compact().unwrap();
                }
            }
            assert_eq!(store.ban_count(), 20_000);
            sorted_bans(&store)
        };
        let store = open(dir.path());
        assert_eq!(store.ban_count(), 20_000);
        assert_eq!(sorted_bans(&store), expected);
        assert!(store.state.interner.len() <= 5);
    }

    #[test]
    fn hundred_thousand_bans_fit_memory_budget_and_trigger_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store
            .insert_bans(&many_bans(100_000, &["a", "b", "c", "d"]))
            .unwrap();
        let per_ban = store.approx_table_bytes() / store.ban_count();
        assert!(per_ban < 100, "{per_ban} bytes per ban");
        assert!(file_len(&log_path(dir.path())) > COMPACT_MIN_LOG_BYTES);
        store.compact_if_needed().unwrap();
        assert_eq!(file_len(&log_path(dir.path())), FILE_HEADER_LEN as u64);
        drop(store);
        assert_eq!(open(dir.path()).ban_count(), 100_000);
    }
}
