//! Finding and reading the timestamp of a log line, as fail2ban's date
//! templates do: a `datepattern` (strptime-style `%` fields inside a regex,
//! `{^LN-BEG}` to anchor at the line start, `{DATE}` standing for each
//! default template, `EPOCH`, `LEPOCH`, `TAI64N`, `{NONE}`), or the default
//! templates (common syslog, ISO 8601, Apache, epoch, ... formats).
//!
//! The date found is cut out of the line before the filter's patterns see
//! it, which is why fail2ban prefixes such as `__prefix_line` start after
//! the date. A date without a zone is local time.
//!
//! This module finds dates; it must not match failures.

use crate::timefmt::{civil_from_days, days_from_civil};
use std::cell::Cell;

use super::Fail2banError;
use super::backtrack::{BacktrackMatcher, BacktrackOptions, Groups, Search};

/// The default templates, most specific first, as strptime-style patterns.
const DEFAULT_PATTERNS: &[&str] = &[
    // 2005-01-23 21:59:59.123 +0100, 2005/01/23T21:59:59, ...
    r"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?",
    // (Sun) Jan 23 21:59:59(.123)( 2005) — syslog
    r"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?",
    // 23/01/2005 21:59:59, 23-01-05 21:59:59
    r"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S",
    // 23/Jan/2005:21:59:59 +0100 — Apache
    r"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?",
    r"%m/%d/%ExY:%H:%M:%S",
    r"%m-%d-%ExY %k:%M:%S(?:\.%f)?",
    "EPOCH",
    r"{^LN-BEG}%H:%M:%S",
    r"^<%m/%d/%Exy@%H:%M:%S>",
    r"%Exy%Exm%Exd  ?%H:%M:%S",
    r"%b %d, %ExY %I:%M:%S %p",
    r"^%b-%d-%Exy %k:%M:%S",
    r"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?",
    r"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    r"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?",
    "TAI64N",
];

const EPOCH_RE: &str = r"\d{10,11}\b(?:\.\d{3,6})?";
const LONG_EPOCH_RE: &str = r"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?";

/// What a template's match means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// strptime-style fields in named groups.
    Fields,
    /// Unix seconds (or milli/microseconds for the long form) in group
    /// `group`.
    Epoch { long: bool, group: usize },
    /// `@` and 24 hex digits.
    Tai64n,
    /// `{NONE}`: no date in the line.
    None,
}

/// One compiled date template.
#[derive(Debug)]
pub struct DateTemplate {
    name: String,
    regex: BacktrackMatcher,
    kind: Kind,
    /// Anchored at the line start: a match ends the search at once.
    line_begin: bool,
}

/// A date found in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoundDate {
    /// Byte range of the date text, cut out of the line.
    pub start: usize,
    pub end: usize,
    /// Unix seconds; `None` when the date text is empty or unreadable.
    pub time: Option<i64>,
}

/// The templates of one filter.
#[derive(Debug)]
pub struct DateDetector {
    templates: Vec<DateTemplate>,
    /// Describes the configuration, for `orch test-filter`.
    description: String,
    /// The clock that completes dates without a year or day; `None`: the
    /// wall clock.
    now: Option<i64>,
    /// The line-anchored template that matched last, tried first.
    last_anchored: Cell<Option<usize>>,
}

