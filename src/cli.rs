//! Command-line interface: argument definitions (with their `--help`
//! text) and the client commands that talk to the daemon over D-Bus.
//!
//! Client commands only ask the daemon; they must never touch the store or
//! the kernel themselves. The exception is `orch store` (defined here, run
//! by `main.rs` through `store::repair`): it reads and repairs the store
//! files, for when the daemon cannot start.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

pub mod check_config;
pub mod exit;
pub mod progress;
pub mod query;
pub mod status;
pub use exit::Failure;
use progress::Progress;

use crate::bus::access::Action;
use crate::bus::client::{self, CALL_TIMEOUT, ClientError, Orch1Proxy};
use crate::quote::printable;
use crate::timefmt::{now_unix, rfc3339};

#[derive(Debug, Parser)]
#[command(
    name = "orch",
    version,
    about = "Host firewall orchestrator: nftables bans that survive firewall reloads",
    long_about = "orch keeps a persistent set of IP bans in its own nftables table (inet orch) and \
re-applies them whenever the firewall is reloaded, restarted or flushed.\n\n\
`orch daemon` runs the service; every other command talks to it over the system D-Bus \
(org.orch.Orch1). Reading commands need nothing; changing commands need root, or a polkit grant: \
the rule that `orch install-units` writes lets members of the group orch-admin ban and unban.",
    after_help = concat!("Configuration: /etc/orch/orch.toml, then /etc/orch/conf.d/*.toml in lexical order; \
with neither, the embedded default (see `orch check-config --help`).\n\n", crate::exit_status_help!())
)]
pub struct Cli {
    /// Read only this config file (no /etc/orch/conf.d), for `daemon`, `check-config` and `store`
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (what orch.service starts)
    #[command(
        long_about = "Run the daemon in the foreground. It loads the config, opens the ban store in \
state_dir, puts every stored ban back into the kernel in one transaction, then serves \
org.orch.Orch1 on the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured). It logs to stderr. \
SIGTERM or SIGINT stops it."
    )]
    Daemon,

    /// Ban addresses or prefixes
    #[command(
        long_about = "Ban one or more IPv4/IPv6 addresses or CIDR prefixes, in one transaction. \
Either all are banned or none: an invalid, over-broad (see bans.min_prefix_v4/v6), allowlisted, \
loopback or own address refuses the whole command. Banning an address again resets its expiry.\n\n\
With --from-file, the addresses come from a file (or stdin, `-`): one address or prefix per line, \
`#` starting a comment, blank lines skipped, at most 1,000,000 entries. A bad entry is reported \
with its file and line, and nothing is banned. The whole list goes to the daemon as one BanMany: \
one transaction and one fsync, as fast as one ban of many (about 100,000 addresses in under a second).",
        after_help = "Examples:\n  orch ban 203.0.113.7\n  orch ban 198.51.100.0/24 2001:db8::7 --for 1d --reason 'port scan'\n  orch ban --from-file /root/blocklist.txt --for 7d --reason 'blocklist 2026-12'\n  curl -s https://example.org/drop.txt | orch ban --from-file -"
    )]
    Ban {
        /// Addresses or prefixes, e.g. 203.0.113.7, 2001:db8::7, 198.51.100.0/24
        #[arg(required_unless_present = "from_file", value_name = "ADDR")]
        addresses: Vec<String>,
        /// Also ban every address listed in FILE ('-' reads stdin)
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// How long, e.g. 30m, 1h, 7d (default: bans.default_time)
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Why, shown by `orch list`
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },

    /// Lift bans
    #[command(
        long_about = "Lift the ban on each ADDR. Exits 1 if any of them was not banned.\n\nWith --fleet, also delete every fleet host's ban of each ADDR from the shared bucket, so it is lifted everywhere. That needs [fleet] admin credentials (a host's own may delete only its own bans)."
    )]
    Unban {
        #[arg(required = true, value_name = "ADDR")]
        addresses: Vec<String>,
        /// Lift the bans on every host of the fleet, not only here
        #[arg(long)]
        fleet: bool,
    },

    /// List active bans
    #[command(
        long_about = "List the active bans in address order, with their expiry, remaining time, \
source and reason. The daemon sends them a page at a time (at most 10,000 bans per reply) and \
orch prints each page as it arrives, so a million bans list in constant memory. Anyone may list.",
        after_help = "Examples:\n  orch list\n  orch list --jail sshd --limit 20\n  orch list --prefix 203.0.113.0/24 --json\n  orch list --source fleet:web2 | wc -l"
    )]
    List {
        /// One JSON array of {address, banned_at, expires_at, reason, source} (Unix seconds)
        #[arg(long)]
        json: bool,
        /// Print at most N bans
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Only bans from this source: a jail name, "manual", or "fleet:<host>"
        #[arg(long, value_name = "SOURCE", conflicts_with = "jail")]
        source: Option<String>,
        /// Only bans made by this jail (the same as --source JAIL)
        #[arg(long, value_name = "JAIL")]
        jail: Option<String>,
        /// Only bans of addresses or prefixes inside CIDR
        #[arg(long, value_name = "CIDR")]
        prefix: Option<String>,
    },

    /// Say why an address is banned, or allowed
    #[command(
        long_about = "Ask the daemon about ADDR (an address or prefix): whether it is banned and by \
which holds (each ban that covers it, a banned prefix around it included: its source, jail or fleet \
host, reason, since when and until when), other fleet hosts' bans of it, an own ban kept under a \
longer remote one, how many times it was banned before (what recidive and bantime.increment count), \
and the allowlist entries that cover it (static, runtime, or a DNS name's address). With \
[firewall] element_counters = true it also shows the packets and bytes the ban has dropped. With \
--json, one JSON object (schema in docs/json.md). Anyone may ask.",
        after_help = "Examples:\n  orch query 203.0.113.7\n  orch query 2001:db8::7 --json | jq .bans"
    )]
    Query {
        /// An address or prefix, e.g. 203.0.113.7 or 198.51.100.0/24
        #[arg(value_name = "ADDR")]
        address: String,
        /// One JSON object instead (schema: docs/json.md)
        #[arg(long)]
        json: bool,
    },

    /// Add a runtime allowlist entry (never banned; persisted), or `list` it
    #[command(
        long_about = "Add CIDR (or a single address) to the runtime allowlist. Allowlisted \
traffic is accepted by orch's table before any ban is checked, and bans overlapping it are refused. \
Runtime entries persist across restarts; remove them with `orch disallow`. With --for the entry \
ends by itself (in the store and in the kernel); --comment says why it is there. Allowing an entry \
again with --for or --comment replaces its end and comment.\n\n\
`orch allow list` shows the whole allowlist instead: static entries from the config, runtime \
entries with their comment and end, and the current addresses of each DNS allow name \
([[dns.allow]]) with their expiry.",
        after_help = "Examples:\n  orch allow 192.0.2.0/24\n  orch allow 198.51.100.7 --for 2h --comment 'vendor VPN'\n  orch allow list\n  orch allow list --json"
    )]
    Allow {
        /// An address or prefix, or the word `list`
        #[arg(value_name = "CIDR|list")]
        cidr: String,
        /// With `list`: one JSON array of {entry, kind, name, comment, expires_at}
        #[arg(long)]
        json: bool,
        /// End the entry after DURATION, e.g. 30m, 2h, 7d (default: never)
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Why the entry is there (one line, at most 256 bytes)
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },

    /// Remove a runtime allowlist entry
    Disallow {
        #[arg(value_name = "CIDR")]
        cidr: String,
    },

    /// Show the daemon's state: table, backend, bans, last sync, fleet, jails
    #[command(
        long_about = "Show the daemon's state: table, backend, ownership, bans, last sync, hooks, \
watched units, fleet, and per jail its bans (active now, and made since the daemon started), the \
addresses with failures counted now, the failures found and lines read, then a health line: lines/s \
over the last 10 s, lag (how long the jail has been behind its log; for files also the bytes still \
unread), PCRE2 match-limit hits, and lines too long (cut to 16 KiB) or not UTF-8 (bytes replaced). \
LAGGING marks a jail more than half its findtime behind: its older failures are dropped as stale.\n\n\
With JAIL, only that jail, with its first 50 banned addresses. With --json, one JSON object \
(schema in docs/json.md). Anyone may read the status.",
        after_help = "Examples:\n  orch status\n  orch status sshd\n  orch status --json | jq '.jails[] | {name, bans_now}'"
    )]
    Status {
        /// Only this jail, with its first banned addresses (like fail2ban-client status JAIL)
        #[arg(value_name = "JAIL")]
        jail: Option<String>,
        /// One JSON object instead (schema: docs/json.md)
        #[arg(long)]
        json: bool,
    },

    /// Re-apply orch's whole table from its store now (and run the hooks)
    #[command(
        long_about = "Ask the daemon to re-apply its whole table from the ban store, and wait until \
it is done. With --hooks (or --event) it then runs the hooks in hooks.dir and waits for them too; \
a failed hook is reported and makes the exit status 1. When the daemon is not running, or there is \
no system bus yet (early boot), this is a quiet no-op with exit status 0, so it is safe in \
nftables.service's ExecStartPost= and ExecReload=. It gives up after 20 seconds."
    )]
    Sync {
        /// Also run the hooks, after the table is back
        #[arg(long)]
        hooks: bool,
        /// ORCH_EVENT for the hooks (implies --hooks)
        #[arg(long, value_name = "EVENT", value_parser = ["start", "restart", "reload", "flush", "manual"])]
        event: Option<String>,
        /// ORCH_UNIT for the hooks, e.g. nftables.service
        #[arg(long, value_name = "UNIT")]
        unit: Option<String>,
    },

    /// Reload the daemon's configuration and wait for its verdict
    #[command(
        long_about = "Ask the daemon to re-read its configuration (the same files `orch check-config` \
reads) and apply it, and wait for the verdict. A configuration that does not load, or that the \
daemon refuses (state_dir changed, a firewall setting nftables rejects), changes nothing: the \
running configuration stays, the reason is printed and logged at priority error, and the exit status \
is 1. This is what `systemctl reload orch` runs (ExecReload=), so a refused configuration makes the \
reload job fail. Changes that wait for a restart ([dns], the fleet connection) are printed as notes. \
It needs root or the polkit action org.orch.Orch1.manage, and gives up after 60 seconds. SIGHUP \
reloads too, but reports nothing to the sender.",
        after_help = "Examples:\n  orch check-config && orch reload\n  systemctl reload orch"
    )]
    Reload,

    /// Write orch's systemd unit, nftables drop-in and D-Bus policy
    #[command(
        long_about = crate::systemd::install::INSTALL_LONG_ABOUT,
        after_help = crate::systemd::install::INSTALL_AFTER_HELP
    )]
    InstallUnits(crate::systemd::install::InstallArgs),

    /// Remove exactly what install-units wrote
    #[command(long_about = crate::systemd::install::UNINSTALL_LONG_ABOUT)]
    UninstallUnits(crate::systemd::install::UninstallArgs),

    /// Run a log filter over a log file and report what it finds
    #[command(
        long_about = "Run FILTER over every line of LOG and report what it finds, like \
fail2ban-regex: the engine, lines read, matched, ignored (an ignoreregex matched) and missed, hits \
per failregex, and lines per second. FILTER is a built-in filter name (sshd, ...), the path of a \
native TOML filter, or a fail2ban filter reference: a filter.d .conf path, optionally with options \
as in jail.conf, e.g. /etc/fail2ban/filter.d/sshd.conf[mode=aggressive]. fail2ban filters run on \
a backtracking engine with a match limit; a line that hits the limit counts as missed. With \
--json, every failure is printed as one JSON object per line: {\"line\": N, \"host\": \"...\", \
\"user\": \"...\", \"time\": \"RFC 3339\"}, where time is null when the line has no date the \
filter reads, and the last line is the summary: {\"summary\": {\"lines\": N, \"matched\": N, ...}} \
(schema in docs/json.md). Nothing is banned.",
        after_help = "Examples:\n  orch test-filter sshd /var/log/auth.log\n  orch test-filter '/etc/fail2ban/filter.d/sshd.conf[mode=aggressive]' /var/log/auth.log\n  journalctl -u ssh -o short-iso > /tmp/ssh.log && orch test-filter sshd /tmp/ssh.log --json"
    )]
    TestFilter {
        /// A built-in filter name, a native .toml filter, or a fail2ban .conf[options] reference
        #[arg(value_name = "FILTER")]
        filter: String,
        /// The log file to read (syslog lines, or journalctl -o short-iso output)
        #[arg(value_name = "LOG")]
        log: PathBuf,
        /// One JSON object per matched line, then one with the summary
        #[arg(long)]
        json: bool,
    },

    /// Check the configuration and report every error as file:line:column
    #[command(
        long_about = "Load the configuration the daemon would load (or --config PATH) and report \
every problem as file:line:column: message, then the warnings and notes an admin should know: \
config files or hooks others could change, forgeable journal matches, fleet secrets others could \
read, the default jail. Exits 0 when the configuration is valid, 1 when it is not. With --json, \
one JSON object: {\"ok\", \"sources\", \"errors\": [{\"kind\", \"file\", \"line\", \"column\", \"message\"}], \
\"warnings\", \"notes\"} (schema in docs/json.md).",
        after_help = "Examples:\n  orch check-config\n  orch check-config --config /tmp/new.toml\n  orch check-config --json | jq -r '.errors[] | \"\\(.file):\\(.line): \\(.message)\"'"
    )]
    CheckConfig {
        /// One JSON object instead (schema: docs/json.md)
        #[arg(long)]
        json: bool,
    },

    /// Bring another tool's jails and bans over to orch (fail2ban)
    #[command(subcommand)]
    Import(crate::import::run::ImportCommand),

    /// Check or repair the ban store files in the state directory
    #[command(
        subcommand,
        long_about = "Check (`verify`) or repair (`salvage`) the ban store: the files bans.snap, \
bans.log, bans.snap.prev and bans.log.prev in the state directory. These commands read the files \
themselves rather than asking the daemon.\n\n\
At start, orch cuts a torn last record from the log (a crash mid-write; never acknowledged) and \
rebuilds a damaged snapshot from the previous snapshot and its log, on its own. It refuses to start \
when a log is damaged before records that would be lost, or when no sound snapshot is left; the \
message then names these commands."
    )]
    Store(StoreCommand),
}

