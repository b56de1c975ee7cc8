//! orch's integration with systemd.
//!
//! `install` puts orch's unit files, drop-ins and D-Bus policy in place
//! (`orch install-units`) and takes them away again (`orch uninstall-units`).

pub mod install;
pub mod notify;
pub mod watcher;
