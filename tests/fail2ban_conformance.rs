//! Conformance with fail2ban's own filter tests: every filter in the
//! installed fail2ban package's filter.d runs over its sample log (shipped
//! in the package's tests, read in place: they are GPL and never copied
//! here), the way fail2ban's sample test runs them, and every
//! `# failJSON:` annotation is compared with what orch found: match or no
//! match, and for matches the host and the user (the agreement figure);
//! annotated times are compared too and reported apart.
//!
//! `cargo test --test fail2ban_conformance -- --nocapture` prints the
//! agreement per filter. Needs Debian's `fail2ban` package (CI installs
//! it); without it the test fails and says so.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use orch::jail::fail2ban::{Fail2banFilter, Failure, FailureHost};
use orch::jail::line_filter::LineOutcome;
use serde_json::Value;

/// Where Debian's package puts fail2ban's tests.
const PACKAGE_TESTS: &str = "/usr/lib/python3/dist-packages/fail2ban/tests";
/// The packaged filters.
const FILTER_DIR: &str = "/etc/fail2ban/filter.d";
/// fail2ban's fixed test clock: 2005-08-14 12:00:00 CEST.
const TEST_NOW: i64 = 1_124_013_600;
/// The agreement the test requires.
const REQUIRED: f64 = 0.95;

/// fail2ban's tests run in Central European time (as a POSIX rule, so no
/// tzdata is needed); the annotated times are local times there. Every test
/// of this binary calls this first, so the variable is set once, before
/// any of them reads the time zone.
fn set_time_zone() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: the Once runs this before any test thread of this binary
    // goes past its first line, so nothing reads the environment meanwhile.
    ONCE.call_once(|| unsafe { std::env::set_var("TZ", "CET-01CEST-02,M3.5.0,M10.5.0") });
}

fn package_dirs() -> (PathBuf, PathBuf, PathBuf) {
    let tests = PathBuf::from(PACKAGE_TESTS);
    let logs = tests.join("files/logs");
    let filters = PathBuf::from(FILTER_DIR);
    assert!(
        logs.is_dir() && filters.is_dir(),
        "fail2ban's filters ({FILTER_DIR}) and sample logs ({}) are missing: \
         install Debian's `fail2ban` package (`apt-get install fail2ban`; .ci/run does)",
        logs.display()
    );
    (filters, tests.join("config/filter.d"), logs)
}

/// fail2ban's own test filters (`zzz-*.conf`) include common.conf by a
/// path relative to fail2ban's source tree
/// (`../../../../../../../config/filter.d/common.conf`), which Debian's
/// layout does not have. Rebuild that layout with symbolic links in a
/// temporary directory (nothing is copied) and return the directory the
/// test filters appear in.
fn test_filter_layout(test_filter_dir: &Path, filter_dir: &Path, tmp: &Path) -> PathBuf {
    use std::os::unix::fs::symlink;
    let config = tmp.join("config/filter.d");
    let filters = tmp.join("a/b/c/d/e/f/filter.d");
    std::fs::create_dir_all(&config).expect("temporary config dir");
    std::fs::create_dir_all(&filters).expect("temporary filter dir");
    symlink(filter_dir.join("common.conf"), config.join("common.conf"))
        .expect("symlink common.conf");
    for entry in std::fs::read_dir(test_filter_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("zzz-") {
            symlink(entry.path(), filters.join(&name)).expect("symlink test filter");
        }
    }
    filters
}

/// The filters fail2ban's sample test runs: filter.d/*.conf except the
/// `*common.conf` include files, and its own test filters `zzz-*.conf`.
fn filters_to_test(filter_dir: &Path, test_filter_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let list = |dir: &Path, keep: &dyn Fn(&str) -> bool, found: &mut Vec<(String, PathBuf)>| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| keep(n))
            .collect();
        names.sort();
        for name in names {
            let stem = name.trim_end_matches(".conf").to_string();
            found.push((stem, dir.join(&name)));
        }
    };
    list(
        filter_dir,
        &|n| n.ends_with(".conf") && !n.ends_with("common.conf"),
        &mut found,
    );
    list(
        test_filter_dir,
        &|n| n.starts_with("zzz-") && n.ends_with(".conf"),
        &mut found,
    );
    found
}

