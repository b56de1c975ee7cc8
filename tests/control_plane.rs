//! The control plane against an unprivileged local user: a real orch daemon
//! on a private dbus-daemon whose policy lets anyone send anything, so
//! every refusal seen here is orch's own (the shipped policy's deny rules
//! are tested in tests/systemd_integration.rs).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, NetNs, TestBus, nobody_command, run_command, wait_until};

/// Runs tests/fixtures/big_call.py as uid 65534 and returns its JSON line.
fn big_call_as_nobody(bus: &TestBus, mode: &str, size: usize) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/big_call.py");
    let out = run_command(
        nobody_command("/usr/bin/python3")
            .arg(script)
            .arg(bus.address())
            .arg(mode)
            .arg(size.to_string()),
    )
    .expect_ok("big_call.py");
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("big_call.py printed {:?}: {e}", out.stdout))
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
