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
    let mut rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let summary = rows.pop().expect("the summary line");
    assert_eq!(summary["summary"]["lines"], 4, "{summary}");
    assert_eq!(summary["summary"]["matched"], 2, "{summary}");
    assert_eq!(summary["summary"]["missed"], 2, "{summary}");
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

/// A file is mapped and split across threads; a pipe is read in order.
/// Both must report the same lines, numbers and counts, including CRLF
/// lines, an invalid UTF-8 line and a last line without a newline.
#[test]
fn a_mapped_file_and_a_pipe_give_the_same_report() {
    let mut log = String::new();
    for n in 0..20_000u32 {
        let addr = format!("198.51.{}.{}", n / 250 % 250, n % 250 + 1);
        match n % 4 {
            0 => log.push_str(&format!(
                "Nov 25 10:00:00 h sshd[1]: Failed password for root from {addr} port 22 ssh2\n"
            )),
            1 => log.push_str(&format!(
                "Nov 25 10:00:01 h sshd[1]: Invalid user u{n} from {addr} port 22\r\n"
            )),
            2 => log.push_str("Nov 25 10:00:02 h CRON[2]: (root) CMD (true)\n"),
            _ => log.push('\n'),
        }
    }
    log.push_str("Nov 25 10:00:03 h sshd[1]: Invalid user last from 192.0.2.200 port 1");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("auth.log");
    let mut bytes = log.clone().into_bytes();
    bytes.splice(0..0, b"\xff\xfe not UTF-8\n".iter().copied());
    // A failure with a user name that is not UTF-8: read lossily either way.
    bytes.splice(
        0..0,
        b"Nov 25 10:00:00 h sshd[1]: Failed password for \xff\xfe from 192.0.2.201 port 2 ssh2\n"
            .iter()
            .copied(),
    );
    std::fs::write(&path, &bytes).expect("write log");
    let path = path.display().to_string();

    for json in [false, true] {
        let mut args = vec!["test-filter", "sshd"];
        let mut file_args = args.clone();
        file_args.push(&path);
        args.push("/dev/stdin");
        if json {
            file_args.push("--json");
            args.push("--json");
        }
        let from_file = common::run_orch(&file_args).expect_ok("test-filter on the file");
        // A pipe: not mappable, so read sequentially.
        let through_pipe =
            common::run_command(std::process::Command::new("/bin/sh").arg("-c").arg(format!(
                "cat {path:?} | {} {}",
                common::orch_bin().display(),
                args.join(" ")
            )))
            .expect_ok("test-filter on a pipe");
        // The speed differs from run to run.
        let without_speed = |text: &str| -> String {
            text.lines()
                .filter(|l| !l.starts_with("speed:") && !l.starts_with("{\"summary\""))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            without_speed(&from_file.stdout),
            without_speed(&through_pipe.stdout)
        );
        if json {
            let rows: Vec<&str> = from_file.stdout.lines().collect();
            assert_eq!(rows.len(), 10_003, "10,002 failures and the summary");
            let last: serde_json::Value = serde_json::from_str(rows[10_001]).expect("JSON");
            assert_eq!(last["line"], 20_003);
            assert_eq!(last["host"], "192.0.2.200");
        } else {
            assert!(
                from_file.stdout.contains("lines:    20003"),
                "{}",
                from_file.stdout
            );
            assert!(
                from_file.stdout.contains("matched:  10002"),
                "{}",
                from_file.stdout
            );
        }
    }
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

/// A fail2ban filter.d file (written here, not fail2ban's) with an include,
/// an `[Init]` option overridden in the reference, a date template and a
/// host name that must never be reported as an address.
#[test]
fn fail2ban_conf_filters_run_with_options_and_dates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("common.conf"),
        "[DEFAULT]\n__prefix = \\S+ <_daemon>\\[\\d+\\]:\n",
    )
    .expect("write common.conf");
    std::fs::write(
        d.join("app.conf"),
        "\
[INCLUDES]
before = common.conf
[Init]
word = failed
[Definition]
_daemon = app
failregex = ^ %(__prefix)s login <word> for <F-USER>\\S+</F-USER> from <HOST>$
datepattern = {^LN-BEG}%%ExY-%%m-%%d %%H:%%M:%%S
journalmatch = _SYSTEMD_UNIT=app.service
",
    )
    .expect("write app.conf");
    let log = d.join("app.log");
    std::fs::write(
        &log,
        "\
2024-03-01 10:00:00 srv app[1]: login refused for bob from 192.0.2.7
2024-03-01 10:00:01 srv app[1]: login failed for eve from 192.0.2.8
2024-03-01 10:00:02 srv app[1]: login refused for bob from evil.example
2024-03-01 10:00:03 srv other[1]: login refused for bob from 192.0.2.9
",
    )
    .expect("write log");
    let log = log.display().to_string();
    let filter = format!("{}[word=refused]", d.join("app.conf").display());

    let (code, stdout, stderr) = orch(&["test-filter", &filter, &log]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("engine:   pcre2"), "{stdout}");
    assert!(stdout.contains("match limit"), "{stdout}");
    assert!(stdout.contains("lines:    4"), "{stdout}");
    // The host-name line matches but yields no address.
    assert!(stdout.contains("matched:  2"), "{stdout}");
    assert!(stdout.contains("no address: 1"), "{stdout}");
    assert!(stdout.contains("no address: 1"), "{stdout}");
    assert!(stdout.contains("failregex[0]: 1"), "{stdout}");

    let (code, stdout, stderr) = orch(&["test-filter", &filter, &log, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .filter(|row: &serde_json::Value| row.get("summary").is_none())
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert_eq!(rows[0]["line"], 1);
    assert_eq!(rows[0]["host"], "192.0.2.7");
    assert_eq!(rows[0]["user"], "bob");
    let time = rows[0]["time"].as_str().expect("time");
    assert!(time.starts_with("2024-03-01T"), "{time}");

    let (code, _, stderr) = orch(&["test-filter", "/nonexistent/x.conf[mode=a]", &log]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/x.conf"), "{stderr}");
    let (code, _, stderr) = orch(&[
        "test-filter",
        &format!("{}[mode", d.join("app.conf").display()),
        &log,
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("bad filter reference"), "{stderr}");
}
