//! Who owns a fleet name: the key `<name>.presence` in the bucket says
//! which daemon publishes under `<name>` (its owner: machine id and state
//! directory, so a restart of the same daemon is the same owner), and is
//! refreshed every [`HEARTBEAT`]. Two daemons with one name (the default is
//! the short host name; cloned machines share it) would otherwise delete
//! each other's keys. A daemon that finds the name held by a live other
//! owner publishes and deletes nothing, and says so in `orch status`.
//!
//! Claims use the bucket's compare-and-set (create, update at a revision),
//! so two daemons starting at once cannot both win. This module reads and
//! writes only the presence key; it must not touch ban keys.

use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::timefmt::now_unix;

/// How often the owner refreshes its presence.
pub const HEARTBEAT: Duration = Duration::from_secs(60);
/// A presence not refreshed for this long is free to take.
pub const STALE_AFTER: Duration = Duration::from_secs(180);
/// The key's last token; no network is written like this.
const PRESENCE_TOKEN: &str = "presence";
/// Longest presence value read (it is about 200 bytes).
const MAX_PRESENCE_BYTES: usize = 1024;

/// The presence key of fleet name `name`.
pub fn presence_key(name: &str) -> String {
    format!("{name}.{PRESENCE_TOKEN}")
}

/// The fleet name whose presence key `key` is, if it is one.
pub fn presence_name(key: &str) -> Option<&str> {
    key.strip_suffix(PRESENCE_TOKEN)?.strip_suffix('.')
}

/// The value of a presence key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Who this daemon is: stays the same across its restarts.
    pub owner: String,
    /// The machine's host name, for the message a colliding host shows.
    pub host: String,
    /// Unix seconds of the last refresh.
    pub updated: u64,
}

impl Presence {
    /// This daemon's presence, refreshed now.
    pub fn now(owner: &str) -> Presence {
        Presence {
            owner: owner.to_string(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .unwrap_or_default(),
            updated: now_unix(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(value: &[u8]) -> Option<Presence> {
        if value.len() > MAX_PRESENCE_BYTES {
            return None;
        }
        serde_json::from_slice(value).ok()
    }

    /// Whether it was refreshed recently enough to hold the name.
    fn is_live(&self, now: u64) -> bool {
        now.saturating_sub(self.updated) < STALE_AFTER.as_secs()
    }
}

/// This daemon's owner id: the machine id and the state directory (two
/// daemons cannot share one: the store locks it).
pub fn owner_id(state_dir: &std::path::Path) -> String {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    format!("{}:{}", machine.trim(), state_dir.display())
}

/// The outcome of claiming a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This daemon holds the name; refresh at this revision.
    Held { revision: u64 },
    /// Another live daemon holds it.
    Taken(Presence),
}

impl std::fmt::Display for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = crate::quote::quote_input(&self.host);
        let age = now_unix().saturating_sub(self.updated);
        write!(f, "on host {host}, seen {age} s ago")
    }
}

/// Why a claim could not be decided (the bucket did not answer).
#[derive(Debug, thiserror::Error)]
#[error("fleet name {name}: {message}")]
pub struct PresenceError {
    name: String,
    message: String,
}

/// Claims `name` for `owner`: free, stale, or already this owner's (a
/// restart) is taken; a live other owner's is left alone.
pub async fn claim(store: &kv::Store, name: &str, owner: &str) -> Result<Claim, PresenceError> {
    let key = presence_key(name);
    let failed = |message: String| PresenceError {
        name: name.to_string(),
        message,
    };
    let mine: Vec<u8> = Presence::now(owner).encode();
    let current = store
        .entry(key.as_str())
        .await
        .map_err(|e| failed(format!("reading {key}: {e}")))?;
    let current = current.filter(|entry| matches!(entry.operation, kv::Operation::Put));
    let written = match &current {
        None => store
            .create(key.as_str(), mine.into())
            .await
            .map_err(|e| e.to_string()),
        Some(entry) => {
            let holder = Presence::decode(&entry.value);
            if let Some(holder) =
                holder.filter(|holder| holder.owner != owner && holder.is_live(now_unix()))
            {
                return Ok(Claim::Taken(holder));
            }
            store
                .update(key.as_str(), mine.into(), entry.revision)
                .await
                .map_err(|e| e.to_string())
        }
    };
    match written {
        Ok(revision) => Ok(Claim::Held { revision }),
        // Someone wrote the key between our read and our write: read again
        // to see who.
        Err(_) => match store.entry(key.as_str()).await {
            Ok(Some(entry)) => match Presence::decode(&entry.value) {
                Some(holder) if holder.owner != owner => Ok(Claim::Taken(holder)),
                _ => Err(failed(format!("{key} changed while claiming it"))),
            },
            Ok(None) => Err(failed(format!("{key} vanished while claiming it"))),
            Err(e) => Err(failed(format!("reading {key}: {e}"))),
        },
    }
}

/// Refreshes this owner's presence written at `revision`. `Ok(None)` when
/// someone else wrote the key since: the name is no longer ours.
pub async fn refresh(
    store: &kv::Store,
    name: &str,
    owner: &str,
    revision: u64,
) -> Result<Option<u64>, PresenceError> {
    let key = presence_key(name);
    match store
        .update(key.as_str(), Presence::now(owner).encode().into(), revision)
        .await
    {
        Ok(revision) => Ok(Some(revision)),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(e) => Err(PresenceError {
            name: name.to_string(),
            message: format!("refreshing {key}: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_keys_name_their_host_and_no_network() {
        assert_eq!(presence_key("web1"), "web1.presence");
        assert_eq!(presence_name("web1.presence"), Some("web1"));
        assert_eq!(presence_name("web1.192.0.2.7/32"), None);
        assert_eq!(presence_name("presence"), None);
        assert!(crate::fleet::record::parse_key("web1.presence").is_err());
    }

    #[test]
    fn only_a_recent_presence_holds_the_name() {
        let presence = Presence {
            owner: "m:/var/lib/orch".into(),
            host: "web1".into(),
            updated: 1_000,
        };
        assert!(presence.is_live(1_000 + STALE_AFTER.as_secs() - 1));
        assert!(!presence.is_live(1_000 + STALE_AFTER.as_secs()));
        let encoded = presence.encode();
        assert_eq!(Presence::decode(&encoded), Some(presence));
        assert_eq!(Presence::decode(&vec![b' '; 2_000]), None);
        assert_eq!(Presence::decode(b"not json"), None);
    }
}
