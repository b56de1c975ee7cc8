//! One fail2ban jail, as `jail_conf.rs` read it, becomes one orch jail:
//! the filter (an orch built-in where one is equivalent, else fail2ban's
//! filter.d file), files or the journal, maxretry, findtime, bantime and
//! bantime.increment, ignoreip. Whatever has no orch equivalent becomes a
//! [`Note`] saying why, so nothing is dropped silently.
//!
//! Pure: what filter.d holds comes in through [`FilterFacts`]; nothing
//! here reads files, and nothing here writes TOML (`toml_out.rs`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use ipnet::IpNet;

use super::jail_conf::{FilterDir, JAIL_OPTIONS, JailSettings};
use crate::addr::{self, AddrError};
use crate::config::RECIDIVE;
use crate::jail::fail2ban::FilterRef;
use crate::jail::fail2ban::reader::split_words;
use crate::jail::formula::Formula;

/// What the mapping needs to know about filters.
pub trait FilterFacts {
    /// The path of fail2ban's filter.d/NAME.conf.
    fn path(&self, name: &str) -> PathBuf;
    /// Whether filter.d has the filter.
    fn exists(&self, name: &str) -> bool;
    /// Whether the admin changed it beside its .conf (.local, NAME.d/).
    fn customised(&self, name: &str) -> bool;
    /// The journal matches of the filter orch would load for `spec`.
    fn journal_matches(&self, spec: &str) -> Result<Vec<String>, String>;
}

impl FilterFacts for FilterDir {
    fn path(&self, name: &str) -> PathBuf {
        self.conf(name)
    }
    fn exists(&self, name: &str) -> bool {
        FilterDir::exists(self, name)
    }
    fn customised(&self, name: &str) -> bool {
        FilterDir::customised(self, name)
    }
    fn journal_matches(&self, spec: &str) -> Result<Vec<String>, String> {
        crate::jail::load::load_filter(spec)
            .map(|filter| filter.journal_matches())
            .map_err(|err| err.to_string())
    }
}

/// Something not carried over, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The jail it concerns; empty for the whole import.
    pub jail: String,
    pub text: String,
}

/// Where an orch jail reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Files(Vec<String>),
    Journal(Vec<String>),
    /// The recidive built-in: orch's own bans by the other jails.
    OwnBans,
}

/// How ban times grow for repeat offenders.
#[derive(Debug, Clone, PartialEq)]
pub enum Growth {
    Factor(f64),
    Multipliers(Vec<u64>),
    Formula { text: String, factor: f64 },
}

/// `increment = { ... }` of an orch jail.
#[derive(Debug, Clone, PartialEq)]
pub struct Increment {
    pub growth: Growth,
    pub max_time: Option<u64>,
    pub random_time: Option<u64>,
    pub overall: bool,
}

/// One orch jail, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct OrchJail {
    pub name: String,
    /// Where fail2ban's jail was enabled (`file:line`).
    pub origin: String,
    pub filter: String,
    pub source: Source,
    pub max_retry: u32,
    pub find_time: u64,
    pub ban_time: u64,
    pub increment: Option<Increment>,
    pub ignore: Vec<IpNet>,
    pub ignore_command: Vec<String>,
}

/// The whole mapping: jails, entries every jail ignores (orch's `allow`),
/// and the notes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mapped {
    pub jails: Vec<OrchJail>,
    pub allow: Vec<IpNet>,
    pub notes: Vec<Note>,
}

/// fail2ban's own defaults where jail.conf sets nothing (Filter: 3
/// retries in 600 s; Actions: 600 s bans).
const DEFAULT_MAX_RETRY: u32 = 3;
const DEFAULT_FIND_TIME: u64 = 600;
const DEFAULT_BAN_TIME: u64 = 600;

