//! Store records: the kinds of record the files hold, and the encoding and
//! decoding of one record's payload.
//!
//! Pure: it must not do any I/O, and it knows nothing of frames (length
//! and checksum, `frames.rs`) or of what replaying a record does
//! (`state.rs`).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    AllowNote, BanHistory, BanRecord, FAMILY_V4, FAMILY_V6, KIND_ALLOW, KIND_ALLOW_NOTED, KIND_BAN,
    KIND_CURSOR, KIND_DISALLOW, KIND_HISTORY, KIND_JAIL_HISTORY, KIND_SHADOW, KIND_SNAPSHOT_END,
    KIND_UNBAN, KIND_UNSHADOW, MAX_ALLOW_COMMENT_BYTES, MAX_BAN_TEXT_BYTES, MAX_TEXT_BYTES,
};
use crate::quote::cut as truncate_at_char_boundary;

/// One record as stored; strings borrow from the file buffer when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Record<'a> {
    Ban {
        net: IpNet,
        created: u64,
        expires: u64,
        /// The net's history count after this ban (absolute, so replay
        /// never has to add).
        history_count: u32,
        reason: &'a str,
        source: &'a str,
    },
    Unban {
        net: IpNet,
    },
    Allow {
        net: IpNet,
    },
    Disallow {
        net: IpNet,
    },
    /// A runtime allow with a comment and an expiry (`expires` 0: never);
    /// replaces whatever note the net had.
    AllowNoted {
        net: IpNet,
        expires: u64,
        comment: &'a str,
    },
    History {
        net: IpNet,
        count: u32,
        last_banned: u64,
    },
    /// How often the jail `jail` banned `net`, and when it last did; a
    /// count of 0 forgets it.
    JailHistory {
        jail: &'a str,
        net: IpNet,
        count: u32,
        last_banned: u64,
    },
    /// Where a log reader stopped (a jail's file position or journal
    /// cursor); an empty `value` forgets the key.
    Cursor {
        key: &'a str,
        value: &'a str,
    },
    /// This host's own ban of `net`, kept while a longer ban of another
    /// host is the one in force (the active ban).
    Shadow {
        net: IpNet,
        created: u64,
        expires: u64,
        reason: &'a str,
        source: &'a str,
    },
    /// The shadowed own ban of `net` is gone (in force again, or lifted).
    Unshadow {
        net: IpNet,
    },
    /// Last record of a snapshot: proves the file is complete.
    SnapshotEnd {
        record_count: u64,
    },
}

pub(super) fn ban_record_payload(record: &BanRecord, history_count: u32) -> Record<'_> {
    Record::Ban {
        net: record.net,
        created: record.created,
        expires: record.expires,
        history_count,
        reason: &record.reason,
        source: &record.source,
    }
}

pub(super) fn shadow_record(record: &BanRecord) -> Record<'_> {
    Record::Shadow {
        net: record.net,
        created: record.created,
        expires: record.expires,
        reason: &record.reason,
        source: &record.source,
    }
}

pub(super) fn allow_noted_record(net: IpNet, note: &AllowNote) -> Record<'_> {
    Record::AllowNoted {
        net,
        expires: note.expires.unwrap_or(0),
        comment: &note.comment,
    }
}

pub(super) fn history_record(net: IpNet, history: BanHistory) -> Record<'static> {
    Record::History {
        net,
        count: history.count,
        last_banned: history.last_banned,
    }
}

pub(super) fn jail_history_record(jail: &str, net: IpNet, history: BanHistory) -> Record<'_> {
    Record::JailHistory {
        jail,
        net,
        count: history.count,
        last_banned: history.last_banned,
    }
}

