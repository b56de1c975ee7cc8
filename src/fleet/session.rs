//! The fleet connection's life: connect, open the bucket, catch up (apply
//! what other hosts hold, lift what they dropped while we were away,
//! publish what this host changed meanwhile), then follow the bucket and
//! the outbox until the connection breaks, and start over.
//!
//! Every ban change goes through the core ([`CoreHandle`]); this task only
//! moves data between NATS and the core. It must not touch the store or
//! the kernel.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::connect::{FleetError, connect, open_bucket, server_addresses};
use super::outbox::{Outbox, SharedBan};
use super::pacing::BatchPacing;
use super::presence::{self, Claim};
use super::publisher::{OwnKeys, Publisher, lock};
use super::record;
use super::status::FleetStatus;
use crate::config::FleetConfig;
use crate::daemon::core::CoreHandle;
use crate::fleet::remote_change::RemoteChange;

/// Remote changes handed to the core at once, at most.
const APPLY_BATCH: usize = 5_000;
/// What the skip log's summary line counts.
const SKIPPED: &str = "malformed entries skipped";
/// Longest wait for the next entry while catching up.
const CATCH_UP_STALL: Duration = Duration::from_secs(15);

/// Everything the session needs, cloned into its task.
pub struct FleetTask {
    pub config: FleetConfig,
    /// Longest ban this host makes: bounds key life on servers without
    /// per-message TTL.
    pub max_ban_time: Duration,
    pub core: CoreHandle,
    pub outbox: Arc<Outbox>,
    pub status: Arc<FleetStatus>,
    /// Malformed entries: a few logged, the rest counted.
    pub skips: super::log_window::LogWindow,
    /// Who this daemon is, for its name's presence key.
    pub owner: String,
    /// Whether another live daemon holds this host's fleet name: then
    /// nothing is published or deleted, and keys under the name are not
    /// this host's to track.
    pub name_taken: AtomicBool,
    /// Whether a failed claim was logged already.
    pub presence_warned: AtomicBool,
}

/// The outcome of claiming this host's fleet name for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameClaim {
    /// Ours; the presence key was written at this revision.
    Held(u64),
    /// Another live daemon holds it: publish and delete nothing.
    Taken,
    /// The presence key could not be written: work without the check.
    Unchecked,
}

