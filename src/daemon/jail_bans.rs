//! The jail ban policy: how long a jail bans a network, and what that ban
//! leads to.
//!
//! A jail's ban lasts the jail's bantime (else `bans.default_time`), grown
//! for a repeat offender by `bantime.increment` from its ban history (every
//! source's with `overall = true`, else this jail's own), capped by the
//! jail's and the daemon's max time, plus random extra time. A running ban
//! that already lasts as long is left alone. After a ban, the jail's own
//! history grows, and recidive jails (`filter = "recidive"`) count it: a
//! recidive jail that counts maxretry bans of a network within its findtime
//! bans it for its own, longer time.
//!
//! It decides and keeps the recidive counts. It must not store bans or
//! touch the kernel: the core bans between [`decide`] and
//! [`JailBans::banned`], a whole burst at a time. The arithmetic of ban lengths is
//! `jail/ban_time.rs`; the history is the store's.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{BansConfig, JailConfig, JailSource};
use crate::jail::ban_time::{ban_seconds, random_below};
use crate::jail::counter::FailureCounter;
use crate::jail::runner::JailStats;
use crate::store::Store;

/// What a jail's ban of a network comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailBanDecision {
    /// Ban for `seconds`, because of `reason`; the network was banned
    /// `previous` times before (as the jail's increment counts).
    Ban {
        seconds: u64,
        previous: u32,
        reason: String,
    },
    /// A ban already runs at least as long; the line says until when.
    AlreadyLonger(String),
}

/// How long `jail` bans `net` after `failures` failures at `now`, from the
/// store's ban history and running bans.
pub fn decide(
    jail: &JailConfig,
    bans: &BansConfig,
    store: &Store,
    net: &IpNet,
    failures: u32,
    now: u64,
) -> JailBanDecision {
    let max_time = bans.max_time.as_secs();
    let base = jail.ban_time.unwrap_or(bans.default_time).as_secs();
    let cap = jail
        .increment
        .max_time
        .map_or(max_time, |d| d.as_secs().min(max_time));
    let previous = previous_bans(jail, store, net, now);
    let seconds = ban_seconds(base, previous, &jail.increment.rule, cap)
        .saturating_add(random_below(jail.increment.random_time.as_secs()))
        .min(max_time);
    if let Some(running) = store.get_ban(net)
        && running.expires >= now.saturating_add(seconds)
    {
        return JailBanDecision::AlreadyLonger(format!(
            "already banned until {} ({})",
            crate::timefmt::rfc3339(running.expires),
            running.source
        ));
    }
    JailBanDecision::Ban {
        seconds,
        previous,
        reason: format!(
            "{failures} failures within {}",
            humantime::format_duration(jail.find_time)
        ),
    }
}

/// The log line for a ban made as `decide` said.
pub fn ban_line(seconds: u64, previous: u32, reason: &str) -> String {
    format!(
        "banned for {} ({reason}; banned {previous} time(s) before)",
        humantime::format_duration(Duration::from_secs(seconds))
    )
}

/// How often `net` was banned before: by anyone (`increment.overall`), or
/// by this jail only, within the store's history retention.
fn previous_bans(jail: &JailConfig, store: &Store, net: &IpNet, now: u64) -> u32 {
    if jail.increment.overall {
        store.history(net).count
    } else {
        store.jail_history(&jail.name, net, now).count
    }
}

/// A jail with `filter = "recidive"`: its "failures" are bans by the other
/// jails, so it is counted here, where those bans are known.
struct RecidiveJail {
    config: JailConfig,
    counter: FailureCounter,
    stats: Arc<JailStats>,
}

/// The recidive jails running, with their counts.
#[derive(Default)]
pub struct JailBans {
    recidive: Vec<RecidiveJail>,
}

impl JailBans {
    /// `jail` banned `nets` at `now` (already stored and applied): its
    /// own history grows (persisted, one fsync), and each recidive jail
    /// counts the bans. Returns the recidive jails some of whose counts
    /// reached their maxretry, each with those networks: the core bans
    /// them for it.
    pub fn banned(
        &mut self,
        jail: &JailConfig,
        nets: &[IpNet],
        now: u64,
        store: &mut Store,
    ) -> Vec<(JailConfig, Vec<IpNet>)> {
        if !jail.increment.overall
            && let Err(err) = store.record_jail_bans(&jail.name, nets, now)
        {
            tracing::warn!(orch_jail = %jail.name, "cannot record the jail's ban history: {err}");
        }
        if jail.source == JailSource::OwnBans {
            return Vec::new();
        }
        let mut escalate = Vec::new();
        for recidive in &mut self.recidive {
            let due: Vec<IpNet> = nets
                .iter()
                .filter(|net| recidive.counter.record(net.network(), now))
                .copied()
                .collect();
            recidive
                .stats
                .failures
                .fetch_add(nets.len() as u64, Relaxed);
            recidive
                .stats
                .tracked
                .store(recidive.counter.tracked() as u64, Relaxed);
            if !due.is_empty() {
                escalate.push((recidive.config.clone(), due));
            }
        }
        escalate
    }

    /// Starts counting other jails' bans for the recidive jail `jail`,
    /// seeded from the stored ban history.
    pub fn add_recidive(
        &mut self,
        jail: JailConfig,
        max_tracked: usize,
        stats: Arc<JailStats>,
        store: &Store,
        now: u64,
    ) {
        let mut counter =
            FailureCounter::new(jail.max_retry, jail.find_time.as_secs(), max_tracked);
        let seeded = seed_recidive(&jail, &mut counter, store, now);
        stats.set_state(format!(
            "counting bans by the other jails ({seeded} addresses from the ban history)"
        ));
        self.recidive.push(RecidiveJail {
            config: jail,
            counter,
            stats,
        });
    }

