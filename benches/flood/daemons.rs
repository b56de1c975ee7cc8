//! The flood bench's three live daemons, each following its own empty log
//! file in its own fresh network namespace, with its own temp dir for
//! config, socket, pid file and database: orch (through tests/common's
//! `Daemon`, with a private dbus-daemon), Debian's fail2ban-server and
//! fail2ban-rs. Each reports its pid, the kernel set its bans land in, and
//! its CPU time and peak memory.
//!
//! Every daemon is SIGKILLed and reaped on drop (a panic included), before
//! its namespace and temp dir go; a peer also gets SIGKILL from the kernel
//! if the bench itself is killed by a signal (orch and its dbus-daemon,
//! started by tests/common, are only killed on drop, as in the tests). This module must not touch the host's
//! firewall or the Debian fail2ban service: it never runs fail2ban-client
//! without `-s <own socket>`, and every daemon and nft runs in the
//! namespace.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::{
    Daemon, NetNs, TestBus, cpu_seconds_with_children, orch_bin, poll_until, run_command,
    status_kib,
};
use crate::lines::MAXRETRY;

/// How long a daemon may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Every jail's findtime and bantime, in seconds.
const FINDTIME: u64 = 600;
const BANTIME: u64 = 3600;
/// The jail's name in fail2ban and fail2ban-rs (their set names follow).
const JAIL: &str = "sshd";

/// Which daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Orch,
    Fail2ban,
    Fail2banRs,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Orch, Kind::Fail2ban, Kind::Fail2banRs];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Orch => "orch",
            Kind::Fail2ban => "fail2ban",
            Kind::Fail2banRs => "fail2ban-rs",
        }
    }

    pub fn parse(word: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == word)
    }

    /// The nftables table (family inet) and IPv4 set its jail bans into,
    /// as each creates them (read off running daemons: orch's own layout,
    /// fail2ban's action.d/nftables.conf, fail2ban-rs's
    /// src/enforce/nftables.rs).
    pub fn table_and_set(self) -> (&'static str, &'static str) {
        match self {
            Kind::Orch => ("orch", "ban4"),
            Kind::Fail2ban => ("f2b-table", "addr-set-sshd"),
            Kind::Fail2banRs => ("fail2ban-rs", "f2b-sshd"),
        }
    }

    /// What the daemon says of its own version, for the results.
    pub fn version(self) -> String {
        let out = match self {
            Kind::Orch => run_command(Command::new(orch_bin()).arg("--version")),
            Kind::Fail2ban => run_command(Command::new("fail2ban-server").arg("--version")),
            Kind::Fail2banRs => run_command(Command::new(fail2ban_rs()).arg("--version")),
        };
        let text = if out.stdout.trim().is_empty() {
            out.stderr
        } else {
            out.stdout
        };
        text.lines().next().unwrap_or("unknown").trim().to_owned()
    }
}

/// fail2ban-rs's binary: `$FAIL2BAN_RS`, or where benches/peers.sh puts it.
fn fail2ban_rs() -> PathBuf {
    std::env::var_os("FAIL2BAN_RS")
        .map_or_else(|| "/opt/fail2ban-rs/bin/fail2ban-rs".into(), PathBuf::from)
}

/// A peer's process, SIGKILLed and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Process {
    Orch { daemon: Box<Daemon>, _bus: TestBus },
    Peer(KillOnDrop),
}

/// One live daemon. Fields drop in order: the process, its namespace,
/// then its temp dir.
pub struct Live {
    pub kind: Kind,
    /// The file its jail follows (empty when started).
    pub log: PathBuf,
    process: Process,
    pub netns: NetNs,
    dir: TempDir,
}

