//! Kernel event monitor: turns the kernel's nftables notifications into
//! [`KernelEvent`]s.
//!
//! The kernel multicasts every committed nftables change on the netlink
//! group `NFNLGRP_NFTABLES` of `NETLINK_NETFILTER` (what `nft monitor`
//! listens to). [`KernelMonitor`] subscribes to that group in one network
//! namespace and reports, per table, that it was deleted or changed, where
//! each transaction ended and which process made it, and when the kernel
//! dropped notifications. That is all it does: it must not decide what to
//! do about an event (the daemon's reconciler does), and it never changes
//! the kernel. It only reads.
//!
//! Notifications are untrusted bytes: anything malformed is skipped, never
//! unwrapped. A bulk element load produces one notification per element, so
//! parsing allocates nothing per element event: consecutive changes to the
//! same table collapse into one [`KernelEvent::TableChanged`].

use std::borrow::Cow;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::netlink::{
    Attributes, Messages, NFGENMSG_LEN, NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN, NFT_MSG_NEWRULE,
    NFT_MSG_NEWTABLE, NFTA_GEN_ID, NFTA_TABLE, c_string, open_socket, read_u32_be, set_int_option,
    socklen_of,
};

/// One thing the kernel reported about nftables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A table was deleted (family number, name). A `flush ruleset` shows
    /// up as one per table.
    TableDeleted { family: u8, table: String },
    /// Something changed in this table (chain/set/rule/element added or
    /// removed, table added).
    TableChanged { family: u8, table: String },
    /// A transaction finished (NEWGEN): generation id, and the process that
    /// made it. `pid` is the kernel's id of the committing *thread* as seen
    /// from the initial pid namespace (`task_pid_nr`), and `process` that
    /// thread's name (`comm`, at most 15 bytes).
    TransactionEnd {
        generation: u32,
        pid: u32,
        process: String,
    },
    /// The kernel dropped events (ENOBUFS): state must be verified.
    Overrun,
    /// Changes were committed while the monitor was paused (see
    /// [`NotificationSwitch`]): state must be verified.
    Unheard,
}

/// What can go wrong opening or reading the monitor socket.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(io::Error),
    #[error("cannot subscribe to nftables notifications (needs CAP_NET_ADMIN): {0}")]
    Subscribe(io::Error),
    #[error("cannot receive nftables notifications: {0}")]
    Receive(io::Error),
}

/// `NFNLGRP_NFTABLES`: the multicast group of nftables notifications.
const NFNLGRP_NFTABLES: libc::c_int = 7;

// More nftables message types (the low byte), from
// <linux/netfilter/nf_tables.h>.
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_DELOBJ: u16 = 20;
const NFT_MSG_NEWFLOWTABLE: u16 = 22;
const NFT_MSG_DELFLOWTABLE: u16 = 24;
/// Kernels since 6.3 may notify `DESTROY*` (26..=32) where older ones
/// said `DEL*`: 26 is the table, 27..=32 chain, rule, set, element, object
/// and flowtable.
const NFT_MSG_DESTROYTABLE: u16 = 26;
const NFT_MSG_DESTROYCHAIN: u16 = 27;
const NFT_MSG_DESTROYFLOWTABLE: u16 = 32;

const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;

/// Socket receive buffer asked for: room for a bulk load's notifications
/// (roughly 100 bytes per element) before the kernel has to drop some.
const RECEIVE_BUFFER_BYTES: libc::c_int = 8 << 20;
/// The kernel batches notifications into datagrams of at most 8 KiB
/// (`NLMSG_GOODSIZE`); this leaves ample room.
const DATAGRAM_BUFFER_BYTES: usize = 64 << 10;
/// Datagrams already queued that one [`KernelMonitor::next_events`] call
/// reads after the first, so a bulk load arrives as a few events rather
/// than one call per datagram, without starving the caller.
const MAX_DATAGRAMS_PER_CALL: usize = 256;

/// A subscription to nftables notifications in one network namespace.
pub struct KernelMonitor {
    fd: OwnedFd,
    buffer: Vec<u8>,
}

