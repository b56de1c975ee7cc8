//! Shared integration-test harness for orch.
//!
//! Everything here drives real components: kernel nftables inside fresh
//! network namespaces, a private `dbus-daemon`, and the real `orch` binary.
//! Nothing is global: every object owns its processes and temporary
//! directories and cleans them up on `Drop`, also when the test panics, so
//! tests can run in parallel threads.
//!
//! Waiting is done by polling a condition ([`wait_until`]), never by sleeping
//! for a fixed time and hoping.
//!
//! Each test binary uses only part of this module, hence the `dead_code`
//! allowance.
#![allow(dead_code)]
pub mod fleet_hosts;
pub mod fleet_lab;
pub mod fleet_topology;
pub mod json_schema;
pub mod nats;
pub mod nats_jwt;
pub mod small_disk;
pub mod systemd;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How often [`wait_until`] and [`poll_until`] re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Deadline for the orch daemon to answer `Peer.Ping` after being spawned.
pub const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of the daemon log shown in panic messages.
const LOG_TAIL_LINES: usize = 80;

/// The uid and gid of `nobody`, used for unprivileged callers.
pub const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------
// Small helpers

/// Path of the `orch` binary built by cargo for this test run.
/// Writes a secret (password, nkey seed, .creds) as an admin would: root's,
/// mode 0600. orch refuses secrets others can read.
pub fn write_secret_file(path: &Path, contents: impl AsRef<[u8]>) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create secret {}: {e}", path.display()));
    file.write_all(contents.as_ref())
        .unwrap_or_else(|e| panic!("write secret {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod secret");
}

/// dnsmasq's arguments for a test resolver on 127.0.0.1:`port`: in the
/// foreground, no upstream servers, no /etc/hosts, no pid file. Callers add
/// the records.
pub fn dnsmasq_args(port: u16) -> Vec<String> {
    [
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--pid-file=",
    ]
    .into_iter()
    .map(str::to_string)
    .chain([format!("--port={port}")])
    .collect()
}

pub fn orch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orch"))
}

/// Polls `cond` every [`POLL_INTERVAL`] until it returns true (→ `true`) or
/// `timeout` has passed (→ `false`). `cond` is always evaluated at least once
/// and once more at the deadline.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Polls `cond` every [`POLL_INTERVAL`] until it returns true; panics with a
/// message naming `what` if that does not happen within `timeout`.
///
/// ```ignore
/// wait_until(Duration::from_secs(5), "ban 192.0.2.1 in the kernel set", || {
///     ns.set_elements("orch", "ban_v4").contains(&"192.0.2.1".to_string())
/// });
/// ```
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    if !poll_until(timeout, cond) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// A unique name for this process and call, usable as an nftables table or
/// set name: `<prefix>_<pid>_<n>` (letters, digits and underscores only if
/// `prefix` is).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}

/// Exit status as a shell reports it: the exit code, or 128 + signal number.
fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Result of running a command to completion.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit code, or 128 + signal number if killed by a signal.
    pub status: i32,
    /// Captured standard output (lossy UTF-8).
    pub stdout: String,
    /// Captured standard error (lossy UTF-8).
    pub stderr: String,
}

impl CmdOutput {
    /// Whether the command exited with status 0.
    pub fn ok(&self) -> bool {
        self.status == 0
    }

    /// Returns `self` if the command succeeded; otherwise panics with `ctx`,
    /// the exit status, stdout and stderr.
    #[track_caller]
    pub fn expect_ok(self, ctx: &str) -> Self {
        if !self.ok() {
            panic!("{ctx}: failed\n{self}");
        }
        self
    }

    /// Returns `self` if the command failed (non-zero status); otherwise
    /// panics with `ctx` and the output.
    #[track_caller]
    pub fn expect_fail(self, ctx: &str) -> Self {
        if self.ok() {
            panic!("{ctx}: unexpectedly succeeded\n{self}");
        }
        self
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` to completion with stdin from /dev/null, capturing stdout and
/// stderr. Panics only if the program cannot be started at all.
#[track_caller]
pub fn run_command(cmd: &mut Command) -> CmdOutput {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    CmdOutput {
        status: status_code(out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the `orch` binary with `args` (no daemon or bus involved), e.g.
/// for `check-config` and `test-filter`.
pub fn run_orch(args: &[&str]) -> CmdOutput {
    run_command(Command::new(orch_bin()).args(args))
}

/// Like [`run_command`], but feeds `input` on stdin.
#[track_caller]
pub fn run_command_with_input(cmd: &mut Command, input: &str) -> CmdOutput {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            // A broken pipe just means the program did not read everything;
            // its exit status tells the story.
            let _ = stdin.write_all(input.as_bytes());
        });
        child.wait_with_output()
    })
    .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
    CmdOutput {
        status: status_code(out.status),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A command that runs `program` as uid/gid 65534 (nobody) with no
/// supplementary groups: `setpriv --reuid=65534 --regid=65534 --clear-groups
/// -- program`, with `/` as working directory.
pub fn nobody_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program)
        .current_dir("/");
    cmd
}

