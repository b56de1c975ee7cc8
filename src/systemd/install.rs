//! `orch install-units` and `orch uninstall-units`: put orch's unit files,
//! drop-ins, D-Bus policy and (optionally) fail2ban integration in place,
//! and take exactly those away again.
//!
//! The templates live in `units/` and are compiled in; `@BIN@` becomes the
//! orch binary's path. Every file is written atomically (temporary file,
//! fsync, rename) and only when its contents differ, so a second run changes
//! nothing. What was written is recorded in a manifest,
//! `/var/lib/orch/installed-units`: the path and SHA-256 of each file and the
//! directories that had to be created. Uninstalling removes a file only while
//! it still has that hash (an edited file is kept unless `--force`), then
//! the directories it created if they are empty, then the manifest. It never
//! touches anything else, in particular not the ban store next to the
//! manifest.
//!
//! Everything happens below `--root` (default `/`). Only with the real root
//! are `systemctl daemon-reload` and the bus's `ReloadConfig` run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A file orch installs, from its template in `units/`. `install-units`
/// and the Debian package (`orch gen-assets`, `src/packaging.rs`) both
/// render these with [`Template::render`], so the two install the same text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `orch.service`
    OrchService,
    /// `nftables.service.d/orch.conf`
    NftablesDropin,
    /// The bus policy `org.orch.Orch1.conf`
    DbusPolicy,
    /// The polkit actions `org.orch.Orch1.policy`
    PolkitActions,
    /// The polkit rule `50-orch.rules`
    PolkitRules,
    /// `fail2ban.service.d/orch.conf`
    Fail2banDropin,
    /// The fail2ban action `action.d/orch.conf`
    Fail2banAction,
    /// The sysusers.d(5) line for an optional dedicated user `orch`
    /// (installed by the package only).
    Sysusers,
}

impl Template {
    /// The template's text, compiled in from `units/`.
    fn source(self) -> &'static str {
        match self {
            Template::OrchService => include_str!("../../units/orch.service.in"),
            Template::NftablesDropin => include_str!("../../units/orch-nftables.conf.in"),
            Template::DbusPolicy => include_str!("../../units/org.orch.Orch1.conf"),
            Template::PolkitActions => include_str!("../../units/org.orch.Orch1.policy"),
            Template::PolkitRules => include_str!("../../units/50-orch.rules"),
            Template::Fail2banDropin => include_str!("../../units/fail2ban-orch.conf.in"),
            Template::Fail2banAction => include_str!("../../units/fail2ban-action-orch.conf.in"),
            Template::Sysusers => include_str!("../../units/orch.sysusers.conf"),
        }
    }

    /// The file's contents for the orch binary at `bin` (an absolute path
    /// checked by [`check_bin_path`]).
    pub fn render(self, bin: &str) -> String {
        self.source().replace(BIN_PLACEHOLDER, bin)
    }
}

/// The orch service unit.
pub const ORCH_SERVICE: &str = "/etc/systemd/system/orch.service";
/// Drop-in that makes nftables.service run `orch sync` after start and reload.
pub const NFTABLES_DROPIN: &str = "/etc/systemd/system/nftables.service.d/orch.conf";
/// The bus policy for org.orch.Orch1 (the admin's config directory; packages
/// use /usr/share/dbus-1/system.d).
pub const DBUS_POLICY: &str = "/etc/dbus-1/system.d/org.orch.Orch1.conf";
/// orch's polkit actions (polkitd reads actions only from /usr/share).
pub const POLKIT_ACTIONS: &str = "/usr/share/polkit-1/actions/org.orch.Orch1.policy";
/// The polkit rule that lets the group orch-admin ban and unban.
pub const POLKIT_RULES: &str = "/etc/polkit-1/rules.d/50-orch.rules";
/// Drop-in binding fail2ban.service to nftables.service (`--bind-fail2ban`).
pub const FAIL2BAN_DROPIN: &str = "/etc/systemd/system/fail2ban.service.d/orch.conf";
/// The fail2ban action `orch` (`--bind-fail2ban`).
pub const FAIL2BAN_ACTION: &str = "/etc/fail2ban/action.d/orch.conf";
/// What install wrote and created; read by uninstall.
pub const MANIFEST: &str = "/var/lib/orch/installed-units";

