//! A burst of attackers in a live jail, against one `BanMany` of as many:
//! N attackers × 5 sshd failures (maxretry 5) are appended to a followed
//! file at once, and the time until all N are in the kernel set is taken,
//! with the daemon's CPU seconds meanwhile. Then one `BanMany` of N other
//! addresses is timed on the same daemon. Issue 19's goal: a jail burst
//! of 20k attackers within 2× the time of one 20k `BanMany`.
//!
//! Run as root: `cargo bench --bench jail_burst [-- N...]` (default
//! 2000 20000 100000; figures go to docs/benchmarks.md). Uses a fresh
//! network namespace, a private dbus-daemon and the release `orch`
//! binary, like the integration tests.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{Daemon, NetNs, TestBus, cpu_seconds};
use support::probe::Sampler;

/// Failures per attacker, and the jail's maxretry.
const FAILURES: usize = 5;

/// Five rounds of one failure line per attacker, so every attacker
/// reaches maxretry only in the last fifth of the burst.
fn burst_text(attackers: &[String]) -> String {
    let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
    let mut text = String::with_capacity(attackers.len() * FAILURES * 100);
    for round in 0..FAILURES {
        for (i, addr) in attackers.iter().enumerate() {
            text.push_str(&format!(
                "{stamp} web1 sshd[{}]: Failed password for invalid user u{i} from {addr} port {} ssh2\n",
                4000 + round,
                10_000 + round
            ));
        }
    }
    text
}

fn kernel_ban_count(netns: &NetNs) -> usize {
    netns.set_elements("orch", "ban4").len()
}

fn bench(count: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("create log");
    let config = format!(
        "[jails]\nmax_tracked = {}\n[jails.burst]\nfilter = \"sshd\"\nfiles = [\"{}\"]\nmaxretry = {FAILURES}\n",
        count.max(50_000),
        log.display()
    );
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, &config);
    let attackers = support::addresses_from(Ipv4Addr::new(11, 0, 0, 1), count);
    let text = burst_text(&attackers);
    // The last attacker's fifth failure is the burst's last line, so its
    // ban is in the last request: once it is in the kernel, all are (the
    // core takes requests in order). It is looked up every millisecond
    // with one netlink request (support::probe); the whole set is counted
    // once at the end.
    let last: Ipv4Addr = attackers
        .last()
        .and_then(|addr| addr.parse().ok())
        .expect("at least one attacker");
    let sampler = Sampler::start(&netns.path(), "orch", "ban4", Duration::from_millis(1));
    let cpu_before = cpu_seconds(daemon.pid());
    let started = Instant::now();
    support::append(&log, &text);
    sampler.watch(last, started);
    let seen = sampler.finish(started + Duration::from_secs(600));
    let last_in = seen.first().and_then(|sample| sample.latency());
    let burst_cpu = cpu_seconds(daemon.pid()) - cpu_before;
    let burst = last_in.expect("the last attacker was not banned within 600 s");
    assert_eq!(kernel_ban_count(&netns), count, "every attacker is banned");

    let others = support::addresses_from(Ipv4Addr::new(12, 0, 0, 1), count);
    let ban_many = support::timed_ban_many(bus.address(), &others);
    println!(
        "jail burst, {count} attackers x {FAILURES} lines: all banned in {:.3} s ({:.0} bans/s), daemon CPU {burst_cpu:.2} s; \
         one BanMany of {count}: {:.3} s; ratio {:.2}; daemon RSS after: {}",
        burst.as_secs_f64(),
        count as f64 / burst.as_secs_f64(),
        ban_many.as_secs_f64(),
        burst.as_secs_f64() / ban_many.as_secs_f64(),
        daemon.rss_text()
    );
}

fn main() {
    // `cargo test --all-targets` runs this too; only work when benchmarking.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("jail burst bench: run with `cargo bench --bench jail_burst`");
        return;
    }
    let counts: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() {
        vec![2_000, 20_000, 100_000]
    } else {
        counts
    };
    for count in counts {
        bench(count);
    }
}