/// Whether a process with this pid exists (zombies included).
pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// CPU time (user + system) process `pid` has used so far, in seconds;
/// 0 if unknown. For benches: read before and after a phase.
pub fn cpu_seconds(pid: u32) -> f64 {
    // utime, stime.
    stat_seconds(pid, 2)
}

/// Like [`cpu_seconds`], plus the CPU time of the children `pid` has
/// reaped (for daemons that run a program per ban).
pub fn cpu_seconds_with_children(pid: u32) -> f64 {
    // utime, stime, cutime, cstime.
    stat_seconds(pid, 4)
}

/// The sum of the first `fields` CPU-time fields of `/proc/<pid>/stat`
/// (utime, stime, cutime, cstime), in seconds; 0 if unknown.
fn stat_seconds(pid: u32, fields: usize) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are the 12th and 13th of those.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(fields)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf only reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / per_second as f64
}

/// One `… kB` field of `/proc/<pid>/status` (`"VmHWM:"`, say), 0 if
/// unknown.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGKILLs and reaps `child`, ignoring "already exited".
fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    let _ = child.kill();
    child.wait().ok()
}

// ---------------------------------------------------------------------------
// Network namespaces

/// Moves the *calling thread* into the network namespace `ns` (a handle on
/// `/proc/<pid>/ns/net`). Only call this on a thread created for that purpose.
fn enter_netns(ns: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a valid, open file descriptor.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A TCP listener thread running inside a namespace.
struct Listener {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Lists a set through `nft` (run by `nft`, wherever it runs: a netns, a
/// systemd sandbox) and parses its elements with their remaining timeouts.
/// Empty if the table or set does not exist; any other failure panics.
#[track_caller]
pub fn list_set_elements(
    nft: impl Fn(&[&str]) -> CmdOutput,
    table: &str,
    set: &str,
) -> Vec<(String, Option<u64>)> {
    let (family, name) = table.split_once(' ').unwrap_or(("inet", table));
    let out = nft(&["-j", "list", "set", family, name, set]);
    if !out.ok() {
        if out.stderr.contains("No such file or directory") {
            return Vec::new();
        }
        panic!("nft -j list set {family} {name} {set}: failed\n{out}");
    }
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("nft -j list set: invalid JSON ({e}):\n{}", out.stdout));
    parse_set_elements(&json)
}

/// A fresh network namespace with `lo` up, kept alive by a holder process.
///
/// The holder is `unshare --net -- cat` in its own session (`setsid`), with
/// stdin a pipe from the test process: it is killed on `Drop`, and it also
/// exits by itself (EOF) if the test process dies without running destructors,
/// so namespaces never outlive the test run.
pub struct NetNs {
    holder: Child,
    /// Open handle on the namespace, used to `setns(2)` helper threads.
    ns_file: File,
    listeners: Mutex<Vec<Listener>>,
}

impl NetNs {
    /// Creates the namespace and brings `lo` up. Panics on failure.
    pub fn new() -> NetNs {
        let host_ns = fs::read_link("/proc/thread-self/ns/net").expect("read own netns link");
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: setsid(2) is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut holder = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn netns holder {cmd:?}: {e}"));
        let pid = holder.id();
        let ns_link = format!("/proc/{pid}/ns/net");
        let mut exited = None;
        let ready = poll_until(Duration::from_secs(5), || {
            if let Ok(Some(status)) = holder.try_wait() {
                exited = Some(status);
                return true;
            }
            fs::read_link(&ns_link).is_ok_and(|ns| ns != host_ns)
        });
        if let Some(status) = exited {
            let mut err = String::new();
            if let Some(mut stderr) = holder.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            panic!("netns holder `unshare --net` exited with {status}: {err}");
        }
        if !ready {
            kill_and_reap(&mut holder);
            panic!("timed out waiting for netns holder {pid} to enter a new network namespace");
        }
        let ns_file = match File::open(&ns_link) {
            Ok(f) => f,
            Err(e) => {
                kill_and_reap(&mut holder);
                panic!("cannot open {ns_link}: {e}");
            }
        };
        let ns = NetNs {
            holder,
            ns_file,
            listeners: Mutex::new(Vec::new()),
        };
        ns.run("ip", &["link", "set", "lo", "up"])
            .expect_ok("bringing lo up in new netns");
        ns
    }

    /// Pid of the holder process.
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `/proc/<holder pid>/ns/net`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// A command running `program` inside the namespace:
    /// `nsenter --net=<path> -- program`. Add arguments with `.arg(s)`.
    ///
    /// `nsenter` only entering a network namespace does not fork: it execs
    /// `program`, so the spawned child's pid is the program's pid.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `program args` inside the namespace to completion, capturing output.
    #[track_caller]
    pub fn run(&self, program: &str, args: &[&str]) -> CmdOutput {
        run_command(self.command(program).args(args))
    }

    /// Runs `nft <args>` inside the namespace. Arguments are joined by nft
    /// itself, so `&["add rule inet t c ip saddr 192.0.2.1 drop"]` and the
    /// split form both work (no shell is involved: no quoting needed).
    #[track_caller]
    pub fn nft(&self, args: &[&str]) -> CmdOutput {
        self.run("nft", args)
    }

    /// Runs `nft -f -` inside the namespace with `script` on stdin.
    #[track_caller]
    pub fn nft_script(&self, script: &str) -> CmdOutput {
        run_command_with_input(self.command("nft").args(["-f", "-"]), script)
    }

    /// Runs `nft -j <args>` inside the namespace and parses the JSON output.
    /// Panics if nft fails or prints invalid JSON.
    #[track_caller]
    pub fn nft_json(&self, args: &[&str]) -> Value {
        let out = self
            .run("nft", &[&["-j"], args].concat())
            .expect_ok(&format!("nft -j {}", args.join(" ")));
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "nft -j {}: invalid JSON ({e}):\n{}",
                args.join(" "),
                out.stdout
            )
        })
    }

    /// Elements of a set as strings: `"192.0.2.1"`, `"10.0.0.0/24"`,
    /// `"10.2.0.1-10.2.0.5"` (ranges), `"a . b"` (concatenations).
    /// Empty if the table or set does not exist.
    ///
    /// `table` is either a bare table name (family `inet`) or
    /// `"<family> <name>"`, e.g. `"ip filter"`.
    #[track_caller]
    pub fn set_elements(&self, table: &str, set: &str) -> Vec<String> {
        self.set_elements_with_expiry(table, set)
            .into_iter()
            .map(|(elem, _)| elem)
            .collect()
    }

    /// Like [`NetNs::set_elements`], with each element's remaining kernel
    /// timeout in whole seconds (nft's `expires` field; `None` for elements
    /// without a timeout), e.g. `("192.0.2.1", Some(3590))`.
    #[track_caller]
    pub fn set_elements_with_expiry(&self, table: &str, set: &str) -> Vec<(String, Option<u64>)> {
        list_set_elements(|args| self.nft(args), table, set)
    }

    /// Starts a TCP listener on `[::]:port` (dual-stack; `0.0.0.0:port` if
    /// IPv6 is unavailable) inside this namespace, accepting and immediately
    /// closing connections until the namespace is dropped. Returns once the
    /// socket is listening; panics if it cannot bind.
    pub fn listen(&self, port: u16) {
        let ns = self.ns_file.try_clone().expect("dup netns handle");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("netns-listen-{port}"))
            .spawn(move || {
                if let Err(e) = enter_netns(&ns) {
                    let _ = tx.send(Err(format!("setns: {e}")));
                    return;
                }
                drop(ns);
                let listener = match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
                    .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(format!("bind port {port}: {e}")));
                        return;
                    }
                };
                let _ = tx.send(Ok(()));
                accept_until_stopped(&listener, &stop_flag);
            })
            .expect("spawn listener thread");
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                panic!("listener in netns {}: {e}", self.pid());
            }
            Err(_) => {
                let _ = thread.join();
                panic!("listener thread in netns {} died", self.pid());
            }
        }
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Listener {
                port,
                stop,
                thread: Some(thread),
            });
    }

    /// A TCP listener on `127.0.0.1` (any free port) inside this
    /// namespace, bound by a thread that entered it; the caller accepts.
    pub fn bind_loopback(&self) -> TcpListener {
        let ns = self.ns_file.try_clone().expect("dup netns handle");
        std::thread::spawn(move || {
            enter_netns(&ns).expect("setns");
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 in the netns")
        })
        .join()
        .expect("bind thread")
    }

    /// Tries a TCP connection from this namespace, with source address `from`
    /// (which must be configured here; a `/prefix` suffix is ignored), to
    /// `to:port`. Returns true if the handshake completed within `timeout`,
    /// false if it was refused, unreachable or timed out (e.g. dropped by a
    /// firewall). Panics on setup errors such as `from` not being assigned.
    #[track_caller]
    pub fn connect_from(&self, from: &str, to: &str, port: u16, timeout: Duration) -> bool {
        let parse = |s: &str| -> IpAddr {
            let addr = s.split_once('/').map_or(s, |(a, _)| a);
            addr.parse()
                .unwrap_or_else(|e| panic!("invalid IP address {s:?}: {e}"))
        };
        let (from_ip, to_ip) = (parse(from), parse(to));
        assert_eq!(
            from_ip.is_ipv4(),
            to_ip.is_ipv4(),
            "connect_from: {from} and {to} are different address families"
        );
        let ns = self.ns_file.try_clone().expect("dup netns handle");
        let result = std::thread::spawn(move || {
            enter_netns(&ns).map_err(|e| format!("setns: {e}"))?;
            drop(ns);
            tcp_connect_from(from_ip, SocketAddr::new(to_ip, port), timeout)
        })
        .join()
        .expect("connect thread panicked");
        result.unwrap_or_else(|e| panic!("connect_from {from} to {to} port {port}: {e}"))
    }
}

