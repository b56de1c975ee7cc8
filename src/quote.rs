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
    fn quoted_input_is_cut_and_says_how_long_it_was() {
        assert_eq!(quote_input("reload"), "\"reload\"");
        let long = "é".repeat(5_000_000);
        let quoted = quote_input(&long);
        assert!(quoted.len() < 2 * MAX_QUOTED_BYTES, "{}", quoted.len());
        assert!(quoted.ends_with("(10000000 bytes)"), "{quoted}");
    }
}
