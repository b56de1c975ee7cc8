//! Unit tests of the import: fail2ban's precedence between jail files,
//! the mapping of each option, the TOML orch reads back, and hostile
//! database rows. Pure or on temp dirs; no daemon.

use std::path::{Path, PathBuf};

use super::ban_db::{Cell, RawRow, judge_row, judge_rows};
use super::jail_conf::{JailSettings, read_jails};
use super::mapping::{
    FilterFacts, Growth, Source, choose_filter, fail2ban_seconds, map_all, map_jail,
};
use super::toml_out::render;

const DAY: u64 = 86_400;
const MAX_TIME: u64 = 365 * DAY;

/// filter.d as a list: which filters exist and which the admin changed.
struct Filters {
    present: &'static [&'static str],
    customised: &'static [&'static str],
}

impl FilterFacts for Filters {
    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/etc/fail2ban/filter.d/{name}.conf"))
    }
    fn exists(&self, name: &str) -> bool {
        self.present.contains(&name)
    }
    fn customised(&self, name: &str) -> bool {
        self.customised.contains(&name)
    }
    fn journal_matches(&self, spec: &str) -> Result<Vec<String>, String> {
        Ok(match spec {
            "sshd" => vec!["_SYSTEMD_UNIT=ssh.service".to_string()],
            _ => Vec::new(),
        })
    }
}

const STOCK: Filters = Filters {
    present: &["sshd", "nginx-http-auth", "recidive", "postfix"],
    customised: &[],
};

fn jail(name: &str, options: &[(&str, &str)]) -> JailSettings {
    let mut settings = JailSettings {
        name: name.to_string(),
        origin: "jail.local:1".to_string(),
        ..JailSettings::default()
    };
    for (option, value) in options {
        settings
            .values
            .insert(option.to_string(), value.to_string());
        settings.own.push(option.to_string());
        settings
            .locations
            .insert(option.to_string(), "jail.local:9".to_string());
    }
    settings
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn jail_files_are_read_with_fail2bans_precedence() {
    let etc = tempfile::tempdir().unwrap();
    let etc = etc.path();
    write(
        etc,
        "jail.conf",
        "[INCLUDES]\nbefore = paths.conf\n\n[DEFAULT]\nmaxretry = 5\nbantime = 10m\nmode = normal\n\
         filter = %(__name__)s[mode=%(mode)s]\n\n[sshd]\nport = ssh\nlogpath = %(sshd_log)s\n\n\
         [web]\nenabled = false\nlogpath = /var/log/web.log\n",
    );
    write(
        etc,
        "paths.conf",
        "[DEFAULT]\nsshd_log = /var/log/auth.log\n",
    );
    write(
        etc,
        "jail.d/a.conf",
        "[sshd]\nenabled = true\nmaxretry = 4\n",
    );
    write(
        etc,
        "jail.d/zz.conf",
        "[sshd]\nmaxretry = 9\nbantime = 2h\n",
    );
    write(
        etc,
        "jail.local",
        "[sshd]\nmaxretry = 8\nmode = aggressive\n",
    );
    let jails = read_jails(etc).expect("read");
    let names: Vec<&str> = jails.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["sshd", "web"]);
    let sshd = &jails[0];
    assert_eq!(sshd.get("enabled"), Some("true"));
    assert_eq!(
        sshd.get("maxretry"),
        Some("8"),
        "jail.local after jail.d/*.conf"
    );
    assert_eq!(
        sshd.get("bantime"),
        Some("2h"),
        "jail.d/zz.conf over [DEFAULT]"
    );
    assert_eq!(sshd.get("logpath"), Some("/var/log/auth.log"));
    assert_eq!(sshd.get("filter"), Some("sshd[mode=aggressive]"));
    assert_eq!(
        sshd.locations.get("maxretry").map(String::as_str),
        Some(format!("{}:2", etc.join("jail.local").display()).as_str())
    );
    assert!(sshd.origin.ends_with("jail.d/a.conf:2"), "{}", sshd.origin);

    write(etc, "jail.d/b.local", "[sshd]\nmaxretry = 7\n");
    let sshd = &read_jails(etc).expect("read")[0];
    assert_eq!(sshd.get("maxretry"), Some("7"), "jail.d/*.local come last");
}

#[test]
fn a_missing_etc_dir_is_a_clear_error() {
    let err = read_jails(Path::new("/nonexistent/fail2ban")).expect_err("no dir");
    assert!(err.to_string().contains("--etc DIR"), "{err}");
}

