//! End-to-end fleet tests: real orch daemons on the hosts of
//! `tests/common/fleet_topology.rs` (attacker → gateway → srv1/srv2/srv3,
//! NATS on the inside network), sharing bans over NATS JetStream KV with TLS
//! and per-host users.
//!
//! The first two tests check the harness itself (routing, link cuts, NATS
//! reachability, daemons starting with a `[fleet]` section, local bans and
//! the gateway's forward path) and need nothing from the fleet module. The
//! others are ignored until the daemon's fleet module lands.
//!
//! Tests wait by polling with deadlines; when a bound is part of the
//! requirement (1 s propagation, 5 s convergence) they poll longer and then
//! assert the measured time, so a failure says how long it took. Everything
//! (namespaces, daemons, buses, servers) is torn down on `Drop`; a failing
//! test prints the daemons' and the server's log tails. These tests must not
//! reach any address outside their namespaces.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fleet_lab::{Lab, PATIENCE, RECONNECT, ban_value};
use common::fleet_topology::{
    ATTACKER_ADDRS, ATTACKER_BANNED, ATTACKER_NEIGHBOUR, CONNECT_TIMEOUT, FleetNats, FleetOpts,
    Host, NATS_ADDR, SERVICE_PORT, SRV1_ADDR, SRV2_ADDR, SRV3_ADDR, Topology, fleet_key,
    measure_until,
};
use common::nats::{ADMIN, NatsVersion};
use common::{poll_until, wait_until};

/// The fleet's propagation bound (issue requirement).
const PROPAGATION: Duration = Duration::from_secs(1);
/// The bound for a partitioned host to catch up once its link is back.
const CONVERGENCE: Duration = Duration::from_secs(5);

/// `198.18.a.b` test addresses (RFC 2544 benchmarking range), `n` of them.
fn bench_addrs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("198.18.{}.{}", i / 250, i % 250 + 1))
        .collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The elements of `host`'s `ban4` in 198.18.0.0/15.
fn bench_bans(host: &Host) -> BTreeSet<String> {
    host.set("ban4")
        .into_iter()
        .filter(|e| e.starts_with("198.18.") || e.starts_with("198.19."))
        .collect()
}

// ---------------------------------------------------------------------------
// The harness on its own (no fleet module needed)

#[test]
fn topology_routes_through_the_gateway_and_reaches_nats() {
    let topo = Topology::new();
    let nats = FleetNats::start(&topo, NatsVersion::Current);
    let nats_port = nats.first().port();
    topo.srv2.ns.listen(SERVICE_PORT);
    topo.srv3.listen(SERVICE_PORT);

    // Outside → inside through the gateway, from every attacker address.
    for from in ATTACKER_ADDRS {
        for to in [SRV2_ADDR, SRV3_ADDR] {
            topo.wait_attacker(from, to, SERVICE_PORT, true, Duration::from_secs(5));
        }
    }
    // Inside to inside, and every host to NATS from its own address.
    assert!(
        topo.srv1
            .ns
            .connect_from(SRV1_ADDR, SRV2_ADDR, SERVICE_PORT, CONNECT_TIMEOUT)
    );
    let to_nats = |ns: &common::NetNs, from: &str| {
        ns.connect_from(from, NATS_ADDR, nats_port, CONNECT_TIMEOUT)
    };
    for (name, ns, from) in [
        ("gw", &topo.gw.ns, common::fleet_topology::GW_INSIDE),
        ("srv1", &topo.srv1.ns, SRV1_ADDR),
        ("srv2", &topo.srv2.ns, SRV2_ADDR),
        ("srv3", &topo.srv3, SRV3_ADDR),
    ] {
        assert!(to_nats(ns, from), "{name} cannot reach NATS at {NATS_ADDR}");
    }
    // The attacker reaches the inside network but not through any other
    // path than the gateway: without forwarding it is cut off.
    topo.gw
        .ns
        .run("sysctl", &["-qw", "net.ipv4.ip_forward=0"])
        .expect_ok("ip_forward off");
    assert!(!topo.attacker_connects(ATTACKER_NEIGHBOUR, SRV2_ADDR, SERVICE_PORT));
    topo.gw
        .ns
        .run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .expect_ok("ip_forward on");
    topo.wait_attacker(
        ATTACKER_NEIGHBOUR,
        SRV2_ADDR,
        SERVICE_PORT,
        true,
        Duration::from_secs(5),
    );

    // Cutting srv2's link isolates srv2 only; restoring it heals.
    topo.link_down("srv2");
    assert!(
        !to_nats(&topo.srv2.ns, SRV2_ADDR),
        "srv2 reaches NATS while cut"
    );
    assert!(!topo.attacker_connects(ATTACKER_NEIGHBOUR, SRV2_ADDR, SERVICE_PORT));
    assert!(
        to_nats(&topo.srv1.ns, SRV1_ADDR),
        "srv1 lost NATS when srv2 was cut"
    );
    assert!(topo.attacker_connects(ATTACKER_NEIGHBOUR, SRV3_ADDR, SERVICE_PORT));
    topo.link_up("srv2");
    wait_until(Duration::from_secs(5), "srv2 to reach NATS again", || {
        to_nats(&topo.srv2.ns, SRV2_ADDR)
    });
    topo.wait_attacker(
        ATTACKER_NEIGHBOUR,
        SRV2_ADDR,
        SERVICE_PORT,
        true,
        Duration::from_secs(5),
    );

    // The NATS side: TLS with the test CA and the per-host users, from the
    // nats namespace (the admin creates the bucket, srv1 writes its key).
    nats.create_bucket(&topo, 1);
    nats.with_kv(&topo, "srv1", async |kv| {
        kv.put(fleet_key("srv1", "192.0.2.7"), Bytes::from_static(b"{}"))
            .await
            .expect("srv1 puts its own key");
    });
    assert_eq!(nats.keys(&topo), vec!["srv1.192.0.2.7/32".to_string()]);
    assert_eq!(fleet_key("srv1", "2001:db8::1"), "srv1.2001_db8__1/128");
    assert_eq!(fleet_key("srv1", "10.0.0.0/8"), "srv1.10.0.0.0/8");
    assert!(nats.bucket_exists(&topo));
}

