//! fail2ban filter files: the INI reader, `%(...)s` substitution, the
//! failregex tag expansion (`<HOST>`, `<F-...>`), date templates and the
//! PCRE2 compile, then matching the lines that follow the file.
//! Input: an INI file, a NUL byte, then log lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orch::jail::fail2ban::{Fail2banFilter, dates::DateDetector, ini, reader, tags};

/// A low match limit keeps each hostile line cheap, as the daemon's does.
const MATCH_LIMIT: u32 = 10_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, lines) = text.split_once('\0').unwrap_or((text, ""));
    let Ok(parsed) = ini::parse(file, "fuzz.conf") else {
        return;
    };
    let config = ini::Config::from_files(vec![parsed], "fuzz.conf");
    let Ok(options) = reader::filter_options(&config, &Default::default()) else {
        return;
    };
    for pattern in &options.failregex {
        let _ = tags::expand(pattern, false);
        let _ = tags::python_to_pcre(pattern);
    }
    if let Ok(detector) = DateDetector::new(options.datepattern.as_deref()) {
        for line in lines.lines().take(16) {
            let _ = detector.find(line);
        }
    }
    let Ok(mut filter) = Fail2banFilter::from_options(options, "fuzz.conf", "fuzz", MATCH_LIMIT)
    else {
        return;
    };
    filter.set_now(Some(1_700_000_000));
    for line in lines.lines().take(16) {
        let _ = filter.process(line);
    }
});
