//! Test harness for orch's fleet transport: real `nats-server` processes
//! (Debian's 2.9 or a current upstream build) with JetStream, TLS and the
//! per-host users of `examples/nats-server.conf`, logging in with passwords
//! or nkeys, or (operator mode, [`NatsAuth::Operator`]) with `.creds` files
//! made by [`super::nats_jwt`].
//!
//! The permission blocks are rendered here ([`render_accounts`]) and the
//! sample config must contain exactly that rendering (checked by a test), so
//! what the tests prove is what the sample ships. Servers run in a given
//! [`NetNs`] or the host namespace, on ports picked free in that namespace,
//! each with its own temp dir (config, JetStream store, TLS files, log).
//! Nothing here sleeps for a fixed time, touches system-wide NATS
//! configuration or the packaged `nats-server` service, or leaves a process
//! behind: every server is killed on `Drop`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{Context, kv};
use tempfile::TempDir;

use super::nats_jwt::OperatorTrust;
use super::{NetNs, enter_netns, kill_and_reap, poll_until, run_command, tail};

/// The fleet's KV bucket (orch's default).
pub const BUCKET: &str = "orch-bans";
/// The host users of the sample config.
pub const SAMPLE_HOSTS: [&str; 3] = ["srv1", "srv2", "gw"];
/// The user allowed everything in the account (fleet-wide unban, bucket setup).
pub const ADMIN: &str = "admin";
/// The account that holds the bucket and all users.
pub const ACCOUNT: &str = "ORCH";
/// Deadline for creating the bucket's stream (see [`create_bucket`]).
const BUCKET_CREATE_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline for a server to answer `/healthz` after being spawned.
pub const NATS_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Markers around the rendered block in `examples/nats-server.conf`.
pub const SAMPLE_BEGIN: &str = "# BEGIN orch accounts";
pub const SAMPLE_END: &str = "# END orch accounts";

// ---------------------------------------------------------------------------
// Permissions and config rendering

/// Subjects a host user may publish to: its own keys, and the JetStream API
/// calls a KV reader/watcher needs on this bucket's stream only.
pub fn host_publish_allow(bucket: &str, host: &str) -> Vec<String> {
    let stream = format!("KV_{bucket}");
    vec![
        // Put and delete (a KV delete is a publish with `KV-Operation: DEL`)
        // of its own keys only.
        format!("$KV.{bucket}.{host}.>"),
        // Bucket lookup (get_key_value) and stream info.
        format!("$JS.API.STREAM.INFO.{stream}"),
        // Ordered push consumers behind watch/watch_all/keys/history: the
        // first one is unnamed, re-creations are named (`.<name>.<filter>`).
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        // An ordered consumer deletes its old incarnation before re-creating.
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        // get / entry: direct get (KV buckets have allow_direct), and the
        // stream message get used when direct get is off.
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        // Flow-control replies of the push consumers.
        format!("$JS.FC.{stream}.>"),
    ]
}

