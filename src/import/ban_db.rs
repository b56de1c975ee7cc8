//! The bans in fail2ban's sqlite database (`bans` table: jail, ip,
//! timeofban, bantime; -1 = permanent) that are still active, with their
//! expiry. The table is history: an address banned again has several
//! rows, and only its latest ban counts.
//!
//! Every cell is hostile input (SQLite stores any type in any column):
//! each row is judged on its own by [`judge_row`], a bad one is reported
//! with its row number and never trusted, and nothing here panics or
//! overflows. The database is opened read-only; this file must not write
//! it nor talk to the daemon.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::types::ValueRef;

use super::ImportError;
use crate::quote::cut;

/// Longest reason a bad row is reported with (it quotes the row's text).
const MAX_WHY_BYTES: usize = 300;

/// One cell as SQLite gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob,
}

impl From<ValueRef<'_>> for Cell {
    fn from(value: ValueRef<'_>) -> Cell {
        match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(n) => Cell::Integer(n),
            ValueRef::Real(x) => Cell::Real(x),
            ValueRef::Text(bytes) => Cell::Text(bytes.to_vec()),
            ValueRef::Blob(_) => Cell::Blob,
        }
    }
}

/// One row of `bans`, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    pub jail: Cell,
    pub ip: Cell,
    pub time_of_ban: Cell,
    pub ban_time: Cell,
}

/// A row that makes sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbBan {
    pub jail: String,
    /// The address (or prefix) as orch writes it.
    pub address: String,
    pub time_of_ban: u64,
    /// Unix seconds the ban ends; `u64::MAX` for a permanent one.
    pub expires_at: u64,
}

impl DbBan {
    pub fn permanent(&self) -> bool {
        self.expires_at == u64::MAX
    }
}

/// Bans may start at most this far in the future (a clock set back since).
const FUTURE_SLACK: u64 = 86_400;

/// What one row says, or why it cannot be trusted.
pub fn judge_row(row: &RawRow, now: u64) -> Result<DbBan, String> {
    let jail = text(&row.jail).ok_or("the jail is not text")?;
    let ip = text(&row.ip).ok_or("the address is not text")?;
    let net = crate::addr::parse_net(&ip).map_err(|err| err.to_string())?;
    let address = crate::addr::display_net(&net);
    let time_of_ban = integer(&row.time_of_ban).ok_or("timeofban is not a number")?;
    let time_of_ban = u64::try_from(time_of_ban)
        .map_err(|_| format!("timeofban {time_of_ban} is before 1970"))?;
    if time_of_ban > now.saturating_add(FUTURE_SLACK) {
        return Err(format!("timeofban {time_of_ban} lies in the future"));
    }
    let ban_time = integer(&row.ban_time).ok_or("bantime is not a number")?;
    let expires_at = match ban_time {
        -1 => u64::MAX,
        seconds if seconds < 0 => {
            return Err(format!(
                "bantime {seconds} is negative (only -1, permanent, is)"
            ));
        }
        seconds => {
            let seconds = seconds.unsigned_abs();
            // A ban never lasts longer from now than its bantime.
            time_of_ban
                .saturating_add(seconds)
                .min(now.saturating_add(seconds))
        }
    };
    Ok(DbBan {
        jail,
        address,
        time_of_ban,
        expires_at,
    })
}

fn text(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Text(bytes) => std::str::from_utf8(bytes).ok().map(str::to_string),
        _ => None,
    }
}

fn integer(cell: &Cell) -> Option<i64> {
    match cell {
        Cell::Integer(n) => Some(*n),
        Cell::Real(x) if x.is_finite() && x.abs() < 9.0e15 => Some(x.floor() as i64),
        _ => None,
    }
}

/// What the database holds, judged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DbBans {
    /// The latest ban of each (jail, address) that has not ended, sorted
    /// by jail and address.
    pub active: Vec<DbBan>,
    /// (jail, address) whose latest ban has ended.
    pub expired: u32,
    /// Earlier bans of an address banned again since.
    pub older: u32,
    /// Rows not trusted: `row N: why`.
    pub bad: Vec<String>,
}

/// Judges every row: the latest ban per (jail, address) wins.
pub fn judge_rows(rows: impl IntoIterator<Item = RawRow>, now: u64) -> DbBans {
    let mut result = DbBans::default();
    let mut latest: HashMap<(String, String), DbBan> = HashMap::new();
    for (index, row) in rows.into_iter().enumerate() {
        match judge_row(&row, now) {
            Ok(ban) => {
                let key = (ban.jail.clone(), ban.address.clone());
                match latest.get(&key) {
                    Some(seen) if seen.time_of_ban > ban.time_of_ban => result.older += 1,
                    Some(_) => {
                        result.older += 1;
                        latest.insert(key, ban);
                    }
                    None => {
                        latest.insert(key, ban);
                    }
                }
            }
            Err(why) => result
                .bad
                .push(format!("row {}: {}", index + 1, cut(&why, MAX_WHY_BYTES))),
        }
    }
    for ban in latest.into_values() {
        if ban.expires_at > now {
            result.active.push(ban);
        } else {
            result.expired += 1;
        }
    }
    result
        .active
        .sort_by(|a, b| (&a.jail, &a.address).cmp(&(&b.jail, &b.address)));
    result
}

/// Reads `bans` from the database at `path` (read-only) and judges it.
pub fn read_bans(path: &Path, now: u64) -> Result<DbBans, ImportError> {
    let failed = |message: String| ImportError::Database {
        path: path.to_path_buf(),
        message,
    };
    if !path.is_file() {
        return Err(failed("no such file".to_string()));
    }
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = rusqlite::Connection::open_with_flags(path, flags)
        .map_err(|err| failed(err.to_string()))?;
    let mut statement = db
        .prepare("SELECT jail, ip, timeofban, bantime FROM bans")
        .map_err(|err| failed(format!("{err} (is it fail2ban's database?)")))?;
    let mut rows = statement.query([]).map_err(|err| failed(err.to_string()))?;
    let mut raw = Vec::new();
    while let Some(row) = rows.next().map_err(|err| failed(err.to_string()))? {
        let cell = |index: usize| row.get_ref(index).map(Cell::from).unwrap_or(Cell::Null);
        raw.push(RawRow {
            jail: cell(0),
            ip: cell(1),
            time_of_ban: cell(2),
            ban_time: cell(3),
        });
    }
    Ok(judge_rows(raw, now))
}
