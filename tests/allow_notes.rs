//! End-to-end tests of runtime allowlist entries with a comment and an
//! end (`orch allow CIDR --for 2h --comment TEXT`, D-Bus `AllowWith`): a
//! real daemon in its own network namespace, the real kernel's allow set.

mod common;

use std::time::Duration;

use common::{Daemon, NetNs, TestBus, wait_until};
use serde_json::Value;

/// The runtime rows of `orch allow list --json`, by entry.
fn runtime_allows(daemon: &Daemon) -> Vec<Value> {
    let out = daemon
        .cli(&["allow", "list", "--json"])
        .expect_ok("allow list --json");
    let rows: Value = serde_json::from_str(&out.stdout).expect("JSON");
    rows.as_array()
        .expect("an array")
        .iter()
        .filter(|row| row["kind"] == "runtime")
        .cloned()
        .collect()
}

fn row<'a>(rows: &'a [Value], entry: &str) -> Option<&'a Value> {
    rows.iter().find(|row| row["entry"] == entry)
}

fn in_kernel(netns: &NetNs, element: &str) -> bool {
    netns
        .set_elements("orch", "allow4")
        .iter()
        .any(|e| e == element)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn an_entry_lists_its_comment_refuses_bans_ends_on_time_and_survives_a_restart() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let mut daemon = Daemon::start(&netns, &bus, "");

    let before = now();
    daemon
        .cli(&[
            "allow",
            "198.51.100.0/24",
            "--for",
            "1h",
            "--comment",
            "vendor VPN",
        ])
        .expect_ok("allow for 1h");
    daemon
        .cli(&["allow", "203.0.113.7", "--for", "2s", "--comment", "short"])
        .expect_ok("allow for 2s");
    daemon
        .cli(&["allow", "192.0.2.50"])
        .expect_ok("plain allow still works");
    let rows = runtime_allows(&daemon);
    let vpn = row(&rows, "198.51.100.0/24").expect("listed");
    assert_eq!(vpn["comment"], "vendor VPN");
    let vpn_expires = vpn["expires_at"].as_u64().expect("expires_at");
    assert!(
        (before + 3600..=now() + 3600).contains(&vpn_expires),
        "{vpn}"
    );
    let plain = row(&rows, "192.0.2.50/32").expect("listed");
    assert_eq!(
        (&plain["comment"], &plain["expires_at"]),
        (&Value::from(""), &Value::from(0))
    );
    let text = daemon
        .cli(&["allow", "list"])
        .expect_ok("allow list")
        .stdout;
    assert!(
        text.lines()
            .any(|l| l.starts_with("198.51.100.0/24") && l.contains("vendor VPN")),
        "{text}"
    );
    assert!(in_kernel(&netns, "198.51.100.0/24") && in_kernel(&netns, "203.0.113.7"));
    // The kernel ends them too: element timeouts, none for a plain entry.
    let timeouts = netns.set_elements_with_expiry("orch", "allow4");
    let left = |element: &str| timeouts.iter().find(|(e, _)| e == element).map(|(_, t)| *t);
    let vpn_left = left("198.51.100.0/24").flatten().expect("a timeout");
    assert!((3590..=3600).contains(&vpn_left), "{timeouts:?}");
    assert_eq!(left("192.0.2.50"), Some(None), "{timeouts:?}");

    let refused = daemon.cli(&["ban", "198.51.100.9"]);
    assert!(!refused.ok(), "{refused}");
    assert!(
        refused.stderr.contains("Allowlisted") || refused.stderr.contains("allowlist"),
        "{refused}"
    );
    let bad = daemon.cli(&["allow", "192.0.2.9", "--comment", "two\nlines"]);
    assert!(
        !bad.ok() && bad.stderr.contains("control character"),
        "{bad}"
    );
    let long = "x".repeat(300);
    let bad = daemon.cli(&["allow", "192.0.2.9", "--comment", &long]);
    assert!(!bad.ok() && bad.stderr.contains("at most 256"), "{bad}");
    let nobody = daemon.cli_as_nobody(&["allow", "192.0.2.9", "--for", "1h", "--comment", "x"]);
    assert!(
        !nobody.ok() && nobody.stderr.contains("org.orch.Orch1.allow"),
        "AllowWith needs the allow action: {nobody}"
    );
    assert!(
        row(&runtime_allows(&daemon), "192.0.2.9/32").is_none(),
        "refused: not added"
    );

    wait_until(
        Duration::from_secs(10),
        "the 2s entry ends in the list and the kernel",
        || {
            row(&runtime_allows(&daemon), "203.0.113.7/32").is_none()
                && !in_kernel(&netns, "203.0.113.7")
        },
    );
    daemon
        .cli(&["ban", "203.0.113.7"])
        .expect_ok("banned once the entry ended");

    // An entry still running when the daemon restarts keeps its end and
    // comment, and still ends on time afterwards.
    daemon
        .cli(&[
            "allow",
            "192.0.2.77",
            "--for",
            "4s",
            "--comment",
            "across a restart",
        ])
        .expect_ok("allow for 4s");
    daemon.restart(&netns, &bus);
    let rows = runtime_allows(&daemon);
    let vpn = row(&rows, "198.51.100.0/24").expect("kept across the restart");
    assert_eq!(
        (&vpn["comment"], vpn["expires_at"].as_u64()),
        (&Value::from("vendor VPN"), Some(vpn_expires))
    );
    let short = row(&rows, "192.0.2.77/32").expect("the 4s entry survived the restart");
    assert_eq!(short["comment"], "across a restart");
    assert!(in_kernel(&netns, "198.51.100.0/24") && in_kernel(&netns, "192.0.2.77"));
    wait_until(
        Duration::from_secs(10),
        "the 4s entry ends after the restart",
        || {
            row(&runtime_allows(&daemon), "192.0.2.77/32").is_none()
                && !in_kernel(&netns, "192.0.2.77")
        },
    );
    assert!(in_kernel(&netns, "198.51.100.0/24"), "the 1h entry stays");

    // One that ends while the daemon is down is gone when it starts.
    daemon
        .cli(&["allow", "192.0.2.88", "--for", "1s"])
        .expect_ok("allow for 1s");
    let ends = now() + 1;
    daemon.stop();
    wait_until(Duration::from_secs(5), "the 1s entry's end passes", || {
        now() > ends
    });
    daemon.restart(&netns, &bus);
    assert!(row(&runtime_allows(&daemon), "192.0.2.88/32").is_none());
    assert!(!in_kernel(&netns, "192.0.2.88"));
    assert!(in_kernel(&netns, "198.51.100.0/24"));
}