/// Subjects denied to host users even if `allow` is ever widened: every
/// route that deletes or rewrites stored messages other than a host's own.
pub fn host_publish_deny() -> Vec<String> {
    [
        "$JS.API.STREAM.CREATE.>",
        "$JS.API.STREAM.UPDATE.>",
        "$JS.API.STREAM.DELETE.>",
        "$JS.API.STREAM.PURGE.>",
        "$JS.API.STREAM.MSG.DELETE.>",
        "$JS.API.STREAM.RESTORE.>",
        "$JS.API.STREAM.SNAPSHOT.>",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Subjects a host user may subscribe to: reply inboxes (API responses and
/// push-consumer deliveries).
pub fn host_subscribe_allow() -> Vec<String> {
    vec!["_INBOX.>".to_string()]
}

/// Name of the environment variable that holds `user`'s password, referenced
/// from the config as `$ORCH_NATS_PASSWORD_<USER>` (nats-server resolves a
/// variable not defined in the file from its environment).
pub fn password_var(user: &str) -> String {
    let suffix: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("ORCH_NATS_PASSWORD_{suffix}")
}

fn quoted_list(out: &mut String, indent: &str, items: &[String]) {
    out.push_str("[\n");
    for item in items {
        let _ = writeln!(out, "{indent}  \"{item}\"");
    }
    let _ = write!(out, "{indent}]");
}

/// The `accounts { … }` block of the sample config for `hosts` plus
/// [`ADMIN`], between the [`SAMPLE_BEGIN`] and [`SAMPLE_END`] marker lines.
pub fn render_accounts(bucket: &str, hosts: &[&str]) -> String {
    render_accounts_with_nkeys(bucket, hosts, &[])
}

/// [`render_accounts`] plus hosts that log in with an nkey: (host name,
/// the nkey's public key), with the same permissions as the other hosts.
pub fn render_accounts_with_nkeys(
    bucket: &str,
    hosts: &[&str],
    nkey_hosts: &[(String, String)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{SAMPLE_BEGIN} (rendered by tests/common/nats.rs)");
    let _ = writeln!(out, "accounts {{");
    let _ = writeln!(out, "  {ACCOUNT} {{");
    let _ = writeln!(
        out,
        "    # The account's JetStream limits: one host's credentials cannot fill\n    \
         # the servers' disk (the bucket itself is bounded by orch's stream\n    \
         # settings too; docs/fleet.md sizes both)."
    );
    let _ = writeln!(out, "    jetstream: {{");
    let _ = writeln!(out, "      max_mem: 64MB");
    let _ = writeln!(out, "      max_file: 1GB");
    let _ = writeln!(out, "      max_streams: 4");
    let _ = writeln!(out, "      max_consumers: 1000");
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "    users: [");
    let logins = hosts
        .iter()
        .map(|host| {
            (
                *host,
                format!(
                    "        user: \"{host}\"\n        password: ${}",
                    password_var(host)
                ),
            )
        })
        .chain(
            nkey_hosts
                .iter()
                .map(|(host, key)| (host.as_str(), format!("        nkey: \"{key}\""))),
        );
    for (host, login) in logins {
        let _ = writeln!(
            out,
            "      # {host}: writes and deletes only {bucket} keys \"{host}.*\", reads all."
        );
        let _ = writeln!(out, "      {{");
        let _ = writeln!(out, "{login}");
        let _ = writeln!(out, "        permissions: {{");
        let _ = writeln!(out, "          publish: {{");
        out.push_str("            allow: ");
        quoted_list(&mut out, "            ", &host_publish_allow(bucket, host));
        out.push('\n');
        out.push_str("            deny: ");
        quoted_list(&mut out, "            ", &host_publish_deny());
        out.push('\n');
        let _ = writeln!(out, "          }}");
        let _ = writeln!(out, "          subscribe: {{");
        out.push_str("            allow: ");
        quoted_list(&mut out, "            ", &host_subscribe_allow());
        out.push('\n');
        let _ = writeln!(out, "          }}");
        let _ = writeln!(out, "        }}");
        let _ = writeln!(out, "      }}");
    }
    let _ = writeln!(
        out,
        "      # {ADMIN}: everything in the account (bucket setup, fleet-wide unban)."
    );
    let _ = writeln!(out, "      {{");
    let _ = writeln!(out, "        user: \"{ADMIN}\"");
    let _ = writeln!(out, "        password: ${}", password_var(ADMIN));
    let _ = writeln!(out, "      }}");
    let _ = writeln!(out, "    ]");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "}}");
    let _ = writeln!(out, "{SAMPLE_END}");
    out
}

/// The block between the markers in `examples/nats-server.conf`, markers
/// included, or `None` if a marker is missing.
pub fn sample_accounts_block(sample: &str) -> Option<String> {
    let start = sample.find(SAMPLE_BEGIN)?;
    let end_rel = sample[start..].find(SAMPLE_END)?;
    let end = start + end_rel + SAMPLE_END.len();
    let mut block = sample[start..end].to_string();
    block.push('\n');
    Some(block)
}

// ---------------------------------------------------------------------------
// The bucket

/// Creates `bucket` with the stream settings orch itself uses
/// ([`orch::fleet::connect::bucket_stream`]: no rollups, so no host can
/// wipe the bucket with `Nats-Rollup: all` on one of its own keys). `ttl`
/// enables per-message TTL (server ≥ 2.11; 2.9 ignores the field). Panics
/// if the admin cannot create or open it within [`BUCKET_CREATE_TIMEOUT`]:
/// a cluster whose nodes all answer `/healthz` may still count a peer as
/// offline for a moment ("no suitable peers for placement"), so failures
/// are retried until then.
pub async fn create_bucket(admin: &Context, bucket: &str, replicas: usize, ttl: bool) -> kv::Store {
    let config = orch::fleet::connect::bucket_stream(
        bucket,
        replicas,
        ttl,
        Duration::ZERO,
        orch::config::FleetConfig::default().bucket_max_keys,
    );
    let deadline = std::time::Instant::now() + BUCKET_CREATE_TIMEOUT;
    loop {
        match admin.create_stream(config.clone()).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("bucket stream not created yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("admin creates the bucket stream: {e}"),
        }
    }
    admin
        .get_key_value(bucket)
        .await
        .unwrap_or_else(|e| panic!("admin opens the bucket: {e}"))
}

// ---------------------------------------------------------------------------
// Server binaries and TLS material

/// Which nats-server binary to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsVersion {
    /// Debian 12's package (2.9.10), `/usr/sbin/nats-server`.
    Debian,
    /// Upstream 2.15.x installed by `.ci/run` as `/usr/local/bin/nats-server-current`.
    Current,
}

impl NatsVersion {
    /// Both versions, for tests that must pass on each.
    pub const ALL: [NatsVersion; 2] = [NatsVersion::Debian, NatsVersion::Current];

    /// Path of the binary.
    pub fn binary(self) -> &'static Path {
        match self {
            NatsVersion::Debian => Path::new("/usr/sbin/nats-server"),
            NatsVersion::Current => Path::new("/usr/local/bin/nats-server-current"),
        }
    }

    /// `nats-server --version` output, e.g. `nats-server: v2.9.10`. Panics
    /// (pointing at `.ci/run`) if the binary is missing.
    #[track_caller]
    pub fn version_string(self) -> String {
        let out = run_command(Command::new(self.binary()).arg("--version"));
        if !out.ok() {
            panic!(
                "{} is missing or broken (`.ci/run` installs it)\n{out}",
                self.binary().display()
            );
        }
        out.stdout.trim().to_string()
    }
}

