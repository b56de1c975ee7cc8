//! Fleet basics with two real orch daemons sharing one network namespace
//! (each with its own table, private D-Bus and state dir) and a real
//! nats-server over TLS with per-host users: a ban on one host reaches the
//! other's kernel set, an unban lifts it, and bans made while NATS is down
//! (even by a daemon killed meanwhile) arrive once it is back.
//!
//! The multi-namespace topology with packets and a gateway is in
//! `tests/fleet.rs`; this file keeps the quick checks.

mod common;

use std::time::{Duration, Instant};

use common::nats::{NatsOptions, NatsServer, NatsVersion};
use common::{Daemon, NetNs, TestBus, wait_until};

/// A host: its daemon, bus and table.
struct Host {
    daemon: Daemon,
    bus: TestBus,
    table: String,
    _secrets: tempfile::TempDir,
}

fn fleet_config(
    server: &NatsServer,
    name: &str,
    table: &str,
    extra: &str,
) -> (String, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("secrets dir");
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, format!("{}\n", server.password(name))).expect("password");
    let ca = server.ca_path().expect("TLS server");
    let config = format!(
        "{extra}\n[firewall]\ntable = \"{table}\"\n\n[fleet]\nservers = [\"{}\"]\nname = \"{name}\"\nuser = \"{name}\"\npassword_file = \"{}\"\ntls = {{ ca = \"{}\" }}\n",
        server.url(),
        password_file.display(),
        ca.display()
    );
    (config, secrets)
}

fn start_host(netns: &NetNs, server: &NatsServer, name: &str, extra: &str) -> Host {
    let table = format!("orch_{name}");
    let bus = TestBus::start();
    let (config, secrets) = fleet_config(server, name, &table, extra);
    let daemon = Daemon::start(netns, &bus, &config);
    Host {
        daemon,
        bus,
        table,
        _secrets: secrets,
    }
}

impl Host {
    fn banned(&self, netns: &NetNs, addr: &str) -> bool {
        netns
            .set_elements(&self.table, "ban4")
            .iter()
            .any(|e| e == addr)
    }

    fn connected(&self) -> bool {
        self.bus
            .busctl(&[
                "get-property",
                "org.orch.Orch1",
                "/org/orch/Orch1",
                "org.orch.Orch1",
                "FleetConnected",
            ])
            .stdout
            .trim()
            == "b true"
    }
}

/// The admin creates the bucket; hosts' users may not.
fn nats(netns: &NetNs, version: NatsVersion) -> NatsServer {
    let mut opts = NatsOptions::new(version);
    opts.hosts = vec!["srv1".into(), "srv2".into()];
    NatsServer::start(Some(netns), opts)
}

fn admin_line(server: &NatsServer, dir: &std::path::Path) -> String {
    let file = dir.join("admin-password");
    std::fs::write(&file, server.password("admin")).expect("admin password");
    format!(
        "admin = {{ user = \"admin\", password_file = \"{}\" }}\n",
        file.display()
    )
}

#[test]
fn bans_and_unbans_reach_the_other_host_current_server() {
    bans_and_unbans_reach_the_other_host(NatsVersion::Current);
}

#[test]
fn bans_and_unbans_reach_the_other_host_debian_server() {
    bans_and_unbans_reach_the_other_host(NatsVersion::Debian);
}

