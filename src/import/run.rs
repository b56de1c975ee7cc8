//! `orch import fail2ban`: reads fail2ban's jails, maps them, checks the
//! result with orch's own config loader, writes it (or shows it with
//! --dry-run), then sends the bans still active in fail2ban's database to
//! the daemon in one `ImportBans` call, printing what it does.
//!
//! It only sequences the other files of `import/` and reports; it must
//! not map, parse or judge anything itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::ImportError;
use super::ban_db::{DbBans, read_bans};
use super::jail_conf::{FilterDir, database_path, read_jails};
use super::mapping::{Mapped, map_all};
use super::toml_out::{Written, render, write_if_changed};
use crate::bus::client::{self, CALL_TIMEOUT, ClientError};
use crate::quote::printable;
use crate::timefmt::now_unix;

/// Where the imported jails go by default.
pub const DEFAULT_OUTPUT: &str = "/etc/orch/conf.d/50-fail2ban.toml";

/// Bad database rows shown one by one; the rest are counted.
const BAD_ROWS_SHOWN: usize = 20;

/// `orch import ...`.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Turn fail2ban's enabled jails into orch jails and bring its active bans over
    #[command(
        long_about = "Read fail2ban's jail configuration as fail2ban does (jail.conf, \
jail.d/*.conf, jail.local, jail.d/*.local, [DEFAULT], %(name)s and [INCLUDES]) and write every \
enabled jail as an orch jail to one conf.d file: the filter (an orch built-in where one does the \
same, such as sshd, nginx-http-auth and recidive; otherwise fail2ban's own filter.d file, which orch \
runs), the log files or, for backend = systemd, the journal with the filter's journalmatch, \
maxretry, findtime, bantime and bantime.increment (factor, multipliers or formula, maxtime, \
rndtime, overalljails). ignoreip entries every imported jail shares become orch's allow list; \
the others stay the jail's ignore list.\n\n\
What has no orch equivalent is listed on stderr with the reason and, where known, the file:line \
that set it: actions that do more than ban (mail, reports), bans limited to some ports, options \
the import does not know, jails that are not enabled or cannot be mapped.\n\n\
The file is checked with orch's own configuration loader before it is written, and written only \
when its text changes. Then the bans still active in fail2ban's database (the latest ban of \
each address per jail; -1 = permanent, which orch cuts to bans.max_time) go to the running \
daemon in one call, each with its remaining time, its jail as source. Expired bans are skipped \
and counted, rows that do not make sense are reported and skipped, and bans orch already has for \
as long are left unchanged, so importing twice changes nothing.\n\n\
Stop fail2ban afterwards (systemctl disable --now fail2ban), and reload orch to start the jails \
(systemctl reload orch).",
        after_help = "Examples:\n  orch import fail2ban --dry-run\n  orch import fail2ban && orch check-config && systemctl reload orch\n  orch import fail2ban --etc /srv/f2b/etc --db /srv/f2b/fail2ban.sqlite3 --output /tmp/f2b.toml"
    )]
    Fail2ban(Fail2banArgs),
}

