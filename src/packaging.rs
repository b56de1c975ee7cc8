//! `orch-gen-assets DIR` (src/bin/orch-gen-assets.rs): writes every file of
//! the Debian package that is generated from the sources into DIR, where
//! `[package.metadata.deb] assets` in Cargo.toml picks them up
//! (`packaging/build-deb` runs it, then `cargo deb --no-build`):
//!
//! ```text
//! systemd/orch.service                    units/orch.service.in     } rendered by
//! systemd/nftables.service.d/orch.conf    units/orch-nftables.conf.in } Template::render,
//! dbus/org.orch.Orch1.conf                units/org.orch.Orch1.conf   } as install-units
//! polkit/org.orch.Orch1.policy            units/org.orch.Orch1.policy } does, with --bin
//! polkit/50-orch.rules                    units/50-orch.rules         } (/usr/sbin/orch)
//! sysusers/orch.conf                      units/orch.sysusers.conf    }
//! man/orch.8, man/orch-<command>.8        clap_mangen, from the `Cli` definition
//! man/orch.toml.5                         packaging/orch.toml.5.in (hand-maintained roff)
//! completions/orch, _orch, orch.fish      clap_complete: bash, zsh, fish
//! ```
//!
//! The default configuration (/etc/orch/orch.toml) is not generated: the
//! package ships examples/orch.toml itself, the file `config` embeds.
//!
//! A separate binary rather than a hidden subcommand, so that `orch` itself,
//! its man pages and its completions know nothing of it.
//!
//! It only writes below DIR, which must be missing or empty (so no stale
//! page of a removed command is packaged); it must never install anything,
//! write outside DIR or run systemctl: that is the package's maintainer
//! scripts' job (packaging/maintainer-scripts/), or `orch install-units`'.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::systemd::install::{InstallError, Template, check_bin_path};

/// Where the Debian package installs the binary.
pub const PACKAGE_BIN: &str = "/usr/sbin/orch";

/// The hand-maintained source of orch.toml(5); `@VERSION@` is replaced.
const CONFIG_MAN_SOURCE: &str = include_str!("../packaging/orch.toml.5.in");

