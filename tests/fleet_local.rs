//! Fleet basics with two real orch daemons sharing one network namespace
//! (each with its own table, private D-Bus and state dir) and a real
//! nats-server over TLS with per-host users: a ban on one host reaches the
//! other's kernel set, an unban lifts it, and bans made while NATS is down
//! (even by a daemon killed meanwhile) arrive once it is back. Hosts log in
//! with passwords, an nkey, or `.creds` files (operator mode, on one server
//! and on a three-node cluster).
//!
//! The multi-namespace topology with packets and a gateway is in
//! `tests/fleet.rs`; this file keeps the quick checks.

mod common;

use std::time::{Duration, Instant};

use common::fleet_hosts::{
    Host, admin_line, fleet_config, fleet_config_with_login, nats, nats_with, start_host,
    status_fleet_block, table_of,
};
use common::nats::{BUCKET, NatsAuth, NatsVersion};
use common::{NetNs, wait_until};

#[test]
fn bans_and_unbans_reach_the_other_host_current_server() {
    bans_and_unbans_reach_the_other_host(NatsVersion::Current, NatsAuth::Passwords);
}

#[test]
fn bans_and_unbans_reach_the_other_host_debian_server() {
    bans_and_unbans_reach_the_other_host(NatsVersion::Debian, NatsAuth::Passwords);
}

/// `credentials`: hosts and the admin log in with `.creds` files (user
/// JWTs signed by the account key, the same permissions as the passwords'
/// users) on a server in operator mode.
#[test]
fn hosts_with_creds_files_share_bans_current_server() {
    bans_and_unbans_reach_the_other_host(NatsVersion::Current, NatsAuth::Operator);
}

#[test]
fn hosts_with_creds_files_share_bans_debian_server() {
    bans_and_unbans_reach_the_other_host(NatsVersion::Debian, NatsAuth::Operator);
}

