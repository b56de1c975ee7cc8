//! Log jails: watch log sources, recognise failures with filters, count
//! failures per address, and ban an address that fails too often.
//!
//! A jail is sources (journal units, files) + filters + failure counting.
//! So far: [`filter`] loads native TOML filters (and the built-in ones) and
//! matches lines ([`extract`] finds the groups of a match with DFAs);
//! [`date`] reads the timestamp a line starts with;
//! [`matcher`] is the pattern-engine interface the filters
//! are written against; [`counter`] counts failures per address (bounded)
//! and computes growing ban times ([`formula`] is fail2ban's
//! `bantime.formula`); [`test_filter`] is `orch test-filter`;
//! [`fail2ban`] loads fail2ban's own filter.d `.conf` files and runs them on
//! [`backtrack`], the bounded backtracking (PCRE2) engine; [`health`] is
//! what `orch status` shows of a running jail (lines/s, lag, limit hits,
//! lines cut or not UTF-8).

pub mod backtrack;
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
pub mod matcher;
pub mod recent_asks;
pub mod runner;
pub mod test_filter;
