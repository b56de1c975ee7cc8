//! The fleet lab the fleet tests share: the topology of `fleet_topology.rs`
//! with NATS running, hosts started with a `[fleet]` section, waits for a
//! host to connect, and the log tails a failing test prints. It must not
//! assert anything a test is about.

use std::time::Duration;

use bytes::Bytes;

use super::fleet_topology::{FleetNats, FleetOpts, Topology, host_config};
use super::nats::NatsVersion;
use super::poll_until;

/// How long the tests poll before they give up (longer than any bound, so a
/// slow result is reported with its time instead of as a time-out).
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long a host may take to (re)connect to NATS, including the client's
/// reconnect back-off after a server restart.
pub const RECONNECT: Duration = Duration::from_secs(30);

/// A topology with NATS running and (optionally) the bucket made.
pub struct Lab {
    pub topo: Topology,
    pub nats: FleetNats,
}

impl Lab {
    /// The network, one NATS server of `version`, and the bucket created
    /// by the admin (one replica).
    pub fn new(version: NatsVersion) -> Lab {
        let lab = Lab::without_bucket(version);
        lab.nats.create_bucket(&lab.topo, 1);
        lab
    }

    /// The network and one NATS server, no bucket.
    pub fn without_bucket(version: NatsVersion) -> Lab {
        let topo = Topology::new();
        let nats = FleetNats::start(&topo, version);
        Lab { topo, nats }
    }

    /// Starts orch on `host` with the given allowlist, forward setting and
    /// fleet options.
    pub fn start(&mut self, host: &str, allow: &[&str], forward: bool, opts: &FleetOpts) {
        let fleet = self.nats.fleet_section(host, opts);
        let config = host_config(allow, forward, &fleet);
        self.topo.host_mut(host).start_daemon(&config);
    }

    /// Starts orch with the default fleet settings on each of `hosts` and
    /// waits until each is connected.
    pub fn start_connected(&mut self, hosts: &[&str]) {
        let defaults = FleetOpts::default();
        let hosts: Vec<(&str, &FleetOpts)> = hosts.iter().map(|host| (*host, &defaults)).collect();
        self.start_connected_with(&hosts);
    }

    /// Starts orch on each host with its fleet settings (no allowlist, no
    /// forwarding), then waits until each is connected.
    pub fn start_connected_with(&mut self, hosts: &[(&str, &FleetOpts)]) {
        for (host, opts) in hosts {
            self.start(host, &[], false, opts);
        }
        for (host, _) in hosts {
            self.wait_connected(host);
        }
    }

    /// Waits until `host` reports itself connected to the fleet, through
    /// the `FleetConnected` property or the `fleet:` line of `orch status`.
    #[track_caller]
    pub fn wait_connected(&self, host: &str) {
        let h = self.topo.host(host);
        let ok = poll_until(RECONNECT, || {
            h.fleet_connected_property() == "b true"
                || h.status_fleet_line()
                    .is_some_and(|l| l.contains("connected") && !l.contains("disconnected"))
        });
        if !ok {
            panic!(
                "{host} not connected to the fleet within {RECONNECT:?}\n\
                 FleetConnected: {}\nstatus fleet line: {:?}\n{}",
                h.fleet_connected_property(),
                h.status_fleet_line(),
                self.context(&[host])
            );
        }
    }

    /// Log tails of the given hosts and of the (first) NATS server.
    pub fn context(&self, hosts: &[&str]) -> String {
        let mut out = String::new();
        for host in hosts {
            out.push_str(&self.topo.host(host).log_tail(40));
            out.push('\n');
        }
        let log = self.nats.first().log();
        let lines: Vec<&str> = log.lines().collect();
        out.push_str("--- nats-server log (last 20 lines) ---\n");
        out.push_str(&lines[lines.len().saturating_sub(20)..].join("\n"));
        out
    }
}

/// A fleet ban value as the spec writes it, for an hour.
pub fn ban_value(addr: &str, reason: &str) -> Bytes {
    ban_value_for(addr, reason, 3600)
}

/// A fleet ban value as the spec writes it, for `seconds` from now.
pub fn ban_value_for(addr: &str, reason: &str, seconds: u64) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let value = serde_json::json!({
        "addr": addr,
        "expires_at": now + seconds,
        "created": now,
        "reason": reason,
        "source": "manual",
    });
    Bytes::from(value.to_string())
}
