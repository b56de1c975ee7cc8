//! The Debian package (target/debian/orch_<version>-*.deb, built by
//! `packaging/build-deb`), installed with dpkg into a throwaway systemd
//! sandbox (tests/common/systemd.rs: a copy-on-write overlay of the host,
//! its own namespaces), then upgraded, removed and purged there.
//!
//! It checks that installing enables and starts orch.service, that
//! `orch ban`/`orch list` work and the ban is in the kernel set, that every
//! generated file in the package is what the current sources generate
//! (`orch::packaging::assets`, the same code as `orch install-units`), that
//! `man orch`, `man 5 orch.toml` and bash's completion work, that an upgrade
//! restarts the daemon, a remove stops it and keeps the state, and a purge
//! leaves nothing of orch behind.
//!
//! It must not change the host: every command that writes runs inside the
//! sandbox. A host that already has orch (the package, or install-units'
//! files), a policy-rc.d that forbids starting services (Docker-built
//! images) or a user `orch` is cleaned up first inside the sandbox only, so
//! the test sees a machine without orch. A missing package fails the test
//! with the command that builds it; it never passes silently.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::systemd::SystemdSandbox;
use common::wait_until;

const ORCH: &str = "/usr/sbin/orch";
const BANNED: &str = "203.0.113.7";
const DEB_IN_SANDBOX: &str = "/root/orch-test.deb";
/// An unowned table (the nft binary drives it), which outlives the daemon,
/// so that the purge has a table to delete.
const UNOWNED_CONF: &str = "/etc/orch/conf.d/10-test-unowned.toml";

/// Makes the sandbox look like a machine without orch (only inside it).
const CLEAN_SANDBOX: &str = r#"set -e
# policy-rc.d exit 101 (Docker-built images) would keep dpkg from starting
# services, which is what this test checks.
rm -f /usr/sbin/policy-rc.d
if dpkg-query -W -f='${Status}' orch 2>/dev/null | grep -qv 'not-installed'; then
    dpkg --purge orch
fi
systemctl disable --now orch.service >/dev/null 2>&1 || true
rm -rf /etc/orch /var/lib/orch /etc/systemd/system/orch.service \
    /etc/systemd/system/nftables.service.d/orch.conf \
    /etc/dbus-1/system.d/org.orch.Orch1.conf /etc/polkit-1/rules.d/50-orch.rules
if getent passwd orch >/dev/null; then userdel orch; fi
if getent group orch >/dev/null; then groupdel orch; fi
nft delete table inet orch 2>/dev/null || true
systemctl daemon-reload
"#;

/// Paths that name orch below the directories a package writes to: what
/// must be the same before install and after purge.
const ORCH_PATHS: &str =
    "find /etc /usr /var/lib /var/cache /var/spool -name '*orch*' 2>/dev/null | sort";

/// The package to test: $ORCH_DEB, else the newest
/// target/debian/orch_<version>-*.deb.
fn find_deb() -> PathBuf {
    let build = "build it with packaging/build-deb (which .ci/run runs before the tests), \
                 or name one with ORCH_DEB=PATH";
    if let Some(path) = std::env::var_os("ORCH_DEB") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "ORCH_DEB={}: no such file", path.display());
        return path;
    }
    let target = common::orch_bin()
        .parent()
        .and_then(Path::parent)
        .expect("the test binaries are in <target>/debug")
        .to_path_buf();
    let dir = target.join("debian");
    let prefix = format!("orch_{}-", env!("CARGO_PKG_VERSION"));
    let newest = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max();
    match newest {
        Some((_, path)) => path,
        None => panic!("no package {prefix}*.deb in {}: {build}", dir.display()),
    }
}

/// Copies the package into the sandbox (its /tmp is its own, and the target
/// directory may be anywhere).
fn copy_into(sandbox: &SystemdSandbox, deb: &Path) {
    let file = fs::File::open(deb).unwrap_or_else(|e| panic!("open {}: {e}", deb.display()));
    let status = sandbox
        .command("sh")
        .args(["-c", &format!("cat > {DEB_IN_SANDBOX}")])
        .stdin(file)
        .stdout(Stdio::null())
        .status()
        .expect("run sh in the sandbox");
    assert!(status.success(), "copying the package into the sandbox");
}