impl KernelMonitor {
    /// Opens and subscribes in the calling thread's current network
    /// namespace. The socket stays in that namespace whichever thread reads
    /// it later. Needs CAP_NET_ADMIN.
    pub fn open() -> Result<KernelMonitor, MonitorError> {
        let fd = open_socket().map_err(MonitorError::Socket)?;

        // As root, SO_RCVBUFFORCE ignores net.core.rmem_max; otherwise the
        // plain option gets whatever rmem_max allows. A small buffer only
        // means earlier overruns, which are reported, so it is not fatal.
        if let Err(forced) = set_int_option(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            RECEIVE_BUFFER_BYTES,
        ) && let Err(plain) =
            set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        {
            tracing::warn!(
                "cannot enlarge the nftables monitor's receive buffer ({forced}; {plain})"
            );
        }

        set_membership(&fd, libc::NETLINK_ADD_MEMBERSHIP).map_err(MonitorError::Subscribe)?;

        Ok(KernelMonitor {
            fd,
            buffer: vec![0; DATAGRAM_BUFFER_BYTES],
        })
    }

    /// A handle that can pause and resume this subscription from another
    /// thread (see [`NotificationSwitch`]).
    pub fn switch(&self) -> io::Result<NotificationSwitch> {
        Ok(NotificationSwitch {
            fd: self.fd.try_clone()?,
        })
    }

    /// Blocks until at least one datagram arrives (or `timeout` passes:
    /// `Ok(vec![])`), returns its events in order. Datagrams already queued
    /// behind the first are read too (up to a bound), so consecutive
    /// changes to one table spread over several datagrams still collapse
    /// into one [`KernelEvent::TableChanged`]. `Some(Duration::ZERO)` only
    /// takes what is already queued.
    pub fn next_events(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Vec<KernelEvent>, MonitorError> {
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let mut events = Vec::new();
        let mut datagrams = 0;
        loop {
            match self.receive() {
                Ok(Some(length)) => {
                    datagrams += 1;
                    let fits = length.min(self.buffer.len());
                    parse_into(&self.buffer[..fits], &mut events);
                    if length > self.buffer.len() {
                        // Cannot happen with today's kernels (datagrams of
                        // at most 8 KiB); if it does, the rest is lost.
                        tracing::warn!(length, "nftables notification truncated");
                        push_overrun(&mut events);
                    }
                    if datagrams > MAX_DATAGRAMS_PER_CALL {
                        return Ok(events);
                    }
                }
                // Read from a sender other than the kernel: ignored.
                Ok(None) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => {
                    datagrams += 1;
                    push_overrun(&mut events);
                }
                Err(err) if err.raw_os_error() == Some(libc::EINTR) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if datagrams > 0 {
                        return Ok(events);
                    }
                    if !self.wait_readable(deadline)? {
                        return Ok(events);
                    }
                }
                Err(err) => return Err(MonitorError::Receive(err)),
            }
        }
    }

    /// Reads one datagram without blocking. `Ok(Some(length))` is its full
    /// length (which may exceed the buffer), `Ok(None)` a datagram not sent
    /// by the kernel.
    fn receive(&mut self) -> io::Result<Option<usize>> {
        // SAFETY: all-zero is a valid sockaddr_nl.
        let mut sender: libc::sockaddr_nl = unsafe { mem::zeroed() };
        let mut sender_length = socklen_of::<libc::sockaddr_nl>();
        // SAFETY: the buffer and address are valid for the lengths given.
        // MSG_TRUNC makes netlink return the datagram's full length.
        let received = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                self.buffer.as_mut_ptr().cast(),
                self.buffer.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                (&raw mut sender).cast::<libc::sockaddr>(),
                &mut sender_length,
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        if sender.nl_pid != 0 {
            return Ok(None);
        }
        Ok(Some(received.unsigned_abs()))
    }

    /// Waits until the socket is readable (or has an error pending).
    /// `Ok(false)` when `deadline` passed first.
    fn wait_readable(&self, deadline: Option<Instant>) -> Result<bool, MonitorError> {
        loop {
            let timeout_ms = match deadline {
                None => -1,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Round up so a sub-millisecond rest does not spin.
                    libc::c_int::try_from(left.as_micros().div_ceil(1000))
                        .unwrap_or(libc::c_int::MAX)
                }
            };
            let mut poll_fd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll_fd, 1, timeout_ms) };
            if ready > 0 {
                return Ok(true);
            }
            if ready == 0 {
                if timeout_ms == 0 {
                    return Ok(false);
                }
                continue;
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(MonitorError::Receive(err));
            }
        }
    }
}

