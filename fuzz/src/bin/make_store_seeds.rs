//! Writes real stores in the `store_replay` target's input form (u32 LE
//! snapshot length, snapshot, log) into `fuzz/seeds/store_replay/`: a few
//! bans, unbans, allows, cursors and a compaction, so the fuzzer starts
//! from valid frames rather than guessing CRCs. Run from `fuzz/`:
//! `cargo run --bin make_store_seeds`.

use std::path::Path;
use std::sync::Arc;

use orch::store::{BanRecord, Store};

const NOW: u64 = 1_790_000_000;

fn ban(net: &str, seconds: u64, source: &str) -> BanRecord {
    BanRecord {
        net: net.parse().expect("seed network"),
        created: NOW,
        expires: NOW + seconds,
        reason: Arc::from("seed"),
        source: Arc::from(source),
    }
}

fn seed(name: &str, compact: bool) -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let mut store = Store::open(dir.path(), NOW).map_err(std::io::Error::other)?;
        let made = [
            ban("192.0.2.7/32", 3600, "manual"),
            ban("2001:db8::/64", 86_400, "sshd"),
            ban("198.51.100.0/24", 600, "fleet:srv2"),
        ];
        store.insert_bans(&made).map_err(std::io::Error::other)?;
        store
            .add_allow("203.0.113.0/24".parse().expect("seed allow"))
            .map_err(std::io::Error::other)?;
        store
            .set_cursors(&[("file:/var/log/auth.log".into(), "1:42:1000".into())])
            .map_err(std::io::Error::other)?;
        store
            .record_jail_bans("sshd", &[made[1].net], NOW)
            .map_err(std::io::Error::other)?;
        if compact {
            store.compact().map_err(std::io::Error::other)?;
        }
        store
            .remove_ban(&made[0].net)
            .map_err(std::io::Error::other)?;
    }
    let snapshot = std::fs::read(dir.path().join("bans.snap"))?;
    let log = std::fs::read(dir.path().join("bans.log"))?;
    let mut input = (snapshot.len() as u32).to_le_bytes().to_vec();
    input.extend_from_slice(&snapshot);
    input.extend_from_slice(&log);
    let out = Path::new("seeds/store_replay");
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(name), input)
}

fn main() -> std::io::Result<()> {
    seed("log-only", false)?;
    seed("compacted", true)
}
