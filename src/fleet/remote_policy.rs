//! The rules another host's ban must pass here, on top of the local ones
//! (`addr::BanPolicy`): a narrower minimum prefix, addresses no remote ban
//! may cover (the fleet's own plumbing: NATS servers, resolvers, gateways,
//! link-local, multicast, reserved, NAT64), and per-origin caps on count
//! and address space. One host's credentials must not be enough to cut
//! the others off.
//!
//! Pure decisions; what is protected on this host is gathered by
//! `fleet::protected`. It must not ban, persist or log.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::addr;

/// Why another host's ban was not applied, as counted per origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalKind {
    /// A local rule: allowlist, own address, loopback, local minimum prefix.
    Local,
    /// Broader than `fleet.remote_min_prefix_v4/_v6`.
    Prefix,
    /// Covers an always-protected address.
    Protected,
    /// Overlaps a network banned here already (or earlier in the batch).
    Overlap,
    /// The origin holds `fleet.max_remote_bans_per_origin` networks here.
    OriginCount,
    /// The origin's bans would cover more than `fleet.max_remote_space_v4/_v6`.
    OriginSpace,
    /// Other hosts hold `fleet.max_remote_bans` networks here in all.
    Total,
}

impl RefusalKind {
    /// The short name shown in `orch status` and the `Fleet` property.
    pub fn label(self) -> &'static str {
        match self {
            RefusalKind::Local => "local-rule",
            RefusalKind::Prefix => "prefix",
            RefusalKind::Protected => "protected",
            RefusalKind::Overlap => "overlap",
            RefusalKind::OriginCount => "origin-count",
            RefusalKind::OriginSpace => "origin-space",
            RefusalKind::Total => "total",
        }
    }
}

/// A refused remote ban: the kind, and a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub why: String,
}

impl Refusal {
    pub fn new(kind: RefusalKind, why: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            why: why.into(),
        }
    }
}

/// How much address space one origin's bans cover here, per family, in
/// addresses (IPv4) and in /64s (IPv6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OriginUsage {
    pub nets: usize,
    pub v4_addresses: u128,
    pub v6_slash64s: u128,
}

impl OriginUsage {
    /// Adds (or, with `add = false`, takes away) one network.
    pub fn count(&mut self, net: &IpNet, add: bool) {
        let (space, slot) = match net {
            IpNet::V4(_) => (space_of(net), &mut self.v4_addresses),
            IpNet::V6(_) => (space_of(net), &mut self.v6_slash64s),
        };
        if add {
            self.nets += 1;
            *slot = slot.saturating_add(space);
        } else {
            self.nets = self.nets.saturating_sub(1);
            *slot = slot.saturating_sub(space);
        }
    }
}

/// The space `net` covers: addresses for IPv4, /64s for IPv6 (a longer
/// IPv6 prefix counts as one /64: that is what an attacker rotates in).
fn space_of(net: &IpNet) -> u128 {
    match net {
        IpNet::V4(v4) => 1u128 << (32 - u32::from(v4.prefix_len())),
        IpNet::V6(v6) => 1u128 << 64u32.saturating_sub(u32::from(v6.prefix_len())),
    }
}

/// The remote rules in force for one batch.
#[derive(Debug, Clone)]
pub struct RemotePolicy {
    pub min_prefix_v4: u8,
    pub min_prefix_v6: u8,
    pub max_bans_per_origin: usize,
    /// Most IPv4 space per origin, as a prefix length (12: one /12's worth).
    pub max_space_v4: u8,
    /// Most IPv6 space per origin, as a prefix length (32: one /32's worth).
    pub max_space_v6: u8,
    /// Networks no remote ban may overlap, each with what it is.
    pub protected: Vec<(IpNet, String)>,
}

impl RemotePolicy {
    /// Checks a remote ban of `net` against the rules that do not depend
    /// on who sent it: the remote minimum prefix and the protected networks.
    pub fn check_net(&self, net: &IpNet) -> Result<(), Refusal> {
        let (min, key) = match net {
            IpNet::V4(_) => (self.min_prefix_v4, "fleet.remote_min_prefix_v4"),
            IpNet::V6(_) => (self.min_prefix_v6, "fleet.remote_min_prefix_v6"),
        };
        if net.prefix_len() < min {
            return Err(Refusal::new(
                RefusalKind::Prefix,
                format!("/{} is broader than {key} = {min}", net.prefix_len()),
            ));
        }
        if let Some((_, what)) = self
            .protected
            .iter()
            .find(|(protected, _)| addr::overlaps(net, protected))
        {
            return Err(Refusal::new(
                RefusalKind::Protected,
                format!("it covers {what}, which no other host may ban here"),
            ));
        }
        Ok(())
    }

