//! The backtracking pattern engine of fail2ban filters: PCRE2 (8-bit, UTF,
//! Unicode classes), JIT-compiled when the platform allows. fail2ban's
//! patterns (failregex, prefregex, ignoreregex, date templates) use
//! look-around, conditionals and backreferences, which the linear-time
//! `regex` crate of native filters refuses; this is their only engine.
//!
//! Backtracking can take time exponential in the line, so every match runs
//! with a PCRE2 match limit (a bound on backtracking steps): a line that
//! reaches it is reported as [`Search::LimitHit`], a third outcome next to
//! a match and no match, which the filter counts (`orch status` shows it)
//! and treats as not matched. Nothing here panics on any input.
//!
//! This module compiles and runs patterns; it must not know fail2ban's
//! syntax (Python regex translation lives in [`super::tags`]).

use std::ptr::NonNull;
use std::sync::Arc;

use pcre2_sys as ffi;

/// Why a pattern did not compile; the message comes from PCRE2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    pub message: String,
}

/// Default bound on backtracking per search (PCRE2's match limit; under
/// the JIT it counts backtracking into groups, not single characters).
/// fail2ban's sample lines all match with 1,000 (with 300 some stop), so
/// 10,000 leaves ten times that; a hostile 20,000-character line then costs
/// a whole filter about 15 ms (measured over every filter.d filter,
/// `tests/fail2ban_conformance.rs`), where 200,000 let one pattern take
/// 0.5-0.9 s.
pub const DEFAULT_MATCH_LIMIT: u32 = 10_000;

/// Compile options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacktrackOptions {
    /// `^` and `$` also match at line breaks inside the subject.
    pub multiline: bool,
    /// Case-insensitive matching.
    pub caseless: bool,
    /// Backtracking steps allowed per match.
    pub match_limit: u32,
}

impl Default for BacktrackOptions {
    fn default() -> Self {
        BacktrackOptions {
            multiline: false,
            caseless: false,
            match_limit: DEFAULT_MATCH_LIMIT,
        }
    }
}

/// The result of one search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search<'a> {
    NoMatch,
    /// The match limit (or the JIT stack) was exhausted: the line is
    /// treated as not matched.
    LimitHit,
    Match(Groups<'a>),
}

/// Capture spans of one match (byte offsets into the subject).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups<'a> {
    subject: &'a str,
    /// Index 0 is the whole match.
    spans: Vec<Option<(usize, usize)>>,
    names: Arc<[(String, usize)]>,
}

impl<'a> Groups<'a> {
    /// The span of the whole match.
    pub fn span(&self) -> (usize, usize) {
        self.spans.first().copied().flatten().unwrap_or((0, 0))
    }

    /// The text of group `index`, if it took part in the match.
    pub fn get(&self, index: usize) -> Option<&'a str> {
        let (start, end) = self.spans.get(index).copied().flatten()?;
        self.subject.get(start..end)
    }

    /// The span of group `index`, if it took part in the match.
    pub fn get_span(&self, index: usize) -> Option<(usize, usize)> {
        self.spans.get(index).copied().flatten()
    }

    /// The text of the group called `name`, if it took part in the match.
    pub fn name(&self, name: &str) -> Option<&'a str> {
        self.names
            .iter()
            .filter(|(n, _)| n == name)
            .find_map(|(_, index)| self.get(*index))
    }

    /// Every named group that took part in the match, with its text.
    pub fn named(&self) -> impl Iterator<Item = (&str, &'a str)> + '_ {
        self.names
            .iter()
            .filter_map(|(name, index)| Some((name.as_str(), self.get(*index)?)))
    }
}

/// A compiled PCRE2 pattern and its match context (holding the limit).
#[derive(Debug)]
pub struct BacktrackMatcher {
    code: NonNull<ffi::pcre2_code_8>,
    context: NonNull<ffi::pcre2_match_context_8>,
    /// Named groups and their indexes, in name-table order.
    names: Arc<[(String, usize)]>,
    pattern: String,
    jit: bool,
    match_limit: u32,
}