/// A throw-away certificate authority made with the `openssl` CLI (EC P-256),
/// issuing server certificates for IP addresses.
#[derive(Debug)]
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    /// Creates the CA key and self-signed certificate. Panics on failure.
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("orch-test-ca-")
            .tempdir()
            .expect("create CA temp dir");
        let ca = TestCa { dir };
        run_command(
            Command::new("openssl")
                .current_dir(ca.dir.path())
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes"])
                .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"])
                .args(["-subj", "/CN=orch test CA"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        )
        .expect_ok("openssl: creating the test CA");
        ca
    }

    /// The CA certificate (PEM) clients trust.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a server certificate for `ips` (and DNS name `localhost`) into
    /// `dir` as `server.pem` / `server.key`; returns their paths.
    pub fn issue_server_cert(&self, dir: &Path, ips: &[IpAddr]) -> (PathBuf, PathBuf) {
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        let csr = dir.join("server.csr");
        let ext = dir.join("server.ext");
        let mut san = String::from("subjectAltName=DNS:localhost");
        for ip in ips {
            let _ = write!(san, ",IP:{ip}");
        }
        fs::write(
            &ext,
            format!(
                "{san}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("write cert extensions");
        run_command(
            Command::new("openssl")
                .args(["req", "-newkey", "ec", "-pkeyopt"])
                .args([
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-subj",
                    "/CN=nats",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
        )
        .expect_ok("openssl: server key and CSR");
        run_command(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(self.ca_path())
                .arg("-CAkey")
                .arg(self.dir.path().join("ca.key"))
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert),
        )
        .expect_ok("openssl: signing the server certificate");
        (cert, key)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

// ---------------------------------------------------------------------------
// Network namespace helpers

/// Runs `f` on a fresh thread that has entered the network namespace at
/// `ns` (the host namespace if `None`) and returns its result. Sockets made
/// by `f` live in that namespace.
pub fn in_netns<T: Send>(ns: Option<&Path>, f: impl FnOnce() -> T + Send) -> T {
    let handle = ns.map(|p| File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display())));
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(handle) = handle {
                enter_netns(&handle).expect("setns into the test namespace");
            }
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs the future that `make` returns to completion on a current-thread
/// tokio runtime whose thread is inside `ns` (the host namespace if `None`),
/// so that NATS clients made in it reach servers started in that namespace.
/// The future is made on that thread, so it need not be `Send`.
pub fn block_on_in<T: Send, F: Future<Output = T>>(
    ns: Option<&NetNs>,
    make: impl FnOnce() -> F + Send,
) -> T {
    let path = ns.map(NetNs::path);
    in_netns(path.as_deref(), || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build tokio runtime")
            .block_on(make())
    })
}

/// A TCP port on `addr` that is free right now in namespace `ns`, and that no
/// earlier call in this test process handed out. The kernel may give the
/// same ephemeral port to two `bind(0)` calls once the first listener is
/// closed, and a cluster picks nine ports before any server binds one, so
/// ports handed out are remembered (for the life of the process).
pub fn free_port(ns: Option<&Path>, addr: IpAddr) -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    in_netns(ns, || {
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        // Hold every listener until a new port turns up, so the kernel
        // cannot offer a repeated one twice.
        let mut held = Vec::new();
        loop {
            let listener = TcpListener::bind(SocketAddr::new(addr, 0))
                .unwrap_or_else(|e| panic!("no free port on {addr}: {e}"));
            let port = listener
                .local_addr()
                .unwrap_or_else(|e| panic!("no local address on {addr}: {e}"))
                .port();
            if handed_out.insert(port) {
                return port;
            }
            held.push(listener);
        }
    })
}

/// `GET /healthz` on `addr:port` with HTTP/1.0; true on status 200.
fn healthz_ok(addr: IpAddr, port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .lines()
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"))
}

// ---------------------------------------------------------------------------
// The server

/// How the server's users log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// An `accounts` block: users with passwords (and the `nkey_hosts`).
    #[default]
    Passwords,
    /// Operator mode: trusted operator and account JWTs in a memory
    /// resolver, and one `.creds` file per user ([`NatsServer::creds_path`]).
    Operator,
}

/// How to start a [`NatsServer`].
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Which binary.
    pub version: NatsVersion,
    /// Address the client port (and the monitoring port) listen on.
    pub addr: IpAddr,
    /// Client port; 0 picks a free one.
    pub port: u16,
    /// Serve clients over TLS with a certificate from this CA.
    pub tls: Option<Arc<TestCa>>,
    /// Extra IP addresses the server certificate covers besides `addr`.
    pub cert_ips: Vec<IpAddr>,
    /// The bucket whose permissions the host users get.
    pub bucket: String,
    /// Host users (each also gets a random password).
    pub hosts: Vec<String>,
    /// Extra config text appended verbatim (e.g. `max_payload: 4096`).
    pub extra_config: String,
    /// Hosts that log in with an nkey: (host name, public key).
    pub nkey_hosts: Vec<(String, String)>,
    /// Passwords or operator mode.
    pub auth: NatsAuth,
}

