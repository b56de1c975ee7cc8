//! What another host changed in the bucket, as the session hands it to the
//! core ([`RemoteChange`]), and what the core did with a batch of them
//! ([`RemoteOutcome`]). Plain data shared by `fleet::session` and the
//! core's `daemon::fleet_apply`, so neither needs the other's module.
//!
//! Types only: no decoding (that is `record.rs`), no decisions.

use std::sync::Arc;

use ipnet::IpNet;

use super::record::FleetBan;
use super::remote_policy::Refusals;

/// Prefix of the source of a ban that came from another host.
pub const FLEET_SOURCE_PREFIX: &str = "fleet:";

/// A change read from the bucket: to another host's key, or this host's
/// key removed by someone else.
#[derive(Debug, Clone)]
pub enum RemoteChange {
    /// `origin` bans `net` (a new key, or a new value for it).
    Put {
        origin: Arc<str>,
        net: IpNet,
        ban: FleetBan,
    },
    /// `origin` lifted its ban of `net` (deleted, purged or expired key).
    Delete { origin: Arc<str>, net: IpNet },
    /// Someone else deleted or purged this host's key for `net`: a
    /// fleet-wide unban, which lifts this host's ban too if it was made
    /// before `made_before` (Unix seconds). A ban made since stays (its key
    /// is put back).
    OwnKeyRemoved { net: IpNet, made_before: u64 },
}

/// What a batch of remote changes did, for the log and the status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoteOutcome {
    pub applied: usize,
    pub lifted: usize,
    /// Bans not applied, per origin and why (logged as one line).
    pub refusals: Refusals,
}
