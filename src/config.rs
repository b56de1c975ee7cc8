//! Configuration: finding, parsing, merging and validating `orch.toml`.
//!
//! Reads `/etc/orch/orch.toml` plus `/etc/orch/conf.d/*.toml` (or one file
//! given with `--config`), layers them over the embedded default
//! (`examples/orch.toml`) and reports every problem with `file:line:column`.
//! This module only reads files; it never touches the firewall or the store.
//!
//! Merge rules: files are applied in order (main file, then conf.d files in
//! lexical filename order); a scalar key in a later file overrides earlier
//! ones, while `allow` entries (and `[[on_ban]]`/`[[on_unban]]` tables)
//! from all files are appended together. Keys
//! that no file sets keep the embedded default.

use std::fmt;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

pub mod actions;
mod binder;
mod fleet;
mod jails;
pub mod last_good;
pub use actions::{ActionConfig, ActionTarget, ActionsConfig, WebhookUrl};
mod metrics;
use binder::{Binder, bind, value_or};
pub use fleet::{FleetAuth, FleetConfig, FleetTls, ShareRule, url_host};
pub use metrics::{MetricsConfig, MetricsListen};

/// The config files read that someone other than root could have changed
/// (owner, or a writable file or directory): they can set `hooks.dir` or
/// `ignore_command`, so the daemon and check-config warn about each.
pub fn untrusted_sources(config: &Config) -> Vec<crate::file_trust::Untrusted> {
    config
        .sources
        .iter()
        .filter_map(|source| crate::file_trust::check_root_only(source).err())
        .collect()
}
pub use jails::{IncrementConfig, JailConfig, JailSource, JailsConfig, RECIDIVE};

/// The main system configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/orch/orch.toml";
/// Drop-in directory; its `*.toml` files are merged after [`SYSTEM_CONFIG`].
pub const SYSTEM_CONF_D: &str = "/etc/orch/conf.d";
/// The fully commented default configuration, used when no file exists.
pub const EMBEDDED_DEFAULT: &str = include_str!("../examples/orch.toml");

/// Name used in messages for the embedded default.
const EMBEDDED_NAME: &str = "<embedded>";
const TABLE_NAME_MAX: usize = 64;
const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -400..=400;
const DURATION_HINT: &str = r#"expected a number and unit like "1h", "30m" or "7d""#;

/// What the firewall does with packets from banned addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Reject,
}

impl Verdict {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Drop => "drop",
            Verdict::Reject => "reject",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether orch's nftables table is created as an owned table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerMode {
    /// Use an owned table when libnftables supports it.
    Auto,
    /// Require an owned table.
    On,
    /// Never use an owned table.
    Off,
}

impl OwnerMode {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerMode::Auto => "auto",
            OwnerMode::On => "on",
            OwnerMode::Off => "off",
        }
    }
}

impl fmt::Display for OwnerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[firewall]`: how orch's nftables table looks.
#[derive(Debug, Clone, PartialEq)]
pub struct FirewallConfig {
    pub table: String,
    pub priority: i32,
    pub verdict: Verdict,
    pub forward: bool,
    /// Per-address packet and byte counters on the ban sets, for `orch
    /// query` (off by default: per-CPU memory for every ban).
    pub element_counters: bool,
    pub owner: OwnerMode,
}

/// `[bans]`: limits every ban must respect.
#[derive(Debug, Clone, PartialEq)]
pub struct BansConfig {
    pub default_time: Duration,
    pub max_time: Duration,
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
}

/// How orch follows systemd.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemdConfig {
    /// Units whose start, reload, restart and stop make orch check its
    /// table (and run hooks), e.g. nftables.service, firewalld.service.
    pub watch_units: Vec<String>,
}

/// Where hook scripts live and how long each may run.
#[derive(Debug, Clone, PartialEq)]
pub struct HooksConfig {
    pub dir: PathBuf,
    pub timeout: Duration,
    /// Per-hook overrides, by file name.
    pub timeouts: std::collections::BTreeMap<String, Duration>,
}

/// The validated, merged configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub state_dir: PathBuf,
    pub firewall: FirewallConfig,
    pub bans: BansConfig,
    /// Static allowlist: networks orch never bans.
    pub allow: Vec<IpNet>,
    pub systemd: SystemdConfig,
    pub hooks: HooksConfig,
    /// Dynamic DNS allowlist: names, resolver, staleness.
    pub dns: crate::dns::DnsSettings,
    /// Log jails.
    pub jails: JailsConfig,
    /// Ban sharing with other hosts over NATS JetStream (off by default).
    pub fleet: FleetConfig,
    /// `[[on_ban]]` and `[[on_unban]]`: programs and webhooks told of bans.
    pub actions: ActionsConfig,
    /// The metrics endpoint and textfile (off by default).
    pub metrics: MetricsConfig,
    /// Files read, in merge order, for messages; empty means the embedded
    /// default alone.
    pub sources: Vec<PathBuf>,
}

impl Default for Config {
    /// The embedded default, i.e. `examples/orch.toml`.
    fn default() -> Self {
        build(&[]).expect("the embedded default configuration is valid")
    }
}

