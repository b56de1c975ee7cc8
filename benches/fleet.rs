//! Fleet benchmarks: how fast a ban made on one host is in another host's
//! kernel, through a real nats-server (current upstream, TLS, per-host
//! users) and real orch daemons.
//!
//! - latency: 1,000 single `Ban` calls on srv1, one after another; each is
//!   timed from the call to the moment srv2's kernel set has it (read from
//!   `nft monitor` in the hosts' network namespace): p50, p99, max;
//! - BanMany of 100,000 on srv1 until all are applied on srv2 (srv2's
//!   BanCount; the core answers it only after the job that stored and
//!   applied the last batch);
//! - a fresh host joining while the bucket holds those 100,000, from its
//!   start until all are applied.
//!
//! Run as root: `cargo bench --bench fleet` (figures go to
//! docs/benchmarks.md). The hosts and the server each have their own
//! network namespace on one bridge (`tests/common/fleet_topology.rs`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::NetNs;
use common::fleet_topology::{FleetNats, FleetOpts, Host, Topology, host_config};
use common::nats::NatsVersion;

const SINGLE_BANS: usize = 1_000;
const MANY: usize = 100_000;

fn addresses(first: u32, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| Ipv4Addr::from(first + i as u32).to_string())
        .collect()
}

async fn proxy(host: &Host) -> orch::bus::client::Orch1Proxy<'static> {
    let connection = zbus::connection::Builder::address(host.bus.address())
        .method_timeout(Duration::from_secs(300))
        .build()
        .await
        .expect("connect to the host's bus");
    orch::bus::client::Orch1Proxy::builder(&connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("proxy")
}

