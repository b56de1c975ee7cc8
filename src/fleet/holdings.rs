//! Which hosts of the fleet hold a ban on which network, as last read from
//! the bucket. The ban a host applies for a network is the union of every
//! origin's: it lasts until the last of them expires, and lifting one
//! origin's ban leaves the others in force.
//!
//! Pure bookkeeping in memory, rebuilt from the bucket on every (re)connect;
//! it must not ban, persist or talk to NATS.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;

use super::remote_policy::OriginUsage;

/// One origin's ban of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub origin: Arc<str>,
    /// Unix seconds.
    pub expires: u64,
    pub reason: Arc<str>,
}

/// The holds of one network: nearly always a single origin, kept inline
/// (no allocation of its own); a `Vec` only when several hosts ban it.
#[derive(Debug)]
enum Holds {
    One(Hold),
    Many(Vec<Hold>),
}

impl Holds {
    fn as_slice(&self) -> &[Hold] {
        match self {
            Holds::One(hold) => std::slice::from_ref(hold),
            Holds::Many(holds) => holds,
        }
    }

    /// Keeps the holds `keep` accepts; false when none is left.
    fn retain(&mut self, mut keep: impl FnMut(&Hold) -> bool) -> bool {
        match self {
            Holds::One(hold) => keep(hold),
            Holds::Many(holds) => {
                holds.retain(|hold| keep(hold));
                if holds.len() == 1 {
                    let last = holds.pop().map(Holds::One);
                    if let Some(one) = last {
                        *self = one;
                    }
                    return true;
                }
                !holds.is_empty()
            }
        }
    }
}

/// Every remote origin's bans, by network. Origin names and reasons are
/// interned: a burst of 100,000 bans from one host with a few distinct
/// reasons holds a few strings, not 200,000.
#[derive(Debug, Default)]
pub struct Holdings {
    by_net: HashMap<IpNet, Holds>,
    strings: HashSet<Arc<str>>,
    /// What each origin holds here, for the per-origin caps.
    usage: HashMap<Arc<str>, OriginUsage>,
}

impl Holdings {
    /// Records (or replaces) `hold.origin`'s ban of `net`.
    pub fn put(&mut self, net: IpNet, hold: Hold) {
        let hold = Hold {
            origin: self.intern(&hold.origin),
            expires: hold.expires,
            reason: self.intern(&hold.reason),
        };
        if !self.holds(&net, &hold.origin) {
            count_usage(&mut self.usage, &hold.origin, &net, true);
        }
        match self.by_net.get_mut(&net) {
            None => {
                self.by_net.insert(net, Holds::One(hold));
            }
            Some(Holds::One(existing)) if existing.origin == hold.origin => *existing = hold,
            Some(holds @ Holds::One(_)) => {
                if let Holds::One(first) = std::mem::replace(holds, Holds::Many(Vec::new())) {
                    *holds = Holds::Many(vec![first, hold]);
                }
            }
            Some(Holds::Many(list)) => match list.iter_mut().find(|h| h.origin == hold.origin) {
                Some(existing) => *existing = hold,
                None => list.push(hold),
            },
        }
    }

    fn intern(&mut self, text: &Arc<str>) -> Arc<str> {
        if let Some(known) = self.strings.get(text) {
            return known.clone();
        }
        self.strings.insert(text.clone());
        text.clone()
    }

    /// Forgets `origin`'s ban of `net`; returns whether there was one.
    pub fn remove(&mut self, net: &IpNet, origin: &str) -> bool {
        let Some(holds) = self.by_net.get_mut(net) else {
            return false;
        };
        let before = holds.as_slice().len();
        let left = holds.retain(|h| &*h.origin != origin);
        let removed = !left || holds.as_slice().len() != before;
        if !left {
            self.by_net.remove(net);
        }
        if removed {
            count_usage(&mut self.usage, origin, net, false);
        }
        removed
    }

    /// Whether `origin` holds `net`.
    pub fn holds(&self, net: &IpNet, origin: &str) -> bool {
        self.by_net
            .get(net)
            .is_some_and(|holds| holds.as_slice().iter().any(|h| &*h.origin == origin))
    }

    /// What `origin` holds here.
    pub fn usage(&self, origin: &str) -> OriginUsage {
        self.usage.get(origin).copied().unwrap_or_default()
    }

