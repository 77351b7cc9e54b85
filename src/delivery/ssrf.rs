//! The SSRF guard: no outbound call reaches an internal address.
//!
//! Users choose the URLs botwire calls, so a URL is an attack on the operator's
//! network until proven otherwise. The guard works at two points:
//!
//! 1. [`check_url`] before a request is built: scheme, userinfo, length, internal
//!    hostnames, and the host when it is a literal IP. This matters because
//!    reqwest connects to literal IPs directly, without asking any resolver.
//! 2. [`GuardedResolver`] when a hostname is resolved: every address is checked
//!    and blocked ones are dropped, so the address actually connected is always
//!    one the guard approved (no DNS-rebinding window between check and use).
//!
//! Names are looked up through a [`NameTable`]: `localhost` and `*.localhost`
//! are loopback without asking anyone (RFC 6761), then come the operator's
//! fixed entries (`delivery.hosts`), and only then, if it is on
//! (`delivery.system_dns`), the system resolver. Tests run with it off, so no
//! test can send a name to a DNS server.
//!
//! Invariants:
//! - [`check_ip`] refuses every address in the special-purpose ranges listed in
//!   [`blocked_reason`] unless the operator's [`AllowList`] contains it;
//! - IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64,
//!   6to4) are judged by the embedded address, so `[::ffff:127.0.0.1]` is loopback;
//! - only an IPv4-mapped address is opened by an allowlist entry for its embedded
//!   IPv4 address (the OS connects to exactly that IPv4 address); NAT64, 6to4 and
//!   IPv4-compatible forms are reached through some translator, so an allowlist of
//!   `127.0.0.0/8` does not open `[64:ff9b::7f00:1]`;
//! - the internal names `localhost`, `*.localhost`, `*.internal` and `*.local` are
//!   refused by [`check_url`] when the allowlist is empty, and otherwise connect
//!   only to addresses the allowlist explicitly contains.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use url::{Host, Url};

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Address ranges the operator has opened despite the guard (for example
/// `127.0.0.0/8` in tests, or a private subnet where internal receivers live).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

/// An allowlist entry that is neither an IP address nor a CIDR network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "allowlist entry {entry:?} is not an IP address or a CIDR network such as 10.1.0.0/16 or fd00::/8"
)]
pub struct AllowListError {
    /// The entry as given.
    pub entry: String,
}

impl AllowList {
    /// An allowlist that opens nothing.
    pub fn empty() -> Self {
        AllowList::default()
    }

    /// Builds an allowlist from networks already parsed.
    pub fn new(nets: Vec<IpNet>) -> Self {
        AllowList {
            nets: nets.into_iter().map(|n| n.trunc()).collect(),
        }
    }

    /// Parses entries such as `127.0.0.0/8`, `10.0.0.7`, `::1` or `[fd00::1]`;
    /// a bare address means just that address. Empty entries are skipped.
    pub fn parse<I, S>(entries: I) -> Result<Self, AllowListError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        for entry in entries {
            let raw = entry.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let bare = raw
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .unwrap_or(raw);
            let net = if let Ok(net) = bare.parse::<IpNet>() {
                net
            } else if let Ok(ip) = bare.parse::<IpAddr>() {
                IpNet::from(ip)
            } else {
                return Err(AllowListError {
                    entry: raw.to_string(),
                });
            };
            nets.push(net.trunc());
        }
        Ok(AllowList { nets })
    }

    /// Whether `ip` (or, for an IPv4-mapped IPv6 address, its IPv4 form) is opened.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.nets
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canonical))
    }

    /// True when nothing is opened.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The networks opened.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

impl FromStr for AllowList {
    type Err = AllowListError;

    /// Parses a comma- or whitespace-separated list, as found in config and env vars.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AllowList::parse(s.split(|c: char| c == ',' || c.is_whitespace()))
    }
}

/// An address the guard refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct Blocked {
    /// The address refused, as it would have been connected.
    pub ip: IpAddr,
    /// The special-purpose range it falls in, e.g. `loopback (127.0.0.0/8)`.
    pub reason: &'static str,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                Some((form, v4)) => write!(
                    f,
                    "address {v6} ({form} of {v4}) is not allowed: {}",
                    self.reason
                ),
                None => write!(f, "address {v6} is not allowed: {}", self.reason),
            },
            IpAddr::V4(v4) => write!(f, "address {v4} is not allowed: {}", self.reason),
        }
    }
}