/// Where Cargo.toml's `[package.metadata.deb] assets` install each generated
/// file: (path below deb-assets/, installed path). A glob source maps every
/// generated file it matches.
fn installed_paths(generated: &[orch::packaging::Asset]) -> Vec<(String, String)> {
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("read Cargo.toml");
    let manifest: toml::Table = toml::from_str(&manifest).expect("Cargo.toml parses");
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let mut mapped = Vec::new();
    for asset in assets {
        let asset = asset.as_array().expect("assets are [source, dest, mode]");
        let (source, dest) = (
            asset[0].as_str().expect("source"),
            asset[1].as_str().expect("dest"),
        );
        let Some(source) = source.strip_prefix("target/deb-assets/") else {
            continue;
        };
        let (dir, pattern) = source.rsplit_once('/').unwrap_or(("", source));
        for file in generated {
            let (file_dir, name) = file.path.rsplit_once('/').unwrap_or(("", &file.path));
            let matches = match pattern.strip_prefix('*') {
                Some(suffix) => name.ends_with(suffix),
                None => name == pattern,
            };
            if file_dir == dir && matches {
                let installed = if dest.ends_with('/') {
                    format!("/{dest}{name}")
                } else {
                    format!("/{dest}")
                };
                mapped.push((file.path.clone(), installed));
            }
        }
    }
    mapped
}

/// Every generated file is installed, with the contents the current sources
/// generate (man pages gzipped, as Debian wants them).
fn assert_generated_files_match(sandbox: &SystemdSandbox) {
    let generated = orch::packaging::assets(Path::new(ORCH)).expect("generate the assets");
    let mapped = installed_paths(&generated);
    let mapped_sources: BTreeSet<&str> = mapped.iter().map(|(src, _)| src.as_str()).collect();
    for asset in &generated {
        assert!(
            mapped_sources.contains(asset.path.as_str()),
            "Cargo.toml's assets do not install the generated {}",
            asset.path
        );
    }
    for (source, installed) in &mapped {
        let expected = &generated
            .iter()
            .find(|asset| &asset.path == source)
            .expect("mapped from the generated files")
            .content;
        let shown = if installed.starts_with("/usr/share/man/") {
            sandbox.run("zcat", &[&format!("{installed}.gz")])
        } else {
            sandbox.run("cat", &[installed])
        }
        .expect_ok(&format!("read the installed {installed}"));
        assert!(
            shown.stdout.as_bytes() == expected.as_slice(),
            "{installed} differs from what the sources generate ({source}): the package is \
             stale; rebuild it with packaging/build-deb"
        );
    }
    let config = sandbox
        .read_file("/etc/orch/orch.toml")
        .expect("/etc/orch/orch.toml is installed");
    assert_eq!(
        config,
        orch::config::EMBEDDED_DEFAULT,
        "the shipped default config"
    );
    let conffiles = sandbox
        .run("dpkg-query", &["-W", "-f=${Conffiles}", "orch"])
        .expect_ok("dpkg-query Conffiles");
    assert!(
        conffiles.stdout.contains("/etc/orch/orch.toml "),
        "{conffiles}"
    );
}

/// The package's units and policies are byte for byte what
/// `orch install-units --bin /usr/sbin/orch` writes.
fn assert_same_as_install_units(sandbox: &SystemdSandbox) {
    sandbox
        .run("mkdir", &["-p", "/root/iu"])
        .expect_ok("mkdir /root/iu");
    sandbox
        .run(
            ORCH,
            &[
                "install-units",
                "--root",
                "/root/iu",
                "--bin",
                ORCH,
                "--no-reload",
            ],
        )
        .expect_ok("orch install-units --root");
    for (package, install_units) in [
        (
            "/usr/lib/systemd/system/orch.service",
            "/etc/systemd/system/orch.service",
        ),
        (
            "/usr/lib/systemd/system/nftables.service.d/orch.conf",
            "/etc/systemd/system/nftables.service.d/orch.conf",
        ),
        (
            "/usr/share/dbus-1/system.d/org.orch.Orch1.conf",
            "/etc/dbus-1/system.d/org.orch.Orch1.conf",
        ),
        (
            "/usr/share/polkit-1/actions/org.orch.Orch1.policy",
            "/usr/share/polkit-1/actions/org.orch.Orch1.policy",
        ),
        (
            "/usr/share/polkit-1/rules.d/50-orch.rules",
            "/etc/polkit-1/rules.d/50-orch.rules",
        ),
    ] {
        let packaged = sandbox.read_file(package);
        let written = sandbox.read_file(&format!("/root/iu{install_units}"));
        assert!(packaged.is_some(), "{package} is installed");
        assert_eq!(
            packaged, written,
            "{package} vs install-units' {install_units}"
        );
    }
}

