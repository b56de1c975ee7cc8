//! The seam between the core and the ban actions (`crate::actions`): what
//! the core tells the outside world about bans it acknowledged.
//!
//! The core turns each acknowledged ban or unban call (however many
//! networks it held) into one [`BanEvent`] and pushes it into a bounded
//! queue with `try_send`. When the queue is full the event's networks are
//! only counted, and the dispatcher merges that count into its next event:
//! the core never waits here, never runs a program and never connects
//! anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use tokio::sync::mpsc;

use super::core::Core;
use crate::store::BanRecord;

/// Events waiting for the dispatcher, at most.
pub const QUEUE_CAPACITY: usize = 64;
/// Networks one event lists at most; the count is always whole.
pub const MAX_EVENT_ADDRESSES: usize = crate::config::actions::MAX_ADDRESSES_LIMIT;
/// What a text field says when the networks of one event differ in it.
pub const MIXED: &str = "mixed";

/// Whether networks were banned or unbanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanEventKind {
    Ban,
    Unban,
}

impl BanEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BanEventKind::Ban => "ban",
            BanEventKind::Unban => "unban",
        }
    }
}

/// Bans or unbans the core acknowledged, described once for all their
/// networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanEvent {
    pub kind: BanEventKind,
    /// How many networks, always whole.
    pub count: u64,
    /// The first networks, at most a cap; fewer than `count` when cut.
    pub addresses: Vec<IpNet>,
    /// Who banned them: "manual", a jail name, "fleet:host", ...
    pub source: Arc<str>,
    /// The jail, when the source is one of the configured jails; empty
    /// otherwise.
    pub jail: Arc<str>,
    /// For a ban its reason; for an unban why it ended ("unban", "expired").
    pub reason: Arc<str>,
    /// For a ban the latest expiry (Unix seconds); none for an unban.
    pub expires_at: Option<u64>,
}

impl BanEvent {
    /// One event for `records`, `None` when there are none. `reason` is
    /// the unban's cause (a ban takes its records' reason); `is_jail` says
    /// whether a source names a configured jail.
    pub fn of_records(
        kind: BanEventKind,
        records: &[BanRecord],
        reason: Option<&str>,
        is_jail: impl Fn(&str) -> bool,
    ) -> Option<BanEvent> {
        let first = records.first()?;
        let jail_of = |source: &Arc<str>| match is_jail(source) {
            true => source.clone(),
            false => Arc::from(""),
        };
        let mut event = BanEvent {
            kind,
            count: 0,
            addresses: Vec::with_capacity(records.len().min(MAX_EVENT_ADDRESSES)),
            source: first.source.clone(),
            jail: jail_of(&first.source),
            reason: reason.map_or_else(|| first.reason.clone(), Arc::from),
            expires_at: None,
        };
        for record in records {
            event.count += 1;
            if event.addresses.len() < MAX_EVENT_ADDRESSES {
                event.addresses.push(record.net);
            }
            if !Arc::ptr_eq(&event.source, &record.source) && *event.source != *record.source {
                event.source = Arc::from(MIXED);
                mix(&mut event.jail, &jail_of(&record.source));
            }
            if reason.is_none() {
                mix(&mut event.reason, &record.reason);
            }
            if kind == BanEventKind::Ban {
                event.expires_at = event.expires_at.max(Some(record.expires));
            }
        }
        Some(event)
    }

    /// Only a count: the networks of events the full queue turned away.
    pub fn counted(kind: BanEventKind, count: u64) -> BanEvent {
        BanEvent {
            kind,
            count,
            addresses: Vec::new(),
            source: Arc::from(""),
            jail: Arc::from(""),
            reason: Arc::from(""),
            expires_at: None,
        }
    }

    /// Folds `other` (of the same kind) into this event: counts add up,
    /// at most `cap` addresses are kept, texts that differ become
    /// [`MIXED`], the expiry is the latest.
    pub fn merge(&mut self, other: BanEvent, cap: usize) {
        self.count = self.count.saturating_add(other.count);
        let room = cap.saturating_sub(self.addresses.len());
        self.addresses
            .extend(other.addresses.into_iter().take(room));
        mix(&mut self.source, &other.source);
        mix(&mut self.jail, &other.jail);
        mix(&mut self.reason, &other.reason);
        self.expires_at = self.expires_at.max(other.expires_at);
    }

    /// Whether some networks are counted but not listed.
    pub fn truncated(&self) -> bool {
        (self.addresses.len() as u64) < self.count
    }
}