    /// Checks that `origin`, holding `usage` here, may add `net`.
    pub fn check_origin_caps(&self, net: &IpNet, usage: &OriginUsage) -> Result<(), Refusal> {
        if usage.nets >= self.max_bans_per_origin {
            return Err(Refusal::new(
                RefusalKind::OriginCount,
                format!(
                    "the origin holds fleet.max_remote_bans_per_origin ({}) networks here",
                    self.max_bans_per_origin
                ),
            ));
        }
        let mut after = *usage;
        after.count(net, true);
        let (used, cap, key) = match net {
            IpNet::V4(_) => (
                after.v4_addresses,
                1u128 << (32 - u32::from(self.max_space_v4.min(32))),
                ("fleet.max_remote_space_v4", self.max_space_v4),
            ),
            IpNet::V6(_) => (
                after.v6_slash64s,
                1u128 << 64u32.saturating_sub(u32::from(self.max_space_v6.min(64))),
                ("fleet.max_remote_space_v6", self.max_space_v6),
            ),
        };
        if used > cap {
            return Err(Refusal::new(
                RefusalKind::OriginSpace,
                format!(
                    "the origin's bans here would cover more than one /{} ({} = {})",
                    key.1, key.0, key.1
                ),
            ));
        }
        Ok(())
    }
}

/// Networks no remote ban may cover on any host, whatever its setup.
pub fn always_protected() -> Vec<(IpNet, String)> {
    let v4 = |a, b, c, d, len| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len));
    let v6 = |segments: [u16; 8], len| {
        let [a, b, c, d, e, f, g, h] = segments;
        IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(a, b, c, d, e, f, g, h),
            len,
        ))
    };
    [
        (v4(0, 0, 0, 0, 8), "\"this network\" 0.0.0.0/8"),
        (
            v4(169, 254, 0, 0, 16),
            "link-local 169.254.0.0/16 (cloud metadata)",
        ),
        (v4(224, 0, 0, 0, 4), "multicast 224.0.0.0/4"),
        (v4(240, 0, 0, 0, 4), "reserved 240.0.0.0/4"),
        (v6([0; 8], 128), "the unspecified address ::"),
        (
            v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
            "link-local fe80::/10",
        ),
        (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast ff00::/8"),
        (
            v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
            "NAT64 64:ff9b::/96",
        ),
        (
            v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
            "local NAT64 64:ff9b:1::/48",
        ),
        (
            v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
            "IPv4-mapped ::ffff:0:0/96",
        ),
    ]
    .into_iter()
    .map(|(net, what)| (net, what.to_string()))
    .collect()
}

/// One protected address, described (`"the NATS server 10.0.0.2"`).
pub fn protected_address(address: IpAddr, what: &str) -> (IpNet, String) {
    (IpNet::from(address), format!("{what} {address}"))
}

/// Refusals of one batch, per origin and kind, with one example each
/// origin for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refusals {
    pub counts: std::collections::BTreeMap<(Arc<str>, RefusalKind), usize>,
    pub examples: HashMap<Arc<str>, String>,
}