/// Follows `nft monitor` in `netns` and reports, for each element added
/// to `table`'s `ban4`, the address and when the line arrived.
fn watch_kernel(
    netns: &NetNs,
    table: &str,
) -> (mpsc::Receiver<(String, Instant)>, std::process::Child) {
    let mut child = netns
        .command("nft")
        .args(["monitor", "elements"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nft monitor");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    let prefix = format!("add element inet {table} ban4 {{ ");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let at = Instant::now();
            if line.starts_with(&format!("add element inet {PROBE_TABLE} ")) {
                if sender.send((PROBE_TABLE.to_string(), at)).is_err() {
                    return;
                }
            } else if let Some(rest) = line.strip_prefix(&prefix) {
                for element in rest.trim_end_matches(" }").split(", ") {
                    let addr = element.split_whitespace().next().unwrap_or_default();
                    if sender.send((addr.to_string(), at)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    // `nft monitor` listens only some time after it starts: change a probe
    // set until it reports that, so no measured ban can come before it.
    let nft = |script: &str| {
        netns.nft_script(script).expect_ok(script);
    };
    nft(&format!(
        "table inet {PROBE_TABLE} {{ set probe {{ type ipv4_addr; }}; }}"
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    for round in 1u32.. {
        nft(&format!(
            "add element inet {PROBE_TABLE} probe {{ 10.255.{}.{} }}",
            round / 250,
            round % 250 + 1
        ));
        if let Ok((what, _)) = receiver.recv_timeout(Duration::from_millis(50)) {
            assert_eq!(what, PROBE_TABLE, "a ban arrived before any was made");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nft monitor never reported the probe"
        );
    }
    nft(&format!("delete table inet {PROBE_TABLE}"));
    while receiver.try_recv().is_ok() {}
    (receiver, child)
}

/// A table `watch_kernel` changes to learn that `nft monitor` listens.
const PROBE_TABLE: &str = "orch_bench_probe";

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // too, so only do the work when asked for a benchmark run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("fleet benches: run with `cargo bench --bench fleet`");
        return;
    }
    let mut topo = Topology::new();
    let nats = FleetNats::start(&topo, NatsVersion::Current);
    nats.create_bucket(&topo, 1);
    // Above the default caps of 100,000 remote bans, and of 10,000 from
    // one origin.
    let opts = FleetOpts {
        extra: "max_remote_bans = 1000000\nmax_remote_bans_per_origin = 1000000\n".into(),
        ..FleetOpts::default()
    };
    for name in ["srv1", "srv2"] {
        let config = host_config(&[], false, &nats.fleet_section(name, &opts));
        topo.host_mut(name).start_daemon(&config);
    }
    let (srv1, srv2) = (topo.host("srv1"), topo.host("srv2"));
    common::wait_until(Duration::from_secs(20), "both hosts connected", || {
        srv1.fleet_connected_property().contains("true")
            && srv2.fleet_connected_property().contains("true")
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Latency of single bans.
    let (arrivals, mut monitor) = watch_kernel(&srv2.ns, "orch");
    let singles = addresses(0x0B00_0001, SINGLE_BANS);
    let mut latencies = runtime.block_on(async {
        let srv1_proxy = proxy(srv1).await;
        let mut seen: HashMap<String, Instant> = HashMap::new();
        let mut latencies = Vec::with_capacity(SINGLE_BANS);
        for address in &singles {
            let started = Instant::now();
            srv1_proxy.ban(address, 3600, "bench").await.expect("Ban");
            let deadline = started + Duration::from_secs(10);
            let arrived = loop {
                if let Some(at) = seen.remove(address) {
                    break at;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match arrivals.recv_timeout(left) {
                    Ok((addr, at)) => {
                        seen.insert(addr, at);
                    }
                    Err(_) => panic!("{address} did not reach srv2 within 10 s"),
                }
            };
            latencies.push(arrived.saturating_duration_since(started));
        }
        latencies
    });
    let _ = monitor.kill();
    let _ = monitor.wait();
    latencies.sort();
    println!(
        "propagation of {SINGLE_BANS} single bans, srv1 Ban call to srv2's kernel: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    // BanMany of 100k.
    let many = addresses(0x0C00_0001, MANY);
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let expected = (SINGLE_BANS + MANY) as u32;
    let nats_pid = nats
        .server
        .as_ref()
        .and_then(|server| server.pid())
        .unwrap_or(0);
    let pids = [
        ("srv1", srv1.daemon().pid()),
        ("srv2", srv2.daemon().pid()),
        ("nats-server", nats_pid),
    ];
    let cpu_before = pids.map(|(_, pid)| common::cpu_seconds(pid));
    let (call, total) = runtime.block_on(async {
        let srv1_proxy = proxy(srv1).await;
        let srv2_proxy = proxy(srv2).await;
        let started = Instant::now();
        srv1_proxy
            .ban_many(&refs, 3600, "bench")
            .await
            .expect("BanMany");
        let call = started.elapsed();
        let deadline = started + Duration::from_secs(120);
        while srv2_proxy.ban_count().await.expect("BanCount") < expected {
            assert!(
                Instant::now() < deadline,
                "srv2 did not get all bans in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (call, started.elapsed())
    });
    let cpu_used: Vec<String> = pids
        .iter()
        .zip(cpu_before)
        .map(|((name, pid), before)| format!("{name} {:.2} s", common::cpu_seconds(*pid) - before))
        .collect();
    println!(
        "BanMany {MANY} on srv1: call {:.2} s; all applied on srv2 after {:.2} s; CPU used meanwhile: {}",
        call.as_secs_f64(),
        total.as_secs_f64(),
        cpu_used.join(", ")
    );

    if std::env::var_os("ORCH_BENCH_LOGS").is_some() {
        for (name, host) in [("srv1", srv1), ("srv2", srv2)] {
            for line in host.log().lines().filter(|l| l.contains("fleet: ")) {
                println!("{name}: {line}");
            }
        }
    }

    // A fresh host joins: the gateway's namespace, its first daemon start.
    let started = Instant::now();
    let config = host_config(&[], false, &nats.fleet_section("gw", &opts));
    topo.host_mut("gw").start_daemon(&config);
    let gw = topo.host("gw");
    let joined = runtime.block_on(async {
        let gw_proxy = proxy(gw).await;
        let deadline = started + Duration::from_secs(120);
        while gw_proxy.ban_count().await.expect("BanCount") < expected {
            assert!(Instant::now() < deadline, "gw did not catch up in 120 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    });
    println!(
        "fresh host joining a fleet holding {} bans: all applied {:.2} s after its start (daemon start included); RSS {} (srv2, which got them live: {}; srv1, which made and published them: {})",
        expected,
        joined.as_secs_f64(),
        gw.daemon().rss_text(),
        topo.host("srv2").daemon().rss_text(),
        topo.host("srv1").daemon().rss_text()
    );
}
