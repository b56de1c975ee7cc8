//! How a ban is written in the fleet's JetStream KV bucket: one key per
//! (origin host, network), `<origin>.<network>` with `:` written as `_`
//! (KV keys allow `[-/_=.a-zA-Z0-9]`), and a small JSON value.
//!
//! The origin of a ban is the key's first token, never the value: the NATS
//! server lets each host write only keys under its own name, so the key is
//! the authenticated part. This module only encodes and decodes; it must
//! not talk to NATS or judge whether a ban may be applied.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::store::MAX_BAN_TEXT_BYTES;
use serde::{Deserialize, Serialize};

use crate::store::BanRecord;

/// Longest value accepted from the bucket; anything larger is refused
/// unread (a ban's value is well under 2 KiB).
pub const MAX_VALUE_BYTES: usize = 4096;

/// The value stored under a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetBan {
    /// The banned address or network, as on the key.
    pub addr: String,
    /// Unix seconds when the ban ends.
    pub expires_at: u64,
    /// Unix seconds when the origin banned it.
    pub created: u64,
    #[serde(default)]
    pub reason: String,
    /// What banned it on the origin: "manual", a jail name...
    #[serde(default)]
    pub source: String,
}

impl FleetBan {
    /// The value for this host's stored ban.
    pub fn from_record(record: &BanRecord) -> FleetBan {
        FleetBan {
            addr: record.net.to_string(),
            expires_at: record.expires,
            created: record.created,
            reason: crate::quote::cut(&record.reason, MAX_BAN_TEXT_BYTES).to_string(),
            source: crate::quote::cut(&record.source, MAX_BAN_TEXT_BYTES).to_string(),
        }
    }
}

/// A decoded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetKey {
    pub origin: String,
    pub net: IpNet,
}

/// Why a key or value from the bucket was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("key {0:?} is not <origin>.<address>")]
    Key(String),
    #[error("value of {key:?} is not a ban: {message}")]
    Value { key: String, message: String },
}

/// The key for `origin`'s ban of `net`.
pub fn key(origin: &str, net: &IpNet) -> String {
    format!("{origin}.{}", net.to_string().replace(':', "_"))
}

/// Splits a key into origin and network; the network must be written in
/// its canonical form (host bits zero), as [`key`] writes it.
pub fn parse_key(key: &str) -> Result<FleetKey, RecordError> {
    let bad = || RecordError::Key(key.to_string());
    let (origin, addr) = key.split_once('.').ok_or_else(bad)?;
    if origin.is_empty() {
        return Err(bad());
    }
    let text = addr.replace('_', ":");
    let net: IpNet = match text.parse() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<IpAddr>().map_err(|_| bad())?),
    };
    if net.trunc() != net {
        return Err(bad());
    }
    // `::ffff:a.b.c.d` is an IPv4 address written as IPv6: as a key it
    // would dodge every IPv4 rule (minimum prefix, allowlist, own
    // addresses), and `key` never writes it, so it is refused.
    if let IpNet::V6(v6) = net
        && v6.addr().to_ipv4_mapped().is_some()
    {
        return Err(bad());
    }
    Ok(FleetKey {
        origin: origin.to_string(),
        net,
    })
}

/// The JSON value for a ban.
pub fn encode_value(ban: &FleetBan) -> Vec<u8> {
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_vec(ban).unwrap_or_default()
}

/// Reads a value, checking that it names the same network as its key.
pub fn decode_value(key: &FleetKey, raw_key: &str, bytes: &[u8]) -> Result<FleetBan, RecordError> {
    let bad = |message: String| RecordError::Value {
        key: raw_key.to_string(),
        message,
    };
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(bad(format!("{} bytes is too large", bytes.len())));
    }
    let mut ban: FleetBan = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    // Another host's text is kept no longer than a local ban's.
    for text in [&mut ban.reason, &mut ban.source] {
        let kept = crate::quote::cut(text, MAX_BAN_TEXT_BYTES).len();
        text.truncate(kept);
    }
    let named: Result<IpNet, _> = ban
        .addr
        .parse::<IpNet>()
        .or_else(|_| ban.addr.parse::<IpAddr>().map(IpNet::from));
    match named {
        Ok(net) if net == key.net => Ok(ban),
        _ => Err(bad(format!(
            "it names {:?}, the key names {}",
            ban.addr, key.net
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("test literal")
    }

    #[test]
    fn keys_round_trip_for_both_families() {
        for (origin, text, expected) in [
            ("srv1", "192.0.2.7/32", "srv1.192.0.2.7/32"),
            ("gw-2", "198.51.100.0/24", "gw-2.198.51.100.0/24"),
            ("srv_3", "2001:db8::1/128", "srv_3.2001_db8__1/128"),
        ] {
            let written = key(origin, &net(text));
            assert_eq!(written, expected);
            assert_eq!(
                parse_key(&written),
                Ok(FleetKey {
                    origin: origin.to_string(),
                    net: net(text)
                })
            );
        }
        // A bare address is read as a single-address network.
        assert_eq!(
            parse_key("a.192.0.2.9").map(|k| k.net),
            Ok(net("192.0.2.9/32"))
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "nodot",
            ".192.0.2.1/32",
            "srv1.not-an-address",
            "srv1.192.0.2.7/24",
            "srv1.192.0.2.0/33",
            // IPv4 written as IPv6 would dodge the IPv4 safety rules.
            "srv1.__ffff_192.0.2.7/128",
            "srv1.__ffff_c000_207/128",
            "srv1.__ffff_0.0.0.0/96",
        ] {
            assert!(parse_key(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn values_must_name_their_key() {
        let key_text = "srv1.192.0.2.7/32";
        let fleet_key = parse_key(key_text).expect("key");
        let ban = FleetBan {
            addr: "192.0.2.7/32".into(),
            expires_at: 2_000_000_000,
            created: 1_900_000_000,
            reason: "sshd: 5 failures".into(),
            source: "sshd".into(),
        };
        let bytes = encode_value(&ban);
        assert_eq!(decode_value(&fleet_key, key_text, &bytes), Ok(ban.clone()));
        let other = FleetBan {
            addr: "192.0.2.8".into(),
            ..ban
        };
        let error =
            decode_value(&fleet_key, key_text, &encode_value(&other)).expect_err("mismatch");
        assert!(error.to_string().contains("the key names 192.0.2.7/32"));
        assert!(decode_value(&fleet_key, key_text, b"{not json").is_err());
        let wordy = FleetBan {
            addr: "192.0.2.7/32".into(),
            reason: "é".repeat(1000),
            source: "s".repeat(1000),
            ..other
        };
        let decoded = decode_value(&fleet_key, key_text, &encode_value(&wordy)).expect("decoded");
        assert_eq!(decoded.reason, "é".repeat(MAX_BAN_TEXT_BYTES / 2));
        assert_eq!(decoded.source.len(), MAX_BAN_TEXT_BYTES);
        assert!(decode_value(&fleet_key, key_text, &vec![b' '; 5000]).is_err());
    }
}
