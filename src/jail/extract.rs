//! Capturing `host` and `user` from a failregex match with DFAs only, for
//! the pattern shapes native filters use, instead of simulating the NFA
//! (the backtracker costs about 400 ns on a typical sshd line; this about a
//! quarter of that).
//!
//! A failregex qualifies when, at its top level, it is a sequence
//! `PREFIX (?P<user>.*?) LITERAL (?P<host>IP) SUFFIX`, or
//! `PREFIX (?P<host>IP) SUFFIX` (the `<USER>` and `<HOST>`/`<ADDR>` tags
//! expand to those groups), and SUFFIX can neither start with a character
//! an address can contain nor match empty before one. Then the captures the
//! backtracker would report are found exactly like this, given the span the
//! filter's combined DFA matched:
//!
//! 1. The user starts where PREFIX's leftmost-first (priority) match ends:
//!    that is the PREFIX parse the backtracker tries first.
//! 2. The user is lazy, so it ends at the first occurrence of LITERAL from
//!    there at which `LITERAL IP SUFFIX` matches (anchored, within the span).
//!    When LITERAL occurs only once in the whole match, the match must go
//!    through it, so that check is skipped. Without a user, `IP SUFFIX`
//!    must match right after PREFIX.
//! 3. The host is then the whole run of address characters after LITERAL:
//!    SUFFIX cannot start inside it, nor end it early.
//!
//! Anything else (another shape, or a step that finds nothing, which a
//! match from the combined DFA rules out) answers `None`, and the caller
//! runs the backtracker. This module must not decide whether a line
//! matches: it only locates groups in a match already found.

use std::ops::Range;

use regex_automata::hybrid;
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::{Hir, HirKind};

/// Bytes an address tag can match (see `IP_PATTERN` in filter.rs).
const ADDRESS_BYTES: &[u8] = b"0123456789abcdefABCDEF:.";

/// [`ADDRESS_BYTES`] as a table, for the scan of the host.
const IS_ADDRESS_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < ADDRESS_BYTES.len() {
        table[ADDRESS_BYTES[i] as usize] = true;
        i += 1;
    }
    table
};

/// The groups a native filter reports of a failregex match, borrowed from
/// the message; whichever engine located them (this module's DFAs, the
/// bounded backtracker or the `regex` crate, see `super::filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Captures<'a> {
    /// The text of the group named `host` (or `addr`), not yet validated.
    pub host: Option<&'a str>,
    /// The text of the group named `user`, if the pattern has one and it
    /// took part in the match.
    pub user: Option<&'a str>,
}

/// The DFA-only extractor of one failregex.
#[derive(Debug)]
pub struct SplitExtractor {
    /// PREFIX, run anchored at the start of the match.
    prefix: hybrid::dfa::DFA,
    /// LITERAL, when the pattern has a user group.
    between: Option<memchr::memmem::Finder<'static>>,
    /// `LITERAL IP SUFFIX` or `IP SUFFIX`, run anchored.
    rest: hybrid::dfa::DFA,
}

/// The lazy DFAs' caches of one [`SplitExtractor`], kept by the caller.
#[derive(Debug, Clone)]
pub struct SplitCaches {
    prefix: hybrid::dfa::Cache,
    rest: hybrid::dfa::Cache,
}

