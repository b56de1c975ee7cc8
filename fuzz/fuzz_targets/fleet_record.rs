//! What another fleet host writes into the bucket: a key
//! (`<host>.<net>`) and its JSON value. Input: the key, a NUL byte, then
//! the value bytes. A decoded ban names the key's own network.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orch::fleet::record;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (key_bytes, value) = data.split_at(split);
    let value = value.get(1..).unwrap_or_default();
    let Ok(raw_key) = std::str::from_utf8(key_bytes) else {
        return;
    };
    let Ok(key) = record::parse_key(raw_key) else {
        return;
    };
    assert_eq!(
        record::parse_key(&record::key(&key.origin, &key.net))
            .ok()
            .as_ref(),
        Some(&key)
    );
    if let Ok(ban) = record::decode_value(&key, raw_key, value) {
        let again = record::encode_value(&ban);
        assert!(record::decode_value(&key, raw_key, &again).is_ok());
    }
});
