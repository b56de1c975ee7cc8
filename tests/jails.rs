//! End-to-end tests of log jails on real files: a real orch daemon in a
//! fresh network namespace (real kernel nftables) on a private dbus-daemon,
//! with a jail following a log file the test appends to.
//!
//! What a user sees is asserted: the address in the kernel's ban set (or
//! not), its timeout, and the counters `orch status` prints.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Daemon, NetNs, TestBus, wait_until};

/// A log file in its own temp dir, and the `[jails.sshd]` block for it.
struct Log {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Log {
    fn new() -> Log {
        let dir = tempfile::Builder::new()
            .prefix("orch-jail-log-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("auth.log");
        std::fs::write(&path, "").expect("create log");
        Log { path, _dir: dir }
    }

    fn jail(&self, extra: &str) -> String {
        format!(
            "[jails.sshd]\nfiles = [\"{}\"]\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n{extra}\n",
            self.path.display()
        )
    }

    /// Appends sshd lines stamped now (RFC 3339), as rsyslog writes them.
    fn append(&self, messages: &[String]) {
        append_to(&self.path, messages);
    }
}

fn append_to(path: &Path, messages: &[String]) {
    append_as(path, "sshd-session", messages);
}

/// Appends `messages` as syslog lines from `tag`, stamped now (RFC 3339).
fn append_as(path: &Path, tag: &str, messages: &[String]) {
    let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open log");
    let mut text = String::new();
    for message in messages {
        text.push_str(&format!("{stamp} web1 {tag}[4242]: {message}\n"));
    }
    file.write_all(text.as_bytes()).expect("append");
}

fn failures(addr: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            format!(
                "Failed password for root from {addr} port {} ssh2",
                40000 + i
            )
        })
        .collect()
}

/// Waits (up to 5 s) until `addr` is in the every-port ban set.
#[track_caller]
fn wait_banned(netns: &NetNs, addr: &str) {
    wait_until(Duration::from_secs(5), &format!("{addr} banned"), || {
        banned(netns, addr)
    });
}

fn banned(netns: &NetNs, addr: &str) -> bool {
    let set = if addr.contains(':') { "ban6" } else { "ban4" };
    netns.set_elements("orch", set).iter().any(|e| e == addr)
}

/// `lines` and `failures_total` of the jail, from `orch status sshd --json`.
fn jail_counts(daemon: &Daemon) -> (u64, u64) {
    let status = daemon
        .cli(&["status", "sshd", "--json"])
        .expect_ok("status")
        .stdout;
    let report: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let jail = &report["jails"][0];
    let number = |key: &str| {
        jail[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {report}"))
    };
    (number("lines"), number("failures_total"))
}

#[test]
fn maxretry_failures_in_a_file_ban_within_a_second_and_hostile_names_ban_only_the_sender() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let log = Log::new();
    let daemon = Daemon::start(&netns, &bus, &log.jail(""));

    log.append(&failures("192.0.2.50", 2));
    log.append(&["Accepted publickey for admin from 192.0.2.99 port 1 ssh2".into()]);
    wait_until(Duration::from_secs(5), "the jail to read 3 lines", || {
        jail_counts(&daemon).0 == 3
    });
    assert!(!banned(&netns, "192.0.2.50"), "two failures are not enough");

    let started = Instant::now();
    log.append(&failures("192.0.2.50", 1));
    wait_banned(&netns, "192.0.2.50");
    let took = started.elapsed();
    eprintln!("file jail: third failure appended -> address in ban4 in {took:?}");
    assert!(took <= Duration::from_secs(1), "ban took {took:?}");

    // An attacker-chosen user name that looks like an address.
    let hostile: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "Invalid user x from 198.51.100.9 from 192.0.2.60 port {}",
                50000 + i
            )
        })
        .collect();
    log.append(&hostile);
    wait_banned(&netns, "192.0.2.60");
    assert!(
        !banned(&netns, "198.51.100.9"),
        "the injected address was banned"
    );
    assert!(
        !banned(&netns, "192.0.2.99"),
        "a successful login was banned"
    );

    let list = daemon.cli(&["list"]).expect_ok("list").stdout;
    let row = list
        .lines()
        .find(|l| l.starts_with("192.0.2.50"))
        .unwrap_or_else(|| panic!("no row for 192.0.2.50 in:\n{list}"));
    assert!(row.contains("sshd"), "the ban's source is the jail: {row}");
    let status = daemon.cli(&["status"]).expect_ok("status").stdout;
    assert!(status.contains("jail sshd: 2 active bans"), "{status}");
}

