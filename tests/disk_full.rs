//! A full disk under the store (issue 17, item 3): the state dir on a small
//! tmpfs, filled to the last byte.
//!
//! - A ban while the disk is full is refused with `.Store` and the cause,
//!   the daemon keeps running, and every ban acknowledged before is still
//!   in the kernel and, after a restart, in the store.
//! - Once space frees, the next ban works without a restart.
//!
//! tests/disk_full_store.rs: a compaction that fails for want of space.

mod common;

use common::small_disk::SmallDisk;
use common::{Daemon, NetNs, TestBus};

fn in_kernel(netns: &NetNs, addr: &str) -> bool {
    netns.set_elements("orch", "ban4").iter().any(|e| e == addr)
}

#[test]
fn a_full_disk_refuses_new_bans_keeps_the_acknowledged_ones_and_recovers() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let mut daemon = Daemon::start(&netns, &bus, "");
    daemon.stop();
    let disk = SmallDisk::mount_over(&daemon.state_dir, "512k");
    daemon.restart(&netns, &bus);

    let acknowledged: Vec<String> = (1..=20).map(|i| format!("192.0.2.{i}")).collect();
    for addr in &acknowledged {
        daemon
            .cli(&["ban", addr, "--for", "1d"])
            .expect_ok("ban before the disk fills");
    }
    let filler = disk.fill();

    // The log's last page may still hold a few records: ban until the
    // store runs out of room.
    let mut acknowledged = acknowledged;
    let mut refused = None;
    for i in 1..=250 {
        let addr = format!("198.51.100.{i}");
        let out = daemon.cli(&["ban", &addr, "--for", "1d"]);
        if out.ok() {
            acknowledged.push(addr);
        } else {
            refused = Some((addr, out));
            break;
        }
    }
    let (refused_addr, refused) = refused.expect("250 bans fit on a full disk");
    assert_eq!(refused.status, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("org.orch.Orch1.Error.Store")
            && refused.stderr.contains("No space left on device"),
        "the refusal names the cause: {}",
        refused.stderr
    );
    assert!(daemon.ping(), "the daemon keeps running on a full disk");
    assert!(
        !in_kernel(&netns, &refused_addr),
        "a refused ban reached the kernel"
    );
    for addr in &acknowledged {
        assert!(in_kernel(&netns, addr), "{addr} left the kernel");
    }
    // An unban's record is small and may still fit where the refused
    // ban's was rolled back; either way the kernel follows the store.
    let unban = daemon.cli(&["unban", "192.0.2.1"]);
    if unban.ok() {
        assert!(
            !in_kernel(&netns, "192.0.2.1"),
            "an acknowledged unban left the ban"
        );
        acknowledged.retain(|addr| addr != "192.0.2.1");
    } else {
        assert!(
            unban.stderr.contains("org.orch.Orch1.Error.Store"),
            "{unban:?}"
        );
        assert!(
            in_kernel(&netns, "192.0.2.1"),
            "a refused unban changed the kernel"
        );
    }

    // Space frees: the next ban works, with no restart.
    std::fs::remove_file(&filler).expect("free the disk");
    daemon
        .cli(&["ban", "203.0.113.8", "--for", "1d"])
        .expect_ok("ban after space frees");
    assert!(in_kernel(&netns, "203.0.113.8"));

    // Everything acknowledged is in the store: a restart puts it back.
    daemon.stop();
    daemon.restart(&netns, &bus);
    let list = daemon.cli(&["list"]).expect_ok("list").stdout;
    for addr in acknowledged
        .iter()
        .map(String::as_str)
        .chain(["203.0.113.8"])
    {
        assert!(
            list.lines().any(|l| l.starts_with(&format!("{addr} "))),
            "{addr} lost:\n{list}"
        );
        assert!(in_kernel(&netns, addr), "{addr} not restored to the kernel");
    }
    assert!(
        !list
            .lines()
            .any(|l| l.starts_with(&format!("{refused_addr} "))),
        "the refused ban was stored:\n{list}"
    );
    daemon.stop();
    drop(disk);
}