/// Refuses `ip` unless it is a public address or the allowlist opens it.
pub fn check_ip(ip: IpAddr, allow: &AllowList) -> Result<(), Blocked> {
    if allow.contains(ip) {
        return Ok(());
    }
    match blocked_reason(ip) {
        Some(reason) => Err(Blocked { ip, reason }),
        None => Ok(()),
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// IPv4 special-purpose ranges, most specific first (the first match names the reason).
const V4_BLOCKED: &[(u32, u32, &str)] = &[
    (
        v4(0, 0, 0, 0),
        8,
        "unspecified, \"this network\" (0.0.0.0/8)",
    ),
    (v4(10, 0, 0, 0), 8, "private (10.0.0.0/8)"),
    (v4(100, 64, 0, 0), 10, "carrier-grade NAT (100.64.0.0/10)"),
    (v4(127, 0, 0, 0), 8, "loopback (127.0.0.0/8)"),
    (
        v4(169, 254, 169, 254),
        32,
        "cloud metadata service (169.254.169.254)",
    ),
    (v4(169, 254, 0, 0), 16, "link-local (169.254.0.0/16)"),
    (v4(172, 16, 0, 0), 12, "private (172.16.0.0/12)"),
    (
        v4(192, 0, 0, 0),
        24,
        "IETF protocol assignments (192.0.0.0/24)",
    ),
    (
        v4(192, 0, 2, 0),
        24,
        "documentation TEST-NET-1 (192.0.2.0/24)",
    ),
    (
        v4(192, 88, 99, 0),
        24,
        "6to4 relay anycast (192.88.99.0/24)",
    ),
    (v4(192, 168, 0, 0), 16, "private (192.168.0.0/16)"),
    (v4(198, 18, 0, 0), 15, "benchmarking (198.18.0.0/15)"),
    (
        v4(198, 51, 100, 0),
        24,
        "documentation TEST-NET-2 (198.51.100.0/24)",
    ),
    (
        v4(203, 0, 113, 0),
        24,
        "documentation TEST-NET-3 (203.0.113.0/24)",
    ),
    (v4(224, 0, 0, 0), 4, "multicast (224.0.0.0/4)"),
    (v4(255, 255, 255, 255), 32, "broadcast (255.255.255.255)"),
    (v4(240, 0, 0, 0), 4, "reserved (240.0.0.0/4)"),
];

fn in_v4(ip: u32, net: u32, prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    ip & mask == net & mask
}

fn in_v6(ip: u128, net: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    ip & mask == net & mask
}

const fn v6(segments: [u16; 8]) -> u128 {
    let mut out = 0u128;
    let mut i = 0;
    while i < 8 {
        out = (out << 16) | segments[i] as u128;
        i += 1;
    }
    out
}

/// IPv6 ranges blocked outright (forms embedding IPv4 are handled before these).
const V6_BLOCKED: &[(u128, u32, &str)] = &[
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0]),
        64,
        "discard-only (100::/64)",
    ),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 32, "Teredo (2001::/32)"),
    (
        v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0]),
        48,
        "benchmarking (2001:2::/48)",
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]),
        32,
        "documentation (2001:db8::/32)",
    ),
    (
        v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]),
        128,
        "cloud metadata service (fd00:ec2::254)",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]),
        7,
        "unique local (fc00::/7)",
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]),
        10,
        "link-local (fe80::/10)",
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]),
        10,
        "site-local, deprecated (fec0::/10)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8, "multicast (ff00::/8)"),
];

/// Which IPv4 address an IPv6 address stands for, and under which form, if any.
///
/// Forms: IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96` (excluding `::`
/// and `::1`), NAT64 `64:ff9b::/96` and `64:ff9b:1::/48` (RFC 6052 layouts) and
/// 6to4 `2002::/16`.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<(&'static str, Ipv4Addr)> {
    let o = ip.octets();
    let n = u128::from(ip);
    let low32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if in_v6(n, v6([0, 0, 0, 0, 0, 0xffff, 0, 0]), 96) {
        Some(("IPv4-mapped", low32))
    } else if in_v6(n, 0, 96) && n > 1 {
        Some(("IPv4-compatible", low32))
    } else if in_v6(n, v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96) {
        Some(("NAT64", low32))
    } else if in_v6(n, v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48) {
        // RFC 6052 /48 layout: IPv4 bits sit in octets 6-7 and 9-10 (octet 8 is "u").
        Some(("local-use NAT64", Ipv4Addr::new(o[6], o[7], o[9], o[10])))
    } else if in_v6(n, v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16) {
        Some(("6to4", Ipv4Addr::new(o[2], o[3], o[4], o[5])))
    } else {
        None
    }
}

