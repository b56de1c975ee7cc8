//! A compaction that runs out of space loses nothing (issue 17, item 3).
//! Its own test binary: a full-disk check must not share the process with
//! tests that start programs, whose forks hold the store's files for a
//! moment (the lock, or a removed file's space).

mod common;

use std::sync::Arc;

use common::small_disk::SmallDisk;

#[test]
fn a_compaction_that_runs_out_of_space_loses_nothing() {
    use orch::store::{BanRecord, Store};
    let state = tempfile::tempdir().expect("tempdir");
    let disk = SmallDisk::mount_over(state.path(), "256k");
    let now = orch::timefmt::now_unix();
    let bans: Vec<BanRecord> = (0..200u32)
        .map(|i| BanRecord {
            net: format!("10.{}.{}.1/32", i / 256, i % 256)
                .parse()
                .expect("net"),
            created: now,
            expires: now + 86_400,
            reason: Arc::from("disk full test"),
            source: Arc::from("manual"),
        })
        .collect();
    let mut store = Store::open(&disk.dir, now).expect("open");
    store
        .insert_bans(&bans)
        .expect("bans before the disk fills");
    let filler = disk.fill();
    let err = store
        .compact()
        .expect_err("a compaction on a full disk fails");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    // Still usable once space frees, and nothing was lost.
    std::fs::remove_file(&filler).expect("free the disk");
    store
        .insert_bans(&bans[..1])
        .expect("append after the failed compaction");
    store.compact().expect("a compaction with space");
    drop(store);
    let reopened = Store::open(&disk.dir, now).expect("reopen");
    assert_eq!(reopened.ban_count(), bans.len());
}
