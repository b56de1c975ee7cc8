//! Failure counting for one jail: which address failed how often within
//! `findtime`, and when that reaches `maxretry`.
//!
//! The table is bounded (`max_tracked`): when it is full, the address seen
//! least recently is forgotten first, so a flood of distinct addresses costs
//! bounded memory and evicts the flood, not the steady attacker. Pure logic:
//! time comes in as Unix seconds; nothing here bans or reads logs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

/// One tracked address: the times of its recent failures.
#[derive(Debug)]
struct Tracked {
    failures: VecDeque<u64>,
    /// Key of this address in the recency index.
    recency: (u64, u64),
}

/// Counts failures per address for one jail.
#[derive(Debug)]
pub struct FailureCounter {
    maxretry: u32,
    findtime: u64,
    max_tracked: usize,
    tracked: HashMap<IpAddr, Tracked>,
    /// (last seen, sequence) -> address, oldest first, for eviction.
    by_recency: BTreeMap<(u64, u64), IpAddr>,
    sequence: u64,
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
            by_recency: BTreeMap::new(),
            sequence: 0,
        }
    }

    /// Records one failure of `addr` at `time`. Returns true when it
    /// reaches `maxretry` within `findtime`; the address is then forgotten
    /// (its ban starts a new count).
    pub fn record(&mut self, addr: IpAddr, time: u64) -> bool {
        self.sequence += 1;
        let recency = (time, self.sequence);
        let findtime = self.findtime;
        let entry = self.tracked.entry(addr).or_insert_with(|| Tracked {
            failures: VecDeque::new(),
            recency,
        });
        self.by_recency.remove(&entry.recency);
        entry.recency = recency;
        self.by_recency.insert(recency, addr);
        entry.failures.push_back(time);
        while entry
            .failures
            .front()
            .is_some_and(|first| time.saturating_sub(*first) >= findtime)
        {
            entry.failures.pop_front();
        }
        let reached = entry.failures.len() >= self.maxretry as usize;
        if reached {
            self.forget(&addr);
        } else {
            self.evict_over_capacity();
        }
        reached
    }

    /// How many addresses are tracked now.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// Failures of `addr` still inside `findtime` at `now`.
    pub fn failures(&self, addr: &IpAddr, now: u64) -> usize {
        self.tracked.get(addr).map_or(0, |entry| {
            entry
                .failures
                .iter()
                .filter(|t| now.saturating_sub(**t) < self.findtime)
                .count()
        })
    }

    /// Drops addresses whose last failure is older than `findtime`.
    pub fn expire(&mut self, now: u64) {
        while let Some((&(last, seq), _)) = self.by_recency.iter().next() {
            if now.saturating_sub(last) < self.findtime {
                break;
            }
            if let Some(addr) = self.by_recency.remove(&(last, seq)) {
                self.tracked.remove(&addr);
            }
        }
    }

    fn forget(&mut self, addr: &IpAddr) {
        if let Some(entry) = self.tracked.remove(addr) {
            self.by_recency.remove(&entry.recency);
        }
    }

    fn evict_over_capacity(&mut self) {
        while self.tracked.len() > self.max_tracked {
            let Some((_, oldest)) = self.by_recency.pop_first() else {
                break;
            };
            self.tracked.remove(&oldest);
        }
    }
}

/// How ban times grow for an address banned before (fail2ban's
/// `bantime.increment`).
#[derive(Debug, Clone, PartialEq)]
pub enum Increment {
    /// Every ban lasts the base time.
    Off,
    /// base × factor × 2^(previous bans), the exponent capped at 20.
    Factor(f64),
    /// base × multipliers[previous bans], the last one repeating.
    Multipliers(Vec<u64>),
}

/// The length of a ban for an address banned `previous_bans` times before,
/// capped at `max_time` seconds.
pub fn ban_seconds(base: u64, previous_bans: u32, increment: &Increment, max_time: u64) -> u64 {
    let grown = match increment {
        Increment::Off => base,
        Increment::Factor(factor) => {
            let doubling = 1u64 << previous_bans.min(20);
            let scaled = base as f64 * factor * doubling as f64;
            if scaled.is_finite() && scaled < u64::MAX as f64 {
                scaled.round() as u64
            } else {
                u64::MAX
            }
        }
        Increment::Multipliers(multipliers) => {
            let index = (previous_bans as usize).min(multipliers.len().saturating_sub(1));
            let multiplier = multipliers.get(index).copied().unwrap_or(1);
            base.saturating_mul(multiplier)
        }
    };
    grown.clamp(1, max_time.max(1))
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
        assert_eq!(counter.tracked(), 1000);
    }

    #[test]
    fn ban_times_grow_like_fail2ban_and_stop_at_max_time() {
        assert_eq!(ban_seconds(600, 3, &Increment::Off, 86_400), 600);
        assert_eq!(ban_seconds(600, 0, &Increment::Factor(1.0), 86_400), 600);
        assert_eq!(ban_seconds(600, 3, &Increment::Factor(1.0), 86_400), 4800);
        assert_eq!(
            ban_seconds(600, 30, &Increment::Factor(2.0), 86_400),
            86_400
        );
        let multipliers = Increment::Multipliers(vec![1, 2, 4, 8]);
        assert_eq!(ban_seconds(600, 1, &multipliers, 86_400), 1200);
        assert_eq!(
            ban_seconds(600, 9, &multipliers, 86_400),
            4800,
            "the last multiplier repeats"
        );
    }
}
