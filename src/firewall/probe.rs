//! The self-check's look at orch's table: asks the kernel directly, over
//! nfnetlink, whether the table is there, whether each chain holds its
//! rules, and whether a few sampled ban elements are in their sets.
//!
//! Why not `nft list chain` / `nft get element`: nftables 1.0.6 fetches
//! every element of every set into its cache before either command. With
//! 100k bans that is about a second of CPU and 35 MB per command, and a
//! long-lived libnftables context keeps the cache until the next change.
//! Here each question is one small request: a lookup by key, or a dump of
//! the table's rules (rules only, never set elements).
//!
//! It also reads the rules' counters for the metrics (one dump of the
//! table's rules, never its set elements).
//!
//! This module only reads; it never changes the kernel, and it does not
//! decide what to do about what it finds.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use super::monitor::KernelEvent;
use super::netlink::{
    Attributes, MessageBuilder, Messages, NFGENMSG_LEN, NFNL_SUBSYS_NFTABLES, NFPROTO_INET,
    NFT_MSG_NEWGEN, NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE, NFTA_GEN_ID, NFTA_TABLE, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, c_string, open_socket, read_i32_ne,
    read_u32_be, read_u64_be, socklen_of,
};
use super::script::{IntactCheck, SampleElement};

// Request types and attributes, from <linux/netfilter/nf_tables.h> (the
// ones the monitor reads too are in `netlink`).
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_TABLE_HANDLE: u16 = 4;
/// Every family, for dumps.
const NFPROTO_UNSPEC: u8 = 0;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_MSG_NEWSETELEM: u16 = 12;
/// One expression of an element, or (from Linux 5.16 on, with more than
/// one) a list of them.
const NFTA_SET_ELEM_EXPR: u16 = 7;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
/// Verdict codes, from <linux/netfilter.h>.
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

/// How long one answer may take before the check gives up (the kernel
/// answers these in microseconds).
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for one datagram of a dump (the kernel fills up to 32 KiB).
const RECEIVE_BUFFER_BYTES: usize = 64 << 10;

/// `Ok(None)` when everything `check` names is in the kernel, otherwise
/// what is missing first, in words. `Err` when the kernel could not be
/// asked at all.
pub fn find_missing(check: &IntactCheck) -> io::Result<Option<String>> {
    let mut session = Session::open()?;
    let table = check.table.as_str();
    let found = session.request(NFT_MSG_GETTABLE, NLM_F_ACK, |request| {
        request.string(NFTA_TABLE, table);
    })?;
    if found.is_none() {
        return Ok(Some(format!("table inet {table} is missing")));
    }

    let rules = session.rule_counts(table)?;
    for &(chain, expected) in &check.chains {
        let held = rules.get(chain).copied().unwrap_or(0);
        if held != expected {
            return Ok(Some(format!(
                "chain {chain} holds {held} rules, not {expected}"
            )));
        }
    }

    for element in &check.elements {
        let found = session.request(NFT_MSG_GETSETELEM, NLM_F_ACK, |request| {
            element_lookup(request, table, element)
        })?;
        if found.is_none() {
            return Ok(Some(format!(
                "element {} is missing from set {}",
                element.shown, element.set
            )));
        }
    }
    Ok(None)
}

/// A lookup of one element of `table` by its key.
fn element_lookup(request: &mut MessageBuilder, table: &str, element: &SampleElement) {
    request
        .string(NFTA_TABLE, table)
        .string(NFTA_SET_ELEM_LIST_SET, element.set)
        .nested(NFTA_SET_ELEM_LIST_ELEMENTS, |list| {
            list.nested(NFTA_LIST_ELEM, |item| {
                item.nested(NFTA_SET_ELEM_KEY, |key| {
                    key.attribute(NFTA_DATA_VALUE, &element.key);
                });
            });
        });
}

/// Packets and bytes an element's counter has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub packets: u64,
    pub bytes: u64,
}