/// `mine` becomes [`MIXED`] unless `theirs` says the same.
fn mix(mine: &mut Arc<str>, theirs: &Arc<str>) {
    if !Arc::ptr_eq(mine, theirs) && **mine != **theirs {
        *mine = Arc::from(MIXED);
    }
}

/// Networks whose events the full queue turned away, by kind.
#[derive(Debug, Default)]
struct Overflow {
    bans: AtomicU64,
    unbans: AtomicU64,
}

impl Overflow {
    fn of(&self, kind: BanEventKind) -> &AtomicU64 {
        match kind {
            BanEventKind::Ban => &self.bans,
            BanEventKind::Unban => &self.unbans,
        }
    }
}

/// The core's end of the queue.
#[derive(Debug, Clone)]
pub struct BanEventSender {
    queue: mpsc::Sender<BanEvent>,
    overflow: Arc<Overflow>,
}

/// The dispatcher's end of the queue.
#[derive(Debug)]
pub struct BanEventReceiver {
    queue: mpsc::Receiver<BanEvent>,
    overflow: Arc<Overflow>,
}

/// A queue of `capacity` events.
pub fn channel(capacity: usize) -> (BanEventSender, BanEventReceiver) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let overflow = Arc::new(Overflow::default());
    (
        BanEventSender {
            queue: sender,
            overflow: overflow.clone(),
        },
        BanEventReceiver {
            queue: receiver,
            overflow,
        },
    )
}

impl BanEventSender {
    /// Queues `event` without waiting; when the queue is full its
    /// networks are counted for the dispatcher to merge.
    pub fn send(&self, event: BanEvent) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.queue.try_send(event) {
            self.overflow
                .of(event.kind)
                .fetch_add(event.count, Ordering::Relaxed);
        }
    }
}

impl BanEventReceiver {
    /// The next event; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<BanEvent> {
        self.queue.recv().await
    }

    /// A queued event, without waiting.
    pub fn try_recv(&mut self) -> Option<BanEvent> {
        self.queue.try_recv().ok()
    }

    /// What the full queue turned away since the last call, as counted
    /// events.
    pub fn take_overflow(&self) -> Vec<BanEvent> {
        [BanEventKind::Ban, BanEventKind::Unban]
            .into_iter()
            .filter_map(|kind| {
                let count = self.overflow.of(kind).swap(0, Ordering::Relaxed);
                (count > 0).then(|| BanEvent::counted(kind, count))
            })
            .collect()
    }
}

impl Core {
    /// Tells the ban actions about `records`, just acknowledged.
    pub(super) fn emit_bans(&self, records: &[BanRecord]) {
        self.emit(BanEventKind::Ban, records, None);
    }

    /// Logs `records`, just removed, and why, and tells the ban actions.
    pub(super) fn announce_unbans(&self, records: &[BanRecord], why: &str) {
        super::ban_log::unbanned(records, why);
        self.emit_unbans(records, why);
    }

    /// Tells the ban actions about `records`, just removed, and why.
    pub(super) fn emit_unbans(&self, records: &[BanRecord], why: &str) {
        self.emit(BanEventKind::Unban, records, Some(why));
    }

    fn emit(&self, kind: BanEventKind, records: &[BanRecord], why: Option<&str>) {
        let Some(sender) = &self.ban_events else {
            return;
        };
        let jails = &self.config().jails.jails;
        let is_jail = |source: &str| jails.iter().any(|jail| jail.name == source);
        if let Some(event) = BanEvent::of_records(kind, records, why, is_jail) {
            sender.send(event);
        }
    }

    /// Where [`Core::emit_bans`] and [`Core::emit_unbans`] send events.
    pub fn set_ban_events(&mut self, sender: BanEventSender) {
        self.ban_events = Some(sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(net: &str, source: &str, reason: &str, expires: u64) -> BanRecord {
        BanRecord {
            net: net.parse().expect("net"),
            created: 1,
            expires,
            reason: Arc::from(reason),
            source: Arc::from(source),
        }
    }

    #[test]
    fn one_event_per_call_with_a_whole_count_and_a_cut_list() {
        let records: Vec<BanRecord> = (0..20_000u32)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
                record(
                    &format!("{ip}/32"),
                    "manual",
                    "flood",
                    100 + u64::from(i % 7),
                )
            })
            .collect();
        let event =
            BanEvent::of_records(BanEventKind::Ban, &records, None, |_| false).expect("an event");
        assert_eq!(event.count, 20_000);
        assert_eq!(event.addresses.len(), MAX_EVENT_ADDRESSES);
        assert!(event.truncated());
        assert_eq!(
            (&*event.source, &*event.reason, &*event.jail),
            ("manual", "flood", "")
        );
        assert_eq!(event.expires_at, Some(106));
        assert!(BanEvent::of_records(BanEventKind::Ban, &[], None, |_| true).is_none());
    }

