//! The metrics as Prometheus text (exposition format 0.0.4), from a
//! [`Snapshot`] of plain numbers.
//!
//! Pure: no I/O, no clocks, no locks; whatever the snapshot holds is
//! written once, in a fixed order. Label values come from outside (ban
//! sources, jail and hook names, other hosts' names, causes), so every one
//! is escaped and cut to [`LABEL_MAX_BYTES`]; nothing else here may put
//! outside text into the output.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

use crate::daemon::read_view::RestoreTally;
use crate::firewall::probe::{RuleCounter, RuleVerdict};

/// The media type of the output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Longest label value written, in bytes (ban sources are cut to 256 when
/// stored; the rest is shorter).
const LABEL_MAX_BYTES: usize = 256;
/// The chain holding orch's allow and ban rules.
const FILTER_CHAIN: &str = "filter";

/// Everything one scrape shows, read beforehand from the daemon's
/// published views and counters.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: String,
    /// Active (stored) bans per source: jail name, "manual", "fleet:HOST".
    pub bans_by_source: BTreeMap<String, u64>,
    pub bans_added: u64,
    pub bans_removed: u64,
    /// The counters of orch's rules; `None` when the kernel could not be
    /// asked.
    pub rules: Option<Vec<RuleCounter>>,
    pub restores: RestoreTally,
    /// The last full re-apply: (when, Unix seconds; how long, ms).
    pub last_restore: Option<(u64, u64)>,
    /// Runs of the hook directory.
    pub hook_batches: u64,
    /// Per hook: (runs, failures).
    pub hooks: BTreeMap<String, (u64, u64)>,
    pub jails: Vec<JailSample>,
    /// `None` without a fleet.
    pub fleet: Option<FleetSample>,
    /// Store files and their sizes.
    pub store_bytes: Vec<(String, u64)>,
    /// The daemon's resident memory; `None` when unknown.
    pub rss_bytes: Option<u64>,
}

/// One jail's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JailSample {
    pub name: String,
    pub lines: u64,
    pub matches: u64,
    pub tracked: u64,
    /// Seconds behind the log; `None` when not known (recidive).
    pub lag_seconds: Option<f64>,
}

/// The fleet connection's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetSample {
    pub connected: bool,
    /// Changes of this host's shared bans not yet published.
    pub outbox: u64,
    /// When the last change from another host arrived (Unix seconds).
    pub last_remote_change: Option<u64>,
    /// Other hosts' bans refused here: origin -> reason -> count.
    pub refused: BTreeMap<String, BTreeMap<String, u64>>,
    pub skipped: u64,
}

/// The text for `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = Exposition::default();
    let s = snapshot;
    out.family(
        "orch_build_info",
        "gauge",
        "orch's version, as a label; always 1.",
    );
    out.sample("orch_build_info", &[("version", &s.version)], 1);

    out.family(
        "orch_bans_active",
        "gauge",
        "Active bans by source: a jail's name, manual, or fleet:HOST (kind jail, manual or fleet).",
    );
    for (source, count) in &s.bans_by_source {
        let labels = [("kind", source_kind(source)), ("source", source.as_str())];
        out.sample("orch_bans_active", &labels, count);
    }
    out.counter(
        "orch_bans_added",
        "Networks newly banned since the daemon started.",
        s.bans_added,
    );
    out.counter(
        "orch_bans_removed",
        "Bans removed since the daemon started (unbanned or expired).",
        s.bans_removed,
    );

    render_firewall(&mut out, s);

    out.counter(
        "orch_hook_batches",
        "Runs of the hook directory (each runs every hook once).",
        s.hook_batches,
    );
    out.family("orch_hook_runs_total", "counter", "Runs of each hook.");
    for (hook, (runs, _)) in &s.hooks {
        out.sample("orch_hook_runs_total", &[("hook", hook)], runs);
    }
    out.family(
        "orch_hook_failures_total",
        "counter",
        "Failed runs of each hook (non-zero exit, signal, timeout, could not start).",
    );
    for (hook, (_, failures)) in &s.hooks {
        out.sample("orch_hook_failures_total", &[("hook", hook)], failures);
    }

    render_jails(&mut out, &s.jails);
    if let Some(fleet) = &s.fleet {
        render_fleet(&mut out, fleet);
    }

    out.family("orch_store_bytes", "gauge", "Size of each ban store file.");
    for (file, bytes) in &s.store_bytes {
        out.sample("orch_store_bytes", &[("file", file)], bytes);
    }
    if let Some(rss) = s.rss_bytes {
        out.family(
            "orch_resident_memory_bytes",
            "gauge",
            "The daemon's resident memory.",
        );
        out.sample("orch_resident_memory_bytes", &[], rss);
    }
    out.text
}

