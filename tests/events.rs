//! The daemon follows the firewall on its own: kernel notifications bring
//! back a flushed unowned table, SIGHUP reloads the config (and refuses a
//! bad one), and the self-check leaves an intact owned table alone.

mod common;

use std::time::Duration;

use common::{Daemon, NetNs, TestBus, wait_until};

fn has(elements: &[String], wanted: &str) -> bool {
    elements.iter().any(|e| e == wanted)
}

#[test]
fn an_unowned_table_flushed_by_hand_comes_back_without_orch_sync() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "[firewall]\nowner = \"off\"\n");
    daemon
        .cli(&["ban", "192.0.2.80", "2001:db8::80"])
        .expect_ok("ban");

    netns.nft(&["flush", "ruleset"]).expect_ok("flush ruleset");
    wait_until(Duration::from_secs(5), "bans back after a flush", || {
        has(&netns.set_elements("orch", "ban4"), "192.0.2.80")
            && has(&netns.set_elements("orch", "ban6"), "2001:db8::80")
    });

    netns
        .nft_script("flush ruleset\ntable inet filter { chain input { type filter hook input priority 0; }; }\n")
        .expect_ok("nft -f with flush ruleset");
    wait_until(Duration::from_secs(5), "bans back after nft -f", || {
        has(&netns.set_elements("orch", "ban4"), "192.0.2.80")
    });
    let status = daemon.cli(&["status"]).expect_ok("status");
    assert!(
        status
            .stdout
            .contains("table inet orch deleted in the kernel"),
        "{}",
        status.stdout
    );
}

#[test]
fn sighup_reloads_the_config_and_keeps_the_old_one_when_the_new_is_bad() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "");
    daemon.cli(&["ban", "192.0.2.90"]).expect_ok("ban");
    let with_allow = format!(
        "state_dir = \"{}\"\nallow = [\"198.51.100.0/24\"]\n",
        daemon.state_dir.display()
    );
    std::fs::write(&daemon.config_path, with_allow).expect("rewrite config");
    let hup = |daemon: &Daemon| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &daemon.pid().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    };
    hup(&daemon);
    wait_until(
        Duration::from_secs(5),
        "allow4 to hold the new entry",
        || has(&netns.set_elements("orch", "allow4"), "198.51.100.0/24"),
    );
    assert!(
        has(&netns.set_elements("orch", "ban4"), "192.0.2.90"),
        "bans survive a reload"
    );
    let refused = daemon.cli(&["ban", "198.51.100.7"]);
    assert!(refused.stderr.contains("Allowlisted"), "{}", refused.stderr);

    std::fs::write(&daemon.config_path, "[bans]\nmin_prefix_v4 = 99\n").expect("rewrite config");
    hup(&daemon);
    wait_until(Duration::from_secs(5), "the refusal in the log", || {
        daemon
            .log()
            .contains("new configuration is invalid, keeping the running one")
    });
    assert!(daemon.ping(), "daemon still serving");
    assert!(has(
        &netns.set_elements("orch", "allow4"),
        "198.51.100.0/24"
    ));
}

#[test]
fn the_self_check_leaves_an_intact_owned_table_alone() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "");
    daemon.cli(&["ban", "192.0.2.91"]).expect_ok("ban");
    netns.nft(&["flush", "ruleset"]).expect_ok("flush ruleset");
    // The flush deletes no table of ours (it is owned), so no event, no re-apply:
    // the only sync in the log is the start.
    assert!(has(&netns.set_elements("orch", "ban4"), "192.0.2.91"));
    let syncs = daemon.log().matches("table synced").count();
    assert_eq!(syncs, 1, "{}", daemon.log());
}
