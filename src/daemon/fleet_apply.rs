//! The core's side of the fleet: other hosts' bans come in here, through
//! the same rules as every other ban, and this host's shared bans go out
//! from here (as networks noted in the [`Outbox`]).
//!
//! A network's active ban (the store's, the kernel's) is the longest of
//! its holds: this host's own ban and each origin's. This host's own ban
//! is never replaced by another's: while a longer remote ban is active, the
//! own ban waits in the store as a shadowed ban, and is in force again if
//! the remote one is lifted first. Only a local unban, or a fleet-wide
//! unban deleting this host's key, ends the own ban.
//!
//! Runs on the core thread like every job; it must not talk to NATS (that
//! is `fleet::session`) and must not change the kernel except through the
//! reconciler.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;

use super::core::{Core, CoreError};
use crate::addr;
use crate::fleet::holdings::Hold;
use crate::fleet::outbox::{Outbox, SharedBan};
use crate::fleet::remote_change::{FLEET_SOURCE_PREFIX, RemoteChange, RemoteOutcome};
use crate::fleet::remote_policy::{Refusal, RefusalKind, RemotePolicy};
use crate::store::{BanRecord, StoreError};
use crate::timefmt::now_unix;

/// A batch of remote changes this large hands freed memory back afterwards
/// (catch-ups and bursts come in batches of thousands).
const TRIM_AFTER_CHANGES: usize = 1_000;

/// Shadowed own bans changed in one batch: `Some` kept, `None` forgotten.
type ShadowChanges = HashMap<IpNet, Option<BanRecord>>;

/// Whether `record` is another host's ban (not this host's own).
fn is_remote(record: &BanRecord) -> bool {
    record.source.starts_with(FLEET_SOURCE_PREFIX)
}

impl Core {
    /// Connects the core to a fleet publisher: from now on, changes to
    /// shared bans are noted in `outbox`.
    pub fn attach_fleet(&mut self, outbox: Arc<Outbox>) {
        self.fleet_mut().outbox = Some(outbox);
    }

    /// Remembers the NATS servers' addresses (the session resolves them on
    /// every connect), which no remote ban may cover.
    pub fn set_fleet_servers(&mut self, addresses: Vec<std::net::IpAddr>) {
        self.fleet_mut().nats_servers = addresses;
    }

    /// The remote rules for one batch, with what this host protects now.
    fn remote_policy(&self) -> RemotePolicy {
        let fleet = &self.config().fleet;
        RemotePolicy {
            min_prefix_v4: fleet.remote_min_prefix_v4,
            min_prefix_v6: fleet.remote_min_prefix_v6,
            max_bans_per_origin: fleet.max_remote_bans_per_origin,
            max_space_v4: fleet.max_remote_space_v4,
            max_space_v6: fleet.max_remote_space_v6,
            protected: crate::fleet::protected::gather(
                &self.config().dns.servers,
                &self.fleet().nats_servers,
            ),
        }
    }

    /// Why `origin`'s ban of `net` may not be applied here, if it may not:
    /// the local rules, the remote ones, overlaps, then the caps.
    fn refuse_remote(
        &self,
        origin: &str,
        net: &IpNet,
        local: &crate::addr::BanPolicy,
        remote: &RemotePolicy,
        new_prefixes: &[IpNet],
    ) -> Result<(), Refusal> {
        local
            .check(net)
            .map_err(|e| Refusal::new(RefusalKind::Local, e.to_string()))?;
        remote.check_net(net)?;
        if !addr::is_single_address(net) {
            self.refuse_prefix_overlap(net, new_prefixes)
                .map_err(|e| Refusal::new(RefusalKind::Overlap, e.to_string()))?;
        }
        let holdings = &self.fleet().holdings;
        if holdings.holds(net, origin) {
            return Ok(());
        }
        remote.check_origin_caps(net, &holdings.usage(origin))?;
        // The total counts networks other hosts ban here (held), whichever
        // ban is in force.
        let max_bans = self.config().fleet.max_remote_bans;
        if !holdings.holds_net(net) && holdings.len() >= max_bans {
            return Err(Refusal::new(
                RefusalKind::Total,
                format!("fleet.max_remote_bans ({max_bans}) reached"),
            ));
        }
        Ok(())
    }