    /// The hold of `net` that lasts longest and is still running at `now`.
    pub fn longest(&self, net: &IpNet, now: u64) -> Option<&Hold> {
        self.by_net
            .get(net)?
            .as_slice()
            .iter()
            .filter(|h| h.expires > now)
            .max_by_key(|h| h.expires)
    }

    /// Every host's hold of exactly `net`.
    pub fn holds_of(&self, net: &IpNet) -> &[Hold] {
        self.by_net.get(net).map_or(&[], Holds::as_slice)
    }

    /// Every (network, origin) held.
    pub fn pairs(&self) -> impl Iterator<Item = (IpNet, Arc<str>)> + '_ {
        self.by_net.iter().flat_map(|(net, holds)| {
            holds
                .as_slice()
                .iter()
                .map(move |h| (*net, h.origin.clone()))
        })
    }

    /// Drops holds that ended before `now`, and strings no hold uses.
    pub fn drop_expired(&mut self, now: u64) {
        let usage = &mut self.usage;
        self.by_net.retain(|net, holds| {
            holds.retain(|h| {
                let live = h.expires > now;
                if !live {
                    count_usage(usage, &h.origin, net, false);
                }
                live
            })
        });
        // An interned string is used by holds when more than the set
        // holds a reference to it.
        self.strings.retain(|text| Arc::strong_count(text) > 1);
    }

    /// Whether any origin holds `net`.
    pub fn holds_net(&self, net: &IpNet) -> bool {
        self.by_net.contains_key(net)
    }

    /// How many networks are held by at least one origin.
    pub fn len(&self) -> usize {
        self.by_net.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_net.is_empty()
    }
}

/// Adds `net` to (or takes it from) `origin`'s usage; an origin holding
/// nothing is forgotten.
fn count_usage(usage: &mut HashMap<Arc<str>, OriginUsage>, origin: &str, net: &IpNet, add: bool) {
    match usage.get_mut(origin) {
        Some(counted) => {
            counted.count(net, add);
            if counted.nets == 0 {
                usage.remove(origin);
            }
        }
        None if add => {
            let mut counted = OriginUsage::default();
            counted.count(net, true);
            usage.insert(Arc::from(origin), counted);
        }
        None => {}
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
        assert_eq!(
            holdings.longest(&net, 0).map(|h| &*h.origin),
            Some("srv1"),
            "srv1's hold is left"
        );
        assert!(!holdings.remove(&net, "srv3"));
        assert!(holdings.remove(&net, "srv1"));
        assert!(holdings.is_empty());
    }

    #[test]
    fn strings_are_shared_and_released_with_their_holds() {
        let mut holdings = Holdings::default();
        for i in 0..100u8 {
            let net: IpNet = format!("192.0.2.{i}/32").parse().expect("literal");
            holdings.put(net, hold("srv1", 10));
        }
        let net: IpNet = "192.0.2.1/32".parse().expect("literal");
        let first = holdings.longest(&net, 0).expect("held").origin.clone();
        // One origin string and one reason string for all 100 holds.
        assert_eq!(holdings.strings.len(), 2);
        assert!(Arc::strong_count(&first) > 100);
        drop(first);
        holdings.drop_expired(20);
        assert!(holdings.is_empty());
        assert!(holdings.strings.is_empty(), "unused strings released");
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
        assert_eq!(holdings.usage("srv1").nets, 1);
    }

    #[test]
    fn usage_follows_puts_removals_and_expiry_per_origin() {
        let a: IpNet = "192.0.2.0/24".parse().expect("literal");
        let b: IpNet = "198.51.100.7/32".parse().expect("literal");
        let mut holdings = Holdings::default();
        holdings.put(a, hold("srv1", 10));
        holdings.put(a, hold("srv1", 30));
        holdings.put(b, hold("srv1", 50));
        holdings.put(b, hold("srv2", 50));
        let srv1 = holdings.usage("srv1");
        assert_eq!(
            (srv1.nets, srv1.v4_addresses),
            (2, 257),
            "a refresh counts once"
        );
        assert_eq!(holdings.usage("srv2").nets, 1);
        assert!(holdings.remove(&b, "srv2"));
        assert_eq!(holdings.usage("srv2"), OriginUsage::default());
        holdings.drop_expired(40);
        assert_eq!(holdings.usage("srv1").v4_addresses, 1);
        assert!(holdings.holds(&b, "srv1") && !holdings.holds(&a, "srv1"));
    }
}
