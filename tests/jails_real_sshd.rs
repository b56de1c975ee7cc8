//! fail2ban's own sshd.conf on the journal, against Debian's real sshd,
//! attacked over TCP: the check that hardening forgeable journal matches
//! (`_COMM=sshd` gets `_UID=0`, `jail/journal_trust.rs`) still bans a real
//! attacker on Debian, where sshd runs as `ssh.service` (so fail2ban's
//! `_SYSTEMD_UNIT=sshd.service` group never matches and only the `_COMM`
//! group can).
//!
//! Debian's openssh-server runs inside a throwaway systemd sandbox. When the
//! host has no sshd, the test installs the packages `.ci/run` downloaded
//! into [`SSHD_DEBS`] inside the sandbox, whose root is a copy-on-write
//! overlay: nothing reaches the host. An attacker in another network
//! namespace, joined to the sandbox by a veth pair, logs in as a user that
//! does not exist until the jail bans it; then its TCP connects to port 22
//! fail, while a second address of the same namespace still connects.

mod common;

use std::time::Duration;

use common::systemd::{ORCH_IN_SANDBOX as ORCH, SystemdSandbox};
use common::{NetNs, wait_until};

/// Where `.ci/run` leaves Debian's openssh-server packages (and what this
/// host lacks of their dependencies), downloaded but not installed.
const SSHD_DEBS: &str = "/var/cache/orch-tests/openssh";
const SANDBOX_ADDR: &str = "10.97.0.1";
const ATTACKER: &str = "10.97.0.2";
const BYSTANDER: &str = "10.97.0.3";

const CONFIG: &str = r#"
[jails.sshd]
filter = "/etc/fail2ban/filter.d/sshd.conf"
# No matches: the filter's journalmatch,
# _SYSTEMD_UNIT=sshd.service + _COMM=sshd.
journal = {}
maxretry = 3
findtime = "10m"
bantime = "1h"
"#;

/// Makes sure the sandbox has Debian's sshd running as `ssh.service`.
fn start_real_sshd(sandbox: &SystemdSandbox) {
    if !sandbox.run("test", &["-x", "/usr/sbin/sshd"]).ok() {
        let debs = sandbox.sh(&format!("ls {SSHD_DEBS}/openssh-server_*.deb"));
        assert!(
            debs.ok(),
            "no sshd on this host and no openssh-server package in {SSHD_DEBS}: run .ci/run, which downloads it"
        );
        sandbox
            .sh(&format!(
                "DEBIAN_FRONTEND=noninteractive dpkg -i {SSHD_DEBS}/*.deb"
            ))
            .expect_ok("dpkg -i openssh-server inside the sandbox");
    }
    sandbox
        .systemctl(&["start", "ssh.service"])
        .expect_ok("start ssh.service");
    wait_until(Duration::from_secs(10), "sshd listening on port 22", || {
        sandbox
            .run("ss", &["-Hltn", "sport = :22"])
            .stdout
            .contains(":22")
    });
}

/// A namespace joined to the sandbox's network by a veth pair, holding the
/// attacker's and a bystander's addresses.
fn attacker_namespace(sandbox: &SystemdSandbox) -> NetNs {
    let outside = NetNs::new();
    let sandbox_pid = sandbox.pid().to_string();
    outside
        .run(
            "ip",
            &[
                "link",
                "add",
                "veth-out",
                "type",
                "veth",
                "peer",
                "name",
                "veth-in",
                "netns",
                &sandbox_pid,
            ],
        )
        .expect_ok("veth pair into the sandbox");
    for addr in [ATTACKER, BYSTANDER] {
        outside
            .run(
                "ip",
                &["addr", "add", &format!("{addr}/24"), "dev", "veth-out"],
            )
            .expect_ok("attacker address");
    }
    outside
        .run("ip", &["link", "set", "veth-out", "up"])
        .expect_ok("veth-out up");
    sandbox
        .run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{SANDBOX_ADDR}/24"),
                "dev",
                "veth-in",
            ],
        )
        .expect_ok("sandbox address");
    sandbox
        .run("ip", &["link", "set", "veth-in", "up"])
        .expect_ok("veth-in up");
    outside
}

/// One login attempt from `from` as a user the sandbox does not have:
/// sshd logs "Invalid user ... from <from>".
fn failed_login(outside: &NetNs, from: &str) {
    // The outcome does not matter (it always fails); the log line does.
    // A ban landing mid-handshake leaves ssh waiting on a dropped
    // connection: `timeout` ends it.
    let _ = outside.run(
        "timeout",
        &[
            "5",
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=2",
            "-b",
            from,
            &format!("no-such-user@{SANDBOX_ADDR}"),
            "true",
        ],
    );
}

#[test]
fn fail2ban_sshd_conf_on_the_journal_bans_a_real_debian_sshd_attacker() {
    let sandbox = SystemdSandbox::boot();
    let outside = attacker_namespace(&sandbox);
    start_real_sshd(&sandbox);
    assert!(
        outside.connect_from(ATTACKER, SANDBOX_ADDR, 22, Duration::from_secs(3)),
        "the attacker reaches sshd before any ban"
    );
    sandbox.install_and_start_orch(Some(CONFIG));
    sandbox.wait_for_journal_jails();

    let banned = || {
        sandbox
            .set_elements("orch", "ban4")
            .iter()
            .any(|element| element == ATTACKER)
    };
    // Attempts until the ban lands: each is one or more failures, and a
    // journal jail reads within about a second.
    wait_until(Duration::from_secs(30), "the attacker banned", || {
        if !banned() {
            failed_login(&outside, ATTACKER);
        }
        banned()
    });
    let journal = sandbox.journal("ssh.service");
    assert!(
        journal.contains(&format!("Invalid user no-such-user from {ATTACKER}")),
        "sshd itself logged the failures:\n{journal}"
    );
    assert!(
        !outside.connect_from(ATTACKER, SANDBOX_ADDR, 22, Duration::from_secs(2)),
        "the banned attacker still reaches port 22"
    );
    assert!(
        outside.connect_from(BYSTANDER, SANDBOX_ADDR, 22, Duration::from_secs(3)),
        "another address is not banned"
    );
    let list = sandbox.run(ORCH, &["list"]).expect_ok("orch list").stdout;
    assert!(
        list.lines()
            .any(|line| line.starts_with(ATTACKER) && line.contains("sshd")),
        "{list}"
    );
    sandbox.shutdown();
}
