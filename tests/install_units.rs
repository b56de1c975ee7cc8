//! `orch install-units` / `orch uninstall-units`, through the library API,
//! always into a temporary --root (never the real /), with --no-reload.
//!
//! The systemd-analyze checks need systemd-analyze (Debian package
//! `systemd`); without it they say so on stderr and pass.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use orch::systemd::install::{
    self, DBUS_POLICY, FAIL2BAN_ACTION, FAIL2BAN_DROPIN, InstallArgs, InstallError, MANIFEST,
    NFTABLES_DROPIN, ORCH_SERVICE, Report, UninstallArgs,
};
use tempfile::TempDir;

const BIN: &str = "/usr/local/bin/orch";

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

fn install_args(root: &Path) -> InstallArgs {
    InstallArgs {
        root: root.to_path_buf(),
        dry_run: false,
        bin: Some(PathBuf::from(BIN)),
        bind_fail2ban: false,
        no_reload: true,
    }
}

fn uninstall_args(root: &Path) -> UninstallArgs {
    UninstallArgs {
        root: root.to_path_buf(),
        dry_run: false,
        no_reload: true,
        force: false,
    }
}

fn install(args: &InstallArgs) -> Report {
    block_on(install::install(args)).unwrap_or_else(|err| panic!("install-units: {err}"))
}

fn uninstall(args: &UninstallArgs) -> Report {
    block_on(install::uninstall(args)).unwrap_or_else(|err| panic!("uninstall-units: {err}"))
}

/// `abs` (a path on the target system) below `root`.
fn at(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn read(root: &Path, abs: &str) -> String {
    let path = at(root, abs);
    fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

fn has_line(report: &Report, line: &str) -> bool {
    report.lines.iter().any(|l| l == line)
}

/// Every entry below `root`: relative path -> "dir", "file <mode> <contents>"
/// or "link <target>".
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(root).expect("below root").to_path_buf();
            if meta.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).expect("readlink");
                out.insert(rel, format!("link {}", target.display()));
            } else {
                let content = fs::read(&path).expect("read");
                out.insert(
                    rel,
                    format!(
                        "file {:o} {}",
                        meta.mode() & 0o7777,
                        String::from_utf8_lossy(&content)
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn install_writes_every_file_with_the_expected_lines() {
    let root = TempDir::new().expect("tempdir");
    let report = install(&install_args(root.path()));

    let service = read(root.path(), ORCH_SERVICE);
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/orch daemon",
        "ExecReload=+/usr/local/bin/orch reload",
        "Restart=on-failure",
        "WatchdogSec=30s",
        "StateDirectory=orch",
        "StateDirectoryMode=0700",
        "Requires=dbus.socket",
        "After=dbus.socket nftables.service",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_DAC_READ_SEARCH",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
        "UMask=0077",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            service.lines().any(|l| l == line),
            "orch.service lacks {line:?}:\n{service}"
        );
    }
    let directives: Vec<&str> = service.lines().filter(|l| !l.starts_with('#')).collect();
    for absent in ["PartOf=", "PrivateUsers=", "IPAddressDeny=", "User="] {
        assert!(
            !directives.iter().any(|l| l.starts_with(absent)),
            "orch.service must not set {absent}"
        );
    }

    let dropin = read(root.path(), NFTABLES_DROPIN);
    let dropin_directives: Vec<&str> = dropin
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(
        dropin_directives,
        [
            "[Service]",
            "ExecStartPost=-/usr/local/bin/orch sync --event start --unit nftables.service",
            "ExecReload=-/usr/local/bin/orch sync --event reload --unit nftables.service",
        ]
    );

    let policy_source = concat!(env!("CARGO_MANIFEST_DIR"), "/units/org.orch.Orch1.conf");
    assert_eq!(
        read(root.path(), DBUS_POLICY),
        fs::read_to_string(policy_source).expect("units/org.orch.Orch1.conf")
    );

    let manifest = read(root.path(), MANIFEST);
    for path in [ORCH_SERVICE, NFTABLES_DROPIN, DBUS_POLICY] {
        assert!(
            manifest
                .lines()
                .any(|l| l.starts_with("file ") && l.ends_with(&format!(" {path}"))),
            "manifest lacks {path}:\n{manifest}"
        );
        assert!(
            has_line(
                &report,
                &format!("wrote {}", at(root.path(), path).display())
            ),
            "{report}"
        );
        let mode = fs::metadata(at(root.path(), path)).expect("stat").mode() & 0o7777;
        assert_eq!(mode, 0o644, "{path}");
    }
    assert!(manifest.contains("\ndir /etc/systemd/system/nftables.service.d\n"));
    assert!(!at(root.path(), FAIL2BAN_DROPIN).exists());
    assert!(!at(root.path(), FAIL2BAN_ACTION).exists());
    let mode = |abs: &str| fs::metadata(at(root.path(), abs)).expect("stat").mode() & 0o7777;
    assert_eq!(mode(MANIFEST), 0o600);
    assert_eq!(mode("/var/lib/orch"), 0o700);
    assert_eq!(mode("/etc/systemd/system/nftables.service.d"), 0o755);
    assert_eq!(mode("/etc/dbus-1/system.d"), 0o755);

    // /usr/local/bin/orch does not exist below the temporary root.
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with("warning: ") && l.contains("does not exist")),
        "{report}"
    );
    assert!(has_line(&report, "next:"), "{report}");
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("enable orch.service")),
        "{report}"
    );
}

