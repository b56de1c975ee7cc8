//! orch: host firewall orchestrator for systemd + nftables.
//!
//! The library holds every module; `src/main.rs` only parses arguments and
//! dispatches. See `docs/design.md` for how the pieces fit together.

pub mod actions;
pub mod addr;
pub mod addr_list;
pub mod bus;
pub mod child;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod file_trust;
pub mod firewall;
pub mod fleet;
pub mod hooks;
pub mod import;
pub mod jail;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod packaging;
pub mod quote;
pub mod store;
pub mod systemd;
pub mod timefmt;
