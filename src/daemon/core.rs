//! The serialised core: every event source (D-Bus calls, systemd signals,
//! kernel events, jails, DNS refreshes, the fleet) hands the core a job, and
//! one thread runs the jobs one at a time against the store and the
//! reconciler.
//!
//! The core decides what may be banned and in what order things happen:
//! validate, persist (fsync), then change the kernel, then acknowledge. It
//! must not talk D-Bus or render nft scripts itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::oneshot;

use crate::addr::{self, AddrError, BanPolicy};
use crate::config::Config;

use crate::config::JailConfig;
use crate::daemon::ban_log;
use crate::daemon::firewall_event::{self, EventKind, EventSender, FirewallEvent};
use crate::daemon::jail_bans::{self, JailBanDecision, JailBans};
use crate::daemon::lanes::{self, Job, LaneReceiver, LaneSenders, Liveness, Next, QueueError};
use crate::daemon::listing::{BanPage, BanQuery, select_page};
use crate::daemon::read_view::{CoreStatus, Published, ReadView, SourceCounts};
use crate::daemon::reconciler::{DnsAllows, Reconciler, SyncInfo, TRIM_AFTER_ELEMENTS};
use crate::firewall::Firewall;
use crate::firewall::FirewallError;
use crate::jail::runner::JailStats;
use crate::memory::release_freed_memory;
use crate::store::{BanRecord, Store, StoreError};
use crate::timefmt::now_unix;