impl SplitExtractor {
    /// The extractor for `pattern` (tags already expanded), if its shape
    /// qualifies; `ip_pattern` is what the address tags expand to.
    pub fn new(pattern: &str, ip_pattern: &str) -> Option<SplitExtractor> {
        let hir = syntax::parse(pattern).ok()?;
        let HirKind::Concat(parts) = hir.kind() else {
            return None;
        };
        let ip = syntax::parse(ip_pattern).ok()?;
        let named = |part: &Hir, names: &[&str]| match part.kind() {
            HirKind::Capture(cap) => cap.name.as_deref().is_some_and(|n| names.contains(&n)),
            _ => false,
        };
        let host = parts.iter().position(|p| named(p, &["host", "addr"]))?;
        match parts[host].kind() {
            HirKind::Capture(cap) if *cap.sub == ip => {}
            _ => return None,
        }
        let user = parts.iter().position(|p| named(p, &["user"]));
        let (prefix_end, between, rest_start) = match user {
            None => (host, None, host),
            Some(user) => {
                if user + 2 != host || !is_lazy_any(&parts[user]) {
                    return None;
                }
                let HirKind::Literal(literal) = parts[user + 1].kind() else {
                    return None;
                };
                if literal.0.is_empty() {
                    return None;
                }
                let finder = memchr::memmem::Finder::new(&literal.0[..]).into_owned();
                (user, Some(finder), user + 1)
            }
        };
        let suffix = Hir::concat(parts[host + 1..].to_vec());
        if !suffix_ends_address(&suffix)? {
            return None;
        }
        Some(SplitExtractor {
            prefix: lazy_dfa(&Hir::concat(parts[..prefix_end].to_vec()))?,
            between,
            rest: lazy_dfa(&Hir::concat(parts[rest_start..].to_vec()))?,
        })
    }

    /// Fresh caches for [`SplitExtractor::extract`].
    pub fn create_caches(&self) -> SplitCaches {
        SplitCaches {
            prefix: self.prefix.create_cache(),
            rest: self.rest.create_cache(),
        }
    }

    /// The groups of the match at `span` of `message`; `None` when this
    /// extractor cannot tell (the caller then runs the backtracker).
    pub fn extract<'a>(
        &self,
        message: &'a str,
        span: Range<usize>,
        caches: &mut SplitCaches,
    ) -> Option<Captures<'a>> {
        self.locate(message, span, caches, Trust::MatchFound)
    }

    /// Whether this pattern matches `message` at its start along the parse
    /// the backtracker tries first, and if so its groups: as
    /// [`SplitExtractor::extract`] on the span the pattern alone would
    /// match, without running a DFA over the whole message. `None` means
    /// "no such match", not "no match": another parse of PREFIX might still
    /// match, so the caller must then decide the slow way. The pattern must
    /// be anchored at the start (see [`super::starts`]).
    pub fn find<'a>(&self, message: &'a str, caches: &mut SplitCaches) -> Option<Captures<'a>> {
        self.locate(message, 0..message.len(), caches, Trust::Verify)
    }

    fn locate<'a>(
        &self,
        message: &'a str,
        span: Range<usize>,
        caches: &mut SplitCaches,
        trust: Trust,
    ) -> Option<Captures<'a>> {
        let anchored =
            |range: Range<usize>| Input::new(message).range(range).anchored(Anchored::Yes);
        let user_start = self
            .prefix
            .try_search_fwd(&mut caches.prefix, &anchored(span.clone()))
            .ok()??
            .offset();
        let mut rest_matches = |at: usize| {
            let input = anchored(at..span.end).earliest(true);
            matches!(
                self.rest.try_search_fwd(&mut caches.rest, &input),
                Ok(Some(_))
            )
        };
        let (user, host_start) = match &self.between {
            None => {
                if !rest_matches(user_start) {
                    return None;
                }
                (None, user_start)
            }
            Some(between) => {
                let only = match trust {
                    Trust::MatchFound => only_occurrence(between, message, span.clone()),
                    Trust::Verify => None,
                };
                let user_end = match only {
                    // The match found by the caller must go through it.
                    Some(at) if at >= user_start => at,
                    _ => {
                        let window = message.as_bytes().get(user_start..span.end)?;
                        between
                            .find_iter(window)
                            .map(|offset| user_start + offset)
                            .find(|&at| rest_matches(at))?
                    }
                };
                let user = message.get(user_start..user_end)?;
                (Some(user), user_end + between.needle().len())
            }
        };
        let run = message.as_bytes().get(host_start..)?;
        let length = run
            .iter()
            .position(|&b| !IS_ADDRESS_BYTE[usize::from(b)])
            .unwrap_or(run.len());
        if host_start + length > span.end {
            return None;
        }
        Some(Captures {
            host: message.get(host_start..host_start + length),
            user,
        })
    }
}