impl Default for NetNs {
    fn default() -> Self {
        NetNs::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Listener threads hold a reference on the namespace: stop them first.
        let listeners = self
            .listeners
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for listener in listeners.iter_mut() {
            listener.shutdown();
        }
        kill_and_reap(&mut self.holder);
    }
}

/// Accepts (and immediately closes) connections until `stop` is set.
fn accept_until_stopped(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a short timeout so `stop` is re-checked.
        unsafe { libc::poll(&mut pfd, 1, 50) };
        while let Ok((stream, _)) = listener.accept() {
            drop(stream);
        }
    }
}

/// Fills a `sockaddr_storage` for `addr`.
fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// TCP connect from `from` (port chosen by the kernel) to `to` with a timeout,
/// in the calling thread's network namespace. `Err` only for setup failures.
fn tcp_connect_from(from: IpAddr, to: SocketAddr, timeout: Duration) -> Result<bool, String> {
    let family = if from.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(format!("socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let (src, src_len) = to_sockaddr(SocketAddr::new(from, 0));
    // SAFETY: `src` is a properly initialised sockaddr of length `src_len`.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &src as *const _ as *const libc::sockaddr,
            src_len,
        )
    } != 0
    {
        return Err(format!("bind {from}: {}", io::Error::last_os_error()));
    }

    let (dst, dst_len) = to_sockaddr(to);
    // SAFETY: as above.
    if unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &dst as *const _ as *const libc::sockaddr,
            dst_len,
        )
    } == 0
    {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINPROGRESS) {
        return Ok(false);
    }

    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = remaining.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        if n == 0 {
            return Ok(false); // timed out: SYN (or SYN-ACK) dropped
        }
        let mut so_error: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `so_error` and `len` are valid for writes of the given size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut so_error as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(format!("getsockopt: {}", io::Error::last_os_error()));
        }
        return Ok(so_error == 0);
    }
}