/// Why `ip` must not be connected, ignoring any allowlist; `None` for public addresses.
pub fn blocked_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let n = u32::from(a);
            V4_BLOCKED
                .iter()
                .find(|(net, prefix, _)| in_v4(n, *net, *prefix))
                .map(|(_, _, reason)| *reason)
        }
        IpAddr::V6(a) => {
            let n = u128::from(a);
            if n == 0 {
                return Some("unspecified (::)");
            }
            if n == 1 {
                return Some("loopback (::1)");
            }
            if let Some((_, embedded)) = embedded_ipv4(a) {
                return blocked_reason(IpAddr::V4(embedded));
            }
            if let Some((_, _, reason)) = V6_BLOCKED
                .iter()
                .find(|(net, prefix, _)| in_v6(n, *net, *prefix))
            {
                return Some(reason);
            }
            // Everything outside 2000::/3 not handled above is unassigned or reserved.
            if !in_v6(n, v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3) {
                return Some("reserved, outside global unicast 2000::/3");
            }
            None
        }
    }
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`] bytes.
    #[error("URL is {len} bytes long, the limit is {MAX_URL_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Not a URL at all.
    #[error("not a valid URL: {0}")]
    Invalid(#[from] url::ParseError),
    /// A scheme other than http or https.
    #[error("URL scheme {0:?} is not allowed, use http or https")]
    Scheme(String),
    /// `user:password@` in the URL; credentials belong in headers.
    #[error("URL must not contain a user name or password, send credentials in a header")]
    UserInfo,
    /// No host.
    #[error("URL has no host")]
    NoHost,
    /// A hostname reserved for internal use, with no allowlist to open it.
    #[error("host {0:?} is an internal name (localhost, *.localhost, *.internal, *.local)")]
    InternalHost(String),
    /// A literal IP host the guard refuses.
    #[error(transparent)]
    Blocked(#[from] Blocked),
}

/// True for `localhost`, `*.localhost`, `*.internal` and `*.local` (any case, trailing dot ignored).
pub fn is_internal_hostname(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    ["localhost", "internal", "local"]
        .iter()
        .any(|suffix| h == *suffix || h.ends_with(&format!(".{suffix}")))
}

/// Checks a user-supplied URL before anything is sent to it, and returns it parsed.
///
/// Parsing follows the WHATWG URL standard, which normalises IPv4 spellings
/// (`0x7f000001`, `2130706433`, `0177.0.0.1`, `127.1`, percent-encoded digits) to
/// dotted form, so every spelling of a literal address meets [`check_ip`].
/// Hostnames are resolved and checked later, by [`GuardedResolver`].
pub fn check_url(url: &str, allow: &AllowList) -> Result<Url, UrlError> {
    if url.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong { len: url.len() });
    }
    let parsed = Url::parse(url)?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => return Err(UrlError::Scheme(other.to_string())),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::UserInfo);
    }
    match parsed.host() {
        None => return Err(UrlError::NoHost),
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow)?,
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow)?,
        Some(Host::Domain(name)) => {
            if name.is_empty() {
                return Err(UrlError::NoHost);
            }
            if allow.is_empty() && is_internal_hostname(name) {
                return Err(UrlError::InternalHost(name.to_string()));
            }
        }
    }
    Ok(parsed)
}

/// Why a guarded lookup gave no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The lookup itself failed (no such name, no DNS server, …).
    #[error("DNS lookup of {host} failed: {source}")]
    Lookup {
        /// The name looked up.
        host: String,
        /// What the system resolver said.
        #[source]
        source: io::Error,
    },
    /// The name resolved to no address at all.
    #[error("DNS lookup of {host} returned no address")]
    NoAddress {
        /// The name looked up.
        host: String,
    },
    /// The name is not in the fixed table and the system resolver is off;
    /// nothing was looked up.
    #[error(
        "{host} is not in delivery.hosts and the system resolver is off (delivery.system_dns = false); nothing was looked up"
    )]
    NotListed {
        /// The name asked for.
        host: String,
    },
    /// Every address the name resolved to is refused by the guard.
    #[error("{host} resolves only to refused addresses: {}", list_blocked(.blocked))]
    Blocked {
        /// The name looked up.
        host: String,
        /// Each address refused, with its reason.
        blocked: Vec<Blocked>,
    },
}

fn list_blocked(blocked: &[Blocked]) -> String {
    blocked
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A `delivery.hosts` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostsError {
    /// The name is not a hostname (letters, digits, `-`, `_`, dot-separated).
    #[error("delivery.hosts: {0:?} is not a hostname such as hooks.example.com")]
    Name(String),
    /// An address that is not an IPv4 or IPv6 address.
    #[error(
        "delivery.hosts: {address:?} (for {name}) is not an IP address such as 10.0.0.5 or fd00::5"
    )]
    Address {
        /// The name it was given for.
        name: String,
        /// The address as given.
        address: String,
    },
}

/// Where hostnames are looked up, in order: `localhost` and `*.localhost`
/// are loopback (`127.0.0.1`, `::1`) without asking anyone (RFC 6761); then
/// the fixed entries; then, only if it is on, the system resolver. With it
/// off, any other name fails as [`ResolveError::NotListed`] without a
/// lookup. Names are compared in lower case, a trailing dot ignored.
///
/// The default has no entries and the system resolver off: what tests and
/// benchmarks build on, so none of them can resolve a name outside the
/// machine. `botwire serve` takes both from `[delivery]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameTable {
    hosts: BTreeMap<String, Vec<IpAddr>>,
    system: bool,
}

