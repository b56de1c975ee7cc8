//! Dynamic DNS allowlist: resolving the configured names, and the pure state
//! machine that decides which addresses are allowed until when.
//!
//! [`Resolver`] asks DNS (hickory-resolver, so the answers carry their TTLs)
//! for the A and/or AAAA records of one name, following CNAMEs.
//! [`DnsAllowState`] takes those answers, with the time passed in as Unix
//! seconds, and says which names are due for resolution, which addresses
//! are allowed with what absolute expiry, and what `orch allow list` shows.
//! It does no I/O; `daemon/dns_refresh.rs` drives it and the core writes its
//! [`DnsAllowState::elements`] into `dnsallow4`/`dnsallow6`.
//!
//! The rules (see "DNS allow" in `docs/design.md`):
//! - an address from a successful answer expires at
//!   `now + clamp(TTL, min_ttl, max_ttl) + grace`, and its name is due again at
//!   `now + clamp(TTL, min_ttl, max_ttl)`, so the refresh happens while the
//!   grace still runs;
//! - a new answer replaces the name's addresses (NXDOMAIN/NODATA: none);
//! - an address shared by names is allowed until the latest of their expiries;
//! - a failed resolution keeps the last good addresses, extended until the
//!   retry plus grace, but never beyond `stale_max` after the last success.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

/// Which address families one name is resolved for.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsFamily {
    /// A and AAAA.
    Any,
    /// A only.
    Ipv4,
    /// AAAA only.
    Ipv6,
}

/// One `[[dns.allow]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsAllowEntry {
    /// The name as configured; resolved as a fully qualified name (no
    /// search domains).
    pub name: String,
    pub family: DnsFamily,
    /// Lower bound for the TTL used (default 30 s).
    pub min_ttl: Duration,
    /// Upper bound for the TTL used (default 1 h).
    pub max_ttl: Duration,
    /// Only these destination ports (TCP, UDP, SCTP); empty = every port.
    pub ports: Vec<u16>,
}

/// The `[dns]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// Servers to ask (UDP and TCP, port included); empty means
    /// `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// How long after the last successful resolution the last good addresses
    /// are kept while resolution fails (default 1 day).
    pub stale_max: Duration,
    /// Added to every kernel timeout, so the refresh at the TTL has time to
    /// land before the element expires (default 30 s).
    pub grace: Duration,
    pub entries: Vec<DnsAllowEntry>,
}

/// Why a name could not be resolved. NXDOMAIN and NODATA are not errors:
/// they resolve to no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The resolver could not be built (e.g. unreadable `/etc/resolv.conf`).
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(String),
    /// A query failed: timeout, SERVFAIL, REFUSED, network error.
    #[error("{0}")]
    Failed(String),
}

/// Per-query timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries per query: a dead server fails a query after about
/// `QUERY_TRIES * QUERY_TIMEOUT`.
const QUERY_TRIES: usize = 2;
/// Hard bound on one [`Resolver::resolve`] call, whatever the server count.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(10);

/// Resolves names against `/etc/resolv.conf` or the configured servers,
/// reporting each address with its TTL. Answers are not cached: every call
/// asks the server, so the TTLs are the server's.
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver asking `servers` (UDP, falling back to TCP for truncated
    /// answers), or the servers in `/etc/resolv.conf` when empty.
    /// `/etc/hosts` is not consulted: its entries carry no TTL.
    pub fn new(servers: &[SocketAddr]) -> Result<Resolver, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| DnsError::Setup(e.to_string()))?
        } else {
            let name_servers = servers
                .iter()
                .map(|server| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                provider,
            )
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = QUERY_TIMEOUT;
        // hickory's `attempts` counts retries after the first try.
        options.attempts = QUERY_TRIES - 1;
        // Capacity 0: nothing stays cached, so each call sees the server's TTL.
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        options.preserve_intermediates = true;
        let inner = builder
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// Resolves `name`'s A and/or AAAA records (per `family`, both queries
    /// at once), following CNAMEs. Each address comes with the smallest TTL
    /// on its chain (the address record's and every CNAME's). NXDOMAIN and
    /// NODATA give an empty list; a failed query of either family fails the
    /// whole call.
    pub async fn resolve(
        &self,
        name: &str,
        family: &DnsFamily,
    ) -> Result<Vec<(IpAddr, Duration)>, DnsError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let want_v4 = matches!(family, DnsFamily::Any | DnsFamily::Ipv4);
        let want_v6 = matches!(family, DnsFamily::Any | DnsFamily::Ipv6);
        let both = async {
            tokio::join!(
                self.lookup(&fqdn, RecordType::A, want_v4),
                self.lookup(&fqdn, RecordType::AAAA, want_v6),
            )
        };
        let (v4, v6) = tokio::time::timeout(RESOLVE_DEADLINE, both)
            .await
            .map_err(|_| {
                DnsError::Failed(format!(
                    "{name}: no answer within {} s",
                    RESOLVE_DEADLINE.as_secs()
                ))
            })?;
        let mut addresses = v4?;
        addresses.extend(v6?);
        Ok(addresses)
    }

    /// One query; `Ok(empty)` without asking when `wanted` is false.
    async fn lookup(
        &self,
        fqdn: &str,
        record_type: RecordType,
        wanted: bool,
    ) -> Result<Vec<(IpAddr, Duration)>, DnsError> {
        if !wanted {
            return Ok(Vec::new());
        }
        let lookup = match self.inner.lookup(fqdn, record_type).await {
            Ok(lookup) => lookup,
            Err(err) if err.is_no_records_found() => return Ok(Vec::new()),
            Err(err) => {
                let name = fqdn.trim_end_matches('.');
                return Err(DnsError::Failed(format!("{name} {record_type}: {err}")));
            }
        };
        let answers = lookup.answers();
        let chain_ttl = answers
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .map(|r| r.ttl)
            .min()
            .unwrap_or(u32::MAX);
        let mut addresses: Vec<(IpAddr, Duration)> = Vec::new();
        for record in answers {
            let addr = match (&record.data, record_type) {
                (RData::A(a), RecordType::A) => IpAddr::V4(a.0),
                (RData::AAAA(aaaa), RecordType::AAAA) => IpAddr::V6(aaaa.0),
                _ => continue,
            };
            let ttl = Duration::from_secs(u64::from(record.ttl.min(chain_ttl)));
            addresses.push((addr, ttl));
        }
        Ok(addresses)
    }
}

