//! A small routed network of orch hosts for the fleet tests, built from
//! network namespaces on the real kernel, plus the NATS side (servers, the
//! hosts' `[fleet]` config and their password files).
//!
//! ```text
//!  attacker ── out0 [gw] in0 ──┐
//!  198.51.100.66/.67/.68   .1  │ .1          switch (netns, bridge br0)
//!                              ├── srv1  10.77.0.11
//!                              ├── srv2  10.77.0.12
//!                              ├── srv3  10.77.0.13   (never runs orch)
//!                              └── nats  10.77.0.10   (nats-server)
//! ```
//!
//! The outside network is 198.51.100.0/24 (TEST-NET-2), the inside one
//! 10.77.0.0/24; 192.0.2.0/24 stays free for allowlist tests. Every inside
//! host hangs off the bridge through its own veth pair, so one host's link
//! can be cut ([`Topology::link_down`]) without touching the others. Each
//! orch host has its own private bus ([`TestBus`]) and, once started, its own
//! [`Daemon`].
//!
//! Only test addresses are used, and traffic never leaves the namespaces.
//! Nothing here sleeps for a fixed time (waits poll with deadlines), touches
//! the host namespace's network configuration, or outlives the test: the
//! namespaces, daemons, buses and servers are all torn down on `Drop`.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use tempfile::TempDir;

use super::nats::{ADMIN, BUCKET, NatsCluster, NatsOptions, NatsServer, NatsVersion, TestCa};
use super::{CmdOutput, Daemon, NetNs, TestBus, poll_until, wait_until};

/// Prefix length of both networks.
pub const PREFIX_LEN: u8 = 24;
/// The gateway's address on the outside network.
pub const GW_OUTSIDE: &str = "198.51.100.1";
/// The gateway's address on the inside network (everyone's default route).
pub const GW_INSIDE: &str = "10.77.0.1";
/// The NATS namespace's address.
pub const NATS_ADDR: &str = "10.77.0.10";
/// srv1's, srv2's and srv3's inside addresses.
pub const SRV1_ADDR: &str = "10.77.0.11";
pub const SRV2_ADDR: &str = "10.77.0.12";
pub const SRV3_ADDR: &str = "10.77.0.13";
/// The attacker's address that the tests ban.
pub const ATTACKER_BANNED: &str = "198.51.100.66";
/// Its neighbour, which must never be affected.
pub const ATTACKER_NEIGHBOUR: &str = "198.51.100.67";
/// Every source address the attacker namespace has.
pub const ATTACKER_ADDRS: [&str; 3] = ["198.51.100.66", "198.51.100.67", "198.51.100.68"];
/// The TCP port servers listen on in connectivity checks.
pub const SERVICE_PORT: u16 = 8080;
/// How long one TCP connect attempt may take before it counts as dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(700);

/// The bridge in the switch namespace.
const BRIDGE: &str = "br0";
/// Interface of each inside host (and the attacker) facing its network.
const HOST_IF: &str = "eth0";
/// The gateway's interfaces.
const GW_OUT_IF: &str = "out0";
const GW_IN_IF: &str = "in0";

/// Runs `ip <args>` in `ns`, panicking with `what` and the output on failure.
#[track_caller]
fn ip(ns: &NetNs, args: &[&str], what: &str) {
    ns.run("ip", args).expect_ok(what);
}

/// Waits until `ifname` in `ns` has carrier (`LOWER_UP`), or lost it.
#[track_caller]
fn wait_carrier(ns: &NetNs, ifname: &str, up: bool) {
    let want = if up {
        "with carrier"
    } else {
        "without carrier"
    };
    wait_until(
        Duration::from_secs(5),
        &format!("{ifname} in netns {} {want}", ns.pid()),
        || {
            let out = ns.run("ip", &["-o", "link", "show", "dev", ifname]);
            out.ok() && out.stdout.contains("LOWER_UP") == up
        },
    );
}

// ---------------------------------------------------------------------------
// Hosts

/// One inside host that can run orch: its namespace, its bus, and the
/// daemon once [`Host::start_daemon`] ran.
pub struct Host {
    /// Declared first: dropped (killed) before its namespace and bus.
    daemon: Option<Daemon>,
    /// The host's name (`srv1`, `srv2`, `gw`): its NATS user and fleet name.
    pub name: &'static str,
    /// Its address on the inside network.
    pub addr: &'static str,
    pub ns: NetNs,
    pub bus: TestBus,
}