    /// Notes locally made changes to these bans for the publisher, when
    /// their source is shared: a ban still running is published, an ended
    /// one deleted.
    pub(super) fn note_local_changes<'a>(&self, records: impl IntoIterator<Item = &'a BanRecord>) {
        let Some(outbox) = &self.fleet().outbox else {
            return;
        };
        let now = now_unix();
        let jail_names = self.jail_names();
        let fleet = &self.config().fleet;
        outbox.add(
            records
                .into_iter()
                .filter(|record| fleet.shares(&record.source, &jail_names))
                .map(|record| (record.net, (record.expires > now).then(|| record.clone()))),
        );
    }

    /// Notes networks unbanned here, whatever the ban's source: a local
    /// ban may have been replaced by a longer one from another host, and
    /// this host's key must go all the same. The publisher deletes only
    /// keys this host has.
    pub(super) fn note_local_unbans(&self, removed: &[BanRecord]) {
        if let Some(outbox) = &self.fleet().outbox {
            outbox.add(removed.iter().map(|record| (record.net, None)));
        }
    }

    /// Every network banned here now, whatever the source: a host's key
    /// for a network it still bans (even if another host's longer ban is
    /// the one in force) is kept when catching up.
    pub fn banned_nets(&self) -> HashSet<IpNet> {
        let now = now_unix();
        self.store()
            .bans()
            .filter(|record| record.expires > now)
            .map(|record| record.net)
            .collect()
    }

    /// The jails `fleet.share = ["jails"]` covers (see
    /// [`crate::config::JailsConfig::shared_by_default`]).
    fn jail_names(&self) -> Vec<&str> {
        self.config().jails.shared_by_default()
    }

    /// Every shared ban of this host still running, for the publisher's
    /// catch-up.
    pub fn shared_bans(&self) -> Vec<SharedBan> {
        let now = now_unix();
        let jail_names = self.jail_names();
        let fleet = &self.config().fleet;
        self.store()
            .bans()
            .chain(self.store().shadowed_bans())
            .filter(|record| record.expires > now && fleet.shares(&record.source, &jail_names))
            .map(|record| (record.net, Some(record.clone())))
            .collect()
    }

    /// Sorts this host's new bans: a ban shorter than another host's
    /// active ban of the same network waits under it (shadowed, stored
    /// here), the rest become active, and shadowed own bans they replace
    /// are forgotten. Returns the bans to make active, or `None` when all
    /// of them are (no remote ban is active here: nothing to look up).
    pub(super) fn keep_longer_remote_bans(
        &mut self,
        records: &[BanRecord],
    ) -> Result<Option<Vec<BanRecord>>, StoreError> {
        if !self.counts().any_from(FLEET_SOURCE_PREFIX) {
            return Ok(None);
        }
        let mut shadows = Vec::new();
        let mut active = Vec::with_capacity(records.len());
        for record in records {
            match self.store().get_ban(&record.net) {
                Some(current) if is_remote(current) && current.expires > record.expires => {
                    shadows.push((record.net, Some(record.clone())));
                }
                Some(current) if is_remote(current) => {
                    shadows.push((record.net, None));
                    active.push(record.clone());
                }
                _ => active.push(record.clone()),
            }
        }
        self.store_mut().set_shadowed(&shadows)?;
        Ok(Some(active))
    }

    /// A local unban ends this host's own bans of `nets`, shadowed ones
    /// included.
    pub(super) fn forget_shadowed(&mut self, nets: &[IpNet]) -> Result<(), StoreError> {
        let forgotten: Vec<(IpNet, Option<BanRecord>)> = nets
            .iter()
            .filter(|net| self.store().shadowed(net).is_some())
            .map(|net| (*net, None))
            .collect();
        self.store_mut().set_shadowed(&forgotten)
    }

    /// At start: forgets shadowed bans that no longer sit under a longer
    /// remote ban (a crash between the two writes of a change leaves one).
    pub(super) fn drop_stale_shadows(&mut self) -> Result<(), StoreError> {
        let stale: Vec<(IpNet, Option<BanRecord>)> = self
            .store()
            .shadowed_bans()
            .filter(|shadow| {
                !self
                    .store()
                    .get_ban(&shadow.net)
                    .is_some_and(|active| is_remote(active) && active.expires > shadow.expires)
            })
            .map(|shadow| (shadow.net, None))
            .collect();
        self.store_mut().set_shadowed(&stale)
    }

    /// Applies other hosts' changes: every local rule decides whether a
    /// ban is applied (a refusal is logged and skipped); the bans are
    /// stored with one fsync and put in the kernel together.
    pub fn apply_remote(&mut self, changes: Vec<RemoteChange>) -> Result<RemoteOutcome, CoreError> {
        let now = now_unix();
        let mut outcome = RemoteOutcome::default();
        if changes.len() >= TRIM_AFTER_CHANGES {
            self.request_trim();
        }
        if !self.config().fleet.apply {
            return Ok(outcome);
        }
        let policy = self.policy();
        let has_puts = changes
            .iter()
            .any(|change| matches!(change, RemoteChange::Put { .. }));
        let remote_policy = has_puts.then(|| self.remote_policy());
        let max_until = now.saturating_add(self.config().fleet.max_remote_time.as_secs());
        let mut pending: HashMap<IpNet, BanRecord> = HashMap::new();
        let mut lift: HashSet<IpNet> = HashSet::new();
        let mut shadows = ShadowChanges::new();
        let mut new_prefixes: Vec<IpNet> = Vec::new();
        for change in changes {
            match change {
                RemoteChange::Put { origin, net, ban } => {
                    if ban.expires_at <= now {
                        self.lift_remote(&origin, net, now, &mut pending, &mut lift, &mut shadows);
                        continue;
                    }
                    let Some(remote_policy) = &remote_policy else {
                        continue;
                    };
                    if let Err(refusal) =
                        self.refuse_remote(&origin, &net, &policy, remote_policy, &new_prefixes)
                    {
                        outcome.refusals.note(&origin, &net, refusal);
                        // A ban this origin had here before the rules
                        // refused it (an allowlist entry added since, an
                        // upgrade) goes too.
                        self.lift_remote(&origin, net, now, &mut pending, &mut lift, &mut shadows);
                        continue;
                    }
                    let expires = ban.expires_at.min(max_until);
                    let reason: Arc<str> = Arc::from(ban.reason.as_str());
                    self.fleet_mut().holdings.put(
                        net,
                        Hold {
                            origin: origin.clone(),
                            expires,
                            reason: reason.clone(),
                        },
                    );
                    lift.remove(&net);
                    let current = pending.get(&net).or_else(|| self.store().get_ban(&net));
                    if current.is_some_and(|current| current.expires >= expires) {
                        continue;
                    }
                    // This host's own ban waits under the longer one.
                    if let Some(own) = current.filter(|current| !is_remote(current)) {
                        shadows.insert(net, Some(own.clone()));
                    }
                    if !addr::is_single_address(&net) {
                        new_prefixes.push(net);
                    }
                    pending.insert(
                        net,
                        BanRecord {
                            net,
                            created: ban.created.min(now),
                            expires,
                            reason,
                            source: Arc::from(format!("{FLEET_SOURCE_PREFIX}{origin}")),
                        },
                    );
                }
                RemoteChange::Delete { origin, net } => {
                    self.lift_remote(&origin, net, now, &mut pending, &mut lift, &mut shadows);
                }
                RemoteChange::OwnKeyRemoved { net, made_before } => {
                    self.lift_own(net, made_before, now, &mut pending, &mut lift, &mut shadows);
                }
            }
        }
        if let Some(line) = outcome.refusals.summary() {
            let count = outcome.refusals.total() as u64;
            self.fleet().refusal_log.note(
                || line,
                count,
                "remote bans not applied (counted in orch status)",
            );
        }
        outcome.applied = pending.len();
        outcome.lifted = lift.len();
        // Own bans are kept as shadows before a remote ban replaces them,
        // and forgotten only once they are active again or lifted: a crash
        // in between leaves a stale shadow (dropped at start), never a lost
        // own ban.
        let (kept, forgotten): (Vec<_>, Vec<_>) = shadows
            .into_iter()
            .partition(|(_, shadow)| shadow.is_some());
        self.store_mut().set_shadowed(&kept)?;
        let records: Vec<BanRecord> = pending.into_values().collect();
        self.store_and_apply(&records, now)?;
        let lift: Vec<IpNet> = lift.into_iter().collect();
        self.unban_many(&lift)?;
        self.store_mut().set_shadowed(&forgotten)?;
        Ok(outcome)
    }

    /// `origin` no longer bans `net`: if its ban is the one in force here,
    /// the longest other origin's ban takes its place, or the ban is lifted.
    fn lift_remote(
        &mut self,
        origin: &str,
        net: IpNet,
        now: u64,
        pending: &mut HashMap<IpNet, BanRecord>,
        lift: &mut HashSet<IpNet>,
        shadows: &mut ShadowChanges,
    ) {
        self.fleet_mut().holdings.remove(&net, origin);
        let source = format!("{FLEET_SOURCE_PREFIX}{origin}");
        // The ban in force here: this batch's, else the stored one.
        let Some(created) = pending
            .get(&net)
            .or_else(|| self.store().get_ban(&net))
            .filter(|record| *record.source == *source)
            .map(|record| record.created)
        else {
            return;
        };
        self.fall_back_or_lift(net, created, now, pending, lift, shadows);
    }

    /// Someone else deleted this host's key for `net`: this host's shared
    /// ban of it, if made before `made_before`, is lifted here too
    /// (another host's ban of `net`, if any, takes its place). A shadowed
    /// own ban is simply forgotten.
    fn lift_own(
        &mut self,
        net: IpNet,
        made_before: u64,
        now: u64,
        pending: &mut HashMap<IpNet, BanRecord>,
        lift: &mut HashSet<IpNet>,
        shadows: &mut ShadowChanges,
    ) {
        let jail_names = self.jail_names();
        let fleet = &self.config().fleet;
        let lifted_by_unban = |record: &BanRecord| {
            record.created < made_before && fleet.shares(&record.source, &jail_names)
        };
        let active_created = self
            .store()
            .get_ban(&net)
            .filter(|record| !is_remote(record) && lifted_by_unban(record))
            .map(|record| record.created);
        let shadow_lifted = Self::shadow_in_batch(self.store(), shadows, &net)
            .is_some_and(|shadow| lifted_by_unban(&shadow));
        if active_created.is_none() && !shadow_lifted {
            return;
        }
        tracing::info!(
            "fleet: lifting {net} here too: this host's key was deleted by a fleet-wide unban"
        );
        if shadow_lifted {
            shadows.insert(net, None);
        }
        if let Some(created) = active_created {
            self.fall_back_or_lift(net, created, now, pending, lift, shadows);
        }
    }

    /// The shadowed own ban of `net` as this batch left it.
    fn shadow_in_batch(
        store: &crate::store::Store,
        shadows: &ShadowChanges,
        net: &IpNet,
    ) -> Option<BanRecord> {
        match shadows.get(net) {
            Some(changed) => changed.clone(),
            None => store.shadowed(net).cloned(),
        }
    }

    /// The ban of `net` in force here ends: the longest remaining hold
    /// takes its place (this host's shadowed own ban, or another origin's
    /// ban), or the ban is lifted.
    fn fall_back_or_lift(
        &mut self,
        net: IpNet,
        created: u64,
        now: u64,
        pending: &mut HashMap<IpNet, BanRecord>,
        lift: &mut HashSet<IpNet>,
        shadows: &mut ShadowChanges,
    ) {
        let own = Self::shadow_in_batch(self.store(), shadows, &net)
            .filter(|shadow| shadow.expires > now);
        let remote = self.fleet().holdings.longest(&net, now).cloned();
        let own_is_longest = own.as_ref().is_some_and(|own| {
            remote
                .as_ref()
                .is_none_or(|remote| own.expires >= remote.expires)
        });
        match own {
            Some(own) if own_is_longest => {
                shadows.insert(net, None);
                pending.insert(net, own);
                return;
            }
            Some(_) => {}
            None => {
                if self.store().shadowed(&net).is_some() {
                    shadows.insert(net, None);
                }
            }
        }
        match remote {
            Some(next) => {
                pending.insert(
                    net,
                    BanRecord {
                        net,
                        created,
                        expires: next.expires,
                        reason: next.reason,
                        source: Arc::from(format!("{FLEET_SOURCE_PREFIX}{}", next.origin)),
                    },
                );
            }
            None => {
                pending.remove(&net);
                lift.insert(net);
            }
        }
    }

    /// Ends a catch-up from the bucket: `present` is every (network,
    /// origin) the bucket holds. Remote bans no longer there (lifted while
    /// this host was away) are lifted here; nothing else changes, so no
    /// ban that is still wanted is ever out of the kernel.
    pub fn finish_catch_up(
        &mut self,
        present: HashSet<(IpNet, Arc<str>)>,
    ) -> Result<RemoteOutcome, CoreError> {
        let mut gone: HashSet<(IpNet, Arc<str>)> = self
            .fleet()
            .holdings
            .pairs()
            .filter(|pair| !present.contains(pair))
            .collect();
        // Remote bans in the store that no hold explains (the daemon
        // restarted, so holdings started empty).
        for record in self.store().bans() {
            if let Some(origin) = record.source.strip_prefix(FLEET_SOURCE_PREFIX) {
                let pair = (record.net, Arc::from(origin));
                if !present.contains(&pair) {
                    gone.insert(pair);
                }
            }
        }
        let changes = gone
            .into_iter()
            .map(|(net, origin)| RemoteChange::Delete { origin, net })
            .collect();
        self.apply_remote(changes)
    }

    /// Drops holds that have expired (the tick calls this), and own bans
    /// that ended while shadowed: their keys are deleted.
    pub(super) fn forget_expired_holds(&mut self, now: u64) {
        self.fleet_mut().holdings.drop_expired(now);
        let ended = self.store_mut().purge_expired_shadows(now);
        self.note_local_changes(&ended);
    }
}
