//! Dynamic DNS allow end to end: a real dnsmasq on loopback inside the
//! daemon's network namespace serves short-TTL records; orch keeps
//! `dnsallow4`/`dnsallow6` in step, swaps changed records with no gap,
//! keeps the last good addresses when the server dies, and refuses to ban
//! a DNS-allowed address.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, NetNs, TestBus, wait_until};

const PORT: u16 = 5353;

/// dnsmasq serving `hosts` (an /etc/hosts-style file) for *.test, with the
/// given TTL, on 127.0.0.1:PORT inside `netns`. Killed on drop.
struct Dnsmasq {
    child: Child,
    hosts: tempfile::NamedTempFile,
}

impl Dnsmasq {
    fn start(netns: &NetNs, hosts: &str, ttl: u32) -> Dnsmasq {
        let file = tempfile::NamedTempFile::new().expect("hosts file");
        std::fs::write(file.path(), hosts).expect("write hosts");
        let child = spawn_dnsmasq(
            netns,
            &[
                format!("--local-ttl={ttl}"),
                "--local=/test/".to_string(),
                "--cname=c.test,a.test".to_string(),
                format!("--addn-hosts={}", file.path().display()),
            ],
        );
        Dnsmasq { child, hosts: file }
    }

    /// Rewrites the hosts file and makes dnsmasq re-read it (SIGHUP).
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(self.hosts.path(), hosts).expect("rewrite hosts");
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// dnsmasq on 127.0.0.1:PORT in `netns` with no upstream and no
/// /etc/hosts, plus `args`; returns once it listens.
fn spawn_dnsmasq(netns: &NetNs, args: &[String]) -> Child {
    let child = netns
        .command("dnsmasq")
        .args(common::dnsmasq_args(PORT))
        .arg("--user=root")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    wait_until(Duration::from_secs(5), "dnsmasq to listen", || {
        let sockets = netns.run("ss", &["-lun"]).stdout;
        sockets.contains(&format!("127.0.0.1:{PORT}"))
    });
    child
}

fn config(names: &[&str], grace_secs: u32) -> String {
    let mut text = format!("[dns]\nservers = [\"127.0.0.1:{PORT}\"]\ngrace = \"{grace_secs}s\"\n");
    for name in names {
        text.push_str(&format!(
            "[[dns.allow]]\nname = \"{name}\"\nmin_ttl = \"1s\"\nmax_ttl = \"1h\"\n"
        ));
    }
    text
}

#[test]
fn records_land_in_the_sets_with_their_ttl_and_follow_changes_without_a_gap() {
    let netns = NetNs::new();
    let dns = Dnsmasq::start(&netns, "192.0.2.10 a.test\n2001:db8::10 a.test\n", 3);
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, &config(&["a.test", "c.test"], 2));

    wait_until(
        Duration::from_secs(5),
        "a.test's addresses in the DNS allow sets",
        || {
            netns
                .set_elements("orch", "dnsallow4")
                .contains(&"192.0.2.10".to_string())
                && netns
                    .set_elements("orch", "dnsallow6")
                    .contains(&"2001:db8::10".to_string())
        },
    );
    let with_expiry = netns.set_elements_with_expiry("orch", "dnsallow4");
    let left = with_expiry
        .iter()
        .find_map(|(e, t)| (e == "192.0.2.10").then_some(*t))
        .flatten();
    assert!(
        left.is_some_and(|t| t <= 3 + 2),
        "timeout is TTL + grace: {with_expiry:?}"
    );

    // A DNS-allowed address cannot be banned.
    let refused = daemon.cli(&["ban", "192.0.2.10"]);
    assert!(
        refused.stderr.contains("org.orch.Orch1.Error.Allowlisted"),
        "{}",
        refused.stderr
    );

    // The record changes: the new address arrives within TTL + 2 s, and at
    // every sample at least one of the two is allowed.
    dns.set_hosts("192.0.2.11 a.test\n2001:db8::10 a.test\n");
    let changed_at = Instant::now();
    let mut gaps = 0;
    wait_until(
        Duration::from_secs(3 + 2 + 2),
        "the new address to replace the old one",
        || {
            let set = netns.set_elements("orch", "dnsallow4");
            let has_new = set.contains(&"192.0.2.11".to_string());
            if !has_new && !set.contains(&"192.0.2.10".to_string()) {
                gaps += 1;
            }
            has_new
        },
    );
    eprintln!(
        "record change reached the kernel after {:?}",
        changed_at.elapsed()
    );
    assert_eq!(gaps, 0, "a moment without either address");

    let listed = daemon.cli(&["allow", "list"]).expect_ok("allow list");
    assert!(listed.stdout.contains("192.0.2.11"), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("c.test"),
        "CNAME name listed: {}",
        listed.stdout
    );
}