#[test]
fn rotation_by_rename_and_by_copytruncate_loses_and_repeats_no_line() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let log = Log::new();
    let daemon = Daemon::start(&netns, &bus, &log.jail(""));
    let rotated = log.path.with_extension("log.1");

    // Rename rotation: two failures before, one after, in the new file.
    log.append(&failures("192.0.2.10", 2));
    log.append(&failures("192.0.2.11", 2));
    wait_until(Duration::from_secs(5), "4 lines read", || {
        jail_counts(&daemon) == (4, 4)
    });
    std::fs::rename(&log.path, &rotated).expect("rename");
    // The writer's last line still lands in the old file.
    append_to(&rotated, &failures("192.0.2.12", 1));
    log.append(&failures("192.0.2.10", 1));
    wait_banned(&netns, "192.0.2.10");
    wait_until(Duration::from_secs(5), "6 lines read", || {
        jail_counts(&daemon) == (6, 6)
    });
    // Nothing was read twice: 192.0.2.11 still has two failures.
    assert!(!banned(&netns, "192.0.2.11"));

    // Copytruncate: copy away, truncate in place, keep writing.
    log.append(&failures("192.0.2.20", 2));
    wait_until(Duration::from_secs(5), "8 lines read", || {
        jail_counts(&daemon) == (8, 8)
    });
    std::fs::copy(&log.path, &rotated).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log.path)
        .expect("truncate");
    log.append(&failures("192.0.2.20", 1));
    wait_banned(&netns, "192.0.2.20");
    wait_until(Duration::from_secs(5), "9 lines read", || {
        jail_counts(&daemon) == (9, 9)
    });
    assert!(!banned(&netns, "192.0.2.11"));
    assert!(!banned(&netns, "192.0.2.12"));
}

#[test]
fn a_restart_resumes_at_the_saved_position() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let log = Log::new();
    let mut daemon = Daemon::start(&netns, &bus, &log.jail(""));
    log.append(&failures("192.0.2.30", 2));
    wait_until(Duration::from_secs(5), "2 lines read", || {
        jail_counts(&daemon).0 == 2
    });
    assert_eq!(daemon.stop(), 0, "clean stop");

    // Written while orch is down: must be read after the restart.
    log.append(&failures("192.0.2.31", 3));
    daemon.restart(&netns, &bus);
    wait_banned(&netns, "192.0.2.31");
    // Exactly the three new lines: the two old ones were not read again.
    assert_eq!(jail_counts(&daemon), (3, 3));
    assert!(!banned(&netns, "192.0.2.30"));
}

