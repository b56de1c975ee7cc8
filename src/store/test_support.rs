//! Helpers shared by the store's unit tests (this module's and
//! `repair.rs`'s): stores with known contents, damage at known offsets.
//!
//! Test-only; it must not hold tests itself.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::frames::{Frame, read_frame, seal_record};
use super::{
    BanHistory, BanRecord, FAMILY_V4, FILE_HEADER_LEN, KIND_ALLOW, LOG_FILE, RECORD_HEADER_LEN,
    SNAPSHOT_FILE, Store, StoreError,
};

pub(super) const NOW: u64 = 1_700_000_000;
pub(super) const HOUR: u64 = 3600;

pub(super) fn net(text: &str) -> IpNet {
    text.parse().expect("test net parses")
}

pub(super) fn ban(text: &str, created: u64, expires: u64, reason: &str) -> BanRecord {
    BanRecord {
        net: net(text),
        created,
        expires,
        reason: Arc::from(reason),
        source: Arc::from("manual"),
    }
}

pub(super) fn open(dir: &Path) -> Store {
    Store::open(dir, NOW).expect("store opens")
}

pub(super) fn sorted_bans(store: &Store) -> Vec<BanRecord> {
    let mut bans: Vec<BanRecord> = store.bans().cloned().collect();
    bans.sort_by_key(|ban| ban.net);
    bans
}

pub(super) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

pub(super) fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

pub(super) fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

pub(super) fn append_garbage(dir: &Path, garbage: &[u8]) {
    let mut log = OpenOptions::new()
        .append(true)
        .open(log_path(dir))
        .expect("open log");
    log.write_all(garbage).expect("append");
}

pub(super) fn expect_corrupt(result: Result<Store, StoreError>) -> (PathBuf, u64, String) {
    match result {
        Err(StoreError::Corrupt {
            path,
            offset,
            detail,
        }) => (path, offset, detail),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, store opened"),
    }
}

/// State that exercises every kind of record, with the log not yet compacted.
pub(super) fn build_mixed_state(store: &mut Store) {
    store
        .insert_bans(&[ban("192.0.2.1/32", NOW, NOW + HOUR, "a")])
        .unwrap();
    store
        .insert_bans(&[ban("192.0.2.1/32", NOW + 1, NOW + HOUR, "a")])
        .unwrap();
    store
        .insert_bans(&[ban("192.0.2.2/32", NOW, NOW + HOUR, "b")])
        .unwrap();
    store.remove_ban(&net("192.0.2.2/32")).unwrap();
    store
        .insert_bans(&[ban("2001:db8::/48", NOW, NOW + HOUR, "c")])
        .unwrap();
    store.add_allow(net("198.51.100.0/24")).unwrap();
    store.add_allow(net("198.51.100.9/32")).unwrap();
    store.remove_allow(&net("198.51.100.9/32")).unwrap();
}

pub(super) fn assert_mixed_state(store: &Store) {
    assert_eq!(store.ban_count(), 2);
    assert!(
        store.get_ban(&net("192.0.2.2/32")).is_none(),
        "unban must not be undone"
    );
    assert_eq!(
        store.history(&net("192.0.2.1/32")),
        BanHistory {
            count: 2,
            last_banned: NOW + 1
        }
    );
    assert_eq!(
        store.history(&net("192.0.2.2/32")),
        BanHistory {
            count: 1,
            last_banned: NOW
        }
    );
    assert_eq!(store.history(&net("2001:db8::/48")).count, 1);
    let allows: Vec<IpNet> = store.runtime_allows().copied().collect();
    assert_eq!(allows, vec![net("198.51.100.0/24")]);
}

pub(super) fn many_bans(count: u32, reasons: &[&str]) -> Vec<BanRecord> {
    (0..count)
        .map(|i| {
            let net = if i % 2 == 0 {
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap())
            } else {
                IpNet::V6(
                    Ipv6Net::new(
                        Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 64),
                        64,
                    )
                    .unwrap(),
                )
            };
            let reason = reasons[i as usize % reasons.len()];
            BanRecord {
                net,
                created: NOW,
                expires: NOW + HOUR + u64::from(i),
                reason: Arc::from(reason),
                source: Arc::from(if i % 3 == 0 { "sshd" } else { "nginx" }),
            }
        })
        .collect()
}

