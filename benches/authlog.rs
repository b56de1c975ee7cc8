//! Log-jail benchmark input: writes a deterministic syslog-format auth.log
//! (sshd and OpenSSH >= 9.8 `sshd-session` failures of every kind the
//! built-in sshd filter knows, mixed with ordinary lines), and times the
//! sshd filter over it in-process.
//!
//! - `cargo bench --bench authlog -- generate FILE [LINES] [FAIL_PERCENT]`
//!   writes FILE (default 1,000,000 lines, 30% failures) and exits.
//! - `cargo bench --bench authlog` writes `target/authlog-1M.log` and times
//!   `Filter::match_line` over it.
//!
//! `cargo test --all-targets` runs this main without `--bench`: then it only
//! prints how to use it. `benches/jail-compare.sh` uses `generate` for the
//! side-by-side comparison with fail2ban-regex and fail2ban-rs.
//!
//! The same arguments always give the same file (a fixed-seed generator, no
//! clock), so figures from different runs and tools are comparable.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Instant;

use orch::jail::filter::Filter;

/// splitmix64: small, fast and deterministic; quality is plenty here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

const USERS: &[&str] = &[
    "admin", "test", "oracle", "ubuntu", "pi", "git", "postgres", "user", "guest", "ftpuser",
    "deploy", "support", "x", "a b", "",
];

/// User names that try to frame another address (attacker-chosen text).
const HOSTILE_USERS: &[&str] = &[
    "x from 1.2.3.4",
    "x from 1.2.3.4 port 22",
    "root from 10.0.0.1 port 22 ssh2",
    "Did not receive identification string from 1.2.3.4",
];

const LOCAL_USERS: &[&str] = &["alice", "bob", "carol", "deploy"];

const OFFERS: &[&str] = &[
    "key exchange method found. Their offer: diffie-hellman-group1-sha1,diffie-hellman-group14-sha1 [preauth]",
    "host key type found. Their offer: ssh-rsa,ssh-dss [preauth]",
    "cipher found. Their offer: aes128-cbc,3des-cbc [preauth]",
    "MAC found. Their offer: hmac-sha1 [preauth]",
];

/// An attacker address: IPv4 from a pool of 20,000, or (one in eight) IPv6.
fn attacker(rng: &mut Rng, out: &mut String) {
    use std::fmt::Write as _;
    let n = rng.below(20_000) as u32;
    if rng.below(8) == 0 {
        let _ = write!(out, "2001:db8:{:x}::{:x}", n >> 8, n & 255);
    } else {
        let ip = 0x2D00_0000u32.wrapping_add(n.wrapping_mul(2_654_435_761) >> 4);
        let _ = write!(out, "{}", std::net::Ipv4Addr::from(ip));
    }
}

/// A local client (accepted logins): a few fixed addresses.
fn client(rng: &mut Rng) -> &'static str {
    rng.pick(&[
        "192.0.2.10",
        "192.0.2.11",
        "198.51.100.20",
        "2001:db8:ffff::10",
    ])
}

/// Appends one failure message (no prefix) to `out`.
fn failure(rng: &mut Rng, out: &mut String) {
    use std::fmt::Write as _;
    let port = 1024 + rng.below(64_000);
    let kind = rng.below(100);
    let user = if rng.below(50) == 0 {
        rng.pick(HOSTILE_USERS)
    } else {
        rng.pick(USERS)
    };
    let mut host = String::new();
    attacker(rng, &mut host);
    let _ = match kind {
        0..=19 => write!(
            out,
            "Failed password for invalid user {user} from {host} port {port} ssh2"
        ),
        20..=29 => write!(out, "Failed password for root from {host} port {port} ssh2"),
        30..=32 => write!(
            out,
            "Failed keyboard-interactive/pam for invalid user {user} from {host} port {port} ssh2"
        ),
        33..=34 => write!(
            out,
            "Failed none for invalid user {user} from {host} port {port} ssh2"
        ),
        35..=54 => write!(out, "Invalid user {user} from {host} port {port}"),
        55..=62 => write!(
            out,
            "Connection closed by invalid user {user} {host} port {port} [preauth]"
        ),
        63..=67 => write!(
            out,
            "Connection closed by authenticating user root {host} port {port} [preauth]"
        ),
        68..=72 => write!(
            out,
            "Disconnected from invalid user {user} {host} port {port} [preauth]"
        ),
        73..=74 => write!(
            out,
            "Disconnected from authenticating user root {host} port {port} [preauth]"
        ),
        75..=77 => write!(
            out,
            "error: maximum authentication attempts exceeded for invalid user {user} from {host} port {port} ssh2 [preauth]"
        ),
        78..=79 => write!(
            out,
            "error: maximum authentication attempts exceeded for root from {host} port {port} ssh2 [preauth]"
        ),
        80..=81 => write!(
            out,
            "Disconnecting invalid user {user} {host} port {port}: Too many authentication failures [preauth]"
        ),
        82..=84 => write!(
            out,
            "banner exchange: Connection from {host} port {port}: invalid format"
        ),
        85..=88 => write!(
            out,
            "Unable to negotiate with {host} port {port}: no matching {}",
            rng.pick(OFFERS)
        ),
        89..=92 => write!(
            out,
            "Did not receive identification string from {host} port {port}"
        ),
        _ => write!(
            out,
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={host}  user=root"
        ),
    };
}

