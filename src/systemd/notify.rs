//! sd_notify(3) messages to systemd: READY, RELOADING, STATUS, WATCHDOG.
//!
//! Every function is a no-op outside systemd (no NOTIFY_SOCKET). This
//! module only sends; it must not decide when.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {err}");
    }
}

/// The service is up: the first apply is done and the bus name is taken.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A configuration reload started (answered later by [`ready`]).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The service is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// The one-line status `systemctl status` shows.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Tells the watchdog the daemon is alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval systemd asked for (WatchdogSec=), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}