/// Offsets of the frames after the header of `bytes`, in order.
pub(super) fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = FILE_HEADER_LEN;
    while let Frame::Intact { next, .. } = read_frame(bytes, offset) {
        offsets.push(offset);
        offset = next;
    }
    offsets
}

/// Five one-ban appends (192.0.2.1 .. 192.0.2.5), one frame each.
pub(super) fn five_ban_log(dir: &Path) -> Vec<usize> {
    let mut store = open(dir);
    for i in 1..=5 {
        store
            .insert_bans(&[ban(&format!("192.0.2.{i}/32"), NOW, NOW + HOUR, "scan")])
            .unwrap();
    }
    drop(store);
    let offsets = frame_offsets(&fs::read(log_path(dir)).unwrap());
    assert_eq!(offsets.len(), 5);
    offsets
}

/// [`five_ban_log`] with the second frame damaged `within` bytes in.
pub(super) fn five_ban_log_damaged_mid(dir: &Path, within: usize) -> Vec<usize> {
    let offsets = five_ban_log(dir);
    flip_byte(&log_path(dir), offsets[1] + within);
    offsets
}

/// Flips the bits of the byte at `offset` of `path`.
pub(super) fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0xff;
    fs::write(path, &bytes).unwrap();
}

/// Where, inside a frame, the tests damage it: the length field, the
/// CRC field, the payload.
pub(super) const DAMAGE_POINTS: [(&str, usize); 3] = [
    ("length field", 3),
    ("crc field", 5),
    ("payload", RECORD_HEADER_LEN + 4),
];

/// A ban whose reason holds bytes shaped like a whole frame (an Allow
/// of 0.0.0.0/0, CRC and all), as another fleet host could send.
pub(super) fn ban_with_fake_frame_in_reason() -> (BanRecord, Vec<u8>) {
    let fake = (0u8..=127)
        .flat_map(|a| (0u8..=127).map(move |b| [KIND_ALLOW, FAMILY_V4, a, b, 0, 0, 0]))
        .map(|payload| {
            let mut framed = vec![0; RECORD_HEADER_LEN];
            framed.extend_from_slice(&payload);
            seal_record(&mut framed, 0);
            framed
        })
        .find(|framed| framed.iter().all(u8::is_ascii))
        .expect("some ASCII-only fake frame");
    let text = String::from_utf8(fake.clone()).expect("ASCII");
    let reason = format!("{text}{text}");
    (ban("192.0.2.99/32", NOW, NOW + HOUR, &reason), fake)
}

/// Two compactions with changes before, between and after them: the
/// previous snapshot and its log both hold something, and the current
/// log too. Returns the state a sound open sees.
pub(super) fn store_with_two_generations(dir: &Path) -> (Vec<BanRecord>, Vec<IpNet>) {
    let mut store = open(dir);
    build_mixed_state(&mut store);
    store.compact().unwrap();
    store
        .insert_bans(&[
            ban("192.0.2.10/32", NOW, NOW + HOUR, "prev log"),
            ban("2001:db8:10::/48", NOW, NOW + HOUR, "prev log"),
        ])
        .unwrap();
    store.remove_ban(&net("2001:db8::/48")).unwrap();
    store.add_allow(net("203.0.113.0/24")).unwrap();
    store.compact().unwrap();
    store
        .insert_bans(&[ban("192.0.2.20/32", NOW, NOW + HOUR, "current log")])
        .unwrap();
    store.remove_ban(&net("192.0.2.10/32")).unwrap();
    let expected = (
        sorted_bans(&store),
        store.runtime_allows().copied().collect(),
    );
    assert_eq!(store.generation, 2);
    expected
}

/// `error` says the lock is held by this process and how to go on.
pub(super) fn assert_locked_by_this_process(error: StoreError) {
    let message = error.to_string();
    assert!(
        matches!(error, StoreError::Locked { pid: Some(pid), .. } if pid == std::process::id()),
        "{message}"
    );
    assert!(
        message.contains("stop orch first: systemctl stop orch"),
        "{message}"
    );
}