impl Host {
    fn new(name: &'static str, addr: &'static str) -> Host {
        Host {
            daemon: None,
            name,
            addr,
            ns: NetNs::new(),
            bus: TestBus::start(),
        }
    }

    /// Starts orch on this host with `config_toml` (see [`Daemon::start`];
    /// it must not set `state_dir`). Panics if a daemon already runs.
    #[track_caller]
    pub fn start_daemon(&mut self, config_toml: &str) -> &Daemon {
        assert!(
            self.daemon.is_none(),
            "{}: daemon already started",
            self.name
        );
        self.daemon
            .insert(Daemon::start(&self.ns, &self.bus, config_toml))
    }

    /// The daemon. Panics if it was never started.
    #[track_caller]
    pub fn daemon(&self) -> &Daemon {
        self.daemon
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no daemon started", self.name))
    }

    /// The daemon, mutably. Panics if it was never started.
    #[track_caller]
    pub fn daemon_mut(&mut self) -> &mut Daemon {
        let name = self.name;
        self.daemon
            .as_mut()
            .unwrap_or_else(|| panic!("{name}: no daemon started"))
    }

    /// SIGKILLs the daemon (see [`Daemon::kill9`]).
    #[track_caller]
    pub fn kill9(&mut self) {
        self.daemon_mut().kill9();
    }

    /// Starts the daemon again with the same config and state (see
    /// [`Daemon::restart`]).
    #[track_caller]
    pub fn restart(&mut self) {
        let daemon = self
            .daemon
            .as_mut()
            .unwrap_or_else(|| panic!("{}: no daemon started", self.name));
        daemon.restart(&self.ns, &self.bus);
    }

    /// Stops the daemon with SIGTERM (see [`Daemon::stop`]).
    pub fn stop(&mut self) -> i32 {
        self.daemon.as_mut().map_or(-1, Daemon::stop)
    }

    /// Runs `orch <args>` against this host's daemon.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> CmdOutput {
        self.daemon().cli(args)
    }

    /// Runs `orch ban <addrs…>` and panics (with the daemon log tail) if
    /// it fails.
    #[track_caller]
    pub fn ban(&self, addrs: &[&str]) {
        let mut args = vec!["ban"];
        args.extend_from_slice(addrs);
        let out = self.cli(&args);
        if !out.ok() {
            panic!(
                "{}: orch ban {} failed\n{out}\n{}",
                self.name,
                abbreviate(addrs),
                self.log_tail(40)
            );
        }
    }

    /// Runs `orch unban <addrs…>` and panics (with the log tail) on failure.
    #[track_caller]
    pub fn unban(&self, addrs: &[&str]) {
        let mut args = vec!["unban"];
        args.extend_from_slice(addrs);
        let out = self.cli(&args);
        if !out.ok() {
            panic!(
                "{}: orch unban {} failed\n{out}\n{}",
                self.name,
                abbreviate(addrs),
                self.log_tail(40)
            );
        }
    }

    /// Elements of one of orch's sets (`ban4`, `ban6`, `bannet4`, …) in
    /// this host's kernel; empty if orch's table does not exist.
    pub fn set(&self, set: &str) -> Vec<String> {
        self.ns.set_elements("orch", set)
    }

    /// Whether `addr` (an address, or a prefix like `10.0.0.0/8`) is in
    /// the kernel set orch keeps it in: `ban4`/`ban6` for single addresses
    /// (`/32`, `/128` are stripped), `bannet4`/`bannet6` for prefixes.
    pub fn kernel_has(&self, addr: &str) -> bool {
        let v6 = addr.contains(':');
        let (bare, len) = match addr.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (addr, None),
        };
        let single = match len {
            None => true,
            Some(l) => (v6 && l == "128") || (!v6 && l == "32"),
        };
        let (set, wanted) = match (single, v6) {
            (true, false) => ("ban4", bare),
            (true, true) => ("ban6", bare),
            (false, false) => ("bannet4", addr),
            (false, true) => ("bannet6", addr),
        };
        self.set(set).iter().any(|e| e == wanted)
    }

    /// `orch list --json` as rows; panics if the command fails.
    #[track_caller]
    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = self
            .cli(&["list", "--json"])
            .expect_ok(&format!("{}: orch list --json", self.name));
        let rows: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{}: orch list --json: {e}\n{}", self.name, out.stdout));
        rows.as_array().cloned().unwrap_or_default()
    }

    /// The `source` column of `orch list` for `addr`, if listed.
    #[track_caller]
    pub fn listed_source(&self, addr: &str) -> Option<String> {
        let bare = addr.split_once('/').map_or(addr, |(a, _)| a);
        self.list()
            .iter()
            .find(|r| r["address"] == addr || r["address"] == bare)
            .and_then(|r| r["source"].as_str().map(str::to_string))
    }

    /// The first line of `orch status` that starts with `fleet:`.
    #[track_caller]
    pub fn status_fleet_line(&self) -> Option<String> {
        let out = self.cli(&["status"]);
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with("fleet:"))
            .map(str::to_string)
    }

    /// The fleet part of `orch status`: the `fleet:` line and the indented
    /// lines under it (e.g. `  last error: …`), joined by newlines.
    #[track_caller]
    pub fn status_fleet_block(&self) -> Option<String> {
        super::fleet_hosts::status_fleet_block(&self.cli(&["status"]).stdout)
    }

    /// The `FleetConnected` property, as busctl prints it (`b true`), or
    /// the error output if it cannot be read.
    pub fn fleet_connected_property(&self) -> String {
        let out = self.bus.busctl(&[
            "get-property",
            "org.orch.Orch1",
            "/org/orch/Orch1",
            "org.orch.Orch1",
            "FleetConnected",
        ]);
        if out.ok() {
            out.stdout.trim().to_string()
        } else {
            format!("<error: {}>", out.stderr.trim())
        }
    }

    /// The daemon's whole log.
    pub fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// The last `n` lines of the daemon log, headed by the host name.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- {} daemon log (last {n} lines) ---\n{}\n--- end of {} log ---",
            self.name,
            lines[lines.len().saturating_sub(n)..].join("\n"),
            self.name
        )
    }
}