#[test]
fn hosts_start_with_a_fleet_section_and_enforce_local_bans() {
    let mut lab = Lab::new(NatsVersion::Current);
    // Neither publishing nor applying: each host's bans stay its own, with
    // or without the fleet module.
    let local = FleetOpts {
        extra: "publish = false\napply = false\n".into(),
        ..FleetOpts::default()
    };
    lab.start("srv1", &[], false, &local);
    lab.start("srv2", &["192.0.2.0/24"], false, &local);
    lab.start(
        "gw",
        &[],
        true,
        &FleetOpts {
            admin: true,
            ..local.clone()
        },
    );
    let topo = &lab.topo;
    topo.srv2.ns.listen(SERVICE_PORT);
    topo.srv3.listen(SERVICE_PORT);
    for to in [SRV2_ADDR, SRV3_ADDR] {
        topo.wait_attacker(
            ATTACKER_BANNED,
            to,
            SERVICE_PORT,
            true,
            Duration::from_secs(5),
        );
    }

    // srv2's own ban drops .66 at srv2 and nowhere else.
    topo.srv2.ban(&[ATTACKER_BANNED]);
    assert!(topo.srv2.kernel_has(ATTACKER_BANNED));
    assert_eq!(
        topo.srv2.listed_source(ATTACKER_BANNED).as_deref(),
        Some("manual")
    );
    assert!(!topo.attacker_connects(ATTACKER_BANNED, SRV2_ADDR, SERVICE_PORT));
    topo.wait_attacker(ATTACKER_NEIGHBOUR, SRV2_ADDR, SERVICE_PORT, true, PATIENCE);
    assert!(topo.attacker_connects(ATTACKER_BANNED, SRV3_ADDR, SERVICE_PORT));
    topo.srv2.ban(&["2001:db8::66", "203.0.113.0/24"]);
    assert!(topo.srv2.kernel_has("2001:db8::66") && topo.srv2.kernel_has("203.0.113.0/24"));
    assert!(!topo.srv1.kernel_has("2001:db8::66"));
    // srv2's allowlist holds.
    assert!(!topo.srv2.cli(&["ban", "192.0.2.77"]).ok());
    topo.srv2.unban(&[ATTACKER_BANNED]);
    topo.wait_attacker(ATTACKER_BANNED, SRV2_ADDR, SERVICE_PORT, true, PATIENCE);

    // The gateway's own ban (forward = true) drops .66's forwarded traffic
    // to srv3, which runs no orch; .67 still passes.
    topo.gw.ban(&[ATTACKER_BANNED]);
    let table = topo.gw.ns.nft(&["list", "table", "inet", "orch"]);
    assert!(table.stdout.contains("hook forward"), "{table}");
    assert!(!topo.attacker_connects(ATTACKER_BANNED, SRV3_ADDR, SERVICE_PORT));
    topo.wait_attacker(ATTACKER_NEIGHBOUR, SRV3_ADDR, SERVICE_PORT, true, PATIENCE);
    topo.gw.unban(&[ATTACKER_BANNED]);
    topo.wait_attacker(ATTACKER_BANNED, SRV3_ADDR, SERVICE_PORT, true, PATIENCE);
}

// ---------------------------------------------------------------------------
// Propagation

