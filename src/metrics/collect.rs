//! Reads one [`Snapshot`] from what the daemon already publishes: the
//! core's read view and counters, the jails' and hooks' statistics, the
//! fleet status, the kernel's rule counters (read-only netlink probe), the
//! store files' sizes and `/proc/self/status`.
//!
//! It never queues a job on the core and never changes anything; it may
//! block briefly (a lock held while jails restart, one netlink dump), so
//! callers run it off the async runtime.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

use super::render::{FleetSample, JailSample, Snapshot};
use crate::daemon::core::CoreHandle;
use crate::daemon::hook_runs::HookRuns;
use crate::daemon::jails::JailSupervisor;
use crate::fleet::FleetLink;

/// Where a snapshot's numbers come from.
#[derive(Clone)]
pub struct Sources {
    pub core: CoreHandle,
    pub jails: JailSupervisor,
    pub hooks: HookRuns,
    pub fleet: Option<FleetLink>,
    /// orch's nftables table (family inet).
    pub table: String,
    /// The ban store's directory.
    pub state_dir: PathBuf,
}

/// Reads everything a scrape shows. Blocking (see the module comment).
pub fn snapshot(sources: &Sources) -> Snapshot {
    let view = sources.core.read_view();
    let published = sources.core.view();
    let bans_by_source = published
        .as_ref()
        .map(|published| {
            let counts = published.by_source.iter();
            counts
                .map(|(source, count)| (source.clone(), *count as u64))
                .collect()
        })
        .unwrap_or_default();
    let last_restore = published
        .as_ref()
        .and_then(|published| published.status.last_sync.as_ref())
        .map(|sync| (sync.at_unix, sync.duration_ms));
    let rules = crate::firewall::probe::rule_counters(&sources.table)
        .inspect_err(|err| tracing::debug!("cannot read the rule counters: {err}"))
        .ok();
    let hooks = sources.hooks.status();
    Snapshot {
        version: env!("CARGO_PKG_VERSION").to_string(),
        bans_by_source,
        bans_added: view.additions(),
        bans_removed: view.removals(),
        rules,
        restores: view.restores(),
        last_restore,
        hook_batches: hooks.runs,
        hooks: hooks.counts,
        jails: jails(&sources.jails),
        fleet: sources.fleet.as_ref().map(fleet),
        store_bytes: crate::store::file_sizes(&sources.state_dir)
            .into_iter()
            .map(|(file, bytes)| (file.to_string(), bytes))
            .collect(),
        rss_bytes: crate::memory::resident_bytes(),
    }
}

fn jails(supervisor: &JailSupervisor) -> Vec<JailSample> {
    supervisor
        .views()
        .iter()
        .map(|jail| JailSample {
            name: jail.name.clone(),
            lines: jail.stats.lines.load(Relaxed),
            matches: jail.stats.failures.load(Relaxed),
            tracked: jail.stats.tracked.load(Relaxed),
            lag_seconds: jail.stats.health().map(|health| health.lag.as_secs_f64()),
        })
        .collect()
}

fn fleet(link: &FleetLink) -> FleetSample {
    let state = link.status.snapshot();
    FleetSample {
        connected: state.connected,
        outbox: link.outbox.len() as u64,
        last_remote_change: state.last_event,
        refused: state
            .refused
            .into_iter()
            .map(|(origin, reasons)| {
                let reasons = reasons.into_iter();
                (origin, reasons.map(|(r, n)| (r.to_string(), n)).collect())
            })
            .collect(),
        skipped: state.skipped,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resident_memory_is_read() {
        let rss = crate::memory::resident_bytes().expect("VmRSS of this test");
        assert!(rss > 1 << 20, "{rss}");
    }
}
