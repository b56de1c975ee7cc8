//! Quoting untrusted text (D-Bus arguments, log lines, file contents) in
//! messages: bounded, so a reply or a log line can never grow with what
//! an untrusted party sent.
//!
//! It must not decide whether the text is acceptable; callers do.

/// Longest piece of caller input an error message quotes, in bytes.
pub const MAX_QUOTED_BYTES: usize = 200;

/// `input` for an error message: Debug-quoted, cut to about
/// [`MAX_QUOTED_BYTES`] with the full length said, so a reply can never
/// grow with what the caller sent.
pub fn quote_input(input: &str) -> String {
    if input.len() <= MAX_QUOTED_BYTES {
        return format!("{input:?}");
    }
    format!(
        "{:?}... ({} bytes)",
        cut(input, MAX_QUOTED_BYTES),
        input.len()
    )
}

/// `text` as a terminal may show it: every control character (C0, DEL,
/// C1, and so newlines and escapes) written as a Rust escape (`\n`,
/// `\u{1b}`), so text from a log line, a D-Bus caller or another fleet
/// host can neither move the cursor, recolour the screen nor forge a line.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`printable`] for a message of several lines: each line escaped, the
/// line breaks kept.
pub fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` cut to at most `max` bytes, at a char boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_lines_and_lose_their_escapes() {
        assert_eq!(
            printable_lines("orch.toml:3:1: bad\nwith \u{1b}[31mred"),
            "orch.toml:3:1: bad\nwith \\u{1b}[31mred"
        );
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(
            printable("a\u{1b}[2Jb\nforged line\u{9b}31m\u{7f}"),
            "a\\u{1b}[2Jb\\nforged line\\u{9b}31m\\u{7f}"
        );
    }

    #[test]
    fn quoted_input_is_cut_and_says_how_long_it_was() {
        assert_eq!(quote_input("reload"), "\"reload\"");
        let long = "é".repeat(5_000_000);
        let quoted = quote_input(&long);
        assert!(quoted.len() < 2 * MAX_QUOTED_BYTES, "{}", quoted.len());
        assert!(quoted.ends_with("(10000000 bytes)"), "{quoted}");
    }
}
