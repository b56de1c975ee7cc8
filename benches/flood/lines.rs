//! The flood bench's log text: classic syslog sshd lines that orch's,
//! fail2ban's and fail2ban-rs's default sshd filters all accept, stamped
//! with the current time (UTC; the bench runs every daemon with TZ=UTC),
//! so that findtime keeps them.
//!
//! Text only: no writing, pacing or measuring here.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Failures per attacker, and every jail's maxretry.
pub const MAXRETRY: usize = 5;

/// First burst attacker (as in benches/jail_burst.rs).
pub const BURST_FIRST: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 1);
/// First steady-flood noise address (each fails twice, never banned).
const NOISE_FIRST: Ipv4Addr = Ipv4Addr::new(13, 0, 0, 1);
/// First steady-flood probe (each fails `MAXRETRY` times at once).
const PROBE_FIRST: Ipv4Addr = Ipv4Addr::new(14, 0, 0, 1);

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Dec  4 15:49:28`: the BSD syslog stamp of Unix time `unix`, in UTC.
pub fn syslog_stamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let (_, month, day) = orch::timefmt::civil_from_days(days);
    let secs = unix % 86_400;
    format!(
        "{} {day:>2} {:02}:{:02}:{:02}",
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The current time's stamp.
pub fn stamp_now() -> String {
    syslog_stamp(orch::timefmt::now_unix())
}

/// Appends one failure line for `addr`; `n` varies the pid, user and port.
pub fn failure(out: &mut String, stamp: &str, addr: Ipv4Addr, n: u64) {
    let _ = writeln!(
        out,
        "{stamp} web1 sshd[{}]: Failed password for invalid user u{n} from {addr} port {} ssh2",
        20_000 + n % 40_000,
        1024 + n % 64_000
    );
}

/// Appends one line no filter bans on (an accepted login, a session
/// opening), alternating by `n`. Its sshd pid is never a failure's:
/// fail2ban ties lines of one pid together, and an "Accepted" line in a
/// failing connection would make it ban the accepted address.
pub fn benign(out: &mut String, stamp: &str, n: u64) {
    let pid = 1000 + n % 19_000;
    let _ = if n.is_multiple_of(2) {
        writeln!(
            out,
            "{stamp} web1 sshd[{pid}]: Accepted publickey for alice from 192.0.2.{} port {} ssh2: ED25519 SHA256:q2vG0sKxZ1Yc3m9Qf8PzXkQ7hJvL1nUe0aTb4RwYs5E",
            n % 250 + 1,
            1024 + n % 64_000
        )
    } else {
        writeln!(
            out,
            "{stamp} web1 sshd[{pid}]: pam_unix(sshd:session): session opened for user alice(uid=1000) by (uid=0)"
        )
    };
}

/// The burst: `attackers` addresses from [`BURST_FIRST`], each with
/// `MAXRETRY` failures and as many benign lines, in `MAXRETRY` rounds of
/// one failure and one benign line per attacker, so every attacker
/// reaches maxretry only in the last round and the last attacker's last
/// failure is the burst's last failure.
pub fn burst_text(attackers: usize) -> String {
    let stamp = stamp_now();
    let mut text = String::with_capacity(attackers * MAXRETRY * 2 * 130);
    let first = u32::from(BURST_FIRST);
    let mut n = 0;
    for _round in 0..MAXRETRY {
        for i in 0..attackers {
            failure(&mut text, &stamp, Ipv4Addr::from(first + i as u32), n);
            benign(&mut text, &stamp, n);
            n += 1;
        }
    }
    text
}

/// The `i`th burst attacker.
pub fn burst_attacker(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(BURST_FIRST) + i as u32)
}

/// Whether the set element `element` is one of the first `attackers`
/// burst attackers.
pub fn is_burst_attacker(element: &str, attackers: usize) -> bool {
    element.parse::<Ipv4Addr>().is_ok_and(|addr| {
        let offset = u32::from(addr).wrapping_sub(u32::from(BURST_FIRST));
        (offset as usize) < attackers
    })
}

/// The steady flood's lines, in order: filler (of ten lines, three
/// failures from noise addresses that fail twice each, seven benign) and,
/// when asked, a probe's `MAXRETRY` failures.
#[derive(Default)]
pub struct SteadyLog {
    lines: u64,
    noise_failures: u32,
    probes: u32,
}

impl SteadyLog {
    /// Appends one filler line.
    pub fn filler(&mut self, out: &mut String, stamp: &str) {
        if matches!(self.lines % 10, 0 | 3 | 6) {
            let addr = Ipv4Addr::from(u32::from(NOISE_FIRST) + self.noise_failures / 2);
            failure(out, stamp, addr, self.lines);
            self.noise_failures += 1;
        } else {
            benign(out, stamp, self.lines);
        }
        self.lines += 1;
    }

    /// Appends a new probe's `MAXRETRY` failures and returns its address.
    pub fn probe(&mut self, out: &mut String, stamp: &str) -> Ipv4Addr {
        let addr = Ipv4Addr::from(u32::from(PROBE_FIRST) + self.probes);
        self.probes += 1;
        for _ in 0..MAXRETRY {
            failure(out, stamp, addr, self.lines);
            self.lines += 1;
        }
        addr
    }
}
