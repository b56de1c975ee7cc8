//! The `[fleet]` section of `orch.toml`: sharing bans with other hosts over
//! NATS JetStream, validated with `file:line:column` like the rest.
//!
//! ```toml
//! [fleet]
//! servers = ["tls://nats1.example.org:4222", "tls://nats2.example.org:4222"]
//! name = "web1"                        # default: the host name
//! user = "web1"                        # or credentials = "/etc/orch/fleet.creds"
//! password_file = "/etc/orch/fleet.password"   # or nkey_file = ...
//! tls = { ca = "/etc/orch/nats-ca.pem" }       # cert/key for client certificates
//! bucket = "orch-bans"
//! replicas = 1
//! bucket_max_keys = 500000             # used only when orch creates the bucket
//! publish = true
//! share = ["manual", "jails"]          # which bans go out: manual, jails (those no local
//!                                      # user can feed: journal jails on units), jail names
//! apply = true
//! max_remote_bans = 100000
//! max_remote_time = "1w"
//! remote_min_prefix_v4 = 24            # other hosts' bans: no broader than this
//! remote_min_prefix_v6 = 48
//! max_remote_bans_per_origin = 10000
//! max_remote_space_v4 = 12             # one origin covers at most a /12's worth
//! max_remote_space_v6 = 32
//! admin = { user = "admin", password_file = "/etc/orch/fleet-admin.password" }
//! ```
//!
//! The fleet is off unless `servers` names at least one server. Keys merge
//! per key across files, as elsewhere. This module only validates; it must
//! not connect anywhere.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Binder, ConfigIssue, Located, bind, check_duration, in_range, int_in, value_or};

/// Default bucket name.
pub const DEFAULT_BUCKET: &str = "orch-bans";
/// Default cap on bans other hosts may hold on this one.
pub const DEFAULT_MAX_REMOTE_BANS: usize = 100_000;
/// Default narrowest prefix another host may ban here (IPv4, IPv6).
pub const DEFAULT_REMOTE_MIN_PREFIX: (u8, u8) = (24, 48);
/// Default size of the bucket orch creates, in keys.
pub const DEFAULT_BUCKET_MAX_KEYS: usize = 500_000;
/// Default cap on the networks one other host may ban here.
pub const DEFAULT_MAX_REMOTE_BANS_PER_ORIGIN: usize = 10_000;
/// Default cap on the space one other host's bans may cover here, as a
/// prefix length (IPv4, IPv6): a /12's worth of addresses, a /32's of /64s.
pub const DEFAULT_MAX_REMOTE_SPACE: (u8, u8) = (12, 32);
/// Default cap on how long another host's ban lasts here.
pub const DEFAULT_MAX_REMOTE_TIME: Duration = Duration::from_secs(7 * 86_400);
/// Longest host name kept; it is one token of every key the host writes.
const NAME_MAX: usize = 64;

/// How orch proves who it is to the NATS servers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FleetAuth {
    /// No credentials (a server without authorization; tests, labs).
    #[default]
    None,
    /// A NATS `.creds` file (JWT and nkey seed).
    Credentials(PathBuf),
    /// A user name and a file holding the password.
    UserPassword {
        user: String,
        password_file: PathBuf,
    },
    /// A file holding an nkey seed.
    Nkey(PathBuf),
}

/// TLS settings: the CA that signs the servers' certificates, and an
/// optional client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Which of this host's bans are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareRule {
    /// `orch ban` and D-Bus bans (source "manual").
    Manual,
    /// The bans of every jail no local user can feed: journal jails on
    /// fields journald records itself (`_SYSTEMD_UNIT`, `_UID`). A jail
    /// that reads files (which syslog fills from any local user) is
    /// shared only when named.
    Jails,
    /// One jail's bans, by name.
    Jail(String),
}

