//! Firewall events from every source (systemd units, kernel notifications,
//! the periodic self-check, SIGHUP) merged into one stream of calls on the
//! core.
//!
//! A burst (systemd sends several state changes per restart; a flush shows
//! up as one deletion per table) becomes one call after the burst settles.
//! This module only merges and forwards; the core decides what to do. The
//! event type and its rules are in `firewall_event.rs`.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::daemon::core::CoreHandle;
use crate::daemon::firewall_event::{EventKind, FirewallEvent, merge};
use crate::daemon::hook_runs::{HookRuns, HookTrigger};

/// How long the stream must be quiet before a burst is handed on, and the
/// longest a burst may be held back.
const QUIET: Duration = Duration::from_millis(50);
const MAX_HOLD: Duration = Duration::from_millis(500);

/// Receives events until every sender is gone, handing each settled burst
/// to the core, then to the hooks when it calls for them.
pub async fn run(
    mut events: mpsc::UnboundedReceiver<FirewallEvent>,
    core: CoreHandle,
    hooks: HookRuns,
) {
    while let Some(first) = events.recv().await {
        let mut burst = vec![first];
        let hold_until = tokio::time::Instant::now() + MAX_HOLD;
        loop {
            let quiet_until = (tokio::time::Instant::now() + QUIET).min(hold_until);
            match tokio::time::timeout_at(quiet_until, events.recv()).await {
                Ok(Some(next)) => burst.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let Some(merged) = merge(&burst) else {
            continue;
        };
        let event = merged.clone();
        let repaired = match core.call(move |core| core.on_firewall_event(&event)).await {
            Ok(Ok(repaired)) => repaired,
            Ok(Err(err)) => {
                tracing::error!("handling a firewall event failed: {err}");
                true
            }
            Err(_) => break,
        };
        if let Some(hook_event) = merged.hook_event(repaired) {
            if merged.kind == EventKind::Flush
                && merged.unit.is_none()
                && core
                    .call(|core| core.watched_unit_busy())
                    .await
                    .unwrap_or(false)
            {
                tracing::debug!("flush during a unit job: the job's end runs the hooks");
                continue;
            }
            hooks.trigger(HookTrigger {
                event: hook_event.to_string(),
                unit: merged.unit.clone(),
                observed_at: merged.observed_at,
            });
        }
    }
}
