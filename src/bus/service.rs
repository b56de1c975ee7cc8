//! The daemon side of `org.orch.Orch1`: hands each request to the core
//! and emits signals. Who may call what is decided before a call gets
//! here, by `guard.rs`, which wraps this service on the bus.
//!
//! It must not touch the store or the firewall directly; the core does.

use zbus::interface;
use zbus::object_server::SignalEmitter;

use super::errors::OrchError;
use crate::daemon::bus_link::ServiceParts;
use crate::daemon::core::{Core, CoreError, CoreHandle};
use crate::daemon::dns_refresh::DnsReports;
use crate::daemon::hook_runs::HookRuns;
use crate::daemon::imported_bans::ImportedBan;
use crate::daemon::jails::JailSupervisor;
use crate::daemon::listing::{BanQuery, MAX_PAGE_ROWS};
use crate::daemon::reload::ReloadRequests;
use crate::store::BanRecord;
use crate::timefmt::rfc3339;

/// BanMany emits one `Banned` signal per address up to this many; larger
/// batches (bulk imports) emit none, so they cannot flood the bus.
pub const MAX_SIGNALS_PER_CALL: usize = 1000;

/// Longest unit name `SyncEvent` takes (systemd's own limit).
const MAX_UNIT_NAME_BYTES: usize = 256;

/// One row of `ListBans`: address, banned_at, expires_at, reason, source.
pub type BanRow = (String, u64, u64, String, String);

pub struct OrchService {
    core: CoreHandle,
    hooks: HookRuns,
    dns: DnsReports,
    jails: JailSupervisor,
    fleet: Option<crate::fleet::FleetLink>,
    reloads: ReloadRequests,
}

/// One row of the `Jails` property: name, filter, source, state, lines
/// read, failures found, addresses tracked now, active bans; then the
/// jail's health (`jail::health`): lines/s over the last 10 s, lag in
/// seconds, bytes unread in its files, match-limit hits, lines too long
/// (cut), lines not UTF-8 (bytes replaced), and whether the lag warning is
/// raised. Lag and unread bytes are -1 when not known: unread bytes for a
/// journal jail, both for a jail that reads no log (recidive).
pub type JailRow = (
    String,
    String,
    String,
    String,
    u64,
    u64,
    u64,
    u64,
    f64,
    f64,
    i64,
    u64,
    u64,
    u64,
    bool,
);

/// One row of `ListAllows`: entry (address or prefix), kind ("static",
/// "runtime" or "dns"), the DNS name of a dns row or the comment of a
/// runtime row, expires_at (0 = never).
pub type AllowRow = (String, String, String, u64);

/// One row of `RunHooks`/`SyncEvent` results: hook name, status (0 = ok).
pub type HookRow = (String, i32);

/// One entry of `ImportBans`: address, expires_at (Unix seconds), reason, source.
pub type ImportRow = (String, u64, String, String);

fn hook_rows(results: &[crate::hooks::HookResult]) -> Vec<HookRow> {
    results
        .iter()
        .map(|r| (r.name.clone(), r.outcome.status_code()))
        .collect()
}

impl OrchService {
    pub fn new(parts: ServiceParts) -> Self {
        OrchService {
            core: parts.core,
            hooks: parts.hooks,
            dns: parts.dns,
            jails: parts.jails,
            fleet: parts.fleet,
            reloads: parts.reloads,
        }
    }

    /// What the core last published: every property is read from it, so
    /// reads never wait for the core.
    fn published(
        &self,
    ) -> Result<std::sync::Arc<crate::daemon::read_view::Published>, zbus::fdo::Error> {
        self.core
            .view()
            .ok_or_else(|| zbus::fdo::Error::Failed("the daemon is still starting".into()))
    }

    /// Runs a request on the core. The guard has authorised the caller.
    async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Core) -> Result<R, CoreError> + Send + 'static,
    ) -> Result<R, OrchError> {
        Ok(self.core.call(job).await??)
    }
}

fn ban_row(record: &BanRecord) -> BanRow {
    (
        display_net(record),
        record.created,
        record.expires,
        record.reason.to_string(),
        record.source.to_string(),
    )
}

fn display_net(record: &BanRecord) -> String {
    crate::addr::display_net(&record.net)
}

async fn emit_banned(emitter: &SignalEmitter<'_>, records: &[BanRecord]) {
    if records.len() > MAX_SIGNALS_PER_CALL {
        return;
    }
    for record in records {
        if let Err(err) = OrchService::banned(
            emitter,
            &display_net(record),
            record.expires,
            &record.reason,
        )
        .await
        {
            tracing::debug!("cannot emit Banned: {err}");
        }
    }
}

