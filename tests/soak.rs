//! A compressed soak (issue 17, item 5): orch installed as a unit in a real
//! systemd, for ten minutes (by default) under everything at once:
//!
//! - a file jail flooded every 10 s (new attackers past maxretry, plus noise);
//! - `systemctl reload nftables` every 3 s, with a hook that runs on each;
//! - a DNS allow name whose address changes every 7 s (dnsmasq, SIGHUP);
//! - bans and unbans through `orch ban`/`orch unban` every 2 s;
//! - a second host (srv2) banning through the fleet (NATS JetStream) every
//!   2 s, with this host's link to NATS cut for 30 s twice and healed.
//!
//! Every 15 s a checkpoint looks at the kernel: every ban that should be
//! live (acknowledged, or due from the jail or the fleet, with time left) is
//! there, and every acknowledged unban is not. At the end the daemon is
//! restarted and the same is checked again, so the store held them too.
//! Every 5 s it samples the daemon's RSS, open fds and threads; their slopes
//! after the warm-up are printed and must stay flat.
//!
//! Addresses come from pools that cycle more slowly than bans end (see
//! [`POOL_ROUNDS`]), so the daemon's state levels off; `ORCH_SOAK_DISTINCT=1`
//! bans new addresses throughout, which shows what orch keeps per address
//! ever banned.
//!
//! Ignored by default (ten minutes). Run it with
//! `cargo test --release --test soak -- --ignored --nocapture`;
//! `ORCH_SOAK_SECS=120` for a short one. The figures are in
//! docs/benchmarks.md ("Robustness").

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::fleet_topology::{FleetNats, FleetOpts, GW_INSIDE, PREFIX_LEN, Topology, host_config};
use common::nats::NatsVersion;
use common::systemd::{ORCH_IN_SANDBOX as ORCH, SystemdSandbox};
use common::{poll_until, run_command_with_input, wait_until};

/// This host's name on the bridge and in the fleet (its NATS user).
const HOST: &str = "srv1";
/// Its address on the inside network (srv1's own namespace keeps .11, and
/// its bridge port), and its bridge port's name.
const HOST_ADDR: &str = "10.77.0.21";
const HOST_PORT: &str = "soak";
/// The jail's log, inside the sandbox (root only, so its bans are shared).
const JAIL_LOG: &str = "/var/log/soak-auth.log";
const DNS_PORT: u16 = 5353;
const DNS_HOSTS: &str = "/etc/orch-soak/hosts";
const DNS_NAME: &str = "allowed.test";

/// How long every ban lasts: jail, manual and remote ones alike, so the
/// number of bans levels off after the first minute and a half.
const BAN_SECS: u64 = 90;
/// A ban is checked only while it has more than this left, so that one
/// expiring between the listing and the check is not called lost.
const EXPIRY_MARGIN: Duration = Duration::from_secs(15);
/// How long the jail gets to ban a burst, and the fleet to deliver a ban
/// (after a heal: from the heal).
const SETTLE: Duration = Duration::from_secs(20);

const RELOAD_EVERY: Duration = Duration::from_secs(3);
const FLOOD_EVERY: Duration = Duration::from_secs(10);
const BAN_EVERY: Duration = Duration::from_secs(2);
const DNS_EVERY: Duration = Duration::from_secs(7);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const CHECK_EVERY: Duration = Duration::from_secs(15);
const PARTITION_FOR: Duration = Duration::from_secs(30);

/// New attackers per flood, each with maxretry failures.
const FLOOD_ATTACKERS: u32 = 500;
const MAXRETRY: u32 = 3;
/// Lines per flood that match nothing.
const FLOOD_NOISE: u32 = 2_000;
/// Addresses per `orch ban` call (here and on srv2).
const BAN_BATCH: u32 = 5;
/// Each series of addresses cycles through a pool this many floods or
/// calls long, longer than a ban lasts, so every address is banned again
/// after its ban ended and the state orch keeps per address it has seen
/// (ban history, for recidive) stops growing: what still grows is a leak.
/// `ORCH_SOAK_DISTINCT=1` uses new addresses throughout instead.
const POOL_ROUNDS: u32 = 12;