/// The counters of `elements` of `table`, added up: `Ok(None)` when none of
/// them is in the kernel or none carries a counter (the sets were made
/// without `counter`).
pub fn element_counters(table: &str, elements: &[SampleElement]) -> io::Result<Option<Counted>> {
    let mut session = Session::open()?;
    let mut total: Option<Counted> = None;
    for element in elements {
        let mut found = None;
        let result = session.exchange(
            NFT_MSG_GETSETELEM,
            NLM_F_ACK,
            |request| element_lookup(request, table, element),
            &mut |kind, _family, attributes| {
                if kind == NFT_MSG_NEWSETELEM {
                    found = found.or(counter_of_reply(attributes));
                }
            },
        );
        match result {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(err) => return Err(err),
        }
        if let Some(counted) = found {
            let sum = total.get_or_insert_with(Counted::default);
            sum.packets = sum.packets.saturating_add(counted.packets);
            sum.bytes = sum.bytes.saturating_add(counted.bytes);
        }
    }
    Ok(total)
}

/// The counter in a NEWSETELEM reply: its list of elements, each element's
/// expression (or list of expressions), the one named "counter".
fn counter_of_reply(attributes: &[u8]) -> Option<Counted> {
    let (_, list) =
        Attributes(attributes).find(|&(kind, _)| kind == NFTA_SET_ELEM_LIST_ELEMENTS)?;
    Attributes(list).find_map(|(_, element)| {
        Attributes(element).find_map(|(kind, value)| match kind {
            NFTA_SET_ELEM_EXPR => counter_of_expression(value),
            NFTA_SET_ELEM_EXPRESSIONS => {
                Attributes(value).find_map(|(_, expression)| counter_of_expression(expression))
            }
            _ => None,
        })
    })
}

fn counter_of_expression(expression: &[u8]) -> Option<Counted> {
    let mut attributes = Attributes(expression);
    let is_counter = Attributes(expression)
        .any(|(kind, name)| kind == NFTA_EXPR_NAME && c_string(name) == "counter");
    if !is_counter {
        return None;
    }
    let (_, data) = attributes.find(|&(kind, _)| kind == NFTA_EXPR_DATA)?;
    let mut counted = Counted::default();
    for (kind, value) in Attributes(data) {
        match kind {
            NFTA_COUNTER_BYTES => counted.bytes = read_u64_be(value)?,
            NFTA_COUNTER_PACKETS => counted.packets = read_u64_be(value)?,
            _ => {}
        }
    }
    Some(counted)
}

/// The kernel's nftables state at one moment, in outline: its generation
/// (up by one with every committed transaction, whoever made it) and every
/// table as (family, name, handle). A table deleted and created again gets
/// a new handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u32,
    pub tables: Vec<(u8, String, u64)>,
}

impl Snapshot {
    /// Takes one: the generation first, then the tables, so a commit in
    /// between counts as a change rather than going unnoticed.
    pub fn take() -> io::Result<Snapshot> {
        let mut session = Session::open()?;
        let mut generation = None;
        session.exchange(
            NFT_MSG_GETGEN,
            NLM_F_ACK,
            |_| {},
            &mut |kind, _, attributes| {
                if kind == NFT_MSG_NEWGEN {
                    generation = Attributes(attributes)
                        .find(|&(kind, _)| kind == NFTA_GEN_ID)
                        .and_then(|(_, value)| read_u32_be(value));
                }
            },
        )?;
        let mut tables = Vec::new();
        session.exchange_in(
            NFPROTO_UNSPEC,
            NFT_MSG_GETTABLE,
            NLM_F_DUMP,
            |_| {},
            &mut |kind, family, attributes| {
                if kind != NFT_MSG_NEWTABLE {
                    return;
                }
                let (mut name, mut handle) = (None, 0);
                for (kind, value) in Attributes(attributes) {
                    match kind {
                        NFTA_TABLE => name = Some(c_string(value).into_owned()),
                        NFTA_TABLE_HANDLE => handle = read_u64_be(value).unwrap_or(0),
                        _ => {}
                    }
                }
                if let Some(name) = name {
                    tables.push((family, name, handle));
                }
            },
        )?;
        let generation =
            generation.ok_or_else(|| io::Error::other("the kernel sent no nftables generation"))?;
        Ok(Snapshot { generation, tables })
    }