fn propagation(version: NatsVersion) {
    let mut lab = Lab::new(version);
    lab.start_connected(&["srv1", "srv2", "gw"]);
    let topo = &lab.topo;
    let v6 = "2001:db8::66";
    topo.srv2.ns.listen(SERVICE_PORT);
    topo.wait_attacker(ATTACKER_BANNED, SRV2_ADDR, SERVICE_PORT, true, PATIENCE);

    topo.srv1.ban(&[ATTACKER_BANNED, v6]);
    let banned_at = Instant::now();
    assert!(topo.srv1.kernel_has(ATTACKER_BANNED), "srv1's own set");
    let took = measure_until(
        banned_at,
        PATIENCE,
        "srv1's ban in srv2's and gw's sets",
        || {
            topo.srv2.kernel_has(ATTACKER_BANNED)
                && topo.gw.kernel_has(ATTACKER_BANNED)
                && topo.srv2.kernel_has(v6)
        },
        || lab.context(&["srv1", "srv2", "gw"]),
    );
    eprintln!("measured: ban reached srv2 and gw in {took:?}");
    assert!(
        took < PROPAGATION,
        "ban reached srv2 and gw after {took:?} (bound {PROPAGATION:?})"
    );
    assert!(!topo.attacker_connects(ATTACKER_BANNED, SRV2_ADDR, SERVICE_PORT));
    topo.wait_attacker(ATTACKER_NEIGHBOUR, SRV2_ADDR, SERVICE_PORT, true, PATIENCE);
    assert_eq!(
        topo.srv1.listed_source(ATTACKER_BANNED).as_deref(),
        Some("manual")
    );
    for host in [&topo.srv2, &topo.gw] {
        assert_eq!(
            host.listed_source(ATTACKER_BANNED).as_deref(),
            Some("fleet:srv1"),
            "{}'s orch list:\n{}",
            host.name,
            host.cli(&["list"]).stdout
        );
    }
    let list = topo.srv2.cli(&["list"]).expect_ok("srv2 orch list");
    assert!(
        list.stdout
            .lines()
            .any(|l| l.contains(ATTACKER_BANNED) && l.contains("fleet:srv1")),
        "{list}"
    );
    assert!(
        lab.nats.keys(topo).contains(&fleet_key("srv1", v6)),
        "{:?}",
        lab.nats.keys(topo)
    );

    topo.srv1.unban(&[ATTACKER_BANNED, v6]);
    let unbanned_at = Instant::now();
    let took = measure_until(
        unbanned_at,
        PATIENCE,
        "the unban on srv2 and gw",
        || {
            !topo.srv2.kernel_has(ATTACKER_BANNED)
                && !topo.gw.kernel_has(ATTACKER_BANNED)
                && !topo.srv2.kernel_has(v6)
        },
        || lab.context(&["srv1", "srv2", "gw"]),
    );
    eprintln!("measured: unban reached srv2 and gw in {took:?}");
    assert!(
        took < PROPAGATION,
        "unban reached srv2 and gw after {took:?} (bound {PROPAGATION:?})"
    );
    assert_eq!(topo.srv2.listed_source(ATTACKER_BANNED), None);
    topo.wait_attacker(ATTACKER_BANNED, SRV2_ADDR, SERVICE_PORT, true, PATIENCE);
}

#[test]
fn ban_and_unban_propagate_within_a_second() {
    propagation(NatsVersion::Current);
}

#[test]
fn ban_and_unban_propagate_within_a_second_debian_nats() {
    assert_eq!(NatsVersion::Debian.version_string(), "nats-server: v2.9.10");
    propagation(NatsVersion::Debian);
}

// ---------------------------------------------------------------------------
// The gateway

#[test]
fn gateway_drops_forwarded_traffic_of_fleet_bans() {
    let mut lab = Lab::new(NatsVersion::Current);
    lab.start("srv1", &[], false, &FleetOpts::default());
    lab.start("gw", &[], true, &FleetOpts::default());
    lab.wait_connected("srv1");
    lab.wait_connected("gw");
    let topo = &lab.topo;
    // srv3 runs no orch at all: only the gateway can protect it.
    topo.srv3.listen(SERVICE_PORT);
    topo.wait_attacker(ATTACKER_BANNED, SRV3_ADDR, SERVICE_PORT, true, PATIENCE);

    topo.srv1.ban(&[ATTACKER_BANNED]);
    let banned_at = Instant::now();
    let took = measure_until(
        banned_at,
        PATIENCE,
        "srv1's ban in gw's set",
        || topo.gw.kernel_has(ATTACKER_BANNED),
        || lab.context(&["srv1", "gw"]),
    );
    assert!(took < PROPAGATION, "ban reached gw after {took:?}");
    let table = topo.gw.ns.nft(&["list", "table", "inet", "orch"]);
    assert!(
        table.stdout.contains("hook forward"),
        "gw has no forward chain:\n{table}"
    );
    assert!(
        !topo.attacker_connects(ATTACKER_BANNED, SRV3_ADDR, SERVICE_PORT),
        "the gateway forwarded a banned address\n{table}"
    );
    topo.wait_attacker(ATTACKER_NEIGHBOUR, SRV3_ADDR, SERVICE_PORT, true, PATIENCE);

    topo.srv1.unban(&[ATTACKER_BANNED]);
    wait_until(PATIENCE, "the unban on gw", || {
        !topo.gw.kernel_has(ATTACKER_BANNED)
    });
    topo.wait_attacker(ATTACKER_BANNED, SRV3_ADDR, SERVICE_PORT, true, PATIENCE);
}