/// One problem, located.
///
/// `line` and `column` are 1-based; both are 0 when the problem concerns the
/// file as a whole (for instance it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ConfigIssue {
    fn whole_file(file: &Path, message: String) -> Self {
        ConfigIssue {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message,
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// All problems found in the configuration; displayed one issue per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", join_issues(.issues))]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

fn join_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where to read the configuration from.
#[derive(Debug, Clone, Copy)]
pub enum ConfigSource<'a> {
    /// `--config PATH`: read only this file, which must exist.
    Explicit(&'a Path),
    /// The system locations: `main` (optional) then `conf_d/*.toml`
    /// (optional) in lexical filename order.
    System { main: &'a Path, conf_d: &'a Path },
}

/// Loads, merges and validates the configuration from `source`.
///
/// With [`ConfigSource::System`], a missing main file or conf.d directory is
/// not an error; when neither provides a file the embedded default is used.
/// conf.d files must end in `.toml`; names starting with `.` are skipped.
pub fn load(source: ConfigSource) -> Result<Config, ConfigError> {
    let mut issues = Vec::new();
    let mut docs = Vec::new();
    match source {
        ConfigSource::Explicit(path) => match fs::read_to_string(path) {
            Ok(text) => docs.push(Document::new(path, text)),
            Err(err) => issues.push(read_issue(path, &err)),
        },
        ConfigSource::System { main, conf_d } => {
            match fs::read_to_string(main) {
                Ok(text) => docs.push(Document::new(main, text)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => issues.push(read_issue(main, &err)),
            }
            for path in conf_d_files(conf_d, &mut issues) {
                match fs::read_to_string(&path) {
                    Ok(text) => docs.push(Document::new(&path, text)),
                    Err(err) => issues.push(read_issue(&path, &err)),
                }
            }
        }
    }
    match build(&docs) {
        Ok(config) if issues.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError { issues }),
        Err(err) => {
            issues.extend(err.issues);
            Err(ConfigError { issues })
        }
    }
}

/// Loads from `explicit` if given, otherwise from [`SYSTEM_CONFIG`] and
/// [`SYSTEM_CONF_D`].
pub fn load_default_locations(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    match explicit {
        Some(path) => load(ConfigSource::Explicit(path)),
        None => load(ConfigSource::System {
            main: Path::new(SYSTEM_CONFIG),
            conf_d: Path::new(SYSTEM_CONF_D),
        }),
    }
}

/// Parses one document (layered over the embedded default) as if it had been
/// read from `file`.
pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    parse_layers(&[(file, text)])
}

/// Parses documents in order, as orch.toml and its conf.d files, each
/// layered over the ones before it and the embedded default.
pub fn parse_layers(layers: &[(&Path, &str)]) -> Result<Config, ConfigError> {
    let docs: Vec<Document> = layers
        .iter()
        .map(|(file, text)| Document::new(file, text.to_string()))
        .collect();
    build(&docs)
}

fn read_issue(path: &Path, err: &io::Error) -> ConfigIssue {
    ConfigIssue::whole_file(path, format!("cannot read: {err}"))
}

/// The `*.toml` files of `dir`, sorted by file name. A missing directory
/// yields nothing; other errors are recorded.
fn conf_d_files(dir: &Path, issues: &mut Vec<ConfigIssue>) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => {
            issues.push(ConfigIssue::whole_file(
                dir,
                format!("cannot read directory: {err}"),
            ));
            return Vec::new();
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                issues.push(ConfigIssue::whole_file(
                    dir,
                    format!("cannot read directory: {err}"),
                ));
                continue;
            }
        };
        let name = entry.file_name();
        let name_bytes = name.as_encoded_bytes();
        if name_bytes.starts_with(b".") || !name_bytes.ends_with(b".toml") {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: a link to a file counts, a directory does not.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push((name, path)),
            Ok(_) => {}
            Err(err) => issues.push(read_issue(&path, &err)),
        }
    }
    files.sort();
    files.into_iter().map(|(_, path)| path).collect()
}

/// One configuration text and where it came from.
struct Document {
    file: PathBuf,
    text: String,
}

