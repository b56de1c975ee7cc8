//! Crash-safe ban store: active bans, per-network ban history and runtime
//! allowlist additions, kept in memory and persisted as a snapshot file plus
//! an append-only log (format and crash-safety argument: `docs/design.md`,
//! section "Store").
//!
//! This is the only module that persists state. It must not touch the kernel
//! or the firewall and it makes no policy decisions: callers decide what to
//! ban or allow, the store only remembers it durably. Every mutating call is
//! on disk (fdatasync'd) before it returns.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::io::{self, BufWriter, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub mod repair;

/// Longest `reason` or `source` of a ban kept, in bytes; longer text is cut
/// at a char boundary on insert and on replay. Every ban's text is returned
/// by every listing, so it is kept short whoever sent it (a D-Bus caller, a
/// jail, another fleet host).
pub const MAX_BAN_TEXT_BYTES: usize = 256;

/// Longest key or value of a cursor record (log positions), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// History of a network with no active ban is forgotten once its last ban is
/// this old (applied at open and at compaction) so history cannot grow forever.
pub const HISTORY_RETENTION_SECS: u64 = 365 * 24 * 60 * 60;

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
        Ok(true)
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

// ---------------------------------------------------------------------------
// In-memory state
// ---------------------------------------------------------------------------

/// A ban keyed (hashed and compared) by its network only, so the table needs
/// no separate key and `get(&IpNet)` works through `Borrow`.
struct BanSlot(BanRecord);

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
struct MemState {
    bans: HashSet<BanSlot>,
    /// History count of actively banned nets banned more than once.
    repeat_counts: HashMap<IpNet, u32>,
    /// History of nets with no active ban.
    idle_history: HashMap<IpNet, BanHistory>,
    allows: BTreeSet<IpNet>,
    /// Log readers' positions, by key (see [`Store::set_cursors`]).
    cursors: std::collections::BTreeMap<String, String>,
    /// This host's own bans kept under a longer ban of another host (see
    /// [`Store::set_shadowed`]); few, so a plain map.
    shadows: HashMap<IpNet, BanRecord>,
    interner: Interner,
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
            cursors: Default::default(),
            shadows: HashMap::new(),
            interner: Interner::default(),
            earliest_expiry: u64::MAX,
        }
    }
}

impl MemState {
    fn history(&self, net: &IpNet) -> BanHistory {
        match self.bans.get(net) {
            Some(slot) => self.active_history(&slot.0),
            None => self.idle_history.get(net).copied().unwrap_or_default(),
        }
    }

    fn active_history(&self, active: &BanRecord) -> BanHistory {
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
    fn reserve(&mut self, bans: usize, histories: usize) {
        self.bans.reserve(bans);
        self.idle_history.reserve(histories);
    }

    /// Gives back what `reserve` over-estimated (e.g. bans found expired).
    fn shrink_after_load(&mut self) {
        self.bans.shrink_to_fit();
        self.repeat_counts.shrink_to_fit();
        self.idle_history.shrink_to_fit();
    }

    /// Makes `record` the active ban of its net with the given history count.
    fn apply_ban(&mut self, record: BanRecord, history_count: u32) {
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
    fn remove_ban(&mut self, net: &IpNet) -> Option<BanRecord> {
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

    fn take_expired(&mut self, now: u64) -> Vec<BanRecord> {
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

    fn forget_old_history(&mut self, now: u64) {
        self.idle_history
            .retain(|_, history| history_is_retained(history, now));
    }

    fn drop_unused_strings_if_sparse(&mut self) {
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
    /// active ban (allowlist changes, reader cursors, shadowed own bans);
    /// see `net_change` for the others. A shadowed ban already over by
    /// `now` is not kept.
    fn apply_side_record(&mut self, record: &Record<'_>, now: u64) {
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
            }
            Record::Disallow { net } => {
                self.allows.remove(&net);
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
    fn net_change(&mut self, record: &Record<'_>, now: u64) -> Option<NetChange> {
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
            | Record::Disallow { .. }
            | Record::Cursor { .. }
            | Record::Shadow { .. }
            | Record::Unshadow { .. }
            | Record::SnapshotEnd { .. } => {
                return None;
            }
        };
        Some(change)
    }

    fn apply_net_change(&mut self, change: NetChange) {
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
enum NetChange {
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

fn history_is_retained(history: &BanHistory, now: u64) -> bool {
    history.last_banned.saturating_add(HISTORY_RETENTION_SECS) > now
}

/// Shares one allocation per distinct reason/source text. The last few
/// texts handed out are compared before hashing: bans (and loads of a
/// million of them) cycle through a handful of reasons and sources.
#[derive(Default)]
struct Interner {
    strings: HashSet<Arc<str>>,
    recent: [Option<Arc<str>>; Interner::RECENT],
    next_recent: usize,
}

impl Interner {
    const RECENT: usize = 8;

    fn len(&self) -> usize {
        self.strings.len()
    }

    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.recently_used(text) {
            return shared;
        }
        let shared = match self.strings.get(text) {
            Some(shared) => Arc::clone(shared),
            None => {
                let shared: Arc<str> = Arc::from(text);
                self.strings.insert(Arc::clone(&shared));
                shared
            }
        };
        self.remember(&shared);
        shared
    }

    /// Like `intern` after cutting to [`MAX_BAN_TEXT_BYTES`], reusing the
    /// caller's allocation when the text is new and short enough.
    fn intern_shared(&mut self, text: &Arc<str>) -> Arc<str> {
        let kept = truncate_at_char_boundary(text, MAX_BAN_TEXT_BYTES);
        if kept.len() < text.len() || self.strings.contains(kept) {
            return self.intern(kept);
        }
        self.strings.insert(Arc::clone(text));
        Arc::clone(text)
    }

    fn recently_used(&self, text: &str) -> Option<Arc<str>> {
        self.recent
            .iter()
            .flatten()
            .find(|shared| shared.len() == text.len() && ***shared == *text)
            .cloned()
    }

    fn remember(&mut self, shared: &Arc<str>) {
        self.recent[self.next_recent] = Some(Arc::clone(shared));
        self.next_recent = (self.next_recent + 1) % Self::RECENT;
    }

    /// Forgets strings no ban refers to any more.
    fn drop_unused(&mut self) {
        self.recent = Default::default();
        self.strings.retain(|text| Arc::strong_count(text) > 1);
    }
}

/// Texts are cut at a char boundary by the one helper that cuts untrusted
/// text everywhere.
use crate::quote::cut as truncate_at_char_boundary;

// ---------------------------------------------------------------------------
// Records: encoding and decoding
// ---------------------------------------------------------------------------

/// One record as stored; strings borrow from the file buffer when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record<'a> {
    Ban {
        net: IpNet,
        created: u64,
        expires: u64,
        /// The net's history count after this ban (absolute, so replay
        /// never has to add).
        history_count: u32,
        reason: &'a str,
        source: &'a str,
    },
    Unban {
        net: IpNet,
    },
    Allow {
        net: IpNet,
    },
    Disallow {
        net: IpNet,
    },
    History {
        net: IpNet,
        count: u32,
        last_banned: u64,
    },
    /// Where a log reader stopped (a jail's file position or journal
    /// cursor); an empty `value` forgets the key.
    Cursor {
        key: &'a str,
        value: &'a str,
    },
    /// This host's own ban of `net`, kept while a longer ban of another
    /// host is the one in force (the active ban).
    Shadow {
        net: IpNet,
        created: u64,
        expires: u64,
        reason: &'a str,
        source: &'a str,
    },
    /// The shadowed own ban of `net` is gone (in force again, or lifted).
    Unshadow {
        net: IpNet,
    },
    /// Last record of a snapshot: proves the file is complete.
    SnapshotEnd {
        record_count: u64,
    },
}

fn ban_record_payload(record: &BanRecord, history_count: u32) -> Record<'_> {
    Record::Ban {
        net: record.net,
        created: record.created,
        expires: record.expires,
        history_count,
        reason: &record.reason,
        source: &record.source,
    }
}

/// Appends `[u32 len][u32 crc32(len ‖ payload)][payload]` to `out`.
fn encode_record(out: &mut Vec<u8>, record: &Record<'_>) {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    encode_payload(out, record);
    seal_record(out, start);
}

/// Fills in length and checksum of the record whose header begins at `start`.
fn seal_record(out: &mut [u8], start: usize) {
    let payload_start = start + RECORD_HEADER_LEN;
    let payload_len = (out.len() - payload_start) as u32;
    let len_bytes = payload_len.to_le_bytes();
    let crc = record_crc(len_bytes, &out[payload_start..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..payload_start].copy_from_slice(&crc.to_le_bytes());
}

fn record_crc(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

fn encode_payload(out: &mut Vec<u8>, record: &Record<'_>) {
    match record {
        Record::Ban {
            net,
            created,
            expires,
            history_count,
            reason,
            source,
        } => {
            out.push(KIND_BAN);
            encode_net(out, net);
            out.extend_from_slice(&created.to_le_bytes());
            out.extend_from_slice(&expires.to_le_bytes());
            out.extend_from_slice(&history_count.to_le_bytes());
            encode_text(out, reason, MAX_BAN_TEXT_BYTES);
            encode_text(out, source, MAX_BAN_TEXT_BYTES);
        }
        Record::Unban { net } => encode_net_record(out, KIND_UNBAN, net),
        Record::Allow { net } => encode_net_record(out, KIND_ALLOW, net),
        Record::Disallow { net } => encode_net_record(out, KIND_DISALLOW, net),
        Record::History {
            net,
            count,
            last_banned,
        } => {
            out.push(KIND_HISTORY);
            encode_net(out, net);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&last_banned.to_le_bytes());
        }
        Record::Shadow {
            net,
            created,
            expires,
            reason,
            source,
        } => {
            out.push(KIND_SHADOW);
            encode_net(out, net);
            out.extend_from_slice(&created.to_le_bytes());
            out.extend_from_slice(&expires.to_le_bytes());
            encode_text(out, reason, MAX_BAN_TEXT_BYTES);
            encode_text(out, source, MAX_BAN_TEXT_BYTES);
        }
        Record::Unshadow { net } => encode_net_record(out, KIND_UNSHADOW, net),
        Record::Cursor { key, value } => {
            out.push(KIND_CURSOR);
            encode_text(out, key, MAX_TEXT_BYTES);
            encode_text(out, value, MAX_TEXT_BYTES);
        }
        Record::SnapshotEnd { record_count } => {
            out.push(KIND_SNAPSHOT_END);
            out.extend_from_slice(&record_count.to_le_bytes());
        }
    }
}

fn encode_net_record(out: &mut Vec<u8>, kind: u8, net: &IpNet) {
    out.push(kind);
    encode_net(out, net);
}

fn encode_net(out: &mut Vec<u8>, net: &IpNet) {
    match net {
        IpNet::V4(v4) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&v4.addr().octets());
        }
        IpNet::V6(v6) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&v6.addr().octets());
        }
    }
    out.push(net.prefix_len());
}

fn encode_text(out: &mut Vec<u8>, text: &str, limit: usize) {
    let kept = truncate_at_char_boundary(text, limit);
    out.extend_from_slice(&(kept.len() as u16).to_le_bytes());
    out.extend_from_slice(kept.as_bytes());
}

/// Cursor over one record payload; every read is bounds-checked. The
/// methods are forced inline: they run for every field of a million-record
/// load, and inlining them measurably speeds up the decoding pass.
struct PayloadReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> PayloadReader<'a> {
    #[inline(always)]
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| {
            format!(
                "record payload ends early (needs {len} bytes at {})",
                self.pos
            )
        })?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let taken = self.take(N)?;
        taken.try_into().map_err(|_| format!("expected {N} bytes"))
    }

    #[inline(always)]
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    #[inline(always)]
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn net(&mut self) -> Result<IpNet, String> {
        match self.u8()? {
            FAMILY_V4 => {
                let address = Ipv4Addr::from(self.array::<4>()?);
                let prefix_len = self.u8()?;
                Ipv4Net::new(address, prefix_len)
                    .map(IpNet::V4)
                    .map_err(|_| format!("invalid IPv4 prefix length {prefix_len}"))
            }
            FAMILY_V6 => {
                let address = Ipv6Addr::from(self.array::<16>()?);
                let prefix_len = self.u8()?;
                Ipv6Net::new(address, prefix_len)
                    .map(IpNet::V6)
                    .map_err(|_| format!("invalid IPv6 prefix length {prefix_len}"))
            }
            family => Err(format!("unknown address family {family}")),
        }
    }

    #[inline(always)]
    fn text(&mut self) -> Result<&'a str, String> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| "text is not valid UTF-8".to_string())
    }

    fn finish(self) -> Result<(), String> {
        let trailing = self.bytes.len() - self.pos;
        if trailing == 0 {
            Ok(())
        } else {
            Err(format!("{trailing} unexpected trailing bytes in record"))
        }
    }
}

