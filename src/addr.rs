//! Addresses and prefixes: parsing user input into normalised networks, and
//! the safety rules that decide what orch may never ban, and the transport
//! protocols a port-scoped ban covers.
//!
//! This module is pure: it reads the host's interface addresses when asked
//! but never touches the firewall or the store.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why an address or prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("{input} is not an IP address or CIDR prefix")]
    Invalid { input: String },
    #[error("{input} has host bits set; did you mean {network}?")]
    HostBits { input: String, network: IpNet },
    #[error("{net} is not a unicast address")]
    NotUnicast { net: IpNet },
    #[error("{net} is broader than the minimum prefix /{min} (bans.min_prefix_v{family})")]
    TooBroad { net: IpNet, min: u8, family: u8 },
    #[error("{net} covers {what}; orch never bans it")]
    Protected { net: IpNet, what: String },
    #[error("{net} overlaps allowlisted {entry}")]
    Allowlisted { net: IpNet, entry: IpNet },
}

/// Parses an address ("192.0.2.1", "2001:db8::1") or a prefix
/// ("198.51.100.0/24") into a network. Single addresses become /32 or /128,
/// IPv4-mapped IPv6 addresses become IPv4, and a prefix with host bits set
/// is refused with the network the user probably meant.
pub fn parse_net(input: &str) -> Result<IpNet, AddrError> {
    let text = input.trim();
    let invalid = || AddrError::Invalid {
        input: crate::quote::quote_input(input),
    };
    let net = if text.contains('/') {
        let parsed: IpNet = text.parse().map_err(|_| invalid())?;
        if parsed.trunc() != parsed {
            return Err(AddrError::HostBits {
                input: text.to_string(),
                network: parsed.trunc(),
            });
        }
        parsed
    } else {
        let addr: IpAddr = text.parse().map_err(|_| invalid())?;
        IpNet::from(addr)
    };
    Ok(unmap_v4(net))
}

/// Turns `::ffff:a.b.c.d/p` into `a.b.c.d/(p-96)`; other networks pass through.
fn unmap_v4(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(mapped) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(mapped);
    }
    net
}

