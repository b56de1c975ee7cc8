//! The last configuration that loaded, kept in the state directory, so
//! that a typo in orch.toml never leaves the host unprotected: a daemon
//! started on an invalid configuration runs on the last good one (or on
//! the embedded default) and applies every stored ban, instead of
//! refusing to start.
//!
//! Each successful load copies the files it read, in merge order, into
//! `<state_dir>/last-good-config/` (written to a temporary directory, then
//! renamed into place). This module only saves and loads; the daemon
//! decides when, and says loudly that it runs on a fallback.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Document, SYSTEM_CONFIG, build};

/// The directory, inside the state directory.
const DIR: &str = "last-good-config";
/// Where the next copy is written before it replaces the last one.
const TMP_DIR: &str = "last-good-config.tmp";
/// Where the previous copy goes while the new one is renamed in.
const OLD_DIR: &str = "last-good-config.old";

/// Saves the files `config` was read from as the last good configuration.
pub fn save(config: &Config) -> io::Result<()> {
    let state = &config.state_dir;
    let (dir, tmp, old) = (state.join(DIR), state.join(TMP_DIR), state.join(OLD_DIR));
    let _ = fs::remove_dir_all(&tmp);
    // The state directory is private (the store makes it so too); so is
    // the copy, which may name secret files and hooks.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&tmp)?;
    for (index, source) in config.sources.iter().enumerate() {
        let text = fs::read_to_string(source)?;
        let name = format!("{index:02}.toml");
        let header = format!("# saved by orch from {}\n", source.display());
        fs::write(tmp.join(name), header + &text)?;
    }
    let _ = fs::remove_dir_all(&old);
    if dir.exists() {
        fs::rename(&dir, &old)?;
    }
    fs::rename(&tmp, &dir)?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// The last good configuration saved in `state_dir`, if there is one that
/// still loads.
pub fn load(state_dir: &Path) -> Option<Result<Config, ConfigError>> {
    let dir = state_dir.join(DIR);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let mut docs = Vec::with_capacity(files.len());
    for file in &files {
        docs.push(Document::new(file, fs::read_to_string(file).ok()?));
    }
    Some(build(&docs))
}

/// The state directory an invalid configuration most likely means: its
/// `state_dir` if the main file still parses as TOML far enough to hold
/// one, else the default.
pub fn state_dir_of(explicit: Option<&Path>) -> PathBuf {
    let main = explicit.unwrap_or(Path::new(SYSTEM_CONFIG));
    fs::read_to_string(main)
        .ok()
        .and_then(|text| {
            // Only the first lines before a [section] can set it.
            text.lines()
                .take_while(|line| !line.trim_start().starts_with('['))
                .find_map(|line| {
                    let (key, value) = line.split_once('=')?;
                    (key.trim() == "state_dir").then(|| value.trim().trim_matches('"').to_string())
                })
        })
        .filter(|dir| dir.starts_with('/'))
        .map(PathBuf::from)
        .unwrap_or_else(|| Config::default().state_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_files_load_back_as_the_same_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("orch.toml");
        std::fs::write(
            &main,
            format!(
                "state_dir = \"{}\"\nallow = [\"192.0.2.1\"]\n",
                dir.path().display()
            ),
        )
        .expect("write");
        let config = super::super::load_default_locations(Some(&main)).expect("valid");
        save(&config).expect("save");
        save(&config).expect("save again over the first copy");
        let loaded = load(dir.path()).expect("saved").expect("loads");
        assert_eq!(loaded.allow, config.allow);
        assert_eq!(loaded.state_dir, config.state_dir);
        assert_eq!(state_dir_of(Some(&main)), dir.path());
        std::fs::write(&main, "allow = [\"not an address\"]\n").expect("write");
        assert_eq!(state_dir_of(Some(&main)), Config::default().state_dir);
        assert!(load(&dir.path().join("nowhere")).is_none());
        let fresh = dir.path().join("fresh-state");
        let moved = Config {
            state_dir: fresh.clone(),
            ..loaded
        };
        save(&moved).expect("save into a missing state dir");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&fresh)
            .expect("made")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the state dir is private: {mode:o}");
    }
}