/// What `orch allow list` shows for one name.
#[derive(Debug, Clone, PartialEq)]
pub struct NameReport {
    pub name: String,
    /// "A" or "AAAA": each family is resolved and judged on its own.
    pub family: &'static str,
    /// The name's allowed addresses with their expiry (Unix seconds).
    pub addresses: Vec<(IpAddr, u64)>,
    /// When the name last resolved (an empty answer counts).
    pub last_success: Option<u64>,
    /// The error of the current failure streak, if resolution is failing.
    pub last_error: Option<String>,
}

/// Most addresses one name may allow; an answer with more keeps the first
/// this many in address order (a DNS server, or whoever spoofs it, must not
/// open the firewall to a whole range through one name).
pub const MAX_ADDRESSES_PER_NAME: usize = 32;

/// Whether a DNS answer's address may be allowed: never the unspecified
/// address, loopback, link-local, multicast or broadcast (an allow entry
/// is checked before every ban, so such an answer would exempt this host's
/// own plumbing from the firewall).
pub fn allowable(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 0)
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            let mapped = v6.to_ipv4_mapped().is_some();
            !(v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() || link_local || mapped)
        }
    }
}

/// Keeps the allowable addresses of an answer, at most
/// [`MAX_ADDRESSES_PER_NAME`]; says what was dropped, for the log.
fn screen_answer(answer: Vec<(IpAddr, Duration)>) -> (Vec<(IpAddr, Duration)>, Vec<IpAddr>, usize) {
    let (kept, refused): (Vec<_>, Vec<_>) =
        answer.into_iter().partition(|(addr, _)| allowable(addr));
    // The first addresses in address order; an address listed twice keeps
    // both records (their TTLs both count).
    let distinct: std::collections::BTreeSet<IpAddr> = kept.iter().map(|(addr, _)| *addr).collect();
    let over = distinct.len().saturating_sub(MAX_ADDRESSES_PER_NAME);
    let chosen: std::collections::BTreeSet<IpAddr> =
        distinct.into_iter().take(MAX_ADDRESSES_PER_NAME).collect();
    let kept = kept
        .into_iter()
        .filter(|(addr, _)| chosen.contains(addr))
        .collect();
    (
        kept,
        refused.into_iter().map(|(addr, _)| addr).collect(),
        over,
    )
}

/// The shortest time between two resolutions of one name, whatever its TTL
/// and `min_ttl`.
const MIN_REFRESH_SECS: u64 = 1;
/// Upper bound for the retry interval after a failure.
const MAX_RETRY_SECS: u64 = 30;

/// One name's state.
#[derive(Debug, Clone)]
struct NameState {
    name: String,
    /// The one family this state resolves (an entry for both families
    /// has one state each, so a failing AAAA query never costs the name
    /// its A addresses, and each keeps its own last good answer).
    family: DnsFamily,
    min_ttl: u64,
    max_ttl: u64,
    /// Only these destination ports; empty = every port.
    ports: Vec<u16>,
    /// Allowed addresses and their expiry (Unix seconds).
    addresses: BTreeMap<IpAddr, u64>,
    /// When the name is to be resolved next.
    next_due: u64,
    last_success: Option<u64>,
    last_error: Option<String>,
}

