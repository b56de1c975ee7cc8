//! Failure counting for one jail: which address failed how often within
//! `findtime`, and when that reaches `maxretry`.
//!
//! The table is bounded (`max_tracked`): when it is full, the addresses
//! seen least recently are forgotten first, so a flood of distinct addresses costs
//! bounded memory and evicts the flood, not the steady attacker. Pure logic:
//! time comes in as Unix seconds; nothing here bans or reads logs.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Failure times kept inline per address (enough for `maxretry` up to 6);
/// a jail with a larger `maxretry` keeps older times in an overflow table.
const INLINE_TIMES: usize = 5;

/// One tracked address: the times (Unix seconds) of its latest failures,
/// oldest first. 24 bytes, so a table entry with its key is 44.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    len: u8,
    times: [u32; INLINE_TIMES],
}

impl Tracked {
    fn inline(&self) -> &[u32] {
        &self.times[..usize::from(self.len)]
    }

    fn last_seen(&self) -> u32 {
        self.inline().last().copied().unwrap_or(0)
    }
}

/// Counts failures per address for one jail.
///
/// Memory is one hash-table entry per address (44 bytes plus the table's
/// spare room). When `max_tracked` is exceeded, the tenth of the addresses
/// seen least recently is forgotten in one pass, so eviction costs a few
/// operations per failure on average and needs no recency list.
#[derive(Debug)]
pub struct FailureCounter {
    maxretry: u32,
    findtime: u64,
    max_tracked: usize,
    tracked: HashMap<IpAddr, Tracked>,
    /// Times older than the inline ones, for `maxretry` above 6 only.
    overflow: HashMap<IpAddr, VecDeque<u32>>,
}

impl FailureCounter {
    /// `maxretry` failures within `findtime` seconds make a ban; at most
    /// `max_tracked` addresses are remembered at once.
    pub fn new(maxretry: u32, findtime: u64, max_tracked: usize) -> Self {
        FailureCounter {
            maxretry: maxretry.max(1),
            findtime,
            max_tracked: max_tracked.max(1),
            tracked: HashMap::new(),
            overflow: HashMap::new(),
        }
    }

    /// Records one failure of `addr` at `time`. Returns true when it
    /// reaches `maxretry` within `findtime`; the address is then forgotten
    /// (its ban starts a new count).
    pub fn record(&mut self, addr: IpAddr, time: u64) -> bool {
        let time = u32::try_from(time).unwrap_or(u32::MAX);
        let findtime = self.findtime;
        let in_window = |t: u32| u64::from(time.saturating_sub(t)) < findtime;
        let entry = self.tracked.entry(addr).or_insert(Tracked {
            len: 0,
            times: [0; INLINE_TIMES],
        });
        // Failures that left the window, oldest first: overflow, then inline.
        // (Most jails never overflow: no second lookup for them.)
        let mut older = if self.overflow.is_empty() {
            VecDeque::new()
        } else {
            self.overflow.remove(&addr).unwrap_or_default()
        };
        while older.front().is_some_and(|&t| !in_window(t)) {
            older.pop_front();
        }
        if older.is_empty() {
            let keep_from = entry
                .inline()
                .iter()
                .position(|&t| in_window(t))
                .unwrap_or(usize::from(entry.len));
            entry
                .times
                .copy_within(keep_from..usize::from(entry.len), 0);
            entry.len -= keep_from as u8;
        }
        let count = older.len() + usize::from(entry.len);
        if count + 1 >= self.maxretry as usize {
            self.tracked.remove(&addr);
            return true;
        }
        if usize::from(entry.len) == INLINE_TIMES {
            older.push_back(entry.times[0]);
            entry.times.copy_within(1.., 0);
            entry.times[INLINE_TIMES - 1] = time;
        } else {
            entry.times[usize::from(entry.len)] = time;
            entry.len += 1;
        }
        if !older.is_empty() {
            self.overflow.insert(addr, older);
        }
        if self.tracked.len() > self.max_tracked {
            self.evict_least_recent();
        }
        false
    }

    /// How many addresses are tracked now.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// Failures of `addr` still inside `findtime` at `now`.
    pub fn failures(&self, addr: &IpAddr, now: u64) -> usize {
        let in_window = |t: &u32| now.saturating_sub(u64::from(*t)) < self.findtime;
        let inline = self.tracked.get(addr).map_or(0, |entry| {
            entry.inline().iter().filter(|t| in_window(t)).count()
        });
        let older = self
            .overflow
            .get(addr)
            .map_or(0, |times| times.iter().filter(|t| in_window(t)).count());
        inline + older
    }

