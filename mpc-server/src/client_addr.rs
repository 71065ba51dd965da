//! The client's address behind trusted reverse proxies
//! (`MPC_TRUSTED_PROXIES`, PROTOCOL.md §18.5).
//!
//! A request whose TCP peer is a trusted proxy names its client in
//! `X-Forwarded-For` (each proxy appends the address it received the request
//! from) or, when that header is absent, in RFC 7239 `Forwarded: for=`. The
//! list is read from the right: entries that are themselves trusted proxies
//! are hops of our own chain and skipped, and the first untrusted address is
//! the client. Entries to its left were written by the client or by proxies
//! we do not trust, so they are never believed. A request from any other
//! peer is attributed to the peer: its forwarded headers are ignored.
//!
//! An entry that cannot be read where the walk needs an address (not
//! ASCII, no address, `unknown` or an obfuscated identifier) falls back to
//! the TCP peer: the request is counted against the proxy's own address,
//! never a panic. `X-Forwarded-For` is walked lazily from the right, so
//! what a client writes left of its own address is never read; the
//! quoted syntax of `Forwarded` is parsed whole (a proxy that writes only
//! `Forwarded` must drop a client's `X-Forwarded-For`, which wins).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::server::AppState;

/// Most forwarded entries read from one request: a longer chain falls back
/// to the peer (bounds the work an untrusted client can cause).
const MAX_FORWARDED_ENTRIES: usize = 64;