#[test]
fn built_in_filters_replace_fail2bans_where_they_do_the_same() {
    let choose = |name, options| choose_filter(name, options, &STOCK);
    assert_eq!(choose("sshd", "[mode=normal]").unwrap(), "sshd");
    assert_eq!(choose("sshd", "").unwrap(), "sshd");
    assert_eq!(
        choose("sshd", "[mode=aggressive]").unwrap(),
        "sshd-aggressive"
    );
    assert_eq!(
        choose("nginx-http-auth", "[mode=normal]").unwrap(),
        "nginx-http-auth"
    );
    assert_eq!(
        choose("sshd", "[mode=extra]").unwrap(),
        "/etc/fail2ban/filter.d/sshd.conf[mode=extra]"
    );
    assert_eq!(
        choose("sshd", "[mode=normal, maxlines=2]").unwrap(),
        "/etc/fail2ban/filter.d/sshd.conf[mode=normal, maxlines=2]"
    );
    assert_eq!(
        choose("postfix", "[mode=more]").unwrap(),
        "/etc/fail2ban/filter.d/postfix.conf[mode=more]"
    );
    let changed = Filters {
        present: &["sshd"],
        customised: &["sshd"],
    };
    assert_eq!(
        choose_filter("sshd", "[mode=normal]", &changed).unwrap(),
        "/etc/fail2ban/filter.d/sshd.conf[mode=normal]",
        "a filter.d/sshd.local makes the built-in no longer equivalent"
    );
    assert!(choose("nope", "").unwrap_err().contains("does not exist"));
    assert!(choose("../x", "").is_err());
}

#[test]
fn a_jail_maps_with_every_option() {
    let mut notes = Vec::new();
    let sshd = jail(
        "sshd",
        &[
            ("enabled", "true"),
            ("filter", "sshd[mode=normal]"),
            ("logpath", "/var/log/auth.log\n/var/log/secure tail"),
            ("maxretry", "3"),
            ("findtime", "1h 30m"),
            ("bantime", "1d"),
            ("bantime.increment", "true"),
            ("bantime.multipliers", "1 2 4 8"),
            ("bantime.maxtime", "5w"),
            ("bantime.rndtime", "10m"),
            ("bantime.overalljails", "yes"),
            (
                "ignoreip",
                "192.0.2.0/24 198.51.100.7/24, ::1 trusted.example.org",
            ),
            ("ignorecommand", "/usr/local/bin/is-friend <ip>"),
            (
                "action",
                "iptables-multiport[port=\"ssh\"]\nsendmail-whois[dest=root]",
            ),
            ("colour", "blue"),
        ],
    );
    let mapped = map_jail(&sshd, &STOCK, MAX_TIME, &mut notes).expect("mapped");
    assert_eq!(mapped.filter, "sshd");
    assert_eq!(
        mapped.source,
        Source::Files(vec!["/var/log/auth.log".into(), "/var/log/secure".into()])
    );
    assert_eq!(
        (mapped.max_retry, mapped.find_time, mapped.ban_time),
        (3, 5400, DAY)
    );
    let increment = mapped.increment.expect("increment");
    assert_eq!(increment.growth, Growth::Multipliers(vec![1, 2, 4, 8]));
    assert_eq!(increment.max_time, Some(35 * DAY));
    assert_eq!(increment.random_time, Some(600));
    assert!(increment.overall);
    let ignore: Vec<String> = mapped.ignore.iter().map(ToString::to_string).collect();
    assert_eq!(ignore, ["192.0.2.0/24", "198.51.100.0/24", "::1/128"]);
    assert_eq!(mapped.ignore_command, ["/usr/local/bin/is-friend", "<ip>"]);
    for expected in [
        "trusted.example.org is a host name",
        "\"tail\" not mapped",
        "iptables-multiport bans port ssh only",
        "sendmail-whois does not ban",
        "colour (jail.local:9): not known to the import",
    ] {
        assert!(
            notes.iter().any(|note| note.contains(expected)),
            "missing {expected:?} in {notes:#?}"
        );
    }
}

