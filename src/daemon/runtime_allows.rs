//! Runtime allowlist entries with a comment and an expiry (`AllowWith`,
//! `orch allow CIDR --for 2h --comment "vendor VPN"`): the core checks
//! them, and ends them on time, after which the kernel's allow sets follow.
//!
//! It decides and checks only: the store persists the entries and the
//! reconciler writes the allow sets (`Core::apply_allows`).

use ipnet::IpNet;

use super::core::{Core, CoreError};
use crate::addr::{self, AddrError};
use crate::firewall::AllowTimeouts;
use crate::store::{AllowNote, MAX_ALLOW_COMMENT_BYTES};
use crate::timefmt::now_unix;

/// The longest time a runtime allow may be given (ten years); 0 means no
/// end.
pub const MAX_ALLOW_SECONDS: u64 = 10 * 365 * 86_400;

/// A comment fit to store and show: bounded, with no control characters
/// (no line breaks, no terminal escapes).
pub fn check_comment(comment: &str) -> Result<(), CoreError> {
    if comment.len() > MAX_ALLOW_COMMENT_BYTES {
        return Err(CoreError::InvalidArgument(format!(
            "the comment is {} bytes long; at most {MAX_ALLOW_COMMENT_BYTES} are kept",
            comment.len()
        )));
    }
    if let Some(bad) = comment.chars().find(|c| c.is_control()) {
        return Err(CoreError::InvalidArgument(format!(
            "the comment holds the control character {bad:?}; write it on one line, without escapes"
        )));
    }
    Ok(())
}

/// The network a runtime allow names: any prefix but the whole Internet.
pub(super) fn allowable(input: &str) -> Result<IpNet, CoreError> {
    let net = addr::parse_net(input)?;
    if net.prefix_len() == 0 {
        return Err(AddrError::TooBroad {
            net,
            min: 1,
            family: if matches!(net, IpNet::V4(_)) { 4 } else { 6 },
        }
        .into());
    }
    Ok(net)
}

impl Core {
    /// Adds a runtime allowlist entry that ends after `seconds` (0: never)
    /// with `comment`, or gives an entry already there this end and
    /// comment. Returns whether anything changed.
    pub fn allow_with(
        &mut self,
        input: &str,
        seconds: u64,
        comment: &str,
    ) -> Result<bool, CoreError> {
        let net = allowable(input)?;
        check_comment(comment)?;
        if seconds > MAX_ALLOW_SECONDS {
            return Err(CoreError::InvalidDuration(format!(
                "an allowlist entry lasts at most {}",
                humantime::format_duration(std::time::Duration::from_secs(MAX_ALLOW_SECONDS))
            )));
        }
        let note = AllowNote {
            expires: (seconds > 0).then(|| now_unix().saturating_add(seconds)),
            comment: comment.to_string(),
        };
        let changed = self.store_mut().add_allow_noted(net, note)?;
        if changed {
            self.apply_allows()?;
        }
        Ok(changed)
    }

    /// The runtime allowlist with each entry's comment and expiry, for
    /// `orch allow list`.
    pub fn runtime_allow_entries(&self) -> Vec<(IpNet, Option<AllowNote>)> {
        let store = self.store();
        store
            .runtime_allows()
            .map(|net| (*net, store.allow_note(net).cloned()))
            .collect()
    }

    /// Seconds left of the runtime allows that end, for the kernel's
    /// element timeouts; an entry the config file also lists never ends.
    pub(super) fn allow_timeouts(&self, now: u64) -> AllowTimeouts {
        let store = self.store();
        store
            .runtime_allows()
            .filter(|net| !self.config().allow.contains(net))
            .filter_map(|net| {
                let expires = store.allow_note(net)?.expires?;
                Some((*net, expires.saturating_sub(now).max(1)))
            })
            .collect()
    }

    /// Removes the runtime allows whose time is up from the store; whether
    /// any were. The kernel is not touched (see [`Core::expire_allows`]).
    pub(super) fn purge_expired_allows(&mut self) -> bool {
        let expired = self.store().expired_allows(now_unix());
        let mut removed = false;
        for net in expired {
            match self.store_mut().remove_allow(&net) {
                Ok(_) => {
                    tracing::info!(%net, "runtime allowlist entry expired");
                    removed = true;
                }
                Err(err) => {
                    tracing::error!(%net, "cannot remove an expired allowlist entry: {err}");
                    break;
                }
            }
        }
        removed
    }

    /// Ends the runtime allows whose time is up, in the store and then in
    /// the kernel. The core calls it between jobs, at least once a second.
    pub(super) fn expire_allows(&mut self) {
        if !self.purge_expired_allows() {
            return;
        }
        if let Err(err) = self.apply_allows() {
            tracing::error!("cannot take expired entries out of the allowlist: {err}");
        }
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::tests::start;

    #[test]
    fn comments_are_bounded_and_on_one_line() {
        assert!(check_comment("vendor VPN (ticket 42) — ok").is_ok());
        assert!(check_comment("").is_ok());
        for bad in ["two\nlines", "bell\u{7}", "esc\u{1b}[31m", "c1\u{9b}"] {
            let err = check_comment(bad).expect_err(bad).to_string();
            assert!(err.contains("control character"), "{err}");
        }
        let err = check_comment(&"x".repeat(257))
            .expect_err("long")
            .to_string();
        assert!(err.contains("257 bytes"), "{err}");
    }

    #[test]
    fn an_entry_with_an_end_refuses_bans_until_it_ends() {
        let mut h = start();
        assert!(
            h.core
                .allow_with("198.51.100.0/24", 3600, "vendor VPN")
                .expect("allowed")
        );
        assert!(
            h.core
                .allow_with("198.51.100.0/24", 0, "vendor VPN")
                .expect("no end now")
        );
        assert!(
            !h.core
                .allow_with("198.51.100.0/24", 0, "vendor VPN")
                .expect("same again")
        );
        let entries = h.core.runtime_allow_entries();
        assert_eq!(entries.len(), 1);
        let note = entries[0].1.clone().expect("a note");
        assert_eq!((note.comment.as_str(), note.expires), ("vendor VPN", None));
        h.ban("198.51.100.9", 0).expect_err("allowlisted");
        assert!(
            h.core.allow_with("0.0.0.0/0", 60, "").is_err(),
            "the whole Internet"
        );
        assert!(h.core.allow_with("192.0.2.1", 60, "a\nb").is_err());
        assert!(
            h.core
                .allow_with("192.0.2.1", MAX_ALLOW_SECONDS + 1, "")
                .is_err()
        );
        assert_eq!(
            h.core.runtime_allow_entries().len(),
            1,
            "refused calls change nothing"
        );
        // An entry already over goes at the next check, and the kernel follows.
        h.core
            .allow_with("203.0.113.0/24", 1, "short")
            .expect("allowed");
        let over = now_unix() + 1;
        while now_unix() < over {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        h.scripts();
        h.core.expire_allows();
        let scripts = h.scripts().join("\n");
        assert!(scripts.contains("allow4"), "{scripts}");
        assert!(!scripts.contains("203.0.113.0/24"), "{scripts}");
        assert_eq!(h.core.runtime_allow_entries().len(), 1);
        h.ban("203.0.113.9", 0).expect("no longer allowlisted");
    }
}