/// `orch store ...`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Report every store file, its records and every problem (changes nothing)
    #[command(
        long_about = "Read every ban store file and report its size, generation, the records read \
and every problem with its byte offset: a bad or short frame, a checksum mismatch, a record that \
does not decode, a snapshot without its end marker, generations that do not fit together. A torn \
last record of the log (a crash mid-write) is shown but is not damage. The last line says what the \
next start of orch will do with these files.\n\n\
verify changes nothing and takes no lock, so it is safe while orch runs (it then says so: a record \
being appended at that moment may show as a torn tail).\n\n\
Exit status: 0 when no damage is found, 1 when the store is damaged, 2 when it cannot be read at all.",
        after_help = "Examples:\n  orch store verify\n  orch store verify --state-dir /srv/orch"
    )]
    Verify {
        /// The state directory (default: state_dir from the configuration, /var/lib/orch)
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },

    /// Rebuild the store from every valid record, with orch stopped
    #[command(
        long_about = "Rebuild a damaged ban store from every record that can still be read, then \
write it as a fresh snapshot with an empty log, so orch starts again.\n\n\
salvage reads the files as verify does. Past a damaged frame it resumes at the next frame that is \
intact: a length within bounds, a matching checksum, a record that decodes, and more intact frames \
after it (so bytes inside a damaged record are never taken for records). It uses the newest state \
the files hold: the snapshot and its log when the snapshot is sound; else the previous snapshot and \
its log when those are sound; else every readable record of the damaged snapshot, then the log. \
States are not mixed, so a lifted ban never comes back from an older file. Bans already expired are \
dropped, as at any start.\n\n\
The new snapshot is written to a temporary file, fsynced and renamed into place. Each damaged file \
is kept next to the store as <name>.damaged-<unix time>; the previous snapshot and log are removed \
(the new snapshot supersedes them). It prints what it kept and what it dropped, with byte offsets. \
A store without damage is left as it is.\n\n\
salvage takes the store's lock, so it refuses while orch runs: stop it first (systemctl stop orch), \
salvage, then start it (systemctl start orch).\n\n\
Exit status: 0 when the store was salvaged (or had no damage), 1 when it could not be.",
        after_help = "Examples:\n  systemctl stop orch && orch store salvage && systemctl start orch\n  orch store salvage --state-dir /srv/orch"
    )]
    Salvage {
        /// The state directory (default: state_dir from the configuration, /var/lib/orch)
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

impl StoreCommand {
    /// The state directory given with --state-dir, if any.
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        match self {
            StoreCommand::Verify { state_dir } | StoreCommand::Salvage { state_dir } => {
                state_dir.as_deref()
            }
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e}; use a number and unit such as 30m, 1h or 7d"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// A changing command's failure: a refusal says which polkit action the
/// command needs and what grants it.
fn changing(action: Action) -> impl Fn(zbus::Error) -> Failure {
    move |err| change_failure(action, client::classify(err, CALL_TIMEOUT))
}

/// See [`changing`].
fn change_failure(action: Action, err: ClientError) -> Failure {
    let denied = err.error_name().is_some_and(exit::is_denial);
    let mut failure = Failure::from(err);
    if denied {
        failure.message.push_str(&format!(
            "\nthis needs the polkit action {}.{ACCESS_HINT}",
            action.id()
        ));
    }
    failure
}

/// What grants a refused change, said after the refusal.
const ACCESS_HINT: &str = "\nhint: run it as root (sudo orch ...). To let someone ban and unban \
without root, add them to the group orch-admin (`usermod -aG orch-admin USER`): the polkit rule \
50-orch.rules and the bus policy org.orch.Orch1.conf (in /usr/share/polkit-1/rules.d and \
/usr/share/dbus-1/system.d from the package, in /etc from `orch install-units`) grant that group \
the actions org.orch.Orch1.ban and .unban; the allowlist and sync stay root's (or an \
administrator's, through polkit).";

/// Runs a client command (anything but `daemon` and `check-config`).
pub async fn run_client(command: &Command) -> Result<(), Failure> {
    if let Command::Sync { hooks, event, unit } = command {
        let hook_event = match (hooks, event) {
            (_, Some(event)) => Some(event.as_str()),
            (true, None) => Some("manual"),
            (false, None) => None,
        };
        return run_sync(hook_event, unit.as_deref()).await;
    }
    if let Command::Reload = command {
        return run_reload().await;
    }
    let proxy = client::connect(CALL_TIMEOUT).await?;
    let classify = |e| client::classify(e, CALL_TIMEOUT);
    match command {
        Command::Ban {
            addresses,
            from_file,
            duration,
            reason,
        } => {
            let seconds = duration.map(|d| d.as_secs().max(1)).unwrap_or(0);
            let listed = match from_file {
                Some(path) => read_address_file(path)?,
                None => Vec::new(),
            };
            let refs: Vec<&str> = addresses
                .iter()
                .chain(&listed)
                .map(String::as_str)
                .collect();
            let label = format!("banning {} addresses (one BanMany)...", refs.len());
            let started = std::time::Instant::now();
            let call = proxy.ban_many(&refs, seconds, reason);
            let count = if refs.len() >= BULK_PROGRESS_FROM {
                Progress::on_terminal().while_running(&label, call).await
            } else {
                call.await
            }
            .map_err(changing(Action::Ban))?;
            if refs.len() >= BULK_PROGRESS_FROM {
                println!("banned {count} in {:.1} s", started.elapsed().as_secs_f64());
            } else {
                println!("banned {count}");
            }
        }
        Command::Unban {
            addresses,
            fleet: true,
        } => {
            for address in addresses {
                let hosts = proxy
                    .unban_fleet(address)
                    .await
                    .map_err(changing(Action::Manage))?;
                println!("{address}: lifted here and deleted from {hosts} host(s) of the fleet");
            }
        }
        Command::Unban { addresses, .. } => {
            let mut missing = Vec::new();
            for address in addresses {
                if !proxy
                    .unban(address)
                    .await
                    .map_err(changing(Action::Unban))?
                {
                    missing.push(address.as_str());
                }
            }
            if !missing.is_empty() {
                return Err(Failure::refused(format!(
                    "not banned: {}",
                    missing.join(", ")
                )));
            }
        }
        Command::List {
            json,
            limit,
            source,
            jail,
            prefix,
        } => {
            let filter = ListFilter {
                limit: *limit,
                source: source.as_deref().or(jail.as_deref()).unwrap_or(""),
                within: prefix.as_deref().unwrap_or(""),
            };
            print_list(&proxy, *json, &filter).await.map_err(classify)?
        }
        Command::Allow { cidr, json, .. } if cidr == "list" => {
            print_allows(&proxy, *json).await.map_err(classify)?
        }
        Command::Allow {
            cidr,
            duration,
            comment,
            ..
        } => match (duration, comment) {
            (None, None) => proxy.allow(cidr).await,
            _ => {
                let seconds = duration.map_or(0, |d| d.as_secs().max(1));
                let comment = comment.as_deref().unwrap_or("");
                proxy.allow_with(cidr, seconds, comment).await
            }
        }
        .map_err(changing(Action::Allow))?,
        Command::Disallow { cidr } => proxy
            .disallow(cidr)
            .await
            .map_err(changing(Action::Allow))?,
        Command::Query { address, json } => {
            query::run(&proxy, address, *json).await.map_err(classify)?
        }
        Command::Status { jail, json } => {
            let report = status::gather(&proxy, jail.as_deref())
                .await
                .map_err(classify)?
                .map_err(Failure::refused)?;
            if *json {
                print_json(&report);
            } else {
                status::print_text(&report, jail.is_some());
            }
        }
        Command::Sync { .. }
        | Command::Reload
        | Command::Daemon
        | Command::CheckConfig { .. }
        | Command::TestFilter { .. }
        | Command::InstallUnits(_)
        | Command::UninstallUnits(_)
        | Command::Store(_)
        | Command::Import(_) => {}
    }
    Ok(())
}

/// Prints `value` as one line of JSON.
fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(text) => println!("{text}"),
        Err(err) => eprintln!("orch: cannot write JSON: {err}"),
    }
}

