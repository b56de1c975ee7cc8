//! The networks a jail asked the core to ban in the last few seconds, so
//! that it does not ask again for each further `maxretry` failures of one
//! that is being banned. Lines already in the log keep coming after the
//! ban (a flood read from a file, or an IPv6 attacker rotating through its
//! /64): without this, each `maxretry` of them was one blocking core job
//! and one log line ("already banned"), 50,000 of each for 250,000 lines
//! of one /64, which halved the jail's speed.
//!
//! The answer stands until a ban is removed anywhere (an admin's unban,
//! expiry): the caller passes the core's count of removals, and when it
//! moved everything is forgotten. It also stands at most
//! [`RecentAsks::WINDOW`], and at most [`RecentAsks::MAX`] networks are
//! remembered whatever the log holds.
//!
//! Pure bookkeeping on times and counts given by the caller: it must not
//! ban, log or read the clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// When each network was last asked about.
#[derive(Debug, Default)]
pub struct RecentAsks {
    asked: HashMap<IpNet, Instant>,
    /// The core's removal count when `asked` was last valid.
    removals: u64,
}

impl RecentAsks {
    /// How long a network is not asked about again.
    pub const WINDOW: Duration = Duration::from_secs(10);
    /// Most networks remembered; past it the stale are forgotten, then all.
    pub const MAX: usize = 4096;

    /// Whether to ask about `net` now: false when it was asked about less
    /// than [`RecentAsks::WINDOW`] ago and no ban was removed since
    /// (`removals`, the core's count, did not move). Asking is remembered.
    pub fn should_ask(&mut self, net: IpNet, now: Instant, removals: u64) -> bool {
        if removals != self.removals {
            self.asked.clear();
            self.removals = removals;
        }
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < Self::WINDOW;
        if self.asked.get(&net).is_some_and(fresh) {
            return false;
        }
        if self.asked.len() >= Self::MAX {
            self.asked.retain(|_, at| fresh(at));
            if self.asked.len() >= Self::MAX {
                // All fresh: a flood of distinct networks, each asked
                // about once anyway. Forgetting costs a repeated question.
                self.asked.clear();
            }
        }
        self.asked.insert(net, now);
        true
    }

    /// How many networks are remembered.
    pub fn len(&self) -> usize {
        self.asked.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.asked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("test network")
    }

    #[test]
    fn a_network_is_asked_about_once_per_window() {
        let mut asks = RecentAsks::default();
        let start = Instant::now();
        let prefix = net("2001:db8::/64");
        assert!(asks.should_ask(prefix, start, 0));
        assert!(!asks.should_ask(prefix, start + Duration::from_secs(1), 0));
        let almost = start + RecentAsks::WINDOW - Duration::from_millis(1);
        assert!(!asks.should_ask(prefix, almost, 0));
        assert!(asks.should_ask(prefix, start + RecentAsks::WINDOW, 0));
        // Another network is not held back.
        assert!(asks.should_ask(net("192.0.2.7/32"), start, 0));
    }

    #[test]
    fn a_removed_ban_anywhere_means_asking_again() {
        let mut asks = RecentAsks::default();
        let start = Instant::now();
        let host = net("192.0.2.7/32");
        assert!(asks.should_ask(host, start, 3));
        assert!(!asks.should_ask(host, start, 3));
        // An admin unbanned something (maybe this network): ask again.
        assert!(asks.should_ask(host, start, 4));
        assert!(!asks.should_ask(host, start, 4));
    }

    #[test]
    fn memory_stays_bounded_under_distinct_networks() {
        let mut asks = RecentAsks::default();
        let start = Instant::now();
        for i in 0..3 * RecentAsks::MAX as u32 {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            assert!(asks.should_ask(IpNet::from(std::net::IpAddr::V4(addr)), start, 0));
            assert!(asks.len() <= RecentAsks::MAX);
        }
        // Stale entries go first when the bound is reached.
        let later = start + RecentAsks::WINDOW;
        assert!(asks.should_ask(net("192.0.2.1/32"), later, 0));
        assert_eq!(asks.len(), 1);
    }
}
