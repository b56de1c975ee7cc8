//! `orch` binary entry point: parse arguments, set up logging, dispatch.
//! All logic lives in the library; this file only turns results into exit
//! codes and messages.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use orch::cli::{Cli, Command, StoreCommand};
use orch::config;
use orch::quote::printable_lines;

fn main() -> ExitCode {
    let cli = Cli::parse();
    orch::logging::init();
    match cli.command {
        Command::CheckConfig => check_config(&cli),
        Command::Daemon => run_daemon(&cli),
        Command::TestFilter {
            ref filter,
            ref log,
            json,
        } => test_filter(filter, log, json),
        Command::InstallUnits(ref args) => run_units(orch::systemd::install::install(args)),
        Command::UninstallUnits(ref args) => run_units(orch::systemd::install::uninstall(args)),
        Command::Store(ref command) => run_store(&cli, command),
        Command::Import(ref command) => run_import(&cli, command),
        ref client_command => run_client(client_command),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

fn check_config(cli: &Cli) -> ExitCode {
    let loaded = match config::load_default_locations(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("{}", printable_lines(&err.to_string()));
            return ExitCode::FAILURE;
        }
    };
    for source in &loaded.sources {
        println!("read {}", source.display());
    }
    // Secrets others could read: the fleet refuses to connect with them.
    let secrets: Vec<String> = loaded
        .fleet
        .secret_files()
        .into_iter()
        .filter_map(|path| orch::file_trust::check_secret(path).err())
        .map(|why| printable_lines(&why.to_string()))
        .collect();
    for why in &secrets {
        eprintln!("error: {why}");
    }
    for why in config::untrusted_sources(&loaded) {
        println!(
            "warning: a config file others could change: {}",
            printable_lines(&why.to_string())
        );
    }
    for jail in &loaded.jails.jails {
        if let config::JailSource::Journal { matches } = &jail.source {
            let (_, hardened) = orch::jail::journal_trust::unforgeable_matches(matches);
            if let Some(warning) = orch::jail::journal_trust::warning(&hardened) {
                println!("warning: jail {}: {}", jail.name, printable_lines(&warning));
            }
        }
    }
    if loaded.jails.jails.iter().any(|jail| jail.by_default) {
        println!(
            "note: no jails configured: the default jail sshd (journal of ssh.service, sshd.service) \
             runs where one of those units is installed; [jails.sshd] enabled = false turns it off"
        );
    }
    for note in loaded.fleet.jails_kept_local(&loaded.jails) {
        println!("note: {}", printable_lines(&note));
    }
    if let Some(note) = loaded.metrics.exposure_note() {
        println!("note: {note}");
    }
    for (hook, why) in orch::hooks::untrusted_hooks(&loaded.hooks.dir) {
        println!(
            "warning: hook {hook} will not run: {}",
            printable_lines(&why.to_string())
        );
    }
    if !secrets.is_empty() {
        eprintln!("orch: the fleet will not connect until these files are fixed");
        return ExitCode::FAILURE;
    }
    if loaded.sources.is_empty() {
        println!("configuration OK (embedded default; no config file found)");
    } else {
        println!("configuration OK");
    }
    ExitCode::SUCCESS
}

fn run_daemon(cli: &Cli) -> ExitCode {
    let (loaded, config_error) = match config::load_default_locations(cli.config.as_deref()) {
        Ok(loaded) => {
            if let Err(err) = config::last_good::save(&loaded) {
                eprintln!("<4>orch: cannot save the configuration as the last good one: {err}");
            }
            (loaded, None)
        }
        Err(err) => {
            let (fallback, error) = fallback_config(cli, &err);
            (fallback, Some(error))
        }
    };
    orch::memory::tune_allocator();
    let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(orch::daemon::run(loaded, cli.config.clone(), config_error))
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Each DaemonError already shows its cause; `{:#}` would repeat it.
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration to run on when the one on disk is invalid: the last
/// good one saved in the state directory, else the embedded default (with
/// the state directory the broken file names, so the stored bans apply).
/// A config error must never leave the host unprotected; the error goes
/// to the journal at error priority, and into `orch status`.
fn fallback_config(cli: &Cli, err: &config::ConfigError) -> (config::Config, String) {
    let state_dir = config::last_good::state_dir_of(cli.config.as_deref());
    let (fallback, what) = match config::last_good::load(&state_dir) {
        Some(Ok(last_good)) => (last_good, "the last good configuration"),
        _ => {
            let embedded = config::Config {
                state_dir: state_dir.clone(),
                ..config::Config::default()
            };
            (embedded, "the embedded default configuration")
        }
    };
    for line in printable_lines(&err.to_string()).lines() {
        eprintln!("<3>{line}");
    }
    eprintln!(
        "<3>orch: the configuration is invalid; running on {what} (state in {}) so every stored ban stays applied. Fix the file, then: systemctl reload orch",
        state_dir.display()
    );
    let first_issue = err
        .issues
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let summary = format!(
        "{} ({} problem(s)); running on {what}; fix it, then systemctl reload orch",
        printable_lines(&first_issue),
        err.issues.len()
    );
    (fallback, summary)
}

/// `orch store verify|salvage`: on the files in the state directory given,
/// or the one the daemon would use.
fn run_store(cli: &Cli, command: &StoreCommand) -> ExitCode {
    let dir = match command.state_dir() {
        Some(dir) => dir.to_path_buf(),
        None => match config::load_default_locations(cli.config.as_deref()) {
            Ok(loaded) => loaded.state_dir,
            // The daemon runs on a fallback then; this is its state dir.
            Err(_) => config::last_good::state_dir_of(cli.config.as_deref()),
        },
    };
    let now = orch::timefmt::now_unix();
    let (shown, code) = match command {
        StoreCommand::Verify { .. } => match orch::store::repair::verify(&dir) {
            Ok(report) if report.is_clean() => (Ok(report.to_string()), 0),
            Ok(report) => (Ok(report.to_string()), 1),
            Err(err) => (Err(err.to_string()), 2),
        },
        StoreCommand::Salvage { .. } => match orch::store::repair::salvage(&dir, now) {
            Ok(report) => (Ok(report.to_string()), 0),
            Err(err) => (Err(err.to_string()), 1),
        },
    };
    match shown {
        Ok(report) => print!("{}", printable_lines(&report)),
        Err(message) => eprintln!("orch: {}", printable_lines(&message)),
    }
    ExitCode::from(code)
}

fn run_units<E: std::fmt::Display>(
    work: impl std::future::Future<Output = Result<orch::systemd::install::Report, E>>,
) -> ExitCode {
    let result = match runtime() {
        Ok(rt) => rt.block_on(work).map_err(|err| err.to_string()),
        Err(err) => Err(format!("cannot start: {err}")),
    };
    match result {
        Ok(report) => {
            // A closed pipe (`| head`) ends the listing quietly.
            let mut out = std::io::stdout().lock();
            for line in &report.lines {
                if writeln!(out, "{line}").is_err() {
                    break;
                }
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("orch: {}", printable_lines(&message));
            ExitCode::FAILURE
        }
    }
}

fn test_filter(spec: &str, log: &std::path::Path, json: bool) -> ExitCode {
    use orch::jail::test_filter;
    let result = test_filter::load_filter(spec).and_then(|mut filter| {
        let mut out = std::io::stdout().lock();
        let summary = test_filter::run(filter.as_mut(), log, json, &mut out)?;
        Ok((filter, summary))
    });
    match result {
        Ok((filter, summary)) => {
            if !json {
                print!("{}", test_filter::describe(filter.as_ref(), &summary));
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("orch: {}", printable_lines(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn run_import(cli: &Cli, command: &orch::import::run::ImportCommand) -> ExitCode {
    let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(orch::import::run::run(cli.config.as_deref(), command))
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("orch: {}", printable_lines(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn run_client(command: &Command) -> ExitCode {
    let result = match runtime() {
        Ok(rt) => rt.block_on(orch::cli::run_client(command)),
        Err(err) => Err(orch::cli::Failure {
            message: format!("cannot start: {err}"),
            code: 1,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("orch: {}", printable_lines(&failure.message));
            ExitCode::from(failure.code)
        }
    }
}