fn decode_payload(payload: &[u8]) -> Result<Record<'_>, String> {
    let mut reader = PayloadReader {
        bytes: payload,
        pos: 0,
    };
    let record = match reader.u8()? {
        KIND_BAN => Record::Ban {
            net: reader.net()?,
            created: reader.u64()?,
            expires: reader.u64()?,
            history_count: reader.u32()?,
            reason: reader.text()?,
            source: reader.text()?,
        },
        KIND_UNBAN => Record::Unban { net: reader.net()? },
        KIND_ALLOW => Record::Allow { net: reader.net()? },
        KIND_DISALLOW => Record::Disallow { net: reader.net()? },
        KIND_HISTORY => Record::History {
            net: reader.net()?,
            count: reader.u32()?,
            last_banned: reader.u64()?,
        },
        KIND_CURSOR => Record::Cursor {
            key: reader.text()?,
            value: reader.text()?,
        },
        KIND_SHADOW => Record::Shadow {
            net: reader.net()?,
            created: reader.u64()?,
            expires: reader.u64()?,
            reason: reader.text()?,
            source: reader.text()?,
        },
        KIND_UNSHADOW => Record::Unshadow { net: reader.net()? },
        KIND_SNAPSHOT_END => Record::SnapshotEnd {
            record_count: reader.u64()?,
        },
        kind => return Err(format!("unknown record kind {kind}")),
    };
    reader.finish()?;
    Ok(record)
}

/// What sits at one offset of a file buffer.
enum Frame<'a> {
    /// A record whose length and checksum are intact; `next` is the offset
    /// just past it.
    Intact {
        payload: &'a [u8],
        next: usize,
    },
    EndOfData,
    /// Torn or damaged bytes.
    Damaged(&'static str),
}

fn read_frame(bytes: &[u8], offset: usize) -> Frame<'_> {
    let rest = bytes.get(offset..).unwrap_or_default();
    if rest.is_empty() {
        return Frame::EndOfData;
    }
    let (Some(len_bytes), Some(crc_bytes)) = (le_array::<4>(rest, 0), le_array::<4>(rest, 4))
    else {
        return Frame::Damaged("record header cut short");
    };
    let payload_len = u32::from_le_bytes(len_bytes) as usize;
    if payload_len > MAX_PAYLOAD_LEN {
        return Frame::Damaged("implausible record length");
    }
    let Some(payload) = rest.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + payload_len) else {
        return Frame::Damaged("record payload cut short");
    };
    if record_crc(len_bytes, payload) != u32::from_le_bytes(crc_bytes) {
        return Frame::Damaged("record checksum mismatch");
    }
    Frame::Intact {
        payload,
        next: offset + RECORD_HEADER_LEN + payload_len,
    }
}

fn le_array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

/// How far the frames after a resync point must chain on without a gap
/// (unless they reach the end of the file) before they are believed: more
/// than any one record can span. Text inside a record (a reason another
/// host sent) may hold bytes shaped like a whole frame, CRC and all; such
/// a fake lies inside one record, and that record's next field (the ban's
/// source) breaks its chain within these bytes.
const RESYNC_PROOF_BYTES: usize = RECORD_HEADER_LEN + MAX_PAYLOAD_LEN;

/// Where the next record to believe begins after the damaged frame at
/// `damaged`, if any. First where the damaged frame's own length field
/// says (when that is plausible and a sound frame sits there: damage in a
/// payload or CRC skips exactly one record); else the first later offset
/// holding a sound frame (length within bounds, CRC good, payload decodes)
/// whose chain of sound frames reaches the end of the file or runs on for
/// [`RESYNC_PROOF_BYTES`].
fn resync(bytes: &[u8], damaged: usize) -> Option<usize> {
    if let Some(len_bytes) = le_array::<4>(bytes, damaged) {
        let claimed = u32::from_le_bytes(len_bytes) as usize;
        let next = damaged + RECORD_HEADER_LEN + claimed;
        if claimed <= MAX_PAYLOAD_LEN && next < bytes.len() && sound_frame(bytes, next).is_some() {
            return Some(next);
        }
    }
    (damaged + 1..bytes.len()).find(|&candidate| chain_holds(bytes, candidate))
}

/// The offset after the frame at `offset` if that frame is intact and
/// holds a well-formed record.
fn sound_frame(bytes: &[u8], offset: usize) -> Option<usize> {
    match read_frame(bytes, offset) {
        Frame::Intact { payload, next } if decode_payload(payload).is_ok() => Some(next),
        _ => None,
    }
}

fn chain_holds(bytes: &[u8], start: usize) -> bool {
    let mut offset = start;
    while let Some(next) = sound_frame(bytes, offset) {
        if next == bytes.len() || next - start >= RESYNC_PROOF_BYTES {
            return true;
        }
        offset = next;
    }
    false
}

/// What a lenient walk over a file meets, in file order.
enum Found<'a> {
    Record {
        offset: usize,
        record: Record<'a>,
    },
    /// An intact frame (length and CRC good) whose payload does not decode.
    Undecodable {
        offset: usize,
        len: usize,
        detail: String,
    },
    /// Bytes no record could be read from, up to where the walk resumed
    /// (`resumed`) or to the end of the file.
    Gap {
        offset: usize,
        len: usize,
        detail: &'static str,
        resumed: bool,
    },
}