fn bans_and_unbans_reach_the_other_host(version: NatsVersion) {
    let netns = NetNs::new();
    let server = nats(&netns, version);
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let srv1 = start_host(&netns, &server, "srv1", "");
    // srv1 has no admin credentials, so srv2 creates the bucket.
    let (config, secrets) = fleet_config(&server, "srv2", "orch_srv2", "");
    let config = config + &admin_line(&server, admin_dir.path());
    let srv2_bus = TestBus::start();
    let srv2 = Host {
        daemon: Daemon::start(&netns, &srv2_bus, &config),
        bus: srv2_bus,
        table: "orch_srv2".into(),
        _secrets: secrets,
    };
    wait_until(Duration::from_secs(15), "both hosts connected", || {
        srv1.connected() && srv2.connected()
    });

    let started = Instant::now();
    srv1.daemon
        .cli(&["ban", "198.51.100.66"])
        .expect_ok("ban on srv1");
    wait_until(Duration::from_secs(5), "srv2 applies srv1's ban", || {
        srv2.banned(&netns, "198.51.100.66")
    });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let list = srv2.daemon.cli(&["list"]).expect_ok("list on srv2");
    assert!(list.stdout.contains("fleet:srv1"), "{}", list.stdout);
    let status = srv2.daemon.cli(&["status"]).expect_ok("status on srv2");
    assert!(
        status.stdout.contains("fleet:      connected"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("bans from srv1: 1"),
        "{}",
        status.stdout
    );

    srv1.daemon
        .cli(&["unban", "198.51.100.66"])
        .expect_ok("unban on srv1");
    wait_until(Duration::from_secs(5), "srv2 lifts the ban", || {
        !srv2.banned(&netns, "198.51.100.66")
    });

    // A fleet-wide unban needs admin credentials: srv1 has none.
    srv2.daemon
        .cli(&["ban", "198.51.100.70"])
        .expect_ok("ban on srv2");
    wait_until(Duration::from_secs(5), "srv1 applies srv2's ban", || {
        srv1.banned(&netns, "198.51.100.70")
    });
    let refused = srv1.daemon.cli(&["unban", "--fleet", "198.51.100.70"]);
    assert!(!refused.ok());
    assert!(refused.stderr.contains("fleet.admin"), "{}", refused.stderr);
    // srv2 has them: its fleet-wide unban lifts it on srv1 too.
    srv2.daemon
        .cli(&["unban", "--fleet", "198.51.100.70"])
        .expect_ok("fleet-wide unban on srv2");
    wait_until(Duration::from_secs(5), "srv1 lifts srv2's ban", || {
        !srv1.banned(&netns, "198.51.100.70")
    });
}

#[test]
fn bans_made_while_nats_is_down_arrive_later_even_after_a_kill() {
    let netns = NetNs::new();
    let mut server = nats(&netns, NatsVersion::Current);
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let admin = admin_line(&server, admin_dir.path());
    let mut srv1 = start_host(&netns, &server, "srv1", "");
    let (config, secrets) = fleet_config(&server, "srv2", "orch_srv2", "");
    let srv2_bus = TestBus::start();
    let srv2 = Host {
        daemon: Daemon::start(&netns, &srv2_bus, &(config + &admin)),
        bus: srv2_bus,
        table: "orch_srv2".into(),
        _secrets: secrets,
    };
    wait_until(Duration::from_secs(15), "both hosts connected", || {
        srv1.connected() && srv2.connected()
    });

    server.stop();
    wait_until(Duration::from_secs(30), "srv1 notices NATS is gone", || {
        !srv1.connected()
    });
    srv1.daemon
        .cli(&["ban", "198.51.100.80"])
        .expect_ok("a local ban works without NATS");
    assert!(srv1.banned(&netns, "198.51.100.80"));
    server.restart();
    wait_until(Duration::from_secs(20), "the ban reaches srv2", || {
        srv2.banned(&netns, "198.51.100.80")
    });

    server.stop();
    wait_until(Duration::from_secs(30), "srv1 notices NATS is gone", || {
        !srv1.connected()
    });
    srv1.daemon
        .cli(&["ban", "198.51.100.81"])
        .expect_ok("a local ban works without NATS");
    srv1.daemon.kill9();
    server.restart();
    srv1.daemon.restart(&netns, &srv1.bus);
    wait_until(
        Duration::from_secs(20),
        "the ban made before the kill reaches srv2",
        || srv2.banned(&netns, "198.51.100.81"),
    );
    assert!(
        srv2.banned(&netns, "198.51.100.80"),
        "the earlier ban stays"
    );
}