/// Extracts `(element, expires)` pairs from `nft -j list set` output.
fn parse_set_elements(json: &Value) -> Vec<(String, Option<u64>)> {
    let Some(items) = json.get("nftables").and_then(Value::as_array) else {
        panic!("unexpected nft JSON (no \"nftables\" array): {json}");
    };
    let Some(set) = items.iter().find_map(|item| item.get("set")) else {
        return Vec::new();
    };
    let Some(elems) = set.get("elem").and_then(Value::as_array) else {
        return Vec::new();
    };
    elems
        .iter()
        .map(|elem| match elem.get("elem") {
            // {"elem": {"val": ..., "timeout": 3600, "expires": 3599}}
            Some(inner) => (
                nft_value_to_string(&inner["val"]),
                inner.get("expires").and_then(Value::as_u64),
            ),
            None => (nft_value_to_string(elem), None),
        })
        .collect()
}

/// Renders one nft JSON set key as nft would print it.
fn nft_value_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                format!("{}/{}", nft_value_to_string(&p["addr"]), p["len"])
            } else if let Some(Value::Array(r)) = o.get("range") {
                let parts: Vec<String> = r.iter().map(nft_value_to_string).collect();
                parts.join("-")
            } else if let Some(Value::Array(c)) = o.get("concat") {
                let parts: Vec<String> = c.iter().map(nft_value_to_string).collect();
                parts.join(" . ")
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// Two namespaces joined by a veth pair: [`VethPair::SERVER_IF`] in `server`,
/// [`VethPair::CLIENT_IF`] in `client`, both up, with the given addresses.
pub struct VethPair {
    /// The namespace that usually runs the firewall / daemon under test.
    pub server: NetNs,
    /// The namespace that connects to it.
    pub client: NetNs,
}

impl VethPair {
    /// Interface name of the veth end inside `server`.
    pub const SERVER_IF: &'static str = "veth-srv";
    /// Interface name of the veth end inside `client`.
    pub const CLIENT_IF: &'static str = "veth-cli";

    /// Creates both namespaces and the veth pair, assigns `server_addrs` to
    /// the server end and `client_addrs` to the client end (CIDR notation,
    /// e.g. `"10.99.0.1/24"`, `"fd99::1/64"`; IPv6 addresses are added with
    /// `nodad` so they are usable at once), brings the links up and waits
    /// until both report carrier.
    pub fn new(server_addrs: &[&str], client_addrs: &[&str]) -> VethPair {
        let server = NetNs::new();
        let client = NetNs::new();
        let client_pid = client.pid().to_string();
        server
            .run(
                "ip",
                &[
                    "link",
                    "add",
                    Self::SERVER_IF,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    Self::CLIENT_IF,
                    "netns",
                    &client_pid,
                ],
            )
            .expect_ok("creating veth pair");
        for (ns, ifname, addrs) in [
            (&server, Self::SERVER_IF, server_addrs),
            (&client, Self::CLIENT_IF, client_addrs),
        ] {
            for addr in addrs {
                let mut args = vec!["addr", "add", addr, "dev", ifname];
                if addr.contains(':') {
                    args.push("nodad");
                }
                ns.run("ip", &args)
                    .expect_ok(&format!("adding {addr} to {ifname}"));
            }
            ns.run("ip", &["link", "set", ifname, "up"])
                .expect_ok(&format!("setting {ifname} up"));
        }
        for (ns, ifname) in [(&server, Self::SERVER_IF), (&client, Self::CLIENT_IF)] {
            wait_until(
                Duration::from_secs(5),
                &format!("{ifname} to be operationally up"),
                || {
                    let out = ns.run("ip", &["-o", "link", "show", "dev", ifname]);
                    out.ok() && out.stdout.contains("state UP")
                },
            );
        }
        VethPair { server, client }
    }

    /// Starts a TCP listener on `port` in `server`; see [`NetNs::listen`].
    pub fn listen(&self, port: u16) {
        self.server.listen(port);
    }

    /// TCP connect from `client` with source address `from` to `to:port`;
    /// true if connected within `timeout`. See [`NetNs::connect_from`].
    #[track_caller]
    pub fn connect_from(&self, from: &str, to: &str, port: u16, timeout: Duration) -> bool {
        self.client.connect_from(from, to, port, timeout)
    }
}

// ---------------------------------------------------------------------------
// Private D-Bus

/// Placeholder in `tests/fixtures/test-bus.conf` replaced by the listen address.
const BUS_CONF_PLACEHOLDER: &str = "@LISTEN_ADDRESS@";

/// A private `dbus-daemon` listening on a unix path socket in its own
/// world-traversable (0755) temp dir, with the wide-open policy of
/// `tests/fixtures/test-bus.conf`: any uid may connect, own names and send
/// anything. A path socket is reachable from every network namespace
/// (abstract sockets are per-netns).
pub struct TestBus {
    child: Child,
    address: String,
    dir: TempDir,
}

impl TestBus {
    /// Spawns `dbus-daemon --nofork --print-address` on a config generated
    /// from the fixture, and returns once it is listening and accepting.
    pub fn start() -> TestBus {
        let dir = tempfile::Builder::new()
            .prefix("orch-test-bus-")
            .tempdir()
            .expect("create bus temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod bus temp dir");
        let socket = dir.path().join("bus");
        let address = format!("unix:path={}", socket.display());
        let template = include_str!("../fixtures/test-bus.conf");
        assert!(
            template.contains(BUS_CONF_PLACEHOLDER),
            "test-bus.conf lacks {BUS_CONF_PLACEHOLDER}"
        );
        let config_path = dir.path().join("bus.conf");
        fs::write(
            &config_path,
            template.replace(BUS_CONF_PLACEHOLDER, &address),
        )
        .expect("write bus config");
        let child = spawn_bus_daemon(dir.path());
        TestBus {
            child,
            address,
            dir,
        }
    }

    /// Kills the dbus-daemon and starts a new one at the same address, as
    /// a restart of dbus.service would: every connection to it breaks.
    pub fn restart(&mut self) {
        kill_and_reap(&mut self.child);
        let _ = fs::remove_file(self.dir.path().join("bus"));
        self.child = spawn_bus_daemon(self.dir.path());
    }

    /// Kills the dbus-daemon and leaves the bus down.
    pub fn kill(&mut self) {
        kill_and_reap(&mut self.child);
    }

    /// The bus address, `unix:path=/tmp/orch-test-bus-XXXX/bus`. Set it as
    /// `DBUS_SYSTEM_BUS_ADDRESS` for clients.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Pid of the dbus-daemon.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The bus's temp dir (socket, config, dbus-daemon.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Contents of the dbus-daemon's stderr log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dbus-daemon.log")).unwrap_or_default()
    }

    /// Runs `busctl --address=<address> <args>` as root in the host netns.
    #[track_caller]
    pub fn busctl(&self, args: &[&str]) -> CmdOutput {
        run_command(
            Command::new("busctl")
                .arg(format!("--address={}", self.address))
                .args(args),
        )
    }

    /// `busctl call` of `method` on orch's object and interface, as root.
    #[track_caller]
    pub fn call_orch(&self, method: &str, signature: &str, args: &[&str]) -> CmdOutput {
        let mut full = vec![
            "call",
            "org.orch.Orch1",
            "/org/orch/Orch1",
            "org.orch.Orch1",
            method,
            signature,
        ];
        full.extend_from_slice(args);
        self.busctl(&full)
    }

    /// Runs tests/fixtures/big_call.py against this bus (as uid 65534, or
    /// as root) for calls busctl cannot make (arguments of megabytes, a
    /// million addresses, thousands of concurrent reads) and returns the
    /// JSON line it prints.
    #[track_caller]
    pub fn big_call(&self, as_nobody: bool, mode: &str, size: usize) -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/big_call.py");
        let mut command = if as_nobody {
            nobody_command("/usr/bin/python3")
        } else {
            Command::new("/usr/bin/python3")
        };
        let out = run_command(
            command
                .arg(script)
                .arg(&self.address)
                .arg(mode)
                .arg(size.to_string()),
        )
        .expect_ok("big_call.py");
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("big_call.py printed {:?}: {e}", out.stdout))
    }

    /// Like [`TestBus::busctl`], as uid/gid 65534 with no supplementary groups.
    #[track_caller]
    pub fn busctl_as_nobody(&self, args: &[&str]) -> CmdOutput {
        run_command(
            nobody_command("busctl")
                .arg(format!("--address={}", self.address))
                .args(args),
        )
    }
}

