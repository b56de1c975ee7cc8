//! Turns a filter reference from the configuration or the command line
//! into a runnable filter: a built-in name, the path of a native TOML
//! filter, or a fail2ban filter reference
//! (`/etc/fail2ban/filter.d/sshd.conf[mode=aggressive]`).
//!
//! Jails, `orch check-config` and `orch test-filter` all load filters here,
//! so the three agree on what a reference means. It only reads files.

use std::path::Path;

use super::fail2ban::{Fail2banError, Fail2banFilter, FilterRef};
use super::filter::{Filter, FilterError, builtin_names};
use super::line_filter::LineFilter;

/// Why a filter could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadFilterError {
    #[error("{0}")]
    Filter(#[from] FilterError),
    #[error(
        "{0}: no such built-in filter and no such file (built-in filters: {names})",
        names = builtin_names().join(", ")
    )]
    UnknownFilter(String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Fail2ban(#[from] Fail2banError),
}

/// Loads the filter `spec` names.
pub fn load_filter(spec: &str) -> Result<Box<dyn LineFilter>, LoadFilterError> {
    if let Some(builtin) = Filter::builtin(spec) {
        return Ok(Box::new(builtin?));
    }
    if FilterRef::looks_like(spec) {
        return Ok(Box::new(Fail2banFilter::load(spec)?));
    }
    let path = Path::new(spec);
    if !path.is_file() {
        return Err(LoadFilterError::UnknownFilter(spec.to_string()));
    }
    let text = std::fs::read_to_string(path).map_err(|source| LoadFilterError::Read {
        path: spec.to_string(),
        source,
    })?;
    Ok(Box::new(Filter::from_toml(&text, spec)?))
}