/// The orch built-in that does what fail2ban's filter `name` does in
/// `mode` (None: the filter's default mode).
fn builtin_equivalent(name: &str, mode: Option<&str>) -> Option<&'static str> {
    match (name, mode) {
        ("sshd", None | Some("normal")) => Some("sshd"),
        ("sshd", Some("ddos")) => Some("sshd-ddos"),
        ("sshd", Some("aggressive")) => Some("sshd-aggressive"),
        ("nginx-http-auth", None | Some("normal")) => Some("nginx-http-auth"),
        ("nginx-botsearch", None) => Some("nginx-botsearch"),
        _ => None,
    }
}

/// Maps every jail. `max_time` is orch's longest ban, for fail2ban's
/// permanent bans.
pub fn map_all(jails: &[JailSettings], filters: &dyn FilterFacts, max_time: u64) -> Mapped {
    let mut mapped = Mapped::default();
    let mut disabled = Vec::new();
    for jail in jails {
        match parse_bool(jail.get("enabled").unwrap_or("false")) {
            Some(true) => {}
            Some(false) => {
                disabled.push(jail.name.as_str());
                continue;
            }
            None => {
                mapped.notes.push(Note {
                    jail: jail.name.clone(),
                    text: format!(
                        "{}: {:?} is not true or false; jail skipped",
                        jail.at("enabled"),
                        jail.get("enabled").unwrap_or("")
                    ),
                });
                continue;
            }
        }
        let mut notes = Vec::new();
        match map_jail(jail, filters, max_time, &mut notes) {
            Ok(orch_jail) => mapped.jails.push(orch_jail),
            Err(why) => notes.push(format!("{why}; jail skipped")),
        }
        mapped.notes.extend(notes.into_iter().map(|text| Note {
            jail: jail.name.clone(),
            text,
        }));
    }
    if !disabled.is_empty() {
        mapped.notes.push(Note {
            jail: String::new(),
            text: format!(
                "{} jail(s) not enabled, skipped: {}",
                disabled.len(),
                disabled.join(", ")
            ),
        });
    }
    mapped.allow = shared_ignores(&mut mapped.jails);
    mapped
}

/// Entries every jail ignores become orch's `allow` (never banned by
/// anything) and leave the jails' own lists; the rest stay per jail.
fn shared_ignores(jails: &mut [OrchJail]) -> Vec<IpNet> {
    let Some((first, rest)) = jails.split_first() else {
        return Vec::new();
    };
    let shared: Vec<IpNet> = first
        .ignore
        .iter()
        .filter(|net| rest.iter().all(|jail| jail.ignore.contains(net)))
        .copied()
        .collect();
    for jail in jails.iter_mut() {
        jail.ignore.retain(|net| !shared.contains(net));
    }
    shared
}

/// One enabled jail; `Err` says why it cannot be an orch jail.
pub fn map_jail(
    jail: &JailSettings,
    filters: &dyn FilterFacts,
    max_time: u64,
    notes: &mut Vec<String>,
) -> Result<OrchJail, String> {
    check_jail_name(&jail.name)?;
    if let Some((option, message)) = jail.errors.first() {
        return Err(format!("{option}: {message}"));
    }
    let filter_value = jail.get("filter").unwrap_or(&jail.name).trim();
    let (filter_name, filter_options) = split_filter(filter_value);
    let is_recidive = filter_name == RECIDIVE;
    let filter = if is_recidive {
        notes.push(format!(
            "filter recidive: orch's recidive counts the bans of orch's other jails instead of \
             reading fail2ban's log{}",
            jail.get("logpath")
                .map(|path| format!(" ({})", path.trim()))
                .unwrap_or_default()
        ));
        RECIDIVE.to_string()
    } else {
        choose_filter(filter_name, filter_options, filters)?
    };
    let source = if is_recidive {
        Source::OwnBans
    } else {
        map_source(jail, &filter, filters, notes)?
    };
    let max_retry = match jail.get("maxretry") {
        None => DEFAULT_MAX_RETRY,
        Some(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                format!(
                    "{}: {text:?} is not a whole number from 1 to 10000",
                    jail.at("maxretry")
                )
            })?,
    };
    let find_time = match jail.get("findtime") {
        None => DEFAULT_FIND_TIME,
        Some(text) => positive_seconds(jail, "findtime", text)?,
    };
    let ban_time = match jail.get("bantime") {
        None => DEFAULT_BAN_TIME,
        Some(text) => match fail2ban_seconds(text) {
            Some(seconds) if seconds < 0 => {
                notes.push(format!(
                    "{}: permanent in fail2ban; orch's bans always end, so bans last the \
                     longest orch allows ({})",
                    jail.at("bantime"),
                    duration_text(max_time)
                ));
                max_time
            }
            _ => positive_seconds(jail, "bantime", text)?.min(max_time),
        },
    };
    let increment = map_increment(jail, notes)?;
    let (ignore, ignore_command) = map_ignores(jail, notes);
    note_actions(jail, notes);
    note_others(jail, notes);
    Ok(OrchJail {
        name: jail.name.clone(),
        origin: jail.origin.clone(),
        filter,
        source,
        max_retry,
        find_time,
        ban_time,
        increment,
        ignore,
        ignore_command,
    })
}

