//! The firewall's self-check against real kernel nftables (needs root):
//! it must say "intact" for a table orch just wrote, and "not intact" for
//! each thing an admin's hand (or a crash of nftables) can take away: a ban
//! element of each kind, a rule, a whole chain's rules, the table. Also
//! that a bulk change pauses the kernel monitor and resumes it after.
//!
//! Each test runs on a thread that moved into a fresh network namespace
//! (`unshare(CLONE_NEWNET)` moves only that thread); `nft` children started
//! from that thread live in the same namespace. The host's ruleset is
//! never touched.

use std::process::Command;
use std::sync::Arc;

use ipnet::IpNet;
use orch::addr::Protocol;
use orch::config::{FirewallConfig, OwnerMode, Verdict};
use orch::firewall::script::PortScope;
use orch::firewall::{DnsElements, Firewall, TableContents, TimedElement};

fn net(text: &str) -> IpNet {
    text.parse().expect("test literal")
}

/// Runs `body` on a thread inside a fresh network namespace.
fn in_fresh_netns(body: impl FnOnce() + Send + 'static) {
    let thread = std::thread::spawn(move || {
        // SAFETY: plain syscall; affects only this thread.
        let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            unshared,
            0,
            "unshare(CLONE_NEWNET): {} (run as root)",
            std::io::Error::last_os_error()
        );
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// `nft <args>` in the calling thread's namespace; panics on failure.
fn nft(args: &[&str]) -> String {
    let output = Command::new("nft").args(args).output().expect("run nft");
    assert!(
        output.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn config(owner: OwnerMode, forward: bool) -> FirewallConfig {
    FirewallConfig {
        table: "orch".into(),
        priority: -10,
        verdict: Verdict::Drop,
        forward,
        element_counters: false,
        owner,
    }
}

/// A thousand single-address bans, a prefix, and a port ban in each family.
fn bans() -> Vec<TimedElement> {
    let ssh = Arc::new(PortScope {
        protocols: vec![Protocol::Tcp, Protocol::Udp],
        ports: vec![22, 2222],
    });
    let mut bans: Vec<TimedElement> = (0..1000u32)
        .map(|i| {
            let addr = std::net::Ipv4Addr::from(0xc633_0000 | i); // 198.51.0.0/16
            TimedElement::every_port(IpNet::from(std::net::IpAddr::V4(addr)), 3600)
        })
        .collect();
    bans.push(TimedElement::every_port(net("192.0.2.0/25"), 3600));
    bans.push(TimedElement::every_port(net("2001:db8::7/128"), 3600));
    for addr in ["192.0.2.200/32", "2001:db8::9/128"] {
        bans.push(TimedElement {
            scope: Some(ssh.clone()),
            ..TimedElement::every_port(net(addr), 3600)
        });
    }
    bans
}

/// A firewall holding `bans`, written in one full apply.
fn written(owner: OwnerMode, forward: bool, bans: &[TimedElement]) -> Firewall {
    let mut firewall = Firewall::open(&config(owner, forward)).expect("open firewall");
    apply(&mut firewall, bans);
    firewall
}

fn apply(firewall: &mut Firewall, bans: &[TimedElement]) {
    let no_dns = DnsElements::default();
    let contents = TableContents {
        dns_allows: &no_dns,
        bans,
        ..TableContents::default()
    };
    firewall.apply_full(&contents).expect("full apply");
}

/// The sample the tests look up: one ban of each kind.
fn samples(bans: &[TimedElement]) -> Vec<TimedElement> {
    vec![
        bans[500].clone(),
        bans[1000].clone(),
        bans[1001].clone(),
        bans[1002].clone(),
        bans[1003].clone(),
    ]
}

#[test]
fn a_freshly_written_table_is_intact_with_either_backend() {
    in_fresh_netns(|| {
        let bans = bans();
        for (owner, forward) in [(OwnerMode::On, true), (OwnerMode::Off, false)] {
            let mut firewall = written(owner, forward, &bans);
            assert!(firewall.is_intact(&samples(&bans)), "{owner:?}");
            assert!(firewall.is_intact(&[]), "{owner:?}, no samples");
            drop(firewall);
            if owner == OwnerMode::Off {
                nft(&["delete", "table", "inet", "orch"]);
            }
        }
    });
}

#[test]
fn a_ban_that_is_not_in_the_kernel_is_noticed() {
    in_fresh_netns(|| {
        let bans = bans();
        let mut firewall = written(OwnerMode::On, false, &bans);
        for never_banned in ["198.51.100.1/32", "203.0.113.0/24", "2001:db8::1/128"] {
            let element = TimedElement::every_port(net(never_banned), 60);
            assert!(!firewall.is_intact(&[element]), "{never_banned}");
        }
        let wrong_port = TimedElement {
            scope: Some(Arc::new(PortScope {
                protocols: vec![Protocol::Tcp],
                ports: vec![80],
            })),
            ..bans[1002].clone()
        };
        assert!(!firewall.is_intact(&[wrong_port]));
    });
}

#[test]
fn each_element_kind_deleted_by_hand_is_noticed() {
    in_fresh_netns(|| {
        let bans = bans();
        let mut firewall = written(OwnerMode::Off, false, &bans);
        for (set, element) in [
            ("ban4", "198.51.1.244"),
            ("bannet4", "192.0.2.0/25"),
            ("ban6", "2001:db8::7"),
            ("portban4", "192.0.2.200 . tcp . 22"),
            ("portban6", "2001:db8::9 . tcp . 22"),
        ] {
            assert!(
                firewall.is_intact(&samples(&bans)),
                "before deleting {element}"
            );
            nft(&[
                "delete",
                "element",
                "inet",
                "orch",
                set,
                &format!("{{ {element} }}"),
            ]);
            assert!(
                !firewall.is_intact(&samples(&bans)),
                "after deleting {element}"
            );
            apply(&mut firewall, &bans);
        }
    });
}

#[test]
fn missing_rules_chains_and_tables_are_noticed() {
    in_fresh_netns(|| {
        let bans = bans();
        let mut firewall = written(OwnerMode::Off, true, &bans);

        nft(&["flush", "chain", "inet", "orch", "forward"]);
        assert!(!firewall.is_intact(&[]), "forward chain flushed");
        apply(&mut firewall, &bans);

        // One rule of the filter chain, found by its handle.
        let listing = nft(&["-a", "list", "chain", "inet", "orch", "filter"]);
        let handle = listing
            .lines()
            .find(|line| line.contains("@bannet6"))
            .and_then(|line| line.rsplit("# handle ").next())
            .map(str::trim)
            .expect("the bannet6 rule and its handle")
            .to_string();
        assert!(firewall.is_intact(&[]));
        nft(&[
            "delete", "rule", "inet", "orch", "filter", "handle", &handle,
        ]);
        assert!(!firewall.is_intact(&[]), "one filter rule deleted");
        apply(&mut firewall, &bans);

        nft(&["delete", "table", "inet", "orch"]);
        assert!(!firewall.is_intact(&[]), "table deleted");
        apply(&mut firewall, &bans);
        assert!(firewall.is_intact(&samples(&bans)));
    });
}

#[test]
fn a_bulk_change_pauses_the_monitor_and_hears_nothing_unheard_when_alone() {
    use orch::firewall::monitor::{KernelEvent, KernelMonitor};
    in_fresh_netns(|| {
        let mut monitor = KernelMonitor::open().expect("monitor");
        let mut firewall = Firewall::open(&config(OwnerMode::On, false)).expect("open");
        firewall.set_notification_switch(Some(monitor.switch().expect("switch")));
        let bans = bans();
        apply(&mut firewall, &bans);
        assert!(firewall.is_intact(&samples(&bans)));
        assert_eq!(
            firewall.take_unheard(),
            vec![],
            "nobody else committed during the bulk apply"
        );
        // The monitor heard nothing of the paused bulk apply (only the
        // small probe of table flags before it), and hears the next small
        // change again.
        let about_orch = |events: &[KernelEvent]| {
            events.iter().any(|event| {
                matches!(event, KernelEvent::TableChanged { table, .. }
                    | KernelEvent::TableDeleted { table, .. } if table == "orch")
            })
        };
        let heard = monitor
            .next_events(Some(std::time::Duration::ZERO))
            .expect("receive");
        assert!(
            !about_orch(&heard),
            "paused during the bulk apply: {heard:?}"
        );
        firewall
            .add_bans(&[TimedElement::every_port(net("203.0.113.9/32"), 60)])
            .expect("one more ban");
        let heard = monitor
            .next_events(Some(std::time::Duration::from_secs(5)))
            .expect("receive");
        assert!(
            about_orch(&heard),
            "a single ban is heard as before: {heard:?}"
        );
    });
}

#[test]
fn snapshots_tell_a_flush_by_someone_else_from_our_own_commit() {
    use orch::firewall::monitor::KernelEvent;
    use orch::firewall::probe::Snapshot;
    in_fresh_netns(|| {
        nft(&["add", "table", "ip", "filter"]);
        let mut firewall = written(OwnerMode::On, false, &bans());

        // Our own full apply alone: nothing unheard.
        let before = Snapshot::take().expect("snapshot");
        apply(&mut firewall, &bans());
        let after = Snapshot::take().expect("snapshot");
        assert_eq!(after.unheard_since(&before, "orch"), vec![]);

        // Someone else flushes the ruleset (our owned table stays) and
        // loads a table again.
        let before = Snapshot::take().expect("snapshot");
        nft(&["flush", "ruleset"]);
        nft(&["add", "table", "ip", "filter"]);
        let after = Snapshot::take().expect("snapshot");
        assert_eq!(
            after.unheard_since(&before, "orch"),
            vec![KernelEvent::TableDeleted {
                family: 2,
                table: "filter".into()
            }]
        );

        // Our commit and someone else's that deletes nothing.
        let before = Snapshot::take().expect("snapshot");
        apply(&mut firewall, &bans());
        nft(&["add", "table", "inet", "other"]);
        let after = Snapshot::take().expect("snapshot");
        assert_eq!(
            after.unheard_since(&before, "orch"),
            vec![KernelEvent::Unheard]
        );
    });
}

/// Other processes committing all the time (here: a table of their own
/// replaced over and over, as `systemctl reload nftables` does) must not
/// make the check call an intact table broken. (`nft get element` itself
/// fails now and then with "Interrupted system call" in that situation;
/// the check's own netlink lookups must not be misled by such races.)
#[test]
fn the_check_stays_right_while_another_process_commits() {
    in_fresh_netns(|| {
        let bans = bans();
        let mut firewall = written(OwnerMode::Auto, false, &bans);
        let script = "table inet other {\n}\n\
                      delete table inet other\n\
                      table inet other {\n\
                      set s {\n type ipv4_addr\n elements = { 10.0.0.1 }\n }\n\
                      chain input {\n type filter hook input priority 0; policy accept;\n\
                      ip saddr @s accept\n }\n\
                      }\n";
        let path = std::env::temp_dir().join(format!("orch-other-{}.nft", std::process::id()));
        std::fs::write(&path, script).expect("write script");
        let mut committer = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while :; do nft -f {} || exit 1; done",
                path.display()
            ))
            .spawn()
            .expect("start committer");
        let sample = samples(&bans);
        let (mut checks, mut misjudged) = (0, 0);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < until {
            checks += 1;
            if !firewall.is_intact(&sample) {
                misjudged += 1;
            }
        }
        let still_committing = matches!(committer.try_wait(), Ok(None));
        let _ = committer.kill();
        let _ = committer.wait();
        let _ = std::fs::remove_file(&path);
        assert!(still_committing, "the other process's nft -f failed");
        eprintln!("{checks} checks while the other process committed, {misjudged} misjudged");
        let generation = nft(&["list", "ruleset"]);
        assert!(generation.contains("table inet other"), "{generation}");
        assert_eq!(misjudged, 0, "of {checks} checks during others' commits");
    });
}
