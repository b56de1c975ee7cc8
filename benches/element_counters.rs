//! What per-address counters (`[firewall] element_counters = true`, for
//! `orch query`) cost: a daemon in a fresh network namespace bans N
//! addresses with one BanMany, with and without counters; the bench reports
//! the call's time and the kernel memory the bans took (Slab and Percpu
//! from /proc/meminfo, before and after; the machine should be otherwise
//! idle). Per-CPU memory grows with the number of CPUs.
//!
//! Run as root: `cargo bench --bench element_counters` (figures go to
//! docs/benchmarks.md, "Per-address counters").

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::net::Ipv4Addr;

use common::{Daemon, NetNs, TestBus};

/// Kernel memory in KiB that sets and their counters use: slab and per-CPU.
fn kernel_kib() -> (u64, u64) {
    let info = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Slab:"), field("Percpu:"))
}

fn bench(count: usize, counters: bool) {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let config = format!("[firewall]\nelement_counters = {counters}\n");
    let daemon = Daemon::start(&netns, &bus, &config);
    let addresses = support::addresses_from(Ipv4Addr::new(11, 0, 0, 1), count);
    let (slab_before, percpu_before) = kernel_kib();
    let took = support::timed_ban_many(bus.address(), &addresses);
    let (slab_after, percpu_after) = kernel_kib();
    assert_eq!(netns.set_elements("orch", "ban4").len(), count);
    let mib = |kib: u64, before: u64| kib.saturating_sub(before) as f64 / 1024.0;
    println!(
        "{count} bans, element_counters = {counters}: BanMany {:.2} s; kernel +{:.1} MiB slab, +{:.1} MiB per-CPU ({} CPUs); daemon RSS {}",
        took.as_secs_f64(),
        mib(slab_after, slab_before),
        mib(percpu_after, percpu_before),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        daemon.rss_text()
    );
    drop(daemon);
}

fn main() {
    // `cargo test --all-targets` runs benches too: only measure when asked.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("element_counters bench: run with `cargo bench --bench element_counters`");
        return;
    }
    for count in [100_000, 1_000_000] {
        for counters in [false, true] {
            bench(count, counters);
        }
    }
}
