//! orch under a real systemd: `orch install-units`, `systemctl enable --now
//! orch`, bans over the sandbox's system bus, then everything an admin does
//! to nftables.service and the ruleset. After each, every ban is in the
//! kernel; during restart and reload a sampler checks a banned element
//! continuously.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::systemd::{ORCH_IN_SANDBOX as ORCH, SystemdSandbox};
use common::{CmdOutput, wait_until};

const SINGLE_V4: [&str; 2] = ["192.0.2.1", "192.0.2.2"];
const SINGLE_V6: &str = "2001:db8::1";
const PREFIX_V4: &str = "198.51.100.0/24";

/// Boots systemd, starts nftables, installs and starts orch (with an
/// optional /etc/orch/orch.toml), and bans the test addresses.
fn sandbox_with_orch(config: Option<&str>) -> SystemdSandbox {
    let sandbox = SystemdSandbox::boot();
    sandbox.install_and_start_orch(config);
    let banned = sandbox.busctl(&[
        "call",
        "org.orch.Orch1",
        "/org/orch/Orch1",
        "org.orch.Orch1",
        "BanMany",
        "asts",
        "4",
        SINGLE_V4[0],
        SINGLE_V4[1],
        SINGLE_V6,
        PREFIX_V4,
        "3600",
        "systemd test",
    ]);
    assert_eq!(banned.expect_ok("BanMany").stdout.trim(), "u 4");
    assert_all_bans(&sandbox, "after banning");
    sandbox
}

fn missing_bans(sandbox: &SystemdSandbox) -> Vec<String> {
    let ban4 = sandbox.set_elements("orch", "ban4");
    let ban6 = sandbox.set_elements("orch", "ban6");
    let bannet4 = sandbox.set_elements("orch", "bannet4");
    let mut missing = Vec::new();
    for (set, wanted) in [
        (&ban4, SINGLE_V4[0]),
        (&ban4, SINGLE_V4[1]),
        (&ban6, SINGLE_V6),
        (&bannet4, PREFIX_V4),
    ] {
        if !set.iter().any(|e| e == wanted) {
            missing.push(wanted.to_string());
        }
    }
    missing
}

fn assert_all_bans(sandbox: &SystemdSandbox, when: &str) {
    let missing = missing_bans(sandbox);
    assert!(
        missing.is_empty(),
        "{when}: missing {missing:?}\n{}",
        sandbox.journal("orch.service")
    );
}

/// What the sampler saw while a command ran.
struct Samples {
    taken: usize,
    /// Samples where nft said the element (or its set or table) is not
    /// there: "No such file or directory".
    missing: usize,
    longest_gap: Duration,
    /// Samples that said neither yes nor no, and what was said (distinct
    /// messages, in order). They are not counted as missing, and do not
    /// end a gap. nft 1.0.6 answers "Could not process rule: Interrupted
    /// system call" when another transaction commits during its request:
    /// in a netns where a table holding the element was replaced 2,000
    /// times in one transaction each, 21 of 4,341 `nft get element` calls
    /// said so, and none said "No such file or directory".
    unknown: usize,
    unknown_said: Vec<String>,
}

/// One look at the kernel: is the element there?
enum Sample {
    Present,
    Absent,
    Unknown(String),
}

/// Asks `nft get element` inside the sandbox's network namespace.
fn sample_element(pid: &str) -> Sample {
    let output = Command::new("nsenter")
        .args([
            "-t", pid, "-n", "--", "nft", "get", "element", "inet", "orch", "ban4",
        ])
        .arg(format!("{{ {} }}", SINGLE_V4[0]))
        .output();
    match output {
        Ok(out) if out.status.success() => Sample::Present,
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("No such file or directory") {
                Sample::Absent
            } else {
                Sample::Unknown(format!("{}: {}", out.status, stderr.trim()))
            }
        }
        Err(e) => Sample::Unknown(format!("cannot run nsenter: {e}")),
    }
}

