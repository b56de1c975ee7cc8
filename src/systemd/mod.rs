//! orch's integration with systemd.
//!
//! `install` puts orch's unit files, drop-ins and D-Bus policy in place
//! (`orch install-units`) and takes them away again (`orch uninstall-units`).
//! `watcher` follows units' state changes, `units` asks whether a unit is
//! installed, `notify` speaks sd_notify.

pub mod install;
pub mod notify;
pub mod units;
pub mod watcher;
