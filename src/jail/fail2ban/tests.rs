//! Unit tests of the fail2ban filter reader: INI syntax, includes and
//! `.local` overrides, interpolation, tag substitution and expansion,
//! filter references, line processing and the match bound. Filters here
//! are written for the tests; fail2ban's own files are exercised by
//! `tests/fail2ban_conformance.rs`.

use std::net::IpAddr;
use std::path::Path;

use super::backtrack::{BacktrackMatcher, BacktrackOptions, Search};
use super::filter::{Fail2banFilter, FailureHost};
use super::ini::{Config, Options, parse};
use super::reader::{filter_options, split_words};
use super::{Fail2banError, FilterRef, tags};
use crate::jail::line_filter::{LineFilter, LineOutcome};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn opts(pairs: &[(&str, &str)]) -> Options {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn ini_syntax_as_python_configparser() {
    let text = "\
# comment
; another
[DEFAULT]
Base = x

[Definition]
failregex = ^one <HOST>$
            ^two <HOST>$

            ; a comment line inside the value is dropped
            ^three <HOST>$
colon: value ; inline comment
hash = a#b ;c
empty =
[Definition]
late = merged into the same section
";
    let file = parse(text, "t.conf").unwrap();
    assert_eq!(file.defaults.get("base").map(String::as_str), Some("x"));
    let def = file.section("Definition").unwrap();
    assert_eq!(
        def.get("failregex").map(String::as_str),
        Some("^one <HOST>$\n^two <HOST>$\n\n^three <HOST>$")
    );
    assert_eq!(def.get("colon").map(String::as_str), Some("value"));
    assert_eq!(def.get("hash").map(String::as_str), Some("a#b"));
    assert_eq!(def.get("empty").map(String::as_str), Some(""));
    assert!(def.contains_key("late"));
    assert_eq!(file.sections.len(), 1);

    let err = parse("x = 1\n", "bad.conf").unwrap_err();
    assert!(
        matches!(err, Fail2banError::Syntax { line: 1, .. }),
        "{err}"
    );
    let err = parse("[s]\nno delimiter here\n", "bad.conf").unwrap_err();
    assert!(err.to_string().starts_with("bad.conf:2:"), "{err}");
}

#[test]
fn interpolation_and_its_limits() {
    let file = parse(
        "\
[DEFAULT]
daemon = \\S*
prefix = host %(daemon)s:
pct = 100%%
[Definition]
daemon = sshd
re = ^%(prefix)s <HOST> %(pct)s
loop = %(loop2)s
loop2 = %(loop)s
missing = %(nope)s
bad = 50% off
other = %(lt_x/opt)s and %(default/daemon)s
[lt_x]
opt = from lt_x
",
        "t",
    )
    .unwrap();
    let config = Config::from_files(vec![file], "t");
    let none = Options::new();
    // Lazy: %(daemon)s inside the DEFAULT value resolves from [Definition].
    assert_eq!(
        config.get("Definition", "re", &none).unwrap().unwrap(),
        "^host sshd: <HOST> 100%"
    );
    // Jail options (vars) win.
    let vars = opts(&[("daemon", "ftpd")]);
    assert_eq!(
        config.get("Definition", "re", &vars).unwrap().unwrap(),
        "^host ftpd: <HOST> 100%"
    );
    assert_eq!(
        config.get("Definition", "other", &none).unwrap().unwrap(),
        "from lt_x and \\S*"
    );
    let err = config.get("Definition", "loop", &none).unwrap_err();
    assert!(err.to_string().contains("deeper than 10"), "{err}");
    let err = config.get("Definition", "missing", &none).unwrap_err();
    assert!(err.to_string().contains("%(nope)s is not defined"), "{err}");
    assert!(config.get("Definition", "bad", &none).is_err());
    assert_eq!(config.get("Definition", "absent", &none).unwrap(), None);
    // get_ex reads `section/option` names.
    assert_eq!(
        config
            .get_ex("Definition", "lt_x/opt", &none)
            .unwrap()
            .unwrap(),
        "from lt_x"
    );
}

#[test]
fn includes_locals_and_known_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("filter.d")).unwrap();
    let f = d.join("filter.d");
    write(
        &f,
        "common.conf",
        "[INCLUDES]\nafter = common.local\n[DEFAULT]\n_daemon = \\S*\n__prefix = <_daemon>: \n",
    );
    write(
        &f,
        "common.local",
        "[DEFAULT]\n__extra = from common.local\n",
    );
    write(
        &f,
        "x.conf",
        "[INCLUDES]\nbefore = common.conf\nafter = x-after.conf\n[Definition]\n_daemon = xd\nfailregex = ^%(__prefix)sbad <HOST>$\n",
    );
    write(&f, "x-after.conf", "[Definition]\nignoreregex = after\n");
    write(
        &f,
        "x.local",
        "[Definition]\nfailregex = %(known/failregex)s\n            ^local <HOST>$\n",
    );
    let main = f.join("x.conf");
    let files = super::ini::files_for(&main).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "common.conf",
            "common.local",
            "x.conf",
            "x-after.conf",
            "x.local"
        ]
    );
    let config = Config::load(&main).unwrap();
    assert_eq!(
        config.defaults.get("__extra").map(String::as_str),
        Some("from common.local")
    );
    let values = filter_options(&config, &Options::new()).unwrap();
    assert_eq!(
        values.failregex,
        ["^xd:bad <HOST>$", "^local <HOST>$"],
        "known/ keeps the value x.local overrides; <_daemon> is a tag; values are stripped"
    );
    assert_eq!(values.ignoreregex, ["after"]);

    // An include loop is cut, not followed forever.
    write(
        &f,
        "a.conf",
        "[INCLUDES]\nbefore = b.conf\n[Definition]\nfailregex = a <HOST>\n",
    );
    write(
        &f,
        "b.conf",
        "[INCLUDES]\nbefore = a.conf\n[Definition]\nx = 1\n",
    );
    let config = Config::load(&f.join("a.conf")).unwrap();
    assert!(config.sections.contains_key("Definition"));

    let err = Config::load(&f.join("missing.conf")).unwrap_err();
    assert!(matches!(err, Fail2banError::Read { .. }), "{err}");
}