// SAFETY: a compiled PCRE2 pattern is read-only after compilation (JIT
// compilation happens in `new`), and a match context is only read by
// `pcre2_match`; PCRE2 documents both as shareable between threads. Each
// match uses its own match data, and without an assigned JIT stack the JIT
// uses the calling thread's own stack.
unsafe impl Send for BacktrackMatcher {}
// SAFETY: as above; no method mutates shared state.
unsafe impl Sync for BacktrackMatcher {}

impl Drop for BacktrackMatcher {
    fn drop(&mut self) {
        // SAFETY: both pointers came from PCRE2 in `new`, are owned by this
        // value alone and are freed once.
        unsafe {
            ffi::pcre2_match_context_free_8(self.context.as_ptr());
            ffi::pcre2_code_free_8(self.code.as_ptr());
        }
    }
}

fn error_message(code: i32) -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; PCRE2 writes at most that
    // many bytes and returns the length or a negative error.
    let len = unsafe { ffi::pcre2_get_error_message_8(code, buffer.as_mut_ptr(), buffer.len()) };
    match usize::try_from(len) {
        Ok(len) => String::from_utf8_lossy(&buffer[..len.min(buffer.len())]).into_owned(),
        Err(_) => format!("PCRE2 error {code}"),
    }
}

impl BacktrackMatcher {
    /// Compiles `pattern` (PCRE2 syntax, UTF-8, Unicode character classes).
    pub fn new(pattern: &str, options: BacktrackOptions) -> Result<BacktrackMatcher, CompileError> {
        let mut flags = ffi::PCRE2_UTF | ffi::PCRE2_UCP;
        if options.multiline {
            flags |= ffi::PCRE2_MULTILINE;
        }
        if options.caseless {
            flags |= ffi::PCRE2_CASELESS;
        }
        let mut error_code: libc::c_int = 0;
        let mut error_offset: usize = 0;
        // SAFETY: the pattern pointer and length describe a live &str; the
        // out-parameters are valid; a null compile context means defaults.
        let raw = unsafe {
            ffi::pcre2_compile_8(
                pattern.as_ptr(),
                pattern.len(),
                flags,
                &mut error_code,
                &mut error_offset,
                std::ptr::null_mut(),
            )
        };
        let Some(code) = NonNull::new(raw) else {
            return Err(CompileError {
                message: format!("{} at offset {error_offset}", error_message(error_code)),
            });
        };
        // SAFETY: null general context means the default allocator.
        let context =
            NonNull::new(unsafe { ffi::pcre2_match_context_create_8(std::ptr::null_mut()) });
        let Some(context) = context else {
            // SAFETY: `code` is ours and not used afterwards.
            unsafe { ffi::pcre2_code_free_8(code.as_ptr()) };
            return Err(CompileError {
                message: "PCRE2: out of memory".to_string(),
            });
        };
        // SAFETY: `context` is a valid match context; these setters only
        // store the value.
        unsafe {
            ffi::pcre2_set_match_limit_8(context.as_ptr(), options.match_limit);
            ffi::pcre2_set_depth_limit_8(context.as_ptr(), options.match_limit);
        }
        // SAFETY: `code` is a valid compiled pattern; JIT failure is not an
        // error (the interpreter is used, with the same limit).
        let jit = unsafe { ffi::pcre2_jit_compile_8(code.as_ptr(), ffi::PCRE2_JIT_COMPLETE) } == 0;
        let mut matcher = BacktrackMatcher {
            code,
            context,
            names: Arc::from(Vec::new()),
            pattern: pattern.to_string(),
            jit,
            match_limit: options.match_limit,
        };
        matcher.names = Arc::from(matcher.read_name_table());
        Ok(matcher)
    }