/// What [`SplitExtractor::locate`] may take for granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// The pattern is known to match the span: a literal found once in it
    /// is where the user ends.
    MatchFound,
    /// Nothing is known: every step is checked.
    Verify,
}

#[cfg(test)]
impl SplitExtractor {
    /// Timing probes for `phase_times`: the prefix DFA alone, and the
    /// literal search alone.
    pub fn probe(
        &self,
        message: &str,
        span: Range<usize>,
        caches: &mut SplitCaches,
        which: u8,
    ) -> bool {
        match which {
            0 => {
                let input = Input::new(message).range(span).anchored(Anchored::Yes);
                matches!(
                    self.prefix.try_search_fwd(&mut caches.prefix, &input),
                    Ok(Some(_))
                )
            }
            1 => match &self.between {
                Some(between) => only_occurrence(between, message, span).is_some(),
                None => false,
            },
            _ => {
                let at = match &self.between {
                    Some(between) => match between.find(message.as_bytes()) {
                        Some(at) => at,
                        None => return false,
                    },
                    None => span.start,
                };
                let input = Input::new(message)
                    .range(at..span.end)
                    .anchored(Anchored::Yes)
                    .earliest(true);
                matches!(
                    self.rest.try_search_fwd(&mut caches.rest, &input),
                    Ok(Some(_))
                )
            }
        }
    }
}

/// Where `literal` occurs in `message[span]`, if it occurs exactly once.
fn only_occurrence(
    literal: &memchr::memmem::Finder<'_>,
    message: &str,
    span: Range<usize>,
) -> Option<usize> {
    let window = message.as_bytes().get(span.clone())?;
    let mut found = literal.find_iter(window);
    let first = found.next()?;
    found.next().is_none().then_some(span.start + first)
}

/// Whether `part` is a capture group of exactly `.*?`.
fn is_lazy_any(part: &Hir) -> bool {
    let HirKind::Capture(cap) = part.kind() else {
        return false;
    };
    let HirKind::Repetition(rep) = cap.sub.kind() else {
        return false;
    };
    let Ok(dot) = syntax::parse(".") else {
        return false;
    };
    rep.min == 0 && rep.max.is_none() && !rep.greedy && *rep.sub == dot
}

/// A lazy DFA for `hir` (leftmost-first, no captures).
fn lazy_dfa(hir: &Hir) -> Option<hybrid::dfa::DFA> {
    let nfa = thompson::Compiler::new()
        .configure(thompson::Config::new().which_captures(thompson::WhichCaptures::None))
        .build_from_hir(hir)
        .ok()?;
    hybrid::dfa::DFA::builder().build_from_nfa(nfa).ok()
}