#[test]
fn repeat_offenders_get_longer_bans_and_ignored_addresses_none() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let log = Log::new();
    let script_dir = tempfile::tempdir().expect("temp dir");
    let script = script_dir.path().join("is-friend");
    std::fs::write(&script, "#!/bin/sh\n[ \"$1\" = 192.0.2.71 ]\n").expect("write script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let extra = format!(
        "increment = {{ formula = \"ban.Time * (1 + 2 * ban.Count) * banFactor\", factor = 1.0 }}\nignore = [\"192.0.2.70\"]\nignore_command = [\"{}\", \"<ip>\"]\n",
        script.display()
    );
    let mut daemon = Daemon::start(&netns, &bus, &log.jail(&extra));

    let timeout_of = |addr: &str| {
        netns
            .set_elements_with_expiry("orch", "ban4")
            .into_iter()
            .find(|(e, _)| e == addr)
            .and_then(|(_, t)| t)
    };
    // An earlier manual ban does not count: the jail counts its own bans
    // (fail2ban's default, bantime.overalljails = false).
    daemon.cli(&["ban", "192.0.2.80"]).expect_ok("manual ban");
    daemon
        .cli(&["unban", "192.0.2.80"])
        .expect_ok("manual unban");
    // 1h, then 3h, then 5h: the formula, with ban.Count = earlier bans.
    for (round, hours) in [1u64, 3, 5].into_iter().enumerate() {
        log.append(&failures("192.0.2.80", 3));
        wait_banned(&netns, "192.0.2.80");
        let left = timeout_of("192.0.2.80").expect("timeout");
        let expected = hours * 3600;
        assert!(
            (expected - 30..=expected).contains(&left),
            "round {round}: {left} s left, expected about {expected}"
        );
        daemon.cli(&["unban", "192.0.2.80"]).expect_ok("unban");
        if round == 1 {
            // The jail's count of earlier bans is in the store.
            daemon.restart(&netns, &bus);
        }
    }

    log.append(&failures("192.0.2.70", 3));
    log.append(&failures("192.0.2.71", 3));
    log.append(&failures("192.0.2.72", 3));
    wait_banned(&netns, "192.0.2.72");
    assert!(!banned(&netns, "192.0.2.70"), "in the jail's ignore list");
    assert!(!banned(&netns, "192.0.2.71"), "ignore_command said so");
}

#[test]
fn a_jail_runs_fail2bans_own_sshd_filter() {
    let filter = "/etc/fail2ban/filter.d/sshd.conf";
    assert!(
        Path::new(filter).is_file(),
        "{filter} is missing: install Debian's fail2ban package (.ci/run does)"
    );
    let netns = NetNs::new();
    let bus = TestBus::start();
    let log = Log::new();
    let daemon = Daemon::start(
        &netns,
        &bus,
        &log.jail(&format!("filter = \"{filter}[mode=aggressive]\"")),
    );
    let hostile: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "Invalid user x from 198.51.100.9 from 192.0.2.90 port {}",
                50000 + i
            )
        })
        .collect();
    append_as(&log.path, "sshd", &hostile);
    wait_banned(&netns, "192.0.2.90");
    assert!(
        !banned(&netns, "198.51.100.9"),
        "the injected address was banned"
    );
    let status = daemon.cli(&["status"]).expect_ok("status").stdout;
    assert!(
        status.contains("filter /etc/fail2ban/filter.d/sshd.conf[mode=aggressive]"),
        "{status}"
    );
}

#[test]
fn recidive_bans_for_a_week_after_repeated_jail_bans() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let log = Log::new();
    let config =
        log.jail("") + "[jails.recidive]\nmaxretry = 2\nfindtime = \"1d\"\nbantime = \"1w\"\n";
    let mut daemon = Daemon::start(&netns, &bus, &config);
    let timeout_of = |addr: &str| {
        netns
            .set_elements_with_expiry("orch", "ban4")
            .into_iter()
            .find(|(e, _)| e == addr)
            .and_then(|(_, t)| t)
    };
    log.append(&failures("192.0.2.40", 3));
    wait_banned(&netns, "192.0.2.40");
    assert!(timeout_of("192.0.2.40").expect("timeout") <= 3600);
    daemon.cli(&["unban", "192.0.2.40"]).expect_ok("unban");
    // The recidive count survives a restart (seeded from the ban history).
    daemon.restart(&netns, &bus);

    log.append(&failures("192.0.2.40", 3));
    wait_until(Duration::from_secs(5), "the recidive ban", || {
        timeout_of("192.0.2.40").is_some_and(|left| left > 3600)
    });
    let left = timeout_of("192.0.2.40").expect("timeout");
    assert!((604_800 - 30..=604_800).contains(&left), "{left} s left");
    let list = daemon.cli(&["list"]).expect_ok("list").stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("192.0.2.40") && l.contains("recidive")),
        "{list}"
    );
    let status = daemon.cli(&["status"]).expect_ok("status").stdout;
    assert!(status.contains("jail recidive: 1 active bans"), "{status}");
}

