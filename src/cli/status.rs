//! `orch status [JAIL] [--json]`: gathers the daemon's published facts
//! into one [`StatusReport`], then prints it for people or as JSON (schema
//! in docs/json.md, `status`). Everything the daemon sends is made
//! printable first: it carries hook output, error texts and other hosts'
//! names.
//!
//! It only reads; it must not call anything that changes the daemon.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::bus::client::Orch1Proxy;
use crate::quote::printable;

/// How many of a jail's banned addresses `orch status JAIL` shows.
pub const BANNED_SHOWN: u32 = 50;

/// The whole answer of `orch status`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub version: String,
    /// Set while the daemon runs on a fallback because the configuration
    /// on disk is invalid.
    pub config_error: Option<String>,
    pub table: String,
    pub backend: String,
    pub owned: bool,
    pub persist: bool,
    pub bans: u64,
    pub allowlist: AllowCounts,
    pub last_sync: Option<String>,
    pub last_event: Option<String>,
    pub hooks_last_run: Option<String>,
    /// Hook name -> its last outcome.
    pub hooks: BTreeMap<String, String>,
    /// Watched systemd unit -> its state.
    pub units: BTreeMap<String, String>,
    /// The fleet's facts (`Fleet` property); `None` without a fleet.
    pub fleet: Option<BTreeMap<String, String>>,
    pub jail_notes: Vec<String>,
    pub jails: Vec<JailReport>,
}

#[derive(Debug, Serialize)]
pub struct AllowCounts {
    #[serde(rename = "static")]
    pub static_entries: u64,
    pub runtime: u64,
}

/// One jail, as `orch status` and `orch status JAIL` show it.
#[derive(Debug, Serialize)]
pub struct JailReport {
    pub name: String,
    pub filter: String,
    pub source: String,
    pub state: String,
    pub lines: u64,
    /// Addresses with failures counted now (fail2ban's "currently failed").
    pub failing_now: u64,
    /// Failures found since the jail started.
    pub failures_total: u64,
    pub bans_now: u64,
    /// Bans this jail made since the daemon started.
    pub bans_total: u64,
    /// `None` for a jail that reads no log (recidive).
    pub health: Option<HealthReport>,
    /// Only for `orch status JAIL`: its first banned addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banned: Option<BannedSample>,
}

#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub lines_per_sec: f64,
    pub lag_seconds: f64,
    /// Bytes still unread in the jail's files; `None` for the journal.
    pub unread_bytes: Option<u64>,
    pub limit_hits: u64,
    pub too_long: u64,
    pub not_utf8: u64,
    pub lagging: bool,
}

/// The first addresses a jail has banned, in address order.
#[derive(Debug, Serialize)]
pub struct BannedSample {
    pub addresses: Vec<String>,
    /// How many more there are.
    pub more: u64,
}

