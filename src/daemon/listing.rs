//! Which bans one page of a listing holds: the active bans matching a
//! query, in network order, after a cursor, at most a page of them.
//!
//! A page is one bounded job on the core's read lane: one pass over the
//! bans that keeps the `limit` smallest networks after the cursor (a heap
//! of `limit` entries), so a page costs O(n log limit) time and O(limit)
//! memory, and a reply never exceeds [`MAX_REPLY_BYTES`]. The store keeps
//! bans in a hash table, not in order; an ordered copy for readers would
//! cost about 90 bytes per ban (90 MB at 1M bans), so pages are selected
//! instead. It must not change anything.

use std::collections::BinaryHeap;

use ipnet::IpNet;

use crate::store::{BanRecord, MAX_BAN_TEXT_BYTES};

/// Rows one page holds at most.
pub const MAX_PAGE_ROWS: usize = 10_000;

/// No reply orch sends may exceed this (the system bus drops a peer that
/// sends more than 32 MiB in one message).
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

/// A row on the wire: address (at most 43 bytes), two u64, reason and
/// source (each at most [`MAX_BAN_TEXT_BYTES`]), with D-Bus framing
/// (lengths, NULs, padding) well within 64 bytes.
const MAX_ROW_BYTES: usize = 43 + 16 + 2 * MAX_BAN_TEXT_BYTES + 64;
const _: () = assert!(MAX_PAGE_ROWS * MAX_ROW_BYTES <= MAX_REPLY_BYTES);

/// What a listing asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BanQuery {
    /// Only networks after this one (the previous page's last).
    pub after: Option<IpNet>,
    /// At most this many rows (capped at [`MAX_PAGE_ROWS`]).
    pub limit: usize,
    /// Only bans from this source (a jail name, "manual", "fleet:web2").
    pub source: Option<String>,
    /// Only bans of networks inside this prefix.
    pub within: Option<IpNet>,
}

/// One page: the rows in network order, and whether more follow.
#[derive(Debug, Default)]
pub struct BanPage {
    pub rows: Vec<BanRecord>,
    pub more: bool,
}

impl BanQuery {
    fn matches(&self, record: &BanRecord, now: u64) -> bool {
        record.expires > now
            && self.after.is_none_or(|after| record.net > after)
            && self
                .source
                .as_deref()
                .is_none_or(|source| &*record.source == source)
            && self
                .within
                .is_none_or(|within| within.contains(&record.net))
    }
}

/// A ban ordered by its network alone (networks are unique in the store).
struct ByNet<'a>(&'a BanRecord);

impl PartialEq for ByNet<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.net == other.0.net
    }
}

impl Eq for ByNet<'_> {}

impl PartialOrd for ByNet<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByNet<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.net.cmp(&other.0.net)
    }
}

/// The page of `bans` that `query` asks for, at `now`.
pub fn select_page<'a>(
    bans: impl Iterator<Item = &'a BanRecord>,
    query: &BanQuery,
    now: u64,
) -> BanPage {
    let limit = query.limit.clamp(1, MAX_PAGE_ROWS);
    // The limit + 1 smallest matching networks: the extra one says
    // whether more follow.
    let mut smallest: BinaryHeap<ByNet<'a>> = BinaryHeap::with_capacity(limit + 1);
    for record in bans.filter(|record| query.matches(record, now)) {
        if smallest.len() <= limit {
            smallest.push(ByNet(record));
        } else if smallest
            .peek()
            .is_some_and(|largest| record.net < largest.0.net)
        {
            smallest.pop();
            smallest.push(ByNet(record));
        }
    }
    let more = smallest.len() > limit;
    let mut rows: Vec<BanRecord> = smallest
        .into_sorted_vec()
        .into_iter()
        .map(|ByNet(record)| record.clone())
        .collect();
    rows.truncate(limit);
    BanPage { rows, more }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn record(net: &str, expires: u64, source: &str) -> BanRecord {
        BanRecord {
            net: net.parse().unwrap(),
            created: 0,
            expires,
            reason: Arc::from(""),
            source: Arc::from(source),
        }
    }

    fn nets(page: &BanPage) -> Vec<String> {
        page.rows.iter().map(|r| r.net.to_string()).collect()
    }

    #[test]
    fn pages_walk_every_active_ban_once_in_order() {
        let bans: Vec<BanRecord> = (0..1000u32)
            .rev()
            .map(|i| record(&format!("10.0.{}.{}/32", i / 256, i % 256), 100, "manual"))
            .chain([record("192.0.2.1/32", 5, "manual")]) // expired at 10
            .chain([record("2001:db8::/64", 100, "sshd")])
            .collect();
        let mut query = BanQuery {
            limit: 300,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = select_page(bans.iter(), &query, 10);
            assert!(page.rows.len() <= 300);
            seen.extend(nets(&page));
            if !page.more {
                break;
            }
            query.after = page.rows.last().map(|r| r.net);
        }
        assert_eq!(seen.len(), 1001, "1000 v4 and one v6, not the expired one");
        let mut sorted = seen.clone();
        sorted.sort_by_key(|net| net.parse::<IpNet>().unwrap());
        sorted.dedup();
        assert_eq!(seen, sorted, "in order, each once");
        assert_eq!(seen.last().map(String::as_str), Some("2001:db8::/64"));
    }

    #[test]
    fn filters_by_source_and_prefix() {
        let bans = [
            record("192.0.2.1/32", 100, "sshd"),
            record("192.0.2.2/32", 100, "manual"),
            record("198.51.100.1/32", 100, "sshd"),
        ];
        let by_source = BanQuery {
            limit: 10,
            source: Some("sshd".into()),
            ..Default::default()
        };
        assert_eq!(
            nets(&select_page(bans.iter(), &by_source, 0)),
            ["192.0.2.1/32", "198.51.100.1/32"]
        );
        let within = BanQuery {
            limit: 10,
            within: Some("192.0.2.0/24".parse().unwrap()),
            ..by_source
        };
        let page = select_page(bans.iter(), &within, 0);
        assert_eq!(nets(&page), ["192.0.2.1/32"]);
        assert!(!page.more);
    }

    #[test]
    fn a_page_is_never_longer_than_the_cap() {
        let bans: Vec<BanRecord> = (0..(MAX_PAGE_ROWS as u32 + 5))
            .map(|i| {
                record(
                    &format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255),
                    9,
                    "m",
                )
            })
            .collect();
        let query = BanQuery {
            limit: usize::MAX,
            ..Default::default()
        };
        let page = select_page(bans.iter(), &query, 0);
        assert_eq!(page.rows.len(), MAX_PAGE_ROWS);
        assert!(page.more);
    }
}