    /// Reads PCRE2's name table: entries of `entry_size` bytes, a 2-byte
    /// big-endian group number followed by the NUL-terminated name.
    fn read_name_table(&self) -> Vec<(String, usize)> {
        let mut count: u32 = 0;
        let mut entry_size: u32 = 0;
        let mut table: *const u8 = std::ptr::null();
        // SAFETY: each call writes one value of the documented type into the
        // pointed-to local.
        let ok = unsafe {
            ffi::pcre2_pattern_info_8(
                self.code.as_ptr(),
                ffi::PCRE2_INFO_NAMECOUNT,
                (&mut count as *mut u32).cast(),
            ) == 0
                && ffi::pcre2_pattern_info_8(
                    self.code.as_ptr(),
                    ffi::PCRE2_INFO_NAMEENTRYSIZE,
                    (&mut entry_size as *mut u32).cast(),
                ) == 0
                && ffi::pcre2_pattern_info_8(
                    self.code.as_ptr(),
                    ffi::PCRE2_INFO_NAMETABLE,
                    (&mut table as *mut *const u8).cast(),
                ) == 0
        };
        if !ok || table.is_null() || count == 0 || entry_size < 3 {
            return Vec::new();
        }
        let (count, entry_size) = (count as usize, entry_size as usize);
        // SAFETY: PCRE2 guarantees the table holds `count` entries of
        // `entry_size` bytes and lives as long as the compiled pattern.
        let bytes = unsafe { std::slice::from_raw_parts(table, count * entry_size) };
        bytes
            .chunks(entry_size)
            .map(|entry| {
                let index = usize::from(entry[0]) << 8 | usize::from(entry[1]);
                let name = &entry[2..];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                (String::from_utf8_lossy(&name[..end]).into_owned(), index)
            })
            .collect()
    }

    /// Searches `subject` for the leftmost match.
    pub fn search<'a>(&self, subject: &'a str) -> Search<'a> {
        // SAFETY: a valid compiled pattern; null general context.
        let data = unsafe {
            ffi::pcre2_match_data_create_from_pattern_8(self.code.as_ptr(), std::ptr::null_mut())
        };
        let Some(data) = NonNull::new(data) else {
            return Search::LimitHit;
        };
        // SAFETY: subject pointer/length describe a live &str (valid UTF-8,
        // hence NO_UTF_CHECK); `data` and the context are valid.
        let rc = unsafe {
            ffi::pcre2_match_8(
                self.code.as_ptr(),
                subject.as_ptr(),
                subject.len(),
                0,
                ffi::PCRE2_NO_UTF_CHECK,
                data.as_ptr(),
                self.context.as_ptr(),
            )
        };
        let result = if rc == ffi::PCRE2_ERROR_NOMATCH {
            Search::NoMatch
        } else if rc <= 0 {
            // Match, depth, heap or JIT stack limit, or a "cannot happen"
            // error: all count as not matched.
            Search::LimitHit
        } else {
            // SAFETY: after a successful match the ovector holds
            // `ovector_count` pairs, valid until `data` is freed below.
            let spans = unsafe {
                let count = ffi::pcre2_get_ovector_count_8(data.as_ptr()) as usize;
                let ovector = ffi::pcre2_get_ovector_pointer_8(data.as_ptr());
                std::slice::from_raw_parts(ovector, count * 2)
                    .chunks(2)
                    .map(|pair| {
                        let (start, end) = (pair[0], pair[1]);
                        (start != usize::MAX && end != usize::MAX && start <= end)
                            .then_some((start, end))
                    })
                    .collect::<Vec<_>>()
            };
            Search::Match(Groups {
                subject,
                spans,
                names: Arc::clone(&self.names),
            })
        };
        // SAFETY: `data` is ours and not used afterwards.
        unsafe { ffi::pcre2_match_data_free_8(data.as_ptr()) };
        result
    }

    /// Names of the pattern's named groups.
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(name, _)| name.as_str())
    }

    /// Whether the pattern has a group called `name`.
    pub fn has_group(&self, name: &str) -> bool {
        self.names.iter().any(|(n, _)| n == name)
    }

    /// The pattern as compiled.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern runs JIT-compiled.
    pub fn is_jit(&self) -> bool {
        self.jit
    }

    /// "pcre2 JIT (backtracking, match limit N)", for `orch test-filter`.
    pub fn describe(&self) -> String {
        engine_description(self.jit, self.match_limit)
    }
}