/// `a b c` for a few addresses, `a b c … (N in all)` for many.
fn abbreviate(addrs: &[&str]) -> String {
    if addrs.len() <= 4 {
        addrs.join(" ")
    } else {
        format!("{} … ({} in all)", addrs[..3].join(" "), addrs.len())
    }
}

// ---------------------------------------------------------------------------
// The network

/// The whole network: see the module documentation for the layout.
pub struct Topology {
    /// The orch hosts (declared before the namespaces they live in).
    pub gw: Host,
    pub srv1: Host,
    pub srv2: Host,
    /// An inside host that never runs orch.
    pub srv3: NetNs,
    /// The namespace NATS runs in, at [`NATS_ADDR`].
    pub nats: NetNs,
    /// The outside host with the [`ATTACKER_ADDRS`].
    pub attacker: NetNs,
    /// The bridge's namespace.
    pub switch: NetNs,
}

impl Topology {
    /// Builds the network and waits until every link has carrier. No
    /// daemon is started.
    pub fn new() -> Topology {
        let topo = Topology {
            gw: Host::new("gw", GW_INSIDE),
            srv1: Host::new("srv1", SRV1_ADDR),
            srv2: Host::new("srv2", SRV2_ADDR),
            srv3: NetNs::new(),
            nats: NetNs::new(),
            attacker: NetNs::new(),
            switch: NetNs::new(),
        };
        let sw = &topo.switch;
        ip(sw, &["link", "add", BRIDGE, "type", "bridge"], "add bridge");
        // No STP: ports forward as soon as they have carrier.
        ip(
            sw,
            &["link", "set", BRIDGE, "type", "bridge", "stp_state", "0"],
            "bridge without STP",
        );
        ip(sw, &["link", "set", BRIDGE, "up"], "bridge up");

        // Inside hosts: one veth pair each, the host end named eth0 (in0 on
        // the gateway), the switch end p-<name>.
        let inside: [(&str, &NetNs, &str, &str); 5] = [
            ("gw", &topo.gw.ns, GW_IN_IF, GW_INSIDE),
            ("srv1", &topo.srv1.ns, HOST_IF, SRV1_ADDR),
            ("srv2", &topo.srv2.ns, HOST_IF, SRV2_ADDR),
            ("srv3", &topo.srv3, HOST_IF, SRV3_ADDR),
            ("nats", &topo.nats, HOST_IF, NATS_ADDR),
        ];
        for (name, ns, ifname, addr) in inside {
            let port = Self::switch_port(name);
            let pid = ns.pid().to_string();
            ip(
                sw,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns", &pid,
                ],
                &format!("veth for {name}"),
            );
            ip(
                sw,
                &["link", "set", &port, "master", BRIDGE, "up"],
                &format!("attach {port} to the bridge"),
            );
            let cidr = format!("{addr}/{PREFIX_LEN}");
            ip(
                ns,
                &["addr", "add", &cidr, "dev", ifname],
                &format!("address {cidr} on {name}"),
            );
            ip(
                ns,
                &["link", "set", ifname, "up"],
                &format!("{name} {ifname} up"),
            );
            if name != "gw" {
                ip(
                    ns,
                    &["route", "add", "default", "via", GW_INSIDE],
                    &format!("default route of {name}"),
                );
            }
        }