impl NatsOptions {
    /// Loopback, a free port, TLS with a fresh CA, the sample's hosts.
    pub fn new(version: NatsVersion) -> NatsOptions {
        NatsOptions {
            version,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            tls: Some(Arc::new(TestCa::new())),
            cert_ips: Vec::new(),
            bucket: BUCKET.to_string(),
            hosts: SAMPLE_HOSTS.iter().map(|h| h.to_string()).collect(),
            extra_config: String::new(),
            nkey_hosts: Vec::new(),
            auth: NatsAuth::default(),
        }
    }

    /// Without TLS (plain `nats://`).
    pub fn without_tls(mut self) -> NatsOptions {
        self.tls = None;
        self
    }
}

/// Cluster settings of one node of a [`NatsCluster`].
#[derive(Debug, Clone)]
struct ClusterNode {
    name: String,
    port: u16,
    routes: Vec<u16>,
}

/// A running nats-server with JetStream, in its own temp dir.
pub struct NatsServer {
    child: Option<Child>,
    opts: NatsOptions,
    ns: Option<PathBuf>,
    port: u16,
    http_port: u16,
    passwords: BTreeMap<String, String>,
    /// Operator mode: each user's `.creds` file, in `dir`.
    creds_files: BTreeMap<String, PathBuf>,
    config_path: PathBuf,
    log_path: PathBuf,
    starts: u32,
    dir: TempDir,
}