/// Walks the frames from `start` to the end of `bytes`, stepping over
/// damage with [`resync`], and hands each find to `visit`.
fn walk_leniently<'a>(bytes: &'a [u8], start: usize, mut visit: impl FnMut(Found<'a>)) {
    let mut offset = start;
    loop {
        match read_frame(bytes, offset) {
            Frame::EndOfData => return,
            Frame::Intact { payload, next } => {
                visit(match decode_payload(payload) {
                    Ok(record) => Found::Record { offset, record },
                    Err(detail) => Found::Undecodable {
                        offset,
                        len: next - offset,
                        detail,
                    },
                });
                offset = next;
            }
            Frame::Damaged(detail) => {
                let resumed = resync(bytes, offset);
                let end = resumed.unwrap_or(bytes.len());
                visit(Found::Gap {
                    offset,
                    len: end - offset,
                    detail,
                    resumed: resumed.is_some(),
                });
                match resumed {
                    Some(next) => offset = next,
                    None => return,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Files: headers, replay, atomic replacement
// ---------------------------------------------------------------------------

fn encode_file_header(magic: &[u8; 8], generation: u64) -> [u8; FILE_HEADER_LEN] {
    let mut header = [0u8; FILE_HEADER_LEN];
    header[..HEADER_VERSION_OFFSET].copy_from_slice(magic);
    header[HEADER_VERSION_OFFSET..HEADER_GENERATION_OFFSET]
        .copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[HEADER_GENERATION_OFFSET..FILE_HEADER_CRC_OFFSET]
        .copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&header[..FILE_HEADER_CRC_OFFSET]);
    header[FILE_HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Validates the header of `bytes` and returns its generation.
fn parse_file_header(bytes: &[u8], magic: &[u8; 8], path: &Path) -> Result<u64, StoreError> {
    let header = bytes
        .get(..FILE_HEADER_LEN)
        .ok_or_else(|| corrupt(path, 0, "file is shorter than its header"))?;
    if header[..HEADER_VERSION_OFFSET] != magic[..] {
        return Err(corrupt(
            path,
            0,
            "bad magic: not an orch ban store file of this kind",
        ));
    }
    let version = le_array::<4>(header, HEADER_VERSION_OFFSET).map_or(0, u32::from_le_bytes);
    if version != FORMAT_VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let stored_crc = le_array::<4>(header, FILE_HEADER_CRC_OFFSET).map(u32::from_le_bytes);
    if stored_crc != Some(crc32fast::hash(&header[..FILE_HEADER_CRC_OFFSET])) {
        return Err(corrupt(path, 0, "header checksum mismatch"));
    }
    le_array::<8>(header, HEADER_GENERATION_OFFSET)
        .map(u64::from_le_bytes)
        .ok_or_else(|| corrupt(path, HEADER_GENERATION_OFFSET, "header generation missing"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileRole {
    Snapshot,
    Log,
}

/// Where replay of a log stopped early because of a torn tail.
struct TornTail {
    offset: usize,
    detail: &'static str,
}

/// Decodes every record after the header of `bytes` in file order and hands
/// it, with its offset, to `visit`. In the log a damaged frame with nothing
/// believable after it ends the walk (torn tail: a crash mid-append); one
/// with sound records after it (see [`resync`]) is
/// [`StoreError::LogDamaged`]. In the snapshot any damage, or a missing end
/// marker, is corruption, as is any record `visit` rejects.
fn walk_records<'a>(
    bytes: &'a [u8],
    role: FileRole,
    path: &Path,
    mut visit: impl FnMut(usize, Record<'a>) -> Result<(), String>,
) -> Result<Option<TornTail>, StoreError> {
    let mut offset = FILE_HEADER_LEN;
    let mut records_visited: u64 = 0;
    let mut end_marker_seen = false;
    loop {
        let (payload, next) = match read_frame(bytes, offset) {
            Frame::Intact { payload, next } => (payload, next),
            Frame::EndOfData => break,
            Frame::Damaged(detail) if role == FileRole::Log => {
                let Some(resumed) = resync(bytes, offset) else {
                    return Ok(Some(TornTail { offset, detail }));
                };
                let mut intact_after = 0;
                walk_leniently(bytes, resumed, |found| {
                    intact_after += u64::from(matches!(found, Found::Record { .. }));
                });
                return Err(StoreError::LogDamaged {
                    path: path.to_path_buf(),
                    offset: offset as u64,
                    detail: detail.to_string(),
                    intact_after,
                });
            }
            Frame::Damaged(detail) => return Err(corrupt(path, offset, detail)),
        };
        if end_marker_seen {
            return Err(corrupt(path, offset, "data after the snapshot end marker"));
        }
        let record = decode_payload(payload).map_err(|detail| corrupt(path, offset, detail))?;
        let visited = match record {
            Record::SnapshotEnd { record_count } => {
                end_marker_seen = true;
                check_end_marker(role, record_count, records_visited)
            }
            record => {
                records_visited += 1;
                visit(offset, record)
            }
        };
        visited.map_err(|detail| corrupt(path, offset, detail))?;
        offset = next;
    }
    if role == FileRole::Snapshot && !end_marker_seen {
        return Err(corrupt(
            path,
            offset,
            "snapshot is incomplete (no end marker)",
        ));
    }
    Ok(None)
}

/// Replays a snapshot or log into `state`; for a log, also returns where a
/// torn tail begins (nothing after it was applied).
///
/// Inserting a million bans in file order makes nearly every insert a cache
/// and TLB miss on the ~150 MB ban table, which dominated load time. Since
/// records about different nets commute, replay instead reads the file
/// strictly sequentially three times: `scan_file` hashes the net of each
/// net-keyed record with the table's hasher; the decoding walk validates
/// every record, applies allowlist records at once and stages net records
/// by the table region their net lands in, keeping file order within a
/// region (and so within a net); finally the staged changes are applied
/// region by region, sweeping the table instead of hopping around it.
fn replay_file(
    state: &mut MemState,
    bytes: &[u8],
    role: FileRole,
    path: &Path,
    now: u64,
) -> Result<Option<TornTail>, StoreError> {
    let scan = scan_file(bytes, state.bans.hasher());
    state.reserve(scan.ban_records, scan.history_records);
    let placement = TablePlacement::of(&state.bans);
    let mut staging = NetChangeStaging::new(&placement, &scan.net_hashes);
    drop(scan);
    let torn = walk_records(bytes, role, path, |_, record| {
        match state.net_change(&record, now) {
            Some(change) => staging.stage(change)?,
            None => state.apply_side_record(&record, now),
        }
        Ok(())
    })?;
    for change in staging.into_changes() {
        state.apply_net_change(change);
    }
    Ok(torn)
}

/// What a quick first pass over a file learns for sizing and placement.
struct FileScan {
    /// Table hash of the net of each Ban, Unban and History record, in file
    /// order: exactly the records `MemState::net_change` maps to a change.
    net_hashes: Vec<u64>,
    ban_records: usize,
    history_records: usize,
}

/// Walks the intact frames up to the first problem (the decoding walk
/// reports it) and hashes the nets of net-keyed records.
fn scan_file(bytes: &[u8], hasher: &RandomState) -> FileScan {
    let mut scan = FileScan {
        net_hashes: Vec::new(),
        ban_records: 0,
        history_records: 0,
    };
    let mut offset = FILE_HEADER_LEN;
    while let Frame::Intact { payload, next } = read_frame(bytes, offset) {
        let kind = payload.first().copied();
        if matches!(kind, Some(KIND_BAN | KIND_UNBAN | KIND_HISTORY)) {
            let Some(net) = leading_net(payload) else {
                break;
            };
            scan.net_hashes.push(hasher.hash_one(net));
            scan.ban_records += usize::from(kind == Some(KIND_BAN));
            scan.history_records += usize::from(kind == Some(KIND_HISTORY));
        }
        offset = next;
    }
    scan
}

/// The net right after the kind byte, decoded as `decode_payload` does.
fn leading_net(payload: &[u8]) -> Option<IpNet> {
    let mut reader = PayloadReader {
        bytes: payload,
        pos: 1,
    };
    reader.net().ok()
}

/// Predicts which region of the ban table a hash lands in: hashbrown keeps
/// power-of-two buckets at most 7/8 full and starts probing at
/// `hash & (buckets - 1)`. A wrong guess costs speed, never correctness.
struct TablePlacement {
    bucket_mask: u64,
    region_shift: u32,
}

impl TablePlacement {
    /// 1024 regions: for a million bans one region is ~150 KB of table.
    const MAX_REGION_BITS: u32 = 10;

    fn of(table: &HashSet<BanSlot>) -> TablePlacement {
        let buckets = (table.capacity().saturating_mul(8) / 7)
            .max(1)
            .next_power_of_two() as u64;
        let bucket_bits = buckets.trailing_zeros();
        TablePlacement {
            bucket_mask: buckets - 1,
            region_shift: bucket_bits.saturating_sub(Self::MAX_REGION_BITS),
        }
    }

    fn region_count(&self) -> usize {
        (self.bucket_mask >> self.region_shift) as usize + 1
    }

    fn region(&self, hash: u64) -> u16 {
        // At most MAX_REGION_BITS bits remain after the shift.
        ((hash & self.bucket_mask) >> self.region_shift) as u16
    }
}

/// Net changes grouped by table region, file order kept within a region: a
/// counting sort whose counts come from the scan pass.
struct NetChangeStaging {
    /// Region of each net-keyed record, in file order.
    regions_in_file_order: Vec<u16>,
    staged_count: usize,
    next_slot: Vec<usize>,
    region_end: Vec<usize>,
    slots: Vec<Option<NetChange>>,
}

impl NetChangeStaging {
    fn new(placement: &TablePlacement, net_hashes: &[u64]) -> NetChangeStaging {
        let regions_in_file_order: Vec<u16> = net_hashes
            .iter()
            .map(|&hash| placement.region(hash))
            .collect();
        let mut region_sizes = vec![0usize; placement.region_count()];
        for &region in &regions_in_file_order {
            region_sizes[usize::from(region)] += 1;
        }
        let mut next_slot = Vec::with_capacity(region_sizes.len());
        let mut region_end = Vec::with_capacity(region_sizes.len());
        let mut boundary = 0;
        for size in region_sizes {
            next_slot.push(boundary);
            boundary += size;
            region_end.push(boundary);
        }
        NetChangeStaging {
            regions_in_file_order,
            staged_count: 0,
            next_slot,
            region_end,
            slots: vec![None; net_hashes.len()],
        }
    }

    /// Places the next net change (in file order) into its region.
    fn stage(&mut self, change: NetChange) -> Result<(), String> {
        let inconsistent = || "records differ between load passes".to_string();
        let region = self
            .regions_in_file_order
            .get(self.staged_count)
            .map(|&region| usize::from(region))
            .ok_or_else(inconsistent)?;
        let slot_index = self.next_slot[region];
        if slot_index >= self.region_end[region] {
            return Err(inconsistent());
        }
        self.slots[slot_index] = Some(change);
        self.next_slot[region] += 1;
        self.staged_count += 1;
        Ok(())
    }

    fn into_changes(self) -> impl Iterator<Item = NetChange> {
        self.slots.into_iter().flatten()
    }
}

fn check_end_marker(role: FileRole, record_count: u64, records_applied: u64) -> Result<(), String> {
    if role == FileRole::Log {
        return Err("snapshot end marker inside the log".to_string());
    }
    if record_count != records_applied {
        return Err(format!(
            "end marker counts {record_count} records but {records_applied} were read"
        ));
    }
    Ok(())
}

struct LoadedSnapshot {
    generation: u64,
    len: u64,
}

/// Replays the snapshot at `path` into `state`; `None` if there is none.
fn load_snapshot(
    path: &Path,
    state: &mut MemState,
    now: u64,
) -> Result<Option<LoadedSnapshot>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("read", path, error)),
    };
    let generation = parse_file_header(&bytes, &SNAPSHOT_MAGIC, path)?;
    replay_file(state, &bytes, FileRole::Snapshot, path, now)?;
    Ok(Some(LoadedSnapshot {
        generation,
        len: bytes.len() as u64,
    }))
}

/// Rebuilds a damaged (or missing) current snapshot from the previous
/// snapshot and the log appended to it, which is exactly what compaction
/// folded into the current one. Logs loudly, keeps the damaged file as
/// `bans.snap.damaged-<now>`, installs the rebuilt snapshot (so the log of
/// the current generation applies on top as usual) and returns it. When
/// the previous snapshot or its log is missing or damaged too, or is not
/// the generation just before the damaged one, returns `damage` with why.
fn fall_back_to_previous(
    dir: &Path,
    state: &mut MemState,
    now: u64,
    damage: StoreError,
) -> Result<LoadedSnapshot, StoreError> {
    let previous = match load_snapshot(&dir.join(SNAPSHOT_PREV_FILE), state, now) {
        Ok(Some(previous)) => previous,
        Ok(None) => {
            let why = format!("there is no {SNAPSHOT_PREV_FILE} (the first compaction makes one)");
            return Err(fallback_failed(damage, &why));
        }
        Err(error) => return Err(fallback_failed(damage, &damage_summary(&error))),
    };
    let generation = previous.generation;
    let damaged_generation = read_file_generation(&dir.join(SNAPSHOT_FILE), &SNAPSHOT_MAGIC);
    if let Some(damaged) = damaged_generation.filter(|&damaged| damaged != generation + 1) {
        let why = format!(
            "{SNAPSHOT_PREV_FILE} is generation {generation}, the damaged snapshot {damaged}: \
             the logs between them are gone"
        );
        return Err(fallback_failed(damage, &why));
    }
    if let Some(newer) = read_file_generation(&dir.join(LOG_FILE), &LOG_MAGIC)
        .filter(|&current| current > generation + 1)
    {
        let why = format!(
            "{SNAPSHOT_PREV_FILE} is generation {generation}, {LOG_FILE} {newer}: \
             the logs between them are gone"
        );
        return Err(fallback_failed(damage, &why));
    }
    let Some(log_path) = [LOG_PREV_FILE, LOG_FILE]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| read_file_generation(path, &LOG_MAGIC) == Some(generation))
    else {
        let why = format!("no log of its generation {generation} is left");
        return Err(fallback_failed(damage, &why));
    };
    let replayed = fs::read(&log_path)
        .map_err(|error| io_error("read", &log_path, error))
        .and_then(|bytes| replay_file(state, &bytes, FileRole::Log, &log_path, now));
    match replayed {
        Ok(None) => {}
        Ok(Some(torn)) => tracing::warn!(
            path = %log_path.display(),
            offset = torn.offset,
            problem = torn.detail,
            "ban store: the previous snapshot's log ends in a torn record; replayed up to it"
        ),
        Err(error) => return Err(fallback_failed(damage, &damage_summary(&error))),
    }
    let rebuilt_generation = generation + 1;
    let len = write_snapshot_tmp(dir, rebuilt_generation, state, now)?;
    let kept = keep_aside(dir, SNAPSHOT_FILE, now)?;
    rename_into_place(dir, SNAPSHOT_TMP_FILE, SNAPSHOT_FILE)?;
    sync_dir(dir)?;
    let kept = kept.map_or_else(
        || "nothing (it was missing)".to_string(),
        |kept| kept.display().to_string(),
    );
    tracing::warn!(
        damage = %damage_summary(&damage),
        damaged_file_kept_as = %kept,
        rebuilt_from = %format!("{SNAPSHOT_PREV_FILE} + {}", log_path.display()),
        "BAN STORE SNAPSHOT DAMAGED: rebuilt it from the previous snapshot and its log; \
         no ban is lost. Check the disk; `orch store verify` shows what else is damaged"
    );
    Ok(LoadedSnapshot {
        generation: rebuilt_generation,
        len,
    })
}

/// `damage` with why the previous snapshot could not stand in for it.
fn fallback_failed(damage: StoreError, why: &str) -> StoreError {
    match damage {
        StoreError::Corrupt {
            path,
            offset,
            detail,
        } => StoreError::Corrupt {
            path,
            offset,
            detail: format!("{detail}; the previous snapshot cannot stand in for it: {why}"),
        },
        other => other,
    }
}

/// One line about a store error, without the repair hint.
fn damage_summary(error: &StoreError) -> String {
    match error {
        StoreError::Corrupt {
            path,
            offset,
            detail,
        }
        | StoreError::LogDamaged {
            path,
            offset,
            detail,
            ..
        } => format!("{} is damaged at byte {offset}: {detail}", path.display()),
        other => other.to_string(),
    }
}

/// The generation in the header of the file at `path`, if it has a sound
/// header of the kind `magic` (reads the header only).
fn read_file_generation(path: &Path, magic: &[u8; 8]) -> Option<u64> {
    let mut header = Vec::with_capacity(FILE_HEADER_LEN);
    File::open(path)
        .ok()?
        .take(FILE_HEADER_LEN as u64)
        .read_to_end(&mut header)
        .ok()?;
    parse_file_header(&header, magic, path).ok()
}

/// Keeps the current snapshot and log as the previous ones (hard links,
/// each swapped in by rename), so that the next snapshot, if damaged, can
/// be rebuilt from them.
fn keep_as_previous(dir: &Path) -> Result<(), StoreError> {
    for (current, previous) in [
        (SNAPSHOT_FILE, SNAPSHOT_PREV_FILE),
        (LOG_FILE, LOG_PREV_FILE),
    ] {
        link_as(dir, current, PREV_LINK_TMP_FILE)?;
        rename_into_place(dir, PREV_LINK_TMP_FILE, previous)?;
    }
    sync_dir(dir)
}

/// Hard-links `dir/name` as `dir/link_name`, replacing a leftover link.
fn link_as(dir: &Path, name: &str, link_name: &str) -> Result<(), StoreError> {
    let link = dir.join(link_name);
    let _ = fs::remove_file(&link);
    fs::hard_link(dir.join(name), &link).map_err(|error| io_error("link", &dir.join(name), error))
}

/// Keeps `dir/name` as `dir/name.damaged-<now>` (a hard link, so the file
/// stays in place until it is replaced); `None` if there is no such file.
fn keep_aside(dir: &Path, name: &str, now: u64) -> Result<Option<PathBuf>, StoreError> {
    if !dir.join(name).exists() {
        return Ok(None);
    }
    let mut kept_name = format!("{name}.damaged-{now}");
    let mut attempt = 1;
    while dir.join(&kept_name).exists() {
        attempt += 1;
        kept_name = format!("{name}.damaged-{now}.{attempt}");
    }
    fs::hard_link(dir.join(name), dir.join(&kept_name))
        .map_err(|error| io_error("keep aside", &dir.join(name), error))?;
    Ok(Some(dir.join(kept_name)))
}

struct OpenedLog {
    file: File,
    len: u64,
}

/// Replays the log of `snapshot_generation` into `state`, cutting a torn
/// tail; a missing, headerless or stale (pre-compaction) log is replaced by
/// an empty one without being replayed.
fn open_log(
    dir: &Path,
    snapshot_generation: u64,
    state: &mut MemState,
    now: u64,
) -> Result<OpenedLog, StoreError> {
    let path = dir.join(LOG_FILE);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return fresh_log(dir, snapshot_generation);
        }
        Err(error) => return Err(io_error("open", &path, error)),
    };
    let bytes = read_whole(&file, &path)?;
    if bytes.len() < FILE_HEADER_LEN {
        tracing::warn!(
            path = %path.display(),
            len = bytes.len(),
            "ban store: log has no complete header; starting an empty log"
        );
        return fresh_log(dir, snapshot_generation);
    }
    let log_generation = parse_file_header(&bytes, &LOG_MAGIC, &path)?;
    if log_generation < snapshot_generation {
        tracing::warn!(
            path = %path.display(),
            log_generation,
            snapshot_generation,
            "ban store: ignoring a log already folded into the snapshot (crash during compaction)"
        );
        return fresh_log(dir, snapshot_generation);
    }
    if log_generation > snapshot_generation {
        let detail = format!(
            "log generation {log_generation} is newer than snapshot generation \
             {snapshot_generation} (snapshot lost or replaced?)"
        );
        return Err(corrupt(&path, HEADER_GENERATION_OFFSET, detail));
    }
    let valid_len = match replay_file(state, &bytes, FileRole::Log, &path, now)? {
        Some(torn) => cut_torn_tail(&file, &path, &torn, bytes.len())?,
        None => bytes.len(),
    };
    Ok(OpenedLog {
        file,
        len: valid_len as u64,
    })
}

fn fresh_log(dir: &Path, generation: u64) -> Result<OpenedLog, StoreError> {
    Ok(OpenedLog {
        file: create_log(dir, generation)?,
        len: FILE_HEADER_LEN as u64,
    })
}

fn cut_torn_tail(
    file: &File,
    path: &Path,
    torn: &TornTail,
    file_len: usize,
) -> Result<usize, StoreError> {
    tracing::warn!(
        path = %path.display(),
        offset = torn.offset,
        dropped_bytes = file_len - torn.offset,
        problem = torn.detail,
        "ban store: log ends in a torn or damaged record (crash mid-write?); truncating it away"
    );
    file.set_len(torn.offset as u64)
        .and_then(|()| file.sync_data())
        .map_err(|error| io_error("truncate torn tail of", path, error))?;
    Ok(torn.offset)
}

fn read_whole(mut file: &File, path: &Path) -> Result<Vec<u8>, StoreError> {
    let expected_len = file.metadata().map(|meta| meta.len() as usize).unwrap_or(0);
    let mut bytes = Vec::with_capacity(expected_len);
    file.read_to_end(&mut bytes)
        .map_err(|error| io_error("read", path, error))?;
    Ok(bytes)
}

/// Atomically installs an empty log of `generation` and returns it open for
/// reading and writing.
fn create_log(dir: &Path, generation: u64) -> Result<File, StoreError> {
    let header = encode_file_header(&LOG_MAGIC, generation);
    let (file, _) = write_synced_tmp(dir, LOG_TMP_FILE, |out| out.write_all(&header))?;
    rename_into_place(dir, LOG_TMP_FILE, LOG_FILE)?;
    sync_dir(dir)?;
    Ok(file)
}

/// Installs a snapshot holding nothing (first open of a new store).
fn write_empty_snapshot(dir: &Path, generation: u64) -> Result<u64, StoreError> {
    let empty = MemState::default();
    let written = write_snapshot_tmp(dir, generation, &empty, 0)?;
    rename_into_place(dir, SNAPSHOT_TMP_FILE, SNAPSHOT_FILE)?;
    sync_dir(dir)?;
    Ok(written)
}

/// Writes `state` as a complete, fsynced snapshot of `generation` to the
/// tmp file; returns its length. Bans expired at `now` become history.
fn write_snapshot_tmp(
    dir: &Path,
    generation: u64,
    state: &MemState,
    now: u64,
) -> Result<u64, StoreError> {
    let (_, written) = write_synced_tmp(dir, SNAPSHOT_TMP_FILE, |out| {
        out.write_all(&encode_file_header(&SNAPSHOT_MAGIC, generation))?;
        write_snapshot_records(out, state, now)
    })?;
    Ok(written)
}

fn write_snapshot_records(
    out: &mut BufWriter<&File>,
    state: &MemState,
    now: u64,
) -> io::Result<()> {
    let mut scratch = Vec::with_capacity(256);
    let mut record_count: u64 = 0;
    let mut emit = |out: &mut BufWriter<&File>, record: &Record<'_>| {
        scratch.clear();
        encode_record(&mut scratch, record);
        record_count += 1;
        out.write_all(&scratch)
    };
    // Each net has at most one Ban or History record here, so their order
    // does not matter (see `replay_file`).
    for BanSlot(ban) in &state.bans {
        let history = state.active_history(ban);
        if ban.expires > now {
            emit(out, &ban_record_payload(ban, history.count))?;
        } else {
            emit(out, &history_record(ban.net, history))?;
        }
    }
    for (net, history) in &state.idle_history {
        if history_is_retained(history, now) {
            emit(out, &history_record(*net, *history))?;
        }
    }
    for net in &state.allows {
        emit(out, &Record::Allow { net: *net })?;
    }
    for (key, value) in &state.cursors {
        emit(out, &Record::Cursor { key, value })?;
    }
    for shadow in state.shadows.values() {
        if shadow.expires > now {
            emit(out, &shadow_record(shadow))?;
        }
    }
    let mut end = Vec::with_capacity(32);
    encode_record(&mut end, &Record::SnapshotEnd { record_count });
    out.write_all(&end)
}

fn shadow_record(record: &BanRecord) -> Record<'_> {
    Record::Shadow {
        net: record.net,
        created: record.created,
        expires: record.expires,
        reason: &record.reason,
        source: &record.source,
    }
}

fn history_record(net: IpNet, history: BanHistory) -> Record<'static> {
    Record::History {
        net,
        count: history.count,
        last_banned: history.last_banned,
    }
}