#[test]
fn a_jail_with_ports_bans_only_those_ports_and_packets_show_it() {
    let pair = common::VethPair::new(&["10.99.0.1/24"], &["10.99.0.2/24", "10.99.0.3/24"]);
    let bus = TestBus::start();
    let log = Log::new();
    let daemon = Daemon::start(
        &pair.server,
        &bus,
        &log.jail("ports = [2222]\nprotocol = \"tcp\""),
    );
    pair.listen(2222);
    pair.listen(2223);
    let timeout = Duration::from_secs(1);
    assert!(pair.connect_from("10.99.0.2", "10.99.0.1", 2222, timeout));

    log.append(&failures("10.99.0.2", 3));
    wait_until(Duration::from_secs(5), "10.99.0.2 in portban4", || {
        pair.server
            .set_elements("orch", "portban4")
            .iter()
            .any(|e| e == "10.99.0.2 . tcp . 2222")
    });
    assert!(
        !banned(&pair.server, "10.99.0.2"),
        "not in the every-port set"
    );
    assert_banned_on_2222_only(&pair, "10.99.0.2", "10.99.0.3", "10.99.0.1");
    let list = daemon.cli(&["list"]).expect_ok("list").stdout;
    assert!(list.lines().any(|l| l.starts_with("10.99.0.2")), "{list}");

    // A full re-apply keeps the ban where it was.
    daemon.cli(&["sync"]).expect_ok("sync");
    assert_eq!(
        pair.server.set_elements("orch", "portban4"),
        ["10.99.0.2 . tcp . 2222"]
    );

    daemon.cli(&["unban", "10.99.0.2"]).expect_ok("unban");
    assert!(pair.server.set_elements("orch", "portban4").is_empty());
    assert!(pair.connect_from("10.99.0.2", "10.99.0.1", 2222, timeout));
}

#[test]
fn sighup_restarts_changed_jails_where_they_stopped_reading() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let log = Log::new();
    let daemon = Daemon::start(&netns, &bus, &log.jail(""));
    log.append(&failures("192.0.2.120", 1));
    wait_until(Duration::from_secs(5), "1 line read", || {
        jail_counts(&daemon).0 == 1
    });

    // maxretry 3 -> 1: one failure now bans.
    let config = format!(
        "state_dir = \"{}\"\n{}",
        daemon.state_dir.display(),
        log.jail("").replace("maxretry = 3", "maxretry = 1")
    );
    std::fs::write(&daemon.config_path, config).expect("rewrite config");
    daemon.sighup();
    wait_until(Duration::from_secs(5), "the restarted jail", || {
        jail_counts(&daemon) == (0, 0)
    });
    log.append(&failures("192.0.2.121", 1));
    wait_banned(&netns, "192.0.2.121");
    // The restarted jail resumed after the line read before the reload.
    assert_eq!(jail_counts(&daemon), (1, 1));
    assert!(!banned(&netns, "192.0.2.120"));
}

/// A FIFO at a jail's log path (or a device) neither blocks the start nor
/// is read; `orch status` says what the path is. A regular file of the
/// same jail is still followed.
#[test]
fn a_fifo_at_a_log_path_never_blocks_the_start() {
    let log = Log::new();
    let fifo = log.path.with_file_name("fifo.log");
    let path = std::ffi::CString::new(fifo.display().to_string()).expect("path");
    // SAFETY: mkfifo on a path in our own temp dir.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    let config = format!(
        "[jails.sshd]\nfiles = [\"{}\", \"{}\", \"/dev/zero\"]\nmaxretry = 1\n",
        fifo.display(),
        log.path.display()
    );
    let netns = NetNs::new();
    let bus = TestBus::start();
    let started = Instant::now();
    let daemon = Daemon::start(&netns, &bus, &config);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the start took {:?}",
        started.elapsed()
    );
    wait_until(
        Duration::from_secs(5),
        "the status to name the FIFO",
        || {
            let status = daemon.cli(&["status"]).stdout;
            status.contains(&format!("{} is a FIFO, not a regular file", fifo.display()))
                && status.contains("/dev/zero is a device, not a regular file")
        },
    );
    log.append(&["Invalid user x from 203.0.113.61 port 22".to_string()]);
    wait_until(Duration::from_secs(5), "the regular file's ban", || {
        netns
            .set_elements("orch", "ban4")
            .iter()
            .any(|e| e.starts_with("203.0.113.61"))
    });
}

