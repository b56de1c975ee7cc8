//! Logging setup, and the fixed journal identifiers of orch's events.
//!
//! Under systemd (stderr is the journal stream named by JOURNAL_STREAM)
//! events go straight to journald through tracing-journald: each at its
//! priority (error 3, warn 4, info 5, debug 6), with its fields as journal
//! fields (`orch_jail` becomes ORCH_JAIL) and, for bans, unbans and
//! restores, a fixed MESSAGE_ID. Elsewhere they go to stderr as plain text,
//! with colour only on a terminal. RUST_LOG filters (default info). It must
//! not be called twice.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `journalctl MESSAGE_ID=...` for every ban orch made (manual, jail,
/// fleet, import).
pub const MESSAGE_ID_BAN: &str = "b2c2f0826e6b4251a93ce28d23ead0e9";
/// ... for every ban lifted (unban, expiry, fleet).
pub const MESSAGE_ID_UNBAN: &str = "bfcb35033f4746fda4393e4ffeeb7e3c";
/// ... for every time orch put its table back after someone removed or
/// changed it (a flush, nftables.service restarting).
pub const MESSAGE_ID_RESTORED: &str = "8a7e2e2a5de44ffe9e6f9eef3f1d0026";

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_the_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald.with_field_prefix(None))
            .init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // A journal stream without journald's socket: it adds the time.
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// Whether stderr is the journal stream systemd connected (JOURNAL_STREAM
/// is `device:inode` of that stream, and is inherited by children whose
/// stderr may be something else).
fn stderr_is_the_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(stderr.dev()) && inode.parse() == Ok(stderr.ino())
}
