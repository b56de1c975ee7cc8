//! Which journal matches a local user can forge, and how orch makes them
//! safe. Any process can set its own name (`prctl(PR_SET_NAME)`, so
//! `_COMM`) and write any `SYSLOG_IDENTIFIER` through syslog(3): a jail
//! that matches only on those would ban whatever address a local user
//! writes. journald records `_UID` and `_SYSTEMD_UNIT` itself, so a match
//! group that names neither gets `_UID=0`: only root's processes (sshd's
//! privileged monitor on Debian, for one) can then feed the jail.
//!
//! Pure: it rewrites the match list journalctl gets, and says why.

/// Fields any process can set for its own entries.
const FORGEABLE: &[&str] = &["_COMM=", "SYSLOG_IDENTIFIER=", "SYSLOG_PID=", "MESSAGE="];
/// Fields journald records from the kernel and the service manager.
const TRUSTED: &[&str] = &["_SYSTEMD_UNIT=", "_UID=", "_EXE=", "_SYSTEMD_USER_UNIT="];

/// The match list with `_UID=0` added to every `+`-separated group that
/// matches on a forgeable field and on no trusted one; and the groups that
/// needed it, for a warning.
pub fn unforgeable_matches(matches: &[String]) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::with_capacity(matches.len() + 2);
    let mut hardened = Vec::new();
    for group in matches.split(|word| word == "+") {
        if !out.is_empty() {
            out.push("+".to_string());
        }
        out.extend(group.iter().cloned());
        let has = |fields: &[&str]| {
            group
                .iter()
                .any(|word| fields.iter().any(|field| word.starts_with(field)))
        };
        if has(FORGEABLE) && !has(TRUSTED) {
            out.push("_UID=0".to_string());
            hardened.push(group.join(" "));
        }
    }
    (out, hardened)
}

/// Whether a local user could still write entries these matches read,
/// after [`unforgeable_matches`]: true when some group names no field
/// journald records itself (a match on `PRIORITY=` alone, say), or when
/// there are no matches (the whole journal).
pub fn any_user_can_feed(matches: &[String]) -> bool {
    let (hardened, _) = unforgeable_matches(matches);
    hardened.is_empty()
        || hardened.split(|word| word == "+").any(|group| {
            !group
                .iter()
                .any(|word| TRUSTED.iter().any(|field| word.starts_with(field)))
        })
}

/// The warning for groups [`unforgeable_matches`] hardened.
pub fn warning(hardened: &[String]) -> Option<String> {
    (!hardened.is_empty()).then(|| {
        format!(
            "journal match {} can be forged by any local process (its name and syslog identifier are its own to set); orch reads only root's entries for it (_UID=0). Match on _SYSTEMD_UNIT= to follow a service instead",
            hardened.join(" + ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn forgeable_groups_get_uid_0_and_trusted_ones_stay() {
        // fail2ban's sshd.conf on the journal.
        let (matches, hardened) =
            unforgeable_matches(&words("_SYSTEMD_UNIT=sshd.service + _COMM=sshd"));
        assert_eq!(
            matches,
            words("_SYSTEMD_UNIT=sshd.service + _COMM=sshd _UID=0")
        );
        assert_eq!(hardened, vec!["_COMM=sshd".to_string()]);
        assert!(warning(&hardened).is_some_and(|w| w.contains("_COMM=sshd")));

        let (matches, hardened) = unforgeable_matches(&words("_SYSTEMD_UNIT=ssh.service"));
        assert_eq!(matches, words("_SYSTEMD_UNIT=ssh.service"));
        assert!(hardened.is_empty() && warning(&hardened).is_none());

        let (matches, _) = unforgeable_matches(&words("SYSLOG_IDENTIFIER=dovecot _UID=0"));
        assert_eq!(matches, words("SYSLOG_IDENTIFIER=dovecot _UID=0"));
        let (matches, _) = unforgeable_matches(&words("SYSLOG_IDENTIFIER=postfix/smtpd"));
        assert_eq!(matches, words("SYSLOG_IDENTIFIER=postfix/smtpd _UID=0"));
        assert!(unforgeable_matches(&[]).0.is_empty());
    }

    #[test]
    fn only_groups_journald_vouches_for_keep_local_users_out() {
        assert!(!any_user_can_feed(&words("_SYSTEMD_UNIT=ssh.service")));
        assert!(!any_user_can_feed(&words(
            "_SYSTEMD_UNIT=sshd.service + _COMM=sshd"
        )));
        assert!(any_user_can_feed(&words(
            "_SYSTEMD_UNIT=ssh.service + PRIORITY=3"
        )));
        assert!(any_user_can_feed(&[]));
    }
}
