//! Asks polkit (`org.freedesktop.PolicyKit1.Authority.CheckAuthorization`)
//! whether a D-Bus caller may do one of orch's actions, the way firewalld
//! and systemd delegate: the subject is the caller's unique bus name, so
//! polkit itself finds its process, user, groups and session.
//!
//! It must not decide anything itself: `access.rs` asks only for callers
//! that are not root, and treats "no polkit on this system" as a refusal.

use std::collections::HashMap;
use std::time::Duration;

use zbus::Connection;
use zbus::Variant;
use zbus::names::UniqueName;

/// What polkit answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Not authorised; `challenge` when authentication could grant it.
    Denied {
        challenge: bool,
    },
    /// polkitd is not installed or cannot be started.
    Unavailable,
}

/// CheckAuthorization's flag that lets polkit ask the user for a password
/// through their authentication agent.
const ALLOW_USER_INTERACTION: u32 = 1;

/// How long a check may take: long enough for someone to type a password
/// when interaction is allowed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const INTERACTIVE_CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Asks polkit whether `sender` may do `action_id`.
pub async fn check(
    connection: &Connection,
    sender: &UniqueName<'_>,
    action_id: &str,
    interactive: bool,
) -> Result<Verdict, zbus::Error> {
    let proxy: zbus::Proxy<'_> = zbus::proxy::Builder::new(connection)
        .destination("org.freedesktop.PolicyKit1")
        .path("/org/freedesktop/PolicyKit1/Authority")
        .interface("org.freedesktop.PolicyKit1.Authority")
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let subject_details = HashMap::from([("name", Variant::from(sender.as_str()))]);
    let subject = ("system-bus-name", subject_details);
    let details: HashMap<&str, &str> = HashMap::new();
    let flags = if interactive {
        ALLOW_USER_INTERACTION
    } else {
        0
    };
    let timeout = if interactive {
        INTERACTIVE_CHECK_TIMEOUT
    } else {
        CHECK_TIMEOUT
    };
    let arguments = (subject, action_id, details, flags, "");
    let call =
        proxy.call::<_, _, (bool, bool, HashMap<String, String>)>("CheckAuthorization", &arguments);
    let answer = match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer,
        Err(_) => {
            return Err(zbus::Error::Failure(format!(
                "polkit did not answer within {timeout:?}"
            )));
        }
    };
    match answer {
        Ok((true, _, _)) => Ok(Verdict::Allowed),
        Ok((false, challenge, _)) => Ok(Verdict::Denied { challenge }),
        Err(err) if is_unavailable(&err) => Ok(Verdict::Unavailable),
        Err(err) => Err(err),
    }
}

/// Whether `err` says polkitd is not there (not installed, masked, or
/// failing to start), rather than that the check itself failed.
fn is_unavailable(err: &zbus::Error) -> bool {
    let name = match err {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(fdo) => match **fdo {
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                return true;
            }
            _ => return false,
        },
        _ => return false,
    };
    name == "org.freedesktop.DBus.Error.ServiceUnknown"
        || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        || name.starts_with("org.freedesktop.DBus.Error.Spawn")
        // Activation through systemd: polkit.service masked, missing, failing.
        || name.starts_with("org.freedesktop.systemd1.")
}
