//! fail2ban's configuration files as fail2ban reads them: Python
//! `configparser` INI syntax, `[INCLUDES] before/after` (relative to the
//! including file, each file followed by its `.local`), later files
//! overriding earlier ones section by section (the overridden values stay
//! reachable as `%(known/name)s`), and `%(name)s` interpolation with
//! fail2ban's `%(section/name)s` extension.
//!
//! This module reads text and resolves values; it must not know what a
//! filter is (that is `reader.rs`) nor compile any pattern.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::Fail2banError;

/// How deep `%(name)s` references may nest (Python's limit).
pub const MAX_INTERPOLATION_DEPTH: usize = 10;

/// How deep `[INCLUDES]` may nest; deeper chains are refused as loops.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Options of one section, names lowercased as Python's `optionxform` does.
pub type Options = HashMap<String, String>;

/// The section name used for `[DEFAULT]` in [`IniFile::lines`] and
/// [`Config::location`].
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// One parsed file: `[DEFAULT]` and the other sections in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IniFile {
    pub defaults: Options,
    pub sections: Vec<(String, Options)>,
    /// The 1-based line where each (section, option) was last set
    /// (`[DEFAULT]` as [`DEFAULT_SECTION`]), for messages.
    pub lines: HashMap<(String, String), usize>,
}

impl IniFile {
    /// The options of section `name` in this file.
    pub fn section(&self, name: &str) -> Option<&Options> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }
}

/// Parses INI text as Python's `configparser` does with fail2ban's
/// settings: `=` or `:` delimiters, `#`/`;` comment lines, `;` inline
/// comments after whitespace, indented continuation lines (joined with
/// `\n`; empty lines inside a value kept, trailing ones dropped).
pub fn parse(text: &str, origin: &str) -> Result<IniFile, Fail2banError> {
    let mut file = IniFile::default();
    // Where the current section's options live: None = DEFAULT.
    let mut current: Option<Option<usize>> = None;
    // The option being continued: its name, its first line number and its
    // lines so far.
    let mut option: Option<(String, usize, Vec<String>)> = None;
    let mut indent_level = 0usize;

    fn store(
        file: &mut IniFile,
        current: Option<Option<usize>>,
        option: &mut Option<(String, usize, Vec<String>)>,
    ) {
        let (Some(section), Some((name, line, lines))) = (current, option.take()) else {
            return;
        };
        let mut value = lines.join("\n");
        value.truncate(value.trim_end().len());
        let section_name = match section {
            None => DEFAULT_SECTION.to_string(),
            Some(index) => file.sections[index].0.clone(),
        };
        file.lines.insert((section_name, name.clone()), line);
        match section {
            None => file.defaults.insert(name, value),
            Some(index) => file.sections[index].1.insert(name, value),
        };
    }

    for (number, raw_line) in text.lines().enumerate() {
        let line = raw_line.trim_end_matches('\r');
        let comment_start = inline_comment_start(line);
        let is_comment_line = {
            let t = line.trim();
            t.starts_with('#') || t.starts_with(';')
        };
        let content = if is_comment_line {
            ""
        } else {
            line[..comment_start.unwrap_or(line.len())].trim()
        };
        if content.is_empty() {
            // An empty line (not a comment) inside a value is kept.
            if !is_comment_line
                && comment_start.is_none()
                && let Some((_, _, lines)) = option.as_mut()
            {
                lines.push(String::new());
            }
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if option.is_some() && indent > indent_level {
            if let Some((_, _, lines)) = option.as_mut() {
                lines.push(content.to_string());
            }
            continue;
        }
        indent_level = indent;
        store(&mut file, current, &mut option);
        if let Some(header) = content.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = Some(if header == "DEFAULT" {
                None
            } else if let Some(index) = file.sections.iter().position(|(n, _)| n == header) {
                Some(index)
            } else {
                file.sections.push((header.to_string(), Options::new()));
                Some(file.sections.len() - 1)
            });
            continue;
        }
        if current.is_none() {
            return Err(Fail2banError::Syntax {
                path: origin.to_string(),
                line: number + 1,
                message: "option before any [section]".to_string(),
            });
        }
        let Some(delimiter) = content.find(['=', ':']) else {
            return Err(Fail2banError::Syntax {
                path: origin.to_string(),
                line: number + 1,
                message: format!("expected `name = value`, found {content:?}"),
            });
        };
        let name = content[..delimiter].trim_end().to_lowercase();
        let value = content[delimiter + 1..].trim().to_string();
        option = Some((name, number + 1, vec![value]));
    }
    store(&mut file, current, &mut option);
    Ok(file)
}

/// Where an inline `;` comment starts: a `;` at the start or after
/// whitespace.
fn inline_comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b';' && (i == 0 || bytes[i - 1].is_ascii_whitespace()))
}