impl NameState {
    /// `ttl` clamped to the entry's bounds (never below [`MIN_REFRESH_SECS`]):
    /// how long until the name is resolved again.
    fn refresh_after(&self, ttl: Duration) -> u64 {
        ttl.as_secs()
            .max(self.min_ttl)
            .min(self.max_ttl)
            .max(MIN_REFRESH_SECS)
    }

    fn retry_after(&self) -> u64 {
        self.min_ttl.clamp(MIN_REFRESH_SECS, MAX_RETRY_SECS)
    }

    /// Applies one resolution result of this name and family.
    fn record(
        &mut self,
        result: Result<Vec<(IpAddr, Duration)>, DnsError>,
        now: u64,
        stale_max: u64,
        grace: u64,
    ) {
        let state = self;
        let name = state.name.clone();
        let name = name.as_str();
        match result {
            Ok(answer) => {
                let (answer, refused, over) = screen_answer(answer);
                if !refused.is_empty() {
                    tracing::warn!(
                        name,
                        "{name}: not allowing {} address(es) no DNS name may allow: {}",
                        refused.len(),
                        refused
                            .iter()
                            .take(8)
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                if over > 0 {
                    tracing::warn!(
                        name,
                        "{name}: the answer holds {over} address(es) more than the {MAX_ADDRESSES_PER_NAME} one name may allow; the rest are left out"
                    );
                }
                if let Some(err) = state.last_error.take() {
                    tracing::info!(
                        name,
                        "{name} resolves again ({} addresses) after: {err}",
                        answer.len()
                    );
                }
                let mut addresses: BTreeMap<IpAddr, u64> = BTreeMap::new();
                let mut next = None::<u64>;
                for (addr, ttl) in answer {
                    let after = state.refresh_after(ttl);
                    next = Some(next.map_or(after, |n| n.min(after)));
                    let expiry = now.saturating_add(after).saturating_add(grace);
                    let slot = addresses.entry(addr).or_insert(expiry);
                    *slot = (*slot).max(expiry);
                }
                // No records: ask again after min_ttl.
                let next = next.unwrap_or_else(|| state.refresh_after(Duration::ZERO));
                state.addresses = addresses;
                state.next_due = now.saturating_add(next);
                state.last_success = Some(now);
            }
            Err(err) => {
                let retry = state.retry_after();
                state.next_due = now.saturating_add(retry);
                if state.last_error.is_none() {
                    tracing::warn!(
                        name,
                        "cannot resolve {name}: {err}; keeping its last good addresses \
                         (at most {stale_max} s after the last success), retrying every {retry} s"
                    );
                }
                state.last_error = Some(err.to_string());
                if let Some(last_success) = state.last_success {
                    let limit = last_success.saturating_add(stale_max);
                    let extended = now.saturating_add(retry).saturating_add(grace).min(limit);
                    for expiry in state.addresses.values_mut() {
                        *expiry = (*expiry).max(extended);
                    }
                    if limit <= now && !state.addresses.is_empty() {
                        tracing::warn!(
                            name,
                            "dropping {name}'s last good addresses: no successful resolution \
                             for {stale_max} s"
                        );
                    }
                }
                state.addresses.retain(|_, expiry| *expiry > now);
            }
        }
    }
}

/// The DNS allow state machine: no I/O, time passed in as Unix seconds.
#[derive(Debug, Clone)]
pub struct DnsAllowState {
    names: Vec<NameState>,
    stale_max: u64,
    grace: u64,
}

/// Whole seconds, rounded up (config durations may carry milliseconds).
fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The single families an entry's family stands for.
fn single_families(family: &DnsFamily) -> &'static [DnsFamily] {
    match family {
        DnsFamily::Any => &[DnsFamily::Ipv4, DnsFamily::Ipv6],
        DnsFamily::Ipv4 => &[DnsFamily::Ipv4],
        DnsFamily::Ipv6 => &[DnsFamily::Ipv6],
    }
}

/// Whether `addr` belongs to the single family `family`.
fn in_family(addr: &IpAddr, family: &DnsFamily) -> bool {
    match family {
        DnsFamily::Ipv4 => addr.is_ipv4(),
        DnsFamily::Ipv6 => addr.is_ipv6(),
        DnsFamily::Any => true,
    }
}

impl DnsAllowState {
    /// All configured names, each due at once. A name listed twice keeps
    /// its first entry.
    pub fn new(settings: &DnsSettings) -> Self {
        let mut names: Vec<NameState> = Vec::new();
        for entry in &settings.entries {
            if names.iter().any(|n| n.name == entry.name) {
                continue;
            }
            for family in single_families(&entry.family) {
                names.push(NameState {
                    name: entry.name.clone(),
                    family: family.clone(),
                    min_ttl: secs_ceil(entry.min_ttl),
                    max_ttl: secs_ceil(entry.max_ttl),
                    ports: entry.ports.clone(),
                    addresses: BTreeMap::new(),
                    next_due: 0,
                    last_success: None,
                    last_error: None,
                });
            }
        }
        DnsAllowState {
            names,
            stale_max: secs_ceil(settings.stale_max),
            grace: secs_ceil(settings.grace),
        }
    }