/// orch's state directory (StateDirectory=orch); holds the manifest and the
/// ban store.
const STATE_DIR: &str = "/var/lib/orch";
/// Every file install may write; uninstall removes nothing else.
const KNOWN_FILES: [&str; 7] = [
    ORCH_SERVICE,
    NFTABLES_DROPIN,
    DBUS_POLICY,
    POLKIT_ACTIONS,
    POLKIT_RULES,
    FAIL2BAN_DROPIN,
    FAIL2BAN_ACTION,
];
const BIN_PLACEHOLDER: &str = "@BIN@";
/// Suffix of the copy kept when install replaces a file it did not write.
const BACKUP_SUFFIX: &str = ".orch-old";
/// Present when systemd is the running init (sd_booted(3)).
const SYSTEMD_RUNNING_MARKER: &str = "/run/systemd/system";
/// Directories where ProtectHome= or PrivateTmp= hide the binary from
/// orch.service.
const HIDDEN_FROM_SERVICE: [&str; 5] = ["/home", "/root", "/run/user", "/tmp", "/var/tmp"];
const BUS_TIMEOUT: Duration = Duration::from_secs(5);
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(120);

/// `long_about` of `orch install-units`.
pub const INSTALL_LONG_ABOUT: &str = "\
Install orch's systemd units, pointing at this orch binary (or --bin):
  /etc/systemd/system/orch.service                    the daemon (Type=notify, watchdog, hardened)
  /etc/systemd/system/nftables.service.d/orch.conf    `orch sync` after nftables.service starts or reloads
  /etc/dbus-1/system.d/org.orch.Orch1.conf            the bus policy for org.orch.Orch1
  /usr/share/polkit-1/actions/org.orch.Orch1.policy   polkit actions: ban, unban, allow, manage
  /etc/polkit-1/rules.d/50-orch.rules                 group orch-admin may ban and unban (polkit)
and with --bind-fail2ban also
  /etc/systemd/system/fail2ban.service.d/orch.conf    fail2ban follows nftables.service, starts after orch
  /etc/fail2ban/action.d/orch.conf                    the fail2ban action `orch`, which bans through orch
then run `systemctl daemon-reload` and ask the system bus to reload its configuration.

A file whose contents are already right is left alone (reported as unchanged), so running it again \
changes nothing. A file that install-units did not write, or that was edited since, is replaced and \
its old contents kept next to it as FILE.orch-old. What was written is recorded, with a SHA-256 of \
each file, in /var/lib/orch/installed-units, which `orch uninstall-units` reads. Enabling and \
starting orch.service is left to you; the commands are printed at the end.";

/// `after_help` of `orch install-units`.
pub const INSTALL_AFTER_HELP: &str = "\
Examples:
  sudo orch install-units --dry-run
  sudo orch install-units --bin /usr/local/bin/orch && sudo systemctl enable --now orch.service
  orch install-units --root /srv/image --bin /usr/bin/orch --bind-fail2ban";

/// `long_about` of `orch uninstall-units`.
pub const UNINSTALL_LONG_ABOUT: &str = "\
Remove the files `orch install-units` wrote, as listed in /var/lib/orch/installed-units. A file \
edited since it was installed is kept (and listed) unless --force. Directories install-units \
created are removed when empty; nothing else is touched, in particular not orch's ban store in \
/var/lib/orch. Then run `systemctl daemon-reload` and reload the system bus.

orch.service must be disabled and stopped first (`systemctl disable --now orch.service`): once its \
unit file is gone, systemctl can no longer remove its links.";

/// Arguments of `orch install-units`.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// Install below DIR instead of / (for images and packages). Nothing is
    /// reloaded then; the units still run the binary at its path on the
    /// target system (see --bin)
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Print each file's path and full contents, and what would be run;
    /// write nothing and run nothing
    #[arg(long)]
    pub dry_run: bool,

    /// The orch binary the units run, as an absolute path on the target
    /// system [default: this binary, canonicalised]
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,

    /// Also install a fail2ban.service drop-in (Requires= and PartOf=
    /// nftables.service, ordered after orch.service) and the fail2ban action
    /// "orch" (/etc/fail2ban/action.d/orch.conf), which bans through orch
    #[arg(long)]
    pub bind_fail2ban: bool,

    /// Do not run `systemctl daemon-reload` and do not ask the system bus to
    /// reload its configuration
    #[arg(long)]
    pub no_reload: bool,
}

/// Arguments of `orch uninstall-units`.
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    /// Uninstall from below DIR instead of / (where `install-units --root DIR`
    /// installed). Nothing is reloaded then
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Print what would be removed and kept; remove nothing and run nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Do not run `systemctl daemon-reload` and do not ask the system bus to
    /// reload its configuration
    #[arg(long)]
    pub no_reload: bool,

    /// Also remove files that were changed since install-units wrote them
    /// (otherwise they are kept, and listed)
    #[arg(long)]
    pub force: bool,
}

/// What a command did, one line per item, in order, for stdout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub lines: Vec<String>,
}

impl Report {
    fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    fn warn(&mut self, message: impl fmt::Display) {
        self.lines.push(format!("warning: {message}"));
    }

