//! What the fleet connection is doing, for `orch status`, the D-Bus
//! properties `FleetConnected` and `Fleet`, and the log.
//!
//! Written by the session and the NATS client's event callback, read by the
//! bus service; it must not drive the connection.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::remote_policy::Refusals;
use crate::timefmt::now_unix;

/// Origins whose refusals are counted by name; refusals from any further
/// origin are counted under [`OTHER_ORIGINS`] (origins are whatever names
/// appear in the bucket).
const COUNTED_ORIGINS: usize = 64;
/// Where refusals from origins beyond [`COUNTED_ORIGINS`] are counted.
pub const OTHER_ORIGINS: &str = "(other hosts)";

/// A snapshot of the fleet connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetState {
    /// Whether the session is connected and caught up.
    pub connected: bool,
    /// "connecting", "catching up", "connected", "disconnected".
    pub phase: String,
    /// The server of the current connection.
    pub server: String,
    /// The last connection or bucket error, until the next success.
    pub last_error: Option<String>,
    /// When the last change from another host arrived (Unix seconds).
    pub last_event: Option<u64>,
    /// Whether keys expire on their own (per-message TTL, nats-server
    /// ≥ 2.11 with a bucket that allows it).
    pub key_ttl: bool,
    /// Other hosts' bans not applied since the daemon started, by origin
    /// and by why (`RefusalKind::label`).
    pub refused: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Malformed bucket entries (keys or values) skipped since start.
    pub skipped: u64,
    /// Set while another daemon holds this host's fleet name.
    pub collision: Option<String>,
}

/// Shared, lock-protected [`FleetState`].
#[derive(Debug, Default)]
pub struct FleetStatus {
    state: Mutex<FleetState>,
}

impl FleetStatus {
    pub fn snapshot(&self) -> FleetState {
        self.lock().clone()
    }

    pub fn set_phase(&self, phase: &str, connected: bool) {
        let mut state = self.lock();
        state.phase = phase.to_string();
        state.connected = connected;
    }

    pub fn set_server(&self, server: String, key_ttl: bool) {
        let mut state = self.lock();
        state.server = server;
        state.key_ttl = key_ttl;
    }

    pub fn set_error(&self, error: String) {
        let mut state = self.lock();
        state.last_error = Some(error);
        state.connected = false;
        state.phase = "disconnected".to_string();
    }

    pub fn clear_error(&self) {
        self.lock().last_error = None;
    }

    /// Adds one batch's refusals to the totals.
    pub fn add_refusals(&self, refusals: &Refusals) {
        if refusals.counts.is_empty() {
            return;
        }
        let mut state = self.lock();
        for ((origin, kind), count) in &refusals.counts {
            let known = state.refused.contains_key(&**origin);
            let origin = if known || state.refused.len() < COUNTED_ORIGINS {
                origin.to_string()
            } else {
                OTHER_ORIGINS.to_string()
            };
            *state
                .refused
                .entry(origin)
                .or_default()
                .entry(kind.label())
                .or_insert(0) += *count as u64;
        }
    }

    pub fn set_collision(&self, collision: Option<String>) {
        self.lock().collision = collision;
    }

    pub fn note_skipped(&self) {
        self.lock().skipped += 1;
    }

    pub fn note_event(&self) {
        self.lock().last_event = Some(now_unix());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FleetState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::remote_policy::{Refusal, RefusalKind};
    use std::sync::Arc;

    #[test]
    fn refusals_add_up_per_origin_and_kind_within_bounds() {
        let status = FleetStatus::default();
        let net: ipnet::IpNet = "10.0.0.0/16".parse().expect("literal");
        let mut batch = Refusals::default();
        for i in 0..100 {
            let origin: Arc<str> = Arc::from(format!("host{i}"));
            batch.note(&origin, &net, Refusal::new(RefusalKind::Prefix, "broad"));
        }
        status.add_refusals(&batch);
        status.add_refusals(&batch);
        let refused = status.snapshot().refused;
        assert_eq!(refused.len(), COUNTED_ORIGINS + 1);
        assert_eq!(refused["host0"]["prefix"], 2);
        assert_eq!(
            refused[OTHER_ORIGINS]["prefix"],
            2 * (100 - COUNTED_ORIGINS as u64)
        );
    }
}