impl Document {
    fn new(file: &Path, text: String) -> Self {
        Document {
            file: file.to_path_buf(),
            text,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn origin(&self, span: &Range<usize>) -> Origin {
        let (line, column) = self.line_col(span.start);
        Origin {
            file: self.file.clone(),
            line,
            column,
        }
    }
}

/// Where a value was written.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    line: usize,
    column: usize,
}

impl Origin {
    fn issue(&self, message: String) -> ConfigIssue {
        ConfigIssue {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
            message,
        }
    }
}

// ---------------------------------------------------------------------------
// Raw layers: what one file says, with spans, before validation.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    state_dir: Option<Spanned<String>>,
    allow: Option<Vec<Spanned<String>>>,
    firewall: Option<RawFirewall>,
    bans: Option<RawBans>,
    systemd: Option<RawSystemd>,
    hooks: Option<RawHooks>,
    dns: Option<RawDns>,
    jails: Option<jails::RawJails>,
    fleet: Option<fleet::RawFleet>,
    on_ban: Option<Vec<actions::RawAction>>,
    on_unban: Option<Vec<actions::RawAction>>,
    metrics: Option<metrics::RawMetrics>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    servers: Option<Vec<Spanned<String>>>,
    stale_max: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    allow: Option<Vec<RawDnsAllow>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsAllow {
    name: Spanned<String>,
    family: Option<Spanned<String>>,
    min_ttl: Option<Spanned<String>>,
    max_ttl: Option<Spanned<String>>,
    ports: Option<Vec<Spanned<i64>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    dir: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    timeouts: Option<std::collections::BTreeMap<String, Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystemd {
    watch_units: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFirewall {
    table: Option<Spanned<String>>,
    priority: Option<Spanned<i64>>,
    verdict: Option<Spanned<String>>,
    forward: Option<Spanned<bool>>,
    element_counters: Option<Spanned<bool>>,
    owner: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBans {
    default_time: Option<Spanned<String>>,
    max_time: Option<Spanned<String>>,
    min_prefix_v4: Option<Spanned<i64>>,
    min_prefix_v6: Option<Spanned<i64>>,
}

// ---------------------------------------------------------------------------
// Merged values: each remembers where it was set.

/// A validated value and where it came from.
type Located<T> = Option<(T, Origin)>;

#[derive(Debug, Default)]
struct Merged {
    state_dir: Located<PathBuf>,
    table: Located<String>,
    priority: Located<i32>,
    verdict: Located<Verdict>,
    forward: Located<bool>,
    element_counters: Located<bool>,
    owner: Located<OwnerMode>,
    default_time: Located<Duration>,
    max_time: Located<Duration>,
    min_prefix_v4: Located<u8>,
    min_prefix_v6: Located<u8>,
    allow: Vec<IpNet>,
    watch_units: Located<Vec<String>>,
    hooks_dir: Located<PathBuf>,
    hooks_timeout: Located<Duration>,
    hook_timeouts: std::collections::BTreeMap<String, Duration>,
    dns_servers: Located<Vec<std::net::SocketAddr>>,
    dns_stale_max: Located<Duration>,
    dns_grace: Located<Duration>,
    dns_allow: Vec<crate::dns::DnsAllowEntry>,
    jails: jails::JailsDraft,
    fleet: fleet::FleetDraft,
    actions: actions::ActionsDraft,
    metrics: metrics::MetricsDraft,
}

impl Merged {
    /// Parses `doc`, validates every value it sets and applies it.
    fn apply(&mut self, doc: &Document, issues: &mut Vec<ConfigIssue>) {
        let layer: RawLayer = match toml::from_str(&doc.text) {
            Ok(layer) => layer,
            Err(err) => {
                issues.push(toml_issue(doc, &err));
                return;
            }
        };
        let mut b = Binder::new(doc, issues);
        bind!(b, self.state_dir, layer.state_dir, check_state_dir);
        let allow = layer.allow.unwrap_or_default();
        self.allow.extend(b.each(allow, "allow", check_net));
        if let Some(systemd) = layer.systemd {
            let mut b = b.section("systemd");
            bind!(b, self.watch_units, systemd.watch_units, check_units);
        }
        if let Some(hooks) = layer.hooks {
            self.apply_hooks(hooks, &mut b.section("hooks"));
        }
        if let Some(dns) = layer.dns {
            self.apply_dns(dns, &mut b.section("dns"));
        }
        if let Some(jails) = layer.jails {
            self.jails.apply(jails, &mut b.section("jails"));
        }
        if let Some(fleet) = layer.fleet {
            self.fleet.apply(fleet, &mut b.section("fleet"));
        }
        for (field, raw) in [("on_ban", layer.on_ban), ("on_unban", layer.on_unban)] {
            self.actions.apply(raw.unwrap_or_default(), field, &mut b);
        }
        if let Some(metrics) = layer.metrics {
            self.metrics.apply(metrics, &mut b.section("metrics"));
        }
        if let Some(firewall) = layer.firewall {
            self.apply_firewall(firewall, &mut b.section("firewall"));
        }
        if let Some(bans) = layer.bans {
            self.apply_bans(bans, &mut b.section("bans"));
        }
    }

    fn apply_firewall(&mut self, raw: RawFirewall, b: &mut Binder) {
        bind!(b, self.table, raw.table, check_table);
        bind!(b, self.priority, raw.priority, int_in(PRIORITY_RANGE));
        bind!(b, self.verdict, raw.verdict, check_verdict);
        bind!(b, self.forward, raw.forward, Ok);
        bind!(b, self.element_counters, raw.element_counters, Ok);
        bind!(b, self.owner, raw.owner, check_owner);
    }

    fn apply_bans(&mut self, raw: RawBans, b: &mut Binder) {
        bind!(b, self.default_time, raw.default_time, check_duration);
        bind!(b, self.max_time, raw.max_time, check_duration);
        bind!(b, self.min_prefix_v4, raw.min_prefix_v4, int_in(0..=32));
        bind!(b, self.min_prefix_v6, raw.min_prefix_v6, int_in(0..=128));
    }

    fn apply_hooks(&mut self, raw: RawHooks, b: &mut Binder) {
        bind!(b, self.hooks_dir, raw.dir, check_state_dir);
        bind!(b, self.hooks_timeout, raw.timeout, check_duration);
        for (name, timeout) in raw.timeouts.unwrap_or_default() {
            let key = format!("timeouts.{name}");
            if let Some((timeout, _)) = b.value(timeout, &key, check_duration) {
                self.hook_timeouts.insert(name, timeout);
            }
        }
    }

    fn apply_dns(&mut self, raw: RawDns, b: &mut Binder) {
        if let Some(servers) = raw.servers {
            // The list as a whole is "set" where its first entry stands.
            let at = servers.first().map(|first| b.origin(&first.span()));
            let servers = b.each(servers, "servers", |s| check_dns_server(&s));
            self.dns_servers = Some((servers, at.unwrap_or_else(|| b.origin(&(0..0)))));
        }
        bind!(b, self.dns_stale_max, raw.stale_max, check_duration);
        bind!(b, self.dns_grace, raw.grace, check_duration);
        for (index, entry) in raw.allow.unwrap_or_default().into_iter().enumerate() {
            let entry = self.dns_allow_entry(entry, &mut b.section(&format!("allow[{index}]")));
            self.dns_allow.extend(entry);
        }
    }

    /// One `[[dns.allow]]` entry; `None` when it is invalid or names a name
    /// already listed.
    fn dns_allow_entry(
        &self,
        raw: RawDnsAllow,
        b: &mut Binder,
    ) -> Option<crate::dns::DnsAllowEntry> {
        let (name, name_at) = b.value(raw.name, "name", check_dns_name)?;
        if self.dns_allow.iter().any(|known| known.name == name) {
            b.issue(&name_at, "name", format!("{name:?} is already listed"));
            return None;
        }
        // Unset keys (and invalid ones, which are reported) keep these.
        let mut family = Some((crate::dns::DnsFamily::Any, name_at.clone()));
        let mut min_ttl = Some((Duration::from_secs(30), name_at.clone()));
        let mut max_ttl = Some((Duration::from_secs(3600), name_at));
        bind!(b, family, raw.family, check_family);
        bind!(b, min_ttl, raw.min_ttl, check_duration);
        bind!(b, max_ttl, raw.max_ttl, check_duration);
        let (Some((family, _)), Some((min_ttl, _)), Some((max_ttl, max_at))) =
            (family, min_ttl, max_ttl)
        else {
            return None;
        };
        if max_ttl < min_ttl {
            let message = format!("{} is shorter than its min_ttl", b.key("max_ttl"));
            b.issues().push(max_at.issue(message));
            return None;
        }
        let ports = b.each(raw.ports.unwrap_or_default(), "ports", check_port);
        Some(crate::dns::DnsAllowEntry {
            name,
            family,
            min_ttl,
            max_ttl,
            ports,
        })
    }

    /// Cross-field checks, then the final config. `None` only when a value
    /// is missing, which cannot happen once the embedded default applied.
    fn finish(self, sources: Vec<PathBuf>, issues: &mut Vec<ConfigIssue>) -> Option<Config> {
        if let (Some((default_time, default_at)), Some((max_time, max_at))) =
            (&self.default_time, &self.max_time)
            && max_time < default_time
        {
            // Point at whichever of the two was set last by the user.
            let at = if max_at.file.as_os_str() == EMBEDDED_NAME {
                default_at
            } else {
                max_at
            };
            issues.push(at.issue(format!(
                "bans.max_time ({}) is shorter than bans.default_time ({})",
                humantime::format_duration(*max_time),
                humantime::format_duration(*default_time)
            )));
        }
        Some(Config {
            state_dir: self.state_dir?.0,
            firewall: FirewallConfig {
                table: self.table?.0,
                priority: self.priority?.0,
                verdict: self.verdict?.0,
                forward: self.forward?.0,
                element_counters: self.element_counters?.0,
                owner: self.owner?.0,
            },
            bans: BansConfig {
                default_time: self.default_time?.0,
                max_time: self.max_time?.0,
                min_prefix_v4: self.min_prefix_v4?.0,
                min_prefix_v6: self.min_prefix_v6?.0,
            },
            allow: self.allow,
            systemd: SystemdConfig {
                watch_units: self.watch_units?.0,
            },
            dns: crate::dns::DnsSettings {
                servers: self.dns_servers?.0,
                stale_max: self.dns_stale_max?.0,
                grace: self.dns_grace?.0,
                entries: self.dns_allow,
            },
            hooks: HooksConfig {
                dir: self.hooks_dir?.0,
                timeout: self.hooks_timeout?.0,
                timeouts: self.hook_timeouts,
            },
            jails: self.jails.finish(issues),
            fleet: self.fleet.finish(issues),
            actions: self.actions.finish(),
            metrics: self.metrics.finish(),
            sources,
        })
    }
}

/// Layers `docs` over the embedded default and validates the result,
/// collecting every issue from every document.
fn build(docs: &[Document]) -> Result<Config, ConfigError> {
    let mut issues = Vec::new();
    let mut merged = Merged::default();
    let embedded = Document::new(Path::new(EMBEDDED_NAME), EMBEDDED_DEFAULT.to_string());
    merged.apply(&embedded, &mut issues);
    for doc in docs {
        let first = issues.len();
        merged.apply(doc, &mut issues);
        // Report each file's problems top to bottom.
        issues[first..].sort_by_key(|issue| (issue.line, issue.column));
    }
    let sources = docs.iter().map(|doc| doc.file.clone()).collect();
    match merged.finish(sources, &mut issues) {
        Some(config) if issues.is_empty() => Ok(config),
        Some(_) => Err(ConfigError { issues }),
        None => {
            if issues.is_empty() {
                issues.push(ConfigIssue::whole_file(
                    Path::new(EMBEDDED_NAME),
                    "the embedded default configuration is incomplete".to_string(),
                ));
            }
            Err(ConfigError { issues })
        }
    }
}

/// Turns a TOML syntax or schema error into an issue at its span, naming
/// the key when the error is about a value's type.
fn toml_issue(doc: &Document, err: &toml::de::Error) -> ConfigIssue {
    let mut message = friendly_type_names(err.message().trim());
    // `allow` and `state_dir` written below a [table] header end up inside it.
    for key in ["allow", "state_dir"] {
        if message.starts_with(&format!("unknown field `{key}`")) {
            message.push_str(&format!(
                "; `{key}` is a top-level key: put it above the first [section] header"
            ));
        }
    }
    let Some(span) = err.span() else {
        return ConfigIssue::whole_file(&doc.file, message);
    };
    if message == "duplicate key"
        && let Some(key) = doc.text.get(span.clone())
    {
        message = format!("duplicate key `{}`", key.trim());
    }
    if let Ok(root) = toml::de::DeTable::parse(&doc.text)
        && let Some(key) = key_at(root.get_ref(), span.start, "")
    {
        message = format!("{key}: {message}");
    }
    doc.origin(&span).issue(message)
}

/// Replaces Rust type names in serde messages with TOML ones.
fn friendly_type_names(message: &str) -> String {
    let mut message = message
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array of strings")
        .replace("expected a boolean", "expected true or false");
    for raw in ["RawLayer", "RawFirewall", "RawBans"] {
        message = message.replace(&format!("expected struct {raw}"), "expected a table");
    }
    message
}

/// The dotted key (with `[index]` for array items) of the non-table value
/// whose span contains byte `pos`; `None` when `pos` is on a key or header.
fn key_at(table: &toml::de::DeTable<'_>, pos: usize, prefix: &str) -> Option<String> {
    use toml::de::DeValue;
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        match value.get_ref() {
            DeValue::Table(inner) => {
                if let Some(found) = key_at(inner, pos, &path) {
                    return Some(found);
                }
            }
            DeValue::Array(items) if value.span().contains(&pos) => {
                let index = items.iter().position(|item| item.span().contains(&pos));
                return Some(match index {
                    Some(index) => format!("{path}[{index}]"),
                    None => path,
                });
            }
            _ if value.span().contains(&pos) => return Some(path),
            _ => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Value checks. Each returns the message that follows "key: ".

fn check_state_dir(s: String) -> Result<PathBuf, String> {
    let path = PathBuf::from(&s);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("{s:?} must be an absolute path (starting with /)"))
    }
}

fn check_table(s: String) -> Result<String, String> {
    let starts_with_letter = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let valid_chars = s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if starts_with_letter && valid_chars && s.len() <= TABLE_NAME_MAX {
        Ok(s)
    } else {
        Err(format!(
            "{s:?} is not a valid table name: use 1-{TABLE_NAME_MAX} letters, digits \
             or underscores, starting with a letter"
        ))
    }
}

fn check_verdict(s: String) -> Result<Verdict, String> {
    match s.as_str() {
        "drop" => Ok(Verdict::Drop),
        "reject" => Ok(Verdict::Reject),
        _ => Err(format!(
            r#"{s:?} is not a verdict; expected "drop" or "reject""#
        )),
    }
}

fn check_owner(s: String) -> Result<OwnerMode, String> {
    match s.as_str() {
        "auto" => Ok(OwnerMode::Auto),
        "on" => Ok(OwnerMode::On),
        "off" => Ok(OwnerMode::Off),
        _ => Err(format!(
            r#"{s:?} is not an owner mode; expected "auto", "on" or "off""#
        )),
    }
}

/// An address or network, as in `allow` and a jail's `ignore`.
fn check_net(s: String) -> Result<IpNet, crate::addr::AddrError> {
    crate::addr::parse_net(&s)
}

fn in_range(n: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} is out of range; expected {} to {}",
            range.start(),
            range.end()
        ))
    }
}

