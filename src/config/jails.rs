//! The `[jails]` section of `orch.toml`: log jails, validated with
//! `file:line:column` like the rest of the configuration.
//!
//! ```toml
//! [jails]
//! max_tracked = 50000           # addresses each jail remembers at most
//!
//! [jails.sshd]
//! filter = "sshd"               # built-in, native .toml, or fail2ban .conf[opts]
//! journal = { matches = ["_SYSTEMD_UNIT=ssh.service"] }   # or files = [...]
//! maxretry = 5
//! ipv6_prefix = 64              # IPv6 failures add up per /64, which is banned whole
//! findtime = "10m"
//! bantime = "1h"
//! increment = { factor = 1.0, maxtime = "1w", rndtime = "5m", overall = false }
//! # or fail2ban's formula (factor is its banFactor):
//! # increment = { formula = "ban.Time * (1<<(ban.Count if ban.Count<20 else 20)) * banFactor" }
//! ignore = ["192.0.2.0/24"]
//! ignore_command = ["/usr/local/bin/is-friend", "<ip>"]
//! ```
//!
//! Merging follows the other sections: a key set for a jail in a later file
//! overrides the same key of the same jail from an earlier file.
//!
//! Protection by default: when no file names any jail, the section holds
//! one jail `sshd` (built-in filter, on the journal of ssh.service and
//! sshd.service), marked [`JailConfig::by_default`]; the daemon runs it only
//! where one of those units exists, as Debian's fail2ban protects sshd out
//! of the box. `[jails.sshd] enabled = false` turns it off. A jail that
//! names no source reads the journal entries its filter's `journalmatch`
//! names, so `[jails.sshd]` alone is the same jail.
//!
//! This module only validates; it must not start readers or ban.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// Default network length IPv6 failures are counted and banned by: one
/// /64 is what a single host or customer usually gets.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use toml::Spanned;

use super::{
    Binder, ConfigIssue, Located, Origin, bind, check_duration, check_net, int_in, value_or,
};
use crate::addr::Protocol;
use crate::jail::ban_time::Increment;
use crate::jail::formula::Formula;

/// Default of `jails.max_tracked`: failing addresses remembered per jail.
pub const DEFAULT_MAX_TRACKED: usize = 50_000;
/// Longest a jail name may be; it becomes part of ban sources and keys.
const JAIL_NAME_MAX: usize = 32;

/// Where a jail reads its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JailSource {
    /// Files, by absolute path or pattern (`*` and `?` in the file name).
    Files(Vec<String>),
    /// The systemd journal, with journalctl-style `FIELD=value` matches.
    Journal { matches: Vec<String> },
    /// orch's own bans by the other jails (`filter = "recidive"`).
    OwnBans,
}

impl fmt::Display for JailSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JailSource::Files(files) => write!(f, "files {}", files.join(" ")),
            JailSource::Journal { matches } if matches.is_empty() => write!(f, "journal"),
            JailSource::Journal { matches } => write!(f, "journal {}", matches.join(" ")),
            JailSource::OwnBans => write!(f, "orch's own bans by the other jails"),
        }
    }
}

/// How ban times grow for repeat offenders.
#[derive(Debug, Clone, PartialEq)]
pub struct IncrementConfig {
    pub rule: Increment,
    /// Cap on a grown ban (default: `bans.max_time`).
    pub max_time: Option<Duration>,
    /// Random extra time up to this much, so bots cannot time their return.
    pub random_time: Duration,
    /// Count previous bans from every source (true), or only this jail's
    /// (false, the default, as fail2ban's `bantime.overalljails`).
    pub overall: bool,
}

/// One validated jail.
#[derive(Debug, Clone, PartialEq)]
pub struct JailConfig {
    pub name: String,
    pub enabled: bool,
    /// Not configured: added because no jail is (see the module doc); it
    /// runs only where its journal's units exist.
    pub by_default: bool,
    /// The filter reference: a built-in name, a native filter path, or a
    /// fail2ban `.conf` reference with options.
    pub filter: String,
    pub source: JailSource,
    pub max_retry: u32,
    /// IPv6 failures are counted per network of this length, and the ban
    /// covers that network (an attacker rotating addresses inside one /64
    /// still reaches `max_retry`). 128: per address.
    pub ipv6_prefix: u8,
    pub find_time: Duration,
    /// `None`: `bans.default_time`.
    pub ban_time: Option<Duration>,
    pub increment: IncrementConfig,
    /// Extra networks this jail never bans (on top of the global allowlist).
    pub ignore: Vec<IpNet>,
    /// argv run before a ban, `<ip>` replaced by the address; exit status 0
    /// means "ignore this address".
    pub ignore_command: Vec<String>,
    /// Ports this jail's bans cover; empty: every port (the shared sets).
    pub ports: Vec<u16>,
    /// Protocols of `ports`.
    pub protocols: Vec<Protocol>,
}

