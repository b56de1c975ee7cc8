//! `orch import fail2ban` against a real fail2ban (Debian's 1.0.2): a
//! fail2ban-server of its own in a fresh network namespace, with a private
//! config dir (Debian's jail.conf and filter.d/action.d linked, jail.local
//! enabling sshd, nginx-http-auth and recidive on temp files,
//! nftables-allports inside the namespace), socket, pid file and database.
//! Bans are made by `banip` and by log lines; fail2ban is stopped; the
//! import then writes a config `orch check-config` accepts and sends the
//! bans to an orch daemon (with a private bus, in its own namespace), whose
//! store and kernel set hold them with fail2ban's remaining times. A
//! second import changes nothing, --dry-run writes nothing, and a second
//! orch daemon running the imported config, fed the same log lines, bans
//! the addresses fail2ban banned from them.
//!
//! Nothing here touches the host's /etc/fail2ban (only read, through
//! links), a host fail2ban (every fail2ban-client call names this test's
//! socket), or the host's firewall.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, NetNs, TestBus, orch_bin, poll_until, run_command, run_orch, wait_until};

/// Remaining times may differ from fail2ban's by at most this much.
const TOLERANCE_SECS: i64 = 5;
/// Addresses fail2ban bans from log lines, and which jail.
const FROM_LOGS: [(&str, &str); 2] = [
    ("198.51.100.20", "sshd"),
    ("203.0.113.20", "nginx-http-auth"),
];
/// Addresses banned with `fail2ban-client set JAIL banip`.
const BY_HAND: [(&str, &str); 2] = [("198.51.100.7", "sshd"), ("203.0.113.9", "nginx-http-auth")];
/// Failing, but below maxretry (sshd: 3) or in ignoreip: never banned.
const NOT_BANNED: [&str; 2] = ["198.51.100.30", "192.0.2.50"];

/// fail2ban-server, killed and reaped on drop (and by the kernel if the
/// test dies).
struct Fail2ban {
    child: Child,
    socket: String,
}

impl Fail2ban {
    fn client(&self, args: &[&str]) -> common::CmdOutput {
        run_command(
            Command::new("fail2ban-client")
                .args(["-s", &self.socket])
                .args(args),
        )
    }