impl Refusals {
    pub fn note(&mut self, origin: &Arc<str>, net: &IpNet, refusal: Refusal) {
        *self
            .counts
            .entry((origin.clone(), refusal.kind))
            .or_insert(0) += 1;
        self.examples
            .entry(origin.clone())
            .or_insert_with(|| format!("{net}: {}", refusal.why));
    }

    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    /// One line for the whole batch: per origin, the counts by kind and
    /// one example.
    pub fn summary(&self) -> Option<String> {
        if self.counts.is_empty() {
            return None;
        }
        let mut per_origin: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for ((origin, kind), count) in &self.counts {
            per_origin
                .entry(origin)
                .or_default()
                .push(format!("{count} {}", kind.label()));
        }
        let parts: Vec<String> = per_origin
            .into_iter()
            .map(|(origin, counts)| {
                let example = self
                    .examples
                    .get(origin)
                    .map(|e| format!(", e.g. {e}"))
                    .unwrap_or_default();
                format!("{origin}: {}{example}", counts.join(", "))
            })
            .collect();
        Some(format!(
            "fleet: not applying {} remote bans: {}",
            self.total(),
            parts.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("test net parses")
    }

    fn policy() -> RemotePolicy {
        RemotePolicy {
            min_prefix_v4: 24,
            min_prefix_v6: 48,
            max_bans_per_origin: 3,
            max_space_v4: 22,
            max_space_v6: 46,
            protected: always_protected(),
        }
    }

    #[test]
    fn broad_and_protected_networks_are_refused() {
        let policy = policy();
        let kind = |text: &str| policy.check_net(&net(text)).err().map(|r| r.kind);
        assert_eq!(kind("10.1.0.0/16"), Some(RefusalKind::Prefix));
        assert_eq!(kind("2001:db8::/32"), Some(RefusalKind::Prefix));
        assert_eq!(kind("169.254.169.254/32"), Some(RefusalKind::Protected));
        assert_eq!(kind("fe80::1/128"), Some(RefusalKind::Protected));
        assert_eq!(kind("64:ff9b::/96"), Some(RefusalKind::Protected));
        assert_eq!(kind("64:ff9b::c000:201/128"), Some(RefusalKind::Protected));
        assert_eq!(kind("239.1.2.3/32"), Some(RefusalKind::Protected));
        assert_eq!(kind("203.0.113.0/24"), None);
        assert_eq!(kind("2001:db8:1::/48"), None);
        let mut with_server = policy.clone();
        with_server.protected.push(protected_address(
            "10.0.0.2".parse().expect("literal"),
            "the NATS server",
        ));
        let refusal = with_server.check_net(&net("10.0.0.0/24")).unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::Protected);
        assert!(
            refusal.why.contains("the NATS server 10.0.0.2"),
            "{refusal:?}"
        );
    }

    #[test]
    fn origin_caps_count_networks_and_space() {
        let policy = policy();
        let mut usage = OriginUsage::default();
        // /22 of IPv4 = 1024 addresses: four /24s fit, so the count of 3
        // stops first.
        for text in ["198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"] {
            assert_eq!(policy.check_origin_caps(&net(text), &usage), Ok(()));
            usage.count(&net(text), true);
        }
        let refusal = policy
            .check_origin_caps(&net("198.18.0.1/32"), &usage)
            .unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::OriginCount);
        // Space: 3 /24s + ... would need more than 1024 addresses.
        let roomy = RemotePolicy {
            max_bans_per_origin: 100,
            ..policy.clone()
        };
        let mut usage = OriginUsage::default();
        for i in 0..4 {
            let this = net(&format!("198.18.{i}.0/24"));
            assert_eq!(roomy.check_origin_caps(&this, &usage), Ok(()));
            usage.count(&this, true);
        }
        let refusal = roomy
            .check_origin_caps(&net("198.18.9.9/32"), &usage)
            .unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::OriginSpace);
        // IPv6 counts /64s: a /128 costs one.
        let mut v6 = OriginUsage::default();
        v6.count(&net("2001:db8::1/128"), true);
        assert_eq!(v6.v6_slash64s, 1);
        v6.count(&net("2001:db8:1::/48"), true);
        assert_eq!(v6.v6_slash64s, 1 + 65_536);
        v6.count(&net("2001:db8::1/128"), false);
        assert_eq!((v6.nets, v6.v6_slash64s), (1, 65_536));
    }

    #[test]
    fn the_summary_is_one_line_per_batch() {
        let mut refusals = Refusals::default();
        let srv1: Arc<str> = Arc::from("srv1");
        for i in 0..200u32 {
            let net = net(&format!("10.{}.0.0/16", i % 256));
            refusals.note(&srv1, &net, Refusal::new(RefusalKind::Prefix, "too broad"));
        }
        refusals.note(
            &Arc::from("srv3"),
            &net("fe80::1/128"),
            Refusal::new(RefusalKind::Protected, "link-local"),
        );
        let line = refusals.summary().expect("refusals");
        assert!(!line.contains('\n'));
        assert!(line.contains("201 remote bans"), "{line}");
        assert!(
            line.contains("srv1: 200 prefix, e.g. 10.0.0.0/16: too broad"),
            "{line}"
        );
        assert!(line.contains("srv3: 1 protected"), "{line}");
        assert_eq!(Refusals::default().summary(), None);
    }
}
