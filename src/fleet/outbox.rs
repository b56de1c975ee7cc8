//! This host's changes waiting to be published: the networks whose local
//! ban started, ended or changed since the publisher last looked.
//!
//! The outbox holds only network names. What to publish is read from the
//! store when publishing (a ban still active → put, otherwise → delete), so
//! the store stays the one durable copy: after a crash or an outage the
//! publisher rebuilds the difference between the store and this host's keys
//! in the bucket, and nothing acknowledged is lost. This module must not
//! persist or talk to NATS.

use std::collections::HashSet;
use std::sync::Mutex;

use ipnet::IpNet;
use tokio::sync::Notify;

/// Networks changed locally, shared by the core (which adds) and the
/// publisher (which takes).
#[derive(Debug, Default)]
pub struct Outbox {
    changed: Mutex<HashSet<IpNet>>,
    wake: Notify,
}

impl Outbox {
    /// Notes changed networks and wakes the publisher.
    pub fn add(&self, nets: impl IntoIterator<Item = IpNet>) {
        let mut changed = self.lock();
        let before = changed.len();
        changed.extend(nets);
        if changed.len() != before {
            drop(changed);
            self.wake.notify_one();
        }
    }

    /// Takes every noted network (and the set's memory with them).
    pub fn take(&self) -> Vec<IpNet> {
        std::mem::take(&mut *self.lock()).into_iter().collect()
    }

    /// Puts networks back after a failed publish.
    pub fn put_back(&self, nets: impl IntoIterator<Item = IpNet>) {
        self.lock().extend(nets);
    }

    /// How many networks wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once something was added since the last call.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<IpNet>> {
        // A panic while holding this lock leaves a plain set behind; keep
        // using it.
        self.changed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
