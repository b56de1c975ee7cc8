//! Smoke tests for the integration-test harness in `tests/common`.
//!
//! They exercise every harness component against the real kernel and a real
//! dbus-daemon, without needing a working orch daemon: the `Daemon` tests use
//! a small Python/GDBus stand-in that owns `org.orch.Orch1`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Daemon, NetNs, TestBus, VethPair, pid_exists, unique_name, wait_until};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[test]
fn netns_nftables_is_isolated_from_host() {
    let ns = NetNs::new();
    let table = unique_name("smoke");
    ns.nft(&["add", "table", "inet", &table])
        .expect_ok("add table in netns");

    let inside = ns
        .nft(&["list", "tables"])
        .expect_ok("list tables in netns");
    assert!(
        inside.stdout.contains(&format!("table inet {table}")),
        "table missing inside netns:\n{inside}"
    );

    let host = common::run_command(std::process::Command::new("nft").args(["list", "tables"]))
        .expect_ok("list tables on host");
    assert!(
        !host.stdout.contains(&table),
        "table {table} leaked into the host netns:\n{host}"
    );

    let json = ns.nft_json(&["list", "tables"]);
    let names: Vec<&str> = json["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|i| i.get("table"))
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, [table.as_str()]);

    let lo = ns
        .run("ip", &["-o", "link", "show", "dev", "lo"])
        .expect_ok("ip link");
    assert!(lo.stdout.contains("UP"), "lo is not up:\n{lo}");
}

#[test]
fn nsenter_command_keeps_the_pid() {
    let ns = NetNs::new();
    let child = ns
        .command("sh")
        .args(["-c", "echo $$; readlink /proc/self/ns/net"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sh in netns");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(pid.to_string().as_str()));
    let ns_link = fs::read_link(ns.path()).expect("readlink netns");
    assert_eq!(lines.next(), Some(ns_link.to_str().unwrap()));
}

#[test]
fn set_elements_are_parsed() {
    let ns = NetNs::new();
    let script = "table inet t {
        set timed { type ipv4_addr; flags timeout; }
        set nets { type ipv4_addr; flags interval; }
        set nets6 { type ipv6_addr; flags interval, timeout; }
    }
    add element inet t timed { 192.0.2.1 timeout 1h, 192.0.2.2 }
    add element inet t nets { 10.0.0.0/24, 10.1.0.1, 10.2.0.1-10.2.0.5 }
    add element inet t nets6 { 2001:db8::/64 timeout 10m }
    ";
    ns.nft_script(script).expect_ok("nft -f -");

    let timed = ns.set_elements_with_expiry("t", "timed");
    assert_eq!(timed.len(), 2, "{timed:?}");
    assert_eq!(timed[0].0, "192.0.2.1");
    let expiry = timed[0].1.expect("192.0.2.1 has a timeout");
    assert!((3500..=3600).contains(&expiry), "expiry {expiry}");
    assert_eq!(timed[1], ("192.0.2.2".to_string(), None));
    assert_eq!(ns.set_elements("t", "timed"), ["192.0.2.1", "192.0.2.2"]);

    assert_eq!(
        ns.set_elements("inet t", "nets"),
        ["10.0.0.0/24", "10.1.0.1", "10.2.0.1-10.2.0.5"]
    );

    let nets6 = ns.set_elements_with_expiry("t", "nets6");
    assert_eq!(nets6.len(), 1);
    assert_eq!(nets6[0].0, "2001:db8::/64");
    assert!(matches!(nets6[0].1, Some(500..=600)), "{nets6:?}");

    assert!(ns.set_elements("t", "no_such_set").is_empty());
    assert!(ns.set_elements("no_such_table", "timed").is_empty());
    assert!(ns.set_elements("ip t", "timed").is_empty());
}

#[test]
fn veth_pair_connects_and_firewall_drops() {
    let pair = VethPair::new(
        &["10.99.0.1/24", "fd99::1/64"],
        &["10.99.0.2/24", "10.99.0.3/24", "fd99::2/64", "fd99::3/64"],
    );
    pair.listen(8080);

    for (from, to) in [
        ("10.99.0.2", "10.99.0.1"),
        ("10.99.0.3", "10.99.0.1"),
        ("fd99::2", "fd99::1"),
        ("fd99::3", "fd99::1"),
    ] {
        assert!(
            pair.connect_from(from, to, 8080, CONNECT_TIMEOUT),
            "{from} -> {to}:8080 should connect before any rule"
        );
    }
    assert!(
        !pair.connect_from("10.99.0.2", "10.99.0.1", 8081, CONNECT_TIMEOUT),
        "nothing listens on 8081"
    );

    pair.server
        .nft_script(
            "table inet t {
                chain input {
                    type filter hook input priority 0; policy accept;
                    ip saddr 10.99.0.3 drop
                    ip6 saddr fd99::3 drop
                }
            }",
        )
        .expect_ok("install drop rules");

    assert!(!pair.connect_from("10.99.0.3", "10.99.0.1", 8080, CONNECT_TIMEOUT));
    assert!(!pair.connect_from("fd99::3", "fd99::1", 8080, CONNECT_TIMEOUT));
    assert!(pair.connect_from("10.99.0.2", "10.99.0.1", 8080, CONNECT_TIMEOUT));
    assert!(pair.connect_from("fd99::2", "fd99::1", 8080, CONNECT_TIMEOUT));
}

