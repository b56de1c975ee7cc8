//! Every `--json` output against its documented schema (docs/json.md),
//! on a real daemon in a network namespace, and `orch query` against real
//! packets: its drop counters grow with TCP attempts from a banned source
//! in another namespace.

mod common;

use std::path::Path;
use std::time::Duration;

use common::json_schema::{assert_fits, check};
use common::{Daemon, TestBus, VethPair, run_orch, wait_until};
use serde_json::Value;

const SERVER: &str = "10.98.0.1";
const BANNED_CLIENT: &str = "10.98.0.2";
const OTHER_CLIENT: &str = "10.98.0.3";
const PORT: u16 = 2223;

fn config(log: &Path) -> String {
    format!(
        "allow = [\"192.0.2.0/28\"]\n\
         [firewall]\nelement_counters = true\n\
         [jails.sshd]\nfiles = [\"{}\"]\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n",
        log.display()
    )
}

fn json(out: common::CmdOutput, what: &str) -> Value {
    let out = out.expect_ok(what);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|err| panic!("{what}: not one JSON value ({err}):\n{}", out.stdout))
}

fn append_failures(log: &Path, address: &str, count: usize) {
    use std::io::Write;
    let stamp = orch::timefmt::rfc3339(orch::timefmt::now_unix());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .expect("open log");
    for i in 0..count {
        writeln!(
            file,
            "{stamp} host sshd-session[99]: Failed password for root from {address} port {} ssh2",
            40000 + i
        )
        .expect("append");
    }
}

#[test]
fn the_schema_checker_finds_what_does_not_fit() {
    let schema = serde_json::json!({
        "type": "object", "required": ["a"], "additionalProperties": false,
        "properties": {"a": {"type": "integer", "minimum": 0}, "b": {"enum": ["x"]}}
    });
    let mut problems = Vec::new();
    let value = serde_json::json!({"a": -1, "b": "y", "c": 1});
    check(&schema, &schema, &value, "$", &mut problems);
    assert_eq!(problems.len(), 3, "{problems:?}");
}

#[test]
fn every_json_output_fits_its_documented_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, "").expect("log");
    let pair = VethPair::new(
        &[&format!("{SERVER}/24")],
        &[&format!("{BANNED_CLIENT}/24")],
    );
    let bus = TestBus::start();
    let daemon = Daemon::start(&pair.server, &bus, &config(&log));

    daemon
        .cli(&["ban", BANNED_CLIENT, "--reason", "json test"])
        .expect_ok("ban");
    append_failures(&log, "198.51.100.9", 3);
    wait_until(Duration::from_secs(5), "the jail's ban", || {
        pair.server
            .set_elements("orch", "ban4")
            .iter()
            .any(|e| e == "198.51.100.9")
    });

    let list = json(daemon.cli(&["list", "--json"]), "list --json");
    assert_fits("list", &list);
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");

    let allows = json(
        daemon.cli(&["allow", "list", "--json"]),
        "allow list --json",
    );
    assert_fits("allow list", &allows);

    let status = json(daemon.cli(&["status", "--json"]), "status --json");
    assert_fits("status", &status);
    assert_eq!(status["bans"], 2, "{status}");
    let jail = json(
        daemon.cli(&["status", "sshd", "--json"]),
        "status sshd --json",
    );
    assert_fits("status", &jail);
    assert_eq!(jail["jails"][0]["bans_now"], 1, "{jail}");
    assert_eq!(jail["jails"][0]["bans_total"], 1, "{jail}");
    assert_eq!(jail["jails"][0]["failures_total"], 3, "{jail}");
    assert_eq!(
        jail["jails"][0]["banned"]["addresses"][0], "198.51.100.9",
        "{jail}"
    );
    let unknown = daemon.cli(&["status", "nosuchjail"]);
    assert_eq!(unknown.status, 1, "{unknown}");
    assert!(unknown.stderr.contains("the jails are: sshd"), "{unknown}");

    let manual = json(daemon.cli(&["query", BANNED_CLIENT, "--json"]), "query");
    assert_fits("query", &manual);
    assert_eq!(manual["banned"], true, "{manual}");
    assert_eq!(manual["bans"][0]["source"], "manual", "{manual}");
    assert_eq!(manual["bans"][0]["reason"], "json test", "{manual}");
    let by_jail = json(daemon.cli(&["query", "198.51.100.9", "--json"]), "query");
    assert_fits("query", &by_jail);
    assert_eq!(by_jail["bans"][0]["jail"], "sshd", "{by_jail}");
    assert_eq!(by_jail["times_banned"], 1, "{by_jail}");
    let allowed = json(daemon.cli(&["query", "192.0.2.5", "--json"]), "query");
    assert_fits("query", &allowed);
    assert_eq!(allowed["banned"], false, "{allowed}");
    assert_eq!(allowed["allowed_by"][0]["kind"], "static", "{allowed}");
    assert_eq!(
        allowed["allowed_by"][0]["entry"], "192.0.2.0/28",
        "{allowed}"
    );
    let text = daemon.cli(&["query", "198.51.100.9"]).expect_ok("query");
    assert!(
        text.stdout.contains("BANNED") && text.stdout.contains("jail sshd"),
        "{text}"
    );
    let bad = daemon.cli(&["query", "not-an-address"]);
    assert_eq!(bad.status, 1, "{bad}");
    // Any local user may query: a 64 KiB argument full of escapes and
    // line breaks is refused with a short, printable message, on stderr
    // only, and the daemon answers the next query as before.
    let hostile = "\u{1b}[2J1.2.3.4\n/".repeat(4096);
    let refused = daemon.cli(&["query", &hostile, "--json"]);
    assert_eq!(
        refused.status,
        1,
        "{}",
        &refused.stderr[..refused.stderr.len().min(300)]
    );
    assert!(refused.stdout.is_empty(), "nothing on stdout");
    assert!(
        refused.stderr.len() < 1024 && !refused.stderr.contains('\u{1b}'),
        "the refusal must be short and printable: {} bytes",
        refused.stderr.len()
    );
    let again = json(daemon.cli(&["query", BANNED_CLIENT, "--json"]), "query");
    assert_eq!(again["banned"], true, "{again}");

    let checked = json(
        run_orch(&[
            "check-config",
            "--json",
            "--config",
            &daemon.config_path.display().to_string(),
        ]),
        "check-config --json",
    );
    assert_fits("check-config", &checked);
    assert_eq!(checked["ok"], true, "{checked}");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[bans]\ndefault_time = \"soon\"\n").expect("write");
    let out = run_orch(&[
        "check-config",
        "--json",
        "--config",
        &broken.display().to_string(),
    ]);
    assert_eq!(out.status, 1, "{out}");
    let refused: Value = serde_json::from_str(out.stdout.trim()).expect("JSON on stdout");
    assert_fits("check-config", &refused);
    assert_eq!(refused["errors"][0]["line"], 2, "{refused}");

    let filtered = run_orch(&["test-filter", "sshd", &log.display().to_string(), "--json"])
        .expect_ok("test-filter --json");
    let lines: Vec<Value> = filtered
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "3 failures and the summary: {}",
        filtered.stdout
    );
    for line in &lines {
        assert_fits("test-filter", line);
    }
    assert_eq!(lines[3]["summary"]["matched"], 3);
}