/// The validated `[fleet]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// NATS server URLs; empty means the fleet is off.
    pub servers: Vec<String>,
    /// This host's id: the first token of its keys and `fleet:<name>` on
    /// other hosts.
    pub name: String,
    pub auth: FleetAuth,
    pub tls: FleetTls,
    pub bucket: String,
    /// Replicas of the bucket, used only when orch creates it.
    pub replicas: usize,
    /// Most keys the bucket holds, used only when orch creates it (its
    /// bytes are bounded in proportion).
    pub bucket_max_keys: usize,
    pub publish: bool,
    pub share: Vec<ShareRule>,
    pub apply: bool,
    pub max_remote_bans: usize,
    pub max_remote_time: Duration,
    /// Other hosts' bans may be no broader than these prefixes here (on
    /// top of `bans.min_prefix_v4/_v6`).
    pub remote_min_prefix_v4: u8,
    pub remote_min_prefix_v6: u8,
    /// How many networks one other host may ban here.
    pub max_remote_bans_per_origin: usize,
    /// How much space one other host's bans may cover here, as a prefix
    /// length: IPv4 addresses of one such prefix, IPv6 /64s of one.
    pub max_remote_space_v4: u8,
    pub max_remote_space_v6: u8,
    /// Credentials for `orch unban --fleet` (deleting every host's key).
    pub admin: FleetAuth,
    /// Accept a plain (unencrypted) connection to a server on another
    /// host; refused by default.
    pub insecure: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            servers: Vec::new(),
            name: default_name(),
            auth: FleetAuth::None,
            tls: FleetTls::default(),
            bucket: DEFAULT_BUCKET.to_string(),
            replicas: 1,
            bucket_max_keys: DEFAULT_BUCKET_MAX_KEYS,
            publish: true,
            share: vec![ShareRule::Manual, ShareRule::Jails],
            apply: true,
            max_remote_bans: DEFAULT_MAX_REMOTE_BANS,
            max_remote_time: DEFAULT_MAX_REMOTE_TIME,
            remote_min_prefix_v4: DEFAULT_REMOTE_MIN_PREFIX.0,
            remote_min_prefix_v6: DEFAULT_REMOTE_MIN_PREFIX.1,
            max_remote_bans_per_origin: DEFAULT_MAX_REMOTE_BANS_PER_ORIGIN,
            max_remote_space_v4: DEFAULT_MAX_REMOTE_SPACE.0,
            max_remote_space_v6: DEFAULT_MAX_REMOTE_SPACE.1,
            admin: FleetAuth::None,
            insecure: false,
        }
    }
}

impl FleetConfig {
    /// Whether the fleet is configured at all.
    pub fn enabled(&self) -> bool {
        !self.servers.is_empty()
    }

    /// Whether the connection is TLS: a `tls://` server or any TLS setting.
    pub fn uses_tls(&self) -> bool {
        uses_tls(&self.tls, &self.servers)
    }

    /// Every secret file the fleet reads (this host's and the admin's
    /// credentials, the TLS client key), for the permission checks.
    pub fn secret_files(&self) -> Vec<&std::path::Path> {
        fn auth_file(auth: &FleetAuth) -> Option<&std::path::Path> {
            match auth {
                FleetAuth::None => None,
                FleetAuth::Credentials(path) | FleetAuth::Nkey(path) => Some(path.as_path()),
                FleetAuth::UserPassword { password_file, .. } => Some(password_file.as_path()),
            }
        }
        if !self.enabled() {
            return Vec::new();
        }
        [
            auth_file(&self.auth),
            auth_file(&self.admin),
            self.tls.key.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Whether a ban with this source is shared with the fleet;
    /// `jail_names` are the jails the `jails` rule covers.
    pub fn shares(&self, source: &str, jail_names: &[&str]) -> bool {
        if !self.publish || source.starts_with("fleet:") {
            return false;
        }
        self.share.iter().any(|rule| match rule {
            ShareRule::Manual => source == "manual",
            ShareRule::Jails => jail_names.contains(&source),
            ShareRule::Jail(name) => name == source,
        })
    }

    /// One note per enabled jail that `share = ["jails"]` leaves on this
    /// host because a local user could feed it (see
    /// [`super::JailsConfig::shared_by_default`]), with the way to share
    /// it anyway. Empty when the fleet does not publish jail bans.
    pub fn jails_kept_local(&self, jails: &super::JailsConfig) -> Vec<String> {
        if !self.enabled() || !self.publish || !self.share.contains(&ShareRule::Jails) {
            return Vec::new();
        }
        let named = |name: &str| {
            self.share
                .iter()
                .any(|rule| matches!(rule, ShareRule::Jail(jail) if jail == name))
        };
        jails
            .jails
            .iter()
            .filter(|jail| jail.enabled && !named(&jail.name) && jails.any_user_can_feed(jail))
            .map(|jail| {
                format!(
                    "jail {}: its bans stay on this host, because any local user can write what it reads ({}); name it in fleet.share to share them",
                    jail.name, jail.source
                )
            })
            .collect()
    }
}

/// The host name as a fleet name: its first label, with anything a NATS
/// subject token cannot hold replaced by `-`.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let label = host.trim().split('.').next().unwrap_or_default();
    let cleaned: String = label
        .chars()
        .take(NAME_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "localhost".to_string()
    } else {
        cleaned
    }
}

// ---------------------------------------------------------------------------
// Raw form

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    servers: Option<Spanned<Vec<String>>>,
    name: Option<Spanned<String>>,
    credentials: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    nkey_file: Option<Spanned<String>>,
    tls: Option<RawTls>,
    bucket: Option<Spanned<String>>,
    replicas: Option<Spanned<i64>>,
    bucket_max_keys: Option<Spanned<i64>>,
    publish: Option<Spanned<bool>>,
    share: Option<Spanned<Vec<String>>>,
    apply: Option<Spanned<bool>>,
    max_remote_bans: Option<Spanned<i64>>,
    max_remote_time: Option<Spanned<String>>,
    remote_min_prefix_v4: Option<Spanned<i64>>,
    remote_min_prefix_v6: Option<Spanned<i64>>,
    max_remote_bans_per_origin: Option<Spanned<i64>>,
    max_remote_space_v4: Option<Spanned<i64>>,
    max_remote_space_v6: Option<Spanned<i64>>,
    admin: Option<RawAuth>,
    insecure: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    credentials: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    nkey_file: Option<Spanned<String>>,
}

