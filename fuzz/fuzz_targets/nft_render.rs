//! The nft script renderer, fed arbitrary valid networks, ports, protocols
//! and timeouts (what the core can hand it): every script must pass
//! `nft -c` (the kernel's own check, nothing committed). The fuzzer moves
//! itself into a fresh network namespace first and creates orch's table
//! there, so element scripts are checked against a real table.
#![no_main]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Once};

use arbitrary::Arbitrary;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use orch::addr::Protocol;
use orch::firewall::script::{
    DnsElements, Ownership, PortScope, TableContents, TableLayout, TimedElement,
};

#[derive(Debug, Arbitrary)]
struct Net {
    v6: bool,
    bits: u128,
    prefix: u8,
}

impl Net {
    /// One address, as DNS answers give them.
    fn host(&self) -> IpNet {
        let net = self.net();
        IpNet::new(net.addr(), net.max_prefix_len()).expect("full length")
    }

    fn net(&self) -> IpNet {
        let addr = if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.bits))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.bits as u32))
        };
        let max = if self.v6 { 128 } else { 32 };
        // The core never bans broader than bans.min_prefix (at least /8).
        let prefix = 8 + self.prefix % (max - 7);
        IpNet::new(addr, prefix).expect("prefix in range").trunc()
    }
}

#[derive(Debug, Arbitrary)]
struct Ban {
    net: Net,
    timeout: u32,
    ports: Option<(Vec<u16>, u8)>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    bans: Vec<Ban>,
    allows: Vec<Net>,
    dns_any_port: Vec<(Net, u32)>,
    dns_by_port: Vec<(Net, u32, u16)>,
}

fn timed(net: IpNet, timeout: u32) -> TimedElement {
    // Timeouts run from 1 s to orch's limit on a ban (ten years).
    let max = orch::config::MAX_BAN_TIME.as_secs();
    TimedElement::every_port(net, 1 + u64::from(timeout) % max)
}

fn layout() -> TableLayout {
    TableLayout::from(&orch::config::Config::default().firewall)
}

fn nft(script: &str, check: bool) -> Result<(), String> {
    let mut command = Command::new("nft");
    if check {
        command.arg("-c");
    }
    let mut child = command
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("nft: {err}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|err| format!("writing to nft: {err}"))?;
    let out = child
        .wait_with_output()
        .map_err(|err| format!("nft: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn setup() {
    // SAFETY: unshare affects only this process (single-threaded here, at
    // the first input) and its children.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): run the fuzzer as root");
    let empty = layout().full_table(Ownership::Unowned, &TableContents::default());
    nft(&empty, false).expect("create orch's table");
}

fuzz_target!(|input: Input| {
    static SETUP: Once = Once::new();
    SETUP.call_once(setup);
    let layout = layout();
    // The core refuses a prefix that overlaps a different banned prefix
    // (`refuse_prefix_overlap`: interval sets reject overlapping elements),
    // so such a pair never reaches the renderer.
    let mut prefixes: Vec<IpNet> = Vec::new();
    let bans: Vec<TimedElement> = input
        .bans
        .iter()
        .take(64)
        .filter(|ban| {
            let net = ban.net.net();
            if net.prefix_len() == net.max_prefix_len() {
                return true;
            }
            let clash = prefixes
                .iter()
                .any(|other| *other != net && orch::addr::overlaps(&net, other));
            if !clash {
                prefixes.push(net);
            }
            !clash
        })
        .map(|ban| {
            let mut element = timed(ban.net.net(), ban.timeout);
            if let Some((ports, protocols)) = &ban.ports
                && !ports.is_empty()
            {
                let protocols = match protocols % 3 {
                    0 => vec![Protocol::Tcp],
                    1 => vec![Protocol::Udp],
                    _ => vec![Protocol::Tcp, Protocol::Udp],
                };
                element.scope = Some(Arc::new(PortScope {
                    protocols,
                    ports: ports.iter().take(8).copied().collect(),
                }));
            }
            element
        })
        .collect();
    let allows: Vec<IpNet> = input.allows.iter().take(64).map(Net::net).collect();
    // Every other entry ends, some of them inside entries that do not.
    let allow_timeouts: orch::firewall::AllowTimeouts = allows
        .iter()
        .step_by(2)
        .map(|net| (*net, 1 + u64::from(net.prefix_len()) * 97))
        .collect();
    let dns_allows = DnsElements {
        any_port: (input.dns_any_port.iter().take(32))
            .map(|(net, timeout)| timed(net.host(), *timeout))
            .collect(),
        by_port: (input.dns_by_port.iter().take(32))
            .map(|(net, timeout, port)| (timed(net.host(), *timeout), *port))
            .collect(),
    };
    let contents = TableContents {
        allows: &allows,
        allow_timeouts: &allow_timeouts,
        dns_allows: &dns_allows,
        bans: &bans,
    };
    for script in [
        layout.full_table(Ownership::Unowned, &contents),
        layout.add_bans(&bans),
        layout.remove_bans(&bans),
        layout.replace_allows(&allows, &allow_timeouts),
        layout.replace_dns_allows(&dns_allows),
    ] {
        if let Err(err) = nft(&script, true) {
            panic!("nft -c refused the script:\n{err}\n--- script ---\n{script}");
        }
    }
});