        // Outside: the attacker straight to the gateway's out0.
        let attacker_pid = topo.attacker.pid().to_string();
        ip(
            &topo.gw.ns,
            &[
                "link",
                "add",
                GW_OUT_IF,
                "type",
                "veth",
                "peer",
                "name",
                HOST_IF,
                "netns",
                &attacker_pid,
            ],
            "veth gateway-attacker",
        );
        let gw_out = format!("{GW_OUTSIDE}/{PREFIX_LEN}");
        ip(
            &topo.gw.ns,
            &["addr", "add", &gw_out, "dev", GW_OUT_IF],
            "gateway outside address",
        );
        ip(
            &topo.gw.ns,
            &["link", "set", GW_OUT_IF, "up"],
            "gateway out0 up",
        );
        for addr in ATTACKER_ADDRS {
            let cidr = format!("{addr}/{PREFIX_LEN}");
            ip(
                &topo.attacker,
                &["addr", "add", &cidr, "dev", HOST_IF],
                &format!("attacker address {cidr}"),
            );
        }
        ip(
            &topo.attacker,
            &["link", "set", HOST_IF, "up"],
            "attacker eth0 up",
        );
        ip(
            &topo.attacker,
            &["route", "add", "default", "via", GW_OUTSIDE],
            "attacker default route",
        );
        // The gateway routes between its two networks (per-namespace sysctl).
        topo.gw
            .ns
            .run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
            .expect_ok("ip_forward on the gateway");