/// True when `net` is a single address (/32 or /128).
pub fn is_single_address(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// How `net` is shown to people and other programs: a single address
/// without its prefix length, a network as `address/length`.
pub fn display_net(net: &IpNet) -> String {
    if is_single_address(net) {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The network a jail counts and bans `addr` by: the address itself for
/// IPv4, its `ipv6_prefix` network for IPv6 (so an attacker rotating
/// addresses inside one /64 is one offender).
pub fn jail_net(addr: IpAddr, ipv6_prefix: u8) -> IpNet {
    match addr {
        IpAddr::V4(_) => IpNet::from(addr),
        IpAddr::V6(v6) => Ipv6Net::new(v6, ipv6_prefix.min(128))
            .map(|net| IpNet::V6(net.trunc()))
            .unwrap_or_else(|_| IpNet::from(addr)),
    }
}

/// True when two networks share at least one address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The rules every ban must pass, whatever its source.
#[derive(Debug, Clone)]
pub struct BanPolicy {
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    /// Static and runtime allowlist entries together.
    pub allowlist: Vec<IpNet>,
    /// The host's own addresses, read when the policy was built.
    pub own_addresses: Vec<IpAddr>,
}

impl BanPolicy {
    /// Checks that `net` may be banned: unicast, no broader than the minimum
    /// prefix, not covering loopback or the host's own addresses, and not
    /// overlapping the allowlist.
    pub fn check(&self, net: &IpNet) -> Result<(), AddrError> {
        if !is_unicast(net) {
            return Err(AddrError::NotUnicast { net: *net });
        }
        let (min, family) = match net {
            IpNet::V4(_) => (self.min_prefix_v4, 4),
            IpNet::V6(_) => (self.min_prefix_v6, 6),
        };
        if net.prefix_len() < min {
            return Err(AddrError::TooBroad {
                net: *net,
                min,
                family,
            });
        }
        for loopback in loopback_nets() {
            if overlaps(net, &loopback) {
                return Err(AddrError::Protected {
                    net: *net,
                    what: format!("loopback {loopback}"),
                });
            }
        }
        if let Some(own) = self.own_addresses.iter().find(|own| net.contains(*own)) {
            return Err(AddrError::Protected {
                net: *net,
                what: format!("this host's own address {own}"),
            });
        }
        if let Some(entry) = self.allowlist.iter().find(|entry| overlaps(net, entry)) {
            return Err(AddrError::Allowlisted {
                net: *net,
                entry: *entry,
            });
        }
        Ok(())
    }
}

fn loopback_nets() -> [IpNet; 2] {
    [
        IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
    ]
}

fn is_unicast(net: &IpNet) -> bool {
    let single_unspecified = is_single_address(net) && net.addr().is_unspecified();
    let special = match net {
        IpNet::V4(v4) => v4.network().is_multicast() || v4.network().is_broadcast(),
        IpNet::V6(v6) => v6.network().is_multicast(),
    };
    !(single_unspecified || special)
}

/// The addresses configured on this host's interfaces (in the current
/// network namespace). An error reading them yields an empty list: the
/// loopback and allowlist rules still hold.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return found;
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: cursor is a node of the list returned by getifaddrs.
        let entry = unsafe { &*cursor };
        if let Some(addr) = sockaddr_ip(entry.ifa_addr) {
            found.push(addr);
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: sa is non-null and points at a sockaddr whose family tells its real type.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// A transport protocol a port-scoped ban covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The IP protocol number, as `meta l4proto` matches it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jails_count_ipv6_by_prefix_and_ipv4_by_address() {
        let v6 = |text: &str| text.parse::<IpAddr>().expect("literal");
        assert_eq!(
            jail_net(v6("2001:db8:1:2:aaaa::1"), 64).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            jail_net(v6("2001:db8:1:2:aaaa::1"), 64),
            jail_net(v6("2001:db8:1:2:ffff:1:2:3"), 64)
        );
        assert_eq!(
            jail_net(v6("2001:db8::1"), 128).to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(jail_net(v6("192.0.2.7"), 64).to_string(), "192.0.2.7/32");
    }

    fn net(text: &str) -> IpNet {
        text.parse().expect("test literal")
    }

    fn policy() -> BanPolicy {
        BanPolicy {
            min_prefix_v4: 16,
            min_prefix_v6: 32,
            allowlist: vec![net("192.0.2.0/28"), net("2001:db8:1::/48")],
            own_addresses: vec!["198.51.100.10".parse().expect("literal")],
        }
    }

    #[test]
    fn parses_addresses_and_prefixes() {
        assert_eq!(parse_net("192.0.2.1"), Ok(net("192.0.2.1/32")));
        assert_eq!(parse_net(" 2001:db8::1 "), Ok(net("2001:db8::1/128")));
        assert_eq!(parse_net("10.1.0.0/16"), Ok(net("10.1.0.0/16")));
        assert_eq!(parse_net("::ffff:192.0.2.9"), Ok(net("192.0.2.9/32")));
    }

    #[test]
    fn rejects_garbage_and_host_bits() {
        assert!(matches!(
            parse_net("banana"),
            Err(AddrError::Invalid { .. })
        ));
        assert!(matches!(
            parse_net("1.2.3.4/33"),
            Err(AddrError::Invalid { .. })
        ));
        assert!(matches!(parse_net(""), Err(AddrError::Invalid { .. })));
        let err = parse_net("192.0.2.7/24").expect_err("host bits");
        assert_eq!(
            err.to_string(),
            "192.0.2.7/24 has host bits set; did you mean 192.0.2.0/24?"
        );
    }

    #[test]
    fn policy_refuses_what_must_never_be_banned() {
        let p = policy();
        assert!(p.check(&net("203.0.113.5/32")).is_ok());
        assert!(p.check(&net("10.20.0.0/16")).is_ok());
        assert!(matches!(
            p.check(&net("10.0.0.0/8")),
            Err(AddrError::TooBroad { min: 16, .. })
        ));
        assert!(matches!(
            p.check(&net("2001:db8::/16")),
            Err(AddrError::TooBroad { min: 32, .. })
        ));
        assert!(matches!(
            p.check(&net("127.0.0.1/32")),
            Err(AddrError::Protected { .. })
        ));
        assert!(matches!(
            p.check(&net("::1/128")),
            Err(AddrError::Protected { .. })
        ));
        assert!(matches!(
            p.check(&net("198.51.100.0/24")),
            Err(AddrError::Protected { .. })
        ));
        assert!(matches!(
            p.check(&net("192.0.2.3/32")),
            Err(AddrError::Allowlisted { .. })
        ));
        assert!(matches!(
            p.check(&net("192.0.0.0/16")),
            Err(AddrError::Allowlisted { .. })
        ));
        assert!(matches!(
            p.check(&net("2001:db8:1:2::5/128")),
            Err(AddrError::Allowlisted { .. })
        ));
        assert!(matches!(
            p.check(&net("224.0.0.1/32")),
            Err(AddrError::NotUnicast { .. })
        ));
        assert!(matches!(
            p.check(&net("0.0.0.0/32")),
            Err(AddrError::NotUnicast { .. })
        ));
    }
}
