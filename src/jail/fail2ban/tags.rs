//! fail2ban's pattern tags and Python regex syntax, turned into PCRE2
//! patterns.
//!
//! Tags: `<HOST>` (IPv4, IPv6 or a host name, in groups `ip4`, `ip6`,
//! `dns`), `<ADDR>` (addresses only), `<IP4>`, `<IP6>`, `<DNS>`, `<CIDR>`,
//! `<SUBNET>`, `<F-ID/>`, `<F-PORT/>`, `<SKIPLINES>`, and the capture tags
//! `<F-NAME>...</F-NAME>`, which become a group `name` (lowercase;
//! `F-ID` → `fid`, `F-PORT` → `fport`). Any other `<...>` is left as text.
//!
//! Python-only syntax is rewritten: `\Z` → `\z`, `{,n}` → `{0,n}`, and a
//! flag group opening a group (`((?i)...)`, `(?:(?i)...)`) becomes the
//! scoped form `(?i:...)`, as fail2ban does before compiling. `(?P<n>`,
//! `(?P=n)` and conditionals are PCRE2 syntax already.
//!
//! Pure text work: this module must not compile or run patterns.

/// Dotted IPv4 (loose; a real parser validates the capture).
pub const IP4: &str = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}";
/// IPv6 text: up to seven `hex:` or `:` items and a last hex group (or
/// `:`, for a trailing `::`). Loose; validated afterwards.
pub const IP6: &str = r"(?:[0-9A-Fa-f]{1,4}:|:){1,7}(?:[0-9A-Fa-f]{1,4}|:)";
/// A host name: word characters, dots and dashes, ending in a word
/// character.
pub const DNS: &str = r"[\w.^-]*\w";

fn ip4_group() -> String {
    format!(r"(?:::[fF]{{4,6}}:)?(?P<ip4>{IP4})")
}

fn addr_group() -> String {
    format!(r"\[?(?:{}|(?P<ip6>{IP6}))\]?", ip4_group())
}

fn host_group(use_dns: bool) -> String {
    if use_dns {
        format!(r"(?:{}|(?P<dns>{DNS}))", addr_group())
    } else {
        addr_group()
    }
}

/// The pattern a fixed tag stands for, if `name` is one.
fn fixed_tag(name: &str, use_dns: bool) -> Option<String> {
    Some(match name {
        "HOST" => host_group(use_dns),
        "ADDR" | "F-ADDR/" => addr_group(),
        "IP4" | "F-IP4/" => ip4_group(),
        "IP6" | "F-IP6/" => format!("(?P<ip6>{IP6})"),
        "DNS" | "F-DNS/" => format!("(?P<dns>{DNS})"),
        "CIDR" | "F-CIDR/" => r"(?P<cidr>\d+)".to_string(),
        "SUBNET" | "F-SUBNET/" => {
            format!(
                r"\[?(?:{}|(?P<ip6>{IP6}))(?:/(?P<cidr>\d+))?\]?",
                ip4_group()
            )
        }
        "F-ID/" => r"(?P<fid>\S+)".to_string(),
        "F-PORT/" => r"(?P<fport>\w+)".to_string(),
        _ => return None,
    })
}

/// The group name for a capture tag `F-NAME`.
fn group_name(tag: &str) -> String {
    match tag.to_lowercase().as_str() {
        "id" => "fid".to_string(),
        "port" => "fport".to_string(),
        other => other.to_string(),
    }
}

/// Whether `name` is a capture-tag name: `F-` then uppercase letters,
/// digits, `_` or `-`.
fn capture_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("F-")?;
    (!rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-'))
    .then_some(rest)
}

