//! The one interface every jail pattern engine implements.
//!
//! Like ripgrep's `grep-matcher` crate, the filter code is meant never to
//! name a regex engine but to hold [`Matcher`]s. Today only
//! [`RegexMatcher`], the `regex` crate, implements it: it runs in time
//! linear in the line, so a hostile log line cannot stall the daemon (no
//! ReDoS), and its literal optimisations make the common "no match" case
//! fast. Look-around and backreferences are unsupported by design.
//!
//! fail2ban filters, whose patterns often need look-around, run on the
//! backtracking PCRE2 engine in [`super::backtrack`], bounded by a match
//! limit. It does not go through this trait (a match-limit hit is a third
//! outcome the trait cannot carry), and native filters reach the regex
//! crate through their own DFAs ([`super::extract`]). Whether this trait
//! becomes the real seam or goes is issue 18, item 5.
//!
//! The trait is deliberately small: a yes/no test and a find that returns
//! the only captures a jail cares about (the offending address and, when
//! the pattern names it, the user). Engine-specific fast paths, such as
//! `regex::RegexSet` selecting which pattern of a filter matches, live in the
//! filter next to the engine, not in the trait.

use std::fmt;

/// Captured parts of a matching line, borrowed from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Captures<'a> {
    /// The text of the group named `host` (or `addr`), not yet validated.
    pub host: Option<&'a str>,
    /// The text of the group named `user`, if the pattern has one and it
    /// took part in the match.
    pub user: Option<&'a str>,
}

/// A compiled pattern that can be tested against one log line.
pub trait Matcher: fmt::Debug + Send + Sync {
    /// Whether the pattern matches anywhere in `line`.
    fn is_match(&self, line: &str) -> bool;

    /// The leftmost match's captures, or `None` when the pattern does not
    /// match.
    fn find<'a>(&self, line: &'a str) -> Option<Captures<'a>>;
}

/// Why a pattern did not compile; the message comes from the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MatcherError {
    pub message: String,
}

/// A [`Matcher`] backed by the `regex` crate (linear time).
#[derive(Debug, Clone)]
pub struct RegexMatcher {
    regex: regex::Regex,
    /// Capture index of the `host` or `addr` group.
    host: Option<usize>,
    /// Capture index of the `user` group.
    user: Option<usize>,
}

impl RegexMatcher {
    /// Compiles `pattern` (regex crate syntax). Groups named `host` or `addr`
    /// and `user` are reported by [`Matcher::find`]; a pattern with both
    /// `host` and `addr` is refused, since it would be ambiguous.
    pub fn new(pattern: &str) -> Result<RegexMatcher, MatcherError> {
        let regex = regex::Regex::new(pattern).map_err(|e| MatcherError {
            message: e.to_string(),
        })?;
        let index_of = |wanted: &str| regex.capture_names().position(|name| name == Some(wanted));
        let (host, addr) = (index_of("host"), index_of("addr"));
        if host.is_some() && addr.is_some() {
            return Err(MatcherError {
                message: "pattern has both a `host` and an `addr` group".to_string(),
            });
        }
        let user = index_of("user");
        Ok(RegexMatcher {
            host: host.or(addr),
            user,
            regex,
        })
    }

    /// Whether the pattern has a `host` (or `addr`) group.
    pub fn has_host(&self) -> bool {
        self.host.is_some()
    }

    /// The pattern as compiled.
    pub fn as_str(&self) -> &str {
        self.regex.as_str()
    }
}

impl Matcher for RegexMatcher {
    fn is_match(&self, line: &str) -> bool {
        self.regex.is_match(line)
    }

    fn find<'a>(&self, line: &'a str) -> Option<Captures<'a>> {
        let caps = self.regex.captures(line)?;
        let text = |index: Option<usize>| index.and_then(|i| caps.get(i)).map(|m| m.as_str());
        Some(Captures {
            host: text(self.host),
            user: text(self.user),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_named_groups() {
        let m = RegexMatcher::new(r"user (?P<user>\S+) from (?P<host>\S+)$").unwrap();
        assert!(m.has_host());
        let caps = m.find("bad user bob from 192.0.2.1").unwrap();
        assert_eq!(caps.user, Some("bob"));
        assert_eq!(caps.host, Some("192.0.2.1"));
        assert!(m.is_match("user a from b"));
        assert!(m.find("nothing here").is_none());
    }

    #[test]
    fn addr_group_counts_as_host() {
        let m = RegexMatcher::new(r"from (?P<addr>\S+)").unwrap();
        let caps = m.find("from 2001:db8::1").unwrap();
        assert_eq!(caps.host, Some("2001:db8::1"));
        assert_eq!(caps.user, None);
    }

    #[test]
    fn refuses_host_and_addr_together() {
        let err = RegexMatcher::new(r"(?P<host>a)(?P<addr>b)").unwrap_err();
        assert!(err.message.contains("both"), "{err}");
    }

    #[test]
    fn reports_engine_errors() {
        let err = RegexMatcher::new(r"(unclosed").unwrap_err();
        assert!(err.message.contains("unclosed"), "{err}");
        // Look-around is a backtracking-engine feature.
        assert!(RegexMatcher::new(r"(?!x)").is_err());
    }
}