#[interface(name = "org.orch.Orch1")]
impl OrchService {
    /// Ban an address or prefix for `seconds` (0 = bans.default_time).
    async fn ban(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        address: String,
        seconds: u64,
        reason: String,
    ) -> Result<(), OrchError> {
        let records = self
            .run(move |core| core.ban(&[address], seconds, &reason, "manual"))
            .await?;
        emit_banned(&emitter, &records).await;
        Ok(())
    }

    /// Ban many addresses in one transaction and one fsync; all or nothing.
    /// Returns how many distinct addresses were banned.
    async fn ban_many(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        addresses: Vec<String>,
        seconds: u64,
        reason: String,
    ) -> Result<u32, OrchError> {
        let records = self
            .run(move |core| core.ban(&addresses, seconds, &reason, "manual"))
            .await?;
        emit_banned(&emitter, &records).await;
        Ok(u32::try_from(records.len()).unwrap_or(u32::MAX))
    }

    /// Import bans from another tool (`orch import fail2ban`): each entry
    /// is (address, expires_at in Unix seconds, reason, source), judged on
    /// its own: a refused entry does not hold back the others, and one an
    /// active ban already covers for as long is unchanged. Expiries beyond
    /// bans.max_time from now are cut to it. Returns (banned, unchanged,
    /// refused entries with why); one fsync, one kernel transaction.
    async fn import_bans(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        bans: Vec<ImportRow>,
    ) -> Result<(u32, u32, Vec<(String, String)>), OrchError> {
        let bans: Vec<ImportedBan> = bans
            .into_iter()
            .map(|(address, expires_at, reason, source)| ImportedBan {
                address,
                expires_at,
                reason,
                source,
            })
            .collect();
        let outcome = self.run(move |core| core.import_bans(&bans)).await?;
        emit_banned(&emitter, &outcome.banned).await;
        let banned = u32::try_from(outcome.banned.len()).unwrap_or(u32::MAX);
        Ok((banned, outcome.unchanged, outcome.refused))
    }

    /// Lift a ban. Returns whether it was banned.
    async fn unban(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        address: String,
    ) -> Result<bool, OrchError> {
        let removed = self.run(move |core| core.unban(&address)).await?;
        if let Some(record) = &removed
            && let Err(err) = OrchService::unbanned(&emitter, &display_net(record)).await
        {
            tracing::debug!("cannot emit Unbanned: {err}");
        }
        Ok(removed.is_some())
    }

    /// Lift a ban here and on every host of the fleet: deletes every
    /// host's key for the address, with `fleet.admin`'s credentials.
    /// Returns how many hosts' keys were deleted.
    async fn unban_fleet(
        &self,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        address: String,
    ) -> Result<u32, OrchError> {
        let Some(fleet) = &self.fleet else {
            return Err(OrchError::Fleet(
                "no fleet is configured ([fleet] servers is empty)".into(),
            ));
        };
        let net = crate::addr::parse_net(&address).map_err(CoreError::from)?;
        let deleted = fleet
            .unban_everywhere(net)
            .await
            .map_err(|e| OrchError::Fleet(e.to_string()))?;
        let removed = self.core.call(move |core| core.unban(&address)).await??;
        if let Some(record) = &removed
            && let Err(err) = OrchService::unbanned(&emitter, &display_net(record)).await
        {
            tracing::debug!("cannot emit Unbanned: {err}");
        }
        tracing::info!("fleet: unbanned {net} on every host ({deleted} keys deleted)");
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }

    /// Every active ban: address, banned_at, expires_at, reason, source,
    /// in network order. Refused with `.TooMany` above 10,000 bans: page
    /// through them with `ListBansPage`.
    async fn list_bans(&self) -> Result<Vec<BanRow>, OrchError> {
        let query = BanQuery {
            limit: MAX_PAGE_ROWS,
            ..Default::default()
        };
        let page = self.core.read(move |core| core.list_page(&query)).await?;
        if page.more {
            return Err(OrchError::TooMany(format!(
                "more than {MAX_PAGE_ROWS} bans, more than one reply may carry; \
                 page through them with ListBansPage (`orch list` does)"
            )));
        }
        Ok(page.rows.iter().map(ban_row).collect())
    }

