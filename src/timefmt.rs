//! Wall-clock helpers shared by the store, the daemon and the CLI.
//!
//! Everything in orch counts time as Unix seconds (`u64`); this module is the
//! one place that reads the clock. It must not format for humans beyond
//! what the CLI needs.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Formats Unix seconds as RFC 3339 in UTC, for `orch list`.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(unix)).to_string()
}
