//! The kernel event monitor against real kernel nftables (needs root).
//!
//! Each test gets private network namespaces of its own: a parked thread
//! calls `unshare(CLONE_NEWNET)` (which moves only that thread), opens the
//! monitor there, and `nft` runs in the same namespace through
//! `nsenter --net=/proc/<pid>/task/<tid>/ns/net`. The host's ruleset is
//! never touched. Waiting is bounded by deadlines, never by sleeps.

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orch::firewall::monitor::{KernelEvent, KernelMonitor};

const INET: u8 = 1;
const IPV4: u8 = 2;
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// A private network namespace, alive as long as this value: a thread
/// parked inside it keeps `/proc/<pid>/task/<tid>/ns/net` valid.
struct Netns {
    path: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Netns {
    /// A fresh namespace, with a monitor opened inside it.
    fn with_monitor() -> (Netns, KernelMonitor) {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: plain syscalls; unshare(CLONE_NEWNET) affects only
            // this thread.
            let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            if unshared != 0 {
                let err = std::io::Error::last_os_error();
                let _ = ready_tx.send(Err(format!("unshare(CLONE_NEWNET): {err} (run as root)")));
                return;
            }
            // SAFETY: no arguments, cannot fail.
            let tid = unsafe { libc::gettid() };
            let opened = KernelMonitor::open()
                .map(|monitor| (tid, monitor))
                .map_err(|err| format!("KernelMonitor::open: {err}"));
            if ready_tx.send(opened).is_err() {
                return;
            }
            // Park until the namespace is dropped.
            let _ = stop_rx.recv();
        });
        let (tid, monitor) = match ready_rx.recv() {
            Ok(Ok(opened)) => opened,
            Ok(Err(message)) => panic!("{message}"),
            Err(_) => panic!("namespace thread died"),
        };
        let netns = Netns {
            path: format!("/proc/{}/task/{tid}/ns/net", std::process::id()),
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        (netns, monitor)
    }

    /// Runs `nft <args>` in this namespace; returns nft's pid.
    fn nft(&self, args: &[&str]) -> u32 {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.path))
            .arg("nft")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter");
        // nsenter execs nft in place (no --fork): same pid.
        let pid = child.id();
        let output = child.wait_with_output().expect("wait for nft");
        assert!(
            output.status.success(),
            "nft {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        pid
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Events up to and including the end of the next transaction made by
/// `nft`; fails after [`EVENT_DEADLINE`].
fn until_nft_transaction_end(monitor: &mut KernelMonitor, what: &str) -> Vec<KernelEvent> {
    let deadline = Instant::now() + EVENT_DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: no transaction end by nft within {EVENT_DEADLINE:?}; saw {seen:?}"
        );
        let events = monitor.next_events(Some(left)).expect("receive events");
        let done = events
            .iter()
            .any(|event| matches!(event, KernelEvent::TransactionEnd { process, .. } if process == "nft"));
        seen.extend(events);
        if done {
            return seen;
        }
    }
}

fn changed(family: u8, table: &str) -> KernelEvent {
    KernelEvent::TableChanged {
        family,
        table: table.into(),
    }
}

fn deleted(family: u8, table: &str) -> KernelEvent {
    KernelEvent::TableDeleted {
        family,
        table: table.into(),
    }
}

fn transaction_end(events: &[KernelEvent]) -> (u32, u32) {
    events
        .iter()
        .find_map(|event| match event {
            KernelEvent::TransactionEnd {
                generation,
                pid,
                process,
            } if process == "nft" => Some((*generation, *pid)),
            _ => None,
        })
        .expect("a transaction end")
}

/// The kernel reports the committing thread's pid in the initial pid
/// namespace; it can only be compared with ours when we run there.
fn in_initial_pid_namespace() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("NSpid:"))
                .map(|ids| ids.split_whitespace().count() == 1)
        })
        .unwrap_or(false)
}