    /// One page of the active bans, in network order: those after `after`
    /// (an address or prefix; "" = from the start), from `source` ("" =
    /// any; a jail's bans have its name as source), inside `within` (a
    /// prefix; "" = anywhere), at most `limit` (0 or above 10,000 =
    /// 10,000). Returns the rows and the `after` of the next page, "" when
    /// this was the last.
    #[zbus(out_args("rows", "next"))]
    async fn list_bans_page(
        &self,
        after: String,
        limit: u32,
        source: String,
        within: String,
    ) -> Result<(Vec<BanRow>, String), OrchError> {
        let parse = |what: &str, text: &str| -> Result<Option<ipnet::IpNet>, OrchError> {
            if text.is_empty() {
                return Ok(None);
            }
            crate::addr::parse_net(text)
                .map(Some)
                .map_err(|e| OrchError::InvalidArgument(format!("{what}: {e}")))
        };
        let query = BanQuery {
            after: parse("after", &after)?,
            limit: match limit {
                0 => MAX_PAGE_ROWS,
                n => n as usize,
            },
            source: (!source.is_empty()).then(|| crate::quote::cut(&source, 256).to_string()),
            within: parse("within", &within)?,
        };
        let page = self.core.read(move |core| core.list_page(&query)).await?;
        let next = match (page.more, page.rows.last()) {
            (true, Some(last)) => last.net.to_string(),
            _ => String::new(),
        };
        Ok((page.rows.iter().map(ban_row).collect(), next))
    }

    /// The whole allowlist: static (config), runtime (Allow), and the
    /// addresses of each DNS allow name with their expiry. A DNS name with
    /// no address yet is listed with an empty entry.
    async fn list_allows(&self) -> Result<Vec<AllowRow>, OrchError> {
        let (static_allows, runtime_allows) = self
            .core
            .read(|core| (core.config().allow.clone(), core.runtime_allow_entries()))
            .await?;
        let mut rows: Vec<AllowRow> = static_allows
            .iter()
            .map(|net| (net.to_string(), "static".to_string(), String::new(), 0))
            .collect();
        rows.extend(runtime_allows.into_iter().map(|(net, note)| {
            let (comment, expires) = note.map_or((String::new(), 0), |note| {
                (note.comment, note.expires.unwrap_or(0))
            });
            (net.to_string(), "runtime".to_string(), comment, expires)
        }));
        let reports = self.dns.lock().map(|r| r.clone()).unwrap_or_default();
        for report in reports {
            // Each family's state: "dns A", "dns AAAA"; a family with no
            // address says why when it is failing.
            let kind = format!("dns {}", report.family);
            if report.addresses.is_empty() {
                let name = match &report.last_error {
                    Some(error) => format!("{} (failing: {error})", report.name),
                    None => report.name.clone(),
                };
                rows.push((String::new(), kind.clone(), name, 0));
            }
            for (addr, expires) in &report.addresses {
                rows.push((
                    addr.to_string(),
                    kind.clone(),
                    report.name.clone(),
                    *expires,
                ));
            }
        }
        if rows.len() > MAX_PAGE_ROWS {
            return Err(OrchError::TooMany(format!(
                "{} allowlist entries, more than one reply may carry ({MAX_PAGE_ROWS})",
                rows.len()
            )));
        }
        Ok(rows)
    }

    /// What holds ADDRESS banned and what allows it: the bans that cover
    /// it, other fleet hosts' bans, how often it was banned before, the
    /// allowlist entries that cover it, and the packets and bytes its ban
    /// has dropped. One JSON object (docs/json.md, `query`). Anyone may ask.
    async fn query(&self, address: String) -> Result<String, OrchError> {
        let core_query = self.core.read(move |core| core.query(&address)).await??;
        let answer = crate::daemon::query::complete(core_query, &self.dns).await;
        serde_json::to_string(&answer).map_err(|err| OrchError::Failed(err.to_string()))
    }

    /// Add a runtime allowlist entry (persisted).
    async fn allow(&self, cidr: String) -> Result<(), OrchError> {
        self.run(move |core| core.allow(&cidr)).await?;
        Ok(())
    }

    /// Add a runtime allowlist entry (persisted) that ends after `seconds`
    /// (0: never) and carries `comment` (at most 256 bytes, one line); an
    /// entry already there takes this end and comment.
    async fn allow_with(
        &self,
        cidr: String,
        seconds: u64,
        comment: String,
    ) -> Result<(), OrchError> {
        self.run(move |core| core.allow_with(&cidr, seconds, &comment))
            .await?;
        Ok(())
    }

    /// Remove a runtime allowlist entry.
    async fn disallow(&self, cidr: String) -> Result<(), OrchError> {
        self.run(move |core| core.disallow(&cidr)).await
    }

