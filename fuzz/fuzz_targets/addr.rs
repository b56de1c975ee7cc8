//! Addresses and prefixes as `orch ban`, D-Bus and config give them.
//! A parsed network prints in a form that parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(net) = orch::addr::parse_net(text) else {
        return;
    };
    assert_eq!(net, net.trunc(), "{text:?} kept host bits");
    let again = orch::addr::parse_net(&net.to_string()).expect("a printed network parses");
    assert_eq!(net, again);
    let jail = orch::addr::jail_net(net.addr(), 64);
    assert!(jail.contains(&net.addr()));
});
