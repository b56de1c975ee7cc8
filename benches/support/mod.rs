//! Shared by the benches: distinct addresses to ban, a timed `BanMany`
//! call through the D-Bus client, appending a burst to a log, and
//! [`probe`], which watches for addresses to reach the kernel.
//!
//! Bench support only: no measuring policy here, and nothing the daemon
//! uses.

// Each bench uses only some of these.
#![allow(dead_code)]

pub mod probe;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// `count` distinct public-looking IPv4 addresses, from `first` upward.
pub fn addresses_from(first: Ipv4Addr, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| Ipv4Addr::from(u32::from(first) + i as u32).to_string())
        .collect()
}

/// Bans `addresses` with one `BanMany` on the bus at `bus_address` and
/// returns how long the call took (validated, fsynced, in the kernel).
pub fn timed_ban_many(bus_address: &str, addresses: &[String]) -> Duration {
    // SAFETY (of set_var): benches call this before starting threads of
    // their own; the client reads it once to connect.
    unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", bus_address) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    runtime.block_on(async {
        let proxy = orch::bus::client::connect(Duration::from_secs(120))
            .await
            .expect("connect");
        let started = Instant::now();
        let banned = proxy.ban_many(&refs, 3600, "bench").await.expect("BanMany");
        let elapsed = started.elapsed();
        assert_eq!(banned as usize, addresses.len());
        elapsed
    })
}

/// Appends `text` to the file at `path` in one write (a burst).
pub fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("append to the log");
}