    /// Names due for (re)resolution at `now`, in config order (initially:
    /// all).
    pub fn due(&self, now: u64) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (name, _) in self.due_families(now) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Each (name, single family) due at `now`, in config order.
    pub fn due_families(&self, now: u64) -> Vec<(String, DnsFamily)> {
        self.names
            .iter()
            .filter(|n| n.next_due <= now)
            .map(|n| (n.name.clone(), n.family.clone()))
            .collect()
    }

    /// Seconds until the next name is due (0 if one is due now; None if no
    /// entries).
    pub fn next_due_in(&self, now: u64) -> Option<u64> {
        self.names
            .iter()
            .map(|n| n.next_due.saturating_sub(now))
            .min()
    }

    /// Records a resolution result for `name` (ignored for an unknown name).
    /// Returns true if [`Self::elements`] changed (an address came or went,
    /// or an expiry moved), so the caller should apply them again. Every
    /// successful refresh moves the expiries, and must reach the kernel for
    /// the elements to outlive their current timeout.
    pub fn record(
        &mut self,
        name: &str,
        result: Result<Vec<(IpAddr, Duration)>, DnsError>,
        now: u64,
    ) -> bool {
        let families: Vec<DnsFamily> = self
            .names
            .iter()
            .filter(|n| n.name == name)
            .map(|n| n.family.clone())
            .collect();
        if families.is_empty() {
            tracing::debug!(name, "DNS result for a name not configured; ignored");
            return false;
        }
        let mut changed = false;
        for family in families {
            let of_family = result.clone().map(|answer| {
                answer
                    .into_iter()
                    .filter(|(addr, _)| in_family(addr, &family))
                    .collect()
            });
            changed |= self.record_family(name, &family, of_family, now);
        }
        changed
    }

    /// Records one family's resolution result for `name`: its own
    /// addresses, last good answer and retry schedule. Returns true if
    /// [`Self::elements`] changed.
    pub fn record_family(
        &mut self,
        name: &str,
        family: &DnsFamily,
        result: Result<Vec<(IpAddr, Duration)>, DnsError>,
        now: u64,
    ) -> bool {
        let before = (self.elements(now), self.port_elements(now));
        let (stale_max, grace) = (self.stale_max, self.grace);
        let Some(state) = self
            .names
            .iter_mut()
            .find(|n| n.name == name && &n.family == family)
        else {
            tracing::debug!(name, "DNS result for a name not configured; ignored");
            return false;
        };
        state.record(result, now, stale_max, grace);
        (self.elements(now), self.port_elements(now)) != before
    }

    /// Desired kernel elements: every allowed address with its absolute
    /// expiry (Unix seconds, always after `now`), the latest over the names
    /// that have it; sorted by address.
    pub fn elements(&self, now: u64) -> Vec<(IpAddr, u64)> {
        let mut merged: BTreeMap<IpAddr, u64> = BTreeMap::new();
        for state in self.names.iter().filter(|n| n.ports.is_empty()) {
            for (addr, expiry) in state.addresses.iter().filter(|(_, e)| **e > now) {
                let slot = merged.entry(*addr).or_insert(*expiry);
                *slot = (*slot).max(*expiry);
            }
        }
        merged.into_iter().collect()
    }

    /// Like [`Self::elements`] for names limited to some ports: one element
    /// per address and port, the latest expiry over the names.
    pub fn port_elements(&self, now: u64) -> Vec<(IpAddr, u16, u64)> {
        let mut merged: BTreeMap<(IpAddr, u16), u64> = BTreeMap::new();
        for state in self.names.iter().filter(|n| !n.ports.is_empty()) {
            for (addr, expiry) in state.addresses.iter().filter(|(_, e)| **e > now) {
                for port in &state.ports {
                    let slot = merged.entry((*addr, *port)).or_insert(*expiry);
                    *slot = (*slot).max(*expiry);
                }
            }
        }
        merged
            .into_iter()
            .map(|((addr, port), expiry)| (addr, port, expiry))
            .collect()
    }