// ---------------------------------------------------------------------------
// Local safety rules

#[test]
fn remote_bans_obey_local_safety_rules() {
    let mut lab = Lab::new(NatsVersion::Current);
    lab.start("srv1", &[], false, &FleetOpts::default());
    lab.start("srv2", &["192.0.2.0/24"], false, &FleetOpts::default());
    lab.start("gw", &[], false, &FleetOpts::default());
    for host in ["srv1", "srv2", "gw"] {
        lab.wait_connected(host);
    }
    let topo = &lab.topo;
    let ctx = || lab.context(&["srv1", "srv2", "gw"]);

    // 1. srv2's allowlist beats srv1's ban. gw applying it proves the ban
    // went out; srv2 must say why it did not.
    let allowed = "192.0.2.77";
    topo.srv1.ban(&[allowed]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's ban of 192.0.2.77 on gw",
        || topo.gw.kernel_has(allowed),
        ctx,
    );
    let explained = |log: &str| {
        log.lines()
            .any(|l| l.contains("fleet:") && l.contains(allowed) && l.contains("allow"))
    };
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv2's log to explain why it did not apply 192.0.2.77",
        || explained(&topo.srv2.log()),
        ctx,
    );
    assert!(!topo.srv2.kernel_has(allowed), "{}", ctx());
    assert_eq!(topo.srv2.listed_source(allowed), None);

    // 2. Over-broad networks written straight into the bucket with srv1's
    // credentials (srv1's daemon would refuse them). 10.0.0.0/8 also holds
    // srv2's own address; 172.16.0.0/12 is refused by min_prefix alone.
    let broad = ["10.0.0.0/8", "172.16.0.0/12"];
    lab.nats.with_kv(topo, "srv1", async |kv| {
        for net in broad {
            kv.put(fleet_key("srv1", net), ban_value(net, "forged broad ban"))
                .await
                .unwrap_or_else(|e| panic!("srv1's user puts {net}: {e}"));
        }
    });
    // A normal ban after them still arrives: the stream is not stuck.
    let later = "198.51.100.70";
    topo.srv1.ban(&[later]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's later ban on srv2",
        || topo.srv2.kernel_has(later),
        ctx,
    );
    for net in broad {
        for host in [&topo.srv2, &topo.gw] {
            assert!(
                !host.kernel_has(net),
                "{} applied {net}\n{}",
                host.name,
                ctx()
            );
            assert_eq!(host.listed_source(net), None, "{} lists {net}", host.name);
        }
    }
    assert!(
        topo.srv2.set("bannet4").is_empty(),
        "{:?}",
        topo.srv2.set("bannet4")
    );

    // 3. srv2's user cannot delete srv1's key.
    let key = fleet_key("srv1", later);
    assert!(
        lab.nats.keys(topo).contains(&key),
        "srv1's key {key} missing: {:?}",
        lab.nats.keys(topo)
    );
    let attempt = lab.nats.with_kv(topo, "srv2", async |kv| {
        match tokio::time::timeout(Duration::from_secs(5), kv.delete(&key)).await {
            Ok(Ok(())) => Err("delete succeeded".to_string()),
            Ok(Err(e)) => Ok(e.to_string()),
            Err(_) => Ok("timed out".to_string()),
        }
    });
    assert!(attempt.is_ok(), "srv2's user deleted srv1's key {key}");
    let value = lab.nats.with_kv(topo, ADMIN, async |kv| {
        kv.get(&key).await.expect("admin reads the key")
    });
    assert!(value.is_some(), "{key} gone after srv2's delete attempt");
    assert!(topo.srv2.kernel_has(later));
}

// ---------------------------------------------------------------------------
// Fleet-wide unban