/// Unit names as systemd spells them: `name.service` and friends.
fn check_units(units: Vec<String>) -> Result<Vec<String>, String> {
    const SUFFIXES: [&str; 4] = [".service", ".target", ".socket", ".path"];
    for unit in &units {
        let well_formed = !unit.contains('/')
            && !unit.chars().any(char::is_whitespace)
            && SUFFIXES
                .iter()
                .any(|suffix| unit.len() > suffix.len() && unit.ends_with(suffix));
        if !well_formed {
            return Err(format!(
                "{unit:?} is not a unit name like \"nftables.service\""
            ));
        }
    }
    Ok(units)
}

/// A resolver address: "192.0.2.53", "[2001:db8::53]:5353", "127.0.0.1:5353".
fn check_dns_server(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not an IP address or address:port"))
}

/// A DNS name as it may be looked up: letters, digits, '-', '_' and dots.
fn check_dns_name(name: String) -> Result<String, String> {
    let labels_ok = name.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if !name.is_empty() && name.len() <= 253 && labels_ok {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not a DNS name like \"ci.example.org\""
        ))
    }
}

/// An integer in `range`, converted to the type its setting is kept in.
fn int_in<T>(range: std::ops::RangeInclusive<i64>) -> impl Fn(i64) -> Result<T, String>
where
    T: TryFrom<i64, Error: fmt::Display>,
{
    move |n| in_range(n, range.clone()).and_then(|n| T::try_from(n).map_err(|err| err.to_string()))
}

