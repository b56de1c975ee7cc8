//! Other hosts' bans through the core (`Core::apply_remote`): applied under
//! the local and remote rules, refused and counted when they break one,
//! and this host's own ban kept (shadowed when a longer remote ban is in
//! force) as `daemon/fleet_apply.rs` documents.
//!
//! Tests only; they must not need a kernel or a NATS server.

use std::sync::Arc;

use super::{
    DAY, HOUR, Harness, TABLE, is_full_apply, net, only, start, start_banned, start_with,
    timeout_of,
};
use crate::fleet::record::FleetBan;
use crate::fleet::remote_change::{RemoteChange, RemoteOutcome};
use crate::fleet::remote_policy::RefusalKind;
use crate::timefmt::now_unix;

const PEER: &str = "peer";

/// `origin` bans `text` for `seconds` from now.
fn put(origin: &str, text: &str, seconds: u64) -> RemoteChange {
    let now = now_unix();
    RemoteChange::Put {
        origin: Arc::from(origin),
        net: net(text),
        ban: FleetBan {
            addr: text.to_string(),
            expires_at: now + seconds,
            created: now,
            reason: "remote test".into(),
            source: "sshd".into(),
        },
    }
}

fn delete(origin: &str, text: &str) -> RemoteChange {
    RemoteChange::Delete {
        origin: Arc::from(origin),
        net: net(text),
    }
}

impl Harness {
    fn apply(&mut self, changes: Vec<RemoteChange>) -> RemoteOutcome {
        self.core
            .apply_remote(changes)
            .expect("remote changes applied")
    }

    /// The stored ban's source and length, if any.
    fn held(&self, text: &str) -> Option<(String, u64)> {
        self.stored(text)
            .map(|r| (r.source.to_string(), r.expires.saturating_sub(now_unix())))
    }

    fn refusals(outcome: &RemoteOutcome, kind: RefusalKind) -> usize {
        let key = (Arc::from(PEER), kind);
        outcome.refusals.counts.get(&key).copied().unwrap_or(0)
    }
}

/// Asserts `held` is `source`'s ban with about `seconds` left.
fn assert_held(held: Option<(String, u64)>, source: &str, seconds: u64) {
    let (found, left) = held.expect("a stored ban");
    assert_eq!(found, source);
    assert!(
        left <= seconds && left + 2 >= seconds,
        "{left}s left, expected about {seconds}s"
    );
}

#[test]
fn a_remote_ban_is_stored_and_applied() {
    let mut h = start();
    let outcome = h.apply(vec![put(PEER, "198.51.100.7/32", HOUR)]);
    assert_eq!((outcome.applied, outcome.refusals.total()), (1, 0));
    assert_held(h.held("198.51.100.7"), "fleet:peer", HOUR);
    let scripts = h.scripts();
    super::assert_about(timeout_of(only(&scripts), "198.51.100.7"), HOUR);
}

#[test]
fn a_remote_ban_is_cut_to_max_remote_time() {
    let mut h = start();
    h.apply(vec![put(PEER, "198.51.100.7/32", 30 * DAY)]);
    assert_held(h.held("198.51.100.7"), "fleet:peer", 7 * DAY);
}

#[test]
fn remote_bans_breaking_a_rule_are_refused_and_counted() {
    let mut h = start_with("allow = [\"203.0.113.0/24\"]", &[]);
    h.core
        .set_fleet_servers(vec!["192.0.2.200".parse().expect("addr")]);
    let outcome = h.apply(vec![
        put(PEER, "203.0.113.5/32", HOUR),
        put(PEER, "192.0.2.200/32", HOUR),
        put(PEER, "198.51.100.0/20", HOUR),
        put(PEER, "198.51.100.7/32", HOUR),
    ]);
    assert_eq!(
        Harness::refusals(&outcome, RefusalKind::Local),
        1,
        "allowlisted"
    );
    assert_eq!(
        Harness::refusals(&outcome, RefusalKind::Protected),
        1,
        "fleet server"
    );
    assert_eq!(
        Harness::refusals(&outcome, RefusalKind::Prefix),
        1,
        "broader than /24"
    );
    assert_eq!(outcome.applied, 1, "the one good ban still goes in");
    for refused in ["203.0.113.5", "192.0.2.200", "198.51.100.0/20"] {
        assert!(h.stored(refused).is_none(), "{refused} stored");
    }
    let scripts = h.scripts();
    let script = only(&scripts);
    assert!(script.contains(&format!(
        "add element inet {TABLE} ban4 {{ 198.51.100.7 timeout"
    )));
    assert!(
        !script.contains("203.0.113.5") && !script.contains("192.0.2.200"),
        "{script}"
    );
}