/// Pauses and resumes a monitor's subscription, for orch's own bulk
/// changes.
///
/// While any socket in the namespace listens to `NFNLGRP_NFTABLES`, the
/// kernel builds one notification per set element a transaction adds or
/// removes, in the committing process: loading a million bans took 16 s
/// with a listener against 4.5 s without. Leaving the group for the length
/// of one bulk transaction skips that work. Whatever other processes commit
/// meanwhile goes unseen; the caller finds out from the generation counter
/// and checks instead.
#[derive(Debug)]
pub struct NotificationSwitch {
    fd: OwnedFd,
}

impl NotificationSwitch {
    /// Stops notifications to the monitor (the kernel stops building them
    /// when no one else listens).
    pub fn pause(&self) -> io::Result<()> {
        set_membership(&self.fd, libc::NETLINK_DROP_MEMBERSHIP)
    }

    /// Subscribes the monitor again.
    pub fn resume(&self) -> io::Result<()> {
        set_membership(&self.fd, libc::NETLINK_ADD_MEMBERSHIP)
    }
}

/// Joins (`NETLINK_ADD_MEMBERSHIP`) or leaves (`NETLINK_DROP_MEMBERSHIP`)
/// the nftables notification group.
fn set_membership(fd: &OwnedFd, option: libc::c_int) -> io::Result<()> {
    set_int_option(fd, libc::SOL_NETLINK, option, NFNLGRP_NFTABLES)
}

impl AsFd for KernelMonitor {
    /// For integrating with an event loop: readable when
    /// [`KernelMonitor::next_events`] has something to return.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for KernelMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::fmt::Debug for KernelMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelMonitor")
            .field("fd", &self.fd.as_raw_fd())
            .finish_non_exhaustive()
    }
}

/// Pure parser for one datagram, unit-tested with hand-built byte buffers.
/// Malformed messages are skipped; a message whose length is impossible
/// ends the parse (nothing after it can be located).
pub fn parse_datagram(bytes: &[u8]) -> Vec<KernelEvent> {
    let mut events = Vec::new();
    parse_into(bytes, &mut events);
    events
}

/// Appends the events of one datagram to `events`, coalescing with what is
/// already there.
fn parse_into(bytes: &[u8], events: &mut Vec<KernelEvent>) {
    for message in Messages(bytes) {
        parse_message(message.kind, message.payload, events);
    }
}

/// One netlink message: `kind` from its header, `payload` after it.
fn parse_message(kind: u16, payload: &[u8], events: &mut Vec<KernelEvent>) {
    // Netlink's own types (NOOP, ERROR, DONE, OVERRUN) are below 0x100 and
    // so never in the nftables subsystem.
    if kind >> 8 != NFNL_SUBSYS_NFTABLES {
        return;
    }
    let (Some(&family), Some(attributes)) = (payload.first(), payload.get(NFGENMSG_LEN..)) else {
        return;
    };
    match kind & 0xff {
        NFT_MSG_NEWGEN => {
            if let Some(event) = transaction_end(attributes) {
                events.push(event);
            }
        }
        NFT_MSG_DELTABLE | NFT_MSG_DESTROYTABLE => {
            if let Some(table) = table_name(attributes) {
                events.push(KernelEvent::TableDeleted {
                    family,
                    table: table.into_owned(),
                });
            }
        }
        NFT_MSG_NEWTABLE
        | NFT_MSG_NEWCHAIN
        | NFT_MSG_DELCHAIN
        | NFT_MSG_NEWRULE
        | NFT_MSG_DELRULE
        | NFT_MSG_NEWSET
        | NFT_MSG_DELSET
        | NFT_MSG_NEWSETELEM
        | NFT_MSG_DELSETELEM
        | NFT_MSG_NEWOBJ
        | NFT_MSG_DELOBJ
        | NFT_MSG_NEWFLOWTABLE
        | NFT_MSG_DELFLOWTABLE
        | NFT_MSG_DESTROYCHAIN..=NFT_MSG_DESTROYFLOWTABLE => {
            let Some(table) = table_name(attributes) else {
                return;
            };
            if let Some(KernelEvent::TableChanged {
                family: last_family,
                table: last_table,
            }) = events.last()
                && *last_family == family
                && last_table.as_str() == table
            {
                return;
            }
            events.push(KernelEvent::TableChanged {
                family,
                table: table.into_owned(),
            });
        }
        // GET* requests, traces and anything newer: nothing to report.
        _ => {}
    }
}

