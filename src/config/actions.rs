//! The `[[on_ban]]` and `[[on_unban]]` tables of `orch.toml`: what the
//! outside world hears of bans, validated with `file:line:column` like the
//! rest.
//!
//! ```toml
//! [[on_ban]]
//! webhook = "http://127.0.0.1:8080/orch"   # POST one JSON object per event
//! timeout = "10s"
//! batch_window = "1s"
//! max_events_per_minute = 30
//! max_addresses = 1000
//!
//! [[on_unban]]
//! exec = ["/usr/local/bin/notify", "unban"]
//! ```
//!
//! Each table has exactly one of `exec` and `webhook`. Entries of every
//! file are kept, in order. This module only validates; it must not run
//! programs or connect anywhere (`crate::actions` does).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Binder, Located, bind, check_duration, int_in, value_or};

/// How long an action may take unless `timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long bans are gathered into one event unless `batch_window` says
/// otherwise.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_secs(1);
/// Events one action sends per minute at most, unless configured.
pub const DEFAULT_MAX_EVENTS_PER_MINUTE: u32 = 30;
/// Addresses one event lists at most (the count is always whole), unless
/// configured.
pub const DEFAULT_MAX_ADDRESSES: usize = 1000;
/// The largest `max_addresses` accepted: what one event from the core
/// carries at most.
pub const MAX_ADDRESSES_LIMIT: usize = 10_000;
/// The longest `timeout` accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest `batch_window` accepted.
const MAX_BATCH_WINDOW: Duration = Duration::from_secs(60);
/// The longest program path or argument accepted.
const MAX_ARG: usize = 4096;
/// The most arguments accepted (the program included).
const MAX_ARGS: usize = 64;
/// The longest webhook URL accepted.
const MAX_URL: usize = 2048;

/// Where an action's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionTarget {
    /// A program (absolute path) and its arguments.
    Exec(Vec<String>),
    /// An `http://` URL that takes a POST.
    Webhook(WebhookUrl),
}

/// A checked `http://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    /// A name or an address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Starts with `/`; printable ASCII without spaces.
    pub path: String,
}

impl std::fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// One validated `[[on_ban]]` or `[[on_unban]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionConfig {
    pub target: ActionTarget,
    /// How long one run or request may take; a program is killed after it.
    pub timeout: Duration,
    /// Bans within this window after the first go out as one event.
    pub batch_window: Duration,
    /// At most this many events a minute; more are merged into the next.
    pub max_events_per_minute: u32,
    /// At most this many addresses listed per event.
    pub max_addresses: usize,
}

/// Every action, by the kind of event it follows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionsConfig {
    pub on_ban: Vec<ActionConfig>,
    pub on_unban: Vec<ActionConfig>,
}

impl ActionsConfig {
    pub fn is_empty(&self) -> bool {
        self.on_ban.is_empty() && self.on_unban.is_empty()
    }
}

/// One action table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAction {
    exec: Option<Spanned<Vec<String>>>,
    webhook: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    batch_window: Option<Spanned<String>>,
    max_events_per_minute: Option<Spanned<i64>>,
    max_addresses: Option<Spanned<i64>>,
}

/// The actions of every file so far.
#[derive(Debug, Default)]
pub(super) struct ActionsDraft {
    actions: ActionsConfig,
}

impl ActionsDraft {
    /// Validates the `on_ban` (or `on_unban`, per `field`) tables of one
    /// file and keeps the valid ones.
    pub(super) fn apply(&mut self, raw: Vec<RawAction>, field: &str, b: &mut Binder) {
        for (index, entry) in raw.into_iter().enumerate() {
            let Some(action) = action(entry, &mut b.section(&format!("{field}[{index}]"))) else {
                continue;
            };
            match field {
                "on_ban" => self.actions.on_ban.push(action),
                _ => self.actions.on_unban.push(action),
            }
        }
    }

    pub(super) fn finish(self) -> ActionsConfig {
        self.actions
    }
}