        for (name, ns, ifname, _) in inside {
            wait_carrier(ns, ifname, true);
            wait_carrier(sw, &Self::switch_port(name), true);
        }
        wait_carrier(&topo.gw.ns, GW_OUT_IF, true);
        wait_carrier(&topo.attacker, HOST_IF, true);
        topo
    }

    /// The bridge port (in the switch namespace) of inside host `name`.
    fn switch_port(name: &str) -> String {
        format!("p-{name}")
    }

    /// The orch host called `name` (`gw`, `srv1`, `srv2`).
    #[track_caller]
    pub fn host(&self, name: &str) -> &Host {
        match name {
            "gw" => &self.gw,
            "srv1" => &self.srv1,
            "srv2" => &self.srv2,
            other => panic!("no orch host {other:?}"),
        }
    }

    /// The orch host called `name`, mutably (to start, kill or restart its
    /// daemon).
    #[track_caller]
    pub fn host_mut(&mut self, name: &str) -> &mut Host {
        match name {
            "gw" => &mut self.gw,
            "srv1" => &mut self.srv1,
            "srv2" => &mut self.srv2,
            other => panic!("no orch host {other:?}"),
        }
    }

    /// The namespace and interface of inside host `name` (orch hosts,
    /// `srv3`, `nats`).
    #[track_caller]
    fn inside_end(&self, name: &str) -> (&NetNs, &'static str) {
        match name {
            "gw" => (&self.gw.ns, GW_IN_IF),
            "srv1" => (&self.srv1.ns, HOST_IF),
            "srv2" => (&self.srv2.ns, HOST_IF),
            "srv3" => (&self.srv3, HOST_IF),
            "nats" => (&self.nats, HOST_IF),
            other => panic!("no inside host {other:?}"),
        }
    }

    /// Plugs the network namespace of process `pid` (e.g. a systemd
    /// sandbox) into the bridge as inside host `name`: a veth pair whose
    /// bridge end is `p-<name>` and whose other end is `eth0` in that
    /// namespace, unconfigured (the caller adds the address and routes from
    /// inside). [`Topology::set_port`] cuts and restores it.
    #[track_caller]
    pub fn plug_in(&self, name: &str, pid: u32) {
        let port = Self::switch_port(name);
        let pid = pid.to_string();
        ip(
            &self.switch,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", HOST_IF, "netns", &pid,
            ],
            &format!("veth for {name}"),
        );
        self.set_port(name, true);
    }

    /// Sets the bridge port of inside host `name` up or down, without
    /// waiting for the host to see it (see [`Topology::link_down`] for the
    /// waiting kind).
    #[track_caller]
    pub fn set_port(&self, name: &str, up: bool) {
        let port = Self::switch_port(name);
        let state = if up { "up" } else { "down" };
        ip(
            &self.switch,
            &["link", "set", &port, "master", BRIDGE, state],
            &format!("bridge port {port} {state}"),
        );
    }

    /// Cuts inside host `name` off the inside network: its bridge port
    /// goes down, so its own interface stays configured (addresses and
    /// routes kept) but loses carrier, as with a pulled cable. Returns once
    /// the host sees no carrier.
    #[track_caller]
    pub fn link_down(&self, name: &str) {
        let (ns, ifname) = self.inside_end(name);
        let port = Self::switch_port(name);
        ip(
            &self.switch,
            &["link", "set", &port, "down"],
            &format!("cut {name}"),
        );
        wait_carrier(ns, ifname, false);
    }

    /// Restores what [`Topology::link_down`] cut; returns once the host
    /// has carrier and its bridge port forwards.
    #[track_caller]
    pub fn link_up(&self, name: &str) {
        let (ns, ifname) = self.inside_end(name);
        let port = Self::switch_port(name);
        ip(
            &self.switch,
            &["link", "set", &port, "up"],
            &format!("restore {name}"),
        );
        wait_carrier(ns, ifname, true);
        wait_until(
            Duration::from_secs(5),
            &format!("bridge port {port} forwarding"),
            || {
                let out = self.switch.run("bridge", &["link", "show", "dev", &port]);
                out.ok() && out.stdout.contains("state forwarding")
            },
        );
    }

    /// Whether a TCP connection from attacker address `from` to `to:port`
    /// completes within [`CONNECT_TIMEOUT`].
    pub fn attacker_connects(&self, from: &str, to: &str, port: u16) -> bool {
        self.attacker.connect_from(from, to, port, CONNECT_TIMEOUT)
    }

    /// Waits until the attacker's `from` can (`reachable`) or cannot reach
    /// `to:port`, so that one lost SYN does not decide a test; panics with
    /// `what` after `timeout`.
    #[track_caller]
    pub fn wait_attacker(
        &self,
        from: &str,
        to: &str,
        port: u16,
        reachable: bool,
        timeout: Duration,
    ) {
        let verb = if reachable { "reaches" } else { "cannot reach" };
        wait_until(timeout, &format!("{from} {verb} {to}:{port}"), || {
            self.attacker_connects(from, to, port) == reachable
        });
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new()
    }
}

// ---------------------------------------------------------------------------
// NATS and the hosts' [fleet] sections

/// The NATS side of a fleet test: one server or a three-node cluster in
/// the topology's `nats` namespace, TLS from one test CA, and a directory
/// with the users' password files.
pub struct FleetNats {
    /// A single server (`None` for a cluster).
    pub server: Option<NatsServer>,
    /// A cluster (`None` for a single server).
    pub cluster: Option<NatsCluster>,
    ca: Arc<TestCa>,
    /// Password files, one per user (mode 0600, in a 0700 dir).
    secrets: TempDir,
}

/// Extra settings for one host's `[fleet]` section.
#[derive(Debug, Clone, Default)]
pub struct FleetOpts {
    /// Use this password instead of the host's real one.
    pub password: Option<String>,
    /// Add `admin = { user = "admin", password_file = … }`.
    pub admin: bool,
    /// `replicas = N` (orch's default otherwise).
    pub replicas: Option<usize>,
    /// Extra lines inside the section, verbatim.
    pub extra: String,
}

impl FleetOpts {
    /// The defaults plus the admin's credentials.
    pub fn admin() -> FleetOpts {
        FleetOpts {
            admin: true,
            ..FleetOpts::default()
        }
    }
}

