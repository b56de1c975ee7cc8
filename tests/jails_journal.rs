//! A journal jail under a real systemd and journald: orch installed with
//! `orch install-units` (so under its hardened unit) follows the journal
//! of `ssh.service`, bans after maxretry failures, ignores the same text
//! forged from outside that unit, resumes at its saved cursor after a
//! restart, keeps following across a journal rotation, gives each of
//! several journal jails its own entries, and cuts an overlong message.
//! With no jails configured, the default sshd jail runs only where an
//! ssh.service unit file is installed, and `orch status` says why.
//!
//! The lines come from transient units (`systemd-run`); on a host with
//! openssh-server, its `ssh.service` is removed from the sandbox's overlay
//! first, so the name is free.

mod common;

use std::time::Duration;

use common::systemd::{ORCH_IN_SANDBOX as ORCH, SystemdSandbox};
use common::wait_until;

const CONFIG: &str = r#"
[jails.sshd]
# No matches: the built-in sshd filter's journalmatch (ssh.service, sshd.service).
journal = {}
maxretry = 3
findtime = "10m"
bantime = "1h"
"#;

/// A sandbox running orch on `config`, once its jail follows the journal.
fn boot_with_orch(config: &str) -> SystemdSandbox {
    let sandbox = boot_without_sshd();
    sandbox.install_and_start_orch(Some(config));
    sandbox.wait_for_journal_jails();
    sandbox
}

/// A sandbox where the host's sshd units (if any) are gone, so the names
/// are free for the test's own units; only the sandbox's overlay changes.
/// On a host with openssh-server the sandbox's systemd started sshd at
/// boot (ssh.service is enabled), and a unit that runs, or that a
/// `.wants` link names, stays loaded without its file: so stop it first,
/// and remove the links too; and Debian's /etc/init.d/ssh would have the
/// SysV generator make a ssh.service again.
fn boot_without_sshd() -> SystemdSandbox {
    let sandbox = SystemdSandbox::boot();
    sandbox
        .sh("systemctl stop ssh.socket ssh.service sshd.service 2>/dev/null; \
             find /etc/systemd /lib/systemd/system /usr/lib/systemd/system \
               \\( -name ssh.service -o -name sshd.service -o -name 'ssh@.service' -o -name ssh.socket \\) \
               -exec rm -f {} + ; \
             rm -f /etc/init.d/ssh; \
             systemctl daemon-reload && systemctl reset-failed")
        .expect_ok("free the name ssh.service");
    let loaded = sandbox.sh("systemctl show -p LoadState --value ssh.service");
    assert_eq!(
        loaded.stdout.trim(),
        "not-found",
        "ssh.service still loaded in the sandbox: {}",
        sandbox
            .sh("systemctl show -p FragmentPath -p DropInPaths -p ActiveState -p Names ssh.service; ls -la /lib/systemd/system/ssh* /usr/lib/systemd/system/ssh* /etc/systemd/system/ssh* 2>&1")
            .stdout
    );
    sandbox
}

/// Logs `messages` from a transient `ssh.service`, as sshd-session would.
fn log_from_ssh_service(sandbox: &SystemdSandbox, messages: &[String]) {
    log_from_unit(sandbox, "ssh.service", messages);
}

/// Logs `messages` from a transient service `unit`, under sshd-session's
/// name.
fn log_from_unit(sandbox: &SystemdSandbox, unit: &str, messages: &[String]) {
    let script = messages
        .iter()
        .map(|m| format!("echo '{m}'"))
        .collect::<Vec<_>>()
        .join("; ");
    sandbox
        .run(
            "systemd-run",
            &[
                &format!("--unit={unit}"),
                "--wait",
                "--quiet",
                "-p",
                "SyslogIdentifier=sshd-session",
                "/bin/sh",
                "-c",
                &script,
            ],
        )
        .expect_ok(&format!("systemd-run {unit}"));
}

fn failures(addr: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            format!(
                "Failed password for invalid user admin from {addr} port {} ssh2",
                40000 + i
            )
        })
        .collect()
}

fn banned(sandbox: &SystemdSandbox, addr: &str) -> bool {
    sandbox
        .set_elements("orch", "ban4")
        .iter()
        .any(|e| e == addr)
}

