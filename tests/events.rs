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
    daemon.sighup();
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
    daemon.sighup();
    wait_until(Duration::from_secs(5), "the refusal in the log", || {
        daemon
            .log()
            .contains("configuration reload refused, keeping the running one")
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

#[test]
fn a_failing_hook_is_signalled_and_sighup_moves_the_hooks_dir() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Mutex};

    let write_hook = |dir: &std::path::Path, name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, body).expect("write hook");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    let broken = tempfile::tempdir().expect("tempdir");
    write_hook(
        broken.path(),
        "10-broken",
        "#!/bin/sh\necho broken >&2\nexit 3\n",
    );
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(
        &netns,
        &bus,
        &format!("[hooks]\ndir = \"{}\"\n", broken.path().display()),
    );

    let mut monitor = std::process::Command::new("dbus-monitor")
        .args([
            "--address",
            bus.address(),
            "type='signal',interface='org.orch.Orch1'",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dbus-monitor");
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = BufReader::new(monitor.stdout.take().expect("stdout"));
    let sink = seen.clone();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if let Ok(mut text) = sink.lock() {
                text.push_str(&line);
                text.push('\n');
            }
        }
    });
    // Each failed run emits HookFailed; repeat until the monitor has caught one.
    wait_until(
        Duration::from_secs(10),
        "a HookFailed signal for 10-broken",
        || {
            let run = daemon.cli(&["sync", "--hooks"]);
            assert_eq!(run.status, 1, "{}", run.stderr);
            assert!(
                run.stderr.contains("10-broken (status 3)"),
                "{}",
                run.stderr
            );
            let text = seen.lock().map(|t| t.clone()).unwrap_or_default();
            text.contains("member=HookFailed")
                && text.contains("\"10-broken\"")
                && text.contains("int32 3")
        },
    );
    let _ = monitor.kill();
    let _ = monitor.wait();
    let status = daemon.cli(&["status"]).expect_ok("status");
    assert!(
        status
            .stdout
            .contains("hook 10-broken: FAILED (status 3) broken"),
        "{}",
        status.stdout
    );

    let fixed = tempfile::tempdir().expect("tempdir");
    write_hook(fixed.path(), "10-fine", "#!/bin/sh\nexit 0\n");
    let config = format!(
        "state_dir = \"{}\"\n[hooks]\ndir = \"{}\"\n",
        daemon.state_dir.display(),
        fixed.path().display()
    );
    std::fs::write(&daemon.config_path, config).expect("rewrite config");
    daemon.sighup();
    wait_until(
        Duration::from_secs(5),
        "hooks from the new dir after SIGHUP",
        || daemon.cli(&["sync", "--hooks"]).ok(),
    );
}

/// A hook inherits only descriptors 0, 1 and 2: above all not the netlink
/// socket that owns orch's table (libnftables opens it without
/// close-on-exec), with which it could edit or delete the table.
#[test]
fn a_hook_inherits_only_the_standard_descriptors() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let listing = dir.path().join("fds.txt");
    let hook = dir.path().join("10-list-fds");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec /bin/ls -l /proc/self/fd > {}\n",
            listing.display()
        ),
    )
    .expect("write hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(
        &netns,
        &bus,
        &format!("[hooks]\ndir = \"{}\"\n", dir.path().display()),
    );
    daemon
        .cli(&["sync", "--hooks"])
        .expect_ok("sync runs the hook");
    let text = std::fs::read_to_string(&listing).expect("the hook wrote its listing");
    // `ls` itself holds one more: the directory it lists.
    let inherited: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("->"))
        .filter(|line| {
            let fd = line
                .split("->")
                .next()
                .and_then(|left| left.split_whitespace().last())
                .unwrap_or("");
            !matches!(fd, "0" | "1" | "2") && !line.contains("/proc/")
        })
        .collect();
    assert!(
        inherited.is_empty(),
        "the hook inherited {inherited:?}\n{text}"
    );
}

/// A hook that others than root could have changed (writable by group or
/// others) is not run: the log and `orch status` say why and how to fix
/// it, `orch check-config` warns, and the other hooks still run.
#[test]
fn a_hook_others_could_write_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let ran = dir.path().join("ran");
    for (name, mode) in [("10-fine", 0o755), ("20-open", 0o777)] {
        let hook = dir.path().join(name);
        std::fs::write(
            &hook,
            format!("#!/bin/sh\necho {name} >> {}\n", ran.display()),
        )
        .expect("write hook");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let config = format!("[hooks]\ndir = \"{}\"\n", dir.path().display());
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, &config);
    let run = daemon.cli(&["sync", "--hooks"]);
    assert_eq!(run.status, 1, "an unrun hook is reported: {run}");
    assert!(run.stderr.contains("20-open"), "{run}");
    // Hooks also ran at start: every run ran 10-fine, none 20-open.
    let ran_hooks = std::fs::read_to_string(&ran).unwrap_or_default();
    assert!(
        ran_hooks.contains("10-fine") && !ran_hooks.contains("20-open"),
        "{ran_hooks:?}"
    );
    let status = daemon.cli(&["status"]).expect_ok("status");
    assert!(
        status.stdout.contains("hook 20-open: NOT RUN:")
            && status
                .stdout
                .contains("is writable by group or others (mode 0777; fix: chmod go-w"),
        "{}",
        status.stdout
    );
    let config_file = dir.path().join("orch.toml");
    std::fs::write(&config_file, &config).expect("write config");
    let checked = common::run_orch(&[
        "check-config",
        "--config",
        &config_file.display().to_string(),
    ]);
    assert!(
        checked.status == 0
            && checked
                .stdout
                .contains("warning: hook 20-open will not run"),
        "{checked}"
    );
}

/// A config typo never drops protection: with a ban in place, an invalid
/// `allow` entry and a restart leave the daemon running on the last good
/// configuration, the ban in the kernel, and `orch status` naming the
/// error; a fixed file and a reload clear it.
#[test]
fn an_invalid_config_at_start_runs_on_the_last_good_one() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let mut daemon = Daemon::start(&netns, &bus, "allow = [\"192.0.2.1\"]\n");
    daemon
        .cli(&["ban", "203.0.113.77", "--for", "1h"])
        .expect_ok("ban");
    let good = std::fs::read_to_string(&daemon.config_path).expect("read config");
    std::fs::write(
        &daemon.config_path,
        good.replace("192.0.2.1", "192.0.2.300"),
    )
    .expect("break the config");
    daemon.restart(&netns, &bus);
    assert!(
        has(&netns.set_elements("orch", "ban4"), "203.0.113.77"),
        "the stored ban is applied"
    );
    assert!(
        has(&netns.set_elements("orch", "allow4"), "192.0.2.1"),
        "the last good allowlist is in force"
    );
    let status = daemon.cli(&["status"]).expect_ok("status");
    assert!(
        status.stdout.contains("config:     INVALID;")
            && status.stdout.contains("192.0.2.300")
            && status
                .stdout
                .contains("running on the last good configuration"),
        "{}",
        status.stdout
    );
    assert!(
        daemon
            .log()
            .contains("<3>orch: the configuration is invalid"),
        "the error goes to the journal at error priority"
    );
    std::fs::write(&daemon.config_path, &good).expect("fix the config");
    daemon.sighup();
    wait_until(Duration::from_secs(5), "the error to clear", || {
        !daemon.cli(&["status"]).stdout.contains("INVALID")
    });
}
