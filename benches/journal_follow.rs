//! A journal jail's latency and idle cost, side by side with fail2ban's
//! systemd backend, each in a real systemd booted in a throwaway sandbox
//! (tests/common/systemd.rs) with journald (issue 19, item 3).
//!
//! Each daemon gets two journal jails: `sshd`, fed by a probe service, and
//! one whose unit never logs. Then:
//! - idle cost: the service's CPU time (its cgroup's `usage_usec`,
//!   children included) over [`IDLE_SECONDS`] with nothing logged;
//! - latency: [`SAMPLES`] failure lines, one at a time (maxretry 1), each
//!   from a new address, written to the probe service's stdout (so through
//!   journald, as sshd's are); the time from the write until `nft monitor`
//!   shows the address added to the ban set. The first line comes after
//!   the quiet idle window and is shown apart: orch's reader polls only
//!   while lines keep coming (src/jail/journal_source.rs).
//!
//! Run as root: `cargo bench --bench journal_follow [-- orch|fail2ban...]`
//! (both by default). `ORCH_BENCH_BIN=/path/to/orch` measures another
//! orch build instead of this one (outside /tmp, which the sandbox hides),
//! for a before/after in one run. Figures go to docs/benchmarks.md. Bench
//! only: it asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::systemd::{ORCH_IN_SANDBOX, SystemdSandbox};

/// How long the idle cost is measured.
const IDLE_SECONDS: u64 = 30;
/// Failure lines sent, one at a time.
const SAMPLES: usize = 100;
/// The service the probe lines come from, and one that stays quiet.
const PROBE_UNIT: &str = "probe-sshd.service";
const QUIET_UNIT: &str = "quiet-probe.service";

fn orch_config() -> String {
    format!(
        "[jails.sshd]\njournal = {{ matches = [\"_SYSTEMD_UNIT={PROBE_UNIT}\"] }}\nmaxretry = 1\nfindtime = \"10m\"\nbantime = \"1h\"\n\
         [jails.quiet]\nfilter = \"sshd\"\njournal = {{ matches = [\"_SYSTEMD_UNIT={QUIET_UNIT}\"] }}\nmaxretry = 1\n"
    )
}

fn fail2ban_config() -> String {
    format!(
        "[DEFAULT]\nbackend = systemd\nbanaction = nftables-allports\n\
         [sshd]\nenabled = true\njournalmatch = _SYSTEMD_UNIT={PROBE_UNIT}\nmaxretry = 1\nfindtime = 10m\nbantime = 1h\n\
         [quiet]\nenabled = true\nfilter = sshd\njournalmatch = _SYSTEMD_UNIT={QUIET_UNIT}\nmaxretry = 1\n"
    )
}