/// Dropped packets from the rule counters, and the table's re-applies.
fn render_firewall(out: &mut Exposition, s: &Snapshot) {
    out.family(
        "orch_firewall_counters_up",
        "gauge",
        "Whether the counters of orch's nftables rules could be read (1) or not (0).",
    );
    out.sample(
        "orch_firewall_counters_up",
        &[],
        u8::from(s.rules.is_some()),
    );
    let mut blocked: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for rule in s.rules.iter().flatten() {
        let bans = matches!(rule.verdict, RuleVerdict::Drop | RuleVerdict::Reject);
        if bans && rule.chain == FILTER_CHAIN {
            let set = rule.set.as_deref().unwrap_or("");
            let (packets, bytes) = blocked.entry(set).or_default();
            *packets = packets.saturating_add(rule.packets);
            *bytes = bytes.saturating_add(rule.bytes);
        }
    }
    for (unit, pick) in [("packets", 0), ("bytes", 1)] {
        let name = format!("orch_dropped_{unit}_total");
        let help = format!(
            "The {unit} from banned addresses that orch's rules dropped or rejected, by set; \
             back to zero whenever the whole table is re-applied."
        );
        out.family(&name, "counter", &help);
        for (set, counts) in &blocked {
            let value = if pick == 0 { counts.0 } else { counts.1 };
            out.sample(&name, &[("set", set)], value);
        }
    }
    out.family(
        "orch_firewall_restores_total",
        "counter",
        "Full re-applies of orch's table, by cause.",
    );
    for (cause, (count, _)) in &s.restores.by_cause {
        out.sample("orch_firewall_restores_total", &[("cause", cause)], count);
    }
    out.family(
        "orch_firewall_restore_seconds_total",
        "counter",
        "Time spent re-applying orch's table, by cause.",
    );
    for (cause, (_, ms)) in &s.restores.by_cause {
        let seconds = Millis(*ms);
        out.sample(
            "orch_firewall_restore_seconds_total",
            &[("cause", cause)],
            seconds,
        );
    }
    if let Some((at, ms)) = s.last_restore {
        out.family(
            "orch_firewall_last_restore_timestamp_seconds",
            "gauge",
            "When orch's table was last re-applied (Unix time).",
        );
        out.sample("orch_firewall_last_restore_timestamp_seconds", &[], at);
        out.family(
            "orch_firewall_last_restore_duration_seconds",
            "gauge",
            "How long the last full re-apply of orch's table took.",
        );
        out.sample(
            "orch_firewall_last_restore_duration_seconds",
            &[],
            Millis(ms),
        );
    }
}

/// One per-jail family: name, type, help, and the value of a jail (none:
/// no sample).
type JailFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&JailSample) -> Option<Number>,
);

fn render_jails(out: &mut Exposition, jails: &[JailSample]) {
    let families: [JailFamily; 4] = [
        (
            "orch_jail_lines_total",
            "counter",
            "Log lines each jail read since it started.",
            |jail| Some(Number::Int(jail.lines)),
        ),
        (
            "orch_jail_matches_total",
            "counter",
            "Lines each jail's filter matched as failures since it started.",
            |jail| Some(Number::Int(jail.matches)),
        ),
        (
            "orch_jail_tracked_addresses",
            "gauge",
            "Addresses each jail is counting failures of.",
            |jail| Some(Number::Int(jail.tracked)),
        ),
        (
            "orch_jail_lag_seconds",
            "gauge",
            "How far each jail is behind its log (absent when not known).",
            |jail| jail.lag_seconds.map(Number::Float),
        ),
    ];
    for (name, kind, help, value) in families {
        out.family(name, kind, help);
        for jail in jails {
            if let Some(value) = value(jail) {
                out.sample(name, &[("jail", &jail.name)], value);
            }
        }
    }
}

