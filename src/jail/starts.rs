//! Which failregex a message can match, told from how it starts: when every
//! failregex is anchored at the start (`^`), each one's matches all begin
//! with one of a few literals ("Failed ", "Invalid user ", …), found when
//! the filter loads. A message that begins with none of a pattern's
//! literals cannot match that pattern, so the first pattern, in priority
//! order, whose literals admit the message is the only one that can win.
//! `super::filter` then checks that one pattern alone (see
//! [`super::extract::SplitExtractor::find`]) instead of running the DFA of
//! all patterns over the whole message.
//!
//! This module only rules patterns out; it must never say that a pattern
//! matches. A pattern whose starts are unknown (not anchored, or too many
//! literals) stops the walk: [`Candidate::Unknown`] sends the caller the
//! slow way, which decides everything.

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, Look};

/// What [`StartGuards::candidate`] says of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    /// No failregex can match the message.
    NoPattern,
    /// Failregex `index` is the only one that can win: every pattern
    /// listed before it is ruled out.
    Pattern(usize),
    /// A pattern that cannot be ruled out this way comes first.
    Unknown,
}

/// Per failregex, in priority order, the literals its matches start with.
#[derive(Debug, Clone)]
pub struct StartGuards {
    /// `None` for a pattern whose matches may start with anything.
    per_pattern: Vec<Option<Vec<Vec<u8>>>>,
}

impl StartGuards {
    /// The guards for `patterns` (tags already expanded), or `None` when a
    /// pattern is not anchored at the start, since an unanchored match could
    /// begin anywhere. A pattern that does not parse yields `None` too (the
    /// filter reports that error itself).
    pub fn new(patterns: &[String]) -> Option<StartGuards> {
        let mut per_pattern = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let hir = regex_syntax::parse(pattern).ok()?;
            if !hir.properties().look_set_prefix().contains(Look::Start) {
                return None;
            }
            per_pattern.push(start_literals(&hir));
        }
        Some(StartGuards { per_pattern })
    }

    /// The only failregex that can match `message`, if this can tell.
    pub fn candidate(&self, message: &str) -> Candidate {
        let bytes = message.as_bytes();
        for (index, starts) in self.per_pattern.iter().enumerate() {
            let Some(starts) = starts else {
                return Candidate::Unknown;
            };
            if starts.iter().any(|start| bytes.starts_with(start)) {
                return Candidate::Pattern(index);
            }
        }
        Candidate::NoPattern
    }
}

/// The literals every match of `hir` starts with; `None` when that set is
/// infinite or was cut short (then a match may start with anything).
fn start_literals(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix);
    let seq = extractor.extract(hir);
    let literals = seq.literals()?;
    Some(literals.iter().map(|l| l.as_bytes().to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guards(patterns: &[&str]) -> Option<StartGuards> {
        StartGuards::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn rules_out_by_start_in_priority_order() {
        let g = guards(&[
            r"^Failed (?:password|none) for .*? from \S+$",
            r"^(?:error: )?maximum attempts from \S+$",
            r"^Failed .*$",
        ])
        .unwrap();
        assert_eq!(
            g.candidate("Failed password for x from 1.2.3.4"),
            Candidate::Pattern(0)
        );
        // Starts like the first pattern's literal only in part.
        assert_eq!(g.candidate("Failed publickey"), Candidate::Pattern(2));
        assert_eq!(
            g.candidate("error: maximum attempts from 1.2.3.4"),
            Candidate::Pattern(1)
        );
        assert_eq!(g.candidate("Accepted password"), Candidate::NoPattern);
    }

    #[test]
    fn unknown_starts_stop_the_walk() {
        // Not anchored: no guards at all.
        assert!(guards(&[r"^a", r"from \S+$"]).is_none());
        // Anchored, but may start with any byte.
        let g = guards(&[r"^Failed \S+$", r"^.*from \S+$", r"^Invalid \S+$"]).unwrap();
        assert_eq!(g.candidate("Failed x"), Candidate::Pattern(0));
        assert_eq!(g.candidate("Invalid x"), Candidate::Unknown);
    }

    #[test]
    fn builtin_sshd_patterns_all_have_guards() {
        let filter = crate::jail::filter::Filter::builtin("sshd")
            .unwrap()
            .unwrap();
        assert!(filter.has_start_guards());
    }
}