    /// True if `addr` is currently DNS-allowed.
    pub fn allows(&self, addr: &IpAddr, now: u64) -> bool {
        self.names
            .iter()
            .any(|n| n.addresses.get(addr).is_some_and(|expiry| *expiry > now))
    }

    /// One row per configured name, in config order, for `orch allow list`.
    pub fn report(&self, now: u64) -> Vec<NameReport> {
        self.names
            .iter()
            .map(|n| NameReport {
                name: n.name.clone(),
                family: match n.family {
                    DnsFamily::Ipv6 => "AAAA",
                    _ => "A",
                },
                addresses: n
                    .addresses
                    .iter()
                    .filter(|(_, expiry)| **expiry > now)
                    .map(|(addr, expiry)| (*addr, *expiry))
                    .collect(),
                last_success: n.last_success,
                last_error: n.last_error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn entry(name: &str, min_ttl: u64, max_ttl: u64) -> DnsAllowEntry {
        DnsAllowEntry {
            name: name.to_string(),
            family: DnsFamily::Any,
            min_ttl: Duration::from_secs(min_ttl),
            max_ttl: Duration::from_secs(max_ttl),
            ports: Vec::new(),
        }
    }

    #[test]
    fn port_scoped_names_give_address_port_elements_only() {
        let mut s = state(vec![
            DnsAllowEntry {
                ports: vec![22, 443],
                ..entry("ci.test", 60, 60)
            },
            entry("all.test", 60, 60),
        ]);
        s.record("ci.test", answer(&[("192.0.2.7", 60)]), T0);
        s.record("all.test", answer(&[("192.0.2.8", 60)]), T0);
        assert_eq!(s.elements(T0), vec![(ip("192.0.2.8"), T0 + 90)]);
        assert_eq!(
            s.port_elements(T0),
            vec![
                (ip("192.0.2.7"), 22, T0 + 90),
                (ip("192.0.2.7"), 443, T0 + 90)
            ]
        );
        assert!(s.allows(&ip("192.0.2.7"), T0));
    }

    /// grace 30 s, stale_max 1 h.
    fn state(entries: Vec<DnsAllowEntry>) -> DnsAllowState {
        DnsAllowState::new(&DnsSettings {
            servers: Vec::new(),
            stale_max: Duration::from_secs(3600),
            grace: Duration::from_secs(30),
            entries,
        })
    }

    fn answer(records: &[(&str, u64)]) -> Result<Vec<(IpAddr, Duration)>, DnsError> {
        Ok(records
            .iter()
            .map(|(a, ttl)| (ip(a), Duration::from_secs(*ttl)))
            .collect())
    }

    fn failure() -> Result<Vec<(IpAddr, Duration)>, DnsError> {
        Err(DnsError::Failed("a.test A: request timed out".into()))
    }

    #[test]
    fn special_addresses_are_never_allowed_and_answers_are_capped() {
        let mut st = state(vec![entry("flood.example", 30, 3600)]);
        let mut records: Vec<(String, u64)> = (1..=300)
            .map(|i| (format!("198.51.{}.{}", i / 250, i % 250 + 1), 60))
            .collect();
        for special in [
            "0.0.0.0",
            "127.0.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            records.push((special.to_string(), 60));
        }
        let refs: Vec<(&str, u64)> = records.iter().map(|(a, t)| (a.as_str(), *t)).collect();
        st.record("flood.example", answer(&refs), 1_000);
        let allowed = st.elements(1_000);
        assert_eq!(allowed.len(), MAX_ADDRESSES_PER_NAME);
        assert!(
            allowed.iter().all(|(addr, _)| allowable(addr)),
            "{allowed:?}"
        );
        assert!(!st.allows(&ip("127.0.0.1"), 1_000));
        assert!(!st.allows(&ip("0.0.0.0"), 1_000));
        assert!(allowable(&ip("2001:db8::1")) && allowable(&ip("192.0.2.1")));
    }

    #[test]
    fn everything_is_due_at_first_and_nothing_without_entries() {
        let s = state(vec![entry("a.test", 30, 3600), entry("b.test", 30, 3600)]);
        assert_eq!(s.due(T0), vec!["a.test", "b.test"]);
        assert_eq!(s.next_due_in(T0), Some(0));
        assert!(s.elements(T0).is_empty());
        let empty = state(Vec::new());
        assert!(empty.due(T0).is_empty());
        assert_eq!(empty.next_due_in(T0), None);
    }

    #[test]
    fn expiry_is_the_clamped_ttl_plus_grace() {
        let mut s = state(vec![
            entry("low.test", 30, 3600),
            entry("mid.test", 30, 3600),
            entry("high.test", 30, 3600),
        ]);
        assert!(s.record("low.test", answer(&[("192.0.2.1", 5)]), T0));
        assert!(s.record("mid.test", answer(&[("192.0.2.2", 300)]), T0));
        assert!(s.record("high.test", answer(&[("192.0.2.3", 86_400)]), T0));
        assert_eq!(
            s.elements(T0),
            vec![
                (ip("192.0.2.1"), T0 + 30 + 30),
                (ip("192.0.2.2"), T0 + 300 + 30),
                (ip("192.0.2.3"), T0 + 3600 + 30),
            ]
        );
    }

    #[test]
    fn sub_second_bounds_round_up() {
        let mut s = DnsAllowState::new(&DnsSettings {
            servers: Vec::new(),
            stale_max: Duration::from_secs(3600),
            grace: Duration::from_millis(1500),
            entries: vec![DnsAllowEntry {
                min_ttl: Duration::from_millis(200),
                ..entry("a.test", 0, 60)
            }],
        });
        s.record("a.test", answer(&[("192.0.2.1", 0)]), T0);
        assert_eq!(s.elements(T0), vec![(ip("192.0.2.1"), T0 + 1 + 2)]);
        assert_eq!(s.next_due_in(T0), Some(1));
    }

    #[test]
    fn a_name_is_due_again_at_its_smallest_clamped_ttl_before_the_grace_runs_out() {
        let mut s = state(vec![entry("a.test", 30, 3600), entry("b.test", 30, 3600)]);
        s.record(
            "a.test",
            answer(&[("192.0.2.1", 120), ("2001:db8::1", 90)]),
            T0,
        );
        s.record("b.test", answer(&[("192.0.2.2", 10)]), T0);
        assert!(s.due(T0).is_empty());
        assert_eq!(s.next_due_in(T0), Some(30));
        assert_eq!(s.due(T0 + 29), Vec::<String>::new());
        assert_eq!(s.due(T0 + 30), vec!["b.test"]);
        assert_eq!(s.due(T0 + 90), vec!["a.test", "b.test"]);
        assert_eq!(s.next_due_in(T0 + 100), Some(0));
        // Each address lasts its own clamped TTL plus grace: never less than
        // a grace past its name's due time.
        assert_eq!(
            s.elements(T0),
            vec![
                (ip("192.0.2.1"), T0 + 120 + 30),
                (ip("192.0.2.2"), T0 + 30 + 30),
                (ip("2001:db8::1"), T0 + 90 + 30),
            ]
        );
    }

    #[test]
    fn a_refresh_with_the_same_records_extends_the_expiry_and_reports_a_change() {
        let mut s = state(vec![entry("a.test", 30, 3600)]);
        assert!(s.record("a.test", answer(&[("192.0.2.1", 60)]), T0));
        assert!(s.record("a.test", answer(&[("192.0.2.1", 60)]), T0 + 60));
        assert_eq!(s.elements(T0 + 60), vec![(ip("192.0.2.1"), T0 + 150)]);
        // The same answer at the same second changes nothing.
        assert!(!s.record("a.test", answer(&[("192.0.2.1", 60)]), T0 + 60));
    }

    #[test]
    fn changed_records_swap_in() {
        let mut s = state(vec![entry("a.test", 30, 3600)]);
        s.record("a.test", answer(&[("192.0.2.10", 60)]), T0);
        assert!(s.allows(&ip("192.0.2.10"), T0));
        let changed = s.record("a.test", answer(&[("192.0.2.11", 60)]), T0 + 60);
        assert!(changed);
        assert_eq!(s.elements(T0 + 60), vec![(ip("192.0.2.11"), T0 + 150)]);
        assert!(!s.allows(&ip("192.0.2.10"), T0 + 60));
        assert!(s.allows(&ip("192.0.2.11"), T0 + 60));
    }

    #[test]
    fn a_shared_address_stays_while_either_name_has_it() {
        let mut s = state(vec![entry("a.test", 30, 3600), entry("b.test", 30, 3600)]);
        s.record("a.test", answer(&[("192.0.2.1", 60)]), T0);
        s.record("b.test", answer(&[("192.0.2.1", 600)]), T0);
        // The later expiry wins.
        assert_eq!(s.elements(T0), vec![(ip("192.0.2.1"), T0 + 630)]);
        // a.test loses it: b.test still has it, and nothing changed.
        assert!(!s.record("a.test", Ok(Vec::new()), T0 + 60));
        assert!(s.allows(&ip("192.0.2.1"), T0 + 60));
        assert_eq!(s.elements(T0 + 60), vec![(ip("192.0.2.1"), T0 + 630)]);
        // b.test moves away too: gone.
        assert!(s.record("b.test", Ok(Vec::new()), T0 + 600));
        assert!(!s.allows(&ip("192.0.2.1"), T0 + 600));
        assert_eq!(s.elements(T0 + 600), Vec::new());
    }

    #[test]
    fn a_shared_address_keeps_the_longer_expiry_when_the_shorter_name_refreshes() {
        let mut s = state(vec![entry("a.test", 30, 3600), entry("b.test", 30, 3600)]);
        s.record("a.test", answer(&[("192.0.2.1", 60)]), T0);
        s.record("b.test", answer(&[("192.0.2.1", 600)]), T0);
        // a.test refreshes; its new expiry is still short of b.test's.
        assert!(!s.record("a.test", answer(&[("192.0.2.1", 60)]), T0 + 60));
        assert_eq!(s.elements(T0 + 60), vec![(ip("192.0.2.1"), T0 + 630)]);
    }

    #[test]
    fn nxdomain_or_nodata_empties_the_name_and_asks_again_after_min_ttl() {
        let mut s = state(vec![entry("a.test", 45, 3600)]);
        s.record("a.test", answer(&[("192.0.2.1", 300)]), T0);
        assert!(s.record("a.test", Ok(Vec::new()), T0 + 300));
        assert!(s.elements(T0 + 300).is_empty());
        assert!(!s.allows(&ip("192.0.2.1"), T0 + 300));
        assert_eq!(s.next_due_in(T0 + 300), Some(45));
        let report = &s.report(T0 + 300)[0];
        assert_eq!(report.last_success, Some(T0 + 300));
        assert_eq!(report.last_error, None);
        assert!(report.addresses.is_empty());
    }

    #[test]
    fn a_failure_keeps_the_last_good_addresses_until_stale_max_then_drops_them() {
        // grace 30 s, stale_max 1 h, min_ttl 60 s: retry every 30 s.
        let mut s = state(vec![entry("a.test", 60, 3600)]);
        s.record("a.test", answer(&[("192.0.2.1", 60)]), T0);
        assert_eq!(s.elements(T0), vec![(ip("192.0.2.1"), T0 + 90)]);

        // First failure at the refresh: extended to retry + grace.
        assert!(s.record("a.test", failure(), T0 + 60));
        assert_eq!(
            s.elements(T0 + 60),
            vec![(ip("192.0.2.1"), T0 + 60 + 30 + 30)]
        );
        assert_eq!(s.next_due_in(T0 + 60), Some(30));
        assert!(s.allows(&ip("192.0.2.1"), T0 + 100));
        let report = &s.report(T0 + 60)[0];
        assert_eq!(report.last_success, Some(T0));
        assert_eq!(
            report.last_error.as_deref(),
            Some("a.test A: request timed out")
        );

        // Failures go on; near stale_max the extension is capped at
        // last success + stale_max.
        let mut now = T0 + 90;
        while now <= T0 + 3540 {
            assert!(s.record("a.test", failure(), now));
            assert_eq!(s.elements(now), vec![(ip("192.0.2.1"), now + 60)]);
            now += 30;
        }
        assert_eq!(s.elements(T0 + 3540), vec![(ip("192.0.2.1"), T0 + 3600)]);
        // Capped: another failure before the limit changes nothing.
        assert!(!s.record("a.test", failure(), T0 + 3570));
        assert_eq!(s.elements(T0 + 3570), vec![(ip("192.0.2.1"), T0 + 3600)]);
        assert!(s.allows(&ip("192.0.2.1"), T0 + 3599));
        assert!(!s.allows(&ip("192.0.2.1"), T0 + 3600));

        // At stale_max: dropped.
        assert!(!s.record("a.test", failure(), T0 + 3600));
        assert!(s.elements(T0 + 3600).is_empty());
        assert!(s.report(T0 + 3600)[0].addresses.is_empty());

        // It resolves again: back, error cleared.
        assert!(s.record("a.test", answer(&[("192.0.2.1", 60)]), T0 + 3630));
        assert_eq!(s.elements(T0 + 3630), vec![(ip("192.0.2.1"), T0 + 3720)]);
        assert_eq!(s.report(T0 + 3630)[0].last_error, None);
    }

    #[test]
    fn a_failure_never_shortens_a_granted_expiry() {
        // stale_max shorter than TTL + grace: the success's expiry stands.
        let mut s = DnsAllowState::new(&DnsSettings {
            servers: Vec::new(),
            stale_max: Duration::from_secs(60),
            grace: Duration::from_secs(30),
            entries: vec![entry("a.test", 30, 3600)],
        });
        s.record("a.test", answer(&[("192.0.2.1", 600)]), T0);
        assert!(!s.record("a.test", failure(), T0 + 10));
        assert_eq!(s.elements(T0 + 10), vec![(ip("192.0.2.1"), T0 + 630)]);
    }

    #[test]
    fn a_failure_before_any_success_allows_nothing_and_retries_sooner() {
        let mut s = state(vec![entry("a.test", 300, 3600)]);
        assert!(!s.record("a.test", failure(), T0));
        assert!(s.elements(T0).is_empty());
        assert_eq!(s.next_due_in(T0), Some(30));
        let report = &s.report(T0)[0];
        assert_eq!(report.last_success, None);
        assert!(report.last_error.is_some());
    }

    #[test]
    fn retry_follows_a_short_min_ttl() {
        let mut s = state(vec![entry("a.test", 5, 3600)]);
        s.record("a.test", failure(), T0);
        assert_eq!(s.next_due_in(T0), Some(5));
    }

    #[test]
    fn elements_and_allows_drop_what_expired_without_a_refresh() {
        let mut s = state(vec![entry("a.test", 30, 3600)]);
        s.record("a.test", answer(&[("192.0.2.1", 30)]), T0);
        assert!(s.allows(&ip("192.0.2.1"), T0 + 59));
        assert!(!s.allows(&ip("192.0.2.1"), T0 + 60));
        assert!(!s.allows(&ip("192.0.2.2"), T0));
        assert!(s.elements(T0 + 60).is_empty());
        assert!(s.report(T0 + 60)[0].addresses.is_empty());
    }

    #[test]
    fn duplicate_addresses_in_one_answer_keep_the_longest_ttl() {
        // A only: an AAAA state with no records would be due after min_ttl.
        let mut s = state(vec![DnsAllowEntry {
            family: DnsFamily::Ipv4,
            ..entry("a.test", 30, 3600)
        }]);
        s.record(
            "a.test",
            answer(&[("192.0.2.1", 60), ("192.0.2.1", 120)]),
            T0,
        );
        assert_eq!(s.elements(T0), vec![(ip("192.0.2.1"), T0 + 150)]);
        assert_eq!(s.next_due_in(T0), Some(60));
    }

    #[test]
    fn unknown_names_are_ignored_and_duplicates_keep_the_first_entry() {
        let mut s = state(vec![entry("a.test", 30, 3600), entry("a.test", 600, 3600)]);
        assert_eq!(s.due(T0), vec!["a.test"]);
        assert!(!s.record("other.test", answer(&[("192.0.2.9", 60)]), T0));
        assert!(s.elements(T0).is_empty());
        s.record("a.test", answer(&[("192.0.2.1", 60)]), T0);
        assert_eq!(s.elements(T0), vec![(ip("192.0.2.1"), T0 + 90)]);
    }

    #[test]
    fn report_lists_every_name_and_family_in_config_order() {
        let mut s = state(vec![entry("b.test", 30, 3600), entry("a.test", 30, 3600)]);
        s.record(
            "b.test",
            answer(&[("2001:db8::1", 60), ("192.0.2.1", 60)]),
            T0,
        );
        let report = s.report(T0);
        let row = |name: &str, family, addresses: Vec<(IpAddr, u64)>, last_success| NameReport {
            name: name.into(),
            family,
            addresses,
            last_success,
            last_error: None,
        };
        assert_eq!(
            report,
            vec![
                row("b.test", "A", vec![(ip("192.0.2.1"), T0 + 90)], Some(T0)),
                row(
                    "b.test",
                    "AAAA",
                    vec![(ip("2001:db8::1"), T0 + 90)],
                    Some(T0)
                ),
                row("a.test", "A", Vec::new(), None),
                row("a.test", "AAAA", Vec::new(), None),
            ]
        );
    }

    /// A resolver that answers A but refuses AAAA (dnsmasq with a local
    /// host-record and no upstream): the name's A addresses are allowed at
    /// once, and a later AAAA failure never drops them.
    #[test]
    fn one_failing_family_never_costs_the_other_its_addresses() {
        let mut s = state(vec![entry("a.test", 30, 3600)]);
        assert!(s.record_family("a.test", &DnsFamily::Ipv4, answer(&[("192.0.2.1", 60)]), T0));
        s.record_family("a.test", &DnsFamily::Ipv6, failure(), T0);
        assert_eq!(s.elements(T0), vec![(ip("192.0.2.1"), T0 + 90)]);
        let report = s.report(T0);
        assert!(
            report[1].family == "AAAA" && report[1].last_error.is_some(),
            "{report:?}"
        );
        assert!(report[0].last_error.is_none(), "{report:?}");
        // The AAAA retry comes sooner than the A refresh; only it is due.
        let retry_at = T0 + s.next_due_in(T0).unwrap_or(0);
        assert_eq!(
            s.due_families(retry_at),
            vec![("a.test".to_string(), DnsFamily::Ipv6)]
        );
    }

    #[test]
    fn resolver_builds_from_servers_with_ports() {
        let servers: Vec<SocketAddr> = vec![
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
        ];
        assert!(Resolver::new(&servers).is_ok());
    }
}