/// From how many addresses `orch ban` shows progress and the time taken.
const BULK_PROGRESS_FROM: usize = 10_000;

/// Reads `orch ban --from-file PATH` (`-`: stdin), showing progress on a
/// terminal.
fn read_address_file(path: &std::path::Path) -> Result<Vec<String>, Failure> {
    let progress = Progress::on_terminal();
    let show = |count: usize| progress.show(&format!("read {count} addresses..."));
    let listed = if path.as_os_str() == "-" {
        crate::addr_list::read_list(std::io::stdin().lock(), "stdin", show)
    } else {
        let name = path.display().to_string();
        let file =
            std::fs::File::open(path).map_err(|err| Failure::refused(format!("{name}: {err}")))?;
        let size = file.metadata().map_or(0, |meta| meta.len());
        let (counted, bytes_read) = progress::CountingReader::new(file);
        let bar = |_count: usize| progress.bar("reading", bytes_read.get(), size);
        crate::addr_list::read_list(std::io::BufReader::new(counted), &name, bar)
    };
    progress.clear();
    listed.map_err(|err| Failure::refused(err.to_string()))
}

/// How long `orch reload` waits: the reload re-applies the whole table,
/// and runs inside systemd's reload job, which must end.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// `orch reload`: the daemon's verdict on the configuration on disk.
async fn run_reload() -> Result<(), Failure> {
    let proxy = client::connect(RELOAD_TIMEOUT).await?;
    match proxy.reload().await {
        Ok(notes) => {
            for note in notes {
                println!("note: {}", printable(&note));
            }
            println!("configuration reloaded");
            Ok(())
        }
        Err(err) => {
            let err = client::classify(err, RELOAD_TIMEOUT);
            let refused = err.error_name() == Some("org.orch.Orch1.Error.ConfigInvalid");
            let mut failure = change_failure(Action::Manage, err);
            if refused {
                failure.message = format!(
                    "{}\nthe running configuration stays; fix the file (`orch check-config` shows \
                     every problem), then reload again",
                    failure.message
                );
            }
            Err(failure)
        }
    }
}