#[test]
fn reports_table_changes_deletes_and_transactions() {
    let (netns, mut monitor) = Netns::with_monitor();

    // Nothing has happened in a fresh namespace.
    assert_eq!(
        monitor.next_events(Some(Duration::ZERO)).expect("receive"),
        vec![]
    );

    let pid = netns.nft(&["add", "table", "inet", "t1"]);
    let events = until_nft_transaction_end(&mut monitor, "add table");
    assert!(events.contains(&changed(INET, "t1")), "{events:?}");
    let (first_generation, reported_pid) = transaction_end(&events);
    if in_initial_pid_namespace() {
        assert_eq!(reported_pid, pid, "{events:?}");
    }
    assert!(
        matches!(events.last(), Some(KernelEvent::TransactionEnd { .. })),
        "{events:?}"
    );

    netns.nft(&["add", "set", "inet", "t1", "s", "{ type ipv4_addr; }"]);
    let events = until_nft_transaction_end(&mut monitor, "add set");
    assert!(events.contains(&changed(INET, "t1")), "{events:?}");
    let (second_generation, _) = transaction_end(&events);
    assert!(second_generation > first_generation, "{events:?}");

    netns.nft(&["add", "element", "inet", "t1", "s", "{ 192.0.2.1 }"]);
    let events = until_nft_transaction_end(&mut monitor, "add element");
    assert_eq!(events.first(), Some(&changed(INET, "t1")), "{events:?}");

    // A bulk load: one notification per element from the kernel, a handful
    // of events from the monitor.
    let elements: Vec<String> = (0..2000)
        .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
        .collect();
    let bulk = format!("{{ {} }}", elements.join(", "));
    netns.nft(&["add", "element", "inet", "t1", "s", &bulk]);
    let events = until_nft_transaction_end(&mut monitor, "bulk add");
    assert!(!events.contains(&KernelEvent::Overrun), "{events:?}");
    let changes = events
        .iter()
        .filter(|event| **event == changed(INET, "t1"))
        .count();
    assert!((1..=20).contains(&changes), "{changes} changes: {events:?}");

    netns.nft(&["delete", "element", "inet", "t1", "s", "{ 192.0.2.1 }"]);
    let events = until_nft_transaction_end(&mut monitor, "delete element");
    assert!(events.contains(&changed(INET, "t1")), "{events:?}");

    // Deleting the table reports its contents going, then the table.
    netns.nft(&["delete", "table", "inet", "t1"]);
    let events = until_nft_transaction_end(&mut monitor, "delete table");
    let position = events
        .iter()
        .position(|event| *event == deleted(INET, "t1"))
        .unwrap_or_else(|| panic!("no delete of t1: {events:?}"));
    assert!(
        !events[position..].contains(&changed(INET, "t1")),
        "{events:?}"
    );

    // `flush ruleset` deletes every table, in every family.
    netns.nft(&["add", "table", "inet", "t1"]);
    until_nft_transaction_end(&mut monitor, "re-add t1");
    netns.nft(&["add", "table", "ip", "t2"]);
    until_nft_transaction_end(&mut monitor, "add t2");
    netns.nft(&["flush", "ruleset"]);
    let events = until_nft_transaction_end(&mut monitor, "flush ruleset");
    assert!(events.contains(&deleted(INET, "t1")), "{events:?}");
    assert!(events.contains(&deleted(IPV4, "t2")), "{events:?}");

    // A script starting with `flush ruleset` behaves the same, and its
    // re-created table shows up after the delete.
    netns.nft(&["add", "table", "inet", "t1"]);
    until_nft_transaction_end(&mut monitor, "re-add t1 again");
    netns.nft(&["flush ruleset; add table inet t1; add table inet t3"]);
    let events = until_nft_transaction_end(&mut monitor, "flush and reload");
    let delete = events.iter().position(|e| *e == deleted(INET, "t1"));
    let recreate = events.iter().rposition(|e| *e == changed(INET, "t1"));
    assert!(
        matches!((delete, recreate), (Some(d), Some(r)) if d < r),
        "{events:?}"
    );
    assert!(events.contains(&changed(INET, "t3")), "{events:?}");
}