    fn note(&mut self, message: impl fmt::Display) {
        self.lines.push(format!("note: {message}"));
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Why install-units or uninstall-units stopped. Paths are the real ones on
/// disk (below --root).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("--bin {}: must be an absolute path", .0.display())]
    RelativeBin(PathBuf),
    #[error("--bin {}: {reason}", path.display())]
    UnusableBin { path: PathBuf, reason: String },
    #[error("cannot tell where the orch binary is ({0}); pass --bin PATH")]
    CurrentExe(io::Error),
    #[error("--root {}: {source}", path.display())]
    Root { path: PathBuf, source: io::Error },
    #[error("--root {}: not a directory", .0.display())]
    RootNotDir(PathBuf),
    #[error("changing files below {} needs root; run as root, or use --dry-run or --root DIR", .0.display())]
    NotRoot(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{} exists but is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Manifest {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("orch.service is still enabled ({links}); run `{command}` first")]
    StillEnabled { links: String, command: String },
    #[error("orch.service is running; run `systemctl disable --now orch.service` first")]
    StillRunning,
}

/// `orch install-units`: writes the units (see the module documentation),
/// then reloads systemd and the bus when installing to the real root.
pub async fn install(args: &InstallArgs) -> Result<Report, InstallError> {
    let target = Target::open(&args.root)?;
    let bin = resolve_bin(args.bin.as_deref())?;
    let mut report = Report::default();
    check_bin(&target, &bin, &mut report);
    if args.bind_fail2ban && !target.path("/etc/fail2ban").is_dir() {
        report.warn(format!(
            "{} does not exist: is fail2ban installed?",
            target.shown("/etc/fail2ban")
        ));
    }
    let planned = plan(&bin, args.bind_fail2ban);
    let previous = Manifest::load(&target)?;

    if args.dry_run {
        dry_run_install(&target, &planned, previous.as_ref(), args, &mut report)?;
        return Ok(report);
    }
    target.require_privileges()?;

    let mut manifest = previous.clone().unwrap_or_default();
    // Record whatever got written even if a later file fails, so that
    // uninstall-units can still take it away.
    let written = write_planned(
        &target,
        &planned,
        previous.as_ref(),
        &mut manifest,
        &mut report,
    );
    if written.is_ok() {
        carry_over(&target, &planned, &mut manifest, &mut report);
    }
    let saved = save_manifest(&target, &mut manifest, &mut report);
    written?;
    saved?;

    let reload = target.is_host && !args.no_reload;
    if reload {
        reload_systemd(&mut report).await;
        reload_bus(&mut report).await;
    } else {
        report.note(not_reloaded(&target));
    }
    next_steps_install(&target, args, reload, &mut report);
    Ok(report)
}

/// `orch uninstall-units`: removes what install-units recorded in its
/// manifest (see the module documentation).
pub async fn uninstall(args: &UninstallArgs) -> Result<Report, InstallError> {
    let target = Target::open(&args.root)?;
    let mut report = Report::default();
    let Some(manifest) = Manifest::load(&target)? else {
        report.line(format!(
            "nothing to uninstall: {} does not exist",
            target.shown(MANIFEST)
        ));
        return Ok(report);
    };
    check_not_enabled(&target)?;
    if target.is_host {
        check_not_running().await?;
    }
    if !args.dry_run {
        target.require_privileges()?;
    }
    let (verb_remove, verb_keep) = if args.dry_run {
        ("would remove", "would keep")
    } else {
        ("removed", "kept")
    };

    let mut kept = Manifest::default();
    let mut removed = BTreeSet::new();
    // In install order, then anything unknown (to be reported).
    let mut entries: Vec<(&String, &String)> = manifest.files.iter().collect();
    entries.sort_by_key(|(path, _)| {
        KNOWN_FILES
            .iter()
            .position(|known| known == path)
            .unwrap_or(usize::MAX)
    });
    for (path, hash) in entries {
        if !KNOWN_FILES.contains(&path.as_str()) {
            report.warn(format!(
                "ignored {path} in {}: not a file install-units writes",
                target.shown(MANIFEST)
            ));
            continue;
        }
        let full = target.path(path);
        let Some(content) = read_optional(&full)? else {
            report.line(format!("already gone {}", full.display()));
            continue;
        };
        let unchanged = sha256_hex(&content) == *hash;
        if unchanged || args.force {
            if !args.dry_run {
                remove_file(&full)?;
            }
            let why = if unchanged {
                ""
            } else {
                " (changed since install-units wrote it; --force)"
            };
            report.line(format!("{verb_remove} {}{why}", full.display()));
            removed.insert(path.clone());
        } else {
            report.line(format!(
                "{verb_keep} {}: changed since install-units wrote it (remove it yourself, or use --force)",
                full.display()
            ));
            kept.files.insert(path.clone(), hash.clone());
        }
    }

    let manifest_path = target.path(MANIFEST);
    if kept.files.is_empty() {
        if !args.dry_run {
            remove_file(&manifest_path)?;
        }
        report.line(format!("{verb_remove} {}", manifest_path.display()));
    } else {
        kept.dirs = manifest.dirs.clone();
        if !args.dry_run {
            write_manifest_file(&target, &kept)?;
        }
        report.line(format!(
            "{verb_keep} {}: it lists the files kept, for a later uninstall-units --force",
            manifest_path.display()
        ));
    }

    // Deepest first, so a parent is empty by the time it is tried.
    let mut dirs: Vec<&String> = manifest.dirs.iter().collect();
    dirs.sort_by_key(|dir| std::cmp::Reverse(dir.matches('/').count()));
    for dir in dirs {
        if !known_dirs().contains(dir.as_str()) {
            continue;
        }
        let full = target.path(dir);
        if args.dry_run {
            if full.is_dir() {
                report.line(format!(
                    "would remove directory {} if it is then empty",
                    full.display()
                ));
            }
            continue;
        }
        match fs::remove_dir(&full) {
            Ok(()) => report.line(format!("removed directory {}", full.display())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) if err.kind() == io::ErrorKind::DirectoryNotEmpty => {
                report.line(format!("kept directory {} (not empty)", full.display()));
            }
            Err(source) => return Err(InstallError::Remove { path: full, source }),
        }
    }

    if args.dry_run {
        if target.is_host && !args.no_reload {
            report.line("would run: systemctl daemon-reload");
            report.line("would ask the system bus to reload its configuration");
        }
        return Ok(report);
    }
    if target.is_host && !args.no_reload {
        reload_systemd(&mut report).await;
        if removed.contains(DBUS_POLICY) {
            reload_bus(&mut report).await;
        }
    } else if !removed.is_empty() {
        report.note(not_reloaded(&target));
    }
    if removed.contains(FAIL2BAN_DROPIN) {
        report.line("next:");
        report.line(format!(
            "  systemctl {}reenable fail2ban.service   # drops its nftables.service.wants link",
            target.systemctl_root_option()
        ));
    }
    if removed.contains(FAIL2BAN_ACTION) {
        report.note(
            "jails with banaction = orch or action = orch need another action before fail2ban restarts",
        );
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// The target tree

/// The tree being installed into: `--root`, canonicalised.
struct Target {
    root: PathBuf,
    /// The root is `/`: the running system, which may be reloaded.
    is_host: bool,
}

impl Target {
    fn open(root: &Path) -> Result<Self, InstallError> {
        let root = fs::canonicalize(root).map_err(|source| InstallError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        if !root.is_dir() {
            return Err(InstallError::RootNotDir(root));
        }
        let is_host = root == Path::new("/");
        Ok(Target { root, is_host })
    }

    /// Where the target's absolute path `abs` is on this machine.
    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    fn shown(&self, abs: &str) -> String {
        self.path(abs).display().to_string()
    }

    fn systemctl_root_option(&self) -> String {
        if self.is_host {
            String::new()
        } else {
            format!("--root={} ", self.root.display())
        }
    }

    /// Writing below the real root needs root; fail early with a clear
    /// message rather than at the first EACCES.
    fn require_privileges(&self) -> Result<(), InstallError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if self.is_host && euid != 0 {
            return Err(InstallError::NotRoot(self.root.clone()));
        }
        Ok(())
    }
}

/// Every directory on the way to a file install writes, and the state
/// directory: the only directories uninstall may remove (when empty and
/// created by install).
fn known_dirs() -> BTreeSet<&'static str> {
    KNOWN_FILES
        .iter()
        .chain([MANIFEST].iter())
        .flat_map(|file| Path::new(file).ancestors().skip(1))
        .filter(|dir| *dir != Path::new("/"))
        .filter_map(Path::to_str)
        .collect()
}

// ---------------------------------------------------------------------------
// The binary

/// `--bin`, or this executable. Must be absolute and free of characters that
/// unit files (`%` specifiers, quoting) or fail2ban's shell commands would
/// interpret.
fn resolve_bin(bin: Option<&Path>) -> Result<String, InstallError> {
    let path = match bin {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .and_then(fs::canonicalize)
            .map_err(InstallError::CurrentExe)?,
    };
    check_bin_path(&path)
}

/// `path` as text for [`Template::render`]: absolute, and free of
/// characters that unit files or fail2ban's shell commands would interpret.
pub fn check_bin_path(path: &Path) -> Result<String, InstallError> {
    if !path.is_absolute() {
        return Err(InstallError::RelativeBin(path.to_path_buf()));
    }
    let unusable = |reason: String| InstallError::UnusableBin {
        path: path.to_path_buf(),
        reason,
    };
    let text = path
        .to_str()
        .ok_or_else(|| unusable("not valid UTF-8".into()))?;
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+@,:".contains(*c)))
    {
        return Err(unusable(format!(
            "contains {bad:?}; unit files and fail2ban's shell commands need a path of letters, digits and / . _ - + @ , :"
        )));
    }
    if text.ends_with('/') {
        return Err(unusable("names a directory".into()));
    }
    Ok(text.to_owned())
}

/// Warns about a binary the installed service could not run.
fn check_bin(target: &Target, bin: &str, report: &mut Report) {
    let on_disk = target.path(bin);
    match fs::metadata(&on_disk) {
        Ok(meta) if meta.is_file() && meta.mode() & 0o111 != 0 => {}
        Ok(_) => report.warn(format!(
            "{} is not an executable file; orch.service will fail to start",
            on_disk.display()
        )),
        Err(_) => report.warn(format!(
            "{} does not exist; orch.service will fail to start until it does",
            on_disk.display()
        )),
    }
    if let Some(dir) = HIDDEN_FROM_SERVICE
        .iter()
        .find(|dir| Path::new(bin).starts_with(dir))
    {
        report.warn(format!(
            "{bin} is below {dir}, which ProtectHome=/PrivateTmp= hide from orch.service: it will \
fail to start. Copy the binary to /usr/local/bin and pass --bin /usr/local/bin/orch"
        ));
    }
}

// ---------------------------------------------------------------------------
// Planning and writing

/// One file to install.
struct Planned {
    /// Absolute path on the target system.
    path: &'static str,
    content: String,
}

fn plan(bin: &str, bind_fail2ban: bool) -> Vec<Planned> {
    let mut files = vec![
        (ORCH_SERVICE, Template::OrchService),
        (NFTABLES_DROPIN, Template::NftablesDropin),
        (DBUS_POLICY, Template::DbusPolicy),
        (POLKIT_ACTIONS, Template::PolkitActions),
        (POLKIT_RULES, Template::PolkitRules),
    ];
    if bind_fail2ban {
        files.push((FAIL2BAN_DROPIN, Template::Fail2banDropin));
        files.push((FAIL2BAN_ACTION, Template::Fail2banAction));
    }
    files
        .into_iter()
        .map(|(path, template)| Planned {
            path,
            content: template.render(bin),
        })
        .collect()
}

/// What is on disk where a planned file goes.
enum Existing {
    Missing,
    /// Same contents as planned.
    Same,
    /// Written by an earlier install-units and not edited since.
    Ours,
    /// Edited since install-units wrote it, or never written by it.
    Foreign(Vec<u8>),
}

fn existing(
    target: &Target,
    planned: &Planned,
    previous: Option<&Manifest>,
) -> Result<Existing, InstallError> {
    let Some(content) = read_optional(&target.path(planned.path))? else {
        return Ok(Existing::Missing);
    };
    if content == planned.content.as_bytes() {
        return Ok(Existing::Same);
    }
    let recorded = previous.and_then(|m| m.files.get(planned.path));
    if recorded == Some(&sha256_hex(&content)) {
        Ok(Existing::Ours)
    } else {
        Ok(Existing::Foreign(content))
    }
}

fn write_planned(
    target: &Target,
    planned: &[Planned],
    previous: Option<&Manifest>,
    manifest: &mut Manifest,
    report: &mut Report,
) -> Result<(), InstallError> {
    for file in planned {
        let full = target.path(file.path);
        match existing(target, file, previous)? {
            Existing::Same => report.line(format!("unchanged {}", full.display())),
            Existing::Missing | Existing::Ours => {
                ensure_parent_dirs(target, file.path, &mut manifest.dirs)?;
                write_atomic(&full, file.content.as_bytes(), 0o644)?;
                report.line(format!("wrote {}", full.display()));
            }
            Existing::Foreign(old) => {
                let backup = backup_path(&full);
                let mode = fs::metadata(&full)
                    .map(|meta| meta.permissions().mode() & 0o7777)
                    .unwrap_or(0o644);
                write_atomic(&backup, &old, mode)?;
                write_atomic(&full, file.content.as_bytes(), 0o644)?;
                report.line(format!(
                    "wrote {} (replacing a version install-units did not write; the old one is now {})",
                    full.display(),
                    backup.display()
                ));
            }
        }
        manifest
            .files
            .insert(file.path.to_owned(), sha256_hex(file.content.as_bytes()));
    }
    Ok(())
}

/// Files an earlier run installed that this run does not (e.g. the fail2ban
/// files without --bind-fail2ban) stay installed and recorded.
fn carry_over(target: &Target, planned: &[Planned], manifest: &mut Manifest, report: &mut Report) {
    let planned: BTreeSet<&str> = planned.iter().map(|p| p.path).collect();
    manifest.files.retain(|path, _| {
        if planned.contains(path.as_str()) {
            return true;
        }
        let full = target.path(path);
        let present = full.exists();
        if present {
            report.line(format!(
                "kept {} (installed by an earlier install-units; uninstall-units removes it)",
                full.display()
            ));
        }
        present
    });
    manifest.dirs.retain(|dir| target.path(dir).is_dir());
}

fn save_manifest(
    target: &Target,
    manifest: &mut Manifest,
    report: &mut Report,
) -> Result<(), InstallError> {
    if manifest.files.is_empty() {
        return Ok(());
    }
    ensure_parent_dirs(target, MANIFEST, &mut manifest.dirs)?;
    let full = target.path(MANIFEST);
    if read_optional(&full)?.as_deref() == Some(manifest.render().as_bytes()) {
        report.line(format!("unchanged {}", full.display()));
    } else {
        write_manifest_file(target, manifest)?;
        report.line(format!("wrote {}", full.display()));
    }
    Ok(())
}

fn write_manifest_file(target: &Target, manifest: &Manifest) -> Result<(), InstallError> {
    write_atomic(&target.path(MANIFEST), manifest.render().as_bytes(), 0o600)
}

fn dry_run_install(
    target: &Target,
    planned: &[Planned],
    previous: Option<&Manifest>,
    args: &InstallArgs,
    report: &mut Report,
) -> Result<(), InstallError> {
    for file in planned {
        let full = target.path(file.path);
        let status = match existing(target, file, previous)? {
            Existing::Same => "unchanged".to_owned(),
            Existing::Missing | Existing::Ours => "would write".to_owned(),
            Existing::Foreign(_) => format!(
                "would write; the version there now, not written by install-units, would be kept as {}",
                backup_path(&full).display()
            ),
        };
        report.line(format!("==> {} ({status}) <==", full.display()));
        report.lines.extend(file.content.lines().map(str::to_owned));
        report.line("");
    }
    report.line(format!(
        "would record the files in {}",
        target.shown(MANIFEST)
    ));
    if target.is_host && !args.no_reload {
        report.line("would run: systemctl daemon-reload");
        report.line("would ask the system bus to reload its configuration");
    }
    Ok(())
}

fn next_steps_install(target: &Target, args: &InstallArgs, reloaded: bool, report: &mut Report) {
    report.line("next:");
    if target.is_host && !reloaded {
        report.line("  systemctl daemon-reload");
    }
    if target.is_host {
        report.line("  systemctl enable --now orch.service");
    } else {
        report.line(format!(
            "  systemctl {}enable orch.service",
            target.systemctl_root_option()
        ));
    }
    if args.bind_fail2ban {
        report.line(format!(
            "  systemctl {}reenable fail2ban.service   # adds the nftables.service.wants link",
            target.systemctl_root_option()
        ));
        report.line(
            "  set banaction = orch and banaction_allports = orch in /etc/fail2ban/jail.local, \
then: systemctl restart fail2ban.service",
        );
    }
    report.note(
        "nftables.service runs `orch sync` after each start and reload once systemd has \
reloaded its units; it need not be restarted",
    );
}

// ---------------------------------------------------------------------------
// Uninstall checks

/// orch.service must be disabled before its unit file goes: `systemctl
/// disable` cannot find the links any more once the file is gone.
fn check_not_enabled(target: &Target) -> Result<(), InstallError> {
    let dir = target.path("/etc/systemd/system");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(InstallError::Read { path: dir, source }),
    };
    let mut links = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| InstallError::Read {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if [".wants", ".requires", ".upholds"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        {
            let link = entry.path().join("orch.service");
            if fs::symlink_metadata(&link).is_ok() {
                links.push(link.display().to_string());
            }
        }
    }
    if links.is_empty() {
        return Ok(());
    }
    links.sort();
    let command = if target.is_host {
        "systemctl disable --now orch.service".to_owned()
    } else {
        format!(
            "systemctl {}disable orch.service",
            target.systemctl_root_option()
        )
    };
    Err(InstallError::StillEnabled {
        links: links.join(", "),
        command,
    })
}

async fn check_not_running() -> Result<(), InstallError> {
    if !Path::new(SYSTEMD_RUNNING_MARKER).is_dir() {
        return Ok(());
    }
    match run_systemctl(&["is-active", "--quiet", "orch.service"]).await {
        Ok(()) => Err(InstallError::StillRunning),
        Err(_) => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Reloading

/// Why nothing was reloaded (the caller knows it was --no-reload or --root).
fn not_reloaded(target: &Target) -> String {
    let why = if target.is_host {
        "--no-reload".to_owned()
    } else {
        format!("--root is {}", target.root.display())
    };
    format!("{why}: did not run systemctl daemon-reload or reload the system bus")
}

async fn reload_systemd(report: &mut Report) {
    if !Path::new(SYSTEMD_RUNNING_MARKER).is_dir() {
        report.note(format!(
            "systemd is not running here (no {SYSTEMD_RUNNING_MARKER}): skipped systemctl daemon-reload"
        ));
        return;
    }
    match run_systemctl(&["daemon-reload"]).await {
        Ok(()) => report.line("ran systemctl daemon-reload"),
        Err(err) => report.warn(format!(
            "systemctl daemon-reload failed: {err}; run it yourself"
        )),
    }
}

/// Runs systemctl with `args`; Err carries its stderr or why it did not run.
async fn run_systemctl(args: &[&str]) -> Result<(), String> {
    let child = tokio::process::Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(SYSTEMCTL_TIMEOUT, child).await {
        Err(_) => Err(format!("no answer within {}s", SYSTEMCTL_TIMEOUT.as_secs())),
        Ok(Err(err)) => Err(format!("cannot run systemctl: {err}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            Err(if stderr.is_empty() {
                output.status.to_string()
            } else {
                stderr
            })
        }
    }
}

/// Asks the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured) to re-read its
/// configuration, so the policy for org.orch.Orch1 applies at once. A bus
/// that cannot be reached only earns a warning: dbus-daemon also notices new
/// policy files on its own.
async fn reload_bus(report: &mut Report) {
    let call = async {
        let connection = zbus::Connection::system().await?;
        let proxy = zbus::fdo::DBusProxy::new(&connection).await?;
        proxy.reload_config().await?;
        Ok::<(), zbus::Error>(())
    };
    match tokio::time::timeout(BUS_TIMEOUT, call).await {
        Ok(Ok(())) => report.line("asked the system bus to reload its configuration"),
        Ok(Err(err)) => report.warn(format!(
            "could not ask the system bus to reload its configuration ({err}); \
dbus-daemon picks up policy files at its next reload"
        )),
        Err(_) => report.warn(format!(
            "the system bus did not answer ReloadConfig within {}s; \
dbus-daemon picks up policy files at its next reload",
            BUS_TIMEOUT.as_secs()
        )),
    }
}

// ---------------------------------------------------------------------------
// The manifest

/// Files written (target path → SHA-256 of the contents written) and
/// directories created (target paths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Manifest {
    files: BTreeMap<String, String>,
    dirs: BTreeSet<String>,
}

impl Manifest {
    fn load(target: &Target) -> Result<Option<Manifest>, InstallError> {
        let path = target.path(MANIFEST);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let error = |line: usize, message: &str| InstallError::Manifest {
            path: path.clone(),
            line,
            message: message.to_owned(),
        };
        let text = String::from_utf8(bytes).map_err(|_| error(0, "not valid UTF-8"))?;
        Manifest::parse(&text)
            .map(Some)
            .map_err(|(line, message)| error(line, message))
    }

    /// Lines `file <sha256> <path>` and `dir <path>`; `#` comments. Errors
    /// carry the 1-based line number.
    fn parse(text: &str) -> Result<Manifest, (usize, &'static str)> {
        let mut manifest = Manifest::default();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let absolute = |path: &str| {
                if path.starts_with('/') {
                    Ok(path.to_owned())
                } else {
                    Err((number, "path is not absolute"))
                }
            };
            match line.split_once(' ') {
                Some(("file", rest)) => {
                    let (hash, path) = rest
                        .split_once(' ')
                        .ok_or((number, "expected `file <sha256> <path>`"))?;
                    let hex = hash.len() == 64
                        && hash
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                    if !hex {
                        return Err((number, "not a SHA-256 in lowercase hex"));
                    }
                    manifest.files.insert(absolute(path)?, hash.to_owned());
                }
                Some(("dir", path)) => {
                    manifest.dirs.insert(absolute(path)?);
                }
                _ => return Err((number, "expected `file <sha256> <path>` or `dir <path>`")),
            }
        }
        Ok(manifest)
    }

    fn render(&self) -> String {
        let mut text = String::from(
            "# Written by `orch install-units`: the files it wrote, with the SHA-256 of\n\
             # what it wrote, and the directories it created. `orch uninstall-units`\n\
             # removes them (a file only while unchanged, a directory only while\n\
             # empty), then this file. Do not edit.\n",
        );
        for (path, hash) in &self.files {
            text.push_str(&format!("file {hash} {path}\n"));
        }
        for dir in &self.dirs {
            text.push_str(&format!("dir {dir}\n"));
        }
        text
    }
}

// ---------------------------------------------------------------------------
// File system helpers

/// The file's contents, or None when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn remove_file(path: &Path) -> Result<(), InstallError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(InstallError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(BACKUP_SUFFIX);
    PathBuf::from(name)
}

/// Creates the missing directories above the target path `file` (0755; the
/// state directory 0700, like StateDirectoryMode=), recording each in
/// `created` as a target path.
fn ensure_parent_dirs(
    target: &Target,
    file: &str,
    created: &mut BTreeSet<String>,
) -> Result<(), InstallError> {
    let Some(parent) = Path::new(file).parent() else {
        return Ok(());
    };
    let mut chain: Vec<&Path> = parent
        .ancestors()
        .filter(|dir| *dir != Path::new("/"))
        .collect();
    chain.reverse();
    for dir in chain {
        let Some(abs) = dir.to_str() else { continue };
        let full = target.path(abs);
        match fs::metadata(&full) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => return Err(InstallError::NotADirectory(full)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(InstallError::Read { path: full, source }),
        }
        let mode = if abs == STATE_DIR { 0o700 } else { 0o755 };
        let create_error = |source| InstallError::CreateDir {
            path: full.clone(),
            source,
        };
        match fs::create_dir(&full) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(create_error(source)),
        }
        // Explicitly, so that a tight umask cannot hide policy files from
        // dbus-daemon, which reads them after dropping root.
        fs::set_permissions(&full, fs::Permissions::from_mode(mode)).map_err(create_error)?;
        created.insert(abs.to_owned());
    }
    Ok(())
}