/// `[fleet]` from every file, merged key by key.
#[derive(Debug, Default)]
pub(super) struct FleetDraft {
    servers: Located<Vec<String>>,
    name: Located<String>,
    credentials: Located<PathBuf>,
    user: Located<String>,
    password_file: Located<PathBuf>,
    nkey_file: Located<PathBuf>,
    tls_ca: Located<PathBuf>,
    tls_cert: Located<PathBuf>,
    tls_key: Located<PathBuf>,
    bucket: Located<String>,
    replicas: Located<usize>,
    bucket_max_keys: Located<usize>,
    publish: Located<bool>,
    share: Located<Vec<ShareRule>>,
    apply: Located<bool>,
    max_remote_bans: Located<usize>,
    max_remote_time: Located<Duration>,
    remote_min_prefix_v4: Located<u8>,
    remote_min_prefix_v6: Located<u8>,
    /// `max_remote_bans_per_origin`
    per_origin: Located<usize>,
    max_remote_space_v4: Located<u8>,
    max_remote_space_v6: Located<u8>,
    admin: Located<FleetAuth>,
    insecure: Located<bool>,
}

impl FleetDraft {
    /// Validates one file's `[fleet]` and merges it over earlier files.
    pub(super) fn apply(&mut self, raw: RawFleet, b: &mut Binder) {
        let servers = |urls: Vec<String>| urls.into_iter().map(check_server_url).collect();
        bind!(b, self.servers, raw.servers, servers);
        bind!(b, self.name, raw.name, check_name);
        let auth = RawAuth {
            credentials: raw.credentials,
            user: raw.user,
            password_file: raw.password_file,
            nkey_file: raw.nkey_file,
        };
        self.apply_auth(auth, b);
        if let Some(tls) = raw.tls {
            for (slot, raw, field) in [
                (&mut self.tls_ca, tls.ca, "tls.ca"),
                (&mut self.tls_cert, tls.cert, "tls.cert"),
                (&mut self.tls_key, tls.key, "tls.key"),
            ] {
                b.set(slot, raw, field, |s| check_file("tls file", s));
            }
        }
        bind!(b, self.bucket, raw.bucket, check_bucket);
        bind!(b, self.replicas, raw.replicas, int_in(1..=5));
        bind!(b, self.publish, raw.publish, Ok);
        let share = |rules: Vec<String>| rules.into_iter().map(check_share_rule).collect();
        bind!(b, self.share, raw.share, share);
        bind!(b, self.apply, raw.apply, Ok);
        bind!(b, self.insecure, raw.insecure, Ok);
        let count = check_ban_count;
        bind!(b, self.max_remote_bans, raw.max_remote_bans, count);
        let max_keys = int_in(1_000..=100_000_000);
        bind!(b, self.bucket_max_keys, raw.bucket_max_keys, max_keys);
        bind!(b, self.per_origin, raw.max_remote_bans_per_origin, count);
        for (slot, raw, field, max) in [
            (
                &mut self.remote_min_prefix_v4,
                raw.remote_min_prefix_v4,
                "remote_min_prefix_v4",
                32,
            ),
            (
                &mut self.remote_min_prefix_v6,
                raw.remote_min_prefix_v6,
                "remote_min_prefix_v6",
                128,
            ),
            (
                &mut self.max_remote_space_v4,
                raw.max_remote_space_v4,
                "max_remote_space_v4",
                32,
            ),
            (
                &mut self.max_remote_space_v6,
                raw.max_remote_space_v6,
                "max_remote_space_v6",
                64,
            ),
        ] {
            b.set(slot, raw, field, int_in(0..=max));
        }
        bind!(b, self.max_remote_time, raw.max_remote_time, check_duration);
        if let Some(admin) = raw.admin {
            let at = [
                &admin.credentials,
                &admin.user,
                &admin.password_file,
                &admin.nkey_file,
            ]
            .into_iter()
            .flatten()
            .next()
            .map(|spanned| b.origin(&spanned.span()));
            let mut draft = FleetDraft::default();
            draft.apply_auth(admin, &mut b.section("admin"));
            if let Some(at) = at {
                let auth = draft.auth("fleet.admin", b.issues());
                self.admin = Some((auth, at));
            }
        }
    }

