//! Per-jail ban history in memory: how often each jail banned a network
//! and when it last did. Jails with `bantime.increment` and
//! `overall = false` grow their ban times from it, and recidive jails
//! re-count the other jails' bans from it after a restart.
//!
//! Pure: it must not do any I/O and makes no policy decisions (the caller
//! says which history is too old). It also reads the `jailhist/<jail>/<net>`
//! cursor records that stores kept this history in before it had a record
//! kind of its own, so those stores keep their history.

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;

use super::BanHistory;

/// Cursor-key prefix of the history records of older stores:
/// `jailhist/<jail>/<net>` -> `<count>:<last banned, Unix seconds>`.
const LEGACY_CURSOR_PREFIX: &str = "jailhist/";

/// Each jail's history, by jail name, then network.
#[derive(Default)]
pub(super) struct JailHistories {
    by_jail: HashMap<Arc<str>, HashMap<IpNet, BanHistory>>,
}

impl JailHistories {
    /// `jail`'s history of `net`, if it has one.
    pub(super) fn get(&self, jail: &str, net: &IpNet) -> Option<BanHistory> {
        self.by_jail.get(jail)?.get(net).copied()
    }

    /// Sets `jail`'s history of `net`; a count of 0 forgets it.
    pub(super) fn set(&mut self, jail: &str, net: IpNet, history: BanHistory) {
        if history.count == 0 {
            if let Some(nets) = self.by_jail.get_mut(jail) {
                nets.remove(&net);
                if nets.is_empty() {
                    self.by_jail.remove(jail);
                }
            }
            return;
        }
        match self.by_jail.get_mut(jail) {
            Some(nets) => {
                nets.insert(net, history);
            }
            None => {
                self.by_jail
                    .insert(Arc::from(jail), HashMap::from([(net, history)]));
            }
        }
    }

    /// Every (jail, network, history), in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, IpNet, BanHistory)> + '_ {
        self.by_jail.iter().flat_map(|(jail, nets)| {
            nets.iter()
                .map(move |(net, history)| (&**jail, *net, *history))
        })
    }

    /// Number of (jail, network) histories kept.
    pub(super) fn len(&self) -> usize {
        self.by_jail.values().map(HashMap::len).sum()
    }

    /// Keeps only the histories `keep` says yes to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&BanHistory) -> bool) {
        for nets in self.by_jail.values_mut() {
            nets.retain(|_, history| keep(history));
        }
        self.by_jail.retain(|_, nets| !nets.is_empty());
    }

    /// Takes a cursor record of an older store if it is jail history
    /// (`jailhist/...`); returns false for a real log position. A history
    /// cursor that does not parse is dropped: it was never a log position.
    pub(super) fn take_legacy_cursor(&mut self, key: &str, value: &str) -> bool {
        let Some(rest) = key.strip_prefix(LEGACY_CURSOR_PREFIX) else {
            return false;
        };
        // Jail names hold no '/'; an empty value forgot the key.
        if let Some((jail, net)) = rest.split_once('/')
            && let Ok(net) = net.parse::<IpNet>()
        {
            let history = parse_legacy_value(value).unwrap_or_default();
            self.set(jail, net, history);
        }
        true
    }
}

/// `<count>:<last banned>` as older stores wrote it.
fn parse_legacy_value(value: &str) -> Option<BanHistory> {
    let (count, last) = value.split_once(':')?;
    Some(BanHistory {
        count: count.parse().ok()?,
        last_banned: last.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("test net parses")
    }

    fn history(count: u32, last_banned: u64) -> BanHistory {
        BanHistory { count, last_banned }
    }

    #[test]
    fn set_get_and_forget_per_jail() {
        let mut histories = JailHistories::default();
        histories.set("sshd", net("192.0.2.1/32"), history(2, 100));
        histories.set("nginx", net("192.0.2.1/32"), history(1, 50));
        assert_eq!(
            histories.get("sshd", &net("192.0.2.1/32")),
            Some(history(2, 100))
        );
        assert_eq!(histories.get("sshd", &net("192.0.2.2/32")), None);
        assert_eq!(histories.len(), 2);
        histories.set("sshd", net("192.0.2.1/32"), history(0, 0));
        assert_eq!(histories.get("sshd", &net("192.0.2.1/32")), None);
        assert_eq!(histories.len(), 1);
        histories.retain(|kept| kept.last_banned > 60);
        assert_eq!(histories.len(), 0);
    }

    #[test]
    fn legacy_history_cursors_become_history_and_log_positions_do_not() {
        let mut histories = JailHistories::default();
        assert!(histories.take_legacy_cursor("jailhist/sshd/2001:db8::/64", "3:1700000000"));
        assert!(histories.take_legacy_cursor("jailhist/sshd/not-a-net", "1:1"));
        assert!(!histories.take_legacy_cursor("jail/sshd/journal", "s=abc;i=1"));
        assert_eq!(
            histories.get("sshd", &net("2001:db8::/64")),
            Some(history(3, 1_700_000_000))
        );
        assert_eq!(histories.len(), 1);
        // An empty value was how an older store forgot the entry.
        assert!(histories.take_legacy_cursor("jailhist/sshd/2001:db8::/64", ""));
        assert_eq!(histories.len(), 0);
    }
}
