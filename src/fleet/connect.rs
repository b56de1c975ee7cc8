//! Turns `[fleet]` into a NATS connection: credentials, TLS, timeouts, and
//! the event callback that keeps [`FleetStatus`] current. Also opens the
//! bucket, creating it when missing and the credentials allow it.
//!
//! It must not read or write bans.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use async_nats::{ConnectOptions, Event};
use tokio::sync::watch;

use super::status::FleetStatus;
use crate::config::{FleetAuth, FleetConfig};

/// How long a connection attempt or a JetStream request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client pings the server: a dead link is noticed after
/// about two of these.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);

/// Why the fleet could not connect or open its bucket.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot read {path}: {source}")]
    ReadSecret {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {servers}: {message}")]
    Connect { servers: String, message: String },
    #[error(
        "bucket {bucket} does not exist and these credentials may not create it; create it as the NATS admin (docs/fleet.md) or set fleet.admin: {message}"
    )]
    NoBucket { bucket: String, message: String },
    #[error("bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },
    #[error("{0}")]
    Session(String),
    /// A secret file others could read or change (refused, as ssh does).
    #[error("{0}")]
    Secret(#[from] crate::file_trust::Untrusted),
}

/// Connection options for `auth` plus the shared TLS and timeout settings.
async fn options(config: &FleetConfig, auth: &FleetAuth) -> Result<ConnectOptions, FleetError> {
    let read = |path: &Path| {
        crate::file_trust::read_secret(path)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
            .map_err(FleetError::Secret)
    };
    let checked = |path: &Path| crate::file_trust::check_secret(path).map_err(FleetError::Secret);
    let mut options = match auth {
        FleetAuth::None => ConnectOptions::new(),
        FleetAuth::UserPassword {
            user,
            password_file,
        } => ConnectOptions::with_user_and_password(user.clone(), read(password_file)?),
        FleetAuth::Nkey(path) => ConnectOptions::with_nkey(read(path)?),
        FleetAuth::Credentials(path) => {
            checked(path)?;
            ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| FleetError::ReadSecret {
                    path: path.display().to_string(),
                    source,
                })?
        }
    };
    if let Some(ca) = &config.tls.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        checked(key)?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options
        .require_tls(config.uses_tls())
        .name(format!("orch {}", config.name))
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .ping_interval(PING_INTERVAL)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(2_000))
        }))
}

/// Connects with this host's credentials. Connection state changes go to
/// `status` and to the returned channel (true = connected); after a
/// successful first connect the client reconnects on its own.
pub async fn connect(
    config: &FleetConfig,
    status: Arc<FleetStatus>,
) -> Result<(async_nats::Client, watch::Receiver<bool>), FleetError> {
    let (connected_tx, connected_rx) = watch::channel(false);
    let options = options(config, &config.auth)
        .await?
        .event_callback(move |event| {
            let status = status.clone();
            let connected_tx = connected_tx.clone();
            async move {
                match &event {
                    Event::Connected => {
                        let _ = connected_tx.send(true);
                    }
                    Event::Disconnected | Event::Closed => {
                        let _ = connected_tx.send(false);
                        status.set_phase("disconnected", false);
                        tracing::warn!("fleet: {event}");
                    }
                    Event::ServerError(_) | Event::ClientError(_) => {
                        status.set_error(event.to_string());
                        tracing::warn!("fleet: {event}");
                    }
                    _ => tracing::info!("fleet: {event}"),
                }
            }
        });
    let client = options
        .connect(config.servers.as_slice())
        .await
        .map_err(|error| FleetError::Connect {
            servers: config.servers.join(", "),
            message: error.to_string(),
        })?;
    Ok((client, connected_rx))
}

/// Stream bytes allowed per key on average: a key takes about 250 (subject,
/// value, TTL header, per-message overhead), so a full bucket of ordinary
/// keys fits with room to spare.
pub const BYTES_PER_KEY: usize = 512;
/// Largest message the bucket stores: a value is at most about 700 bytes
/// (two texts of 256 bytes, an address, two times), so this only refuses
/// what no orch writes.
pub const STREAM_MAX_MESSAGE_BYTES: i32 = 2048;

/// The stream settings of an orch bucket (the layout async-nats' KV
/// expects). Rollups are off: a host allowed to write its own keys could
/// otherwise purge the whole bucket with one `Nats-Rollup: all` message,
/// and permissions cannot filter headers. No delete markers either:
/// nats-server turns rollups back on for a stream that has them. With
/// `key_ttl` each key carries its own time to live (nats-server ≥ 2.11);
/// otherwise `max_age` bounds every key's life.
///
/// Whoever holds one host's credentials can write as many keys as they
/// like, so the stream is bounded: at most `max_keys` keys (one message
/// each: history 1), [`BYTES_PER_KEY`] bytes per key on average, and
/// [`STREAM_MAX_MESSAGE_BYTES`] per message. A full bucket refuses new keys
/// (discard new) rather than dropping other hosts' oldest ones.
pub fn bucket_stream(
    bucket: &str,
    replicas: usize,
    key_ttl: bool,
    max_age: Duration,
    max_keys: usize,
) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("orch fleet bans: one key per (host, network)".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_messages: i64::try_from(max_keys).unwrap_or(i64::MAX),
        max_bytes: i64::try_from(max_keys.saturating_mul(BYTES_PER_KEY)).unwrap_or(i64::MAX),
        max_message_size: STREAM_MAX_MESSAGE_BYTES,
        allow_rollup: false,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        max_age: if key_ttl { Duration::ZERO } else { max_age },
        allow_message_ttl: key_ttl,
        subject_delete_marker_ttl: None,
        ..Default::default()
    }
}

