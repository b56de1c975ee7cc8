//! Who may call what on `org.orch.Orch1`, decided from the message header
//! alone: the member's action, the caller's uid (asked of the bus once per
//! connection and remembered), and how many reads each uid has running.
//!
//! It must not look at a call's arguments: [`super::guard`] runs it before
//! zbus decodes them, so a refused caller costs orch nothing but the
//! message the bus already delivered. It decides; it does not reply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zbus::Connection;
use zbus::fdo::DBusProxy;
use zbus::names::UniqueName;

use super::errors::OrchError;
use super::polkit::Verdict;

/// What a method does, for deciding who may call it. The names of the
/// changing actions are the polkit action ids they map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ban, BanMany, ImportBans.
    Ban,
    /// Unban.
    Unban,
    /// Allow, AllowWith, Disallow.
    Allow,
    /// Sync, SyncEvent, RunHooks, UnbanFleet, Reload.
    Manage,
    /// Anything that only reads (list methods, properties).
    Read,
}

impl Action {
    /// The action a member of `org.orch.Orch1` needs; `None` for a member
    /// orch does not know (zbus answers those itself).
    pub fn of_member(member: &str) -> Option<Action> {
        Some(match member {
            "Ban" | "BanMany" | "ImportBans" => Action::Ban,
            "Unban" => Action::Unban,
            "Allow" | "AllowWith" | "Disallow" => Action::Allow,
            "Sync" | "SyncEvent" | "RunHooks" | "UnbanFleet" | "Reload" => Action::Manage,
            "ListBans" | "ListBansPage" | "ListAllows" | "Query" => Action::Read,
            _ => return None,
        })
    }

    /// The polkit action id, e.g. `org.orch.Orch1.ban`.
    pub fn id(self) -> &'static str {
        match self {
            Action::Ban => "org.orch.Orch1.ban",
            Action::Unban => "org.orch.Orch1.unban",
            Action::Allow => "org.orch.Orch1.allow",
            Action::Manage => "org.orch.Orch1.manage",
            Action::Read => "org.orch.Orch1.read",
        }
    }

    /// What the action lets a caller do, for error messages.
    fn verb(self) -> &'static str {
        match self {
            Action::Ban => "ban",
            Action::Unban => "unban",
            Action::Allow => "change the allowlist",
            Action::Manage => "sync or reload orch or run its hooks",
            Action::Read => "read",
        }
    }
}

/// Root may do everything and anyone may read; `None` when polkit has to
/// decide.
fn decided_without_polkit(uid: u32, action: Action) -> Option<Result<(), OrchError>> {
    (uid == 0 || action == Action::Read).then_some(Ok(()))
}

/// The `.AccessDenied` for `uid` and `action`, saying why and what would
/// grant it.
fn refusal(uid: u32, action: Action, why: &str) -> OrchError {
    OrchError::AccessDenied(format!(
        "uid {uid} may not {} (polkit action {}): {why}",
        action.verb(),
        action.id()
    ))
}

/// Reads one uid may have running at once; more get `.Busy`. Root is not
/// limited: its reads are the admin's own commands.
pub const MAX_READS_PER_UID: usize = 8;

/// Connections whose uid is remembered; the cache starts over past this
/// (unique names are never reused on one bus, so nothing goes stale).
const MAX_REMEMBERED_CALLERS: usize = 4096;

/// The shared decision state of one bus connection.
#[derive(Clone, Default)]
pub struct Access {
    inner: Arc<Mutex<AccessState>>,
}

#[derive(Default)]
struct AccessState {
    uids: HashMap<String, u32>,
    reads_running: HashMap<u32, usize>,
}

/// A read slot, held while the read runs; dropping it frees the slot.
pub struct ReadPermit {
    access: Access,
    uid: u32,
}

impl Drop for ReadPermit {
    fn drop(&mut self) {
        if let Ok(mut state) = self.access.inner.lock()
            && let Some(running) = state.reads_running.get_mut(&self.uid)
        {
            *running = running.saturating_sub(1);
            if *running == 0 {
                state.reads_running.remove(&self.uid);
            }
        }
    }
}

