//! A recording [`Executor`]: the null firewall driver (as netavark has one)
//! that lets the logic above the kernel (the core, the reconciler, the
//! fleet side) be unit-tested without nftables, root or a network
//! namespace. It keeps every script it is handed, in order, and can be
//! told to refuse the next few, so tests reach the "incremental change
//! failed, re-apply the whole table" paths.
//!
//! Test-only (compiled under `cfg(test)`): the daemon must never use it,
//! since it changes nothing in the kernel while reporting success.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{Executor, FirewallError};

/// The scripts a [`RecordingExecutor`] was handed, readable after the
/// executor has moved into a [`super::Firewall`]. Clones share the log.
#[derive(Debug, Clone, Default)]
pub struct ScriptLog {
    inner: Arc<Mutex<LogState>>,
}

#[derive(Debug, Default)]
struct LogState {
    /// Every script run, accepted or refused, oldest first.
    scripts: Vec<String>,
    /// How many of the next scripts to refuse.
    refuse_next: usize,
}

impl ScriptLog {
    fn state(&self) -> MutexGuard<'_, LogState> {
        // A test that panicked while holding the lock has failed already;
        // the log itself is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every script handed over so far, oldest first.
    pub fn scripts(&self) -> Vec<String> {
        self.state().scripts.clone()
    }

    /// Takes the scripts handed over so far, leaving the log empty (for
    /// looking only at what one step did).
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.state().scripts)
    }

    /// Refuses the next `count` scripts with [`FirewallError::Refused`]
    /// (they are still recorded).
    pub fn refuse_next(&self, count: usize) {
        self.state().refuse_next = count;
    }
}

/// An executor that records scripts instead of running them.
#[derive(Debug, Default)]
pub struct RecordingExecutor {
    log: ScriptLog,
}

impl RecordingExecutor {
    /// A new executor and the handle to read what it records.
    pub fn new() -> (RecordingExecutor, ScriptLog) {
        let log = ScriptLog::default();
        (RecordingExecutor { log: log.clone() }, log)
    }
}

impl Executor for RecordingExecutor {
    fn run(&mut self, script: &str) -> Result<(), FirewallError> {
        let mut state = self.log.state();
        state.scripts.push(script.to_string());
        if state.refuse_next > 0 {
            state.refuse_next -= 1;
            return Err(FirewallError::Refused("refused by the test".into()));
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "recording"
    }
}
