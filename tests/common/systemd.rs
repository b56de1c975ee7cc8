//! A real systemd, booted as PID 1 of throwaway namespaces, for tests that
//! need genuine unit management: `nftables.service` start/reload/stop,
//! drop-ins, `daemon-reload`, `Type=notify` services, a system bus owned by
//! `dbus.service`, the journal.
//!
//! # What it does
//!
//! [`SystemdSandbox::boot`] runs
//! `unshare --pid --fork --mount --net --uts --ipc --cgroup --kill-child` on
//! a small pre-init shell script ([`INIT_SCRIPT`], written to the sandbox's
//! temp dir). Before the exec, the harness puts the process into a fresh
//! cgroup2 child of the test process's own cgroup (so each sandbox's systemd
//! gets its own cgroup tree), starts a new session and drops `CAP_SYS_MODULE`
//! and `CAP_SYS_TIME` from the bounding set. The script, PID 1 of the new pid
//! namespace:
//!
//! * overlays the host's root filesystem copy-on-write (overlayfs, upper dir
//!   on a tmpfs that only exists in the sandbox's mount namespace), so the
//!   distribution's units, `/etc/nftables.conf` and the freshly built test
//!   binaries (`env!("CARGO_BIN_EXE_orch")`) are all visible at their usual
//!   paths, and nothing written inside reaches the host;
//! * mounts a fresh proc (with `/proc/sys` read-only except the per-netns
//!   `/proc/sys/net`), a read-only sysfs, a cgroup2 hierarchy rooted at the
//!   sandbox's cgroup (cgroup namespace), tmpfs on `/run` and `/tmp`, and a
//!   private `/dev` (tmpfs with bind mounts of null, zero, full, random,
//!   urandom and tty, a new devpts instance, and a pty as `/dev/console`
//!   whose output the harness copies to `<tempdir>/console.log`);
//! * writes `sandbox.target` (basic.target + dbus.socket + dbus.service) and
//!   masks `timers.target` (no apt/man-db/fstrim timers inside tests);
//! * brings `lo` up in the new network namespace, `pivot_root`s into the
//!   overlay, starts a watchdog that powers the sandbox off when the test
//!   process goes away, and execs `/lib/systemd/systemd --system
//!   --unit=sandbox.target` with `container=other`.
//!
//! Boot takes about half a second. Commands run inside with
//! `nsenter -t <pid of systemd> -a` (all namespaces and the sandbox's root).
//! Teardown is `systemctl poweroff`, then SIGKILL after a deadline; the mount
//! namespace (with the overlay and all tmpfs) vanishes with the last process,
//! the sandbox's cgroup directories and temp dir are removed.
//!
//! # What it must not do
//!
//! * Touch host state. The host's `/dev` must never be bind-mounted whole
//!   (systemd and journald would create `/dev/log`, `/dev/initctl`,
//!   `/dev/mqueue`, ... on the host), `/sys` and `/proc/sys` must stay
//!   read-only (udev would otherwise trigger host devices and
//!   systemd-sysctl/binfmt would rewrite host kernel settings), and host
//!   paths are only ever written through `nsenter` (never through
//!   `/proc/<pid>/root/...`, where absolute symlinks resolve on the host).
//!   The pre-init's `mount` commands run before the host's `/run` is hidden,
//!   so `LIBMOUNT_UTAB` points into the temp dir (libmount would otherwise
//!   create `/run/mount/utab` on the host).
//! * Run `systemctl`/`nsenter` against the sandbox before its PID 1 really is
//!   systemd: before the `pivot_root`, the namespaces still see the host's
//!   `/run`, and on a host managed by systemd `systemctl` would talk to the
//!   host's manager. [`SystemdSandbox::boot`] waits for the exec first.
//! * Share anything between sandboxes: each has its own temp dir, cgroup,
//!   console pty and namespaces, so tests may boot several in parallel.
//!
//! Limitations: needs root with CAP_SYS_ADMIN, a cgroup2 mount on the host
//! and the distribution's systemd at `/lib/systemd/systemd`. Only the host's
//! root filesystem is overlaid; other host mounts are visible only for the
//! directories listed by [`host_dirs_to_bind`] (read-only). If the test
//! process is killed without unwinding, the watchdog powers the sandbox off
//! but the temp dir and the (empty) cgroup directory are left behind; the
//! latter is swept by the next [`SystemdSandbox::boot`].