/// Jail names become ban sources and store keys; orch's rules.
fn check_jail_name(name: &str) -> Result<(), String> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain && !name.is_empty() && name.len() <= 32 && name != "max_tracked" {
        Ok(())
    } else {
        Err(format!(
            "the name {name:?} is not an orch jail name (1-32 letters, digits, '-' or '_')"
        ))
    }
}

/// `sshd[mode=aggressive]` -> ("sshd", "[mode=aggressive]").
pub fn split_filter(value: &str) -> (&str, &str) {
    match value.find('[') {
        Some(open) => (value[..open].trim(), value[open..].trim()),
        None => (value.trim(), ""),
    }
}

/// The orch filter reference for fail2ban's filter `name` with
/// `options` (`[mode=..., ...]` or empty).
pub fn choose_filter(
    name: &str,
    options: &str,
    filters: &dyn FilterFacts,
) -> Result<String, String> {
    if name.is_empty() || name.contains('/') {
        return Err(format!("filter {name:?} is not a filter.d name"));
    }
    if !filters.exists(name) {
        return Err(format!(
            "filter {name}: {} does not exist",
            filters.path(name).display()
        ));
    }
    let reference = format!("{}{options}", filters.path(name).display());
    let parsed = FilterRef::parse(&reference).map_err(|err| err.to_string())?;
    let mode = parsed
        .options
        .iter()
        .find(|(option, _)| option.eq_ignore_ascii_case("mode"))
        .map(|(_, value)| value.as_str());
    let only_mode = parsed
        .options
        .iter()
        .all(|(option, _)| option.eq_ignore_ascii_case("mode"));
    match builtin_equivalent(name, mode) {
        Some(builtin) if only_mode && !filters.customised(name) => Ok(builtin.to_string()),
        _ => Ok(reference),
    }
}