pub(super) fn encode_payload(out: &mut Vec<u8>, record: &Record<'_>) {
    match record {
        Record::Ban {
            net,
            created,
            expires,
            history_count,
            reason,
            source,
        } => {
            out.push(KIND_BAN);
            encode_net(out, net);
            out.extend_from_slice(&created.to_le_bytes());
            out.extend_from_slice(&expires.to_le_bytes());
            out.extend_from_slice(&history_count.to_le_bytes());
            encode_text(out, reason, MAX_BAN_TEXT_BYTES);
            encode_text(out, source, MAX_BAN_TEXT_BYTES);
        }
        Record::Unban { net } => encode_net_record(out, KIND_UNBAN, net),
        Record::Allow { net } => encode_net_record(out, KIND_ALLOW, net),
        Record::Disallow { net } => encode_net_record(out, KIND_DISALLOW, net),
        Record::AllowNoted {
            net,
            expires,
            comment,
        } => {
            out.push(KIND_ALLOW_NOTED);
            encode_net(out, net);
            out.extend_from_slice(&expires.to_le_bytes());
            encode_text(out, comment, MAX_ALLOW_COMMENT_BYTES);
        }
        Record::History {
            net,
            count,
            last_banned,
        } => {
            out.push(KIND_HISTORY);
            encode_net(out, net);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&last_banned.to_le_bytes());
        }
        Record::Shadow {
            net,
            created,
            expires,
            reason,
            source,
        } => {
            out.push(KIND_SHADOW);
            encode_net(out, net);
            out.extend_from_slice(&created.to_le_bytes());
            out.extend_from_slice(&expires.to_le_bytes());
            encode_text(out, reason, MAX_BAN_TEXT_BYTES);
            encode_text(out, source, MAX_BAN_TEXT_BYTES);
        }
        Record::Unshadow { net } => encode_net_record(out, KIND_UNSHADOW, net),
        Record::JailHistory {
            jail,
            net,
            count,
            last_banned,
        } => {
            out.push(KIND_JAIL_HISTORY);
            encode_net(out, net);
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&last_banned.to_le_bytes());
            encode_text(out, jail, MAX_BAN_TEXT_BYTES);
        }
        Record::Cursor { key, value } => {
            out.push(KIND_CURSOR);
            encode_text(out, key, MAX_TEXT_BYTES);
            encode_text(out, value, MAX_TEXT_BYTES);
        }
        Record::SnapshotEnd { record_count } => {
            out.push(KIND_SNAPSHOT_END);
            out.extend_from_slice(&record_count.to_le_bytes());
        }
    }
}

fn encode_net_record(out: &mut Vec<u8>, kind: u8, net: &IpNet) {
    out.push(kind);
    encode_net(out, net);
}

fn encode_net(out: &mut Vec<u8>, net: &IpNet) {
    match net {
        IpNet::V4(v4) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&v4.addr().octets());
        }
        IpNet::V6(v6) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&v6.addr().octets());
        }
    }
    out.push(net.prefix_len());
}

fn encode_text(out: &mut Vec<u8>, text: &str, limit: usize) {
    let kept = truncate_at_char_boundary(text, limit);
    out.extend_from_slice(&(kept.len() as u16).to_le_bytes());
    out.extend_from_slice(kept.as_bytes());
}

/// Cursor over one record payload; every read is bounds-checked. The
/// methods are forced inline: they run for every field of a million-record
/// load, and inlining them measurably speeds up the decoding pass.
pub(super) struct PayloadReader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> PayloadReader<'a> {
    #[inline(always)]
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| {
            format!(
                "record payload ends early (needs {len} bytes at {})",
                self.pos
            )
        })?;
        let taken = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let taken = self.take(N)?;
        taken.try_into().map_err(|_| format!("expected {N} bytes"))
    }

    #[inline(always)]
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    #[inline(always)]
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    pub(super) fn net(&mut self) -> Result<IpNet, String> {
        match self.u8()? {
            FAMILY_V4 => {
                let address = Ipv4Addr::from(self.array::<4>()?);
                let prefix_len = self.u8()?;
                Ipv4Net::new(address, prefix_len)
                    .map(IpNet::V4)
                    .map_err(|_| format!("invalid IPv4 prefix length {prefix_len}"))
            }
            FAMILY_V6 => {
                let address = Ipv6Addr::from(self.array::<16>()?);
                let prefix_len = self.u8()?;
                Ipv6Net::new(address, prefix_len)
                    .map(IpNet::V6)
                    .map_err(|_| format!("invalid IPv6 prefix length {prefix_len}"))
            }
            family => Err(format!("unknown address family {family}")),
        }
    }

    #[inline(always)]
    fn text(&mut self) -> Result<&'a str, String> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| "text is not valid UTF-8".to_string())
    }

    fn finish(self) -> Result<(), String> {
        let trailing = self.bytes.len() - self.pos;
        if trailing == 0 {
            Ok(())
        } else {
            Err(format!("{trailing} unexpected trailing bytes in record"))
        }
    }
}