#[test]
fn init_options_tags_and_modes() {
    let file = parse(
        "\
[Definition]
mdre-normal = ^normal <HOST>$
mdre-aggressive = %(mdre-normal)s
                  ^aggressive <HOST>$
failregex = ^always <HOST>$
            <mdre-<mode>>
            <lt_<logtype>/pre>x
mode = normal
logtype = file
maxlines = 2
journalmatch = _SYSTEMD_UNIT=x.service + _COMM=x
               \"_COMM=with space\"
datepattern = {^LN-BEG}
[lt_file]
pre = FILE
[lt_journal]
pre = JOURNAL
[Init]
greeting = hello
failregex2 = <greeting> <HOST>
",
        "t",
    )
    .unwrap();
    let config = Config::from_files(vec![file], "t");
    let values = filter_options(&config, &Options::new()).unwrap();
    assert_eq!(
        values.failregex,
        ["^always <HOST>$", "^normal <HOST>$", "FILEx"]
    );
    assert_eq!(values.maxlines, 2);
    assert_eq!(values.datepattern.as_deref(), Some("{^LN-BEG}"));
    assert_eq!(
        values.journalmatch,
        [
            vec!["_SYSTEMD_UNIT=x.service", "+", "_COMM=x"],
            vec!["_COMM=with space"]
        ]
    );
    let jail = opts(&[("mode", "aggressive"), ("logtype", "journal")]);
    let values = filter_options(&config, &jail).unwrap();
    assert_eq!(
        values.failregex,
        [
            "^always <HOST>$",
            "^normal <HOST>$",
            "^aggressive <HOST>$",
            "JOURNALx"
        ]
    );

    // Tags that each repeat the next one stop at a size bound.
    let mut text = String::from("[Definition]\nfailregex = <t0>\n");
    for i in 0..30 {
        text.push_str(&format!("t{i} = <t{n}><t{n}>\n", n = i + 1));
    }
    let config = Config::from_files(vec![parse(&text, "t").unwrap()], "t");
    let err = filter_options(&config, &Options::new()).unwrap_err();
    assert!(err.to_string().contains("grows beyond"), "{err}");

    // A tag that refers to itself is an error, not a hang.
    let file = parse("[Definition]\nfailregex = <a>\na = <b>\nb = <a>\n", "t").unwrap();
    let config = Config::from_files(vec![file], "t");
    let err = filter_options(&config, &Options::new()).unwrap_err();
    assert!(err.to_string().contains("refers to itself"), "{err}");
}