#[test]
fn journal_recidive_permanent_and_formula() {
    let mut notes = Vec::new();
    let journal = jail(
        "sshd",
        &[
            ("filter", "sshd"),
            ("backend", "systemd"),
            ("bantime", "-1"),
        ],
    );
    let mapped = map_jail(&journal, &STOCK, MAX_TIME, &mut notes).expect("mapped");
    assert_eq!(
        mapped.source,
        Source::Journal(vec!["_SYSTEMD_UNIT=ssh.service".into()])
    );
    assert_eq!(mapped.ban_time, MAX_TIME, "permanent -> bans.max_time");
    assert!(notes.iter().any(|n| n.contains("permanent in fail2ban")));

    let own_match = jail(
        "sshd",
        &[
            ("backend", "systemd"),
            (
                "journalmatch",
                "_SYSTEMD_UNIT=sshd.service + _COMM=sshd\n_COMM=dropbear",
            ),
        ],
    );
    let mapped = map_jail(&own_match, &STOCK, MAX_TIME, &mut Vec::new()).expect("mapped");
    assert_eq!(
        mapped.source,
        Source::Journal(
            [
                "_SYSTEMD_UNIT=sshd.service",
                "+",
                "_COMM=sshd",
                "+",
                "_COMM=dropbear"
            ]
            .map(String::from)
            .to_vec()
        )
    );

    let no_match = jail("web", &[("filter", "postfix"), ("backend", "systemd")]);
    let why = map_jail(&no_match, &STOCK, MAX_TIME, &mut Vec::new()).expect_err("no match");
    assert!(why.contains("no journalmatch"), "{why}");

    let recidive = jail(
        "recidive",
        &[
            ("logpath", "/var/log/fail2ban.log"),
            ("bantime", "1w"),
            ("findtime", "1d"),
        ],
    );
    let mapped = map_jail(&recidive, &STOCK, MAX_TIME, &mut Vec::new()).expect("mapped");
    assert_eq!(
        (mapped.filter.as_str(), &mapped.source),
        ("recidive", &Source::OwnBans)
    );

    let formula = jail(
        "sshd",
        &[
            ("logpath", "/var/log/auth.log"),
            ("bantime.increment", "true"),
            ("bantime.factor", "2"),
            (
                "bantime.formula",
                "ban.Time * math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor)",
            ),
        ],
    );
    let mapped = map_jail(&formula, &STOCK, MAX_TIME, &mut Vec::new()).expect("mapped");
    assert!(matches!(
        mapped.increment.map(|i| i.growth),
        Some(Growth::Formula { factor, .. }) if factor == 2.0
    ));
    let python = jail(
        "sshd",
        &[
            ("logpath", "/var/log/auth.log"),
            ("bantime.increment", "true"),
            ("bantime.formula", "__import__('os').system('x')"),
        ],
    );
    let why = map_jail(&python, &STOCK, MAX_TIME, &mut Vec::new()).expect_err("refused");
    assert!(why.contains("orch cannot run it"), "{why}");
}

#[test]
fn bad_values_skip_the_jail_with_their_location() {
    for (option, value) in [
        ("maxretry", "many"),
        ("maxretry", "0"),
        ("findtime", "soon"),
        ("bantime", "0"),
        ("logpath", "relative.log"),
    ] {
        let base = ("logpath", "/var/log/auth.log");
        let options = if option == "logpath" {
            vec![(option, value)]
        } else {
            vec![base, (option, value)]
        };
        let bad = jail("sshd", &options);
        let why = map_jail(&bad, &STOCK, MAX_TIME, &mut Vec::new()).expect_err(option);
        assert!(why.contains("jail.local:9"), "{option}: {why}");
    }
    let odd_name = jail("a.b", &[("logpath", "/x.log")]);
    assert!(map_jail(&odd_name, &STOCK, MAX_TIME, &mut Vec::new()).is_err());
}

#[test]
fn shared_ignores_become_allow_and_disabled_jails_are_listed() {
    let jails = [
        jail(
            "sshd",
            &[
                ("enabled", "true"),
                ("logpath", "/var/log/auth.log"),
                ("ignoreip", "192.0.2.0/24 198.51.100.1"),
            ],
        ),
        jail(
            "nginx-http-auth",
            &[
                ("enabled", "true"),
                ("logpath", "/var/log/nginx/error.log"),
                ("ignoreip", "192.0.2.0/24"),
            ],
        ),
        jail("postfix", &[("enabled", "false")]),
        jail("dovecot", &[]),
    ];
    let mapped = map_all(&jails, &STOCK, MAX_TIME);
    let allow: Vec<String> = mapped.allow.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["192.0.2.0/24"]);
    assert_eq!(mapped.jails.len(), 2);
    let sshd = mapped.jails.iter().find(|j| j.name == "sshd").unwrap();
    assert_eq!(sshd.ignore, ["198.51.100.1/32".parse().unwrap()]);
    assert!(
        mapped
            .notes
            .iter()
            .any(|n| n.text == "2 jail(s) not enabled, skipped: postfix, dovecot"),
        "{:#?}",
        mapped.notes
    );
}