/// Files (`logpath`) or the journal (`backend = systemd`).
fn map_source(
    jail: &JailSettings,
    filter: &str,
    filters: &dyn FilterFacts,
    notes: &mut Vec<String>,
) -> Result<Source, String> {
    let backend = jail.get("backend").unwrap_or("auto").trim();
    let (backend_name, backend_options) = split_filter(backend);
    if let Some(encoding) = jail.get("logencoding").map(str::trim)
        && !matches!(
            encoding.to_ascii_lowercase().as_str(),
            "" | "auto" | "utf-8" | "utf8"
        )
    {
        notes.push(format!(
            "{} = {encoding}: orch reads UTF-8 and replaces other bytes",
            jail.at("logencoding")
        ));
    }
    if backend_name == "systemd" {
        if !backend_options.is_empty() {
            notes.push(format!(
                "{}: the options {backend_options} are not mapped; orch reads the system journal",
                jail.at("backend")
            ));
        }
        let matches = match jail.get("journalmatch").filter(|m| !m.trim().is_empty()) {
            Some(text) => journal_words(text),
            None => filters.journal_matches(filter)?,
        };
        if matches.is_empty() {
            return Err(format!(
                "backend systemd, but filter {filter} has no journalmatch and the jail sets none"
            ));
        }
        return Ok(Source::Journal(matches));
    }
    if !matches!(backend_name, "auto" | "polling" | "pyinotify" | "gamin") {
        notes.push(format!(
            "{} = {backend}: unknown to the import; orch follows the log files",
            jail.at("backend")
        ));
    }
    let mut files = Vec::new();
    for line in jail.get("logpath").unwrap_or("").lines() {
        // fail2ban's JailReader: an optional last word, head or tail.
        let line = line.trim();
        let (path, position) = match line.rsplit_once(' ') {
            Some((path, word @ ("head" | "tail"))) => (path.trim_end(), Some(word)),
            _ => (line, None),
        };
        if path.is_empty() {
            continue;
        }
        if position == Some("tail") {
            notes.push(format!(
                "{}: {path}: \"tail\" not mapped; orch reads a file found at start from its end anyway",
                jail.at("logpath")
            ));
        }
        let path = &path.to_string();
        let parent = std::path::Path::new(path)
            .parent()
            .map(|dir| dir.display().to_string())
            .unwrap_or_default();
        if !path.starts_with('/') {
            notes.push(format!(
                "{}: {path} is not an absolute path; left out",
                jail.at("logpath")
            ));
        } else if parent.contains(['*', '?', '[']) {
            notes.push(format!(
                "{}: {path}: orch allows wildcards in the file name only; left out",
                jail.at("logpath")
            ));
        } else if !files.contains(path) {
            files.push(path.clone());
        }
    }
    if files.is_empty() {
        return Err(format!(
            "{}: no log file orch can follow",
            jail.at("logpath")
        ));
    }
    Ok(Source::Files(files))
}

/// fail2ban's journalmatch (one alternative per line, `+` between
/// alternatives too) as orch's flat list with `+` between groups.
fn journal_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    for line in text.lines() {
        let line_words = split_words(line);
        if line_words.is_empty() {
            continue;
        }
        if !words.is_empty() {
            words.push("+".to_string());
        }
        words.extend(line_words);
    }
    words
}

/// `bantime.increment` and its companions.
fn map_increment(
    jail: &JailSettings,
    notes: &mut Vec<String>,
) -> Result<Option<Increment>, String> {
    let enabled = bool_option(jail, "bantime.increment")?;
    if !enabled {
        let unused: Vec<&str> = [
            "bantime.factor",
            "bantime.formula",
            "bantime.multipliers",
            "bantime.maxtime",
            "bantime.rndtime",
            "bantime.overalljails",
        ]
        .into_iter()
        .filter(|option| jail.own.iter().any(|own| own == option))
        .collect();
        if !unused.is_empty() {
            notes.push(format!(
                "{} set without bantime.increment = true; not mapped (fail2ban ignores them too)",
                unused.join(", ")
            ));
        }
        return Ok(None);
    }
    let factor = match jail.get("bantime.factor") {
        None => 1.0,
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f > 0.0 && *f <= 1000.0)
            .ok_or_else(|| {
                format!(
                    "{}: {text:?} is not a number above 0 and at most 1000",
                    jail.at("bantime.factor")
                )
            })?,
    };
    let multipliers = jail
        .get("bantime.multipliers")
        .map(str::trim)
        .filter(|text| !text.is_empty());
    let formula = jail
        .get("bantime.formula")
        .map(str::trim)
        .filter(|text| !text.is_empty());
    let growth = if let Some(text) = multipliers {
        let parsed: Option<Vec<u64>> = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|word| !word.is_empty())
            .map(|word| {
                word.parse::<u64>()
                    .ok()
                    .filter(|m| (1..=1_000_000).contains(m))
            })
            .collect();
        match parsed {
            Some(list) if !list.is_empty() => Growth::Multipliers(list),
            _ => {
                return Err(format!(
                    "{}: {text:?} is not a list of whole numbers from 1 to 1000000",
                    jail.at("bantime.multipliers")
                ));
            }
        }
    } else if let Some(text) = formula {
        // fail2ban's formula is Python; orch runs its arithmetic subset.
        let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
        Formula::parse(&joined)
            .map_err(|err| format!("{}: orch cannot run it: {err}", jail.at("bantime.formula")))?;
        Growth::Formula {
            text: joined,
            factor,
        }
    } else {
        Growth::Factor(factor)
    };
    let optional_time = |option: &str| -> Result<Option<u64>, String> {
        match jail.get(option) {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => positive_seconds(jail, option, text).map(Some),
        }
    };
    let overall = bool_option(jail, "bantime.overalljails")?;
    Ok(Some(Increment {
        growth,
        max_time: optional_time("bantime.maxtime")?,
        random_time: optional_time("bantime.rndtime")?,
        overall,
    }))
}

