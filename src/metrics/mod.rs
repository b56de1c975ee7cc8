//! Metrics: `[metrics] listen` serves `GET /metrics` (Prometheus text) on
//! a TCP or unix socket, `[metrics] textfile` writes the same text for
//! node_exporter's textfile collector. Both are off by default.
//!
//! This module only wires the parts together: `collect.rs` reads a
//! snapshot of what the daemon already publishes, `render.rs` turns it
//! into text, `server.rs` and `textfile.rs` deliver it. Nothing here
//! queues work on the core or changes the firewall, and a metrics failure
//! never stops the daemon.

pub mod collect;
pub mod render;
pub mod server;
pub mod textfile;

use std::sync::Arc;

use crate::config::Config;
pub use collect::Sources;

/// Why the metrics could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        listen: String,
        #[source]
        source: std::io::Error,
    },
}

/// Starts the endpoint and the textfile writer that `config` asks for, as
/// tasks on the current runtime. A socket that cannot be bound is logged
/// as an error and the daemon goes on without it: bans matter more than
/// their metrics.
pub async fn start(config: &Config, sources: Sources) {
    let metrics = &config.metrics;
    if !metrics.enabled() {
        return;
    }
    let render: server::Render = Arc::new(move || render::render(&collect::snapshot(&sources)));
    if let Some(note) = metrics.exposure_note() {
        tracing::warn!("{note}");
    }
    if let Some(listen) = &metrics.listen {
        match server::Listener::bind(listen).await {
            Ok(listener) => {
                tracing::info!(%listen, "serving metrics at /metrics");
                tokio::spawn(listener.serve(render.clone()));
            }
            Err(err) => tracing::error!("metrics: {err}; going on without the endpoint"),
        }
    }
    if let Some(path) = &metrics.textfile {
        tracing::info!(path = %path.display(), every = ?metrics.interval, "writing the metrics textfile");
        tokio::spawn(textfile::run(path.clone(), metrics.interval, render));
    }
}