/// Every file read for `main`, in reading order: `main`, its `.d/*.conf`,
/// its `.local`, its `.d/*.local`, each preceded by its `before` includes
/// and followed by its `after` includes (recursively, each include followed
/// by its own `.local`). Files that do not exist are left out, except
/// `main`.
pub fn files_for(main: &Path) -> Result<Vec<PathBuf>, Fail2banError> {
    let mut roots = vec![main.to_path_buf()];
    let stem = main.with_extension("");
    let dir = PathBuf::from(format!("{}.d", stem.display()));
    let listed = |ext: &str| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        found.sort();
        found
    };
    roots.extend(listed("conf"));
    let local = main.with_extension("local");
    if local.is_file() {
        roots.push(local);
    }
    roots.extend(listed("local"));
    let mut files = Vec::new();
    let expanded = with_locals(&roots);
    for (index, file) in expanded.iter().enumerate() {
        if index > 0 && !file.is_file() {
            continue;
        }
        collect_includes(file, &mut Vec::new(), &mut files)?;
    }
    // A file reached twice (common.local after common.conf, and again as
    // common.conf's `after`) is read once, at its first place.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    Ok(files)
}

/// Adds `X.local` after each `X.conf` that has one, as fail2ban does.
fn with_locals(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for file in files {
        out.push(file.clone());
        let local = file.with_extension("local");
        if !files.contains(&local) && local.is_file() {
            out.push(local);
        }
    }
    out
}