#[test]
fn a_second_install_changes_nothing() {
    let root = TempDir::new().expect("tempdir");
    let mut args = install_args(root.path());
    args.bind_fail2ban = true;
    install(&args);
    let stamps = |root: &Path| -> Vec<(PathBuf, i64, i64, u64)> {
        tree(root)
            .into_keys()
            .map(|rel| {
                let meta = fs::symlink_metadata(root.join(&rel)).expect("lstat");
                (rel, meta.mtime(), meta.mtime_nsec(), meta.ino())
            })
            .collect()
    };
    let before_tree = tree(root.path());
    let before_stamps = stamps(root.path());

    let report = install(&args);
    for path in [
        ORCH_SERVICE,
        NFTABLES_DROPIN,
        DBUS_POLICY,
        FAIL2BAN_DROPIN,
        FAIL2BAN_ACTION,
        MANIFEST,
    ] {
        assert!(
            has_line(
                &report,
                &format!("unchanged {}", at(root.path(), path).display())
            ),
            "{path} not reported unchanged:\n{report}"
        );
    }
    assert!(
        !report.lines.iter().any(|l| l.starts_with("wrote ")),
        "{report}"
    );
    assert_eq!(tree(root.path()), before_tree);
    assert_eq!(stamps(root.path()), before_stamps);

    // Without --bind-fail2ban the fail2ban files from before stay, recorded.
    args.bind_fail2ban = false;
    let report = install(&args);
    assert!(
        report.lines.iter().any(|l| l.starts_with(&format!(
            "kept {}",
            at(root.path(), FAIL2BAN_ACTION).display()
        ))),
        "{report}"
    );
    assert_eq!(tree(root.path()), before_tree);
}

#[test]
fn dry_run_writes_nothing_and_prints_every_file() {
    let root = TempDir::new().expect("tempdir");
    let mut args = install_args(root.path());
    args.dry_run = true;
    args.bind_fail2ban = true;
    let report = install(&args);
    assert!(tree(root.path()).is_empty(), "dry run wrote something");
    for path in [
        ORCH_SERVICE,
        NFTABLES_DROPIN,
        DBUS_POLICY,
        FAIL2BAN_DROPIN,
        FAIL2BAN_ACTION,
    ] {
        assert!(
            has_line(
                &report,
                &format!("==> {} (would write) <==", at(root.path(), path).display())
            ),
            "{path} missing from:\n{report}"
        );
    }
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/orch daemon",
        "ExecReload=-/usr/local/bin/orch sync --event reload --unit nftables.service",
        "PartOf=nftables.service",
        "<busconfig>",
    ] {
        assert!(has_line(&report, line), "{line:?} missing from:\n{report}");
    }

    // After a real install, a dry run reports everything unchanged.
    args.dry_run = false;
    install(&args);
    let before = tree(root.path());
    args.dry_run = true;
    let report = install(&args);
    assert!(
        has_line(
            &report,
            &format!(
                "==> {} (unchanged) <==",
                at(root.path(), ORCH_SERVICE).display()
            )
        ),
        "{report}"
    );
    assert_eq!(tree(root.path()), before);
}

