//! The fleet state the core owns: the outbox this host's shared bans are
//! noted in, every other host's bans, the NATS servers' addresses and the
//! refusal log. Data only: what happens to it is `fleet_apply.rs`, which
//! runs on the core thread. Kept apart so that the core, which owns it,
//! need not import the module that works on the core.

use std::sync::Arc;

use crate::fleet::holdings::Holdings;
use crate::fleet::outbox::Outbox;

/// The fleet state the core keeps.
#[derive(Debug, Default)]
pub struct FleetSide {
    /// Where this host's changed shared bans are noted; `None` without a
    /// fleet.
    pub(super) outbox: Option<Arc<Outbox>>,
    /// Every other host's bans, as last read.
    pub(super) holdings: Holdings,
    /// The NATS servers' addresses, as the session last resolved them: no
    /// remote ban may cover them.
    pub(super) nats_servers: Vec<std::net::IpAddr>,
    /// Refusals: a few batches' summaries a minute are logged, the rest
    /// counted (all of them are in `orch status`).
    pub(super) refusal_log: crate::fleet::log_window::LogWindow,
}
