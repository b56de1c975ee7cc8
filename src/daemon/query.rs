//! The core's side of `Query` (`orch query ADDR`): what holds an address
//! banned and what allows it, from the core's own state: the bans that
//! cover it (its own and a banned prefix around it), other fleet hosts'
//! bans of it, an own ban shadowed under a longer remote one, how often it
//! was banned before, and the static and runtime allowlist entries that
//! cover it. It also names the kernel elements whose counters the caller
//! may read, off the core thread.
//!
//! [`Core::query`] is a read-lane job: it reads, and must not change
//! anything or touch the kernel. [`complete`] then runs off the core: it
//! adds the DNS allow names and reads the element counters (a netlink
//! lookup per element, through the read-only probe).

use ipnet::IpNet;
use serde::Serialize;

use super::dns_refresh::DnsReports;

use super::core::{Core, CoreError};
use crate::addr;
use crate::firewall::script::SampleElement;
use crate::store::BanRecord;
use crate::timefmt::now_unix;

/// Everything `orch query` says about one address (schema in
/// docs/json.md, `query`).
#[derive(Debug, Clone, Serialize)]
pub struct QueryAnswer {
    /// The address or prefix asked about, as orch writes it.
    pub address: String,
    /// Whether a ban of this host covers it now.
    pub banned: bool,
    /// The bans that cover it: its own, and any banned prefix around it.
    pub bans: Vec<BanHold>,
    /// Other fleet hosts' bans of exactly this network.
    pub fleet_holds: Vec<FleetHold>,
    /// This host's own ban, kept aside while a longer ban from another
    /// host covers it (it comes back when that one ends).
    pub shadowed: Option<BanHold>,
    /// How often it was banned before (any source), and when last: what
    /// recidive and bantime.increment count.
    pub times_banned: u32,
    pub last_banned_at: Option<u64>,
    /// Allowlist entries that cover it.
    pub allowed_by: Vec<AllowCover>,
    /// Packets and bytes its ban elements have dropped; `None` when the
    /// sets carry no counters ([firewall] element_counters = false) or
    /// nothing is banned.
    pub dropped: Option<Dropped>,
    /// Why `dropped` is missing, when it is.
    pub dropped_note: Option<String>,
}

/// One ban that covers the address.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BanHold {
    pub network: String,
    /// "manual", a jail name, "fleet:<host>", "import:<tool>".
    pub source: String,
    /// The jail, when a jail banned it.
    pub jail: Option<String>,
    /// The fleet host, when another host's ban put it here.
    pub origin_host: Option<String>,
    pub reason: String,
    pub banned_at: u64,
    pub expires_at: u64,
}

/// Another host's ban of the network, as the fleet bucket holds it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetHold {
    pub host: String,
    pub reason: String,
    pub expires_at: u64,
}

/// An allowlist entry that covers the address.
#[derive(Debug, Clone, Serialize)]
pub struct AllowCover {
    pub entry: String,
    /// "static" (config), "runtime" (`orch allow`), "dns" ([[dns.allow]]).
    pub kind: String,
    /// The DNS name, for a dns entry.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Dropped {
    pub packets: u64,
    pub bytes: u64,
}

/// The core's answer, and the kernel elements of the active bans whose
/// counters the caller reads (when the sets count).
pub struct CoreQuery {
    pub answer: QueryAnswer,
    /// The network asked about (the answer writes it for people).
    pub net: IpNet,
    pub counted_elements: Vec<SampleElement>,
    pub table: String,
    pub counters_on: bool,
}

impl BanHold {
    fn of(record: &BanRecord) -> BanHold {
        let source = record.source.to_string();
        let origin_host = source.strip_prefix("fleet:").map(str::to_string);
        let jail = Some(super::ban_log::jail_of(&source))
            .filter(|jail| !jail.is_empty())
            .map(str::to_string);
        BanHold {
            network: addr::display_net(&record.net),
            source,
            jail,
            origin_host,
            reason: record.reason.to_string(),
            banned_at: record.created,
            expires_at: record.expires,
        }
    }
}

