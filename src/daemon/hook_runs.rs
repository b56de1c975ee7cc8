//! Schedules hook runs: one batch at a time, never two at once, and a burst
//! of triggers becomes at most one more run after the current one.
//!
//! A trigger carries the moment its cause was observed. A run that started
//! after that moment already saw the cause's effects (for example the
//! nftables drop-in's `orch sync --hooks` ran the hooks right after the
//! reload the kernel monitor also reported), so the trigger is dropped.
//! This module decides *when* hooks run; `crate::hooks` runs them and
//! nothing here touches the firewall.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::hooks::{self, HookResult, HookSettings};
use crate::timefmt::now_unix;

/// Why hooks should run: the word hooks get as ORCH_EVENT.
#[derive(Debug, Clone)]
pub struct HookTrigger {
    pub event: String,
    pub unit: Option<String>,
    pub observed_at: Instant,
}

struct Request {
    trigger: HookTrigger,
    /// Set by callers that wait for a run (sync --hooks, RunHooks()).
    done: Option<oneshot::Sender<Vec<HookResult>>>,
}

/// The last outcome of each hook, for `orch status`.
#[derive(Debug, Clone, Default)]
pub struct HookStatus {
    /// Hook name -> (status code, 0 = success; when it ran; stderr tail).
    pub last: BTreeMap<String, (i32, u64, Vec<String>)>,
    pub runs: u64,
    pub last_run: Option<(String, u64)>,
    /// Hook name -> (times it ran, times it failed), for the metrics.
    pub counts: BTreeMap<String, (u64, u64)>,
}

/// Reported for every failed hook, to emit `HookFailed(s name, i status)`.
pub type FailureSink = Box<dyn Fn(&HookResult) + Send + Sync>;

/// Handle to the scheduler task.
#[derive(Clone)]
pub struct HookRuns {
    requests: mpsc::UnboundedSender<Request>,
    status: Arc<Mutex<HookStatus>>,
    setup: Arc<Mutex<HookSetup>>,
}

/// What every run uses: where the hooks are, their timeouts, and the
/// environment all of them get (ORCH_EVENT and ORCH_UNIT are added per run).
#[derive(Debug, Clone)]
pub struct HookSetup {
    pub settings: HookSettings,
    pub base_env: Vec<(String, String)>,
}

impl HookRuns {
    /// Starts the scheduler task on the current tokio runtime.
    pub fn start(setup: HookSetup, on_failure: FailureSink) -> HookRuns {
        let (requests, receiver) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(HookStatus::default()));
        let setup = Arc::new(Mutex::new(setup));
        tokio::spawn(schedule(
            receiver,
            setup.clone(),
            on_failure,
            status.clone(),
        ));
        HookRuns {
            requests,
            status,
            setup,
        }
    }

    /// Takes a new setup (config reload); runs already started finish with
    /// the old one.
    pub fn set_setup(&self, setup: HookSetup) {
        if let Ok(mut current) = self.setup.lock() {
            *current = setup;
        }
    }

    /// Asks for a run because of `trigger`; returns at once.
    pub fn trigger(&self, trigger: HookTrigger) {
        let _ = self.requests.send(Request {
            trigger,
            done: None,
        });
    }

    /// Runs the hooks (a run that starts after this call) and waits for it.
    pub async fn run_and_wait(&self, event: &str, unit: Option<String>) -> Vec<HookResult> {
        let (done, result) = oneshot::channel();
        let trigger = HookTrigger {
            event: event.to_string(),
            unit,
            observed_at: Instant::now(),
        };
        if self
            .requests
            .send(Request {
                trigger,
                done: Some(done),
            })
            .is_err()
        {
            return Vec::new();
        }
        result.await.unwrap_or_default()
    }

    pub fn status(&self) -> HookStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn schedule(
    mut receiver: mpsc::UnboundedReceiver<Request>,
    setup: Arc<Mutex<HookSetup>>,
    on_failure: FailureSink,
    status: Arc<Mutex<HookStatus>>,
) {
    let mut last_started: Option<Instant> = None;
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = receiver.try_recv() {
            batch.push(more);
        }
        let (needed, covered): (Vec<Request>, Vec<Request>) =
            batch.into_iter().partition(|request| {
                request.done.is_some()
                    || last_started.is_none_or(|at| request.trigger.observed_at > at)
            });
        for request in &covered {
            tracing::debug!(event = %request.trigger.event, "hooks already ran after this trigger; skipped");
        }
        let Some(lead) = needed.first().map(|r| r.trigger.clone()) else {
            continue;
        };
        last_started = Some(Instant::now());
        let Ok(HookSetup { settings, base_env }) = setup.lock().map(|s| s.clone()) else {
            break;
        };
        let mut env = base_env;
        env.push(("ORCH_EVENT".into(), lead.event.clone()));
        env.push(("ORCH_UNIT".into(), lead.unit.clone().unwrap_or_default()));
        tracing::info!(event = %lead.event, "running hooks");
        let results = hooks::run_hooks(&settings, &env).await;
        record(&status, &lead.event, &results);
        for result in results.iter().filter(|r| !r.outcome.is_success()) {
            on_failure(result);
        }
        for request in needed {
            if let Some(done) = request.done {
                let _ = done.send(results.clone());
            }
        }
    }
}

fn record(status: &Mutex<HookStatus>, event: &str, results: &[HookResult]) {
    let Ok(mut status) = status.lock() else {
        return;
    };
    let now = now_unix();
    status.runs += 1;
    status.last_run = Some((event.to_string(), now));
    for result in results {
        let (ran, failed) = status.counts.entry(result.name.clone()).or_default();
        *ran += 1;
        *failed += u64::from(!result.outcome.is_success());
        status.last.insert(
            result.name.clone(),
            (
                result.outcome.status_code(),
                now,
                result.stderr_tail.clone(),
            ),
        );
    }
}
