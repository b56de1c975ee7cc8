//! Control-plane benchmarks (issue: no local user can knock orch off the
//! bus or starve it): a read flood from uid 65534 while root and a jail
//! ban, and listing a million bans page by page.
//!
//! Run as root: `cargo bench --bench control_plane` (figures go to
//! docs/benchmarks.md). Each scenario uses a fresh network namespace, a
//! private dbus-daemon and the release `orch` binary, like the integration
//! tests; the hostile calls come from tests/fixtures/big_call.py (python3-gi)
//! run as uid 65534.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, NetNs, TestBus, nobody_command, poll_until, run_command};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/big_call.py");

fn big_call(bus: &TestBus, as_nobody: bool, mode: &str, size: usize) -> serde_json::Value {
    bus.big_call(as_nobody, mode, size)
}

/// Runs `orch list` against the bus, counting its lines; returns the line
/// count and the CLI's peak RSS in KiB (from wait4's rusage, which is why
/// the child is reaped by hand).
#[allow(clippy::zombie_processes)]
fn orch_list_lines_and_max_rss(bus: &TestBus) -> (usize, i64) {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(common::orch_bin())
        .arg("list")
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn orch list");
    let stdout = child.stdout.take().expect("piped");
    let lines = BufReader::new(stdout).lines().count();
    let mut status = 0;
    // SAFETY: rusage is plain data filled in by wait4 for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for the child spawned above, which nothing else reaps.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4");
    assert!(
        std::process::ExitStatus::from_raw(status).success(),
        "orch list failed"
    );
    (lines, usage.ru_maxrss)
}

fn bench_read_flood(held: usize, reads: usize) {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let log_dir = tempfile::tempdir().expect("log dir");
    let log = log_dir.path().join("auth.log");
    std::fs::write(&log, "").expect("log");
    let daemon = Daemon::start(
        &netns,
        &bus,
        &format!(
            "[jails.sshd]\nfiles = [\"{}\"]\nmaxretry = 1\nfindtime = \"10m\"\nbantime = \"1h\"\n",
            log.display()
        ),
    );
    let banned = big_call(&bus, false, "ban-many-distinct", held);
    assert_eq!(banned["answer"], serde_json::json!([held]));

    let address = bus.address().to_owned();
    let flood = std::thread::spawn(move || {
        let out = run_command(
            nobody_command("/usr/bin/python3")
                .arg(SCRIPT)
                .arg(&address)
                .arg("read-flood")
                .arg(reads.to_string()),
        )
        .expect_ok("read flood");
        serde_json::from_str::<serde_json::Value>(out.stdout.trim()).expect("JSON")
    });
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    daemon
        .cli(&["ban", "192.0.2.200", "--for", "1h"])
        .expect_ok("root ban");
    let root_ban = started.elapsed();

    let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
    let started = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open log");
    writeln!(
        file,
        "{stamp} web1 sshd-session[4242]: Failed password for root from 198.51.100.77 port 40000 ssh2"
    )
    .expect("append");
    let jailed = poll_until(Duration::from_secs(30), || {
        daemon
            .cli(&["list", "--prefix", "198.51.100.77/32"])
            .stdout
            .contains("198.51.100.77")
    });
    let jail_ban = started.elapsed();
    assert!(jailed, "the jail banned");
    let flood = flood.join().expect("flood");
    println!(
        "read flood: {reads} GetAll from uid 65534 over 50 connections, {held} bans held: {flood}"
    );
    println!(
        "  during it: root `orch ban` {:.0} ms, jail ban (line appended -> listed) {:.0} ms; daemon RSS {}",
        root_ban.as_secs_f64() * 1000.0,
        jail_ban.as_secs_f64() * 1000.0,
        daemon.rss_text()
    );
}

fn bench_list_million(count: usize) {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let mut daemon = Daemon::start(&netns, &bus, "");
    daemon.set_ready_timeout(Duration::from_secs(120));
    let started = Instant::now();
    let banned = big_call(&bus, false, "ban-many-distinct", count);
    assert_eq!(banned["answer"], serde_json::json!([count]));
    println!(
        "BanMany {count} (python client, building included): {:.1} s; daemon RSS {}",
        started.elapsed().as_secs_f64(),
        daemon.rss_text()
    );
    let started = Instant::now();
    let paged = big_call(&bus, true, "page-all", 0);
    println!(
        "paged by uid 65534: {paged} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let (lines, max_rss_kib) = orch_list_lines_and_max_rss(&bus);
    println!(
        "orch list: {lines} lines in {:.1} s, CLI peak RSS {:.1} MiB; daemon RSS after {}",
        started.elapsed().as_secs_f64(),
        max_rss_kib as f64 / 1024.0,
        daemon.rss_text()
    );
    let started = Instant::now();
    daemon.restart(&netns, &bus);
    println!(
        "restart with {count} stored bans until D-Bus answers: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // too, so only do the heavy work when asked for a benchmark run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("control-plane benches: run with `cargo bench --bench control_plane`");
        return;
    }
    bench_read_flood(200_000, 5000);
    bench_list_million(1_000_000);
}
