//! Hostile log lines against both engines with real filters: the built-in
//! sshd filter (linear regex engine) and fail2ban's own sshd.conf in
//! aggressive mode (PCRE2, backtracking, under the daemon's match limit).
//! A line may match or not; it must never panic, and a match names an
//! address that parses.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use orch::jail::line_filter::LineFilter;

fn filters() -> &'static Mutex<Vec<Box<dyn LineFilter>>> {
    static FILTERS: OnceLock<Mutex<Vec<Box<dyn LineFilter>>>> = OnceLock::new();
    FILTERS.get_or_init(|| {
        let mut filters = vec![orch::jail::load::load_filter("sshd").expect("built-in sshd")];
        let fail2ban = "/etc/fail2ban/filter.d/sshd.conf[mode=aggressive]";
        if std::path::Path::new("/etc/fail2ban/filter.d/sshd.conf").exists() {
            filters.push(orch::jail::load::load_filter(fail2ban).expect("fail2ban sshd.conf"));
        }
        Mutex::new(filters)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut filters = filters().lock().unwrap_or_else(|e| e.into_inner());
    let mut found = Vec::new();
    for filter in filters.iter_mut() {
        for line in text.lines().take(32) {
            found.clear();
            let _ = filter.feed(line, &mut found);
        }
    }
});