#[test]
fn uninstall_leaves_the_tree_as_it_was() {
    let root = TempDir::new().expect("tempdir");
    // Some of the tree exists before: it must survive, with its contents.
    fs::create_dir_all(at(
        root.path(),
        "/etc/systemd/system/multi-user.target.wants",
    ))
    .expect("mkdir");
    fs::create_dir_all(at(root.path(), "/var/lib")).expect("mkdir");
    fs::write(
        at(root.path(), "/etc/systemd/system/other.service"),
        "[Service]\n",
    )
    .expect("write");
    let before = tree(root.path());

    let mut args = install_args(root.path());
    args.bind_fail2ban = true;
    install(&args);
    assert_ne!(tree(root.path()), before);

    let report = uninstall(&uninstall_args(root.path()));
    assert_eq!(tree(root.path()), before, "{report}");
    for path in [ORCH_SERVICE, NFTABLES_DROPIN, DBUS_POLICY, FAIL2BAN_ACTION] {
        assert!(
            has_line(
                &report,
                &format!("removed {}", at(root.path(), path).display())
            ),
            "{report}"
        );
    }
    assert!(
        has_line(
            &report,
            &format!(
                "removed directory {}",
                at(root.path(), "/etc/systemd/system/nftables.service.d").display()
            )
        ),
        "{report}"
    );

    // Again: nothing left to do.
    let report = uninstall(&uninstall_args(root.path()));
    assert!(
        report.lines[0].starts_with("nothing to uninstall"),
        "{report}"
    );
}

#[test]
fn uninstall_into_an_empty_root_removes_every_directory_it_created() {
    let root = TempDir::new().expect("tempdir");
    install(&install_args(root.path()));
    uninstall(&uninstall_args(root.path()));
    assert!(tree(root.path()).is_empty(), "{:#?}", tree(root.path()));
}

#[test]
fn uninstall_keeps_the_ban_store() {
    let root = TempDir::new().expect("tempdir");
    install(&install_args(root.path()));
    fs::write(at(root.path(), "/var/lib/orch/bans.log"), b"bans").expect("write");
    let report = uninstall(&uninstall_args(root.path()));
    assert_eq!(read(root.path(), "/var/lib/orch/bans.log"), "bans");
    assert!(!at(root.path(), MANIFEST).exists());
    assert!(
        has_line(
            &report,
            &format!(
                "kept directory {} (not empty)",
                at(root.path(), "/var/lib/orch").display()
            )
        ),
        "{report}"
    );
}

#[test]
fn uninstall_keeps_an_edited_file_unless_forced() {
    let root = TempDir::new().expect("tempdir");
    install(&install_args(root.path()));
    let service = at(root.path(), ORCH_SERVICE);
    let edited = format!("{}# local edit\n", read(root.path(), ORCH_SERVICE));
    fs::write(&service, &edited).expect("edit");

    let mut args = uninstall_args(root.path());
    args.dry_run = true;
    let dry = uninstall(&args);
    assert!(
        dry.lines
            .iter()
            .any(|l| l.starts_with(&format!("would keep {}", service.display()))),
        "{dry}"
    );
    assert!(at(root.path(), NFTABLES_DROPIN).exists(), "dry run removed");

    args.dry_run = false;
    let report = uninstall(&args);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with(&format!("kept {}: changed", service.display()))),
        "{report}"
    );
    assert_eq!(fs::read_to_string(&service).expect("kept"), edited);
    assert!(!at(root.path(), NFTABLES_DROPIN).exists());
    assert!(!at(root.path(), DBUS_POLICY).exists());
    // The manifest stays, listing only the kept file.
    let manifest = read(root.path(), MANIFEST);
    let files: Vec<&str> = manifest
        .lines()
        .filter(|l| l.starts_with("file "))
        .collect();
    assert_eq!(files.len(), 1, "{manifest}");
    assert!(files[0].ends_with(ORCH_SERVICE));

    args.force = true;
    let report = uninstall(&args);
    assert!(
        has_line(
            &report,
            &format!(
                "removed {} (changed since install-units wrote it; --force)",
                service.display()
            )
        ),
        "{report}"
    );
    assert!(tree(root.path()).is_empty(), "{:#?}", tree(root.path()));
}

