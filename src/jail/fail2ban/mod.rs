//! fail2ban's own filter.d `.conf` filters, read and run by orch.
//!
//! A reference names a filter file and, optionally, options as a jail.conf
//! `filter =` line gives them: `/etc/fail2ban/filter.d/sshd.conf[mode=aggressive]`.
//!
//! - [`ini`]: the INI files, includes, `.local` overrides, `%(name)s`.
//! - [`reader`]: the filter's options (`[Definition]`, `[Init]`, `<tag>`
//!   substitution between options).
//! - [`tags`]: `<HOST>`, `<F-USER>`, ... and Python regex syntax → PCRE2.
//! - [`dates`]: date templates (the date is cut out before matching).
//! - [`backtrack`]: the engine every pattern here runs on, PCRE2 bounded
//!   by a match limit (a third outcome, `LimitHit`, next to match and no
//!   match).
//! - [`filter`]: the compiled filter, line buffer and multi-line state;
//!   it implements [`LineFilter`](super::line_filter::LineFilter).
//!
//! Nothing here resolves DNS or bans: a host name captured by `<HOST>` is
//! reported as unresolved and never becomes a ban.

pub mod backtrack;
pub mod dates;
pub mod filter;
pub mod ini;
pub mod reader;
pub mod tags;

use std::path::PathBuf;

pub use filter::{Fail2banFilter, Failure, FailureHost};

/// Why a fail2ban filter could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Fail2banError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Include { path: String, message: String },
    #[error("{origin}: {message}")]
    Interpolation { origin: String, message: String },
    #[error("{origin}: {message}")]
    Option { origin: String, message: String },
    #[error("{reference}: bad filter reference: {message}")]
    Reference { reference: String, message: String },
    #[error("{origin}: {kind}[{index}] does not compile: {message}\n  pattern: {pattern}")]
    Regex {
        origin: String,
        kind: &'static str,
        index: usize,
        message: String,
        pattern: String,
    },
    #[error("{origin}: failregex[{index}] has no <HOST>, <ADDR>, <F-ID> or <F-MLFID> group")]
    NoFailureId { origin: String, index: usize },
    #[error("{origin}: no failregex")]
    NoFailRegex { origin: String },
    #[error("datepattern {pattern:?}: {message}")]
    Date { pattern: String, message: String },
}

/// A parsed filter reference: the file and the jail-supplied options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRef {
    pub path: PathBuf,
    /// Option names as written (the reader lowercases them).
    pub options: Vec<(String, String)>,
}

impl FilterRef {
    /// Parses `path` or `path[name=value, name="quoted, value", ...]`.
    pub fn parse(reference: &str) -> Result<FilterRef, Fail2banError> {
        let error = |message: &str| Fail2banError::Reference {
            reference: reference.to_string(),
            message: message.to_string(),
        };
        let reference_trimmed = reference.trim();
        let Some(open) = reference_trimmed.find('[') else {
            return Ok(FilterRef {
                path: PathBuf::from(reference_trimmed),
                options: Vec::new(),
            });
        };
        let path = &reference_trimmed[..open];
        let Some(body) = reference_trimmed[open + 1..].strip_suffix(']') else {
            return Err(error("options must end with `]`"));
        };
        if path.is_empty() {
            return Err(error("no file before `[`"));
        }
        let mut options = Vec::new();
        let mut rest = body.trim_start();
        while !rest.is_empty() {
            let Some(eq) = rest.find('=') else {
                return Err(error("expected `name=value`"));
            };
            let name = rest[..eq].trim();
            if name.is_empty() || name.contains([',', '"', '\'']) {
                return Err(error("expected `name=value`"));
            }
            let after = rest[eq + 1..].trim_start();
            let (value, tail) = match after.chars().next() {
                Some(quote @ ('"' | '\'')) => {
                    let Some(close) = after[1..].find(quote) else {
                        return Err(error("unterminated quote"));
                    };
                    (&after[1..1 + close], &after[close + 2..])
                }
                _ => {
                    let end = after.find(',').unwrap_or(after.len());
                    (after[..end].trim_end(), &after[end..])
                }
            };
            options.push((name.to_string(), value.to_string()));
            let tail = tail.trim_start();
            rest = match tail.strip_prefix(',') {
                Some(next) => next.trim_start(),
                None if tail.is_empty() => tail,
                None => return Err(error("expected `,` between options")),
            };
        }
        Ok(FilterRef {
            path: PathBuf::from(path),
            options,
        })
    }

    /// Whether `spec` looks like a fail2ban filter reference (a `.conf`
    /// or `.local` file, possibly with options).
    pub fn looks_like(spec: &str) -> bool {
        let base = spec.split('[').next().unwrap_or(spec).trim();
        base.ends_with(".conf") || base.ends_with(".local")
    }
}

#[cfg(test)]
mod tests;
