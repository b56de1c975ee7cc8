//! The metrics endpoint and textfile of a real orch daemon in its own
//! network namespace (real nftables, private dbus-daemon): what a scrape
//! shows passes `promtool check metrics`, a ban and the packets it drops
//! from an address on a veth pair move the counters, and hostile clients
//! (garbage, oversized heads, silence, too many connections) get an error
//! or a close while the endpoint keeps serving.
//!
//! promtool comes from Debian's `prometheus` package, which `.ci/run`
//! installs; without it the format checks are skipped with a loud note.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, NetNs, TestBus, VethPair, poll_until, wait_until};

const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: orch\r\n\r\n";
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `request` over `stream` and reads until the server closes.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> String {
    stream.write_all(request).expect("send the request");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// `request` to 127.0.0.1:`port` inside `netns`.
fn tcp_exchange(netns: &NetNs, port: u16, request: &[u8]) -> String {
    let ns = File::open(netns.path()).expect("open the netns");
    let request = request.to_vec();
    std::thread::spawn(move || {
        // SAFETY: setns on an open namespace file; only this thread moves.
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        exchange(stream, &request)
    })
    .join()
    .expect("scrape thread")
}

fn unix_stream(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect to the socket");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
}

/// The body of a `200 OK` reply; panics on anything else.
fn body_of(reply: &str) -> &str {
    assert!(
        reply.starts_with("HTTP/1.1 200 OK\r\n"),
        "not a 200: {reply:.300}"
    );
    assert!(
        reply.contains("Content-Type: text/plain; version=0.0.4"),
        "{reply:.300}"
    );
    reply.split_once("\r\n\r\n").expect("a head and a body").1
}

/// The value of the sample `series` (name and labels as written).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
}