    /// Drops addresses whose last failure is older than `findtime`.
    pub fn expire(&mut self, now: u64) {
        let findtime = self.findtime;
        self.tracked
            .retain(|_, entry| now.saturating_sub(u64::from(entry.last_seen())) < findtime);
        let tracked = &self.tracked;
        self.overflow.retain(|addr, _| tracked.contains_key(addr));
    }

    /// Forgets the tenth of the tracked addresses seen least recently (at
    /// least enough to get back to `max_tracked`).
    fn evict_least_recent(&mut self) {
        let excess = self.tracked.len() - self.max_tracked;
        let evict = excess.max(self.max_tracked / 10).min(self.tracked.len());
        let mut last_seen: Vec<u32> = self.tracked.values().map(Tracked::last_seen).collect();
        let (_, &mut cutoff, _) = last_seen.select_nth_unstable(evict - 1);
        // Everything strictly older than the cutoff goes, then addresses at
        // the cutoff until enough are gone.
        let mut at_cutoff_to_drop = evict - last_seen.iter().filter(|&&t| t < cutoff).count();
        self.tracked.retain(|_, entry| {
            let seen = entry.last_seen();
            if seen < cutoff {
                false
            } else if seen == cutoff && at_cutoff_to_drop > 0 {
                at_cutoff_to_drop -= 1;
                false
            } else {
                true
            }
        });
        let tracked = &self.tracked;
        self.overflow.retain(|addr, _| tracked.contains_key(addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test literal")
    }

    #[test]
    fn maxretry_failures_within_findtime_ban_and_reset_the_count() {
        let mut counter = FailureCounter::new(3, 600, 100);
        let attacker = ip("203.0.113.9");
        assert!(!counter.record(attacker, 1000));
        assert!(!counter.record(attacker, 1100));
        assert!(
            counter.record(attacker, 1200),
            "third failure within 600 s bans"
        );
        assert_eq!(
            counter.failures(&attacker, 1200),
            0,
            "a ban starts a new count"
        );
        assert!(!counter.record(attacker, 1300));
    }

    #[test]
    fn failures_older_than_findtime_do_not_count() {
        let mut counter = FailureCounter::new(3, 600, 100);
        let slow = ip("203.0.113.10");
        assert!(!counter.record(slow, 0));
        assert!(!counter.record(slow, 500));
        assert!(
            !counter.record(slow, 1000),
            "the first failure is 1000 s old"
        );
        assert_eq!(counter.failures(&slow, 1000), 2);
        counter.expire(2000);
        assert_eq!(counter.tracked(), 0);
    }

    #[test]
    fn a_flood_of_distinct_addresses_is_bounded_and_evicts_the_oldest() {
        let mut counter = FailureCounter::new(3, 600, 1000);
        let steady = ip("203.0.113.1");
        assert!(!counter.record(steady, 0));
        assert!(!counter.record(steady, 1));
        for i in 0..100_000u32 {
            let flooder = IpAddr::from(std::net::Ipv4Addr::from(0x0B00_0000 + i));
            counter.record(flooder, 2 + u64::from(i) / 1000);
            assert!(counter.tracked() <= 1000);
        }
        // The steady attacker was seen least recently, so it was evicted:
        // memory stays bounded whatever the flood.
        assert_eq!(counter.failures(&steady, 100), 0);
        // Eviction frees a tenth at a time.
        assert!((900..=1000).contains(&counter.tracked()));
    }

    #[test]
    fn large_maxretry_counts_past_the_inline_times() {
        let mut counter = FailureCounter::new(12, 600, 100);
        let patient = ip("203.0.113.20");
        for t in 0..11 {
            assert!(!counter.record(patient, 100 + t), "failure {t}");
        }
        assert_eq!(counter.failures(&patient, 111), 11);
        assert!(counter.record(patient, 112), "the 12th failure bans");
        // Old failures leave the window one by one.
        for t in 0..11 {
            assert!(!counter.record(patient, 1000 + t * 100));
        }
        assert_eq!(counter.failures(&patient, 2000), 6);
    }
}
