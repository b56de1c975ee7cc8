//! orch's nftables table: what it should hold (`script`), and the two ways
//! of getting a script into the kernel (`libnft`, `nft_cli`).
//!
//! [`Firewall`] is the only handle that changes the kernel, and only the
//! daemon's reconciler holds one. It knows nothing about the store or about
//! why a ban exists: it is told which elements to add or remove.

mod libnft;
pub mod monitor;
mod netlink;
mod nft_cli;
pub mod probe;
#[cfg(test)]
pub mod recording;
pub mod script;

use ipnet::IpNet;

use crate::config::{FirewallConfig, OwnerMode};
pub use libnft::LibNftExecutor;
use monitor::{KernelEvent, NotificationSwitch};
pub use nft_cli::NftCliExecutor;
use probe::Snapshot;
pub use script::{AllowTimeouts, DnsElements, Ownership, TableContents, TableLayout, TimedElement};

/// What can go wrong getting a script into the kernel.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("libnftables is not usable: {0}")]
    LibraryUnavailable(String),
    #[error("nftables refused the change: {0}")]
    Refused(String),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs one nft script as one transaction.
pub trait Executor: Send {
    fn run(&mut self, script: &str) -> Result<(), FirewallError>;
    /// "libnftables" or "nft", for `orch status`.
    fn name(&self) -> &'static str;
}

/// What `orch status` reports about the firewall backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallStatus {
    pub backend: &'static str,
    pub owned: bool,
    pub persist: bool,
}

/// orch's table in the kernel, driven through one executor.
pub struct Firewall {
    executor: Box<dyn Executor>,
    layout: TableLayout,
    /// Table flags to try, best first, until one full apply succeeds.
    ownership_candidates: Vec<Ownership>,
    /// The flags in force since the last successful full apply.
    ownership: Option<Ownership>,
    /// Pauses the daemon's kernel monitor during bulk changes.
    notifications: Option<NotificationSwitch>,
    /// What the kernel monitor would have reported about other processes'
    /// commits while it was paused.
    unheard: Vec<KernelEvent>,
}

/// Changes of at least this many elements run with the kernel monitor's
/// notifications paused. A pause costs two setsockopt calls and two small
/// netlink queries (well under a millisecond); notifying costs the kernel
/// a message per element, some microseconds each.
const PAUSE_NOTIFICATIONS_FROM: usize = 100;

impl Firewall {
    /// Picks the executor for `config.owner`: libnftables for an owned
    /// table (required with `on`, preferred with `auto`), the `nft` binary
    /// otherwise.
    pub fn open(config: &FirewallConfig) -> Result<Firewall, FirewallError> {
        let layout = TableLayout::from(config);
        let owned_first = vec![Ownership::OwnedPersist, Ownership::Owned];
        let (executor, candidates): (Box<dyn Executor>, Vec<Ownership>) = match config.owner {
            OwnerMode::Off => (Box::new(NftCliExecutor::new()), vec![Ownership::Unowned]),
            OwnerMode::On => (Box::new(LibNftExecutor::open()?), owned_first),
            OwnerMode::Auto => match LibNftExecutor::open() {
                Ok(executor) => {
                    let mut candidates = owned_first;
                    candidates.push(Ownership::Unowned);
                    (Box::new(executor), candidates)
                }
                Err(err) => {
                    tracing::warn!("{err}; falling back to the nft binary with an unowned table");
                    (Box::new(NftCliExecutor::new()), vec![Ownership::Unowned])
                }
            },
        };
        Ok(Self::with_executor(executor, layout, candidates))
    }

    /// A firewall over any executor, trying `ownership_candidates` in order.
    pub fn with_executor(
        executor: Box<dyn Executor>,
        layout: TableLayout,
        ownership_candidates: Vec<Ownership>,
    ) -> Self {
        Firewall {
            executor,
            layout,
            ownership_candidates,
            ownership: None,
            notifications: None,
            unheard: Vec::new(),
        }
    }

    /// Lets bulk changes pause the kernel monitor (see
    /// [`NotificationSwitch`]).
    pub fn set_notification_switch(&mut self, switch: Option<NotificationSwitch>) {
        self.notifications = switch;
    }

    pub fn take_notification_switch(&mut self) -> Option<NotificationSwitch> {
        self.notifications.take()
    }

    /// The events the kernel monitor missed while a bulk change paused it
    /// (empty when no other process committed meanwhile). Taking them
    /// clears them.
    pub fn take_unheard(&mut self) -> Vec<KernelEvent> {
        std::mem::take(&mut self.unheard)
    }

    /// Runs one script changing `elements` set elements, with the kernel
    /// monitor paused when that is many.
    fn run(&mut self, script: &str, elements: usize) -> Result<(), FirewallError> {
        let Some(switch) = self
            .notifications
            .as_ref()
            .filter(|_| elements >= PAUSE_NOTIFICATIONS_FROM)
        else {
            return self.executor.run(script);
        };
        // Look before pausing and after resuming: a commit in between that
        // is not ours went unheard. Our own adds one to the generation.
        let before = Snapshot::take();
        if let Err(err) = switch.pause() {
            tracing::debug!("cannot pause nftables notifications: {err}");
            return self.executor.run(script);
        }
        let result = self.executor.run(script);
        if let Err(err) = switch.resume() {
            tracing::error!("cannot resume nftables notifications: {err}");
        }
        match (before, Snapshot::take()) {
            (Ok(before), Ok(after)) => self
                .unheard
                .extend(after.unheard_since(&before, &self.layout.table)),
            (Err(err), _) | (_, Err(err)) => {
                tracing::debug!("cannot compare nftables before and after a bulk change: {err}");
                self.unheard.push(KernelEvent::Unheard);
            }
        }
        result
    }