/// The TOML string literal for `s`.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl FleetNats {
    fn options(version: NatsVersion, ca: &Arc<TestCa>) -> NatsOptions {
        NatsOptions {
            addr: NATS_ADDR.parse().expect("NATS address"),
            tls: Some(Arc::clone(ca)),
            ..NatsOptions::new(version)
        }
    }

    /// Starts one server of `version` at [`NATS_ADDR`] with TLS and the
    /// users `srv1`, `srv2`, `gw` and `admin`.
    #[track_caller]
    pub fn start(topo: &Topology, version: NatsVersion) -> FleetNats {
        let ca = Arc::new(TestCa::new());
        let server = NatsServer::start(Some(&topo.nats), Self::options(version, &ca));
        Self::with(Some(server), None, ca)
    }

    /// Starts a three-node cluster of `version` at [`NATS_ADDR`].
    #[track_caller]
    pub fn start_cluster(topo: &Topology, version: NatsVersion) -> FleetNats {
        let ca = Arc::new(TestCa::new());
        let cluster = NatsCluster::start(Some(&topo.nats), Self::options(version, &ca));
        Self::with(None, Some(cluster), ca)
    }

    fn with(server: Option<NatsServer>, cluster: Option<NatsCluster>, ca: Arc<TestCa>) -> Self {
        let secrets = tempfile::Builder::new()
            .prefix("orch-test-fleet-secrets-")
            .tempdir()
            .expect("create secrets dir");
        fs::set_permissions(secrets.path(), fs::Permissions::from_mode(0o700))
            .expect("chmod secrets dir");
        FleetNats {
            server,
            cluster,
            ca,
            secrets,
        }
    }

    /// The single server, or the cluster's first node.
    pub fn first(&self) -> &NatsServer {
        match (&self.server, &self.cluster) {
            (Some(server), _) => server,
            (None, Some(cluster)) => &cluster.nodes[0],
            (None, None) => unreachable!("FleetNats has a server or a cluster"),
        }
    }

    /// The single server, mutably. Panics for a cluster.
    #[track_caller]
    pub fn server_mut(&mut self) -> &mut NatsServer {
        self.server.as_mut().expect("a single NATS server")
    }

    /// Every client URL (`tls://10.77.0.10:<port>`).
    pub fn urls(&self) -> Vec<String> {
        match (&self.server, &self.cluster) {
            (Some(server), _) => vec![server.url()],
            (None, Some(cluster)) => cluster.urls(),
            (None, None) => Vec::new(),
        }
    }

    /// The CA certificate the hosts trust.
    pub fn ca_path(&self) -> PathBuf {
        self.ca.ca_path()
    }

    /// Writes `password` to `<secrets>/<file>` (mode 0600) and returns the
    /// path. `newline` adds a trailing newline (which orch trims).
    pub fn write_secret(&self, file: &str, password: &str, newline: bool) -> PathBuf {
        let path = self.secrets.path().join(file);
        let text = if newline {
            format!("{password}\n")
        } else {
            password.to_string()
        };
        fs::write(&path, text).expect("write password file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod password file");
        path
    }

    /// The `[fleet]` section of host `name` (also its NATS user): every
    /// server, TLS with the test CA, its password file (written now, with
    /// a trailing newline) and `opts`.
    pub fn fleet_section(&self, name: &str, opts: &FleetOpts) -> String {
        let password = opts
            .password
            .clone()
            .unwrap_or_else(|| self.first().password(name).to_string());
        let password_file = self.write_secret(&format!("{name}.password"), &password, true);
        self.fleet_section_at(name, opts, &password_file, &self.ca_path())
    }

    /// The password of NATS user `name`.
    pub fn password(&self, name: &str) -> &str {
        self.first().password(name)
    }

    /// [`FleetNats::fleet_section`] naming `password_file` and `ca` as
    /// given, for a host that sees its files elsewhere (a systemd sandbox);
    /// the caller writes them. `opts.password` is not used.
    pub fn fleet_section_at(
        &self,
        name: &str,
        opts: &FleetOpts,
        password_file: &std::path::Path,
        ca: &std::path::Path,
    ) -> String {
        let servers: Vec<String> = self.urls().iter().map(|u| toml_str(u)).collect();
        let mut out = String::from("[fleet]\n");
        let _ = writeln!(out, "servers = [{}]", servers.join(", "));
        let _ = writeln!(out, "name = {}", toml_str(name));
        let _ = writeln!(out, "user = {}", toml_str(name));
        let _ = writeln!(
            out,
            "password_file = {}",
            toml_str(&password_file.display().to_string())
        );
        let _ = writeln!(
            out,
            "tls = {{ ca = {} }}",
            toml_str(&ca.display().to_string())
        );
        let _ = writeln!(out, "bucket = {}", toml_str(BUCKET));
        if let Some(replicas) = opts.replicas {
            let _ = writeln!(out, "replicas = {replicas}");
        }
        if opts.admin {
            let admin_file =
                self.write_secret("admin.password", self.first().password(ADMIN), false);
            let _ = writeln!(
                out,
                "admin = {{ user = {}, password_file = {} }}",
                toml_str(ADMIN),
                toml_str(&admin_file.display().to_string())
            );
        }
        out.push_str(&opts.extra);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }

    /// Runs `body` with a JetStream context of `user` (connected to the
    /// first server from the `nats` namespace, 2 s request timeout) on a
    /// current-thread runtime.
    pub fn with_js<T: Send>(
        &self,
        topo: &Topology,
        user: &str,
        body: impl AsyncFnOnce(jetstream::Context) -> T + Send,
    ) -> T {
        let server = self.first();
        let opts = server.connect_options(user);
        let url = server.url();
        super::nats::block_on_in(Some(&topo.nats), || async move {
            let client = opts
                .connect(url.as_str())
                .await
                .unwrap_or_else(|e| panic!("connect as {user} to {url}: {e}"));
            let js = jetstream::ContextBuilder::new()
                .timeout(Duration::from_secs(2))
                .build(client);
            body(js).await
        })
    }

    /// Creates the bucket as the admin (replicas as given, per-message TTL
    /// allowed), the way orch's daemon creates it when missing.
    pub fn create_bucket(&self, topo: &Topology, replicas: usize) {
        self.with_js(topo, ADMIN, async |js| {
            super::nats::create_bucket(&js, BUCKET, replicas, true).await;
        });
    }

    /// Every key in the bucket, read as the admin (empty if the bucket
    /// does not exist).
    pub fn keys(&self, topo: &Topology) -> Vec<String> {
        self.with_js(topo, ADMIN, async |js| {
            use futures_util::StreamExt;
            let Ok(store) = js.get_key_value(BUCKET).await else {
                return Vec::new();
            };
            let Ok(keys) = store.keys().await else {
                return Vec::new();
            };
            let mut keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
            keys.sort();
            keys
        })
    }

    /// Whether the bucket's stream exists (asked as the admin).
    pub fn bucket_exists(&self, topo: &Topology) -> bool {
        self.with_js(topo, ADMIN, async |js| {
            js.get_stream(format!("KV_{BUCKET}")).await.is_ok()
        })
    }

    /// Opens the bucket as `user` and runs `body` on it.
    pub fn with_kv<T: Send>(
        &self,
        topo: &Topology,
        user: &str,
        body: impl AsyncFnOnce(kv::Store) -> T + Send,
    ) -> T {
        self.with_js(topo, user, async |js| {
            let store = js
                .get_key_value(BUCKET)
                .await
                .unwrap_or_else(|e| panic!("{user} opens the bucket: {e}"));
            body(store).await
        })
    }
}