impl DateDetector {
    /// Templates for a filter's `datepattern` (one pattern per line), or
    /// the default templates when it has none.
    pub fn new(datepattern: Option<&str>) -> Result<DateDetector, Fail2banError> {
        let lines: Vec<&str> = datepattern
            .map(|p| p.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
            .unwrap_or_default();
        let mut templates = Vec::new();
        if lines.is_empty() {
            add_defaults(&mut templates, |_| true, None)?;
        }
        for line in &lines {
            let upper = line.to_uppercase();
            if upper == "{DEFAULT}" {
                add_defaults(&mut templates, |_| true, None)?;
            } else if upper == "{^LN-BEG}" {
                add_defaults(&mut templates, |t| t.line_begin, None)?;
            } else if upper.contains("{DATE}") {
                add_defaults(&mut templates, |_| true, Some(line))?;
            } else if upper == "{NONE}" {
                templates.push(DateTemplate {
                    name: "{NONE}".to_string(),
                    regex: compile("^()", line)?,
                    kind: Kind::None,
                    line_begin: true,
                });
            } else {
                templates.push(template(line)?);
            }
        }
        let description = if lines.is_empty() {
            "default templates".to_string()
        } else {
            lines.join(" | ")
        };
        Ok(DateDetector {
            templates,
            description,
            now: None,
            last_anchored: Cell::new(None),
        })
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The clock in use: the one given to [`DateDetector::set_now`], else the
    /// wall clock.
    pub fn now(&self) -> i64 {
        self.now
            .unwrap_or_else(|| crate::timefmt::now_unix() as i64)
    }

    /// Completes dates without a year (or day) relative to `now` instead of
    /// the wall clock: for replaying old logs, and for tests.
    pub fn set_now(&mut self, now: Option<i64>) {
        self.now = now;
    }

    /// The date in `line`: the line-anchored template that matched last
    /// time if it matches again (as fail2ban tries its last template
    /// first), else the first line-anchored template that matches, else
    /// the leftmost match of the others (earlier templates win ties).
    pub fn find(&self, line: &str) -> Option<FoundDate> {
        let now = self.now();
        if let Some(template) = self.last_anchored.get().and_then(|i| self.templates.get(i))
            && let Search::Match(groups) = template.regex.search(line)
            && let Some(found) = template.read(&groups, now)
        {
            return Some(found);
        }
        let mut best: Option<(usize, FoundDate)> = None;
        for (index, template) in self.templates.iter().enumerate() {
            let Search::Match(groups) = template.regex.search(line) else {
                continue;
            };
            let Some(found) = template.read(&groups, now) else {
                continue;
            };
            if template.line_begin {
                self.last_anchored.set(Some(index));
                return Some(found);
            }
            if best.is_none_or(|(start, _)| found.start < start) {
                best = Some((found.start, found));
            }
        }
        best.map(|(_, found)| found)
    }
}

impl DateTemplate {
    /// The date text's span (group 1, or the epoch group) and its time.
    fn read(&self, groups: &Groups<'_>, now: i64) -> Option<FoundDate> {
        let group = match self.kind {
            Kind::Epoch { group, .. } => group,
            _ => 1,
        };
        let (start, end) = groups.get_span(group)?;
        let text = groups.get(group)?;
        let time = if text.is_empty() {
            None
        } else {
            match self.kind {
                Kind::Fields => fields_time(groups, now),
                Kind::Epoch { long, .. } => epoch_time(text, long),
                Kind::Tai64n => tai64n_time(text),
                Kind::None => None,
            }
        };
        Some(FoundDate { start, end, time })
    }

    #[cfg(test)]
    fn name(&self) -> &str {
        &self.name
    }
}

fn compile(regex: &str, origin: &str) -> Result<BacktrackMatcher, Fail2banError> {
    BacktrackMatcher::new(regex, BacktrackOptions::default()).map_err(|e| Fail2banError::Date {
        pattern: origin.to_string(),
        message: e.message,
    })
}

/// Adds the default templates (anchored variants first) that `keep`
/// accepts; with `pre_match`, each one replaces `{DATE}` in it instead.
fn add_defaults(
    templates: &mut Vec<DateTemplate>,
    keep: impl Fn(&DateTemplate) -> bool,
    pre_match: Option<&str>,
) -> Result<(), Fail2banError> {
    let mut anchored = Vec::new();
    let mut plain = Vec::new();
    for pattern in DEFAULT_PATTERNS {
        if let Some(pre) = pre_match {
            if matches!(*pattern, "EPOCH" | "TAI64N") {
                continue;
            }
            let unbound = pattern.trim_start_matches("{^LN-BEG}");
            let text = replace_date_marker(pre, unbound);
            plain.push(template(&text)?);
            continue;
        }
        let already = pattern.starts_with('^') || pattern.starts_with("{^LN-BEG}");
        if !already {
            anchored.push(template(&format!("{{^LN-BEG}}{pattern}"))?);
        }
        plain.push(template(pattern)?);
    }
    for t in anchored.into_iter().chain(plain) {
        if keep(&t) && !templates.iter().any(|existing| existing.name == t.name) {
            templates.push(t);
        }
    }
    Ok(())
}

/// `pre` with `{DATE}` (any case) replaced by `date`.
fn replace_date_marker(pre: &str, date: &str) -> String {
    match find_ascii_ci(pre, "{DATE}") {
        Some(at) => format!("{}{}{}", &pre[..at], date, &pre[at + 6..]),
        None => pre.to_string(),
    }
}

/// Compiles one datepattern line.
fn template(pattern: &str) -> Result<DateTemplate, Fail2banError> {
    let upper = pattern.to_uppercase();
    let anchored = upper.starts_with("{^LN-BEG}") || upper.starts_with('^');
    let bare = upper
        .trim_start_matches("{^LN-BEG}")
        .trim_start_matches('^');
    match bare {
        "EPOCH" | "LEPOCH" => {
            let long = bare == "LEPOCH";
            let number = if long { LONG_EPOCH_RE } else { EPOCH_RE };
            let regex = if anchored {
                format!(r"^(?:\W{{0,2}})?({number})(?=\b|\W|$)")
            } else {
                format!(r"(?:^|(?<=^\[)|(?<=\baudit\())({number})(?=\b|\W|$)")
            };
            return Ok(DateTemplate {
                name: pattern.to_string(),
                regex: compile(&regex, pattern)?,
                kind: Kind::Epoch { long, group: 1 },
                line_begin: anchored,
            });
        }
        "TAI64N" => {
            let regex = if anchored {
                r"^(?:\W{0,2})?(@[0-9a-fA-F]{24})(?=\b|\W|$)"
            } else {
                r"(?=^|\b|\W)(@[0-9a-fA-F]{24})(?=\b|\W|$)"
            };
            return Ok(DateTemplate {
                name: pattern.to_string(),
                regex: compile(regex, pattern)?,
                kind: Kind::Tai64n,
                line_begin: anchored,
            });
        }
        _ => {}
    }
    let epoch_marker = match find_ascii_ci(pattern, "{EPOCH}") {
        Some(at) => Some((at, false)),
        None => find_ascii_ci(pattern, "{LEPOCH}").map(|at| (at, true)),
    };
    if let Some((at, long)) = epoch_marker {
        let marker_len = if long { 8 } else { 7 };
        let number = if long { LONG_EPOCH_RE } else { EPOCH_RE };
        let inner = format!(
            "{}({number}){}",
            &pattern[..at],
            &pattern[at + marker_len..]
        );
        let (regex, line_begin) = bounded(&format!("({inner})"), true, true);
        return Ok(DateTemplate {
            name: pattern.to_string(),
            regex: compile(&regex, pattern)?,
            kind: Kind::Epoch { long, group: 2 },
            line_begin,
        });
    }
    let (mut rest, mut word_begin, mut word_end, mut start) = (pattern, true, true, false);
    if let Some(r) = strip_prefix_ci(rest, "{UNB}") {
        rest = r;
        word_begin = false;
        word_end = false;
    }
    if word_begin && let Some(r) = strip_prefix_ci(rest, "{^LN-BEG}") {
        rest = r;
        start = true;
    }
    let (regex, alpha) = fields_to_regex(rest).map_err(|message| Fail2banError::Date {
        pattern: pattern.to_string(),
        message,
    })?;
    let regex = if alpha { format!("(?i){regex}") } else { regex };
    let (regex, line_begin) = if start {
        bounded_start(&regex, word_end)
    } else {
        bounded(&regex, word_begin, word_end)
    };
    Ok(DateTemplate {
        name: pattern.to_string(),
        regex: compile(&regex, pattern)?,
        kind: Kind::Fields,
        line_begin,
    })
}

/// Byte offset of the ASCII `needle` in `haystack`, ignoring ASCII case
/// (an offset into the original text, unlike searching an uppercased copy).
fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Splits a leading `(?flags)` off a regex.
fn split_flags(regex: &str) -> (&str, &str) {
    if let Some(rest) = regex.strip_prefix("(?") {
        let n = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        if n > 0 && rest.as_bytes().get(n) == Some(&b')') {
            return regex.split_at(n + 3);
        }
    }
    ("", regex)
}

/// Whether the regex has a plain capturing group `(` (not `(?`, not `\(`).
fn has_plain_group(regex: &str) -> bool {
    let bytes = regex.as_bytes();
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'(' if bytes.get(i + 1) != Some(&b'?') => return true,
            _ => {}
        }
    }
    false
}