/// Spawns `dbus-daemon --nofork --print-address` on `<dir>/bus.conf`
/// (stderr appended to `<dir>/dbus-daemon.log`) and returns once it is
/// listening on `<dir>/bus` and accepting; panics with the log otherwise.
fn spawn_bus_daemon(dir: &Path) -> Child {
    let config_path = dir.join("bus.conf");
    let socket = dir.join("bus");
    let log_path = dir.join("dbus-daemon.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("open dbus-daemon log");

    let mut cmd = Command::new("dbus-daemon");
    cmd.arg(format!("--config-file={}", config_path.display()))
        .args(["--nofork", "--nopidfile", "--print-address"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));

    // dbus-daemon prints its address once it is listening.
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so dbus-daemon never writes to a closed pipe.
        let _ = io::copy(&mut reader, &mut io::sink());
    });
    let fail = |child: &mut Child, why: String| -> ! {
        kill_and_reap(child);
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        panic!("private dbus-daemon failed to start: {why}\n--- dbus-daemon log ---\n{log}");
    };
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.starts_with("unix:") => {}
        Ok(line) => fail(&mut child, format!("unexpected address line {line:?}")),
        Err(_) => fail(&mut child, "no address printed within 10s".into()),
    }
    if !poll_until(Duration::from_secs(5), || {
        UnixStream::connect(&socket).is_ok()
    }) {
        fail(
            &mut child,
            format!("{} does not accept connections", socket.display()),
        );
    }
    child
}

