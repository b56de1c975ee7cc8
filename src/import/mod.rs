//! `orch import fail2ban`: a fail2ban installation's enabled jails become
//! an orch conf.d file, and the bans in its database go to the running
//! daemon with their remaining time.
//!
//! - [`jail_conf`]: jail.conf, jail.d/*.conf, jail.local, jail.d/*.local
//!   read with fail2ban's precedence, each jail's options interpolated.
//! - [`mapping`]: one fail2ban jail -> one orch jail, and what could not
//!   be carried over (pure).
//! - [`toml_out`]: the mapped jails as TOML text, and writing the file only
//!   when it changes.
//! - [`ban_db`]: the `bans` table of fail2ban's sqlite database -> the bans
//!   still active, every hostile row reported rather than trusted.
//! - [`run`]: the command itself: read, map, write (or show), send.
//!
//! Nothing here changes fail2ban's files or database, and nothing but
//! [`run`] talks to the daemon.

pub mod ban_db;
pub mod jail_conf;
pub mod mapping;
pub mod run;
pub mod toml_out;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::jail::fail2ban::Fail2banError;

/// Why an import could not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "{0}: no fail2ban configuration here (no jail.conf); give fail2ban's directory with --etc DIR"
    )]
    NoEtc(PathBuf),
    #[error("{0}")]
    Fail2banConfig(#[from] Fail2banError),
    #[error("{path}: cannot read the fail2ban database: {message}")]
    Database { path: PathBuf, message: String },
    #[error("the configuration orch would write does not load:\n{0}")]
    Invalid(String),
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}; start it with `systemctl start orch`, then import again")]
    DaemonNotRunning(String),
    #[error("cannot send the bans to the daemon: {0}")]
    Send(String),
}