/// The whole `[jails]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct JailsConfig {
    pub max_tracked: usize,
    pub jails: Vec<JailConfig>,
}

impl JailsConfig {
    /// Whether any local user could write lines this jail reads, and so
    /// choose what it bans: files (syslog files take every local user's
    /// lines, and orch cannot tell which files syslog writes), and journal
    /// matches journald does not vouch for. A recidive jail counts the
    /// other jails' bans, so it is as open as the most open of them.
    pub fn any_user_can_feed(&self, jail: &JailConfig) -> bool {
        match &jail.source {
            JailSource::Files(_) => true,
            JailSource::Journal { matches } => {
                crate::jail::journal_trust::any_user_can_feed(matches)
            }
            JailSource::OwnBans => self.jails.iter().any(|other| {
                other.enabled
                    && other.source != JailSource::OwnBans
                    && self.any_user_can_feed(other)
            }),
        }
    }

    /// The jails whose bans `fleet.share = ["jails"]` shares: those no
    /// local user can feed. Others are shared only when `fleet.share`
    /// names them.
    pub fn shared_by_default(&self) -> Vec<&str> {
        self.jails
            .iter()
            .filter(|jail| !self.any_user_can_feed(jail))
            .map(|jail| jail.name.as_str())
            .collect()
    }
}

/// What a configuration without `[jails]` gets: the default jail.
impl Default for JailsConfig {
    fn default() -> Self {
        JailsDraft::default().finish(&mut Vec::new())
    }
}

// ---------------------------------------------------------------------------
// Raw form, with spans.

/// `[jails]`: `max_tracked` plus one table per jail. Deserialized by hand,
/// because serde's `flatten` would lose the spans that locate errors.
#[derive(Debug, Default)]
pub(super) struct RawJails {
    max_tracked: Option<Spanned<i64>>,
    jails: Vec<(Spanned<String>, RawJail)>,
}

