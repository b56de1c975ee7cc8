//! The flood bench (issue 19, item 1): orch, Debian's fail2ban and
//! fail2ban-rs, each live in its own fresh network namespace following
//! its own file, get the same generated sshd log (benches/flood/lines.rs):
//!
//! - burst: N attackers (default 100,000) × (5 failures + 5 benign lines),
//!   1M lines appended in one write; the time until every attacker is in
//!   the kernel set, the daemon's CPU seconds (its reaped children
//!   included) and peak RSS. A daemon that has not banned them all by the
//!   deadline (default 300 s) is reported as "n of N", with the rate.
//! - steady: R lines/s (default 10,000) for S seconds (default 60), paced
//!   in 5 ms batches: of every ten filler lines three are failures from
//!   addresses that fail only twice, seven are benign; every P ms (default
//!   150) a probe address writes its 5 failures at once. Latency is from
//!   the write of a probe's last line until the kernel's set has it (the
//!   lookup `nft get element` sends, every 1 ms: benches/support/probe.rs);
//!   p50, p99, max and the daemon's CPU % of one core over the window.
//!
//! Run as root, after `sh benches/peers.sh` (installs the peers):
//!
//! ```text
//! cargo bench --bench flood -- [burst] [steady] [orch] [fail2ban] [fail2ban-rs]
//!     [--attackers N] [--deadline SECS] [--rate LINES] [--seconds SECS]
//!     [--probe-ms MS] [--settle SECS] [--perf DIR]
//! ```
//!
//! No scenario or daemon named means all of them. `--perf DIR` records
//! `perf record -g` of each daemon over each measured phase into DIR.
//! Prints one markdown table per scenario, with ratios against orch
//! (docs/benchmarks.md, "Flood: orch, fail2ban and fail2ban-rs live").
//!
//! The bench must not touch the host's firewall or the Debian fail2ban
//! service, and leaves no daemon running: each is killed on drop.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "flood/daemons.rs"]
mod daemons;
#[path = "flood/lines.rs"]
mod lines;
mod support;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use daemons::{Kind, Live};
use lines::{MAXRETRY, SteadyLog};
use support::probe::{self, Sampler};

/// Pacing of the steady writer.
const BATCH_EVERY: Duration = Duration::from_millis(5);
/// Sampling interval for steady probes, and for the burst's last attacker.
const PROBE_EVERY: Duration = Duration::from_millis(1);
const BURST_POLL_EVERY: Duration = Duration::from_millis(10);

struct Options {
    burst: bool,
    steady: bool,
    kinds: Vec<Kind>,
    attackers: usize,
    deadline: Duration,
    rate: u64,
    seconds: u64,
    probe_every: Duration,
    settle: Duration,
    perf: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Options {
    let mut options = Options {
        burst: false,
        steady: false,
        kinds: Vec::new(),
        attackers: 100_000,
        deadline: Duration::from_secs(300),
        rate: 10_000,
        seconds: 60,
        probe_every: Duration::from_millis(150),
        settle: Duration::from_secs(30),
        perf: None,
    };
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| -> u64 {
            words
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a whole number"))
        };
        match word.as_str() {
            "--bench" => {}
            "burst" => options.burst = true,
            "steady" => options.steady = true,
            "--attackers" => options.attackers = value("--attackers") as usize,
            "--deadline" => options.deadline = Duration::from_secs(value("--deadline")),
            "--rate" => options.rate = value("--rate"),
            "--seconds" => options.seconds = value("--seconds"),
            "--probe-ms" => options.probe_every = Duration::from_millis(value("--probe-ms")),
            "--settle" => options.settle = Duration::from_secs(value("--settle")),
            "--perf" => {
                options.perf = Some(PathBuf::from(words.next().expect("--perf needs a dir")));
            }
            other => match Kind::parse(other) {
                Some(kind) => options.kinds.push(kind),
                None => panic!("unknown argument {other:?} (see benches/flood.rs)"),
            },
        }
    }
    if !options.burst && !options.steady {
        options.burst = true;
        options.steady = true;
    }
    if options.kinds.is_empty() {
        options.kinds = Kind::ALL.to_vec();
    }
    assert!(options.attackers > 0 && options.rate > 0 && options.seconds > 0);
    options
}