/// Replaces `path` with `content` atomically: a temporary file in the same
/// directory, written and fsynced, renamed over `path`, then the directory
/// fsynced.
fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), InstallError> {
    let write_error = |source| InstallError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.orch-tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(write_error)
}

// ---------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), for the manifest's content hashes.

const SHA256_K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

fn sha256_hex(data: &[u8]) -> String {
    let mut state: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());

    for block in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
        for (k, wi) in SHA256_K.iter().zip(w.iter()) {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(*wi);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (word, add) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *word = word.wrapping_add(add);
        }
    }
    state.iter().map(|word| format!("{word:08x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_known_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            sha256_hex(&[b'a'; 1_000_000]),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn manifest_round_trips_and_rejects_garbage() {
        let mut manifest = Manifest::default();
        manifest
            .files
            .insert(ORCH_SERVICE.to_owned(), sha256_hex(b"x"));
        manifest
            .dirs
            .insert("/etc/systemd/system/nftables.service.d".to_owned());
        let text = manifest.render();
        assert_eq!(Manifest::parse(&text), Ok(manifest));
        assert_eq!(Manifest::parse("file abc /x\n").unwrap_err().0, 1);
        assert_eq!(Manifest::parse("# c\n\ndir etc\n").unwrap_err().0, 3);
        assert!(Manifest::parse("bogus /x\n").is_err());
    }

    #[test]
    fn every_template_placeholder_is_filled() {
        for file in plan("/usr/local/bin/orch", true) {
            // A placeholder is @NAME@ with NAME in capitals.
            let leftover = file.content.split('@').skip(1).step_by(2).any(|name| {
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            });
            assert!(!leftover, "{} keeps a placeholder", file.path);
            let takes_bin =
                ![DBUS_POLICY, POLKIT_ACTIONS, POLKIT_RULES, FAIL2BAN_DROPIN].contains(&file.path);
            assert_eq!(
                file.content.contains("/usr/local/bin/orch"),
                takes_bin,
                "{}",
                file.path
            );
        }
    }

    #[test]
    fn bin_must_be_absolute_and_plain() {
        assert!(matches!(
            resolve_bin(Some(Path::new("target/orch"))),
            Err(InstallError::RelativeBin(_))
        ));
        assert!(matches!(
            resolve_bin(Some(Path::new("/opt/my orch/orch"))),
            Err(InstallError::UnusableBin { .. })
        ));
        assert!(matches!(
            resolve_bin(Some(Path::new("/opt/100%/orch"))),
            Err(InstallError::UnusableBin { .. })
        ));
        assert_eq!(
            resolve_bin(Some(Path::new("/usr/local/bin/orch"))).ok(),
            Some("/usr/local/bin/orch".to_owned())
        );
    }

    #[test]
    fn known_dirs_are_the_ancestors() {
        let dirs = known_dirs();
        for dir in [
            "/etc",
            "/etc/systemd/system/nftables.service.d",
            "/etc/dbus-1/system.d",
            "/etc/fail2ban/action.d",
            "/var/lib/orch",
        ] {
            assert!(dirs.contains(dir), "{dir}");
        }
        assert!(!dirs.contains("/"));
    }
}