impl Access {
    /// The caller's uid, asked of the bus (`GetConnectionUnixUser`) the
    /// first time a connection calls.
    pub async fn caller_uid(
        &self,
        connection: &Connection,
        sender: Option<&UniqueName<'_>>,
    ) -> Result<u32, OrchError> {
        let sender =
            sender.ok_or_else(|| OrchError::AccessDenied("the call has no sender".into()))?;
        if let Some(uid) = self
            .inner
            .lock()
            .ok()
            .and_then(|state| state.uids.get(sender.as_str()).copied())
        {
            return Ok(uid);
        }
        let uid = DBusProxy::new(connection)
            .await?
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| OrchError::AccessDenied(format!("cannot tell who is calling: {e}")))?;
        if let Ok(mut state) = self.inner.lock() {
            if state.uids.len() >= MAX_REMEMBERED_CALLERS {
                state.uids.clear();
            }
            state.uids.insert(sender.to_string(), uid);
        }
        Ok(uid)
    }

    /// Whether the caller (`uid`, bus name `sender`) may do `action`. Root
    /// may do everything and anyone may read; for the rest polkit decides
    /// (`interactive`: the caller allows a password prompt). Without
    /// polkitd on the system, only root may change anything. A refusal is
    /// `.AccessDenied` naming the action.
    pub async fn authorize(
        &self,
        connection: &Connection,
        sender: Option<&UniqueName<'_>>,
        uid: u32,
        action: Action,
        interactive: bool,
    ) -> Result<(), OrchError> {
        if let Some(decided) = decided_without_polkit(uid, action) {
            return decided;
        }
        let Some(sender) = sender else {
            return Err(refusal(uid, action, "the call has no sender"));
        };
        match super::polkit::check(connection, sender, action.id(), interactive).await {
            Ok(Verdict::Allowed) => Ok(()),
            Ok(Verdict::Denied { challenge: true }) => Err(refusal(
                uid,
                action,
                "polkit requires authentication, which did not happen (run it on a terminal, \
                 with a polkit agent, or as root)",
            )),
            Ok(Verdict::Denied { challenge: false }) => {
                Err(refusal(uid, action, "polkit does not allow it"))
            }
            Ok(Verdict::Unavailable) => Err(refusal(
                uid,
                action,
                "polkit is not available on this system, so only root may",
            )),
            Err(err) => Err(refusal(uid, action, &format!("polkit failed: {err}"))),
        }
    }

    /// A slot for one read by `uid`, or `.Busy` when that uid already has
    /// [`MAX_READS_PER_UID`] reads running.
    pub fn start_read(&self, uid: u32) -> Result<Option<ReadPermit>, OrchError> {
        if uid == 0 {
            return Ok(None);
        }
        let mut state = self
            .inner
            .lock()
            .map_err(|_| OrchError::Failed("access state poisoned".into()))?;
        let running = state.reads_running.entry(uid).or_insert(0);
        if *running >= MAX_READS_PER_UID {
            return Err(OrchError::Busy(format!(
                "uid {uid} already has {MAX_READS_PER_UID} reads running; try again when they are done"
            )));
        }
        *running += 1;
        Ok(Some(ReadPermit {
            access: self.clone(),
            uid,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_changing_member_needs_its_action_and_reads_are_open() {
        for (member, action) in [
            ("Ban", Action::Ban),
            ("BanMany", Action::Ban),
            ("ImportBans", Action::Ban),
            ("Unban", Action::Unban),
            ("Allow", Action::Allow),
            ("AllowWith", Action::Allow),
            ("Disallow", Action::Allow),
            ("Sync", Action::Manage),
            ("SyncEvent", Action::Manage),
            ("RunHooks", Action::Manage),
            ("UnbanFleet", Action::Manage),
            ("Reload", Action::Manage),
        ] {
            assert_eq!(Action::of_member(member), Some(action), "{member}");
            assert!(matches!(decided_without_polkit(0, action), Some(Ok(()))));
            assert!(
                decided_without_polkit(1000, action).is_none(),
                "polkit decides"
            );
            let refused = refusal(1000, action, "no").to_string();
            assert!(refused.contains(action.id()), "{refused}");
        }
        assert_eq!(Action::of_member("ListBans"), Some(Action::Read));
        assert!(matches!(
            decided_without_polkit(65534, Action::Read),
            Some(Ok(()))
        ));
        assert_eq!(Action::of_member("Frobnicate"), None);
    }

    #[test]
    fn reads_per_uid_are_capped_and_freed() {
        let access = Access::default();
        let held: Vec<_> = (0..MAX_READS_PER_UID)
            .map(|_| access.start_read(65534).unwrap())
            .collect();
        assert!(matches!(access.start_read(65534), Err(OrchError::Busy(_))));
        assert!(access.start_read(1000).unwrap().is_some(), "another uid");
        assert!(
            access.start_read(0).unwrap().is_none(),
            "root is not counted"
        );
        drop(held);
        assert!(access.start_read(65534).is_ok(), "slots come back");
    }
}
