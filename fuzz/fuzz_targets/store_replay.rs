//! The store's own files as a damaged disk or a hostile hand could leave
//! them: arbitrary bytes as the snapshot (`bans.snap`) and the log
//! (`bans.log`). Input: a little-endian u32 snapshot length, the snapshot
//! bytes, then the log bytes (`fuzz/seeds/store_replay` holds real
//! stores in this form, from `cargo run --bin make_store_seeds`).
//!
//! Opening must never panic or allocate a frame's claimed length
//! unchecked. A store that opens opens again to the same state, since
//! replay is deterministic and repairs only a torn tail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orch::store::Store;

/// The clock the store replays at: after every seed's bans were made, and
/// before they expire.
const NOW: u64 = 1_800_000_000;

type Bans = Vec<(ipnet::IpNet, u64, u64, String, String)>;

fn bans(store: &Store) -> Bans {
    let mut bans: Bans = store
        .bans()
        .map(|ban| {
            (
                ban.net,
                ban.created,
                ban.expires,
                ban.reason.to_string(),
                ban.source.to_string(),
            )
        })
        .collect();
    bans.sort();
    bans
}

fuzz_target!(|data: &[u8]| {
    let Some((length, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let snapshot_len = (u32::from_le_bytes(*length) as usize).min(rest.len());
    let (snapshot, log) = rest.split_at(snapshot_len);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bans.snap"), snapshot).expect("write snapshot");
    std::fs::write(dir.path().join("bans.log"), log).expect("write log");
    let first = match Store::open(dir.path(), NOW) {
        Ok(store) => bans(&store),
        Err(_) => return,
    };
    let store = Store::open(dir.path(), NOW).expect("a store that opened opens again");
    assert_eq!(bans(&store), first, "a second replay differs");
});
