//! Executor that pipes each script to the `nft` binary (`nft -f -`).
//!
//! The fallback when libnftables cannot be loaded or `firewall.owner = off`:
//! every call is a new process, so the table it manages cannot be owned.
//! This module only runs scripts; it must not decide what they say.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Executor, FirewallError};

/// Runs scripts with the `nft` found on PATH.
pub struct NftCliExecutor {
    program: String,
}

impl NftCliExecutor {
    pub fn new() -> Self {
        NftCliExecutor {
            program: "nft".into(),
        }
    }
}

impl Default for NftCliExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor for NftCliExecutor {
    fn run(&mut self, script: &str) -> Result<(), FirewallError> {
        let spawn_error = |e: std::io::Error| FirewallError::Spawn {
            program: self.program.clone(),
            source: e,
        };
        let mut command = Command::new(&self.program);
        command
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = crate::child::only_standard_fds(&mut command)
            .spawn()
            .map_err(spawn_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).map_err(spawn_error)?;
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        if output.status.success() {
            Ok(())
        } else {
            let message = String::from_utf8_lossy(&output.stderr);
            Err(FirewallError::Refused(super::summarise_nft_error(&message)))
        }
    }

    fn name(&self) -> &'static str {
        "nft"
    }
}
