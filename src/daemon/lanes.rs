//! How jobs reach the core: a write lane (every event source: D-Bus
//! changes, jails, fleet, systemd and kernel events, timers) and a bounded
//! read lane (listings), and the core's liveness, which the watchdog reads.
//!
//! The core takes every queued write before the next read, so a flood of
//! listings can delay a ban by at most one read job. The read lane holds
//! at most [`MAX_QUEUED_READS`]; more are refused at once (`.Busy`).
//!
//! It must not run jobs itself; `core.rs` does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Read jobs waiting at most; one more is refused.
pub const MAX_QUEUED_READS: usize = 32;

/// A job for the core, boxed.
pub type Job<C> = Box<dyn FnOnce(&mut C) + Send>;

/// The sending side, one per [`super::core::CoreHandle`].
pub struct LaneSenders<C> {
    writes: mpsc::Sender<Job<C>>,
    reads: Arc<Mutex<VecDeque<Job<C>>>>,
}

impl<C> Clone for LaneSenders<C> {
    fn clone(&self) -> Self {
        LaneSenders {
            writes: self.writes.clone(),
            reads: self.reads.clone(),
        }
    }
}

/// Why a job could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The core has stopped.
    Stopped,
    /// The read lane is full.
    ReadsFull,
}

impl<C: 'static> LaneSenders<C> {
    pub fn write(&self, job: Job<C>) -> Result<(), QueueError> {
        self.writes.send(job).map_err(|_| QueueError::Stopped)
    }

    /// Queues a read, and wakes the core with an empty write.
    pub fn read(&self, job: Job<C>) -> Result<(), QueueError> {
        {
            let mut reads = self.reads.lock().map_err(|_| QueueError::Stopped)?;
            if reads.len() >= MAX_QUEUED_READS {
                return Err(QueueError::ReadsFull);
            }
            reads.push_back(job);
        }
        self.write(Box::new(|_| {}))
    }
}

/// The core's side: the next job, writes first.
pub struct LaneReceiver<C> {
    writes: mpsc::Receiver<Job<C>>,
    reads: Arc<Mutex<VecDeque<Job<C>>>>,
}

/// What [`LaneReceiver::next`] found.
pub enum Next<C> {
    Job(Job<C>),
    /// Nothing arrived within the wait.
    Idle,
    /// Every sender is gone.
    Closed,
}

impl<C> LaneReceiver<C> {
    /// The next job: a queued write, else a queued read, else whatever
    /// arrives within `wait`.
    pub fn next(&self, wait: Duration) -> Next<C> {
        match self.writes.try_recv() {
            Ok(job) => return Next::Job(job),
            Err(TryRecvError::Disconnected) => return Next::Closed,
            Err(TryRecvError::Empty) => {}
        }
        if let Some(job) = self
            .reads
            .lock()
            .ok()
            .and_then(|mut reads| reads.pop_front())
        {
            return Next::Job(job);
        }
        match self.writes.recv_timeout(wait) {
            Ok(job) => Next::Job(job),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }
}

/// A new pair of lanes.
pub fn lanes<C>() -> (LaneSenders<C>, LaneReceiver<C>) {
    let (writes, receiver) = mpsc::channel();
    let reads = Arc::new(Mutex::new(VecDeque::new()));
    (
        LaneSenders {
            writes,
            reads: reads.clone(),
        },
        LaneReceiver {
            writes: receiver,
            reads,
        },
    )
}

/// When the core last showed it was alive: between jobs, while idle (at
/// least once a second), and between the steps of long work.
#[derive(Clone)]
pub struct Liveness {
    started: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            started: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Liveness {
    /// The core is alive now.
    pub fn beat(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// How long ago the core last showed it was alive.
    pub fn since_last_beat(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_writes_go_before_queued_reads_and_reads_are_bounded() {
        let (senders, receiver) = lanes::<Vec<&'static str>>();
        senders.read(Box::new(|log| log.push("read 1"))).unwrap();
        senders.write(Box::new(|log| log.push("write 1"))).unwrap();
        senders.read(Box::new(|log| log.push("read 2"))).unwrap();
        let mut log = Vec::new();
        while let Next::Job(job) = receiver.next(Duration::from_millis(10)) {
            job(&mut log);
        }
        // Each read also queued an empty write (its wake-up), which runs
        // first and does nothing.
        assert_eq!(log, vec!["write 1", "read 1", "read 2"]);

        for _ in 0..MAX_QUEUED_READS {
            senders.read(Box::new(|_| {})).unwrap();
        }
        assert_eq!(senders.read(Box::new(|_| {})), Err(QueueError::ReadsFull));
    }

    #[test]
    fn liveness_counts_from_the_last_beat() {
        let liveness = Liveness::default();
        liveness.beat();
        assert!(liveness.since_last_beat() < Duration::from_secs(1));
    }
}