/// Runs `action` while another thread checks, as fast as it can, that a
/// banned element is in the kernel (`nft get element` inside the sandbox).
fn sample_during(
    sandbox: &SystemdSandbox,
    action: impl FnOnce() -> CmdOutput,
) -> (CmdOutput, Samples) {
    let pid = sandbox.pid().to_string();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = Samples {
                taken: 0,
                missing: 0,
                longest_gap: Duration::ZERO,
                unknown: 0,
                unknown_said: Vec::new(),
            };
            let mut gap_started: Option<Instant> = None;
            while !done.load(Ordering::Relaxed) {
                samples.taken += 1;
                match sample_element(&pid) {
                    Sample::Present => {
                        if let Some(started) = gap_started.take() {
                            samples.longest_gap = samples.longest_gap.max(started.elapsed());
                        }
                    }
                    Sample::Absent => {
                        samples.missing += 1;
                        gap_started.get_or_insert_with(Instant::now);
                    }
                    Sample::Unknown(said) => {
                        samples.unknown += 1;
                        if !samples.unknown_said.contains(&said) {
                            samples.unknown_said.push(said);
                        }
                    }
                }
            }
            if let Some(started) = gap_started {
                samples.longest_gap = samples.longest_gap.max(started.elapsed());
            }
            samples
        });
        // Let the sampler get going before the action.
        std::thread::sleep(Duration::from_millis(50));
        let output = action();
        std::thread::sleep(Duration::from_millis(50));
        done.store(true, Ordering::Relaxed);
        let samples = sampler.join().expect("sampler thread");
        (output, samples)
    })
}

fn orch_main_pid(sandbox: &SystemdSandbox) -> String {
    let shown = sandbox.systemctl(&["show", "orch.service", "-p", "MainPID", "--value"]);
    shown.expect_ok("show MainPID").stdout.trim().to_string()
}

