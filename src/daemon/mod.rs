//! `orch daemon`: wires the store, the firewall, the core, the event
//! sources and D-Bus together, and runs until SIGTERM.
//!
//! This module only assembles and starts; the core makes decisions and the
//! reconciler changes the kernel. Start-up order matters: the systemd and
//! kernel watchers subscribe before the first apply so no change is missed,
//! and READY=1 goes out only after the first apply and the bus name.

pub mod ban_events;
pub mod ban_log;
pub mod bus_link;
pub mod core;
pub mod dns_refresh;
pub mod events;
pub mod firewall_event;
pub mod fleet_apply;
pub mod fleet_side;
pub mod hook_runs;
pub mod imported_bans;
pub mod jail_bans;
pub mod jails;
pub mod lanes;
pub mod listing;
pub mod query;
pub mod read_view;
pub mod reconciler;
pub mod reload;
pub mod runtime_allows;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::bus::service::OrchService;
use crate::bus::{BUS_NAME, OBJECT_PATH};
use crate::config::Config;
use crate::firewall::monitor::{KernelMonitor, NotificationSwitch};
use crate::firewall::{Firewall, FirewallError};
use crate::hooks::HookSettings;
use crate::store::{Store, StoreError};
use crate::systemd::notify;
use crate::systemd::watcher::{UnitChange, UnitWatcher};
use crate::timefmt::now_unix;
use core::{Core, CoreError, CoreHandle};
use firewall_event::{EventKind, EventSender, FirewallEvent};
use hook_runs::{HookRuns, HookSetup, HookTrigger};
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

/// Runs the daemon until SIGTERM or SIGINT. `config_path` is the explicit
/// `--config` (if any), re-read on SIGHUP.
/// Runs the daemon on `config`. `config_error` is set when the
/// configuration on disk is invalid and `config` is a fallback (the last
/// good one, or the embedded default): it is shown in `orch status` and
/// `systemctl status` until a reload succeeds.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    config_error: Option<String>,
) -> Result<(), DaemonError> {
    for why in crate::config::untrusted_sources(&config) {
        tracing::warn!("a config file others could change: {why}");
    }
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;

    let current_bus = bus_link::CurrentBus::default();
    let mut connection = bus_link::connect(&current_bus).await?;
    let (event_sender, event_receiver) = tokio::sync::mpsc::unbounded_channel();
    let watched = config.systemd.watch_units.clone();
    let unit_watcher = bus_link::subscribe_units(&connection, &watched).await;
    let notification_switch = start_kernel_monitor(&config.firewall.table, event_sender.clone());
    let hook_runs = start_hook_runs(&config, &current_bus);
    let dns_settings = config.dns.clone();
    let running_config = config.clone();
    let dns_reports = dns_refresh::DnsReports::default();
    let jail_config = config.clone();
    let fleet_config = config.clone();

    let mut core = tokio::task::spawn_blocking(move || -> Result<Core, DaemonError> {
        let store = Store::open(&config.state_dir, now_unix())?;
        tracing::info!(bans = store.ban_count(), dir = %config.state_dir.display(), "ban store loaded");
        let mut firewall = Firewall::open(&config.firewall)?;
        firewall.set_notification_switch(notification_switch);
        let mut core = Core::start(config, store, Reconciler::new(firewall))?;
        core.set_config_error(config_error);
        Ok(core)
    })
    .await
    .map_err(|e| DaemonError::Io(std::io::Error::other(e)))??;
    core.set_kernel_events(event_sender.clone());
    let (actions, ban_events) = crate::actions::Actions::start(
        running_config.actions.clone(),
        running_config.fleet.name.clone(),
    );
    core.set_ban_events(ban_events);
    let (handle, core_thread) = core.spawn();

    if let Some(watcher) = unit_watcher {
        bus_link::follow_units(watcher, &handle, &event_sender).await;
    }
    tokio::spawn(events::run(
        event_receiver,
        handle.clone(),
        hook_runs.clone(),
    ));
    tokio::spawn(watchdog(handle.clone()));
    tokio::spawn(dns_refresh::run(
        dns_settings,
        handle.clone(),
        dns_reports.clone(),
    ));

    let jail_core = handle.clone();
    let jails =
        tokio::task::spawn_blocking(move || jails::JailSupervisor::start(&jail_config, &jail_core))
            .await
            .map_err(|e| DaemonError::Io(std::io::Error::other(e)))?;

    for note in fleet_config.fleet.jails_kept_local(&fleet_config.jails) {
        tracing::info!("{note}");
    }
    let fleet = crate::fleet::start(&fleet_config, &handle).await;
    let sources = crate::metrics::Sources {
        core: handle.clone(),
        jails: jails.clone(),
        hooks: hook_runs.clone(),
        fleet: fleet.clone(),
        table: fleet_config.firewall.table.clone(),
        state_dir: fleet_config.state_dir.clone(),
    };
    crate::metrics::start(&fleet_config, sources).await;

    let (reload_requests, mut reload_receiver) = reload::ReloadRequests::channel();
    let service_parts = bus_link::ServiceParts {
        core: handle.clone(),
        reloads: reload_requests,
        hooks: hook_runs.clone(),
        dns: dns_reports.clone(),
        jails: jails.clone(),
        fleet,
    };
    bus_link::serve(&connection, &service_parts).await?;
    let status = handle.call(|core| core.status_line()).await?;
    notify::ready(&status);
    hook_runs.trigger(HookTrigger {
        event: "start".into(),
        unit: None,
        observed_at: std::time::Instant::now(),
    });

    let reload_parts = reload::ReloadParts {
        core: &handle,
        hooks: &hook_runs,
        actions: &actions,
        jails: &jails,
        started_with: &running_config,
        config_path: config_path.as_deref(),
        hook_setup,
    };
    let mut bus_error = None;
    loop {
        tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = hangup.recv() => { let _ = reload::reload(&reload_parts, "SIGHUP").await; }
            Some(reply) = reload_receiver.recv() => {
                let verdict = reload::reload(&reload_parts, "Reload() over D-Bus").await;
                let _ = reply.send(verdict);
            }
            why = bus_link::lost(&connection) => {
                match bus_link::reconnect(&why, &current_bus, &service_parts, &watched, &event_sender).await {
                    Ok(new_connection) => connection = new_connection,
                    Err(err) => { bus_error = Some(err); break; }
                }
            }
        }
    }
    notify::stopping();
    // Jails save their read positions through the core, so they stop first.
    let _ = tokio::task::spawn_blocking(move || jails.stop()).await;
    handle.stop().await;
    drop(connection);
    drop(event_sender);
    drop(handle);
    tokio::task::spawn_blocking(move || core_thread.join())
        .await
        .map_err(|e| DaemonError::Io(std::io::Error::other(e)))?
        .map_err(|_| DaemonError::Io(std::io::Error::other("core thread panicked")))?;
    match bus_error {
        Some(err) => Err(DaemonError::Bus(err)),
        None => Ok(()),
    }
}

