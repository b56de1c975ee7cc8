//! Follows systemd units (default `nftables.service`) over the system bus
//! and reports each change as a [`UnitEvent`].
//!
//! It subscribes to systemd's signals (`Manager.Subscribe()`; without it
//! systemd sends none), listens to `JobRemoved` and to each unit's
//! `ActiveState`, and classifies what happened. It only reports: deciding
//! what to do about a firewall reload is the core's job.

use std::collections::HashMap;

use futures_util::StreamExt;
use zbus::{Connection, proxy};
use zbus::{ObjectPath, OwnedObjectPath};

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Systemd1Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Systemd1Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
}

/// What a unit went through, as far as its states tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitChange {
    Started,
    Restarted,
    Reloaded,
    Stopped,
    /// A state change seen before its job finished, or one that fits no
    /// pattern: worth a check, not a name.
    StateChanged,
}

impl UnitChange {
    /// The word hooks get in ORCH_EVENT and logs show.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitChange::Started => "start",
            UnitChange::Restarted => "restart",
            UnitChange::Reloaded => "reload",
            UnitChange::Stopped => "stop",
            UnitChange::StateChanged => "state-change",
        }
    }
}

/// One observed change of a watched unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitEvent {
    pub unit: String,
    pub change: UnitChange,
    /// The unit's ActiveState after the change.
    pub active_state: String,
}

/// States seen for one unit since its last finished job.
#[derive(Debug, Default)]
struct UnitTrack {
    state_before_job: Option<String>,
    seen_since_job: Vec<String>,
    current: Option<String>,
}

impl UnitTrack {
    fn observe(&mut self, state: &str) {
        if self.seen_since_job.is_empty() {
            self.state_before_job = self.current.clone();
        }
        self.seen_since_job.push(state.to_string());
        self.current = Some(state.to_string());
    }

    /// Classifies the job that just finished and starts a new round.
    fn finish_job(&mut self, final_state: &str) -> UnitChange {
        let seen = std::mem::take(&mut self.seen_since_job);
        let before = self
            .state_before_job
            .take()
            .or_else(|| self.current.clone());
        self.current = Some(final_state.to_string());
        classify(before.as_deref(), &seen, final_state)
    }
}

/// Names a finished job from the states before it, during it and after it.
fn classify(before: Option<&str>, seen: &[String], after: &str) -> UnitChange {
    let went_down = seen
        .iter()
        .any(|s| matches!(s.as_str(), "deactivating" | "inactive" | "failed"));
    if seen.iter().any(|s| s == "reloading") {
        UnitChange::Reloaded
    } else if after == "active"
        && (went_down || before == Some("active"))
        && before != Some("inactive")
    {
        UnitChange::Restarted
    } else if after == "active" {
        UnitChange::Started
    } else if matches!(after, "inactive" | "failed") {
        UnitChange::Stopped
    } else {
        UnitChange::StateChanged
    }
}

/// Live subscriptions to systemd for a set of units.
pub struct UnitWatcher {
    manager: Systemd1ManagerProxy<'static>,
    units: Vec<(String, Systemd1UnitProxy<'static>)>,
}

impl UnitWatcher {
    /// Subscribes to systemd and to each unit's properties. Call it before
    /// the first apply so no change is missed. Returns `Ok(None)` when no
    /// systemd answers on this bus (a test bus, a container without it).
    pub async fn subscribe(
        connection: &Connection,
        unit_names: &[String],
    ) -> zbus::Result<Option<UnitWatcher>> {
        let manager = Systemd1ManagerProxy::new(connection).await?;
        match manager.subscribe().await {
            Ok(()) => {}
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown" =>
            {
                return Ok(None);
            }
            Err(zbus::Error::FDO(fdo)) if matches!(*fdo, zbus::fdo::Error::ServiceUnknown(_)) => {
                return Ok(None);
            }
            Err(other) => return Err(other),
        }
        let mut units = Vec::new();
        for name in unit_names {
            let path = manager.load_unit(name).await?;
            let unit = Systemd1UnitProxy::builder(connection)
                .path(path)
                .build()
                .await?;
            units.push((name.clone(), unit));
        }
        Ok(Some(UnitWatcher { manager, units }))
    }

