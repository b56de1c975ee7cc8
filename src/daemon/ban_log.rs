//! The journal's record of what the core did to bans: one entry per ban,
//! unban and table restore, with a fixed MESSAGE_ID (see `logging.rs`) and
//! the fields ORCH_EVENT, ORCH_ADDRESS, ORCH_SOURCE, ORCH_JAIL, so that
//! `journalctl MESSAGE_ID=...` or `journalctl ORCH_JAIL=sshd` lists them.
//!
//! A big batch (a 100k BanMany, a mass expiry) is logged as its first
//! [`ENTRIES_PER_BATCH`] entries and one summary with the count, so the
//! journal is never flooded. Bans from other fleet hosts are logged at
//! debug only: another host decides how many arrive and how fast, and the
//! fleet code already logs them in rate-limited summaries (see
//! `fleet/log_window.rs`). It only logs; it must not decide anything.

use crate::logging::{MESSAGE_ID_BAN, MESSAGE_ID_RESTORED, MESSAGE_ID_UNBAN};
use crate::store::BanRecord;

/// Entries logged one by one per batch; the rest are counted.
pub const ENTRIES_PER_BATCH: usize = 20;

/// The jail behind a ban source: sources are "manual", "fleet:<host>",
/// "import:<tool>" or a jail's name.
pub fn jail_of(source: &str) -> &str {
    if source == "manual" || source.contains(':') {
        ""
    } else {
        source
    }
}

/// Whether another fleet host's ban put `record` here.
fn from_the_fleet(record: &BanRecord) -> bool {
    record.source.starts_with("fleet:")
}

/// The local records to log one by one, after a debug count of the fleet's.
fn local_only<'a>(records: impl Iterator<Item = &'a BanRecord>, what: &str) -> Vec<&'a BanRecord> {
    let (fleet, local): (Vec<&BanRecord>, Vec<&BanRecord>) =
        records.partition(|r| from_the_fleet(r));
    if !fleet.is_empty() {
        tracing::debug!(
            orch_count = fleet.len(),
            "{what}: {} from other fleet hosts",
            fleet.len()
        );
    }
    local
}

/// Bans now in the store and the kernel.
pub fn banned<'a>(records: impl Iterator<Item = &'a BanRecord>) {
    let records = local_only(records, "banned");
    let total = records.len();
    for record in records.into_iter().take(ENTRIES_PER_BATCH) {
        let address = crate::addr::display_net(&record.net);
        let length = std::time::Duration::from_secs(record.expires.saturating_sub(record.created));
        tracing::info!(
            message_id = MESSAGE_ID_BAN,
            orch_event = "ban",
            orch_address = %address,
            orch_source = %record.source,
            orch_jail = jail_of(&record.source),
            orch_expires_at = record.expires,
            "banned {address} for {} ({}){}",
            humantime::format_duration(length),
            record.source,
            reason_suffix(&record.reason)
        );
    }
    if total > ENTRIES_PER_BATCH {
        tracing::info!(
            message_id = MESSAGE_ID_BAN,
            orch_event = "ban",
            orch_count = total,
            "banned {total} addresses in one batch ({} more not logged one by one)",
            total - ENTRIES_PER_BATCH
        );
    }
}

/// Bans lifted; `why` is "unban", "expire" or "fleet".
pub fn unbanned(records: &[BanRecord], why: &str) {
    let records = local_only(records.iter(), why);
    for record in records.iter().take(ENTRIES_PER_BATCH) {
        let address = crate::addr::display_net(&record.net);
        tracing::info!(
            message_id = MESSAGE_ID_UNBAN,
            orch_event = why,
            orch_address = %address,
            orch_source = %record.source,
            orch_jail = jail_of(&record.source),
            "ban of {address} lifted ({why}; banned by {})",
            record.source
        );
    }
    if records.len() > ENTRIES_PER_BATCH {
        tracing::info!(
            message_id = MESSAGE_ID_UNBAN,
            orch_event = why,
            orch_count = records.len(),
            "{} bans lifted ({why}; {} more not logged one by one)",
            records.len(),
            records.len() - ENTRIES_PER_BATCH
        );
    }
}

/// The table was missing or incomplete and has been put back.
pub fn restored(cause: &str, bans: usize, milliseconds: u64) {
    tracing::warn!(
        message_id = MESSAGE_ID_RESTORED,
        orch_event = "restore",
        orch_cause = cause,
        orch_bans = bans,
        "orch's table was missing or incomplete ({cause}); restored {bans} bans in {milliseconds} ms"
    );
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_jail_source_names_a_jail() {
        assert_eq!(jail_of("sshd"), "sshd");
        assert_eq!(jail_of("manual"), "");
        assert_eq!(jail_of("fleet:web2"), "");
        assert_eq!(jail_of("import:fail2ban"), "");
    }
}
