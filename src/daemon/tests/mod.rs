//! Unit tests of the core, the reconciler and the core's fleet side,
//! without a kernel: the firewall runs on a
//! [`RecordingExecutor`](crate::firewall::recording::RecordingExecutor),
//! and the tests look at the nft scripts it recorded and at the store.
//!
//! This file holds only the shared harness (a core on a throwaway store,
//! script helpers); the tests are in the child modules. Assertions look
//! for precise pieces of scripts (an element and its timeout), never whole
//! scripts, so harmless rendering changes do not break them. Addresses are
//! documentation ranges, and the prefixes banned through the core lie in
//! [`BANNED_PREFIXES`]: the core refuses to ban the machine's own
//! addresses, and test machines do use documentation addresses (one here
//! has 192.0.2.2), so the harness first checks none lies there.

mod core;
mod fleet_apply;
mod reconciler;

use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use tempfile::TempDir;

use super::core::Core;
use super::reconciler::Reconciler;
use crate::config::Config;
use crate::firewall::recording::{RecordingExecutor, ScriptLog};
use crate::firewall::{Firewall, Ownership, TableLayout};
use crate::store::{BanRecord, Store};
use crate::timefmt::now_unix;

/// orch's table in every test: a name no real table on the machine has,
/// so the self-check (which asks the kernel) never finds one.
pub(super) const TABLE: &str = "orch_unit_test";

/// Where the prefixes the tests ban through the core lie. A single
/// address could still be the machine's own, but only by chance.
const BANNED_PREFIXES: [&str; 2] = ["198.51.100.0/24", "2001:db8:1::/48"];

pub(super) const HOUR: u64 = 3600;
pub(super) const DAY: u64 = 86_400;

/// A network, or a single address as its /32 or /128.
pub(super) fn net(text: &str) -> IpNet {
    text.parse()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .expect("test network parses")
}

/// A stored ban of `text` from `source`, made now, for `seconds`.
pub(super) fn record(text: &str, seconds: u64, source: &str) -> BanRecord {
    record_at(now_unix(), text, seconds, source)
}

/// A stored ban of `text` from `source`, made at `created`, for `seconds`.
pub(super) fn record_at(created: u64, text: &str, seconds: u64, source: &str) -> BanRecord {
    BanRecord {
        net: net(text),
        created,
        expires: created + seconds,
        reason: Arc::from("test"),
        source: Arc::from(source),
    }
}

/// The embedded default configuration with `toml` layered over it, using
/// [`TABLE`] and `state_dir`.
pub(super) fn config(toml: &str, state_dir: &Path) -> Config {
    let mut config =
        crate::config::parse_str(toml, Path::new("test.toml")).expect("test config is valid");
    config.firewall.table = TABLE.to_string();
    config.state_dir = state_dir.to_path_buf();
    config
}

/// A store in a fresh temporary directory (kept alive by the `TempDir`).
pub(super) fn temp_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path(), now_unix()).expect("store opens");
    (dir, store)
}

/// A reconciler whose firewall records its scripts in the returned log.
pub(super) fn recording_reconciler(config: &Config) -> (Reconciler, ScriptLog) {
    let (executor, log) = RecordingExecutor::new();
    let firewall = Firewall::with_executor(
        Box::new(executor),
        TableLayout::from(&config.firewall),
        vec![Ownership::Unowned],
    );
    (Reconciler::new(firewall), log)
}

/// A started core on a throwaway store, with its script log.
pub(super) struct Harness {
    pub core: Core,
    pub log: ScriptLog,
    /// The scripts `Core::start` ran (the table-flags probe, the first
    /// full apply); `log` starts empty.
    pub startup: Vec<String>,
    _dir: TempDir,
}

/// Starts a core on the embedded default config with `toml` over it, on a
/// store already holding `stored`.
pub(super) fn start_with(toml: &str, stored: &[BanRecord]) -> Harness {
    for own in crate::addr::host_addresses() {
        let clash = BANNED_PREFIXES
            .iter()
            .find(|prefix| net(prefix).contains(&own));
        assert!(
            clash.is_none(),
            "this machine has {own} in {clash:?}, which the tests ban; move them to another range"
        );
    }
    let (dir, mut store) = temp_store();
    store.insert_bans(stored).expect("test bans are stored");
    let config = config(toml, dir.path());
    let (reconciler, log) = recording_reconciler(&config);
    let core = Core::start(config, store, reconciler).expect("the core starts");
    let startup = log.take();
    Harness {
        core,
        log,
        startup,
        _dir: dir,
    }
}

/// A core on the embedded default config and an empty store.
pub(super) fn start() -> Harness {
    start_with("", &[])
}

/// A started core that has just banned `input` (manually) for `seconds`;
/// the log holds nothing yet.
pub(super) fn start_banned(input: &str, seconds: u64) -> Harness {
    let mut harness = start();
    harness
        .ban(input, seconds)
        .expect("the first ban is accepted");
    harness.log.take();
    harness
}

impl Harness {
    /// A manual ban of one input, as `orch ban` makes it.
    pub fn ban(
        &mut self,
        input: &str,
        seconds: u64,
    ) -> Result<Vec<BanRecord>, super::core::CoreError> {
        self.core
            .ban(&[input.to_string()], seconds, "test", "manual")
    }

    /// The stored ban of `text`, if any.
    pub fn stored(&self, text: &str) -> Option<BanRecord> {
        self.core.store().get_ban(&net(text)).cloned()
    }

    /// The scripts run since the last call (or the start).
    pub fn scripts(&self) -> Vec<String> {
        self.log.take()
    }
}

/// Whether `script` re-applies the whole table (deletes and declares it).
pub(super) fn is_full_apply(script: &str) -> bool {
    script.contains(&format!("delete table inet {TABLE}")) && script.contains("chain filter")
}

/// The timeout (seconds) `script` leaves `element` with: where it last
/// adds it (a replacement first adds it for one second, then deletes it,
/// then adds it anew), e.g. 86_400 + 5 for `192.0.2.7 timeout 1d5s`.
pub(super) fn timeout_of(script: &str, element: &str) -> Option<u64> {
    let needle = format!("{element} timeout ");
    let start = script.rfind(&needle)? + needle.len();
    let text: String = script[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let (days, seconds) = match text.split_once('d') {
        Some((days, rest)) => (days.parse::<u64>().ok()?, rest),
        None => (0, text.as_str()),
    };
    Some(days * DAY + seconds.strip_suffix('s')?.parse::<u64>().ok()?)
}

/// Asserts `timeout` is `expected` seconds, allowing for the clock
/// ticking once between storing and rendering.
pub(super) fn assert_about(timeout: Option<u64>, expected: u64) {
    let timeout = timeout.expect("the element is rendered with a timeout");
    assert!(
        timeout <= expected && timeout + 2 >= expected,
        "timeout {timeout}s, expected about {expected}s"
    );
}

/// Asserts `script` holds each of `pieces`.
pub(super) fn assert_contains_all(script: &str, pieces: &[String]) {
    for piece in pieces {
        assert!(script.contains(piece), "missing {piece:?} in\n{script}");
    }
}

/// The one script of `scripts`, failing if there are none or several.
pub(super) fn only(scripts: &[String]) -> &str {
    match scripts {
        [script] => script,
        _ => panic!("expected one script, got {scripts:#?}"),
    }
}