/// Asks the daemon for everything `orch status` shows; with `jail`, only
/// that jail, with its banned addresses. `Ok(None)`: no such jail.
pub async fn gather(
    proxy: &Orch1Proxy<'_>,
    jail: Option<&str>,
) -> zbus::Result<Result<StatusReport, String>> {
    let version = printable(&proxy.version().await?).into_owned();
    let facts = printable_facts(proxy.firewall().await?);
    let fact = |key: &str| facts.get(key).cloned();
    let flag = |key: &str| facts.get(key).is_some_and(|v| v == "true");
    let count = |key: &str| facts.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    let prefixed = |prefix: &str| -> BTreeMap<String, String> {
        facts
            .iter()
            .filter_map(|(key, value)| Some((key.strip_prefix(prefix)?.to_string(), value.clone())))
            .collect()
    };
    let fleet_facts = printable_facts(proxy.fleet().await?);
    let totals: HashMap<String, u64> = proxy.jail_bans_total().await?.into_iter().collect();
    let mut jails: Vec<JailReport> = proxy
        .jails()
        .await?
        .into_iter()
        .map(|row| jail_report(row, &totals))
        .collect();
    if let Some(wanted) = jail {
        let names: Vec<String> = jails.iter().map(|report| report.name.clone()).collect();
        jails.retain(|report| report.name == wanted);
        let Some(report) = jails.first_mut() else {
            let known = if names.is_empty() {
                "no jails run".to_string()
            } else {
                format!("the jails are: {}", names.join(", "))
            };
            return Ok(Err(format!("no jail named {}; {known}", printable(wanted))));
        };
        let (rows, _) = proxy
            .list_bans_page("", BANNED_SHOWN, &report.name, "")
            .await?;
        let addresses: Vec<String> = rows
            .into_iter()
            .map(|row| printable(&row.0).into_owned())
            .collect();
        report.banned = Some(BannedSample {
            more: report.bans_now.saturating_sub(addresses.len() as u64),
            addresses,
        });
    }
    Ok(Ok(StatusReport {
        version,
        config_error: fact("config_error"),
        table: fact("table").unwrap_or_default(),
        backend: fact("backend").unwrap_or_default(),
        owned: flag("owned"),
        persist: flag("persist"),
        bans: count("bans"),
        allowlist: AllowCounts {
            static_entries: count("static_allows"),
            runtime: count("runtime_allows"),
        },
        last_sync: fact("last_sync"),
        last_event: fact("last_event"),
        hooks_last_run: fact("hooks_last_run"),
        hooks: prefixed("hook:"),
        units: prefixed("unit:"),
        fleet: (!fleet_facts.is_empty()).then(|| fleet_facts.into_iter().collect()),
        jail_notes: proxy
            .jail_notes()
            .await?
            .iter()
            .map(|note| printable(note).into_owned())
            .collect(),
        jails,
    }))
}

fn jail_report(row: crate::bus::service::JailRow, totals: &HashMap<String, u64>) -> JailReport {
    let (name, filter, source, state, lines, failures, tracked, bans) =
        (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7);
    let (lines_per_sec, lag, unread, limit_hits, too_long, not_utf8, lagging) =
        (row.8, row.9, row.10, row.11, row.12, row.13, row.14);
    JailReport {
        bans_total: totals.get(&name).copied().unwrap_or(0),
        name: printable(&name).into_owned(),
        filter: printable(&filter).into_owned(),
        source: printable(&source).into_owned(),
        state: printable(&state).into_owned(),
        lines,
        failing_now: tracked,
        failures_total: failures,
        bans_now: bans,
        // A negative lag: the jail reads no log (recidive).
        health: (lag >= 0.0).then(|| HealthReport {
            lines_per_sec,
            lag_seconds: lag,
            unread_bytes: u64::try_from(unread).ok(),
            limit_hits,
            too_long,
            not_utf8,
            lagging,
        }),
        banned: None,
    }
}

/// Facts from the daemon with every key and value made [`printable`].
pub fn printable_facts(facts: HashMap<String, String>) -> HashMap<String, String> {
    facts
        .into_iter()
        .map(|(key, value)| (printable(&key).into_owned(), printable(&value).into_owned()))
        .collect()
}

/// `orch status` for people.
pub fn print_text(report: &StatusReport, one_jail: bool) {
    if !one_jail {
        print_daemon(report);
    }
    if report.jails.is_empty() && report.jail_notes.is_empty() {
        println!("jails:      none configured");
    }
    if !one_jail {
        for note in &report.jail_notes {
            println!("jails:      {note}");
        }
    }
    for jail in &report.jails {
        print_jail(jail);
    }
}

