//! Log-jail memory and throughput in the daemon: a file jail reads 1M
//! failure lines, each from a different address (a flood of distinct
//! sources, as from a botnet or spoofed logs), and the daemon's RSS is
//! measured once every line is counted.
//!
//! Run as root: `cargo bench --bench jail_memory` (figures go to
//! docs/benchmarks.md). Uses a fresh network namespace, a private
//! dbus-daemon and the release `orch` binary, like the integration tests.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::{Daemon, NetNs, TestBus};

const LINES: u32 = 1_000_000;

/// (lines read, addresses tracked) of jail `flood`, from `orch status`.
fn jail_progress(daemon: &Daemon) -> (u64, u64) {
    let status = daemon.cli(&["status"]).stdout;
    let Some(line) = status.lines().find(|l| l.starts_with("jail flood:")) else {
        return (0, 0);
    };
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[3], numbers[1])
}

/// One failure line per distinct address, 1 in 4 of them IPv6: each in a
/// /64 of its own (distinct sources, as jails count IPv6 per /64), or all
/// in one /64 (`one_prefix`: one attacker rotating through its /64).
fn flood_text(one_prefix: bool) -> String {
    let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
    let mut text = String::with_capacity(LINES as usize * 110);
    for i in 0..LINES {
        let addr = if i % 4 == 3 {
            let step = if one_prefix { 1 } else { 1u128 << 64 };
            Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i) * step)
                .to_string()
        } else {
            Ipv4Addr::from(0x0B00_0001u32 + i).to_string()
        };
        text.push_str(&format!(
            "{stamp} web1 sshd[4242]: Failed password for invalid user u{i} from {addr} port 4000 ssh2\n"
        ));
    }
    text
}

fn bench(max_tracked: Option<u32>, one_prefix: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("create log");
    let cap = max_tracked.map_or(String::new(), |n| format!("[jails]\nmax_tracked = {n}\n"));
    let config = format!(
        "{cap}[jails.flood]\nfilter = \"sshd\"\nfiles = [\"{}\"]\nmaxretry = 5\n",
        log.display()
    );
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, &config);
    let idle = daemon.rss_kib();
    let text = flood_text(one_prefix);
    let started = Instant::now();
    support::append(&log, &text);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut peak = 0;
    let (read, tracked) = loop {
        peak = peak.max(daemon.rss_kib());
        let progress = jail_progress(&daemon);
        if progress.0 >= u64::from(LINES) || Instant::now() > deadline {
            break progress;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let after = daemon.rss_kib();
    println!(
        "jail flood, max_tracked {}{}: {read} lines from {LINES} distinct addresses in {:.2} s ({:.0} lines/s in the daemon), \
         {tracked} tracked; RSS idle {idle} KiB, peak {} KiB, after {after} KiB",
        max_tracked.map_or("default (50000)".to_string(), |n| n.to_string()),
        if one_prefix {
            ", IPv6 all in one /64"
        } else {
            ""
        },
        elapsed.as_secs_f64(),
        read as f64 / elapsed.as_secs_f64(),
        peak.max(after),
    );
}

fn main() {
    // `cargo test --all-targets` runs this too; only work when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        println!("jail memory bench: run with `cargo bench --bench jail_memory`");
        return;
    }
    bench(None, false);
    bench(Some(LINES), false);
    bench(None, true);
}