/// `perf record -g` of `pid` into `<dir>/<name>.data`, stopped on drop.
struct Perf(Child);

impl Perf {
    fn start(dir: Option<&Path>, name: &str, pid: u32) -> Option<Perf> {
        let dir = dir?;
        std::fs::create_dir_all(dir).expect("create the perf dir");
        let child = Command::new("perf")
            .args(["record", "-g", "-q", "-p", &pid.to_string(), "-o"])
            .arg(dir.join(format!("{name}.data")))
            .spawn()
            .expect("spawn perf record");
        // Let perf attach before the phase starts.
        std::thread::sleep(Duration::from_millis(500));
        Some(Perf(child))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

struct BurstResult {
    kind: Kind,
    attackers: usize,
    banned: usize,
    /// Until all were in the kernel, or until the deadline.
    elapsed: Duration,
    all_in: bool,
    /// Bans of addresses that are not attackers (must be 0).
    wrong: usize,
    cpu: f64,
    peak_rss_kib: u64,
}

impl BurstResult {
    /// Time to ban all: measured, or extrapolated from the rate so far.
    fn time_to_all(&self) -> Option<f64> {
        if self.all_in {
            Some(self.elapsed.as_secs_f64())
        } else if self.banned > 0 {
            Some(self.elapsed.as_secs_f64() * self.attackers as f64 / self.banned as f64)
        } else {
            None
        }
    }
}

fn burst(kind: Kind, options: &Options) -> BurstResult {
    let n = options.attackers;
    let live = Live::start(kind, n.max(50_000));
    let (table, set) = kind.table_and_set();
    let text = lines::burst_text(n);
    let last = lines::burst_attacker(n - 1);
    let sampler = Sampler::start(&live.netns.path(), table, set, BURST_POLL_EVERY);
    let perf = Perf::start(
        options.perf.as_deref(),
        &format!("burst-{}", kind.name()),
        live.pid(),
    );
    let cpu_before = live.cpu_seconds();
    let started = Instant::now();
    let deadline = started + options.deadline;
    support::append(&live.log, &text);
    println!(
        "{}: {n} attackers, {} lines appended in {:.2} s",
        kind.name(),
        n * MAXRETRY * 2,
        started.elapsed().as_secs_f64()
    );
    // The last attacker's fifth failure is the last failure written; once
    // it is in, count the whole set (about a second at 100k) until all are.
    sampler.watch(last, started);
    let last_seen = sampler.finish(deadline)[0].seen;
    // nft lists a set only between two changes to it (it starts over when
    // the ruleset's generation moves), and the peers change theirs every
    // few milliseconds: so the set is counted with the daemon stopped
    // (SIGSTOP), and the time and CPU are taken when it was stopped. If
    // the first count finds all, they were all in when the last one was.
    let mut pass = 0;
    let (banned, wrong, elapsed, cpu) = loop {
        live.freeze();
        let frozen_at = started.elapsed();
        let cpu = live.cpu_seconds() - cpu_before;
        let elements = live.bans_in_kernel();
        let banned = elements
            .iter()
            .filter(|e| lines::is_burst_attacker(e, n))
            .count();
        let wrong = elements.len() - banned;
        let elapsed = match last_seen {
            Some(seen) if pass == 0 && banned >= n => seen.duration_since(started),
            _ => frozen_at,
        };
        if last_seen.is_none() || banned >= n || Instant::now() >= deadline {
            break (banned, wrong, elapsed, cpu);
        }
        live.thaw();
        pass += 1;
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(perf);
    let result = BurstResult {
        kind,
        attackers: n,
        banned,
        elapsed,
        all_in: banned >= n,
        wrong,
        cpu,
        peak_rss_kib: live.peak_rss_kib(),
    };
    println!(
        "{}: {banned} of {n} banned after {:.2} s ({wrong} others), CPU {cpu:.2} s, peak RSS {} KiB (daemon log {})",
        kind.name(),
        elapsed.as_secs_f64(),
        result.peak_rss_kib,
        live.daemon_log().display()
    );
    result
}

struct SteadyResult {
    kind: Kind,
    lines: u64,
    window: Duration,
    /// Latency of each probe; `None`: not in the kernel by the settle deadline.
    latencies: Vec<Option<Duration>>,
    cpu: f64,
    peak_rss_kib: u64,
    /// Bans of addresses that never reached maxretry (must be 0).
    noise_bans: usize,
}

impl SteadyResult {
    /// Nearest-rank percentile; `None` if it falls on a probe never seen.
    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted: Vec<Option<Duration>> = self.latencies.clone();
        // Unseen probes count as slower than any seen one.
        sorted.sort_by_key(|l| l.unwrap_or(Duration::MAX));
        let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu / self.window.as_secs_f64()
    }

    fn banned(&self) -> usize {
        self.latencies.iter().flatten().count()
    }
}

fn steady(kind: Kind, options: &Options) -> SteadyResult {
    let mut live = Live::start(kind, 50_000);
    let (table, set) = kind.table_and_set();
    let sampler = Sampler::start(&live.netns.path(), table, set, PROBE_EVERY);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&live.log)
        .expect("open the followed log");
    let perf = Perf::start(
        options.perf.as_deref(),
        &format!("steady-{}", kind.name()),
        live.pid(),
    );
    let total = options.rate * options.seconds;
    let mut log = SteadyLog::default();
    let mut text = String::new();
    let mut written = 0;
    let mut batches = 0u32;
    let mut probes = Vec::new();
    let cpu_before = live.cpu_seconds();
    let started = Instant::now();
    let mut next_probe = Duration::ZERO;
    while written < total {
        let elapsed = started.elapsed();
        let due = ((options.rate as f64 * elapsed.as_secs_f64()) as u64).min(total);
        let stamp = lines::stamp_now();
        text.clear();
        probes.clear();
        while written < due {
            if elapsed >= next_probe {
                probes.push(log.probe(&mut text, &stamp));
                written += MAXRETRY as u64;
                next_probe += options.probe_every;
            } else {
                log.filler(&mut text, &stamp);
                written += 1;
            }
        }
        if !text.is_empty() {
            file.write_all(text.as_bytes()).expect("append to the log");
            let at = Instant::now();
            for addr in probes.drain(..) {
                sampler.watch(addr, at);
            }
        }
        batches += 1;
        let next = started + BATCH_EVERY * batches;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let window = started.elapsed();
    let cpu = live.cpu_seconds() - cpu_before;
    drop(perf);
    let samples = sampler.finish(Instant::now() + options.settle);
    assert!(live.alive(), "{} exited during the flood", kind.name());
    let latencies: Vec<Option<Duration>> = samples.iter().map(probe::Sample::latency).collect();
    let banned = latencies.iter().flatten().count();
    live.freeze();
    let in_kernel = live.bans_in_kernel().len();
    let result = SteadyResult {
        kind,
        lines: written,
        window,
        latencies,
        cpu,
        peak_rss_kib: live.peak_rss_kib(),
        noise_bans: in_kernel.saturating_sub(banned),
    };
    println!(
        "{}: {written} lines in {:.2} s, {banned} of {} probes banned, {in_kernel} in the kernel, CPU {cpu:.2} s (daemon log {})",
        kind.name(),
        window.as_secs_f64(),
        result.latencies.len(),
        live.daemon_log().display()
    );
    result
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn ms(latency: Option<Duration>, settle: Duration) -> String {
    latency.map_or_else(
        || format!("> {} s", settle.as_secs()),
        |l| format!("{:.1}", l.as_secs_f64() * 1000.0),
    )
}

fn burst_table(results: &[BurstResult], options: &Options) -> String {
    let orch = results.iter().find(|r| r.kind == Kind::Orch);
    let mut table = String::from(
        "| daemon | banned | time to ban all | bans/s | CPU s | peak RSS | wrong bans | orch faster by |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in results {
        let time = match (r.all_in, r.time_to_all()) {
            (true, _) => format!("{:.2} s", r.elapsed.as_secs_f64()),
            (false, Some(estimate)) => format!(
                "not by the {} s deadline (≈ {estimate:.0} s at its rate)",
                options.deadline.as_secs()
            ),
            (false, None) => format!("none by the {} s deadline", options.deadline.as_secs()),
        };
        let ratio = match (orch.and_then(BurstResult::time_to_all), r.time_to_all()) {
            _ if r.kind == Kind::Orch => "1×".to_owned(),
            (Some(ours), Some(theirs)) => {
                let approx = if r.all_in { "" } else { "≈ " };
                format!("{approx}{:.0}×", theirs / ours)
            }
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(
            table,
            "| {} | {} of {} | {time} | {:.0} | {:.2} | {} | {} | {ratio} |",
            r.kind.name(),
            r.banned,
            r.attackers,
            r.banned as f64 / r.elapsed.as_secs_f64(),
            r.cpu,
            mib(r.peak_rss_kib),
            r.wrong
        );
    }
    table
}

fn steady_table(results: &[SteadyResult], options: &Options) -> String {
    let orch = results.iter().find(|r| r.kind == Kind::Orch);
    let mut table = String::from(
        "| daemon | lines/s | probes banned | p50 ms | p99 ms | max ms | CPU % of a core | peak RSS | noise bans | p99 ÷ orch's | CPU ÷ orch's |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in results {
        let (p99_ratio, cpu_ratio) = match orch {
            _ if r.kind == Kind::Orch => ("1".to_owned(), "1".to_owned()),
            Some(o) => (
                match (r.percentile(99.0), o.percentile(99.0)) {
                    (Some(theirs), Some(ours)) => {
                        format!("{:.1}", theirs.as_secs_f64() / ours.as_secs_f64())
                    }
                    (None, Some(_)) => "n/a (missed probes)".to_owned(),
                    _ => "n/a".to_owned(),
                },
                format!("{:.1}", r.cpu / o.cpu.max(f64::EPSILON)),
            ),
            None => ("n/a".to_owned(), "n/a".to_owned()),
        };
        let _ = writeln!(
            table,
            "| {} | {:.0} | {} of {} | {} | {} | {} | {:.1} | {} | {} | {p99_ratio} | {cpu_ratio} |",
            r.kind.name(),
            r.lines as f64 / r.window.as_secs_f64(),
            r.banned(),
            r.latencies.len(),
            ms(r.percentile(50.0), options.settle),
            ms(r.percentile(99.0), options.settle),
            ms(r.percentile(100.0), options.settle),
            r.cpu_percent(),
            mib(r.peak_rss_kib),
            r.noise_bans
        );
    }
    table
}

fn main() {
    // `cargo test --all-targets` runs this too; only work when benchmarking.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("flood bench: run with `cargo bench --bench flood` (see benches/flood.rs)");
        return;
    }
    let options = parse_args(&args);
    // SAFETY (of set_var): no other thread runs yet. orch reads the zone
    // from TZ like the peers: the log's stamps are UTC.
    unsafe { std::env::set_var("TZ", "UTC") };
    for kind in &options.kinds {
        println!("{}: {}", kind.name(), kind.version());
    }
    println!(
        "machine: {} CPUs",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut bursts = Vec::new();
    let mut steadies = Vec::new();
    for &kind in &options.kinds {
        if options.burst {
            bursts.push(burst(kind, &options));
        }
        if options.steady {
            steadies.push(steady(kind, &options));
        }
    }
    if !bursts.is_empty() {
        println!(
            "\nBurst: {} attackers × ({MAXRETRY} failures + {MAXRETRY} benign lines), deadline {} s\n\n{}",
            options.attackers,
            options.deadline.as_secs(),
            burst_table(&bursts, &options)
        );
    }
    if !steadies.is_empty() {
        println!(
            "\nSteady: {} lines/s for {} s, a probe every {} ms, settle {} s\n\n{}",
            options.rate,
            options.seconds,
            options.probe_every.as_millis(),
            options.settle.as_secs(),
            steady_table(&steadies, &options)
        );
    }
}