#[test]
fn owned_table_keeps_every_ban_through_everything_done_to_nftables() {
    let sandbox = sandbox_with_orch(None);
    let status = sandbox.run(ORCH, &["status"]).expect_ok("orch status");
    assert!(
        status.stdout.contains("owned by the daemon"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("nftables.service: active"),
        "{}",
        status.stdout
    );

    for action in ["restart", "reload"] {
        let (output, samples) = sample_during(&sandbox, || {
            sandbox.systemctl(&[action, "nftables.service"])
        });
        output.expect_ok(action);
        assert_all_bans(&sandbox, &format!("after systemctl {action} nftables"));
        eprintln!(
            "owned, systemctl {action} nftables: {} samples, {} missing, longest gap {:?}; {} unknown: {:?}",
            samples.taken,
            samples.missing,
            samples.longest_gap,
            samples.unknown,
            samples.unknown_said
        );
        assert!(
            samples.taken - samples.unknown >= 3,
            "the sampler barely saw anything ({} samples, {} unknown: {:?})",
            samples.taken,
            samples.unknown,
            samples.unknown_said
        );
        assert_eq!(
            samples.missing,
            0,
            "a ban was missing during {action}\n{}",
            sandbox.journal("orch.service")
        );
    }

    sandbox
        .systemctl(&["stop", "nftables.service"])
        .expect_ok("stop");
    assert_all_bans(&sandbox, "after systemctl stop nftables");
    sandbox
        .systemctl(&["start", "nftables.service"])
        .expect_ok("start");
    assert_all_bans(&sandbox, "after systemctl start nftables");

    sandbox
        .nft(&["flush", "ruleset"])
        .expect_ok("nft flush ruleset");
    assert_all_bans(&sandbox, "after nft flush ruleset");
    sandbox.write_file("/etc/test-ruleset.nft", "flush ruleset\ntable inet filter {\n  chain input { type filter hook input priority 0; }\n}\n", 0o644);
    sandbox
        .nft(&["-f", "/etc/test-ruleset.nft"])
        .expect_ok("nft -f");
    assert_all_bans(&sandbox, "after nft -f of a file that flushes the ruleset");

    let old_pid = orch_main_pid(&sandbox);
    sandbox
        .systemctl(&["kill", "-s", "KILL", "orch.service"])
        .expect_ok("kill orch");
    wait_until(
        Duration::from_secs(15),
        "systemd to restart orch with every ban back",
        || {
            let pid = orch_main_pid(&sandbox);
            pid != old_pid
                && pid != "0"
                && sandbox
                    .systemctl(&["is-active", "orch.service"])
                    .stdout
                    .trim()
                    == "active"
                && missing_bans(&sandbox).is_empty()
        },
    );

    let status_text = sandbox.systemctl(&["show", "orch.service", "-p", "StatusText", "--value"]);
    let status_text = status_text.expect_ok("StatusText").stdout;
    assert!(
        status_text.contains("4 bans, table owned"),
        "StatusText: {status_text}"
    );
}

#[test]
fn unowned_table_is_back_when_each_systemctl_command_returns() {
    let sandbox = sandbox_with_orch(Some("[firewall]\nowner = \"off\"\n"));
    for action in ["restart", "reload"] {
        let (output, samples) = sample_during(&sandbox, || {
            sandbox.systemctl(&[action, "nftables.service"])
        });
        output.expect_ok(action);
        assert_all_bans(
            &sandbox,
            &format!("after systemctl {action} nftables (unowned)"),
        );
        eprintln!(
            "unowned, systemctl {action} nftables: {} samples, {} missing, longest gap {:?}; {} unknown: {:?}",
            samples.taken,
            samples.missing,
            samples.longest_gap,
            samples.unknown,
            samples.unknown_said
        );
    }
    sandbox
        .systemctl(&["stop", "nftables.service"])
        .expect_ok("stop");
    sandbox
        .systemctl(&["start", "nftables.service"])
        .expect_ok("start");
    assert_all_bans(&sandbox, "after stop and start (unowned)");
    sandbox
        .nft(&["flush", "ruleset"])
        .expect_ok("nft flush ruleset");
    wait_until(
        Duration::from_secs(5),
        "bans back after a flush (unowned)",
        || missing_bans(&sandbox).is_empty(),
    );
}

#[test]
fn install_units_is_idempotent_hardened_and_uninstall_leaves_nothing() {
    let sandbox = sandbox_with_orch(None);
    let again = sandbox
        .run(ORCH, &["install-units"])
        .expect_ok("install-units again");
    assert!(
        !again.stdout.contains("wrote"),
        "second install wrote something:\n{}",
        again.stdout
    );
    assert!(
        again
            .stdout
            .contains("unchanged /etc/systemd/system/orch.service"),
        "{}",
        again.stdout
    );

    let security = sandbox.run("systemd-analyze", &["security", "orch.service"]);
    let line = security
        .stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_string();
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or(f64::MAX);
    eprintln!("systemd-analyze security orch.service: {line}");
    assert!(score <= 2.0, "hardening score {score}: {}", security.stdout);

    sandbox
        .systemctl(&["disable", "--now", "orch.service"])
        .expect_ok("disable --now orch");
    sandbox
        .run(ORCH, &["uninstall-units"])
        .expect_ok("uninstall-units");
    for path in [
        "/etc/systemd/system/orch.service",
        "/etc/systemd/system/nftables.service.d/orch.conf",
        "/etc/dbus-1/system.d/org.orch.Orch1.conf",
        "/usr/share/polkit-1/actions/org.orch.Orch1.policy",
        "/etc/polkit-1/rules.d/50-orch.rules",
        "/var/lib/orch/installed-units",
    ] {
        assert_eq!(sandbox.read_file(path), None, "{path} left behind");
    }
    let leftover = sandbox.sh("ls -d /etc/systemd/system/nftables.service.d 2>/dev/null || true");
    assert_eq!(leftover.stdout.trim(), "", "empty drop-in dir left behind");
    sandbox
        .systemctl(&["restart", "nftables.service"])
        .expect_ok("nftables without orch's drop-in");
}

#[test]
fn the_watchdog_is_fed_and_sighup_reloads_under_systemd() {
    let sandbox = sandbox_with_orch(None);
    sandbox.write_file(
        "/etc/systemd/system/orch.service.d/watchdog.conf",
        "[Service]\nWatchdogSec=1s\n",
        0o644,
    );
    sandbox
        .systemctl(&["daemon-reload"])
        .expect_ok("daemon-reload");
    sandbox
        .systemctl(&["restart", "orch.service"])
        .expect_ok("restart orch");
    let pid = orch_main_pid(&sandbox);
    // Three watchdog periods: without WATCHDOG=1 pings systemd would have
    // killed and restarted it (new MainPID, NRestarts > 0).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        orch_main_pid(&sandbox),
        pid,
        "{}",
        sandbox.journal("orch.service")
    );
    let restarts = sandbox.systemctl(&["show", "orch.service", "-p", "NRestarts", "--value"]);
    assert_eq!(restarts.expect_ok("NRestarts").stdout.trim(), "0");
    assert_all_bans(&sandbox, "after a restart of orch");

    sandbox.write_file(
        "/etc/orch/orch.toml",
        "allow = [\"203.0.113.0/24\"]\n",
        0o644,
    );
    sandbox
        .systemctl(&["reload", "orch.service"])
        .expect_ok("systemctl reload orch");
    wait_until(
        Duration::from_secs(5),
        "the reloaded allowlist in the kernel",
        || {
            sandbox
                .set_elements("orch", "allow4")
                .iter()
                .any(|e| e == "203.0.113.0/24")
        },
    );
    assert_eq!(orch_main_pid(&sandbox), pid, "a reload keeps the process");
}

