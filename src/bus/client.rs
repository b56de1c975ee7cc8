//! The client side of `org.orch.Orch1`, used by the CLI commands, and the
//! translation of bus failures into sentences an admin can act on.
//!
//! It must not hold any state of its own.

use std::collections::HashMap;
use std::time::Duration;

use zbus::{Connection, proxy};

use super::service::{AllowRow, BanRow, HookRow, ImportRow};

/// The changing methods allow interactive authorisation: polkit may ask
/// the user's authentication agent for a password where its policy says
/// `auth_admin`.
#[proxy(
    interface = "org.orch.Orch1",
    default_service = "org.orch.Orch1",
    default_path = "/org/orch/Orch1"
)]
pub trait Orch1 {
    #[zbus(allow_interactive_auth)]
    fn ban(&self, address: &str, seconds: u64, reason: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn ban_many(&self, addresses: &[&str], seconds: u64, reason: &str) -> zbus::Result<u32>;
    #[zbus(allow_interactive_auth)]
    fn import_bans(&self, bans: &[ImportRow]) -> zbus::Result<(u32, u32, Vec<(String, String)>)>;
    #[zbus(allow_interactive_auth)]
    fn unban(&self, address: &str) -> zbus::Result<bool>;
    #[zbus(allow_interactive_auth)]
    fn unban_fleet(&self, address: &str) -> zbus::Result<u32>;
    fn list_bans(&self) -> zbus::Result<Vec<BanRow>>;
    fn list_bans_page(
        &self,
        after: &str,
        limit: u32,
        source: &str,
        within: &str,
    ) -> zbus::Result<(Vec<BanRow>, String)>;
    #[zbus(allow_interactive_auth)]
    fn allow(&self, cidr: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn allow_with(&self, cidr: &str, seconds: u64, comment: &str) -> zbus::Result<()>;
    fn list_allows(&self) -> zbus::Result<Vec<AllowRow>>;
    fn query(&self, address: &str) -> zbus::Result<String>;
    #[zbus(allow_interactive_auth)]
    fn disallow(&self, cidr: &str) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn sync(&self) -> zbus::Result<()>;
    #[zbus(allow_interactive_auth)]
    fn sync_event(&self, event: &str, unit: &str) -> zbus::Result<Vec<HookRow>>;
    #[zbus(allow_interactive_auth)]
    fn reload(&self) -> zbus::Result<Vec<String>>;
    #[zbus(allow_interactive_auth)]
    fn run_hooks(&self) -> zbus::Result<Vec<HookRow>>;
    #[zbus(property)]
    fn ban_count(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn firewall(&self) -> zbus::Result<HashMap<String, String>>;
    #[zbus(property)]
    fn fleet_connected(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn fleet(&self) -> zbus::Result<HashMap<String, String>>;
    #[zbus(property)]
    fn jails(&self) -> zbus::Result<Vec<crate::bus::service::JailRow>>;
    #[zbus(property)]
    fn jail_bans_total(&self) -> zbus::Result<Vec<(String, u64)>>;
    #[zbus(property)]
    fn jail_notes(&self) -> zbus::Result<Vec<String>>;
}

/// Why a client command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the system bus: {0}")]
    NoBus(zbus::Error),
    #[error("the orch daemon is not running (nothing owns org.orch.Orch1 on the system bus)")]
    NotRunning,
    #[error("the orch daemon did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{message} ({name})")]
    Refused { name: String, message: String },
    #[error("D-Bus error: {0}")]
    Bus(zbus::Error),
}

impl ClientError {
    /// The D-Bus error name when the daemon refused the call.
    pub fn error_name(&self) -> Option<&str> {
        match self {
            ClientError::Refused { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// How long a client waits for the daemon before giving up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the system bus (honouring DBUS_SYSTEM_BUS_ADDRESS).
pub async fn connect(timeout: Duration) -> Result<Orch1Proxy<'static>, ClientError> {
    let connection = zbus::connection::Builder::system()
        .method_timeout(timeout)
        .build()
        .await
        .map_err(ClientError::NoBus)?;
    proxy_on(connection).await
}

async fn proxy_on(connection: Connection) -> Result<Orch1Proxy<'static>, ClientError> {
    Orch1Proxy::builder(&connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(ClientError::Bus)
}

/// Turns a zbus error from a call into a [`ClientError`].
pub fn classify(err: zbus::Error, timeout: Duration) -> ClientError {
    match err {
        zbus::Error::MethodError(name, message, _) => {
            let name = name.to_string();
            match name.as_str() {
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner" => ClientError::NotRunning,
                "org.freedesktop.DBus.Error.NoReply" | "org.freedesktop.DBus.Error.Timeout" => {
                    ClientError::Timeout(timeout)
                }
                _ => ClientError::Refused {
                    message: message.unwrap_or_else(|| name.clone()),
                    name,
                },
            }
        }
        zbus::Error::FDO(fdo) => match *fdo {
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                ClientError::NotRunning
            }
            zbus::fdo::Error::NoReply(_) | zbus::fdo::Error::Timeout(_) => {
                ClientError::Timeout(timeout)
            }
            zbus::fdo::Error::AccessDenied(message) => ClientError::Refused {
                name: "org.freedesktop.DBus.Error.AccessDenied".into(),
                message,
            },
            other => ClientError::Bus(zbus::Error::FDO(Box::new(other))),
        },
        zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ClientError::Timeout(timeout)
        }
        other => ClientError::Bus(other),
    }
}