/// How long `orch sync` waits: it runs inside nftables.service's reload
/// job, which must end even if the daemon hangs.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// `orch sync`: a quiet no-op when there is no bus (early boot, when
/// nftables starts before D-Bus) or no daemon; the daemon applies
/// everything on its own start.
async fn run_sync(hook_event: Option<&str>, unit: Option<&str>) -> Result<(), Failure> {
    let result = match client::connect(SYNC_TIMEOUT).await {
        Ok(proxy) => match hook_event {
            Some(event) => proxy.sync_event(event, unit.unwrap_or("")).await,
            None => proxy.sync().await.map(|()| Vec::new()),
        }
        .map_err(|e| client::classify(e, SYNC_TIMEOUT)),
        Err(err) => Err(err),
    };
    match result {
        Ok(hook_rows) => {
            let failed: Vec<String> = hook_rows
                .iter()
                .filter(|(_, status)| *status != 0)
                .map(|(name, status)| format!("{name} (status {status})"))
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Failure::refused(format!(
                    "table synced, but hooks failed: {}",
                    failed.join(", ")
                )))
            }
        }
        Err(ClientError::NotRunning) => {
            warn(
                "the orch daemon is not running (nothing owns org.orch.Orch1 on the system bus): \
                 orch's table and hooks were not re-applied; start it with `systemctl start orch`",
            );
            Ok(())
        }
        Err(ClientError::NoBus(err)) => {
            warn(&format!(
                "no system bus ({err}): orch's table and hooks were not re-applied; \
                 the daemon applies everything when it starts"
            ));
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}

