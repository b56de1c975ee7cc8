//! Property test of the store under crashes (proptest): any sequence of
//! bans, unbans, time passing (expiry) and compactions, with a crash in the
//! middle of any step, replays to the acknowledged state.
//!
//! A crash is modelled by the files a step leaves half-written:
//! - an append (ban, unban) cut at any byte: the log as it was, plus any
//!   prefix of what the step appended. The replay must hold every
//!   acknowledged change and, of the step in flight, at most a prefix of
//!   its records (a batch is acknowledged only when all of it is durable);
//! - a compaction stopped while writing the new snapshot (a `.tmp` cut at
//!   any byte beside the old files), or after renaming it into place but
//!   before the log was reset. Either must replay to exactly the state
//!   before the compaction, which is the acknowledged one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use orch::store::{BanRecord, Store};
use proptest::prelude::*;

/// Networks the steps pick from: few, so unbans and re-bans hit.
const NETS: [&str; 6] = [
    "192.0.2.1/32",
    "192.0.2.2/32",
    "198.51.100.0/24",
    "2001:db8::1/128",
    "2001:db8:1::/64",
    "203.0.113.9/32",
];
const START: u64 = 1_800_000_000;

#[derive(Debug, Clone)]
enum Step {
    /// Bans these networks (indexes into NETS) for these seconds, in one batch.
    Ban(Vec<(usize, u64)>),
    /// Unbans these networks in one batch.
    Unban(Vec<usize>),
    /// Time passes.
    Wait(u64),
    Compact,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((0..NETS.len(), 1u64..120), 1..4).prop_map(Step::Ban),
        2 => prop::collection::vec(0..NETS.len(), 1..3).prop_map(Step::Unban),
        1 => (1u64..60).prop_map(Step::Wait),
        1 => Just(Step::Compact),
    ]
}

fn net(index: usize) -> IpNet {
    NETS[index].parse().expect("test network")
}

/// What the store must hold: network -> expiry.
type Model = BTreeMap<IpNet, u64>;

/// The bans still running at `now`, as the store replays them.
fn running(model: &Model, now: u64) -> Model {
    model
        .iter()
        .filter(|(_, expires)| **expires > now)
        .map(|(net, expires)| (*net, *expires))
        .collect()
}

fn replayed(dir: &Path, now: u64) -> Result<Model, String> {
    let store = Store::open(dir, now).map_err(|err| err.to_string())?;
    Ok(store.bans().map(|ban| (ban.net, ban.expires)).collect())
}

/// The store's files (not its lock), by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read store dir")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".lock"))
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).expect("read store file");
            (name, bytes)
        })
        .collect()
}

/// A fresh directory holding `image`.
fn crash_image(image: &BTreeMap<String, Vec<u8>>) -> tempfile::TempDir {
    let dir = scratch_dir();
    for (name, bytes) in image {
        std::fs::write(dir.path().join(name), bytes).expect("write crash image");
    }
    dir
}

fn scratch_dir() -> tempfile::TempDir {
    // Memory-backed where there is one: thousands of fsyncs per run.
    let base = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm")
    } else {
        Path::new("/tmp")
    };
    tempfile::tempdir_in(base).expect("tempdir")
}

/// The model after the first `count` changes of `step`.
fn apply_prefix(model: &Model, step: &Step, now: u64, count: usize) -> Model {
    let mut next = model.clone();
    match step {
        Step::Ban(bans) => {
            for (index, seconds) in bans.iter().take(count) {
                next.insert(net(*index), now + seconds);
            }
        }
        Step::Unban(nets) => {
            for index in nets.iter().take(count) {
                next.remove(&net(*index));
            }
        }
        Step::Wait(_) | Step::Compact => {}
    }
    next
}

fn changes(step: &Step) -> usize {
    match step {
        Step::Ban(bans) => bans.len(),
        Step::Unban(nets) => nets.len(),
        Step::Wait(_) | Step::Compact => 0,
    }
}

fn run(steps: &[Step], cuts: &[f64]) -> Result<(), TestCaseError> {
    let dir = scratch_dir();
    let mut now = START;
    let mut store = Store::open(dir.path(), now).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model = Model::new();
    for (step, cut) in steps.iter().zip(cuts.iter().cycle()) {
        let before = files(dir.path());
        match step {
            Step::Ban(bans) => {
                let records: Vec<BanRecord> = bans
                    .iter()
                    .map(|(index, seconds)| BanRecord {
                        net: net(*index),
                        created: now,
                        expires: now + seconds,
                        reason: Arc::from("prop"),
                        source: Arc::from("manual"),
                    })
                    .collect();
                store
                    .insert_bans(&records)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Step::Unban(nets) => {
                let nets: Vec<IpNet> = nets.iter().map(|index| net(*index)).collect();
                store
                    .remove_bans(&nets)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Step::Wait(seconds) => {
                now += seconds;
                store.purge_expired(now);
            }
            Step::Compact => store
                .compact()
                .map_err(|e| TestCaseError::fail(e.to_string()))?,
        }
        let after = files(dir.path());
        let next = apply_prefix(&model, step, now, changes(step));

        match step {
            Step::Compact => {
                let snapshot = after.get("bans.snap").cloned().unwrap_or_default();
                let at = (snapshot.len() as f64 * cut) as usize;
                // Stopped while writing the new snapshot.
                let mut torn = before.clone();
                torn.insert("bans.snap.tmp".into(), snapshot[..at].to_vec());
                let image = crash_image(&torn);
                let got = replayed(image.path(), now).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&got, &running(&model, now), "compaction torn at {}", at);
                // Stopped after the rename, before the log was reset.
                let mut renamed = before.clone();
                renamed.insert("bans.snap".into(), snapshot);
                let image = crash_image(&renamed);
                let got = replayed(image.path(), now).map_err(TestCaseError::fail)?;
                prop_assert_eq!(
                    &got,
                    &running(&model, now),
                    "compaction before the log reset"
                );
            }
            _ => {
                let old_log = before.get("bans.log").cloned().unwrap_or_default();
                let new_log = after.get("bans.log").cloned().unwrap_or_default();
                prop_assert!(new_log.starts_with(&old_log), "the log is append-only");
                let appended = new_log.len() - old_log.len();
                let at = old_log.len() + (appended as f64 * cut) as usize;
                let mut torn = before.clone();
                torn.insert("bans.log".into(), new_log[..at].to_vec());
                let image = crash_image(&torn);
                let got = replayed(image.path(), now).map_err(TestCaseError::fail)?;
                let allowed: Vec<Model> = (0..=changes(step))
                    .map(|count| running(&apply_prefix(&model, step, now, count), now))
                    .collect();
                prop_assert!(
                    allowed.contains(&got),
                    "log cut at byte {} of {}: replayed {:?}, acknowledged {:?}",
                    at,
                    new_log.len(),
                    got,
                    running(&model, now)
                );
            }
        }
        model = next;
    }
    // And the whole history, not crashed, replays to the final state.
    drop(store);
    let got = replayed(dir.path(), now).map_err(TestCaseError::fail)?;
    prop_assert_eq!(got, running(&model, now));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_crash_in_any_step_replays_to_the_acknowledged_state(
        steps in prop::collection::vec(step(), 1..14),
        cuts in prop::collection::vec(0.0f64..=1.0, 1..8),
    ) {
        run(&steps, &cuts)?;
    }
}
