//! End-to-end tests of ban actions (`[[on_ban]]`, `[[on_unban]]`): a real
//! orch daemon in its own network namespace tells a webhook the test runs
//! (inside that namespace) and a program about its bans, one event per
//! call, and a webhook that never answers does not slow bans down.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Daemon, NetNs, TestBus, wait_until};
use serde_json::Value;

/// Accepts webhook requests on `listener` and passes each JSON body on,
/// answering 200.
fn serve_webhook(listener: TcpListener) -> mpsc::Receiver<Value> {
    let (events, received) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut length = 0usize;
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            assert!(
                request_line.starts_with("POST /orch HTTP/1.1"),
                "{request_line:?}"
            );
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().expect("length");
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).expect("body");
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let json: Value = serde_json::from_slice(&body).expect("a JSON body");
            if events.send(json).is_err() {
                return;
            }
        }
    });
    received
}

fn webhook_config(listener: &TcpListener, extra: &str) -> String {
    let port = listener.local_addr().expect("addr").port();
    format!("[[on_ban]]\nwebhook = \"http://127.0.0.1:{port}/orch\"\n{extra}")
}

#[test]
fn a_ban_many_is_one_event_and_a_single_ban_names_its_address() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let listener = netns.bind_loopback();
    let config = webhook_config(&listener, "batch_window = \"300ms\"\n");
    let events = serve_webhook(listener);
    let daemon = Daemon::start(&netns, &bus, &config);

    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("list.txt");
    let text: String = (0..10_000u32)
        .map(|i| format!("10.1.{}.{}\n", i >> 8, i & 255))
        .collect();
    std::fs::write(&list, text).expect("write list");
    daemon
        .cli(&[
            "ban",
            "--from-file",
            &list.display().to_string(),
            "--reason",
            "blocklist",
        ])
        .expect_ok("ban 10k");
    let event = events
        .recv_timeout(Duration::from_secs(10))
        .expect("an event for the BanMany");
    assert_eq!(event["event"], "ban");
    assert_eq!(event["count"], 10_000, "{}", event["count"]);
    assert_eq!(event["addresses"].as_array().map(Vec::len), Some(1000));
    assert_eq!(event["truncated"], true);
    assert_eq!(event["source"], "manual");
    assert_eq!(event["reason"], "blocklist");
    assert_eq!(event["jail"], Value::Null);
    assert!(event["expires_at"].as_u64().is_some(), "{event}");
    assert!(
        event["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{event}"
    );
    // Exactly one: nothing else arrives for the same call.
    assert!(
        events.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a second event for one BanMany"
    );

    daemon
        .cli(&["ban", "198.51.100.7", "--reason", "by hand"])
        .expect_ok("single ban");
    let event = events
        .recv_timeout(Duration::from_secs(10))
        .expect("an event for the ban");
    assert_eq!(event["count"], 1);
    assert_eq!(event["addresses"], serde_json::json!(["198.51.100.7"]));
    assert_eq!(event["truncated"], false);
    assert_eq!(event["reason"], "by hand");
    // Unbans do not reach an on_ban action.
    daemon.cli(&["unban", "198.51.100.7"]).expect_ok("unban");
    assert!(events.recv_timeout(Duration::from_millis(1500)).is_err());
}

#[test]
fn bans_in_quick_succession_are_batched_and_every_one_is_counted() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    let listener = netns.bind_loopback();
    let config = webhook_config(&listener, "batch_window = \"2s\"\n");
    let events = serve_webhook(listener);
    let daemon = Daemon::start(&netns, &bus, &config);
    let calls = 6;
    for i in 1..=calls {
        daemon
            .cli(&["ban", &format!("203.0.113.{i}"), "--reason", "quick"])
            .expect_ok("ban");
    }
    let (mut counted, mut received) = (0, 0);
    while counted < calls {
        let event = events
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("only {counted} of {calls} bans told"));
        counted += event["count"].as_u64().expect("count");
        received += 1;
        assert_eq!(event["reason"], "quick");
        assert_eq!(event["merged"].as_u64(), event["count"].as_u64(), "{event}");
    }
    assert_eq!(counted, calls, "each ban counted once");
    assert!(
        received < calls,
        "{calls} bans in quick succession: {received} events"
    );
}

#[test]
fn an_unban_program_gets_the_event_in_its_environment_and_stdin() {
    use std::os::unix::fs::PermissionsExt;
    let netns = NetNs::new();
    let bus = TestBus::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("event.txt");
    let program = dir.path().join("notify");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\n{{ echo \"args=$*\"; env | grep '^ORCH_' | sort; echo stdin:; cat; }} > {out}.tmp\nmv {out}.tmp {out}\n",
            out = out.display()
        ),
    )
    .expect("write program");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = format!(
        "[[on_unban]]\nexec = [\"{}\", \"unbanned\"]\nbatch_window = \"100ms\"\n",
        program.display()
    );
    let daemon = Daemon::start(&netns, &bus, &config);
    daemon
        .cli(&["ban", "192.0.2.7", "--for", "1h"])
        .expect_ok("ban");
    daemon.cli(&["unban", "192.0.2.7"]).expect_ok("unban");
    wait_until(
        Duration::from_secs(10),
        "the program wrote the event",
        || out.exists(),
    );
    let written = std::fs::read_to_string(&out).expect("read event");
    for line in [
        "args=unbanned",
        "ORCH_EVENT=unban",
        "ORCH_ADDRESS=192.0.2.7",
        "ORCH_COUNT=1",
        "ORCH_SOURCE=manual",
        "ORCH_REASON=unban",
        "ORCH_EXPIRES_AT=",
        "ORCH_TRUNCATED=0",
    ] {
        assert!(
            written.lines().any(|l| l == line),
            "{line:?} missing in:\n{written}"
        );
    }
    let stdin = written.split_once("stdin:\n").map(|(_, rest)| rest);
    assert_eq!(stdin, Some("192.0.2.7\n"), "{written}");
}

#[test]
fn a_webhook_that_never_answers_does_not_delay_bans() {
    let netns = NetNs::new();
    let bus = TestBus::start();
    // Accepts connections (the kernel does) and never reads or answers.
    let silent = netns.bind_loopback();
    let config = webhook_config(&silent, "timeout = \"1m\"\nbatch_window = \"100ms\"\n");
    let daemon = Daemon::start(&netns, &bus, &config);
    for i in 1..=20 {
        let started = Instant::now();
        daemon
            .cli(&["ban", &format!("203.0.113.{i}")])
            .expect_ok("ban while the webhook hangs");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "ban {i} took {took:?}");
    }
    let listed = daemon.cli(&["list", "--json"]).expect_ok("list");
    let rows: Value = serde_json::from_str(&listed.stdout).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(20));
    drop(silent);
}