/// Puts the date (everything but a leading `^` and trailing `$`) in group 1
/// when the regex has no plain group of its own.
fn group_date(regex: &str) -> String {
    if has_plain_group(regex) {
        return regex.to_string();
    }
    let (head, body) = match regex.strip_prefix('^') {
        Some(body) => ("^", body),
        None => ("", regex),
    };
    let (body, tail) = match body.strip_suffix('$') {
        Some(b) if !b.ends_with('\\') => (b, "$"),
        _ => (body, ""),
    };
    format!("{head}({body}){tail}")
}

/// `**` at either end turns that boundary off and is removed.
fn strip_stars(regex: &str) -> (String, bool, bool) {
    let mut text = regex.to_string();
    let begin = text.trim_start_matches('(').starts_with("**");
    if begin {
        let parens = text.len() - text.trim_start_matches('(').len();
        text.replace_range(parens..parens + 2, "");
    }
    let end =
        text.trim_end_matches(')').ends_with("**") && !text.trim_end_matches(')').ends_with("\\**");
    if end {
        let parens = text.len() - text.trim_end_matches(')').len();
        let at = text.len() - parens - 2;
        text.replace_range(at..at + 2, "");
    }
    (text, begin, end)
}

/// Word boundaries around the date, unless the regex anchors itself.
fn bounded(regex: &str, word_begin: bool, word_end: bool) -> (String, bool) {
    let (flags, body) = split_flags(regex.trim());
    let (body, star_begin, star_end) = strip_stars(body);
    let anchored = body
        .trim_start_matches('(')
        .trim_start_matches("?:")
        .starts_with('^');
    let ends_bound = star_end
        || body.ends_with('$')
        || body.ends_with("$)")
        || (body.ends_with("\\b") || body.ends_with("\\s"));
    let mut out = group_date(&body);
    if word_begin && !star_begin && !anchored {
        out = format!(r"(?=^|\b|\W){out}");
    }
    if word_end && !ends_bound {
        out.push_str(r"(?=\b|\W|$)");
    }
    (format!("{flags}{out}"), anchored)
}