#[test]
fn shell_words() {
    assert_eq!(
        split_words(r#"a "b c" 'd e' f\ g"#),
        ["a", "b c", "d e", "f g"]
    );
    assert!(split_words("   ").is_empty());
}

#[test]
fn tag_expansion() {
    let host = tags::expand("from <HOST>$", true);
    assert!(host.contains("(?P<ip4>") && host.contains("(?P<ip6>") && host.contains("(?P<dns>"));
    let addr = tags::expand("from <HOST>$", false);
    assert!(!addr.contains("(?P<dns>"), "usedns = no: addresses only");
    assert_eq!(
        tags::expand("<F-USER>\\S+</F-USER> <F-ALT_USER>x</F-ALT_USER>", true),
        r"(?P<user>\S+) (?P<alt_user>x)"
    );
    assert_eq!(tags::expand("<F-ID>x</F-ID>", true), "(?P<fid>x)");
    assert_eq!(
        tags::expand("</F-USER> <unknown> <a b>", true),
        "</F-USER> <unknown> <a b>"
    );
    assert_eq!(
        tags::expand("a<SKIPLINES>b<SKIPLINES>", true),
        r"a\n(?P<skiplines0>(?:(?:.*\n)*?))b\n(?P<skiplines1>(?:(?:.*\n)*?))"
    );
    // Python-only syntax.
    assert_eq!(tags::python_to_pcre(r"a\Z"), r"a\z");
    assert_eq!(
        tags::python_to_pcre(r"\d{,3} x{2,3} [{,]"),
        r"\d{0,3} x{2,3} [{,]"
    );
    assert_eq!(tags::python_to_pcre(r"x((?i)abc)"), r"x(?i:abc)");
    assert_eq!(tags::python_to_pcre(r"x(?:(?i)abc)"), r"x(?i:abc)");
    assert_eq!(tags::python_to_pcre(r"(?i)^abc"), r"(?i)^abc");
    assert_eq!(tags::python_to_pcre(r"[\Z]é\Z"), r"[\Z]é\z");

    let m = BacktrackMatcher::new(
        &tags::expand("^x <HOST> y$", true),
        BacktrackOptions::default(),
    )
    .unwrap();
    for (line, group, text) in [
        ("x 192.0.2.1 y", "ip4", "192.0.2.1"),
        ("x ::ffff:192.0.2.1 y", "ip4", "192.0.2.1"),
        ("x [2001:db8::1] y", "ip6", "2001:db8::1"),
        ("x fe80:: y", "ip6", "fe80::"),
        ("x host-1.example.org y", "dns", "host-1.example.org"),
    ] {
        let Search::Match(groups) = m.search(line) else {
            panic!("{line}");
        };
        assert_eq!(groups.name(group), Some(text), "{line}");
    }
}

#[test]
fn filter_references() {
    let r = FilterRef::parse("/etc/fail2ban/filter.d/sshd.conf").unwrap();
    assert_eq!(r.path, Path::new("/etc/fail2ban/filter.d/sshd.conf"));
    assert!(r.options.is_empty());
    let r = FilterRef::parse(r#"sshd.conf[mode=aggressive, logtype="journal", x='a,b]c', y = z ]"#)
        .unwrap();
    let pairs: Vec<(&str, &str)> = r
        .options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("mode", "aggressive"),
            ("logtype", "journal"),
            ("x", "a,b]c"),
            ("y", "z")
        ]
    );
    for bad in ["x.conf[mode=a", "x.conf[=a]", "x.conf[a=\"b]", "[a=b]"] {
        assert!(FilterRef::parse(bad).is_err(), "{bad}");
    }
    assert!(FilterRef::looks_like("a/b.conf[mode=x]"));
    assert!(FilterRef::looks_like("b.local"));
    assert!(!FilterRef::looks_like("sshd"));
}

