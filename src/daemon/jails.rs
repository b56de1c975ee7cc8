//! Starts the configured log jails and connects them to the core: a jail's
//! ban request and its read positions become core jobs, so jails ban
//! through the same serialised path (and safety rules) as D-Bus callers.
//!
//! This module only wires; counting is in `jail::runner`, ban policy in the
//! core.

use ipnet::IpNet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{Config, JailConfig, JailSource, JailsConfig};
use crate::daemon::core::CoreHandle;
use crate::jail::runner::{BanOutcomes, JailActions, JailStats, RunningJail};

/// What `orch status` shows of one jail.
#[derive(Debug, Clone)]
pub struct JailView {
    pub name: String,
    pub filter: String,
    pub source: String,
    pub stats: Arc<JailStats>,
}

/// The running jails.
pub struct Jails {
    running: Vec<RunningJail>,
    /// Recidive jails, counted by the core.
    recidive_views: Vec<JailView>,
    /// Why jails that were not configured run or not (the default jail),
    /// for `orch status`.
    notes: Vec<String>,
}

impl Jails {
    /// Starts every enabled jail. Runs blocking work (loading filters,
    /// reading saved positions from the core), so call it off the async
    /// runtime. A jail whose filter fails to load is logged and skipped;
    /// `orch check-config` reports the same problem beforehand.
    pub fn start(config: &Config, core: &CoreHandle) -> Jails {
        let actions: Arc<dyn JailActions> = Arc::new(CoreActions { core: core.clone() });
        let mut running = Vec::new();
        let mut recidive_views = Vec::new();
        let mut notes = Vec::new();
        for jail in config.jails.jails.iter().filter(|jail| jail.enabled) {
            if jail.by_default {
                let (runs, why) = default_jail_verdict(jail);
                tracing::info!(orch_jail = %jail.name, "{why}");
                notes.push(why);
                if !runs {
                    continue;
                }
            }
            if jail.source == JailSource::OwnBans {
                // The core counts other jails' bans for it.
                let stats = Arc::new(JailStats::default());
                let (recidive, shared, max_tracked) =
                    (jail.clone(), stats.clone(), config.jails.max_tracked);
                if core
                    .call_blocking(move |core| core.add_recidive(recidive, max_tracked, shared))
                    .is_ok()
                {
                    recidive_views.push(JailView {
                        name: jail.name.clone(),
                        filter: jail.filter.clone(),
                        source: jail.source.to_string(),
                        stats,
                    });
                }
                continue;
            }
            let filter = match crate::jail::load::load_filter(&jail.filter) {
                Ok(filter) => filter,
                Err(err) => {
                    tracing::error!(orch_jail = %jail.name, "jail not started: {err}");
                    continue;
                }
            };
            let saved = |key: &str| {
                let key = key.to_string();
                core.call_blocking(move |core| core.cursor(&key))
                    .ok()
                    .flatten()
            };
            match RunningJail::start(
                jail.clone(),
                filter,
                config.jails.max_tracked,
                &saved,
                actions.clone(),
            ) {
                Ok(started) => running.push(started),
                Err(err) => tracing::error!(orch_jail = %jail.name, "cannot start the jail: {err}"),
            }
        }
        Jails {
            running,
            recidive_views,
            notes,
        }
    }

    /// Why the default jail runs or not; empty when jails are configured.
    pub fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// Views for status.
    pub fn views(&self) -> Vec<JailView> {
        self.running
            .iter()
            .map(|jail| JailView {
                name: jail.config.name.clone(),
                filter: jail.config.filter.clone(),
                source: jail.config.source.to_string(),
                stats: jail.stats.clone(),
            })
            .chain(self.recidive_views.iter().cloned())
            .collect()
    }

    /// Stops every jail, saving its positions. Blocking.
    pub fn stop(self) {
        for jail in self.running {
            jail.stop();
        }
    }
}

/// The running jails, shared by the daemon (which restarts them when a
/// reload changes `[jails]`) and the bus (which shows them).
#[derive(Clone)]
pub struct JailSupervisor {
    state: Arc<Mutex<Supervised>>,
}

struct Supervised {
    jails: Option<Jails>,
    config: JailsConfig,
}

impl JailSupervisor {
    /// Starts the configured jails. Blocking (see [`Jails::start`]).
    pub fn start(config: &Config, core: &CoreHandle) -> JailSupervisor {
        JailSupervisor {
            state: Arc::new(Mutex::new(Supervised {
                jails: Some(Jails::start(config, core)),
                config: config.jails.clone(),
            })),
        }
    }

    /// The running jails, for status.
    pub fn views(&self) -> Vec<JailView> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.jails.as_ref().map(Jails::views).unwrap_or_default()
    }

    /// See [`Jails::notes`].
    pub fn notes(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.jails.as_ref().map(Jails::notes).unwrap_or_default()
    }

    /// Restarts the jails if `config` changed `[jails]`; returns whether it
    /// did. Each stopped jail saves its position first, so a jail that is
    /// still configured resumes where it stopped. Blocking.
    pub fn apply(&self, config: &Config, core: &CoreHandle) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.config == config.jails {
            return false;
        }
        if let Some(old) = state.jails.take() {
            old.stop();
        }
        let _ = core.call_blocking(|core| core.clear_recidive());
        state.jails = Some(Jails::start(config, core));
        state.config = config.jails.clone();
        true
    }

    /// Stops every jail, saving positions. Blocking.
    pub fn stop(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(jails) = state.jails.take() {
            jails.stop();
        }
    }
}

/// Whether the default jail (no jails configured) runs on this host, and
/// why: only where systemd has a unit its journal matches name (ssh.service
/// or sshd.service for sshd). Blocking: asks systemd.
fn default_jail_verdict(jail: &JailConfig) -> (bool, String) {
    let units: Vec<String> = match &jail.source {
        JailSource::Journal { matches } => matches
            .iter()
            .filter_map(|m| m.strip_prefix("_SYSTEMD_UNIT="))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let name = &jail.name;
    let off = format!("set jails.{name}.enabled = false in orch.toml to turn it off");
    let asked = tokio::runtime::Handle::try_current()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(crate::systemd::units::first_installed(&units))
                .map_err(|e| e.to_string())
        });
    match asked {
        Ok(Some(unit)) => (
            true,
            format!(
                "jail {name} runs by default: no jails are configured and {unit} is installed; {off}"
            ),
        ),
        Ok(None) => (
            false,
            format!(
                "jail {name} (the default when no jails are configured) does not run: none of {} is installed",
                units.join(", ")
            ),
        ),
        Err(why) => (
            false,
            format!(
                "jail {name} (the default when no jails are configured) does not run: \
                 cannot tell whether {} is installed: {why}",
                units.join(" or ")
            ),
        ),
    }
}

/// Jail requests as core jobs.
struct CoreActions {
    core: CoreHandle,
}

impl JailActions for CoreActions {
    fn ban_many(&self, jail: &JailConfig, nets: Vec<IpNet>, failures: u32) -> BanOutcomes {
        let jail = jail.clone();
        let outcomes = self
            .core
            .call_blocking(move |core| core.jail_ban_many(&jail, &nets, failures))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(outcomes
            .into_iter()
            .map(|(net, outcome)| (net, outcome.map_err(|e| e.to_string())))
            .collect())
    }

    fn save_positions(&self, positions: Vec<(String, String)>) -> Result<(), String> {
        self.core
            .call_blocking(move |core| core.save_cursors(&positions))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    fn removals(&self) -> u64 {
        self.core.removals()
    }
}