impl Drop for TestBus {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// The orch daemon

/// An orch daemon under test, running inside a [`NetNs`] and talking to a
/// [`TestBus`], with its own temp dir holding the state dir, the config file
/// and the log.
pub struct Daemon {
    child: Option<Child>,
    /// The daemon's state directory (`<tempdir>/state`, created empty).
    pub state_dir: PathBuf,
    /// The generated config file (`<tempdir>/orch.toml`).
    pub config_path: PathBuf,
    log_path: PathBuf,
    program: PathBuf,
    bus_address: String,
    starts: u32,
    /// How long a (re)start may take to answer Ping.
    ready_timeout: Duration,
    /// Set once a panic message already carried the log tail.
    log_reported: bool,
    dir: TempDir,
}

impl Daemon {
    /// Writes `config_toml`, with a `state_dir = "<tempdir>/state"` line
    /// prepended (so the caller's TOML must not set `state_dir`), to
    /// `<tempdir>/orch.toml`, then spawns
    /// `nsenter --net=<netns> -- orch daemon --config <file>` with
    /// `DBUS_SYSTEM_BUS_ADDRESS=<bus address>`, `RUST_LOG=debug` and
    /// `NO_COLOR=1`, stdout and stderr appended to `<tempdir>/daemon.log`.
    ///
    /// Returns once `org.orch.Orch1` answers `org.freedesktop.DBus.Peer.Ping`
    /// on `/org/orch/Orch1` (deadline [`DAEMON_READY_TIMEOUT`]); panics with
    /// the log tail if it exits or does not answer in time.
    #[track_caller]
    pub fn start(netns: &NetNs, bus: &TestBus, config_toml: &str) -> Daemon {
        Self::start_program(orch_bin(), netns, bus, config_toml)
    }

