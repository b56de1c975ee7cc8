//! Ban actions: what `[[on_ban]]` and `[[on_unban]]` tell the outside
//! world. The core pushes one event per acknowledged call into a bounded
//! queue ([`crate::daemon::ban_events`]); one task here takes them,
//! gathers them per action ([`batch`]: a short window, a rate limit) and
//! hands each action's batches, one at a time, to a task of their own
//! ([`exec`], [`webhook`]), so a hanging program or webhook holds up only
//! its own action, and never the core.
//!
//! It must not decide anything about bans, nor wait on the core.

pub mod batch;
pub mod exec;
pub mod webhook;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::{ActionConfig, ActionTarget, ActionsConfig};
use crate::daemon::ban_events::{self, BanEvent, BanEventKind, BanEventReceiver, BanEventSender};
use batch::{Batch, Batcher};

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no program to run")]
    NoProgram,
    #[error("{program} {outcome}")]
    Program {
        program: String,
        outcome: crate::hooks::HookOutcome,
    },
    #[error("webhook {url}: {source}")]
    Webhook {
        url: String,
        source: webhook::WebhookError,
    },
}

/// How often the dispatcher looks for networks the full queue counted,
/// at least.
const OVERFLOW_CHECK: Duration = Duration::from_secs(1);

/// The running dispatcher: takes a new configuration on reload.
#[derive(Clone)]
pub struct Actions {
    config: watch::Sender<ActionsConfig>,
}

impl Actions {
    /// Starts the dispatcher on the current tokio runtime; `host` names
    /// this host in every event. The sender goes to the core.
    pub fn start(config: ActionsConfig, host: String) -> (Actions, BanEventSender) {
        warn_untrusted(&config);
        let (sender, receiver) = ban_events::channel(ban_events::QUEUE_CAPACITY);
        let (config, config_receiver) = watch::channel(config);
        tokio::spawn(dispatch(receiver, config_receiver, host));
        (Actions { config }, sender)
    }

    /// Replaces the actions (SIGHUP). Batches pending for the old ones are
    /// dropped; deliveries under way finish.
    pub fn set_config(&self, config: ActionsConfig) {
        warn_untrusted(&config);
        self.config.send_if_modified(|current| {
            let changed = *current != config;
            *current = config;
            changed
        });
    }
}

/// The exec actions whose program would not run because others than root
/// could have written it, by name (`on_ban[0]`), with why: for `orch
/// check-config` and the daemon's start.
pub fn untrusted_programs(config: &ActionsConfig) -> Vec<(String, crate::file_trust::Untrusted)> {
    slots_of(config)
        .into_iter()
        .filter_map(|slot| match &slot.action.target {
            ActionTarget::Exec(argv) => {
                let program = std::path::Path::new(argv.first()?);
                let why = crate::file_trust::check_root_only(program).err()?;
                Some((slot.name, why))
            }
            ActionTarget::Webhook(_) => None,
        })
        .collect()
}

/// One configured action and its pending batch.
struct Slot {
    action: ActionConfig,
    kind: BanEventKind,
    /// How the log names it, such as `on_ban[0]`.
    name: String,
    batcher: Batcher,
    /// A delivery is under way; the next batch waits (and keeps merging).
    busy: bool,
}

fn slots_of(config: &ActionsConfig) -> Vec<Slot> {
    let kinds = [
        (BanEventKind::Ban, "on_ban", &config.on_ban),
        (BanEventKind::Unban, "on_unban", &config.on_unban),
    ];
    kinds
        .into_iter()
        .flat_map(|(kind, field, actions)| {
            actions.iter().enumerate().map(move |(index, action)| Slot {
                action: action.clone(),
                kind,
                name: format!("{field}[{index}]"),
                batcher: Batcher::new(
                    action.batch_window,
                    action.max_events_per_minute,
                    action.max_addresses,
                ),
                busy: false,
            })
        })
        .collect()
}