/// A jail with ports bans an IPv6 attacker's whole /64 on those ports
/// only (found by the nft_render fuzz target: the port sets held single
/// addresses, so every IPv6 prefix ban of such a jail was refused).
#[test]
fn a_jail_with_ports_bans_an_ipv6_prefix_on_those_ports() {
    let pair = common::VethPair::new(
        &["fd97::1/48"],
        &["fd97:0:0:2::5/48", "fd97:0:0:2::6/48", "fd97:0:0:3::5/48"],
    );
    let bus = TestBus::start();
    let log = Log::new();
    let _daemon = Daemon::start(
        &pair.server,
        &bus,
        &log.jail("ports = [2222]\nprotocol = \"tcp\""),
    );
    pair.listen(2222);
    pair.listen(2223);
    log.append(&failures("fd97:0:0:2::5", 3));
    wait_until(Duration::from_secs(5), "the /64 in portbannet6", || {
        pair.server
            .set_elements("orch", "portbannet6")
            .iter()
            .any(|e| e == "fd97:0:0:2::/64 . tcp . 2222")
    });
    // Another address of the banned /64, and one of the next /64.
    assert_banned_on_2222_only(&pair, "fd97:0:0:2::6", "fd97:0:0:3::5", "fd97::1");
}

/// Packets from `banned` to `server` are dropped on port 2222 and pass on
/// 2223; packets from `neighbour` pass on 2222.
#[track_caller]
fn assert_banned_on_2222_only(
    pair: &common::VethPair,
    banned: &str,
    neighbour: &str,
    server: &str,
) {
    let timeout = Duration::from_secs(1);
    assert!(
        !pair.connect_from(banned, server, 2222, timeout),
        "{banned} reached the jail's port"
    );
    assert!(
        pair.connect_from(banned, server, 2223, timeout),
        "{banned} was blocked on another port"
    );
    assert!(
        pair.connect_from(neighbour, server, 2222, timeout),
        "the neighbour {neighbour} was blocked"
    );
}

/// An IPv6 attacker rotating addresses inside one /64: five addresses,
/// one failure each, reach maxretry = 5 together and the /64 is banned as
/// a prefix. With `ipv6_prefix = 128` the same lines ban nothing.
#[test]
fn failures_from_one_ipv6_prefix_add_up_and_ban_the_prefix() {
    let lines: Vec<String> = (1..=5)
        .map(|i| format!("Invalid user x from 2001:db8:7:8::{i:x} port 22"))
        .collect();
    for (prefix, banned) in [(None, true), (Some(128), false)] {
        let log = Log::new();
        let extra = prefix
            .map(|p| format!("ipv6_prefix = {p}"))
            .unwrap_or_default();
        let config = log.jail(&extra).replace("maxretry = 3", "maxretry = 5");
        let netns = NetNs::new();
        let bus = TestBus::start();
        let daemon = Daemon::start(&netns, &bus, &config);
        log.append(&lines);
        let has_prefix = || {
            netns
                .set_elements("orch", "bannet6")
                .contains(&"2001:db8:7:8::/64".to_string())
        };
        if banned {
            wait_until(Duration::from_secs(5), "the /64 in bannet6", has_prefix);
        } else {
            wait_until(Duration::from_secs(5), "the five lines to be read", || {
                daemon
                    .cli(&["status"])
                    .stdout
                    .contains("5 failures in 5 lines")
            });
            // The jail judges each line as it reads it: once counted,
            // a ban would already have been asked for.
            assert!(!has_prefix(), "ipv6_prefix 128 banned the /64");
        }
        assert!(netns.set_elements("orch", "ban6").is_empty());
    }
}