/// An address block: the addresses whose first `prefix` bits equal
/// `network`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this block (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a trusted-proxy entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or CIDR block: {0:?}")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    /// `192.0.2.0/24`, `2001:db8::/32`, or a bare address (a /32 or /128).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let refused = || CidrError(text.chars().take(64).collect());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = IpAddr::from_str(address)
            .map_err(|_| refused())?
            .to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse::<u8>().map_err(|_| refused())?
            }
            Some(_) => return Err(refused()),
            None => max,
        };
        if prefix > max {
            return Err(refused());
        }
        Ok(Self { network, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose forwarded headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses a comma-separated list of CIDR blocks or addresses (empty:
    /// no proxy is trusted).
    ///
    /// # Errors
    ///
    /// [`CidrError`] naming the first entry that is neither.
    pub fn parse(list: &str) -> Result<Self, CidrError> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(Cidr::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` is a trusted proxy.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// Whether no proxy is trusted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client's address for a request from `peer` with `headers`.
    #[must_use]
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        if headers.contains_key("x-forwarded-for") {
            return self.client_from_forwarded_for(peer, headers);
        }
        let chain = if headers.contains_key("forwarded") {
            rfc7239_for(headers)
        } else {
            return peer;
        };
        let Some(chain) = chain else {
            return peer;
        };
        // From the right: our own proxies' hops are skipped; the first
        // untrusted address is the client. A chain of trusted addresses only
        // names its leftmost one (a client inside the trusted network).
        let mut client = peer;
        for entry in chain.iter().rev() {
            let Some(ip) = entry else {
                // `unknown`, obfuscated or garbage where an address is needed.
                return peer;
            };
            client = *ip;
            if !self.contains(*ip) {
                break;
            }
        }
        client
    }

    /// The client named by `X-Forwarded-For` for a request from the
    /// trusted `peer`: the lines and their entries walked from the right,
    /// each parsed only when reached, up to [`MAX_FORWARDED_ENTRIES`].
    /// What lies left of the client (written by the client itself) is
    /// never read, so a client cannot make the walk fail and be counted
    /// as the proxy; an unreadable entry where an address is needed, or a
    /// walk too long, gives the peer (our proxy's own bucket).
    fn client_from_forwarded_for(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let lines: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|line| line.as_bytes())
            .collect();
        let mut client = peer;
        let mut walked = 0;
        for entry in lines
            .iter()
            .rev()
            .flat_map(|line| line.rsplit(|b| *b == b','))
        {
            walked += 1;
            if walked > MAX_FORWARDED_ENTRIES {
                return peer;
            }
            let Some(ip) = std::str::from_utf8(entry)
                .ok()
                .and_then(|entry| node_address(entry.trim()))
            else {
                // `unknown`, obfuscated or garbage where an address is needed.
                return peer;
            };
            client = ip;
            if !self.contains(ip) {
                return client;
            }
        }
        // Only trusted addresses: the leftmost (a client inside the trusted
        // network, which the setting must not name: crate::config).
        client
    }
}

/// The key under which per-address limits count `ip`: an IPv4 address
/// itself, an IPv6 address's /64 (one host commonly holds a whole /64, so
/// counting single IPv6 addresses would let it open 2^64 buckets). An
/// IPv4-mapped IPv6 address is its IPv4 address.
#[must_use]
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
    }
}

/// The client address of a request: see the module documentation.
pub(crate) fn client_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    state
        .rate_limiters
        .trusted_proxies
        .client_ip(peer.ip(), headers)
}

/// The TCP peer of a request, when the service was built with
/// `into_make_service_with_connect_info::<SocketAddr>()` (an embedding
/// application may not have).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| *addr),
        ))
    }
}

/// The `for=` of each element of every `Forwarded` line (RFC 7239 §4), in
/// order; an element without `for=` or with a non-address node is
/// `Some(None)`. `None` if a line is not text, is malformed (an unclosed
/// quote), or the chain is too long.
fn rfc7239_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut entries = Vec::new();
    for line in headers.get_all("forwarded") {
        for element in split_outside_quotes(line.to_str().ok()?, b',')? {
            let mut node = None;
            for pair in split_outside_quotes(element, b';')? {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    let value = value.trim();
                    let value = match value.strip_prefix('"') {
                        Some(quoted) => quoted.strip_suffix('"')?,
                        None => value,
                    };
                    node = node_address(value);
                }
            }
            entries.push(node);
            if entries.len() > MAX_FORWARDED_ENTRIES {
                return None;
            }
        }
    }
    Some(entries)
}

/// `text` split at `separator` outside double-quoted strings (with `\`
/// escapes); `None` for an unclosed quote.
fn split_outside_quotes(text: &str, separator: u8) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b if b == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return None;
    }
    parts.push(&text[start..]);
    Some(parts)
}

/// The address of a node: `192.0.2.1`, `192.0.2.1:port`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:port`. `None` for anything else
/// (`unknown`, `_hidden`, garbage).
fn node_address(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return address
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // An IPv4 address with a port (an IPv6 one must be bracketed).
    let (address, port) = node.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::parse("127.0.0.2, 10.0.0.0/8 ,fd00::/8,2001:db8::1").unwrap()
    }

    /// One IPv6 host's /64 is one bucket; other /64s and IPv4 addresses
    /// are their own; an IPv4-mapped address counts as its IPv4 address.
    #[test]
    fn per_address_limits_count_an_ipv6_slash_64_as_one() {
        let key = limit_key(ip("2001:db8:1:2::1"));
        assert_eq!(key, ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), key);
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), key);
        assert_eq!(limit_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(limit_key(ip("192.0.2.8")), ip("192.0.2.7"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let cidr: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(cidr.contains(ip("10.1.255.3")));
        assert!(!cidr.contains(ip("10.2.0.1")));
        assert!(cidr.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(host.to_string(), "192.0.2.7/32");
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("32.1.13.184")), "no cross-family match");
        let one: Cidr = "::1".parse().unwrap();
        assert_eq!(one.to_string(), "::1/128");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("::2")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("fe80::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/8/8",
            "1.2.3.4 /8",
            "[::1]",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse(" , ").unwrap().is_empty());
        let error = TrustedProxies::parse("127.0.0.1,nonsense").unwrap_err();
        assert!(error.to_string().contains("nonsense"), "{error}");
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let proxies = trusted();
        let forged = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ]);
        assert_eq!(proxies.client_ip(ip("192.0.2.9"), &forged), ip("192.0.2.9"));
        // With nothing trusted, every header is ignored.
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("127.0.0.2"), &forged), ip("127.0.0.2"));
    }

    #[test]
    fn forwarded_for_walks_from_the_right() {
        let proxies = trusted();
        let peer = ip("127.0.0.2");
        let cases = [
            ("198.51.100.7", "198.51.100.7"),
            // The client forged a left part; the proxy appended the real peer.
            ("1.1.1.1, 198.51.100.7", "198.51.100.7"),
            // Our own inner proxies are skipped.
            ("1.1.1.1, 198.51.100.7, 10.0.0.5, 10.9.9.9", "198.51.100.7"),
            // A forged trusted address to the left of the real client does
            // not matter: the walk stops at the first untrusted entry.
            ("10.0.0.1, 198.51.100.7, 10.0.0.5", "198.51.100.7"),
            // Garbage left of the client is never read.
            ("garbage, 198.51.100.7", "198.51.100.7"),
            ("unknown,198.51.100.7", "198.51.100.7"),
            // Ports, IPv6 and IPv4-mapped entries.
            ("198.51.100.7:5555", "198.51.100.7"),
            ("2001:db8:1::5", "2001:db8:1::5"),
            ("[2001:db8:1::5]:443", "2001:db8:1::5"),
            ("[2001:db8:1::5]", "2001:db8:1::5"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
            ("198.51.100.7, fd00::1, 2001:db8::1", "198.51.100.7"),
            // Only trusted addresses: the leftmost one is the client.
            ("10.0.0.7, 10.0.0.8", "10.0.0.7"),
            // Malformed where the walk needs an address: the peer.
            ("198.51.100.7, garbage", "127.0.0.2"),
            ("198.51.100.7, unknown", "127.0.0.2"),
            ("198.51.100.7,", "127.0.0.2"),
            ("", "127.0.0.2"),
            ("198.51.100.7, 10.0.0.1:99999999", "127.0.0.2"),
            ("[2001:db8::5", "127.0.0.2"),
            ("[2001:db8::5]x", "127.0.0.2"),
            ("[198.51.100.7]", "127.0.0.2"),
            ("2001:db8::5:80:", "127.0.0.2"),
        ];
        for (chain, want) in cases {
            let got = proxies.client_ip(peer, &headers(&[("x-forwarded-for", chain)]));
            assert_eq!(got, ip(want), "{chain:?}");
        }
        // Several header lines are one list, in order.
        let two = headers(&[
            ("x-forwarded-for", "1.1.1.1, 198.51.100.7"),
            ("x-forwarded-for", "203.0.113.4, 10.0.0.3"),
        ]);
        assert_eq!(proxies.client_ip(peer, &two), ip("203.0.113.4"));
        // An IPv4-mapped peer is the same proxy.
        let mapped = proxies.client_ip(
            ip("::ffff:127.0.0.2"),
            &headers(&[("x-forwarded-for", "198.51.100.7")]),
        );
        assert_eq!(mapped, ip("198.51.100.7"));
    }

    #[test]
    fn overlong_and_non_text_chains_fall_back_to_the_peer() {
        let proxies = trusted();
        let peer = ip("127.0.0.2");
        let long = vec!["10.0.0.1"; MAX_FORWARDED_ENTRIES + 1].join(",");
        assert_eq!(
            proxies.client_ip(peer, &headers(&[("x-forwarded-for", &long)])),
            peer
        );
        let mut map = HeaderMap::new();
        map.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.7\xff").unwrap(),
        );
        assert_eq!(proxies.client_ip(peer, &map), peer);
        // Left of the client, the client's own writing is never read: it
        // cannot make the walk fail and so be counted as the proxy.
        let mut map = HeaderMap::new();
        map.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.7, 10.0.0.3").unwrap(),
        );
        assert_eq!(proxies.client_ip(peer, &map), ip("198.51.100.7"));
        let padded = format!("{}, 198.51.100.7", vec!["garbage"; 500].join(","));
        assert_eq!(
            proxies.client_ip(peer, &headers(&[("x-forwarded-for", &padded)])),
            ip("198.51.100.7")
        );
        let mut map = HeaderMap::new();
        map.insert(
            "forwarded",
            HeaderValue::from_bytes(b"for=\xc3\xa9").unwrap(),
        );
        assert_eq!(proxies.client_ip(peer, &map), peer);
    }

    #[test]
    fn rfc7239_forwarded() {
        let proxies = trusted();
        let peer = ip("127.0.0.2");
        let cases = [
            ("for=198.51.100.7", "198.51.100.7"),
            ("For=198.51.100.7;proto=https;by=10.0.0.1", "198.51.100.7"),
            ("proto=https; for=198.51.100.7", "198.51.100.7"),
            ("for=\"198.51.100.7:8080\"", "198.51.100.7"),
            ("for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            ("for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::17"),
            (
                "for=1.1.1.1, for=198.51.100.7, for=10.0.0.2",
                "198.51.100.7",
            ),
            // A quoted comma or semicolon does not split.
            ("for=1.1.1.1;x=\"a,b;c\", for=198.51.100.7", "198.51.100.7"),
            ("for=_hidden, for=198.51.100.7", "198.51.100.7"),
            // Unknown, obfuscated, missing or garbage at the walk: the peer.
            ("for=198.51.100.7, for=unknown", "127.0.0.2"),
            ("for=198.51.100.7, for=_gazonk", "127.0.0.2"),
            ("for=198.51.100.7, proto=http", "127.0.0.2"),
            ("for=\"198.51.100.7", "127.0.0.2"),
            ("for=\"[2001:db8::17]:x\"", "127.0.0.2"),
            ("for", "127.0.0.2"),
            (";;,,", "127.0.0.2"),
            ("for=\"\\\"\"", "127.0.0.2"),
        ];
        for (value, want) in cases {
            let got = proxies.client_ip(peer, &headers(&[("forwarded", value)]));
            assert_eq!(got, ip(want), "{value:?}");
        }
        // X-Forwarded-For wins when both are present.
        let both = headers(&[
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        assert_eq!(proxies.client_ip(peer, &both), ip("198.51.100.2"));
        // No header: the peer.
        assert_eq!(proxies.client_ip(peer, &HeaderMap::new()), peer);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let proxies = TrustedProxies::parse("0.0.0.0/0,::/0").unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let alphabet = b"0123456789abcdef:.[],;=\"\\ forFOR_unknown\t";
        for _ in 0..2000 {
            let mut value = Vec::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                value.push(alphabet[usize::try_from(seed % alphabet.len() as u64).unwrap()]);
            }
            let Ok(value) = HeaderValue::from_bytes(&value) else {
                continue;
            };
            for name in ["x-forwarded-for", "forwarded"] {
                let mut map = HeaderMap::new();
                map.insert(name, value.clone());
                let _ = proxies.client_ip(ip("127.0.0.1"), &map);
            }
        }
    }
}