#[test]
fn reinstall_over_an_edited_file_keeps_a_copy() {
    let root = TempDir::new().expect("tempdir");
    install(&install_args(root.path()));
    let service = at(root.path(), ORCH_SERVICE);
    let original = read(root.path(), ORCH_SERVICE);
    fs::write(&service, "edited\n").expect("edit");

    let report = install(&install_args(root.path()));
    assert_eq!(read(root.path(), ORCH_SERVICE), original);
    let backup = PathBuf::from(format!("{}.orch-old", service.display()));
    assert_eq!(fs::read_to_string(&backup).expect("backup"), "edited\n");
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with(&format!("wrote {} (replacing", service.display()))),
        "{report}"
    );

    // A changed --bin rewrites the files install wrote, without copies.
    let mut args = install_args(root.path());
    args.bin = Some(PathBuf::from("/usr/bin/orch"));
    let report = install(&args);
    assert!(
        has_line(&report, &format!("wrote {}", service.display())),
        "{report}"
    );
    assert!(
        read(root.path(), NFTABLES_DROPIN)
            .contains("ExecReload=-/usr/bin/orch sync --event reload")
    );
    assert!(!at(root.path(), &format!("{NFTABLES_DROPIN}.orch-old")).exists());

    // Uninstall leaves only the admin's copy.
    fs::remove_file(&backup).expect("rm backup");
    uninstall(&uninstall_args(root.path()));
    assert!(tree(root.path()).is_empty(), "{:#?}", tree(root.path()));
}

#[test]
fn bind_fail2ban_adds_the_fail2ban_files_and_uninstall_removes_them() {
    let root = TempDir::new().expect("tempdir");
    let mut args = install_args(root.path());
    args.bind_fail2ban = true;
    let report = install(&args);

    let dropin = read(root.path(), FAIL2BAN_DROPIN);
    for line in [
        "[Unit]",
        "Requires=nftables.service",
        "PartOf=nftables.service",
        "After=nftables.service orch.service",
        "[Install]",
        "WantedBy=multi-user.target nftables.service",
    ] {
        assert!(
            dropin.lines().any(|l| l == line),
            "{line:?} missing:\n{dropin}"
        );
    }
    let action = read(root.path(), FAIL2BAN_ACTION);
    for line in [
        "[Definition]",
        "actionflush = true",
        "norestored = false",
        "actionprolong = %(actionban)s",
        "actionunban = <busctl> call org.orch.Orch1 /org/orch/Orch1 org.orch.Orch1 Unban s <ip>",
        "orch = /usr/local/bin/orch",
        "            <orch> ban <ip> --for \"${s}s\" --reason \"fail2ban <name>\"",
    ] {
        assert!(
            action.lines().any(|l| l == line),
            "{line:?} missing:\n{action}"
        );
    }
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("reenable fail2ban.service")),
        "{report}"
    );

    let report = uninstall(&uninstall_args(root.path()));
    assert!(!at(root.path(), FAIL2BAN_DROPIN).exists());
    assert!(!at(root.path(), FAIL2BAN_ACTION).exists());
    assert!(!at(root.path(), "/etc/fail2ban").exists());
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("reenable fail2ban.service")),
        "{report}"
    );
}

