//! Fleet: sharing bans with other hosts through a NATS JetStream key-value
//! bucket (design and operations: `docs/fleet.md`).
//!
//! [`record`] is the key and value format; [`holdings`] the other hosts'
//! bans as last read; [`outbox`] this host's changes waiting to go out;
//! [`connect`] turns `[fleet]` into a NATS connection; [`session`] runs
//! the connection: catch up, then publish (through [`publisher`]) and
//! watch, handing remote changes to the core in batches paced by
//! [`pacing`]. [`remote_policy`] is what another host's ban must pass on
//! top of the local rules, and [`protected`] what on this host it may
//! never cover. [`presence`] keeps two daemons from publishing under one
//! name. The core's side (applying remote bans under those rules)
//! is `daemon::fleet_apply`.
pub mod connect;
pub mod holdings;
pub mod log_window;
pub mod outbox;
mod pacing;
pub mod presence;
pub mod protected;
mod publisher;
pub mod record;
pub mod remote_change;
pub mod remote_policy;
pub mod session;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::daemon::core::CoreHandle;

/// The running fleet, as the rest of the daemon sees it.
#[derive(Clone)]
pub struct FleetLink {
    pub config: crate::config::FleetConfig,
    pub status: Arc<status::FleetStatus>,
    pub outbox: Arc<outbox::Outbox>,
}

/// Starts the fleet task when `[fleet]` names servers. The core notes
/// shared ban changes in the outbox from the moment this returns.
pub async fn start(config: &Config, core: &CoreHandle) -> Option<FleetLink> {
    if !config.fleet.enabled() {
        return None;
    }
    let link = FleetLink {
        config: config.fleet.clone(),
        status: Arc::default(),
        outbox: Arc::default(),
    };
    let outbox = link.outbox.clone();
    if core
        .call(move |core| core.attach_fleet(outbox))
        .await
        .is_err()
    {
        return None;
    }
    tracing::info!(
        name = %config.fleet.name,
        servers = %config.fleet.servers.join(", "),
        bucket = %config.fleet.bucket,
        "fleet: starting"
    );
    let task = session::FleetTask {
        config: config.fleet.clone(),
        max_ban_time: config.bans.max_time,
        core: core.clone(),
        outbox: link.outbox.clone(),
        status: link.status.clone(),
        skips: Default::default(),
        owner: presence::owner_id(&config.state_dir),
        name_taken: Default::default(),
        presence_warned: Default::default(),
    };
    tokio::spawn(task.run());
    Some(link)
}

impl FleetLink {
    /// Deletes every host's key for `net` with `fleet.admin`'s
    /// credentials. Returns how many keys were deleted.
    pub async fn unban_everywhere(&self, net: ipnet::IpNet) -> Result<usize, connect::FleetError> {
        use futures_util::StreamExt;
        let failed = |e: &dyn std::fmt::Display| connect::FleetError::Session(e.to_string());
        let client = connect::connect_admin(&self.config).await?;
        let js = async_nats::jetstream::new(client.clone());
        let result = async {
            let store = js
                .get_key_value(&self.config.bucket)
                .await
                .map_err(|e| failed(&e))?;
            let suffix = record::key("", &net);
            let mut keys = store.keys().await.map_err(|e| failed(&e))?;
            let mut matching = Vec::new();
            while let Some(key) = tokio::time::timeout(Duration::from_secs(30), keys.next())
                .await
                .map_err(|e| failed(&e))?
            {
                let key = key.map_err(|e| failed(&e))?;
                if key.ends_with(&suffix) && record::parse_key(&key).is_ok_and(|k| k.net == net) {
                    matching.push(key);
                }
            }
            for key in &matching {
                store
                    .delete(key)
                    .await
                    .map_err(|e| failed(&format!("deleting {key}: {e}")))?;
            }
            Ok(matching.len())
        }
        .await;
        let _ = client.drain().await;
        result
    }
}
