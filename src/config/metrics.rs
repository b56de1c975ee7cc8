//! The `[metrics]` section of `orch.toml`: where orch serves its metrics
//! (Prometheus text format), validated with `file:line:column` like the
//! rest.
//!
//! ```toml
//! [metrics]
//! listen = "127.0.0.1:9727"            # or a unix socket: "/run/orch/metrics.sock"
//! textfile = "/var/lib/prometheus/node-exporter/orch.prom"
//! interval = "15s"                     # how often the textfile is rewritten
//! ```
//!
//! Off unless `listen` or `textfile` is set; an empty string turns either
//! off again in a later file. This module only validates; it must not bind
//! or write anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Binder, Located, bind, check_duration, value_or};

/// Default time between two rewrites of the textfile.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// Bounds of `interval`.
const INTERVAL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

/// Where the HTTP endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    /// An IP address and port.
    Tcp(SocketAddr),
    /// A unix socket path, created with mode 0660.
    Unix(PathBuf),
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Tcp(addr) => write!(f, "{addr}"),
            MetricsListen::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The validated `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The `GET /metrics` endpoint; `None`: not served.
    pub listen: Option<MetricsListen>,
    /// A node_exporter textfile, rewritten atomically every `interval`;
    /// `None`: not written.
    pub textfile: Option<PathBuf>,
    pub interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            textfile: None,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl MetricsConfig {
    /// Whether metrics are served or written at all.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.textfile.is_some()
    }

    /// What to tell the admin when the endpoint listens beyond this host
    /// (check-config prints it, the daemon logs it).
    pub fn exposure_note(&self) -> Option<String> {
        match &self.listen {
            Some(MetricsListen::Tcp(addr)) if !addr.ip().is_loopback() => Some(format!(
                "metrics.listen {addr} is reachable from other hosts: whoever reaches that port \
                 reads the ban counts and the names of jails, hooks and fleet hosts; filter the \
                 port or listen on 127.0.0.1"
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    listen: Option<Spanned<String>>,
    textfile: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
}

/// `[metrics]` from every file, merged key by key.
#[derive(Debug, Default)]
pub(super) struct MetricsDraft {
    listen: Located<Option<MetricsListen>>,
    textfile: Located<Option<PathBuf>>,
    interval: Located<Duration>,
}

impl MetricsDraft {
    /// Validates one file's `[metrics]` and merges it over earlier files.
    pub(super) fn apply(&mut self, raw: RawMetrics, b: &mut Binder) {
        bind!(b, self.listen, raw.listen, check_listen);
        bind!(b, self.textfile, raw.textfile, check_textfile);
        bind!(b, self.interval, raw.interval, check_interval);
    }

    /// The final section.
    pub(super) fn finish(self) -> MetricsConfig {
        let defaults = MetricsConfig::default();
        MetricsConfig {
            listen: value_or(self.listen, defaults.listen),
            textfile: value_or(self.textfile, defaults.textfile),
            interval: value_or(self.interval, defaults.interval),
        }
    }
}

/// An address and port, or an absolute unix socket path; "" is off.
fn check_listen(text: String) -> Result<Option<MetricsListen>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.starts_with('/') {
        return check_socket_path(&text).map(|path| Some(MetricsListen::Unix(path)));
    }
    text.parse::<SocketAddr>()
        .map(|addr| Some(MetricsListen::Tcp(addr)))
        .map_err(|_| {
            format!(
                "{text:?} is neither an address and port (\"127.0.0.1:9727\", \"[::1]:9727\") \
                 nor an absolute unix socket path (\"/run/orch/metrics.sock\")"
            )
        })
}

/// A unix socket path: absolute, with a file name, short enough for
/// `sockaddr_un` (107 bytes and the terminating NUL).
fn check_socket_path(text: &str) -> Result<PathBuf, String> {
    const SUN_PATH_MAX: usize = 107;
    let path = PathBuf::from(text);
    if text.len() > SUN_PATH_MAX {
        return Err(format!(
            "{text:?} is longer than a unix socket path may be ({SUN_PATH_MAX} bytes)"
        ));
    }
    if text.ends_with('/') || path.file_name().is_none() {
        return Err(format!("{text:?} names a directory, not a socket file"));
    }
    Ok(path)
}

/// An absolute path ending in `.prom` (node_exporter reads only those); ""
/// is off.
fn check_textfile(text: String) -> Result<Option<PathBuf>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if !text.starts_with('/') {
        return Err(format!(
            "{text:?} must be an absolute path (starting with /)"
        ));
    }
    if !text.ends_with(".prom") || text.ends_with("/.prom") {
        return Err(format!(
            "{text:?} must name a file ending in .prom: node_exporter's textfile collector reads only those"
        ));
    }
    Ok(Some(PathBuf::from(text)))
}

fn check_interval(text: String) -> Result<Duration, String> {
    let interval = check_duration(&text)?;
    if INTERVAL_RANGE.contains(&interval) {
        Ok(interval)
    } else {
        Err(format!("{text:?} is not between 1s and 1h"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigIssue, parse_layers, parse_str};

    fn issues(text: &str) -> Vec<ConfigIssue> {
        parse_str(text, Path::new("orch.toml"))
            .expect_err("invalid")
            .issues
    }

    #[test]
    fn metrics_are_off_by_default() {
        let config = Config::default();
        assert!(!config.metrics.enabled());
        assert_eq!(config.metrics.interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn every_key_parses_and_a_later_file_can_turn_them_off() {
        let first = "[metrics]\nlisten = \"[::1]:9727\"\ntextfile = \"/var/lib/n/orch.prom\"\ninterval = \"1m\"\n";
        let config = parse_str(first, Path::new("orch.toml")).expect("valid");
        assert_eq!(
            config.metrics,
            MetricsConfig {
                listen: Some(MetricsListen::Tcp("[::1]:9727".parse().expect("literal"))),
                textfile: Some(PathBuf::from("/var/lib/n/orch.prom")),
                interval: Duration::from_secs(60),
            }
        );
        let unix = "[metrics]\nlisten = \"/run/orch/metrics.sock\"\n";
        let config = parse_str(unix, Path::new("orch.toml")).expect("valid");
        let socket = MetricsListen::Unix(PathBuf::from("/run/orch/metrics.sock"));
        assert_eq!(config.metrics.listen, Some(socket));
        assert_eq!(config.metrics.exposure_note(), None);
        let wide = "[metrics]\nlisten = \"0.0.0.0:9727\"\n";
        let config = parse_str(wide, Path::new("orch.toml")).expect("valid");
        let note = config.metrics.exposure_note().expect("a note");
        assert!(
            note.starts_with("metrics.listen 0.0.0.0:9727 is reachable"),
            "{note}"
        );
        let off = "[metrics]\nlisten = \"\"\ntextfile = \"\"\n";
        let layers = [(Path::new("a.toml"), first), (Path::new("b.toml"), off)];
        let config = parse_layers(&layers).expect("valid");
        assert!(!config.metrics.enabled());
        assert_eq!(config.metrics.interval, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_are_located() {
        let text = "[metrics]\nlisten = \"localhost:9727\"\ntextfile = \"/tmp/orch.txt\"\ninterval = \"2h\"\n";
        let found: Vec<(usize, usize, String)> = issues(text)
            .into_iter()
            .map(|issue| (issue.line, issue.column, issue.message))
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (2, 10));
        assert!(
            found[0]
                .2
                .starts_with("metrics.listen: \"localhost:9727\" is neither")
        );
        assert!(
            found[1].2.starts_with("metrics.textfile: "),
            "{}",
            found[1].2
        );
        assert!(found[1].2.contains(".prom"), "{}", found[1].2);
        assert_eq!(
            found[2].2,
            "metrics.interval: \"2h\" is not between 1s and 1h"
        );
        let long = format!("[metrics]\nlisten = \"/{}\"\n", "a".repeat(120));
        assert!(
            issues(&long)[0]
                .message
                .contains("longer than a unix socket path")
        );
        let unknown = issues("[metrics]\nport = 9727\n");
        assert!(
            unknown[0].message.contains("unknown field `port`"),
            "{unknown:?}"
        );
    }
}