/// The engine line shown by `orch test-filter`.
pub fn engine_description(jit: bool, match_limit: u32) -> String {
    format!(
        "pcre2{} (backtracking, match limit {match_limit})",
        if jit { " JIT" } else { " interpreter" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(pattern: &str) -> BacktrackMatcher {
        BacktrackMatcher::new(pattern, BacktrackOptions::default()).unwrap()
    }

    fn hit(m: &BacktrackMatcher, line: &str) -> bool {
        matches!(m.search(line), Search::Match(_))
    }

    /// The text of group `name` in the match on `line`, if any.
    fn group<'a>(m: &BacktrackMatcher, line: &'a str, name: &str) -> Option<&'a str> {
        match m.search(line) {
            Search::Match(groups) => groups.name(name),
            _ => None,
        }
    }

    #[test]
    fn look_around_backreferences_and_conditionals() {
        let m = compile(r"^(?P<q>['x])a(?P=q) (?!bad)(?P<user>\w+)(?(q)!|\?)$");
        assert!(hit(&m, "'a' good!"));
        assert!(!hit(&m, "'a\" good!"));
        assert!(!hit(&m, "'a' bad!"));
        assert_eq!(group(&m, "xax bob!", "user"), Some("bob"));
        assert!(m.has_group("q"));
        let names: Vec<&str> = m.group_names().collect();
        assert_eq!(names, ["q", "user"]);
    }

    #[test]
    fn host_groups_and_spans() {
        let m = compile(r"from (?:(?P<ip4>\d+\.\d+\.\d+\.\d+)|(?P<dns>\S+))");
        assert_eq!(group(&m, "x from 192.0.2.1 y", "ip4"), Some("192.0.2.1"));
        let Search::Match(groups) = m.search("from host.example") else {
            panic!("no match");
        };
        assert_eq!(groups.name("dns"), Some("host.example"));
        assert_eq!(groups.name("ip4"), None);
        assert_eq!(groups.span(), (0, 17));
        assert_eq!(
            groups.named().collect::<Vec<_>>(),
            [("dns", "host.example")]
        );
    }

    #[test]
    fn unicode_classes_and_multiline() {
        let m = compile(r"^\w+$");
        assert!(hit(&m, "héllo"));
        let options = BacktrackOptions {
            multiline: true,
            ..BacktrackOptions::default()
        };
        let m = BacktrackMatcher::new(r"^b$", options).unwrap();
        assert!(hit(&m, "a\nb\nc\n"));
        assert!(!hit(&compile(r"^b$"), "a\nb\nc\n"));
    }

    #[test]
    fn compile_errors_name_the_offset() {
        let err = BacktrackMatcher::new("(unclosed", BacktrackOptions::default()).unwrap_err();
        assert!(err.message.contains("offset"), "{err}");
    }

    /// A catastrophic pattern on a hostile line stops at the match limit,
    /// quickly, and counts as not matched.
    #[test]
    fn hostile_line_hits_the_limit_quickly() {
        let m = compile(r"^(\w+\s?)*$");
        let line = format!("{}!", "a".repeat(5000));
        let started = std::time::Instant::now();
        assert_eq!(m.search(&line), Search::LimitHit);
        assert!(!hit(&m, &line));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // The same pattern still matches ordinary lines.
        assert!(hit(&m, "ordinary words here"));
        assert!(
            m.describe().contains("match limit 10000"),
            "{}",
            m.describe()
        );
    }
}
