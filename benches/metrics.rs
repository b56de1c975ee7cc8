//! What a metrics scrape costs with many active bans: the daemon (release
//! build, fresh network namespace, private dbus-daemon) serves
//! `GET /metrics` on a unix socket; scrapes are timed end to end (connect,
//! request, the whole body) with no bans and with 100,000 bans.
//!
//! Run as root: `cargo bench --bench metrics` (figures go to
//! docs/benchmarks.md). A scrape reads counts the core already published
//! and one dump of the table's rules, never the bans or the set elements,
//! so its cost should not grow with the number of bans.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Daemon, NetNs, TestBus};

const SCRAPES: usize = 200;
const BANS: usize = 100_000;

/// One scrape: how long it took and how many bytes came back.
fn scrape(socket: &Path) -> (Duration, usize) {
    let started = Instant::now();
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .expect("request");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("reply");
    let took = started.elapsed();
    assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"), "not a 200");
    (took, reply.len())
}

/// Median and 99th percentile of `SCRAPES` scrapes, and the reply size.
fn measure(socket: &Path, label: &str) {
    let mut times: Vec<Duration> = Vec::with_capacity(SCRAPES);
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        let (took, size) = scrape(socket);
        times.push(took);
        bytes = size;
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "metrics scrape, {label}: median {:.2} ms, p99 {:.2} ms, max {:.2} ms over {SCRAPES} scrapes; reply {bytes} bytes",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
}

fn main() {
    // `cargo test --all-targets` runs this too; work only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("metrics bench: run with `cargo bench --bench metrics`");
        return;
    }
    let netns = NetNs::new();
    let bus = TestBus::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("metrics.sock");
    let config = format!("[metrics]\nlisten = \"{}\"\n", socket.display());
    let _daemon = Daemon::start(&netns, &bus, &config);
    measure(&socket, "no bans");
    let addresses = support::addresses_from(Ipv4Addr::new(11, 0, 0, 1), BANS);
    let took = support::timed_ban_many(bus.address(), &addresses);
    println!("BanMany of {BANS}: {:.2} s", took.as_secs_f64());
    measure(&socket, &format!("{BANS} active bans"));
}