fn bans_and_unbans_reach_the_other_host(version: NatsVersion, auth: NatsAuth) {
    let netns = NetNs::new();
    let server = nats_with(&netns, version, auth);
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let srv1 = start_host(&netns, &server, "srv1", "", "");
    // srv1 has no admin credentials, so srv2 creates the bucket.
    let admin = admin_line(&server, admin_dir.path());
    let srv2 = start_host(&netns, &server, "srv2", "", &admin);
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
    let mut srv1 = start_host(&netns, &server, "srv1", "", "");
    let srv2 = start_host(&netns, &server, "srv2", "", &admin);
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

/// A jail's ban on srv1 is shared when `share` names it, and lands in
/// srv2's kernel within a second. A jail reading files that `share` does
/// not name is not shared, even under the `jails` rule: any local user
/// can write lines into syslog files.
#[test]
fn a_jail_ban_reaches_the_other_host() {
    use std::io::Write;
    let netns = NetNs::new();
    let server = nats(&netns, NatsVersion::Current);
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("log dir");
    let auth_log = logs.path().join("auth.log");
    let web_log = logs.path().join("web.log");
    std::fs::write(&auth_log, "").expect("create auth.log");
    std::fs::write(&web_log, "").expect("create web.log");
    let jails = format!(
        "[jails.sshd]\nfiles = [\"{}\"]\nmaxretry = 3\n\n[jails.private]\nfilter = \"sshd\"\nfiles = [\"{}\"]\nmaxretry = 3\n",
        auth_log.display(),
        web_log.display()
    );
    let (config, secrets) = fleet_config(
        &server,
        "srv1",
        &table_of("srv1"),
        "",
        "share = [\"jails\", \"sshd\"]\n",
    );
    // The [jails] tables go after [fleet] so they do not end up inside it.
    let srv1 = Host::start(&netns, "srv1", &format!("{config}\n{jails}"), secrets);
    let admin = admin_line(&server, admin_dir.path());
    let srv2 = start_host(&netns, &server, "srv2", "", &admin);
    wait_until(Duration::from_secs(15), "both hosts connected", || {
        srv1.connected() && srv2.connected()
    });

    let append = |path: &std::path::Path, addr: &str| {
        let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open log");
        for port in 0..3 {
            writeln!(
                file,
                "{stamp} web1 sshd-session[42]: Failed password for root from {addr} port {} ssh2",
                40000 + port
            )
            .expect("append");
        }
    };
    append(&web_log, "198.51.100.91");
    append(&auth_log, "198.51.100.90");
    wait_until(Duration::from_secs(5), "srv1's jails ban both", || {
        srv1.banned(&netns, "198.51.100.90") && srv1.banned(&netns, "198.51.100.91")
    });
    let started = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "srv2 applies the sshd jail's ban",
        || srv2.banned(&netns, "198.51.100.90"),
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    let list = srv2.daemon.cli(&["list"]).expect_ok("list on srv2");
    assert!(list.stdout.contains("fleet:srv1"), "{}", list.stdout);
    // The unshared jail's ban stays on srv1: published bans arrive in
    // order, so once a later shared ban is on srv2 the unshared one would
    // be too.
    append(&auth_log, "198.51.100.92");
    wait_until(
        Duration::from_secs(5),
        "srv2 applies a later sshd ban",
        || srv2.banned(&netns, "198.51.100.92"),
    );
    assert!(
        !srv2.banned(&netns, "198.51.100.91"),
        "jail `private` reads a file, and `share` does not name it"
    );
}

/// `nkey_file`: a host that logs in with an nkey seed (no password) shares
/// its bans like the others; its key prefix is still its own name.
#[test]
fn a_host_logging_in_with_an_nkey_shares_bans() {
    use common::nats::{NatsOptions, NatsServer};
    let netns = NetNs::new();
    let nkey = nkeys::KeyPair::new_user();
    let mut opts = NatsOptions::new(NatsVersion::Current);
    opts.hosts = vec!["srv1".into(), "srv2".into()];
    opts.nkey_hosts = vec![("srv3".into(), nkey.public_key())];
    let server = NatsServer::start(Some(&netns), opts);
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let admin = admin_line(&server, admin_dir.path());
    let srv2 = start_host(&netns, &server, "srv2", "", &admin);
    let seed_dir = tempfile::tempdir().expect("tempdir");
    let seed_file = seed_dir.path().join("srv3.nk");
    common::write_secret_file(&seed_file, nkey.seed().expect("seed") + "\n");
    let login = format!("nkey_file = \"{}\"", seed_file.display());
    let srv3_config = fleet_config_with_login(&server, "srv3", &table_of("srv3"), "", &login, "");
    let srv3 = Host::start(&netns, "srv3", &srv3_config, seed_dir);
    wait_until(Duration::from_secs(15), "both hosts connected", || {
        srv2.connected() && srv3.connected()
    });
    srv3.daemon
        .cli(&["ban", "198.51.100.93"])
        .expect_ok("ban on srv3");
    wait_until(Duration::from_secs(5), "srv2 applies srv3's ban", || {
        srv2.banned(&netns, "198.51.100.93")
    });
    let list = srv2.daemon.cli(&["list"]).expect_ok("list on srv2");
    assert!(list.stdout.contains("fleet:srv3"), "{}", list.stdout);
}

/// A `.creds` file whose user JWT is signed by an account the server does
/// not trust is refused: `orch status` says so, and local bans still work.
#[test]
fn creds_of_an_unknown_account_are_refused_current_server() {
    creds_of_an_unknown_account_are_refused(NatsVersion::Current);
}

#[test]
fn creds_of_an_unknown_account_are_refused_debian_server() {
    creds_of_an_unknown_account_are_refused(NatsVersion::Debian);
}

fn creds_of_an_unknown_account_are_refused(version: NatsVersion) {
    let netns = NetNs::new();
    let server = nats_with(&netns, version, NatsAuth::Operator);
    let secrets = tempfile::tempdir().expect("tempdir");
    let creds_file = secrets.path().join("srv3.creds");
    let stranger = nkeys::KeyPair::new_account();
    common::write_secret_file(
        &creds_file,
        common::nats_jwt::host_creds(&stranger, BUCKET, "srv3"),
    );
    let login = format!("credentials = \"{}\"", creds_file.display());
    let config = fleet_config_with_login(&server, "srv3", &table_of("srv3"), "", &login, "");
    let srv3 = Host::start(&netns, "srv3", &config, secrets);

    // The `fleet:` line says disconnected; it or the lines under it carry
    // the server's verdict.
    let refused = |block: &str| {
        let first = block.lines().next().unwrap_or_default();
        first.contains("disconnected") && block.to_lowercase().contains("authorization violation")
    };
    let status = || srv3.daemon.cli(&["status"]).stdout;
    if !common::poll_until(Duration::from_secs(15), || {
        status_fleet_block(&status()).is_some_and(|block| refused(&block))
    }) {
        panic!(
            "`orch status` on srv3 does not report the refusal:\n{}",
            status()
        );
    }
    assert!(!srv3.connected());
    srv3.daemon
        .cli(&["ban", "198.51.100.94"])
        .expect_ok("a local ban works without the fleet");
    assert!(srv3.banned(&netns, "198.51.100.94"));
}

/// `max_remote_bans` and `max_remote_time`: what another host can make
/// this one do is capped. srv2 takes at most 3 networks from the fleet, and
/// keeps none of them longer than an hour; the rest is refused, logged, and
/// the stream goes on (a later unban still arrives).
#[test]
fn remote_bans_are_capped_in_number_and_length() {
    let netns = NetNs::new();
    let server = nats(&netns, NatsVersion::Current);
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let admin = admin_line(&server, admin_dir.path());
    let srv1 = start_host(&netns, &server, "srv1", "", &admin);
    let srv2 = start_host(
        &netns,
        &server,
        "srv2",
        "",
        "max_remote_bans = 3\nmax_remote_time = \"1h\"\n",
    );
    wait_until(Duration::from_secs(15), "both hosts connected", || {
        srv1.connected() && srv2.connected()
    });
    let addresses: Vec<String> = (1..=5).map(|i| format!("198.51.100.{i}")).collect();
    let mut args = vec!["ban", "--for", "7d"];
    args.extend(addresses.iter().map(String::as_str));
    srv1.daemon.cli(&args).expect_ok("ban five on srv1");
    wait_until(Duration::from_secs(5), "srv2 logs the cap", || {
        srv2.daemon
            .log()
            .contains("fleet.max_remote_bans (3) reached")
    });
    let applied: Vec<&String> = addresses
        .iter()
        .filter(|addr| srv2.banned(&netns, addr))
        .collect();
    assert_eq!(applied.len(), 3, "applied on srv2: {applied:?}");

    let listed = srv2
        .daemon
        .cli(&["list", "--json"])
        .expect_ok("list on srv2");
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).expect("list --json");
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 3, "{rows:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    for row in rows {
        assert_eq!(row["source"], "fleet:srv1", "{row}");
        let expires_at = row["expires_at"].as_u64().unwrap_or(u64::MAX);
        assert!(
            expires_at <= now + 3600,
            "a 7-day remote ban is kept past an hour from now ({now}): {row}"
        );
    }

    // The stream goes on: unbanning an applied one lifts it on srv2.
    let lifted = applied[0].clone();
    srv1.daemon
        .cli(&["unban", &lifted])
        .expect_ok("unban on srv1");
    wait_until(
        Duration::from_secs(5),
        "srv2 lifts the unbanned one",
        || !srv2.banned(&netns, &lifted),
    );
}

