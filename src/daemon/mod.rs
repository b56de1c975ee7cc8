//! `orch daemon`: wires the store, the firewall and the core together,
//! serves D-Bus, and waits for a stop signal.
//!
//! This module only assembles and starts; the core makes decisions and the
//! reconciler changes the kernel.

pub mod core;
pub mod reconciler;

use tokio::signal::unix::{SignalKind, signal};

use crate::bus::service::OrchService;
use crate::bus::{BUS_NAME, OBJECT_PATH};
use crate::config::Config;
use crate::firewall::{Firewall, FirewallError};
use crate::store::{Store, StoreError};
use crate::timefmt::now_unix;
use core::{Core, CoreError};
use reconciler::Reconciler;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the ban store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot set up the firewall: {0}")]
    Firewall(#[from] FirewallError),
    #[error("first apply failed: {0}")]
    Core(#[from] CoreError),
    #[error("cannot serve {BUS_NAME} on the system bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;

    let core = tokio::task::spawn_blocking(move || -> Result<Core, DaemonError> {
        let store = Store::open(&config.state_dir, now_unix())?;
        tracing::info!(bans = store.ban_count(), dir = %config.state_dir.display(), "ban store loaded");
        let firewall = Firewall::open(&config.firewall)?;
        Ok(Core::start(config, store, Reconciler::new(firewall))?)
    })
    .await
    .map_err(|e| DaemonError::Io(std::io::Error::other(e)))??;
    let (handle, core_thread) = core.spawn();

    let connection = zbus::connection::Builder::system()
        .serve_at(OBJECT_PATH, OrchService::new(handle.clone()))
        .name(BUS_NAME)
        .build()
        .await?;
    tracing::info!("serving {BUS_NAME} on the system bus");

    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
    }
    drop(connection);
    drop(handle);
    tokio::task::spawn_blocking(move || core_thread.join())
        .await
        .map_err(|e| DaemonError::Io(std::io::Error::other(e)))?
        .map_err(|_| DaemonError::Io(std::io::Error::other("core thread panicked")))?;
    Ok(())
}