#[test]
fn the_written_toml_is_valid_orch_config_and_stable() {
    let jails = [
        jail(
            "sshd",
            &[
                ("enabled", "true"),
                ("logpath", "/var/log/auth \"odd\".log head"),
                ("ignoreip", "192.0.2.0/24"),
                ("bantime.increment", "true"),
                ("bantime.maxtime", "1w"),
            ],
        ),
        jail(
            "recidive",
            &[
                ("enabled", "true"),
                ("bantime", "1w"),
                ("findtime", "1d"),
                ("ignoreip", "192.0.2.0/24"),
            ],
        ),
    ];
    let mapped = map_all(&jails, &STOCK, MAX_TIME);
    let text = render(&mapped, Path::new("/etc/fail2ban"));
    assert_eq!(text, render(&mapped, Path::new("/etc/fail2ban")));
    let config = crate::config::parse_str(&text, Path::new("50-fail2ban.toml"))
        .unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(config.allow, ["192.0.2.0/24".parse().unwrap()]);
    let names: Vec<&str> = config.jails.jails.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["recidive", "sshd"]);
    let sshd = &config.jails.jails[1];
    assert_eq!(
        sshd.source,
        crate::config::JailSource::Files(vec!["/var/log/auth \"odd\".log".into()])
    );
    assert_eq!(
        sshd.increment.rule,
        crate::jail::ban_time::Increment::Factor(1.0)
    );
    assert_eq!(
        sshd.increment.max_time,
        Some(std::time::Duration::from_secs(7 * DAY))
    );
}

#[test]
fn fail2ban_times_read_as_fail2ban_reads_them() {
    for (text, seconds) in [
        ("600", Some(600)),
        ("-1", Some(-1)),
        ("10m", Some(600)),
        ("1h 30m", Some(5400)),
        ("1d3h", Some(97_200)),
        ("2w", Some(1_209_600)),
        ("1mo", Some(2_629_746)),
        ("1.5h", Some(5400)),
        ("3 hours", Some(10_800)),
        ("soon", None),
        ("1x", None),
        ("", None),
        ("99999999999999999999y", None),
    ] {
        assert_eq!(fail2ban_seconds(text), seconds, "{text:?}");
    }
}

fn row(jail: Cell, ip: Cell, time_of_ban: Cell, ban_time: Cell) -> RawRow {
    RawRow {
        jail,
        ip,
        time_of_ban,
        ban_time,
    }
}

fn text(value: &str) -> Cell {
    Cell::Text(value.as_bytes().to_vec())
}