#[test]
fn connect_from_unassigned_address_panics() {
    let pair = VethPair::new(&["10.98.0.1/24"], &["10.98.0.2/24"]);
    let result = catch_unwind(AssertUnwindSafe(|| {
        pair.connect_from("10.98.0.9", "10.98.0.1", 80, CONNECT_TIMEOUT)
    }));
    let msg = panic_message(result.expect_err("binding an unassigned address must panic"));
    assert!(msg.contains("bind 10.98.0.9"), "{msg}");
}

#[test]
fn test_bus_works_for_root_and_nobody() {
    let bus = TestBus::start();
    assert!(
        bus.address().starts_with("unix:path=/"),
        "{}",
        bus.address()
    );

    let root = bus.busctl(&["list"]).expect_ok("busctl list as root");
    assert!(root.stdout.contains("org.freedesktop.DBus"), "{root}");
    let nobody = bus
        .busctl_as_nobody(&["list"])
        .expect_ok("busctl list as nobody");
    assert!(nobody.stdout.contains("org.freedesktop.DBus"), "{nobody}");

    let id = bus
        .busctl(&[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetId",
        ])
        .expect_ok("GetId");
    assert!(id.stdout.starts_with("s \""), "{id}");

    // Credentials the daemon will check are the real ones.
    let uid = bus
        .busctl_as_nobody(&[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetConnectionUnixUser",
            "s",
            "org.freedesktop.DBus",
        ])
        .expect_ok("GetConnectionUnixUser");
    assert_eq!(uid.stdout.trim(), "u 0");
}

#[test]
fn drop_cleans_up() {
    let ns = NetNs::new();
    ns.listen(9000);
    let ns_pid = ns.pid();
    assert!(pid_exists(ns_pid));
    drop(ns);
    assert!(!pid_exists(ns_pid), "netns holder {ns_pid} survived drop");

    let pair = VethPair::new(&["10.97.0.1/24"], &["10.97.0.2/24"]);
    let pids = [pair.server.pid(), pair.client.pid()];
    drop(pair);
    for pid in pids {
        assert!(!pid_exists(pid), "veth netns holder {pid} survived drop");
    }

    let bus = TestBus::start();
    let (bus_pid, bus_dir) = (bus.pid(), bus.dir().to_path_buf());
    assert!(bus_dir.join("bus").exists());
    drop(bus);
    assert!(!pid_exists(bus_pid), "dbus-daemon {bus_pid} survived drop");
    assert!(!bus_dir.exists(), "{} survived drop", bus_dir.display());
}

// ---------------------------------------------------------------------------
// Daemon, driven with a stand-in for `orch daemon`.

/// A stand-in for `orch daemon --config FILE`: checks its arguments, records
/// its pid in `<state_dir>/starts`, owns org.orch.Orch1 (GDBus answers
/// Peer.Ping itself) and exits 0 on SIGTERM.
const FAKE_DAEMON: &str = r#"#!/usr/bin/python3
import os, re, signal, sys
from gi.repository import Gio, GLib

if sys.argv[1:3] != ["daemon", "--config"] or len(sys.argv) != 4:
    sys.exit(f"fake daemon: bad arguments {sys.argv[1:]}")
config = open(sys.argv[3]).read()
state_dir = re.search(r'^state_dir = "(.*)"$', config, re.M).group(1)
with open(os.path.join(state_dir, "starts"), "a") as f:
    f.write(f"{os.getpid()}\n")
print(f"fake daemon: pid {os.getpid()} netns {os.readlink('/proc/self/ns/net')} "
      f"RUST_LOG={os.environ.get('RUST_LOG')} config:\n{config}", file=sys.stderr, flush=True)

loop = GLib.MainLoop()
status = 0
def on_term():
    print("fake daemon: SIGTERM, exiting", file=sys.stderr, flush=True)
    loop.quit()
    return GLib.SOURCE_REMOVE