fn render_fleet(out: &mut Exposition, fleet: &FleetSample) {
    out.family(
        "orch_fleet_connected",
        "gauge",
        "Whether the fleet connection is up and caught up (1) or not (0).",
    );
    out.sample("orch_fleet_connected", &[], u8::from(fleet.connected));
    out.family(
        "orch_fleet_outbox_pending",
        "gauge",
        "Changes to this host's shared bans not yet published to the fleet.",
    );
    out.sample("orch_fleet_outbox_pending", &[], fleet.outbox);
    if let Some(at) = fleet.last_remote_change {
        out.family(
            "orch_fleet_last_remote_change_timestamp_seconds",
            "gauge",
            "When the last change from another host arrived (Unix time).",
        );
        out.sample("orch_fleet_last_remote_change_timestamp_seconds", &[], at);
    }
    out.family(
        "orch_fleet_refusals_total",
        "counter",
        "Other hosts' bans not applied here, by origin host and reason.",
    );
    for (origin, reasons) in &fleet.refused {
        for (reason, count) in reasons {
            let labels = [("origin", origin.as_str()), ("reason", reason.as_str())];
            out.sample("orch_fleet_refusals_total", &labels, count);
        }
    }
    out.counter(
        "orch_fleet_skipped_entries",
        "Malformed fleet bucket entries skipped.",
        fleet.skipped,
    );
}

/// "fleet", "manual" or "jail", from a ban's source.
fn source_kind(source: &str) -> &'static str {
    if source.starts_with(crate::fleet::remote_change::FLEET_SOURCE_PREFIX) {
        "fleet"
    } else if source == "manual" {
        "manual"
    } else {
        "jail"
    }
}

/// Milliseconds, written as seconds.
struct Millis(u64);

impl Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// A sample value: a count or a measurement.
enum Number {
    Int(u64),
    Float(f64),
}