/// `{^LN-BEG}`: at the line start, after at most two non-word characters.
fn bounded_start(regex: &str, word_end: bool) -> (String, bool) {
    let (flags, body) = split_flags(regex.trim());
    let (body, _, star_end) = strip_stars(body);
    let ends_bound =
        star_end || body.ends_with('$') || body.ends_with("\\b") || body.ends_with("\\s");
    let mut out = format!(r"^(?:\W{{0,2}})?{}", group_date(&body));
    if word_end && !ends_bound {
        out.push_str(r"(?=\b|\W|$)");
    }
    (format!("{flags}{out}"), true)
}

/// Replaces the `%` fields with named groups. Returns the regex and
/// whether a name field (day, month, AM/PM) needs case-insensitivity.
fn fields_to_regex(pattern: &str) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(pattern.len() * 4);
    let mut alpha = false;
    let mut rest = pattern;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (key, len) = if let Some(ex) = after.strip_prefix("Ex") {
            let c = ex.chars().next().ok_or("a lone %Ex")?;
            (format!("Ex{c}"), 2 + c.len_utf8())
        } else {
            let c = after.chars().next().ok_or("a lone % at the end")?;
            (c.to_string(), c.len_utf8())
        };
        let regex = field_regex(&key).ok_or_else(|| format!("unknown field %{key}"))?;
        alpha |= matches!(key.as_str(), "a" | "A" | "b" | "B" | "p");
        out.push_str(regex);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok((out, alpha))
}