    /// What the kernel monitor would have reported between `before` and
    /// `self`, taken around one transaction of orch's own while the
    /// monitor was paused: nothing if that was the only commit; otherwise
    /// each table other than `own_table` that was deleted (or deleted and
    /// created again), or, if none was, that changes went unheard.
    pub fn unheard_since(&self, before: &Snapshot, own_table: &str) -> Vec<KernelEvent> {
        if self.generation.wrapping_sub(before.generation) <= 1 {
            return Vec::new();
        }
        let mut events: Vec<KernelEvent> = before
            .tables
            .iter()
            .filter(|table| !self.tables.contains(table))
            .filter(|(family, name, _)| !(*family == NFPROTO_INET && name == own_table))
            .map(|(family, name, _)| KernelEvent::TableDeleted {
                family: *family,
                table: name.clone(),
            })
            .collect();
        if events.is_empty() {
            events.push(KernelEvent::Unheard);
        }
        events
    }
}

/// What a rule does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleVerdict {
    Accept,
    Drop,
    Reject,
    /// Jumps, or no verdict at all.
    Other,
}

/// One rule's counter, as the kernel holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    pub chain: String,
    /// The set the rule looks the packet up in (`ban4`, `allow6`, ...).
    pub set: Option<String>,
    pub verdict: RuleVerdict,
    pub packets: u64,
    pub bytes: u64,
}

/// Every rule of `table` that has a counter, from one dump of its rules.
/// The counters start at zero whenever the table is re-applied.
pub fn rule_counters(table: &str) -> io::Result<Vec<RuleCounter>> {
    let mut session = Session::open()?;
    let mut counters = Vec::new();
    session.exchange(
        NFT_MSG_GETRULE,
        NLM_F_DUMP,
        |request| {
            request.string(NFTA_TABLE, table);
        },
        &mut |kind, _, attributes| {
            if kind == NFT_MSG_NEWRULE {
                counters.extend(rule_counter(attributes));
            }
        },
    )?;
    Ok(counters)
}

/// The counter of one rule message, with the rule's set and verdict;
/// `None` for a rule without a counter (or a message too damaged to say).
fn rule_counter(attributes: &[u8]) -> Option<RuleCounter> {
    fn attribute(attributes: &[u8], wanted: u16) -> Option<&[u8]> {
        Attributes(attributes).find_map(|(kind, value)| (kind == wanted).then_some(value))
    }
    let chain = c_string(attribute(attributes, NFTA_RULE_CHAIN)?).into_owned();
    let (mut set, mut verdict, mut counted) = (None, RuleVerdict::Other, None);
    for (_, expression) in Attributes(attribute(attributes, NFTA_RULE_EXPRESSIONS)?) {
        let name = attribute(expression, NFTA_EXPR_NAME).map(c_string);
        let data = attribute(expression, NFTA_EXPR_DATA).unwrap_or_default();
        match name.as_deref() {
            Some("counter") => {
                let packets = attribute(data, NFTA_COUNTER_PACKETS).and_then(read_u64_be);
                let bytes = attribute(data, NFTA_COUNTER_BYTES).and_then(read_u64_be);
                counted = Some((packets?, bytes?));
            }
            Some("lookup") => {
                set = attribute(data, NFTA_LOOKUP_SET).map(|name| c_string(name).into_owned());
            }
            Some("reject") => verdict = RuleVerdict::Reject,
            Some("immediate") => {
                let code = attribute(data, NFTA_IMMEDIATE_DATA)
                    .and_then(|data| attribute(data, NFTA_DATA_VERDICT))
                    .and_then(|data| attribute(data, NFTA_VERDICT_CODE))
                    .and_then(read_u32_be);
                verdict = match code {
                    Some(NF_DROP) => RuleVerdict::Drop,
                    Some(NF_ACCEPT) => RuleVerdict::Accept,
                    _ => RuleVerdict::Other,
                };
            }
            _ => {}
        }
    }
    let (packets, bytes) = counted?;
    Some(RuleCounter {
        chain,
        set,
        verdict,
        packets,
        bytes,
    })
}

/// One socket, one request at a time.
struct Session {
    fd: OwnedFd,
    seq: u32,
    buffer: Vec<u8>,
}