#[test]
fn fleet_wide_unban_with_admin_credentials() {
    let mut lab = Lab::new(NatsVersion::Current);
    let (defaults, admin) = (FleetOpts::default(), FleetOpts::admin());
    lab.start_connected_with(&[("srv1", &defaults), ("srv2", &admin), ("gw", &defaults)]);
    let topo = &lab.topo;
    let ctx = || lab.context(&["srv1", "srv2", "gw"]);
    topo.srv1.ban(&[ATTACKER_BANNED]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's ban on srv2 and gw",
        || topo.srv2.kernel_has(ATTACKER_BANNED) && topo.gw.kernel_has(ATTACKER_BANNED),
        ctx,
    );
    // srv2 holds the admin credentials: its --fleet unban deletes srv1's key.
    let out = topo.srv2.cli(&["unban", "--fleet", ATTACKER_BANNED]);
    if !out.ok() {
        panic!("orch unban --fleet on srv2\n{out}\n{}", ctx());
    }
    assert!(!topo.srv2.kernel_has(ATTACKER_BANNED));
    let key = fleet_key("srv1", ATTACKER_BANNED);
    assert!(
        !lab.nats.keys(topo).contains(&key),
        "{key} still in the bucket: {:?}",
        lab.nats.keys(topo)
    );
    measure_until(
        Instant::now(),
        PATIENCE,
        "the fleet-wide unban on gw",
        || !topo.gw.kernel_has(ATTACKER_BANNED),
        ctx,
    );
    // srv1 made the ban; the deletion of its key lifts it there too, so
    // it is lifted everywhere and srv1 never publishes it again.
    measure_until(
        Instant::now(),
        PATIENCE,
        "the fleet-wide unban on srv1, the ban's origin",
        || !topo.srv1.kernel_has(ATTACKER_BANNED),
        ctx,
    );
    assert_eq!(topo.srv1.listed_source(ATTACKER_BANNED), None);
    assert!(
        topo.srv1
            .log()
            .contains(&format!("lifting {ATTACKER_BANNED}/32 here too")),
        "{}",
        topo.srv1.log_tail(20)
    );
    // A ban made after the fleet-wide unban is shared again.
    topo.srv1.ban(&[ATTACKER_BANNED]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "a new ban after the fleet-wide unban on gw",
        || topo.gw.kernel_has(ATTACKER_BANNED),
        ctx,
    );
}

/// The origin host was down during the fleet-wide unban: its catch-up
/// reads the deletion of its key from the bucket's history, lifts its own
/// ban, and does not publish it again.
#[test]
fn a_fleet_wide_unban_made_while_the_origin_was_down_holds_when_it_returns() {
    let mut lab = Lab::new(NatsVersion::Current);
    let (defaults, admin) = (FleetOpts::default(), FleetOpts::admin());
    lab.start_connected_with(&[("srv1", &defaults), ("srv2", &admin)]);
    lab.topo.srv1.ban(&[ATTACKER_BANNED]);
    let banned_in = orch::timefmt::now_unix();
    let ctx = |lab: &Lab| lab.context(&["srv1", "srv2"]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's ban on srv2",
        || lab.topo.srv2.kernel_has(ATTACKER_BANNED),
        || ctx(&lab),
    );
    // Ban and deletion a second apart: the catch-up lifts only bans made
    // before the deletion's second.
    wait_until(Duration::from_secs(3), "the next second", || {
        orch::timefmt::now_unix() > banned_in
    });
    assert_eq!(lab.topo.srv1.stop(), 0, "srv1 stops cleanly");
    let out = lab.topo.srv2.cli(&["unban", "--fleet", ATTACKER_BANNED]);
    assert!(out.ok(), "orch unban --fleet on srv2\n{out}");

    lab.topo.srv1.restart();
    lab.wait_connected("srv1");
    assert!(!lab.topo.srv1.kernel_has(ATTACKER_BANNED), "{}", ctx(&lab));
    assert_eq!(lab.topo.srv1.listed_source(ATTACKER_BANNED), None);
    let key = fleet_key("srv1", ATTACKER_BANNED);
    assert!(
        !lab.nats.keys(&lab.topo).contains(&key),
        "srv1 published {key} again: {}",
        ctx(&lab)
    );
}

// ---------------------------------------------------------------------------
// Partition

#[test]
fn partitioned_host_converges_without_dropping_bans() {
    let mut lab = Lab::new(NatsVersion::Current);
    lab.start_connected(&["srv1", "srv2", "gw"]);
    let topo = &lab.topo;
    let ctx = || lab.context(&["srv1", "srv2"]);

    // Bans srv2 holds before the cut: remote ones and one of its own.
    let seeded = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"];
    topo.srv1.ban(&seeded);
    topo.srv2.ban(&["203.0.113.99"]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "the seeded bans on srv2",
        || seeded.iter().all(|a| topo.srv2.kernel_has(a)),
        ctx,
    );
    let before: BTreeSet<String> = topo.srv2.set("ban4").into_iter().collect();

    // Sample srv2's set from the cut until it has converged.
    let stop = Arc::new(AtomicBool::new(false));
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let samples = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let start = Instant::now();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let now: BTreeSet<String> = topo.srv2.set("ban4").into_iter().collect();
                let missing: Vec<&String> = before.difference(&now).collect();
                if !missing.is_empty() {
                    violations
                        .lock()
                        .expect("lock")
                        .push(format!("at {:?}: missing {missing:?}", start.elapsed()));
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            n
        });

        topo.link_down("srv2");
        let addrs = bench_addrs(1000);
        topo.srv1.ban(&refs(&addrs));
        let lifted: Vec<String> = addrs.iter().step_by(100).cloned().collect();
        assert_eq!(lifted.len(), 10);
        topo.srv1.unban(&refs(&lifted));
        let expected: BTreeSet<String> = addrs
            .iter()
            .filter(|a| !lifted.contains(a))
            .cloned()
            .collect();
        assert_eq!(expected.len(), 990);
        // gw (connected) has everything: srv1 has published it all.
        measure_until(
            Instant::now(),
            Duration::from_secs(30),
            "the 990 bans on gw",
            || bench_bans(&topo.gw) == expected,
            ctx,
        );
        assert!(
            bench_bans(&topo.srv2).is_empty(),
            "srv2 got bans while cut off: the link cut did not isolate it"
        );

        topo.link_up("srv2");
        let healed_at = Instant::now();
        let took = measure_until(
            healed_at,
            Duration::from_secs(30),
            "srv2 to converge on srv1's 990 bans",
            || bench_bans(&topo.srv2) == expected,
            ctx,
        );
        stop.store(true, Ordering::Relaxed);
        let n = sampler.join().expect("sampler thread");
        eprintln!("measured: srv2 converged {took:?} after its link came back ({n} samples)");
        assert!(
            took < CONVERGENCE,
            "srv2 converged {took:?} after its link came back (bound {CONVERGENCE:?})"
        );
        let have = bench_bans(&topo.srv2);
        for a in &lifted {
            assert!(!have.contains(a), "srv2 still bans lifted {a}");
        }
        n
    });
    let violations = violations.lock().expect("lock");
    assert!(
        violations.is_empty(),
        "{} of {samples} samples lacked bans srv2 had before the cut: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    assert!(before.iter().all(|a| topo.srv2.kernel_has(a)));
}