fn field_regex(key: &str) -> Option<&'static str> {
    Some(match key {
        "%" => "%",
        "a" => "(?P<a>mon|tue|wed|thu|fri|sat|sun)",
        "A" => "(?P<A>monday|tuesday|wednesday|thursday|friday|saturday|sunday)",
        "b" => "(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
        "B" => {
            "(?P<B>january|february|march|april|may|june|july|august|september|october|november|december)"
        }
        "d" => r"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])",
        "f" => r"(?P<f>[0-9]{1,6})",
        "H" => r"(?P<H>[0-1]?\d|2[0-3])",
        "I" => r"(?P<I>1[0-2]|0[1-9]|[1-9])",
        "j" => r"(?P<j>36[0-6]|3[0-5]\d|[12]\d\d|0?[1-9]\d|0{0,2}[1-9])",
        "k" => r" ?(?P<H>[0-2]?\d)",
        "l" => r" ?(?P<I>1?\d)",
        "m" => r"(?P<m>0?[1-9]|1[0-2])",
        "M" => r"(?P<M>[0-5]?\d)",
        "p" => "(?P<p>am|pm)",
        "S" => r"(?P<S>[0-5]?\d|6[0-1])",
        "U" => r"(?P<U>5[0-3]|[0-4]\d|\d)",
        "W" => r"(?P<W>5[0-3]|[0-4]\d|\d)",
        "w" => r"(?P<w>[0-6])",
        "y" => r"(?P<y>\d\d)",
        "Y" => r"(?P<Y>\d\d\d\d)",
        "z" => r"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)",
        "Z" => r"(?P<Z>Z|[A-Z]{3,5})",
        "Exd" => r"(?P<d>[1-2]\d|0[1-9]|3[0-1])",
        "Exm" => r"(?P<m>0[1-9]|1[0-2])",
        "ExH" => r"(?P<H>[0-1]\d|2[0-3])",
        "Exk" => r" ?(?P<H>[0-1]?\d|2[0-3])",
        "Exl" => r" ?(?P<I>1[0-2]|\d)",
        "ExM" => r"(?P<M>[0-5]\d)",
        "ExS" => r"(?P<S>[0-5]\d|6[0-1])",
        // Years of this century only, so that digits elsewhere are not
        // taken for one.
        "ExY" => r"(?P<Y>20[0-9]\d)",
        "Exy" => r"(?P<y>\d{2})",
        "ExZ" => r"(?P<Z>[A-Z](?:[A-Z]{2,4})?)",
        "Exz" => r"(?P<z>(?:[A-Z](?:[A-Z]{2,4})?)?[+-][01]\d(?::?\d{2})?|[A-Z](?:[A-Z]{2,4})?)",
        _ => return None,
    })
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

/// Unix seconds from strptime-style groups, as fail2ban reads them. No
/// year: the year of `now`, or the year before if that puts the date more
/// than a day after `now`. No month and day: the day of `now`, or the day
/// before if that puts the time after `now`. Two-digit years are 20xx.
fn fields_time(groups: &Groups<'_>, now: i64) -> Option<i64> {
    let number = |name: &str| groups.name(name).and_then(|v| v.trim().parse::<i64>().ok());
    let (today_y, today_m, today_d) = local_date(now);
    let month = number("m").or_else(|| {
        let name = groups
            .name("b")
            .or_else(|| groups.name("B"))?
            .to_lowercase();
        MONTHS
            .iter()
            .position(|m| name.starts_with(m))
            .map(|i| i as i64 + 1)
    });
    let day = number("d");
    let assume_today = month.is_none() && day.is_none();
    let (month, day) = if assume_today {
        (today_m, today_d)
    } else {
        (month.unwrap_or(1), day.unwrap_or(1))
    };
    let mut hour = number("H").unwrap_or(0);
    if let Some(h12) = number("I") {
        let pm = groups
            .name("p")
            .is_some_and(|p| p.eq_ignore_ascii_case("pm"));
        hour = h12 % 12 + if pm { 12 } else { 0 };
    }
    let minute = number("M").unwrap_or(0);
    let second = number("S").unwrap_or(0).min(59);
    let offset = zone_offset(groups.name("z").or_else(|| groups.name("Z")));
    let explicit_year = number("Y").or_else(|| number("y").map(|y| 2000 + y));
    let to_unix = |year: i64| -> Option<i64> {
        let naive = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
        match offset {
            Some(offset) => Some(naive - offset),
            None => local_to_unix(year, month, day, hour, minute, second),
        }
    };
    let mut time = to_unix(explicit_year.unwrap_or(today_y))?;
    if assume_today && time > now {
        time -= 86_400;
    }
    if explicit_year.is_none() && time > now + 86_400 {
        time = to_unix(today_y - 1)?;
    }
    Some(time)
}

/// The local calendar date at Unix time `now`.
fn local_date(now: i64) -> (i64, i64, i64) {
    // SAFETY: `tm` is a plain C struct; zeroed is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = now;
    // SAFETY: both pointers are to valid locals; localtime_r is the
    // thread-safe variant and only writes `tm`.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        (
            i64::from(tm.tm_year) + 1900,
            i64::from(tm.tm_mon) + 1,
            i64::from(tm.tm_mday),
        )
    } else {
        civil_from_days(now.div_euclid(86_400))
    }
}