/// One table; `None` when it is invalid (every problem recorded).
fn action(raw: RawAction, b: &mut Binder) -> Option<ActionConfig> {
    let mut exec: Located<Vec<String>> = None;
    let mut webhook: Located<WebhookUrl> = None;
    let mut timeout = None;
    let mut batch_window = None;
    let mut max_events_per_minute = None;
    let mut max_addresses = None;
    // Where to say that the table lacks a target: its first key we know.
    let table_at = [
        &raw.exec.as_ref().map(Spanned::span),
        &raw.webhook.as_ref().map(Spanned::span),
    ]
    .into_iter()
    .chain([
        &raw.timeout.as_ref().map(Spanned::span),
        &raw.batch_window.as_ref().map(Spanned::span),
    ])
    .flatten()
    .next()
    .map(|span| b.origin(span));
    let (exec_set, webhook_set) = (raw.exec.is_some(), raw.webhook.is_some());
    bind!(b, exec, raw.exec, check_exec);
    bind!(b, webhook, raw.webhook, |url: String| check_webhook(&url));
    bind!(b, timeout, raw.timeout, |s: String| check_limited(
        &s,
        MAX_TIMEOUT
    ));
    bind!(b, batch_window, raw.batch_window, |s: String| {
        check_limited(&s, MAX_BATCH_WINDOW)
    });
    bind!(
        b,
        max_events_per_minute,
        raw.max_events_per_minute,
        int_in(1..=600)
    );
    bind!(
        b,
        max_addresses,
        raw.max_addresses,
        int_in(1..=MAX_ADDRESSES_LIMIT as i64)
    );
    let target = match (exec, webhook) {
        (Some((argv, _)), None) if !webhook_set => ActionTarget::Exec(argv),
        (None, Some((url, _))) if !exec_set => ActionTarget::Webhook(url),
        _ => {
            if exec_set == webhook_set {
                let at = table_at.unwrap_or_else(|| b.origin(&(0..0)));
                b.issue(&at, "", "needs exactly one of exec and webhook");
            }
            return None;
        }
    };
    Some(ActionConfig {
        target,
        timeout: value_or(timeout, DEFAULT_TIMEOUT),
        batch_window: value_or(batch_window, DEFAULT_BATCH_WINDOW),
        max_events_per_minute: value_or(max_events_per_minute, DEFAULT_MAX_EVENTS_PER_MINUTE),
        max_addresses: value_or(max_addresses, DEFAULT_MAX_ADDRESSES),
    })
}

/// A duration no longer than `max`.
fn check_limited(s: &str, max: Duration) -> Result<Duration, String> {
    let duration = check_duration(s)?;
    if duration > max {
        return Err(format!(
            "{s:?} is longer than the limit of {}",
            humantime::format_duration(max)
        ));
    }
    Ok(duration)
}

/// A program given by absolute path, and its arguments.
fn check_exec(argv: Vec<String>) -> Result<Vec<String>, String> {
    let Some(program) = argv.first() else {
        return Err("is empty; write the program's absolute path first".to_string());
    };
    if !program.starts_with('/') {
        return Err(format!(
            "{} is not an absolute path",
            crate::quote::quote_input(program)
        ));
    }
    if argv.len() > MAX_ARGS {
        return Err(format!("has more than {MAX_ARGS} entries"));
    }
    if let Some(bad) = argv
        .iter()
        .find(|arg| arg.contains('\0') || arg.len() > MAX_ARG)
    {
        return Err(format!(
            "{} holds a NUL byte or is longer than {MAX_ARG} bytes",
            crate::quote::quote_input(bad)
        ));
    }
    Ok(argv)
}