/// Creates `dir/tmp_name` (0600, truncated), fills it through a buffer and
/// fsyncs it. Returns the open file and its length. The tmp file is removed
/// again if anything fails.
fn write_synced_tmp(
    dir: &Path,
    tmp_name: &str,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<(File, u64), StoreError> {
    let path = dir.join(tmp_name);
    let written = create_and_fill(&path, fill);
    if written.is_err() {
        let _ = fs::remove_file(&path);
    }
    written.map_err(|error| io_error("write", &path, error))
}

fn create_and_fill(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    {
        let mut out = BufWriter::with_capacity(SNAPSHOT_WRITE_BUFFER, &file);
        fill(&mut out)?;
        out.flush()?;
    }
    file.sync_all()?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

fn rename_into_place(dir: &Path, tmp_name: &str, final_name: &str) -> Result<(), StoreError> {
    let tmp_path = dir.join(tmp_name);
    fs::rename(&tmp_path, dir.join(final_name))
        .map_err(|error| io_error("rename", &tmp_path, error))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| io_error("fsync directory", dir, error))
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|error| io_error("create directory", dir, error))
}

/// Takes an exclusive, non-blocking lock so two processes never write the
/// same store.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|error| io_error("open lock file", &path, error))?;
    match file.try_lock() {
        Ok(()) => {
            // Names the holder for `orch store salvage` and `verify`; only
            // a hint, so a failure to write it changes nothing.
            let pid = format!("{}\n", std::process::id());
            let _ = file
                .set_len(0)
                .and_then(|()| file.write_all_at(pid.as_bytes(), 0));
            Ok(file)
        }
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: dir.to_path_buf(),
            pid: lock_file_pid(dir),
        }),
        Err(TryLockError::Error(error)) => Err(io_error("lock", &path, error)),
    }
}

