//! The core's decisions, seen through the scripts it has the firewall run
//! and through the store: what is banned, refused, unbanned and allowed,
//! and how it recovers when the kernel refuses an incremental change.
//!
//! Tests only; the harness is in `mod.rs`. They must not need a kernel.

use super::{
    DAY, HOUR, TABLE, assert_about, is_full_apply, net, only, record, start, start_banned,
    start_with, timeout_of,
};
use crate::daemon::core::CoreError;
use crate::daemon::firewall_event::{EventKind, FirewallEvent};

#[test]
fn a_ban_is_stored_then_added_with_its_timeout() {
    let mut h = start();
    let banned = h.ban("192.0.2.7", HOUR).expect("banned");
    assert_eq!(banned.len(), 1);
    let stored = h.stored("192.0.2.7").expect("the ban is stored");
    assert_eq!(stored.expires - stored.created, HOUR);
    let scripts = h.scripts();
    let script = only(&scripts);
    assert!(script.contains(&format!(
        "add element inet {TABLE} ban4 {{ 192.0.2.7 timeout 3600s }}"
    )));
    assert!(
        !is_full_apply(script),
        "an incremental add, not a full apply"
    );
}

#[test]
fn a_prefix_goes_to_the_interval_set() {
    let mut h = start();
    h.ban("2001:db8:1::/48", 0).expect("banned");
    let scripts = h.scripts();
    assert!(only(&scripts).contains(&format!(
        "add element inet {TABLE} bannet6 {{ 2001:db8:1::/48 timeout 3600s }}"
    )));
}

#[test]
fn a_longer_re_ban_replaces_the_element_timeout() {
    let mut h = start_banned("192.0.2.7", 60);
    h.ban("192.0.2.7", DAY).expect("banned again");
    let scripts = h.scripts();
    let script = only(&scripts);
    assert!(script.contains(&format!("delete element inet {TABLE} ban4 {{ 192.0.2.7 }}")));
    assert_eq!(timeout_of(script, "192.0.2.7"), Some(DAY), "{script}");
    assert_eq!(
        h.stored("192.0.2.7").map(|r| r.expires - r.created),
        Some(DAY)
    );
}

#[test]
fn refused_inputs_change_nothing() {
    let mut h = start_with("allow = [\"203.0.113.0/24\"]", &[]);
    let cases: [(&[&str], u64, &str); 6] = [
        (&["not-an-address"], 0, "not-an-address"),
        (&["192.0.0.0/8"], 0, "broader than the minimum prefix"),
        (&["127.0.0.1"], 0, "loopback"),
        (&["203.0.113.9"], 0, "overlaps allowlisted 203.0.113.0/24"),
        (&["192.0.2.1"], 366 * DAY, "exceeds bans.max_time"),
        (&["192.0.2.1", "192.0.2.300"], 0, "entry 2 of 2"),
    ];
    for (inputs, seconds, expected) in cases {
        let inputs: Vec<String> = inputs.iter().map(ToString::to_string).collect();
        let err = h
            .core
            .ban(&inputs, seconds, "test", "manual")
            .expect_err("refused");
        assert!(err.to_string().contains(expected), "{inputs:?}: {err}");
        assert_eq!(h.core.ban_count(), 0, "{inputs:?} stored something");
        assert_eq!(h.scripts(), Vec::<String>::new(), "{inputs:?} ran a script");
    }
}