/// Whether `suffix` can neither start with an address byte nor match the
/// empty string right before one, after any address byte (so an address
/// followed by `suffix` always ends where its run of address bytes ends).
/// `None` if the check itself could not be built.
fn suffix_ends_address(suffix: &Hir) -> Option<bool> {
    let dfa = lazy_dfa(suffix)?;
    let mut cache = dfa.create_cache();
    // A word and a non-word byte before, for `\b`.
    for before in [b'0', b'.'] {
        for &next in ADDRESS_BYTES {
            let haystack = [before, next];
            let input = Input::new(&haystack[..]).range(1..).anchored(Anchored::Yes);
            let start = dfa.start_state_forward(&mut cache, &input).ok()?;
            // Matches are reported one byte late: a match state here means
            // an empty match before `next`.
            let state = dfa.next_state(&mut cache, start, next).ok()?;
            if !state.is_dead() {
                return Some(false);
            }
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: &str = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:]+(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3})?";

    fn expand(pattern: &str) -> String {
        pattern
            .replace("<HOST>", &format!("(?P<host>{IP})"))
            .replace("<USER>", "(?P<user>.*?)")
    }

    fn extractor(pattern: &str) -> Option<SplitExtractor> {
        SplitExtractor::new(&expand(pattern), IP)
    }

    /// Extracts with both engines and checks they agree.
    fn both<'a>(pattern: &str, message: &'a str) -> Option<Captures<'a>> {
        let expanded = expand(pattern);
        let split = SplitExtractor::new(&expanded, IP).expect("shape qualifies");
        let regex = regex::Regex::new(&expanded).unwrap();
        let caps = regex.captures(message)?;
        let whole = caps.get(0).unwrap().range();
        let expected = Captures {
            host: caps.name("host").map(|m| m.as_str()),
            user: caps.name("user").map(|m| m.as_str()),
        };
        let got = split.extract(message, whole, &mut split.create_caches());
        assert_eq!(got, Some(expected), "{pattern} on {message}");
        got
    }

    #[test]
    fn agrees_with_the_backtracker() {
        let p = r"^Failed (?:password|none) for (?:invalid user )?<USER> from <HOST> port \d+(?: ssh\d)?$";
        let c = both(
            p,
            "Failed password for invalid user bob from 192.0.2.1 port 22 ssh2",
        )
        .unwrap();
        assert_eq!((c.host, c.user), (Some("192.0.2.1"), Some("bob")));
        let c = both(p, "Failed password for root from 2001:db8::1 port 22").unwrap();
        assert_eq!((c.host, c.user), (Some("2001:db8::1"), Some("root")));
        // Hostile names: only the last address counts.
        for line in [
            "Failed password for invalid user x from 1.2.3.4 port 22 ssh2 from 192.0.2.9 port 4 ssh2",
            "Failed password for x from 1.2.3.4 from 192.0.2.9 port 4",
            "Failed password for invalid user invalid user  from 192.0.2.9 port 4",
        ] {
            assert_eq!(both(p, line).unwrap().host, Some("192.0.2.9"), "{line}");
        }
        let p = r"^Connection closed by invalid user <USER> <HOST> port \d+(?: \[preauth\])?$";
        let c = both(
            p,
            "Connection closed by invalid user a b 1.2.3.4 port 2 [preauth]",
        )
        .unwrap();
        assert_eq!((c.host, c.user), (Some("1.2.3.4"), Some("a b")));
        let p = r"^Unable to negotiate with <HOST> port \d+: no matching ";
        let c = both(
            p,
            "Unable to negotiate with 1.2.3.4 port 2: no matching x 5.6.7.8 port 1",
        )
        .unwrap();
        assert_eq!((c.host, c.user), (Some("1.2.3.4"), None));
        let p = r"^pam_\w+\(sshd:auth\): authentication failure;.* rhost=<HOST>(?:\s+user=.*)?$";
        // Greedy `.*` before the host: the last `rhost=` wins, as in the
        // backtracker.
        let c = both(
            p,
            "pam_unix(sshd:auth): authentication failure; x rhost=1.2.3.4  user=r rhost=5.6.7.8",
        )
        .unwrap();
        assert_eq!(c.host, Some("5.6.7.8"));
    }

    #[test]
    fn other_shapes_are_left_to_the_backtracker() {
        // The host inside an alternation, the user after the host, a user
        // group that is not `.*?`, no literal between user and host, and
        // a suffix that may continue an address.
        for pattern in [
            r"^(?:a <HOST>|b)$",
            r"^from <HOST> user <USER>$",
            r"^user (?P<user>\S+) from <HOST>$",
            r"^user <USER>(?:x| )<HOST>$",
            r"^from <HOST>:\d+$",
            r"^from <HOST>",
            r"^from <HOST>\w*$",
        ] {
            assert!(extractor(pattern).is_none(), "{pattern}");
        }
        assert!(extractor(r"^from <HOST>$").is_some());
        assert!(extractor(r"^from <HOST>(?: port \d+)?$").is_some());
        assert!(extractor(r"^from \[<HOST>\]").is_some());
    }
}