fn filter_from(text: &str, jail: &[(&str, &str)]) -> Fail2banFilter {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t.conf", text);
    let jail: Vec<(String, String)> = jail
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Fail2banFilter::load_with(&dir.path().join("t.conf"), &jail, "t.conf").unwrap()
}

#[test]
fn lines_dates_prefregex_and_users() {
    let mut f = filter_from(
        "\
[Definition]
prefregex = ^\\s*\\S+ app\\[\\d+\\]: <F-CONTENT>.+</F-CONTENT>$
failregex = ^login failed for <F-USER>\\S+</F-USER> from <HOST>$
            ^lookup of <F-ALT_USER>\\S+</F-ALT_USER> from <HOST> failed$
ignoreregex = for trusted
journalmatch = _SYSTEMD_UNIT=app.service
",
        &[],
    );
    assert_eq!(f.journal_matches(), ["_SYSTEMD_UNIT=app.service"]);
    assert!(f.engine().starts_with("pcre2"), "{}", f.engine());
    let (outcome, found) =
        f.process("2024-03-01 10:00:00 +0000 srv app[1]: login failed for bob from 192.0.2.7");
    assert_eq!(outcome, LineOutcome::Matched);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].host, FailureHost::Ip(ip("192.0.2.7")));
    assert_eq!(found[0].user.as_deref(), Some("bob"));
    assert_eq!(found[0].time, Some(1_709_287_200));
    assert_eq!(found[0].regex_index, 0);

    let (_, found) =
        f.process("Mar  1 10:00:00 srv app[1]: lookup of eve from ::ffff:198.51.100.2 failed");
    assert_eq!(found[0].host, FailureHost::Ip(ip("198.51.100.2")));
    assert_eq!(found[0].user.as_deref(), Some("eve"), "alt_user fills user");

    let (outcome, found) = f.process("srv app[1]: login failed for trusted from 192.0.2.8");
    assert_eq!((outcome, found.len()), (LineOutcome::Ignored, 0));
    let (outcome, _) = f.process("srv other[1]: login failed for x from 192.0.2.8");
    assert_eq!(outcome, LineOutcome::Missed, "prefregex must match first");

    // A host name is matched but never becomes an address.
    let (outcome, found) = f.process("srv app[1]: login failed for x from evil.example");
    assert_eq!(outcome, LineOutcome::Matched);
    assert_eq!(
        found[0].host,
        FailureHost::Unresolved("evil.example".into())
    );
    let mut out = Vec::new();
    assert_eq!(
        f.feed("srv app[1]: login failed for x from evil.example", &mut out),
        LineOutcome::Matched
    );
    assert!(out.is_empty());
    assert_eq!(f.unresolved(), 2);
}