#[test]
fn nothing_is_applied_with_apply_off() {
    let mut h = start_with("[fleet]\napply = false", &[]);
    let outcome = h.apply(vec![put(PEER, "198.51.100.7/32", HOUR)]);
    assert_eq!(outcome, RemoteOutcome::default());
    assert!(h.stored("198.51.100.7").is_none());
    assert!(h.scripts().is_empty());
}

#[test]
fn a_longer_own_ban_stays_in_force() {
    let mut h = start_banned("198.51.100.7", DAY);
    let outcome = h.apply(vec![put(PEER, "198.51.100.7/32", HOUR)]);
    assert_eq!(outcome.applied, 0);
    assert_held(h.held("198.51.100.7"), "manual", DAY);
    assert!(h.scripts().is_empty());
    // The peer lifting its ban does not touch ours.
    h.apply(vec![delete(PEER, "198.51.100.7/32")]);
    assert_held(h.held("198.51.100.7"), "manual", DAY);
    assert!(h.scripts().is_empty());
}

#[test]
fn a_shorter_own_ban_waits_under_a_longer_remote_one_and_returns() {
    let mut h = start_banned("198.51.100.7", HOUR);
    h.apply(vec![put(PEER, "198.51.100.7/32", DAY)]);
    assert_held(h.held("198.51.100.7"), "fleet:peer", DAY);
    let shadowed = h.core.store().shadowed(&net("198.51.100.7/32")).cloned();
    assert_eq!(
        shadowed.map(|r| r.source.to_string()),
        Some("manual".into())
    );
    assert!(h.scripts().concat().contains("198.51.100.7 timeout 1d0s"));

    // The remote ban lifted first: the own ban is in force again.
    h.apply(vec![delete(PEER, "198.51.100.7/32")]);
    assert_held(h.held("198.51.100.7"), "manual", HOUR);
    assert!(h.core.store().shadowed(&net("198.51.100.7/32")).is_none());
    let scripts = h.scripts().concat();
    assert!(scripts.contains(&format!(
        "delete element inet {TABLE} ban4 {{ 198.51.100.7 }}"
    )));
    super::assert_about(timeout_of(&scripts, "198.51.100.7"), HOUR);
}

#[test]
fn a_new_own_ban_shorter_than_a_remote_one_is_kept_shadowed() {
    let mut h = start();
    h.apply(vec![put(PEER, "198.51.100.7/32", DAY)]);
    h.scripts();
    h.ban("198.51.100.7", HOUR).expect("own ban accepted");
    assert_held(h.held("198.51.100.7"), "fleet:peer", DAY);
    assert!(h.core.store().shadowed(&net("198.51.100.7/32")).is_some());
    assert!(
        h.scripts().is_empty(),
        "the kernel already holds the longer ban"
    );
    // A local unban ends both.
    h.core.unban("198.51.100.7").expect("unbanned");
    assert!(h.stored("198.51.100.7").is_none());
    assert!(h.core.store().shadowed(&net("198.51.100.7/32")).is_none());
}

#[test]
fn a_lifted_remote_ban_falls_back_to_the_next_origin() {
    let mut h = start();
    h.apply(vec![
        put(PEER, "198.51.100.7/32", DAY),
        put("other", "198.51.100.7/32", HOUR),
    ]);
    assert_held(h.held("198.51.100.7"), "fleet:peer", DAY);
    h.scripts();
    let outcome = h.apply(vec![delete(PEER, "198.51.100.7/32")]);
    assert_eq!((outcome.applied, outcome.lifted), (1, 0));
    assert_held(h.held("198.51.100.7"), "fleet:other", HOUR);
    h.apply(vec![delete("other", "198.51.100.7/32")]);
    assert!(h.stored("198.51.100.7").is_none());
    let scripts = h.scripts();
    assert!(scripts.concat().contains(&format!(
        "delete element inet {TABLE} ban4 {{ 198.51.100.7 }}"
    )));
    assert!(!scripts.iter().any(|s| is_full_apply(s)));
}

#[test]
fn a_fleet_wide_unban_lifts_the_own_ban_made_before_it() {
    let mut h = start_banned("198.51.100.7", HOUR);
    let made_before = now_unix() + 1;
    let outcome = h.apply(vec![RemoteChange::OwnKeyRemoved {
        net: net("198.51.100.7/32"),
        made_before,
    }]);
    assert_eq!(outcome.lifted, 1);
    assert!(h.stored("198.51.100.7").is_none());
    assert!(only(&h.scripts()).contains(&format!(
        "delete element inet {TABLE} ban4 {{ 198.51.100.7 }}"
    )));
}
