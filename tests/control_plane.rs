//! The control plane against an unprivileged local user: a real orch daemon
//! on a private dbus-daemon whose policy lets anyone send anything, so
//! every refusal seen here is orch's own (the shipped policy's deny rules
//! are tested in tests/systemd_integration.rs).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, NetNs, TestBus, nobody_command, run_command, wait_until};

fn big_call(bus: &TestBus, as_nobody: bool, mode: &str, size: usize) -> serde_json::Value {
    bus.big_call(as_nobody, mode, size)
}

fn big_call_as_nobody(bus: &TestBus, mode: &str, size: usize) -> serde_json::Value {
    bus.big_call(true, mode, size)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn a_7_mib_sync_event_from_nobody_gets_a_short_access_denied_and_orch_stays_on_the_bus() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "");

    let reply = big_call_as_nobody(&bus, "sync-event", 7 * 1024 * 1024);
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(
        reply["error_name"], "org.orch.Orch1.Error.AccessDenied",
        "{reply}"
    );
    let message_bytes = reply["message_bytes"].as_u64().expect("message_bytes");
    assert!(message_bytes < 300, "a short message: {reply}");
    assert!(
        reply["message_head"]
            .as_str()
            .is_some_and(|m| m.contains("org.orch.Orch1.manage")),
        "the refusal names the action: {reply}"
    );

    assert!(daemon.name_has_owner(), "orch keeps its bus name");
    daemon
        .cli(&["ban", "192.0.2.77", "--for", "1h"])
        .expect_ok("root's ban after the flood");
    assert!(
        netns
            .set_elements("orch", "ban4")
            .iter()
            .any(|e| e == "192.0.2.77")
    );
}

#[test]
fn a_huge_argument_from_root_is_quoted_short_in_the_error() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let _daemon = Daemon::start(&netns, &bus, "");
    let long_unit = format!("{}.service", "u".repeat(100_000));
    let out = bus.call_orch("SyncEvent", "ss", &["reload", &long_unit]);
    assert!(!out.ok(), "a 100 kB unit name is refused");
    assert!(out.stderr.contains("not a systemd unit name"), "{out}");
    assert!(out.stderr.len() < 1000, "the error quotes it short: {out}");
    let long_address = "1".repeat(100_000);
    let out = bus.call_orch("Ban", "sts", &[&long_address, "60", ""]);
    assert!(
        out.stderr.contains("InvalidAddress") || out.stderr.contains("not an IP"),
        "{out}"
    );
    assert!(out.stderr.len() < 1000, "the error quotes it short: {out}");
}

#[test]
fn four_parallel_30_mib_ban_many_from_nobody_are_refused_before_decoding() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "");
    let before = vm_hwm_kib(daemon.pid());

    // "10.0.0.1" is 8 bytes + length + NUL + padding: 16 bytes per element.
    let count = 30 * 1024 * 1024 / 16;
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let address = bus.address().to_owned();
            std::thread::spawn(move || {
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/big_call.py");
                let out = run_command(
                    nobody_command("/usr/bin/python3")
                        .arg(script)
                        .arg(&address)
                        .arg("ban-many")
                        .arg(count.to_string()),
                );
                out.stdout
            })
        })
        .collect();
    for caller in callers {
        let stdout = caller.join().expect("caller thread");
        let reply: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("big_call.py printed {stdout:?}: {e}"));
        assert_eq!(
            reply["error_name"], "org.orch.Orch1.Error.AccessDenied",
            "{reply}"
        );
        assert!(
            reply["message_head"]
                .as_str()
                .is_some_and(|m| m.contains("org.orch.Orch1.ban")),
            "{reply}"
        );
    }
    let hwm_mib = vm_hwm_kib(daemon.pid()) / 1024;
    eprintln!(
        "daemon VmHWM: {} MiB before, {hwm_mib} MiB after four 30 MiB calls",
        before / 1024
    );
    assert!(hwm_mib < 256, "VmHWM {hwm_mib} MiB");
    assert_eq!(
        daemon
            .cli(&["list", "--json"])
            .expect_ok("list")
            .stdout
            .trim(),
        "[]"
    );
}

#[test]
fn reads_beyond_a_uids_cap_get_busy_and_root_is_never_held_up() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "");
    daemon
        .cli(&["ban", "192.0.2.1", "--for", "1h"])
        .expect_ok("ban");
    // 64 concurrent property reads from nobody, each its own connection.
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let mut cmd = nobody_command("busctl");
            cmd.arg(format!("--address={}", bus.address())).args([
                "get-property",
                "org.orch.Orch1",
                "/org/orch/Orch1",
                "org.orch.Orch1",
                "BanCount",
            ]);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn busctl")
        })
        .collect();
    let root_ban = daemon.cli(&["ban", "192.0.2.2", "--for", "1h"]);
    root_ban.expect_ok("root's ban during the reads");
    let mut answered = 0;
    for reader in readers {
        let out = reader.wait_with_output().expect("busctl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            assert!(stdout.starts_with("u "), "{stdout}");
            answered += 1;
        } else {
            assert!(
                stderr.contains("reads running"),
                "only Busy refusals: {stderr}"
            );
        }
    }
    assert!(answered > 0, "some reads are answered");
    wait_until(Duration::from_secs(5), "BanCount 2", || {
        run_command(Command::new("busctl").args([
            &format!("--address={}", bus.address()),
            "get-property",
            "org.orch.Orch1",
            "/org/orch/Orch1",
            "org.orch.Orch1",
            "BanCount",
        ]))
        .stdout
        .trim()
            == "u 2"
    });
}