/// `orch import fail2ban` options.
#[derive(Debug, Args)]
pub struct Fail2banArgs {
    /// fail2ban's configuration directory
    #[arg(long, value_name = "DIR", default_value = "/etc/fail2ban")]
    pub etc: PathBuf,
    /// fail2ban's database (default: the dbfile fail2ban.conf/.local names)
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// The orch config file to write
    #[arg(long, value_name = "FILE", default_value = DEFAULT_OUTPUT)]
    pub output: PathBuf,
    /// Print the file and the bans instead of writing and sending them
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `orch import ...`; `config` is `--config`, for bans.max_time.
pub async fn run(config: Option<&Path>, command: &ImportCommand) -> Result<(), ImportError> {
    let ImportCommand::Fail2ban(args) = command;
    let max_time = crate::config::load_default_locations(config)
        .map(|loaded| loaded.bans.max_time)
        .unwrap_or_else(|_| crate::config::Config::default().bans.max_time)
        .as_secs();
    let jails = read_jails(&args.etc)?;
    let mapped = map_all(&jails, &FilterDir::new(&args.etc), max_time);
    let text = render(&mapped, &args.etc);
    if let Err(err) = crate::config::parse_str(&text, &args.output) {
        return Err(ImportError::Invalid(err.to_string()));
    }
    report_notes(&mapped);
    if args.dry_run {
        println!(
            "would write {} ({} jail(s)):",
            args.output.display(),
            mapped.jails.len()
        );
        print!("{text}");
    } else {
        let written = write_if_changed(&args.output, &text)?;
        let what = match written {
            Written::Created => "wrote",
            Written::Replaced => "replaced",
            Written::Unchanged => "unchanged:",
        };
        println!(
            "{what} {} ({} jail(s))",
            args.output.display(),
            mapped.jails.len()
        );
        if written != Written::Unchanged && args.output.starts_with(crate::config::SYSTEM_CONF_D) {
            println!(
                "next: orch check-config && systemctl reload orch (starts the imported jails)"
            );
        }
    }
    let db = match &args.db {
        Some(db) => db.clone(),
        None => match database_path(&args.etc)? {
            Some(db) => db,
            None => {
                println!(
                    "fail2ban keeps no database (dbfile = :memory: or None): no bans to import"
                );
                return Ok(());
            }
        },
    };
    let now = now_unix();
    let bans = read_bans(&db, now)?;
    report_bans(&db, &bans);
    if args.dry_run {
        for ban in &bans.active {
            println!(
                "would ban {} for {} (jail {})",
                printable(&ban.address),
                remaining_text(ban.expires_at, now),
                printable(&ban.jail)
            );
        }
        return Ok(());
    }
    send_bans(&bans).await
}

/// The notes on stderr, one line each.
fn report_notes(mapped: &Mapped) {
    for note in &mapped.notes {
        if note.jail.is_empty() {
            eprintln!("orch: import: {}", printable(&note.text));
        } else {
            eprintln!(
                "orch: import: jail {}: {}",
                printable(&note.jail),
                printable(&note.text)
            );
        }
    }
}

fn report_bans(db: &Path, bans: &DbBans) {
    println!(
        "read {}: {} active ban(s), {} expired (skipped), {} older ban(s) of addresses banned again, {} bad row(s)",
        db.display(),
        bans.active.len(),
        bans.expired,
        bans.older,
        bans.bad.len()
    );
    for bad in bans.bad.iter().take(BAD_ROWS_SHOWN) {
        eprintln!("orch: import: {}: skipped {}", db.display(), printable(bad));
    }
    if bans.bad.len() > BAD_ROWS_SHOWN {
        eprintln!(
            "orch: import: {}: and {} more bad row(s)",
            db.display(),
            bans.bad.len() - BAD_ROWS_SHOWN
        );
    }
}

fn remaining_text(expires_at: u64, now: u64) -> String {
    if expires_at == u64::MAX {
        return "ever (permanent; orch cuts it to bans.max_time)".to_string();
    }
    humantime::format_duration(Duration::from_secs(expires_at.saturating_sub(now))).to_string()
}

/// The active bans to the daemon, in one call.
async fn send_bans(bans: &DbBans) -> Result<(), ImportError> {
    if bans.active.is_empty() {
        println!("no active bans to import");
        return Ok(());
    }
    let rows: Vec<(String, u64, String, String)> = bans
        .active
        .iter()
        .map(|ban| {
            (
                ban.address.clone(),
                ban.expires_at,
                format!("imported from fail2ban (jail {})", ban.jail),
                ban.jail.clone(),
            )
        })
        .collect();
    let not_running = |err: ClientError| match err {
        ClientError::NotRunning => ImportError::DaemonNotRunning(err.to_string()),
        other => ImportError::Send(other.to_string()),
    };
    let proxy = client::connect(CALL_TIMEOUT).await.map_err(not_running)?;
    println!("sending {} ban(s) to the orch daemon ...", rows.len());
    let (banned, unchanged, refused) = crate::cli::progress::Progress::on_terminal()
        .while_running("importing...", proxy.import_bans(&rows))
        .await
        .map_err(|err| not_running(client::classify(err, CALL_TIMEOUT)))?;
    println!(
        "banned {banned}, unchanged {unchanged} (already banned as long), refused {}",
        refused.len()
    );
    for (address, why) in &refused {
        eprintln!(
            "orch: import: {} not banned: {}",
            printable(address),
            printable(why)
        );
    }
    Ok(())
}
