//! Day-2 operations under a real systemd: what an admin sees in
//! `systemctl reload orch` and in the journal.
//!
//! - A refused configuration fails the reload job, the running
//!   configuration keeps working, and `journalctl -p warning` says why.
//! - Bans, unbans and restores carry fixed MESSAGE_IDs and ORCH_* fields.

mod common;

use std::time::Duration;

use common::systemd::{ORCH_IN_SANDBOX as ORCH, SystemdSandbox};
use common::wait_until;

/// MESSAGE_IDs from src/logging.rs, as an admin would copy them from the
/// documentation.
const BAN_ID: &str = "b2c2f0826e6b4251a93ce28d23ead0e9";
const UNBAN_ID: &str = "bfcb35033f4746fda4393e4ffeeb7e3c";
const RESTORED_ID: &str = "8a7e2e2a5de44ffe9e6f9eef3f1d0026";

fn journal(sandbox: &SystemdSandbox, args: &[&str]) -> String {
    sandbox
        .run("journalctl", &["--sync"])
        .expect_ok("journalctl --sync");
    let mut full = vec!["--no-pager", "-b", "-u", "orch.service"];
    full.extend_from_slice(args);
    sandbox
        .run("journalctl", &full)
        .expect_ok("journalctl")
        .stdout
}

#[test]
fn a_refused_reload_fails_the_job_keeps_the_running_config_and_says_why() {
    let sandbox = SystemdSandbox::boot();
    sandbox.install_and_start_orch(Some("allow = [\"203.0.113.0/24\"]\n"));
    // Nothing at priority warning or worse yet (a clean start).
    let before = journal(&sandbox, &["-p", "warning", "-o", "cat"]);
    assert!(
        !before.contains("reload refused"),
        "a clean start logs no refusal: {before}"
    );

    sandbox.write_file(
        "/etc/orch/orch.toml",
        "allow = [\"203.0.113.0/24\"]\n[bans]\ndefault_time = \"soon\"\n",
        0o644,
    );
    let reload = sandbox.systemctl(&["reload", "orch.service"]);
    assert!(
        !reload.ok(),
        "a broken config must fail the reload: {reload}"
    );

    // The daemon still runs on the old configuration: its allowlist is
    // in the kernel, and it still bans.
    assert_eq!(
        sandbox
            .systemctl(&["is-active", "orch.service"])
            .stdout
            .trim(),
        "active"
    );
    assert!(
        sandbox
            .set_elements("orch", "allow4")
            .iter()
            .any(|e| e == "203.0.113.0/24"),
        "the running allowlist stays"
    );
    sandbox
        .run(ORCH, &["ban", "192.0.2.44"])
        .expect_ok("orch still bans");
    let refused = sandbox.run(ORCH, &["ban", "203.0.113.9"]);
    assert_eq!(refused.status, 1, "allowlisted: refused: {refused}");

    // `journalctl -p warning` shows why, with the file and line.
    let warnings = journal(&sandbox, &["-p", "warning", "-o", "cat"]);
    assert!(
        warnings.contains("configuration reload refused")
            && warnings.contains("/etc/orch/orch.toml:3"),
        "journalctl -p warning:\n{warnings}"
    );
    // Routine lines are not warnings.
    assert!(
        !warnings.contains("serving org.orch.Orch1"),
        "info lines must not be at warning priority:\n{warnings}"
    );

    // Fixed, it reloads, and `orch reload` says so.
    sandbox.write_file(
        "/etc/orch/orch.toml",
        "allow = [\"203.0.113.0/24\", \"198.51.100.0/24\"]\n",
        0o644,
    );
    sandbox
        .systemctl(&["reload", "orch.service"])
        .expect_ok("a good config reloads");
    assert!(
        sandbox
            .set_elements("orch", "allow4")
            .iter()
            .any(|e| e == "198.51.100.0/24"),
        "the new allowlist is applied when the reload job ends"
    );
    let direct = sandbox.run(ORCH, &["reload"]).expect_ok("orch reload");
    assert!(direct.stdout.contains("configuration reloaded"), "{direct}");
}

#[test]
fn bans_unbans_and_restores_are_listed_by_their_message_ids() {
    let sandbox = SystemdSandbox::boot();
    // An unowned table, so that a flush can take it away.
    sandbox.install_and_start_orch(Some("[firewall]\nowner = \"off\"\n"));
    sandbox
        .run(ORCH, &["ban", "192.0.2.77", "--reason", "journal test"])
        .expect_ok("ban");
    let bans = journal(
        &sandbox,
        &[
            &format!("MESSAGE_ID={BAN_ID}"),
            "-o",
            "export",
            "--output-fields=MESSAGE,ORCH_ADDRESS,ORCH_SOURCE,ORCH_EVENT,PRIORITY",
        ],
    );
    assert!(bans.contains("ORCH_ADDRESS=192.0.2.77"), "{bans}");
    assert!(bans.contains("ORCH_SOURCE=manual"), "{bans}");
    assert!(bans.contains("ORCH_EVENT=ban"), "{bans}");
    assert!(bans.contains("journal test"), "{bans}");

    sandbox
        .run(ORCH, &["unban", "192.0.2.77"])
        .expect_ok("unban");
    let unbans = journal(
        &sandbox,
        &[
            &format!("MESSAGE_ID={UNBAN_ID}"),
            "ORCH_ADDRESS=192.0.2.77",
            "-o",
            "cat",
        ],
    );
    assert!(unbans.contains("lifted"), "{unbans}");

    // Someone flushes the ruleset: orch puts its table back, and says so.
    sandbox
        .nft(&["flush", "ruleset"])
        .expect_ok("nft flush ruleset");
    wait_until(Duration::from_secs(10), "a restore in the journal", || {
        journal(
            &sandbox,
            &[&format!("MESSAGE_ID={RESTORED_ID}"), "-o", "cat"],
        )
        .contains("restored")
    });
    // Plain text in the journal: no colour codes.
    let all = journal(&sandbox, &["-o", "cat"]);
    assert!(
        !all.contains('\u{1b}'),
        "ANSI escapes in the journal:\n{all}"
    );
}