// ---------------------------------------------------------------------------
// NATS outage

#[test]
fn bans_made_while_nats_is_down_reach_the_fleet_later() {
    let mut lab = Lab::new(NatsVersion::Current);
    lab.start_connected(&["srv1", "srv2"]);

    // NATS stops: local bans still work, and go out once it is back.
    lab.nats.server_mut().stop();
    let first = "198.51.100.80";
    lab.topo.srv1.ban(&[first]);
    assert!(
        lab.topo.srv1.kernel_has(first),
        "local ban while NATS is down"
    );
    lab.nats.server_mut().restart();
    measure_until(
        Instant::now(),
        RECONNECT,
        "the ban made during the outage on srv2",
        || lab.topo.srv2.kernel_has(first),
        || lab.context(&["srv1", "srv2"]),
    );

    // NATS stops, srv1 bans and is killed before it can publish; after NATS
    // and srv1 are back the ban still goes out.
    lab.nats.server_mut().stop();
    let second = "198.51.100.81";
    lab.topo.srv1.ban(&[second]);
    assert!(lab.topo.srv1.kernel_has(second));
    lab.topo.srv1.kill9();
    lab.nats.server_mut().restart();
    lab.topo.srv1.restart();
    measure_until(
        Instant::now(),
        RECONNECT,
        "the ban made before srv1's kill -9 on srv2",
        || lab.topo.srv2.kernel_has(second),
        || lab.context(&["srv1", "srv2"]),
    );
    assert_eq!(
        lab.topo.srv2.listed_source(second).as_deref(),
        Some("fleet:srv1")
    );
    assert!(lab.topo.srv2.kernel_has(first));
}

// ---------------------------------------------------------------------------
// Credentials and status

#[test]
fn wrong_password_is_reported_and_local_bans_still_work() {
    let mut lab = Lab::new(NatsVersion::Current);
    lab.start(
        "srv2",
        &[],
        false,
        &FleetOpts {
            password: Some("not-the-password".into()),
            ..FleetOpts::default()
        },
    );
    let srv2 = &lab.topo.srv2;
    // The `fleet:` line says disconnected; it or the lines under it carry
    // the error.
    let reported = |block: &str| {
        let first = block.lines().next().unwrap_or_default();
        first.contains("disconnected") && block.to_lowercase().contains("authorization")
    };
    measure_until(
        Instant::now(),
        PATIENCE,
        "`orch status` on srv2 to report the authorization failure",
        || srv2.status_fleet_block().is_some_and(|b| reported(&b)),
        || {
            format!(
                "status:\n{}\n{}",
                srv2.cli(&["status"]),
                lab.context(&["srv2"])
            )
        },
    );
    assert_eq!(srv2.fleet_connected_property(), "b false");
    assert!(
        srv2.log().to_lowercase().contains("authorization"),
        "{}",
        srv2.log_tail(40)
    );
    srv2.ban(&["198.51.100.91"]);
    assert!(srv2.kernel_has("198.51.100.91"));
    assert_eq!(
        srv2.listed_source("198.51.100.91").as_deref(),
        Some("manual")
    );
}

#[test]
fn status_and_property_show_a_connected_host() {
    let mut lab = Lab::new(NatsVersion::Current);
    lab.start("srv1", &[], false, &FleetOpts::default());
    let srv1 = &lab.topo.srv1;
    measure_until(
        Instant::now(),
        PATIENCE,
        "FleetConnected = true on srv1",
        || srv1.fleet_connected_property() == "b true",
        || lab.context(&["srv1"]),
    );
    let line = srv1
        .status_fleet_line()
        .unwrap_or_else(|| panic!("no fleet: line\n{}", srv1.cli(&["status"])));
    assert!(
        line.contains("connected") && !line.contains("disconnected"),
        "{line}"
    );
}