/// A random password: `p` and 32 hex chars from the kernel's RNG. It starts
/// with a letter because nats-server parses a variable's value from the
/// environment like a config value (`0e12…` would be a number).
fn random_password() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().fold(String::from("p"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl NatsServer {
    /// Starts a single server in `ns` (host namespace if `None`) and waits
    /// until it is ready. Panics with the server log on failure.
    #[track_caller]
    pub fn start(ns: Option<&NetNs>, opts: NatsOptions) -> NatsServer {
        let mut server = Self::prepare(ns, opts, None, None);
        server.spawn();
        server.wait_ready();
        server
    }

    /// A server's dir and config, not started. In operator mode it trusts
    /// `trust` (a cluster's nodes must share one), or a fresh operator.
    fn prepare(
        ns: Option<&NetNs>,
        opts: NatsOptions,
        cluster: Option<ClusterNode>,
        trust: Option<&OperatorTrust>,
    ) -> Self {
        let ns_path = ns.map(NetNs::path);
        let dir = tempfile::Builder::new()
            .prefix("orch-test-nats-")
            .tempdir()
            .expect("create nats temp dir");
        let port = if opts.port == 0 {
            free_port(ns_path.as_deref(), opts.addr)
        } else {
            opts.port
        };
        let http_port = free_port(ns_path.as_deref(), opts.addr);
        let store = dir.path().join("jetstream");
        fs::create_dir(&store).expect("create JetStream store dir");
        let mut config = String::new();
        let host = opts.addr.to_string();
        let _ = writeln!(config, "# generated by tests/common/nats.rs");
        let name = cluster.as_ref().map_or("orch-test", |c| c.name.as_str());
        let _ = writeln!(config, "server_name: \"{name}\"");
        let _ = writeln!(config, "host: \"{host}\"\nport: {port}");
        let _ = writeln!(
            config,
            "http: \"{}\"",
            SocketAddr::new(opts.addr, http_port)
        );
        let _ = writeln!(
            config,
            "jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}",
            store.display()
        );
        if let Some(ca) = &opts.tls {
            let mut ips = vec![opts.addr];
            ips.extend(opts.cert_ips.iter().copied());
            let (cert, key) = ca.issue_server_cert(dir.path(), &ips);
            let _ = writeln!(
                config,
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 5\n}}",
                cert.display(),
                key.display()
            );
        }
        if let Some(node) = &cluster {
            let routes: Vec<String> = node
                .routes
                .iter()
                .map(|p| format!("\"nats-route://{}\"", SocketAddr::new(opts.addr, *p)))
                .collect();
            let _ = writeln!(
                config,
                "cluster {{\n  name: \"orch-test\"\n  listen: \"{}\"\n  routes: [{}]\n}}",
                SocketAddr::new(opts.addr, node.port),
                routes.join(", ")
            );
        }
        let users = opts.hosts.iter().map(String::as_str).chain([ADMIN]);
        let mut passwords = BTreeMap::new();
        let mut creds_files = BTreeMap::new();
        match opts.auth {
            NatsAuth::Passwords => {
                for user in users {
                    passwords.insert(user.to_string(), random_password());
                }
                let hosts: Vec<&str> = opts.hosts.iter().map(String::as_str).collect();
                config.push_str(&render_accounts_with_nkeys(
                    &opts.bucket,
                    &hosts,
                    &opts.nkey_hosts,
                ));
            }
            NatsAuth::Operator => {
                assert!(
                    opts.nkey_hosts.is_empty(),
                    "nkey_hosts need NatsAuth::Passwords"
                );
                let fresh;
                let trust = match trust {
                    Some(shared) => shared,
                    None => {
                        fresh = OperatorTrust::new();
                        &fresh
                    }
                };
                let operator_jwt = dir.path().join("operator.jwt");
                fs::write(&operator_jwt, trust.operator_jwt()).expect("write operator JWT");
                config.push_str(&trust.server_config(&operator_jwt));
                for user in users {
                    let creds = if user == ADMIN {
                        trust.unrestricted_creds(user)
                    } else {
                        trust.host_creds(&opts.bucket, user)
                    };
                    let path = dir.path().join(format!("{user}.creds"));
                    super::write_secret_file(&path, creds);
                    creds_files.insert(user.to_string(), path);
                }
            }
        }
        config.push_str(&opts.extra_config);
        config.push('\n');
        let config_path = dir.path().join("nats-server.conf");
        fs::write(&config_path, config).expect("write nats config");
        NatsServer {
            child: None,
            ns: ns_path,
            port,
            http_port,
            passwords,
            creds_files,
            config_path,
            log_path: dir.path().join("nats-server.log"),
            starts: 0,
            opts,
            dir,
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open nats log");
        let _ = writeln!(log, "===== harness: start #{} =====", self.starts);
        let bin = self.opts.version.binary();
        let mut cmd = match &self.ns {
            Some(path) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", path.display()))
                    .arg("--")
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("-c").arg(&self.config_path);
        for (user, password) in &self.passwords {
            cmd.env(password_var(user), password);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        // SAFETY: prctl(2) is async-signal-safe. The server dies with the
        // thread that started it, so a crashed test leaves nothing behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        self.child = Some(child);
    }

    /// Waits until `/healthz` answers 200 (JetStream ready; in a cluster
    /// also a meta leader known) within [`NATS_READY_TIMEOUT`]. Panics with
    /// the log tail if the server exits or the deadline passes.
    #[track_caller]
    pub fn wait_ready(&mut self) {
        let (addr, http_port) = (self.opts.addr, self.http_port);
        let ns = self.ns.clone();
        let mut exited = None;
        let child = self.child.as_mut().expect("nats-server is not running");
        let ready = in_netns(ns.as_deref(), || {
            poll_until(NATS_READY_TIMEOUT, || {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                healthz_ok(addr, http_port)
            })
        });
        if let Some(status) = exited {
            self.child = None;
            panic!(
                "nats-server exited with {status} before it was ready\n--- log ---\n{}",
                tail(&self.log(), 60)
            );
        }
        if !ready {
            panic!(
                "nats-server not healthy within {NATS_READY_TIMEOUT:?}\n--- log ---\n{}",
                tail(&self.log(), 60)
            );
        }
    }

    /// SIGKILLs the server (its store dir stays). No-op if not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// SIGTERMs the server and waits up to 10 s for it to exit (then
    /// SIGKILL). The store dir stays.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        if !poll_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        }) {
            kill_and_reap(&mut child);
        }
    }

    /// Stops (if running) and starts the server again with the same config,
    /// port and store dir; waits until ready.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready();
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Client URL: `tls://addr:port` with TLS, else `nats://addr:port`.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://{}", SocketAddr::new(self.opts.addr, self.port))
    }

    /// Client port.
    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Which binary runs.
    pub fn version(&self) -> NatsVersion {
        self.opts.version
    }

    /// The CA certificate clients must trust (`None` without TLS).
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.opts.tls.as_ref().map(|ca| ca.ca_path())
    }

    /// How users log in to this server.
    pub fn auth(&self) -> NatsAuth {
        self.opts.auth
    }

    /// Password of `user` (a host or [`ADMIN`]). Panics for unknown users
    /// and in operator mode.
    #[track_caller]
    pub fn password(&self, user: &str) -> &str {
        self.passwords
            .get(user)
            .unwrap_or_else(|| panic!("no NATS user {user:?} with a password on this server"))
    }

    /// The `.creds` file of `user` (a host or [`ADMIN`]) in operator mode.
    /// Panics for unknown users and in password mode.
    #[track_caller]
    pub fn creds_path(&self, user: &str) -> &Path {
        self.creds_files
            .get(user)
            .unwrap_or_else(|| panic!("no NATS user {user:?} with a .creds file on this server"))
    }

    /// The generated config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The server's temp dir (config, store, TLS files, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log (stdout and stderr of every start).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `login` plus TLS trusting the test CA (if any), 5 s connection and
    /// request timeouts, no reconnect delay beyond the client's default.
    fn client_settings(&self, login: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        let opts = login
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)));
        match self.ca_path() {
            Some(ca) => opts.add_root_certificates(ca).require_tls(true),
            None => opts,
        }
    }

    /// Connect options for `user` with `password`.
    pub fn connect_options_with(&self, user: &str, password: &str) -> async_nats::ConnectOptions {
        self.client_settings(async_nats::ConnectOptions::with_user_and_password(
            user.into(),
            password.into(),
        ))
    }

    /// Connect options logging in with the text of a `.creds` file.
    #[track_caller]
    fn connect_options_with_creds(&self, creds: &str) -> async_nats::ConnectOptions {
        let login = async_nats::ConnectOptions::with_credentials(creds)
            .unwrap_or_else(|e| panic!("parse .creds: {e}"));
        self.client_settings(login)
    }

    /// Connect options for `user` with its own password, or its own
    /// `.creds` file in operator mode.
    #[track_caller]
    pub fn connect_options(&self, user: &str) -> async_nats::ConnectOptions {
        match self.opts.auth {
            NatsAuth::Passwords => self.connect_options_with(user, self.password(user)),
            NatsAuth::Operator => {
                let path = self.creds_path(user);
                let creds = fs::read_to_string(path)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                self.connect_options_with_creds(&creds)
            }
        }
    }

    /// Connects as `user`. Must run inside the server's namespace (see
    /// [`block_on_in`]).
    pub async fn connect(
        &self,
        user: &str,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        self.connect_options(user).connect(self.url()).await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- nats-server log tail ({}) ---\n{}\n--- end of nats-server log ---",
                self.log_path.display(),
                tail(&self.log(), 40)
            );
        }
    }
}