impl FleetTask {
    /// Runs forever: (re)connects with backoff and runs sessions.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(250);
        self.status.set_phase("connecting", false);
        let (client, mut connected) = loop {
            match connect(&self.config, self.status.clone()).await {
                Ok(connection) => break connection,
                Err(error) => {
                    tracing::warn!("fleet: {error}; retrying in {backoff:?}");
                    self.status.set_error(error.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        };
        loop {
            // Wait until the client is (back) online.
            while client.connection_state() != async_nats::connection::State::Connected {
                let _ = tokio::time::timeout(Duration::from_secs(1), connected.changed()).await;
            }
            match self.session(&client, &mut connected).await {
                Ok(()) => backoff = Duration::from_millis(250),
                Err(error) => {
                    tracing::warn!("fleet: {error}; starting over in {backoff:?}");
                    self.status.set_error(error.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// One connected stretch: catch up, then follow.
    async fn session(
        &self,
        client: &async_nats::Client,
        connected: &mut watch::Receiver<bool>,
    ) -> Result<(), FleetError> {
        let failed =
            |what: &str, e: &dyn std::fmt::Display| FleetError::Session(format!("{what}: {e}"));
        self.status.set_phase("catching up", false);
        let (store, key_ttl) = open_bucket(client, &self.config, self.max_ban_time).await?;
        let server = client.server_info();
        self.status.set_server(
            format!("{}:{} ({})", server.host, server.port, server.version),
            key_ttl,
        );
        let servers = server_addresses(&self.config, &server).await;
        self.core
            .call(move |core| core.set_fleet_servers(servers))
            .await
            .map_err(|e| failed("noting the servers' addresses", &e))?;
        let claim = self.claim_name(&store).await;
        let publisher = Publisher {
            js: jetstream::new(client.clone()),
            store: store.clone(),
            bucket: self.config.bucket.clone(),
            name: self.config.name.clone(),
            key_ttl,
        };
        let messages = store
            .status()
            .await
            .map_err(|e| failed("bucket status", &e))?
            .info
            .state
            .messages;
        let mut watch = store
            .watch_with_history(">")
            .await
            .map_err(|e| failed("watching the bucket", &e))?;

        // Catch up: apply what is there, note our own keys.
        let own_keys: OwnKeys = Mutex::default();
        let mut present: HashSet<(IpNet, Arc<str>)> = HashSet::new();
        let mut batch = Vec::new();
        let mut caught_up = messages == 0;
        let mut last_revision = 0;
        while !caught_up {
            let entry = match tokio::time::timeout(CATCH_UP_STALL, watch.next()).await {
                Ok(Some(Ok(entry))) => entry,
                Ok(Some(Err(e))) => return Err(failed("reading the bucket", &e)),
                Ok(None) => return Err(FleetError::Session("the bucket watch ended".into())),
                Err(_) => return Err(FleetError::Session("catching up stalled".into())),
            };
            caught_up = entry.delta == 0;
            last_revision = entry.revision;
            if let Some(change) = self.read_entry(&entry, &own_keys, false) {
                if let RemoteChange::Put { origin, net, .. } = &change {
                    present.insert((*net, origin.clone()));
                }
                batch.push(change);
            }
            if batch.len() >= APPLY_BATCH || caught_up {
                self.apply(std::mem::take(&mut batch)).await?;
            }
        }
        let lifted = self
            .core
            .call(move |core| core.finish_catch_up(present))
            .await
            .map_err(|e| failed("lifting dropped bans", &e))?
            .map_err(|e| failed("lifting dropped bans", &e))?;
        if matches!(claim, NameClaim::Taken) {
            // Another daemon publishes under this name: follow the bucket,
            // publish and delete nothing, and see whether the name frees.
            self.status.set_phase("connected", true);
            let (batches, mut to_apply) = mpsc::channel(1);
            return tokio::select! {
                result = self.wait_for_name(&store) => result,
                result = self.follow(&mut watch, connected, &own_keys, batches) => result,
                result = self.apply_in_order(&mut to_apply) => result,
            };
        }
        // Publish what changed here while we were away: the difference
        // between this host's shared bans and its keys in the bucket.
        self.outbox.take();
        let (shared, banned) = self
            .core
            .call(|core| (core.shared_bans(), core.banned_nets()))
            .await
            .map_err(|e| failed("reading shared bans", &e))?;
        let shared_nets: HashSet<IpNet> = shared.iter().map(|(net, _)| *net).collect();
        let changes: Vec<SharedBan> = {
            let own = lock(&own_keys);
            let mut changes: Vec<SharedBan> = shared
                .into_iter()
                .filter(|(net, ban)| {
                    ban.as_ref().map(|b| b.expires) != own.expires.get(net).copied()
                })
                .collect();
            // Keys of bans no longer here go. A ban still here but now held
            // by another host's longer ban keeps its key until it ends.
            changes.extend(
                own.expires
                    .keys()
                    .filter(|net| !shared_nets.contains(net) && !banned.contains(net))
                    .map(|net| (*net, None)),
            );
            changes
        };
        let published = changes.len();
        publisher
            .publish_all(changes, &self.outbox, &own_keys)
            .await?;
        crate::memory::release_freed_memory();
        self.status.clear_error();
        self.status.set_phase("connected", true);
        tracing::info!(
            revision = last_revision,
            lifted = lifted.lifted,
            published,
            "fleet: caught up with bucket {}",
            self.config.bucket
        );

        // Follow the bucket and publish, side by side: a long publish must
        // not leave the watch unread (its own echoes would overflow it).
        // The watch is read and decoded while the core applies the batch
        // before (one more may wait between them).
        let (batches, mut to_apply) = mpsc::channel(1);
        let keep_name = async {
            match claim {
                NameClaim::Held(revision) => self.keep_name(&store, revision).await,
                // Nothing to refresh: follow and publish until an error.
                NameClaim::Unchecked | NameClaim::Taken => std::future::pending().await,
            }
        };
        tokio::select! {
            result = self.publish_changes(&publisher, &own_keys) => result,
            result = self.follow(&mut watch, connected, &own_keys, batches) => result,
            result = self.apply_in_order(&mut to_apply) => result,
            result = keep_name => result,
        }
    }

    /// Claims this host's fleet name: [`NameClaim::Held`] when it is ours,
    /// [`NameClaim::Taken`] (shown in the status and logged) when another
    /// live daemon holds it, [`NameClaim::Unchecked`] when the presence key
    /// cannot be written (a read-only NATS user): the host then works as
    /// before, without collision detection, rather than not at all.
    async fn claim_name(&self, store: &kv::Store) -> NameClaim {
        let name = &self.config.name;
        let claim = match presence::claim(store, name, &self.owner).await {
            Ok(claim) => claim,
            Err(error) => {
                if !self.presence_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "fleet: cannot claim the name {name} ({error}); a second daemon with this name would go unnoticed"
                    );
                }
                return NameClaim::Unchecked;
            }
        };
        match claim {
            Claim::Held { revision } => {
                if self.name_taken.swap(false, Ordering::Relaxed) {
                    tracing::info!("fleet: the name {name} is this host's again");
                }
                self.status.set_collision(None);
                NameClaim::Held(revision)
            }
            Claim::Taken(holder) => {
                let message = format!(
                    "fleet name {name} is in use by another daemon ({holder}); this host \
                     publishes and deletes nothing under it: give it its own [fleet] name"
                );
                if !self.name_taken.swap(true, Ordering::Relaxed) {
                    tracing::error!("fleet: {message}");
                }
                self.status.set_collision(Some(message));
                NameClaim::Taken
            }
        }
    }

    /// Refreshes this host's presence until another daemon takes the name
    /// (then the session starts over and finds it taken) or an error.
    async fn keep_name(&self, store: &kv::Store, mut revision: u64) -> Result<(), FleetError> {
        loop {
            tokio::time::sleep(presence::HEARTBEAT).await;
            match presence::refresh(store, &self.config.name, &self.owner, revision).await {
                Ok(Some(next)) => revision = next,
                Ok(None) => {
                    return Err(FleetError::Session(format!(
                        "another daemon wrote the presence of fleet name {}",
                        self.config.name
                    )));
                }
                Err(e) => return Err(FleetError::Session(e.to_string())),
            }
        }
    }

    /// While another daemon holds this host's name: checks every heartbeat
    /// whether it is free, and starts the session over once it is.
    async fn wait_for_name(&self, store: &kv::Store) -> Result<(), FleetError> {
        loop {
            tokio::time::sleep(presence::HEARTBEAT).await;
            if !matches!(self.claim_name(store).await, NameClaim::Taken) {
                return Err(FleetError::Session(format!(
                    "fleet name {} is free again; starting over to publish",
                    self.config.name
                )));
            }
        }
    }

    /// Publishes what the core notes in the outbox, until an error.
    async fn publish_changes(
        &self,
        publisher: &Publisher,
        own_keys: &OwnKeys,
    ) -> Result<(), FleetError> {
        loop {
            self.outbox.changed().await;
            let changes = self.outbox.take();
            if !changes.is_empty() {
                publisher
                    .publish_all(changes, &self.outbox, own_keys)
                    .await?;
            }
        }
    }

    /// Hands the core each batch [`FleetTask::follow`] reads, in order.
    async fn apply_in_order(
        &self,
        to_apply: &mut mpsc::Receiver<Vec<RemoteChange>>,
    ) -> Result<(), FleetError> {
        while let Some(batch) = to_apply.recv().await {
            self.apply(batch).await?;
        }
        Ok(())
    }

    /// Reads the bucket's changes as they come and passes them on in
    /// batches, until an error or a disconnect.
    async fn follow(
        &self,
        watch: &mut kv::Watch,
        connected: &mut watch::Receiver<bool>,
        own_keys: &OwnKeys,
        batches: mpsc::Sender<Vec<RemoteChange>>,
    ) -> Result<(), FleetError> {
        let failed =
            |e: &dyn std::fmt::Display| FleetError::Session(format!("reading the bucket: {e}"));
        let ended = || FleetError::Session("the bucket watch ended".into());
        // Changes read but not yet handed on. A lone ban goes as soon as the
        // core can take it. In a burst (the batch before was large) a batch
        // also waits up to BURST_LINGER to fill, and it grows as long as the
        // core is busy with the one before: hundreds or thousands at once
        // instead of a few at a time, each with its own transaction.
        let mut batch: Vec<RemoteChange> = Vec::new();
        let mut pacing = BatchPacing::default();
        loop {
            let due = pacing.due();
            let ready = !batch.is_empty() && (batch.len() >= APPLY_BATCH || Instant::now() >= due);
            tokio::select! {
                biased;
                changed = connected.changed() => {
                    if changed.is_err() || !*connected.borrow() {
                        return Err(FleetError::Session("disconnected from NATS".into()));
                    }
                }
                permit = batches.reserve(), if ready => {
                    let permit = permit
                        .map_err(|_| FleetError::Session("applying remote bans stopped".into()))?;
                    self.status.note_event();
                    pacing.handed_on(batch.len());
                    permit.send(std::mem::take(&mut batch));
                }
                entry = watch.next(), if batch.len() < APPLY_BATCH => {
                    match entry {
                        Some(Ok(entry)) => {
                            if batch.is_empty() {
                                pacing.started(Instant::now());
                            }
                            batch.extend(self.read_entry(&entry, own_keys, true));
                        }
                        Some(Err(e)) => return Err(failed(&e)),
                        None => return Err(ended()),
                    }
                }
                // Last: while entries keep coming this timer is never set
                // (the loop's `ready` sees the time pass).
                () = tokio::time::sleep_until(due), if !batch.is_empty() && !ready => {}
            }
        }
    }

    /// Reads one bucket entry: this host's own keys update `own_keys`, and
    /// a deletion of one by someone else (a fleet-wide unban) becomes a
    /// change for the core, as do other hosts' keys. Malformed entries are
    /// skipped, and logged within bounds ([`super::log_window::LogWindow`]).
    /// `live`: after the catch-up, when this host's own puts are only
    /// echoes of what the publisher wrote and need no decoding.
    fn read_entry(
        &self,
        entry: &kv::Entry,
        own_keys: &OwnKeys,
        live: bool,
    ) -> Option<RemoteChange> {
        if presence::presence_name(&entry.key).is_some() {
            // Presence is claimed and refreshed by `claim_name`/`keep_name`.
            return None;
        }
        let key = match record::parse_key(&entry.key) {
            Ok(key) => key,
            Err(error) => {
                self.skip(&error);
                return None;
            }
        };
        if key.origin == self.config.name && self.name_taken.load(Ordering::Relaxed) {
            // Another daemon's keys under this host's name: not this host's
            // to track, delete or lift by.
            return None;
        }
        let removed = !matches!(entry.operation, kv::Operation::Put);
        if live && !removed && key.origin == self.config.name {
            // The echo of our own put: the publisher already noted it.
            return None;
        }
        let ban = if removed {
            None
        } else {
            match record::decode_value(&key, &entry.key, &entry.value) {
                Ok(ban) => Some(ban),
                Err(error) => {
                    self.skip(&error);
                    return None;
                }
            }
        };
        if key.origin == self.config.name {
            let mut own_keys = lock(own_keys);
            return match ban {
                Some(ban) => {
                    own_keys.expires.insert(key.net, ban.expires_at);
                    None
                }
                None => {
                    own_keys.expires.remove(&key.net);
                    // Ours, or a purge: the server purges a key whose TTL
                    // ran out (the ban ended here as well).
                    if own_keys.deleting.remove(&key.net)
                        || !matches!(entry.operation, kv::Operation::Delete)
                    {
                        return None;
                    }
                    // Someone else deleted it. Live, the deletion is
                    // happening now: a ban made up to its second went with
                    // it. Read from history, only a ban made before it.
                    let at = u64::try_from(entry.created.unix_timestamp()).unwrap_or(0);
                    let made_before = if live { at.saturating_add(1) } else { at };
                    Some(RemoteChange::OwnKeyRemoved {
                        net: key.net,
                        made_before,
                    })
                }
            };
        }
        let origin: Arc<str> = Arc::from(key.origin);
        Some(match ban {
            Some(ban) => RemoteChange::Put {
                origin,
                net: key.net,
                ban,
            },
            None => RemoteChange::Delete {
                origin,
                net: key.net,
            },
        })
    }

    /// Counts a malformed entry, and logs it within bounds.
    fn skip(&self, error: &dyn std::fmt::Display) {
        self.status.note_skipped();
        self.skips
            .note(|| format!("fleet: skipping {error}"), 1, SKIPPED);
    }

    async fn apply(&self, batch: Vec<RemoteChange>) -> Result<(), FleetError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (count, started) = (batch.len(), std::time::Instant::now());
        let outcome = self
            .core
            .call(move |core| core.apply_remote(batch))
            .await
            .map_err(|e| FleetError::Session(format!("applying remote bans: {e}")))?
            .map_err(|e| FleetError::Session(format!("applying remote bans: {e}")))?;
        self.status.add_refusals(&outcome.refusals);
        tracing::debug!(
            count,
            seconds = started.elapsed().as_secs_f64(),
            applied = outcome.applied,
            lifted = outcome.lifted,
            refused = outcome.refusals.total(),
            "fleet: remote changes"
        );
        Ok(())
    }
}