/// Lines keep coming from a /64 after it is banned (already in the log,
/// or an attacker's rotation read in one go): the jail asks the core about
/// it once, not once per maxretry lines (200 asks and 200 "already
/// banned" log lines here before); after an unban it asks again at once.
#[test]
fn a_flood_from_a_banned_prefix_asks_once_until_an_unban() {
    let log = Log::new();
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, &log.jail(""));
    let prefix = "2001:db8:9:9::/64";
    let rotation = |count: usize, from: usize| -> Vec<String> {
        (from..from + count)
            .map(|i| format!("Invalid user x from 2001:db8:9:9::{i:x} port 22"))
            .collect()
    };
    let has_prefix = || {
        netns
            .set_elements("orch", "bannet6")
            .iter()
            .any(|e| e == prefix)
    };
    log.append(&rotation(600, 1));
    wait_until(Duration::from_secs(10), "600 lines judged", || {
        jail_counts(&daemon) == (600, 600)
    });
    assert!(has_prefix(), "{}", daemon.log());
    let mentions = daemon
        .log()
        .lines()
        .filter(|line| line.contains(prefix))
        .count();
    assert!(
        (1..=3).contains(&mentions),
        "{mentions} log lines about {prefix}:\n{}",
        daemon.log()
    );

    daemon.cli(&["unban", prefix]).expect_ok("unban");
    assert!(!has_prefix());
    log.append(&rotation(3, 1000));
    wait_until(Duration::from_secs(5), "the /64 banned again", has_prefix);
}

/// A daemon in a fresh network namespace with the jail `sshd` on a new
/// log, once `orch status` shows the jail. Fields drop in order: the
/// daemon first.
struct FileJail {
    daemon: Daemon,
    log: Log,
    bus: TestBus,
    netns: NetNs,
}

impl FileJail {
    /// `config` gives the daemon's configuration for the log.
    fn start(config: impl FnOnce(&Log) -> String) -> FileJail {
        let netns = NetNs::new();
        let bus = TestBus::start();
        let log = Log::new();
        let daemon = Daemon::start(&netns, &bus, &config(&log));
        wait_until(Duration::from_secs(5), "the jail to start", || {
            daemon.cli(&["status"]).stdout.contains("jail sshd:")
        });
        FileJail {
            daemon,
            log,
            bus,
            netns,
        }
    }
}

/// The `Jails` property as `busctl --json` reads it: one array per jail.
fn jail_rows(bus: &TestBus) -> Vec<serde_json::Value> {
    let out = bus
        .busctl(&[
            "--json=short",
            "get-property",
            "org.orch.Orch1",
            "/org/orch/Orch1",
            "org.orch.Orch1",
            "Jails",
        ])
        .expect_ok("get-property Jails");
    let value: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("busctl output is not JSON ({e}): {}", out.stdout));
    assert_eq!(value["type"], "a(ssssttttddxtttb)", "{value}");
    value["data"].as_array().cloned().unwrap_or_default()
}

/// The `health:` line of jail `name` in `orch status`.
fn health_line(daemon: &Daemon, name: &str) -> String {
    let status = daemon.cli(&["status"]).expect_ok("status").stdout;
    status
        .lines()
        .skip_while(|l| !l.starts_with(&format!("jail {name}:")))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .find(|l| l.starts_with("  health: "))
        .unwrap_or_else(|| panic!("no health line for {name} in:\n{status}"))
        .to_string()
}

/// Appends raw bytes to the log (lines the other helpers cannot write).
fn append_bytes(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .expect("append to the log");
}