/// A name as the table keys it: lower case, without a trailing dot.
fn table_key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl NameTable {
    /// No fixed entries; the system resolver on or off.
    pub fn new(system: bool) -> Self {
        Self {
            hosts: BTreeMap::new(),
            system,
        }
    }

    /// Builds the table from `delivery.hosts` (name → one address or several
    /// separated by commas or spaces) and `delivery.system_dns`.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a String, &'a String)>,
        system: bool,
    ) -> Result<Self, HostsError> {
        let mut table = Self::new(system);
        for (name, addresses) in entries {
            for address in addresses.split([',', ' ']).filter(|a| !a.is_empty()) {
                let ip = address
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| HostsError::Address {
                        name: name.clone(),
                        address: address.to_owned(),
                    })?;
                table.insert(name, ip)?;
            }
        }
        Ok(table)
    }

    /// Adds `ip` to the addresses of `name`.
    pub fn insert(&mut self, name: &str, ip: IpAddr) -> Result<(), HostsError> {
        let key = table_key(name);
        let valid = !key.is_empty()
            && key.len() <= 253
            && key.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(HostsError::Name(name.to_owned()));
        }
        let addrs = self.hosts.entry(key).or_default();
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
        Ok(())
    }

    /// Whether names missing from the table go to the system resolver.
    pub fn uses_system_resolver(&self) -> bool {
        self.system
    }

    /// The addresses known for `host` without any lookup: loopback for
    /// `localhost` names, else the fixed entries.
    pub fn fixed(&self, host: &str) -> Option<Vec<IpAddr>> {
        let key = table_key(host);
        if key == "localhost" || key.ends_with(".localhost") {
            return Some(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]);
        }
        self.hosts.get(&key).cloned()
    }
}

/// A DNS resolver for reqwest that only ever hands back addresses the guard approves.
///
/// It finds addresses through its [`NameTable`] (the system resolver, tokio's
/// `lookup_host`, only when the table allows it), drops blocked addresses and
/// fails with [`ResolveError::Blocked`] when none remain. For the internal
/// names of [`is_internal_hostname`] it keeps only addresses the allowlist
/// explicitly contains, public or not.
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    allow: Arc<AllowList>,
    names: Arc<NameTable>,
    system_lookups: Arc<AtomicU64>,
}

const INTERNAL_NAME_REASON: &str = "an internal hostname may only reach allow-listed addresses";

impl GuardedResolver {
    /// A resolver enforcing `allow` that finds addresses through `names`.
    pub fn new(allow: Arc<AllowList>, names: Arc<NameTable>) -> Self {
        GuardedResolver {
            allow,
            names,
            system_lookups: Arc::default(),
        }
    }

    /// How many names this resolver (and its clones) has asked the system
    /// resolver for.
    pub fn system_lookups(&self) -> u64 {
        self.system_lookups.load(Ordering::Relaxed)
    }