#[test]
fn query_reports_drop_counters_that_grow_with_real_tcp_attempts() {
    let pair = VethPair::new(
        &[&format!("{SERVER}/24")],
        &[
            &format!("{BANNED_CLIENT}/24"),
            &format!("{OTHER_CLIENT}/24"),
        ],
    );
    let bus = TestBus::start();
    let daemon = Daemon::start(&pair.server, &bus, "[firewall]\nelement_counters = true\n");
    pair.listen(PORT);
    let timeout = Duration::from_millis(500);
    daemon.cli(&["ban", BANNED_CLIENT]).expect_ok("ban");
    let dropped = || -> (u64, u64) {
        let answer = json(daemon.cli(&["query", BANNED_CLIENT, "--json"]), "query");
        assert_fits("query", &answer);
        let dropped = &answer["dropped"];
        let packets = dropped["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("no counters: {answer}"));
        (packets, dropped["bytes"].as_u64().unwrap_or(0))
    };
    let (packets_before, bytes_before) = dropped();
    for _ in 0..3 {
        assert!(
            !pair.connect_from(BANNED_CLIENT, SERVER, PORT, timeout),
            "the banned source got through"
        );
    }
    assert!(
        pair.connect_from(OTHER_CLIENT, SERVER, PORT, timeout),
        "a neighbour must get through"
    );
    let (packets_after, bytes_after) = dropped();
    assert!(
        packets_after >= packets_before + 3 && bytes_after > bytes_before,
        "3 refused SYNs (and retries) must be counted: {packets_before} -> {packets_after} packets"
    );

    // Without counters, query says how to turn them on.
    let plain = VethPair::new(&["10.97.0.1/24"], &["10.97.0.2/24"]);
    let bus = TestBus::start();
    let daemon = Daemon::start(&plain.server, &bus, "");
    daemon.cli(&["ban", "10.97.0.2"]).expect_ok("ban");
    let answer = json(daemon.cli(&["query", "10.97.0.2", "--json"]), "query");
    assert_fits("query", &answer);
    assert!(answer["dropped"].is_null(), "{answer}");
    assert!(
        answer["dropped_note"]
            .as_str()
            .is_some_and(|note| note.contains("element_counters = true")),
        "{answer}"
    );
}
