//! Samples the kernel for watched addresses: a thread that enters a
//! daemon's network namespace and asks the kernel, for every outstanding
//! address at a fixed interval, whether it is in the jail's set, noting
//! when each first is. The lookup is orch's self-check probe
//! (`orch::firewall::probe::find_missing`): one netlink `GETSETELEM` by
//! key, which is what `nft get element` sends, without nft 1.0.6's cache
//! of every element of every set first. That cache made `get element`
//! cost O(set) and start over whenever the set changed, which a peer
//! adding one element every few milliseconds does all the time.
//!
//! It only reads the kernel: no writing to sets, no judging of results.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::net::Ipv4Addr;

use orch::firewall::probe::find_missing;
use orch::firewall::script::{IntactCheck, SampleElement};

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
    Watch(Ipv4Addr, Instant),
    /// Stop once nothing is outstanding, or at this instant.
    Finish(Instant),
}

pub struct Sampler {
    tx: Sender<Message>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `table`/`set` (family inet, IPv4 addresses) in the
    /// namespace at `netns` (a `/proc/<pid>/ns/net` path) every `every`.
    pub fn start(netns: &Path, table: &str, set: &'static str, every: Duration) -> Sampler {
        let ns = File::open(netns).expect("open the namespace");
        let (tx, rx) = mpsc::channel();
        let table = table.to_owned();
        let thread = std::thread::Builder::new()
            .name("flood-sampler".into())
            .spawn(move || {
                // SAFETY: plain syscall on an open namespace fd; this thread
                // was made for it and never leaves.
                let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
                sample(&rx, &table, set, every)
            })
            .expect("spawn the sampler");
        Sampler { tx, thread }
    }

    /// Watches `addr`, whose last line was written at `written`.
    pub fn watch(&self, addr: Ipv4Addr, written: Instant) {
        let _ = self.tx.send(Message::Watch(addr, written));
    }

    /// Waits until every watched address is in the kernel or `deadline`
    /// has passed, and returns the samples in the order watched.
    pub fn finish(self, deadline: Instant) -> Vec<Sample> {
        let _ = self.tx.send(Message::Finish(deadline));
        self.thread.join().expect("the sampler panicked")
    }
}

/// Whether `addr` is in `table`/`set` now; a failed query counts as no.
fn in_kernel(table: &str, set: &'static str, addr: Ipv4Addr) -> bool {
    let check = IntactCheck {
        table: table.to_owned(),
        chains: Vec::new(),
        elements: vec![SampleElement {
            set,
            key: addr.octets().to_vec(),
            shown: addr.to_string(),
        }],
    };
    matches!(find_missing(&check), Ok(None))
}

fn sample(rx: &Receiver<Message>, table: &str, set: &'static str, every: Duration) -> Vec<Sample> {
    let mut samples = Vec::new();
    // Addresses not seen yet, with their indices in `samples`.
    let mut outstanding: Vec<(usize, Ipv4Addr)> = Vec::new();
    let mut deadline = None;
    loop {
        let mut take = |message| match message {
            Message::Watch(addr, written) => {
                outstanding.push((samples.len(), addr));
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
        outstanding.retain(|&(index, addr)| {
            if !in_kernel(table, set, addr) {
                return true;
            }
            samples[index].seen = Some(Instant::now());
            false
        });
        if deadline.is_some_and(|at| outstanding.is_empty() || Instant::now() >= at) {
            return samples;
        }
    }
}