/// Runs inside the sandbox: writes one failure line at a time into the
/// probe service's input and times each until `nft monitor` shows its
/// address added to a set; prints one latency (ms) per line, or `missed`.
const PROBE_SCRIPT: &str = r#"
import os, random, re, select, subprocess, sys, time
fifo, count, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
monitor = subprocess.Popen(["nft", "monitor", "new", "elements"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
pending = b""
def wait_for(address, deadline):
    global pending
    pattern = re.compile(rb"[{ ,]" + re.escape(address.encode()) + rb"[ ,}]")
    while True:
        for line in pending.split(b"\n")[:-1]:
            if pattern.search(line):
                pending = b""
                return True
        pending = pending.split(b"\n")[-1]
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([monitor.stdout], [], [], left)[0]:
            return False
        pending += os.read(monitor.stdout.fileno(), 65536)
# The monitor is listening once it reports an element of a scratch set.
subprocess.run(["nft", "-f", "-"], check=True, input=b"table inet probe {\nset s { type ipv4_addr; }\n}\nadd element inet probe s { 192.0.2.255 }\n")
if not wait_for("192.0.2.255", time.monotonic() + 10):
    monitor.kill()
    sys.exit("nft monitor reported nothing")
subprocess.run(["nft", "delete", "table", "inet", "probe"], check=True)
out = open(fifo, "w")
for i in range(count):
    address = "10.9.%d.%d" % (i // 250, i % 250 + 1)
    started = time.monotonic()
    out.write("Failed password for invalid user admin from %s port %d ssh2\n" % (address, 40000 + i))
    out.flush()
    if wait_for(address, started + 5):
        print("%.2f" % ((time.monotonic() - started) * 1000), flush=True)
    else:
        print("missed", flush=True)
    # A random pause, so lines do not fall in step with a polling reader.
    time.sleep(random.uniform(gap / 2, gap * 1.5))
monitor.kill()
"#;

/// What one daemon measured.
struct Figures {
    name: String,
    idle_cpu_ms: f64,
    /// The first line's, after the idle window.
    first_ms: Option<f64>,
    /// The others', sorted.
    latencies_ms: Vec<f64>,
    missed: usize,
}

/// CPU time of `unit`'s cgroup, children included, in milliseconds.
fn unit_cpu_ms(sandbox: &SystemdSandbox, unit: &str) -> f64 {
    let stat = sandbox
        .read_file(&format!("/sys/fs/cgroup/system.slice/{unit}/cpu.stat"))
        .unwrap_or_else(|| panic!("no cpu.stat for {unit}"));
    let micros: f64 = stat
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no usage_usec in {unit}'s cpu.stat:\n{stat}"));
    micros / 1000.0
}

/// Idle cost, then latency, of the daemon running as `unit`.
fn measure(sandbox: &SystemdSandbox, name: &str, unit: &str) -> Figures {
    // Let start-up work finish before the idle window.
    std::thread::sleep(Duration::from_secs(3));
    let before = unit_cpu_ms(sandbox, unit);
    std::thread::sleep(Duration::from_secs(IDLE_SECONDS));
    let idle_cpu_ms = unit_cpu_ms(sandbox, unit) - before;

    sandbox.sh("mkfifo /run/probe.fifo").expect_ok("mkfifo");
    sandbox
        .run(
            "systemd-run",
            &[
                &format!("--unit={PROBE_UNIT}"),
                "--quiet",
                "-p",
                "SyslogIdentifier=sshd",
                "/bin/sh",
                "-c",
                "exec cat /run/probe.fifo",
            ],
        )
        .expect_ok("start the probe service");
    sandbox.write_file("/run/probe.py", PROBE_SCRIPT, 0o644);
    let output = sandbox.run(
        "/usr/bin/python3",
        &[
            "/run/probe.py",
            "/run/probe.fifo",
            &SAMPLES.to_string(),
            "0.2",
        ],
    );
    let output = output.expect_ok("the probe script").stdout;
    let missed = output.lines().filter(|l| *l == "missed").count();
    let first_ms = output.lines().next().and_then(|l| l.parse().ok());
    let mut latencies_ms: Vec<f64> = output
        .lines()
        .skip(1)
        .filter_map(|l| l.parse().ok())
        .collect();
    latencies_ms.sort_by(f64::total_cmp);
    Figures {
        name: name.to_string(),
        idle_cpu_ms,
        first_ms,
        latencies_ms,
        missed,
    }
}

fn run_orch(other_build: Option<&str>) -> Figures {
    let sandbox = SystemdSandbox::boot();
    sandbox.install_and_start_orch(Some(&orch_config()));
    let name = match other_build {
        Some(path) => {
            sandbox
                .run("install", &["-m", "0755", path, ORCH_IN_SANDBOX])
                .expect_ok("install the other orch build");
            sandbox
                .systemctl(&["restart", "orch.service"])
                .expect_ok("restart orch");
            format!("orch ({path})")
        }
        None => "orch".to_string(),
    };
    sandbox.wait_for_journal_jails();
    let figures = measure(&sandbox, &name, "orch.service");
    sandbox.shutdown();
    figures
}

fn run_fail2ban() -> Figures {
    let sandbox = SystemdSandbox::boot();
    sandbox
        .systemctl(&["start", "nftables.service"])
        .expect_ok("start nftables");
    sandbox.write_file("/etc/fail2ban/jail.local", &fail2ban_config(), 0o644);
    sandbox
        .systemctl(&["start", "fail2ban.service"])
        .expect_ok("start fail2ban");
    common::wait_until(Duration::from_secs(30), "fail2ban's jails", || {
        sandbox.run("fail2ban-client", &["status", "quiet"]).ok()
    });
    let figures = measure(&sandbox, "fail2ban 1.0.2", "fail2ban.service");
    sandbox.shutdown();
    figures
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    // `cargo test --all-targets` runs this too; only work when benchmarking.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("journal follow bench: run with `cargo bench --bench journal_follow`");
        return;
    }
    let mut which: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| matches!(*a, "orch" | "fail2ban"))
        .collect();
    if which.is_empty() {
        which = vec!["orch", "fail2ban"];
    }
    let other_build = std::env::var("ORCH_BENCH_BIN").ok();
    let mut all = Vec::new();
    for name in which {
        let figures = match name {
            "orch" => run_orch(other_build.as_deref()),
            _ => run_fail2ban(),
        };
        all.push(figures);
    }
    println!(
        "| daemon | idle CPU, 2 journal jails, {IDLE_SECONDS} s | % of a core | first line after idle | latency p50 | p99 | max | missed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for f in &all {
        println!(
            "| {} | {:.0} ms | {:.2} % | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} of {SAMPLES} |",
            f.name,
            f.idle_cpu_ms,
            f.idle_cpu_ms / (IDLE_SECONDS as f64 * 10.0),
            f.first_ms.unwrap_or(f64::NAN),
            percentile(&f.latencies_ms, 0.5),
            percentile(&f.latencies_ms, 0.99),
            f.latencies_ms.last().copied().unwrap_or(f64::NAN),
            f.missed
        );
    }
}
