//! Reloading the configuration, on SIGHUP or on the D-Bus `Reload` call
//! (what `orch reload`, and so `systemctl reload orch`, runs). Both go
//! through [`reload`], which gives a verdict: the notes of an accepted
//! configuration, or why it was refused. A refused configuration changes
//! nothing: the running one stays.
//!
//! It reads the config files and hands the result to the core; it must not
//! change the kernel or the store itself.

use tokio::sync::{mpsc, oneshot};

use super::core::CoreHandle;
use super::hook_runs::HookRuns;
use super::jails::JailSupervisor;
use crate::config::{self, Config};
use crate::systemd::notify;

/// What a reload ended with: the notes of an applied configuration, or
/// the reason it was refused.
pub type Verdict = Result<Vec<String>, String>;

/// A request to reload, with where to send the verdict.
pub type ReloadRequest = oneshot::Sender<Verdict>;

/// How the D-Bus service asks the daemon's main loop for a reload, so
/// that reloads from SIGHUP and from D-Bus run one at a time.
#[derive(Clone)]
pub struct ReloadRequests {
    sender: mpsc::Sender<ReloadRequest>,
}

impl ReloadRequests {
    /// The requests and the end the main loop reads them from. Only a few
    /// may wait; more are refused as busy.
    pub fn channel() -> (ReloadRequests, mpsc::Receiver<ReloadRequest>) {
        let (sender, receiver) = mpsc::channel(4);
        (ReloadRequests { sender }, receiver)
    }

    /// Asks for a reload and waits for its verdict.
    pub async fn reload(&self) -> Verdict {
        let (reply, verdict) = oneshot::channel();
        self.sender
            .try_send(reply)
            .map_err(|_| "too many reloads are waiting; try again".to_string())?;
        verdict
            .await
            .unwrap_or_else(|_| Err("the daemon is stopping".to_string()))
    }
}

/// What a reload needs from the running daemon.
pub struct ReloadParts<'a> {
    pub core: &'a CoreHandle,
    pub hooks: &'a HookRuns,
    pub actions: &'a crate::actions::Actions,
    pub jails: &'a JailSupervisor,
    /// The configuration the daemon started with (DNS and the fleet
    /// connection keep it until a restart).
    pub started_with: &'a Config,
    /// `--config`, if given.
    pub config_path: Option<&'a std::path::Path>,
    /// The hook set-up of a configuration.
    pub hook_setup: fn(&Config) -> crate::daemon::hook_runs::HookSetup,
}

/// Re-reads the configuration and applies it, or refuses it and keeps the
/// running one. Every outcome is logged: notes at info, a refusal at error
/// (so `journalctl -u orch -p warning` shows why).
pub async fn reload(parts: &ReloadParts<'_>, trigger: &str) -> Verdict {
    notify::reloading();
    tracing::info!("{trigger}: reloading the configuration");
    let verdict = load_and_apply(parts).await;
    match &verdict {
        Ok(notes) => {
            for note in notes {
                tracing::warn!("{note}");
            }
            tracing::info!("configuration reloaded");
        }
        Err(why) => tracing::error!("configuration reload refused, keeping the running one: {why}"),
    }
    let status = parts
        .core
        .call(|core| core.status_line())
        .await
        .unwrap_or_default();
    notify::ready(&status);
    verdict
}

async fn load_and_apply(parts: &ReloadParts<'_>) -> Verdict {
    let new_config = config::load_default_locations(parts.config_path)
        .map_err(|err| format!("the configuration is invalid:\n{err}"))?;
    let applied = parts
        .core
        .call(move |core| {
            core.reload_config(new_config)
                .map(|()| core.config().clone())
        })
        .await
        .and_then(|applied| applied)
        .map_err(|err| err.to_string())?;
    let mut notes = Vec::new();
    if let Err(err) = config::last_good::save(&applied) {
        notes.push(format!(
            "cannot save the configuration as the last good one: {err}"
        ));
    }
    parts.hooks.set_setup((parts.hook_setup)(&applied));
    parts.actions.set_config(applied.actions.clone());
    let running = parts.started_with;
    if applied.dns != running.dns {
        notes.push("[dns] changes take effect when the daemon restarts".to_string());
    }
    if applied.metrics != running.metrics {
        notes.push("[metrics] changes take effect when the daemon restarts".to_string());
    }
    let connection_of = |f: &crate::config::FleetConfig| {
        (
            f.servers.clone(),
            f.name.clone(),
            f.auth.clone(),
            f.tls.clone(),
            f.bucket.clone(),
        )
    };
    if connection_of(&applied.fleet) != connection_of(&running.fleet) {
        notes.push(
            "[fleet] servers, name, credentials, tls and bucket take effect when the daemon \
             restarts (share, apply and the caps apply now)"
                .to_string(),
        );
    }
    let (supervisor, jail_core) = (parts.jails.clone(), parts.core.clone());
    let restarted = tokio::task::spawn_blocking(move || supervisor.apply(&applied, &jail_core))
        .await
        .unwrap_or(false);
    if restarted {
        tracing::info!("[jails] changed: jails restarted");
    }
    Ok(notes)
}