/// A warning on stderr. Under systemd (stderr is a journal stream) it
/// carries the `<4>` prefix, so the journal files it at priority warning,
/// where `journalctl -p warning` shows it.
fn warn(message: &str) {
    let prefix = if std::env::var_os("JOURNAL_STREAM").is_some() {
        "<4>"
    } else {
        ""
    };
    eprintln!("{prefix}orch: warning: {message}");
}

/// What `orch list` asks for.
struct ListFilter<'a> {
    limit: Option<u64>,
    source: &'a str,
    within: &'a str,
}

/// `orch list`: asks for one page at a time and prints it before asking
/// for the next, so memory stays the same for 100 bans or a million.
async fn print_list(
    proxy: &Orch1Proxy<'_>,
    json: bool,
    filter: &ListFilter<'_>,
) -> zbus::Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut left = filter.limit.unwrap_or(u64::MAX);
    let mut after = String::new();
    let mut printed = 0u64;
    let now = now_unix();
    if json {
        let _ = write!(out, "[");
    }
    while left > 0 {
        let page_limit = u32::try_from(left.min(10_000)).unwrap_or(10_000);
        let (rows, next) = proxy
            .list_bans_page(&after, page_limit, filter.source, filter.within)
            .await?;
        for (address, banned_at, expires_at, reason, source) in rows.iter().take(left as usize) {
            let written = if json {
                let row = serde_json::json!({
                    "address": address,
                    "banned_at": banned_at,
                    "expires_at": expires_at,
                    "reason": reason,
                    "source": source,
                });
                let comma = if printed == 0 { "" } else { "," };
                write!(out, "{comma}{row}")
            } else {
                if printed == 0 {
                    let _ = writeln!(
                        out,
                        "{:<40} {:<21} {:>10}  {:<10} REASON",
                        "ADDRESS", "EXPIRES", "REMAINING", "SOURCE"
                    );
                }
                let remaining =
                    humantime::format_duration(Duration::from_secs(expires_at.saturating_sub(now)));
                let (address, source, reason) =
                    (printable(address), printable(source), printable(reason));
                writeln!(
                    out,
                    "{address:<40} {:<21} {:>10}  {source:<10} {reason}",
                    rfc3339(*expires_at),
                    remaining.to_string()
                )
            };
            if written.is_err() {
                // The reader went away (`orch list | head`): stop quietly.
                return Ok(());
            }
            printed += 1;
        }
        left = left.saturating_sub(rows.len() as u64);
        if next.is_empty() {
            break;
        }
        after = next;
    }
    if json {
        let _ = writeln!(out, "]");
    } else if printed == 0 && filter.source.is_empty() && filter.within.is_empty() {
        let _ = writeln!(out, "no active bans");
    } else if printed == 0 {
        let _ = writeln!(out, "no active bans match");
    }
    let _ = out.flush();
    Ok(())
}

async fn print_allows(proxy: &Orch1Proxy<'_>, json: bool) -> zbus::Result<()> {
    let rows = proxy.list_allows().await?;
    if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|(entry, kind, name, expires_at)| {
                // A runtime row's third column is its comment.
                let (name, comment) = if kind == "runtime" { ("", name.as_str()) } else { (name.as_str(), "") };
                serde_json::json!({"entry": entry, "kind": kind, "name": name, "comment": comment, "expires_at": expires_at})
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        println!("the allowlist is empty");
        return Ok(());
    }
    println!(
        "{:<40} {:<8} {:<30} EXPIRES",
        "ENTRY", "KIND", "DNS NAME / COMMENT"
    );
    for (entry, kind, name, expires_at) in &rows {
        let (entry, kind, name) = (printable(entry), printable(kind), printable(name));
        let expires = if *expires_at == 0 {
            "-".to_string()
        } else {
            rfc3339(*expires_at)
        };
        let entry = if entry.is_empty() {
            "(no address yet)"
        } else {
            &entry
        };
        println!("{entry:<40} {kind:<8} {name:<30} {expires}");
    }
    Ok(())
}
