//! orch.toml and conf.d files: TOML to a checked Config, merged in order.
//! Input: up to four UTF-8 documents separated by NUL bytes. Must never
//! panic; an invalid document is an error with file:line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let names: Vec<PathBuf> = (0..4)
        .map(|i| PathBuf::from(format!("/etc/orch/conf.d/{i}.toml")))
        .collect();
    let layers: Vec<(&std::path::Path, &str)> = text
        .splitn(4, '\0')
        .zip(&names)
        .map(|(doc, name)| (name.as_path(), doc))
        .collect();
    if let Err(err) = orch::config::parse_layers(&layers) {
        // Every issue names a file it was given.
        for issue in &err.issues {
            assert!(names.iter().any(|name| issue.file == *name), "{issue}");
        }
    }
});