/// `promtool check metrics` on `body`: must pass, lint included. Skipped,
/// loudly, where promtool is not installed.
fn promtool_accepts(body: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "\n!!!! promtool is not installed (Debian package `prometheus`): \
                 the exposition format was NOT checked !!!!\n"
            );
            return;
        }
        Err(err) => panic!("cannot run promtool: {err}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics refused the scrape:\n{}{}\n--- body ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_ban_and_the_packets_it_drops_show_in_a_scrape_that_promtool_accepts() {
    const PORT: u16 = 9727;
    const SERVICE: u16 = 8080;
    let pair = VethPair::new(&["10.96.0.1/24"], &["10.96.0.2/24"]);
    pair.listen(SERVICE);
    let bus = TestBus::start();
    let config = format!("[metrics]\nlisten = \"127.0.0.1:{PORT}\"\n");
    let daemon = Daemon::start(&pair.server, &bus, &config);
    let scrape = || tcp_exchange(&pair.server, PORT, SCRAPE);

    let reply = scrape();
    let body = body_of(&reply);
    promtool_accepts(body);
    assert_eq!(value(body, "orch_bans_added_total"), Some(0.0));
    assert_eq!(value(body, "orch_firewall_counters_up"), Some(1.0));
    assert_eq!(
        value(
            body,
            r#"orch_firewall_restores_total{cause="daemon start"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert!(value(body, r#"orch_store_bytes{file="bans.snap"}"#).is_some_and(|b| b > 0.0));
    assert!(value(body, "orch_resident_memory_bytes").is_some_and(|b| b > 1e6));
    let dropped = |body: &str| value(body, r#"orch_dropped_packets_total{set="ban4"}"#);
    assert_eq!(dropped(body).unwrap_or(0.0), 0.0);
    assert!(
        pair.connect_from("10.96.0.2", "10.96.0.1", SERVICE, Duration::from_secs(5)),
        "before the ban the client reaches the service"
    );

    daemon
        .cli(&["ban", "10.96.0.2"])
        .expect_ok("ban the client");
    for _ in 0..3 {
        assert!(
            !pair.connect_from(
                "10.96.0.2",
                "10.96.0.1",
                SERVICE,
                Duration::from_millis(500)
            ),
            "a banned client must not connect"
        );
    }
    let mut last = String::new();
    let moved = poll_until(Duration::from_secs(10), || {
        last = body_of(&scrape()).to_string();
        dropped(&last).is_some_and(|packets| packets >= 3.0)
    });
    assert!(
        moved,
        "the dropped-packets counter did not reach 3:\n{last}"
    );
    promtool_accepts(&last);
    assert_eq!(value(&last, "orch_bans_added_total"), Some(1.0));
    let active = r#"orch_bans_active{kind="manual",source="manual"}"#;
    assert_eq!(value(&last, active), Some(1.0), "{last}");
    let bytes = value(&last, r#"orch_dropped_bytes_total{set="ban4"}"#).expect("bytes");
    assert!(
        bytes >= 3.0 * 40.0,
        "three SYNs are at least 120 bytes: {bytes}"
    );

    daemon.cli(&["unban", "10.96.0.2"]).expect_ok("unban");
    let body = body_of(&scrape()).to_string();
    assert_eq!(value(&body, "orch_bans_removed_total"), Some(1.0));
    assert_eq!(value(&body, active), None, "no manual bans left");
}

#[test]
fn hostile_clients_get_an_error_or_a_close_and_the_endpoint_still_serves() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("metrics.sock");
    let textfile = dir.path().join("orch.prom");
    let config = format!(
        "[metrics]\nlisten = \"{}\"\ntextfile = \"{}\"\ninterval = \"1s\"\n",
        socket.display(),
        textfile.display()
    );
    let _daemon = Daemon::start(&netns, &bus, &config);

    let meta = std::fs::symlink_metadata(&socket).expect("the socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let oversized = exchange(unix_stream(&socket), &vec![b'A'; 9 * 1024]);
    assert!(
        oversized.is_empty() || oversized.starts_with("HTTP/1.1 431 "),
        "{oversized:.200}"
    );
    let garbage = exchange(unix_stream(&socket), b"\x00\x01\xff garbage\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage:.200}");
    let elsewhere = exchange(unix_stream(&socket), b"GET /../etc/shadow HTTP/1.1\r\n\r\n");
    assert!(elsewhere.starts_with("HTTP/1.1 404 "), "{elsewhere:.200}");
    let post = exchange(unix_stream(&socket), b"POST /metrics HTTP/1.1\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 "), "{post:.200}");

    // A silent client is closed after the request deadline (5 s).
    let started = Instant::now();
    let mut silent = unix_stream(&socket);
    let mut buffer = [0u8; 64];
    let read = silent.read(&mut buffer).expect("a close, not a timeout");
    assert_eq!(read, 0, "closed without a word");
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(10)).contains(&waited),
        "{waited:?}"
    );

    // Eight slow clients take every slot: a ninth is closed at once.
    let slow: Vec<UnixStream> = (0..8).map(|_| unix_stream(&socket)).collect();
    let started = Instant::now();
    let mut ninth = unix_stream(&socket);
    let read = ninth.read(&mut buffer).expect("a close");
    assert_eq!(read, 0);
    assert!(started.elapsed() < Duration::from_secs(3), "closed at once");
    drop(slow);

    let mut body = String::new();
    let served = poll_until(Duration::from_secs(10), || {
        let reply = exchange(unix_stream(&socket), SCRAPE);
        body = reply
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        reply.starts_with("HTTP/1.1 200 OK")
    });
    assert!(
        served,
        "the endpoint serves again once the slow clients left"
    );
    promtool_accepts(&body);
    assert!(value(&body, "orch_bans_added_total").is_some(), "{body}");

    wait_until(
        Duration::from_secs(10),
        "the textfile to be written",
        || textfile.exists(),
    );
    let written = std::fs::read_to_string(&textfile).expect("read the textfile");
    promtool_accepts(&written);
    assert!(
        written.contains("# TYPE orch_bans_active gauge\n"),
        "{written}"
    );
    let mode = std::fs::metadata(&textfile)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "node_exporter must be able to read it");
}

/// A `GET /metrics` on the unix socket at `socket`: the body of a 200.
fn unix_scrape(socket: &Path) -> String {
    body_of(&exchange(unix_stream(socket), SCRAPE)).to_string()
}