/// Expands the tags in `pattern`. With `use_dns` false (`usedns = no`),
/// `<HOST>` matches addresses only.
pub fn expand(pattern: &str, use_dns: bool) -> String {
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut open: Vec<String> = Vec::new();
    let mut skiplines = 0usize;
    let mut rest = pattern;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let candidate = &rest[lt..];
        let Some(tag_len) = tag_length(candidate) else {
            out.push('<');
            rest = &candidate[1..];
            continue;
        };
        let tag = &candidate[..tag_len];
        let inner = &tag[1..tag.len() - 1];
        rest = &candidate[tag_len..];
        if inner == "SKIPLINES" {
            out.push_str(&format!(r"\n(?P<skiplines{skiplines}>(?:(?:.*\n)*?))"));
            skiplines += 1;
        } else if let Some(fixed) = fixed_tag(inner, use_dns) {
            out.push_str(&fixed);
        } else if let Some(name) = inner.strip_prefix('/').and_then(capture_name) {
            if open.iter().any(|o| o == name) {
                out.push(')');
            } else {
                out.push_str(tag);
            }
        } else if let Some(name) = capture_name(inner) {
            open.push(name.to_string());
            out.push_str(&format!("(?P<{}>", group_name(name)));
        } else {
            out.push_str(tag);
        }
    }
    out.push_str(rest);
    python_to_pcre(&out)
}

/// Length of a tag `</?[\w-]+/?>` at the start of `text`, if there is one.
fn tag_length(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    if bytes.get(i) == Some(&b'/') {
        i += 1;
    }
    let start = i;
    while i < bytes.len()
        && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'-')
    {
        i += 1;
    }
    if i == start {
        return None;
    }
    if bytes.get(i) == Some(&b'/') {
        i += 1;
    }
    (bytes.get(i) == Some(&b'>')).then_some(i + 1)
}

/// Rewrites the Python-only constructs (see the module comment).
pub fn python_to_pcre(pattern: &str) -> String {
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\\' {
            match bytes.get(i + 1) {
                Some(b'Z') if !in_class => out.push_str(r"\z"),
                Some(_) => out.push_str(&pattern[i..i + 2 + utf8_extra(bytes[i + 1])]),
                None => out.push('\\'),
            }
            i += 2 + bytes.get(i + 1).map_or(0, |&b| utf8_extra(b));
            continue;
        }
        if in_class {
            if c == b']' {
                in_class = false;
            }
        } else if c == b'[' {
            in_class = true;
            // A `]` right after `[` or `[^` is a literal.
            let mut j = i + 1;
            if bytes.get(j) == Some(&b'^') {
                j += 1;
            }
            if bytes.get(j) == Some(&b']') {
                out.push_str(&pattern[i..=j]);
                i = j + 1;
                continue;
            }
        } else if c == b'{' && bytes.get(i + 1) == Some(&b',') {
            let digits = bytes[i + 2..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 && bytes.get(i + 2 + digits) == Some(&b'}') {
                out.push_str("{0");
                i += 1;
                continue;
            }
        } else if c == b'(' {
            // `((?flags)` or `(?:(?flags)` → `(?flags:`
            let after = if pattern[i + 1..].starts_with("?:(?") {
                Some(i + 3)
            } else if pattern[i + 1..].starts_with("(?") {
                Some(i + 1)
            } else {
                None
            };
            if let Some(inner) = after {
                let flags: usize = bytes[inner + 2..]
                    .iter()
                    .take_while(|b| b.is_ascii_lowercase())
                    .count();
                if flags > 0 && bytes.get(inner + 2 + flags) == Some(&b')') {
                    out.push_str("(?");
                    out.push_str(&pattern[inner + 2..inner + 2 + flags]);
                    out.push(':');
                    i = inner + 3 + flags;
                    continue;
                }
            }
        }
        let len = 1 + utf8_extra(c);
        out.push_str(&pattern[i..i + len]);
        i += len;
    }
    out
}

/// Continuation bytes after a UTF-8 lead byte.
fn utf8_extra(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 3,
        0xE0..=0xEF => 2,
        0xC0..=0xDF => 1,
        _ => 0,
    }
}