def on_lost(conn, name):
    global status
    print(f"fake daemon: could not own {name}", file=sys.stderr, flush=True)
    status = 1
    loop.quit()
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, on_term)
Gio.bus_own_name(Gio.BusType.SYSTEM, "org.orch.Orch1", Gio.BusNameOwnerFlags.NONE,
                 None, lambda c, n: print(f"fake daemon: owns {n}", file=sys.stderr, flush=True),
                 on_lost)
loop.run()
sys.exit(status)
"#;

const FAILING_DAEMON: &str = "#!/bin/sh\necho \"fake daemon: config rejected ($*)\" >&2\nexit 3\n";

fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
    path
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn starts(daemon: &Daemon) -> Vec<u32> {
    fs::read_to_string(daemon.state_dir.join("starts"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("pid"))
        .collect()
}

#[test]
fn daemon_lifecycle_with_stand_in() {
    let scripts = tempfile::tempdir().expect("tempdir");
    let fake = write_script(scripts.path(), "fake-orch", FAKE_DAEMON);
    let ns = NetNs::new();
    let bus = TestBus::start();

    let mut daemon = Daemon::start_program(&fake, &ns, &bus, "[firewall]\ntable = \"smoke\"\n");
    let config = fs::read_to_string(&daemon.config_path).expect("read config");
    assert_eq!(
        config,
        format!(
            "state_dir = \"{}\"\n[firewall]\ntable = \"smoke\"\n",
            daemon.state_dir.display()
        )
    );
    assert!(daemon.state_dir.is_dir());
    assert!(daemon.ping());
    assert!(daemon.name_has_owner());

    // nsenter exec'd the program: same pid, inside the namespace.
    let pid = daemon.pid();
    assert_eq!(starts(&daemon), [pid]);
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        fs::read_link(ns.path()).unwrap()
    );
    assert!(
        daemon.log().contains("RUST_LOG=info,orch=debug"),
        "{}",
        daemon.log()
    );

    daemon.kill9();
    assert!(!pid_exists(pid));
    assert!(!daemon.ping());
    assert_eq!(daemon.try_exit_status(), None);

    daemon.restart(&ns, &bus);
    let pid2 = daemon.pid();
    assert_ne!(pid, pid2);
    assert_eq!(starts(&daemon), [pid, pid2], "restart keeps the state dir");
    assert!(daemon.ping());

    assert_eq!(daemon.stop(), 0, "graceful stop\n{}", daemon.log());
    assert!(daemon.log().contains("fake daemon: SIGTERM"));
    assert!(daemon.log().contains("===== harness: start #2"));
    assert!(!daemon.ping());

    // restart while running stops the old instance first.
    daemon.restart(&ns, &bus);
    let pid3 = daemon.pid();
    daemon.restart(&ns, &bus);
    assert!(!pid_exists(pid3));
    assert_eq!(starts(&daemon).len(), 4);

    let pid4 = daemon.pid();
    let dir = daemon.state_dir.parent().unwrap().to_path_buf();
    drop(daemon);
    assert!(!pid_exists(pid4), "daemon {pid4} survived drop");
    assert!(!dir.exists(), "{} survived drop", dir.display());
}

#[test]
fn daemon_start_reports_early_exit_with_log() {
    let scripts = tempfile::tempdir().expect("tempdir");
    let failing = write_script(scripts.path(), "failing-orch", FAILING_DAEMON);
    let ns = NetNs::new();
    let bus = TestBus::start();
    let result = catch_unwind(AssertUnwindSafe(|| {
        Daemon::start_program(&failing, &ns, &bus, "")
    }));
    let msg = panic_message(result.err().expect("start must panic"));
    assert!(msg.contains("exited with exit status: 3"), "{msg}");
    assert!(
        msg.contains("fake daemon: config rejected (daemon --config /"),
        "{msg}"
    );
}

#[test]
fn wait_until_times_out_with_a_clear_message() {
    let mut polls = 0;
    let result = catch_unwind(AssertUnwindSafe(|| {
        wait_until(Duration::from_millis(100), "the impossible", || {
            polls += 1;
            false
        })
    }));
    let msg = panic_message(result.expect_err("must time out"));
    assert!(msg.contains("waiting for the impossible"), "{msg}");
    assert!((3..=10).contains(&polls), "polled {polls} times");

    let mut n = 0;
    wait_until(Duration::from_secs(1), "third poll", || {
        n += 1;
        n == 3
    });
}

#[test]
fn orch_bin_is_built() {
    assert!(common::orch_bin().is_file());
}
