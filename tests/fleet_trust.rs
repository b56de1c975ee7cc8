//! Fleet trust: what one host's credentials can and cannot do to the other
//! hosts (issue 15). Real orch daemons on the hosts of the fleet lab, and
//! keys written straight into the bucket with one host's NATS user, as an
//! attacker holding that host's credentials would.
//!
//! Each check runs against the current upstream nats-server and Debian
//! 12's 2.9 (`_debian` tests). Tests wait by polling with deadlines;
//! everything is torn down on `Drop`, and a failing test prints the
//! daemons' and the server's logs.

mod common;

use std::time::Instant;

use common::fleet_lab::{Lab, PATIENCE, ban_value, ban_value_for};
use common::fleet_topology::{
    FleetOpts, GW_INSIDE, NATS_ADDR, fleet_key, host_config, measure_until,
};
use common::nats::NatsVersion;

/// The resolver srv2 is configured with (no server answers there; it
/// only has to be protected).
const SRV2_RESOLVER: &str = "10.77.0.53";

/// With srv2's credentials, longer bans are put over srv1's own bans and
/// then deleted: srv1 keeps its own bans in force, and its keys stay in
/// the bucket, before and after a restart (its catch-up deletes nothing).
fn another_hosts_longer_bans_neither_replace_nor_lift_own_bans(version: NatsVersion) {
    let mut lab = Lab::new(version);
    lab.start_connected(&["srv1", "srv2", "gw"]);
    let ctx = |lab: &Lab| lab.context(&["srv1", "srv2", "gw"]);
    let own = ["198.51.100.21", "198.51.100.22"];
    let topo = &lab.topo;
    topo.srv1
        .cli(&["ban", own[0], own[1], "--for", "1h"])
        .expect_ok("srv1 bans for 1h");
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's keys in the bucket and its bans on gw",
        || {
            let keys = lab.nats.keys(topo);
            own.iter()
                .all(|addr| keys.contains(&fleet_key("srv1", addr)) && topo.gw.kernel_has(addr))
        },
        || ctx(&lab),
    );

    // srv2's user writes 3 h bans of the same addresses.
    lab.nats.with_kv(topo, "srv2", async |kv| {
        for addr in own {
            kv.put(
                fleet_key("srv2", addr),
                ban_value_for(addr, "forged longer ban", 3 * 3600),
            )
            .await
            .unwrap_or_else(|e| panic!("srv2's user puts {addr}: {e}"));
        }
    });
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv2's longer bans in force on srv1",
        || {
            own.iter()
                .all(|addr| topo.srv1.listed_source(addr).as_deref() == Some("fleet:srv2"))
        },
        || ctx(&lab),
    );
    // ... and deletes them again.
    lab.nats.with_kv(topo, "srv2", async |kv| {
        for addr in own {
            kv.delete(fleet_key("srv2", addr))
                .await
                .unwrap_or_else(|e| panic!("srv2's user deletes {addr}: {e}"));
        }
    });
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's own bans back in force on srv1",
        || {
            own.iter()
                .all(|addr| topo.srv1.listed_source(addr).as_deref() == Some("manual"))
        },
        || ctx(&lab),
    );
    let check_kept = |lab: &Lab, when: &str| {
        let keys = lab.nats.keys(&lab.topo);
        for addr in own {
            assert!(
                lab.topo.srv1.kernel_has(addr),
                "{when}: srv1 lost its own ban of {addr}\n{}",
                ctx(lab)
            );
            assert!(
                lab.topo.gw.kernel_has(addr),
                "{when}: gw lost srv1's ban of {addr}\n{}",
                ctx(lab)
            );
            assert!(
                keys.contains(&fleet_key("srv1", addr)),
                "{when}: srv1's key of {addr} left the bucket: {keys:?}\n{}",
                ctx(lab)
            );
        }
    };
    check_kept(&lab, "after the delete");

    // A restart runs the catch-up, which once deleted such keys.
    lab.topo.srv1.restart();
    lab.wait_connected("srv1");
    check_kept(&lab, "after srv1's restart");
}