pub(super) fn decode_payload(payload: &[u8]) -> Result<Record<'_>, String> {
    let mut reader = PayloadReader {
        bytes: payload,
        pos: 0,
    };
    let record = match reader.u8()? {
        KIND_BAN => Record::Ban {
            net: reader.net()?,
            created: reader.u64()?,
            expires: reader.u64()?,
            history_count: reader.u32()?,
            reason: reader.text()?,
            source: reader.text()?,
        },
        KIND_UNBAN => Record::Unban { net: reader.net()? },
        KIND_ALLOW => Record::Allow { net: reader.net()? },
        KIND_DISALLOW => Record::Disallow { net: reader.net()? },
        KIND_ALLOW_NOTED => Record::AllowNoted {
            net: reader.net()?,
            expires: reader.u64()?,
            comment: reader.text()?,
        },
        KIND_HISTORY => Record::History {
            net: reader.net()?,
            count: reader.u32()?,
            last_banned: reader.u64()?,
        },
        KIND_JAIL_HISTORY => Record::JailHistory {
            net: reader.net()?,
            count: reader.u32()?,
            last_banned: reader.u64()?,
            jail: reader.text()?,
        },
        KIND_CURSOR => Record::Cursor {
            key: reader.text()?,
            value: reader.text()?,
        },
        KIND_SHADOW => Record::Shadow {
            net: reader.net()?,
            created: reader.u64()?,
            expires: reader.u64()?,
            reason: reader.text()?,
            source: reader.text()?,
        },
        KIND_UNSHADOW => Record::Unshadow { net: reader.net()? },
        KIND_SNAPSHOT_END => Record::SnapshotEnd {
            record_count: reader.u64()?,
        },
        kind => return Err(format!("unknown record kind {kind}")),
    };
    reader.finish()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FILE_HEADER_LEN;
    use crate::store::frames::{Frame, encode_record, read_frame};
    use crate::store::test_support::net;

    #[test]
    fn records_round_trip_through_encoding() {
        let records = [
            Record::Ban {
                net: net("2001:db8::/32"),
                created: 1,
                expires: u64::MAX,
                history_count: 7,
                reason: "r",
                source: "fleet:host-a",
            },
            Record::Unban {
                net: net("0.0.0.0/0"),
            },
            Record::Allow {
                net: net("::1/128"),
            },
            Record::Disallow {
                net: net("10.0.0.0/8"),
            },
            Record::AllowNoted {
                net: net("198.51.100.7/32"),
                expires: 1_700_000_000,
                comment: "vendor VPN",
            },
            Record::History {
                net: net("192.0.2.1/32"),
                count: u32::MAX,
                last_banned: 9,
            },
            Record::JailHistory {
                jail: "sshd",
                net: net("2001:db8::/64"),
                count: 3,
                last_banned: 1_700_000_000,
            },
            Record::SnapshotEnd { record_count: 7 },
        ];
        let mut encoded = vec![0; FILE_HEADER_LEN];
        for record in &records {
            encode_record(&mut encoded, record);
        }
        let mut offset = FILE_HEADER_LEN;
        for record in &records {
            let Frame::Intact { payload, next } = read_frame(&encoded, offset) else {
                panic!("frame at {offset} not intact");
            };
            assert_eq!(&decode_payload(payload).unwrap(), record);
            offset = next;
        }
        assert!(matches!(read_frame(&encoded, offset), Frame::EndOfData));
    }

    #[test]
    fn hostile_jail_history_records_are_rejected_or_cut() {
        let mut payload = Vec::new();
        let long_jail = "j".repeat(MAX_BAN_TEXT_BYTES * 4);
        encode_payload(
            &mut payload,
            &jail_history_record(&long_jail, net("192.0.2.1/32"), BanHistory::default()),
        );
        // A jail name longer than a ban's text is cut when written.
        match decode_payload(&payload).expect("decodes") {
            Record::JailHistory { jail, .. } => assert_eq!(jail.len(), MAX_BAN_TEXT_BYTES),
            other => panic!("decoded as {other:?}"),
        }
        // Cut short anywhere, or a name that is not UTF-8: refused.
        for end in 1..payload.len() {
            assert!(decode_payload(&payload[..end]).is_err(), "cut at {end}");
        }
        let last = payload.len() - 1;
        payload[last] = 0xff;
        assert!(decode_payload(&payload).is_err(), "invalid UTF-8");
    }

    #[test]
    fn bad_prefix_family_and_trailing_bytes_are_rejected() {
        assert!(decode_payload(&[KIND_UNBAN, FAMILY_V4, 1, 2, 3, 4, 33]).is_err());
        assert!(decode_payload(&[KIND_UNBAN, 5, 1, 2, 3, 4, 32]).is_err());
        assert!(decode_payload(&[KIND_UNBAN, FAMILY_V4, 1, 2, 3, 4, 32, 0]).is_err());
        assert!(decode_payload(&[KIND_UNBAN, FAMILY_V4, 1, 2]).is_err());
        assert!(decode_payload(&[]).is_err());
        assert!(decode_payload(&[KIND_UNBAN, FAMILY_V4, 1, 2, 3, 4, 32]).is_ok());
    }
}