fn print_daemon(report: &StatusReport) {
    let optional = |value: &Option<String>, absent: &'static str| {
        value.clone().unwrap_or_else(|| absent.to_string())
    };
    println!("orch {}: daemon running", report.version);
    if let Some(error) = &report.config_error {
        println!("config:     INVALID; {error}");
    }
    println!("table:      {} via {}", report.table, report.backend);
    let ownership = match (report.owned, report.persist) {
        (true, true) => "owned by the daemon, persists if it exits",
        (true, false) => {
            "owned by the daemon (nft flush ruleset cannot touch it); removed when the daemon exits"
        }
        _ => "not owned (re-applied by orch after a flush)",
    };
    println!("ownership:  {ownership}");
    println!("bans:       {}", report.bans);
    println!(
        "allowlist:  {} static, {} runtime",
        report.allowlist.static_entries, report.allowlist.runtime
    );
    println!("last sync:  {}", optional(&report.last_sync, "never"));
    println!("last event: {}", optional(&report.last_event, "none"));
    println!(
        "hooks:      {}",
        optional(&report.hooks_last_run, "not run yet")
    );
    for (name, outcome) in &report.hooks {
        println!("  hook {name}: {outcome}");
    }
    if report.units.is_empty() {
        println!("watching:   no systemd units (no systemd on this bus)");
    }
    for (unit, state) in &report.units {
        println!("watching:   {unit}: {state}");
    }
    match &report.fleet {
        Some(facts) => print_fleet(facts),
        None => println!("fleet:      not configured"),
    }
}

fn print_jail(jail: &JailReport) {
    println!(
        "jail {}: {} active bans ({} in total), {} addresses failing now, {} failures in {} lines",
        jail.name,
        jail.bans_now,
        jail.bans_total,
        jail.failing_now,
        jail.failures_total,
        jail.lines
    );
    println!("  filter {}; {}; {}", jail.filter, jail.source, jail.state);
    if let Some(health) = &jail.health {
        let described = crate::jail::health::Health {
            lines_per_sec: health.lines_per_sec,
            lag: Duration::try_from_secs_f64(health.lag_seconds).unwrap_or_default(),
            bytes_behind: health.unread_bytes,
            limit_hits: health.limit_hits,
            too_long: health.too_long,
            not_utf8: health.not_utf8,
            lagging: health.lagging,
        }
        .describe();
        println!("  health: {described}");
    }
    if let Some(banned) = &jail.banned {
        if banned.addresses.is_empty() {
            println!("  banned: none");
        } else {
            println!("  banned: {}", banned.addresses.join(" "));
        }
        if banned.more > 0 {
            println!(
                "  ... and {} more (orch list --jail {} shows them all)",
                banned.more, jail.name
            );
        }
    }
}

/// The fleet lines of `orch status`.
fn print_fleet(facts: &BTreeMap<String, String>) {
    let fact = |key: &str| facts.get(key).map(String::as_str).unwrap_or("");
    let state = fact("state");
    let connected = state == "connected";
    let mut line = format!("fleet:      {state}");
    if connected || !fact("server").is_empty() {
        line.push_str(&format!(" to {}", fact("server")));
    }
    line.push_str(&format!(" as {}, bucket {}", fact("name"), fact("bucket")));
    let age = facts
        .get("last_event")
        .and_then(|at| at.parse::<u64>().ok())
        .map(|at| crate::timefmt::now_unix().saturating_sub(at));
    match age {
        Some(age) => line.push_str(&format!("; last event {age} s ago")),
        None => line.push_str("; no event yet"),
    }
    line.push_str(&format!("; outbox {}", fact("outbox")));
    println!("{line}");
    if let Some(error) = facts.get("last_error") {
        println!("  last error: {error}");
    }
    if let Some(collision) = facts.get("collision") {
        println!("  name collision: {collision}");
    }
    for (origin, count) in facts
        .iter()
        .filter_map(|(key, count)| key.strip_prefix("origin:").map(|origin| (origin, count)))
    {
        println!("  bans from {origin}: {count}");
    }
    if let Some(skipped) = facts.get("skipped").filter(|n| *n != "0") {
        println!("  malformed bucket entries skipped: {skipped}");
    }
    let mut refused: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for (key, count) in facts {
        if let Some((origin, why)) = key
            .strip_prefix("refused:")
            .and_then(|rest| rest.rsplit_once(':'))
        {
            let count = count.parse().unwrap_or(0);
            refused.entry(origin).or_default().push((why, count));
        }
    }
    for (origin, kinds) in refused {
        let total: u64 = kinds.iter().map(|(_, count)| count).sum();
        let detail: Vec<String> = kinds
            .iter()
            .map(|(why, count)| format!("{why} {count}"))
            .collect();
        println!("  refused from {origin}: {total} ({})", detail.join(", "));
    }
}