use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{
    CmdOutput, LOG_TAIL_LINES, POLL_INTERVAL, kill_and_reap, orch_bin, pid_exists, poll_until,
    run_command, run_command_with_input, status_code, tail, unique_name,
};

/// Deadline for [`SystemdSandbox::boot`]: from spawning `unshare` until
/// `systemctl is-system-running --wait` reports `running` or `degraded`.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Deadline for the sandbox to exit after `systemctl poweroff` before it is
/// SIGKILLed.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The unit systemd boots into (written by [`INIT_SCRIPT`]).
pub const SANDBOX_TARGET: &str = "sandbox.target";

/// `PATH` for everything run inside the sandbox.
const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capabilities dropped from the bounding set of the sandbox (systemd and all
/// its services): nothing inside may load kernel modules or set the clock.
/// Values from `<linux/capability.h>`.
const DROPPED_CAPS: [libc::c_ulong; 2] = [
    16, // CAP_SYS_MODULE
    25, // CAP_SYS_TIME
];

/// Pre-init script, run by `/bin/sh` as PID 1 of the new namespaces with
/// arguments `DIR CONSOLE [HOST_DIR...]`: `DIR` is the sandbox's temp dir
/// (its `fs` subdirectory becomes the tmpfs holding the overlay), `CONSOLE`
/// the pty slave to bind on `/dev/console`, each `HOST_DIR` a host directory
/// to bind read-only at the same path. Stdin is a pipe from the harness whose
/// EOF powers the sandbox off (SIGRTMIN+14 = 48 with glibc: immediate
/// poweroff).
pub const INIT_SCRIPT: &str = r#"#!/bin/sh
# Pre-init of an orch test sandbox: see tests/common/systemd.rs.
set -eu
D=$1
CONSOLE=$2
shift 2
T=$D/fs
R=$T/root

# libmount would otherwise create /run/mount/utab on the host.
export LIBMOUNT_UTAB="$D/utab"
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs "$T"
mkdir "$T/upper" "$T/work" "$R"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
mount -o remount,bind,ro "$R/proc/sys"
if [ -e "$R/proc/sysrq-trigger" ]; then
    mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
    mount -o remount,bind,ro "$R/proc/sysrq-trigger"
fi
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"

mount -t tmpfs -o nosuid,mode=0755,size=4m tmpfs "$R/dev"
for n in null zero full random urandom tty; do
    touch "$R/dev/$n"
    mount --bind "/dev/$n" "$R/dev/$n"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
touch "$R/dev/console"
mount --bind "$CONSOLE" "$R/dev/console"

mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs "$R/run"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$R/tmp"
# After the tmpfs mounts, so a checkout under /tmp (as CI clones) stays visible.
for d in "$@"; do
    mkdir -p "$R$d"
    mount --bind "$d" "$R$d"
    mount -o remount,bind,ro "$R$d"
done

mkdir -p "$R/etc/systemd/system"
cat > "$R/etc/systemd/system/sandbox.target" <<'EOF'
[Unit]
Description=orch test sandbox
Requires=basic.target dbus.socket
Wants=dbus.service
After=basic.target dbus.socket dbus.service
AllowIsolate=yes
EOF
ln -sfn /dev/null "$R/etc/systemd/system/timers.target"

ip link set lo up

cd "$R"
pivot_root . .
umount -l .
cd /

# Watchdog: EOF on stdin means the test process is gone.
exec 3<&0 </dev/null
(cat <&3 >/dev/null 2>&1 || :; kill -48 1) &
exec 3<&- env -i container=other /lib/systemd/systemd --system --unit=sandbox.target \
    --show-status=yes --log-color=no
"#;

/// Host directories bound read-only into the sandbox at the same path: the
/// directory of the test binaries and the crate root. The overlay shows the
/// host's root filesystem, but not other filesystems, and the sandbox's own
/// tmpfs on /tmp and /run hide a checkout there (CI clones under /tmp), so
/// both are always bound.
pub fn host_dirs_to_bind() -> Vec<PathBuf> {
    // The crate root first: a later bind of it would hide a target dir
    // bound below it.
    let crate_root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = orch_bin()
        .parent()
        .expect("orch binary has a parent directory")
        .to_path_buf();
    let mut dirs = vec![crate_root];
    if !dirs.contains(&bin_dir) {
        dirs.push(bin_dir);
    }
    dirs
}

// ---------------------------------------------------------------------------
// Console capture

/// A pty whose slave becomes the sandbox's `/dev/console`; a thread copies
/// everything written to it into a log file (carriage returns dropped).
struct Console {
    /// Held open so reading the master never sees EIO between systemd's opens.
    slave: Option<OwnedFd>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    slave_path: PathBuf,
}

impl Console {
    fn open(log_path: &Path) -> Console {
        // SAFETY: plain libc calls; every result is checked before use.
        let master = unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if fd < 0 {
                panic!("posix_openpt: {}", io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: `master` is an open pty master; `name` is a writable buffer
        // of the given length, NUL-terminated by ptsname_r on success.
        let slave_path = unsafe {
            if libc::grantpt(master.as_raw_fd()) != 0 || libc::unlockpt(master.as_raw_fd()) != 0 {
                panic!("grantpt/unlockpt: {}", io::Error::last_os_error());
            }
            let rc = libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len());
            if rc != 0 {
                panic!("ptsname_r: {}", io::Error::from_raw_os_error(rc));
            }
            PathBuf::from(
                CStr::from_ptr(name.as_ptr())
                    .to_str()
                    .expect("pty name is UTF-8"),
            )
        };
        let slave: OwnedFd = OpenOptions::new()
            .read(true)
            .write(true)
            // Never become the test process's controlling terminal.
            .custom_flags(libc::O_NOCTTY)
            .open(&slave_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", slave_path.display()))
            .into();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .expect("create console log");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sandbox-console".into())
            .spawn(move || copy_console(&master, &mut log, &stop_flag))
            .expect("spawn console thread");
        Console {
            slave: Some(slave),
            stop,
            thread: Some(thread),
            slave_path,
        }
    }

    /// Copies what is still buffered, then stops the thread and closes the pty.
    fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.slave = None;
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.close();
    }
}

/// Console thread body: poll the pty master, append output to `log` until
/// `stop` is set and nothing more is readable.
fn copy_console(master: &OwnedFd, log: &mut File, stop: &AtomicBool) {
    let mut buf = [0u8; 8192];
    loop {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; short timeout so `stop` is re-checked.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n <= 0 || pfd.revents & libc::POLLIN == 0 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            if n > 0 {
                // POLLHUP/POLLERR (e.g. after a vhangup): back off briefly.
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        }
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let text: Vec<u8> = buf[..r as usize]
            .iter()
            .copied()
            .filter(|&b| b != b'\r')
            .collect();
        let _ = log.write_all(&text);
    }
}

// ---------------------------------------------------------------------------
// cgroups

/// Mount point of the host's cgroup2 hierarchy, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split(' ').next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = pre.split(' ').collect();
        // Only a mount of the hierarchy's root maps paths 1:1.
        if fields.get(3) != Some(&"/") {
            return None;
        }
        Some(PathBuf::from(unescape_mountinfo(fields.get(4)?)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for space, ...).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match octal {
            Some(v) if bytes[i] == b'\\' => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates a fresh cgroup2 directory below the test process's own cgroup.
fn create_sandbox_cgroup() -> PathBuf {
    let mount = cgroup2_mount().unwrap_or_else(|| {
        panic!("SystemdSandbox needs a cgroup2 hierarchy mounted on the host (none in /proc/self/mountinfo)")
    });
    let own = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup2 entry in /proc/self/cgroup:\n{own}"));
    let parent = mount.join(own.trim_start_matches('/'));
    remove_stale_cgroups(&parent);
    let dir = parent.join(unique_name(CGROUP_PREFIX));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
    dir
}

/// Name prefix of sandbox cgroups: `<prefix>_<test pid>_<n>`.
const CGROUP_PREFIX: &str = "orch-systemd-sandbox";

/// Removes empty sandbox cgroups left behind by test processes that died
/// without unwinding (best effort).
fn remove_stale_cgroups(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CGROUP_PREFIX))
            .and_then(|n| n.strip_prefix('_'))
            .and_then(|n| n.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if owner != std::process::id() && !pid_exists(owner) && !cgroup_populated(&entry.path()) {
            let _ = remove_cgroup_tree(&entry.path());
        }
    }
}

/// Whether a cgroup (or any descendant) still holds processes.
fn cgroup_populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|ev| ev.contains("populated 1"))
}