/// Seconds east of UTC for a `%z`/`%Z` text; `None` for local time.
fn zone_offset(zone: Option<&str>) -> Option<i64> {
    let zone = zone?.trim();
    let (name, numeric) = match zone.find(['+', '-']) {
        Some(at) => (&zone[..at], Some(&zone[at..])),
        None => (zone, None),
    };
    let base = match name {
        "" | "Z" | "UTC" | "GMT" | "UT" => 0,
        "CET" | "MET" | "WAT" | "BST" => 3600,
        "CEST" | "MEST" | "EET" | "CAT" | "SAST" => 7200,
        "EEST" | "MSK" | "EAT" => 3 * 3600,
        "EST" | "CDT" => -5 * 3600,
        "EDT" => -4 * 3600,
        "CST" | "MDT" => -6 * 3600,
        "MST" | "PDT" => -7 * 3600,
        "PST" => -8 * 3600,
        _ => return None,
    };
    let Some(numeric) = numeric else {
        return Some(base);
    };
    let sign = if numeric.starts_with('-') { -1 } else { 1 };
    let digits: String = numeric[1..].chars().filter(char::is_ascii_digit).collect();
    let hours: i64 = digits.get(..2)?.parse().ok()?;
    let minutes: i64 = digits.get(2..4).and_then(|m| m.parse().ok()).unwrap_or(0);
    Some(base + sign * (hours * 3600 + minutes * 60))
}

fn epoch_time(text: &str, long: bool) -> Option<i64> {
    let value: f64 = text.parse().ok()?;
    let digits = text.split('.').next().unwrap_or(text).len();
    let seconds = if long && digits >= 16 {
        value / 1_000_000.0
    } else if long && digits >= 13 {
        value / 1000.0
    } else {
        value
    };
    Some(seconds as i64)
}

fn tai64n_time(text: &str) -> Option<i64> {
    let seconds = u64::from_str_radix(text.get(1..17)?, 16).ok()?;
    i64::try_from(seconds.checked_sub(1 << 62)?).ok()
}

