//! Fleet hosts for tests and benches: an orch daemon with its own table,
//! private D-Bus and state dir, configured for a [`NatsServer`] with its
//! per-host user over TLS. Several hosts may share one network namespace
//! (their tables differ).
//!
//! Test scaffolding only: it starts processes and reads their state; it
//! must not assert on behaviour.

use std::path::Path;

use super::nats::{NatsOptions, NatsServer, NatsVersion};
use super::{Daemon, NetNs, TestBus};

/// A host: its daemon, bus and table.
pub struct Host {
    pub daemon: Daemon,
    pub bus: TestBus,
    pub table: String,
    pub secrets: tempfile::TempDir,
}

/// A host's config: `extra` at the top, then its table, then `[fleet]`
/// with its user, password file and the server's CA, plus `fleet_keys`.
pub fn fleet_config(
    server: &NatsServer,
    name: &str,
    table: &str,
    extra: &str,
    fleet_keys: &str,
) -> (String, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("secrets dir");
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, format!("{}\n", server.password(name))).expect("password");
    let ca = server.ca_path().expect("TLS server");
    let config = format!(
        "{extra}\n[firewall]\ntable = \"{table}\"\n\n[fleet]\nservers = [\"{}\"]\nname = \"{name}\"\nuser = \"{name}\"\npassword_file = \"{}\"\ntls = {{ ca = \"{}\" }}\n{fleet_keys}",
        server.url(),
        password_file.display(),
        ca.display()
    );
    (config, secrets)
}

/// `extra` goes at the top of the config, `fleet_keys` into `[fleet]`.
pub fn start_host(
    netns: &NetNs,
    server: &NatsServer,
    name: &str,
    extra: &str,
    fleet_keys: &str,
) -> Host {
    let (config, secrets) = fleet_config(server, name, &table_of(name), extra, fleet_keys);
    Host::start(netns, name, &config, secrets)
}

/// The table host `name` uses, so hosts can share a namespace.
pub fn table_of(name: &str) -> String {
    format!("orch_{name}")
}

impl Host {
    /// Starts host `name`'s daemon on its own bus with `config` (which
    /// must use [`table_of`]`(name)`); `secrets` is kept alive with it.
    pub fn start(netns: &NetNs, name: &str, config: &str, secrets: tempfile::TempDir) -> Host {
        let bus = TestBus::start();
        let daemon = Daemon::start(netns, &bus, config);
        Host {
            daemon,
            bus,
            table: table_of(name),
            secrets,
        }
    }

    pub fn banned(&self, netns: &NetNs, addr: &str) -> bool {
        netns
            .set_elements(&self.table, "ban4")
            .iter()
            .any(|e| e == addr)
    }

    pub fn connected(&self) -> bool {
        self.bus
            .busctl(&[
                "get-property",
                "org.orch.Orch1",
                "/org/orch/Orch1",
                "org.orch.Orch1",
                "FleetConnected",
            ])
            .stdout
            .trim()
            == "b true"
    }
}

/// The admin creates the bucket; hosts' users may not.
pub fn nats(netns: &NetNs, version: NatsVersion) -> NatsServer {
    let mut opts = NatsOptions::new(version);
    opts.hosts = vec!["srv1".into(), "srv2".into(), "srv3".into()];
    NatsServer::start(Some(netns), opts)
}

pub fn admin_line(server: &NatsServer, dir: &Path) -> String {
    let file = dir.join("admin-password");
    std::fs::write(&file, server.password("admin")).expect("admin password");
    format!(
        "admin = {{ user = \"admin\", password_file = \"{}\" }}\n",
        file.display()
    )
}
