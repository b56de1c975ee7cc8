//! Exec actions: the program runs the way a hook runs
//! ([`crate::hooks::run_program`]: only if no one but root could have
//! written it, with only descriptors 0-2, in its own process group, killed
//! with that group on timeout), with the event in its environment and the
//! listed addresses on stdin, one a line.
//!
//! It only builds the environment and the input; running is the hooks'
//! code, not a copy of it.

use std::path::Path;
use std::time::Duration;

use super::ActionError;
use super::batch::Batch;

/// The environment an exec action gets for `batch` (on top of PATH and
/// LANG).
pub fn environment(batch: &Batch, host: &str) -> Vec<(String, String)> {
    let event = &batch.event;
    let first = event
        .addresses
        .first()
        .map(crate::addr::display_net)
        .unwrap_or_default();
    let flag = |on: bool| if on { "1" } else { "0" };
    [
        ("ORCH_EVENT", event.kind.as_str().to_string()),
        ("ORCH_ADDRESS", first),
        ("ORCH_COUNT", event.count.to_string()),
        ("ORCH_TRUNCATED", flag(event.truncated()).to_string()),
        ("ORCH_SOURCE", event.source.to_string()),
        ("ORCH_JAIL", event.jail.to_string()),
        ("ORCH_REASON", event.reason.to_string()),
        (
            "ORCH_EXPIRES_AT",
            event
                .expires_at
                .map(|at| at.to_string())
                .unwrap_or_default(),
        ),
        ("ORCH_HOST", host.to_string()),
        ("ORCH_MERGED", batch.merged.to_string()),
        ("ORCH_RATE_LIMITED", flag(batch.rate_limited).to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

/// The listed addresses, one a line.
pub fn input(batch: &Batch) -> Vec<u8> {
    let mut text = String::with_capacity(batch.event.addresses.len() * 16);
    for net in &batch.event.addresses {
        text.push_str(&crate::addr::display_net(net));
        text.push('\n');
    }
    text.into_bytes()
}

/// Runs `argv` for `batch`; `Err` says how it failed.
pub async fn run(
    name: String,
    argv: &[String],
    batch: &Batch,
    host: &str,
    timeout: Duration,
) -> Result<(), ActionError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ActionError::NoProgram);
    };
    let env = environment(batch, host);
    let result =
        crate::hooks::run_program(Path::new(program), name, args, &env, input(batch), timeout)
            .await;
    if result.outcome.is_success() {
        Ok(())
    } else {
        Err(ActionError::Program {
            program: program.clone(),
            outcome: result.outcome,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::ban_events::{BanEvent, BanEventKind};
    use std::sync::Arc;

    fn batch(addresses: &[&str], count: u64) -> Batch {
        Batch {
            event: BanEvent {
                kind: BanEventKind::Unban,
                count,
                addresses: addresses.iter().map(|a| a.parse().expect("net")).collect(),
                source: Arc::from("manual"),
                jail: Arc::from(""),
                reason: Arc::from("unban"),
                expires_at: None,
            },
            merged: 1,
            rate_limited: false,
        }
    }

    #[test]
    fn environment_and_input_describe_the_event() {
        let batch = batch(&["192.0.2.7/32", "2001:db8::/48"], 5);
        let env: std::collections::BTreeMap<_, _> =
            environment(&batch, "web1").into_iter().collect();
        assert_eq!(env["ORCH_EVENT"], "unban");
        assert_eq!(env["ORCH_ADDRESS"], "192.0.2.7");
        assert_eq!(env["ORCH_COUNT"], "5");
        assert_eq!(env["ORCH_TRUNCATED"], "1");
        assert_eq!(env["ORCH_EXPIRES_AT"], "");
        assert_eq!(env["ORCH_REASON"], "unban");
        assert_eq!(env["ORCH_HOST"], "web1");
        assert_eq!(input(&batch), b"192.0.2.7\n2001:db8::/48\n");
    }

    #[tokio::test]
    async fn a_program_others_could_change_does_not_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("notify");
        let marker = dir.path().join("ran");
        std::fs::write(&program, format!("#!/bin/sh\ntouch {}\n", marker.display()))
            .expect("write");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let argv = [program.display().to_string()];
        let err = run(
            "on_unban[0]".into(),
            &argv,
            &batch(&["192.0.2.7/32"], 1),
            "h",
            Duration::from_secs(5),
        )
        .await
        .expect_err("refused");
        assert!(err.to_string().contains("was not run"), "{err}");
        assert!(!marker.exists());
    }
}
