//! What on this host no other host may ban: its gateways (from the
//! kernel's routing tables, /proc/net/route and /proc/net/ipv6_route), its
//! resolvers (`dns.servers`, else /etc/resolv.conf), and the NATS servers
//! it talks to (resolved by the session). Read when a batch of remote
//! changes is checked; the rules themselves are in `remote_policy`.
//!
//! Reads files only; it must not ban, resolve names or log per line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::remote_policy::{always_protected, protected_address};

/// Every network no remote ban may cover here: the fixed ranges, then
/// this host's gateways, resolvers and fleet servers.
pub fn gather(
    dns_servers: &[std::net::SocketAddr],
    nats_servers: &[IpAddr],
) -> Vec<(IpNet, String)> {
    let mut protected = always_protected();
    let routes_v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let routes_v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    for gateway in gateways_v4(&routes_v4).chain(gateways_v6(&routes_v6)) {
        protected.push(protected_address(gateway, "the gateway"));
    }
    let resolvers: Vec<IpAddr> = if dns_servers.is_empty() {
        let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        nameservers(&resolv_conf).collect()
    } else {
        dns_servers.iter().map(std::net::SocketAddr::ip).collect()
    };
    for resolver in resolvers {
        protected.push(protected_address(resolver, "the resolver"));
    }
    for server in nats_servers {
        protected.push(protected_address(*server, "the NATS server"));
    }
    protected
}

/// Gateways of the IPv4 routes in /proc/net/route's format (hex, in the
/// kernel's byte order, which is little-endian on every host orch runs on).
fn gateways_v4(table: &str) -> impl Iterator<Item = IpAddr> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let gateway = line.split_whitespace().nth(2)?;
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        (raw != 0).then(|| IpAddr::V4(Ipv4Addr::from(raw.swap_bytes())))
    })
}

/// Next hops of the IPv6 routes in /proc/net/ipv6_route's format.
fn gateways_v6(table: &str) -> impl Iterator<Item = IpAddr> + '_ {
    table.lines().filter_map(|line| {
        let next_hop = line.split_whitespace().nth(4)?;
        let raw = u128::from_str_radix(next_hop, 16).ok()?;
        (raw != 0).then(|| IpAddr::V6(Ipv6Addr::from(raw)))
    })
}

/// The `nameserver` addresses of a resolv.conf.
fn nameservers(resolv_conf: &str) -> impl Iterator<Item = IpAddr> + '_ {
    resolv_conf.lines().filter_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver")
            .then(|| words.next())
            .flatten()
            // A scoped address (fe80::1%eth0) is link-local: covered anyway.
            .and_then(|address| address.split('%').next()?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_come_from_both_routing_tables() {
        let v4 = "Iface\tDestination\tGateway \tFlags\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(
            gateways_v4(v4).collect::<Vec<_>>(),
            vec!["192.0.2.1".parse::<IpAddr>().expect("literal")]
        );
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  20010db8000000000000000000000001 00000400 00000002 00000000 00000003 eth0\n";
        assert_eq!(
            gateways_v6(v6).collect::<Vec<_>>(),
            vec!["2001:db8::1".parse::<IpAddr>().expect("literal")]
        );
        assert_eq!(gateways_v4("garbage\nnot a route\n").count(), 0);
    }

    #[test]
    fn nameservers_are_read_from_resolv_conf() {
        let conf = "# comment\nnameserver 10.255.255.53\nsearch example.org\n\
                    nameserver fe80::1%eth0\nnameserver not-an-address\noptions edns0\n";
        assert_eq!(
            nameservers(conf).collect::<Vec<_>>(),
            vec![
                "10.255.255.53".parse::<IpAddr>().expect("literal"),
                "fe80::1".parse::<IpAddr>().expect("literal"),
            ]
        );
    }

    #[test]
    fn gathering_protects_the_configured_resolvers_and_servers() {
        let dns: std::net::SocketAddr = "192.0.2.53:53".parse().expect("literal");
        let nats: IpAddr = "198.51.100.4".parse().expect("literal");
        let protected = gather(&[dns], &[nats]);
        let covers = |text: &str| {
            let net: IpNet = text.parse().expect("literal");
            protected
                .iter()
                .any(|(p, _)| crate::addr::overlaps(p, &net))
        };
        assert!(covers("192.0.2.53/32"));
        assert!(covers("198.51.100.4/32"));
        assert!(covers("169.254.169.254/32"));
        assert!(!covers("203.0.113.9/32"));
    }
}
