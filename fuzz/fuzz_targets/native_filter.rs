//! orch's native TOML filters: parse and compile, then classify the lines
//! that follow, and check that the fast paths (start guards, combined DFA,
//! split extractors, backtracker) answer what each pattern alone answers in
//! the `regex` crate (`Filter::reference_classify`). Input: the filter
//! TOML, a NUL byte, then log lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orch::jail::filter::Filter;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, lines) = text.split_once('\0').unwrap_or((text, ""));
    let Ok(filter) = Filter::from_toml(toml, "fuzz.toml") else {
        return;
    };
    for line in lines.lines().take(16) {
        let (outcome, found) = filter.classify(line);
        let (expected_outcome, expected) = filter.reference_classify(line);
        let groups = |m: Option<orch::jail::filter::FilterMatch>| {
            m.map(|m| (m.host, m.user, m.regex_index))
        };
        assert_eq!(
            (outcome, groups(found)),
            (expected_outcome, groups(expected)),
            "{line:?}"
        );
    }
});