/// Whether `version` ("2.11.4") is at least 2.11, where messages can carry
/// their own time to live.
pub fn supports_key_ttl(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 11)
}

/// Opens the bucket; creates it when missing, with this host's
/// credentials or else `fleet.admin`'s. Returns the store and whether keys
/// carry their own TTL. `max_age` bounds key life where they cannot.
pub async fn open_bucket(
    client: &async_nats::Client,
    config: &FleetConfig,
    max_age: Duration,
) -> Result<(kv::Store, bool), FleetError> {
    let js = jetstream::new(client.clone());
    let bucket_error = |message: String| FleetError::Bucket {
        bucket: config.bucket.clone(),
        message,
    };
    if let Ok(store) = js.get_key_value(&config.bucket).await {
        let info = js
            .get_stream(format!("KV_{}", config.bucket))
            .await
            .map(|s| s.cached_info().config.allow_message_ttl);
        // A host may lack stream info rights on some setups; then keys
        // simply do not carry a TTL.
        return Ok((store, info.unwrap_or(false)));
    }
    let key_ttl = supports_key_ttl(&client.server_info().version);
    let wanted = bucket_stream(
        &config.bucket,
        config.replicas,
        key_ttl,
        max_age,
        config.bucket_max_keys,
    );
    let created = js.create_stream(wanted.clone()).await;
    let created = match (created, &config.admin) {
        (Ok(_), _) => Ok(()),
        (Err(own_error), FleetAuth::None) => Err(FleetError::NoBucket {
            bucket: config.bucket.clone(),
            message: own_error.to_string(),
        }),
        (Err(_), admin) => create_as_admin(config, admin, wanted).await,
    };
    created?;
    tracing::info!(
        bucket = %config.bucket,
        replicas = config.replicas,
        key_ttl,
        "fleet: created the bucket"
    );
    let store = js
        .get_key_value(&config.bucket)
        .await
        .map_err(|e| bucket_error(e.to_string()))?;
    Ok((store, key_ttl))
}

async fn create_as_admin(
    config: &FleetConfig,
    admin: &FleetAuth,
    wanted: stream::Config,
) -> Result<(), FleetError> {
    let client = connect_as(config, admin).await?;
    let result = jetstream::new(client.clone())
        .create_stream(wanted)
        .await
        .map(|_| ())
        .map_err(|error| FleetError::NoBucket {
            bucket: config.bucket.clone(),
            message: format!("as fleet.admin: {error}"),
        });
    let _ = client.drain().await;
    result
}

/// A client with `fleet.admin`'s credentials, for fleet-wide unbans.
pub async fn connect_admin(config: &FleetConfig) -> Result<async_nats::Client, FleetError> {
    if config.admin == FleetAuth::None {
        return Err(FleetError::Session(
            "a fleet-wide unban needs credentials that may delete every host's keys: set fleet.admin".into(),
        ));
    }
    connect_as(config, &config.admin).await
}

/// A short-lived client with the admin's credentials.
async fn connect_as(
    config: &FleetConfig,
    admin: &FleetAuth,
) -> Result<async_nats::Client, FleetError> {
    options(config, admin)
        .await?
        .connect(config.servers.as_slice())
        .await
        .map_err(|error| FleetError::Connect {
            servers: config.servers.join(", "),
            message: format!("as fleet.admin: {error}"),
        })
}

/// The addresses of the fleet's NATS servers: the configured ones and the
/// cluster peers the server announced, resolved now (a name that does not
/// resolve within two seconds is skipped). No remote ban may cover them:
/// a host that banned its servers could never hear the ban lifted.
pub async fn server_addresses(
    config: &FleetConfig,
    info: &async_nats::ServerInfo,
) -> Vec<std::net::IpAddr> {
    let mut addresses = Vec::new();
    let urls = config
        .servers
        .iter()
        .chain(info.connect_urls.iter())
        .map(String::as_str)
        .chain(std::iter::once(info.host.as_str()));
    for url in urls {
        let host = crate::config::url_host(url);
        if let Ok(address) = host.parse::<std::net::IpAddr>() {
            addresses.push(address);
            continue;
        }
        let lookup = tokio::net::lookup_host((host, 0));
        if let Ok(Ok(found)) = tokio::time::timeout(Duration::from_secs(2), lookup).await {
            addresses.extend(found.map(|socket| socket.ip()));
        }
    }
    addresses.retain(|address| !address.is_unspecified());
    addresses.sort();
    addresses.dedup();
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ttl_needs_2_11() {
        assert!(!supports_key_ttl("2.9.10"));
        assert!(!supports_key_ttl("2.10.22"));
        assert!(supports_key_ttl("2.11.0"));
        assert!(supports_key_ttl("2.15.1"));
        assert!(supports_key_ttl("3.0.0"));
        assert!(!supports_key_ttl("garbage"));
    }
}