/// `ignoreip` -> networks (`Err` entries noted), `ignoreself`,
/// `ignorecommand` -> argv.
fn map_ignores(jail: &JailSettings, notes: &mut Vec<String>) -> (Vec<IpNet>, Vec<String>) {
    let mut ignore = Vec::new();
    for entry in jail
        .get("ignoreip")
        .unwrap_or("")
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|entry| !entry.is_empty())
    {
        match addr::parse_net(entry) {
            Ok(net) => ignore.push(net),
            Err(AddrError::HostBits { network, .. }) => ignore.push(network),
            Err(_) if entry.chars().any(|c| c.is_ascii_alphabetic()) && !entry.contains(':') => {
                notes.push(format!(
                    "{}: {entry} is a host name; orch does not resolve names for jails \
                     (a [[dns.allow]] entry can keep its addresses allowed)",
                    jail.at("ignoreip")
                ));
            }
            Err(err) => notes.push(format!("{}: {err}; left out", jail.at("ignoreip"))),
        }
    }
    let mut unique = BTreeSet::new();
    ignore.retain(|net| unique.insert(*net));
    if jail
        .get("ignoreself")
        .and_then(parse_bool)
        .is_some_and(|keep| !keep)
    {
        notes.push(format!(
            "{} = false: orch never bans the host's own addresses",
            jail.at("ignoreself")
        ));
    }
    let mut command = Vec::new();
    if let Some(text) = jail.get("ignorecommand").filter(|t| !t.trim().is_empty()) {
        let words = split_words(text);
        if words
            .first()
            .is_some_and(|program| program.starts_with('/'))
        {
            command = words;
        } else {
            notes.push(format!(
                "{}: orch runs a program by absolute path with its arguments (no shell); \
                 not mapped: {text}",
                jail.at("ignorecommand")
            ));
        }
    }
    (ignore, command)
}

/// Firewall actions that ban; anything else (mail, reporting) is noted.
const BANNING_ACTIONS: &[&str] = &[
    "iptables",
    "ip6tables",
    "nftables",
    "firewallcmd",
    "shorewall",
    "ufw",
    "route",
    "pf",
    "ipfw",
    "bsd-ipfw",
    "ipfilter",
    "npf",
    "apf",
    "hostsdeny",
    "symbiosis-blacklist-allports",
    "iptables-ipset",
];