impl Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Number::Int(n) => write!(f, "{n}"),
            Number::Float(x) if x.is_finite() => write!(f, "{x}"),
            Number::Float(x) if x.is_nan() => f.write_str("NaN"),
            Number::Float(x) => f.write_str(if *x > 0.0 { "+Inf" } else { "-Inf" }),
        }
    }
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of one family (names and help texts are
    /// orch's own).
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A family of one unlabelled counter, `{name}_total`.
    fn counter(&mut self, stem: &str, help: &str, value: u64) {
        let name = format!("{stem}_total");
        self.family(&name, "counter", help);
        self.sample(&name, &[], value);
    }

    /// One sample line; label values are escaped.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_label_value(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// Appends `value`, cut to [`LABEL_MAX_BYTES`], with `\`, `"` and line
/// feeds escaped as the format requires; other control characters become
/// `?` so that no reader's line handling can be confused.
fn escape_label_value(out: &mut String, value: &str) {
    for c in crate::quote::cut(value, LABEL_MAX_BYTES).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(set: &str, verdict: RuleVerdict, packets: u64) -> RuleCounter {
        RuleCounter {
            chain: FILTER_CHAIN.into(),
            set: Some(set.into()),
            verdict,
            packets,
            bytes: packets * 60,
        }
    }

    /// The value of the sample line that starts with `series`.
    fn value_of<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn hostile_label_values_are_escaped_and_cut() {
        let hostile = "evil\"} 1\norch_bans_added_total 999\n\\x\r";
        let mut snapshot = Snapshot::default();
        snapshot
            .bans_by_source
            .insert(format!("fleet:{hostile}"), 3);
        snapshot.bans_by_source.insert("a".repeat(1000), 1);
        snapshot.hooks.insert(hostile.into(), (2, 1));
        let text = render(&snapshot);
        assert_eq!(
            value_of(
                &text,
                r#"orch_bans_active{kind="fleet",source="fleet:evil\"} 1\norch_bans_added_total 999\n\\x?"}"#
            ),
            Some("3"),
            "{text}"
        );
        assert_eq!(
            value_of(
                &text,
                r#"orch_hook_failures_total{hook="evil\"} 1\norch_bans_added_total 999\n\\x?"}"#
            ),
            Some("1")
        );
        // The forged sample is not a line of its own: the real one is 0.
        let added: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("orch_bans_added_total"))
            .collect();
        assert_eq!(added, ["orch_bans_added_total 0"]);
        let long = format!(
            r#"orch_bans_active{{kind="jail",source="{}"}}"#,
            "a".repeat(256)
        );
        assert_eq!(value_of(&text, &long), Some("1"), "cut to 256 bytes");
        let mut cut = String::new();
        escape_label_value(&mut cut, &format!("{}é", "a".repeat(255)));
        assert_eq!(cut.len(), 255, "never cut inside a character");
    }

    /// A snapshot with something in every part.
    fn full_snapshot() -> Snapshot {
        let mut snapshot = Snapshot {
            version: "1.2.3".into(),
            bans_added: 7,
            rules: Some(vec![
                rule("ban4", RuleVerdict::Drop, 2),
                rule("portban4", RuleVerdict::Drop, 3),
                rule("ban4", RuleVerdict::Reject, 1),
                rule("allow4", RuleVerdict::Accept, 50),
            ]),
            last_restore: Some((1_700_000_000, 1234)),
            jails: vec![
                JailSample {
                    name: "sshd".into(),
                    lines: 10,
                    matches: 4,
                    tracked: 2,
                    lag_seconds: Some(0.5),
                },
                JailSample {
                    name: "recidive".into(),
                    ..JailSample::default()
                },
            ],
            fleet: Some(FleetSample {
                connected: true,
                last_remote_change: Some(1_700_000_100),
                refused: BTreeMap::from([(
                    "web2".to_string(),
                    BTreeMap::from([("prefix".to_string(), 4)]),
                )]),
                ..FleetSample::default()
            }),
            store_bytes: vec![("bans.snap".into(), 4096)],
            rss_bytes: Some(1 << 20),
            ..Snapshot::default()
        };
        snapshot
            .restores
            .by_cause
            .insert("daemon start".into(), (1, 1234));
        snapshot
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(&full_snapshot());
        let mut declared: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("help text");
                assert!(!help.is_empty() && name.starts_with("orch_"), "{line}");
                declared.push((name.to_string(), String::new()));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                let last = declared.last_mut().expect("HELP before TYPE");
                assert_eq!(last.0, name, "TYPE follows its HELP");
                assert!(kind == "counter" || kind == "gauge", "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                last.1 = kind.to_string();
            } else {
                let name = line.split(['{', ' ']).next().expect("name");
                let current = declared.last().expect("a family before samples");
                assert_eq!(current.0, name, "{line} belongs to the family above it");
            }
        }
        let names: Vec<&str> = declared.iter().map(|(name, _)| name.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "each family once: {names:?}");
        let expected = [
            (r#"orch_dropped_packets_total{set="ban4"}"#, Some("3")),
            (r#"orch_dropped_bytes_total{set="portban4"}"#, Some("180")),
            (r#"orch_dropped_packets_total{set="allow4"}"#, None),
            ("orch_firewall_last_restore_duration_seconds", Some("1.234")),
            (
                r#"orch_firewall_restore_seconds_total{cause="daemon start"}"#,
                Some("1.234"),
            ),
            (r#"orch_jail_lag_seconds{jail="sshd"}"#, Some("0.5")),
            (r#"orch_jail_lag_seconds{jail="recidive"}"#, None),
            (
                r#"orch_fleet_refusals_total{origin="web2",reason="prefix"}"#,
                Some("4"),
            ),
            (r#"orch_build_info{version="1.2.3"}"#, Some("1")),
            ("orch_firewall_counters_up", Some("1")),
        ];
        for (series, value) in expected {
            assert_eq!(value_of(&text, series), value, "{series}");
        }
        let unreadable = render(&Snapshot::default());
        assert_eq!(
            value_of(&unreadable, "orch_firewall_counters_up"),
            Some("0")
        );
        assert!(
            !unreadable.contains("orch_fleet_"),
            "no fleet, no fleet metrics"
        );
    }

    #[test]
    fn the_grafana_dashboard_uses_only_metrics_that_exist() {
        let text = render(&full_snapshot());
        let dashboard = include_str!("../../examples/grafana-orch.json");
        let _: serde_json::Value = serde_json::from_str(dashboard).expect("valid JSON");
        let mut used = 0;
        for (at, _) in dashboard.match_indices("orch_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if name == "orch_" {
                continue;
            }
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is not rendered"
            );
            used += 1;
        }
        assert!(used >= 15, "{used}");
    }
}
