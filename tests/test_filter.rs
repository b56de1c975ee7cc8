//! `orch test-filter`: the counts and JSON an admin sees for a log file,
//! including a hostile user name that must not name the banned address.

mod common;

fn orch(args: &[&str]) -> (i32, String, String) {
    let out = common::run_orch(args);
    (out.status, out.stdout, out.stderr)
}

const LOG: &str = "\
Nov 25 10:00:00 host sshd[12]: Failed password for invalid user admin from 203.0.113.9 port 4242 ssh2
Nov 25 10:00:01 host sshd[12]: Accepted publickey for bob from 198.51.100.1 port 22 ssh2
Nov 25 10:00:02 host sshd-session[13]: Invalid user x from 1.2.3.4 from 2001:db8::9 port 555
Nov 25 10:00:03 host CRON[14]: (root) CMD (true)
";

#[test]
fn summary_and_json_report_what_the_sshd_filter_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    std::fs::write(&log, LOG).expect("write log");
    let log = log.display().to_string();

    let (code, stdout, stderr) = orch(&["test-filter", "sshd", &log]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("lines:    4"), "{stdout}");
    assert!(stdout.contains("matched:  2"), "{stdout}");
    assert!(stdout.contains("missed:   2"), "{stdout}");

    let (code, stdout, _) = orch(&["test-filter", "sshd", &log, "--json"]);
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["line"], 1);
    assert_eq!(rows[0]["host"], "203.0.113.9");
    assert_eq!(rows[0]["user"], "admin");
    assert_eq!(rows[1]["line"], 3);
    assert_eq!(
        rows[1]["host"], "2001:db8::9",
        "the address sshd wrote, not the one in the user name"
    );
}

#[test]
fn unknown_filters_and_missing_logs_are_named() {
    let (code, _, stderr) = orch(&["test-filter", "nope", "/dev/null"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("nope: no such built-in filter"), "{stderr}");
    let (code, _, stderr) = orch(&["test-filter", "sshd", "/nonexistent/auth.log"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/auth.log"), "{stderr}");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "failregex = ['from <HOST> (']\n").expect("write filter");
    let (code, _, stderr) = orch(&["test-filter", &bad.display().to_string(), "/dev/null"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("failregex[0]"), "{stderr}");
}