    /// The login keys, of `[fleet]` itself or of `fleet.admin`.
    fn apply_auth(&mut self, raw: RawAuth, b: &mut Binder) {
        let path = |key: &'static str| move |s: String| check_file(key, s);
        bind!(b, self.credentials, raw.credentials, path("credentials"));
        bind!(b, self.user, raw.user, check_user);
        let password_file = path("password_file");
        bind!(b, self.password_file, raw.password_file, password_file);
        bind!(b, self.nkey_file, raw.nkey_file, path("nkey_file"));
    }

    /// Exactly one way of authenticating, or none.
    fn auth(&self, key: &str, issues: &mut Vec<ConfigIssue>) -> FleetAuth {
        let chosen = [
            self.credentials.as_ref().map(|(_, at)| at),
            self.user
                .as_ref()
                .map(|(_, at)| at)
                .or(self.password_file.as_ref().map(|(_, at)| at)),
            self.nkey_file.as_ref().map(|(_, at)| at),
        ];
        let set_count = chosen.iter().flatten().count();
        if set_count > 1
            && let Some(at) = chosen.iter().flatten().last()
        {
            issues.push(at.issue(format!(
                "{key}: set one of `credentials`, `user` + `password_file`, or `nkey_file`"
            )));
            return FleetAuth::None;
        }
        match (&self.user, &self.password_file) {
            (Some((user, _)), Some((file, _))) => {
                return FleetAuth::UserPassword {
                    user: user.clone(),
                    password_file: file.clone(),
                };
            }
            (Some((_, at)), None) => {
                issues.push(at.issue(format!("{key}.user: also set `password_file`")));
                return FleetAuth::None;
            }
            (None, Some((_, at))) => {
                issues.push(at.issue(format!("{key}.password_file: also set `user`")));
                return FleetAuth::None;
            }
            (None, None) => {}
        }
        if let Some((file, _)) = &self.credentials {
            FleetAuth::Credentials(file.clone())
        } else if let Some((file, _)) = &self.nkey_file {
            FleetAuth::Nkey(file.clone())
        } else {
            FleetAuth::None
        }
    }

