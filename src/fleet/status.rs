//! What the fleet connection is doing, for `orch status`, the D-Bus
//! properties `FleetConnected` and `Fleet`, and the log.
//!
//! Written by the session and the NATS client's event callback, read by the
//! bus service; it must not drive the connection.

use std::sync::Mutex;

use crate::timefmt::now_unix;

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

    pub fn note_event(&self) {
        self.lock().last_event = Some(now_unix());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FleetState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