#[test]
fn bans_are_listed_a_bounded_page_at_a_time_by_anyone() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "");
    let count = 25_000;
    let banned = big_call(&bus, false, "ban-many-distinct", count);
    assert_eq!(banned["answer"], serde_json::json!([count]), "{banned}");
    daemon
        .cli(&["ban", "198.51.100.0/24", "--reason", "the prefix"])
        .expect_ok("ban a prefix");

    // One reply cannot carry them all: ListBans says so and how to page.
    let whole = bus.call_orch("ListBans", "", &[]);
    assert!(
        whole.stderr.contains("ListBansPage"),
        "ListBans refuses more than a page: {whole}"
    );

    // Paged by nobody: every ban once, no reply over the cap.
    let paged = big_call(&bus, true, "page-all", 0);
    assert_eq!(paged["rows"], count + 1, "{paged}");
    assert_eq!(paged["pages"], 3, "{paged}");
    let largest = paged["largest_reply_bytes"].as_u64().expect("largest");
    assert!(largest <= 8 * 1024 * 1024, "{paged}");

    // orch list prints them all, as root and as nobody.
    for list in [daemon.cli(&["list"]), daemon.cli_as_nobody(&["list"])] {
        let list = list.expect_ok("orch list");
        assert_eq!(
            list.stdout.lines().count(),
            count + 2,
            "a header and every ban"
        );
    }
    let json = daemon.cli(&["list", "--json"]).expect_ok("list --json");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).expect("one JSON array");
    assert_eq!(rows.len(), count + 1);
    assert_eq!(rows[0]["address"], "10.0.0.0");

    // Filters and a limit.
    let limited = daemon.cli(&["list", "--limit", "5"]).expect_ok("--limit");
    assert_eq!(limited.stdout.lines().count(), 6, "{limited}");
    let within = daemon
        .cli(&["list", "--prefix", "10.0.1.0/24", "--json"])
        .expect_ok("--prefix");
    let within: Vec<serde_json::Value> = serde_json::from_str(&within.stdout).expect("JSON");
    assert_eq!(within.len(), 256);
    let manual = daemon
        .cli(&["list", "--source", "manual", "--prefix", "198.51.0.0/16"])
        .expect_ok("--source");
    assert!(manual.stdout.contains("198.51.100.0/24"), "{manual}");
    assert!(manual.stdout.contains("the prefix"), "{manual}");
    let none = daemon.cli(&["list", "--jail", "sshd"]).expect_ok("--jail");
    assert_eq!(none.stdout.trim(), "no active bans match");
    let bad = daemon.cli(&["list", "--prefix", "not-a-prefix"]);
    assert_eq!(bad.status, 1);
    assert!(bad.stderr.contains("within"), "{bad}");
}

#[test]
fn orch_gets_back_on_a_restarted_bus_within_seconds_with_every_ban_kept() {
    let netns = NetNs::new();
    let mut bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "");
    daemon
        .cli(&["ban", "192.0.2.31", "192.0.2.32", "--for", "1h"])
        .expect_ok("ban");
    for round in 1..=2 {
        bus.restart();
        let restarted = std::time::Instant::now();
        wait_until(
            Duration::from_secs(5),
            "orch to serve org.orch.Orch1 again on the restarted bus",
            || daemon.ping(),
        );
        eprintln!(
            "round {round}: serving again after {:?}",
            restarted.elapsed()
        );
        let elements = netns.set_elements("orch", "ban4");
        assert_eq!(elements, ["192.0.2.31", "192.0.2.32"], "round {round}");
    }
    daemon
        .cli(&["ban", "192.0.2.33", "--for", "1h"])
        .expect_ok("a ban after the reconnects");
    assert_eq!(netns.set_elements("orch", "ban4").len(), 3);
    let log = daemon.log();
    assert!(
        log.contains("ERROR") && log.contains("reconnecting"),
        "losing the bus is logged as an error"
    );
}

#[test]
fn orch_exits_non_zero_when_the_bus_stays_gone() {
    let netns = NetNs::new();
    let mut bus = TestBus::start();
    let mut daemon = Daemon::start(&netns, &bus, "");
    bus.kill();
    let mut status = None;
    wait_until(
        Duration::from_secs(45),
        "orch to give up on the bus and exit",
        || {
            status = daemon.try_exit_status();
            status.is_some()
        },
    );
    assert_ne!(status, Some(0), "a non-zero exit, so systemd restarts it");
    assert!(
        daemon
            .log()
            .contains("could not get back on the system bus")
    );
}