#[test]
fn multi_line_ids_nofail_and_forget() {
    let mut f = filter_from(
        "\
[Definition]
prefregex = ^<F-MLFID>conn \\d+</F-MLFID>: <F-CONTENT>.+</F-CONTENT>$
failregex = ^connect from <HOST>$
            ^<F-NOFAIL>bad key for <F-USER>\\S+</F-USER></F-NOFAIL>$
            ^too many failures$
            ^<F-MLFFORGET><F-MLFGAINED>accepted</F-MLFGAINED></F-MLFFORGET> for <F-USER>\\S+</F-USER>$
            ^<F-NOFAIL><F-MLFFORGET>closed</F-MLFFORGET></F-NOFAIL>$
datepattern = {NONE}
",
        &[],
    );
    // The address comes first; the failure later, on another line.
    assert!(f.process("conn 1: connect from 192.0.2.1").1.len() <= 1);
    let (outcome, found) = f.process("conn 1: bad key for git");
    assert_eq!((outcome, found.len()), (LineOutcome::Matched, 0), "nofail");
    let (_, found) = f.process("conn 1: too many failures");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].host, FailureHost::Ip(ip("192.0.2.1")));
    assert_eq!(found[0].user.as_deref(), Some("git"));

    // A success forgets the connection: its later close is no failure.
    f.process("conn 2: connect from 192.0.2.2");
    f.process("conn 2: bad key for alice");
    let (_, found) = f.process("conn 2: accepted for alice");
    assert!(found.is_empty());
    let (_, found) = f.process("conn 2: closed");
    assert!(found.is_empty());
    // An unknown connection id has no address: pending, nothing reported.
    let (outcome, found) = f.process("conn 3: too many failures");
    assert_eq!((outcome, found.len()), (LineOutcome::Matched, 0));
}

#[test]
fn maxlines_and_skiplines() {
    let mut f = filter_from(
        "\
[Definition]
failregex = ^start <HOST>$<SKIPLINES>^end$
maxlines = 3
datepattern = {NONE}
",
        &[],
    );
    assert!(f.process("start 192.0.2.9").1.is_empty());
    assert!(f.process("noise").1.is_empty());
    let (_, found) = f.process("end");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].host, FailureHost::Ip(ip("192.0.2.9")));
    // The matched lines left the buffer; only the skipped one stays.
    assert!(f.process("end").1.is_empty());
    // Beyond maxlines the start is forgotten.
    f.process("start 192.0.2.10");
    f.process("a");
    f.process("b");
    assert!(f.process("end").1.is_empty());
}

#[test]
fn failregex_needs_a_failure_id_and_must_compile() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.conf",
        "[Definition]\nfailregex = ^no id here$\n",
    );
    let err = Fail2banFilter::load(&dir.path().join("a.conf").display().to_string()).unwrap_err();
    assert!(
        matches!(err, Fail2banError::NoFailureId { index: 0, .. }),
        "{err}"
    );
    write(
        dir.path(),
        "b.conf",
        "[Definition]\nfailregex = ^ok <HOST>$\n  ^(broken <HOST>$\n",
    );
    let err = Fail2banFilter::load(&dir.path().join("b.conf").display().to_string()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("failregex[1] does not compile"), "{text}");
    assert!(text.contains("^(broken <HOST>$"), "{text}");
    write(dir.path(), "c.conf", "[Definition]\nfailregex =\n");
    let err = Fail2banFilter::load(&dir.path().join("c.conf").display().to_string()).unwrap_err();
    assert!(matches!(err, Fail2banError::NoFailRegex { .. }), "{err}");
}

/// A filter with a catastrophic pattern and a hostile line: the search
/// stops at the match limit, the line counts as missed, nothing panics,
/// and later lines still match.
#[test]
fn hostile_line_is_bounded() {
    let mut f = filter_from(
        "[Definition]\nfailregex = ^(?:\\w+\\s?)*from <HOST>$\ndatepattern = {NONE}\n",
        &[],
    );
    let hostile = format!("{} from", "ab ".repeat(3000));
    let started = std::time::Instant::now();
    let (outcome, found) = f.process(&hostile);
    assert_eq!((outcome, found.len()), (LineOutcome::Missed, 0));
    assert!(f.limit_hits() >= 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (_, found) = f.process("word word from 192.0.2.3");
    assert_eq!(found.len(), 1);
    // Huge and odd input never panics.
    for line in ["", "\u{0}", "é".repeat(10_000).as_str(), "<HOST>"] {
        let _ = f.process(line);
    }
}

#[test]
fn load_counts() {
    let f = filter_from("[Definition]\nfailregex = a <HOST>\n  b <HOST>\n", &[]);
    assert_eq!(f.regex_count(), 2);
    assert_eq!(f.failregex_count(), 2);
    assert!(
        f.description().contains("fail2ban filter t"),
        "{}",
        f.description()
    );
}
