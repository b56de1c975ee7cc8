//! Named D-Bus errors (`org.orch.Orch1.Error.*`) and how core errors map
//! onto them. Each carries a human message; a refused call changed nothing.

use crate::addr::AddrError;
use crate::daemon::core::CoreError;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.orch.Orch1.Error")]
pub enum OrchError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Not an IP address or prefix, host bits set, or not unicast.
    InvalidAddress(String),
    /// Overlaps the static or runtime allowlist.
    Allowlisted(String),
    /// Broader than bans.min_prefix_v4 / min_prefix_v6.
    TooBroad(String),
    /// Loopback or one of this host's own addresses.
    Protected(String),
    /// A prefix that overlaps another banned prefix.
    Overlaps(String),
    /// A ban time beyond bans.max_time.
    InvalidDuration(String),
    /// The thing to remove is not there.
    NotFound(String),
    /// The caller may not do this (the message names the action).
    AccessDenied(String),
    /// The caller already has as many reads running as it may, or the
    /// daemon's read queue is full.
    Busy(String),
    /// The answer would be larger than one reply may carry; page instead.
    TooMany(String),
    /// nftables refused a change.
    Firewall(String),
    /// The ban store could not persist.
    Store(String),
    /// A malformed argument other than an address.
    InvalidArgument(String),
    /// A reload found the configuration invalid; the running one stays.
    ConfigInvalid(String),
    /// The fleet is not configured, unreachable, or refused the request.
    Fleet(String),
    /// The daemon is shutting down or broken.
    Failed(String),
}

impl From<CoreError> for OrchError {
    fn from(err: CoreError) -> Self {
        let message = err.to_string();
        if let Some(addr_err) = err.address_error() {
            return match addr_err {
                AddrError::Invalid { .. }
                | AddrError::HostBits { .. }
                | AddrError::NotUnicast { .. } => OrchError::InvalidAddress(message),
                AddrError::TooBroad { .. } => OrchError::TooBroad(message),
                AddrError::Protected { .. } => OrchError::Protected(message),
                AddrError::Allowlisted { .. } => OrchError::Allowlisted(message),
            };
        }
        match err {
            CoreError::InvalidDuration(_) => OrchError::InvalidDuration(message),
            CoreError::Overlaps(_) => OrchError::Overlaps(message),
            CoreError::NotFound(_) => OrchError::NotFound(message),
            CoreError::Firewall(_) => OrchError::Firewall(message),
            CoreError::Store(_) => OrchError::Store(message),
            CoreError::Busy(_) => OrchError::Busy(message),
            CoreError::InvalidArgument(_) => OrchError::InvalidArgument(message),
            _ => OrchError::Failed(message),
        }
    }
}