/// A local wall-clock time as Unix seconds (the C library's time zone).
pub fn local_to_unix(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
) -> Option<i64> {
    // SAFETY: `tm` is a plain C struct; zeroed is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = i32::try_from(year - 1900).ok()?;
    tm.tm_mon = i32::try_from(month - 1).ok()?;
    tm.tm_mday = i32::try_from(day).ok()?;
    tm.tm_hour = i32::try_from(hour).ok()?;
    tm.tm_min = i32::try_from(minute).ok()?;
    tm.tm_sec = i32::try_from(second).ok()?;
    tm.tm_isdst = -1;
    // SAFETY: `tm` is a valid, initialised struct owned by this frame.
    let unix = unsafe { libc::mktime(&mut tm) };
    (unix != -1).then_some(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s
    }

    fn found<'a>(detector: &DateDetector, line: &'a str) -> (&'a str, &'a str, Option<i64>) {
        let f = detector
            .find(line)
            .unwrap_or_else(|| panic!("no date in {line:?}"));
        (&line[f.start..f.end], &line[f.end..], f.time)
    }

    #[test]
    fn civil_round_trip() {
        for days in [-1000, 0, 1, 59, 365, 10_957, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(utc(2005, 1, 23, 0, 0, 0), 1_106_438_400);
    }

    #[test]
    fn default_templates_find_common_dates() {
        let d = DateDetector::new(None).unwrap();
        let (date, rest, time) = found(&d, "2005-01-23 21:59:59 +0100 host sshd[1]: x");
        assert_eq!(date, "2005-01-23 21:59:59 +0100");
        assert_eq!(rest, " host sshd[1]: x");
        assert_eq!(time, Some(utc(2005, 1, 23, 20, 59, 59)));

        let (date, rest, _) = found(&d, "Jan 23 21:59:59 host sshd[1]: x");
        assert_eq!(date, "Jan 23 21:59:59");
        assert_eq!(rest, " host sshd[1]: x");

        let line = r#"192.0.2.1 - - [23/Jan/2005:21:59:59 +0000] "GET / HTTP/1.1""#;
        let (date, _, time) = found(&d, line);
        assert_eq!(date, "23/Jan/2005:21:59:59 +0000");
        assert_eq!(time, Some(utc(2005, 1, 23, 21, 59, 59)));

        let (date, _, time) = found(&d, "1106517599.123 something");
        assert_eq!(date, "1106517599.123");
        assert_eq!(time, Some(1_106_517_599));

        let (date, _, time) = found(&d, "@400000004e2c9d8b36a53e3c x");
        assert_eq!(date, "@400000004e2c9d8b36a53e3c");
        assert_eq!(time, Some(0x4e2c9d8b));
        assert!(d.find("no date here").is_none());
    }

    #[test]
    fn datepattern_forms() {
        let d = DateDetector::new(Some(r"^%Y-%m-%d %H:%M:%S")).unwrap();
        let (date, rest, _) = found(&d, "2020-02-03 04:05:06 msg");
        assert_eq!((date, rest), ("2020-02-03 04:05:06", " msg"));
        assert!(d.find("x 2020-02-03 04:05:06").is_none());

        // {^LN-BEG}: only the line-anchored defaults.
        let d = DateDetector::new(Some("{^LN-BEG}")).unwrap();
        assert!(d.templates.iter().all(|t| t.line_begin));
        assert!(
            d.templates
                .iter()
                .any(|t| t.name().starts_with("{^LN-BEG}"))
        );
        let (date, _, _) = found(&d, "[Jan 23 21:59:59] x");
        assert_eq!(date, "Jan 23 21:59:59");
        assert!(d.find("x Jan 23 21:59:59").is_none());

        // {DATE} inside a prefix; explicit group picks the date.
        let d = DateDetector::new(Some(r"^[^\[]*\[({DATE})")).unwrap();
        let (date, rest, _) = found(&d, "srv [2021-03-04 05:06:07] msg");
        assert_eq!((date, rest), ("2021-03-04 05:06:07", "] msg"));

        // Epoch at the line start, with fractions.
        let d = DateDetector::new(Some("{^LN-BEG}EPOCH")).unwrap();
        let (date, _, time) = found(&d, "1500000000.512 x");
        assert_eq!((date, time), ("1500000000.512", Some(1_500_000_000)));

        // Markers are found in the original text, whatever precedes them.
        let d = DateDetector::new(Some("^ßß ({DATE})")).unwrap();
        let (date, _, _) = found(&d, "ßß 2021-03-04 05:06:07 x");
        assert_eq!(date, "2021-03-04 05:06:07");
        let d = DateDetector::new(Some("^é{EPOCH}")).unwrap();
        let (date, _, time) = found(&d, "é1500000000 x");
        assert_eq!((date, time), ("1500000000", Some(1_500_000_000)));

        // {NONE}: an empty date at the start, no time.
        let d = DateDetector::new(Some("{NONE}")).unwrap();
        let f = d.find("anything").unwrap();
        assert_eq!((f.start, f.end, f.time), (0, 0, None));

        // An empty group (`()**`): date optional.
        let d = DateDetector::new(Some(r"^WARNING:()**")).unwrap();
        let f = d.find("WARNING: x").unwrap();
        assert_eq!((f.start, f.end, f.time), (8, 8, None));

        // AM/PM and case-insensitive month names.
        let d = DateDetector::new(Some(r"^%b %d, %ExY %I:%M:%S %p")).unwrap();
        let (_, _, time) = found(&d, "JAN 2, 2020 1:02:03 PM x");
        let expected = local_to_unix(2020, 1, 2, 13, 2, 3);
        assert_eq!(time, expected);
    }

    #[test]
    fn bad_datepatterns_are_errors() {
        let err = DateDetector::new(Some("%Q")).unwrap_err();
        assert!(err.to_string().contains("%Q"), "{err}");
        assert!(DateDetector::new(Some("(%H")).is_err());
    }

    #[test]
    fn zones() {
        assert_eq!(zone_offset(Some("+0130")), Some(5400));
        assert_eq!(zone_offset(Some("-05:00")), Some(-18_000));
        assert_eq!(zone_offset(Some("CET+01")), Some(7200));
        assert_eq!(zone_offset(Some("Z")), Some(0));
        assert_eq!(zone_offset(Some("XYZ")), None);
        assert_eq!(zone_offset(None), None);
    }
}
