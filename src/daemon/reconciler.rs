//! The reconciler: the one place that turns orch's desired state (the
//! store's bans plus the allowlist) into kernel changes.
//!
//! It holds the [`Firewall`] handle. It never decides whether a ban is
//! allowed (the core does) and never persists anything (the store does).

use std::time::Instant;

use std::net::IpAddr;

use ipnet::IpNet;

use std::collections::HashMap;
use std::sync::Arc;

use crate::firewall::monitor::KernelEvent;
use crate::firewall::script::PortScope;
use crate::firewall::{
    AllowTimeouts, DnsElements, Firewall, FirewallError, FirewallStatus, TableContents,
    TimedElement,
};
use crate::memory::release_freed_memory;
use crate::store::{BanRecord, Store};

/// When and why the table was last fully re-applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncInfo {
    pub at_unix: u64,
    pub cause: String,
    pub duration_ms: u64,
    pub bans_applied: usize,
}

pub struct Reconciler {
    firewall: Firewall,
    last_sync: Option<SyncInfo>,
    /// Port scopes by ban source (jail name); other sources ban every port.
    scopes: HashMap<String, Arc<PortScope>>,
}

/// Above this many elements a full apply has used enough transient memory
/// (nft's parse tree) that it is worth handing it back to the system.
pub(super) const TRIM_AFTER_ELEMENTS: usize = 10_000;

/// What the DNS allow names resolve to now, with absolute expiries: for
/// names on every port, and for names limited to some ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsAllows {
    pub any_port: Vec<(IpAddr, u64)>,
    pub by_port: Vec<(IpAddr, u16, u64)>,
}

impl DnsAllows {
    /// Every address still allowed at `now`, on some port or all.
    pub fn addresses(&self, now: u64) -> impl Iterator<Item = IpAddr> + '_ {
        let any = self
            .any_port
            .iter()
            .filter(move |(_, e)| *e > now)
            .map(|(a, _)| *a);
        let some = self
            .by_port
            .iter()
            .filter(move |(_, _, e)| *e > now)
            .map(|(a, _, _)| *a);
        any.chain(some)
    }

    /// The kernel elements still valid at `now`.
    fn elements(&self, now: u64) -> DnsElements {
        let timed = |addr: &IpAddr, expires: u64| {
            TimedElement::every_port(IpNet::from(*addr), expires - now)
        };
        DnsElements {
            any_port: self
                .any_port
                .iter()
                .filter(|(_, expires)| *expires > now)
                .map(|(addr, expires)| timed(addr, *expires))
                .collect(),
            by_port: self
                .by_port
                .iter()
                .filter(|(_, _, expires)| *expires > now)
                .map(|(addr, port, expires)| (timed(addr, *expires), *port))
                .collect(),
        }
    }
}

impl Reconciler {
    pub fn new(firewall: Firewall) -> Self {
        Reconciler {
            firewall,
            last_sync: None,
            scopes: HashMap::new(),
        }
    }

    /// Which ban sources (jail names) ban only some ports. Takes effect for
    /// changes from now on; the caller re-syncs to move existing bans.
    pub fn set_port_scopes(&mut self, scopes: HashMap<String, Arc<PortScope>>) {
        self.scopes = scopes;
    }

    /// The kernel element(s) of a stored ban: its remaining time, on the
    /// ports of its source's scope, or on every port.
    pub fn element(&self, record: &BanRecord, now: u64) -> TimedElement {
        TimedElement {
            net: record.net,
            timeout_secs: record.expires.saturating_sub(now).max(1),
            scope: self.scopes.get(&*record.source).cloned(),
        }
    }

