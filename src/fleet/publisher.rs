//! This host's side of the bucket: writes and deletes its own keys, many
//! at once, and keeps track of them ([`OwnKeys`], shared with the
//! session's watch, which reads the same keys back).
//!
//! It only moves the outbox's changes to NATS; it must not ban, store or
//! decide what is shared (the core does, when it fills the outbox).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use ipnet::IpNet;

use super::connect::FleetError;
use super::outbox::{Outbox, SharedBan};
use super::record::{self, FleetBan};
use crate::timefmt::now_unix;

/// Publishes in flight at once.
const PUBLISH_CONCURRENCY: usize = 512;
/// A publish this large is followed by handing freed memory back.
const LARGE_BATCH: usize = 1_000;

/// This host's keys in the bucket: shared by the publisher and the watch
/// (locked only briefly, never across an await).
#[derive(Debug, Default)]
pub(super) struct OwnKeyState {
    /// Each key's expiry, as last written or read.
    pub(super) expires: HashMap<IpNet, u64>,
    /// Keys this host is deleting: the deletions the watch reads back for
    /// them are its own, any other deletion of its keys is someone else's.
    pub(super) deleting: HashSet<IpNet>,
}

pub(super) type OwnKeys = Mutex<OwnKeyState>;

pub(super) fn lock(own_keys: &OwnKeys) -> std::sync::MutexGuard<'_, OwnKeyState> {
    own_keys
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes this host's keys.
pub(super) struct Publisher {
    pub(super) js: jetstream::Context,
    pub(super) store: kv::Store,
    pub(super) bucket: String,
    pub(super) name: String,
    pub(super) key_ttl: bool,
}

impl Publisher {
    /// Puts or deletes this host's key for each network, many at once;
    /// a delete only where this host has a key (`own_keys`, kept current
    /// here and by the watch). Networks whose write failed go back to the
    /// outbox, and the first error ends the session (the next one
    /// publishes the difference).
    pub(super) async fn publish_all(
        &self,
        changes: Vec<SharedBan>,
        outbox: &Outbox,
        own_keys: &OwnKeys,
    ) -> Result<(), FleetError> {
        let changes: Vec<SharedBan> = {
            let mut own_keys = lock(own_keys);
            let changes: Vec<SharedBan> = changes
                .into_iter()
                .filter(|(net, ban)| ban.is_some() || own_keys.expires.contains_key(net))
                .collect();
            own_keys.deleting.extend(
                changes
                    .iter()
                    .filter(|(_, ban)| ban.is_none())
                    .map(|(net, _)| *net),
            );
            changes
        };
        let (count, started) = (changes.len(), std::time::Instant::now());
        let results: Vec<(SharedBan, Result<(), String>)> = futures_util::stream::iter(changes)
            .map(|change| async move {
                let result = self.publish(&change).await;
                (change, result)
            })
            .buffer_unordered(PUBLISH_CONCURRENCY)
            .collect()
            .await;
        let mut first_error = None;
        let mut failed = Vec::new();
        let mut own_keys = lock(own_keys);
        for (change, result) in results {
            match (result, &change.1) {
                (Err(error), _) => {
                    own_keys.deleting.remove(&change.0);
                    failed.push(change);
                    first_error.get_or_insert(error);
                }
                (Ok(()), Some(ban)) => {
                    own_keys.expires.insert(change.0, ban.expires);
                }
                (Ok(()), None) => {
                    own_keys.expires.remove(&change.0);
                }
            }
        }
        drop(own_keys);
        outbox.put_back(failed);
        if count >= LARGE_BATCH {
            // The batch's transient copies were made on the runtime's
            // threads; hand their memory back now.
            crate::memory::release_freed_memory();
        }
        tracing::debug!(
            count,
            seconds = started.elapsed().as_secs_f64(),
            "fleet: published"
        );
        match first_error {
            Some(error) => Err(FleetError::Session(format!("publishing: {error}"))),
            None => Ok(()),
        }
    }

    async fn publish(&self, (net, ban): &SharedBan) -> Result<(), String> {
        let key = record::key(&self.name, net);
        match ban {
            Some(ban) => {
                let mut message = jetstream::message::PublishMessage::build()
                    .payload(record::encode_value(&FleetBan::from_record(ban)).into());
                if self.key_ttl {
                    let left = ban.expires.saturating_sub(now_unix()).max(1);
                    message = message.ttl(Duration::from_secs(left));
                }
                self.js
                    .send_publish(format!("$KV.{}.{key}", self.bucket), message)
                    .await
                    .map_err(|e| format!("{key}: {e}"))?
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{key}: {e}"))
            }
            None => self
                .store
                .delete(&key)
                .await
                .map_err(|e| format!("deleting {key}: {e}")),
        }
    }
}