/// A whole orch config: `allow` (top level), `[firewall] forward`, then
/// `fleet` (a `[fleet]` section, or empty for none).
pub fn host_config(allow: &[&str], forward: bool, fleet: &str) -> String {
    let mut out = String::new();
    if !allow.is_empty() {
        let list: Vec<String> = allow.iter().map(|a| toml_str(a)).collect();
        let _ = writeln!(out, "allow = [{}]", list.join(", "));
    }
    let _ = writeln!(out, "[firewall]\nforward = {forward}");
    out.push_str(fleet);
    out
}

/// The (fleet) key host `origin` writes for `net`, e.g.
/// `srv1.192.0.2.7/32`, `srv1.2001_db8__1/128`.
pub fn fleet_key(origin: &str, net: &str) -> String {
    let net = if net.contains('/') {
        net.to_string()
    } else if net.contains(':') {
        format!("{net}/128")
    } else {
        format!("{net}/32")
    };
    format!("{origin}.{}", net.replace(':', "_"))
}

/// Polls `cond` until it holds and returns how long that took counted from
/// `since`; panics with `what` and `context()` (e.g. daemon logs) if it
/// does not hold by `since + timeout`.
#[track_caller]
pub fn measure_until(
    since: Instant,
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) -> Duration {
    let left = timeout.saturating_sub(since.elapsed());
    if poll_until(left, &mut cond) {
        since.elapsed()
    } else {
        panic!(
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        )
    }
}