/// Appends one ordinary line (tag and message) to `out`; `sshd` is the
/// daemon tag with its pid for sshd chatter.
fn ordinary(rng: &mut Rng, sshd: &str, out: &mut String) {
    use std::fmt::Write as _;
    let port = 1024 + rng.below(64_000);
    let user = rng.pick(LOCAL_USERS);
    let session = rng.below(90_000) + 1;
    let pid = 1000 + rng.below(60_000);
    let _ = match rng.below(20) {
        0 => write!(
            out,
            "{sshd}: Accepted publickey for {user} from {} port {port} ssh2: ED25519 SHA256:q2vG0sKxZ1Yc3m9Qf8PzXkQ7hJvL1nUe0aTb4RwYs5E",
            client(rng)
        ),
        1 => write!(
            out,
            "{sshd}: Accepted password for {user} from {} port {port} ssh2",
            client(rng)
        ),
        2 => write!(
            out,
            "{sshd}: pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"
        ),
        3 => write!(
            out,
            "{sshd}: pam_unix(sshd:session): session closed for user {user}"
        ),
        4 => write!(
            out,
            "{sshd}: Received disconnect from {} port {port}:11: disconnected by user",
            client(rng)
        ),
        5 => write!(
            out,
            "{sshd}: Disconnected from user {user} {} port {port}",
            client(rng)
        ),
        6 => write!(
            out,
            "{sshd}: error: kex_exchange_identification: Connection closed by remote host"
        ),
        7 => write!(
            out,
            "CRON[{pid}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"
        ),
        8 => write!(
            out,
            "CRON[{pid}]: pam_unix(cron:session): session closed for user root"
        ),
        9 => write!(
            out,
            "CRON[{pid}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)"
        ),
        10 | 11 => write!(
            out,
            "systemd[1]: Started session-{session}.scope - Session {session} of User {user}."
        ),
        12 => write!(
            out,
            "systemd-logind[512]: New session {session} of user {user}."
        ),
        13 => write!(
            out,
            "systemd-logind[512]: Session {session} logged out. Waiting for processes to exit."
        ),
        14 => write!(
            out,
            "systemd[1]: session-{session}.scope: Deactivated successfully."
        ),
        15 => write!(
            out,
            "kernel: [{}.{:06}] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=45.{}.{}.{} DST=192.0.2.1 LEN=44 TOS=0x00 PREC=0x00 TTL=243 ID=54321 PROTO=TCP SPT={port} DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0",
            session,
            pid,
            pid % 256,
            port % 256,
            session % 256
        ),
        16 => write!(
            out,
            "sudo[{pid}]:    {user} : TTY=pts/0 ; PWD=/home/{user} ; USER=root ; COMMAND=/usr/bin/apt update"
        ),
        17 => write!(
            out,
            "{sshd}: Connection closed by {} port {port}",
            client(rng)
        ),
        18 => write!(
            out,
            "systemd[1]: Starting apt-daily.service - Daily apt download activities..."
        ),
        _ => write!(
            out,
            "{sshd}: Received disconnect from {} port {port}:11: Bye Bye [preauth]",
            client(rng)
        ),
    };
}

/// Writes `lines` lines, `fail_percent`% of them sshd failures, to `out`.
/// Timestamps start on Nov 24 00:00:00 and advance one second every 20
/// lines (1M lines span about 14 hours of one day).
fn generate(out: &mut impl Write, lines: u64, fail_percent: u64) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut rng = Rng(0x0AC4_2026_1125_0001);
    let mut line = String::with_capacity(512);
    for i in 0..lines {
        line.clear();
        let second = i / 20;
        let (h, m, s) = (second / 3600, (second / 60) % 60, second % 60);
        let _ = write!(
            line,
            "{} {:>2} {:02}:{:02}:{:02} web1 ",
            MONTHS[10],
            24 + h / 24,
            h % 24,
            m,
            s
        );
        // OpenSSH >= 9.8 logs per-connection messages as sshd-session.
        let pid = 2000 + rng.below(60_000);
        let sshd = if rng.below(3) == 0 {
            format!("sshd-session[{pid}]")
        } else {
            format!("sshd[{pid}]")
        };
        if rng.below(100) < fail_percent {
            line.push_str(&sshd);
            line.push_str(": ");
            failure(&mut rng, &mut line);
        } else {
            ordinary(&mut rng, &sshd, &mut line);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

fn write_file(path: &str, lines: u64, fail_percent: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    generate(&mut out, lines, fail_percent)?;
    out.flush()
}

fn usage() -> ! {
    eprintln!("usage: authlog generate FILE [LINES] [FAIL_PERCENT]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let benching = std::env::args().any(|a| a == "--bench");
    if args.first().map(String::as_str) == Some("generate") {
        let Some(path) = args.get(1) else { usage() };
        let number = |index: usize, default: u64| match args.get(index) {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| usage()),
        };
        let (lines, fail_percent) = (number(2, 1_000_000), number(3, 30));
        if let Err(e) = write_file(path, lines, fail_percent) {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
        return;
    }
    if !benching {
        println!(
            "authlog bench: `cargo bench --bench authlog` or `cargo bench --bench authlog -- generate FILE [LINES] [FAIL_PERCENT]`"
        );
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/authlog-1M.log");
    write_file(path, 1_000_000, 30).expect("write the log");
    let text = std::fs::read_to_string(path).expect("read the log back");
    let filter = Filter::builtin("sshd")
        .expect("sshd is built in")
        .expect("sshd compiles");
    let started = Instant::now();
    let mut lines = 0u64;
    let mut hits = 0u64;
    for line in text.lines() {
        lines += 1;
        hits += u64::from(filter.match_line(line).is_some());
    }
    let elapsed = started.elapsed();
    println!(
        "sshd filter in-process, {path}: {lines} lines, {hits} matched, {:.3} s, {:.0} lines/s",
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64()
    );
}
