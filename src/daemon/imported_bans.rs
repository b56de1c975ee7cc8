//! The core's side of `ImportBans`: bans brought over from another tool
//! (`orch import fail2ban`), each with its own expiry, reason and source,
//! judged one by one under the same rules as a D-Bus ban, then stored with
//! one fsync and applied in one transaction.
//!
//! Unlike `BanMany` one refused entry does not hold back the others, and
//! an entry that an active ban already covers for as long is left alone
//! ("unchanged"), so importing the same bans twice changes nothing. This
//! file decides and commits through the core; it must not talk to D-Bus.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ipnet::IpNet;

use super::core::{Core, CoreError};
use crate::addr;
use crate::store::BanRecord;
use crate::timefmt::now_unix;

/// One ban to import: what the caller sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedBan {
    pub address: String,
    /// Unix seconds; beyond `bans.max_time` from now it is cut to that.
    pub expires_at: u64,
    pub reason: String,
    /// A jail name (letters, digits, '-', '_'; at most 32 bytes).
    pub source: String,
}

/// What an import came to.
#[derive(Debug, Default)]
pub struct ImportOutcome {
    /// The bans made (one per distinct network).
    pub banned: Vec<BanRecord>,
    /// Entries an active ban already covered for at least as long.
    pub unchanged: u32,
    /// Entries refused: the address as sent and why.
    pub refused: Vec<(String, String)>,
}

/// Longest source an imported ban may carry (orch's jail name limit).
const MAX_SOURCE_BYTES: usize = 32;

/// A source must look like a jail name: `fleet:<host>` and other texts
/// with a meaning of their own cannot be claimed by an import.
fn check_source(source: &str) -> Result<(), String> {
    let plain = source
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain && !source.is_empty() && source.len() <= MAX_SOURCE_BYTES {
        Ok(())
    } else {
        Err(format!(
            "source {} is not a jail name (1-{MAX_SOURCE_BYTES} letters, digits, '-' or '_')",
            crate::quote::quote_input(source)
        ))
    }
}

/// An address as sent, cut so a reply never grows with what was sent.
fn shown(address: &str) -> String {
    crate::quote::cut(address, MAX_SHOWN_BYTES).to_string()
}

/// Longest address text a refusal repeats.
const MAX_SHOWN_BYTES: usize = 64;

impl Core {
    /// Bans each entry of `bans` until its own expiry. Every safety rule
    /// of [`Core::ban`] applies to each; a refused entry is reported and
    /// the others go on. Expiries are cut to `bans.max_time` from now. An
    /// entry whose network already has a ban lasting as long (or, for an
    /// entry cut to `max_time`, a ban that was itself that long) is
    /// unchanged. `Err` only when storing or applying failed (then nothing
    /// of it is acknowledged).
    pub fn import_bans(&mut self, bans: &[ImportedBan]) -> Result<ImportOutcome, CoreError> {
        let now = now_unix();
        let max_time = self.config().bans.max_time.as_secs();
        let longest = now.saturating_add(max_time);
        let policy = self.policy();
        let mut outcome = ImportOutcome::default();
        let mut texts: HashMap<String, Arc<str>> = HashMap::new();
        let mut shared = |text: &str| -> Arc<str> {
            texts
                .entry(text.to_string())
                .or_insert_with(|| Arc::from(text))
                .clone()
        };
        let mut seen: HashSet<IpNet> = HashSet::with_capacity(bans.len());
        let mut new_prefixes: Vec<IpNet> = Vec::new();
        for ban in bans {
            let checked = addr::parse_net(&ban.address)
                .map_err(|err| err.to_string())
                .and_then(|net| check_source(&ban.source).map(|()| net))
                .and_then(|net| policy.check(&net).map(|()| net).map_err(|e| e.to_string()))
                .and_then(|net| {
                    if ban.expires_at <= now {
                        Err("its ban has already expired".to_string())
                    } else {
                        Ok(net)
                    }
                });
            let net = match checked {
                Ok(net) => net,
                Err(why) => {
                    outcome.refused.push((shown(&ban.address), why));
                    continue;
                }
            };
            if !seen.insert(net) {
                outcome.unchanged += 1;
                continue;
            }
            let expires = ban.expires_at.min(longest);
            let cut = expires < ban.expires_at;
            let covered = self.store().get_ban(&net).is_some_and(|active| {
                active.expires >= expires
                    || (cut && active.expires.saturating_sub(active.created) >= max_time)
            });
            if covered {
                outcome.unchanged += 1;
                continue;
            }
            if let Err(err) = self.refuse_prefix_overlap(&net, &new_prefixes) {
                outcome.refused.push((shown(&ban.address), err.to_string()));
                continue;
            }
            if !addr::is_single_address(&net) {
                new_prefixes.push(net);
            }
            outcome.banned.push(BanRecord {
                net,
                created: now,
                expires,
                reason: shared(&ban.reason),
                source: shared(&ban.source),
            });
        }
        if !outcome.banned.is_empty() {
            if outcome.banned.len() >= super::reconciler::TRIM_AFTER_ELEMENTS {
                self.request_trim();
            }
            self.commit_bans(&outcome.banned, now)?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::check_source;

    #[test]
    fn only_jail_names_are_sources() {
        assert!(check_source("sshd").is_ok());
        assert!(check_source("nginx-http-auth").is_ok());
        for bad in ["", "fleet:web2", "a b", &"x".repeat(33)] {
            assert!(check_source(bad).is_err(), "{bad:?}");
        }
    }
}