    /// Forgets the recidive jails (before the jails restart on reload).
    pub fn clear_recidive(&mut self) {
        self.recidive.clear();
    }
}

/// Counts, for a recidive jail starting up, the other jails' bans of each
/// address within its findtime, from their stored ban history (a count and
/// the last ban). Only the last ban per jail is known to fall in the
/// window, so each jail adds one: a restart may undercount, never
/// overcount. Returns how many addresses were seeded.
fn seed_recidive(
    jail: &JailConfig,
    counter: &mut FailureCounter,
    store: &Store,
    now: u64,
) -> usize {
    let mut seen = HashSet::new();
    for (source, net, history) in store.jail_histories(now) {
        let last = history.last_banned;
        if source == jail.name || now.saturating_sub(last) >= jail.find_time.as_secs() {
            continue;
        }
        // The count reaching maxretry here means the escalation was due
        // before the restart; it is not repeated.
        let _ = counter.record(net.addr(), last);
        seen.insert(net.addr());
    }
    seen.len()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, parse_str};
    use crate::store::BanRecord;

    const NOW: u64 = 1_700_000_000;

    fn config(increment: &str) -> Config {
        let text = format!(
            "[jails.sshd]\nfiles = [\"/var/log/auth.log\"]\nbantime = \"10m\"\n\
             increment = {{ {increment} }}\n\
             [jails.recidive]\nmaxretry = 2\nfindtime = \"1d\"\nbantime = \"1w\"\n"
        );
        parse_str(&text, Path::new("orch.toml")).expect("test config parses")
    }

    fn jail<'a>(config: &'a Config, name: &str) -> &'a JailConfig {
        config
            .jails
            .jails
            .iter()
            .find(|jail| jail.name == name)
            .expect("the test config has this jail")
    }

    fn net(text: &str) -> IpNet {
        text.parse().expect("test net parses")
    }

    /// A store in a fresh temporary directory (kept alive by the `TempDir`).
    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), NOW).expect("store opens");
        (dir, store)
    }

    fn manual_ban(net: IpNet, expires: u64) -> BanRecord {
        BanRecord {
            net,
            created: NOW,
            expires,
            reason: Arc::from("manual"),
            source: Arc::from("manual"),
        }
    }

    fn seconds_of(decision: JailBanDecision) -> (u64, u32) {
        match decision {
            JailBanDecision::Ban {
                seconds, previous, ..
            } => (seconds, previous),
            JailBanDecision::AlreadyLonger(line) => panic!("no ban: {line}"),
        }
    }

    #[test]
    fn a_repeat_offender_of_this_jail_is_banned_longer_and_others_bans_do_not_count() {
        let config = config("factor = 1.0");
        let sshd = jail(&config, "sshd");
        let (_dir, mut store) = temp_store();
        let addr = net("192.0.2.7/32");
        let first = decide(sshd, &config.bans, &store, &addr, 5, NOW);
        assert_eq!(seconds_of(first), (600, 0));
        // Another source's ban is in the network's history, not the jail's.
        store
            .insert_bans(&[manual_ban(addr, NOW + 1)])
            .expect("ban stored");
        let mut bans = JailBans::default();
        assert!(bans.banned(sshd, &[addr], NOW, &mut store).is_empty());
        bans.banned(sshd, &[addr], NOW, &mut store);
        let third = decide(sshd, &config.bans, &store, &addr, 5, NOW + 10);
        assert_eq!(seconds_of(third), (2400, 2), "600 s doubled twice");
    }

    #[test]
    fn overall_counts_every_source_and_a_longer_running_ban_is_left_alone() {
        let config = config("factor = 1.0, overall = true");
        let sshd = jail(&config, "sshd");
        let (_dir, mut store) = temp_store();
        let addr = net("2001:db8::/64");
        store
            .insert_bans(&[manual_ban(addr, NOW + 86_400)])
            .expect("ban stored");
        match decide(sshd, &config.bans, &store, &addr, 5, NOW) {
            JailBanDecision::AlreadyLonger(line) => assert!(line.contains("manual"), "{line}"),
            other => panic!("expected the running ban to stay: {other:?}"),
        }
        store.remove_bans(&[addr]).expect("unban");
        let after = decide(sshd, &config.bans, &store, &addr, 5, NOW);
        assert_eq!(seconds_of(after), (1200, 1), "the manual ban counts");
    }

    #[test]
    fn recidive_escalates_at_its_maxretry_and_is_seeded_from_the_history() {
        let config = config("factor = 1.0");
        let (sshd, recidive) = (jail(&config, "sshd"), jail(&config, "recidive"));
        let (_dir, mut store) = temp_store();
        let addr = net("198.51.100.4/32");
        let stats = || Arc::new(JailStats::default());
        let mut bans = JailBans::default();
        bans.add_recidive(recidive.clone(), 100, stats(), &store, NOW);
        assert!(bans.banned(sshd, &[addr], NOW, &mut store).is_empty());
        let escalated = bans.banned(sshd, &[addr], NOW + 60, &mut store);
        assert_eq!(escalated.len(), 1, "the second ban reaches maxretry 2");
        assert_eq!(escalated[0].0.name, "recidive");
        assert_eq!(escalated[0].1, [addr]);
        // The recidive jail's own ban counts for nothing.
        assert!(
            bans.banned(recidive, &[addr], NOW + 61, &mut store)
                .is_empty()
        );

        // After a restart, the last sshd ban is counted from the history.
        let mut restarted = JailBans::default();
        restarted.add_recidive(recidive.clone(), 100, stats(), &store, NOW + 120);
        let escalated = restarted.banned(sshd, &[addr], NOW + 180, &mut store);
        assert_eq!(escalated.len(), 1);
    }
}