impl<'de> Deserialize<'de> for RawJails {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct JailsVisitor;
        impl<'de> Visitor<'de> for JailsVisitor {
            type Value = RawJails;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of jails")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawJails, A::Error> {
                let mut raw = RawJails::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if key.get_ref() == "max_tracked" {
                        raw.max_tracked = Some(map.next_value()?);
                    } else {
                        raw.jails.push((key, map.next_value()?));
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_map(JailsVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJail {
    enabled: Option<Spanned<bool>>,
    filter: Option<Spanned<String>>,
    files: Option<Spanned<Vec<Spanned<String>>>>,
    journal: Option<Spanned<RawJournal>>,
    maxretry: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    findtime: Option<Spanned<String>>,
    bantime: Option<Spanned<String>>,
    increment: Option<RawIncrement>,
    ignore: Option<Vec<Spanned<String>>>,
    ignore_command: Option<Spanned<Vec<String>>>,
    ports: Option<Spanned<Vec<i64>>>,
    protocol: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    #[serde(default)]
    matches: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncrement {
    factor: Option<Spanned<f64>>,
    formula: Option<Spanned<String>>,
    multipliers: Option<Spanned<Vec<i64>>>,
    maxtime: Option<Spanned<String>>,
    rndtime: Option<Spanned<String>>,
    overall: Option<Spanned<bool>>,
}

// ---------------------------------------------------------------------------
// Merged drafts: each key remembers where it was set.

#[derive(Debug, Default)]
struct JailDraft {
    /// Where the jail's table was first seen, for whole-jail messages.
    at: Option<Origin>,
    enabled: Located<bool>,
    filter: Located<CheckedFilter>,
    source: Located<JailSource>,
    max_retry: Located<u32>,
    ipv6_prefix: Located<u8>,
    find_time: Located<Duration>,
    ban_time: Located<Duration>,
    increment_rule: Located<Increment>,
    increment_max: Located<Duration>,
    increment_random: Located<Duration>,
    increment_overall: Located<bool>,
    ignore: Vec<IpNet>,
    ignore_command: Located<Vec<String>>,
    ports: Located<Vec<u16>>,
    protocols: Located<Vec<Protocol>>,
}

/// `[jails]` from every file, merged key by key.
#[derive(Debug, Default)]
pub(super) struct JailsDraft {
    max_tracked: Located<usize>,
    jails: BTreeMap<String, JailDraft>,
}

impl JailsDraft {
    /// Validates one file's `[jails]` and merges it over earlier files.
    pub(super) fn apply(&mut self, raw: RawJails, b: &mut Binder) {
        bind!(b, self.max_tracked, raw.max_tracked, int_in(1..=10_000_000));
        for (name, jail) in raw.jails {
            let name_at = b.origin(&name.span());
            let name = name.into_inner();
            if let Err(message) = check_jail_name(&name) {
                b.issue(&name_at, &name, message);
                continue;
            }
            let draft = self.jails.entry(name.clone()).or_default();
            draft.at.get_or_insert(name_at);
            draft.apply(jail, &mut b.section(&name));
        }
    }

    /// The final section; cross-key checks go to `issues`.
    pub(super) fn finish(self, issues: &mut Vec<ConfigIssue>) -> JailsConfig {
        let mut jails = Vec::new();
        if self.jails.is_empty() {
            jails.extend(default_jail(issues));
        }
        for (name, draft) in self.jails {
            if let Some(jail) = draft.finish(&name, issues) {
                jails.push(jail);
            }
        }
        JailsConfig {
            max_tracked: value_or(self.max_tracked, DEFAULT_MAX_TRACKED),
            jails,
        }
    }
}

impl JailDraft {
    /// Validates one file's `[jails.NAME]`; `b` is bound to that table.
    fn apply(&mut self, jail: RawJail, b: &mut Binder) {
        let doc = b.doc();
        let filter = |spec: String| check_filter(&spec, &doc.file);
        bind!(b, self.enabled, jail.enabled, Ok);
        bind!(b, self.filter, jail.filter, filter);
        self.apply_source(jail.files, jail.journal, b);
        bind!(b, self.max_retry, jail.maxretry, int_in(1..=10_000));
        bind!(b, self.ipv6_prefix, jail.ipv6_prefix, int_in(48..=128));
        bind!(b, self.find_time, jail.findtime, check_duration);
        bind!(b, self.ban_time, jail.bantime, check_duration);
        bind!(b, self.ports, jail.ports, check_ports);
        bind!(b, self.protocols, jail.protocol, check_protocol);
        if let Some(increment) = jail.increment {
            self.apply_increment(increment, &mut b.section("increment"));
        }
        let ignore = jail.ignore.unwrap_or_default();
        self.ignore.extend(b.each(ignore, "ignore", check_net));
        bind!(b, self.ignore_command, jail.ignore_command, check_command);
    }

    /// Where the jail reads: `files` or `journal`, not both.
    fn apply_source(
        &mut self,
        files: Option<Spanned<Vec<Spanned<String>>>>,
        journal: Option<Spanned<RawJournal>>,
        b: &mut Binder,
    ) {
        match (files, journal) {
            (Some(_), Some(journal)) => {
                let at = b.origin(&journal.span());
                b.issue(&at, "", "set either `files` or `journal`, not both");
            }
            (Some(files), None) => {
                let at = b.origin(&files.span());
                let paths = b.each(files.into_inner(), "files", check_log_path);
                if paths.is_empty() {
                    b.issue(&at, "files", "list at least one file");
                } else {
                    self.source = Some((JailSource::Files(paths), at));
                }
            }
            (None, journal) => b.set(&mut self.source, journal, "journal.matches", check_journal),
        }
    }

    /// Validates `increment = { ... }`; `b` is bound to it.
    fn apply_increment(&mut self, raw: RawIncrement, b: &mut Binder) {
        if let (Some(_), Some(multipliers)) = (&raw.factor, &raw.multipliers) {
            let at = b.origin(&multipliers.span());
            b.issue(&at, "", "set either `factor` or `multipliers`, not both");
        } else if let (Some(_), Some(multipliers)) = (&raw.formula, &raw.multipliers) {
            let at = b.origin(&multipliers.span());
            b.issue(&at, "", "set either `formula` or `multipliers`, not both");
        } else if let Some(formula) = raw.formula {
            // `factor` is the formula's banFactor, as in fail2ban; 1 when unset or invalid.
            let mut factor = None;
            bind!(b, factor, raw.factor, check_factor);
            let factor = factor.map_or(1.0, |(factor, _)| factor);
            let check = |text| check_formula(text, factor);
            b.set(&mut self.increment_rule, Some(formula), "formula", check);
        } else {
            let check = |factor| check_factor(factor).map(Increment::Factor);
            bind!(b, self.increment_rule, raw.factor, check);
            bind!(b, self.increment_rule, raw.multipliers, check_multipliers);
        }
        bind!(b, self.increment_max, raw.maxtime, check_duration);
        bind!(b, self.increment_random, raw.rndtime, check_duration);
        bind!(b, self.increment_overall, raw.overall, Ok);
    }

    fn finish(self, name: &str, issues: &mut Vec<ConfigIssue>) -> Option<JailConfig> {
        let at = self.at?;
        if let (Some((_, at)), None) = (&self.protocols, &self.ports) {
            issues.push(at.issue(format!(
                "jails.{name}.protocol: only means something with `ports`; \
                 without them a ban covers every port and protocol"
            )));
        }
        let is_recidive = self
            .filter
            .as_ref()
            .map_or(name == RECIDIVE, |(filter, _)| filter.spec == RECIDIVE);
        let source = match (self.source, is_recidive) {
            (None, true) => Some((JailSource::OwnBans, at.clone())),
            (Some((_, source_at)), true) => {
                issues.push(source_at.issue(format!(
                    "jails.{name}: the recidive filter reads orch's own bans; remove `files`/`journal`"
                )));
                return None;
            }
            (source, false) => source,
        };
        let filter = match self.filter {
            Some((filter, _)) => filter,
            // fail2ban's habit: a jail without a filter uses the filter of
            // its own name.
            None => match check_filter(name, &PathBuf::new()) {
                Ok(filter) => filter,
                Err(message) => {
                    issues.push(at.issue(format!("jails.{name}: no `filter` set, and {message}")));
                    return None;
                }
            },
        };
        let CheckedFilter {
            spec: filter,
            journal_matches: from_filter,
        } = filter;
        // No source: the journal entries the filter names, if it names any.
        let source = match source {
            Some((source, _)) => source,
            None if !from_filter.is_empty() => JailSource::Journal {
                matches: Vec::new(),
            },
            None => {
                issues.push(at.issue(format!(
                    "jails.{name}: says nothing about where to read, and filter {filter} names no \
                     journal entries; set `files = [\"/var/log/…\"]` or \
                     `journal = {{ matches = [\"_SYSTEMD_UNIT=….service\"] }}`"
                )));
                return None;
            }
        };
        let source = match source {
            JailSource::Journal { matches } if matches.is_empty() => {
                if from_filter.is_empty() {
                    issues.push(at.issue(format!(
                        "jails.{name}.journal: no `matches`, and filter {filter} has no journalmatch; \
                         name the entries to read, e.g. matches = [\"_SYSTEMD_UNIT=ssh.service\"]"
                    )));
                    return None;
                }
                JailSource::Journal {
                    matches: from_filter,
                }
            }
            other => other,
        };
        Some(JailConfig {
            name: name.to_string(),
            enabled: self.enabled.is_none_or(|(enabled, _)| enabled),
            by_default: false,
            filter,
            source,
            max_retry: value_or(self.max_retry, 5),
            ipv6_prefix: value_or(self.ipv6_prefix, DEFAULT_IPV6_PREFIX),
            find_time: value_or(self.find_time, Duration::from_secs(600)),
            ban_time: self.ban_time.map(|(d, _)| d),
            increment: IncrementConfig {
                rule: value_or(self.increment_rule, Increment::Off),
                max_time: self.increment_max.map(|(d, _)| d),
                random_time: value_or(self.increment_random, Duration::ZERO),
                overall: self.increment_overall.is_some_and(|(overall, _)| overall),
            },
            ignore: self.ignore,
            ignore_command: self
                .ignore_command
                .map(|(argv, _)| argv)
                .unwrap_or_default(),
            ports: self.ports.map(|(ports, _)| ports).unwrap_or_default(),
            protocols: value_or(self.protocols, vec![Protocol::Tcp]),
        })
    }
}

/// The jail that runs when none is configured (see the module doc).
pub const DEFAULT_JAIL: &str = "sshd";

/// [`DEFAULT_JAIL`] with every setting at its default: what `[jails.sshd]`
/// alone would be.
fn default_jail(issues: &mut Vec<ConfigIssue>) -> Option<JailConfig> {
    let draft = JailDraft {
        at: Some(Origin {
            file: PathBuf::from("(built-in default jail)"),
            line: 0,
            column: 0,
        }),
        ..JailDraft::default()
    };
    let mut jail = draft.finish(DEFAULT_JAIL, issues)?;
    jail.by_default = true;
    Some(jail)
}

/// The built-in filter that escalates on orch's own ban history instead of
/// reading a log.
pub const RECIDIVE: &str = "recidive";

/// Jail names become part of ban sources and store keys: keep them plain.
fn check_jail_name(name: &str) -> Result<(), String> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain && !name.is_empty() && name.len() <= JAIL_NAME_MAX && name != "max_tracked" {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid jail name: use 1-{JAIL_NAME_MAX} letters, digits, '-' or '_'"
        ))
    }
}

/// A filter reference that loaded, and what it says about the journal.
#[derive(Debug)]
struct CheckedFilter {
    /// The reference, a relative path made absolute.
    spec: String,
    /// The filter's journalmatch (empty if it has none).
    journal_matches: Vec<String>,
}

/// Loads the filter now, so a broken one is a configuration error rather
/// than a jail that silently never bans. A relative filter path is taken
/// relative to the configuration file's directory.
fn check_filter(spec: &str, config_file: &std::path::Path) -> Result<CheckedFilter, String> {
    if spec == RECIDIVE {
        return Ok(CheckedFilter {
            spec: spec.to_string(),
            journal_matches: Vec::new(),
        });
    }
    let resolved = if spec.contains('/') && !spec.starts_with('/') {
        let dir = config_file.parent().unwrap_or(std::path::Path::new("/"));
        dir.join(spec).display().to_string()
    } else {
        spec.to_string()
    };
    let loaded = crate::jail::load::load_filter(&resolved).map_err(|err| err.to_string())?;
    Ok(CheckedFilter {
        journal_matches: loaded.journal_matches(),
        spec: resolved,
    })
}

/// An absolute path whose directory has no wildcards; the file name may
/// have `*` and `?`.
fn check_log_path(path: String) -> Result<String, String> {
    let path_buf = std::path::Path::new(&path);
    if !path_buf.is_absolute() {
        return Err(format!("{path:?} must be an absolute path"));
    }
    let dir = path_buf
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    if dir.contains(['*', '?', '[']) {
        return Err(format!(
            "{path:?}: wildcards are allowed in the file name only, not in directories"
        ));
    }
    if path_buf.file_name().is_none() {
        return Err(format!("{path:?} names a directory, not a file"));
    }
    Ok(path)
}

/// journalctl matches: `FIELD=value`, FIELD in upper case, or `+` (OR).
fn check_journal(journal: RawJournal) -> Result<JailSource, String> {
    for entry in &journal.matches {
        if entry == "+" {
            continue;
        }
        let Some((field, _)) = entry.split_once('=') else {
            return Err(format!("{entry:?} is not FIELD=value"));
        };
        let field_ok = !field.is_empty()
            && field
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !field_ok {
            return Err(format!(
                "{entry:?}: journal field names are upper case, like _SYSTEMD_UNIT"
            ));
        }
    }
    Ok(JailSource::Journal {
        matches: journal.matches,
    })
}

/// The ports a ban covers: sorted, each once.
fn check_ports(ports: Vec<i64>) -> Result<Vec<u16>, String> {
    if ports.is_empty() {
        return Err("list at least one port, or leave `ports` out for every port".to_string());
    }
    let mut checked: Vec<u16> = ports
        .iter()
        .map(|&p| {
            u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{p} is not a port (1 to 65535)"))
        })
        .collect::<Result<_, _>>()?;
    checked.sort_unstable();
    checked.dedup();
    Ok(checked)
}

fn check_protocol(text: String) -> Result<Vec<Protocol>, String> {
    match text.as_str() {
        "tcp" => Ok(vec![Protocol::Tcp]),
        "udp" => Ok(vec![Protocol::Udp]),
        "all" => Ok(vec![Protocol::Tcp, Protocol::Udp]),
        other => Err(format!(r#"{other:?} is not "tcp", "udp" or "all""#)),
    }
}

/// `ignore_command`: a program by absolute path, then its arguments.
fn check_command(argv: Vec<String>) -> Result<Vec<String>, String> {
    match argv.first() {
        Some(program) if program.starts_with('/') => Ok(argv),
        Some(program) => Err(format!(
            "{program:?} must be an absolute path, so the daemon's PATH does not matter"
        )),
        None => Err("give the program and its arguments, e.g. \
             [\"/usr/local/bin/is-friend\", \"<ip>\"]"
            .to_string()),
    }
}

/// fail2ban's increment formula, with `factor` as its banFactor.
fn check_formula(text: String, factor: f64) -> Result<Increment, String> {
    Formula::parse(&text)
        .map(|formula| Increment::Formula { formula, factor })
        .map_err(|error| format!("{error}: {text}"))
}

fn check_multipliers(multipliers: Vec<i64>) -> Result<Increment, String> {
    if multipliers.is_empty() {
        return Err("list at least one multiplier".to_string());
    }
    multipliers
        .iter()
        .map(|&m| {
            u64::try_from(m)
                .ok()
                .filter(|m| (1..=1_000_000).contains(m))
                .ok_or_else(|| format!("{m} is not a whole number from 1 to 1000000"))
        })
        .collect::<Result<Vec<u64>, String>>()
        .map(Increment::Multipliers)
}

/// An increment factor: a growth rate, not a way to shrink or explode bans.
fn check_factor(factor: f64) -> Result<f64, String> {
    if factor.is_finite() && factor > 0.0 && factor <= 1000.0 {
        Ok(factor)
    } else {
        Err(format!("{factor} must be above 0 and at most 1000"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError, parse_str};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new("orch.toml"))
    }

    fn messages(text: &str) -> Vec<String> {
        parse(text)
            .expect_err("invalid")
            .issues
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_sshd_journal_jail_by_default_unless_jails_are_configured() {
        let jails = Config::default().jails;
        assert_eq!(jails, JailsConfig::default());
        let [sshd] = &jails.jails[..] else {
            panic!("{jails:?}")
        };
        assert!(sshd.enabled && sshd.by_default, "{sshd:?}");
        assert_eq!(sshd.filter, "sshd");
        assert_eq!(
            sshd.source,
            JailSource::Journal {
                matches: vec![
                    "_SYSTEMD_UNIT=ssh.service".to_string(),
                    "_SYSTEMD_UNIT=sshd.service".to_string()
                ]
            }
        );
        // `[jails.sshd]` alone is the same jail, configured.
        let configured = parse("[jails.sshd]\n").expect("valid").jails;
        let [same] = &configured.jails[..] else {
            panic!("{configured:?}")
        };
        assert_eq!(
            JailConfig {
                by_default: true,
                ..same.clone()
            },
            *sshd
        );
        // Turned off.
        let off = parse("[jails.sshd]\nenabled = false\n")
            .expect("valid")
            .jails;
        assert!(off.jails.iter().all(|jail| !jail.enabled), "{off:?}");
        // Any configured jail replaces it.
        let other = parse(
            "[jails.web]\nfilter = \"nginx-http-auth\"\nfiles = [\"/var/log/nginx/error.log\"]\n",
        )
        .expect("valid")
        .jails;
        assert_eq!(other.jails.len(), 1);
        assert_eq!(other.jails[0].name, "web");
        // `[jails]` settings alone do not count as configuring a jail.
        let tuned = parse("[jails]\nmax_tracked = 1000\n").expect("valid").jails;
        assert!(tuned.jails.iter().any(|jail| jail.by_default), "{tuned:?}");
    }

    #[test]
    fn a_full_jail_parses() {
        let config = parse(
            r#"
[jails]
max_tracked = 5000

[jails.sshd]
journal = { matches = ["_SYSTEMD_UNIT=ssh.service"] }
maxretry = 3
findtime = "5m"
bantime = "2h"
increment = { multipliers = [1, 2, 4], maxtime = "1d", rndtime = "1m", overall = true }
ignore = ["192.0.2.0/24"]
ignore_command = ["/usr/local/bin/is-friend", "<ip>"]

[jails.web]
enabled = false
filter = "sshd"
files = ["/var/log/nginx/*.log"]
"#,
        )
        .expect("valid");
        assert_eq!(config.jails.max_tracked, 5000);
        let sshd = &config.jails.jails[0];
        assert_eq!(sshd.name, "sshd");
        assert_eq!(sshd.filter, "sshd", "a jail's own name is its filter");
        assert_eq!(
            sshd.source,
            JailSource::Journal {
                matches: vec!["_SYSTEMD_UNIT=ssh.service".into()]
            }
        );
        assert_eq!(sshd.max_retry, 3);
        assert_eq!(sshd.find_time, Duration::from_secs(300));
        assert_eq!(sshd.ban_time, Some(Duration::from_secs(7200)));
        assert_eq!(
            sshd.increment,
            IncrementConfig {
                rule: Increment::Multipliers(vec![1, 2, 4]),
                max_time: Some(Duration::from_secs(86_400)),
                random_time: Duration::from_secs(60),
                overall: true,
            }
        );
        assert_eq!(sshd.ignore, vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(sshd.ignore_command[1], "<ip>");
        let web = &config.jails.jails[1];
        assert!(!web.enabled);
        assert_eq!(
            web.source,
            JailSource::Files(vec!["/var/log/nginx/*.log".into()])
        );
        assert_eq!(web.max_retry, 5);
        assert_eq!(web.ban_time, None);
        assert_eq!(web.increment.rule, Increment::Off);
    }

    #[test]
    fn later_files_override_single_keys_of_a_jail() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("orch.toml");
        std::fs::write(
            &main,
            "[jails.sshd]\nfiles = [\"/var/log/auth.log\"]\nmaxretry = 3\n",
        )
        .unwrap();
        let conf_d = dir.path().join("conf.d");
        std::fs::create_dir(&conf_d).unwrap();
        std::fs::write(conf_d.join("10.toml"), "[jails.sshd]\nmaxretry = 8\n").unwrap();
        let config = crate::config::load(crate::config::ConfigSource::System {
            main: &main,
            conf_d: &conf_d,
        })
        .expect("valid");
        let sshd = &config.jails.jails[0];
        assert_eq!(sshd.max_retry, 8);
        assert_eq!(
            sshd.source,
            JailSource::Files(vec!["/var/log/auth.log".into()])
        );
    }

    #[test]
    fn a_formula_increment_parses_with_factor_as_ban_factor() {
        let config = parse(
            r#"[jails.sshd]
files = ["/var/log/auth.log"]
increment = { formula = "ban.Time * math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor)", factor = 0.5 }
"#,
        )
        .expect("valid");
        let Increment::Formula { formula, factor } = &config.jails.jails[0].increment.rule else {
            panic!(
                "a formula rule, got {:?}",
                config.jails.jails[0].increment.rule
            );
        };
        assert_eq!(*factor, 0.5);
        assert!(formula.source().starts_with("ban.Time * math.exp"));
    }

    #[test]
    fn a_bad_formula_is_located_with_its_column() {
        let found = messages(
            r#"[jails.sshd]
files = ["/var/log/auth.log"]
increment = { formula = "ban.Time * __import__(1)" }

[jails.web]
files = ["/var/log/auth.log"]
filter = "sshd"
increment = { formula = "ban.Time", multipliers = [1, 2] }
"#,
        );
        let expect = [
            "orch.toml:3:25: jails.sshd.increment.formula: column 12: unknown function `__import__`",
            "jails.web.increment: set either `formula` or `multipliers`, not both",
        ];
        for expected in expect {
            assert!(
                found.iter().any(|m| m.contains(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
    }

    #[test]
    fn every_bad_jail_key_is_located() {
        let found = messages(
            r#"[jails.sshd]
files = ["auth.log"]
maxretry = 0
findtime = "soon"
filter = "no-such-filter"
ignore = ["10.0.0.300"]
ignore_command = ["is-friend"]
increment = { factor = 2.0, multipliers = [1] }

[jails."bad name"]
files = ["/x"]

[jails.quiet]
filter = "nginx-http-auth"

[jails.both]
filter = "sshd"
files = ["/var/log/a"]
journal = {}
"#,
        );
        let expect = [
            "orch.toml:2:10: jails.sshd.files[0]: \"auth.log\" must be an absolute path",
            "orch.toml:3:12: jails.sshd.maxretry: 0 is out of range",
            "orch.toml:4:12: jails.sshd.findtime: invalid duration",
            "orch.toml:5:10: jails.sshd.filter: no-such-filter: no such built-in filter",
            "orch.toml:6:11: jails.sshd.ignore[0]:",
            "orch.toml:7:18: jails.sshd.ignore_command: \"is-friend\" must be an absolute path",
            "jails.sshd.increment: set either `factor` or `multipliers`",
            "orch.toml:10:8: jails.bad name: \"bad name\" is not a valid jail name",
            "orch.toml:13:8: jails.quiet: says nothing about where to read",
            "jails.both: set either `files` or `journal`, not both",
        ];
        for expected in expect {
            assert!(
                found.iter().any(|m| m.contains(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
    }

    #[test]
    fn unknown_jail_key_is_located() {
        let found = messages("[jails.typo]\nfiltr = \"sshd\"\n");
        assert!(
            found[0].starts_with("orch.toml:2:1: unknown field `filtr`, expected one of"),
            "{found:?}"
        );
    }

    #[test]
    fn a_journal_jail_without_matches_takes_the_filters_journalmatch() {
        let fail2ban = "/etc/fail2ban/filter.d/sshd.conf";
        if std::path::Path::new(fail2ban).is_file() {
            let config = parse(&format!(
                "[jails.ssh]\nfilter = \"{fail2ban}\"\njournal = {{}}\n"
            ))
            .expect("valid");
            let JailSource::Journal { matches } = &config.jails.jails[0].source else {
                panic!("journal source expected");
            };
            assert!(
                matches.iter().any(|m| m.starts_with("_SYSTEMD_UNIT=")),
                "{matches:?}"
            );
        }
        let config = parse("[jails.sshd]\njournal = {}\n").expect("valid");
        assert_eq!(
            config.jails.jails[0].source,
            JailSource::Journal {
                matches: vec![
                    "_SYSTEMD_UNIT=ssh.service".into(),
                    "_SYSTEMD_UNIT=sshd.service".into()
                ]
            },
            "the built-in sshd filter's journalmatch"
        );
        let found = messages("[jails.web]\nfilter = \"nginx-http-auth\"\njournal = {}\n");
        assert!(found[0].contains("has no journalmatch"), "{found:?}");
    }

    #[test]
    fn journal_matches_are_checked() {
        let found = messages("[jails.sshd]\njournal = { matches = [\"unit=ssh\"] }\n");
        assert!(
            found[0].contains("journal field names are upper case"),
            "{found:?}"
        );
        let found = messages("[jails.sshd]\njournal = { matches = [\"nothing\"] }\n");
        assert!(found[0].contains("is not FIELD=value"), "{found:?}");
    }

    #[test]
    fn only_jails_no_local_user_can_feed_are_shared_by_default() {
        let config = parse(
            r#"
[jails.unit]
filter = "sshd"
journal = { matches = ["_SYSTEMD_UNIT=ssh.service"] }

[jails.comm]
filter = "sshd"
journal = { matches = ["_COMM=sshd"] }

[jails.priority]
filter = "sshd"
journal = { matches = ["PRIORITY=3"] }

[jails.file]
filter = "sshd"
files = ["/var/log/auth.log"]

[jails.again]
filter = "recidive"
"#,
        )
        .expect("valid");
        // `comm` reads only root's entries (_UID=0 is added); `again`
        // counts the bans of `file`, which anyone can feed.
        assert_eq!(config.jails.shared_by_default(), ["comm", "unit"]);
        let without_file = JailsConfig {
            jails: (config.jails.jails.iter())
                .filter(|jail| jail.name != "file" && jail.name != "priority")
                .cloned()
                .collect(),
            ..config.jails.clone()
        };
        assert_eq!(without_file.shared_by_default(), ["again", "comm", "unit"]);
    }
}
