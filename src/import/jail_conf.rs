//! Reads fail2ban's jail configuration as fail2ban's configreader does:
//! jail.conf, jail.d/*.conf (sorted), jail.local, jail.d/*.local (sorted),
//! each with its `[INCLUDES]` before/after and `.local`, later files
//! overriding option by option, `[DEFAULT]` under every jail and
//! `%(name)s` interpolation with `%(__name__)s` the jail's name (all of it
//! `jail::fail2ban::ini`). Also the database path fail2ban.conf/.local
//! names, and what filter.d holds.
//!
//! This file only reads files and resolves values; it must not decide
//! what an option means for orch (that is `mapping.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ImportError;
use crate::jail::fail2ban::ini::{Config, Options};

/// The jail options the mapping looks at; every other option set in a
/// jail's own section is reported as not mapped.
pub const JAIL_OPTIONS: &[&str] = &[
    "enabled",
    "filter",
    "mode",
    "backend",
    "logpath",
    "logencoding",
    "journalmatch",
    "maxretry",
    "findtime",
    "bantime",
    "bantime.increment",
    "bantime.factor",
    "bantime.formula",
    "bantime.multipliers",
    "bantime.maxtime",
    "bantime.rndtime",
    "bantime.overalljails",
    "ignoreip",
    "ignoreself",
    "ignorecommand",
    "usedns",
    "action",
    "banaction",
    "banaction_allports",
    "port",
    "protocol",
    "chain",
    "failregex",
    "ignoreregex",
    "prefregex",
    "datepattern",
    "maxlines",
];

/// One jail section with its options resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JailSettings {
    pub name: String,
    /// Where the section was last set, as `file:line` of its `enabled`
    /// (or the configuration's main file).
    pub origin: String,
    /// The options of [`JAIL_OPTIONS`] that are set, interpolated.
    pub values: BTreeMap<String, String>,
    /// Options that failed to interpolate: name and message (file:line).
    pub errors: Vec<(String, String)>,
    /// Options set in the jail's own section (not from `[DEFAULT]`).
    pub own: Vec<String>,
    /// Where each value came from, `file:line`, for messages.
    pub locations: BTreeMap<String, String>,
}

impl JailSettings {
    pub fn get(&self, option: &str) -> Option<&str> {
        self.values.get(option).map(String::as_str)
    }

    /// `option` with where it was set, for messages: `bantime (jail.local:4)`.
    pub fn at(&self, option: &str) -> String {
        match self.locations.get(option) {
            Some(location) => format!("{option} ({location})"),
            None => option.to_string(),
        }
    }
}

/// Every jail section of the configuration in `etc`, sorted by name.
pub fn read_jails(etc: &Path) -> Result<Vec<JailSettings>, ImportError> {
    let main = etc.join("jail.conf");
    if !main.is_file() {
        return Err(ImportError::NoEtc(etc.to_path_buf()));
    }
    let config = Config::load(&main)?;
    let mut names: Vec<&String> = config
        .sections
        .keys()
        .filter(|name| *name != "INCLUDES" && !name.starts_with("KNOWN/"))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| settings_of(&config, name))
        .collect())
}

/// The options of jail `name` as fail2ban's JailReader sees them.
fn settings_of(config: &Config, name: &str) -> JailSettings {
    let mut vars = Options::new();
    vars.insert("__name__".to_string(), name.to_string());
    let mut settings = JailSettings {
        name: name.to_string(),
        origin: config
            .location(name, "enabled")
            .unwrap_or_else(|| config.origin.clone()),
        own: config.own_options(name),
        ..JailSettings::default()
    };
    for option in JAIL_OPTIONS {
        if let Some(location) = config.location(name, option) {
            settings.locations.insert(option.to_string(), location);
        }
        match config.get(name, option, &vars) {
            Ok(Some(value)) => {
                settings.values.insert(option.to_string(), value);
            }
            Ok(None) => {}
            Err(err) => settings.errors.push((option.to_string(), err.to_string())),
        }
    }
    settings
}

/// The database fail2ban.conf/fail2ban.local name (`[Definition] dbfile`),
/// or fail2ban's default when they name none. `None` when the database
/// is off (`dbfile = :memory:` or `None`).
pub fn database_path(etc: &Path) -> Result<Option<PathBuf>, ImportError> {
    const DEFAULT_DB: &str = "/var/lib/fail2ban/fail2ban.sqlite3";
    let main = etc.join("fail2ban.conf");
    let configured = if main.is_file() {
        Config::load(&main)?.get("Definition", "dbfile", &Options::new())?
    } else {
        None
    };
    let path = configured.unwrap_or_else(|| DEFAULT_DB.to_string());
    let path = path.trim();
    Ok(match path {
        ":memory:" | "None" | "none" | "" => None,
        other => Some(PathBuf::from(other)),
    })
}

/// What filter.d in the fail2ban directory holds.
#[derive(Debug, Clone)]
pub struct FilterDir {
    pub dir: PathBuf,
}

impl FilterDir {
    pub fn new(etc: &Path) -> FilterDir {
        FilterDir {
            dir: etc.join("filter.d"),
        }
    }

    /// filter.d/NAME.conf.
    pub fn conf(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.conf"))
    }

    /// Whether filter.d has NAME.conf (or only NAME.local).
    pub fn exists(&self, name: &str) -> bool {
        self.conf(name).is_file() || self.dir.join(format!("{name}.local")).is_file()
    }

    /// Whether the admin changed the filter beside its .conf: NAME.local
    /// or NAME.d/.
    pub fn customised(&self, name: &str) -> bool {
        self.dir.join(format!("{name}.local")).is_file()
            || self.dir.join(format!("{name}.d")).is_dir()
    }
}
