//! Renders orch's desired nftables state as `nft` scripts.
//!
//! Every function here is pure text generation: one script is one atomic
//! transaction when handed to an executor. Nothing here runs `nft` or talks
//! to the kernel; the reconciler decides *when*, this module decides *what*.
//!
//! Why native syntax rather than JSON: nftables 1.0.6 (Debian 12) ignores
//! table flags in JSON input, so an owned table can only be created with the
//! native syntax, and one transaction cannot mix the two. Native syntax is
//! also faster to parse (100k elements: 0.38 s against 0.60 s for JSON).

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::addr::{Protocol, is_single_address};
use crate::config::{FirewallConfig, Verdict};

/// Names of the sets orch keeps in its table.
pub mod sets {
    pub const ALLOW4: &str = "allow4";
    pub const ALLOW6: &str = "allow6";
    pub const BAN4: &str = "ban4";
    pub const BAN6: &str = "ban6";
    pub const BANNET4: &str = "bannet4";
    pub const BANNET6: &str = "bannet6";
    pub const DNSALLOW4: &str = "dnsallow4";
    pub const DNSALLOW6: &str = "dnsallow6";
    pub const DNSPORT4: &str = "dnsport4";
    pub const DNSPORT6: &str = "dnsport6";
    pub const PORTBAN4: &str = "portban4";
    pub const PORTBAN6: &str = "portban6";
    pub const PORTBANNET4: &str = "portbannet4";
    pub const PORTBANNET6: &str = "portbannet6";
}

/// Every set of the table: name, element type, flags. Interval sets hold
/// prefixes; hash sets single addresses (fast to change one by one). A
/// jail with ports bans IPv6 prefixes too (`ipv6_prefix`), so the port
/// ban sets come in both kinds as well.
const SET_DECLARATIONS: [(&str, &str, &str); 14] = [
    (sets::ALLOW4, "ipv4_addr", "interval, timeout"),
    (sets::ALLOW6, "ipv6_addr", "interval, timeout"),
    (sets::DNSALLOW4, "ipv4_addr", "timeout"),
    (sets::DNSALLOW6, "ipv6_addr", "timeout"),
    (sets::DNSPORT4, "ipv4_addr . inet_service", "timeout"),
    (sets::DNSPORT6, "ipv6_addr . inet_service", "timeout"),
    (sets::BAN4, "ipv4_addr", "timeout"),
    (sets::BAN6, "ipv6_addr", "timeout"),
    (sets::BANNET4, "ipv4_addr", "interval, timeout"),
    (sets::BANNET6, "ipv6_addr", "interval, timeout"),
    (
        sets::PORTBAN4,
        "ipv4_addr . inet_proto . inet_service",
        "timeout",
    ),
    (
        sets::PORTBANNET4,
        "ipv4_addr . inet_proto . inet_service",
        "interval, timeout",
    ),
    (
        sets::PORTBAN6,
        "ipv6_addr . inet_proto . inet_service",
        "timeout",
    ),
    (
        sets::PORTBANNET6,
        "ipv6_addr . inet_proto . inet_service",
        "interval, timeout",
    ),
];

/// The ports a jail's bans cover, when not every port: elements of the
/// `portban4`/`portban6` sets (address . protocol . port), or for a prefix
/// `portbannet4`/`portbannet6`, instead of the plain ban sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortScope {
    pub protocols: Vec<Protocol>,
    pub ports: Vec<u16>,
}

/// Table flags orch asks for when it creates its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// A plain table anyone (root) can edit or flush.
    Unowned,
    /// `flags owner`: tied to the creating netlink socket.
    Owned,
    /// `flags owner, persist`: owned, and kept when the owner exits.
    OwnedPersist,
}

/// Everything about the table's shape that comes from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLayout {
    pub table: String,
    pub priority: i32,
    pub verdict: Verdict,
    pub forward: bool,
    /// Whether the ban sets count packets and bytes per element.
    pub element_counters: bool,
}

impl From<&FirewallConfig> for TableLayout {
    fn from(config: &FirewallConfig) -> Self {
        TableLayout {
            table: config.table.clone(),
            priority: config.priority,
            verdict: config.verdict,
            forward: config.forward,
            element_counters: config.element_counters,
        }
    }
}