#[test]
fn daemon_creates_the_missing_bucket_with_admin_credentials() {
    let mut lab = Lab::without_bucket(NatsVersion::Current);
    assert!(!lab.nats.bucket_exists(&lab.topo));
    lab.start("srv1", &[], false, &FleetOpts::admin());
    measure_until(
        Instant::now(),
        RECONNECT,
        "srv1 to create the bucket",
        || lab.nats.bucket_exists(&lab.topo),
        || lab.context(&["srv1"]),
    );
    let config = lab.nats.with_js(&lab.topo, ADMIN, async |js| {
        let mut stream = js
            .get_stream(format!("KV_{}", common::nats::BUCKET))
            .await
            .expect("stream");
        stream.info().await.expect("stream info").config.clone()
    });
    assert_eq!(config.max_messages_per_subject, 1, "{config:?}");
    assert!(!config.allow_rollup, "rollups must be off: {config:?}");
    assert!(config.deny_delete, "{config:?}");
    assert!(config.allow_direct, "{config:?}");
    lab.wait_connected("srv1");
    lab.topo.srv1.ban(&["198.51.100.82"]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's key in the bucket it made",
        || {
            lab.nats
                .keys(&lab.topo)
                .contains(&fleet_key("srv1", "198.51.100.82"))
        },
        || lab.context(&["srv1"]),
    );
}

// ---------------------------------------------------------------------------
// A cluster losing a node

/// The client port on `nats_addr` that `host`'s established connection
/// goes to, from `ss` in its namespace.
fn connected_nats_port(host: &Host) -> Option<u16> {
    let out = host
        .ns
        .run("ss", &["-Htn", "state", "established", "dst", NATS_ADDR]);
    out.stdout.lines().find_map(|line| {
        let peer = line.split_whitespace().nth(3)?;
        peer.rsplit_once(':')?.1.parse().ok()
    })
}

#[test]
fn cluster_harness_runs_in_the_topology() {
    let topo = Topology::new();
    let nats = FleetNats::start_cluster(&topo, NatsVersion::Current);
    nats.create_bucket(&topo, 3);
    let replicas = nats.with_js(&topo, ADMIN, async |js| {
        let mut stream = js
            .get_stream(format!("KV_{}", common::nats::BUCKET))
            .await
            .expect("stream");
        stream
            .info()
            .await
            .expect("stream info")
            .config
            .num_replicas
    });
    assert_eq!(replicas, 3);
    assert_eq!(nats.urls().len(), 3);
    let section = nats.fleet_section("srv1", &FleetOpts::default());
    for url in nats.urls() {
        assert!(section.contains(&url), "{section}");
    }
    // connected_nats_port finds which node a host talks to.
    let node = &nats.cluster.as_ref().expect("cluster").nodes[1];
    let addr = std::net::SocketAddr::new(NATS_ADDR.parse().expect("addr"), node.port());
    let stream = common::nats::in_netns(Some(&topo.srv1.ns.path()), || {
        std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).expect("connect to node 2")
    });
    assert_eq!(connected_nats_port(&topo.srv1), Some(node.port()));
    drop(stream);
}

#[test]
fn cluster_node_loss_during_a_large_ban_loses_nothing() {
    let topo = Topology::new();
    let nats = FleetNats::start_cluster(&topo, NatsVersion::Current);
    nats.create_bucket(&topo, 3);
    let mut lab = Lab { topo, nats };
    let r3 = FleetOpts {
        replicas: Some(3),
        ..FleetOpts::default()
    };
    lab.start_connected_with(&[("srv1", &r3), ("srv2", &r3)]);
    let port = connected_nats_port(&lab.topo.srv1).expect("srv1's NATS connection");
    let cluster = lab.nats.cluster.as_mut().expect("cluster");
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.port() == port)
        .expect("srv1 is connected to a cluster node");

    let addrs = bench_addrs(10_000);
    let topo = &lab.topo;
    let acknowledged = std::thread::scope(|s| {
        let banning = s.spawn(|| {
            let mut args = vec!["ban"];
            args.extend(refs(&addrs));
            topo.srv1.cli(&args)
        });
        // Kill the node once the bans are on their way.
        let started = poll_until(Duration::from_secs(60), || {
            banning.is_finished() || bench_bans(&topo.srv2).len() >= 500
        });
        assert!(started, "srv2 saw none of the 10k bans within 60 s");
        cluster.nodes[victim].kill();
        banning.join().expect("ban thread")
    });
    let acknowledged = acknowledged.expect_ok("srv1's 10k ban");
    assert!(
        acknowledged.stdout.contains("banned 10000"),
        "{acknowledged}"
    );
    let want: BTreeSet<String> = addrs.iter().cloned().collect();
    measure_until(
        Instant::now(),
        Duration::from_secs(120),
        "every acknowledged ban on srv2",
        || bench_bans(&topo.srv2) == want,
        || {
            format!(
                "srv2 has {} of 10000\n{}",
                bench_bans(&topo.srv2).len(),
                lab.context(&["srv1", "srv2"])
            )
        },
    );
}