/// Options of one filter run; `test.*` keys steer the test only.
type Opts = BTreeMap<String, String>;

fn to_opts(value: &Value) -> Opts {
    value
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The tiny expressions the samples use in `test.condition` and
/// `constraint`: `name == 'x'`, `opts.get('k') != 'v'`.
fn condition(expr: &str, name: &str, opts: &Opts) -> bool {
    let (left, right, equal) = if let Some((l, r)) = expr.split_once("==") {
        (l.trim(), r.trim(), true)
    } else if let Some((l, r)) = expr.split_once("!=") {
        (l.trim(), r.trim(), false)
    } else {
        panic!("unsupported condition {expr:?}");
    };
    let literal = right.trim_matches(['\'', '"']);
    let value = if left == "name" {
        Some(name.to_string())
    } else if let Some(key) = left
        .strip_prefix("opts.get(")
        .and_then(|k| k.strip_suffix(')'))
    {
        opts.get(key.trim_matches(['\'', '"'])).cloned()
    } else {
        panic!("unsupported condition {expr:?}");
    };
    (value.as_deref() == Some(literal)) == equal
}

#[derive(Default, Debug, Clone)]
struct Tally {
    /// `# failJSON:` lines read (each is checked once per option set).
    annotation_lines: u64,
    annotations: u64,
    agree: u64,
    /// Annotations that expect a match, and those orch matched too.
    expected_matches: u64,
    agreed_matches: u64,
    /// Lines without an annotation (fail2ban expects no match) that matched.
    unannotated: u64,
    unannotated_matched: u64,
    /// Expected hosts that are names: orch reports them unresolved.
    dns_hosts: u64,
    limit_hits: u64,
    disagreements: Vec<String>,
    /// Matches whose annotation gives a time, and those orch agrees on.
    time_checks: u64,
    time_agree: u64,
    time_disagreements: Vec<String>,
}

/// One filter instance: fail2ban caches them per option combination, so
/// state (multi-line ids, buffers) carries over between sample files.
struct Run {
    filter: Fail2banFilter,
    opts: Opts,
}

fn describe(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| format!("host={} user={:?} re={}", f.raw_host, f.user, f.regex_index))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs one filter over its sample log(s) as fail2ban's sample test does.
fn run_filter(name: &str, path: &Path, logs: &Path, tally: &mut Tally) -> Result<(), String> {
    let mut cache: HashMap<String, usize> = HashMap::new();
    let mut runs: Vec<Run> = Vec::new();
    let mut load = |opts: &Opts, runs: &mut Vec<Run>| -> Result<usize, String> {
        let filter_opts: Vec<(String, String)> = opts
            .iter()
            .filter(|(k, _)| !k.starts_with("test."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = opts
            .get("test.filter-name")
            .cloned()
            .unwrap_or_else(|| format!("{filter_opts:?}"));
        if let Some(&index) = cache.get(&key) {
            return Ok(index);
        }
        let origin = format!("{}{key}", path.display());
        let mut filter = Fail2banFilter::load_with(path, &filter_opts, &origin)
            .map_err(|e| format!("{name}: does not load with {filter_opts:?}: {e}"))?;
        filter.set_now(Some(TEST_NOW));
        runs.push(Run {
            filter,
            opts: opts.clone(),
        });
        cache.insert(key, runs.len() - 1);
        Ok(runs.len() - 1)
    };

    let mut files = vec![name.to_string()];
    let mut common: Opts = Opts::new();
    let mut active: Vec<usize> = Vec::new();
    let mut ignore_block = false;
    let mut i = 0;
    while i < files.len() {
        let file = logs.join(&files[i]);
        i += 1;
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.split_inclusive('\n').enumerate();
        while let Some((number, raw)) = lines.next() {
            let mut line = raw;
            let mut expected: Option<Value> = None;
            let directive = line
                .trim_start_matches('#')
                .strip_prefix(' ')
                .or_else(|| Some(line.trim_start_matches('#')))
                .filter(|_| line.starts_with('#'))
                .and_then(|rest| {
                    ["failJSON", "fileOptions", "filterOptions", "addFILE"]
                        .iter()
                        .find_map(|d| rest.strip_prefix(d)?.strip_prefix(':').map(|v| (*d, v)))
                });
            if let Some((kind, json)) = directive {
                let value: Value = serde_json::from_str(json.trim_end())
                    .map_err(|e| format!("{}:{}: {e}", file.display(), number + 1))?;
                match kind {
                    "fileOptions" => {
                        common = to_opts(&value);
                        continue;
                    }
                    "filterOptions" => {
                        active.clear();
                        ignore_block = false;
                        let list = match &value {
                            Value::Array(items) => items.clone(),
                            other => vec![other.clone()],
                        };
                        for item in list {
                            let mut opts = common.clone();
                            opts.extend(to_opts(&item));
                            if let Some(cond) = opts.get("test.condition") {
                                ignore_block = !condition(cond, name, &opts);
                            }
                            if !ignore_block {
                                active.push(load(&opts, &mut runs)?);
                            }
                        }
                        continue;
                    }
                    "addFILE" => {
                        files.push(value.as_str().unwrap_or_default().to_string());
                        continue;
                    }
                    _ => {
                        if !ignore_block {
                            tally.annotation_lines += 1;
                        }
                        expected = Some(value);
                        match lines.next() {
                            Some((_, next)) => line = next,
                            None => break,
                        }
                    }
                }
            } else if ignore_block || line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if ignore_block {
                continue;
            }
            if active.is_empty() {
                active.push(load(&Opts::new(), &mut runs)?);
            }
            let line = line.trim_end_matches(['\r', '\n']);
            for &index in &active {
                let run = &mut runs[index];
                if let Some(c) = expected
                    .as_ref()
                    .and_then(|e| e.get("constraint"))
                    .and_then(Value::as_str)
                    && !condition(c, name, &run.opts)
                {
                    continue;
                }
                let before = run.filter.limit_hits();
                let (_, failures) =
                    if run.opts.get("logtype").map(String::as_str) == Some("journal") {
                        let prefixed = format!(
                            "{}{line}",
                            run.opts.get("test.prefix-line").map_or("", String::as_str)
                        );
                        run.filter.process_with_time(&prefixed, Some(TEST_NOW))
                    } else {
                        let (outcome, failures) = run.filter.process(line);
                        debug_assert!(outcome != LineOutcome::Ignored || failures.is_empty());
                        (outcome, failures)
                    };
                tally.limit_hits += run.filter.limit_hits() - before;
                let Some(expected) = &expected else {
                    tally.unannotated += 1;
                    if !failures.is_empty() {
                        tally.unannotated_matched += 1;
                    }
                    continue;
                };
                tally.annotations += 1;
                let want_match = expected
                    .get("match")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let verdict = check(expected, want_match, &failures, tally);
                tally.expected_matches += u64::from(want_match);
                if verdict.is_ok()
                    && let (Some(found), Some(want)) = (
                        failures.first(),
                        expected.get("time").and_then(Value::as_str),
                    )
                {
                    tally.time_checks += 1;
                    let want_unix = annotation_time(want);
                    if found.time == want_unix {
                        tally.time_agree += 1;
                    } else {
                        tally.time_disagreements.push(format!(
                            "{name}: {}:{}: time {:?}, expected {want} ({want_unix:?})\n      line: {line}",
                            files[i - 1],
                            number + 2,
                            found.time
                        ));
                    }
                }
                match verdict {
                    Ok(()) => {
                        tally.agree += 1;
                        tally.agreed_matches += u64::from(want_match);
                    }
                    Err(why) => tally.disagreements.push(format!(
                        "{name}: {}:{} {:?}: {why}\n      line: {line}\n      got: {}",
                        files[i - 1],
                        number + 2,
                        run.opts,
                        describe(&failures)
                    )),
                }
            }
        }
    }
    Ok(())
}

/// An annotation's local time (`2005-07-05T18:22:44[.123]`) as Unix
/// seconds, in the test's time zone.
fn annotation_time(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let whole = time.split('.').next()?;
    let mut t = whole.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    orch::jail::fail2ban::dates::local_to_unix(y, mo, day, h, mi, sec)
}

fn check(
    expected: &Value,
    want_match: bool,
    failures: &[Failure],
    tally: &mut Tally,
) -> Result<(), String> {
    let Some(found) = failures.first() else {
        return if want_match {
            Err("expected a match, found none".to_string())
        } else {
            Ok(())
        };
    };
    if !want_match {
        return Err("matched, expected no match".to_string());
    }
    if let Some(host) = expected.get("host").and_then(Value::as_str) {
        if host.parse::<std::net::IpAddr>().is_err() {
            tally.dns_hosts += 1;
        }
        if found.raw_host != host {
            return Err(format!("host {:?}, expected {host:?}", found.raw_host));
        }
        if let FailureHost::Ip(ip) = &found.host
            && host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|h| h.to_canonical() != *ip)
        {
            return Err(format!("address {ip}, expected {host}"));
        }
    }
    if let Some(user) = expected.get("user").and_then(Value::as_str)
        && found.user.as_deref() != Some(user)
    {
        return Err(format!("user {:?}, expected {user:?}", found.user));
    }
    Ok(())
}

#[test]
fn fail2ban_filters_agree_with_their_sample_annotations() {
    set_time_zone();
    let (filter_dir, test_filter_dir, logs) = package_dirs();
    let tmp = tempfile::tempdir().expect("tempdir");
    let test_filter_dir = test_filter_layout(&test_filter_dir, &filter_dir, tmp.path());
    let filters = filters_to_test(&filter_dir, &test_filter_dir);
    assert!(filters.len() > 50, "only {} filters found", filters.len());

    let mut total = Tally::default();
    let mut load_errors = Vec::new();
    let mut no_samples = Vec::new();
    let mut rows = Vec::new();
    for (name, path) in &filters {
        if let Err(e) = Fail2banFilter::load_with(path, &[], &path.display().to_string()) {
            load_errors.push(format!("{name}: {e}"));
            continue;
        }
        if !logs.join(name).is_file() {
            no_samples.push(name.clone());
            continue;
        }
        let mut tally = Tally::default();
        if let Err(e) = run_filter(name, path, &logs, &mut tally) {
            load_errors.push(e);
            continue;
        }
        rows.push((name.clone(), tally.clone()));
        total.annotations += tally.annotations;
        total.annotation_lines += tally.annotation_lines;
        total.agree += tally.agree;
        total.expected_matches += tally.expected_matches;
        total.agreed_matches += tally.agreed_matches;
        total.unannotated += tally.unannotated;
        total.unannotated_matched += tally.unannotated_matched;
        total.dns_hosts += tally.dns_hosts;
        total.limit_hits += tally.limit_hits;
        total.disagreements.extend(tally.disagreements);
        total.time_checks += tally.time_checks;
        total.time_agree += tally.time_agree;
        total.time_disagreements.extend(tally.time_disagreements);
    }

    println!(
        "{:<28} {:>6} {:>6} {:>8}",
        "filter", "agree", "checks", "percent"
    );
    for (name, t) in &rows {
        let percent = if t.annotations == 0 {
            100.0
        } else {
            100.0 * t.agree as f64 / t.annotations as f64
        };
        println!(
            "{name:<28} {:>6} {:>6} {percent:>7.1}%",
            t.agree, t.annotations
        );
    }
    let ratio = total.agree as f64 / total.annotations.max(1) as f64;
    println!(
        "\nTOTAL: {} of {} checks agree ({:.2}%) over {} filters \
         ({} failJSON annotations, each checked once per filter option set)",
        total.agree,
        total.annotations,
        100.0 * ratio,
        rows.len(),
        total.annotation_lines
    );
    println!(
        "annotations expecting a match: {}, of which orch agrees on {} (match, host, user)",
        total.expected_matches, total.agreed_matches
    );
    println!(
        "unannotated lines: {} (of which {} matched; fail2ban expects none to)",
        total.unannotated, total.unannotated_matched
    );
    println!(
        "expected hosts that are names (agreed as text; orch reports them unresolved and never bans them): {}",
        total.dns_hosts
    );
    println!("searches stopped by the match limit: {}", total.limit_hits);
    println!(
        "times (checked apart from the agreement): {} of {} annotated times agree",
        total.time_agree, total.time_checks
    );
    for d in &total.time_disagreements {
        println!("  {d}");
    }
    if !no_samples.is_empty() {
        println!("filters without a sample log: {}", no_samples.join(", "));
    }
    println!("\ndisagreements ({}):", total.disagreements.len());
    for d in &total.disagreements {
        println!("  {d}");
    }
    assert!(
        load_errors.is_empty(),
        "filters that do not load:\n{}",
        load_errors.join("\n")
    );
    let time_ratio = total.time_agree as f64 / total.time_checks.max(1) as f64;
    assert!(
        time_ratio >= REQUIRED,
        "time agreement {:.2}% is below {:.0}%",
        100.0 * time_ratio,
        100.0 * REQUIRED
    );
    assert!(
        ratio >= REQUIRED,
        "agreement {:.2}% is below {:.0}%",
        100.0 * ratio,
        100.0 * REQUIRED
    );
}

/// Every file in filter.d loads as INI with its includes (the include-only
/// `*common.conf` files have no failregex, so only their reading is checked).
#[test]
fn every_filter_file_reads() {
    set_time_zone();
    let (filter_dir, _, _) = package_dirs();
    let mut failures = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&filter_dir).expect("filter.d").flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        count += 1;
        let is_include = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("common.conf"));
        let result = if is_include {
            orch::jail::fail2ban::ini::Config::load(&path).map(|_| ())
        } else {
            Fail2banFilter::load_with(&path, &[], &path.display().to_string()).map(|_| ())
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    println!("{count} filter files read");
    assert!(
        count > 50,
        "only {count} filter files in {}",
        filter_dir.display()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Hostile lines against every packaged filter (all option sets would be
/// more, the default set is the one most jails use): long runs of the
/// characters fail2ban patterns repeat (`\S+`, `.*`, address characters,
/// brackets), with and without a syslog prefix. Each line must be handled
/// quickly (the match limit bounds every search) and nothing may panic.
#[test]
fn hostile_lines_stay_bounded_in_every_filter() {
    set_time_zone();
    let (filter_dir, _, _) = package_dirs();
    let mut hostile: Vec<String> = Vec::new();
    for body in [
        "a".repeat(20_000),
        format!("{}x", " ".repeat(20_000)),
        "from ".repeat(4000),
        format!("user {} from 192.0.2.1 port 22 ssh2", "x ".repeat(5000)),
        format!(
            "Failed password for {}from 192.0.2.1 port 22 ssh2",
            "invalid user ".repeat(2000)
        ),
        "[".repeat(5000),
        "1.".repeat(5000),
        format!("{}1", ":".repeat(5000)),
        format!("{}]", "[a=\"b\" ".repeat(3000)),
        "é".repeat(10_000),
    ] {
        hostile.push(format!("Nov 25 10:00:00 host sshd[123]: {body}"));
        hostile.push(body);
    }
    let mut slowest = (std::time::Duration::ZERO, String::new());
    let mut count = 0;
    for entry in std::fs::read_dir(&filter_dir).expect("filter.d").flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".conf") || name.ends_with("common.conf") {
            continue;
        }
        let mut filter = Fail2banFilter::load_with(&path, &[], &name).expect("filter loads");
        for line in &hostile {
            let started = std::time::Instant::now();
            let _ = filter.process(line);
            let took = started.elapsed();
            count += 1;
            if took > slowest.0 {
                slowest = (took, format!("{name}: {:.60}...", line));
            }
        }
    }
    println!(
        "{count} hostile lines over the filters; slowest {:?} ({})",
        slowest.0, slowest.1
    );
    assert!(
        slowest.0 < std::time::Duration::from_millis(500),
        "a hostile line took {:?}: {}",
        slowest.0,
        slowest.1
    );
}