/// An `http://host[:port][/path]` URL; anything else is refused with why.
pub fn check_webhook(url: &str) -> Result<WebhookUrl, String> {
    let shown = crate::quote::quote_input(url);
    if url.len() > MAX_URL {
        return Err(format!("is longer than {MAX_URL} bytes"));
    }
    if url.starts_with("https://") {
        return Err(format!(
            "{shown}: https is not supported yet; use http:// to a local relay"
        ));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{shown} does not start with http://"));
    };
    if let Some(bad) = url.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("{shown} holds {bad:?}; only printable ASCII"));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], &rest[at..]),
        Some(_) => return Err(format!("{shown}: the path must start with /")),
        None => (rest, "/"),
    };
    if path.contains('#') {
        return Err(format!("{shown}: a fragment (#) is not sent"));
    }
    if authority.contains('@') {
        return Err(format!(
            "{shown}: user names and passwords are not supported"
        ));
    }
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("{shown}: expected host, host:port, or [IPv6 address]:port"))?;
    Ok(WebhookUrl {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; port 80 when none.
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && (host.contains(':')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    if !valid_host {
        return None;
    }
    let port = match port {
        None => 80,
        Some(port) => port.parse::<u16>().ok().filter(|port| *port != 0)?,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::path::Path;

    fn parse(text: &str) -> Result<ActionsConfig, String> {
        parse_str(text, Path::new("t.toml"))
            .map(|config| config.actions)
            .map_err(|err| err.to_string())
    }

    #[test]
    fn both_kinds_parse_with_defaults_and_overrides() {
        let actions = parse(
            "[[on_ban]]\nwebhook = \"http://127.0.0.1:8080/orch?x=1\"\nmax_addresses = 5\n\
             [[on_unban]]\nexec = [\"/usr/local/bin/notify\", \"a b\"]\ntimeout = \"3s\"\n\
             batch_window = \"200ms\"\nmax_events_per_minute = 2\n",
        )
        .expect("valid");
        assert_eq!(actions.on_ban.len(), 1);
        let ban = &actions.on_ban[0];
        assert_eq!(
            ban.target,
            ActionTarget::Webhook(WebhookUrl {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/orch?x=1".into()
            })
        );
        assert_eq!(ban.max_addresses, 5);
        assert_eq!(ban.timeout, DEFAULT_TIMEOUT);
        assert_eq!(ban.batch_window, DEFAULT_BATCH_WINDOW);
        assert_eq!(ban.max_events_per_minute, DEFAULT_MAX_EVENTS_PER_MINUTE);
        let unban = &actions.on_unban[0];
        assert_eq!(
            unban.target,
            ActionTarget::Exec(vec!["/usr/local/bin/notify".into(), "a b".into()])
        );
        assert_eq!(unban.timeout, Duration::from_secs(3));
        assert_eq!(unban.batch_window, Duration::from_millis(200));
        assert_eq!(unban.max_events_per_minute, 2);
        assert!(parse("").expect("default").is_empty());
    }

    #[test]
    fn bad_tables_are_located() {
        let cases = [
            (
                "[[on_ban]]\ntimeout = \"1s\"\n",
                "t.toml:2:11",
                "on_ban[0]: needs exactly one",
            ),
            (
                "[[on_ban]]\nexec = [\"/bin/true\"]\nwebhook = \"http://a/\"\n",
                "t.toml:2:8",
                "on_ban[0]: needs exactly one",
            ),
            (
                "[[on_ban]]\nexec = [\"notify\"]\n",
                "t.toml:2:8",
                "on_ban[0].exec: \"notify\" is not an absolute",
            ),
            (
                "[[on_ban]]\nexec = []\n",
                "t.toml:2:8",
                "on_ban[0].exec: is empty",
            ),
            (
                "[[on_unban]]\nwebhook = \"https://x.example/\"\n",
                "t.toml:2:11",
                "on_unban[0].webhook: \"https://x.example/\": https is not supported yet",
            ),
            (
                "[[on_ban]]\nwebhook = \"http://a b/\"\n",
                "t.toml:2:11",
                "only printable ASCII",
            ),
            (
                "[[on_ban]]\nwebhook = \"http://u:p@host/\"\n",
                "t.toml:2:11",
                "user names and passwords",
            ),
            (
                "[[on_ban]]\nwebhook = \"http://host:0/\"\n",
                "t.toml:2:11",
                "expected host",
            ),
            (
                "[[on_ban]]\nwebhook = \"http://h/\"\nmax_addresses = 100000\n",
                "t.toml:3:17",
                "on_ban[0].max_addresses",
            ),
            (
                "[[on_ban]]\nwebhook = \"http://h/\"\nbatch_window = \"1h\"\n",
                "t.toml:3:16",
                "longer than the limit of 1m",
            ),
            (
                "[[on_ban]]\nwebhook = \"http://h/\"\nretries = 1\n",
                "t.toml:3:1",
                "retries",
            ),
        ];
        for (text, at, message) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(at) && err.contains(message), "{text:?}: {err}");
        }
    }

    #[test]
    fn webhook_urls() {
        let url = check_webhook("http://[2001:db8::1]:9000").expect("v6");
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("2001:db8::1", 9000, "/")
        );
        assert_eq!(url.to_string(), "http://[2001:db8::1]:9000/");
        let url = check_webhook("http://hooks.example.org/a/b").expect("name");
        assert_eq!((url.host.as_str(), url.port), ("hooks.example.org", 80));
        for bad in [
            "http://",
            "http://:80/",
            "http://[nope]:80/",
            "http://h:99999/",
            "http://h?x",
            "http://h/\r\nX: y",
            "ftp://h/",
        ] {
            assert!(check_webhook(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn entries_of_every_file_are_kept() {
        let config = crate::config::parse_layers(&[
            (Path::new("a.toml"), "[[on_ban]]\nexec = [\"/bin/a\"]\n"),
            (Path::new("b.toml"), "[[on_ban]]\nexec = [\"/bin/b\"]\n"),
        ])
        .expect("valid");
        let programs: Vec<_> = config
            .actions
            .on_ban
            .iter()
            .map(|action| action.target.clone())
            .collect();
        assert_eq!(
            programs,
            [
                ActionTarget::Exec(vec!["/bin/a".into()]),
                ActionTarget::Exec(vec!["/bin/b".into()])
            ]
        );
    }
}