fn collect_includes(
    file: &Path,
    seen: &mut Vec<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> Result<(), Fail2banError> {
    if seen.len() > MAX_INCLUDE_DEPTH {
        return Err(Fail2banError::Include {
            path: file.display().to_string(),
            message: "includes nest too deep (a loop?)".to_string(),
        });
    }
    let text = read(file)?;
    let parsed = parse(&text, &file.display().to_string())?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let includes = |key: &str| -> Vec<PathBuf> {
        parsed
            .section("INCLUDES")
            .and_then(|s| s.get(key))
            .map(|v| {
                v.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| dir.join(l))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (before, after) = (includes("before"), includes("after"));
    seen.push(file.to_path_buf());
    let mut run = |list: Vec<PathBuf>, out: &mut Vec<PathBuf>| -> Result<(), Fail2banError> {
        for include in with_locals(&list) {
            // A missing include is skipped, as fail2ban does
            // (common.conf includes an optional common.local).
            if seen.contains(&include) || !include.is_file() {
                continue;
            }
            collect_includes(&include, seen, out)?;
        }
        Ok(())
    };
    run(before, out)?;
    out.push(file.to_path_buf());
    run(after, out)?;
    seen.pop();
    Ok(())
}

fn read(path: &Path) -> Result<String, Fail2banError> {
    std::fs::read_to_string(path).map_err(|source| Fail2banError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// All files merged, as fail2ban's config parser holds them.
#[derive(Debug, Default, Clone)]
pub struct Config {
    pub defaults: Options,
    pub sections: HashMap<String, Options>,
    /// Where the values came from, for error messages.
    pub origin: String,
    /// The file and line that set each (section, option) last.
    locations: HashMap<(String, String), (String, usize)>,
}

impl Config {
    /// Reads `main` and everything it includes.
    pub fn load(main: &Path) -> Result<Config, Fail2banError> {
        let files = files_for(main)?;
        let mut config = Config {
            origin: main.display().to_string(),
            ..Config::default()
        };
        for file in files {
            let text = read(&file)?;
            let name = file.display().to_string();
            config.merge_from(parse(&text, &name)?, &name);
        }
        Ok(config)
    }

    /// Builds a config from texts already parsed (tests, embedded files).
    pub fn from_files(files: Vec<IniFile>, origin: &str) -> Config {
        let mut config = Config {
            origin: origin.to_string(),
            ..Config::default()
        };
        for file in files {
            config.merge(file);
        }
        config
    }

    /// Merges a later file: its values override; the values they replace
    /// are kept in `KNOWN/<section>`.
    pub fn merge(&mut self, file: IniFile) {
        let origin = self.origin.clone();
        self.merge_from(file, &origin);
    }

    /// [`Config::merge`] of a file read from `path`, whose lines become
    /// the locations of its options.
    pub fn merge_from(&mut self, file: IniFile, path: &str) {
        for (key, line) in file.lines {
            self.locations.insert(key, (path.to_string(), line));
        }
        self.defaults.extend(file.defaults);
        for (name, options) in file.sections {
            match self.sections.get_mut(&name) {
                Some(existing) => {
                    let replaced: Options = existing
                        .iter()
                        .filter(|(k, _)| options.contains_key(*k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    existing.extend(options);
                    self.sections
                        .entry(format!("KNOWN/{name}"))
                        .or_default()
                        .extend(replaced);
                }
                None => {
                    self.sections.insert(name, options);
                }
            }
        }
    }

    /// Where `option` as seen from `section` was set: the section's own
    /// line, else `[DEFAULT]`'s, as `file:line`.
    pub fn location(&self, section: &str, option: &str) -> Option<String> {
        let option = option.to_lowercase();
        [section, DEFAULT_SECTION]
            .iter()
            .find_map(|sec| self.locations.get(&(sec.to_string(), option.clone())))
            .map(|(file, line)| format!("{file}:{line}"))
    }

    pub fn has_section(&self, name: &str) -> bool {
        self.sections.contains_key(name)
    }

    /// The raw (uninterpolated) value of `option` as seen from `section`:
    /// `vars` first, then the section, then `[DEFAULT]`.
    pub fn raw<'a>(&'a self, section: &str, option: &str, vars: &'a Options) -> Option<&'a str> {
        let key = option.to_lowercase();
        vars.get(&key)
            .or_else(|| self.sections.get(section).and_then(|s| s.get(&key)))
            .or_else(|| self.defaults.get(&key))
            .map(String::as_str)
    }

    /// The interpolated value of `option` in `section`, or `None` when it
    /// is not set. `vars` (jail-supplied options) take precedence.
    pub fn get(
        &self,
        section: &str,
        option: &str,
        vars: &Options,
    ) -> Result<Option<String>, Fail2banError> {
        match self.raw(section, option, vars) {
            Some(raw) => self.interpolate(raw, section, vars, 1).map(Some),
            None => Ok(None),
        }
    }

    /// Like [`Config::get`], but `section/option` names another section's
    /// option (`known/` the value this section's was overriding,
    /// `default/` the `[DEFAULT]` one), as fail2ban's `get_ex`.
    pub fn get_ex(
        &self,
        section: &str,
        option: &str,
        vars: &Options,
    ) -> Result<Option<String>, Fail2banError> {
        if let Some((sec, opt)) = split_section_option(option) {
            let lower = sec.to_lowercase();
            let candidates: Vec<String> = if lower == "known" {
                vec![format!("KNOWN/{section}"), section.to_string()]
            } else if lower == "default" {
                vec!["DEFAULT".to_string()]
            } else {
                vec![sec.to_string()]
            };
            let empty = Options::new();
            for candidate in candidates {
                let found = if candidate == "DEFAULT" {
                    self.defaults.get(&opt.to_lowercase()).map(String::as_str)
                } else if let Some(s) = self.sections.get(&candidate) {
                    s.get(&opt.to_lowercase())
                        .map(String::as_str)
                        .or_else(|| self.defaults.get(&opt.to_lowercase()).map(String::as_str))
                } else {
                    None
                };
                if let Some(raw) = found {
                    let home = if candidate == "DEFAULT" {
                        section
                    } else {
                        candidate.as_str()
                    };
                    return self.interpolate(raw, home, &empty, 1).map(Some);
                }
            }
        }
        self.get(section, option, vars)
    }

    /// Options set in `section` itself (not inherited from `[DEFAULT]`).
    pub fn own_options(&self, section: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .sections
            .get(section)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Expands `%(name)s` and `%%` in `value`, as seen from `section`.
    pub fn interpolate(
        &self,
        value: &str,
        section: &str,
        vars: &Options,
        depth: usize,
    ) -> Result<String, Fail2banError> {
        if !value.contains('%') {
            return Ok(value.to_string());
        }
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(self.interpolation_error(format!(
                "[{section}]: %(...)s references nest deeper than {MAX_INTERPOLATION_DEPTH} (a loop?) in {value:?}"
            )));
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(percent) = rest.find('%') {
            out.push_str(&rest[..percent]);
            let after = &rest[percent + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
                continue;
            }
            let reference = after
                .strip_prefix('(')
                .and_then(|r| r.find(")s").map(|end| (&r[..end], &r[end + 2..])));
            let Some((name, tail)) = reference else {
                return Err(self.interpolation_error(format!(
                    "[{section}]: '%' must be followed by '%' or '(name)s' in {value:?}"
                )));
            };
            let raw = self.lookup(section, name, vars).ok_or_else(|| {
                self.interpolation_error(format!("[{section}]: %({name})s is not defined"))
            })?;
            out.push_str(&self.interpolate(&raw, section, vars, depth + 1)?);
            rest = tail;
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The raw value a `%(name)s` reference stands for.
    fn lookup(&self, section: &str, name: &str, vars: &Options) -> Option<String> {
        if let Some(raw) = self.raw(section, name, vars) {
            return Some(raw.to_string());
        }
        let (sec, opt) = split_section_option(name)?;
        let opt = opt.to_lowercase();
        let lower = sec.to_lowercase();
        let from_section = match lower.as_str() {
            "default" => None,
            "known" => self
                .sections
                .get(&format!("KNOWN/{section}"))
                .and_then(|s| s.get(&opt)),
            _ => self.sections.get(sec).and_then(|s| s.get(&opt)),
        };
        from_section.or_else(|| self.defaults.get(&opt)).cloned()
    }

    fn interpolation_error(&self, message: String) -> Fail2banError {
        Fail2banError::Interpolation {
            origin: self.origin.clone(),
            message,
        }
    }
}

/// `section/option` → (`section`, `option`), for names of that shape.
fn split_section_option(name: &str) -> Option<(&str, &str)> {
    let (sec, opt) = name.split_once('/')?;
    let valid_sec = !sec.is_empty()
        && sec
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let valid_opt = !opt.is_empty() && !opt.contains(char::is_whitespace) && !opt.contains('>');
    (valid_sec && valid_opt).then_some((sec, opt))
}