/// With srv1's credentials: bans of the fleet's plumbing (link-local, the
/// cloud metadata address, the NATS server, srv2's resolver and gateway,
/// NAT64) are applied nowhere; 256 distinct /16s are refused by the
/// remote minimum prefix on gw, and on srv2 (which accepts /16s from
/// other hosts) only the per-origin space cap's worth is applied. Every
/// refusal is counted in `orch status`, and logged one line per batch.
fn one_hosts_credentials_cannot_ban_the_plumbing_or_half_the_internet(version: NatsVersion) {
    let mut lab = Lab::new(version);
    let lenient = FleetOpts {
        extra: "remote_min_prefix_v4 = 16".to_string(),
        ..FleetOpts::default()
    };
    let fleet = lab.nats.fleet_section("srv2", &lenient);
    let dns = format!("[dns]\nservers = [\"{SRV2_RESOLVER}:53\"]\n");
    let config = host_config(&[], false, &format!("{fleet}\n{dns}"));
    lab.topo.srv2.start_daemon(&config);
    lab.start_connected(&["srv1", "gw"]);
    lab.wait_connected("srv2");
    let ctx = |lab: &Lab| lab.context(&["srv2", "gw"]);
    let topo = &lab.topo;

    let plumbing = [
        "fe80::1",
        "169.254.169.254",
        NATS_ADDR,
        SRV2_RESOLVER,
        GW_INSIDE,
        "64:ff9b::/96",
    ];
    let broad: Vec<String> = (0..256).map(|i| format!("11.{i}.0.0/16")).collect();
    lab.nats.with_kv(topo, "srv1", async |kv| {
        for net in plumbing
            .iter()
            .copied()
            .chain(broad.iter().map(String::as_str))
        {
            kv.put(fleet_key("srv1", net), ban_value(net, "forged"))
                .await
                .unwrap_or_else(|e| panic!("srv1's user puts {net}: {e}"));
        }
    });
    // A normal ban after them arrives on gw: the stream goes on. On srv2,
    // srv1 has used up its space, so that is refused too (a cap per origin
    // costs only the origin that fills it).
    let later = "198.51.100.71";
    topo.srv1.ban(&[later]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's later ban on gw, and srv2 counting it refused",
        || {
            topo.gw.kernel_has(later)
                && topo
                    .srv2
                    .status_fleet_block()
                    .is_some_and(|block| block.contains("origin-space 241"))
        },
        || ctx(&lab),
    );
    assert!(!topo.srv2.kernel_has(later));
    // srv2's resolver is srv2's business only: gw may ban it.
    for net in plumbing {
        let hosts = if net == SRV2_RESOLVER {
            vec![&topo.srv2]
        } else {
            vec![&topo.srv2, &topo.gw]
        };
        for host in hosts {
            assert!(
                !host.kernel_has(net),
                "{} applied srv1's ban of {net}\n{}",
                host.name,
                ctx(&lab)
            );
        }
    }
    let applied_broad = |set: Vec<String>| set.iter().filter(|e| e.starts_with("11.")).count();
    assert_eq!(
        applied_broad(topo.gw.set("bannet4")),
        0,
        "gw applied /16s\n{}",
        ctx(&lab)
    );
    // One /12's worth of IPv4 per origin: sixteen /16s.
    assert_eq!(
        applied_broad(topo.srv2.set("bannet4")),
        16,
        "srv2's /16s from srv1\n{}",
        ctx(&lab)
    );

    let refused = |host: &common::fleet_topology::Host| {
        host.cli(&["status"])
            .stdout
            .lines()
            .find(|l| l.contains("refused from srv1"))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let srv2_refused = refused(&topo.srv2);
    assert!(
        srv2_refused.contains("origin-space 241") && srv2_refused.contains("protected 6"),
        "srv2's status: {srv2_refused:?}\n{}",
        ctx(&lab)
    );
    let gw_refused = refused(&topo.gw);
    assert!(
        gw_refused.contains("prefix 256"),
        "gw's status: {gw_refused:?}\n{}",
        ctx(&lab)
    );
    let log = topo.srv2.log();
    let summary_lines = log.lines().filter(|l| l.contains("not applying")).count();
    assert!(
        (1..=5).contains(&summary_lines),
        "{summary_lines} refusal lines in srv2's log\n{}",
        topo.srv2.log_tail(30)
    );

    // srv2 tightens its rules back to the default /24: when srv1 writes
    // those keys again, the /16s applied before are lifted.
    let daemon = topo.srv2.daemon();
    let config = std::fs::read_to_string(&daemon.config_path).expect("read srv2's config");
    std::fs::write(
        &daemon.config_path,
        config.replace("remote_min_prefix_v4 = 16", ""),
    )
    .expect("write srv2's config");
    let reloads = |log: &str| log.matches("configuration reloaded").count();
    let before = reloads(&topo.srv2.log());
    daemon.sighup();
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv2 to reload its configuration",
        || reloads(&topo.srv2.log()) > before,
        || ctx(&lab),
    );
    lab.nats.with_kv(topo, "srv1", async |kv| {
        for net in &broad {
            kv.put(fleet_key("srv1", net), ban_value(net, "forged again"))
                .await
                .unwrap_or_else(|e| panic!("srv1's user puts {net}: {e}"));
        }
    });
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv2 to lift the /16s its rules now refuse",
        || applied_broad(topo.srv2.set("bannet4")) == 0,
        || ctx(&lab),
    );
}

