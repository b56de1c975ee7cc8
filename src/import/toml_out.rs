//! The mapped jails as an orch conf.d file, and writing it only when its
//! text changes (atomically: temporary file, fsync, rename), so a second
//! import leaves the file as it is.
//!
//! The text depends on nothing but the mapping (no date, sorted jails), so
//! the same fail2ban configuration always gives the same file. This file
//! must not validate the configuration (`run.rs` has the config loader do
//! that) nor decide the mapping.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::ImportError;
use super::mapping::{Growth, Mapped, OrchJail, Source, duration_text};

/// The file's text.
pub fn render(mapped: &Mapped, etc: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `orch import fail2ban` from the jails enabled in {}.",
        etc.display()
    );
    out.push_str(
        "# Importing again replaces this file; copy what you change to another conf.d file.\n",
    );
    if !mapped.allow.is_empty() {
        out.push_str("\n# ignoreip of every imported jail: never banned by orch.\nallow = [\n");
        for net in &mapped.allow {
            let _ = writeln!(out, "  {},", quoted(&net.to_string()));
        }
        out.push_str("]\n");
    }
    for jail in &mapped.jails {
        out.push('\n');
        render_jail(&mut out, jail);
    }
    out
}

fn render_jail(out: &mut String, jail: &OrchJail) {
    let _ = writeln!(out, "# fail2ban jail {} ({})", jail.name, jail.origin);
    let _ = writeln!(out, "[jails.{}]", jail.name);
    let _ = writeln!(out, "filter = {}", quoted(&jail.filter));
    match &jail.source {
        Source::Files(files) => {
            let _ = writeln!(out, "files = {}", list(files));
        }
        Source::Journal(matches) => {
            let _ = writeln!(out, "journal = {{ matches = {} }}", list(matches));
        }
        Source::OwnBans => {}
    }
    let _ = writeln!(out, "maxretry = {}", jail.max_retry);
    let _ = writeln!(out, "findtime = {}", quoted(&duration_text(jail.find_time)));
    let _ = writeln!(out, "bantime = {}", quoted(&duration_text(jail.ban_time)));
    if let Some(increment) = &jail.increment {
        let mut fields = match &increment.growth {
            Growth::Factor(factor) => vec![format!("factor = {}", float(*factor))],
            Growth::Multipliers(multipliers) => {
                let numbers: Vec<String> = multipliers.iter().map(u64::to_string).collect();
                vec![format!("multipliers = [{}]", numbers.join(", "))]
            }
            Growth::Formula { text, factor } => vec![
                format!("formula = {}", quoted(text)),
                format!("factor = {}", float(*factor)),
            ],
        };
        if let Some(max) = increment.max_time {
            fields.push(format!("maxtime = {}", quoted(&duration_text(max))));
        }
        if let Some(random) = increment.random_time {
            fields.push(format!("rndtime = {}", quoted(&duration_text(random))));
        }
        if increment.overall {
            fields.push("overall = true".to_string());
        }
        let _ = writeln!(out, "increment = {{ {} }}", fields.join(", "));
    }
    if !jail.ignore.is_empty() {
        let nets: Vec<String> = jail.ignore.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "ignore = {}", list(&nets));
    }
    if !jail.ignore_command.is_empty() {
        let _ = writeln!(out, "ignore_command = {}", list(&jail.ignore_command));
    }
}

/// A TOML basic string, escaped by the toml crate.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quoted(item)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A float TOML reads back as a float (`1.0`, not `1`).
fn float(value: f64) -> String {
    toml::Value::Float(value).to_string()
}

/// What writing the file came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
    Unchanged,
}

/// Writes `text` to `path` unless it already holds exactly that: a
/// temporary file beside it, fsynced, renamed over it, the directory
/// fsynced; mode 0644. Creates the directory (0755) if needed.
pub fn write_if_changed(path: &Path, text: &str) -> Result<Written, ImportError> {
    let failed = |source: std::io::Error| ImportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(failed(err)),
    };
    if existing.as_deref() == Some(text.as_bytes()) {
        return Ok(Written::Unchanged);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(failed)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temporary)
        .map_err(failed)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(failed)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(if existing.is_some() {
        Written::Replaced
    } else {
        Written::Created
    })
}