    /// Resolves `host` and returns the approved addresses (port 0), never an empty list.
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let found: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, 0)]
        } else if let Some(ips) = self.names.fixed(host) {
            ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect()
        } else if self.names.uses_system_resolver() {
            self.system_lookups.fetch_add(1, Ordering::Relaxed);
            tokio::net::lookup_host((host, 0))
                .await
                .map_err(|source| ResolveError::Lookup {
                    host: host.to_string(),
                    source,
                })?
                .collect()
        } else {
            return Err(ResolveError::NotListed {
                host: host.to_string(),
            });
        };
        self.filter(host, found)
    }

    /// Applies the guard to addresses found for `host`.
    fn filter(&self, host: &str, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, ResolveError> {
        if found.is_empty() {
            return Err(ResolveError::NoAddress {
                host: host.to_string(),
            });
        }
        let internal = is_internal_hostname(host);
        let mut kept = Vec::with_capacity(found.len());
        let mut blocked = Vec::new();
        for addr in found {
            let verdict = if internal {
                if self.allow.contains(addr.ip()) {
                    Ok(())
                } else {
                    Err(Blocked {
                        ip: addr.ip(),
                        reason: INTERNAL_NAME_REASON,
                    })
                }
            } else {
                check_ip(addr.ip(), &self.allow)
            };
            match verdict {
                Ok(()) => kept.push(addr),
                Err(b) => blocked.push(b),
            }
        }
        if kept.is_empty() {
            Err(ResolveError::Blocked {
                host: host.to_string(),
                blocked,
            })
        } else {
            Ok(kept)
        }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum V {
        /// Allowed.
        A,
        /// Refused.
        R,
    }
    use V::{A, R};

    fn allow127() -> AllowList {
        AllowList::parse(["127.0.0.0/8"]).unwrap()
    }

    /// (url, verdict without allowlist, verdict with 127.0.0.0/8 allowed)
    const URL_TABLE: &[(&str, V, V)] = &[
        // IPv4 loopback in every spelling WHATWG accepts.
        ("http://127.0.0.1/", R, A),
        ("http://127.0.0.1:8080/hook?x=1", R, A),
        ("http://127.1/", R, A),
        ("http://127.0.1/", R, A),
        ("http://0x7f000001/", R, A),
        ("http://0X7F000001/", R, A),
        ("http://2130706433/", R, A),
        ("http://0177.0.0.1/", R, A),
        ("http://0177.1/", R, A),
        ("http://0x7f.0.0.1/", R, A),
        ("http://0x7f.1/", R, A),
        ("http://127.0.0.1./", R, A),
        ("http://%31%32%37.0.0.1/", R, A),
        ("https://127.255.255.254/", R, A),
        // IPv6 forms of loopback and of other blocked IPv4 addresses.
        ("http://[::1]/", R, R),
        ("http://[0:0:0:0:0:0:0:1]/", R, R),
        ("http://[::]/", R, R),
        ("http://[::ffff:127.0.0.1]/", R, A),
        ("http://[::ffff:7f00:1]/", R, A),
        ("http://[0:0:0:0:0:ffff:7f00:1]/", R, A),
        ("http://[::ffff:a9fe:a9fe]/", R, R),
        ("http://[::ffff:10.0.0.1]/", R, R),
        ("http://[::127.0.0.1]/", R, R),
        ("http://[::a00:1]/", R, R),
        ("http://[64:ff9b::a00:1]/", R, R),
        ("http://[64:ff9b::7f00:1]/", R, R),
        ("http://[64:ff9b::169.254.169.254]/", R, R),
        ("http://[64:ff9b:1:7f00:0:100::]/", R, R),
        ("http://[2002:7f00:1::]/", R, R),
        ("http://[2002:c0a8:101::1]/", R, R),
        // IPv6 special ranges.
        ("http://[fe80::1]/", R, R),
        ("http://[fe80::1%25eth0]/", R, R),
        ("http://[fc00::1]/", R, R),
        ("http://[fd12:3456:789a::1]/", R, R),
        ("http://[fd00:ec2::254]/", R, R),
        ("http://[fec0::1]/", R, R),
        ("http://[ff02::1]/", R, R),
        ("http://[2001:db8::1]/", R, R),
        ("http://[2001::1]/", R, R),
        ("http://[2001:2::1]/", R, R),
        ("http://[100::1]/", R, R),
        ("http://[4000::1]/", R, R),
        // IPv4 special ranges.
        ("http://0.0.0.0/", R, R),
        ("http://0/", R, R),
        ("http://0.1.2.3/", R, R),
        ("http://10.0.0.1/", R, R),
        ("http://10.255.255.255/", R, R),
        ("http://172.16.0.1/", R, R),
        ("http://172.31.255.255/", R, R),
        ("http://192.168.1.1/", R, R),
        ("http://169.254.169.254/latest/meta-data/", R, R),
        ("http://0xa9fea9fe/", R, R),
        ("http://169.254.0.1/", R, R),
        ("http://100.64.0.1/", R, R),
        ("http://100.127.255.255/", R, R),
        ("http://192.0.0.8/", R, R),
        ("http://192.0.2.1/", R, R),
        ("http://192.88.99.1/", R, R),
        ("http://198.18.0.1/", R, R),
        ("http://198.19.255.255/", R, R),
        ("http://198.51.100.7/", R, R),
        ("http://203.0.113.9/", R, R),
        ("http://224.0.0.1/", R, R),
        ("http://239.255.255.250/", R, R),
        ("http://240.0.0.1/", R, R),
        ("http://255.255.255.255/", R, R),
        // Public addresses and their neighbours just outside blocked ranges.
        ("http://93.184.216.34/", A, A),
        ("https://8.8.8.8/", A, A),
        ("http://1.1.1.1:8443/x", A, A),
        ("http://172.32.0.1/", A, A),
        ("http://172.15.255.255/", A, A),
        ("http://100.128.0.1/", A, A),
        ("http://11.0.0.1/", A, A),
        ("http://198.20.0.1/", A, A),
        ("http://[2606:4700::1]/", A, A),
        ("http://[2606:4700:4700::1111]/", A, A),
        ("http://[::ffff:93.184.216.34]/", A, A),
        ("http://[64:ff9b::5db8:d822]/", A, A),
        ("http://[2002:5db8:d822::1]/", A, A),
        // Hostnames: only internal names are judged here; the resolver does the rest.
        ("http://example.com/hook", A, A),
        ("https://hooks.example.org:8443/a/b?c=d#e", A, A),
        ("http://localhost/", R, A),
        ("http://LOCALHOST./", R, A),
        ("http://api.localhost:3000/", R, A),
        ("http://metadata.google.internal/", R, A),
        ("http://printer.local/", R, A),
        // Policy: scheme, credentials, shape.
        ("ftp://example.com/", R, R),
        ("file:///etc/passwd", R, R),
        ("gopher://example.com:70/", R, R),
        ("javascript:alert(1)", R, R),
        ("http://user:pass@example.com/", R, R),
        ("http://user@example.com/", R, R),
        ("http://:pass@example.com/", R, R),
        ("not a url", R, R),
        ("http://", R, R),
        ("http://[::1/", R, R),
        ("http://256.0.0.1/", R, R),
    ];

    #[test]
    fn url_table() {
        assert!(URL_TABLE.len() >= 60);
        let none = AllowList::empty();
        let some = allow127();
        let mut failures = Vec::new();
        for &(url, without, with) in URL_TABLE {
            for (allow, expected, label) in
                [(&none, without, "no allowlist"), (&some, with, "127/8")]
            {
                let got = match check_url(url, allow) {
                    Ok(_) => A,
                    Err(_) => R,
                };
                if got != expected {
                    failures.push(format!(
                        "{url} [{label}]: expected {expected:?}, got {:?}",
                        check_url(url, allow)
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn whatwg_parsing_normalises_ipv4_spellings() {
        for spelling in [
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x7f.1/",
            "http://%31%32%37.0.0.1/",
        ] {
            let url = check_url(spelling, &allow127()).unwrap();
            assert_eq!(
                url.host(),
                Some(Host::Ipv4(Ipv4Addr::LOCALHOST)),
                "{spelling}"
            );
            assert_eq!(url.host_str(), Some("127.0.0.1"));
        }
        let url = check_url("http://[::ffff:7f00:1]/", &allow127()).unwrap();
        assert_eq!(url.host_str(), Some("[::ffff:7f00:1]"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let none = AllowList::empty();
        let err = check_url("http://169.254.169.254/", &none).unwrap_err();
        assert_eq!(
            err,
            UrlError::Blocked(Blocked {
                ip: "169.254.169.254".parse().unwrap(),
                reason: "cloud metadata service (169.254.169.254)"
            })
        );
        assert!(err.to_string().contains("cloud metadata"));
        let err = check_url("http://[::ffff:127.0.0.1]/", &none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "address ::ffff:127.0.0.1 (IPv4-mapped of 127.0.0.1) is not allowed: loopback (127.0.0.0/8)"
        );
        assert_eq!(
            check_url("ftp://x.org/", &none),
            Err(UrlError::Scheme("ftp".into()))
        );
        assert_eq!(
            check_url("http://a:b@x.org/", &none),
            Err(UrlError::UserInfo)
        );
        assert_eq!(
            check_url("http://localhost/", &none),
            Err(UrlError::InternalHost("localhost".into()))
        );
        let long = format!("https://example.com/{}", "a".repeat(2100));
        assert!(matches!(
            check_url(&long, &none),
            Err(UrlError::TooLong { .. })
        ));
        let just_fits = format!("https://example.com/{}", "a".repeat(2048 - 20));
        assert_eq!(just_fits.len(), 2048);
        assert!(check_url(&just_fits, &none).is_ok());
        assert!(matches!(
            check_url("http://[fe80::1%25eth0]/", &none),
            Err(UrlError::Invalid(_))
        ));
    }

    #[test]
    fn raw_ip_table() {
        let none = AllowList::empty();
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback (127.0.0.0/8)")),
            ("10.1.2.3", Some("private (10.0.0.0/8)")),
            ("172.20.0.1", Some("private (172.16.0.0/12)")),
            ("192.168.0.10", Some("private (192.168.0.0/16)")),
            ("100.100.100.200", Some("carrier-grade NAT (100.64.0.0/10)")),
            ("169.254.1.1", Some("link-local (169.254.0.0/16)")),
            ("255.255.255.255", Some("broadcast (255.255.255.255)")),
            ("::", Some("unspecified (::)")),
            ("::1", Some("loopback (::1)")),
            ("64:ff9b::a00:1", Some("private (10.0.0.0/8)")),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                Some("Teredo (2001::/32)"),
            ),
            ("93.184.216.34", None),
            ("2606:4700::1", None),
            ("2a00:1450:4001:82b::200e", None),
        ];
        for (ip, reason) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(blocked_reason(ip), *reason, "{ip}");
            assert_eq!(check_ip(ip, &none).is_ok(), reason.is_none(), "{ip}");
        }
    }

    #[test]
    fn allowlist_parsing() {
        let a = AllowList::parse(["127.0.0.0/8", "10.0.0.7", "::1", "[fd00::1]", " "]).unwrap();
        assert_eq!(a.nets().len(), 4);
        assert!(a.contains("127.3.4.5".parse().unwrap()));
        assert!(a.contains("10.0.0.7".parse().unwrap()));
        assert!(!a.contains("10.0.0.8".parse().unwrap()));
        assert!(a.contains("::1".parse().unwrap()));
        assert!(a.contains("fd00::1".parse().unwrap()));
        assert!(a.contains("::ffff:127.0.0.1".parse().unwrap()));
        let b: AllowList = "127.0.0.0/8, 192.168.1.0/24".parse().unwrap();
        assert_eq!(b.nets().len(), 2);
        // Host bits are dropped, so the entry means the whole network.
        let c = AllowList::parse(["192.168.1.77/24"]).unwrap();
        assert_eq!(c.nets()[0].to_string(), "192.168.1.0/24");
        let err = AllowList::parse(["127.0.0.0/33"]).unwrap_err();
        assert_eq!(err.entry, "127.0.0.0/33");
        assert!(err.to_string().contains("not an IP address or a CIDR"));
        assert!(AllowList::parse(["localhost"]).is_err());
        assert!(AllowList::parse(["10.0.0.0/8/8"]).is_err());
    }

    #[test]
    fn internal_names() {
        for h in [
            "localhost",
            "LocalHost.",
            "a.b.localhost",
            "metadata.google.internal",
            "nas.local",
        ] {
            assert!(is_internal_hostname(h), "{h}");
        }
        for h in [
            "example.com",
            "localhost.example.com",
            "notlocal",
            "internal.example.org",
        ] {
            assert!(!is_internal_hostname(h), "{h}");
        }
    }

    #[test]
    fn resolver_filter_drops_blocked_addresses() {
        let r = GuardedResolver::new(Arc::new(AllowList::empty()), Arc::default());
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        let private: SocketAddr = "10.0.0.1:0".parse().unwrap();
        assert_eq!(
            r.filter("mixed.example", vec![private, public]).unwrap(),
            vec![public]
        );
        match r.filter("rebind.example", vec![private]) {
            Err(ResolveError::Blocked { host, blocked }) => {
                assert_eq!(host, "rebind.example");
                assert_eq!(blocked[0].reason, "private (10.0.0.0/8)");
            }
            other => panic!("expected Blocked, got {other:?}"),
        }
        assert!(matches!(
            r.filter("empty.example", vec![]),
            Err(ResolveError::NoAddress { .. })
        ));
        // Internal names reach only allow-listed addresses, even public ones.
        let r = GuardedResolver::new(
            Arc::new(AllowList::parse(["10.0.0.0/8"]).unwrap()),
            Arc::default(),
        );
        assert!(matches!(
            r.filter("corp.internal", vec![public]),
            Err(ResolveError::Blocked { .. })
        ));
        assert_eq!(
            r.filter("corp.internal", vec![private]).unwrap(),
            vec![private]
        );
    }

    #[tokio::test]
    async fn resolver_blocks_localhost_without_allowlist() {
        use reqwest::dns::Resolve;
        let r = GuardedResolver::new(Arc::new(AllowList::empty()), Arc::default());
        let err = match r.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("expected an error, got {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        let err = err.downcast_ref::<ResolveError>().expect("a ResolveError");
        assert!(matches!(err, ResolveError::Blocked { .. }), "{err}");

        let r = GuardedResolver::new(Arc::new(allow127()), Arc::default());
        let addrs: Vec<SocketAddr> = r
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()),
            "{addrs:?}"
        );
    }

    #[tokio::test]
    async fn with_the_system_resolver_off_no_name_reaches_it() {
        use reqwest::dns::Resolve;
        let hosts = BTreeMap::from([("Hooks.Example.COM".to_owned(), "127.0.0.7, ::1".to_owned())]);
        let names = NameTable::parse(&hosts, false).unwrap();
        let r = GuardedResolver::new(Arc::new(allow127()), Arc::new(names));
        // A listed name answers from the table, any case, trailing dot or not.
        for name in ["hooks.example.com", "HOOKS.example.com."] {
            let addrs: Vec<SocketAddr> = r.resolve(name.parse().unwrap()).await.unwrap().collect();
            assert_eq!(addrs, vec!["127.0.0.7:0".parse().unwrap()], "{name}");
        }
        // localhost names are loopback by definition.
        for name in ["localhost", "LOCALHOST.", "api.localhost"] {
            let addrs = r.lookup(name).await.unwrap();
            assert_eq!(addrs, vec!["127.0.0.1:0".parse().unwrap()], "{name}");
        }
        // Anything else fails without a lookup, trailing dot or not.
        for name in [
            "example.com",
            "example.com.",
            "metadata.google.internal",
            "botwire-test.invalid",
            "hooks.example.com.evil",
        ] {
            match r.lookup(name).await {
                Err(ResolveError::NotListed { host }) => assert_eq!(host, name),
                other => panic!("{name}: expected NotListed, got {other:?}"),
            }
        }
        assert_eq!(
            r.system_lookups(),
            0,
            "no name was sent to the system resolver"
        );

        // With the system resolver on, a name outside the table is sent to it
        // (counted; the lookup itself is not made here: a name that is not
        // local must not leave the machine in a test).
        let on = GuardedResolver::new(Arc::new(allow127()), Arc::new(NameTable::new(true)));
        assert_eq!(on.lookup("localhost").await.unwrap().len(), 1);
        assert_eq!(on.system_lookups(), 0, "localhost is never looked up");
    }

    #[test]
    fn hosts_entries_are_checked() {
        let bad = |name: &str, addr: &str| {
            NameTable::parse(&BTreeMap::from([(name.to_owned(), addr.to_owned())]), true)
                .unwrap_err()
        };
        assert_eq!(
            bad("hooks.example.com", "10.0.0.300"),
            HostsError::Address {
                name: "hooks.example.com".into(),
                address: "10.0.0.300".into()
            }
        );
        assert_eq!(bad("a b", "10.0.0.1"), HostsError::Name("a b".into()));
        assert_eq!(bad("a..b", "10.0.0.1"), HostsError::Name("a..b".into()));
        assert_eq!(bad("", "10.0.0.1"), HostsError::Name("".into()));
        let t = NameTable::parse(
            &BTreeMap::from([(
                "h.test".to_owned(),
                "[fd00::5] 10.0.0.5,10.0.0.5".to_owned(),
            )]),
            true,
        )
        .unwrap();
        assert_eq!(
            t.fixed("h.test").unwrap(),
            vec![
                "fd00::5".parse::<IpAddr>().unwrap(),
                "10.0.0.5".parse().unwrap()
            ]
        );
        assert!(t.uses_system_resolver());
        assert_eq!(t.fixed("other.test"), None);
    }
}