/// Notes for actions other than banning, and for bans limited to ports.
fn note_actions(jail: &JailSettings, notes: &mut Vec<String>) {
    let Some(actions) = jail.get("action") else {
        return;
    };
    for line in actions.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, options) = split_filter(line);
        let bans = BANNING_ACTIONS
            .iter()
            .any(|prefix| name == *prefix || name.starts_with(&format!("{prefix}-")));
        if !bans {
            notes.push(format!(
                "{}: {name} does not ban; orch only bans (not mapped)",
                jail.at("action")
            ));
            continue;
        }
        if name.contains("allports") {
            continue;
        }
        let port = FilterRef::parse(&format!("x.conf{options}"))
            .ok()
            .and_then(|parsed| {
                parsed
                    .options
                    .into_iter()
                    .find(|(option, _)| option == "port")
                    .map(|(_, value)| value)
            })
            .or_else(|| jail.get("port").map(str::to_string));
        if let Some(port) = port.filter(|p| !matches!(p.trim(), "" | "0:65535" | "1:65535")) {
            notes.push(format!(
                "{}: {name} bans port {port} only; the orch jail bans every port \
                 (add ports = [...] to narrow it)",
                jail.at("action")
            ));
        }
    }
}

/// Options orch does not take from a jail: filter settings given in the
/// jail, name resolution, and options the import does not know.
fn note_others(jail: &JailSettings, notes: &mut Vec<String>) {
    for option in [
        "failregex",
        "ignoreregex",
        "prefregex",
        "datepattern",
        "maxlines",
    ] {
        if jail.own.iter().any(|own| own == option) {
            notes.push(format!(
                "{}: set in the jail; not mapped (put it in a filter file)",
                jail.at(option)
            ));
        }
    }
    if jail
        .get("usedns")
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("yes"))
    {
        notes.push(format!(
            "{} = yes: orch never resolves host names from logs; only addresses are banned",
            jail.at("usedns")
        ));
    }
    for own in &jail.own {
        if !JAIL_OPTIONS.contains(&own.as_str()) && !own.starts_with("known/") {
            notes.push(format!(
                "{}: not known to the import; not mapped",
                jail.at(own)
            ));
        }
    }
}

/// A true/false option of `jail`, false when unset; the error names where
/// the bad value was set.
fn bool_option(jail: &JailSettings, option: &str) -> Result<bool, String> {
    match jail.get(option) {
        None => Ok(false),
        Some(text) => parse_bool(text)
            .ok_or_else(|| format!("{}: {text:?} is not true or false", jail.at(option))),
    }
}

/// configparser's booleans.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// A duration of at least one second, or why not.
fn positive_seconds(jail: &JailSettings, option: &str, text: &str) -> Result<u64, String> {
    fail2ban_seconds(text)
        .and_then(|seconds| u64::try_from(seconds).ok())
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| {
            format!(
                "{}: {text:?} is not a duration fail2ban and orch both read (e.g. 600, 10m, 1h, 1d)",
                jail.at(option)
            )
        })
}

/// fail2ban's time syntax (MyTime.str2seconds): a number of seconds, or
/// numbers with units (`1d 3h`, `1h30m`, `2w`; y, mo, w, d, h, m, s and
/// their long forms). `None` when it is neither, or too large.
pub fn fail2ban_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Some(seconds);
    }
    const UNITS: &[(&[&str], f64)] = &[
        (&["years", "year", "yy", "y"], 365.2425 * 86_400.0),
        (&["months", "month", "mo"], 30.436875 * 86_400.0),
        (&["weeks", "week", "ww", "w"], 7.0 * 86_400.0),
        (&["days", "day", "dd", "d"], 86_400.0),
        (&["hours", "hour", "hh", "h"], 3_600.0),
        (&["minutes", "minute", "mm", "m"], 60.0),
        (&["seconds", "second", "ss", "s"], 1.0),
    ];
    let mut rest = text;
    let mut total = 0.0f64;
    let mut parts = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].to_ascii_lowercase();
        let scale = UNITS
            .iter()
            .find(|(names, _)| names.contains(&unit.as_str()))
            .map(|(_, scale)| *scale)
            .or_else(|| unit.is_empty().then_some(1.0))?;
        total += number * scale;
        parts += 1;
        rest = rest[unit_len..].trim_start();
    }
    (parts > 0 && total.is_finite() && total < 1e15).then_some(total.round() as i64)
}

/// Seconds as an orch duration: the largest whole unit.
pub fn duration_text(seconds: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds >= size && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}