impl Live {
    /// Starts `kind` in a fresh namespace with one sshd jail (maxretry
    /// [`MAXRETRY`], findtime 10 min, bantime 1 h) on a new empty file;
    /// `max_tracked` is orch's cap on remembered failing addresses (the
    /// peers have none). Returns once the daemon is ready to follow it.
    pub fn start(kind: Kind, max_tracked: usize) -> Live {
        let dir = tempfile::Builder::new()
            .prefix(&format!("orch-flood-{}-", kind.name()))
            .tempdir()
            .expect("create the daemon's temp dir");
        let log = dir.path().join("auth.log");
        fs::write(&log, "").expect("create the followed log");
        let netns = NetNs::new();
        let process = match kind {
            Kind::Orch => start_orch(&netns, &log, max_tracked),
            Kind::Fail2ban => Process::Peer(start_fail2ban(&netns, dir.path(), &log)),
            Kind::Fail2banRs => Process::Peer(start_fail2ban_rs(&netns, dir.path(), &log)),
        };
        Live {
            kind,
            log,
            process,
            netns,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Orch { daemon, .. } => daemon.pid(),
            Process::Peer(child) => child.0.id(),
        }
    }

    /// User + system CPU seconds of the daemon and of the children it has
    /// reaped (fail2ban and fail2ban-rs run `nft` once per ban).
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_with_children(self.pid())
    }

    /// Peak resident memory of the daemon process (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }

    /// The addresses in the jail's kernel set now (one full listing:
    /// about a second at 100k, so only at the end of a run).
    pub fn bans_in_kernel(&self) -> Vec<String> {
        let (table, set) = self.kind.table_and_set();
        self.netns.set_elements(table, set)
    }

    /// Where the daemon's own log is, for reading after a surprise.
    pub fn daemon_log(&self) -> PathBuf {
        match &self.process {
            Process::Orch { daemon, .. } => daemon.config_path.with_file_name("daemon.log"),
            Process::Peer(_) => self.dir.path().join("daemon.log"),
        }
    }

    /// Stops the daemon (SIGSTOP), so that its set holds still, and waits
    /// until the kernel reports it stopped and a child `nft` it had
    /// started has had time to finish.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.pid());
        poll_until(Duration::from_secs(5), || {
            fs::read_to_string(&stat)
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('T'))
                })
                .unwrap_or(true)
        });
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Lets a frozen daemon go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on our own child, not reaped yet.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill -{signal} {}", self.pid());
    }

    /// Whether the daemon is still running.
    pub fn alive(&mut self) -> bool {
        match &mut self.process {
            Process::Orch { daemon, .. } => daemon.try_exit_status().is_none(),
            Process::Peer(child) => matches!(child.0.try_wait(), Ok(None)),
        }
    }
}

fn start_orch(netns: &NetNs, log: &Path, max_tracked: usize) -> Process {
    let config = format!(
        "[jails]\nmax_tracked = {max_tracked}\n[jails.{JAIL}]\nfilter = \"sshd\"\nfiles = [\"{}\"]\n\
         maxretry = {MAXRETRY}\nfindtime = \"{FINDTIME}s\"\nbantime = \"{BANTIME}s\"\n",
        log.display()
    );
    let bus = TestBus::start();
    let daemon = Daemon::start(netns, &bus, &config);
    Process::Orch {
        daemon: Box::new(daemon),
        _bus: bus,
    }
}

/// Spawns `program` in `netns` with TZ=UTC (the log's stamps are UTC),
/// its output to `<dir>/daemon.log`.
fn spawn_in(
    netns: &NetNs,
    dir: &Path,
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
) -> KillOnDrop {
    let out = fs::File::create(dir.join("daemon.log")).expect("create the daemon's log");
    let mut cmd = netns.command(program);
    // SAFETY: prctl(2) is async-signal-safe. If the bench dies without
    // running destructors (a signal), the kernel kills the daemon too.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.args(args)
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup the daemon's log"))
        .stderr(out);
    KillOnDrop(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}")),
    )
}

/// Waits until `ready` holds, panicking with the daemon's log if it exits
/// or does not get there within [`READY_TIMEOUT`].
fn wait_ready(child: &mut KillOnDrop, dir: &Path, what: &str, mut ready: impl FnMut() -> bool) {
    let mut exited = None;
    let ok = poll_until(READY_TIMEOUT, || {
        if let Ok(Some(status)) = child.0.try_wait() {
            exited = Some(status);
            return true;
        }
        ready()
    });
    if exited.is_some() || !ok {
        let log = fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
        panic!("{what} did not become ready (exit: {exited:?})\n--- its log ---\n{log}");
    }
}