    /// Replaces the whole table, in one transaction, with these contents.
    /// The first call settles which table flags this kernel and nftables
    /// accept; later calls reuse them.
    pub fn apply_full(&mut self, contents: &TableContents<'_>) -> Result<(), FirewallError> {
        let ownership = self.settle_ownership()?;
        let script = self.layout.full_table(ownership, contents);
        self.run(&script, contents.bans.len())
    }

    /// Replaces the DNS allow sets in one transaction.
    pub fn replace_dns_allows(&mut self, elements: &DnsElements) -> Result<(), FirewallError> {
        self.executor.run(&self.layout.replace_dns_allows(elements))
    }

    /// Finds the best table flags this kernel and nftables accept, once, by
    /// creating and deleting a throwaway table in one transaction (nothing
    /// changes). Probing with the real table would make nft parse a script
    /// of every ban for each refused candidate.
    fn settle_ownership(&mut self) -> Result<Ownership, FirewallError> {
        if let Some(settled) = self.ownership {
            return Ok(settled);
        }
        let probe_table = format!("{}_probe_{}", self.layout.table, std::process::id());
        let mut last_error = None;
        for candidate in self.ownership_candidates.clone() {
            match self
                .executor
                .run(&script::ownership_probe(&probe_table, candidate))
            {
                Ok(()) => {
                    tracing::info!(backend = self.executor.name(), ownership = ?candidate, "table flags settled for {}", self.layout.table);
                    self.ownership = Some(candidate);
                    return Ok(candidate);
                }
                Err(err) => {
                    tracing::debug!(ownership = ?candidate, "table flags refused: {err}");
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| FirewallError::Refused("no table flags to try".into())))
    }

    /// Adds (or refreshes) ban elements with their timeouts.
    pub fn add_bans(&mut self, bans: &[TimedElement]) -> Result<(), FirewallError> {
        if bans.is_empty() {
            return Ok(());
        }
        self.run(&self.layout.add_bans(bans), bans.len())
    }

    /// Replaces existing ban elements: removes them and adds them back with
    /// new timeouts in one transaction (a plain re-add does not change the
    /// timeout on kernels before 6.12).
    pub fn replace_bans(&mut self, bans: &[TimedElement]) -> Result<(), FirewallError> {
        if bans.is_empty() {
            return Ok(());
        }
        let mut script = self.layout.remove_bans(bans);
        script.push_str(&self.layout.add_bans(bans));
        self.run(&script, bans.len())
    }

    /// Removes ban elements; elements the kernel already expired are fine.
    pub fn remove_bans(&mut self, bans: &[TimedElement]) -> Result<(), FirewallError> {
        if bans.is_empty() {
            return Ok(());
        }
        self.run(&self.layout.remove_bans(bans), bans.len())
    }

    /// Replaces the allow sets with `allows`, those that end with their
    /// timeouts.
    pub fn replace_allows(
        &mut self,
        allows: &[IpNet],
        timeouts: &AllowTimeouts,
    ) -> Result<(), FirewallError> {
        self.executor
            .run(&self.layout.replace_allows(allows, timeouts))
    }

    /// True when the table, its chains with all their rules, and the
    /// sampled ban elements are in the kernel. Asks the kernel directly
    /// (see `probe`), so it never fetches the big sets, whichever executor
    /// writes the table.
    pub fn is_intact(&mut self, sample_bans: &[TimedElement]) -> bool {
        if self.ownership.is_none() {
            return false;
        }
        match probe::find_missing(&self.layout.intact_check(sample_bans)) {
            Ok(None) => true,
            Ok(Some(missing)) => {
                tracing::info!("self-check: {missing}");
                false
            }
            Err(err) => {
                tracing::warn!("self-check: cannot query the kernel: {err}");
                false
            }
        }
    }

    /// Deletes orch's table (used when a config reload renames it).
    pub fn delete_table(&mut self) -> Result<(), FirewallError> {
        self.executor.run(&self.layout.delete_table())
    }

    pub fn layout(&self) -> &TableLayout {
        &self.layout
    }

    pub fn status(&self) -> FirewallStatus {
        FirewallStatus {
            backend: self.executor.name(),
            owned: matches!(
                self.ownership,
                Some(Ownership::Owned | Ownership::OwnedPersist)
            ),
            persist: self.ownership == Some(Ownership::OwnedPersist),
        }
    }

    pub fn table(&self) -> &str {
        &self.layout.table
    }
}

/// Shortens nft's error text for logs and D-Bus replies: nft echoes the
/// offending input line, which can hold 100k elements.
pub(crate) fn summarise_nft_error(message: &str) -> String {
    const MAX_LINE: usize = 240;
    let lines: Vec<String> = message
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('^'))
        .take(4)
        .map(|line| {
            if line.len() > MAX_LINE {
                let mut cut = MAX_LINE;
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}…", &line[..cut])
            } else {
                line.to_string()
            }
        })
        .collect();
    if lines.is_empty() {
        "unknown error (nft printed nothing)".into()
    } else {
        lines.join(" | ")
    }
}