/// Why the core refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    Address(#[from] AddrError),
    #[error("{context}: {source}")]
    AddressIn { context: String, source: AddrError },
    #[error("{0}")]
    InvalidDuration(String),
    #[error("{0}")]
    Overlaps(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Firewall(#[from] FirewallError),
    #[error("ban store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("the daemon's core has stopped")]
    Stopped,
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    InvalidArgument(String),
}

impl CoreError {
    /// The address error behind this one, if any, for naming D-Bus errors.
    pub fn address_error(&self) -> Option<&AddrError> {
        match self {
            CoreError::Address(err) | CoreError::AddressIn { source: err, .. } => Some(err),
            _ => None,
        }
    }
}

/// The state the core's thread owns.
pub struct Core {
    /// The daemon's event stream, for kernel changes a paused monitor
    /// missed (`None` in unit tests).
    kernel_events: Option<EventSender>,
    /// See [`CoreStatus::config_error`]; cleared by a good reload.
    config_error: Option<String>,
    config: Config,
    store: Store,
    reconciler: Reconciler,
    /// Banned prefixes (not single addresses), kept to refuse overlaps:
    /// the kernel's interval sets reject overlapping elements.
    banned_prefixes: HashSet<IpNet>,
    /// Set by a job that handled a large batch: once the job (and the
    /// request it owned) is dropped, freed memory goes back to the system.
    trim_after_job: bool,
    /// Last seen ActiveState of each watched unit, and when.
    unit_states: std::collections::BTreeMap<String, (String, u64)>,
    last_event: Option<(EventKind, String, u64)>,
    /// Rotates which stored bans the self-check samples.
    probe_offset: usize,
    /// Set by [`CoreHandle::stop`]: the thread ends after the current job.
    stop_requested: bool,
    /// Addresses the DNS allow names resolve to, with absolute expiries.
    dns_allows: DnsAllows,
    /// The jail ban policy's state: recidive jails' counts.
    jail_bans: JailBans,
    /// Other hosts' bans and this host's outbox, with a fleet.
    fleet: super::fleet_side::FleetSide,
    /// Stored bans per source, kept as the store changes.
    counts: SourceCounts,
    /// What readers see: published after every job.
    view: ReadView,
    /// When the core last showed it was alive (for the watchdog).
    liveness: Liveness,
    /// Where acknowledged bans and unbans go for the ban actions (`None`
    /// in unit tests).
    pub(super) ban_events: Option<super::ban_events::BanEventSender>,
}

/// What a jail's ban of one network came to: a line for the log, or why
/// it was not banned.
pub type JailBanOutcome = (IpNet, Result<String, CoreError>);

/// Bans just stored, split by whether they replace a stored ban, for the
/// kernel.
#[derive(Default)]
struct StoredBans {
    added: Vec<BanRecord>,
    replaced: Vec<(BanRecord, BanRecord)>,
}

/// How often the core purges expired bans and compacts the store.
const TICK: Duration = Duration::from_secs(30);
/// How often an idle core shows it is alive, at most.
const IDLE_BEAT: Duration = Duration::from_secs(1);

impl Core {
    /// Builds the core and brings the kernel in line with the store.
    pub fn start(config: Config, store: Store, reconciler: Reconciler) -> Result<Core, CoreError> {
        let banned_prefixes = store
            .bans()
            .map(|record| record.net)
            .filter(|net| !addr::is_single_address(net))
            .collect();
        let counts = SourceCounts::of(store.bans());
        let mut core = Core {
            counts,
            view: ReadView::default(),
            liveness: Liveness::default(),
            config,
            store,
            reconciler,
            banned_prefixes,
            trim_after_job: false,
            unit_states: Default::default(),
            last_event: None,
            probe_offset: 0,
            stop_requested: false,
            dns_allows: DnsAllows::default(),
            jail_bans: JailBans::default(),
            fleet: Default::default(),
            kernel_events: None,
            config_error: None,
            ban_events: None,
        };
        core.reconciler
            .set_port_scopes(port_scopes(&core.config.jails));
        core.drop_stale_shadows()?;
        core.purge_expired_allows();
        core.sync("daemon start")?;
        Ok(core)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Static (config) and runtime allowlist entries, for `orch allow list`.
    pub fn allow_entries(&self) -> (Vec<IpNet>, Vec<IpNet>) {
        (
            self.config.allow.clone(),
            self.store.runtime_allows().copied().collect(),
        )
    }

    /// The whole allowlist: config entries, then runtime additions.
    fn allowlist(&self) -> Vec<IpNet> {
        let mut allows = self.config.allow.clone();
        allows.extend(self.store.runtime_allows().copied());
        allows
    }

    /// Asks for freed memory to go back to the system after this job (a
    /// large batch just passed through).
    pub(super) fn request_trim(&mut self) {
        self.trim_after_job = true;
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    pub(super) fn counts(&self) -> &SourceCounts {
        &self.counts
    }

    pub(super) fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    pub(super) fn banned_prefixes(&self) -> impl Iterator<Item = &IpNet> {
        self.banned_prefixes.iter()
    }

    pub(super) fn fleet(&self) -> &super::fleet_side::FleetSide {
        &self.fleet
    }

    pub(super) fn fleet_mut(&mut self) -> &mut super::fleet_side::FleetSide {
        &mut self.fleet
    }

    pub(super) fn policy(&self) -> BanPolicy {
        let now = now_unix();
        let mut allowlist = self.allowlist();
        allowlist.extend(self.dns_allows.addresses(now).map(IpNet::from));
        BanPolicy {
            min_prefix_v4: self.config.bans.min_prefix_v4,
            min_prefix_v6: self.config.bans.min_prefix_v6,
            allowlist,
            own_addresses: addr::host_addresses(),
        }
    }

    /// Turns a requested duration (0 = default) into seconds, within max_time.
    fn ban_seconds(&self, requested: u64) -> Result<u64, CoreError> {
        let max = self.config.bans.max_time.as_secs();
        let seconds = if requested == 0 {
            self.config.bans.default_time.as_secs()
        } else {
            requested
        };
        if seconds > max {
            return Err(CoreError::InvalidDuration(format!(
                "ban time {} exceeds bans.max_time {}",
                humantime::format_duration(Duration::from_secs(seconds)),
                humantime::format_duration(Duration::from_secs(max)),
            )));
        }
        Ok(seconds.max(1))
    }

    /// Validates every input first (a refused call changes nothing), then
    /// persists all bans with one fsync, then adds them to the kernel.
    /// Returns the records banned, one per distinct network.
    pub fn ban(
        &mut self,
        inputs: &[String],
        seconds: u64,
        reason: &str,
        source: &str,
    ) -> Result<Vec<BanRecord>, CoreError> {
        let seconds = self.ban_seconds(seconds)?;
        self.trim_after_job = inputs.len() >= TRIM_AFTER_ELEMENTS;
        let policy = self.policy();
        let now = now_unix();
        let reason: Arc<str> = Arc::from(reason);
        let source: Arc<str> = Arc::from(source);
        let mut seen = HashSet::with_capacity(inputs.len());
        let mut new_prefixes: Vec<IpNet> = Vec::new();
        let mut records = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let located = |source: AddrError| {
                if inputs.len() == 1 {
                    CoreError::Address(source)
                } else {
                    CoreError::AddressIn {
                        context: format!("entry {} of {}", index + 1, inputs.len()),
                        source,
                    }
                }
            };
            let net = addr::parse_net(input).map_err(located)?;
            policy.check(&net).map_err(located)?;
            if !seen.insert(net) {
                continue;
            }
            self.refuse_prefix_overlap(&net, &new_prefixes)?;
            if !addr::is_single_address(&net) {
                new_prefixes.push(net);
            }
            records.push(BanRecord {
                net,
                created: now,
                expires: now.saturating_add(seconds),
                reason: reason.clone(),
                source: source.clone(),
            });
        }
        self.commit_bans(&records, now)?;
        Ok(records)
    }

    /// Bans checked records: durable (one fsync), noted for the fleet,
    /// then in the kernel (one transaction).
    pub(super) fn commit_bans(&mut self, records: &[BanRecord], now: u64) -> Result<(), CoreError> {
        // Each phase of a big call shows the watchdog the core is alive:
        // a million bans take seconds to check, to store and to apply.
        self.liveness.beat();
        // Durable first; then the fleet publisher may start (it needs no
        // more from the core) while the kernel takes the bans. A ban shorter
        // than another host's active one waits under it.
        let stored = match self.keep_longer_remote_bans(records)? {
            None => self.store_bans(records)?,
            Some(active) => self.store_bans(&active)?,
        };
        self.note_local_changes(records);
        self.liveness.beat();
        self.apply_stored(stored, now)?;
        self.emit_bans(records);
        Ok(())
    }

    /// Stores `records` (one fsync), then puts them in the kernel; a ban
    /// that replaces another gets the new timeout.
    pub(super) fn store_and_apply(
        &mut self,
        records: &[BanRecord],
        now: u64,
    ) -> Result<(), CoreError> {
        let stored = self.store_bans(records)?;
        self.apply_stored(stored, now)?;
        self.emit_bans(records);
        Ok(())
    }

    /// The first half of [`Core::store_and_apply`]: persists `records` with
    /// one fsync. What it returns must go to [`Core::apply_stored`] before
    /// the job ends.
    fn store_bans(&mut self, records: &[BanRecord]) -> Result<StoredBans, CoreError> {
        let mut stored = StoredBans::default();
        if records.is_empty() {
            return Ok(stored);
        }
        for record in records {
            match self.store.get_ban(&record.net) {
                Some(previous) => stored.replaced.push((previous.clone(), record.clone())),
                None => stored.added.push(record.clone()),
            }
        }
        self.store.insert_bans(records)?;
        self.count_stored(&stored, records);
        let new_nets: HashSet<IpNet> = stored.added.iter().map(|record| record.net).collect();
        self.view.count_additions(new_nets.len());
        self.banned_prefixes.extend(
            records
                .iter()
                .map(|record| record.net)
                .filter(|net| !addr::is_single_address(net)),
        );
        Ok(stored)
    }

    /// Updates the counts by source after `records` were stored: each
    /// distinct network is counted once, as the store now holds it.
    fn count_stored(&mut self, stored: &StoredBans, records: &[BanRecord]) {
        let mut uncounted = HashSet::with_capacity(stored.replaced.len());
        for (previous, _) in &stored.replaced {
            if uncounted.insert(previous.net) {
                self.counts.remove(previous);
            }
        }
        let mut counted = HashSet::with_capacity(records.len());
        for record in records {
            if counted.insert(record.net)
                && let Some(now_stored) = self.store.get_ban(&record.net)
            {
                self.counts.add(now_stored);
            }
        }
    }

    /// The second half: puts stored bans in the kernel.
    fn apply_stored(&mut self, stored: StoredBans, now: u64) -> Result<(), CoreError> {
        if stored.added.is_empty() && stored.replaced.is_empty() {
            return Ok(());
        }
        if let Err(err) = self
            .reconciler
            .apply_bans(&stored.added, &stored.replaced, now)
        {
            tracing::warn!("incremental ban failed ({err}); re-applying the whole table");
            self.sync("recovery after a failed ban")?;
        }
        let replacing = stored.replaced.iter().map(|(_, new)| new);
        let banned: Vec<&BanRecord> = stored.added.iter().chain(replacing).collect();
        ban_log::banned(banned.into_iter());
        Ok(())
    }

    /// A jail's ban of `net` after `failures` failures: [`Core::jail_ban_many`]
    /// for one network. Returns a line for the log.
    pub fn jail_ban(
        &mut self,
        jail: &JailConfig,
        net: IpNet,
        failures: u32,
    ) -> Result<String, CoreError> {
        match self.jail_ban_many(jail, &[net], failures)?.pop() {
            Some((_, outcome)) => outcome,
            None => Ok(String::new()),
        }
    }

    /// A jail's bans of `nets` (a burst, each after `failures` failures),
    /// as the jail ban policy decides ([`jail_bans`]). Every safety rule of
    /// [`Core::ban`] applies to each network, but one refused network does
    /// not hold back the others. The bans are stored with one fsync and go
    /// to the kernel in one transaction, as one `BanMany` would. Recidive
    /// jails that the bans bring to their maxretry ban too.
    ///
    /// Returns, per distinct network, a line for the log or why it was not
    /// banned; `Err` when storing or applying the burst failed (then none
    /// of it is acknowledged).
    pub fn jail_ban_many(
        &mut self,
        jail: &JailConfig,
        nets: &[IpNet],
        failures: u32,
    ) -> Result<Vec<JailBanOutcome>, CoreError> {
        let now = now_unix();
        let policy = self.policy();
        let source: Arc<str> = Arc::from(jail.name.as_str());
        let mut reasons: Option<Arc<str>> = None;
        let mut seen = HashSet::with_capacity(nets.len());
        let mut new_prefixes = Vec::new();
        let mut records = Vec::new();
        let mut outcomes = Vec::with_capacity(nets.len());
        for &net in nets {
            if !seen.insert(net) {
                continue;
            }
            let decision =
                jail_bans::decide(jail, &self.config.bans, &self.store, &net, failures, now);
            let (seconds, previous, reason) = match decision {
                JailBanDecision::AlreadyLonger(line) => {
                    outcomes.push((net, Ok(line)));
                    continue;
                }
                JailBanDecision::Ban {
                    seconds,
                    previous,
                    reason,
                } => (seconds, previous, reason),
            };
            let checked = policy
                .check(&net)
                .map_err(CoreError::from)
                .and_then(|()| self.refuse_prefix_overlap(&net, &new_prefixes));
            if let Err(refused) = checked {
                outcomes.push((net, Err(refused)));
                continue;
            }
            if !addr::is_single_address(&net) {
                new_prefixes.push(net);
            }
            let line = jail_bans::ban_line(seconds, previous, &reason);
            // One shared text for the burst (the reasons are all alike).
            let reason = match &reasons {
                Some(shared) if **shared == *reason => shared.clone(),
                _ => reasons.insert(Arc::from(reason)).clone(),
            };
            records.push(BanRecord {
                net,
                created: now,
                expires: now.saturating_add(seconds),
                reason,
                source: source.clone(),
            });
            outcomes.push((net, Ok(line)));
        }
        if records.is_empty() {
            return Ok(outcomes);
        }
        self.trim_after_job |= records.len() >= TRIM_AFTER_ELEMENTS;
        self.commit_bans(&records, now)?;
        let banned: Vec<IpNet> = records.iter().map(|record| record.net).collect();
        drop(records);
        for (recidive, due) in self.jail_bans.banned(jail, &banned, now, &mut self.store) {
            self.log_recidive_bans(&recidive, &due);
        }
        Ok(outcomes)
    }

    /// Bans `due` for the recidive jail `recidive` and logs each outcome.
    fn log_recidive_bans(&mut self, recidive: &JailConfig, due: &[IpNet]) {
        let jail = &recidive.name;
        match self.jail_ban_many(recidive, due, recidive.max_retry) {
            Ok(outcomes) => {
                for (net, outcome) in outcomes {
                    match outcome {
                        Ok(done) => {
                            tracing::debug!(orch_jail = %jail, orch_address = %net, "{done}")
                        }
                        Err(err) => {
                            tracing::warn!(orch_jail = %jail, orch_address = %net, "not banned: {err}")
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(orch_jail = %jail, count = due.len(), "not banned: {err}"),
        }
    }

    /// Starts counting other jails' bans for the recidive jail `jail`.
    pub fn add_recidive(&mut self, jail: JailConfig, max_tracked: usize, stats: Arc<JailStats>) {
        self.jail_bans
            .add_recidive(jail, max_tracked, stats, &self.store, now_unix());
    }

    /// Forgets the recidive jails (before the jails restart on reload).
    pub fn clear_recidive(&mut self) {
        self.jail_bans.clear_recidive();
    }

    /// Where a log reader stopped, from the store.
    pub fn cursor(&self, key: &str) -> Option<String> {
        self.store.cursor(key).map(str::to_string)
    }

    /// Persists log readers' positions (one fsync).
    pub fn save_cursors(&mut self, cursors: &[(String, String)]) -> Result<(), CoreError> {
        Ok(self.store.set_cursors(cursors)?)
    }

    /// Refuses a prefix that overlaps a different banned prefix, already
    /// stored or earlier in the same request (`pending`). The same prefix
    /// again is a re-ban and fine; single addresses never clash.
    pub(super) fn refuse_prefix_overlap(
        &self,
        net: &IpNet,
        pending: &[IpNet],
    ) -> Result<(), CoreError> {
        if addr::is_single_address(net) {
            return Ok(());
        }
        let clash = self
            .banned_prefixes
            .iter()
            .chain(pending)
            .find(|other| *other != net && addr::overlaps(net, other));
        match clash {
            Some(other) => Err(CoreError::Overlaps(format!(
                "{net} overlaps the banned prefix {other}; unban {other} first"
            ))),
            None => Ok(()),
        }
    }

    /// Removes a ban (store first, then kernel). Returns whether it existed.
    pub fn unban(&mut self, input: &str) -> Result<Option<BanRecord>, CoreError> {
        let net = addr::parse_net(input)?;
        self.forget_shadowed(&[net])?;
        let removed = self.unban_many(&[net])?;
        self.note_local_unbans(&removed);
        Ok(removed.into_iter().next())
    }

    /// Removes bans (store first, one fsync, then kernel); returns those
    /// that existed.
    pub(super) fn unban_many(&mut self, nets: &[IpNet]) -> Result<Vec<BanRecord>, CoreError> {
        let removed = self.store.remove_bans(nets)?;
        if removed.is_empty() {
            return Ok(removed);
        }
        for record in &removed {
            self.banned_prefixes.remove(&record.net);
            self.counts.remove(record);
        }
        self.view.count_removals(removed.len());
        if let Err(err) = self.reconciler.remove_bans(&removed, now_unix()) {
            tracing::warn!("incremental unban failed ({err}); re-applying the whole table");
            self.sync("recovery after a failed unban")?;
        }
        self.announce_unbans(&removed, "unban");
        Ok(removed)
    }

    /// One page of the active bans, in network order (a bounded job for
    /// the read lane).
    pub fn list_page(&self, query: &BanQuery) -> BanPage {
        select_page(self.store.bans(), query, now_unix())
    }

    /// Adds a runtime allowlist entry (persisted) and applies it.
    pub fn allow(&mut self, input: &str) -> Result<bool, CoreError> {
        let net = super::runtime_allows::allowable(input)?;
        let added = self.store.add_allow(net)?;
        if added {
            self.apply_allows()?;
        }
        Ok(added)
    }

    /// Removes a runtime allowlist entry. Entries from the config file can
    /// only be removed there.
    pub fn disallow(&mut self, input: &str) -> Result<(), CoreError> {
        let net = addr::parse_net(input)?;
        if self.store.remove_allow(&net)? {
            return self.apply_allows();
        }
        if self.config.allow.contains(&net) {
            return Err(CoreError::NotFound(format!(
                "{net} is in the static allowlist of the config file; remove it there"
            )));
        }
        Err(CoreError::NotFound(format!(
            "{net} is not in the runtime allowlist"
        )))
    }

    pub(super) fn apply_allows(&mut self) -> Result<(), CoreError> {
        let (allows, ends) = (self.allowlist(), self.allow_timeouts(now_unix()));
        if let Err(err) = self.reconciler.set_allows(&allows, &ends) {
            tracing::warn!("allowlist update failed ({err}); re-applying the whole table");
            self.sync("recovery after a failed allowlist update")?;
        }
        Ok(())
    }

    /// Re-applies the whole table from the store.
    pub fn sync(&mut self, cause: &str) -> Result<SyncInfo, CoreError> {
        self.liveness.beat();
        let (now, allows) = (now_unix(), self.allowlist());
        let ends = self.allow_timeouts(now);
        let synced =
            self.reconciler
                .sync_all(&self.store, &allows, &ends, &self.dns_allows, now, cause)?;
        self.view.count_restore(&synced);
        Ok(synced)
    }

    /// Takes the addresses the DNS allow names now resolve to and swaps
    /// them into the kernel in one transaction.
    pub fn set_dns_allows(&mut self, dns_allows: DnsAllows) -> Result<(), CoreError> {
        self.dns_allows = dns_allows;
        if let Err(err) = self.reconciler.set_dns_allows(&self.dns_allows, now_unix()) {
            tracing::warn!("DNS allow update failed ({err}); re-applying the whole table");
            self.sync("recovery after a failed DNS allow update")?;
        }
        Ok(())
    }

    pub fn status(&self) -> CoreStatus {
        CoreStatus {
            ban_count: self.ban_count(),
            firewall: self.reconciler.firewall_status(),
            table: self.reconciler.table().to_string(),
            static_allows: self.config.allow.len(),
            runtime_allows: self.store.runtime_allows().count(),
            last_sync: self.reconciler.last_sync().cloned(),
            units: self
                .unit_states
                .iter()
                .map(|(unit, (state, at))| (unit.clone(), state.clone(), *at))
                .collect(),
            last_event: self.last_event.clone(),
            config_error: self.config_error.clone(),
        }
    }

    /// Notes that the daemon runs on a fallback configuration, and why.
    pub fn set_config_error(&mut self, error: Option<String>) {
        self.config_error = error;
    }

    /// One line for `systemctl status`: bans, ownership, last sync.
    pub fn status_line(&self) -> String {
        let status = self.status();
        let ownership = if status.firewall.owned {
            "table owned"
        } else {
            "table not owned"
        };
        let sync = match &status.last_sync {
            Some(sync) => format!(
                ", last sync {}s ago ({})",
                now_unix().saturating_sub(sync.at_unix),
                sync.cause
            ),
            None => String::new(),
        };
        let line = format!("{} bans, {ownership}{sync}", status.ban_count);
        match &status.config_error {
            Some(_) => format!("CONFIGURATION INVALID, running on a fallback; {line}"),
            None => line,
        }
    }

    /// True while a watched unit is between states (a start, reload or
    /// stop job is running): its job's end will call for the hooks, so a
    /// flush seen meanwhile need not.
    pub fn watched_unit_busy(&self) -> bool {
        self.unit_states
            .values()
            .any(|(state, _)| matches!(state.as_str(), "reloading" | "activating" | "deactivating"))
    }

    /// Records a watched unit's state for `orch status`.
    pub fn record_unit_state(&mut self, unit: &str, state: &str) {
        self.unit_states
            .insert(unit.to_string(), (state.to_string(), now_unix()));
    }

    /// A firewall event (from systemd, the kernel or a timer): put back
    /// whatever is missing. With an owned table this is usually nothing.
    /// Returns whether the table had to be re-applied.
    pub fn on_firewall_event(&mut self, event: &FirewallEvent) -> Result<bool, CoreError> {
        self.last_event = Some((event.kind, event.cause.clone(), now_unix()));
        let repaired = self.repair_if_needed(&event.cause)?;
        if !repaired {
            tracing::debug!(kind = event.kind.as_str(), cause = %event.cause, "table intact");
        }
        crate::systemd::notify::status(&self.status_line());
        Ok(repaired)
    }

    /// Runs the cheap self-check and re-applies the whole table if it
    /// fails. Returns whether it re-applied.
    fn repair_if_needed(&mut self, cause: &str) -> Result<bool, CoreError> {
        self.probe_offset = self.probe_offset.wrapping_add(7919);
        if self
            .reconciler
            .is_intact(&self.store, now_unix(), self.probe_offset)
        {
            return Ok(false);
        }
        let restored = self.sync(cause)?;
        ban_log::restored(cause, restored.bans_applied, restored.duration_ms);
        Ok(true)
    }

    /// Takes a new configuration (SIGHUP). The state directory cannot
    /// change while running; a changed [firewall] section rebuilds the
    /// table; everything else applies with a full sync.
    pub fn reload_config(&mut self, config: Config) -> Result<(), CoreError> {
        if config.state_dir != self.config.state_dir {
            return Err(CoreError::Config(format!(
                "state_dir changed ({} -> {}); restart the daemon to move the store",
                self.config.state_dir.display(),
                config.state_dir.display()
            )));
        }
        if config.firewall != self.config.firewall {
            let firewall = Firewall::open(&config.firewall)?;
            self.reconciler.replace_firewall(firewall);
        }
        self.reconciler.set_port_scopes(port_scopes(&config.jails));
        self.config = config;
        self.config_error = None;
        self.sync("configuration reloaded")?;
        Ok(())
    }

    /// Stored bans (including any that expired since the last tick's
    /// purge, at most 30 s ago).
    pub fn ban_count(&self) -> usize {
        self.counts.total()
    }

    /// Housekeeping: drops expired bans (the kernel already dropped them)
    /// and compacts the store when its log has grown.
    fn tick(&mut self) {
        let now = now_unix();
        let expired = self.store.purge_expired(now);
        for record in &expired {
            self.banned_prefixes.remove(&record.net);
            self.counts.remove(record);
        }
        self.view.count_removals(expired.len());
        self.announce_unbans(&expired, "expired");
        // Expired shared bans: the publisher deletes their keys.
        self.note_local_changes(&expired);
        self.forget_expired_holds(now);
        if let Err(err) = self.store.compact_if_needed() {
            tracing::error!("store compaction failed: {err}");
        }
        if let Err(err) = self.repair_if_needed("periodic self-check") {
            tracing::error!("periodic self-check could not repair the table: {err}");
        }
        crate::systemd::notify::status(&self.status_line());
    }

    /// Moves the core onto its own thread and returns the handle that
    /// feeds it.
    pub fn spawn(self) -> (CoreHandle, JoinHandle<()>) {
        let (senders, receiver) = lanes::lanes::<Core>();
        let handle = CoreHandle {
            lanes: senders,
            view: self.view.clone(),
            liveness: self.liveness.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("orch-core".into())
            .spawn(move || self.run(receiver))
            .expect("spawning the core thread");
        (handle, thread)
    }

    fn run(mut self, jobs: LaneReceiver<Core>) {
        let mut next_tick = Instant::now() + TICK;
        // Whatever the start's full apply missed.
        self.pass_on_unheard_changes();
        self.publish();
        // Often enough for the watchdog to see an idle core as alive
        // (it wants a beat within half of WatchdogSec).
        let idle_beat = crate::systemd::notify::watchdog_interval().map_or(IDLE_BEAT, |interval| {
            (interval / 4).clamp(Duration::from_millis(50), IDLE_BEAT)
        });
        loop {
            self.liveness.beat();
            let wait = next_tick
                .saturating_duration_since(Instant::now())
                .min(idle_beat);
            match jobs.next(wait) {
                Next::Job(job) => {
                    job(&mut self);
                    if std::mem::take(&mut self.trim_after_job) {
                        release_freed_memory();
                    }
                    self.pass_on_unheard_changes();
                    if self.stop_requested {
                        break;
                    }
                }
                Next::Idle => {}
                Next::Closed => break,
            }
            self.expire_allows();
            if Instant::now() >= next_tick {
                self.tick();
                self.pass_on_unheard_changes();
                next_tick = Instant::now() + TICK;
                self.publish();
            }
        }
        tracing::debug!("core stopped");
    }

    /// Publishes the status and counts for readers ([`ReadView`]). Every
    /// job that changes anything ends with this, before its caller hears
    /// back, so a read after a reply sees the change.
    pub(super) fn publish(&mut self) {
        let published = Published {
            status: self.status(),
            by_source: self.counts.by_source(),
        };
        self.view.publish(published);
    }

    /// A bulk change pauses the kernel monitor; what other processes did
    /// meanwhile joins the event stream as the monitor would have reported
    /// it (a flush re-runs hooks, anything else calls for a check).
    fn pass_on_unheard_changes(&mut self) {
        let unheard = self.reconciler.take_unheard();
        if unheard.is_empty() {
            return;
        }
        let event = firewall_event::from_kernel(&unheard, self.reconciler.table());
        match (&self.kernel_events, event) {
            (Some(sender), Some(event)) => {
                let _ = sender.send(event);
            }
            _ => {
                if let Err(err) = self.repair_if_needed("nftables changed during a bulk change") {
                    tracing::error!("could not repair the table: {err}");
                }
            }
        }
    }

    /// Where [`Core::pass_on_unheard_changes`] sends what the kernel
    /// monitor missed.
    pub fn set_kernel_events(&mut self, sender: EventSender) {
        self.kernel_events = Some(sender);
    }
}

/// The port scope of each jail that bans only some ports, by jail name
/// (the source of its bans).
fn port_scopes(
    jails: &crate::config::JailsConfig,
) -> std::collections::HashMap<String, Arc<crate::firewall::script::PortScope>> {
    jails
        .jails
        .iter()
        .filter(|jail| !jail.ports.is_empty())
        .map(|jail| {
            let scope = crate::firewall::script::PortScope {
                protocols: jail.protocols.clone(),
                ports: jail.ports.clone(),
            };
            (jail.name.clone(), Arc::new(scope))
        })
        .collect()
}

/// A cheap, cloneable way to run a job on the core and await its result,
/// and to read what the core last published.
#[derive(Clone)]
pub struct CoreHandle {
    lanes: LaneSenders<Core>,
    view: ReadView,
    liveness: Liveness,
}

impl CoreHandle {
    /// Ends the core thread after every job sent before this one, even
    /// while other handles are still alive (tasks that outlive shutdown).
    pub async fn stop(&self) {
        let _ = self.call(|core| core.stop_requested = true).await;
    }

    /// Runs `job` on the core thread, after every job sent before it. The
    /// core publishes its status before the caller hears back.
    pub async fn call<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Core) -> R + Send + 'static,
    ) -> Result<R, CoreError> {
        self.send(job, Lane::Write)?
            .await
            .map_err(|_| CoreError::Stopped)
    }

    /// Runs a read-only `job` on the core's read lane: after every write
    /// queued before it has run, and refused with [`CoreError::Busy`] when
    /// [`lanes::MAX_QUEUED_READS`] reads already wait. Keep such jobs
    /// bounded (one page, not every ban).
    pub async fn read<R: Send + 'static>(
        &self,
        job: impl FnOnce(&Core) -> R + Send + 'static,
    ) -> Result<R, CoreError> {
        self.send(move |core: &mut Core| job(core), Lane::Read)?
            .await
            .map_err(|_| CoreError::Stopped)
    }

    /// [`CoreHandle::call`] for plain threads (jails): blocks until the
    /// job has run. Must not be called from an async task.
    pub fn call_blocking<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Core) -> R + Send + 'static,
    ) -> Result<R, CoreError> {
        self.send(job, Lane::Write)?
            .blocking_recv()
            .map_err(|_| CoreError::Stopped)
    }

    /// What the core last published (status, counts); `None` only before
    /// the core has started.
    pub fn view(&self) -> Option<Arc<Published>> {
        self.view.get()
    }

    /// Bans removed since the start, read without waiting (see
    /// [`ReadView::removals`]).
    pub fn removals(&self) -> u64 {
        self.view.removals()
    }

    /// The counters kept beside the publication (additions, removals,
    /// restores by cause), read without waiting.
    pub fn read_view(&self) -> &ReadView {
        &self.view
    }

    /// When the core last showed it was alive.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Queues `job`; its result arrives on the returned channel.
    fn send<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Core) -> R + Send + 'static,
        lane: Lane,
    ) -> Result<oneshot::Receiver<R>, CoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job<Core> = Box::new(move |core: &mut Core| {
            let result = job(core);
            if lane == Lane::Write {
                core.publish();
            }
            let _ = reply.send(result);
        });
        let queued = match lane {
            Lane::Write => self.lanes.write(job),
            Lane::Read => self.lanes.read(job),
        };
        queued.map_err(|err| match err {
            QueueError::Stopped => CoreError::Stopped,
            QueueError::ReadsFull => CoreError::Busy(format!(
                "{} reads are already waiting for the daemon; try again shortly",
                lanes::MAX_QUEUED_READS
            )),
        })?;
        Ok(answer)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Write,
    Read,
}