fn check_family(s: String) -> Result<crate::dns::DnsFamily, String> {
    match s.as_str() {
        "any" => Ok(crate::dns::DnsFamily::Any),
        "ipv4" => Ok(crate::dns::DnsFamily::Ipv4),
        "ipv6" => Ok(crate::dns::DnsFamily::Ipv6),
        other => Err(format!(
            "{other:?} is not one of \"any\", \"ipv4\", \"ipv6\""
        )),
    }
}

fn check_port(port: i64) -> Result<u16, &'static str> {
    u16::try_from(port)
        .ok()
        .filter(|port| *port > 0)
        .ok_or("a port is a number from 1 to 65535")
}

/// The longest ban time accepted anywhere: ten years. The kernel refuses
/// set timeouts somewhere past a century; a decade is "permanent" for a ban.
pub const MAX_BAN_TIME: Duration = Duration::from_secs(3650 * 86_400);

fn check_duration(s: impl AsRef<str>) -> Result<Duration, String> {
    let s = s.as_ref();
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!("{s:?} must be longer than zero")),
        Ok(d) if d > MAX_BAN_TIME => Err(format!(
            "{s:?} is longer than orch's limit of {}",
            humantime::format_duration(MAX_BAN_TIME)
        )),
        Ok(d) => Ok(d),
        Err(err) => Err(format!(
            "invalid duration {s:?}: {}; {DURATION_HINT}",
            duration_problem(s, &err)
        )),
    }
}