#[test]
fn hostile_rows_are_reported_never_trusted() {
    let now = 1_700_000_000u64;
    let when = Cell::Integer(now as i64 - 60);
    let hour = Cell::Integer(3600);
    let cases = [
        (
            row(text("sshd"), text("999.1.2.3"), when.clone(), hour.clone()),
            "not an IP address",
        ),
        (
            row(text("sshd"), Cell::Null, when.clone(), hour.clone()),
            "address is not text",
        ),
        (
            row(text("sshd"), Cell::Blob, when.clone(), hour.clone()),
            "address is not text",
        ),
        (
            row(
                text("sshd"),
                Cell::Text(vec![0xff, 0xfe]),
                when.clone(),
                hour.clone(),
            ),
            "not text",
        ),
        (
            row(
                text("sshd"),
                text("192.0.2.1/8"),
                when.clone(),
                hour.clone(),
            ),
            "host bits",
        ),
        (
            row(
                Cell::Integer(1),
                text("192.0.2.1"),
                when.clone(),
                hour.clone(),
            ),
            "jail is not text",
        ),
        (
            row(
                text("sshd"),
                text("192.0.2.1"),
                Cell::Integer(-5),
                hour.clone(),
            ),
            "before 1970",
        ),
        (
            row(
                text("sshd"),
                text("192.0.2.1"),
                Cell::Integer(i64::MAX),
                hour.clone(),
            ),
            "future",
        ),
        (
            row(
                text("sshd"),
                text("192.0.2.1"),
                Cell::Real(f64::NAN),
                hour.clone(),
            ),
            "timeofban",
        ),
        (
            row(
                text("sshd"),
                text("192.0.2.1"),
                text("yesterday"),
                hour.clone(),
            ),
            "timeofban",
        ),
        (
            row(
                text("sshd"),
                text("192.0.2.1"),
                when.clone(),
                Cell::Integer(-5),
            ),
            "negative",
        ),
        (
            row(
                text("sshd"),
                text("192.0.2.1"),
                when.clone(),
                Cell::Integer(i64::MIN),
            ),
            "negative",
        ),
    ];
    for (bad, expected) in &cases {
        let why = judge_row(bad, now).expect_err(expected);
        assert!(why.contains(expected), "{bad:?}: {why}");
    }
    // Huge but valid numbers saturate instead of overflowing.
    let huge = judge_row(
        &row(
            text("sshd"),
            text("192.0.2.1"),
            when.clone(),
            Cell::Integer(i64::MAX),
        ),
        now,
    )
    .expect("valid");
    assert!(huge.expires_at > now && huge.expires_at < u64::MAX);
    let permanent = judge_row(
        &row(
            text("sshd"),
            text("2001:db8::1"),
            when.clone(),
            Cell::Integer(-1),
        ),
        now,
    )
    .expect("valid");
    assert!(permanent.permanent());
    assert_eq!(permanent.address, "2001:db8::1");
    let mapped_v4 = judge_row(
        &row(
            text("sshd"),
            text("::ffff:192.0.2.5"),
            when.clone(),
            hour.clone(),
        ),
        now,
    )
    .expect("valid");
    assert_eq!(mapped_v4.address, "192.0.2.5");
    assert_eq!(mapped_v4.expires_at, now - 60 + 3600);
}

#[test]
fn the_latest_ban_of_an_address_counts_and_expired_ones_are_counted() {
    let now = 1_700_000_000i64;
    let rows = vec![
        row(
            text("sshd"),
            text("192.0.2.1"),
            Cell::Integer(now - 7200),
            Cell::Integer(600),
        ),
        row(
            text("sshd"),
            text("192.0.2.1"),
            Cell::Integer(now - 60),
            Cell::Integer(600),
        ),
        row(
            text("sshd"),
            text("192.0.2.2"),
            Cell::Integer(now - 7200),
            Cell::Integer(600),
        ),
        row(
            text("sshd"),
            text("192.0.2.3"),
            Cell::Integer(now - 10),
            Cell::Integer(-1),
        ),
        row(
            text("recidive"),
            text("192.0.2.1"),
            Cell::Integer(now - 10),
            Cell::Integer(3600),
        ),
        row(
            text("sshd"),
            text("bogus"),
            Cell::Integer(now),
            Cell::Integer(600),
        ),
    ];
    let judged = judge_rows(rows, now as u64);
    let active: Vec<(&str, &str, u64)> = judged
        .active
        .iter()
        .map(|b| (b.jail.as_str(), b.address.as_str(), b.expires_at))
        .collect();
    assert_eq!(
        active,
        [
            ("recidive", "192.0.2.1", now as u64 + 3590),
            ("sshd", "192.0.2.1", now as u64 + 540),
            ("sshd", "192.0.2.3", u64::MAX),
        ]
    );
    assert_eq!((judged.expired, judged.older), (1, 1));
    assert_eq!(judged.bad.len(), 1);
    assert!(judged.bad[0].starts_with("row 6: "), "{:?}", judged.bad);
}

#[test]
fn an_unreadable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = super::ban_db::read_bans(&dir.path().join("none.sqlite3"), 0);
    assert!(missing.unwrap_err().to_string().contains("no such file"));
    let garbage = dir.path().join("garbage.sqlite3");
    std::fs::write(
        &garbage,
        "this is not a database at all, not even close......",
    )
    .unwrap();
    let err = super::ban_db::read_bans(&garbage, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read the fail2ban database"), "{err}");
    let other = dir.path().join("other.sqlite3");
    let db = rusqlite::Connection::open(&other).unwrap();
    db.execute_batch("CREATE TABLE t(x)").unwrap();
    drop(db);
    let err = super::ban_db::read_bans(&other, 0).unwrap_err().to_string();
    assert!(err.contains("no such table: bans"), "{err}");
}