/// The pid the last holder of the lock wrote into the lock file, if any.
/// It may be stale: whether the lock is held is another question.
fn lock_file_pid(dir: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(dir.join(LOCK_FILE))
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// Tmp files left by a crash mid-compaction were never renamed into place,
/// so they hold nothing the real files lack.
fn remove_leftover_tmp_files(dir: &Path) {
    for name in [SNAPSHOT_TMP_FILE, LOG_TMP_FILE, PREV_LINK_TMP_FILE] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "ban store: removed leftover tmp file")
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "ban store: cannot remove leftover tmp file"
                )
            }
        }
    }
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
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    pub(super) const NOW: u64 = 1_700_000_000;
    pub(super) const HOUR: u64 = 3600;

    pub(super) fn net(text: &str) -> IpNet {
        text.parse().expect("test net parses")
    }

    pub(super) fn ban(text: &str, created: u64, expires: u64, reason: &str) -> BanRecord {
        BanRecord {
            net: net(text),
            created,
            expires,
            reason: Arc::from(reason),
            source: Arc::from("manual"),
        }
    }

    pub(super) fn open(dir: &Path) -> Store {
        Store::open(dir, NOW).expect("store opens")
    }

    pub(super) fn sorted_bans(store: &Store) -> Vec<BanRecord> {
        let mut bans: Vec<BanRecord> = store.bans().cloned().collect();
        bans.sort_by_key(|ban| ban.net);
        bans
    }

    fn file_len(path: &Path) -> u64 {
        fs::metadata(path).expect("metadata").len()
    }

    pub(super) fn log_path(dir: &Path) -> PathBuf {
        dir.join(LOG_FILE)
    }

    pub(super) fn snapshot_path(dir: &Path) -> PathBuf {
        dir.join(SNAPSHOT_FILE)
    }

    /// Appends a correctly framed record with arbitrary payload to the log.
    fn append_raw_record(dir: &Path, payload: &[u8]) {
        let mut framed = vec![0; RECORD_HEADER_LEN];
        framed.extend_from_slice(payload);
        seal_record(&mut framed, 0);
        let mut log = OpenOptions::new()
            .append(true)
            .open(log_path(dir))
            .expect("open log");
        log.write_all(&framed).expect("append");
    }

    fn append_garbage(dir: &Path, garbage: &[u8]) {
        let mut log = OpenOptions::new()
            .append(true)
            .open(log_path(dir))
            .expect("open log");
        log.write_all(garbage).expect("append");
    }

    fn expect_corrupt(result: Result<Store, StoreError>) -> (PathBuf, u64, String) {
        match result {
            Err(StoreError::Corrupt {
                path,
                offset,
                detail,
            }) => (path, offset, detail),
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("expected Corrupt, store opened"),
        }
    }

    #[test]
    fn new_store_creates_private_dir_and_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state").join("orch");
        let store = open(&dir);
        assert_eq!(store.dir(), dir.as_path());
        assert_eq!(store.ban_count(), 0);
        let dir_mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        for name in [SNAPSHOT_FILE, LOG_FILE, LOCK_FILE] {
            let mode = fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        assert_eq!(file_len(&log_path(&dir)), FILE_HEADER_LEN as u64);
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

    #[test]
    fn reason_and_source_are_truncated_at_char_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let long_reason = "é".repeat(600); // 1200 bytes
        let long_source = "x".repeat(5000);
        let mut record = ban("192.0.2.1/32", NOW, NOW + HOUR, &long_reason);
        record.source = Arc::from(long_source.as_str());
        {
            let mut store = open(dir.path());
            store.insert_bans(&[record]).unwrap();
            let stored = store.get_ban(&net("192.0.2.1/32")).unwrap();
            assert_eq!(stored.reason.len(), MAX_BAN_TEXT_BYTES);
            assert_eq!(&*stored.reason, "é".repeat(128));
            assert_eq!(stored.source.len(), MAX_BAN_TEXT_BYTES);
        }
        let store = open(dir.path());
        let stored = store.get_ban(&net("192.0.2.1/32")).unwrap();
        assert_eq!(&*stored.reason, "é".repeat(128));
        assert_eq!(stored.source.len(), MAX_BAN_TEXT_BYTES);
        assert_eq!(truncate_at_char_boundary("aé", 2), "a");
    }

    #[test]
    fn equal_strings_share_one_allocation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[
                    ban("192.0.2.1/32", NOW, NOW + HOUR, "sshd"),
                    ban("192.0.2.2/32", NOW, NOW + HOUR, "sshd"),
                ])
                .unwrap();
            let first = store.get_ban(&net("192.0.2.1/32")).unwrap();
            let second = store.get_ban(&net("192.0.2.2/32")).unwrap();
            assert!(Arc::ptr_eq(&first.reason, &second.reason));
        }
        let store = open(dir.path());
        let first = store.get_ban(&net("192.0.2.1/32")).unwrap();
        let second = store.get_ban(&net("192.0.2.2/32")).unwrap();
        assert!(Arc::ptr_eq(&first.reason, &second.reason));
        assert!(Arc::ptr_eq(&first.source, &second.source));
    }

    #[test]
    fn unused_strings_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let bans: Vec<BanRecord> = (0..200u32)
            .map(|i| {
                ban(
                    &format!("10.0.{}.{}/32", i / 256, i % 256),
                    NOW,
                    NOW + 1,
                    &format!("reason {i}"),
                )
            })
            .collect();
        store.insert_bans(&bans).unwrap();
        drop(bans);
        assert!(store.state.interner.len() >= 200);
        assert_eq!(store.purge_expired(NOW + 1).len(), 200);
        assert!(store.purge_expired(NOW + 2).is_empty());
        assert!(store.state.interner.len() <= 64);
    }

    #[test]
    fn torn_tail_garbage_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let valid_len = {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            store
                .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
                .unwrap();
            file_len(&log_path(dir.path()))
        };
        append_garbage(dir.path(), b"\x13\x00\x00\x00garbage that is not a record");
        {
            let mut store = open(dir.path());
            assert_eq!(store.ban_count(), 2);
            assert_eq!(file_len(&log_path(dir.path())), valid_len);
            store
                .insert_bans(&[ban("192.0.2.3/32", NOW, NOW + HOUR, "c")])
                .unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.ban_count(), 3);
    }

    #[test]
    fn record_cut_in_half_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let before_last = {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            let before_last = file_len(&log_path(dir.path()));
            store
                .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
                .unwrap();
            before_last
        };
        let full = file_len(&log_path(dir.path()));
        let log = OpenOptions::new()
            .write(true)
            .open(log_path(dir.path()))
            .unwrap();
        log.set_len(before_last + (full - before_last) / 2).unwrap();
        drop(log);
        {
            let mut store = open(dir.path());
            assert_eq!(store.ban_count(), 1);
            assert!(store.get_ban(&net("192.0.2.1/32")).is_some());
            assert_eq!(file_len(&log_path(dir.path())), before_last);
            store.remove_ban(&net("192.0.2.1/32")).unwrap();
            store
                .insert_bans(&[ban("192.0.2.3/32", NOW, NOW + HOUR, "c")])
                .unwrap();
        }
        let store = open(dir.path());
        let nets: Vec<IpNet> = sorted_bans(&store)
            .iter()
            .map(|record| record.net)
            .collect();
        assert_eq!(nets, vec![net("192.0.2.3/32")]);
    }

    #[test]
    fn zeroed_tail_and_cut_record_header_are_torn() {
        for tail in [&[0u8; 64][..], &[5, 0, 0][..]] {
            let dir = tempfile::tempdir().unwrap();
            {
                let mut store = open(dir.path());
                store.add_allow(net("192.0.2.0/24")).unwrap();
            }
            append_garbage(dir.path(), tail);
            let store = open(dir.path());
            assert_eq!(store.runtime_allows().count(), 1);
        }
    }

    #[test]
    fn bad_checksum_in_last_record_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            store
                .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
                .unwrap();
        }
        let mut bytes = fs::read(log_path(dir.path())).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(log_path(dir.path()), &bytes).unwrap();
        let store = open(dir.path());
        assert_eq!(store.ban_count(), 1);
    }

    #[test]
    fn intact_but_undecodable_log_record_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        append_raw_record(dir.path(), &[99, 1, 2, 3]);
        let (path, offset, detail) = expect_corrupt(Store::open(dir.path(), NOW));
        assert_eq!(path, log_path(dir.path()));
        assert_eq!(offset, FILE_HEADER_LEN as u64);
        assert!(detail.contains("unknown record kind 99"), "{detail}");
    }

    /// Fifty bans compacted into the snapshot, then the previous snapshot
    /// and log removed, as in a store that never compacted twice.
    fn store_without_previous_snapshot(dir: &Path) {
        let mut store = open(dir);
        let bans: Vec<BanRecord> = (0..50u32)
            .map(|i| ban(&format!("192.0.2.{i}/32"), NOW, NOW + HOUR, "scan"))
            .collect();
        store.insert_bans(&bans).unwrap();
        store.compact().unwrap();
        drop(store);
        fs::remove_file(dir.join(SNAPSHOT_PREV_FILE)).unwrap();
        fs::remove_file(dir.join(LOG_PREV_FILE)).unwrap();
    }

    #[test]
    fn damaged_snapshot_without_previous_is_corrupt_with_offset_and_repair_hint() {
        let dir = tempfile::tempdir().unwrap();
        store_without_previous_snapshot(dir.path());
        let mut bytes = fs::read(snapshot_path(dir.path())).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        fs::write(snapshot_path(dir.path()), &bytes).unwrap();
        let error = Store::open(dir.path(), NOW).expect_err("damaged snapshot");
        let message = error.to_string();
        let (path, offset, detail) = expect_corrupt(Err(error));
        assert_eq!(path, snapshot_path(dir.path()));
        assert!(
            offset >= FILE_HEADER_LEN as u64 && offset <= middle as u64,
            "{offset}"
        );
        assert!(detail.contains("there is no bans.snap.prev"), "{detail}");
        for needed in [
            snapshot_path(dir.path()).display().to_string(),
            format!("at byte {offset}"),
            "orch store verify".to_string(),
            "orch store salvage".to_string(),
        ] {
            assert!(message.contains(&needed), "{needed:?} missing in {message}");
        }
    }

    #[test]
    fn snapshot_without_end_marker_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let bytes = fs::read(snapshot_path(dir.path())).unwrap();
        fs::write(snapshot_path(dir.path()), &bytes[..FILE_HEADER_LEN]).unwrap();
        let (_, _, detail) = expect_corrupt(Store::open(dir.path(), NOW));
        assert!(detail.contains("no end marker"), "{detail}");
    }

    #[test]
    fn foreign_or_newer_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let mut bytes = fs::read(snapshot_path(dir.path())).unwrap();
        bytes[HEADER_VERSION_OFFSET] = 2;
        fs::write(snapshot_path(dir.path()), &bytes).unwrap();
        assert!(matches!(
            Store::open(dir.path(), NOW),
            Err(StoreError::UnsupportedVersion { found: 2, .. })
        ));
        bytes[..8].copy_from_slice(b"NOTORCH!");
        fs::write(snapshot_path(dir.path()), &bytes).unwrap();
        expect_corrupt(Store::open(dir.path(), NOW));
    }

    #[test]
    fn log_newer_than_snapshot_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        fs::write(log_path(dir.path()), encode_file_header(&LOG_MAGIC, 7)).unwrap();
        let (path, _, detail) = expect_corrupt(Store::open(dir.path(), NOW));
        assert_eq!(path, log_path(dir.path()));
        assert!(detail.contains("newer"), "{detail}");
    }

    #[test]
    fn missing_log_is_recreated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            store.compact().unwrap();
        }
        fs::remove_file(log_path(dir.path())).unwrap();
        let mut store = open(dir.path());
        assert_eq!(store.ban_count(), 1);
        store
            .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
            .unwrap();
        drop(store);
        assert_eq!(open(dir.path()).ban_count(), 2);
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
    fn compaction_turns_expired_bans_into_history() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            store
                .insert_bans(&[
                    ban("192.0.2.1/32", NOW, NOW + 10, "a"),
                    ban("192.0.2.1/32", NOW + 1, NOW + 10, "b"),
                ])
                .unwrap();
            store.purge_expired(NOW + 5); // advances the store's clock only
            assert_eq!(store.ban_count(), 1);
            store.latest_now = NOW + 10;
            store.compact().unwrap();
            assert_eq!(
                store.ban_count(),
                1,
                "memory keeps it until purge_expired reports it"
            );
        }
        let store = Store::open(dir.path(), NOW).unwrap();
        assert_eq!(store.ban_count(), 0, "snapshot holds no expired ban");
        assert_eq!(
            store.history(&net("192.0.2.1/32")),
            BanHistory {
                count: 2,
                last_banned: NOW + 1
            }
        );
    }

    /// State that exercises every kind of record, with the log not yet compacted.
    fn build_mixed_state(store: &mut Store) {
        store
            .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
            .unwrap();
        store
            .insert_bans(&[ban("192.0.2.1/32", NOW + 1, NOW + HOUR, "a")])
            .unwrap();
        store
            .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
            .unwrap();
        store.remove_ban(&net("192.0.2.2/32")).unwrap();
        store
            .insert_bans(&[ban("2001:db8::/48", NOW, NOW + HOUR, "c")])
            .unwrap();
        store.add_allow(net("198.51.100.0/24")).unwrap();
        store.add_allow(net("198.51.100.9/32")).unwrap();
        store.remove_allow(&net("198.51.100.9/32")).unwrap();
    }

    fn assert_mixed_state(store: &Store) {
        assert_eq!(store.ban_count(), 2);
        assert!(
            store.get_ban(&net("192.0.2.2/32")).is_none(),
            "unban must not be undone"
        );
        assert_eq!(
            store.history(&net("192.0.2.1/32")),
            BanHistory {
                count: 2,
                last_banned: NOW + 1
            }
        );
        assert_eq!(
            store.history(&net("192.0.2.2/32")),
            BanHistory {
                count: 1,
                last_banned: NOW
            }
        );
        assert_eq!(store.history(&net("2001:db8::/48")).count, 1);
        let allows: Vec<IpNet> = store.runtime_allows().copied().collect();
        assert_eq!(allows, vec![net("198.51.100.0/24")]);
    }

    #[test]
    fn crash_after_snapshot_rename_before_log_reset_replays_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let stale_log = {
            let mut store = open(dir.path());
            build_mixed_state(&mut store);
            let stale_log = fs::read(log_path(dir.path())).unwrap();
            store.compact().unwrap();
            stale_log
        };
        // Disk as if the crash hit between the snapshot rename and the log
        // replacement: new snapshot, old (fully folded-in) log.
        fs::write(log_path(dir.path()), &stale_log).unwrap();
        {
            let mut store = open(dir.path());
            assert_mixed_state(&store);
            assert_eq!(
                file_len(&log_path(dir.path())),
                FILE_HEADER_LEN as u64,
                "stale log replaced"
            );
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW + 2, NOW + HOUR, "a")])
                .unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.history(&net("192.0.2.1/32")).count, 3);
    }

    #[test]
    fn crash_before_snapshot_rename_keeps_old_files_authoritative() {
        let dir = tempfile::tempdir().unwrap();
        let (old_snapshot, old_log) = {
            let mut store = open(dir.path());
            build_mixed_state(&mut store);
            let saved = (
                fs::read(snapshot_path(dir.path())).unwrap(),
                fs::read(log_path(dir.path())).unwrap(),
            );
            store.compact().unwrap();
            saved
        };
        // Disk as if the crash hit after writing the tmp snapshot but before
        // renaming it: old snapshot and log, plus a (possibly partial) tmp.
        let new_snapshot = fs::read(snapshot_path(dir.path())).unwrap();
        fs::write(
            dir.path().join(SNAPSHOT_TMP_FILE),
            &new_snapshot[..new_snapshot.len() / 2],
        )
        .unwrap();
        fs::write(snapshot_path(dir.path()), &old_snapshot).unwrap();
        fs::write(log_path(dir.path()), &old_log).unwrap();
        let store = open(dir.path());
        assert_mixed_state(&store);
        assert!(
            !dir.path().join(SNAPSHOT_TMP_FILE).exists(),
            "leftover tmp removed"
        );
    }

    #[test]
    fn replaying_same_files_twice_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            build_mixed_state(&mut store);
        }
        for _ in 0..3 {
            let store = open(dir.path());
            assert_mixed_state(&store);
        }
    }

    #[test]
    fn second_open_of_same_dir_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path());
        assert!(matches!(
            Store::open(dir.path(), NOW),
            Err(StoreError::Locked { .. })
        ));
        drop(first);
        drop(open(dir.path()));
    }

    #[test]
    fn records_round_trip_through_encoding() {
        let records = [
            Record::Ban {
                net: net("2001:db8::/32"),
                created: 1,
                expires: u64::MAX,
                history_count: 7,
                reason: "r",
                source: "fleet:host-a",
            },
            Record::Unban {
                net: net("0.0.0.0/0"),
            },
            Record::Allow {
                net: net("::1/128"),
            },
            Record::Disallow {
                net: net("10.0.0.0/8"),
            },
            Record::History {
                net: net("192.0.2.1/32"),
                count: u32::MAX,
                last_banned: 9,
            },
            Record::SnapshotEnd { record_count: 5 },
        ];
        let mut encoded = vec![0; FILE_HEADER_LEN];
        for record in &records {
            encode_record(&mut encoded, record);
        }
        let mut offset = FILE_HEADER_LEN;
        for record in &records {
            let Frame::Intact { payload, next } = read_frame(&encoded, offset) else {
                panic!("frame at {offset} not intact");
            };
            assert_eq!(&decode_payload(payload).unwrap(), record);
            offset = next;
        }
        assert!(matches!(read_frame(&encoded, offset), Frame::EndOfData));
    }

    #[test]
    fn bad_prefix_family_and_trailing_bytes_are_rejected() {
        assert!(decode_payload(&[KIND_UNBAN, FAMILY_V4, 1, 2, 3, 4, 33]).is_err());
        assert!(decode_payload(&[KIND_UNBAN, 5, 1, 2, 3, 4, 32]).is_err());
        assert!(decode_payload(&[KIND_UNBAN, FAMILY_V4, 1, 2, 3, 4, 32, 0]).is_err());
        assert!(decode_payload(&[KIND_UNBAN, FAMILY_V4, 1, 2]).is_err());
        assert!(decode_payload(&[]).is_err());
        assert!(decode_payload(&[KIND_UNBAN, FAMILY_V4, 1, 2, 3, 4, 32]).is_ok());
    }

    /// Everything observable about a store, for comparing two of them.
    fn observable_state(
        store: &Store,
        nets: &[IpNet],
    ) -> (Vec<BanRecord>, Vec<BanHistory>, Vec<IpNet>) {
        let histories = nets.iter().map(|net| store.history(net)).collect();
        (
            sorted_bans(store),
            histories,
            store.runtime_allows().copied().collect(),
        )
    }

    /// Tiny deterministic generator so the test needs no extra crates.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % bound
        }
    }

    #[test]
    fn random_operations_replay_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let nets: Vec<IpNet> = (0..90u32)
            .map(|i| match i % 3 {
                0 => net(&format!("192.0.{}.{}/32", i / 256, i % 256)),
                1 => net(&format!("2001:db8:{i:x}::/48")),
                _ => net(&format!("10.{}.{}.0/24", i / 256, i % 256)),
            })
            .collect();
        let mut random = Lcg(7);
        let mut store = open(dir.path());
        for round in 0..4 {
            for step in 0..300u64 {
                let target = nets[random.below(nets.len() as u64) as usize];
                let at = NOW + round * 100 + step % 50;
                match random.below(10) {
                    0..=4 => {
                        let expires = at + 1 + random.below(400);
                        let mut record = ban(
                            "192.0.2.1/32",
                            at,
                            expires,
                            ["a", "b", "c"][step as usize % 3],
                        );
                        record.net = target;
                        store.insert_bans(&[record]).unwrap();
                    }
                    5 | 6 => {
                        store.remove_ban(&target).unwrap();
                    }
                    7 => {
                        store.add_allow(target).unwrap();
                    }
                    8 => {
                        store.remove_allow(&target).unwrap();
                    }
                    _ => {
                        store.purge_expired(at);
                    }
                }
            }
            let reopen_at = store.latest_now;
            store.purge_expired(reopen_at);
            let expected = observable_state(&store, &nets);
            if round % 2 == 1 {
                store.compact().unwrap();
            }
            drop(store);
            store = Store::open(dir.path(), reopen_at).unwrap();
            assert_eq!(observable_state(&store, &nets), expected, "round {round}");
        }
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

    fn many_bans(count: u32, reasons: &[&str]) -> Vec<BanRecord> {
        (0..count)
            .map(|i| {
                let net = if i % 2 == 0 {
                    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap())
                } else {
                    IpNet::V6(
                        Ipv6Net::new(
                            Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 64),
                            64,
                        )
                        .unwrap(),
                    )
                };
                let reason = reasons[i as usize % reasons.len()];
                BanRecord {
                    net,
                    created: NOW,
                    expires: NOW + HOUR + u64::from(i),
                    reason: Arc::from(reason),
                    source: Arc::from(if i % 3 == 0 { "sshd" } else { "nginx" }),
                }
            })
            .collect()
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

    /// Timing lives in the benches; run with
    /// `cargo test --release --lib store -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn million_bans_load_quickly() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            for chunk in
                many_bans(1_000_000, &["ssh brute force", "http scan", "smtp auth"]).chunks(50_000)
            {
                store.insert_bans(chunk).unwrap();
            }
            store.compact().unwrap();
            store.insert_bans(&many_bans(100_000, &["again"])).unwrap();
        }
        let started = Instant::now();
        let store = open(dir.path());
        let elapsed = started.elapsed();
        assert_eq!(store.ban_count(), 1_000_000);
        eprintln!("loaded {} bans in {elapsed:?}", store.ban_count());
    }

    /// Offsets of the frames after the header of `bytes`, in order.
    pub(super) fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
        let mut offsets = Vec::new();
        let mut offset = FILE_HEADER_LEN;
        while let Frame::Intact { next, .. } = read_frame(bytes, offset) {
            offsets.push(offset);
            offset = next;
        }
        offsets
    }

    /// Five one-ban appends (192.0.2.1 .. 192.0.2.5), one frame each.
    pub(super) fn five_ban_log(dir: &Path) -> Vec<usize> {
        let mut store = open(dir);
        for i in 1..=5 {
            store
                .insert_bans(&[ban(&format!("192.0.2.{i}/32"), NOW, NOW + HOUR, "scan")])
                .unwrap();
        }
        drop(store);
        let offsets = frame_offsets(&fs::read(log_path(dir)).unwrap());
        assert_eq!(offsets.len(), 5);
        offsets
    }

    /// [`five_ban_log`] with the second frame damaged `within` bytes in.
    pub(super) fn five_ban_log_damaged_mid(dir: &Path, within: usize) -> Vec<usize> {
        let offsets = five_ban_log(dir);
        flip_byte(&log_path(dir), offsets[1] + within);
        offsets
    }

    /// Flips the bits of the byte at `offset` of `path`.
    pub(super) fn flip_byte(path: &Path, offset: usize) {
        let mut bytes = fs::read(path).unwrap();
        bytes[offset] ^= 0xff;
        fs::write(path, &bytes).unwrap();
    }

    /// Where, inside a frame, the tests damage it: the length field, the
    /// CRC field, the payload.
    pub(super) const DAMAGE_POINTS: [(&str, usize); 3] = [
        ("length field", 3),
        ("crc field", 5),
        ("payload", RECORD_HEADER_LEN + 4),
    ];

    #[test]
    fn bad_frame_mid_log_stops_open_naming_file_offset_and_repair_commands() {
        for (what, within) in DAMAGE_POINTS {
            let dir = tempfile::tempdir().unwrap();
            let offsets = five_ban_log_damaged_mid(dir.path(), within);
            let log = log_path(dir.path());
            let before = fs::read(&log).unwrap();
            let error = Store::open(dir.path(), NOW).expect_err(what);
            let message = error.to_string();
            let StoreError::LogDamaged {
                path,
                offset,
                intact_after,
                ..
            } = error
            else {
                panic!("{what}: expected LogDamaged, got {message}");
            };
            assert_eq!(path, log, "{what}");
            assert_eq!(offset, offsets[1] as u64, "{what}");
            assert_eq!(intact_after, 3, "{what}");
            for needed in [
                log.display().to_string(),
                format!("at byte {}", offsets[1]),
                "orch store verify".to_string(),
                "orch store salvage".to_string(),
            ] {
                assert!(
                    message.contains(&needed),
                    "{what}: {needed:?} missing in {message}"
                );
            }
            assert_eq!(
                fs::read(&log).unwrap(),
                before,
                "{what}: the log is left alone"
            );
        }
    }

    #[test]
    fn bad_last_frame_is_still_a_torn_tail() {
        for (what, within) in DAMAGE_POINTS {
            let dir = tempfile::tempdir().unwrap();
            let offsets = five_ban_log(dir.path());
            flip_byte(&log_path(dir.path()), offsets[4] + within);
            let store = Store::open(dir.path(), NOW).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(store.ban_count(), 4, "{what}");
            assert_eq!(file_len(&log_path(dir.path())), offsets[4] as u64, "{what}");
        }
    }

    /// A ban whose reason holds bytes shaped like a whole frame (an Allow
    /// of 0.0.0.0/0, CRC and all), as another fleet host could send.
    pub(super) fn ban_with_fake_frame_in_reason() -> (BanRecord, Vec<u8>) {
        let fake = (0u8..=127)
            .flat_map(|a| (0u8..=127).map(move |b| [KIND_ALLOW, FAMILY_V4, a, b, 0, 0, 0]))
            .map(|payload| {
                let mut framed = vec![0; RECORD_HEADER_LEN];
                framed.extend_from_slice(&payload);
                seal_record(&mut framed, 0);
                framed
            })
            .find(|framed| framed.iter().all(u8::is_ascii))
            .expect("some ASCII-only fake frame");
        let text = String::from_utf8(fake.clone()).expect("ASCII");
        let reason = format!("{text}{text}");
        (ban("192.0.2.99/32", NOW, NOW + HOUR, &reason), fake)
    }

    #[test]
    fn resync_does_not_take_a_frame_inside_a_reason_for_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let (hostile, fake) = ban_with_fake_frame_in_reason();
        let (damaged, next_real) = {
            let mut store = open(dir.path());
            store
                .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
                .unwrap();
            let damaged = file_len(&log_path(dir.path())) as usize;
            store.insert_bans(&[hostile]).unwrap();
            let next_real = file_len(&log_path(dir.path())) as usize;
            store
                .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
                .unwrap();
            (damaged, next_real)
        };
        let bytes = fs::read(log_path(dir.path())).unwrap();
        let fake_at = damaged
            + bytes[damaged..]
                .windows(fake.len())
                .position(|window| window == fake.as_slice())
                .expect("fake frame stored verbatim");
        assert!(
            sound_frame(&bytes, fake_at).is_some(),
            "the fake is a sound frame"
        );
        // An implausible length: resync has to search byte by byte.
        flip_byte(&log_path(dir.path()), damaged + 3);
        let bytes = fs::read(log_path(dir.path())).unwrap();
        assert_eq!(resync(&bytes, damaged), Some(next_real), "skips the fake");
        let error = Store::open(dir.path(), NOW).expect_err("mid-log damage");
        assert!(
            matches!(
                error,
                StoreError::LogDamaged {
                    intact_after: 1,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn compaction_keeps_previous_snapshot_and_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        build_mixed_state(&mut store);
        let log_before = fs::read(log_path(dir.path())).unwrap();
        let snapshot_before = fs::read(snapshot_path(dir.path())).unwrap();
        store.compact().unwrap();
        assert_eq!(
            fs::read(dir.path().join(LOG_PREV_FILE)).unwrap(),
            log_before
        );
        assert_eq!(
            fs::read(dir.path().join(SNAPSHOT_PREV_FILE)).unwrap(),
            snapshot_before
        );
        assert!(!dir.path().join(PREV_LINK_TMP_FILE).exists());
        store
            .insert_bans(&[ban("192.0.2.3/32", NOW, NOW + HOUR, "c")])
            .unwrap();
        assert_eq!(
            fs::read(dir.path().join(LOG_PREV_FILE)).unwrap(),
            log_before,
            "appends go to the new log only"
        );
    }

    /// Two compactions with changes before, between and after them: the
    /// previous snapshot and its log both hold something, and the current
    /// log too. Returns the state a sound open sees.
    pub(super) fn store_with_two_generations(dir: &Path) -> (Vec<BanRecord>, Vec<IpNet>) {
        let mut store = open(dir);
        build_mixed_state(&mut store);
        store.compact().unwrap();
        store
            .insert_bans(&[
                ban("192.0.2.10/32", NOW, NOW + HOUR, "prev log"),
                ban("2001:db8:10::/48", NOW, NOW + HOUR, "prev log"),
            ])
            .unwrap();
        store.remove_ban(&net("2001:db8::/48")).unwrap();
        store.add_allow(net("203.0.113.0/24")).unwrap();
        store.compact().unwrap();
        store
            .insert_bans(&[ban("192.0.2.20/32", NOW, NOW + HOUR, "current log")])
            .unwrap();
        store.remove_ban(&net("192.0.2.10/32")).unwrap();
        let expected = (
            sorted_bans(&store),
            store.runtime_allows().copied().collect(),
        );
        assert_eq!(store.generation, 2);
        expected
    }

    fn bans_and_allows(store: &Store) -> (Vec<BanRecord>, Vec<IpNet>) {
        (
            sorted_bans(store),
            store.runtime_allows().copied().collect(),
        )
    }

    fn kept_damaged_snapshots(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("bans.snap.damaged-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn damaged_snapshot_falls_back_to_previous_plus_logs_with_the_same_bans() {
        let snapshot_points = [
            ("magic", 2),
            ("generation", HEADER_GENERATION_OFFSET + 1),
            ("header crc", FILE_HEADER_CRC_OFFSET),
            ("first frame length", FILE_HEADER_LEN + 1),
            (
                "first frame payload",
                FILE_HEADER_LEN + RECORD_HEADER_LEN + 3,
            ),
            ("end marker", usize::MAX),
        ];
        for (what, offset) in snapshot_points {
            let dir = tempfile::tempdir().unwrap();
            let expected = store_with_two_generations(dir.path());
            let snapshot = snapshot_path(dir.path());
            let offset = if offset == usize::MAX {
                file_len(&snapshot) as usize - 2
            } else {
                offset
            };
            flip_byte(&snapshot, offset);
            let damaged = fs::read(&snapshot).unwrap();
            let mut store = Store::open(dir.path(), NOW).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(bans_and_allows(&store), expected, "{what}");
            assert_eq!(store.history(&net("192.0.2.1/32")).count, 2, "{what}");
            let kept = kept_damaged_snapshots(dir.path());
            assert_eq!(kept, [format!("bans.snap.damaged-{NOW}")], "{what}");
            assert_eq!(
                fs::read(dir.path().join(&kept[0])).unwrap(),
                damaged,
                "{what}"
            );
            // The rebuilt snapshot takes the damaged one's place: appends
            // and later starts go on as usual, with no second rebuild.
            store
                .insert_bans(&[ban("192.0.2.30/32", NOW, NOW + HOUR, "after")])
                .unwrap();
            drop(store);
            let store = open(dir.path());
            assert_eq!(store.ban_count(), expected.0.len() + 1, "{what}");
            assert_eq!(kept_damaged_snapshots(dir.path()).len(), 1, "{what}");
        }
    }

    #[test]
    fn missing_snapshot_with_previous_one_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let expected = store_with_two_generations(dir.path());
        fs::remove_file(snapshot_path(dir.path())).unwrap();
        let store = open(dir.path());
        assert_eq!(bans_and_allows(&store), expected);
    }

    #[test]
    fn crash_after_compaction_rename_then_damaged_snapshot_still_falls_back() {
        // New snapshot in place, the old log not yet replaced (it is the
        // previous log too): the previous snapshot and that log rebuild it.
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let mut store = open(dir.path());
            build_mixed_state(&mut store);
            store.compact().unwrap();
            store
                .insert_bans(&[ban("192.0.2.10/32", NOW, NOW + HOUR, "x")])
                .unwrap();
            let expected = bans_and_allows(&store);
            let old_log = fs::read(log_path(dir.path())).unwrap();
            store.compact().unwrap();
            drop(store);
            fs::write(log_path(dir.path()), old_log).unwrap();
            expected
        };
        fs::remove_file(dir.path().join(LOG_PREV_FILE)).unwrap();
        flip_byte(&snapshot_path(dir.path()), FILE_HEADER_LEN + 1);
        let store = open(dir.path());
        assert_eq!(bans_and_allows(&store), expected);
    }

    #[test]
    fn both_snapshots_damaged_stops_open_naming_repair_commands() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_generations(dir.path());
        flip_byte(&snapshot_path(dir.path()), FILE_HEADER_LEN + 1);
        flip_byte(&dir.path().join(SNAPSHOT_PREV_FILE), FILE_HEADER_LEN + 1);
        let error = Store::open(dir.path(), NOW).expect_err("no sound snapshot");
        let message = error.to_string();
        let (path, offset, detail) = expect_corrupt(Err(error));
        assert_eq!(path, snapshot_path(dir.path()));
        assert_eq!(offset, FILE_HEADER_LEN as u64);
        assert!(
            detail.contains("the previous snapshot cannot stand in"),
            "{detail}"
        );
        assert!(detail.contains(SNAPSHOT_PREV_FILE), "{detail}");
        assert!(message.contains("orch store verify"), "{message}");
        assert!(message.contains("orch store salvage"), "{message}");
        assert!(
            kept_damaged_snapshots(dir.path()).is_empty(),
            "nothing moved"
        );
    }

    #[test]
    fn previous_snapshot_without_its_log_does_not_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        store_with_two_generations(dir.path());
        fs::remove_file(dir.path().join(LOG_PREV_FILE)).unwrap();
        flip_byte(&snapshot_path(dir.path()), FILE_HEADER_LEN + 1);
        let (_, _, detail) = expect_corrupt(Store::open(dir.path(), NOW));
        assert!(detail.contains("no log of its generation 1"), "{detail}");
    }

    #[test]
    fn lock_file_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _store = open(dir.path());
        assert_locked_by_this_process(Store::open(dir.path(), NOW).expect_err("locked"));
    }

    /// `error` says the lock is held by this process and how to go on.
    pub(super) fn assert_locked_by_this_process(error: StoreError) {
        let message = error.to_string();
        assert!(
            matches!(error, StoreError::Locked { pid: Some(pid), .. } if pid == std::process::id()),
            "{message}"
        );
        assert!(
            message.contains("stop orch first: systemctl stop orch"),
            "{message}"
        );
    }
}