    /// The final section; cross-key checks go to `issues`.
    pub(super) fn finish(self, issues: &mut Vec<ConfigIssue>) -> FleetConfig {
        let defaults = FleetConfig::default();
        let auth = self.auth("fleet", issues);
        if let (Some((_, at)), None) | (None, Some((_, at))) = (&self.tls_cert, &self.tls_key) {
            issues.push(at.issue("fleet.tls: set both `cert` and `key`, or neither".to_string()));
        }
        let tls = FleetTls {
            ca: self.tls_ca.map(|(v, _)| v),
            cert: self.tls_cert.map(|(v, _)| v),
            key: self.tls_key.map(|(v, _)| v),
        };
        let insecure = value_or(self.insecure, defaults.insecure);
        if let Some((servers, at)) = &self.servers
            && !insecure
            && !uses_tls(&tls, servers)
            && let Some(remote) = servers.iter().find(|url| !is_loopback_url(url))
        {
            let exposed = if auth == FleetAuth::None {
                "with no authentication: anyone who reaches that server could write the fleet's bans"
            } else {
                "so the login crosses the network readable, and anyone on the path could change the bans"
            };
            issues.push(at.issue(format!(
                "fleet.servers: {remote:?} is on another host and reached over plain nats://, {exposed}; \
                 use tls:// with tls.ca (and a login), or set `insecure = true` to accept it"
            )));
        }
        FleetConfig {
            servers: value_or(self.servers, defaults.servers),
            name: value_or(self.name, defaults.name),
            auth,
            tls,
            bucket: value_or(self.bucket, defaults.bucket),
            replicas: value_or(self.replicas, defaults.replicas),
            bucket_max_keys: value_or(self.bucket_max_keys, defaults.bucket_max_keys),
            publish: value_or(self.publish, defaults.publish),
            share: value_or(self.share, defaults.share),
            apply: value_or(self.apply, defaults.apply),
            max_remote_bans: value_or(self.max_remote_bans, defaults.max_remote_bans),
            max_remote_time: value_or(self.max_remote_time, defaults.max_remote_time),
            remote_min_prefix_v4: value_or(
                self.remote_min_prefix_v4,
                defaults.remote_min_prefix_v4,
            ),
            remote_min_prefix_v6: value_or(
                self.remote_min_prefix_v6,
                defaults.remote_min_prefix_v6,
            ),
            max_remote_bans_per_origin: value_or(
                self.per_origin,
                defaults.max_remote_bans_per_origin,
            ),
            max_remote_space_v4: value_or(self.max_remote_space_v4, defaults.max_remote_space_v4),
            max_remote_space_v6: value_or(self.max_remote_space_v6, defaults.max_remote_space_v6),
            admin: value_or(self.admin, FleetAuth::None),
            insecure,
        }
    }
}

/// A cap on a number of bans: 0 to ten million.
fn check_ban_count(n: i64) -> Result<usize, String> {
    in_range(n, 0..=10_000_000).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
}

/// Whether connections use TLS: a `tls://` server, or a CA or client
/// certificate configured (async-nats then requires TLS for every server).
fn uses_tls(tls: &FleetTls, servers: &[String]) -> bool {
    tls.ca.is_some() || tls.cert.is_some() || servers.iter().any(|url| url.starts_with("tls://"))
}

/// The host of a server URL (`scheme://host[:port]`, or `host[:port]` as
/// servers announce their cluster peers), without brackets.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => rest.rsplit_once(':').map_or(rest, |(host, _)| host),
    }
}

/// Whether `url` (`scheme://host[:port]`) names this host.
fn is_loopback_url(url: &str) -> bool {
    let host = url_host(url);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|addr| addr.is_loopback())
}

fn check_server_url(url: String) -> Result<String, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?} is not a server URL like \"nats://nats1.example.org:4222\""
        ));
    };
    if !matches!(scheme, "nats" | "tls") {
        return Err(format!(
            "{url:?}: the scheme must be nats:// or tls://, not {scheme}://"
        ));
    }
    if rest.is_empty() || rest.contains('@') {
        return Err(format!(
            "{url:?}: give a host[:port]; put credentials in `user`/`password_file` or `credentials`, not in the URL"
        ));
    }
    Ok(url)
}

fn check_name(name: String) -> Result<String, String> {
    check_token(name, NAME_MAX, "it is one token of the host's NATS keys")
}

/// A name of 1-`max` ASCII letters, digits, '-' or '_'; `what` says what
/// it is used as.
fn check_token(token: String, max: usize, what: &str) -> Result<String, String> {
    let valid = !token.is_empty()
        && token.len() <= max
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(token)
    } else {
        Err(format!(
            "{token:?} must be 1-{max} letters, digits, '-' or '_' ({what})"
        ))
    }
}

fn check_user(user: String) -> Result<String, String> {
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("{user:?} must be a non-empty name without spaces"))
    } else {
        Ok(user)
    }
}

fn check_file(what: &str, path: String) -> Result<PathBuf, String> {
    let file = PathBuf::from(&path);
    if file.is_absolute() {
        Ok(file)
    } else {
        Err(format!(
            "{what} {path:?} must be an absolute path (starting with /)"
        ))
    }
}

fn check_bucket(bucket: String) -> Result<String, String> {
    check_token(bucket, 64, "a JetStream KV bucket name")
}