const HOOK: &str = "#!/bin/sh
set -eu
echo \"$ORCH_EVENT $ORCH_UNIT\" >> /var/lib/orch/soak-hook-runs
nft list table inet filter >/dev/null 2>&1 || exit 0
nft list chain inet filter input | grep -q orch-soak-hook ||
    nft insert rule inet filter input ip saddr 203.0.113.99 accept comment orch-soak-hook
";

/// The `n`th address of a /10 or /15 test range.
fn nth(base: Ipv4Addr, n: u32) -> String {
    Ipv4Addr::from(u32::from(base) + n).to_string()
}

/// Jail attackers: 100.64.0.0/10 (shared address space).
fn attacker(n: u32) -> String {
    nth(Ipv4Addr::new(100, 64, 0, 0), n)
}

/// Manual bans here: 198.18.0.0/16; srv2's: 198.19.0.0/16.
fn local_ban(n: u32) -> String {
    nth(Ipv4Addr::new(198, 18, 0, 0), n)
}

fn remote_ban(n: u32) -> String {
    nth(Ipv4Addr::new(198, 19, 0, 0), n)
}

/// The DNS name's `n`th address: 192.0.2.10 to .209, round robin.
fn dns_address(n: u32) -> String {
    format!("192.0.2.{}", 10 + n % 200)
}

/// One sample of the daemon's resources.
struct Sample {
    at: Duration,
    pid: String,
    rss_kib: f64,
    fds: f64,
    threads: f64,
}

/// Where a ban comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Jail,
    Manual,
    Fleet,
}

/// A ban the kernel must hold from `due` until `expires - EXPIRY_MARGIN`.
struct Expected {
    due: Instant,
    expires: Instant,
    origin: Origin,
}

/// Far enough ahead to mean "not due until told".
const NOT_YET: Duration = Duration::from_secs(86_400);

#[derive(Default)]
struct Counts {
    reloads: u64,
    reloads_without_hook_rule: u64,
    floods: u64,
    jail_lines: u64,
    manual_ban_calls: u64,
    manual_unban_calls: u64,
    remote_ban_calls: u64,
    dns_changes: u64,
    dns_late: u64,
    partitions: u64,
    checkpoints: u64,
    checked_bans: u64,
    /// Addresses in ban4 at the last checkpoint, and at most.
    kernel_bans_last: usize,
    kernel_bans_max: usize,
    lost: Vec<String>,
    unbans_back: Vec<String>,
}

struct Soak {
    sandbox: SystemdSandbox,
    topo: Topology,
    _fleet: FleetNats,
    dnsmasq: Child,
    started: Instant,
    /// Address -> when it must be in the kernel, and until when.
    expected: BTreeMap<String, Expected>,
    /// Addresses whose unban was acknowledged.
    unbanned: BTreeSet<String>,
    /// The manual bans of the last `orch ban` call.
    previous_batch: Vec<String>,
    counts: Counts,
    samples: Vec<Sample>,
    /// Whether this host is cut off from NATS.
    partitioned: bool,
    dns_current: Option<(String, Instant)>,
    next: BTreeMap<&'static str, Duration>,
    serial: BTreeMap<&'static str, u32>,
    /// New addresses throughout (`ORCH_SOAK_DISTINCT=1`), not pools.
    distinct: bool,
}

impl Drop for Soak {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
    }
}

