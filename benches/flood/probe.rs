//! Samples the kernel for watched addresses: a thread that enters a
//! daemon's network namespace, keeps one libnftables context there, and
//! runs `get element inet <table> <set> { <addr> }` for every outstanding
//! address at a fixed interval, noting when each first answers. In-process
//! libnftables costs tens of microseconds a lookup, so a 1 ms interval
//! does not need an `nft` process per poll.
//!
//! It only reads the kernel: no writing to sets, no judging of results.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orch::firewall::{Executor, LibNftExecutor};

/// One watched address: when its last line was written, when the kernel
/// first had it (`None`: not by the deadline).
pub struct Sample {
    pub written: Instant,
    pub seen: Option<Instant>,
}

impl Sample {
    pub fn latency(&self) -> Option<Duration> {
        self.seen.map(|seen| seen.duration_since(self.written))
    }
}

enum Message {
    Watch(String, Instant),
    /// Stop once nothing is outstanding, or at this instant.
    Finish(Instant),
}

pub struct Sampler {
    tx: Sender<Message>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `table`/`set` (family inet) in the namespace at
    /// `netns` (a `/proc/<pid>/ns/net` path) every `every`.
    pub fn start(netns: &Path, table: &str, set: &str, every: Duration) -> Sampler {
        let ns = File::open(netns).expect("open the namespace");
        let (tx, rx) = mpsc::channel();
        let prefix = format!("get element inet {table} {set} {{ ");
        let thread = std::thread::Builder::new()
            .name("flood-sampler".into())
            .spawn(move || {
                // SAFETY: plain syscall on an open namespace fd; this thread
                // was made for it and never leaves.
                let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
                let nft = LibNftExecutor::open().expect("libnftables");
                sample(nft, &rx, &prefix, every)
            })
            .expect("spawn the sampler");
        Sampler { tx, thread }
    }

    /// Watches `addr`, whose last line was written at `written`.
    pub fn watch(&self, addr: String, written: Instant) {
        let _ = self.tx.send(Message::Watch(addr, written));
    }

    /// Waits until every watched address is in the kernel or `deadline`
    /// has passed, and returns the samples in the order watched.
    pub fn finish(self, deadline: Instant) -> Vec<Sample> {
        let _ = self.tx.send(Message::Finish(deadline));
        self.thread.join().expect("the sampler panicked")
    }
}

fn sample(
    mut nft: LibNftExecutor,
    rx: &Receiver<Message>,
    prefix: &str,
    every: Duration,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    // Indices into `samples` of addresses not seen yet, with their lookups.
    let mut outstanding: Vec<(usize, String)> = Vec::new();
    let mut deadline = None;
    loop {
        let mut take = |message| match message {
            Message::Watch(addr, written) => {
                outstanding.push((samples.len(), format!("{prefix}{addr} }}")));
                samples.push(Sample {
                    written,
                    seen: None,
                });
            }
            Message::Finish(at) => deadline = Some(at),
        };
        let disconnected = match rx.recv_timeout(every) {
            Ok(message) => {
                take(message);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        while let Ok(message) = rx.try_recv() {
            take(message);
        }
        if disconnected {
            deadline = deadline.or(Some(Instant::now()));
        }
        outstanding.retain(|(index, lookup)| {
            if nft.run(lookup).is_err() {
                return true;
            }
            samples[*index].seen = Some(Instant::now());
            false
        });
        if deadline.is_some_and(|at| outstanding.is_empty() || Instant::now() >= at) {
            return samples;
        }
    }
}