/// Lines over 16 KiB and lines that are not UTF-8 are counted, in `orch
/// status` and in the `Jails` property; lines that are not UTF-8 are still
/// judged (a writer cannot hide a failure behind one invalid byte).
#[test]
fn lines_cut_or_not_utf8_are_counted_and_shown() {
    let FileJail {
        daemon,
        log,
        bus,
        netns,
    } = FileJail::start(|log| log.jail(""));

    let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
    let mut bytes = Vec::new();
    for port in 0..3 {
        bytes.extend_from_slice(format!("{stamp} web1 sshd[7]: Invalid user ").as_bytes());
        bytes.extend_from_slice(b"\xff\xfe");
        bytes.extend_from_slice(format!(" from 192.0.2.131 port {port}\n").as_bytes());
    }
    bytes.extend_from_slice(format!("{stamp} web1 sshd[7]: {}\n", "x".repeat(20_000)).as_bytes());
    append_bytes(&log.path, &bytes);
    log.append(&["Accepted publickey for admin from 192.0.2.99 port 1 ssh2".into()]);

    wait_banned(&netns, "192.0.2.131");
    wait_until(Duration::from_secs(10), "the counts in orch status", || {
        health_line(&daemon, "sshd").contains("lines too long (cut) 1, not UTF-8 (replaced) 3")
    });
    assert_eq!(jail_counts(&daemon).0, 5, "every line was read");
    let health = health_line(&daemon, "sshd");
    assert!(health.contains(" lines/s, lag "), "{health}");
    assert!(!health.contains("LAGGING"), "{health}");

    wait_until(Duration::from_secs(10), "the counts on the bus", || {
        let rows = jail_rows(&bus);
        let row = &rows[0];
        row[0] == "sshd" && row[4] == 5 && row[12] == 1 && row[13] == 3 && row[10] == 0
    });
    let row = jail_rows(&bus)[0].clone();
    eprintln!("orch status: {health}\nJails property: {row}");
    assert!(row[8].as_f64().is_some_and(|rate| rate >= 0.0), "{row}");
    assert!(row[9].as_f64().is_some_and(|lag| lag >= 0.0), "{row}");
    assert_eq!(row[11], 0, "the native filter has no match limit: {row}");
    assert_eq!(row[14], false, "{row}");
}

/// A fail2ban filter with a catastrophic pattern, fed a hostile line: the
/// PCRE2 search stops at its match limit, and `orch status` and the `Jails`
/// property count the hit. Ordinary lines still match afterwards.
#[test]
fn match_limit_hits_are_shown() {
    let log = Log::new();
    let filter = log.path.with_file_name("hostile.conf");
    std::fs::write(
        &filter,
        "[Definition]\nfailregex = ^(?:\\w+\\s?)*from <HOST>$\ndatepattern = {NONE}\n",
    )
    .expect("write filter");
    let config = log.jail(&format!("filter = \"{}\"", filter.display()));
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, &config);

    let hostile = format!("{} from\n", "ab ".repeat(3000));
    append_bytes(&log.path, hostile.as_bytes());
    append_bytes(
        &log.path,
        b"word word from 192.0.2.140\n".repeat(3).as_slice(),
    );
    wait_banned(&netns, "192.0.2.140");
    wait_until(
        Duration::from_secs(10),
        "the limit hit in orch status",
        || !health_line(&daemon, "sshd").contains(" 0 match-limit hits"),
    );
    let health = health_line(&daemon, "sshd");
    assert!(health.contains(" match-limit hits"), "{health}");
    let rows = jail_rows(&bus);
    assert!(
        rows[0][11].as_u64().is_some_and(|hits| hits >= 1),
        "{}",
        rows[0]
    );
    assert_eq!(rows[0][4], 4, "lines read: {}", rows[0]);
}

/// A flood written at once is read [`orch::jail::file_source::READ_BUDGET`]
/// bytes at a time, one batch right after the other: no batch waits for
/// a change to the file (none comes) or for the 2 s poll.
#[test]
fn a_flood_written_at_once_is_read_to_the_end_without_waiting() {
    let jail = FileJail::start(|log| log.jail(""));
    let (daemon, log) = (&jail.daemon, &jail.log);

    let line = format!(
        "Connection closed by 192.0.2.150 port 22 {}",
        "x".repeat(40)
    );
    let budgets = 6;
    let count = budgets * orch::jail::file_source::READ_BUDGET / (line.len() + 40);
    let started = Instant::now();
    append_to(&log.path, &vec![line; count]);
    wait_until(Duration::from_secs(30), "every line of the flood", || {
        jail_counts(daemon).0 == count as u64
    });
    let took = started.elapsed();
    eprintln!("{count} lines ({budgets}+ budgets) read in {took:?}");
    // Waiting for the poll between budgets would take 2 s each.
    assert!(took < Duration::from_secs(8), "{took:?}");
}