impl Soak {
    fn start() -> Soak {
        let mut topo = Topology::new();
        let fleet = FleetNats::start(&topo, NatsVersion::Current);
        fleet.create_bucket(&topo, 1);

        let sandbox = SystemdSandbox::boot();
        topo.plug_in(HOST_PORT, sandbox.pid());
        let cidr = format!("{HOST_ADDR}/{PREFIX_LEN}");
        for args in [
            vec!["addr", "add", cidr.as_str(), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "default", "via", GW_INSIDE],
        ] {
            sandbox.run("ip", &args).expect_ok("sandbox network");
        }

        // The fleet's files, as an admin would lay them out.
        let ca = std::fs::read_to_string(fleet.ca_path()).expect("read the test CA");
        sandbox.write_file("/etc/orch/fleet/ca.pem", &ca, 0o644);
        let password = format!("{}\n", fleet.password(HOST));
        sandbox.write_file("/etc/orch/fleet/srv1.password", &password, 0o600);
        let fleet_section = fleet.fleet_section_at(
            HOST,
            &FleetOpts::default(),
            Path::new("/etc/orch/fleet/srv1.password"),
            Path::new("/etc/orch/fleet/ca.pem"),
        );

        sandbox.write_file(JAIL_LOG, "", 0o600);
        sandbox.write_file("/etc/orch/hooks.d/10-soak", HOOK, 0o755);
        sandbox.write_file(
            DNS_HOSTS,
            &format!("{} {DNS_NAME}\n", dns_address(0)),
            0o644,
        );
        let dnsmasq = sandbox
            .command("dnsmasq")
            .args(common::dnsmasq_args(DNS_PORT))
            .args([
                "--user=root",
                "--local-ttl=1",
                "--local=/test/",
                &format!("--addn-hosts={DNS_HOSTS}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq in the sandbox");
        wait_until(Duration::from_secs(5), "dnsmasq to listen", || {
            sandbox
                .run("ss", &["-lun"])
                .stdout
                .contains(&format!("127.0.0.1:{DNS_PORT}"))
        });

        let config = format!(
            "[jails.sshd]\nfiles = [\"{JAIL_LOG}\"]\nmaxretry = {MAXRETRY}\n\
             findtime = \"10m\"\nbantime = \"{BAN_SECS}s\"\n\
             [hooks]\ntimeout = \"5s\"\n\
             [dns]\nservers = [\"127.0.0.1:{DNS_PORT}\"]\n\
             [[dns.allow]]\nname = \"{DNS_NAME}\"\nmin_ttl = \"1s\"\nmax_ttl = \"1h\"\n\
             {fleet_section}"
        );
        sandbox.install_and_start_orch(Some(&config));

        topo.host_mut("srv2").start_daemon(&host_config(
            &[],
            false,
            &fleet.fleet_section("srv2", &FleetOpts::default()),
        ));

        let soak = Soak {
            sandbox,
            topo,
            _fleet: fleet,
            dnsmasq,
            started: Instant::now(),
            expected: BTreeMap::new(),
            unbanned: BTreeSet::new(),
            previous_batch: Vec::new(),
            counts: Counts::default(),
            samples: Vec::new(),
            partitioned: false,
            dns_current: None,
            next: BTreeMap::new(),
            serial: BTreeMap::new(),
            distinct: std::env::var("ORCH_SOAK_DISTINCT").is_ok_and(|v| v == "1"),
        };
        soak.wait_fleet_connected();
        soak
    }

    fn orch(&self, args: &[&str]) -> common::CmdOutput {
        self.sandbox.run(ORCH, args)
    }

    fn wait_fleet_connected(&self) {
        let connected = |status: &str| {
            status.lines().any(|l| {
                l.trim_start().starts_with("fleet:")
                    && l.contains("connected")
                    && !l.contains("disconnected")
            })
        };
        let ok = poll_until(Duration::from_secs(30), || {
            connected(&self.orch(&["status"]).stdout)
        });
        assert!(
            ok,
            "orch never connected to the fleet\n{}\n{}",
            self.orch(&["status"]),
            self.sandbox.journal("orch.service")
        );
        let srv2 = self.topo.host("srv2");
        let ok = poll_until(Duration::from_secs(30), || {
            connected(&srv2.cli(&["status"]).stdout)
        });
        assert!(ok, "srv2 never connected\n{}", srv2.log_tail(40));
    }

    /// The next number of a series (attackers, bans, DNS addresses).
    fn serial(&mut self, series: &'static str, n: u32) -> u32 {
        let value = self.serial.entry(series).or_insert(0);
        let first = *value;
        *value += n;
        if self.distinct {
            first
        } else {
            first % (n * POOL_ROUNDS)
        }
    }

    /// Whether `task` is due (every `every`), scheduling its next run.
    fn due(&mut self, task: &'static str, every: Duration) -> bool {
        let now = self.started.elapsed();
        let next = self.next.entry(task).or_insert(Duration::ZERO);
        if now < *next {
            return false;
        }
        *next = now + every;
        true
    }

    fn expect(&mut self, addr: String, due: Instant, origin: Origin) {
        let expires = Instant::now() + Duration::from_secs(BAN_SECS);
        self.expected.insert(
            addr,
            Expected {
                due,
                expires,
                origin,
            },
        );
    }

    fn reload_nftables(&mut self) {
        self.sandbox
            .systemctl(&["reload", "nftables.service"])
            .expect_ok("systemctl reload nftables");
        self.counts.reloads += 1;
        let chain = self
            .sandbox
            .nft(&["list", "chain", "inet", "filter", "input"]);
        if !(chain.ok() && chain.stdout.contains("orch-soak-hook")) {
            self.counts.reloads_without_hook_rule += 1;
        }
    }

    fn flood(&mut self) {
        let first = self.serial("attacker", FLOOD_ATTACKERS);
        let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
        let mut lines = String::new();
        for round in 0..MAXRETRY {
            for i in 0..FLOOD_ATTACKERS {
                let addr = attacker(first + i);
                let _ = writeln!(
                    lines,
                    "{stamp} soak sshd[{}]: Invalid user u{round} from {addr} port 22",
                    1000 + i
                );
            }
        }
        for i in 0..FLOOD_NOISE {
            let _ = writeln!(
                lines,
                "{stamp} soak sshd[{i}]: Connection closed by 192.0.2.250 port {i}"
            );
        }
        let written = Instant::now();
        run_command_with_input(
            self.sandbox
                .command("sh")
                .args(["-c", &format!("cat >> {JAIL_LOG}")]),
            &lines,
        )
        .expect_ok("append to the jail log");
        self.counts.floods += 1;
        self.counts.jail_lines += u64::from(FLOOD_ATTACKERS * MAXRETRY + FLOOD_NOISE);
        for i in 0..FLOOD_ATTACKERS {
            self.expect(attacker(first + i), written + SETTLE, Origin::Jail);
        }
    }

    fn manual_bans(&mut self) {
        let first = self.serial("local", BAN_BATCH);
        let addrs: Vec<String> = (0..BAN_BATCH).map(|i| local_ban(first + i)).collect();
        let mut args = vec!["ban", "--for", "90s", "--reason", "soak"];
        args.extend(addrs.iter().map(String::as_str));
        self.orch(&args).expect_ok("orch ban");
        self.counts.manual_ban_calls += 1;
        let now = Instant::now();
        for addr in &addrs {
            self.expect(addr.clone(), now, Origin::Manual);
            self.unbanned.remove(addr);
        }
        // Unban two of the previous call's bans (two seconds old).
        let previous = std::mem::replace(&mut self.previous_batch, addrs);
        let gone = &previous[..previous.len().min(2)];
        if !gone.is_empty() {
            let mut args = vec!["unban"];
            args.extend(gone.iter().map(String::as_str));
            self.orch(&args).expect_ok("orch unban");
            self.counts.manual_unban_calls += 1;
            for addr in gone {
                self.expected.remove(addr);
                self.unbanned.insert(addr.clone());
            }
        }
    }

    fn remote_bans(&mut self) {
        let first = self.serial("remote", BAN_BATCH);
        let addrs: Vec<String> = (0..BAN_BATCH).map(|i| remote_ban(first + i)).collect();
        let mut args = vec!["ban", "--for", "90s", "--reason", "soak from srv2"];
        args.extend(addrs.iter().map(String::as_str));
        self.topo
            .host("srv2")
            .cli(&args)
            .expect_ok("srv2: orch ban");
        self.counts.remote_ban_calls += 1;
        // Cut off, this host gets them only after the heal.
        let due = Instant::now() + if self.partitioned { NOT_YET } else { SETTLE };
        for addr in addrs {
            self.expect(addr, due, Origin::Fleet);
        }
    }

    fn change_dns(&mut self) {
        let n = self.serial("dns", 1) + 1;
        let addr = dns_address(n);
        self.sandbox
            .write_file(DNS_HOSTS, &format!("{addr} {DNS_NAME}\n"), 0o644);
        self.sandbox
            .run("kill", &["-HUP", &self.dnsmasq_pid()])
            .expect_ok("SIGHUP dnsmasq");
        self.counts.dns_changes += 1;
        self.dns_current = Some((addr, Instant::now()));
    }

    /// dnsmasq's pid inside the sandbox.
    fn dnsmasq_pid(&self) -> String {
        let out = self
            .sandbox
            .run("pgrep", &["-x", "dnsmasq"])
            .expect_ok("pgrep dnsmasq");
        out.stdout.lines().next().unwrap_or_default().to_string()
    }

    /// Cuts this host off NATS, or heals the cut. Fleet bans not yet due
    /// at the cut are due SETTLE after the heal.
    fn partition(&mut self, cut: bool) {
        self.topo.set_port(HOST_PORT, !cut);
        self.partitioned = cut;
        let now = Instant::now();
        let pending = self
            .expected
            .values_mut()
            .filter(|e| e.origin == Origin::Fleet && e.due > now);
        if cut {
            self.counts.partitions += 1;
            pending.for_each(|e| e.due = now + NOT_YET);
        } else {
            pending.for_each(|e| e.due = e.due.min(now + SETTLE));
        }
    }

    fn sample(&mut self) {
        let out = self
            .sandbox
            .sh("pid=$(systemctl show -p MainPID --value orch.service); \
             echo $pid; awk '/^VmRSS/ {print $2}' /proc/$pid/status; \
             ls /proc/$pid/fd | wc -l; ls /proc/$pid/task | wc -l");
        let lines: Vec<&str> = out.stdout.lines().collect();
        if let [pid, rss, fds, threads] = lines[..] {
            let number = |text: &str| text.trim().parse::<f64>().unwrap_or(f64::NAN);
            self.samples.push(Sample {
                at: self.started.elapsed(),
                pid: pid.trim().to_string(),
                rss_kib: number(rss),
                fds: number(fds),
                threads: number(threads),
            });
        }
    }

    /// Every ban due and with time left is in the kernel, and no
    /// acknowledged unban is. Returns how many bans it checked.
    fn checkpoint(&mut self, when: &str) -> u64 {
        let kernel: BTreeSet<String> = self
            .sandbox
            .set_elements("orch", "ban4")
            .into_iter()
            .collect();
        let now = Instant::now();
        let mut checked = 0;
        for (addr, expected) in &self.expected {
            if now < expected.due || now + EXPIRY_MARGIN > expected.expires {
                continue;
            }
            checked += 1;
            if !kernel.contains(addr) {
                self.counts.lost.push(format!(
                    "{when}: {:?} ban {addr} not in the kernel",
                    expected.origin
                ));
            }
        }
        for addr in &self.unbanned {
            if kernel.contains(addr) {
                self.counts
                    .unbans_back
                    .push(format!("{when}: unbanned {addr} in the kernel"));
            }
        }
        if let Some((addr, changed)) = &self.dns_current
            && now > *changed + Duration::from_secs(5)
            && !self
                .sandbox
                .set_elements("orch", "dnsallow4")
                .contains(addr)
        {
            self.counts.dns_late += 1;
        }
        self.counts.checkpoints += 1;
        self.counts.checked_bans += checked;
        self.counts.kernel_bans_last = kernel.len();
        self.counts.kernel_bans_max = self.counts.kernel_bans_max.max(kernel.len());
        self.expected.retain(|_, e| e.expires > now);
        checked
    }

    fn run(&mut self, length: Duration) {
        let partitions = [length * 3 / 10, length * 7 / 10];
        while self.started.elapsed() < length {
            let elapsed = self.started.elapsed();
            let cut = partitions
                .iter()
                .any(|start| elapsed >= *start && elapsed < *start + PARTITION_FOR);
            if cut != self.partitioned {
                self.partition(cut);
            }
            if self.due("reload", RELOAD_EVERY) {
                self.reload_nftables();
            }
            if self.due("flood", FLOOD_EVERY) {
                self.flood();
            }
            if self.due("ban", BAN_EVERY) {
                self.manual_bans();
                self.remote_bans();
            }
            if self.due("dns", DNS_EVERY) {
                self.change_dns();
            }
            if self.due("sample", SAMPLE_EVERY) {
                self.sample();
            }
            if self.due("check", CHECK_EVERY) {
                let when = format!("at {} s", elapsed.as_secs());
                self.checkpoint(&when);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.partitioned {
            self.partition(false);
        }
    }
}

/// Least-squares slope of `value` over time, per minute.
fn slope_per_minute(samples: &[&Sample], value: impl Fn(&Sample) -> f64) -> f64 {
    let n = samples.len() as f64;
    let xs: Vec<f64> = samples.iter().map(|s| s.at.as_secs_f64() / 60.0).collect();
    let ys: Vec<f64> = samples.iter().map(|s| value(s)).collect();
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = ys.iter().sum::<f64>() / n;
    let covariance: f64 = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    let variance: f64 = xs.iter().map(|x| (x - mean_x).powi(2)).sum();
    covariance / variance
}

fn range(samples: &[&Sample], value: impl Fn(&Sample) -> f64) -> (f64, f64) {
    samples
        .iter()
        .map(|s| value(s))
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

#[test]
#[ignore = "ten minutes; run with --ignored (see the module doc)"]
fn a_compressed_soak_loses_no_ban_and_stays_flat() {
    let length = Duration::from_secs(
        std::env::var("ORCH_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600),
    );
    let mut soak = Soak::start();
    soak.run(length);

    // Let the last flood and the last fleet bans land, then look once more.
    std::thread::sleep(SETTLE);
    soak.checkpoint("at the end");
    // The store holds them too: a restart brings every live ban back.
    soak.sandbox
        .systemctl(&["restart", "orch.service"])
        .expect_ok("systemctl restart orch");
    soak.checkpoint("after restarting orch");
    let verify = soak.orch(&["store", "verify"]);

    let c = &soak.counts;
    eprintln!("soak of {} s:", length.as_secs());
    eprintln!(
        "  nftables reloads {} (hook rule missing after {}), floods {} ({} lines), \
         orch ban calls {} and unban calls {} here, ban calls on srv2 {}, DNS changes {} \
         (late at a checkpoint {}), partitions {}",
        c.reloads,
        c.reloads_without_hook_rule,
        c.floods,
        c.jail_lines,
        c.manual_ban_calls,
        c.manual_unban_calls,
        c.remote_ban_calls,
        c.dns_changes,
        c.dns_late,
        c.partitions
    );
    eprintln!(
        "  checkpoints {}, bans checked {}, bans in the kernel at most {} (at the end {}), \
         lost {}, unbans back {}",
        c.checkpoints,
        c.checked_bans,
        c.kernel_bans_max,
        c.kernel_bans_last,
        c.lost.len(),
        c.unbans_back.len()
    );
    let hook_runs = soak
        .sandbox
        .read_file("/var/lib/orch/soak-hook-runs")
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!("  hook runs {hook_runs}");

    // Resources after the warm-up (the first BAN_SECS + 30 s, while the
    // number of bans grows to its level).
    let warm_up = Duration::from_secs(BAN_SECS + 30).min(length / 3);
    let pid = soak
        .samples
        .last()
        .map(|s| s.pid.clone())
        .unwrap_or_default();
    let steady: Vec<&Sample> = soak.samples.iter().filter(|s| s.at >= warm_up).collect();
    let restarts: BTreeSet<&str> = soak.samples.iter().map(|s| s.pid.as_str()).collect();
    let rss = slope_per_minute(&steady, |s| s.rss_kib);
    let fds = slope_per_minute(&steady, |s| s.fds);
    let threads = slope_per_minute(&steady, |s| s.threads);
    // Levelling off or still growing: the same slopes over the last half.
    let last_half = &steady[steady.len() / 2..];
    let rss_late = slope_per_minute(last_half, |s| s.rss_kib);
    let fds_late = slope_per_minute(last_half, |s| s.fds);
    let threads_late = slope_per_minute(last_half, |s| s.threads);
    let (rss_lo, rss_hi) = range(&steady, |s| s.rss_kib);
    let (fds_lo, fds_hi) = range(&steady, |s| s.fds);
    let (threads_lo, threads_hi) = range(&steady, |s| s.threads);
    eprintln!(
        "  {} samples after {} s of warm-up (pid {pid}):",
        steady.len(),
        warm_up.as_secs()
    );
    eprintln!(
        "  RSS {rss_lo:.0}-{rss_hi:.0} KiB, slope {rss:+.1} KiB/min (last half {rss_late:+.1})"
    );
    eprintln!("  fds {fds_lo}-{fds_hi}, slope {fds:+.3}/min (last half {fds_late:+.3})");
    eprintln!(
        "  threads {threads_lo}-{threads_hi}, slope {threads:+.3}/min (last half {threads_late:+.3})"
    );
    let rss_series: Vec<String> = steady
        .iter()
        .step_by(6)
        .map(|s| format!("{}s:{:.1}", s.at.as_secs(), s.rss_kib / 1024.0))
        .collect();
    eprintln!("  RSS every 30 s (MiB): {}", rss_series.join(" "));

    assert!(
        c.lost.is_empty() && c.unbans_back.is_empty(),
        "lost {:?}\nunbans back {:?}\n{}",
        &c.lost[..c.lost.len().min(20)],
        &c.unbans_back[..c.unbans_back.len().min(20)],
        soak.sandbox.journal("orch.service")
    );
    assert_eq!(
        c.reloads_without_hook_rule, 0,
        "the hook rule was missing after a reload"
    );
    assert!(c.checked_bans > 0, "no ban was ever checked");
    assert_eq!(
        restarts.len(),
        1,
        "orch restarted during the soak: {restarts:?}"
    );
    assert!(verify.ok(), "orch store verify after the soak: {verify}");
    assert!(
        hook_runs as u64 >= c.reloads,
        "{hook_runs} hook runs for {} reloads",
        c.reloads
    );
    assert!(steady.len() >= 10, "too few samples: {}", steady.len());
    // Flat: a leak of one fd or thread per minute, or of 1 MiB of RSS per
    // minute, fails. (Noise is far below: see docs/benchmarks.md.)
    assert!(fds.abs() < 1.0, "open fds grow by {fds:.2}/min");
    assert!(threads.abs() < 1.0, "threads grow by {threads:.2}/min");
    assert!(rss < 1024.0, "RSS grows by {rss:.0} KiB/min");
}