    /// Re-applies the whole table from the store in one transaction.
    pub fn sync_all(
        &mut self,
        store: &Store,
        allows: &[IpNet],
        allow_timeouts: &AllowTimeouts,
        dns_allows: &DnsAllows,
        now: u64,
        cause: &str,
    ) -> Result<SyncInfo, FirewallError> {
        let started = Instant::now();
        let bans: Vec<TimedElement> = store
            .bans()
            .filter(|record| record.expires > now)
            .map(|record| self.element(record, now))
            .collect();
        let dns = dns_allows.elements(now);
        let result = self.firewall.apply_full(&TableContents {
            allows,
            allow_timeouts,
            dns_allows: &dns,
            bans: &bans,
        });
        let applied = bans.len();
        drop(bans);
        if applied >= TRIM_AFTER_ELEMENTS {
            release_freed_memory();
        }
        result?;
        let info = SyncInfo {
            at_unix: now,
            cause: cause.to_string(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bans_applied: applied,
        };
        tracing::info!(cause, bans = applied, ms = info.duration_ms, "table synced");
        self.last_sync = Some(info.clone());
        Ok(info)
    }

    /// Puts freshly stored bans into the kernel: `added` are new,
    /// `replaced` pairs an earlier ban of the same network with the new one,
    /// whose element must get the new timeout (or move, when the two bans
    /// cover different ports).
    pub fn apply_bans(
        &mut self,
        added: &[BanRecord],
        replaced: &[(BanRecord, BanRecord)],
        now: u64,
    ) -> Result<(), FirewallError> {
        let mut add: Vec<TimedElement> = added.iter().map(|r| self.element(r, now)).collect();
        let mut retime = Vec::new();
        let mut moved_from = Vec::new();
        for (previous, record) in replaced {
            let (old, new) = (self.element(previous, now), self.element(record, now));
            if old.scope == new.scope {
                retime.push(new);
            } else {
                moved_from.push(old);
                add.push(new);
            }
        }
        self.firewall.remove_bans(&moved_from)?;
        self.firewall.add_bans(&add)?;
        self.firewall.replace_bans(&retime)
    }

    /// Cheap self-check: the table and chains exist and a few stored bans
    /// (not about to expire) are in the kernel. `probe_offset` varies which.
    pub fn is_intact(&mut self, store: &Store, now: u64, probe_offset: usize) -> bool {
        const SAMPLES: usize = 8;
        let count = store.ban_count();
        let skip = if count == 0 { 0 } else { probe_offset % count };
        let samples: Vec<TimedElement> = store
            .bans()
            .skip(skip)
            .chain(store.bans().take(skip))
            .filter(|record| record.expires > now + 5)
            .take(SAMPLES)
            .map(|record| self.element(record, now))
            .collect();
        self.firewall.is_intact(&samples)
    }

    /// Swaps in a firewall built from a new config. The old table is
    /// deleted first when it was unowned (an owned one goes with its
    /// context when the old firewall is dropped).
    pub fn replace_firewall(&mut self, firewall: Firewall) {
        if !self.firewall.status().owned
            && self.firewall.table() != firewall.table()
            && let Err(err) = self.firewall.delete_table()
        {
            tracing::warn!(
                "cannot delete the old table {}: {err}",
                self.firewall.table()
            );
        }
        let switch = self.firewall.take_notification_switch();
        self.firewall = firewall;
        self.firewall.set_notification_switch(switch);
    }

    /// See [`Firewall::take_unheard`].
    pub fn take_unheard(&mut self) -> Vec<KernelEvent> {
        self.firewall.take_unheard()
    }

    /// Takes these stored bans out of the kernel.
    pub fn remove_bans(&mut self, records: &[BanRecord], now: u64) -> Result<(), FirewallError> {
        let elements: Vec<TimedElement> = records.iter().map(|r| self.element(r, now)).collect();
        self.firewall.remove_bans(&elements)
    }

    /// Swaps the DNS allow sets for these addresses (absolute expiries).
    pub fn set_dns_allows(
        &mut self,
        dns_allows: &DnsAllows,
        now: u64,
    ) -> Result<(), FirewallError> {
        self.firewall.replace_dns_allows(&dns_allows.elements(now))
    }

    pub fn set_allows(
        &mut self,
        allows: &[IpNet],
        timeouts: &AllowTimeouts,
    ) -> Result<(), FirewallError> {
        self.firewall.replace_allows(allows, timeouts)
    }

    pub fn firewall_status(&self) -> FirewallStatus {
        self.firewall.status()
    }

    pub fn last_sync(&self) -> Option<&SyncInfo> {
        self.last_sync.as_ref()
    }

    pub fn table(&self) -> &str {
        self.firewall.table()
    }
}
