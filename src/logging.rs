//! Logging setup: tracing to stderr, filtered by RUST_LOG (default info).
//! Under systemd (JOURNAL_STREAM set) no timestamps are printed, since the
//! journal adds its own. It must not be called twice.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}