/// fail2ban-server in the foreground with a config dir of its own: Debian's
/// jail.conf, fail2ban.conf, paths and filter.d/action.d (symlinked), and
/// .local files that put the log, socket, pid file and database in `dir`
/// and enable one sshd jail with `backend = pyinotify` and
/// `banaction = nftables-allports`. jail.d (Debian's sshd on
/// /var/log/auth.log) is left out.
fn start_fail2ban(netns: &NetNs, dir: &Path, log: &Path) -> KillOnDrop {
    let conf = dir.join("conf");
    fs::create_dir(&conf).expect("create fail2ban's config dir");
    for name in [
        "filter.d",
        "action.d",
        "jail.conf",
        "fail2ban.conf",
        "paths-common.conf",
        "paths-debian.conf",
    ] {
        std::os::unix::fs::symlink(Path::new("/etc/fail2ban").join(name), conf.join(name))
            .expect("link Debian's fail2ban config");
    }
    let socket = dir.join("fail2ban.sock");
    let pidfile = dir.join("fail2ban.pid");
    let d = dir.display();
    fs::write(
        conf.join("fail2ban.local"),
        format!(
            "[Definition]\nlogtarget = {d}/fail2ban.log\nsocket = {}\npidfile = {}\ndbfile = {d}/fail2ban.sqlite3\n",
            socket.display(),
            pidfile.display()
        ),
    )
    .expect("write fail2ban.local");
    fs::write(
        conf.join("jail.local"),
        format!(
            "[DEFAULT]\nbanaction = nftables-allports\nbanaction_allports = nftables-allports\n\
             [{JAIL}]\nenabled = true\nbackend = pyinotify\nlogpath = {}\n\
             maxretry = {MAXRETRY}\nfindtime = {FINDTIME}\nbantime = {BANTIME}\n",
            log.display()
        ),
    )
    .expect("write jail.local");
    let (conf, socket, pidfile) = (
        conf.display().to_string(),
        socket.display().to_string(),
        pidfile.display().to_string(),
    );
    let mut child = spawn_in(
        netns,
        dir,
        "fail2ban-server",
        &["-f", "-x", "-c", &conf, "-s", &socket, "-p", &pidfile],
    );
    wait_ready(&mut child, dir, "fail2ban-server", || {
        run_command(Command::new("fail2ban-client").args(["-s", &socket, "status", JAIL])).ok()
    });
    child
}

/// fail2ban-rs with `gen-config sshd`'s jail (its own sshd filter, syslog
/// dates) on `log`, the nftables backend, and state and socket in `dir`.
fn start_fail2ban_rs(netns: &NetNs, dir: &Path, log: &Path) -> KillOnDrop {
    let program = fail2ban_rs();
    let jail = run_command(Command::new(&program).args(["gen-config", JAIL]));
    assert!(jail.ok(), "fail2ban-rs gen-config {JAIL}: {jail}");
    let mut config = format!(
        "[global]\nstate_dir = \"{}/state\"\nsocket_path = \"{}/fail2ban-rs.sock\"\n\n",
        dir.display(),
        dir.display()
    );
    for line in jail.stdout.lines() {
        if line.starts_with("log_path =") {
            let _ = writeln!(config, "log_path = \"{}\"", log.display());
        } else {
            let _ = writeln!(config, "{line}");
        }
    }
    let _ = write!(
        config,
        "max_retry = {MAXRETRY}\nfind_time = \"{FINDTIME}s\"\nban_time = \"{BANTIME}s\"\nbackend = \"nftables\"\n"
    );
    let path = dir.join("fail2ban-rs.toml");
    fs::write(&path, config).expect("write fail2ban-rs.toml");
    let path = path.display().to_string();
    let mut child = spawn_in(netns, dir, &program, &["-c", &path, "run"]);
    wait_ready(&mut child, dir, "fail2ban-rs", || {
        run_command(Command::new(&program).args(["-c", &path, "status"])).ok()
    });
    child
}
