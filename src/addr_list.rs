//! Address lists for `orch ban --from-file`: one address or CIDR prefix per
//! line, `#` starting a comment, blank lines skipped. Every entry is checked
//! for syntax here, so a bad file is refused with the file and line of each
//! bad entry before anything is sent; whether an entry may be banned
//! (over-broad, allowlisted, own address) is the daemon's decision, made
//! for the whole list at once.
//!
//! The file is anyone's text: lines and entries are bounded, and reading
//! stops at the first line too long to be an address list's. This module
//! must not talk to the daemon.

use std::io::BufRead;

use thiserror::Error;

/// The longest line read (an IPv6 prefix with a comment fits easily).
pub const MAX_LINE_BYTES: usize = 4096;

/// The most entries one list may hold: one `BanMany` must fit in one D-Bus
/// message (32 MiB on Debian's system bus).
pub const MAX_ENTRIES: usize = 1_000_000;

/// Bad entries shown before "and N more".
const SHOWN_PROBLEMS: usize = 10;

/// Why a list was refused.
#[derive(Debug, Error)]
pub enum AddrListError {
    #[error("{source_name}: {source}")]
    Read {
        source_name: String,
        source: std::io::Error,
    },
    #[error(
        "{source_name}:{line}: line longer than {MAX_LINE_BYTES} bytes; is this an address list?"
    )]
    LineTooLong { source_name: String, line: u64 },
    #[error("{source_name}: more than {MAX_ENTRIES} entries; split it into several files")]
    TooMany { source_name: String },
    #[error("{}", show_problems(.problems, *.more))]
    BadEntries {
        /// `file:line: entry: why`, the first few.
        problems: Vec<String>,
        /// How many more were not shown.
        more: usize,
    },
    #[error("{source_name}: no addresses in it")]
    Empty { source_name: String },
}

fn show_problems(problems: &[String], more: usize) -> String {
    let mut text = problems.join("\n");
    if more > 0 {
        text.push_str(&format!("\n... and {more} more bad entries"));
    }
    text.push_str("\nnothing was banned");
    text
}

/// Reads a list from `reader`, named `source_name` in messages (a path, or
/// "stdin"). `progress` is called with the entries read so far, every
/// 100,000 entries. Returns the entries as written (the daemon normalises
/// them), in file order.
pub fn read_list(
    reader: impl BufRead,
    source_name: &str,
    mut progress: impl FnMut(usize),
) -> Result<Vec<String>, AddrListError> {
    let mut reader = reader;
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut bad_count = 0usize;
    let mut line = Vec::new();
    let mut line_number = 0u64;
    loop {
        line.clear();
        let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
        let read = std::io::Read::take(&mut reader, limit)
            .read_until(b'\n', &mut line)
            .map_err(|source| AddrListError::Read {
                source_name: source_name.to_string(),
                source,
            })?;
        if read == 0 {
            break;
        }
        line_number += 1;
        if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            return Err(AddrListError::LineTooLong {
                source_name: source_name.to_string(),
                line: line_number,
            });
        }
        let text = String::from_utf8_lossy(&line);
        let entry = text.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        if let Err(err) = crate::addr::parse_net(entry) {
            bad_count += 1;
            if problems.len() < SHOWN_PROBLEMS {
                problems.push(format!(
                    "{source_name}:{line_number}: {}: {err}",
                    crate::quote::printable(entry)
                ));
            }
            continue;
        }
        if entries.len() == MAX_ENTRIES {
            return Err(AddrListError::TooMany {
                source_name: source_name.to_string(),
            });
        }
        entries.push(entry.to_string());
        if entries.len() % 100_000 == 0 {
            progress(entries.len());
        }
    }
    if bad_count > 0 {
        let more = bad_count - problems.len();
        return Err(AddrListError::BadEntries { problems, more });
    }
    if entries.is_empty() {
        return Err(AddrListError::Empty {
            source_name: source_name.to_string(),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8]) -> Result<Vec<String>, AddrListError> {
        read_list(text, "list.txt", |_| {})
    }

    #[test]
    fn entries_comments_and_blank_lines() {
        let list = read(
            b"# attackers seen on 2026-12-04\n203.0.113.7\n\n  198.51.100.0/24  # a scanner's range\r\n2001:db8::7",
        )
        .unwrap();
        assert_eq!(list, ["203.0.113.7", "198.51.100.0/24", "2001:db8::7"]);
    }

    #[test]
    fn every_bad_entry_is_named_with_its_line() {
        let err = read(b"203.0.113.7\nnot-an-ip\n10.0.0.0/33\n\xff\xfe\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("list.txt:2: not-an-ip"), "{text}");
        assert!(text.contains("list.txt:3: 10.0.0.0/33"), "{text}");
        assert!(text.contains("list.txt:4: "), "{text}");
        assert!(text.ends_with("nothing was banned"), "{text}");
    }

    #[test]
    fn many_bad_entries_are_summed_up() {
        let text = "x\n".repeat(25);
        let err = read(text.as_bytes()).unwrap_err().to_string();
        assert_eq!(err.lines().count(), SHOWN_PROBLEMS + 2, "{err}");
        assert!(err.contains("and 15 more bad entries"), "{err}");
    }

    #[test]
    fn a_huge_line_is_refused_without_reading_it_all() {
        let mut text = b"203.0.113.7\n".to_vec();
        text.extend(std::iter::repeat_n(b'1', 10 * MAX_LINE_BYTES));
        match read(&text) {
            Err(AddrListError::LineTooLong { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        // A line of exactly the limit (newline included) is fine.
        let mut text = vec![b' '; MAX_LINE_BYTES - 12];
        text.extend(b"203.0.113.7\n");
        assert_eq!(read(&text).unwrap(), ["203.0.113.7"]);
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert!(matches!(
            read(b"# nothing\n\n"),
            Err(AddrListError::Empty { .. })
        ));
    }

    #[test]
    fn progress_is_reported_per_100k() {
        let text: String = (0..250_000u32)
            .map(|i| format!("10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255))
            .collect();
        let mut seen = Vec::new();
        let list = read_list(text.as_bytes(), "big", |n| seen.push(n)).unwrap();
        assert_eq!(list.len(), 250_000);
        assert_eq!(seen, [100_000, 200_000]);
    }
}
