//! Which hosts of the fleet hold a ban on which network, as last read from
//! the bucket. The ban a host applies for a network is the union of every
//! origin's: it lasts until the last of them expires, and lifting one
//! origin's ban leaves the others in force.
//!
//! Pure bookkeeping in memory, rebuilt from the bucket on every (re)connect;
//! it must not ban, persist or talk to NATS.

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;

/// One origin's ban of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub origin: Arc<str>,
    /// Unix seconds.
    pub expires: u64,
    pub reason: Arc<str>,
}

/// Every remote origin's bans, by network.
#[derive(Debug, Default)]
pub struct Holdings {
    by_net: HashMap<IpNet, Vec<Hold>>,
}

impl Holdings {
    /// Records (or replaces) `hold.origin`'s ban of `net`.
    pub fn put(&mut self, net: IpNet, hold: Hold) {
        let holds = self.by_net.entry(net).or_default();
        match holds.iter_mut().find(|h| h.origin == hold.origin) {
            Some(existing) => *existing = hold,
            None => holds.push(hold),
        }
    }

    /// Forgets `origin`'s ban of `net`; returns whether there was one.
    pub fn remove(&mut self, net: &IpNet, origin: &str) -> bool {
        let Some(holds) = self.by_net.get_mut(net) else {
            return false;
        };
        let before = holds.len();
        holds.retain(|h| &*h.origin != origin);
        let removed = holds.len() != before;
        if holds.is_empty() {
            self.by_net.remove(net);
        }
        removed
    }

    /// Whether `origin` holds a ban of `net`.
    pub fn holds(&self, net: &IpNet, origin: &str) -> bool {
        self.by_net
            .get(net)
            .is_some_and(|holds| holds.iter().any(|h| &*h.origin == origin))
    }

    /// The hold of `net` that lasts longest and is still running at `now`.
    pub fn longest(&self, net: &IpNet, now: u64) -> Option<&Hold> {
        self.by_net
            .get(net)?
            .iter()
            .filter(|h| h.expires > now)
            .max_by_key(|h| h.expires)
    }

    /// Every (network, origin) held.
    pub fn pairs(&self) -> impl Iterator<Item = (IpNet, Arc<str>)> + '_ {
        self.by_net
            .iter()
            .flat_map(|(net, holds)| holds.iter().map(|h| (*net, h.origin.clone())))
    }

    /// Drops holds that ended before `now`.
    pub fn drop_expired(&mut self, now: u64) {
        self.by_net.retain(|_, holds| {
            holds.retain(|h| h.expires > now);
            !holds.is_empty()
        });
    }

    /// How many networks are held by at least one origin.
    pub fn len(&self) -> usize {
        self.by_net.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_net.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(origin: &str, expires: u64) -> Hold {
        Hold {
            origin: Arc::from(origin),
            expires,
            reason: Arc::from("r"),
        }
    }

    #[test]
    fn the_union_lasts_until_the_last_origin_and_survives_one_removal() {
        let net: IpNet = "192.0.2.7/32".parse().expect("literal");
        let mut holdings = Holdings::default();
        holdings.put(net, hold("srv1", 100));
        holdings.put(net, hold("srv3", 300));
        holdings.put(net, hold("srv1", 200));
        assert_eq!(holdings.longest(&net, 0).map(|h| h.expires), Some(300));
        assert!(holdings.remove(&net, "srv3"));
        assert_eq!(holdings.longest(&net, 0).map(|h| h.expires), Some(200));
        assert_eq!(holdings.longest(&net, 200), None, "expired at 200");
        assert!(holdings.holds(&net, "srv1"));
        assert!(!holdings.remove(&net, "srv3"));
        assert!(holdings.remove(&net, "srv1"));
        assert!(holdings.is_empty());
    }

    #[test]
    fn expired_holds_are_dropped() {
        let a: IpNet = "192.0.2.1/32".parse().expect("literal");
        let b: IpNet = "192.0.2.2/32".parse().expect("literal");
        let mut holdings = Holdings::default();
        holdings.put(a, hold("srv1", 10));
        holdings.put(b, hold("srv1", 50));
        holdings.drop_expired(20);
        assert_eq!(holdings.len(), 1);
        assert_eq!(holdings.pairs().count(), 1);
    }
}