/// With srv1's credentials: a value over the bucket's size limit is
/// refused by the server; then 20,000 keys with the largest reasons the
/// bucket takes, 10,000 keys that are not keys and 10,000 values that are
/// not values. srv2 applies srv1's cap's worth, stays within 50 MB more
/// memory, and logs fewer than 100 lines above debug level.
fn a_flood_of_big_and_malformed_keys_costs_bounded_memory_and_log(version: NatsVersion) {
    let mut lab = Lab::new(version);
    lab.start_connected(&["srv1", "srv2"]);
    let ctx = |lab: &Lab| lab.context(&["srv2"]);
    let topo = &lab.topo;
    let huge_reason = "x".repeat(4_000);
    let refused = lab.nats.with_kv(topo, "srv1", async |kv| {
        kv.put(
            fleet_key("srv1", "198.51.100.90"),
            ban_value_for("198.51.100.90", &huge_reason, 3600),
        )
        .await
        .err()
        .map(|e| e.to_string())
    });
    assert!(
        refused.is_some(),
        "the server stored a value with a 4,000-byte reason"
    );

    let rss_before = topo.srv2.daemon().rss_kib();
    let log_before = topo.srv2.log().lines().count();
    let reason = "r".repeat(1_700);
    let good: Vec<(String, bytes::Bytes)> = (0..20_000u32)
        .map(|i| {
            let addr = std::net::Ipv4Addr::from(0x0B00_0001 + i).to_string();
            (
                fleet_key("srv1", &addr),
                ban_value_for(&addr, &reason, 3600),
            )
        })
        .collect();
    let bad_keys = (0..10_000).map(|i| {
        (
            format!("srv1.not-an-address-{i}"),
            bytes::Bytes::from_static(b"{}"),
        )
    });
    let bad_values = (0..10_000u32).map(|i| {
        let addr = std::net::Ipv4Addr::from(0x0C00_0001 + i).to_string();
        (
            fleet_key("srv1", &addr),
            bytes::Bytes::from(format!("not json {}", "y".repeat(1_000))),
        )
    });
    let entries: Vec<(String, bytes::Bytes)> =
        good.into_iter().chain(bad_keys).chain(bad_values).collect();
    lab.nats.with_js(topo, "srv1", async |js| {
        for chunk in entries.chunks(1_000) {
            let mut acks = Vec::with_capacity(chunk.len());
            for (key, value) in chunk {
                let subject = format!("$KV.orch-bans.{key}");
                acks.push(
                    js.publish(subject, value.clone())
                        .await
                        .unwrap_or_else(|e| panic!("srv1's user publishes {key}: {e}")),
                );
            }
            for ack in acks {
                ack.await.unwrap_or_else(|e| panic!("ack: {e}"));
            }
        }
    });
    measure_until(
        Instant::now(),
        std::time::Duration::from_secs(60),
        "srv2 to apply srv1's cap's worth and count the rest",
        || {
            topo.srv2.status_fleet_block().is_some_and(|block| {
                block.contains("bans from srv1: 10000")
                    && block.contains("origin-count 10000")
                    && block.contains("malformed bucket entries skipped: 20000")
            })
        },
        || ctx(&lab),
    );
    let rss_after = topo.srv2.daemon().rss_kib();
    let grown_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 50,
        "srv2's RSS grew by {grown_mib} MiB ({rss_before} -> {rss_after} KiB)\n{}",
        ctx(&lab)
    );
    let log = topo.srv2.log();
    let new_lines: Vec<&str> = log
        .lines()
        .skip(log_before)
        .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
        .collect();
    assert!(
        new_lines.len() < 100,
        "{} log lines during the flood:\n{}",
        new_lines.len(),
        new_lines[..new_lines.len().min(40)].join("\n")
    );
    eprintln!(
        "flood: srv2 RSS {rss_before} -> {rss_after} KiB (+{grown_mib} MiB), {} log lines above debug",
        new_lines.len()
    );
}

