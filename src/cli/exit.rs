//! The exit statuses of every `orch` command, and the one type a client
//! command fails with: a message for stderr and its status. Scripts may
//! rely on these numbers; they are listed in `orch --help`, orch(8) and
//! the README.
//!
//! It maps failures to statuses and hints; it must not print anything.

use crate::bus::client::ClientError;

/// The command did what was asked.
pub const OK: u8 = 0;
/// The daemon (or the command itself) refused or failed: an invalid or
/// allowlisted address, a config that does not load, a ban not found.
pub const REFUSED: u8 = 1;
/// The command line was wrong (clap's own status for usage errors).
pub const USAGE: u8 = 2;
/// The daemon is not running, or there is no system bus to reach it on.
pub const NOT_RUNNING: u8 = 3;
/// The caller may not do this (D-Bus policy or polkit said no).
pub const DENIED: u8 = 4;
/// The daemon did not answer in time.
pub const TIMEOUT: u8 = 5;

/// The table of statuses, for `orch --help` and so orch(8): a macro so
/// that it can join the other help text at compile time.
#[macro_export]
macro_rules! exit_status_help {
    () => {
        "Exit status:\n  \
0  success\n  \
1  refused or failed (the message says why: an invalid or allowlisted address, an invalid config, ...)\n  \
2  usage error (unknown option, missing argument)\n  \
3  the daemon is not running, or there is no system bus (start it: systemctl start orch)\n  \
4  permission denied (the message names the polkit action and what grants it)\n  \
5  the daemon did not answer in time (see journalctl -u orch)\n\
`orch store verify` has its own: 0 clean, 1 damaged, 2 unreadable."
    };
}

/// What a client command ended with: a message for stderr and an exit
/// status.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    /// A refusal or failure with status [`REFUSED`].
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: REFUSED,
        }
    }
}

/// Every bus failure names its fix.
impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        let code = match &err {
            ClientError::NoBus(_) | ClientError::NotRunning => NOT_RUNNING,
            ClientError::Timeout(_) => TIMEOUT,
            ClientError::Refused { name, .. } if is_denial(name) => DENIED,
            ClientError::Refused { .. } | ClientError::Bus(_) => REFUSED,
        };
        let hint = match &err {
            ClientError::NotRunning => "\nhint: start it with `systemctl start orch`",
            ClientError::NoBus(_) => {
                "\nhint: the system bus (dbus.service) is not running; start it with \
                 `systemctl start dbus`"
            }
            ClientError::Timeout(_) => {
                "\nhint: the daemon is busy or stuck; `journalctl -u orch -n 50` shows what it is doing"
            }
            _ => "",
        };
        Failure {
            message: format!("{err}{hint}"),
            code,
        }
    }
}

/// Whether a D-Bus error name is a refusal to this caller.
pub fn is_denial(error_name: &str) -> bool {
    matches!(
        error_name,
        "org.orch.Orch1.Error.AccessDenied"
            | "org.freedesktop.DBus.Error.AccessDenied"
            | "org.freedesktop.PolicyKit1.Error.NotAuthorized"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_failure_gets_its_status_and_a_fix() {
        let not_running = Failure::from(ClientError::NotRunning);
        assert_eq!(not_running.code, NOT_RUNNING);
        assert!(not_running.message.contains("systemctl start orch"));
        let timeout = Failure::from(ClientError::Timeout(Duration::from_secs(30)));
        assert_eq!(timeout.code, TIMEOUT);
        let denied = Failure::from(ClientError::Refused {
            name: "org.orch.Orch1.Error.AccessDenied".into(),
            message: "uid 1000 may not ban".into(),
        });
        assert_eq!(denied.code, DENIED);
        let refused = Failure::from(ClientError::Refused {
            name: "org.orch.Orch1.Error.Allowlisted".into(),
            message: "192.0.2.1 is allowlisted".into(),
        });
        assert_eq!(refused.code, REFUSED);
    }
}