/// Operator mode on a three-node cluster: every node trusts the same
/// operator, hosts log in with `.creds` files, the admin's `.creds` create
/// an R3 bucket, and bans still travel after the node srv1 uses is killed.
#[test]
fn creds_hosts_on_a_cluster_keep_sharing_after_a_node_dies() {
    use common::fleet_hosts::cluster_fleet_config;
    use common::nats::{NatsCluster, NatsOptions};
    let netns = NetNs::new();
    let mut opts = NatsOptions::new(NatsVersion::Current);
    opts.hosts = vec!["srv1".into(), "srv2".into()];
    opts.auth = NatsAuth::Operator;
    let mut cluster = NatsCluster::start(Some(&netns), opts);
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let admin = admin_line(&cluster.nodes[0], admin_dir.path());
    let start = |name: &str, fleet_keys: &str| {
        let (config, secrets) = cluster_fleet_config(&cluster, name, fleet_keys);
        Host::start(&netns, name, &config, secrets)
    };
    let srv1 = start("srv1", &format!("replicas = 3\n{admin}"));
    let srv2 = start("srv2", "");
    wait_until(Duration::from_secs(20), "both hosts connected", || {
        srv1.connected() && srv2.connected()
    });
    srv1.daemon
        .cli(&["ban", "198.51.100.71"])
        .expect_ok("ban on srv1");
    wait_until(Duration::from_secs(5), "srv2 applies srv1's ban", || {
        srv2.banned(&netns, "198.51.100.71")
    });

    // The node srv1 is connected to, from `orch status` ("server: …:PORT").
    let status = srv1
        .daemon
        .cli(&["status"])
        .expect_ok("status on srv1")
        .stdout;
    let used = cluster
        .nodes
        .iter()
        .position(|node| status.contains(&format!(":{} (", node.port())))
        .unwrap_or_else(|| panic!("no node's port in srv1's status:\n{status}"));
    cluster.nodes[used].kill();
    srv1.daemon
        .cli(&["ban", "198.51.100.72"])
        .expect_ok("ban on srv1 after the node died");
    wait_until(
        Duration::from_secs(20),
        "srv2 applies the ban made after the node died",
        || srv2.banned(&netns, "198.51.100.72"),
    );
    assert!(srv2.banned(&netns, "198.51.100.71"), "the first ban stays");
}
