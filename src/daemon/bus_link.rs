//! The daemon's link to the system bus: connect, watch systemd's units on
//! it, serve `org.orch.Orch1` and own the name; notice when the connection
//! closes or the name is lost, and do it all again.
//!
//! Losing the bus is never silent: it is logged as an error, the kernel
//! state stays as it is (the core and the firewall do not depend on the
//! bus), and the link is rebuilt within seconds. If it cannot be rebuilt
//! within [`RECONNECT_DEADLINE`], the daemon exits non-zero so that systemd
//! restarts it. This module must not decide anything about bans.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use zbus::Connection;
use zbus::fdo::DBusProxy;

use super::core::CoreHandle;
use super::firewall_event::{EventKind, EventSender, FirewallEvent};
use super::hook_runs::HookRuns;
use crate::bus::access::Access;
use crate::bus::guard::Guarded;
use crate::bus::service::OrchService;
use crate::bus::{BUS_NAME, OBJECT_PATH};
use crate::systemd::watcher::UnitWatcher;

/// How long the daemon tries to get back on the bus before it gives up
/// and exits for systemd to restart it.
pub const RECONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// Pause between attempts to reconnect.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// The connection in use now, for whoever sends on the bus outside a
/// call (the `HookFailed` signal). `None` while there is none.
#[derive(Clone, Default)]
pub struct CurrentBus {
    connection: Arc<RwLock<Option<Connection>>>,
}

impl CurrentBus {
    pub fn get(&self) -> Option<Connection> {
        self.connection.read().ok().and_then(|c| c.clone())
    }

    fn set(&self, connection: Option<Connection>) {
        if let Ok(mut current) = self.connection.write() {
            *current = connection;
        }
    }
}

/// Connects to the system bus (honouring DBUS_SYSTEM_BUS_ADDRESS).
pub async fn connect(current: &CurrentBus) -> zbus::Result<Connection> {
    let connection = zbus::connection::Builder::system().build().await?;
    current.set(Some(connection.clone()));
    Ok(connection)
}

/// Subscribes to the watched systemd units on `connection`; `None`
/// without systemd on the bus or when it refuses.
pub async fn subscribe_units(connection: &Connection, watched: &[String]) -> Option<UnitWatcher> {
    match UnitWatcher::subscribe(connection, watched).await {
        Ok(Some(watcher)) => Some(watcher),
        Ok(None) => {
            tracing::info!("no systemd on this bus; not watching units");
            None
        }
        Err(err) => {
            tracing::warn!("cannot watch systemd units: {err}");
            None
        }
    }
}

/// Records the watched units' states with the core, then forwards their
/// changes as firewall events until the watcher's connection closes.
pub async fn follow_units(watcher: UnitWatcher, core: &CoreHandle, events: &EventSender) {
    for (unit, state) in watcher.current_states().await {
        let _ = core
            .call(move |core| core.record_unit_state(&unit, &state))
            .await;
    }
    tokio::spawn(super::forward_unit_events(
        watcher,
        events.clone(),
        core.clone(),
    ));
}

/// What the service on the bus is made of; kept to serve it again after
/// a reconnect.
#[derive(Clone)]
pub struct ServiceParts {
    pub core: CoreHandle,
    pub hooks: HookRuns,
    pub dns: super::dns_refresh::DnsReports,
    pub jails: super::jails::JailSupervisor,
    pub fleet: Option<crate::fleet::FleetLink>,
    pub reloads: super::reload::ReloadRequests,
}

/// Serves `org.orch.Orch1` on `connection` and takes the name.
pub async fn serve(connection: &Connection, parts: &ServiceParts) -> zbus::Result<()> {
    let parts = parts.clone();
    connection
        .object_server()
        .at(
            OBJECT_PATH,
            Guarded::new(OrchService::new(parts), Access::default()),
        )
        .await?;
    connection.request_name(BUS_NAME).await?;
    tracing::info!("serving {BUS_NAME} on the system bus");
    Ok(())
}

/// Returns when `connection` is closed or the bus takes the name away,
/// with a sentence saying which.
pub async fn lost(connection: &Connection) -> String {
    let name_lost = async {
        let proxy = match DBusProxy::new(connection).await {
            Ok(proxy) => proxy,
            Err(_) => return std::future::pending().await,
        };
        let Ok(mut lost) = proxy.receive_name_lost().await else {
            return std::future::pending().await;
        };
        while let Some(signal) = lost.next().await {
            if signal.args().is_ok_and(|args| args.name() == BUS_NAME) {
                return format!("the bus took the name {BUS_NAME} away");
            }
        }
        std::future::pending().await
    };
    tokio::select! {
        () = connection.closed() => "the connection to the system bus closed".to_string(),
        why = name_lost => why,
    }
}

/// Gets back on the bus after `why`: connects, watches the units, serves
/// the name, and asks the core to check the table (events may have been
/// missed meanwhile). Retries until [`RECONNECT_DEADLINE`].
pub async fn reconnect(
    why: &str,
    current: &CurrentBus,
    parts: &ServiceParts,
    watched: &[String],
    events: &EventSender,
) -> zbus::Result<Connection> {
    tracing::error!(
        "{why}; orch is unreachable over D-Bus (its table and bans stay in the kernel); reconnecting"
    );
    current.set(None);
    let deadline = Instant::now() + RECONNECT_DEADLINE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let attempt = async {
            let connection = connect(current).await?;
            if let Some(watcher) = subscribe_units(&connection, watched).await {
                follow_units(watcher, &parts.core, events).await;
            }
            serve(&connection, parts).await?;
            Ok::<_, zbus::Error>(connection)
        };
        match attempt.await {
            Ok(connection) => {
                tracing::warn!("back on the system bus after {attempts} attempt(s)");
                let _ = events.send(FirewallEvent::new(
                    EventKind::Check,
                    None,
                    "reconnected to the system bus".into(),
                ));
                return Ok(connection);
            }
            Err(err) if Instant::now() < deadline => {
                tracing::debug!("reconnecting to the system bus: {err}");
                current.set(None);
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
            Err(err) => {
                tracing::error!(
                    "could not get back on the system bus within {RECONNECT_DEADLINE:?}: {err}"
                );
                return Err(err);
            }
        }
    }
}