#[test]
fn journal_jail_bans_from_the_unit_only_and_resumes_after_restart() {
    let sandbox = boot_with_orch(CONFIG);
    // The same text forged by anyone else (here systemd-cat with sshd's
    // name) is not from ssh.service, so it never counts.
    for _ in 0..3 {
        sandbox
            .run(
                "systemd-cat",
                &["-t", "sshd", "echo", &failures("192.0.2.66", 1)[0]],
            )
            .expect_ok("systemd-cat");
    }
    log_from_ssh_service(&sandbox, &failures("192.0.2.77", 3));
    wait_until(Duration::from_secs(10), "192.0.2.77 banned", || {
        banned(&sandbox, "192.0.2.77")
    });
    assert!(
        !banned(&sandbox, "192.0.2.66"),
        "a forged line banned\n{}",
        sandbox.journal("orch.service")
    );
    let list = sandbox.run(ORCH, &["list"]).expect_ok("list").stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("192.0.2.77") && l.contains("sshd")),
        "{list}"
    );

    // Entries written while orch is stopped are read after it starts again,
    // from the saved cursor (not from the end of the journal).
    sandbox
        .systemctl(&["stop", "orch.service"])
        .expect_ok("stop orch");
    log_from_ssh_service(&sandbox, &failures("192.0.2.88", 3));
    sandbox
        .systemctl(&["start", "orch.service"])
        .expect_ok("start orch");
    wait_until(Duration::from_secs(10), "192.0.2.88 banned", || {
        banned(&sandbox, "192.0.2.88")
    });
    let status = sandbox.run(ORCH, &["status"]).expect_ok("status").stdout;
    assert!(
        status.contains("jail sshd:") && status.contains("failures in 3 lines"),
        "after the restart exactly the 3 new entries are read:\n{status}"
    );
    // The jail's health: caught up with the journal (lag 0, nothing
    // unread in files, since it reads none), and no lag warning.
    wait_until(Duration::from_secs(10), "the journal jail's health", || {
        let status = sandbox.run(ORCH, &["status"]).stdout;
        status.lines().any(|l| {
            l.starts_with("  health: ")
                && l.contains(" lines/s, lag 0.0 s, 0 match-limit hits")
                && !l.contains("LAGGING")
        })
    });
    assert!(
        !sandbox.journal("orch.service").contains("behind its log"),
        "{}",
        sandbox.journal("orch.service")
    );
    sandbox.shutdown();
}

/// A jail matching on `_COMM=sshd` alone (as fail2ban's sshd.conf does in
/// its second group) trusts only root's entries: any process can call
/// itself sshd, so five lines from `nobody` under that name ban nothing,
/// while the same lines from root do.
#[test]
fn a_forgeable_comm_match_reads_only_roots_entries() {
    let sandbox = boot_with_orch(
        "[jails.sshd]\njournal = { matches = [\"_COMM=sshd\"] }\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n",
    );
    // A program named sshd, as any user can make one. It reads the lines
    // on stdin and stays alive a second after the last: journald reads a
    // sender's _COMM from /proc when it takes the message, and a process
    // already gone by then (one logger per line, on a loaded machine) gives
    // an entry without _COMM, which no _COMM match reads.
    sandbox
        .sh("mkdir -p /tmp/fake && cp /usr/bin/logger /tmp/fake/sshd && chmod 755 /tmp/fake /tmp/fake/sshd")
        .expect_ok("fake sshd");
    let lines = |addr: &str| {
        let quoted = failures(addr, 5)
            .iter()
            .map(|line| format!("'{line}'"))
            .collect::<Vec<_>>()
            .join(" ");
        format!("{{ printf '%s\\n' {quoted}; sleep 1; }} | /tmp/fake/sshd")
    };
    sandbox
        .sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c \"{}\"",
            lines("192.0.2.66")
        ))
        .expect_ok("lines from nobody");
    sandbox
        .sh(&lines("192.0.2.77"))
        .expect_ok("lines from root");
    wait_until(Duration::from_secs(10), "root's address banned", || {
        banned(&sandbox, "192.0.2.77")
    });
    assert!(
        !banned(&sandbox, "192.0.2.66"),
        "nobody's forged lines banned\n{}",
        sandbox.journal("orch.service")
    );
    // The forged lines are in the journal under the name sshd, so the jail
    // saw them and passed them over (not: they never matched).
    let forged = sandbox
        .sh("journalctl --sync; journalctl _COMM=sshd _UID=65534 -o cat | grep -c 192.0.2.66");
    assert_eq!(forged.stdout.trim(), "5", "{forged:?}");
}