/// Addresses allowed by DNS names: on every port, or on some ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsElements {
    pub any_port: Vec<TimedElement>,
    pub by_port: Vec<(TimedElement, u16)>,
}

/// No DNS allows, for [`TableContents::default`].
static NO_DNS_ALLOWS: DnsElements = DnsElements {
    any_port: Vec::new(),
    by_port: Vec::new(),
};

/// Seconds left of the allowlist entries that end, by entry as given;
/// the others never end.
pub type AllowTimeouts = std::collections::BTreeMap<IpNet, u64>;

/// No allowlist entry ends, for [`TableContents::default`].
static NO_ALLOW_TIMEOUTS: AllowTimeouts = AllowTimeouts::new();

/// Everything a full apply puts into the table.
#[derive(Debug, Clone, Copy)]
pub struct TableContents<'a> {
    /// Static and runtime allowlist (aggregated when written).
    pub allows: &'a [IpNet],
    /// When those of `allows` that end do (see [`TableLayout::replace_allows`]).
    pub allow_timeouts: &'a AllowTimeouts,
    /// Addresses allowed by DNS names, with their timeouts.
    pub dns_allows: &'a DnsElements,
    pub bans: &'a [TimedElement],
}

impl Default for TableContents<'_> {
    fn default() -> Self {
        TableContents {
            allows: &[],
            allow_timeouts: &NO_ALLOW_TIMEOUTS,
            dns_allows: &NO_DNS_ALLOWS,
            bans: &[],
        }
    }
}

/// One ban as the kernel holds it: the network and its remaining seconds,
/// on every port, or only on `scope`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedElement {
    pub net: IpNet,
    pub timeout_secs: u64,
    pub scope: Option<std::sync::Arc<PortScope>>,
}

impl TimedElement {
    /// A ban of `net` on every port.
    pub fn every_port(net: IpNet, timeout_secs: u64) -> TimedElement {
        TimedElement {
            net,
            timeout_secs,
            scope: None,
        }
    }
}

/// What the self-check expects to find in the kernel (see
/// [`TableLayout::intact_check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntactCheck {
    pub table: String,
    /// Each chain of the table and how many rules it holds.
    pub chains: Vec<(&'static str, usize)>,
    pub elements: Vec<SampleElement>,
}

/// One ban element to look up: its set, its key as the kernel stores it,
/// and how nft would show it (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleElement {
    pub set: &'static str,
    pub key: Vec<u8>,
    pub shown: String,
}

impl SampleElement {
    /// The element `ban` puts in the kernel (the first, for a port ban);
    /// see [`SampleElement::all_of`].
    fn of(ban: &TimedElement) -> Option<SampleElement> {
        SampleElement::all_of(ban).into_iter().next()
    }

    /// Every element `ban` puts in the kernel: the address (a prefix's
    /// network address), then for a port ban the protocol and port, each
    /// field padded to 4 bytes as in nftables' registers; one element per
    /// protocol and port. None for a port scope without protocols or ports
    /// (it puts nothing in the kernel), and none for a port-scoped prefix: a
    /// concatenated interval set finds a range only by both its ends, which
    /// a one-key lookup does not give.
    pub fn all_of(ban: &TimedElement) -> Vec<SampleElement> {
        if ban.scope.is_some() && !is_single_address(&ban.net) {
            return Vec::new();
        }
        let address_key = match ban.net.network() {
            std::net::IpAddr::V4(addr) => addr.octets().to_vec(),
            std::net::IpAddr::V6(addr) => addr.octets().to_vec(),
        };
        let addr = element_text(&ban.net);
        let Some(scope) = &ban.scope else {
            return vec![SampleElement {
                set: ban_set_for(&ban.net),
                key: address_key,
                shown: addr,
            }];
        };
        let mut elements = Vec::new();
        for protocol in &scope.protocols {
            for port in &scope.ports {
                let mut key = address_key.clone();
                key.extend_from_slice(&[protocol.number(), 0, 0, 0]);
                key.extend_from_slice(&port.to_be_bytes());
                key.extend_from_slice(&[0, 0]);
                elements.push(SampleElement {
                    set: port_ban_set_for(&ban.net),
                    key,
                    shown: format!("{addr} . {} . {port}", protocol.as_str()),
                });
            }
        }
        elements
    }
}