#[test]
fn a_failing_hook_and_a_jail_reading_its_log_show_in_the_scrape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = dir.path().join("hooks.d");
    std::fs::create_dir(&hooks).expect("hooks dir");
    let hook = hooks.join("10-broken");
    std::fs::write(&hook, "#!/bin/sh\nexit 3\n").expect("write the hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("create the log");
    let socket = dir.path().join("metrics.sock");
    let config = format!(
        "[metrics]\nlisten = \"{}\"\n[hooks]\ndir = \"{}\"\n\
         [jails.sshd]\nfiles = [\"{}\"]\nmaxretry = 5\nfindtime = \"10m\"\n",
        socket.display(),
        hooks.display(),
        log.display()
    );
    let netns = NetNs::new();
    let bus = TestBus::start();
    let _daemon = Daemon::start(&netns, &bus, &config);

    // The hooks run at start (and again on any firewall event meanwhile).
    let mut body = String::new();
    let ran = poll_until(Duration::from_secs(10), || {
        body = unix_scrape(&socket);
        value(&body, r#"orch_hook_failures_total{hook="10-broken"}"#).is_some_and(|n| n >= 1.0)
    });
    assert!(ran, "the failed start hook is not counted:\n{body}");
    let runs = value(&body, r#"orch_hook_runs_total{hook="10-broken"}"#);
    let failures = value(&body, r#"orch_hook_failures_total{hook="10-broken"}"#);
    assert_eq!(
        runs, failures,
        "every run of the broken hook failed:\n{body}"
    );
    let batches = value(&body, "orch_hook_batches_total").expect("batches");
    assert!(runs.is_some_and(|runs| runs == batches), "{body}");

    let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
    let lines = format!(
        "{stamp} web1 sshd[4242]: Failed password for root from 198.51.100.7 port 40000 ssh2\n\
         {stamp} web1 sshd[4242]: Connection closed by 198.51.100.8 port 40001\n"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut file| file.write_all(lines.as_bytes()))
        .expect("append to the log");
    let counted = poll_until(Duration::from_secs(10), || {
        body = unix_scrape(&socket);
        value(&body, r#"orch_jail_lines_total{jail="sshd"}"#) == Some(2.0)
            && value(&body, r#"orch_jail_matches_total{jail="sshd"}"#) == Some(1.0)
    });
    assert!(
        counted,
        "the jail's lines and matches are not counted:\n{body}"
    );
    assert_eq!(
        value(&body, r#"orch_jail_tracked_addresses{jail="sshd"}"#),
        Some(1.0)
    );
    let lagged = poll_until(Duration::from_secs(5), || {
        body = unix_scrape(&socket);
        value(&body, r#"orch_jail_lag_seconds{jail="sshd"}"#).is_some()
    });
    assert!(lagged, "no lag for a jail reading a file:\n{body}");
    promtool_accepts(&body);
}

/// Scrapes a unix socket from inside the sandbox; exits 3 when the
/// connection is refused for lack of permission.
const SANDBOX_SCRAPER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except PermissionError:
    sys.exit(3)
s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
reply = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
sys.stdout.write(reply.decode())
"#;

#[test]
fn under_the_installed_unit_with_the_documented_drop_in_the_socket_and_textfile_work() {
    use common::systemd::{ORCH_IN_SANDBOX, SystemdSandbox};
    const SOCKET: &str = "/run/orch/metrics.sock";
    const TEXTFILE: &str = "/var/lib/prometheus/node-exporter/orch.prom";
    let sandbox = SystemdSandbox::boot();
    // What examples/orch.toml and orch.toml(5) tell an admin to add.
    sandbox.write_file(
        "/etc/systemd/system/orch.service.d/metrics.conf",
        "[Service]\nRuntimeDirectory=orch\nReadWritePaths=/var/lib/prometheus/node-exporter\n",
        0o644,
    );
    sandbox
        .run("mkdir", &["-p", "/var/lib/prometheus/node-exporter"])
        .expect_ok("textfile directory");
    sandbox.install_and_start_orch(Some(&format!(
        "[metrics]\nlisten = \"{SOCKET}\"\ntextfile = \"{TEXTFILE}\"\ninterval = \"1s\"\n"
    )));
    let scrape = || {
        let out = sandbox.run("/usr/bin/python3", &["-c", SANDBOX_SCRAPER, SOCKET]);
        body_of(&out.expect_ok("scrape as root").stdout).to_string()
    };
    wait_until(Duration::from_secs(10), "the metrics socket", || {
        sandbox.run("test", &["-S", SOCKET]).ok()
    });
    let mode = sandbox
        .run("stat", &["-c", "%a %U", SOCKET])
        .expect_ok("stat");
    assert_eq!(mode.stdout.trim(), "660 root");

    sandbox
        .run(ORCH_IN_SANDBOX, &["ban", "192.0.2.7"])
        .expect_ok("ban");
    let body = scrape();
    promtool_accepts(&body);
    assert_eq!(value(&body, "orch_bans_added_total"), Some(1.0), "{body}");
    assert_eq!(value(&body, "orch_firewall_counters_up"), Some(1.0));
    assert!(
        value(&body, "orch_resident_memory_bytes").is_some(),
        "{body}"
    );

    let nobody = sandbox.run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "/usr/bin/python3",
            "-c",
            SANDBOX_SCRAPER,
            SOCKET,
        ],
    );
    assert_eq!(nobody.status, 3, "uid 65534 must not connect: {nobody}");

    wait_until(Duration::from_secs(10), "the textfile", || {
        sandbox.run("test", &["-f", TEXTFILE]).ok()
    });
    let written = sandbox.read_file(TEXTFILE).expect("read the textfile");
    promtool_accepts(&written);
    let mode = sandbox
        .run("stat", &["-c", "%a", TEXTFILE])
        .expect_ok("stat");
    assert_eq!(mode.stdout.trim(), "644", "under UMask=0077 too");
    let restarts = sandbox.systemctl(&["show", "-P", "NRestarts", "orch.service"]);
    assert_eq!(restarts.stdout.trim(), "0");
}