fn warn_untrusted(config: &ActionsConfig) {
    for (name, why) in untrusted_programs(config) {
        tracing::warn!(action = %name, "ban action will not run: {why}");
    }
}

/// The dispatcher's loop: events in, batches out, until the core's
/// sender is gone.
async fn dispatch(
    mut events: BanEventReceiver,
    mut config: watch::Receiver<ActionsConfig>,
    host: String,
) {
    let mut slots = slots_of(&config.borrow_and_update());
    // Which delivery ended: (generation of the slots, slot index).
    let (done, mut ended) = mpsc::unbounded_channel::<(u64, usize)>();
    let mut generation = 0u64;
    let mut config_open = true;
    loop {
        let now = Instant::now();
        let wake = slots
            .iter()
            .filter(|slot| !slot.busy)
            .filter_map(|slot| slot.batcher.next_due())
            .fold(now + OVERFLOW_CHECK, Instant::min);
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => feed(&mut slots, event),
                None => break,
            },
            Some((of, index)) = ended.recv() => {
                if of == generation && let Some(slot) = slots.get_mut(index) {
                    slot.busy = false;
                }
            }
            changed = config.changed(), if config_open => match changed {
                Ok(()) => {
                    generation += 1;
                    slots = slots_of(&config.borrow_and_update());
                    tracing::info!(actions = slots.len(), "ban actions reloaded");
                }
                Err(_) => config_open = false,
            },
            () = tokio::time::sleep_until(now.max(wake).into()) => {}
        }
        while let Some(event) = events.try_recv() {
            feed(&mut slots, event);
        }
        for counted in events.take_overflow() {
            tracing::warn!(
                event = counted.kind.as_str(),
                count = counted.count,
                "ban action queue full: networks counted, not listed"
            );
            feed(&mut slots, counted);
        }
        let now = Instant::now();
        for (index, slot) in slots.iter_mut().enumerate() {
            if slot.busy {
                continue;
            }
            if let Some(batch) = slot.batcher.take_due(now) {
                slot.busy = true;
                let (action, name, host, done) = (
                    slot.action.clone(),
                    slot.name.clone(),
                    host.clone(),
                    done.clone(),
                );
                tokio::spawn(async move {
                    deliver(&action, name, batch, &host).await;
                    let _ = done.send((generation, index));
                });
            }
        }
    }
    tracing::debug!("ban actions stopped");
}

/// Hands `event` to every action of its kind.
fn feed(slots: &mut [Slot], event: BanEvent) {
    let now = Instant::now();
    for slot in slots.iter_mut().filter(|slot| slot.kind == event.kind) {
        slot.batcher.push(event.clone(), now);
    }
}