fn check_share_rule(rule: String) -> Result<ShareRule, String> {
    match rule.as_str() {
        "manual" => Ok(ShareRule::Manual),
        "jails" => Ok(ShareRule::Jails),
        name if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok(ShareRule::Jail(rule))
        }
        _ => Err(format!(
            "{rule:?} is not \"manual\", \"jails\" or a jail name"
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, parse_str};
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        parse_str(text, Path::new("orch.toml"))
    }

    #[test]
    fn the_fleet_is_off_by_default() {
        let config = Config::default();
        assert!(!config.fleet.enabled());
        assert_eq!(config.fleet.bucket, "orch-bans");
        assert!(config.fleet.publish && config.fleet.apply);
    }

    #[test]
    fn a_full_fleet_section_parses() {
        let config = parse(
            r#"[fleet]
servers = ["tls://192.0.2.1:4222", "nats://nats2:4222"]
name = "srv1"
user = "srv1"
password_file = "/etc/orch/fleet.password"
tls = { ca = "/etc/orch/ca.pem", cert = "/etc/orch/c.pem", key = "/etc/orch/c.key" }
bucket = "bans"
replicas = 3
share = ["manual", "sshd"]
apply = false
max_remote_bans = 5000
max_remote_time = "2d"
admin = { user = "admin", password_file = "/etc/orch/admin.password" }
"#,
        )
        .expect("valid");
        let fleet = &config.fleet;
        assert!(fleet.enabled());
        assert_eq!(fleet.name, "srv1");
        assert_eq!(
            fleet.auth,
            FleetAuth::UserPassword {
                user: "srv1".into(),
                password_file: "/etc/orch/fleet.password".into()
            }
        );
        assert_eq!(fleet.tls.ca.as_deref(), Some(Path::new("/etc/orch/ca.pem")));
        assert_eq!(fleet.replicas, 3);
        assert!(!fleet.apply);
        assert_eq!(fleet.max_remote_time, Duration::from_secs(2 * 86_400));
        assert!(fleet.shares("manual", &["sshd", "web"]));
        assert!(fleet.shares("sshd", &["sshd", "web"]));
        assert!(!fleet.shares("web", &["sshd", "web"]));
        assert!(!fleet.shares("fleet:srv2", &["sshd"]));
        assert!(matches!(fleet.admin, FleetAuth::UserPassword { .. }));
    }

    #[test]
    fn a_plain_connection_to_another_host_needs_insecure() {
        for (auth, refused_because) in [
            (
                "user = \"srv1\"\npassword_file = \"/etc/orch/p\"\n",
                "the login crosses",
            ),
            ("", "with no authentication"),
        ] {
            let text = format!("[fleet]\nservers = [\"nats://192.0.2.1:4222\"]\n{auth}");
            let found = parse(&text).expect_err("refused").to_string();
            assert!(
                found.contains("orch.toml:2:11: fleet.servers:")
                    && found.contains(refused_because)
                    && found.contains("insecure = true"),
                "{found}"
            );
            parse(&format!("{text}insecure = true\n")).expect("accepted with insecure");
            parse(&format!("{text}tls = {{ ca = \"/etc/orch/ca.pem\" }}\n"))
                .expect("accepted over TLS");
        }
        for local in [
            "nats://127.0.0.1:4222",
            "nats://localhost",
            "nats://[::1]:4222",
        ] {
            parse(&format!("[fleet]\nservers = [\"{local}\"]\n"))
                .unwrap_or_else(|e| panic!("{local} is this host: {e}"));
        }
    }

    #[test]
    fn bad_fleet_keys_are_located() {
        let found: Vec<String> = parse(
            r#"[fleet]
servers = ["http://x"]
name = "srv.1"
credentials = "/etc/orch/a.creds"
user = "srv1"
password_file = "relative"
tls = { cert = "/etc/c.pem" }
bucket = "a.b"
replicas = 7
share = ["every thing"]
max_remote_time = "forever"
"#,
        )
        .expect_err("invalid")
        .issues
        .iter()
        .map(ToString::to_string)
        .collect();
        let expect = [
            "orch.toml:2:11: fleet.servers: \"http://x\": the scheme must be nats:// or tls://",
            "orch.toml:3:8: fleet.name: \"srv.1\" must be 1-64 letters",
            "orch.toml:6:17: fleet.password_file: password_file \"relative\" must be an absolute path",
            "orch.toml:8:10: fleet.bucket:",
            "orch.toml:9:12: fleet.replicas: 7 is out of range",
            "orch.toml:10:9: fleet.share: \"every thing\" is not",
            "orch.toml:11:19: fleet.max_remote_time: invalid duration",
            "fleet.tls: set both `cert` and `key`, or neither",
            "orch.toml:5:8: fleet: set one of `credentials`, `user` + `password_file`, or `nkey_file`",
        ];
        for expected in expect {
            assert!(
                found.iter().any(|m| m.contains(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
    }
}
