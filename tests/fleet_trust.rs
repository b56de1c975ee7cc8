//! Fleet trust: what one host's credentials can and cannot do to the other
//! hosts (issue 15). Real orch daemons on the hosts of the fleet lab, and
//! keys written straight into the bucket with one host's NATS user, as an
//! attacker holding that host's credentials would.
//!
//! Tests wait by polling with deadlines; everything is torn down on
//! `Drop`, and a failing test prints the daemons' and the server's logs.

mod common;

use std::time::Instant;

use common::fleet_lab::{Lab, PATIENCE, ban_value_for};
use common::fleet_topology::{fleet_key, measure_until};
use common::nats::NatsVersion;

/// With srv2's credentials, longer bans are put over srv1's own bans and
/// then deleted: srv1 keeps its own bans in force, and its keys stay in
/// the bucket, before and after a restart (its catch-up deletes nothing).
#[test]
fn another_hosts_longer_bans_neither_replace_nor_lift_own_bans() {
    let mut lab = Lab::new(NatsVersion::Current);
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