impl Session {
    fn open() -> io::Result<Session> {
        let fd = open_socket()?;
        let timeout = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: `timeout` is a valid timeval that outlives the call.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                socklen_of::<libc::timeval>(),
            )
        };
        if set < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Session {
            fd,
            seq: 0,
            buffer: vec![0; RECEIVE_BUFFER_BYTES],
        })
    }

    /// Rules per chain of `table`, from one dump of its rules.
    fn rule_counts(&mut self, table: &str) -> io::Result<HashMap<String, usize>> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut count_rule = |kind: u16, _family: u8, attributes: &[u8]| {
            if kind != NFT_MSG_NEWRULE {
                return;
            }
            if let Some((_, chain)) =
                Attributes(attributes).find(|&(kind, _)| kind == NFTA_RULE_CHAIN)
            {
                *counts.entry(c_string(chain).into_owned()).or_default() += 1;
            }
        };
        self.exchange(
            NFT_MSG_GETRULE,
            NLM_F_DUMP,
            |request| {
                request.string(NFTA_TABLE, table);
            },
            &mut count_rule,
        )?;
        Ok(counts)
    }

    /// Sends a lookup; `Some(())` when the kernel found the object, `None`
    /// when it answered "no such file or directory".
    fn request(
        &mut self,
        msg: u16,
        flags: u16,
        fill: impl FnOnce(&mut MessageBuilder),
    ) -> io::Result<Option<()>> {
        match self.exchange(msg, flags, fill, &mut |_, _, _| {}) {
            Ok(()) => Ok(Some(())),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Sends one request and reads until the kernel's answer ends (an ack,
    /// an error, or the end of a dump), handing each nftables message of
    /// the answer to `each` as (type, family, attributes).
    fn exchange(
        &mut self,
        msg: u16,
        flags: u16,
        fill: impl FnOnce(&mut MessageBuilder),
        each: &mut dyn FnMut(u16, u8, &[u8]),
    ) -> io::Result<()> {
        self.exchange_in(NFPROTO_INET, msg, flags, fill, each)
    }

    /// [`Session::exchange`] about `family` (`NFPROTO_UNSPEC`: all).
    fn exchange_in(
        &mut self,
        family: u8,
        msg: u16,
        flags: u16,
        fill: impl FnOnce(&mut MessageBuilder),
        each: &mut dyn FnMut(u16, u8, &[u8]),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut request = MessageBuilder::new(msg, NLM_F_REQUEST | flags, self.seq, family);
        fill(&mut request);
        self.send(&request.finish())?;
        loop {
            let length = self.receive()?;
            for message in Messages(&self.buffer[..length]) {
                if message.seq != self.seq {
                    continue;
                }
                match message.kind {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = read_i32_ne(message.payload, 0).unwrap_or(0);
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(code.saturating_neg()))
                        };
                    }
                    kind if kind >> 8 == NFNL_SUBSYS_NFTABLES => {
                        if let (Some(&family), Some(attributes)) =
                            (message.payload.first(), message.payload.get(NFGENMSG_LEN..))
                        {
                            each(kind & 0xff, family, attributes);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel (port id 0).
        let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&raw const kernel).cast::<libc::sockaddr>(),
                socklen_of::<libc::sockaddr_nl>(),
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one datagram; its length, cut to the buffer.
    fn receive(&mut self) -> io::Result<usize> {
        loop {
            // SAFETY: the buffer is valid for its length.
            let received = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buffer.as_mut_ptr().cast(),
                    self.buffer.len(),
                    0,
                )
            };
            if received >= 0 {
                return Ok(received.unsigned_abs().min(self.buffer.len()));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the kernel did not answer an nftables query",
                    ));
                }
                _ => return Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attributes of a rule message as the kernel sends it for
    /// `... @set counter <verdict>`.
    fn rule_message(set: &str, verdict: Option<u32>, reject: bool) -> Vec<u8> {
        let mut builder = MessageBuilder::new(NFT_MSG_NEWRULE, 0, 1, NFPROTO_INET);
        builder
            .string(NFTA_TABLE, "orch")
            .string(NFTA_RULE_CHAIN, "filter")
            .nested(NFTA_RULE_EXPRESSIONS, |list| {
                list.nested(NFTA_LIST_ELEM, |lookup| {
                    lookup.string(NFTA_EXPR_NAME, "lookup");
                    lookup.nested(NFTA_EXPR_DATA, |data| {
                        data.string(NFTA_LOOKUP_SET, set);
                    });
                });
                list.nested(NFTA_LIST_ELEM, |counter| {
                    counter.string(NFTA_EXPR_NAME, "counter");
                    counter.nested(NFTA_EXPR_DATA, |data| {
                        data.attribute(NFTA_COUNTER_BYTES, &120u64.to_be_bytes());
                        data.attribute(NFTA_COUNTER_PACKETS, &2u64.to_be_bytes());
                    });
                });
                if let Some(code) = verdict {
                    list.nested(NFTA_LIST_ELEM, |immediate| {
                        immediate.string(NFTA_EXPR_NAME, "immediate");
                        immediate.nested(NFTA_EXPR_DATA, |data| {
                            data.nested(NFTA_IMMEDIATE_DATA, |value| {
                                value.nested(NFTA_DATA_VERDICT, |verdict| {
                                    verdict.attribute(NFTA_VERDICT_CODE, &code.to_be_bytes());
                                });
                            });
                        });
                    });
                }
                if reject {
                    list.nested(NFTA_LIST_ELEM, |reject| {
                        reject.string(NFTA_EXPR_NAME, "reject");
                    });
                }
            });
        let bytes = builder.finish();
        bytes[crate::firewall::netlink::NLMSG_HDRLEN + NFGENMSG_LEN..].to_vec()
    }

    #[test]
    fn rule_counters_carry_their_set_and_verdict() {
        let drop = rule_counter(&rule_message("ban4", Some(NF_DROP), false)).expect("counter");
        assert_eq!(
            drop,
            RuleCounter {
                chain: "filter".into(),
                set: Some("ban4".into()),
                verdict: RuleVerdict::Drop,
                packets: 2,
                bytes: 120,
            }
        );
        let accept = rule_counter(&rule_message("allow6", Some(NF_ACCEPT), false));
        assert_eq!(accept.map(|c| c.verdict), Some(RuleVerdict::Accept));
        let reject = rule_counter(&rule_message("bannet6", None, true));
        assert_eq!(reject.map(|c| c.verdict), Some(RuleVerdict::Reject));
        let message = rule_message("ban4", Some(NF_DROP), false);
        for cut in 0..message.len() {
            // Whatever a damaged message holds, reading it never panics.
            let _ = rule_counter(&message[..cut]);
        }
    }

    fn snapshot(generation: u32, tables: &[(u8, &str, u64)]) -> Snapshot {
        Snapshot {
            generation,
            tables: tables
                .iter()
                .map(|&(family, name, handle)| (family, name.to_string(), handle))
                .collect(),
        }
    }

    #[test]
    fn only_our_own_commit_leaves_nothing_unheard() {
        let before = snapshot(7, &[(1, "orch", 3), (1, "filter", 4)]);
        let after = snapshot(8, &[(1, "orch", 9), (1, "filter", 4)]);
        assert_eq!(after.unheard_since(&before, "orch"), vec![]);
    }

    #[test]
    fn a_table_deleted_or_recreated_meanwhile_is_reported() {
        let before = snapshot(7, &[(1, "orch", 3), (1, "filter", 4), (2, "nat", 5)]);
        let after = snapshot(10, &[(1, "orch", 9), (1, "filter", 12)]);
        assert_eq!(
            after.unheard_since(&before, "orch"),
            vec![
                KernelEvent::TableDeleted {
                    family: 1,
                    table: "filter".into()
                },
                KernelEvent::TableDeleted {
                    family: 2,
                    table: "nat".into()
                },
            ]
        );
    }

    #[test]
    fn other_commits_without_a_deleted_table_are_unheard_changes() {
        let before = snapshot(u32::MAX, &[(1, "orch", 3)]);
        let after = snapshot(2, &[(1, "orch", 3), (1, "new", 4)]);
        assert_eq!(
            after.unheard_since(&before, "orch"),
            vec![KernelEvent::Unheard]
        );
    }
}
