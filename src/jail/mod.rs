//! Log jails: watch log sources, recognise failures with filters, count
//! failures per address, and ban an address that fails too often.
//!
//! A jail is sources (journal units, files) + filters + failure counting.
//!
//! - Sources: [`file_source`] follows files (rotation, positions);
//!   [`journal_source`] follows the journal by cursor, one reader thread
//!   for every journal jail, through libsystemd ([`sd_journal`]);
//!   [`journal_trust`] tells journal matches any process could forge.
//! - Filters: [`line_filter`] is the one interface between sources and
//!   filters, whatever the filter kind and engine; [`filter`] loads native
//!   TOML filters (and the built-in ones) and matches lines with the
//!   linear-time `regex` crate ([`extract`] finds the groups of a match
//!   with DFAs, [`starts`] tells which pattern alone can match a line); [`fail2ban`] loads fail2ban's own filter.d `.conf` files
//!   and runs them on PCRE2 bounded by a match limit
//!   ([`fail2ban::backtrack`]); [`date`] reads the timestamp a line starts
//!   with; [`load`] turns a filter reference into a filter.
//! - Counting and banning: [`counter`] counts failures per address
//!   (bounded); [`ban_time`] is the arithmetic of ban lengths
//!   (`bantime.increment`), with [`formula`] for fail2ban's
//!   `bantime.formula`; [`runner`] is one thread per jail, from source to
//!   ban request; [`recent_asks`] keeps it from asking again about a
//!   network it just asked about.
//! - Showing: [`health`] is what `orch status` shows of a running jail
//!   (lines/s, lag, limit hits, lines cut or not UTF-8); [`test_filter`] is
//!   `orch test-filter`.

pub mod ban_time;
pub mod counter;
pub mod date;
pub mod extract;
pub mod fail2ban;
pub mod file_source;
pub mod filter;
pub mod formula;
pub mod health;
pub mod journal_source;
pub mod journal_trust;
pub mod line_filter;
pub mod load;
pub mod recent_asks;
pub mod runner;
pub mod sd_journal;
pub mod starts;
pub mod test_filter;