#[test]
fn events_stay_in_their_network_namespace() {
    let (netns_a, mut monitor_a) = Netns::with_monitor();
    let (netns_b, mut monitor_b) = Netns::with_monitor();

    netns_a.nft(&["add", "table", "inet", "only_a"]);
    let events = until_nft_transaction_end(&mut monitor_a, "add in A");
    assert!(events.contains(&changed(INET, "only_a")), "{events:?}");
    netns_a.nft(&["delete", "table", "inet", "only_a"]);
    until_nft_transaction_end(&mut monitor_a, "delete in A");

    // Had B seen A's transactions, they would be queued ahead of its own.
    netns_b.nft(&["add", "table", "inet", "only_b"]);
    let events = until_nft_transaction_end(&mut monitor_b, "add in B");
    assert_eq!(events.first(), Some(&changed(INET, "only_b")), "{events:?}");
    let transactions = events
        .iter()
        .filter(|event| matches!(event, KernelEvent::TransactionEnd { .. }))
        .count();
    assert_eq!(transactions, 1, "{events:?}");
    assert!(
        events.iter().all(|event| !matches!(
            event,
            KernelEvent::TableChanged { table, .. } | KernelEvent::TableDeleted { table, .. }
                if table == "only_a"
        )),
        "{events:?}"
    );

    // And A did not see B's.
    assert_eq!(
        monitor_a
            .next_events(Some(Duration::ZERO))
            .expect("receive"),
        vec![]
    );
}

/// Sets an integer socket option on the monitor's socket.
fn set_receive_buffer(monitor: &KernelMonitor, option: libc::c_int, bytes: libc::c_int) {
    // SAFETY: `bytes` is a c_int that outlives the call.
    let result = unsafe {
        libc::setsockopt(
            monitor.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

#[test]
fn dropped_events_are_reported_as_overrun_and_monitoring_goes_on() {
    let (netns, mut monitor) = Netns::with_monitor();
    netns.nft(&["add table inet t1; add set inet t1 s { type ipv4_addr; }"]);
    until_nft_transaction_end(&mut monitor, "setup");

    // Shrink the queue to the kernel's minimum so a bulk load overflows.
    set_receive_buffer(&monitor, libc::SO_RCVBUF, 1024);
    let elements: Vec<String> = (0..2000)
        .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
        .collect();
    let bulk = format!("{{ {} }}", elements.join(", "));
    netns.nft(&["add", "element", "inet", "t1", "s", &bulk]);

    // The kernel queued (or dropped) every notification before nft exited.
    let mut events = Vec::new();
    loop {
        let more = monitor
            .next_events(Some(Duration::ZERO))
            .expect("receive events");
        if more.is_empty() {
            break;
        }
        events.extend(more);
    }
    assert!(events.contains(&KernelEvent::Overrun), "{events:?}");

    // The monitor keeps working once the queue has room again.
    set_receive_buffer(&monitor, libc::SO_RCVBUFFORCE, 8 << 20);
    netns.nft(&["add", "table", "inet", "t2"]);
    let events = until_nft_transaction_end(&mut monitor, "after overrun");
    assert_eq!(events.first(), Some(&changed(INET, "t2")), "{events:?}");
}

#[test]
fn a_paused_monitor_misses_changes_and_hears_again_once_resumed() {
    let (netns, mut monitor) = Netns::with_monitor();
    let switch = monitor.switch().expect("switch");

    switch.pause().expect("pause");
    netns.nft(&["add", "table", "inet", "unheard"]);
    switch.resume().expect("resume");
    netns.nft(&["add", "table", "inet", "heard"]);

    // Everything up to the second transaction's end: the first table never
    // shows up, the second does.
    let events = until_nft_transaction_end(&mut monitor, "add table after resume");
    assert!(events.contains(&changed(INET, "heard")), "{events:?}");
    assert!(!events.contains(&changed(INET, "unheard")), "{events:?}");
    let ends = events
        .iter()
        .filter(|event| matches!(event, KernelEvent::TransactionEnd { .. }))
        .count();
    assert_eq!(ends, 1, "only the transaction after resume: {events:?}");
}