fn push_overrun(events: &mut Vec<KernelEvent>) {
    if events.last() != Some(&KernelEvent::Overrun) {
        events.push(KernelEvent::Overrun);
    }
}

/// The NEWGEN message: the generation id is required, the process (added
/// in Linux 4.12) is optional.
fn transaction_end(attributes: &[u8]) -> Option<KernelEvent> {
    let mut generation = None;
    let mut pid = 0;
    let mut process = Cow::Borrowed("");
    for (kind, value) in Attributes(attributes) {
        match kind {
            NFTA_GEN_ID => generation = read_u32_be(value),
            NFTA_GEN_PROC_PID => pid = read_u32_be(value).unwrap_or(0),
            NFTA_GEN_PROC_NAME => process = c_string(value),
            _ => {}
        }
    }
    Some(KernelEvent::TransactionEnd {
        generation: generation?,
        pid,
        process: process.into_owned(),
    })
}

/// The table a message is about: attribute 1, a NUL-terminated string.
/// Borrowed from the datagram unless it is not UTF-8.
fn table_name(attributes: &[u8]) -> Option<Cow<'_, str>> {
    let (_, value) = Attributes(attributes).find(|&(kind, _)| kind == NFTA_TABLE)?;
    let name = c_string(value);
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::super::netlink::{MessageBuilder, NLMSG_HDRLEN, align4};
    use super::*;

    const INET: u8 = 1;
    const IPV4: u8 = 2;

    /// One attribute of a hand-built test message.
    enum Attr<'a> {
        Bytes(u16, &'a [u8]),
        Text(u16, &'a str),
    }

    fn attribute(kind: u16, value: &[u8]) -> Attr<'_> {
        Attr::Bytes(kind, value)
    }

    fn string(kind: u16, text: &str) -> Attr<'_> {
        Attr::Text(kind, text)
    }

    fn message(msg: u16, family: u8, attributes: &[Attr]) -> Vec<u8> {
        let mut builder = MessageBuilder::new(msg, 0, 7, family);
        for attr in attributes {
            match attr {
                Attr::Bytes(kind, value) => builder.attribute(*kind, value),
                Attr::Text(kind, text) => builder.string(*kind, text),
            };
        }
        builder.finish()
    }

    /// A table-scoped message: attribute 1 is the table, plus a second
    /// attribute (a chain, set or element list) the parser must skip.
    fn about(msg: u16, family: u8, table: &str) -> Vec<u8> {
        message(
            msg,
            family,
            &[string(NFTA_TABLE, table), string(2, "thing")],
        )
    }

    fn newgen(generation: u32, pid: u32, process: &str) -> Vec<u8> {
        message(
            NFT_MSG_NEWGEN,
            0,
            &[
                attribute(NFTA_GEN_ID, &generation.to_be_bytes()),
                attribute(NFTA_GEN_PROC_PID, &pid.to_be_bytes()),
                string(NFTA_GEN_PROC_NAME, process),
            ],
        )
    }

    fn deleted(family: u8, table: &str) -> KernelEvent {
        KernelEvent::TableDeleted {
            family,
            table: table.into(),
        }
    }

    fn changed(family: u8, table: &str) -> KernelEvent {
        KernelEvent::TableChanged {
            family,
            table: table.into(),
        }
    }

    #[test]
    fn table_delete_is_reported() {
        let bytes = message(NFT_MSG_DELTABLE, INET, &[string(NFTA_TABLE, "orch")]);
        assert_eq!(parse_datagram(&bytes), vec![deleted(INET, "orch")]);
        let bytes = message(NFT_MSG_DESTROYTABLE, IPV4, &[string(NFTA_TABLE, "orch")]);
        assert_eq!(parse_datagram(&bytes), vec![deleted(IPV4, "orch")]);
    }

    #[test]
    fn newgen_reports_generation_pid_and_process() {
        assert_eq!(
            parse_datagram(&newgen(0x0102_0304, 4242, "nft")),
            vec![KernelEvent::TransactionEnd {
                generation: 0x0102_0304,
                pid: 4242,
                process: "nft".into(),
            }]
        );
        // Kernels before 4.12 send the generation only.
        let bare = message(
            NFT_MSG_NEWGEN,
            0,
            &[attribute(NFTA_GEN_ID, &9u32.to_be_bytes())],
        );
        assert_eq!(
            parse_datagram(&bare),
            vec![KernelEvent::TransactionEnd {
                generation: 9,
                pid: 0,
                process: String::new(),
            }]
        );
    }

    #[test]
    fn flush_ruleset_reports_every_table_in_order() {
        let bytes = [
            about(NFT_MSG_DELRULE, INET, "orch"),
            about(NFT_MSG_DELCHAIN, INET, "orch"),
            about(NFT_MSG_DELSET, INET, "orch"),
            message(NFT_MSG_DELTABLE, INET, &[string(NFTA_TABLE, "orch")]),
            about(NFT_MSG_DELCHAIN, IPV4, "filter"),
            message(NFT_MSG_DELTABLE, IPV4, &[string(NFTA_TABLE, "filter")]),
            newgen(12, 77, "nft"),
        ]
        .concat();
        assert_eq!(
            parse_datagram(&bytes),
            vec![
                changed(INET, "orch"),
                deleted(INET, "orch"),
                changed(IPV4, "filter"),
                deleted(IPV4, "filter"),
                KernelEvent::TransactionEnd {
                    generation: 12,
                    pid: 77,
                    process: "nft".into(),
                },
            ]
        );
    }

    #[test]
    fn element_events_are_coalesced_per_table() {
        let mut parts = Vec::new();
        parts.push(about(NFT_MSG_NEWTABLE, INET, "orch"));
        for _ in 0..500 {
            parts.push(about(NFT_MSG_NEWSETELEM, INET, "orch"));
        }
        parts.push(about(NFT_MSG_NEWSETELEM, IPV4, "orch")); // other family
        parts.push(about(NFT_MSG_DELSETELEM, INET, "other"));
        parts.push(about(NFT_MSG_DELSETELEM, INET, "other"));
        parts.push(about(NFT_MSG_DELSETELEM, INET, "orch"));
        parts.push(newgen(1, 1, "orch"));
        parts.push(about(NFT_MSG_NEWSETELEM, INET, "orch"));
        assert_eq!(
            parse_datagram(&parts.concat()),
            vec![
                changed(INET, "orch"),
                changed(IPV4, "orch"),
                changed(INET, "other"),
                changed(INET, "orch"),
                KernelEvent::TransactionEnd {
                    generation: 1,
                    pid: 1,
                    process: "orch".into(),
                },
                changed(INET, "orch"),
            ]
        );
    }

    #[test]
    fn coalescing_continues_across_datagrams() {
        let mut events = Vec::new();
        parse_into(&about(NFT_MSG_NEWSETELEM, INET, "orch"), &mut events);
        parse_into(&about(NFT_MSG_NEWSETELEM, INET, "orch"), &mut events);
        push_overrun(&mut events);
        push_overrun(&mut events);
        parse_into(&about(NFT_MSG_NEWSETELEM, INET, "orch"), &mut events);
        assert_eq!(
            events,
            vec![
                changed(INET, "orch"),
                KernelEvent::Overrun,
                changed(INET, "orch")
            ]
        );
    }

    #[test]
    fn flags_on_attribute_types_are_masked() {
        // NLA_F_NESTED | NLA_F_NET_BYTEORDER on the table attribute.
        let bytes = message(
            NFT_MSG_NEWCHAIN,
            INET,
            &[string(0xc000 | NFTA_TABLE, "orch")],
        );
        assert_eq!(parse_datagram(&bytes), vec![changed(INET, "orch")]);
    }

    #[test]
    fn other_messages_are_ignored() {
        let get = about(1, INET, "orch"); // NFT_MSG_GETTABLE
        let trace = about(17, INET, "orch"); // NFT_MSG_TRACE
        let mut other_subsystem = about(NFT_MSG_DELTABLE, INET, "orch");
        other_subsystem[4..6].copy_from_slice(&(1u16 << 8 | 2).to_ne_bytes()); // ctnetlink
        let mut netlink_done = about(NFT_MSG_DELTABLE, INET, "orch");
        netlink_done[4..6].copy_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
        let bytes = [get, trace, other_subsystem, netlink_done].concat();
        assert_eq!(parse_datagram(&bytes), vec![]);
    }

    #[test]
    fn malformed_messages_are_skipped() {
        // No table name, an empty one, no nfgenmsg, NEWGEN without an id.
        let no_name = message(NFT_MSG_DELTABLE, INET, &[string(2, "chain")]);
        let empty_name = message(NFT_MSG_DELTABLE, INET, &[string(NFTA_TABLE, "")]);
        let mut no_nfgenmsg = about(NFT_MSG_DELTABLE, INET, "orch");
        no_nfgenmsg.truncate(NLMSG_HDRLEN + 2);
        no_nfgenmsg[0..4].copy_from_slice(&((NLMSG_HDRLEN + 2) as u32).to_ne_bytes());
        no_nfgenmsg.resize(align4(no_nfgenmsg.len()), 0);
        let no_id = message(
            NFT_MSG_NEWGEN,
            0,
            &[attribute(NFTA_GEN_PROC_PID, &1u32.to_be_bytes())],
        );
        // An attribute claiming more bytes than the message has.
        let mut overlong_attribute = about(NFT_MSG_DELTABLE, INET, "orch");
        overlong_attribute[20..22].copy_from_slice(&200u16.to_ne_bytes());
        // An attribute shorter than its own header.
        let mut short_attribute = about(NFT_MSG_DELTABLE, INET, "orch");
        short_attribute[20..22].copy_from_slice(&2u16.to_ne_bytes());
        // A generation id of two bytes.
        let short_id = message(NFT_MSG_NEWGEN, 0, &[attribute(NFTA_GEN_ID, &[0, 1])]);
        let good = message(NFT_MSG_DELTABLE, INET, &[string(NFTA_TABLE, "orch")]);
        let bytes = [
            no_name,
            empty_name,
            no_nfgenmsg,
            no_id,
            overlong_attribute,
            short_attribute,
            short_id,
            good,
        ]
        .concat();
        assert_eq!(parse_datagram(&bytes), vec![deleted(INET, "orch")]);
    }

    #[test]
    fn impossible_message_lengths_end_the_datagram() {
        let good = message(NFT_MSG_DELTABLE, INET, &[string(NFTA_TABLE, "orch")]);
        for bad_length in [0u32, 15, 10_000, u32::MAX] {
            let mut bad = about(NFT_MSG_DELTABLE, INET, "lost");
            bad[0..4].copy_from_slice(&bad_length.to_ne_bytes());
            let bytes = [good.clone(), bad, good.clone()].concat();
            assert_eq!(parse_datagram(&bytes), vec![deleted(INET, "orch")]);
        }
    }

    #[test]
    fn every_truncation_yields_a_prefix_of_the_events() {
        let bytes = [
            about(NFT_MSG_NEWSETELEM, INET, "orch"),
            message(NFT_MSG_DELTABLE, IPV4, &[string(NFTA_TABLE, "filter")]),
            newgen(3, 33, "nft"),
        ]
        .concat();
        let all = parse_datagram(&bytes);
        assert_eq!(all.len(), 3);
        for cut in 0..bytes.len() {
            let some = parse_datagram(&bytes[..cut]);
            assert!(all.starts_with(&some), "cut at {cut}: {some:?}");
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        // A small xorshift generator: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let template = [
            about(NFT_MSG_NEWSETELEM, INET, "orch"),
            newgen(3, 33, "nft"),
        ]
        .concat();
        for _ in 0..20_000 {
            let mut bytes = template.clone();
            let flips = next() % 4 + 1;
            for _ in 0..flips {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] = next() as u8;
            }
            let cut = (next() % (bytes.len() as u64 + 1)) as usize;
            let _ = parse_datagram(&bytes[..cut]);
        }
        for length in 0..64 {
            let noise: Vec<u8> = (0..length).map(|_| next() as u8).collect();
            let _ = parse_datagram(&noise);
        }
    }

    #[test]
    fn non_utf8_table_names_are_kept_lossily() {
        let bytes = message(NFT_MSG_DELTABLE, INET, &[attribute(NFTA_TABLE, b"t\xff\0")]);
        assert_eq!(parse_datagram(&bytes), vec![deleted(INET, "t\u{fffd}")]);
    }
}
