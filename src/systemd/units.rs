//! Whether systemd knows a unit on this host, asked over the system bus:
//! the default sshd jail runs only where an sshd unit exists.
//!
//! It only asks; deciding what runs is the caller's job. A bus without
//! systemd (a private test bus, a container without it) is an error, not
//! "absent", so the caller can say which it was.

use std::time::Duration;

use thiserror::Error;
use zbus::{Connection, proxy};

/// How long systemd may take to answer before the question is given up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait UnitFiles {
    fn get_unit_file_state(&self, name: &str) -> zbus::Result<String>;
}

/// Why systemd could not be asked.
#[derive(Debug, Error)]
pub enum UnitQueryError {
    #[error("cannot ask systemd over the system bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("systemd did not answer within {} s", ANSWER_TIMEOUT.as_secs())]
    Timeout,
}

/// The first of `units` that has a unit file on this host (enabled or not,
/// but not masked), or `None` if none has.
pub async fn first_installed(units: &[String]) -> Result<Option<String>, UnitQueryError> {
    tokio::time::timeout(ANSWER_TIMEOUT, ask(units))
        .await
        .map_err(|_| UnitQueryError::Timeout)?
}

async fn ask(units: &[String]) -> Result<Option<String>, UnitQueryError> {
    let connection = Connection::system().await?;
    let manager = UnitFilesProxy::new(&connection).await?;
    for unit in units {
        match manager.get_unit_file_state(unit).await {
            Ok(state) if state != "masked" && state != "masked-runtime" => {
                return Ok(Some(unit.clone()));
            }
            Ok(_) => {}
            Err(err) if means_no_unit_file(&err) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(None)
}

/// systemd's answer for a unit without a file: ENOENT, which the bus
/// carries as `org.freedesktop.DBus.Error.FileNotFound` (zbus gives the
/// standard names their own variants), or `NoSuchUnit`.
fn means_no_unit_file(err: &zbus::Error) -> bool {
    match err {
        zbus::Error::FDO(fdo) => matches!(**fdo, zbus::fdo::Error::FileNotFound(_)),
        zbus::Error::MethodError(name, _, _) => matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.FileNotFound" | "org.freedesktop.systemd1.NoSuchUnit"
        ),
        _ => false,
    }
}
