//! `orch check-config [--json]`: loads the configuration the daemon would
//! load and reports every problem (file:line:column), the files read, and
//! the warnings and notes an admin should know (secrets others can read,
//! forgeable journal matches, hooks that will not run, the default jail).
//! With --json, one object (schema in docs/json.md, `check-config`).
//!
//! It reads files only; it must not talk to the daemon or change anything.

use std::path::Path;

use serde::Serialize;

use crate::config;
use crate::quote::printable_lines;

/// What `check-config` found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// Whether the daemon would take this configuration as it is.
    pub ok: bool,
    /// Files read, in merge order; empty means the embedded default.
    pub sources: Vec<String>,
    pub errors: Vec<Problem>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

/// One error, located; `line` and `column` are 0 when it concerns a whole
/// file.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// "config": the file does not load; "secret": a fleet secret others
    /// could read or change (the fleet will not connect).
    pub kind: &'static str,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Loads and checks; the report says everything found.
pub fn check(config_path: Option<&Path>) -> CheckReport {
    let loaded = match config::load_default_locations(config_path) {
        Ok(loaded) => loaded,
        Err(err) => {
            return CheckReport {
                errors: err
                    .issues
                    .iter()
                    .map(|issue| Problem {
                        kind: "config",
                        file: issue.file.display().to_string(),
                        line: issue.line,
                        column: issue.column,
                        message: printable_lines(&issue.message),
                    })
                    .collect(),
                ..CheckReport::default()
            };
        }
    };
    let mut report = CheckReport {
        sources: loaded
            .sources
            .iter()
            .map(|source| source.display().to_string())
            .collect(),
        ..CheckReport::default()
    };
    // Secrets others could read: the fleet refuses to connect with them.
    for path in loaded.fleet.secret_files() {
        if let Err(why) = crate::file_trust::check_secret(path) {
            report.errors.push(Problem {
                kind: "secret",
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message: printable_lines(&why.to_string()),
            });
        }
    }
    for why in config::untrusted_sources(&loaded) {
        report.warnings.push(format!(
            "a config file others could change: {}",
            printable_lines(&why.to_string())
        ));
    }
    for jail in &loaded.jails.jails {
        if let config::JailSource::Journal { matches } = &jail.source {
            let (_, hardened) = crate::jail::journal_trust::unforgeable_matches(matches);
            if let Some(warning) = crate::jail::journal_trust::warning(&hardened) {
                report
                    .warnings
                    .push(format!("jail {}: {}", jail.name, printable_lines(&warning)));
            }
        }
    }
    if let Some(note) = loaded.metrics.exposure_note() {
        report.notes.push(note);
    }
    for (action, why) in crate::actions::untrusted_programs(&loaded.actions) {
        report.warnings.push(format!(
            "ban action {action} will not run: {}",
            printable_lines(&why.to_string())
        ));
    }
    for (hook, why) in crate::hooks::untrusted_hooks(&loaded.hooks.dir) {
        report.warnings.push(format!(
            "hook {hook} will not run: {}",
            printable_lines(&why.to_string())
        ));
    }
    if loaded.jails.jails.iter().any(|jail| jail.by_default) {
        report.notes.push(
            "no jails configured: the default jail sshd (journal of ssh.service, sshd.service) \
             runs where one of those units is installed; [jails.sshd] enabled = false turns it off"
                .to_string(),
        );
    }
    for note in loaded.fleet.jails_kept_local(&loaded.jails) {
        report.notes.push(printable_lines(&note));
    }
    report.ok = report.errors.is_empty();
    report
}

/// Prints the report for people: errors on stderr, the rest on stdout.
pub fn print_text(report: &CheckReport) {
    for source in &report.sources {
        println!("read {source}");
    }
    for problem in &report.errors {
        if problem.kind == "secret" {
            eprintln!("error: {}", problem.message);
        } else if problem.line == 0 {
            eprintln!("{}: {}", problem.file, problem.message);
        } else {
            eprintln!(
                "{}:{}:{}: {}",
                problem.file, problem.line, problem.column, problem.message
            );
        }
    }
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    if report.errors.iter().any(|problem| problem.kind == "secret") {
        eprintln!("orch: the fleet will not connect until these files are fixed");
    }
    if report.ok && report.sources.is_empty() {
        println!("configuration OK (embedded default; no config file found)");
    } else if report.ok {
        println!("configuration OK");
    }
}