    /// The watched units' current ActiveState, for the first status line.
    pub async fn current_states(&self) -> Vec<(String, String)> {
        let mut states = Vec::new();
        for (name, unit) in &self.units {
            let state = unit
                .active_state()
                .await
                .unwrap_or_else(|_| "unknown".into());
            states.push((name.clone(), state));
        }
        states
    }

    /// Reports every change until the bus connection ends.
    pub async fn run(self, report: impl Fn(UnitEvent)) {
        let mut tracks: HashMap<String, UnitTrack> = HashMap::new();
        for (name, state) in self.current_states().await {
            tracks.entry(name).or_default().current = Some(state);
        }
        let Ok(mut jobs) = self.manager.receive_job_removed().await else {
            tracing::error!("cannot listen to systemd's JobRemoved; unit watching is off");
            return;
        };
        let mut state_streams =
            futures_util::stream::select_all(self.units.iter().map(|(name, unit)| {
                let name = name.clone();
                let stream =
                    futures_util::stream::once(unit.receive_active_state_changed()).flatten();
                stream.map(move |change| (name.clone(), change)).boxed()
            }));
        loop {
            tokio::select! {
                Some(signal) = jobs.next() => {
                    let Ok(args) = signal.args() else { continue };
                    let Some((_, unit)) = self.units.iter().find(|(name, _)| *name == args.unit) else { continue };
                    let after = unit.active_state().await.unwrap_or_else(|_| "unknown".into());
                    let change = tracks.entry(args.unit.clone()).or_default().finish_job(&after);
                    tracing::info!(unit = %args.unit, result = %args.result, change = change.as_str(), "job finished");
                    report(UnitEvent { unit: args.unit.clone(), change, active_state: after });
                }
                Some((name, changed)) = state_streams.next() => {
                    let Ok(state) = changed.get().await else { continue };
                    tracing::debug!(unit = %name, %state, "ActiveState");
                    tracks.entry(name.clone()).or_default().observe(&state);
                    report(UnitEvent { unit: name, change: UnitChange::StateChanged, active_state: state });
                }
                else => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn classifies_the_sequences_systemd_252_sends() {
        let restart = states(&["deactivating", "inactive", "activating", "active"]);
        assert_eq!(
            classify(Some("active"), &restart, "active"),
            UnitChange::Restarted
        );
        let reload = states(&["reloading", "active"]);
        assert_eq!(
            classify(Some("active"), &reload, "active"),
            UnitChange::Reloaded
        );
        assert_eq!(
            classify(
                Some("inactive"),
                &states(&["activating", "active"]),
                "active"
            ),
            UnitChange::Started
        );
        assert_eq!(
            classify(
                Some("active"),
                &states(&["deactivating", "inactive"]),
                "inactive"
            ),
            UnitChange::Stopped
        );
        // Merged changes: nothing seen, but active before and after a job.
        assert_eq!(
            classify(Some("active"), &[], "active"),
            UnitChange::Restarted
        );
        assert_eq!(
            classify(Some("inactive"), &[], "active"),
            UnitChange::Started
        );
    }

    #[test]
    fn a_track_remembers_the_state_before_the_job() {
        let mut track = UnitTrack {
            current: Some("inactive".into()),
            ..UnitTrack::default()
        };
        track.observe("activating");
        track.observe("active");
        assert_eq!(track.finish_job("active"), UnitChange::Started);
        track.observe("reloading");
        track.observe("active");
        assert_eq!(track.finish_job("active"), UnitChange::Reloaded);
        track.observe("deactivating");
        track.observe("inactive");
        assert_eq!(track.finish_job("inactive"), UnitChange::Stopped);
    }
}