/// Hook settings and the environment every hook gets, from the config.
fn hook_setup(config: &Config) -> HookSetup {
    HookSetup {
        settings: HookSettings {
            dir: config.hooks.dir.clone(),
            default_timeout: config.hooks.timeout,
            timeouts: config.hooks.timeouts.clone(),
        },
        base_env: vec![
            ("ORCH_TABLE".to_string(), config.firewall.table.clone()),
            ("ORCH_FAMILY".to_string(), "inet".to_string()),
        ],
    }
}

/// The hook scheduler, with the environment every hook gets and a
/// `HookFailed` signal for each failure (on the bus connection of the
/// moment; none while orch is off the bus).
fn start_hook_runs(config: &Config, current_bus: &bus_link::CurrentBus) -> HookRuns {
    let current_bus = current_bus.clone();
    HookRuns::start(
        hook_setup(config),
        Box::new(move |result| {
            let Some(connection) = current_bus.get() else {
                return;
            };
            let (name, status) = (result.name.clone(), result.outcome.status_code());
            tokio::spawn(async move {
                if let Ok(emitter) =
                    zbus::object_server::SignalEmitter::new(&connection, OBJECT_PATH)
                    && let Err(err) = OrchService::hook_failed(&emitter, &name, status).await
                {
                    tracing::debug!("cannot emit HookFailed: {err}");
                }
            });
        }),
    )
}

/// Turns systemd unit changes into firewall events, and records states.
async fn forward_unit_events(watcher: UnitWatcher, events: EventSender, core: CoreHandle) {
    watcher
        .run(move |event| {
            let kind = match event.change {
                UnitChange::Started => EventKind::Start,
                UnitChange::Restarted => EventKind::Restart,
                UnitChange::Reloaded => EventKind::Reload,
                UnitChange::Stopped => EventKind::Stop,
                UnitChange::StateChanged => EventKind::Check,
            };
            let (unit, state) = (event.unit.clone(), event.active_state.clone());
            let recorder = core.clone();
            tokio::spawn(async move {
                let _ = recorder
                    .call(move |core| core.record_unit_state(&unit, &state))
                    .await;
            });
            let cause = format!("{} {}", event.unit, event.change.as_str());
            let _ = events.send(FirewallEvent::new(kind, Some(event.unit), cause));
        })
        .await;
}

/// Listens to the kernel's nftables notifications on a thread of its own
/// and turns them into firewall events (see [`firewall_event::from_kernel`]).
/// Returns the switch that pauses it during bulk changes.
fn start_kernel_monitor(table: &str, sender: EventSender) -> Option<NotificationSwitch> {
    let mut monitor = match KernelMonitor::open() {
        Ok(monitor) => monitor,
        Err(err) => {
            tracing::warn!(
                "cannot follow nftables events ({err}); relying on the periodic self-check"
            );
            return None;
        }
    };
    let switch = monitor
        .switch()
        .inspect_err(|err| {
            tracing::warn!("cannot pause nftables events for bulk changes: {err}");
        })
        .ok();
    let table = table.to_string();
    let spawned = std::thread::Builder::new()
        .name("orch-kernel".into())
        .spawn(move || {
            loop {
                let batch = match monitor.next_events(None) {
                    Ok(batch) => batch,
                    Err(err) => {
                        tracing::error!("nftables event monitor stopped: {err}");
                        return;
                    }
                };
                if let Some(event) = firewall_event::from_kernel(&batch, &table)
                    && sender.send(event).is_err()
                {
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => switch,
        Err(err) => {
            tracing::warn!("cannot start the nftables event thread: {err}");
            None
        }
    }
}

/// Pings systemd's watchdog while the core shows it is alive: between
/// jobs, at least once a second while idle, and between the steps of long
/// work. Reads never wait in the core's queue, so they cannot starve it; a
/// core stuck in one step longer than half the watchdog period stops the
/// pings, and systemd restarts the daemon.
async fn watchdog(core: CoreHandle) {
    let Some(interval) = notify::watchdog_interval() else {
        return;
    };
    let period = (interval / 4).max(Duration::from_millis(250));
    let stuck_after = interval / 2;
    let mut warned = false;
    loop {
        tokio::time::sleep(period).await;
        let quiet = core.liveness().since_last_beat();
        if quiet < stuck_after {
            notify::watchdog();
            warned = false;
        } else if !warned {
            tracing::warn!(
                "the core has shown no sign of life for {quiet:?}; not pinging the watchdog"
            );
            warned = true;
        }
    }
}