/// A jail that falls more than half its findtime behind says so in the
/// log, once, and says when it has caught up; meanwhile `orch status`
/// shows the lag. With findtime 2 s, a 48 MiB flood (several seconds of
/// reading in a debug build) is enough.
#[test]
fn a_jail_behind_by_half_its_findtime_warns_once_and_recovers() {
    let jail = FileJail::start(|log| {
        log.jail("")
            .replace("findtime = \"10m\"", "findtime = \"2s\"")
    });
    let (daemon, log) = (&jail.daemon, &jail.log);

    // A line the sshd patterns must scan (it passes the prefilter) but
    // that is no failure (the trailing text breaks the anchor).
    let line = format!(
        "Connection closed by authenticating user u 192.0.2.160 port 22 {}",
        "x".repeat(40)
    );
    let count = (48 << 20) / (line.len() + 40);
    append_to(&log.path, &vec![line; count]);
    let mut lagging_seen = None;
    wait_until(Duration::from_secs(120), "the lag warning", || {
        if lagging_seen.is_none() {
            let health = health_line(daemon, "sshd");
            lagging_seen = health.contains("LAGGING").then_some(health);
        }
        daemon.log().contains("jail sshd is ")
    });
    wait_until(Duration::from_secs(120), "the jail to catch up", || {
        daemon.log().contains("jail sshd has caught up")
    });
    let daemon_log = daemon.log();
    let warning = daemon_log
        .lines()
        .find(|l| l.contains("jail sshd is "))
        .unwrap_or_default();
    eprintln!("{warning}\nstatus while behind: {lagging_seen:?}");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("behind its log"), "{warning}");
    assert!(
        warning.contains("more than half its findtime (2.0 s)"),
        "{warning}"
    );
    assert_eq!(
        daemon_log.matches("behind its log").count(),
        1,
        "one warning per episode:\n{daemon_log}"
    );
    assert_eq!(jail_counts(daemon).0, count as u64);
    assert!(!health_line(daemon, "sshd").contains("LAGGING"));
}

/// A jail killed (kill -9) before its first periodic position save still
/// reads, after the restart, the lines written while it was down: the
/// position it started at is saved before the daemon is ready (the kill -9
/// storm found these lines lost).
#[test]
fn lines_written_while_a_new_jail_was_killed_are_read_after_the_restart() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let log = Log::new();
    let mut daemon = Daemon::start(&netns, &bus, &log.jail(""));
    daemon.kill9();
    log.append(&failures("192.0.2.201", 3));
    daemon.restart(&netns, &bus);
    wait_until(Duration::from_secs(5), "192.0.2.201 banned", || {
        banned(&netns, "192.0.2.201")
    });
}

#[test]
fn a_burst_of_attackers_is_banned_as_one_request_with_one_summary_line() {
    let log = Log::new();
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, &log.jail(""));
    let attackers: Vec<String> = (0..300)
        .map(|i| format!("11.0.{}.{}", i / 250, i % 250 + 1))
        .collect();
    // Three rounds of one failure per attacker, written at once.
    let burst: Vec<String> = (0..3)
        .flat_map(|_| attackers.iter().flat_map(|addr| failures(addr, 1)))
        .collect();
    log.append(&burst);
    wait_until(
        Duration::from_secs(10),
        "300 attackers in the kernel",
        || netns.set_elements("orch", "ban4").len() == 300,
    );
    let text = daemon.log();
    let one_by_one = text.lines().filter(|l| l.contains("banned for")).count();
    let summaries = text
        .lines()
        .filter(|l| l.contains("not logged one by one"))
        .count();
    assert!(
        summaries >= 1 && one_by_one < 300,
        "{one_by_one} ban lines and {summaries} summaries for 300 bans:\n{text}"
    );
    let status = daemon.cli(&["status"]).expect_ok("status").stdout;
    assert!(status.contains("jail sshd: 300 active bans"), "{status}");
}