/// Removes a cgroup directory tree, deepest first.
fn remove_cgroup_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

// ---------------------------------------------------------------------------
// The sandbox

/// Where tests put the orch binary inside the sandbox: the build directory
/// may be under /tmp (CI clones there), which the service's PrivateTmp=
/// would hide, as an admin's /home would be by ProtectHome=.
pub const ORCH_IN_SANDBOX: &str = "/usr/local/bin/orch";

/// A real systemd running as PID 1 of its own pid, mount, network, UTS, IPC
/// and cgroup namespaces, on a copy-on-write overlay of the host's root; see
/// the module documentation. Cleaned up on drop (also when the test panics).
pub struct SystemdSandbox {
    /// The host-side `unshare --fork` process; its only child is systemd.
    unshare: Option<Child>,
    /// Write end of the watchdog pipe: closing it powers the sandbox off.
    watchdog: Option<ChildStdin>,
    /// Outer pid of systemd (PID 1 inside).
    pid: u32,
    cgroup: PathBuf,
    console: Console,
    boot_time: Duration,
    /// Set once a panic message or drop already showed the diagnostics.
    diagnostics_reported: bool,
    dir: TempDir,
}

impl SystemdSandbox {
    /// Boots systemd in fresh namespaces and waits (deadline
    /// [`BOOT_TIMEOUT`]) until `systemctl is-system-running --wait` reports
    /// `running` or `degraded`. Panics with diagnostics (pre-init output,
    /// console output captured to `<tempdir>/console.log`, failed units and
    /// journal tail) on failure; the half-booted sandbox is torn down while
    /// unwinding.
    #[track_caller]
    pub fn boot() -> SystemdSandbox {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("orch-systemd-")
            .tempdir()
            .expect("create sandbox temp dir");
        let dir_str = dir.path().to_str().expect("temp dir path is UTF-8");
        assert!(
            !dir_str.contains([',', ':', ' ', '\\']),
            "temp dir {dir_str} is unusable in overlayfs options"
        );
        fs::create_dir(dir.path().join("fs")).expect("create overlay mount point");
        let init_path = dir.path().join("init.sh");
        fs::write(&init_path, INIT_SCRIPT).expect("write init script");
        let init_log = File::create(dir.path().join("init.log")).expect("create init log");
        let console = Console::open(&dir.path().join("console.log"));
        let cgroup = create_sandbox_cgroup();

        let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes())
            .expect("cgroup path has no NUL");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--net",
            "--uts",
            "--ipc",
            "--cgroup",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
        ])
        .arg(&init_path)
        .arg(dir.path())
        .arg(&console.slave_path)
        .args(host_dirs_to_bind())
        .env_clear()
        .env("PATH", SANDBOX_PATH)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(init_log.try_clone().expect("dup init log fd"))
        .stderr(init_log);
        // SAFETY: only async-signal-safe syscalls (setsid, prctl, open,
        // write, close) on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                for cap in DROPPED_CAPS {
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let err = io::Error::last_os_error();
                libc::close(fd);
                if !ok {
                    return Err(err);
                }
                Ok(())
            });
        }
        let mut unshare = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir(&cgroup);
                panic!("cannot spawn {cmd:?}: {e}");
            }
        };
        let watchdog = unshare.stdin.take();
        let mut sandbox = SystemdSandbox {
            unshare: Some(unshare),
            watchdog,
            pid: 0,
            cgroup,
            console,
            boot_time: Duration::ZERO,
            diagnostics_reported: false,
            dir,
        };
        sandbox.wait_for_systemd_exec(started);
        sandbox.wait_for_boot(started);
        sandbox.boot_time = started.elapsed();
        sandbox
    }

    /// Waits until the child of `unshare` (PID 1 inside) has exec'd systemd.
    #[track_caller]
    fn wait_for_systemd_exec(&mut self, started: Instant) {
        let unshare_pid = self.unshare.as_ref().expect("unshare is running").id();
        let mut exited = None;
        let mut pid = 0;
        let execed = poll_until(BOOT_TIMEOUT.saturating_sub(started.elapsed()), || {
            if let Some(child) = self.unshare.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status_code(status));
                return true;
            }
            pid = child_of(unshare_pid).unwrap_or(0);
            pid != 0
                && fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim_end() == "systemd")
        });
        if let Some(status) = exited {
            self.fail(&format!(
                "sandbox pre-init exited with status {status} before starting systemd"
            ));
        }
        if !execed {
            self.fail(&format!(
                "systemd was not exec'd within {BOOT_TIMEOUT:?} (PID 1 outer pid: {pid})"
            ));
        }
        self.pid = pid;
    }

    /// Polls `systemctl is-system-running --wait` until running/degraded.
    #[track_caller]
    fn wait_for_boot(&mut self, started: Instant) {
        let mut last = None;
        loop {
            if let Some(child) = self.unshare.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let status = status_code(status);
                self.fail(&format!(
                    "the sandbox exited with status {status} while booting"
                ));
            }
            let remaining = BOOT_TIMEOUT.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                let last = last.map_or_else(|| "none".to_owned(), |o: CmdOutput| o.to_string());
                self.fail(&format!(
                    "systemd did not finish booting within {BOOT_TIMEOUT:?}; last \
                     `systemctl is-system-running --wait`:\n{last}"
                ));
            }
            let secs = remaining.as_secs().max(1).to_string();
            let out = self.run(
                "timeout",
                &[&secs, "systemctl", "is-system-running", "--wait"],
            );
            match out.stdout.trim() {
                "running" | "degraded" => return,
                "maintenance" | "stopping" => {
                    self.fail(&format!("systemd failed to boot:\n{out}"));
                }
                _ => {}
            }
            last = Some(out);
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Panics with `what` and the sandbox's diagnostics; the sandbox is torn
    /// down by `Drop` while unwinding.
    #[track_caller]
    fn fail(&mut self, what: &str) -> ! {
        let diagnostics = self.diagnostics();
        self.diagnostics_reported = true;
        panic!("SystemdSandbox: {what}\n{diagnostics}");
    }

    /// Pre-init output, console tail and, if systemd is up, failed units and
    /// the journal tail. Never panics.
    fn diagnostics(&self) -> String {
        let mut text = format!(
            "--- sandbox pre-init output ({}) ---\n{}\n--- console tail ({}) ---\n{}\n",
            self.dir.path().join("init.log").display(),
            tail(
                &read_lossy(&self.dir.path().join("init.log")),
                LOG_TAIL_LINES
            ),
            self.console_path().display(),
            tail(&self.console(), LOG_TAIL_LINES),
        );
        if self.pid != 0 && self.is_alive() {
            for (title, args) in [
                ("failed units", &["systemctl", "--no-pager", "--failed"][..]),
                (
                    "journal tail",
                    &["journalctl", "--no-pager", "-b", "-n", "60"][..],
                ),
            ] {
                if let Some(out) = self.try_run("timeout", &[&["5"], args].concat()) {
                    text += &format!("--- {title} ---\n{}{}\n", out.stdout, out.stderr);
                }
            }
        }
        text += "--- end of sandbox diagnostics ---";
        text
    }

    /// Outer pid of systemd (PID 1 inside the sandbox), as seen on the host.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long [`SystemdSandbox::boot`] took, from spawning `unshare` to
    /// `is-system-running` reporting running/degraded.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The sandbox's temp dir on the host (`init.sh`, `init.log`,
    /// `console.log`; `fs` is only a mount point, empty on the host).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the captured console output on the host.
    pub fn console_path(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }

    /// Everything systemd has written to its console so far (boot status
    /// lines such as `[  OK  ] Reached target ...`, failures).
    pub fn console(&self) -> String {
        read_lossy(&self.console_path())
    }

    /// Whether systemd (PID 1 inside) is still running.
    pub fn is_alive(&self) -> bool {
        self.unshare.is_some()
            && fs::read_to_string(format!("/proc/{}/comm", self.pid))
                .is_ok_and(|comm| comm.trim_end() == "systemd")
    }

    /// A command running `program` inside all namespaces of the sandbox and
    /// with its root directory: `nsenter -t <pid> -a -- program`, with a clean
    /// environment (`PATH`, `HOME=/root`, `LANG=C.UTF-8`, `SYSTEMD_COLORS=0`,
    /// `NO_COLOR=1`) and `/` as working directory. Add arguments with
    /// `.arg(s)`. `nsenter` forks to enter the pid namespace, so the spawned
    /// child's pid is not the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        assert!(self.pid != 0, "the sandbox's systemd is not running");
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-a", "--"])
            .arg(program)
            .env_clear()
            .env("PATH", SANDBOX_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_COLORS", "0")
            .env("NO_COLOR", "1")
            .current_dir("/");
        cmd
    }

    /// Runs `program args` inside all namespaces of the sandbox
    /// (`nsenter -t <pid> -a`, see [`SystemdSandbox::command`]) to completion,
    /// capturing output. Panics only if `nsenter` cannot be started.
    #[track_caller]
    pub fn run(&self, program: &str, args: &[&str]) -> CmdOutput {
        run_command(self.command(program).args(args))
    }

    /// Like [`SystemdSandbox::run`] but never panics (for `Drop` paths).
    fn try_run(&self, program: &str, args: &[&str]) -> Option<CmdOutput> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        Some(CmdOutput {
            status: status_code(out.status),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `sh -c script` inside the sandbox.
    #[track_caller]
    pub fn sh(&self, script: &str) -> CmdOutput {
        self.run("sh", &["-c", script])
    }

    /// Runs `systemctl <args>` inside the sandbox (talks to the sandbox's
    /// systemd).
    #[track_caller]
    pub fn systemctl(&self, args: &[&str]) -> CmdOutput {
        self.run("systemctl", args)
    }

    /// Runs `nft <args>` inside the sandbox's network namespace. As with
    /// [`super::NetNs::nft`], no shell is involved.
    #[track_caller]
    pub fn nft(&self, args: &[&str]) -> CmdOutput {
        self.run("nft", args)
    }

    /// Runs `nft -f -` inside the sandbox with `script` on stdin.
    #[track_caller]
    pub fn nft_script(&self, script: &str) -> CmdOutput {
        run_command_with_input(self.command("nft").args(["-f", "-"]), script)
    }

    /// Elements of a set in the sandbox's ruleset, exactly like
    /// [`super::NetNs::set_elements`] (same parser): `"192.0.2.1"`,
    /// `"10.0.0.0/24"`, ranges `"a-b"`, concatenations `"a . b"`. Empty if the
    /// table or set does not exist. `table` is a bare name (family `inet`) or
    /// `"<family> <name>"`.
    #[track_caller]
    pub fn set_elements(&self, table: &str, set: &str) -> Vec<String> {
        self.set_elements_with_expiry(table, set)
            .into_iter()
            .map(|(elem, _)| elem)
            .collect()
    }

    /// Like [`SystemdSandbox::set_elements`], with each element's remaining
    /// kernel timeout in seconds (see [`super::NetNs::set_elements_with_expiry`]).
    #[track_caller]
    pub fn set_elements_with_expiry(&self, table: &str, set: &str) -> Vec<(String, Option<u64>)> {
        super::list_set_elements(|args| self.nft(args), table, set)
    }

    /// Writes `contents` to `path` (absolute, as seen inside the sandbox),
    /// creating missing parent directories, and sets its permission bits to
    /// `mode` (e.g. `0o644`). Runs `sh -c 'mkdir -p; cat >; chmod'` inside, so
    /// symlinks resolve inside the sandbox and the file lands in the overlay,
    /// never on the host. Panics on failure.
    #[track_caller]
    pub fn write_file(&self, path: &str, contents: &str, mode: u32) {
        assert!(
            path.starts_with('/'),
            "write_file: {path:?} is not absolute"
        );
        let mode = format!("{mode:o}");
        run_command_with_input(
            self.command("sh").args([
                "-c",
                r#"set -e; mkdir -p -- "$(dirname -- "$1")"; cat > "$1"; chmod -- "$2" "$1""#,
                "sh",
                path,
                &mode,
            ]),
            contents,
        )
        .expect_ok(&format!("sandbox: writing {path}"));
    }

    /// Contents of `path` inside the sandbox (lossy UTF-8), or `None` if it
    /// cannot be read (missing, a directory, ...).
    #[track_caller]
    pub fn read_file(&self, path: &str) -> Option<String> {
        let out = self.run("cat", &["--", path]);
        out.ok().then_some(out.stdout)
    }

    /// Starts nftables, writes `config` (if any) to /etc/orch/orch.toml,
    /// copies the built orch to [`ORCH_IN_SANDBOX`], runs `orch
    /// install-units` and `systemctl enable --now orch.service`, as an admin
    /// would. Panics if a step fails.
    #[track_caller]
    pub fn install_and_start_orch(&self, config: Option<&str>) {
        self.systemctl(&["start", "nftables.service"])
            .expect_ok("start nftables");
        if let Some(config) = config {
            self.write_file("/etc/orch/orch.toml", config, 0o644);
        }
        let built = super::orch_bin();
        let built = built.to_str().expect("utf-8 path");
        self.run("install", &["-m", "0755", built, ORCH_IN_SANDBOX])
            .expect_ok("copy orch into the sandbox");
        self.run(ORCH_IN_SANDBOX, &["install-units"])
            .expect_ok("orch install-units");
        self.systemctl(&["enable", "--now", "orch.service"])
            .expect_ok("enable --now orch");
    }

    /// Waits until orch's journal jails follow the journal (`orch status`).
    pub fn wait_for_journal_jails(&self) {
        super::wait_until(
            Duration::from_secs(10),
            "the jail to follow the journal",
            || {
                let status = self.run(ORCH_IN_SANDBOX, &["status"]);
                status.ok() && status.stdout.contains("following the journal")
            },
        );
    }

    /// Runs `busctl <args>` inside the sandbox, i.e. on the sandbox's own
    /// system bus (`/run/dbus/system_bus_socket`, served by its dbus.service).
    #[track_caller]
    pub fn busctl(&self, args: &[&str]) -> CmdOutput {
        self.run("busctl", args)
    }

    /// The sandbox's journal for `unit` (`journalctl -u <unit>` of the
    /// current boot, after `journalctl --sync`), for diagnostics. Errors are
    /// returned as text rather than panicking.
    #[track_caller]
    pub fn journal(&self, unit: &str) -> String {
        let _ = self.run("journalctl", &["--sync"]);
        let out = self.run(
            "journalctl",
            &["--no-pager", "-b", "-o", "short-monotonic", "-u", unit],
        );
        if out.ok() {
            out.stdout
        } else {
            format!("journalctl -u {unit} failed:\n{out}")
        }
    }

    /// Powers the sandbox off: `systemctl poweroff` inside, wait up to
    /// [`SHUTDOWN_TIMEOUT`] for systemd to exit, then SIGKILL it; reap,
    /// remove the sandbox's cgroups and temp dir.
    pub fn shutdown(mut self) {
        self.teardown();
    }

    /// Idempotent cleanup shared by [`SystemdSandbox::shutdown`] and `Drop`.
    fn teardown(&mut self) {
        if let Some(mut unshare) = self.unshare.take() {
            let mut exited = false;
            if self.pid != 0
                && fs::read_to_string(format!("/proc/{}/comm", self.pid))
                    .is_ok_and(|comm| comm.trim_end() == "systemd")
            {
                let _ = self.try_run("timeout", &["5", "systemctl", "poweroff"]);
                exited = poll_until(SHUTDOWN_TIMEOUT, || {
                    matches!(unshare.try_wait(), Ok(Some(_)))
                });
                if !exited {
                    eprintln!(
                        "SystemdSandbox: systemd (pid {}) did not power off within \
                         {SHUTDOWN_TIMEOUT:?}; killing it",
                        self.pid
                    );
                }
            }
            if !exited {
                // Only while systemd is still unshare's (unreaped) child can
                // its pid not have been reused.
                if self.pid != 0 && child_of(unshare.id()) == Some(self.pid) {
                    // SAFETY: plain syscall. Killing PID 1 of the namespace
                    // kills every process in it.
                    unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
                }
                kill_and_reap(&mut unshare);
            }
        }
        self.watchdog = None;
        if self.cgroup.exists() {
            poll_until(Duration::from_secs(5), || !cgroup_populated(&self.cgroup));
            let mut result = Ok(());
            poll_until(Duration::from_secs(5), || {
                result = remove_cgroup_tree(&self.cgroup);
                result.is_ok()
            });
            if let Err(e) = result {
                eprintln!(
                    "SystemdSandbox: cannot remove cgroup {}: {e}",
                    self.cgroup.display()
                );
            }
        }
        self.console.close();
    }
}

impl Drop for SystemdSandbox {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.diagnostics_reported {
            self.diagnostics_reported = true;
            eprintln!(
                "--- SystemdSandbox (pid {}) diagnostics ---\n{}",
                self.pid,
                self.diagnostics()
            );
        }
        self.teardown();
    }
}

/// The first child of `pid` (from `/proc/<pid>/task/<pid>/children`).
fn child_of(pid: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// A file's contents as lossy UTF-8; empty if unreadable.
fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
