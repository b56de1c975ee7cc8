//! From a loaded filter.d configuration to the filter's option values, as
//! fail2ban's filter reader computes them: `[Definition]` options read with
//! the jail's options taking precedence, `[Init]` values (and their
//! `known/` copies) added, then `<name>` tags inside the values replaced,
//! recursively, from those options or from `[Definition]`/`[DEFAULT]`
//! (`<lt_<logtype>/__prefix_line>` style names included).
//!
//! Tags that name no option (`<HOST>`, `<F-USER>`, ...) are left for
//! `tags.rs`. This module must not compile patterns or parse dates.

use std::collections::HashMap;

use super::Fail2banError;
use super::ini::{Config, Options};

/// How often one tag may be replaced inside one value before the
/// definitions are declared self-referencing (fail2ban's limit).
const MAX_TAG_REPLACE_COUNT: usize = 25;

/// Longest value tag substitution may build (a chain of tags that each
/// repeat the next one would otherwise grow without bound).
const MAX_VALUE_LEN: usize = 1 << 20;

/// The options a filter file defines, fully substituted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterOptions {
    pub prefregex: Option<String>,
    /// One pattern per non-empty line of `failregex`.
    pub failregex: Vec<String>,
    pub ignoreregex: Vec<String>,
    pub maxlines: usize,
    pub datepattern: Option<String>,
    /// Each `journalmatch` line, split into its `FIELD=value` words (`+`
    /// separates alternatives, as in `journalctl`).
    pub journalmatch: Vec<Vec<String>>,
    pub usedns: Option<String>,
}

/// The options fail2ban's filter reader takes from `[Definition]`.
const DEFINITION_OPTIONS: [&str; 7] = [
    "usedns",
    "prefregex",
    "ignoreregex",
    "failregex",
    "maxlines",
    "datepattern",
    "journalmatch",
];

/// Computes the filter options from `config`, with `jail` the options given
/// in the reference (`sshd.conf[mode=aggressive]`).
pub fn filter_options(config: &Config, jail: &Options) -> Result<FilterOptions, Fail2banError> {
    let vars: Options = jail
        .iter()
        .map(|(k, v)| (k.to_lowercase(), v.clone()))
        .collect();
    let mut combined: HashMap<String, String> = HashMap::new();
    if config.has_section("Definition") {
        for name in DEFINITION_OPTIONS {
            if vars.contains_key(name) {
                continue;
            }
            if let Some(value) = config.get("Definition", name, &vars)? {
                combined.insert(name.to_string(), value);
            }
        }
    }
    let mut init = vars.clone();
    if config.has_section("Init") {
        let none = Options::new();
        for name in config.own_options("Init") {
            let value = config.get("Init", &name, &none)?.unwrap_or_default();
            if !name.starts_with("known/") {
                init.insert(format!("known/{name}"), value.clone());
            }
            init.entry(name).or_insert(value);
        }
    }
    combined.extend(init);

    let mut lookups = TagLookup {
        config,
        vars: &vars,
        combined: &combined,
        cache: HashMap::new(),
    };
    let mut value_of = |name: &str| -> Result<Option<String>, Fail2banError> {
        match combined.get(name) {
            Some(value) => lookups.substitute(name, value).map(Some),
            None => Ok(None),
        }
    };
    let lines = |value: Option<String>| -> Vec<String> {
        value
            .map(|v| {
                v.split('\n')
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let maxlines = match value_of("maxlines")? {
        None => 1,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .map_err(|_| Fail2banError::Option {
                origin: config.origin.clone(),
                message: format!("maxlines = {text:?} is not a whole number"),
            })?,
    };
    Ok(FilterOptions {
        prefregex: value_of("prefregex")?.filter(|v| !v.trim().is_empty()),
        failregex: lines(value_of("failregex")?),
        ignoreregex: lines(value_of("ignoreregex")?),
        maxlines: maxlines.max(1),
        datepattern: value_of("datepattern")?.filter(|v| !v.trim().is_empty()),
        journalmatch: lines(value_of("journalmatch")?)
            .iter()
            .map(|line| split_words(line))
            .filter(|words| !words.is_empty())
            .collect(),
        usedns: value_of("usedns")?,
    })
}

/// Replaces `<name>` tags from the combined options or the configuration.
struct TagLookup<'a> {
    config: &'a Config,
    vars: &'a Options,
    combined: &'a HashMap<String, String>,
    /// `[Definition]` lookups already made (`None`: not defined).
    cache: HashMap<String, Option<String>>,
}

impl TagLookup<'_> {
    fn replacement(&mut self, tag: &str) -> Result<Option<String>, Fail2banError> {
        if let Some(value) = self.combined.get(tag) {
            return Ok(Some(value.clone()));
        }
        if let Some(cached) = self.cache.get(tag) {
            return Ok(cached.clone());
        }
        let found = self.config.get_ex("Definition", tag, self.vars)?;
        self.cache.insert(tag.to_string(), found.clone());
        Ok(found)
    }

    /// `value` (the value of option `own`) with every resolvable tag
    /// replaced, repeatedly, until nothing changes.
    fn substitute(&mut self, own: &str, value: &str) -> Result<String, Fail2banError> {
        let mut value = value.to_string();
        let mut counts: HashMap<String, usize> = HashMap::new();
        loop {
            let mut changed = false;
            let mut from = 0;
            while let Some((start, end)) = next_tag(&value, from) {
                let tag = value[start + 1..end - 1].to_string();
                let Some(replacement) = self.replacement(&tag)? else {
                    from = end;
                    continue;
                };
                let count = counts.entry(tag.clone()).or_insert(0);
                *count += 1;
                if tag == own || *count > MAX_TAG_REPLACE_COUNT {
                    return Err(Fail2banError::Option {
                        origin: self.config.origin.clone(),
                        message: format!(
                            "<{tag}> refers to itself (directly or through other tags) in {own}"
                        ),
                    });
                }
                value = value.replace(&format!("<{tag}>"), &replacement);
                if value.len() > MAX_VALUE_LEN {
                    return Err(Fail2banError::Option {
                        origin: self.config.origin.clone(),
                        message: format!(
                            "{own} grows beyond {MAX_VALUE_LEN} bytes while replacing <{tag}>"
                        ),
                    });
                }
                changed = true;
                from = start;
            }
            if !changed {
                return Ok(value);
            }
        }
    }
}

/// The next `<name>` (no space, `<` or `>` inside) at or after `from`, as a
/// byte range including the brackets.
fn next_tag(text: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut start = from;
    while start < bytes.len() {
        if bytes[start] == b'<' {
            let mut end = start + 1;
            while end < bytes.len() && !matches!(bytes[end], b' ' | b'<' | b'>') {
                end += 1;
            }
            if end < bytes.len() && bytes[end] == b'>' && end > start + 1 {
                return Some((start, end + 1));
            }
            start = end;
        } else {
            start += 1;
        }
    }
    None
}

/// Splits a `journalmatch` line into words, honouring single and double
/// quotes and backslash escapes (as a shell would).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}