#[test]
fn a_prefix_overlapping_a_banned_prefix_is_refused() {
    let mut h = start_banned("198.51.100.0/24", 0);
    let err = h.ban("198.51.100.128/25", 0).expect_err("overlaps");
    assert!(matches!(err, CoreError::Overlaps(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("198.51.100.128/25 overlaps the banned prefix 198.51.100.0/24"),
        "{err}"
    );
    assert!(h.stored("198.51.100.128/25").is_none());
    assert!(h.scripts().is_empty());
    // The same prefix again is a re-ban, not an overlap.
    h.ban("198.51.100.0/24", 0)
        .expect("re-ban of the same prefix");
}

#[test]
fn overlapping_prefixes_in_one_batch_are_refused() {
    let mut h = start();
    let batch = ["198.51.100.0/24".to_string(), "198.51.100.0/25".to_string()];
    let err = h
        .core
        .ban(&batch, 0, "test", "manual")
        .expect_err("overlap");
    assert!(
        err.to_string()
            .contains("overlaps the banned prefix 198.51.100.0/24"),
        "{err}"
    );
    assert_eq!(h.core.ban_count(), 0);
    assert!(h.scripts().is_empty());
}

#[test]
fn unban_removes_from_store_and_kernel() {
    let mut h = start_banned("192.0.2.7", HOUR);
    let removed = h.core.unban("192.0.2.7").expect("unbanned");
    assert_eq!(removed.map(|r| r.net), Some(net("192.0.2.7/32")));
    assert!(h.stored("192.0.2.7").is_none());
    let scripts = h.scripts();
    assert!(only(&scripts).contains(&format!("delete element inet {TABLE} ban4 {{ 192.0.2.7 }}")));
    // Unbanning what is not banned is no error and touches nothing.
    assert!(h.core.unban("192.0.2.7").expect("no-op").is_none());
    assert!(h.scripts().is_empty());
}

#[test]
fn allow_and_disallow_replace_the_allow_sets() {
    let mut h = start();
    assert!(h.core.allow("198.51.100.0/24").expect("allowed"));
    let scripts = h.scripts();
    let script = only(&scripts);
    assert!(script.contains(&format!("flush set inet {TABLE} allow4")));
    assert!(script.contains(&format!(
        "add element inet {TABLE} allow4 {{ 198.51.100.0/24 }}"
    )));
    assert!(!h.core.allow("198.51.100.0/24").expect("already allowed"));
    assert!(
        h.scripts().is_empty(),
        "an entry already there changes nothing"
    );
    let err = h.ban("198.51.100.9", 0).expect_err("allowlisted");
    assert!(err.to_string().contains("198.51.100.0/24"), "{err}");

    h.core.disallow("198.51.100.0/24").expect("disallowed");
    let scripts = h.scripts();
    let script = only(&scripts);
    assert!(script.contains(&format!("flush set inet {TABLE} allow4")));
    assert!(!script.contains("198.51.100.0/24"), "{script}");
    h.ban("198.51.100.9", 0).expect("no longer allowlisted");
}

#[test]
fn allow_and_disallow_refuse_what_they_cannot_do() {
    let mut h = start_with("allow = [\"203.0.113.0/24\"]", &[]);
    assert!(h.core.allow("0.0.0.0/0").is_err(), "the whole Internet");
    assert!(h.core.allow("nonsense").is_err());
    let err = h.core.disallow("203.0.113.0/24").expect_err("static");
    assert!(err.to_string().contains("static allowlist"), "{err}");
    let err = h.core.disallow("192.0.2.0/24").expect_err("unknown");
    assert!(
        err.to_string().contains("not in the runtime allowlist"),
        "{err}"
    );
    assert!(h.scripts().is_empty());
    assert_eq!(h.core.allow_entries().1, Vec::new());
}

#[test]
fn a_refused_incremental_ban_re_applies_the_whole_table() {
    let mut h = start();
    h.log.refuse_next(1);
    h.ban("192.0.2.7", HOUR)
        .expect("banned despite the refused add");
    assert!(h.stored("192.0.2.7").is_some());
    let scripts = h.scripts();
    assert_eq!(scripts.len(), 2, "{scripts:#?}");
    assert!(!is_full_apply(&scripts[0]));
    assert!(is_full_apply(&scripts[1]), "{}", scripts[1]);
    assert_about(timeout_of(&scripts[1], "192.0.2.7"), HOUR);
}

#[test]
fn a_refused_incremental_unban_re_applies_the_table_without_it() {
    let mut h = start();
    h.ban("192.0.2.7", HOUR).expect("banned");
    h.ban("192.0.2.8", HOUR).expect("banned");
    h.scripts();
    h.log.refuse_next(1);
    h.core
        .unban("192.0.2.7")
        .expect("unbanned despite the refused delete");
    let scripts = h.scripts();
    let full = scripts.last().expect("a recovery script");
    assert!(is_full_apply(full), "{full}");
    assert!(!full.contains("192.0.2.7"), "{full}");
    assert!(full.contains("192.0.2.8 timeout"), "{full}");
}

#[test]
fn a_failed_recovery_is_reported() {
    let mut h = start();
    h.log.refuse_next(2);
    let err = h.ban("192.0.2.7", HOUR).expect_err("both refused");
    assert!(matches!(err, CoreError::Firewall(_)), "{err:?}");
    // Durable first: the ban is stored, and the next sync puts it in.
    assert!(h.stored("192.0.2.7").is_some());
}

#[test]
fn start_renders_every_stored_ban_in_the_first_full_apply() {
    let stored = [
        record("192.0.2.1/32", HOUR, "manual"),
        record("198.51.100.0/24", DAY, "manual"),
        record("2001:db8::1/128", 2 * HOUR, "sshd"),
    ];
    let h = start_with("", &stored);
    let full = h
        .startup
        .iter()
        .find(|s| is_full_apply(s))
        .expect("a full apply at start");
    assert_about(timeout_of(full, "192.0.2.1"), HOUR);
    assert_about(timeout_of(full, "198.51.100.0/24"), DAY);
    assert_about(timeout_of(full, "2001:db8::1"), 2 * HOUR);
    assert_eq!(h.core.ban_count(), 3);
}

#[test]
fn start_fails_when_no_table_flags_are_accepted() {
    let (dir, store) = super::temp_store();
    let config = super::config("", dir.path());
    let (reconciler, log) = super::recording_reconciler(&config);
    log.refuse_next(1);
    assert!(crate::daemon::core::Core::start(config, store, reconciler).is_err());
}

/// A jail whose ban time doubles, then quadruples, for repeat offenders.
const GROWING_JAIL: &str = r#"
[jails.sshd]
files = ["/var/log/auth.log"]
bantime = "1h"
increment = { multipliers = [1, 2, 4] }
"#;

impl super::Harness {
    /// The configuration's first jail bans `text` after five failures.
    fn jail_ban(&mut self, text: &str) -> Result<String, CoreError> {
        let jail = self.core.config().jails.jails[0].clone();
        self.core.jail_ban(&jail, net(text), 5)
    }
}

#[test]
fn a_port_scoped_jail_bans_only_its_ports() {
    let mut h = start_with(
        "[jails.web]\nfilter = \"sshd\"\nfiles = [\"/var/log/web.log\"]\nports = [443]\n",
        &[],
    );
    h.jail_ban("192.0.2.7").expect("banned");
    let scripts = h.scripts();
    let script = only(&scripts);
    assert!(
        script.contains(&format!(
            "add element inet {TABLE} portban4 {{ 192.0.2.7 . tcp . 443 timeout 3600s"
        )),
        "{script}"
    );
    assert!(!script.contains(" ban4 "), "{script}");
}

#[test]
fn a_jail_ban_grows_for_repeat_offenders() {
    let mut h = start_with(GROWING_JAIL, &[]);
    let first = h.jail_ban("192.0.2.7").expect("first ban");
    assert!(first.contains("banned 0 time(s) before"), "{first}");
    assert_about(timeout_of(only(&h.scripts()), "192.0.2.7"), HOUR);

    let second = h.jail_ban("192.0.2.7").expect("second ban");
    assert!(second.contains("banned 1 time(s) before"), "{second}");
    assert_about(timeout_of(only(&h.scripts()), "192.0.2.7"), 2 * HOUR);
    let stored = h.stored("192.0.2.7").expect("stored");
    assert_eq!(&*stored.source, "sshd");
    assert_eq!(stored.expires - stored.created, 2 * HOUR);
}

#[test]
fn a_burst_of_jail_bans_is_one_transaction_and_a_refused_network_holds_back_none() {
    let mut h = start_with(GROWING_JAIL, &[]);
    let jail = h.core.config().jails.jails[0].clone();
    let burst = [
        net("192.0.2.7"),
        net("127.0.0.1"),
        net("198.51.100.0/24"),
        net("198.51.100.0/25"),
        net("192.0.2.7"),
    ];
    let outcomes = h
        .core
        .jail_ban_many(&jail, &burst, 5)
        .expect("burst stored");
    let lines: Vec<String> = outcomes
        .iter()
        .map(|(net, outcome)| match outcome {
            Ok(line) => format!("{net} {line}"),
            Err(err) => format!("{net} refused: {err}"),
        })
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "one outcome per distinct network: {lines:?}"
    );
    assert!(lines[1].starts_with("127.0.0.1/32 refused"), "{lines:?}");
    assert!(lines[2].contains("banned for 1h"), "{lines:?}");
    assert!(
        lines[3].contains("overlaps the banned prefix 198.51.100.0/24"),
        "a prefix inside another of the same burst: {lines:?}"
    );
    let scripts = h.scripts();
    let script = only(&scripts);
    assert!(script.contains("192.0.2.7 timeout"), "{script}");
    assert!(script.contains("198.51.100.0/24 timeout"), "{script}");
    assert_eq!(h.core.ban_count(), 2);
    // Each banned network's jail history grew once.
    let again = h.jail_ban("192.0.2.7").expect("second ban");
    assert!(again.contains("banned 1 time(s) before"), "{again}");
}

#[test]
fn a_jail_leaves_a_longer_running_ban_alone() {
    let mut h = start_with(GROWING_JAIL, &[]);
    h.ban("192.0.2.7", DAY).expect("manual ban");
    h.scripts();
    let done = h.jail_ban("192.0.2.7").expect("no error");
    assert!(done.starts_with("already banned until"), "{done}");
    assert!(h.scripts().is_empty());
    assert_eq!(
        h.stored("192.0.2.7").map(|r| r.source.to_string()),
        Some("manual".into())
    );
}

#[test]
fn reload_refuses_a_new_state_dir() {
    let mut h = start();
    let mut moved = h.core.config().clone();
    moved.state_dir = "/elsewhere".into();
    let err = h.core.reload_config(moved).expect_err("refused");
    assert!(err.to_string().contains("state_dir changed"), "{err}");
    assert!(h.scripts().is_empty());
}

#[test]
fn reload_applies_a_new_allowlist_with_a_full_sync() {
    let mut h = start_banned("192.0.2.7", HOUR);
    let mut new = h.core.config().clone();
    new.allow = vec![net("203.0.113.0/24")];
    h.core.reload_config(new).expect("reloaded");
    let scripts = h.scripts();
    let full = only(&scripts);
    assert!(is_full_apply(full));
    assert!(full.contains(&format!(
        "add element inet {TABLE} allow4 {{ 203.0.113.0/24 }}"
    )));
    assert!(full.contains("192.0.2.7 timeout"), "stored bans stay");
    assert_eq!(h.core.status().static_allows, 1);
}

#[test]
fn a_firewall_event_re_applies_a_table_the_self_check_cannot_find() {
    // No table named TABLE exists in this machine's kernel (and without
    // the privilege to ask, the check fails too): the event repairs.
    let mut h = start_banned("192.0.2.7", HOUR);
    let event = FirewallEvent::new(
        EventKind::Restart,
        None,
        "nftables.service restarted".into(),
    );
    assert!(h.core.on_firewall_event(&event).expect("repaired"));
    let scripts = h.scripts();
    let full = only(&scripts);
    assert!(is_full_apply(full));
    assert!(full.contains("192.0.2.7 timeout"));
    let status = h.core.status();
    assert_eq!(
        status.last_sync.map(|s| s.cause),
        Some("nftables.service restarted".into())
    );
}

#[test]
fn imported_bans_keep_their_own_expiry_and_a_second_import_changes_nothing() {
    use crate::daemon::imported_bans::ImportedBan;
    let mut h = start_with("allow = [\"203.0.113.0/24\"]", &[]);
    let now = crate::timefmt::now_unix();
    let entry = |address: &str, expires_at: u64, source: &str| ImportedBan {
        address: address.to_string(),
        expires_at,
        reason: "imported".to_string(),
        source: source.to_string(),
    };
    let bans = [
        entry("192.0.2.7", now + HOUR, "sshd"),
        entry("192.0.2.8", now + DAY, "recidive"),
        entry("192.0.2.9", u64::MAX, "sshd"),
        entry("203.0.113.9", now + HOUR, "sshd"),
        entry("192.0.2.10", now - 1, "sshd"),
        entry("192.0.2.11", now + HOUR, "fleet:web2"),
        entry("not-an-address", now + HOUR, "sshd"),
    ];
    let outcome = h.core.import_bans(&bans).expect("imported");
    assert_eq!(outcome.banned.len(), 3, "{outcome:?}");
    assert_eq!(outcome.unchanged, 0);
    let refused: Vec<&str> = outcome.refused.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        refused,
        ["203.0.113.9", "192.0.2.10", "192.0.2.11", "not-an-address"]
    );
    let scripts = h.scripts();
    let timeout = timeout_of(only(&scripts), "192.0.2.7").expect("in the script");
    assert!((HOUR - 2..=HOUR).contains(&timeout), "{timeout}");
    let recidive = h.stored("192.0.2.8").expect("stored");
    assert_eq!(&*recidive.source, "recidive");
    assert_eq!(recidive.expires, now + DAY);
    let permanent = h.stored("192.0.2.9").expect("stored");
    assert_eq!(
        permanent.expires - permanent.created,
        365 * DAY,
        "cut to bans.max_time"
    );

    let again = h.core.import_bans(&bans[..3]).expect("imported again");
    assert!(again.banned.is_empty(), "{again:?}");
    assert_eq!(again.unchanged, 3);
    assert_eq!(h.scripts(), Vec::<String>::new(), "nothing to change");
}
