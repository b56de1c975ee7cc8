//! The reconciler on its own: the store's state as the scripts it renders
//! (remaining timeouts, allows, DNS allows, port-scoped jails, removals).
//!
//! Tests only; they must not need a kernel.

use std::collections::HashMap;
use std::sync::Arc;

use super::{
    DAY, HOUR, TABLE, assert_contains_all, is_full_apply, net, only, record_at, temp_store,
};
use crate::addr::Protocol;
use crate::daemon::reconciler::{DnsAllows, Reconciler};
use crate::firewall::recording::ScriptLog;
use crate::firewall::script::PortScope;
use crate::store::{BanRecord, Store};
use crate::timefmt::now_unix;

/// A recording reconciler beside a store.
struct Fixture {
    reconciler: Reconciler,
    log: ScriptLog,
    store: Store,
    /// When the stored bans were made.
    made: u64,
    _dir: tempfile::TempDir,
}

/// A fixture whose store holds `bans`: (network, seconds, source), all
/// made at the same second.
fn setup(bans: &[(&str, u64, &str)]) -> Fixture {
    let (dir, mut store) = temp_store();
    let made = now_unix();
    let records: Vec<BanRecord> = bans
        .iter()
        .map(|(net, seconds, source)| record_at(made, net, *seconds, source))
        .collect();
    store.insert_bans(&records).expect("stored");
    let config = super::config("", dir.path());
    let (reconciler, log) = super::recording_reconciler(&config);
    Fixture {
        reconciler,
        log,
        store,
        made,
        _dir: dir,
    }
}

impl Fixture {
    /// A full apply at `now` with `allows` and `dns`; its script.
    fn sync(&mut self, allows: &[ipnet::IpNet], dns: &DnsAllows, now: u64) -> String {
        let info = self
            .reconciler
            .sync_all(&self.store, allows, &Default::default(), dns, now, "test")
            .expect("applied");
        assert_eq!(info.at_unix, now);
        let script = self.log.take().pop().expect("a full apply");
        assert!(is_full_apply(&script), "{script}");
        script
    }
}

/// The jail "web" bans TCP 80 and 443 only.
fn web_scope() -> HashMap<String, Arc<PortScope>> {
    let scope = PortScope {
        protocols: vec![Protocol::Tcp],
        ports: vec![80, 443],
    };
    HashMap::from([("web".to_string(), Arc::new(scope))])
}

#[test]
fn sync_all_renders_bans_with_their_remaining_time_and_the_allows() {
    let mut f = setup(&[
        ("192.0.2.1/32", HOUR, "manual"),
        ("2001:db8::/48", DAY, "manual"),
    ]);
    // Ten minutes after the bans were made.
    let later = f.made + 600;
    let dns = DnsAllows {
        any_port: vec![("198.51.100.53".parse().expect("addr"), later + 300)],
        by_port: vec![("2001:db8::53".parse().expect("addr"), 853, later + 60)],
    };
    let full = f.sync(&[net("203.0.113.0/24")], &dns, later);
    let expected = [
        format!("add element inet {TABLE} ban4 {{ 192.0.2.1 timeout 3000s }}"),
        format!("add element inet {TABLE} bannet6 {{ 2001:db8::/48 timeout 85800s }}"),
        format!("add element inet {TABLE} allow4 {{ 203.0.113.0/24 }}"),
        format!("add element inet {TABLE} dnsallow4 {{ 198.51.100.53 timeout 300s }}"),
        format!("add element inet {TABLE} dnsport6 {{ 2001:db8::53 . 853 timeout 60s }}"),
    ];
    assert_contains_all(&full, &expected);
    let last = f.reconciler.last_sync().expect("a sync recorded");
    assert_eq!((last.cause.as_str(), last.bans_applied), ("test", 2));
}

#[test]
fn sync_all_leaves_out_expired_bans_and_dns_allows() {
    let mut f = setup(&[
        ("192.0.2.1/32", 60, "manual"),
        ("192.0.2.2/32", HOUR, "manual"),
    ]);
    let later = f.made + 120;
    let dns = DnsAllows {
        any_port: vec![("198.51.100.53".parse().expect("addr"), later)],
        by_port: Vec::new(),
    };
    let full = f.sync(&[], &dns, later);
    assert!(!full.contains("192.0.2.1 "), "{full}");
    assert!(!full.contains("198.51.100.53"), "{full}");
    assert!(full.contains("192.0.2.2 timeout"), "{full}");
}

#[test]
fn a_port_scoped_jail_bans_into_the_port_sets() {
    let mut f = setup(&[
        ("192.0.2.9/32", HOUR, "web"),
        ("2001:db8:5::/64", HOUR, "web"),
        ("192.0.2.10/32", HOUR, "sshd"),
    ]);
    f.reconciler.set_port_scopes(web_scope());
    let full = f.sync(&[], &DnsAllows::default(), f.made);
    let expected = [
        format!(
            "add element inet {TABLE} portban4 {{ 192.0.2.9 . tcp . 80 timeout 3600s, 192.0.2.9 . tcp . 443 timeout 3600s }}"
        ),
        format!("add element inet {TABLE} portbannet6 {{ 2001:db8:5::/64 . tcp . 80 timeout 3600s"),
        format!("add element inet {TABLE} ban4 {{ 192.0.2.10 timeout 3600s }}"),
    ];
    assert_contains_all(&full, &expected);
    assert!(!full.contains("ban4 { 192.0.2.9 timeout"), "{full}");
}

#[test]
fn a_re_ban_moving_between_scopes_leaves_the_old_set() {
    let mut f = setup(&[]);
    f.reconciler.set_port_scopes(web_scope());
    let manual = record_at(f.made, "192.0.2.9/32", HOUR, "manual");
    let web = record_at(f.made, "192.0.2.9/32", DAY, "web");
    f.reconciler
        .apply_bans(&[], &[(manual, web)], f.made)
        .expect("applied");
    let scripts = f.log.take().concat();
    let expected = [
        format!("delete element inet {TABLE} ban4 {{ 192.0.2.9 }}"),
        format!("add element inet {TABLE} portban4 {{ 192.0.2.9 . tcp . 80 timeout 1d0s"),
    ];
    assert_contains_all(&scripts, &expected);
}

#[test]
fn remove_bans_deletes_each_element_from_its_set() {
    let mut f = setup(&[]);
    f.reconciler.set_port_scopes(web_scope());
    let removed = [
        record_at(f.made, "192.0.2.1/32", HOUR, "manual"),
        record_at(f.made, "198.51.100.0/24", HOUR, "manual"),
        record_at(f.made, "192.0.2.9/32", HOUR, "web"),
    ];
    f.reconciler.remove_bans(&removed, f.made).expect("removed");
    let scripts = f.log.take();
    let expected = [
        format!("delete element inet {TABLE} ban4 {{ 192.0.2.1 }}"),
        format!("delete element inet {TABLE} bannet4 {{ 198.51.100.0/24 }}"),
        format!(
            "delete element inet {TABLE} portban4 {{ 192.0.2.9 . tcp . 443, 192.0.2.9 . tcp . 80 }}"
        ),
        // Added first with a second to live, so an element that already
        // timed out cannot fail the delete.
        format!("add element inet {TABLE} ban4 {{ 192.0.2.1 timeout 1s }}"),
    ];
    assert_contains_all(only(&scripts), &expected);
}