/// Whether `set` holds bans (and so gets per-element counters when they
/// are on).
fn is_ban_set(set: &str) -> bool {
    BAN_SETS.contains(&set)
}

/// The ban set an element belongs in: single addresses go to the hash sets,
/// prefixes to the interval sets.
pub fn ban_set_for(net: &IpNet) -> &'static str {
    match (net, is_single_address(net)) {
        (IpNet::V4(_), true) => sets::BAN4,
        (IpNet::V4(_), false) => sets::BANNET4,
        (IpNet::V6(_), true) => sets::BAN6,
        (IpNet::V6(_), false) => sets::BANNET6,
    }
}

/// The set of a port-scoped ban (address . protocol . port).
fn port_ban_set_for(net: &IpNet) -> &'static str {
    match (net, is_single_address(net)) {
        (IpNet::V4(_), true) => sets::PORTBAN4,
        (IpNet::V4(_), false) => sets::PORTBANNET4,
        (IpNet::V6(_), true) => sets::PORTBAN6,
        (IpNet::V6(_), false) => sets::PORTBANNET6,
    }
}

/// A timeout in nft's time syntax. Whole days are written as days because
/// nft refuses second counts above about 10^8 ("value too large").
fn timeout_text(seconds: u64) -> String {
    let seconds = seconds.max(1);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    if days == 0 {
        format!("{rest}s")
    } else {
        format!("{days}d{rest}s")
    }
}

fn element_text(net: &IpNet) -> String {
    crate::addr::display_net(net)
}

/// The `flags …;` statement for a table block ("" when unowned).
fn table_flags(ownership: Ownership) -> &'static str {
    match ownership {
        Ownership::Unowned => "",
        Ownership::Owned => "flags owner; ",
        Ownership::OwnedPersist => "flags owner, persist; ",
    }
}

/// A transaction that creates and deletes a table with the given flags:
/// it succeeds only if nft and the kernel accept those flags, and leaves
/// nothing behind.
pub fn ownership_probe(table: &str, ownership: Ownership) -> String {
    let flags = table_flags(ownership);
    format!("table inet {table} {{ {flags}}}\ndelete table inet {table}\n")
}

/// The sets bans live in, in the order scripts touch them.
const BAN_SETS: [&str; 8] = [
    sets::BAN4,
    sets::BAN6,
    sets::BANNET4,
    sets::BANNET6,
    sets::PORTBAN4,
    sets::PORTBAN6,
    sets::PORTBANNET4,
    sets::PORTBANNET6,
];