    /// Stops it the way an admin would and waits for it to exit.
    fn stop(&mut self) {
        self.client(&["stop"]);
        let exited = poll_until(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(exited, "fail2ban-server did not stop");
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The private fail2ban directory: Debian's files linked, our .local files.
fn fail2ban_etc(dir: &Path) -> PathBuf {
    let etc = dir.join("etc");
    fs::create_dir(&etc).expect("create etc");
    for name in [
        "filter.d",
        "action.d",
        "jail.conf",
        "fail2ban.conf",
        "paths-common.conf",
        "paths-debian.conf",
    ] {
        std::os::unix::fs::symlink(Path::new("/etc/fail2ban").join(name), etc.join(name))
            .expect("link Debian's fail2ban config");
    }
    let d = dir.display();
    fs::write(
        etc.join("fail2ban.local"),
        format!(
            "[Definition]\nlogtarget = {d}/fail2ban.log\nsocket = {d}/fail2ban.sock\n\
             pidfile = {d}/fail2ban.pid\ndbfile = {d}/fail2ban.sqlite3\n"
        ),
    )
    .expect("write fail2ban.local");
    fs::write(
        etc.join("jail.local"),
        format!(
            "[DEFAULT]\nbanaction = nftables-allports\nbanaction_allports = nftables-allports\n\
             backend = polling\nignoreip = 192.0.2.0/24\n\n\
             [sshd]\nenabled = true\nlogpath = {d}/auth.log\nmaxretry = 3\nfindtime = 10m\nbantime = 1h\n\n\
             [nginx-http-auth]\nenabled = true\nlogpath = {d}/nginx-error.log\nmaxretry = 2\nbantime = 30m\n\n\
             [recidive]\nenabled = true\nlogpath = {d}/fail2ban.log\nbantime = 1w\nfindtime = 1d\n"
        ),
    )
    .expect("write jail.local");
    for log in ["auth.log", "nginx-error.log", "fail2ban.log"] {
        fs::write(dir.join(log), "").expect("create a log");
    }
    etc
}

fn start_fail2ban(netns: &NetNs, dir: &Path, etc: &Path) -> Fail2ban {
    let socket = dir.join("fail2ban.sock").display().to_string();
    let pidfile = dir.join("fail2ban.pid").display().to_string();
    let out = fs::File::create(dir.join("fail2ban-server.out")).expect("create output file");
    let mut cmd = netns.command("fail2ban-server");
    // SAFETY: prctl(2) is async-signal-safe; if the test dies, so does fail2ban.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.args(["-f", "-x", "-c"])
        .arg(etc)
        .args(["-s", &socket, "-p", &pidfile])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    let child = cmd
        .spawn()
        .expect("spawn fail2ban-server (apt install fail2ban)");
    let mut fail2ban = Fail2ban { child, socket };
    let ready = poll_until(Duration::from_secs(60), || {
        matches!(fail2ban.child.try_wait(), Ok(Some(_)))
            || fail2ban.client(&["status", "recidive"]).ok()
    });
    let log = || fs::read_to_string(dir.join("fail2ban.log")).unwrap_or_default();
    assert!(
        ready && matches!(fail2ban.child.try_wait(), Ok(None)),
        "fail2ban-server did not start\n{}",
        log()
    );
    fail2ban
}

/// The log lines that make fail2ban (and orch) ban [`FROM_LOGS`] and not
/// [`NOT_BANNED`]: sshd lines in RFC 3339 UTC, nginx in local time (as
/// nginx writes it; both daemons read it in this process's zone).
fn failure_lines() -> (String, String) {
    let utc = run_command(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
    let local = run_command(Command::new("date").arg("+%Y/%m/%d %H:%M:%S"));
    let (utc, local) = (
        utc.stdout.trim().to_string(),
        local.stdout.trim().to_string(),
    );
    let mut sshd = String::new();
    for (address, times) in [
        ("198.51.100.20", 3),
        ("198.51.100.30", 2),
        ("192.0.2.50", 3),
    ] {
        for n in 0..times {
            sshd.push_str(&format!(
                "{utc} web1 sshd[{}]: Failed password for root from {address} port {} ssh2\n",
                4000 + n,
                52000 + n
            ));
        }
    }
    let mut nginx = String::new();
    for n in 0..2 {
        nginx.push_str(&format!(
            "{local} [error] 1234#0: *{n} user \"admin\": password mismatch, client: 203.0.113.20, \
             server: example.com, request: \"GET / HTTP/1.1\", host: \"example.com\"\n"
        ));
    }
    (sshd, nginx)
}

fn append(path: &Path, text: &str) {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open log");
    file.write_all(text.as_bytes()).expect("append");
}

/// fail2ban's bans as its database holds them: (jail, ip) -> expiry.
fn fail2ban_expiries(db: &Path) -> BTreeMap<(String, String), i64> {
    let db = rusqlite::Connection::open(db).expect("open fail2ban's database");
    let mut query = db
        .prepare("SELECT jail, ip, timeofban + bantime FROM bans")
        .expect("query bans");
    query
        .query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))
        .expect("rows")
        .map(|row| row.expect("row"))
        .collect()
}

/// orch's bans: address -> (expires_at, source).
fn orch_bans(daemon: &Daemon) -> BTreeMap<String, (i64, String)> {
    let out = daemon
        .cli(&["list", "--json"])
        .expect_ok("orch list --json");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("JSON");
    rows.iter()
        .map(|row| {
            (
                row["address"].as_str().unwrap_or_default().to_string(),
                (
                    row["expires_at"].as_i64().unwrap_or_default(),
                    row["source"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[test]
fn fail2ban_jails_and_bans_come_over_to_orch() {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("orch-import-f2b-")
        .tempdir()
        .expect("temp dir");
    let dir = dir.path();
    let etc = fail2ban_etc(dir);
    let db = dir.join("fail2ban.sqlite3");
    let (sshd_lines, nginx_lines) = failure_lines();

    // fail2ban bans, by hand and from log lines, then stops.
    let f2b_netns = NetNs::new();
    let mut fail2ban = start_fail2ban(&f2b_netns, dir, &etc);
    for (address, jail) in BY_HAND {
        fail2ban
            .client(&["set", jail, "banip", address])
            .expect_ok("fail2ban-client banip");
    }
    append(&dir.join("auth.log"), &sshd_lines);
    append(&dir.join("nginx-error.log"), &nginx_lines);
    wait_until(
        Duration::from_secs(30),
        "fail2ban to ban from the log lines",
        || {
            FROM_LOGS
                .iter()
                .all(|(address, jail)| fail2ban.client(&["status", jail]).stdout.contains(address))
        },
    );
    let banned_by_fail2ban = fail2ban.client(&["status", "sshd"]).stdout;
    for address in NOT_BANNED {
        assert!(
            !banned_by_fail2ban.contains(address),
            "{banned_by_fail2ban}"
        );
    }
    fail2ban.stop();
    let f2b_done = started.elapsed();
    // Rows fail2ban never writes: an expired ban and a hostile one.
    {
        let connection = rusqlite::Connection::open(&db).expect("open fail2ban's database");
        connection
            .execute(
                "INSERT INTO bans(jail, ip, timeofban, bantime) VALUES \
                 ('sshd', '198.51.100.99', ?1, 600), ('sshd', '999.0.0.1', ?2, 600)",
                [now() - 7200, now()],
            )
            .expect("insert rows");
    }
    let expected = fail2ban_expiries(&db);

    // An orch daemon to import into.
    let netns = NetNs::new();
    let bus = TestBus::start();
    let daemon = Daemon::start(&netns, &bus, "");
    let output = dir.join("orch-conf.d/50-fail2ban.toml");
    let (etc_arg, db_arg, output_arg) = (
        etc.display().to_string(),
        db.display().to_string(),
        output.display().to_string(),
    );
    let import_args = [
        "import",
        "fail2ban",
        "--etc",
        &etc_arg,
        "--db",
        &db_arg,
        "--output",
        &output_arg,
    ];
    let import_started = Instant::now();
    let first = daemon.cli(&import_args).expect_ok("orch import fail2ban");
    let import_time = import_started.elapsed();
    println!("first import ({import_time:?}):\n{first}");
    assert!(first.stdout.contains("wrote "), "{first}");
    assert!(
        first
            .stdout
            .contains("4 active ban(s), 1 expired (skipped)"),
        "{first}"
    );
    assert!(first.stdout.contains("1 bad row(s)"), "{first}");
    assert!(
        first.stderr.contains("row ") && first.stderr.contains("999.0.0.1"),
        "{first}"
    );
    assert!(first.stdout.contains("banned 4, unchanged 0"), "{first}");
    assert!(first.stderr.contains("not enabled, skipped"), "{first}");
    let written = fs::read_to_string(&output).expect("the config was written");
    println!("{written}");
    for expected_line in [
        "allow = [\n  \"192.0.2.0/24\",\n]",
        "[jails.sshd]\nfilter = \"sshd\"",
        "[jails.nginx-http-auth]\nfilter = \"nginx-http-auth\"",
        "[jails.recidive]\nfilter = \"recidive\"",
        "maxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"",
        "maxretry = 2\nfindtime = \"10m\"\nbantime = \"30m\"",
        "findtime = \"1d\"\nbantime = \"7d\"",
    ] {
        assert!(
            written.contains(expected_line),
            "{expected_line:?} in\n{written}"
        );
    }
    run_orch(&["check-config", "--config", &output_arg]).expect_ok("orch check-config");

    // The bans, with fail2ban's expiry, in the store and the kernel.
    let bans = orch_bans(&daemon);
    let kernel: BTreeMap<String, Option<u64>> = netns
        .set_elements_with_expiry("orch", "ban4")
        .into_iter()
        .collect();
    let now = now();
    let mut largest_gap = 0;
    for (address, jail) in BY_HAND.iter().chain(FROM_LOGS.iter()) {
        let fail2ban_expiry = expected[&(jail.to_string(), address.to_string())];
        let (orch_expiry, source) = bans
            .get(*address)
            .unwrap_or_else(|| panic!("{address} in {bans:?}"));
        assert_eq!(source, jail);
        assert!(
            (orch_expiry - fail2ban_expiry).abs() <= TOLERANCE_SECS,
            "{address}: orch {orch_expiry}, fail2ban {fail2ban_expiry}"
        );
        let kernel_left = kernel[*address].expect("a timeout") as i64;
        largest_gap = largest_gap
            .max((orch_expiry - fail2ban_expiry).abs())
            .max((kernel_left - (fail2ban_expiry - now)).abs());
        assert!(
            (kernel_left - (fail2ban_expiry - now)).abs() <= TOLERANCE_SECS,
            "{address}: kernel {kernel_left} s left, fail2ban {} s",
            fail2ban_expiry - now
        );
    }
    assert_eq!(bans.len(), 4, "{bans:?}");
    println!("largest gap to fail2ban's remaining time: {largest_gap} s");

    // A second import changes nothing.
    let second = daemon.cli(&import_args).expect_ok("second import");
    assert!(second.stdout.contains("unchanged: "), "{second}");
    assert!(second.stdout.contains("banned 0, unchanged 4"), "{second}");
    assert_eq!(fs::read_to_string(&output).expect("read"), written);
    assert_eq!(orch_bans(&daemon), bans);

    // --dry-run writes nothing and sends nothing; the database is the one
    // fail2ban.local names.
    let dry_output = dir.join("dry.toml").display().to_string();
    let dry = daemon
        .cli(&[
            "import",
            "fail2ban",
            "--etc",
            &etc_arg,
            "--output",
            &dry_output,
            "--dry-run",
        ])
        .expect_ok("dry run");
    assert!(
        dry.stdout.contains("would write") && dry.stdout.contains("[jails.sshd]"),
        "{dry}"
    );
    assert!(dry.stdout.contains(&format!("read {db_arg}")), "{dry}");
    assert!(dry.stdout.contains("would ban 198.51.100.7 for "), "{dry}");
    assert!(
        !Path::new(&dry_output).exists(),
        "--dry-run wrote {dry_output}"
    );
    assert_eq!(orch_bans(&daemon), bans);

    // Clear errors: no such etc dir, no daemon.
    let missing = daemon
        .cli(&[
            "import",
            "fail2ban",
            "--etc",
            "/nonexistent/fail2ban",
            "--output",
            &dry_output,
        ])
        .expect_fail("missing etc dir");
    assert!(
        missing.stderr.contains("no fail2ban configuration here"),
        "{missing}"
    );
    let idle_bus = TestBus::start();
    let no_daemon = run_command(
        Command::new(orch_bin())
            .args(import_args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", idle_bus.address()),
    )
    .expect_fail("no daemon");
    assert!(
        no_daemon.stderr.contains("systemctl start orch"),
        "{no_daemon}"
    );

    // An orch daemon on the imported config, fed the same lines, bans what
    // fail2ban banned from them.
    let netns2 = NetNs::new();
    let bus2 = TestBus::start();
    let jails_daemon = Daemon::start(&netns2, &bus2, &written);
    std::thread::sleep(Duration::from_millis(500));
    append(&dir.join("auth.log"), &sshd_lines);
    append(&dir.join("nginx-error.log"), &nginx_lines);
    wait_until(Duration::from_secs(20), "orch's jails to ban", || {
        let bans = orch_bans(&jails_daemon);
        FROM_LOGS
            .iter()
            .all(|(address, _)| bans.contains_key(*address))
    });
    std::thread::sleep(Duration::from_secs(1));
    let jail_bans = orch_bans(&jails_daemon);
    let banned: Vec<(&str, &str)> = jail_bans
        .iter()
        .map(|(address, (_, source))| (address.as_str(), source.as_str()))
        .collect();
    let mut expected_from_logs = FROM_LOGS.to_vec();
    expected_from_logs.sort();
    assert_eq!(
        banned, expected_from_logs,
        "the same addresses, by the same jails"
    );
    println!(
        "fail2ban part {f2b_done:?}, first import {import_time:?}, whole test {:?}",
        started.elapsed()
    );
}
