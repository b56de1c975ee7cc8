//! The nfnetlink plumbing shared by the kernel event monitor and the table
//! probe: opening a `NETLINK_NETFILTER` socket, building nftables request
//! messages, and walking the attributes of what the kernel sends back.
//!
//! Everything received is untrusted bytes: the readers here return `None`
//! on anything short or malformed and never panic. This module knows the
//! wire format only; it must not decide what a message means.

use std::borrow::Cow;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nftables message type.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFPROTO_INET`: the family of orch's table.
pub const NFPROTO_INET: u8 = 1;

pub const NLMSG_HDRLEN: usize = 16;
pub const NFGENMSG_LEN: usize = 4;
pub const NLA_HDRLEN: usize = 4;
/// Clears `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` from an attribute type.
pub const NLA_TYPE_MASK: u16 = 0x3fff;
/// Marks an attribute whose value is more attributes.
pub const NLA_F_NESTED: u16 = 0x8000;

// nftables message types (the low byte) and attributes both the monitor and
// the probe read, from <linux/netfilter/nf_tables.h>.
pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_NEWGEN: u16 = 15;
/// `NFTA_TABLE_NAME`, and `NFTA_{CHAIN,RULE,SET,SET_ELEM_LIST,OBJ,
/// FLOWTABLE}_TABLE`: all attribute 1.
pub const NFTA_TABLE: u16 = 1;
/// The generation id in a NEWGEN message.
pub const NFTA_GEN_ID: u16 = 1;

// Netlink's own message types and header flags, from <linux/netlink.h>.
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;

/// Opens a `NETLINK_NETFILTER` socket in the calling thread's network
/// namespace, bound to a port id the kernel picks.
pub fn open_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly created descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero sockaddr_nl is valid; nl_pid 0 lets the kernel
    // pick a unique port id, and no groups are joined here.
    let mut address: libc::sockaddr_nl = unsafe { mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `address` is a valid sockaddr_nl of the length given.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const address).cast::<libc::sockaddr>(),
            socklen_of::<libc::sockaddr_nl>(),
        )
    };
    if bound < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

pub fn socklen_of<T>() -> libc::socklen_t {
    // Socket address structs are a few bytes: the cast cannot truncate.
    mem::size_of::<T>() as libc::socklen_t
}

pub fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a c_int that outlives the call.
    let result = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            socklen_of::<libc::c_int>(),
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One nftables netlink message under construction: header, `nfgenmsg`,
/// then attributes. Lengths are filled in as attributes close.
pub struct MessageBuilder {
    bytes: Vec<u8>,
}

impl MessageBuilder {
    /// Starts a message of nftables type `msg` (the low byte) about
    /// `family`.
    pub fn new(msg: u16, flags: u16, seq: u32, family: u8) -> Self {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        bytes.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | msg).to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        bytes.extend_from_slice(&[family, 0, 0, 0]); // nfgenmsg, version 0
        MessageBuilder { bytes }
    }

    /// Appends an attribute holding `value`.
    pub fn attribute(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let start = self.open(kind);
        self.bytes.extend_from_slice(value);
        self.close(start);
        self
    }

    /// Appends a NUL-terminated string attribute.
    pub fn string(&mut self, kind: u16, text: &str) -> &mut Self {
        let start = self.open(kind);
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.push(0);
        self.close(start);
        self
    }

    /// Appends a nested attribute whose contents `fill` writes.
    pub fn nested(&mut self, kind: u16, fill: impl FnOnce(&mut MessageBuilder)) -> &mut Self {
        let start = self.open(kind | NLA_F_NESTED);
        fill(self);
        self.close(start);
        self
    }

    /// The finished message.
    pub fn finish(mut self) -> Vec<u8> {
        let length = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        self.bytes[..4].copy_from_slice(&length.to_ne_bytes());
        self.bytes
    }

    fn open(&mut self, kind: u16) -> usize {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        start
    }

    fn close(&mut self, start: usize) {
        // Attributes orch writes are far below 64 KiB.
        let length = u16::try_from(self.bytes.len() - start).unwrap_or(u16::MAX);
        self.bytes[start..start + 2].copy_from_slice(&length.to_ne_bytes());
        self.bytes.resize(align4(self.bytes.len()), 0);
    }
}

/// One received netlink message: its header fields and the payload after
/// the header.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub kind: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Iterates the messages of one datagram. Stops at a message whose length
/// is impossible (nothing after it can be located).
pub struct Messages<'a>(pub &'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Received<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.0;
        let (Some(length), Some(kind), Some(seq)) = (
            read_u32_ne(rest, 0),
            read_u16_ne(rest, 4),
            read_u32_ne(rest, 8),
        ) else {
            self.0 = &[];
            return None;
        };
        let length = length as usize;
        let Some(payload) = rest.get(NLMSG_HDRLEN..length) else {
            self.0 = &[];
            return None;
        };
        self.0 = rest.get(align4(length)..).unwrap_or(&[]);
        Some(Received { kind, seq, payload })
    }
}

/// Iterates the attributes of a message or of a nested attribute: (type
/// without flags, payload). Stops at the first malformed attribute.
pub struct Attributes<'a>(pub &'a [u8]);

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.0;
        let (Some(length), Some(kind)) = (read_u16_ne(rest, 0), read_u16_ne(rest, 2)) else {
            self.0 = &[];
            return None;
        };
        let length = usize::from(length);
        let Some(value) = rest.get(NLA_HDRLEN..length) else {
            // Shorter than its header, or longer than what is left.
            self.0 = &[];
            return None;
        };
        self.0 = rest.get(align4(length)..).unwrap_or(&[]);
        Some((kind & NLA_TYPE_MASK, value))
    }
}

/// Bytes up to the first NUL (or all of them), as text.
pub fn c_string(value: &[u8]) -> Cow<'_, str> {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
}

pub fn align4(length: usize) -> usize {
    length.saturating_add(3) & !3
}

pub fn read_u16_ne(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

pub fn read_u32_ne(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

pub fn read_i32_ne(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

pub fn read_u64_be(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

pub fn read_u32_be(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_messages_parse_back() {
        let mut builder = MessageBuilder::new(13, NLM_F_REQUEST, 9, NFPROTO_INET);
        builder.string(1, "orch").nested(3, |list| {
            list.nested(1, |element| {
                element.attribute(1, &[192, 0, 2, 1]);
            });
        });
        let bytes = builder.finish();
        assert_eq!(bytes.len() % 4, 0);
        let messages: Vec<Received> = Messages(&bytes).collect();
        assert_eq!(messages.len(), 1);
        let message = messages[0];
        assert_eq!(message.kind, NFNL_SUBSYS_NFTABLES << 8 | 13);
        assert_eq!(message.seq, 9);
        assert_eq!(message.payload[0], NFPROTO_INET);
        let attributes: Vec<(u16, &[u8])> = Attributes(&message.payload[NFGENMSG_LEN..]).collect();
        assert_eq!(attributes.len(), 2);
        assert_eq!(c_string(attributes[0].1), "orch");
        assert_eq!(attributes[1].0, 3, "the nested flag is masked off");
        let (_, element) = Attributes(attributes[1].1).next().expect("list element");
        let (_, key) = Attributes(element).next().expect("key");
        assert_eq!(key, [192, 0, 2, 1]);
    }

    #[test]
    fn truncated_input_ends_iteration() {
        let bytes = MessageBuilder::new(1, 0, 1, NFPROTO_INET).finish();
        assert_eq!(Messages(&bytes[..10]).count(), 0);
        assert_eq!(Attributes(&[8, 0, 1, 0, 1]).count(), 0);
    }
}