    /// Like [`Daemon::start`] with another executable in place of `orch`
    /// (invoked the same way: `<program> daemon --config <file>`). Used by
    /// the harness's own smoke tests with a stand-in daemon.
    #[track_caller]
    pub fn start_program(
        program: impl Into<PathBuf>,
        netns: &NetNs,
        bus: &TestBus,
        config_toml: &str,
    ) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("orch-test-daemon-")
            .tempdir()
            .expect("create daemon temp dir");
        let state_dir = dir.path().join("state");
        fs::create_dir(&state_dir).expect("create state dir");
        fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700))
            .expect("chmod state dir");
        let config_path = dir.path().join("orch.toml");
        let state_line = format!(
            "state_dir = \"{}\"\n",
            state_dir
                .display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        );
        fs::write(&config_path, state_line + config_toml).expect("write daemon config");
        let mut daemon = Daemon {
            child: None,
            state_dir,
            config_path,
            log_path: dir.path().join("daemon.log"),
            program: program.into(),
            bus_address: bus.address().to_owned(),
            starts: 0,
            ready_timeout: DAEMON_READY_TIMEOUT,
            log_reported: false,
            dir,
        };
        daemon.spawn_and_wait(netns, bus);
        daemon
    }

    /// Starts the daemon again with the same state dir, config file and log
    /// (after [`Daemon::kill9`] or [`Daemon::stop`]; if it is still running it
    /// is stopped first). Waits for readiness like [`Daemon::start`].
    #[track_caller]
    /// Lets later restarts take up to `timeout` to answer Ping (benches
    /// load stores far bigger than any test's).
    pub fn set_ready_timeout(&mut self, timeout: Duration) {
        self.ready_timeout = timeout;
    }

    pub fn restart(&mut self, netns: &NetNs, bus: &TestBus) {
        if self.child.is_some() {
            self.stop();
        }
        self.bus_address = bus.address().to_owned();
        self.spawn_and_wait(netns, bus);
    }

    #[track_caller]
    fn spawn_and_wait(&mut self, netns: &NetNs, bus: &TestBus) {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open daemon log");
        let _ = writeln!(
            log,
            "===== harness: start #{} of {} =====",
            self.starts,
            self.program.display()
        );
        let mut cmd = netns.command(&self.program);
        cmd.arg("daemon")
            .arg("--config")
            .arg(&self.config_path)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .env("RUST_LOG", "info,orch=debug")
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        self.child = Some(child);

        let mut exited = None;
        let ready = poll_until(self.ready_timeout, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
                return true;
            }
            self.ping()
        });
        if let Some(status) = exited {
            self.child = None;
            self.log_reported = true;
            panic!(
                "orch daemon exited with {status} before answering Ping\n--- daemon log tail ---\n{}",
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
        if !ready {
            if let Some(mut child) = self.child.take() {
                kill_and_reap(&mut child);
            }
            self.log_reported = true;
            panic!(
                "orch daemon did not answer Ping on {} within {:?}\n\
                 --- daemon log tail ---\n{}",
                self.bus_address,
                self.ready_timeout,
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
    }

    /// Whether `org.orch.Orch1` currently answers `Peer.Ping` on
    /// `/org/orch/Orch1` (1 s timeout).
    pub fn ping(&self) -> bool {
        run_command(Command::new("busctl").args([
            &format!("--address={}", self.bus_address),
            "--timeout=1",
            "call",
            "org.orch.Orch1",
            "/org/orch/Orch1",
            "org.freedesktop.DBus.Peer",
            "Ping",
        ]))
        .ok()
    }

    /// Whether anything owns `org.orch.Orch1` on the bus right now.
    pub fn name_has_owner(&self) -> bool {
        let out = run_command(Command::new("busctl").args([
            &format!("--address={}", self.bus_address),
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            "org.orch.Orch1",
        ]))
        .expect_ok("NameHasOwner org.orch.Orch1");
        out.stdout.trim() == "b true"
    }

    /// Waits until the bus has noticed the daemon is gone and released
    /// `org.orch.Orch1`, so that a restart can own the name again.
    #[track_caller]
    fn wait_name_released(&self) {
        wait_until(
            Duration::from_secs(5),
            "the bus to release org.orch.Orch1 after the daemon exited",
            || !self.name_has_owner(),
        );
    }

    /// SIGKILLs the daemon, reaps it and waits until the bus has released
    /// `org.orch.Orch1`. No-op if it is not running.
    #[track_caller]
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
            self.wait_name_released();
        }
    }

    /// SIGTERMs the daemon, waits up to 5 s for it to exit, then SIGKILLs it;
    /// then waits until the bus has released `org.orch.Orch1`. Returns its exit status (code, or 128 + signal; 137 means it had to be
    /// killed). Returns -1 if it was not running.
    pub fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return -1;
        };
        // SAFETY: plain syscall; the child is not reaped yet, so the pid is ours.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let mut status = None;
        poll_until(Duration::from_secs(5), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        let status = status.or_else(|| kill_and_reap(&mut child));
        self.wait_name_released();
        status.map_or(-1, status_code)
    }

    /// If the daemon has exited on its own, reaps it and returns its status
    /// (code or 128 + signal); `None` while it is running (or already reaped).
    pub fn try_exit_status(&mut self) -> Option<i32> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status_code(status))
    }

    /// Pid of the running daemon (the same as nsenter's: it execs). Panics if
    /// it is not running.
    #[track_caller]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is not running").id()
    }

    /// Resident memory of the daemon now, in KiB (`VmRSS`), 0 if unknown.
    #[track_caller]
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// `VmRSS` with its split into anonymous memory (heap, stacks) and
    /// file pages (the binary and libraries), for benches to print.
    pub fn rss_text(&self) -> String {
        format!(
            "{} KiB (anonymous {} KiB, file {} KiB)",
            self.status_kib("VmRSS:"),
            self.status_kib("RssAnon:"),
            self.status_kib("RssFile:")
        )
    }

    /// One `… kB` field of `/proc/<pid>/status`, 0 if unknown.
    fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.pid(), field)
    }

    /// Sends SIGHUP (reload the configuration).
    #[track_caller]
    pub fn sighup(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGHUP) };
        assert_eq!(sent, 0, "kill -HUP {}", self.pid());
    }

    /// Contents of the daemon's log (stdout + stderr of every start, each
    /// preceded by a `===== harness: start #N` line).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Runs the orch CLI, `orch <args>`, as root in the host netns with
    /// `DBUS_SYSTEM_BUS_ADDRESS` pointing at this daemon's bus, `NO_COLOR=1`
    /// and `RUST_LOG` unset.
    #[track_caller]
    pub fn cli(&self, args: &[&str]) -> CmdOutput {
        run_command(self.cli_env(Command::new(orch_bin())).args(args))
    }

    /// Like [`Daemon::cli`], as uid/gid 65534 with no supplementary groups.
    #[track_caller]
    pub fn cli_as_nobody(&self, args: &[&str]) -> CmdOutput {
        run_command(self.cli_env(nobody_command(orch_bin())).args(args))
    }

    /// Like [`Daemon::cli`], with `input` on stdin.
    #[track_caller]
    pub fn cli_with_input(&self, args: &[&str], input: &str) -> CmdOutput {
        run_command_with_input(self.cli_env(Command::new(orch_bin())).args(args), input)
    }

    fn cli_env(&self, mut cmd: Command) -> Command {
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("DBUS_SESSION_BUS_ADDRESS");
        cmd
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
        if std::thread::panicking() && !self.log_reported {
            eprintln!(
                "--- orch daemon log tail ({}) ---\n{}\n--- end of daemon log ---",
                self.log_path.display(),
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
    }
}