/// A hook that puts an accept rule into the admin's `inet filter input`
/// (once) and counts its runs in orch's state directory, the one place the
/// hardened unit lets it write.
const MARK_HOOK: &str = "#!/bin/sh
set -eu
echo \"$ORCH_EVENT $ORCH_UNIT $ORCH_TABLE\" >> /var/lib/orch/hook-runs
nft list table inet filter >/dev/null 2>&1 || exit 0
nft list chain inet filter input | grep -q orch-hook-test ||
    nft insert rule inet filter input ip saddr 203.0.113.99 accept comment orch-hook-test
";

fn hook_rule_present(sandbox: &SystemdSandbox) -> bool {
    let chain = sandbox.nft(&["list", "chain", "inet", "filter", "input"]);
    chain.ok() && chain.stdout.contains("orch-hook-test")
}

fn hook_runs(sandbox: &SystemdSandbox) -> Vec<String> {
    sandbox
        .read_file("/var/lib/orch/hook-runs")
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn hooks_rules_are_back_when_reload_and_restart_return() {
    let sandbox = sandbox_with_orch(Some("[hooks]\ntimeout = \"1s\"\n"));
    sandbox.write_file("/etc/orch/hooks.d/10-mark", MARK_HOOK, 0o755);
    sandbox.write_file(
        "/etc/orch/hooks.d/05-hang",
        "#!/bin/sh\nsleep 1000\n",
        0o755,
    );
    sandbox.write_file("/etc/orch/hooks.d/README.disabled", "not a hook\n", 0o755);

    for action in ["reload", "restart"] {
        sandbox
            .systemctl(&[action, "nftables.service"])
            .expect_ok(action);
        assert!(
            hook_rule_present(&sandbox),
            "hook rule missing right after systemctl {action} nftables\n{}",
            sandbox.journal("orch.service")
        );
        assert_all_bans(&sandbox, &format!("after {action} with hooks"));
    }
    let runs = hook_runs(&sandbox);
    assert!(
        runs.iter().any(|r| r == "reload nftables.service orch"),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(|r| r == "start nftables.service orch"),
        "{runs:?}"
    );

    // The hanging hook was killed at its timeout and the next one still ran.
    let status = sandbox.run(ORCH, &["status"]).expect_ok("orch status");
    assert!(
        status.stdout.contains("hook 05-hang: FAILED"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("hook 10-mark: ok"),
        "{}",
        status.stdout
    );
    let manual = sandbox.run(ORCH, &["sync", "--hooks"]);
    assert_eq!(manual.status, 1, "a failed hook fails `orch sync --hooks`");
    assert!(manual.stderr.contains("05-hang"), "{}", manual.stderr);
    // Every run kills the hanging hook's process group at its timeout (a
    // run triggered by the reload above may still be going), so soon no
    // `sleep 1000` is left; a leak would leave one per run.
    wait_until(
        Duration::from_secs(5),
        "no hanging hook left running",
        || {
            sandbox
                .sh("pgrep -f 'sleep [1]000' || true")
                .stdout
                .trim()
                .is_empty()
        },
    );
}

#[test]
fn a_burst_of_reloads_runs_the_hooks_a_bounded_number_of_times() {
    let sandbox = sandbox_with_orch(None);
    sandbox.write_file("/etc/orch/hooks.d/10-mark", MARK_HOOK, 0o755);
    sandbox
        .run(ORCH, &["sync", "--hooks"])
        .expect_ok("first hook run");
    let before = hook_runs(&sandbox).len();

    // One shell inside the sandbox sends the ten requests back to back: run
    // one nsenter each, on a loaded machine they were far enough apart that
    // systemd ran them as nine jobs (a CI run saw 9 hook runs).
    sandbox
        .sh("for i in 1 2 3 4 5 6 7 8 9 10; do systemctl reload --no-block nftables.service || exit 1; done")
        .expect_ok("10 x reload --no-block");
    wait_until(Duration::from_secs(10), "the reload jobs to finish", || {
        sandbox
            .systemctl(&["list-jobs"])
            .stdout
            .contains("No jobs running")
    });
    // Let the last debounced events reach the hooks before counting.
    let mut burst_runs = 0;
    wait_until(Duration::from_secs(3), "hook runs to settle", || {
        let now = hook_runs(&sandbox).len() - before;
        let settled = now == burst_runs && now > 0;
        burst_runs = now;
        std::thread::sleep(Duration::from_millis(300));
        settled
    });
    eprintln!(
        "10 x systemctl reload --no-block nftables: hooks ran {burst_runs} times: {:?}",
        &hook_runs(&sandbox)[before..]
    );
    // systemd merges the ten requests into a few reload jobs (three here,
    // giving 3-4 runs); each flushed the ruleset, so each needs a run, plus
    // at most one for a flush seen between two jobs. The bound leaves room
    // for systemd splitting the burst into more jobs, and still fails if
    // every reload or every event ran the hooks (10 or more).
    assert!(
        (1..=6).contains(&burst_runs),
        "hooks ran {burst_runs} times"
    );
    assert!(hook_rule_present(&sandbox));

    let before = hook_runs(&sandbox).len();
    for _ in 0..10 {
        sandbox
            .systemctl(&["reload", "nftables.service"])
            .expect_ok("reload");
        assert!(
            hook_rule_present(&sandbox),
            "hook rule back when reload returns"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let sequential_runs = hook_runs(&sandbox).len() - before;
    eprintln!(
        "10 x systemctl reload nftables, one after another: hooks ran {sequential_runs} times"
    );
    assert!(
        sequential_runs <= 20,
        "hooks ran {sequential_runs} times for 10 reloads"
    );
}

/// A config typo never drops protection under systemd: with bans in place,
/// an invalid `allow` entry in orch.toml and `systemctl restart orch`
/// leave the unit active, every ban in the kernel, `orch status` naming
/// the error, and the error in the journal at priority err.
#[test]
fn a_broken_config_and_a_restart_keep_the_unit_active_and_every_ban() {
    let sandbox = sandbox_with_orch(Some("allow = [\"192.0.2.250\"]\n"));
    let config = sandbox
        .read_file("/etc/orch/orch.toml")
        .expect("orch.toml installed");
    sandbox.write_file(
        "/etc/orch/orch.toml",
        &config.replace("192.0.2.250", "192.0.2.300"),
        0o644,
    );
    sandbox
        .systemctl(&["restart", "orch.service"])
        .expect_ok("restart with a broken config");
    let active = sandbox.systemctl(&["is-active", "orch.service"]);
    assert_eq!(
        active.stdout.trim(),
        "active",
        "{}",
        sandbox.journal("orch.service")
    );
    assert_all_bans(&sandbox, "after a restart on a broken config");
    let status = sandbox.run(ORCH, &["status"]).expect_ok("orch status");
    assert!(
        status.stdout.contains("config:     INVALID;") && status.stdout.contains("192.0.2.300"),
        "{}",
        status.stdout
    );
    let errors = sandbox.sh("journalctl -u orch.service -p err --no-pager -o cat");
    assert!(
        errors.stdout.contains("the configuration is invalid"),
        "journal at priority err:\n{}",
        errors.stdout
    );
}
