//! This host's changes waiting to be published: for each network whose
//! shared ban started, ended or changed since the publisher last looked,
//! its newest state (the ban record, or `None` for "no longer banned").
//!
//! The outbox is memory only. The store stays the one durable copy: after
//! a crash or an outage the publisher rebuilds the difference between the
//! store and this host's keys in the bucket, so nothing acknowledged is
//! lost. Carrying the state (not just the network) lets the publisher start
//! without asking the core, while the core is still putting a large batch
//! in the kernel. This module must not persist or talk to NATS.

use std::collections::HashMap;
use std::sync::Mutex;

use ipnet::IpNet;
use tokio::sync::Notify;

use crate::store::BanRecord;

/// A network's shared ban as it should be published: `None` deletes this
/// host's key.
pub type SharedBan = (IpNet, Option<BanRecord>);

/// Changes noted by the core (which adds) for the publisher (which takes).
#[derive(Debug, Default)]
pub struct Outbox {
    changed: Mutex<HashMap<IpNet, Option<BanRecord>>>,
    wake: Notify,
}

impl Outbox {
    /// Notes changes (a later state of a network replaces an earlier one)
    /// and wakes the publisher.
    pub fn add(&self, changes: impl IntoIterator<Item = SharedBan>) {
        let mut changed = self.lock();
        let mut any = false;
        for (net, ban) in changes {
            changed.insert(net, ban);
            any = true;
        }
        drop(changed);
        if any {
            self.wake.notify_one();
        }
    }

    /// Takes every noted change (and the map's memory with them).
    pub fn take(&self) -> Vec<SharedBan> {
        std::mem::take(&mut *self.lock()).into_iter().collect()
    }

    /// Puts changes back after a failed publish, unless a newer state of
    /// the same network was noted meanwhile.
    pub fn put_back(&self, changes: impl IntoIterator<Item = SharedBan>) {
        let mut changed = self.lock();
        for (net, ban) in changes {
            changed.entry(net).or_insert(ban);
        }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpNet, Option<BanRecord>>> {
        // A panic while holding this lock leaves a plain map behind; keep
        // using it.
        self.changed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ban(net: &str, expires: u64) -> SharedBan {
        let net: IpNet = net.parse().expect("test literal");
        let record = BanRecord {
            net,
            created: 1,
            expires,
            reason: Arc::from(""),
            source: Arc::from("manual"),
        };
        (net, Some(record))
    }

    #[test]
    fn the_newest_state_wins_and_put_back_never_overrides_it() {
        let outbox = Outbox::default();
        outbox.add([ban("192.0.2.1/32", 10), ban("192.0.2.2/32", 10)]);
        outbox.add([ban("192.0.2.1/32", 20)]);
        let mut taken = outbox.take();
        taken.sort_by_key(|(net, _)| *net);
        let expiries: Vec<Option<u64>> = taken
            .iter()
            .map(|(_, ban)| ban.as_ref().map(|b| b.expires))
            .collect();
        assert_eq!(expiries, [Some(20), Some(10)]);
        assert!(outbox.is_empty());
        // While the publish failed, 192.0.2.1 was unbanned: that stays.
        outbox.add([("192.0.2.1/32".parse().expect("literal"), None)]);
        outbox.put_back(taken);
        let mut again = outbox.take();
        again.sort_by_key(|(net, _)| *net);
        assert!(again[0].1.is_none(), "the unban noted later is kept");
        assert_eq!(again[1].1.as_ref().map(|b| b.expires), Some(10));
    }
}
