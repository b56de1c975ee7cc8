//! Keeps the DNS allow names resolved: resolves each name when it is due,
//! feeds the results to the pure [`DnsAllowState`], and hands the core the
//! new address list whenever it changed (the core swaps it into the kernel
//! in one transaction).
//!
//! This task only resolves and schedules; what is allowed for how long is
//! `crate::dns`'s decision, and only the core's reconciler touches the
//! kernel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::daemon::core::CoreHandle;
use crate::daemon::reconciler::DnsAllows;
use crate::dns::{DnsAllowState, DnsSettings, NameReport, Resolver};
use crate::timefmt::now_unix;

/// What `orch allow list` shows for the DNS names, refreshed after each
/// round of resolution.
pub type DnsReports = Arc<Mutex<Vec<NameReport>>>;

/// The longest the task sleeps, so a clock jump cannot stall it for long.
const MAX_SLEEP: Duration = Duration::from_secs(300);

/// Runs until the core stops. Does nothing when no names are configured.
pub async fn run(settings: DnsSettings, core: CoreHandle, reports: DnsReports) {
    if settings.entries.is_empty() {
        return;
    }
    let resolver = match Resolver::new(&settings.servers) {
        Ok(resolver) => resolver,
        Err(err) => {
            tracing::error!("DNS allow is off: cannot set up the resolver: {err}");
            return;
        }
    };
    let mut state = DnsAllowState::new(&settings);
    loop {
        // All due names at once: one dead name must not hold up the others
        // past their grace period.
        // Each family on its own: a resolver that refuses AAAA must not
        // cost a name its A addresses.
        let due = state.due_families(now_unix());
        let resolver = &resolver;
        let lookups = due.iter().map(|(name, family)| async move {
            (name, family, resolver.resolve(name, family).await)
        });
        let results = futures_util::future::join_all(lookups).await;
        let mut changed = false;
        for (name, family, result) in results {
            changed |= state.record_family(name, family, result, now_unix());
        }
        if changed {
            let allows = DnsAllows {
                any_port: state.elements(now_unix()),
                by_port: state.port_elements(now_unix()),
            };
            tracing::info!(
                addresses = allows.any_port.len(),
                address_ports = allows.by_port.len(),
                "DNS allow addresses changed"
            );
            match core.call(move |core| core.set_dns_allows(allows)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!("cannot apply DNS allow addresses: {err}"),
                Err(_) => return,
            }
        }
        if let Ok(mut shown) = reports.lock() {
            *shown = state.report(now_unix());
        }
        let wait = state
            .next_due_in(now_unix())
            .map(Duration::from_secs)
            .unwrap_or(MAX_SLEEP)
            .clamp(Duration::from_secs(1), MAX_SLEEP);
        tokio::time::sleep(wait).await;
    }
}