/// Appended to orch(8) after the sections clap_mangen renders.
const ORCH_8_TAIL: &str = r#".SH FILES
.TP
.I /etc/orch/orch.toml
.TQ
.I /etc/orch/conf.d/*.toml
The configuration; see
.BR orch.toml (5).
Without either file, the embedded default (the file the package installs as
.IR /etc/orch/orch.toml ).
.TP
.I /var/lib/orch/
The state directory (state_dir): the crash-safe ban store.
.TP
.I /etc/orch/hooks.d/
Executables run after the firewall is started, reloaded, restarted or
flushed.
.TP
.I orch.service
The daemon's unit, with the drop-in
.I nftables.service.d/orch.conf
that runs
.B orch sync
after nftables.service starts or reloads: in
.I /usr/lib/systemd/system
from the Debian package, in
.I /etc/systemd/system
from
.BR "orch install\-units" .
.TP
.I org.orch.Orch1.conf
The bus policy, in
.I /usr/share/dbus-1/system.d
(package) or
.I /etc/dbus-1/system.d
(install\-units); with the polkit actions
.I /usr/share/polkit-1/actions/org.orch.Orch1.policy
and the rule
.I 50-orch.rules
that lets the group orch\-admin ban and unban.
.SH SEE ALSO
.BR orch.toml (5),
.BR nft (8),
.BR systemctl (1),
.BR busctl (1),
.BR pkaction (1)
"#;

/// Arguments of `orch-gen-assets`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenAssetsArgs {
    /// The directory to write into; must be missing or empty
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The orch binary's path on the target system, for the units
    #[arg(long, value_name = "PATH", default_value = PACKAGE_BIN)]
    pub bin: PathBuf,
}

/// Why gen-assets stopped.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error(transparent)]
    Bin(#[from] InstallError),
    #[error("{}: not empty; orch-gen-assets writes only into a missing or empty directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot render the manual page {name}: {source}")]
    Render { name: String, source: io::Error },
}

/// One generated file: its path below DIR and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub path: String,
    pub content: Vec<u8>,
}

impl Asset {
    fn new(path: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        Asset {
            path: path.into(),
            content: content.into(),
        }
    }
}

/// Every generated file, for the orch binary at `bin` on the target system.
pub fn assets(bin: &Path) -> Result<Vec<Asset>, GenError> {
    let bin = check_bin_path(bin)?;
    let mut assets: Vec<Asset> = [
        ("systemd/orch.service", Template::OrchService),
        (
            "systemd/nftables.service.d/orch.conf",
            Template::NftablesDropin,
        ),
        ("dbus/org.orch.Orch1.conf", Template::DbusPolicy),
        ("polkit/org.orch.Orch1.policy", Template::PolkitActions),
        ("polkit/50-orch.rules", Template::PolkitRules),
        ("sysusers/orch.conf", Template::Sysusers),
    ]
    .into_iter()
    .map(|(path, template)| Asset::new(path, template.render(&bin)))
    .collect();
    assets.extend(man_pages()?);
    assets.push(Asset::new("man/orch.toml.5", config_man_page()));
    assets.extend(completions());
    Ok(assets)
}

/// `orch-gen-assets`: writes [`assets`] below `args.dir`; returns the paths
/// written.
pub fn gen_assets(args: &GenAssetsArgs) -> Result<Vec<PathBuf>, GenError> {
    let assets = assets(&args.bin)?;
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenError::Write { path, source }
    };
    match fs::read_dir(&args.dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(GenError::NotEmpty(args.dir.clone()));
            }
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(GenError::Write {
                path: args.dir.clone(),
                source,
            });
        }
    }
    let mut written = Vec::new();
    for asset in assets {
        let path = args.dir.join(&asset.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(write_error(parent))?;
        }
        fs::write(&path, &asset.content).map_err(write_error(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// The command line as the manual pages and completions see it: no `help`
/// subcommand (`--help` stays).
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// orch(8), with FILES and SEE ALSO, and one page per visible subcommand
/// (orch-ban(8), orch-store-verify(8), ...), which orch(8) refers to.
fn man_pages() -> Result<Vec<Asset>, GenError> {
    fn add(cmd: &clap::Command, top: bool, pages: &mut Vec<Asset>) -> Result<(), GenError> {
        for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            add(sub, false, pages)?;
        }
        let man = clap_mangen::Man::new(cmd.clone())
            .section("8")
            .source(format!("orch {}", env!("CARGO_PKG_VERSION")))
            .manual("System Administration");
        let name = man.get_filename();
        let mut page = Vec::new();
        man.render(&mut page).map_err(|source| GenError::Render {
            name: name.clone(),
            source,
        })?;
        if top {
            page.extend_from_slice(ORCH_8_TAIL.as_bytes());
        }
        pages.push(Asset::new(format!("man/{name}"), page));
        Ok(())
    }
    let mut pages = Vec::new();
    add(&command(), true, &mut pages)?;
    Ok(pages)
}

/// orch.toml(5) from its roff source.
fn config_man_page() -> String {
    CONFIG_MAN_SOURCE.replace("@VERSION@", env!("CARGO_PKG_VERSION"))
}

/// Completions for bash, zsh and fish, named as each shell's directory of
/// completions expects.
fn completions() -> Vec<Asset> {
    [
        (Shell::Bash, "completions/orch"),
        (Shell::Zsh, "completions/_orch"),
        (Shell::Fish, "completions/orch.fish"),
    ]
    .into_iter()
    .map(|(shell, path)| {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command(), "orch", &mut script);
        Asset::new(path, script)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn generated() -> Vec<Asset> {
        assets(Path::new(PACKAGE_BIN)).expect("assets")
    }

    fn text(assets: &[Asset], path: &str) -> String {
        let asset = assets
            .iter()
            .find(|asset| asset.path == path)
            .unwrap_or_else(|| panic!("no asset {path}"));
        String::from_utf8(asset.content.clone()).expect("UTF-8")
    }

    #[test]
    fn units_are_rendered_for_the_package_binary() {
        let assets = generated();
        let service = text(&assets, "systemd/orch.service");
        assert!(service.contains("\nExecStart=/usr/sbin/orch daemon\n"));
        assert!(!service.contains("@BIN@"));
        let dropin = text(&assets, "systemd/nftables.service.d/orch.conf");
        assert!(dropin.contains("ExecReload=-/usr/sbin/orch sync"));
        assert_eq!(
            text(&assets, "sysusers/orch.conf"),
            Template::Sysusers.render(PACKAGE_BIN)
        );
        assert!(matches!(
            super::assets(Path::new("usr/sbin/orch")),
            Err(GenError::Bin(InstallError::RelativeBin(_)))
        ));
    }

    #[test]
    fn every_command_has_a_page_and_the_generator_appears_nowhere() {
        let assets = generated();
        let pages: BTreeSet<&str> = assets
            .iter()
            .filter_map(|asset| asset.path.strip_prefix("man/"))
            .collect();
        for page in [
            "orch.8",
            "orch-ban.8",
            "orch-list.8",
            "orch-install-units.8",
            "orch-store.8",
            "orch-store-verify.8",
            "orch-store-salvage.8",
            "orch.toml.5",
        ] {
            assert!(pages.contains(page), "{page} in {pages:?}");
        }
        assert!(!pages.iter().any(|page| page.contains("help")), "{pages:?}");
        let top = text(&assets, "man/orch.8");
        assert!(top.contains(".TH orch 8"), "{top}");
        assert!(top.contains("orch\\-ban(8)"), "{top}");
        assert!(top.contains(".SH SEE ALSO"));
        for asset in &assets {
            let content = String::from_utf8_lossy(&asset.content);
            assert!(
                !content.contains("gen-assets") && !content.contains("gen\\-assets"),
                "{} mentions orch-gen-assets",
                asset.path
            );
        }
        let bash = text(&assets, "completions/orch");
        assert!(bash.contains("complete -F _orch"), "{bash}");
        assert!(text(&assets, "completions/_orch").starts_with("#compdef orch"));
        assert!(text(&assets, "completions/orch.fish").contains("complete -c orch"));
    }

    #[test]
    fn gen_assets_writes_only_into_an_empty_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("assets");
        let args = GenAssetsArgs {
            dir: out.clone(),
            bin: PathBuf::from(PACKAGE_BIN),
        };
        let written = gen_assets(&args).expect("first run");
        assert_eq!(written.len(), generated().len());
        assert!(out.join("man/orch.toml.5").is_file());
        assert!(matches!(gen_assets(&args), Err(GenError::NotEmpty(_))));
    }

    // -----------------------------------------------------------------------
    // orch.toml(5) against the parser

    /// The keys orch.toml(5) documents, by section marker, with the default
    /// each shows (`\fBkey\fR = \fIvalue\fR`), unescaped.
    fn documented_keys() -> BTreeMap<String, BTreeMap<String, Option<String>>> {
        let mut sections: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
        let mut current = String::new();
        let mut stack = Vec::new();
        let mut after_tag = false;
        for line in CONFIG_MAN_SOURCE.lines() {
            if let Some(section) = line.strip_prefix(".\\\" section: ") {
                current = section.trim().to_owned();
                sections.entry(current.clone()).or_default();
            } else if line == ".RS" {
                stack.push(current.clone());
            } else if line == ".RE" {
                current = stack.pop().expect("balanced .RS/.RE");
            } else if line == ".TP" || line == ".TQ" {
                after_tag = true;
                continue;
            } else if after_tag
                && let Some(rest) = line.strip_prefix("\\fB")
                && let Some((key, rest)) = rest.split_once("\\fR")
            {
                let default = rest
                    .strip_prefix(" = \\fI")
                    .and_then(|value| value.strip_suffix("\\fR"))
                    .map(|value| value.replace("\\-", "-").replace("\\(dq", "\""));
                sections
                    .get_mut(&current)
                    .unwrap_or_else(|| panic!("key {key} before any section marker"))
                    .insert(key.to_owned(), default);
            }
            after_tag = false;
        }
        sections
    }

    /// The keys the parser accepts where `probe` puts the unknown key
    /// `bogus_key`, from serde's "expected one of" message.
    fn accepted_keys(probe: &str) -> BTreeSet<String> {
        let err = crate::config::parse_str(probe, Path::new("probe.toml"))
            .expect_err("bogus_key is refused");
        let message = &err.issues[0].message;
        let (_, expected) = message
            .split_once("expected")
            .unwrap_or_else(|| panic!("no list of keys in {message:?}"));
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_config_page_documents_exactly_the_keys_the_parser_accepts() {
        let documented = documented_keys();
        let tables: BTreeSet<String> = [
            "firewall", "bans", "systemd", "hooks", "dns", "jails", "fleet", "on_ban", "on_unban",
            "metrics",
        ]
        .map(str::to_owned)
        .into();
        let mut top = accepted_keys("bogus_key = 1\n");
        assert!(tables.is_subset(&top), "{top:?}");
        top.retain(|key| !tables.contains(key));
        let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        expected.insert("(top)", top);
        for table in [
            "firewall", "bans", "systemd", "hooks", "dns", "fleet", "metrics",
        ] {
            expected.insert(table, accepted_keys(&format!("[{table}]\nbogus_key = 1\n")));
        }
        expected.insert(
            "dns.allow",
            accepted_keys("[[dns.allow]]\nname = \"a.example\"\nbogus_key = 1\n"),
        );
        let on_ban = accepted_keys("[[on_ban]]\nexec = [\"/bin/true\"]\nbogus_key = 1\n");
        let on_unban = accepted_keys("[[on_unban]]\nexec = [\"/bin/true\"]\nbogus_key = 1\n");
        assert_eq!(on_ban, on_unban, "one section documents both");
        expected.insert("on_ban", on_ban);
        // [jails] is read by hand (RawJails): max_tracked, then jail tables.
        expected.insert("jails", ["max_tracked".to_owned()].into());
        expected.insert(
            "jails.NAME",
            accepted_keys("[jails.x]\nfiles = [\"/var/log/x\"]\nbogus_key = 1\n"),
        );
        expected.insert(
            "jails.NAME.increment",
            accepted_keys("[jails.x]\nfiles = [\"/var/log/x\"]\nincrement = { bogus_key = 1 }\n"),
        );
        for (section, keys) in &expected {
            let page: BTreeSet<String> = documented
                .get(*section)
                .unwrap_or_else(|| panic!("orch.toml(5) has no section {section}"))
                .keys()
                .cloned()
                .collect();
            assert_eq!(&page, keys, "orch.toml(5) section {section}");
        }
        let marked: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
        let checked: BTreeSet<&str> = expected.keys().copied().collect();
        assert_eq!(marked, checked, "every section marker is checked");
    }

    #[test]
    fn the_config_page_shows_the_embedded_defaults() {
        let example: toml::Table =
            toml::from_str(crate::config::EMBEDDED_DEFAULT).expect("the embedded default parses");
        let documented = documented_keys();
        let value_of = |text: &str| -> toml::Value {
            let table: toml::Table = toml::from_str(&format!("v = {text}"))
                .unwrap_or_else(|err| panic!("{text:?} is not a TOML value: {err}"));
            table["v"].clone()
        };
        let mut seen = 0;
        for (key, value) in &example {
            match value {
                toml::Value::Table(table) => {
                    for (inner, value) in table {
                        if value.is_table() {
                            continue;
                        }
                        let shown = documented[key.as_str()][inner.as_str()]
                            .as_deref()
                            .unwrap_or_else(|| panic!("{key}.{inner} shows no default"));
                        assert_eq!(&value_of(shown), value, "{key}.{inner}");
                        seen += 1;
                    }
                }
                value => {
                    let shown = documented["(top)"][key.as_str()]
                        .as_deref()
                        .unwrap_or_else(|| panic!("{key} shows no default"));
                    assert_eq!(&value_of(shown), value, "{key}");
                    seen += 1;
                }
            }
        }
        let shown = documented
            .values()
            .flat_map(|keys| keys.values())
            .filter(|default| default.is_some())
            .count();
        assert_eq!(
            seen, shown,
            "every default orch.toml(5) shows is one examples/orch.toml sets"
        );
    }
}
