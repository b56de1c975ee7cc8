//! The `org.orch.Orch1` D-Bus API: the daemon's service and the CLI's
//! client, with the error names both sides agree on.
//!
//! Names and paths live here once; the service must not change state
//! itself (it hands every request to the core).

pub mod access;
pub mod client;
pub mod errors;
pub mod guard;
pub mod polkit;
pub mod service;

/// Well-known bus name the daemon owns.
pub const BUS_NAME: &str = "org.orch.Orch1";
/// Object path of the one object.
pub const OBJECT_PATH: &str = "/org/orch/Orch1";
/// Interface name.
pub const INTERFACE: &str = "org.orch.Orch1";