/// Sorts a ban's elements into the ban sets: one element in a plain set,
/// or one per protocol and port in a port set. `timeout` adds the
/// element's timeout to the text (for adding; deleting names none).
fn group_by_ban_set<'a>(
    bans: impl Iterator<Item = &'a TimedElement>,
    with_timeout: bool,
) -> [(&'static str, Vec<String>); 8] {
    let mut by_set = BAN_SETS.map(|set| (set, Vec::new()));
    let mut push = |set: &str, text: String| {
        if let Some((_, texts)) = by_set.iter_mut().find(|(name, _)| *name == set) {
            texts.push(text);
        }
    };
    for ban in bans {
        let timeout = if with_timeout {
            format!(" timeout {}", timeout_text(ban.timeout_secs))
        } else {
            String::new()
        };
        let addr = element_text(&ban.net);
        match &ban.scope {
            None => push(ban_set_for(&ban.net), format!("{addr}{timeout}")),
            Some(scope) => {
                let set = port_ban_set_for(&ban.net);
                for protocol in &scope.protocols {
                    for port in &scope.ports {
                        push(
                            set,
                            format!("{addr} . {} . {port}{timeout}", protocol.as_str()),
                        );
                    }
                }
            }
        }
    }
    by_set
}

impl TableLayout {
    /// A script that replaces the whole table in one transaction: it creates
    /// the table if missing, deletes it, and declares it anew with every set,
    /// chain and element.
    pub fn full_table(&self, ownership: Ownership, contents: &TableContents<'_>) -> String {
        let table = &self.table;
        let mut out = String::with_capacity(256 + contents.bans.len() * 32);
        // The first line only makes sure the table exists for the delete; it
        // must carry the same flags, since the kernel refuses to drop
        // `owner` from an existing table (EOPNOTSUPP).
        let flags = table_flags(ownership);
        let _ = writeln!(out, "table inet {table} {{ {flags}}}");
        let _ = writeln!(out, "delete table inet {table}");
        let _ = writeln!(out, "table inet {table} {{");
        let _ = writeln!(out, "  {flags}");
        for (set, addr_type, set_flags) in SET_DECLARATIONS {
            let counter = if self.element_counters && is_ban_set(set) {
                " counter;"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  set {set} {{ type {addr_type}; flags {set_flags};{counter} }}"
            );
        }
        self.write_filter_chain(&mut out);
        for hook in self.base_chains() {
            let _ = writeln!(
                out,
                "  chain {hook} {{ type filter hook {hook} priority {}; policy accept; jump filter; }}",
                self.priority
            );
        }
        out.push_str("}\n");
        out.push_str(&self.add_allows(contents.allows, contents.allow_timeouts));
        out.push_str(&self.add_dns_allows(contents.dns_allows));
        out.push_str(&self.add_bans(contents.bans));
        out
    }

    /// The base chains, each named after its hook: input, and forward on a
    /// gateway.
    fn base_chains(&self) -> Vec<&'static str> {
        if self.forward {
            vec!["input", "forward"]
        } else {
            vec!["input"]
        }
    }

    /// The regular chain both base chains jump to: allowlist first, then bans.
    fn write_filter_chain(&self, out: &mut String) {
        let verdict = match self.verdict {
            Verdict::Drop => "drop",
            Verdict::Reject => "reject",
        };
        out.push_str("  chain filter {\n");
        let _ = writeln!(out, "    ip saddr @{} counter accept", sets::ALLOW4);
        let _ = writeln!(out, "    ip6 saddr @{} counter accept", sets::ALLOW6);
        let _ = writeln!(out, "    ip saddr @{} counter accept", sets::DNSALLOW4);
        let _ = writeln!(out, "    ip6 saddr @{} counter accept", sets::DNSALLOW6);
        let _ = writeln!(
            out,
            "    meta l4proto {{ tcp, udp, sctp }} ip saddr . th dport @{} counter accept",
            sets::DNSPORT4
        );
        let _ = writeln!(
            out,
            "    meta l4proto {{ tcp, udp, sctp }} ip6 saddr . th dport @{} counter accept",
            sets::DNSPORT6
        );
        for (family, set) in [
            ("ip", sets::BAN4),
            ("ip", sets::BANNET4),
            ("ip6", sets::BAN6),
            ("ip6", sets::BANNET6),
        ] {
            let _ = writeln!(out, "    {family} saddr @{set} counter {verdict}");
        }
        for (family, set) in [
            ("ip", sets::PORTBAN4),
            ("ip", sets::PORTBANNET4),
            ("ip6", sets::PORTBAN6),
            ("ip6", sets::PORTBANNET6),
        ] {
            let _ = writeln!(
                out,
                "    meta l4proto {{ tcp, udp }} {family} saddr . meta l4proto . th dport @{set} counter {verdict}"
            );
        }
        out.push_str("  }\n");
    }

    /// What the self-check looks for in the kernel: the table, each chain
    /// with as many rules as this layout writes, and the given ban
    /// elements (a port ban by its first protocol and port).
    pub fn intact_check(&self, sample_bans: &[TimedElement]) -> IntactCheck {
        let mut filter_chain = String::new();
        self.write_filter_chain(&mut filter_chain);
        // Every line but the chain's opening and closing ones is a rule.
        let filter_rules = filter_chain.lines().count().saturating_sub(2);
        IntactCheck {
            table: self.table.clone(),
            chains: std::iter::once(("filter", filter_rules))
                .chain(self.base_chains().into_iter().map(|hook| (hook, 1)))
                .collect(),
            elements: sample_bans.iter().filter_map(SampleElement::of).collect(),
        }
    }

    /// Removes the table if it exists, in one transaction.
    pub fn delete_table(&self) -> String {
        format!("table inet {0}\ndelete table inet {0}\n", self.table)
    }

    /// Adds ban elements, each with its explicit timeout (never without one:
    /// on kernels >= 6.12 re-adding an element without a timeout makes it
    /// permanent).
    pub fn add_bans(&self, bans: &[TimedElement]) -> String {
        self.element_commands("add", &group_by_ban_set(bans.iter(), true))
    }

    /// Removes ban elements whether or not the kernel still holds them: each
    /// is first added with a one-second timeout (a no-op if present), then
    /// deleted, so an element that already timed out cannot fail the
    /// transaction.
    ///
    /// An element listed twice is deleted once: a second delete of the same
    /// element in one transaction fails it (found by the `nft_render` fuzz
    /// target). Elements are compared as rendered, so the same network under
    /// two port scopes is still removed from both.
    pub fn remove_bans(&self, bans: &[TimedElement]) -> String {
        let present: Vec<TimedElement> = bans
            .iter()
            .map(|ban| TimedElement {
                timeout_secs: 1,
                ..ban.clone()
            })
            .collect();
        let mut out = self.add_bans(&present);
        let mut by_set = group_by_ban_set(bans.iter(), false);
        for (_, elements) in &mut by_set {
            elements.sort_unstable();
            elements.dedup();
        }
        out.push_str(&self.element_commands("delete", &by_set));
        out
    }

    /// Replaces both allow sets with `allows` (aggregated first, since
    /// interval sets refuse overlapping elements). An element ends with
    /// the last entry in it (`timeouts`), and never if one of them never
    /// does: the kernel never ends an allow before the core would.
    pub fn replace_allows(&self, allows: &[IpNet], timeouts: &AllowTimeouts) -> String {
        let mut out = String::new();
        for set in [sets::ALLOW4, sets::ALLOW6] {
            let _ = writeln!(out, "flush set inet {} {set}", self.table);
        }
        out.push_str(&self.add_allows(allows, timeouts));
        out
    }

    /// Replaces the DNS allow sets in one transaction, so a changed record
    /// swaps in with no moment without the allow.
    pub fn replace_dns_allows(&self, elements: &DnsElements) -> String {
        let mut out = String::new();
        for set in [
            sets::DNSALLOW4,
            sets::DNSALLOW6,
            sets::DNSPORT4,
            sets::DNSPORT6,
        ] {
            let _ = writeln!(out, "flush set inet {} {set}", self.table);
        }
        out.push_str(&self.add_dns_allows(elements));
        out
    }

    fn add_dns_allows(&self, elements: &DnsElements) -> String {
        let mut by_set = [
            sets::DNSALLOW4,
            sets::DNSALLOW6,
            sets::DNSPORT4,
            sets::DNSPORT6,
        ]
        .map(|set| (set, Vec::new()));
        let timeout = |element: &TimedElement| timeout_text(element.timeout_secs);
        for element in &elements.any_port {
            let slot = usize::from(matches!(element.net, IpNet::V6(_)));
            by_set[slot].1.push(format!(
                "{} timeout {}",
                element_text(&element.net),
                timeout(element)
            ));
        }
        for (element, port) in &elements.by_port {
            let slot = 2 + usize::from(matches!(element.net, IpNet::V6(_)));
            by_set[slot].1.push(format!(
                "{} . {port} timeout {}",
                element_text(&element.net),
                timeout(element)
            ));
        }
        self.element_commands("add", &by_set)
    }

    fn add_allows(&self, allows: &[IpNet], timeouts: &AllowTimeouts) -> String {
        let mut merged = IpNet::aggregate(&allows.to_vec());
        merged.sort_by_key(IpNet::network);
        // Seconds left of each merged element: the longest of the entries
        // in it, `None` (never ends) once one of them never does.
        let mut left: Vec<Option<u64>> = vec![Some(0); merged.len()];
        for allow in allows {
            let after = merged.partition_point(|m| m.network() <= allow.network());
            let Some(index) = after.checked_sub(1) else {
                continue;
            };
            left[index] = match (left[index], timeouts.get(allow)) {
                (Some(so_far), Some(&seconds)) => Some(so_far.max(seconds)),
                _ => None,
            };
        }
        let mut by_set = [(sets::ALLOW4, Vec::new()), (sets::ALLOW6, Vec::new())];
        for (net, left) in merged.iter().zip(left) {
            let slot = usize::from(matches!(net, IpNet::V6(_)));
            let text = match left {
                Some(seconds) => format!("{} timeout {}", element_text(net), timeout_text(seconds)),
                None => element_text(net),
            };
            by_set[slot].1.push(text);
        }
        self.element_commands("add", &by_set)
    }

    fn element_commands(&self, verb: &str, by_set: &[(&str, Vec<String>)]) -> String {
        let mut out = String::new();
        for (set, items) in by_set {
            if items.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "{verb} element inet {} {set} {{ {} }}",
                self.table,
                items.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(forward: bool) -> TableLayout {
        TableLayout {
            table: "orch".into(),
            priority: -10,
            verdict: Verdict::Drop,
            forward,
            element_counters: false,
        }
    }

    fn net(text: &str) -> IpNet {
        text.parse().expect("test literal")
    }

    #[test]
    fn element_counters_go_on_the_ban_sets_only() {
        let plain = layout(false).full_table(Ownership::Unowned, &TableContents::default());
        assert!(!plain.contains("counter; }"), "{plain}");
        let counted = TableLayout {
            element_counters: true,
            ..layout(false)
        }
        .full_table(Ownership::Unowned, &TableContents::default());
        for set in BAN_SETS {
            assert!(
                counted
                    .lines()
                    .any(|line| line.contains(&format!("set {set} "))
                        && line.ends_with("counter; }")),
                "{set}: {counted}"
            );
        }
        assert!(
            counted
                .lines()
                .filter(|line| line.contains("set allow"))
                .all(|line| !line.contains("counter")),
            "{counted}"
        );
    }

    #[test]
    fn full_table_puts_allow_rules_before_ban_rules() {
        let script = layout(false).full_table(Ownership::Owned, &TableContents::default());
        let allow = script.find("@allow4 counter accept").expect("allow rule");
        let ban = script.find("@ban4 counter drop").expect("ban rule");
        assert!(allow < ban);
        assert!(
            script.starts_with("table inet orch { flags owner; }\ndelete table inet orch\n"),
            "{script}"
        );
        assert!(script.contains("hook input priority -10"));
        assert!(!script.contains("hook forward"));
        assert!(
            layout(true)
                .full_table(Ownership::Unowned, &TableContents::default())
                .contains("hook forward priority -10")
        );
    }

    #[test]
    fn bans_go_to_the_right_set_with_timeouts() {
        let script = layout(false).add_bans(&[
            TimedElement::every_port(net("192.0.2.1/32"), 60),
            TimedElement::every_port(net("2001:db8::1/128"), 0),
            TimedElement::every_port(net("198.51.100.0/24"), 3600),
        ]);
        assert!(script.contains("add element inet orch ban4 { 192.0.2.1 timeout 60s }"));
        assert!(script.contains("add element inet orch ban6 { 2001:db8::1 timeout 1s }"));
        assert!(script.contains("add element inet orch bannet4 { 198.51.100.0/24 timeout 3600s }"));
        let decade = layout(false).add_bans(&[TimedElement::every_port(
            net("192.0.2.2/32"),
            3650 * 86_400 + 5,
        )]);
        assert!(decade.contains("{ 192.0.2.2 timeout 3650d5s }"), "{decade}");
        assert!(!script.contains("bannet6"));
    }

    #[test]
    fn port_scoped_bans_go_to_the_port_sets_one_element_per_protocol_and_port() {
        let scope = std::sync::Arc::new(PortScope {
            protocols: vec![Protocol::Tcp, Protocol::Udp],
            ports: vec![22, 2222],
        });
        let ban = |text: &str| TimedElement {
            net: net(text),
            timeout_secs: 60,
            scope: Some(scope.clone()),
        };
        let script = layout(false).add_bans(&[ban("192.0.2.1/32"), ban("2001:db8::1/128")]);
        assert!(script.contains(
            "add element inet orch portban4 { 192.0.2.1 . tcp . 22 timeout 60s, 192.0.2.1 . tcp . 2222 timeout 60s, \
             192.0.2.1 . udp . 22 timeout 60s, 192.0.2.1 . udp . 2222 timeout 60s }"
        ), "{script}");
        assert!(
            script.contains("portban6 { 2001:db8::1 . tcp . 22 timeout 60s"),
            "{script}"
        );
        assert!(!script.contains(" ban4 {"), "{script}");
        let removal = layout(false).remove_bans(&[ban("192.0.2.1/32")]);
        assert!(
            removal.contains("delete element inet orch portban4 { 192.0.2.1 . tcp . 22, "),
            "{removal}"
        );
        let table = layout(false).full_table(Ownership::Unowned, &TableContents::default());
        assert!(table.contains(
            "meta l4proto { tcp, udp } ip saddr . meta l4proto . th dport @portban4 counter drop"
        ), "{table}");
        // A jail's IPv6 prefix ban goes to the interval port set, which
        // the table declares (the crash the nft_render fuzz target found:
        // the hash set refused prefixes).
        let prefix = layout(false).add_bans(&[ban("2001:db8:7:8::/64")]);
        assert!(
            prefix.contains("portbannet6 { 2001:db8:7:8::/64 . tcp . 22 timeout 60s"),
            "{prefix}"
        );
        assert!(
            table.contains("set portbannet6 { type ipv6_addr . inet_proto . inet_service; flags interval, timeout; }"),
            "{table}"
        );
        let sample = layout(false).intact_check(&[ban("2001:db8:7:8::/64")]);
        assert!(sample.elements.is_empty(), "{sample:?}");
    }

    #[test]
    fn an_element_listed_twice_is_deleted_once() {
        let twice = [
            TimedElement::every_port(net("10.0.0.0/8"), 5),
            TimedElement::every_port(net("10.0.0.0/8"), 5),
        ];
        let script = layout(false).remove_bans(&twice);
        assert!(
            script.contains("delete element inet orch bannet4 { 10.0.0.0/8 }"),
            "{script}"
        );
        // The same port listed twice in one scope (the second fuzz find).
        let scope = std::sync::Arc::new(PortScope {
            protocols: vec![Protocol::Tcp],
            ports: vec![65535, 65535],
        });
        let script = layout(false).remove_bans(&[TimedElement {
            net: net("::/8"),
            timeout_secs: 1,
            scope: Some(scope),
        }]);
        assert!(
            script.contains("delete element inet orch portbannet6 { ::/8 . tcp . 65535 }"),
            "{script}"
        );
    }

    #[test]
    fn one_network_under_two_port_scopes_is_removed_from_both() {
        let host = net("192.0.2.7/32");
        let ssh = std::sync::Arc::new(PortScope {
            protocols: vec![Protocol::Tcp],
            ports: vec![22],
        });
        let script = layout(false).remove_bans(&[
            TimedElement {
                net: host,
                timeout_secs: 5,
                scope: Some(ssh),
            },
            TimedElement::every_port(host, 5),
        ]);
        assert!(
            script.contains("delete element inet orch ban4 { 192.0.2.7 }"),
            "{script}"
        );
        assert!(
            script.contains("delete element inet orch portban4 { 192.0.2.7 . tcp . 22 }"),
            "{script}"
        );
    }

    #[test]
    fn removal_tolerates_already_expired_elements() {
        let script = layout(false).remove_bans(&[TimedElement::every_port(net("192.0.2.1/32"), 5)]);
        let add = script
            .find("add element inet orch ban4 { 192.0.2.1 timeout 1s }")
            .expect("add first");
        let delete = script
            .find("delete element inet orch ban4 { 192.0.2.1 }")
            .expect("then delete");
        assert!(add < delete);
    }

    #[test]
    fn the_intact_check_names_every_chain_and_the_sampled_elements() {
        let web = std::sync::Arc::new(PortScope {
            protocols: vec![Protocol::Tcp],
            ports: vec![443, 80],
        });
        let check = layout(true).intact_check(&[
            TimedElement::every_port(net("192.0.2.1/32"), 60),
            TimedElement::every_port(net("198.51.100.0/24"), 60),
            TimedElement {
                scope: Some(web),
                ..TimedElement::every_port(net("2001:db8::1/128"), 60)
            },
        ]);
        let filter_rules = layout(true)
            .full_table(Ownership::Owned, &TableContents::default())
            .lines()
            .skip_while(|line| !line.contains("chain filter"))
            .skip(1)
            .take_while(|line| line.trim() != "}")
            .count();
        assert_eq!(
            check.chains,
            [("filter", filter_rules), ("input", 1), ("forward", 1)]
        );
        assert_eq!(check.table, "orch");
        let found: Vec<(&str, &[u8], &str)> = check
            .elements
            .iter()
            .map(|e| (e.set, e.key.as_slice(), e.shown.as_str()))
            .collect();
        let mut port_key = vec![0x20, 0x01, 0x0d, 0xb8];
        port_key.extend([0; 11]);
        port_key.extend([1, 6, 0, 0, 0, 1, 0xbb, 0, 0]);
        assert_eq!(
            found,
            [
                ("ban4", &[192, 0, 2, 1][..], "192.0.2.1"),
                ("bannet4", &[198, 51, 100, 0][..], "198.51.100.0/24"),
                ("portban6", &port_key[..], "2001:db8::1 . tcp . 443"),
            ]
        );
    }

    #[test]
    fn dns_allows_come_after_static_allows_and_before_bans() {
        let dns = DnsElements {
            any_port: vec![TimedElement::every_port(net("192.0.2.10/32"), 90)],
            by_port: vec![(TimedElement::every_port(net("2001:db8::7/128"), 60), 22)],
        };
        let contents = TableContents {
            dns_allows: &dns,
            ..TableContents::default()
        };
        let script = layout(false).full_table(Ownership::Owned, &contents);
        let allow = script.find("@allow6 counter accept").expect("allow");
        let dns_rule = script.find("@dnsallow4 counter accept").expect("dns allow");
        let ban = script.find("@ban4 counter drop").expect("ban");
        assert!(allow < dns_rule && dns_rule < ban);
        assert!(script.contains("add element inet orch dnsallow4 { 192.0.2.10 timeout 90s }"));
        assert!(script.contains("add element inet orch dnsport6 { 2001:db8::7 . 22 timeout 60s }"));
        assert!(script.contains(
            "meta l4proto { tcp, udp, sctp } ip6 saddr . th dport @dnsport6 counter accept"
        ));
        let swap = layout(false).replace_dns_allows(&dns);
        assert!(swap.starts_with("flush set inet orch dnsallow4\nflush set inet orch dnsallow6\n"));
    }

    #[test]
    fn allows_are_aggregated() {
        let none = AllowTimeouts::new();
        let script = layout(false).replace_allows(
            &[
                net("10.0.0.0/8"),
                net("10.1.0.0/16"),
                net("2001:db8::1/128"),
            ],
            &none,
        );
        assert!(script.contains("add element inet orch allow4 { 10.0.0.0/8 }"));
        assert!(script.contains("add element inet orch allow6 { 2001:db8::1 }"));
        assert!(script.starts_with("flush set inet orch allow4\n"));
    }

    #[test]
    fn an_aggregated_allow_ends_with_its_last_entry_and_never_if_one_never_does() {
        let allows = [
            net("10.0.0.0/8"),
            net("10.1.0.0/16"),
            net("192.0.2.0/25"),
            net("192.0.2.128/25"),
            net("198.51.100.7/32"),
            net("2001:db8::1/128"),
        ];
        let timeouts: AllowTimeouts = [
            (net("10.1.0.0/16"), 60),
            (net("192.0.2.0/25"), 60),
            (net("192.0.2.128/25"), 7200),
            (net("2001:db8::1/128"), 90_000),
        ]
        .into();
        let script = layout(false).replace_allows(&allows, &timeouts);
        assert!(
            script.contains(
                "add element inet orch allow4 { 10.0.0.0/8, 192.0.2.0/24 timeout 7200s, 198.51.100.7 }"
            ),
            "{script}"
        );
        assert!(
            script.contains("add element inet orch allow6 { 2001:db8::1 timeout 1d3600s }"),
            "{script}"
        );
        let full = layout(false).full_table(
            Ownership::Owned,
            &TableContents {
                allows: &allows,
                allow_timeouts: &timeouts,
                ..TableContents::default()
            },
        );
        assert!(full.contains("set allow4 { type ipv4_addr; flags interval, timeout; }"));
        assert!(full.contains("192.0.2.0/24 timeout 7200s"), "{full}");
    }
}
