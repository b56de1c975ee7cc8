//! Foundation benchmarks: BanMany throughput, daemon start with 100k and 1M
//! stored bans (until all are in the kernel), and daemon RSS at 100k bans.
//!
//! Run as root: `cargo bench --bench core` (figures go to docs/benchmarks.md).
//! Each scenario uses a fresh network namespace, a private dbus-daemon and
//! the release `orch` binary, like the integration tests.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use common::{Daemon, NetNs, TestBus};
use orch::store::{BanRecord, Store};

/// `count` distinct public-looking IPv4 addresses (from 11.0.0.1 upward).
fn addresses(count: usize) -> Vec<String> {
    support::addresses_from(Ipv4Addr::new(11, 0, 0, 1), count)
}

fn kernel_ban_count(netns: &NetNs) -> usize {
    netns.set_elements("orch", "ban4").len()
}

fn bench_ban_many(count: usize) {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "");
    let elapsed = support::timed_ban_many(bus.address(), &addresses(count));
    let in_kernel = kernel_ban_count(&netns);
    assert_eq!(in_kernel, count, "all bans in the kernel");
    println!(
        "BanMany {count}: {:.3} s, {:.0} bans/s (call to reply: validated, fsynced, in the kernel); daemon RSS after: {}",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        daemon.rss_text()
    );
}

fn bench_start(count: usize) {
    let netns = NetNs::new();
    let bus = TestBus::start();
    // Start once to create the state dir, stop, fill the store directly, start again.
    let mut daemon = Daemon::start(&netns, &bus, "");
    daemon.stop();
    {
        let now = orch::timefmt::now_unix();
        let mut store = Store::open(&daemon.state_dir, now).expect("open store");
        let reason: Arc<str> = Arc::from("bench");
        let source: Arc<str> = Arc::from("manual");
        let records: Vec<BanRecord> = addresses(count)
            .iter()
            .map(|a| BanRecord {
                net: a.parse::<std::net::IpAddr>().expect("generated").into(),
                created: now,
                expires: now + 86_400,
                reason: reason.clone(),
                source: source.clone(),
            })
            .collect();
        for chunk in records.chunks(100_000) {
            store.insert_bans(chunk).expect("insert");
        }
        store.compact().expect("compact");
    }
    let load_started = Instant::now();
    let reopened = Store::open(&daemon.state_dir, orch::timefmt::now_unix()).expect("reopen store");
    let load_elapsed = load_started.elapsed();
    assert_eq!(reopened.ban_count(), count);
    drop(reopened);
    println!(
        "store open with {count} bans: {:.3} s (read, CRC-check and index every record)",
        load_elapsed.as_secs_f64()
    );
    // A million elements take several seconds in nftables alone.
    daemon.set_ready_timeout(std::time::Duration::from_secs(120));
    let started = Instant::now();
    daemon.restart(&netns, &bus);
    let elapsed = started.elapsed();
    let in_kernel = kernel_ban_count(&netns);
    assert_eq!(in_kernel, count, "all stored bans in the kernel");
    println!(
        "start with {count} stored bans: {:.3} s until serving D-Bus with all {in_kernel} in the kernel; daemon RSS: {}",
        elapsed.as_secs_f64(),
        daemon.rss_text()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too, so
    // only do the heavy work when asked for a benchmark run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("core benches: run with `cargo bench --bench core`");
        return;
    }
    bench_ban_many(100_000);
    bench_start(100_000);
    bench_start(1_000_000);
}