/// Two daemons with one fleet name (a copied config): the second finds the
/// name held, says so in `orch status`, and publishes and deletes nothing;
/// the first's keys stay. The first, restarted, is still the owner.
fn a_second_daemon_with_the_same_name_publishes_and_deletes_nothing(version: NatsVersion) {
    let mut lab = Lab::new(version);
    lab.start_connected(&["srv1"]);
    let ctx = |lab: &Lab| lab.context(&["srv1", "srv2"]);
    let first = "198.51.100.31";
    lab.topo.srv1.ban(&[first]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's key in the bucket",
        || lab.nats.keys(&lab.topo).contains(&fleet_key("srv1", first)),
        || ctx(&lab),
    );
    // srv2 runs with srv1's fleet section: same name, same credentials.
    let fleet = lab.nats.fleet_section("srv1", &FleetOpts::default());
    lab.topo.srv2.start_daemon(&host_config(&[], false, &fleet));
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv2 to report the name collision",
        || {
            lab.topo
                .srv2
                .status_fleet_block()
                .is_some_and(|block| block.contains("name collision: fleet name srv1 is in use"))
        },
        || ctx(&lab),
    );
    let second = "198.51.100.32";
    lab.topo.srv2.ban(&[second]);
    lab.topo.srv1.ban(&["198.51.100.33"]);
    measure_until(
        Instant::now(),
        PATIENCE,
        "srv1's next key in the bucket",
        || {
            lab.nats
                .keys(&lab.topo)
                .contains(&fleet_key("srv1", "198.51.100.33"))
        },
        || ctx(&lab),
    );
    let keys = lab.nats.keys(&lab.topo);
    assert!(
        keys.contains(&fleet_key("srv1", first)),
        "srv2 deleted srv1's key: {keys:?}\n{}",
        ctx(&lab)
    );
    assert!(
        !keys.contains(&fleet_key("srv1", second)),
        "srv2 published under srv1's name: {keys:?}\n{}",
        ctx(&lab)
    );
    assert!(
        lab.topo.srv2.kernel_has(second),
        "srv2's own ban holds locally"
    );
    assert!(
        lab.topo
            .srv1
            .status_fleet_block()
            .is_some_and(|b| !b.contains("collision")),
        "{}",
        ctx(&lab)
    );

    // A restart of the first keeps the name: same machine, same state.
    lab.topo.srv1.restart();
    lab.wait_connected("srv1");
    let block = lab.topo.srv1.status_fleet_block().unwrap_or_default();
    assert!(!block.contains("collision"), "{block}\n{}", ctx(&lab));
    let keys = lab.nats.keys(&lab.topo);
    assert!(keys.contains(&fleet_key("srv1", first)), "{keys:?}");
}

// ---------------------------------------------------------------------------
// Each check on both servers

#[test]
fn longer_bans_over_own_ones_current() {
    another_hosts_longer_bans_neither_replace_nor_lift_own_bans(NatsVersion::Current);
}

#[test]
fn longer_bans_over_own_ones_debian() {
    another_hosts_longer_bans_neither_replace_nor_lift_own_bans(NatsVersion::Debian);
}

#[test]
fn plumbing_and_caps_current() {
    one_hosts_credentials_cannot_ban_the_plumbing_or_half_the_internet(NatsVersion::Current);
}

#[test]
fn plumbing_and_caps_debian() {
    one_hosts_credentials_cannot_ban_the_plumbing_or_half_the_internet(NatsVersion::Debian);
}

#[test]
fn flood_of_big_and_malformed_keys_current() {
    a_flood_of_big_and_malformed_keys_costs_bounded_memory_and_log(NatsVersion::Current);
}

#[test]
fn flood_of_big_and_malformed_keys_debian() {
    a_flood_of_big_and_malformed_keys_costs_bounded_memory_and_log(NatsVersion::Debian);
}

#[test]
fn same_name_twice_current() {
    a_second_daemon_with_the_same_name_publishes_and_deletes_nothing(NatsVersion::Current);
}

#[test]
fn same_name_twice_debian() {
    a_second_daemon_with_the_same_name_publishes_and_deletes_nothing(NatsVersion::Debian);
}