#[test]
fn a_dead_server_keeps_the_last_good_addresses() {
    let netns = NetNs::new();
    let mut dns = Dnsmasq::start(&netns, "192.0.2.20 a.test\n", 1);
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, &config(&["a.test"], 10));
    wait_until(Duration::from_secs(5), "a.test in dnsallow4", || {
        netns
            .set_elements("orch", "dnsallow4")
            .contains(&"192.0.2.20".to_string())
    });
    dns.stop();
    // Past TTL + grace (1 s + 10 s; the grace must outlast the resolver's
    // own timeouts, about 8 s here), the address must still be allowed.
    let deadline = Instant::now() + Duration::from_secs(13);
    while Instant::now() < deadline {
        assert!(
            netns
                .set_elements("orch", "dnsallow4")
                .contains(&"192.0.2.20".to_string()),
            "last good address dropped while the resolver is down\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(daemon.log().contains("a.test"), "the failure is logged");
}

#[test]
fn dns_allows_come_back_with_an_unowned_table_after_a_flush() {
    let netns = NetNs::new();
    let _dns = Dnsmasq::start(&netns, "192.0.2.30 a.test\n", 60);
    let bus = TestBus::start();
    let config = format!("{}[firewall]\nowner = \"off\"\n", config(&["a.test"], 2));
    let _daemon = Daemon::start(&netns, &bus, &config);
    let allowed = || {
        netns
            .set_elements("orch", "dnsallow4")
            .contains(&"192.0.2.30".to_string())
    };
    wait_until(Duration::from_secs(5), "a.test in dnsallow4", allowed);
    netns.nft(&["flush", "ruleset"]).expect_ok("flush ruleset");
    wait_until(
        Duration::from_secs(5),
        "a.test back in dnsallow4 after a flush",
        allowed,
    );
}

#[test]
fn a_name_limited_to_ports_is_accepted_on_those_ports_only() {
    let pair = common::VethPair::new(&["10.98.0.1/24"], &["10.98.0.2/24"]);
    let bus = TestBus::start();
    let config = format!(
        "[dns]\nservers = [\"127.0.0.1:{PORT}\"]\n[[dns.allow]]\nname = \"runner.test\"\nmin_ttl = \"1s\"\nports = [2222]\n"
    );
    // The runner was banned before its name resolved (no DNS server yet).
    let daemon = Daemon::start(&pair.server, &bus, &config);
    daemon
        .cli(&["ban", "10.98.0.2"])
        .expect_ok("ban before the name resolves");
    let _dns = Dnsmasq::start(&pair.server, "10.98.0.2 runner.test\n", 60);
    wait_until(Duration::from_secs(5), "runner.test in dnsport4", || {
        pair.server
            .set_elements("orch", "dnsport4")
            .contains(&"10.98.0.2 . 2222".to_string())
    });
    assert!(pair.server.set_elements("orch", "dnsallow4").is_empty());

    // The allow rule comes before the bans: port 2222 gets through, any
    // other port still meets the ban.
    pair.listen(2222);
    pair.listen(2223);
    let timeout = Duration::from_secs(1);
    assert!(
        pair.connect_from("10.98.0.2", "10.98.0.1", 2222, timeout),
        "allowed port blocked"
    );
    assert!(
        !pair.connect_from("10.98.0.2", "10.98.0.1", 2223, timeout),
        "other port let through"
    );
    let refused = daemon.cli(&["ban", "10.98.0.2"]);
    assert!(refused.stderr.contains("Allowlisted"), "{}", refused.stderr);
}

/// A resolver that answers A but refuses AAAA (dnsmasq with a host-record
/// and no upstream): the name's A address is allowed on the first start,
/// and `orch allow list` shows the AAAA family failing.
#[test]
fn a_refused_aaaa_query_does_not_cost_the_name_its_a_address() {
    let netns = NetNs::new();
    let mut dnsmasq = spawn_dnsmasq(
        &netns,
        &["--host-record=v4only.example,192.0.2.20".to_string()],
    );
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, &config(&["v4only.example"], 2));
    wait_until(
        Duration::from_secs(5),
        "v4only.example's A address in the DNS allow set",
        || {
            netns
                .set_elements("orch", "dnsallow4")
                .contains(&"192.0.2.20".to_string())
        },
    );
    let listed = daemon.cli(&["allow", "list"]).expect_ok("allow list");
    let aaaa_row = listed
        .stdout
        .lines()
        .find(|line| line.contains("dns AAAA"))
        .unwrap_or_default();
    assert!(
        listed.stdout.contains("dns A ") && aaaa_row.contains("failing"),
        "each family has its row, the AAAA one failing:\n{}",
        listed.stdout
    );
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
}