// ---------------------------------------------------------------------------
// Several origins

/// srv1 bans an address for 1 h and gw the same address for 2 h: srv2's
/// ban is the union, so it lasts the longer time, survives srv1's unban
/// (then held by gw alone), and ends with gw's unban.
#[test]
fn the_ban_is_the_union_of_every_origin() {
    let mut lab = Lab::new(NatsVersion::Current);
    lab.start_connected(&["srv1", "srv2", "gw"]);
    let topo = &lab.topo;
    let addr = ATTACKER_BANNED;
    let expires_on_srv2 = || -> Option<u64> {
        topo.srv2
            .list()
            .iter()
            .find(|row| row["address"] == addr)
            .and_then(|row| row["expires_at"].as_u64())
    };
    topo.srv1
        .cli(&["ban", addr, "--for", "1h"])
        .expect_ok("srv1 bans for 1h");
    wait_until(PATIENCE, "srv1's ban on srv2", || {
        topo.srv2.listed_source(addr).as_deref() == Some("fleet:srv1")
    });
    let first = expires_on_srv2().expect("srv2 lists it");
    topo.gw
        .cli(&["ban", addr, "--for", "2h"])
        .expect_ok("gw bans for 2h");
    wait_until(PATIENCE, "gw's longer ban takes over on srv2", || {
        topo.srv2.listed_source(addr).as_deref() == Some("fleet:gw")
    });
    let longer = expires_on_srv2().expect("srv2 lists it");
    assert!(
        longer >= first + 3600 - 5,
        "2h ban ({longer}) should outlast the 1h one ({first})"
    );

    topo.srv1.unban(&[addr]);
    // gw's ban is the one in force: srv1's unban changes nothing on srv2.
    // Wait until the deletion has certainly passed srv2: gw sees it too.
    wait_until(PATIENCE, "srv1's unban reaches gw's view", || {
        !lab.nats.keys(topo).contains(&fleet_key("srv1", addr))
    });
    // A later ban from srv1 of another address arrives after the delete.
    topo.srv1.ban(&[ATTACKER_NEIGHBOUR]);
    wait_until(PATIENCE, "a later ban on srv2", || {
        topo.srv2.kernel_has(ATTACKER_NEIGHBOUR)
    });
    assert!(topo.srv2.kernel_has(addr), "still held by gw");
    assert_eq!(topo.srv2.listed_source(addr).as_deref(), Some("fleet:gw"));

    topo.gw.unban(&[addr]);
    wait_until(PATIENCE, "the last origin's unban lifts it on srv2", || {
        !topo.srv2.kernel_has(addr)
    });
}

/// srv1 bans for 2 h, then gw for 1 h: the longer ban stays in force;
/// when srv1 lifts its ban, gw's shorter one takes its place instead of
/// the address going free.
#[test]
fn lifting_the_longest_origin_falls_back_to_the_next() {
    let mut lab = Lab::new(NatsVersion::Current);
    lab.start_connected(&["srv1", "srv2", "gw"]);
    let topo = &lab.topo;
    let addr = ATTACKER_BANNED;
    topo.srv1
        .cli(&["ban", addr, "--for", "2h"])
        .expect_ok("srv1 bans for 2h");
    topo.gw
        .cli(&["ban", addr, "--for", "1h"])
        .expect_ok("gw bans for 1h");
    wait_until(PATIENCE, "both keys in the bucket", || {
        let keys = lab.nats.keys(topo);
        keys.contains(&fleet_key("srv1", addr)) && keys.contains(&fleet_key("gw", addr))
    });
    wait_until(PATIENCE, "srv2 holds srv1's longer ban", || {
        topo.srv2.listed_source(addr).as_deref() == Some("fleet:srv1")
    });
    wait_until(PATIENCE, "gw holds srv1's longer ban", || {
        topo.gw.listed_source(addr).as_deref() == Some("fleet:srv1")
    });
    topo.srv1.unban(&[addr]);
    wait_until(PATIENCE, "gw's ban takes over on srv2", || {
        topo.srv2.listed_source(addr).as_deref() == Some("fleet:gw")
    });
    assert!(topo.srv2.kernel_has(addr), "never free in between");
    // gw's own ban was waiting under srv1's: it is in force again there.
    wait_until(PATIENCE, "gw's own ban back in force on gw", || {
        topo.gw.listed_source(addr).as_deref() == Some("manual")
    });
    assert!(topo.gw.kernel_has(addr), "gw lost its own ban");
    assert!(
        lab.nats.keys(topo).contains(&fleet_key("gw", addr)),
        "gw's key left the bucket"
    );
}