#[test]
fn a_relative_or_unsafe_bin_is_refused() {
    let root = TempDir::new().expect("tempdir");
    let mut args = install_args(root.path());
    args.bin = Some(PathBuf::from("target/release/orch"));
    let err = block_on(install::install(&args)).expect_err("relative --bin");
    assert!(matches!(err, InstallError::RelativeBin(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "--bin target/release/orch: must be an absolute path"
    );

    args.bin = Some(PathBuf::from("/opt/orch $HOME/orch"));
    let err = block_on(install::install(&args)).expect_err("unsafe --bin");
    assert!(matches!(err, InstallError::UnusableBin { .. }), "{err}");
    assert!(tree(root.path()).is_empty());
}

#[test]
fn a_missing_root_is_an_error_naming_it() {
    let root = TempDir::new().expect("tempdir");
    let missing = root.path().join("nope");
    let err = block_on(install::install(&install_args(&missing))).expect_err("missing root");
    assert!(
        err.to_string()
            .starts_with(&format!("--root {}: ", missing.display())),
        "{err}"
    );
}

#[test]
fn uninstall_refuses_while_orch_service_is_enabled() {
    let root = TempDir::new().expect("tempdir");
    install(&install_args(root.path()));
    let wants = at(root.path(), "/etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).expect("mkdir");
    std::os::unix::fs::symlink(ORCH_SERVICE, wants.join("orch.service")).expect("symlink");

    let err = block_on(install::uninstall(&uninstall_args(root.path()))).expect_err("enabled");
    assert!(matches!(err, InstallError::StillEnabled { .. }), "{err}");
    assert!(err.to_string().contains("disable orch.service"), "{err}");
    assert!(at(root.path(), ORCH_SERVICE).exists());
    assert!(at(root.path(), MANIFEST).exists());
}

#[test]
fn a_damaged_manifest_is_reported_with_its_line() {
    let root = TempDir::new().expect("tempdir");
    install(&install_args(root.path()));
    let manifest = at(root.path(), MANIFEST);
    fs::write(&manifest, "# header\nfile nothex /etc/x\n").expect("write");
    let err = block_on(install::uninstall(&uninstall_args(root.path()))).expect_err("damaged");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2: ", manifest.display())),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// systemd-analyze

fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        eprintln!("systemd-analyze not found (install the `systemd` package): check skipped");
    }
    found.then_some("systemd-analyze")
}

/// Installs with the real orch binary (systemd-analyze verify checks that
/// ExecStart= is executable) and --bind-fail2ban.
fn install_for_analysis(root: &Path) {
    let mut args = install_args(root);
    args.bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_orch")));
    args.bind_fail2ban = true;
    install(&args);
}

#[test]
fn systemd_analyze_verify_accepts_the_units_and_drop_ins() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let root = TempDir::new().expect("tempdir");
    install_for_analysis(root.path());
    let unit_dir = at(root.path(), "/etc/systemd/system");
    // Stand-ins for the units the drop-ins extend, next to their .d
    // directories: verify adds a unit file's directory to the search path.
    fs::write(
        unit_dir.join("nftables.service"),
        "[Unit]\nDescription=nftables\nDefaultDependencies=no\n\n[Service]\nType=oneshot\n\
RemainAfterExit=yes\nExecStart=/bin/true\nExecReload=/bin/true\n",
    )
    .expect("write nftables.service");
    fs::write(
        unit_dir.join("fail2ban.service"),
        "[Unit]\nDescription=fail2ban\n\n[Service]\nExecStart=/bin/sleep infinity\n\n\
[Install]\nWantedBy=multi-user.target\n",
    )
    .expect("write fail2ban.service");

    for unit in ["orch.service", "nftables.service", "fail2ban.service"] {
        let out = Command::new(analyze)
            .arg("verify")
            .arg(unit_dir.join(unit))
            .output()
            .expect("run systemd-analyze verify");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "verify {unit}:\n{stderr}");
        // verify only warns (exit 0) about unknown keys in drop-ins.
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(&*root.path().to_string_lossy()) || l.contains("orch"))
            .collect();
        assert!(ours.is_empty(), "verify {unit} complains:\n{stderr}");
    }
}

#[test]
fn systemd_analyze_security_rates_orch_service_at_most_2_0() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let root = TempDir::new().expect("tempdir");
    install_for_analysis(root.path());
    let out = Command::new(analyze)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(at(root.path(), ORCH_SERVICE))
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // "→ Overall exposure level for orch.service: 1.8 OK 🙂"
    let score: f64 = stdout
        .lines()
        .find_map(|l| l.split("Overall exposure level for orch.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no score in:\n{stdout}\n{stderr}"));
    eprintln!("systemd-analyze security orch.service: {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{stdout}");
}