/// Three JetStream servers joined by routes (cluster `orch-test`), for
/// replicated (R3) buckets. All nodes listen on the same address.
pub struct NatsCluster {
    /// The nodes, `n1`..`n3`.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the three nodes (sharing one CA, and the same users'
    /// passwords or, in operator mode, one operator) and waits until each
    /// is healthy.
    #[track_caller]
    pub fn start(ns: Option<&NetNs>, opts: NatsOptions) -> NatsCluster {
        // In operator mode every node trusts the same operator and accounts.
        let trust = (opts.auth == NatsAuth::Operator).then(OperatorTrust::new);
        let ns_path = ns.map(NetNs::path);
        let route_ports: Vec<u16> = (0..3)
            .map(|_| free_port(ns_path.as_deref(), opts.addr))
            .collect();
        let mut nodes: Vec<NatsServer> = Vec::new();
        for (i, port) in route_ports.iter().enumerate() {
            let node = ClusterNode {
                name: format!("n{}", i + 1),
                port: *port,
                routes: route_ports.iter().copied().filter(|p| p != port).collect(),
            };
            let node_opts = NatsOptions {
                port: 0,
                ..opts.clone()
            };
            let mut server = NatsServer::prepare(ns, node_opts, Some(node), trust.as_ref());
            if let Some(first) = nodes.first() {
                server.passwords = first.passwords.clone();
            }
            nodes.push(server);
        }
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_ready();
        }
        NatsCluster { nodes }
    }

    /// All client URLs, comma-separated (async-nats accepts the list).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }
}