    #[test]
    fn differing_texts_become_mixed_and_unbans_carry_their_cause() {
        let records = [
            record("192.0.2.1/32", "sshd", "5 failures", 9),
            record("192.0.2.2/32", "nginx", "5 failures", 9),
        ];
        let event = BanEvent::of_records(BanEventKind::Unban, &records, Some("expired"), |s| {
            s == "sshd"
        })
        .expect("an event");
        assert_eq!(
            (&*event.source, &*event.jail, &*event.reason),
            (MIXED, MIXED, "expired")
        );
        assert_eq!(event.expires_at, None);
        assert!(!event.truncated());
    }

    #[test]
    fn the_core_emits_one_event_per_acknowledged_call_and_none_for_a_refused_one() {
        let mut h = crate::daemon::tests::start_with("allow = [\"192.0.2.0/28\"]\n", &[]);
        let (sender, mut receiver) = channel(8);
        h.core.set_ban_events(sender);
        let many: Vec<String> = (1..=300)
            .map(|i| format!("10.9.{}.{}", i / 256, i % 256))
            .collect();
        h.core.ban(&many, 600, "list", "manual").expect("banned");
        let event = receiver.try_recv().expect("one event");
        assert_eq!(
            (event.kind, event.count, event.addresses.len()),
            (BanEventKind::Ban, 300, 300)
        );
        assert_eq!(
            (&*event.source, &*event.reason, &*event.jail),
            ("manual", "list", "")
        );
        assert_eq!(receiver.try_recv(), None, "one call, one event");
        let refused = ["203.0.113.1".to_string(), "192.0.2.1".to_string()];
        assert!(
            h.core.ban(&refused, 600, "x", "manual").is_err(),
            "allowlisted"
        );
        assert_eq!(receiver.try_recv(), None, "nothing banned, nothing told");
        h.core.unban("10.9.0.1").expect("unbanned");
        let event = receiver.try_recv().expect("an unban event");
        assert_eq!(
            (event.kind, event.count, &*event.reason),
            (BanEventKind::Unban, 1, "unban")
        );
        assert_eq!(
            event.addresses,
            ["10.9.0.1/32".parse::<IpNet>().expect("net")]
        );
        assert!(h.core.unban("10.9.0.1").expect("no-op").is_none());
        assert_eq!(receiver.try_recv(), None, "nothing removed, nothing told");
    }

    #[test]
    fn a_jails_burst_is_one_event_naming_the_jail() {
        let toml = "[jails.sshd]\nfiles = [\"/var/log/auth.log\"]\nbantime = \"1h\"\n";
        let mut h = crate::daemon::tests::start_with(toml, &[]);
        let (sender, mut receiver) = channel(8);
        h.core.set_ban_events(sender);
        let jail = h.core.config().jails.jails[0].clone();
        let nets = [
            "192.0.2.7/32".parse().expect("net"),
            "192.0.2.8/32".parse().expect("net"),
        ];
        h.core.jail_ban_many(&jail, &nets, 5).expect("banned");
        let event = receiver.try_recv().expect("one event for the burst");
        assert_eq!(
            (event.count, &*event.source, &*event.jail),
            (2, "sshd", "sshd")
        );
        assert!(
            event
                .expires_at
                .is_some_and(|at| at > crate::timefmt::now_unix() + 3500)
        );
        assert_eq!(receiver.try_recv(), None);
    }

    #[test]
    fn a_full_queue_counts_instead_of_waiting() {
        let (sender, mut receiver) = channel(1);
        let records = [record("192.0.2.1/32", "manual", "x", 9)];
        let event =
            BanEvent::of_records(BanEventKind::Ban, &records, None, |_| false).expect("an event");
        for _ in 0..4 {
            sender.send(event.clone());
        }
        assert_eq!(receiver.try_recv(), Some(event));
        assert_eq!(receiver.try_recv(), None);
        assert_eq!(
            receiver.take_overflow(),
            [BanEvent::counted(BanEventKind::Ban, 3)]
        );
        assert!(receiver.take_overflow().is_empty(), "taken once");
    }
}
