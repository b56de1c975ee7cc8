//! Fleet hosts for tests and benches: an orch daemon with its own table,
//! private D-Bus and state dir, configured for a [`NatsServer`] with its
//! per-host user over TLS (a password, or its `.creds` file on a server in
//! operator mode). Several hosts may share one network namespace (their
//! tables differ).
//!
//! Test scaffolding only: it starts processes and reads their state; it
//! must not assert on behaviour.

use std::path::Path;

use super::nats::{ADMIN, NatsAuth, NatsCluster, NatsOptions, NatsServer, NatsVersion};
use super::{Daemon, NetNs, TestBus};

/// A host: its daemon, bus and table.
pub struct Host {
    pub daemon: Daemon,
    pub bus: TestBus,
    pub table: String,
    pub secrets: tempfile::TempDir,
}

/// A host's config: `extra` at the top, then its table, then `[fleet]`
/// with its own login ([`login_keys`], secrets written into the returned
/// dir) and the server's CA, plus `fleet_keys`.
pub fn fleet_config(
    server: &NatsServer,
    name: &str,
    table: &str,
    extra: &str,
    fleet_keys: &str,
) -> (String, tempfile::TempDir) {
    let (login, secrets) = host_login(server, name);
    let config = fleet_config_with_login(server, name, table, extra, &login, fleet_keys);
    (config, secrets)
}

/// Host `name`'s login lines for `server` ([`login_keys`]), with the
/// directory its secrets were written into (keep it while the host runs).
fn host_login(server: &NatsServer, name: &str) -> (String, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("secrets dir");
    let login = login_keys(server, name, secrets.path()).join("\n");
    (login, secrets)
}

/// [`fleet_config`] with the given `login` lines (e.g. `nkey_file = …`)
/// instead of the host's own login.
pub fn fleet_config_with_login(
    server: &NatsServer,
    name: &str,
    table: &str,
    extra: &str,
    login: &str,
    fleet_keys: &str,
) -> String {
    fleet_config_for(
        &[server.url()],
        server,
        name,
        table,
        extra,
        login,
        fleet_keys,
    )
}

/// A host's config for a cluster: every node's URL, the host's login
/// from the first node (in operator mode any node's `.creds` work on all).
pub fn cluster_fleet_config(
    cluster: &NatsCluster,
    name: &str,
    fleet_keys: &str,
) -> (String, tempfile::TempDir) {
    let first = &cluster.nodes[0];
    let (login, secrets) = host_login(first, name);
    let config = fleet_config_for(
        &cluster.urls(),
        first,
        name,
        &table_of(name),
        "",
        &login,
        fleet_keys,
    );
    (config, secrets)
}

/// The config text: `servers` in `[fleet]`, `server`'s CA.
fn fleet_config_for(
    servers: &[String],
    server: &NatsServer,
    name: &str,
    table: &str,
    extra: &str,
    login: &str,
    fleet_keys: &str,
) -> String {
    let ca = server.ca_path().expect("TLS server");
    let servers: Vec<String> = servers.iter().map(|url| format!("\"{url}\"")).collect();
    format!(
        "{extra}\n[firewall]\ntable = \"{table}\"\n\n[fleet]\nservers = [{}]\nname = \"{name}\"\n{login}\ntls = {{ ca = \"{}\" }}\n{fleet_keys}",
        servers.join(", "),
        ca.display()
    )
}

/// The `[fleet]` (or `fleet.admin`) keys, as `key = "value"` items, that
/// log `user` in to `server`: its `.creds` file in operator mode, else the
/// user name and a password file written into `dir`.
pub fn login_keys(server: &NatsServer, user: &str, dir: &Path) -> Vec<String> {
    match server.auth() {
        NatsAuth::Operator => vec![format!(
            "credentials = \"{}\"",
            server.creds_path(user).display()
        )],
        NatsAuth::Passwords => {
            let password_file = dir.join(format!("{user}.password"));
            super::write_secret_file(&password_file, format!("{}\n", server.password(user)));
            vec![
                format!("user = \"{user}\""),
                format!("password_file = \"{}\"", password_file.display()),
            ]
        }
    }
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
    nats_with(netns, version, NatsAuth::Passwords)
}

/// [`nats`] with users logging in by `auth`.
pub fn nats_with(netns: &NetNs, version: NatsVersion, auth: NatsAuth) -> NatsServer {
    let mut opts = NatsOptions::new(version);
    opts.hosts = vec!["srv1".into(), "srv2".into(), "srv3".into()];
    opts.auth = auth;
    NatsServer::start(Some(netns), opts)
}

/// The `admin = { … }` line of `[fleet]` for the server's admin user
/// (secrets written into `dir`).
pub fn admin_line(server: &NatsServer, dir: &Path) -> String {
    format!(
        "admin = {{ {} }}\n",
        login_keys(server, ADMIN, dir).join(", ")
    )
}

/// The `fleet:` block of `orch status` output: that line and the indented
/// lines under it.
pub fn status_fleet_block(status: &str) -> Option<String> {
    let mut lines = status.lines().skip_while(|l| !l.starts_with("fleet:"));
    let first = lines.next()?;
    let mut block = vec![first];
    block.extend(lines.take_while(|l| l.starts_with(char::is_whitespace)));
    Some(block.join("\n"))
}