/// Runs one action for one batch and logs how it went.
async fn deliver(action: &ActionConfig, name: String, batch: Batch, host: &str) {
    let count = batch.event.count;
    let result = match &action.target {
        ActionTarget::Exec(argv) => {
            exec::run(name.clone(), argv, &batch, host, action.timeout).await
        }
        ActionTarget::Webhook(url) => {
            webhook::post(url, &webhook::body(&batch, host), action.timeout)
                .await
                .map(|_| ())
                .map_err(|source| ActionError::Webhook {
                    url: url.to_string(),
                    source,
                })
        }
    };
    match result {
        Ok(()) => tracing::debug!(action = %name, count, "ban action delivered"),
        Err(why) => tracing::warn!(action = %name, count, "ban action failed: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::actions::check_webhook;
    use crate::store::BanRecord;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::Arc;

    /// A webhook on 127.0.0.1 that passes each JSON body on.
    fn webhook() -> (
        crate::config::WebhookUrl,
        std::sync::mpsc::Receiver<serde_json::Value>,
    ) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (bodies, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.strip_prefix("Content-Length: ") {
                        length = value.trim().parse().expect("length");
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).expect("body");
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
                let json = serde_json::from_slice(&body).expect("json");
                if bodies.send(json).is_err() {
                    return;
                }
            }
        });
        let url = check_webhook(&format!("http://127.0.0.1:{port}/")).expect("url");
        (url, received)
    }

    fn config(url: &crate::config::WebhookUrl) -> ActionsConfig {
        ActionsConfig {
            on_ban: vec![ActionConfig {
                target: ActionTarget::Webhook(url.clone()),
                timeout: Duration::from_secs(5),
                batch_window: Duration::from_millis(200),
                max_events_per_minute: 30,
                max_addresses: 1000,
            }],
            on_unban: Vec::new(),
        }
    }

    fn ban_event(i: u32) -> BanEvent {
        let record = BanRecord {
            net: format!("10.0.{}.{}/32", i / 256, i % 256)
                .parse()
                .expect("net"),
            created: 1,
            expires: 100,
            reason: Arc::from("r"),
            source: Arc::from("manual"),
        };
        BanEvent::of_records(BanEventKind::Ban, &[record], None, |_| false).expect("event")
    }

    /// Waits for the next body without blocking the runtime.
    async fn next(
        bodies: &std::sync::mpsc::Receiver<serde_json::Value>,
    ) -> Option<serde_json::Value> {
        next_within(bodies, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn a_hanging_program_is_killed_after_its_timeout_and_untrusted_ones_are_named() {
        let batch = Batch {
            event: BanEvent::counted(BanEventKind::Ban, 1),
            merged: 1,
            rate_limited: false,
        };
        let argv = ["/bin/sleep".to_string(), "30".to_string()];
        let started = Instant::now();
        let err = exec::run(
            "on_ban[0]".into(),
            &argv,
            &batch,
            "h",
            Duration::from_millis(300),
        )
        .await
        .expect_err("killed");
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("notify");
        std::fs::write(&program, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o757)).expect("chmod");
        let mut config = ActionsConfig::default();
        for argv in [
            vec!["/bin/true".to_string()],
            vec![program.display().to_string()],
        ] {
            config.on_unban.push(ActionConfig {
                target: ActionTarget::Exec(argv),
                timeout: Duration::from_secs(1),
                batch_window: Duration::from_secs(1),
                max_events_per_minute: 1,
                max_addresses: 1,
            });
        }
        let untrusted: Vec<String> = untrusted_programs(&config)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(untrusted, ["on_unban[1]"]);
    }

    #[tokio::test]
    async fn a_burst_beyond_the_queue_is_one_event_with_every_network_counted() {
        let (url, bodies) = webhook();
        let (actions, sender) = Actions::start(config(&url), "web1".into());
        // The dispatcher cannot run before the first await: all 100 arrive
        // at once, 64 queued and 36 only counted.
        for i in 0..100 {
            sender.send(ban_event(i));
        }
        let body = next(&bodies).await.expect("one event");
        assert_eq!(body["count"], 100, "{body}");
        assert_eq!(body["addresses"].as_array().map(Vec::len), Some(64));
        assert_eq!(body["truncated"], true);
        assert_eq!(body["host"], "web1");
        // Unbans do not reach an on_ban action.
        sender.send(BanEvent::counted(BanEventKind::Unban, 5));
        // With no actions, events go nowhere.
        actions.set_config(ActionsConfig::default());
        // One runtime thread: this lets the dispatcher take the change
        // before the next event is queued.
        tokio::time::sleep(Duration::from_millis(50)).await;
        sender.send(ban_event(1));
        assert!(
            next_within(&bodies, Duration::from_millis(600))
                .await
                .is_none()
        );
        // And back.
        actions.set_config(config(&url));
        tokio::time::sleep(Duration::from_millis(50)).await;
        sender.send(ban_event(2));
        let body = next(&bodies).await.expect("after the reload");
        assert_eq!(body["addresses"], serde_json::json!(["10.0.0.2"]));
    }

    async fn next_within(
        bodies: &std::sync::mpsc::Receiver<serde_json::Value>,
        wait: Duration,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(body) = bodies.try_recv() {
                return Some(body);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}