    /// Re-apply the whole table from the store, returning when done.
    async fn sync(&self) -> Result<(), OrchError> {
        self.run(|core| core.sync("Sync() over D-Bus")).await?;
        Ok(())
    }

    /// Re-apply the whole table, then run the hooks with ORCH_EVENT=`event`
    /// (start, restart, reload, flush or manual) and ORCH_UNIT=`unit`;
    /// returns each hook's status (0 = success) when all are done. This is
    /// what nftables.service's drop-in calls after a start or reload.
    async fn sync_event(&self, event: String, unit: String) -> Result<Vec<HookRow>, OrchError> {
        const EVENTS: [&str; 5] = ["start", "restart", "reload", "flush", "manual"];
        if !EVENTS.contains(&event.as_str()) {
            return Err(OrchError::InvalidArgument(format!(
                "event {} is not one of {}",
                crate::quote::quote_input(&event),
                EVENTS.join(", ")
            )));
        }
        if unit.len() > MAX_UNIT_NAME_BYTES
            || !unit
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":_.\\@-".contains(c))
        {
            return Err(OrchError::InvalidArgument(format!(
                "unit {} is not a systemd unit name",
                crate::quote::quote_input(&unit)
            )));
        }
        let cause = format!("SyncEvent({event}) over D-Bus");
        self.run(move |core| core.sync(&cause)).await?;
        let unit = (!unit.is_empty()).then_some(unit);
        Ok(hook_rows(&self.hooks.run_and_wait(&event, unit).await))
    }

    /// Re-read the configuration files and apply them, as SIGHUP does, and
    /// return when done: the notes of the new configuration (changes that
    /// wait for a restart), or `.ConfigInvalid` saying why it was refused,
    /// in which case the running configuration stays.
    async fn reload(&self) -> Result<Vec<String>, OrchError> {
        self.reloads
            .reload()
            .await
            .map_err(OrchError::ConfigInvalid)
    }

    /// Run the hooks now (ORCH_EVENT=manual); returns each hook's status.
    async fn run_hooks(&self) -> Result<Vec<HookRow>, OrchError> {
        Ok(hook_rows(&self.hooks.run_and_wait("manual", None).await))
    }

    /// Number of stored bans.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn ban_count(&self) -> Result<u32, zbus::fdo::Error> {
        let count = self.published()?.status.ban_count;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// orch's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// Daemon facts as key/value strings: table, backend, owned, persist,
    /// bans, allowlist sizes, last_sync, last_event, `unit:<name>` for
    /// each watched systemd unit, and `config_error` while the daemon runs
    /// on a fallback because the configuration on disk is invalid.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn firewall(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, zbus::fdo::Error> {
        let published = self.published()?;
        let status = &published.status;
        let mut facts = std::collections::HashMap::new();
        facts.insert("table".into(), format!("inet {}", status.table));
        facts.insert("backend".into(), status.firewall.backend.to_string());
        facts.insert("owned".into(), status.firewall.owned.to_string());
        facts.insert("persist".into(), status.firewall.persist.to_string());
        facts.insert("bans".into(), status.ban_count.to_string());
        facts.insert("static_allows".into(), status.static_allows.to_string());
        facts.insert("runtime_allows".into(), status.runtime_allows.to_string());
        if let Some(error) = &status.config_error {
            facts.insert("config_error".into(), error.clone());
        }
        if let Some((kind, cause, at)) = &status.last_event {
            facts.insert(
                "last_event".into(),
                format!("{} ({}: {})", rfc3339(*at), kind.as_str(), cause),
            );
        }
        for (unit, state, at) in &status.units {
            facts.insert(
                format!("unit:{unit}"),
                format!("{state} (since {})", rfc3339(*at)),
            );
        }
        let hooks = self.hooks.status();
        for (name, (code, at, stderr_tail)) in &hooks.last {
            let outcome = if *code == 0 {
                "ok".to_string()
            } else if *code == crate::hooks::HookOutcome::UNTRUSTED_CODE {
                format!("NOT RUN: {}", stderr_tail.join(" | "))
            } else {
                format!("FAILED (status {code}) {}", stderr_tail.join(" | "))
            };
            facts.insert(
                format!("hook:{name}"),
                format!("{outcome} at {}", rfc3339(*at)),
            );
        }
        if let Some((event, at)) = &hooks.last_run {
            facts.insert(
                "hooks_last_run".into(),
                format!("{} ({event}), {} runs", rfc3339(*at), hooks.runs),
            );
        }
        if let Some(sync) = &status.last_sync {
            facts.insert(
                "last_sync".into(),
                format!(
                    "{} ({}, {} bans in {} ms)",
                    rfc3339(sync.at_unix),
                    sync.cause,
                    sync.bans_applied,
                    sync.duration_ms
                ),
            );
        }
        Ok(facts)
    }

    /// Whether the fleet connection is up and caught up (false without a
    /// fleet).
    #[zbus(property(emits_changed_signal = "false"))]
    fn fleet_connected(&self) -> bool {
        self.fleet
            .as_ref()
            .is_some_and(|fleet| fleet.status.snapshot().connected)
    }

    /// Fleet facts as key/value strings: name, bucket, state, server,
    /// last_error, last_event (Unix seconds), outbox, key_ttl,
    /// `origin:<host>` = active bans from that host, and
    /// `skipped` = malformed bucket entries skipped since start,
    /// `collision` = why this host publishes nothing (another daemon holds
    /// its fleet name),
    /// `refused:<host>:<why>` = that host's bans not applied here since
    /// start (why: local-rule, prefix, protected, overlap, origin-count,
    /// origin-space, total). Empty without a fleet.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn fleet(&self) -> Result<std::collections::HashMap<String, String>, zbus::fdo::Error> {
        let mut facts = std::collections::HashMap::new();
        let Some(fleet) = &self.fleet else {
            return Ok(facts);
        };
        let state = fleet.status.snapshot();
        facts.insert("name".into(), fleet.config.name.clone());
        facts.insert("bucket".into(), fleet.config.bucket.clone());
        facts.insert("state".into(), state.phase.clone());
        facts.insert("server".into(), state.server.clone());
        facts.insert("outbox".into(), fleet.outbox.len().to_string());
        facts.insert("key_ttl".into(), state.key_ttl.to_string());
        if let Some(error) = state.last_error {
            facts.insert("last_error".into(), error);
        }
        if let Some(at) = state.last_event {
            facts.insert("last_event".into(), at.to_string());
        }
        facts.insert("skipped".into(), state.skipped.to_string());
        if let Some(collision) = state.collision {
            facts.insert("collision".into(), collision);
        }
        for (origin, kinds) in &state.refused {
            for (kind, count) in kinds {
                facts.insert(format!("refused:{origin}:{kind}"), count.to_string());
            }
        }
        let by_origin = crate::daemon::read_view::by_origin(&self.published()?.by_source);
        for (origin, count) in by_origin {
            facts.insert(format!("origin:{origin}"), count.to_string());
        }
        Ok(facts)
    }

    /// Why jails nobody configured run or not: the default sshd jail when
    /// no jails are configured. Empty otherwise.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn jail_notes(&self) -> Vec<String> {
        self.jails.notes()
    }

    /// Bans each running jail has made since the daemon started (its
    /// active bans are in `Jails`).
    #[zbus(property(emits_changed_signal = "false"))]
    async fn jail_bans_total(&self) -> Vec<(String, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        self.jails
            .views()
            .iter()
            .map(|jail| (jail.name.clone(), jail.stats.bans.load(Relaxed)))
            .collect()
    }

    /// The running log jails and what they have found.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn jails(&self) -> Result<Vec<JailRow>, zbus::fdo::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let published = self.published()?;
        let by_source = &published.by_source;
        Ok(self
            .jails
            .views()
            .iter()
            .map(|jail| {
                let state = jail
                    .stats
                    .state
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_default();
                let health = jail.stats.health();
                (
                    jail.name.clone(),
                    jail.filter.clone(),
                    jail.source.clone(),
                    state,
                    jail.stats.lines.load(Relaxed),
                    jail.stats.failures.load(Relaxed),
                    jail.stats.tracked.load(Relaxed),
                    by_source.get(&jail.name).copied().unwrap_or(0) as u64,
                    health.map_or(0.0, |h| h.lines_per_sec),
                    health.map_or(-1.0, |h| h.lag.as_secs_f64()),
                    health
                        .and_then(|h| h.bytes_behind)
                        .map_or(-1, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
                    health.map_or(0, |h| h.limit_hits),
                    health.map_or(0, |h| h.too_long),
                    health.map_or(0, |h| h.not_utf8),
                    health.is_some_and(|h| h.lagging),
                )
            })
            .collect())
    }

    #[zbus(signal)]
    async fn banned(
        emitter: &SignalEmitter<'_>,
        address: &str,
        expires_at: u64,
        reason: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn hook_failed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        status: i32,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn unbanned(emitter: &SignalEmitter<'_>, address: &str) -> zbus::Result<()>;
}