fn main_pid(sandbox: &SystemdSandbox) -> String {
    sandbox
        .systemctl(&["show", "-P", "MainPID", "orch.service"])
        .expect_ok("MainPID")
        .stdout
        .trim()
        .to_owned()
}

fn wait_active(sandbox: &SystemdSandbox) {
    wait_until(Duration::from_secs(20), "orch.service active", || {
        sandbox
            .systemctl(&["is-active", "--quiet", "orch.service"])
            .ok()
    });
}

fn banned_in_kernel(sandbox: &SystemdSandbox) -> bool {
    sandbox
        .set_elements("orch", "ban4")
        .iter()
        .any(|element| element == BANNED)
}

fn dpkg(sandbox: &SystemdSandbox, args: &[&str]) -> String {
    let started = Instant::now();
    let out = sandbox
        .command("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .expect("run dpkg in the sandbox");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dpkg {args:?} failed:\n{text}");
    eprintln!("dpkg {args:?}: {:.1} s", started.elapsed().as_secs_f64());
    text
}

#[test]
fn the_deb_installs_runs_upgrades_and_purges_without_a_trace() {
    let deb = find_deb();
    eprintln!("testing {}", deb.display());
    let mut header = [0u8; 8];
    fs::File::open(&deb)
        .and_then(|mut file| file.read_exact(&mut header))
        .unwrap_or_else(|e| panic!("read {}: {e}", deb.display()));
    assert_eq!(&header, b"!<arch>\n", "{} is not a .deb", deb.display());

    let sandbox = SystemdSandbox::boot();
    sandbox
        .sh(CLEAN_SANDBOX)
        .expect_ok("clean the sandbox of orch");
    let before = sandbox.sh(ORCH_PATHS).stdout;
    copy_into(&sandbox, &deb);
    sandbox
        .systemctl(&["start", "nftables.service"])
        .expect_ok("start nftables");
    sandbox.write_file(UNOWNED_CONF, "[firewall]\nowner = \"off\"\n", 0o644);

    // Install: enabled, started, serving.
    dpkg(&sandbox, &["-i", DEB_IN_SANDBOX]);
    wait_active(&sandbox);
    sandbox
        .systemctl(&["is-enabled", "--quiet", "orch.service"])
        .expect_ok("orch.service is enabled");
    let user = sandbox
        .run("getent", &["passwd", "orch"])
        .expect_ok("the user orch");
    assert!(user.stdout.contains(":/var/lib/orch:"), "{user}");
    sandbox
        .run(ORCH, &["ban", BANNED, "--reason", "deb test"])
        .expect_ok("orch ban");
    wait_until(Duration::from_secs(5), "the ban in inet orch ban4", || {
        banned_in_kernel(&sandbox)
    });
    let list = sandbox.run(ORCH, &["list"]).expect_ok("orch list");
    assert!(
        list.stdout
            .lines()
            .any(|line| line.starts_with(BANNED) && line.contains("deb test")),
        "{list}"
    );

    assert_generated_files_match(&sandbox);
    assert_same_as_install_units(&sandbox);

    // Manual pages: found where the package put them, rendered without
    // warnings. At a width other than 80 man-db keeps no formatted copy in
    // /var/cache/man (its cache, which its daily run would clean after a
    // purge), so the purge check below sees only what the package did.
    for (args, page, expected) in [
        (
            &["orch"][..],
            "/usr/share/man/man8/orch.8.gz",
            "orch-ban(8)",
        ),
        (
            &["5", "orch.toml"][..],
            "/usr/share/man/man5/orch.toml.5.gz",
            "state_dir",
        ),
        (
            &["orch-ban"][..],
            "/usr/share/man/man8/orch-ban.8.gz",
            "--reason",
        ),
    ] {
        let found = sandbox
            .run("man", &[&["-w"][..], args].concat())
            .expect_ok("man -w");
        assert_eq!(found.stdout.trim(), page, "man -w {args:?}");
        let shown = sandbox
            .command("man")
            .args(["--warnings", "-P", "cat"])
            .args(args)
            .env("MANWIDTH", "100")
            .stdin(Stdio::null())
            .output()
            .expect("run man");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&shown.stdout),
            String::from_utf8_lossy(&shown.stderr),
        );
        assert!(
            shown.status.success() && stdout.contains(expected) && stderr.trim().is_empty(),
            "man {args:?}: status {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            shown.status
        );
    }

    // Completion: an interactive login bash loads bash-completion
    // (/etc/profile.d/bash_completion.sh), which loads orch's completion on
    // the first Tab through its loader; call the loader as Tab does.
    assert!(
        sandbox
            .run(
                "test",
                &["-r", "/usr/share/bash-completion/bash_completion"]
            )
            .ok(),
        "the bash-completion package is missing: apt-get install bash-completion (.ci/run does)"
    );
    let complete = sandbox.run(
        "bash",
        &["-lic", "_completion_loader orch; complete -p orch"],
    );
    let registered = complete.stdout.lines().any(|line| {
        line.starts_with("complete ") && line.contains(" -F _orch ") && line.ends_with(" orch")
    });
    assert!(
        complete.ok() && registered,
        "complete -p orch in an interactive bash:\n{complete}"
    );

    // Upgrade (the same version again): restarted, the ban kept.
    let pid = main_pid(&sandbox);
    dpkg(&sandbox, &["-i", DEB_IN_SANDBOX]);
    wait_active(&sandbox);
    assert_ne!(main_pid(&sandbox), pid, "an upgrade restarts orch.service");
    wait_until(
        Duration::from_secs(5),
        "the ban back after the restart",
        || banned_in_kernel(&sandbox),
    );

    // Remove: stopped; configuration and state kept; the unowned table
    // (and its bans) stays in the kernel.
    dpkg(&sandbox, &["--remove", "orch"]);
    assert!(
        !sandbox
            .systemctl(&["is-active", "--quiet", "orch.service"])
            .ok(),
        "orch.service still runs after dpkg --remove"
    );
    assert!(
        !sandbox.run("test", &["-e", ORCH]).ok(),
        "{ORCH} left after remove"
    );
    for kept in ["/etc/orch/orch.toml", "/var/lib/orch", UNOWNED_CONF] {
        assert!(
            sandbox.run("test", &["-e", kept]).ok(),
            "{kept} is kept on remove"
        );
    }
    assert!(
        banned_in_kernel(&sandbox),
        "the unowned table stays on remove"
    );

    // Purge: nothing of orch is left.
    dpkg(&sandbox, &["--purge", "orch"]);
    let status = sandbox.run("dpkg-query", &["-W", "-f=${Status}", "orch"]);
    assert!(
        !status.ok() || status.stdout.contains("not-installed"),
        "dpkg still knows orch: {status}"
    );
    for gone in ["/etc/orch", "/var/lib/orch"] {
        assert!(
            !sandbox.run("test", &["-e", gone]).ok(),
            "{gone} left after purge"
        );
    }
    assert!(
        !sandbox.nft(&["list", "table", "inet", "orch"]).ok(),
        "the table inet orch is left after purge"
    );
    for database in ["passwd", "group"] {
        let entry = sandbox.run("getent", &[database, "orch"]);
        assert!(
            !entry.ok(),
            "{database} entry orch left after purge: {entry}"
        );
    }
    let after = sandbox.sh(ORCH_PATHS).stdout;
    assert_eq!(
        after, before,
        "paths naming orch before the install and after the purge"
    );
    sandbox.shutdown();
}