/// humantime's messages quote byte offsets; say what is wrong instead.
fn duration_problem(s: &str, err: &humantime::DurationError) -> String {
    use humantime::DurationError as E;
    match err {
        E::InvalidCharacter(at) | E::NumberExpected(at) => match s.get(*at..) {
            Some(rest) if !rest.is_empty() => {
                let c = rest.chars().next().unwrap_or_default();
                if matches!(err, E::NumberExpected(_)) {
                    format!("expected a number at {c:?}")
                } else {
                    format!("unexpected character {c:?}")
                }
            }
            _ => "unexpected end".to_string(),
        },
        E::UnknownUnit { unit, value, .. } if unit.is_empty() => {
            format!("missing unit after {value}")
        }
        E::UnknownUnit { unit, .. } => format!("unknown unit {unit:?}"),
        E::NumberOverflow => "the number is too large".to_string(),
        E::Empty => "it is empty".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new("test.toml"))
    }

    fn issues(text: &str) -> Vec<ConfigIssue> {
        match parse(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(err) => err.issues,
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).expect("write test file");
        path
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test network")
    }

    #[test]
    fn dns_allow_entries_parse_and_bad_ones_are_located() {
        let config = parse_str(
            "[dns]\nservers = [\"127.0.0.1:5353\", \"192.0.2.53\"]\n[[dns.allow]]\nname = \"ci.example.org\"\nfamily = \"ipv4\"\nmax_ttl = \"5m\"\nports = [22, 443]\n",
            Path::new("t.toml"),
        )
        .expect("valid");
        assert_eq!(config.dns.servers.len(), 2);
        assert_eq!(config.dns.servers[1].port(), 53);
        assert_eq!(config.dns.entries.len(), 1);
        assert_eq!(config.dns.entries[0].family, crate::dns::DnsFamily::Ipv4);
        assert_eq!(config.dns.entries[0].min_ttl, Duration::from_secs(30));
        assert_eq!(config.dns.entries[0].max_ttl, Duration::from_secs(300));
        assert_eq!(config.dns.entries[0].ports, [22, 443]);
        let err = parse_str(
            "[[dns.allow]]\nname = \"bad name!\"\n[[dns.allow]]\nname = \"ok.example\"\nfamily = \"ipx\"\n",
            Path::new("t.toml"),
        )
        .expect_err("two bad entries");
        let text = err.to_string();
        assert!(text.contains("t.toml:2:8: dns.allow[0].name"), "{text}");
        assert!(text.contains("t.toml:5:10: dns.allow[1].family"), "{text}");
    }

    #[test]
    fn hook_settings_parse_with_per_hook_timeouts() {
        let config = parse_str(
            "[hooks]\ndir = \"/srv/hooks\"\ntimeout = \"5s\"\n[hooks.timeouts]\n\"10-slow\" = \"1m\"\n",
            Path::new("t.toml"),
        )
        .expect("valid");
        assert_eq!(config.hooks.dir, PathBuf::from("/srv/hooks"));
        assert_eq!(config.hooks.timeout, Duration::from_secs(5));
        assert_eq!(
            config.hooks.timeouts.get("10-slow"),
            Some(&Duration::from_secs(60))
        );
        let err =
            parse_str("[hooks.timeouts]\nx = \"soon\"\n", Path::new("t.toml")).expect_err("bad");
        assert!(
            err.to_string().contains("t.toml:2:5: hooks.timeouts.x"),
            "{err}"
        );
    }

    #[test]
    fn watch_units_are_checked_and_replaced_not_appended() {
        let config = parse_str(
            "[systemd]\nwatch_units = [\"nftables.service\", \"firewalld.service\"]\n",
            Path::new("t.toml"),
        )
        .expect("valid");
        assert_eq!(
            config.systemd.watch_units,
            ["nftables.service", "firewalld.service"]
        );
        let err = parse_str(
            "[systemd]\nwatch_units = [\"nftables\"]\n",
            Path::new("t.toml"),
        )
        .expect_err("bad unit");
        assert!(
            err.to_string().contains("t.toml:2:15: systemd.watch_units"),
            "{err}"
        );
    }

    #[test]
    fn default_matches_documented_values() {
        let config = Config::default();
        assert_eq!(
            config,
            Config {
                state_dir: PathBuf::from("/var/lib/orch"),
                firewall: FirewallConfig {
                    table: "orch".to_string(),
                    priority: -10,
                    verdict: Verdict::Drop,
                    forward: false,
                    element_counters: false,
                    owner: OwnerMode::Auto,
                },
                bans: BansConfig {
                    default_time: Duration::from_secs(3600),
                    max_time: Duration::from_secs(365 * 86400),
                    min_prefix_v4: 16,
                    min_prefix_v6: 32,
                },
                allow: Vec::new(),
                systemd: SystemdConfig {
                    watch_units: vec!["nftables.service".to_string()],
                },
                dns: crate::dns::DnsSettings {
                    servers: Vec::new(),
                    stale_max: Duration::from_secs(86_400),
                    grace: Duration::from_secs(30),
                    entries: Vec::new(),
                },
                hooks: HooksConfig {
                    dir: PathBuf::from("/etc/orch/hooks.d"),
                    timeout: Duration::from_secs(10),
                    timeouts: Default::default(),
                },
                jails: JailsConfig::default(),
                fleet: FleetConfig::default(),
                actions: ActionsConfig::default(),
                metrics: MetricsConfig::default(),
                sources: Vec::new(),
            }
        );
    }

    #[test]
    fn embedded_default_parses_alone_to_defaults() {
        // Parsing the embedded text as a user file changes nothing but sources.
        let config = parse_str(EMBEDDED_DEFAULT, Path::new("orch.toml")).expect("valid");
        assert_eq!(config.sources, vec![PathBuf::from("orch.toml")]);
        assert_eq!(
            Config {
                sources: Vec::new(),
                ..config
            },
            Config::default()
        );
        // An empty file keeps every default too.
        let empty = parse("").expect("valid");
        assert_eq!(empty.firewall, Config::default().firewall);
        assert_eq!(empty.bans, Config::default().bans);
    }

    #[test]
    fn embedded_default_sets_every_key() {
        // Every key must be spelled out in examples/orch.toml.
        let layer: RawLayer = toml::from_str(EMBEDDED_DEFAULT).expect("embedded parses");
        let fw = layer.firewall.expect("[firewall]");
        let bans = layer.bans.expect("[bans]");
        assert!(layer.state_dir.is_some() && layer.allow.is_some());
        assert!(fw.table.is_some() && fw.priority.is_some() && fw.verdict.is_some());
        assert!(fw.forward.is_some() && fw.owner.is_some());
        assert!(bans.default_time.is_some() && bans.max_time.is_some());
        assert!(bans.min_prefix_v4.is_some() && bans.min_prefix_v6.is_some());
    }

    #[test]
    fn parses_every_field() {
        let config = parse(
            r#"
state_dir = "/srv/orch"
allow = ["192.0.2.0/24", "2001:db8::1", "10.0.0.1"]

[firewall]
table = "my_orch2"
priority = 400
verdict = "reject"
forward = true
owner = "off"

[bans]
default_time = "30m"
max_time = "2d 12h"
min_prefix_v4 = 24
min_prefix_v6 = 64
"#,
        )
        .expect("valid");
        assert_eq!(config.state_dir, PathBuf::from("/srv/orch"));
        assert_eq!(
            config.allow,
            vec![
                net("192.0.2.0/24"),
                net("2001:db8::1/128"),
                net("10.0.0.1/32")
            ]
        );
        assert_eq!(
            config.firewall,
            FirewallConfig {
                table: "my_orch2".to_string(),
                priority: 400,
                verdict: Verdict::Reject,
                forward: true,
                element_counters: false,
                owner: OwnerMode::Off,
            }
        );
        assert_eq!(
            config.bans,
            BansConfig {
                default_time: Duration::from_secs(1800),
                max_time: Duration::from_secs(60 * 3600),
                min_prefix_v4: 24,
                min_prefix_v6: 64,
            }
        );
        assert!(config.allow[2].contains(&IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));

        let on = parse("[firewall]\nowner = \"on\"\nverdict = \"drop\"\n").expect("valid");
        assert_eq!(on.firewall.owner, OwnerMode::On);
        assert_eq!(on.firewall.verdict, Verdict::Drop);
        let low = parse("[firewall]\npriority = -400\n").expect("valid");
        assert_eq!(low.firewall.priority, -400);
    }

    #[test]
    fn unknown_key_is_located() {
        let found = issues("state_dir = \"/x\"\n\n[firewall]\n  tabel = \"x\"\n");
        assert_eq!(found.len(), 1);
        let issue = &found[0];
        assert_eq!((issue.line, issue.column), (4, 3), "{issue}");
        assert!(issue.message.contains("unknown field `tabel`"), "{issue}");
        assert!(issue.message.contains("`table`"), "{issue}");
        assert!(
            issue
                .to_string()
                .starts_with("test.toml:4:3: unknown field")
        );
    }

    #[test]
    fn unknown_top_level_key_and_misplaced_allow() {
        let found = issues("statedir = \"/x\"\n");
        assert_eq!((found[0].line, found[0].column), (1, 1));
        assert!(found[0].message.contains("unknown field `statedir`"));

        let found = issues("[bans]\nallow = [\"192.0.2.1\"]\n");
        assert_eq!((found[0].line, found[0].column), (2, 1));
        assert!(found[0].message.contains("top-level key"), "{}", found[0]);
    }

    #[test]
    fn syntax_error_is_located() {
        let found = issues("[firewall]\ntable = \"orch\"\npriority = = 3\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 3, "{}", found[0]);
        assert!(found[0].column >= 10, "{}", found[0]);
        assert!(!found[0].message.is_empty());

        let found = issues("[firewall\n");
        assert_eq!(found[0].line, 1, "{}", found[0]);
    }

    #[test]
    fn wrong_type_is_located() {
        let found = issues("[firewall]\nforward = \"yes\"\n");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].line, found[0].column), (2, 11), "{}", found[0]);
        assert_eq!(
            found[0].message,
            r#"firewall.forward: invalid type: string "yes", expected true or false"#
        );
        let found = issues("allow = [\"192.0.2.1\", 7]\n");
        assert!(found[0].message.starts_with("allow[1]: "), "{}", found[0]);
        let found = issues("[bans]\nmin_prefix_v6 = 1.5\n");
        assert!(
            found[0]
                .message
                .starts_with("bans.min_prefix_v6: invalid type: floating point")
                && found[0].message.ends_with("expected an integer"),
            "{}",
            found[0]
        );
        let found = issues("firewall = 3\n");
        assert!(
            found[0].message.ends_with("expected a table"),
            "{}",
            found[0]
        );
        let found = issues("state_dir = \"/a\"\nstate_dir = \"/b\"\n");
        assert_eq!(found[0].message, "duplicate key `state_dir`");
        assert_eq!((found[0].line, found[0].column), (2, 1));
    }

    #[test]
    fn every_bad_allow_entry_is_reported() {
        let found =
            issues("allow = [\n  \"192.0.2.0/24\",\n  \"not-an-ip\",\n  \"2001:db8::/200\",\n]\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].line, found[0].column), (3, 3));
        assert_eq!((found[1].line, found[1].column), (4, 3));
        assert!(found[0].message.starts_with("allow[1]: "), "{}", found[0]);
        assert!(found[0].message.contains("not-an-ip"));
        assert!(found[1].message.starts_with("allow[2]: "), "{}", found[1]);
    }

    #[test]
    fn host_bits_suggest_network() {
        let found = issues("allow = [\"192.0.2.77/24\", \"2001:db8::1/32\"]\n");
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].line, found[0].column), (1, 10));
        assert!(found[0].message.contains("host bits"), "{}", found[0]);
        assert!(found[0].message.contains("192.0.2.0/24"), "{}", found[0]);
        assert!(found[1].message.contains("2001:db8::/32"), "{}", found[1]);
    }

    #[test]
    fn every_validation_error_is_reported() {
        let text = r#"state_dir = "var/lib/orch"
[firewall]
table = "1-bad"
priority = 401
verdict = "accept"
owner = "maybe"
[bans]
default_time = "1 fortnight"
max_time = "0s"
min_prefix_v4 = 33
min_prefix_v6 = -1
"#;
        let found = issues(text);
        let keys: Vec<(usize, &str)> = found
            .iter()
            .map(|i| (i.line, i.message.split(':').next().unwrap_or_default()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (1, "state_dir"),
                (3, "firewall.table"),
                (4, "firewall.priority"),
                (5, "firewall.verdict"),
                (6, "firewall.owner"),
                (8, "bans.default_time"),
                (9, "bans.max_time"),
                (10, "bans.min_prefix_v4"),
                (11, "bans.min_prefix_v6"),
            ]
        );
        let duration = &found[5];
        assert_eq!(duration.column, 16);
        assert_eq!(
            duration.to_string(),
            r#"test.toml:8:16: bans.default_time: invalid duration "1 fortnight": unknown unit "fortnight"; expected a number and unit like "1h", "30m" or "7d""#
        );
        assert!(found[6].message.contains("longer than zero"));
        assert!(found[2].message.contains("-400 to 400"));
    }

    #[test]
    fn table_name_rules() {
        assert!(parse(&format!("[firewall]\ntable = \"a{}\"\n", "b".repeat(63))).is_ok());
        for bad in ["", "_x", "a-b", "a b", "ä"] {
            let text = format!("[firewall]\ntable = {bad:?}\n");
            assert_eq!(issues(&text).len(), 1, "{bad:?}");
        }
        let long = format!("[firewall]\ntable = \"a{}\"\n", "b".repeat(64));
        assert_eq!(issues(&long).len(), 1);
    }

    #[test]
    fn duration_messages_are_human() {
        let msg = |s: &str| check_duration(s).expect_err(s);
        assert!(msg("").contains("empty"));
        assert!(msg("5").contains("missing unit after 5"), "{}", msg("5"));
        assert!(msg("h").contains("expected a number"), "{}", msg("h"));
        assert!(
            msg("1h!").contains("unexpected character '!'"),
            "{}",
            msg("1h!")
        );
        assert_eq!(check_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn max_shorter_than_default_is_an_error() {
        let found = issues("[bans]\ndefault_time = \"2h\"\nmax_time = \"1h\"\n");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].line, found[0].column), (3, 12));
        assert!(found[0].message.contains("shorter than bans.default_time"));
        // Only default_time set by the user: point at it.
        let found = issues("[bans]\ndefault_time = \"400d\"\n");
        assert_eq!((found[0].line, found[0].column), (2, 16), "{}", found[0]);
    }

    #[test]
    fn conf_d_merges_in_lexical_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "orch.toml",
            "allow = [\"192.0.2.1\"]\n[firewall]\ntable = \"main\"\npriority = 5\n",
        );
        let conf_d = dir.path().join("conf.d");
        fs::create_dir(&conf_d).expect("mkdir");
        // Written out of order on purpose.
        let b = write(
            &conf_d,
            "20-b.toml",
            "allow = [\"198.51.100.0/24\"]\n[firewall]\ntable = \"second\"\n",
        );
        let a = write(
            &conf_d,
            "10-a.toml",
            "allow = [\"2001:db8::/48\"]\n[firewall]\ntable = \"first\"\nverdict = \"reject\"\n",
        );
        write(&conf_d, "30-ignored.conf", "this is not toml");
        write(&conf_d, ".hidden.toml", "this is not toml");
        fs::create_dir(conf_d.join("40-dir.toml")).expect("mkdir");

        let config = load(ConfigSource::System {
            main: &main,
            conf_d: &conf_d,
        })
        .expect("valid");
        assert_eq!(config.sources, vec![main, a, b]);
        assert_eq!(config.firewall.table, "second");
        assert_eq!(config.firewall.priority, 5);
        assert_eq!(config.firewall.verdict, Verdict::Reject);
        assert_eq!(config.bans, Config::default().bans);
        assert_eq!(
            config.allow,
            vec![
                net("192.0.2.1/32"),
                net("2001:db8::/48"),
                net("198.51.100.0/24")
            ]
        );
    }

    #[test]
    fn errors_from_all_files_are_collected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(dir.path(), "orch.toml", "[bans]\nmin_prefix_v4 = 40\n");
        let conf_d = dir.path().join("conf.d");
        fs::create_dir(&conf_d).expect("mkdir");
        let x = write(
            &conf_d,
            "10-x.toml",
            "\n[bans]\ndefault_time = \"1 hourr\"\n",
        );
        let y = write(&conf_d, "20-y.toml", "[firewall\n");
        let err = load(ConfigSource::System {
            main: &main,
            conf_d: &conf_d,
        })
        .expect_err("invalid");
        let files: Vec<&Path> = err.issues.iter().map(|i| i.file.as_path()).collect();
        assert_eq!(files, vec![main.as_path(), x.as_path(), y.as_path()]);
        assert_eq!((err.issues[1].line, err.issues[1].column), (3, 16));
        let text = err.to_string();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains(&format!(
            "{}:3:16: bans.default_time: invalid duration",
            x.display()
        )));
    }

    #[test]
    fn missing_files_use_embedded_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = load(ConfigSource::System {
            main: &dir.path().join("orch.toml"),
            conf_d: &dir.path().join("conf.d"),
        })
        .expect("valid");
        assert_eq!(config, Config::default());
        assert!(config.sources.is_empty());

        // An empty conf.d with no main file also means the default.
        fs::create_dir(dir.path().join("conf.d")).expect("mkdir");
        let config = load(ConfigSource::System {
            main: &dir.path().join("orch.toml"),
            conf_d: &dir.path().join("conf.d"),
        })
        .expect("valid");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn conf_d_without_main_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf_d = dir.path().join("conf.d");
        fs::create_dir(&conf_d).expect("mkdir");
        let only = write(&conf_d, "50-only.toml", "[firewall]\nforward = true\n");
        let config = load(ConfigSource::System {
            main: &dir.path().join("orch.toml"),
            conf_d: &conf_d,
        })
        .expect("valid");
        assert!(config.firewall.forward);
        assert_eq!(config.sources, vec![only]);
    }

    #[test]
    fn explicit_path_reads_only_that_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "custom.toml", "state_dir = \"/tmp/orch\"\n");
        let config = load(ConfigSource::Explicit(&path)).expect("valid");
        assert_eq!(config.state_dir, PathBuf::from("/tmp/orch"));
        assert_eq!(config.sources, vec![path]);
        assert_eq!(config.firewall, Config::default().firewall);
    }

    #[test]
    fn explicit_path_missing_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope.toml");
        let err = load_default_locations(Some(&path)).expect_err("missing");
        assert_eq!(err.issues.len(), 1);
        assert_eq!(err.issues[0].file, path);
        assert_eq!(err.issues[0].line, 0);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}: cannot read: ", path.display())),
            "{text}"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        let doc = Document::new(Path::new("x"), "ab\nçd = 1\n".to_string());
        assert_eq!(doc.line_col(0), (1, 1));
        assert_eq!(doc.line_col(3), (2, 1));
        // 'ç' is two bytes but one column.
        assert_eq!(doc.line_col(5), (2, 2));
        assert_eq!(doc.line_col(4), (2, 1)); // inside 'ç': clamps back
        assert_eq!(doc.line_col(1000), (3, 1));
    }
}