impl Core {
    /// What holds `input` banned and what allows it (see the module).
    pub fn query(&self, input: &str) -> Result<CoreQuery, CoreError> {
        let net = addr::parse_net(input)?;
        let now = now_unix();
        let store = self.store();
        let covering: Vec<&BanRecord> = std::iter::once(net)
            .chain(
                self.banned_prefixes()
                    .filter(|prefix| **prefix != net && prefix.contains(&net))
                    .copied(),
            )
            .filter_map(|candidate| store.get_ban(&candidate))
            .filter(|record| record.expires > now)
            .collect();
        let counted_elements = covering
            .iter()
            .flat_map(|record| SampleElement::all_of(&self.reconciler().element(record, now)))
            .collect();
        let history = store.history(&net);
        let (static_allows, runtime_allows) = self.allow_entries();
        let mut allowed_by = Vec::new();
        for (kind, entries) in [("static", static_allows), ("runtime", runtime_allows)] {
            allowed_by.extend(
                entries
                    .iter()
                    .filter(|entry| addr::overlaps(entry, &net))
                    .map(|entry| AllowCover {
                        entry: addr::display_net(entry),
                        kind: kind.to_string(),
                        name: None,
                    }),
            );
        }
        let answer = QueryAnswer {
            address: addr::display_net(&net),
            banned: !covering.is_empty(),
            bans: covering.iter().map(|record| BanHold::of(record)).collect(),
            fleet_holds: self
                .fleet()
                .holdings
                .holds_of(&net)
                .iter()
                .filter(|hold| hold.expires > now)
                .map(|hold| FleetHold {
                    host: hold.origin.to_string(),
                    reason: hold.reason.to_string(),
                    expires_at: hold.expires,
                })
                .collect(),
            shadowed: store.shadowed(&net).map(BanHold::of),
            times_banned: history.count,
            last_banned_at: (history.count > 0).then_some(history.last_banned),
            allowed_by,
            dropped: None,
            dropped_note: None,
        };
        Ok(CoreQuery {
            answer,
            net,
            counted_elements,
            table: self.reconciler().table().to_string(),
            counters_on: self.config().firewall.element_counters,
        })
    }
}

/// Finishes a core query off the core thread: the DNS allow names that
/// cover the address now, and the counters of its ban elements.
pub async fn complete(query: CoreQuery, dns: &DnsReports) -> QueryAnswer {
    let (mut answer, net) = (query.answer, query.net);
    let now = now_unix();
    let reports = dns.lock().map(|r| r.clone()).unwrap_or_default();
    for report in reports {
        for (address, expires) in &report.addresses {
            if *expires > now && addr::overlaps(&IpNet::from(*address), &net) {
                answer.allowed_by.push(AllowCover {
                    entry: address.to_string(),
                    kind: "dns".to_string(),
                    name: Some(report.name.clone()),
                });
            }
        }
    }
    if !answer.banned {
        return answer;
    }
    if !query.counters_on {
        answer.dropped_note = Some(
            "per-address counters are off; [firewall] element_counters = true turns them on \
             (the drop rules' totals are in the metrics)"
                .to_string(),
        );
        return answer;
    }
    if query.counted_elements.is_empty() {
        answer.dropped_note =
            Some("a port-scoped prefix ban cannot be looked up by one key".to_string());
        return answer;
    }
    let (table, elements) = (query.table, query.counted_elements);
    let counted = tokio::task::spawn_blocking(move || {
        crate::firewall::probe::element_counters(&table, &elements)
    })
    .await;
    match counted {
        Ok(Ok(Some(counted))) => {
            answer.dropped = Some(Dropped {
                packets: counted.packets,
                bytes: counted.bytes,
            });
        }
        Ok(Ok(None)) => {
            answer.dropped_note = Some(
                "the kernel's elements carry no counter yet (the table is re-applied with \
                 counters at the next sync)"
                    .to_string(),
            );
        }
        Ok(Err(err)) => answer.dropped_note = Some(format!("cannot read the counters: {err}")),
        Err(err) => answer.dropped_note = Some(format!("cannot read the counters: {err}")),
    }
    answer
}