/// The reader keeps following when journald rotates its files, and each
/// journal jail gets the entries of its own unit only; a message longer
/// than a line may be is cut and counted.
#[test]
fn journal_jails_follow_rotation_and_get_their_own_units_entries() {
    let sandbox = boot_with_orch(
        "[jails.sshd]\njournal = { matches = [\"_SYSTEMD_UNIT=ssh.service\"] }\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n\
         [jails.other]\nfilter = \"sshd\"\njournal = { matches = [\"_SYSTEMD_UNIT=other-ssh.service\"] }\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n",
    );
    sandbox
        .run("journalctl", &["--rotate"])
        .expect_ok("journalctl --rotate");
    log_from_ssh_service(&sandbox, &failures("192.0.2.77", 3));
    log_from_unit(&sandbox, "other-ssh.service", &failures("192.0.2.78", 3));
    wait_until(Duration::from_secs(10), "both addresses banned", || {
        banned(&sandbox, "192.0.2.77") && banned(&sandbox, "192.0.2.78")
    });
    let list = sandbox.run(ORCH, &["list"]).expect_ok("list").stdout;
    let jail_of = |addr: &str| {
        list.lines()
            .find(|l| l.starts_with(addr))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(jail_of("192.0.2.77").contains("sshd"), "{list}");
    assert!(jail_of("192.0.2.78").contains("other"), "{list}");

    // Messages far past 16 KiB are cut and counted; the jail reads on.
    let long: Vec<String> = failures("192.0.2.80", 3)
        .into_iter()
        .map(|line| format!("{line} {}", "x".repeat(20_000)))
        .collect();
    log_from_ssh_service(&sandbox, &long);
    log_from_ssh_service(&sandbox, &failures("192.0.2.79", 3));
    wait_until(Duration::from_secs(10), "192.0.2.79 banned", || {
        banned(&sandbox, "192.0.2.79")
    });
    wait_until(Duration::from_secs(10), "the cut lines in status", || {
        let status = sandbox.run(ORCH, &["status"]).stdout;
        status.contains("lines too long (cut) 3,")
    });
    sandbox.shutdown();
}

/// Protection by default: no jails configured, and an installed
/// ssh.service (a unit file, as openssh-server ships) gets the default sshd
/// jail, which bans after 5 failures; `enabled = false` turns it off; no
/// sshd unit, no jail. `orch status` says which and why each time.
#[test]
fn the_default_sshd_jail_runs_where_sshd_is_installed() {
    let sandbox = boot_without_sshd();
    sandbox.write_file(
        "/etc/systemd/system/ssh.service",
        "[Unit]\nDescription=stand-in for OpenSSH\n[Service]\nType=oneshot\n\
         SyslogIdentifier=sshd-session\nExecStart=/bin/sh /run/ssh-lines.sh\n",
        0o644,
    );
    sandbox
        .systemctl(&["daemon-reload"])
        .expect_ok("daemon-reload");
    sandbox.install_and_start_orch(Some("# no jails\n"));
    sandbox.wait_for_journal_jails();
    let status = sandbox.run(ORCH, &["status"]).expect_ok("status").stdout;
    assert!(
        status.contains(
            "jail sshd runs by default: no jails are configured and ssh.service is installed; \
             set jails.sshd.enabled = false in orch.toml to turn it off"
        ),
        "{status}"
    );
    let script: String = failures("192.0.2.55", 5)
        .iter()
        .map(|line| format!("echo '{line}'\n"))
        .collect();
    sandbox.write_file("/run/ssh-lines.sh", &script, 0o644);
    sandbox
        .systemctl(&["start", "ssh.service"])
        .expect_ok("start the stand-in ssh.service");
    wait_until(Duration::from_secs(10), "192.0.2.55 banned", || {
        banned(&sandbox, "192.0.2.55")
    });

    // Turned off: no jail runs, and status says none.
    sandbox.write_file(
        "/etc/orch/orch.toml",
        "[jails.sshd]\nenabled = false\n",
        0o644,
    );
    sandbox
        .systemctl(&["restart", "orch.service"])
        .expect_ok("restart orch");
    let status = sandbox.run(ORCH, &["status"]).expect_ok("status").stdout;
    assert!(
        status.contains("jails:      none configured") && !status.contains("jail sshd"),
        "{status}"
    );

    // No sshd unit on the host: the default jail does not run, and says so.
    sandbox.write_file("/etc/orch/orch.toml", "# no jails\n", 0o644);
    sandbox
        .sh("rm /etc/systemd/system/ssh.service && systemctl daemon-reload && systemctl restart orch.service")
        .expect_ok("remove ssh.service, restart orch");
    let status = sandbox.run(ORCH, &["status"]).expect_ok("status").stdout;
    assert!(
        status.contains(
            "jail sshd (the default when no jails are configured) does not run: \
             none of ssh.service, sshd.service is installed"
        ),
        "{status}"
    );
    assert!(!status.contains("following the journal"), "{status}");
}
