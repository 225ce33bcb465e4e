//! IP address management (issue 11), pure parts: the mesh shares one
//! allocation range (`--ipalloc-range`), split into spans owned by peers;
//! each peer allocates from its own spans (`space`); the ring (`ring`) says
//! who owns what. Its gossip, consensus and the daemon's part come next.
//!
//! Inside the core an address is its offset from the start of the range,
//! so IPv4 and IPv6 ranges work alike; `Offsets` converts at the edges.

pub mod allocator;
pub mod config;
pub mod consensus;
#[cfg(test)]
mod mesh_sim;
pub mod ring;
#[cfg(test)]
mod scenarios;
pub mod space;
pub mod spec;

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use self::space::Span;

/// The first 8 bytes of a SHA-256 over what `feed` writes: the same on
/// every machine and build (cluster ids, ownership digests).
pub(crate) fn digest_u64(feed: impl FnOnce(&mut ::ring::digest::Context)) -> u64 {
    let mut h = ::ring::digest::Context::new(&::ring::digest::SHA256);
    feed(&mut h);
    let d = h.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(b)
}

/// Converts between the addresses of an allocation range and offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    range: IpNetwork,
}

/// The address as a number, and the width of its family.
fn number(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u32::from(a).into(), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

impl Offsets {
    /// The range as given (its host bits are ignored).
    pub fn new(range: IpNetwork) -> Offsets {
        let range = IpNetwork::new(range.network(), range.prefix()).unwrap_or(range);
        Offsets { range }
    }

    pub fn range(&self) -> IpNetwork {
        self.range
    }

    fn base(&self) -> u128 {
        number(self.range.network()).0
    }

    /// All offsets of the range: `0..size`. A range of the whole IPv6
    /// space is one offset short (the last address), which is no loss.
    pub fn all(&self) -> Option<Span> {
        let (_, bits) = number(self.range.ip());
        let host = bits - u32::from(self.range.prefix());
        let size = 1u128.checked_shl(host).unwrap_or(u128::MAX);
        Span::new(0, size)
    }

    /// The offset of `ip`, if the range holds it.
    pub fn offset(&self, ip: IpAddr) -> Option<u128> {
        if !self.range.contains(ip) {
            return None;
        }
        number(ip).0.checked_sub(self.base())
    }

    /// The address at `offset`, if the range has one there.
    pub fn addr(&self, offset: u128) -> Option<IpAddr> {
        if !self.all()?.contains(offset) {
            return None;
        }
        let n = self.base().checked_add(offset)?;
        Some(match self.range {
            IpNetwork::V4(_) => IpAddr::V4(u32::try_from(n).ok()?.into()),
            IpNetwork::V6(_) => IpAddr::V6(n.into()),
        })
    }

    /// The offsets of `subnet`, which must lie within the range.
    pub fn span_of(&self, subnet: IpNetwork) -> Option<Span> {
        if subnet.prefix() < self.range.prefix() || !self.range.contains(subnet.network()) {
            return None;
        }
        let start = self.offset(subnet.network())?;
        let (_, bits) = number(subnet.ip());
        let host = bits - u32::from(subnet.prefix());
        let len = 1u128.checked_shl(host).unwrap_or(u128::MAX);
        Span::new(start, start.saturating_add(len))
    }

    /// The offsets a host may take in `subnet`: without its network address
    /// and, in IPv4, its broadcast address (subnets of 4 addresses or more;
    /// a /31 or /32 has no such addresses to spare).
    pub fn hosts_of(&self, subnet: IpNetwork) -> Option<Span> {
        let s = self.span_of(subnet)?;
        if s.size() < 4 {
            return Some(s);
        }
        match subnet {
            IpNetwork::V4(_) => Span::new(s.start() + 1, s.end() - 1),
            IpNetwork::V6(_) => Span::new(s.start() + 1, s.end()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_offsets_round_trip() {
        let o = Offsets::new(net("10.32.0.0/12"));
        assert_eq!(o.all(), Span::new(0, 1 << 20));
        assert_eq!(o.offset(ip("10.32.0.1")), Some(1));
        assert_eq!(o.offset(ip("10.47.255.255")), Some((1 << 20) - 1));
        assert_eq!(o.offset(ip("10.48.0.0")), None);
        assert_eq!(o.offset(ip("fd00::1")), None);
        assert_eq!(o.addr(1), Some(ip("10.32.0.1")));
        assert_eq!(o.addr(1 << 20), None);
    }

    #[test]
    fn host_bits_of_the_range_are_ignored() {
        let o = Offsets::new(net("10.32.1.7/12"));
        assert_eq!(o.offset(ip("10.32.0.0")), Some(0));
    }

    #[test]
    fn ipv6_offsets_round_trip() {
        let o = Offsets::new(net("fd00:1::/64"));
        assert_eq!(o.all(), Span::new(0, 1 << 64));
        assert_eq!(o.offset(ip("fd00:1::ff")), Some(255));
        assert_eq!(o.addr(255), Some(ip("fd00:1::ff")));
        let whole = Offsets::new(net("::/0"));
        assert_eq!(whole.all(), Span::new(0, u128::MAX));
        assert_eq!(
            whole.addr(u128::MAX - 1),
            Some(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"))
        );
    }

    #[test]
    fn subnets_and_their_hosts() {
        let o = Offsets::new(net("10.32.0.0/12"));
        assert_eq!(o.span_of(net("10.32.1.0/24")), Span::new(256, 512));
        assert_eq!(o.hosts_of(net("10.32.1.0/24")), Span::new(257, 511));
        assert_eq!(o.hosts_of(net("10.32.1.0/31")), Span::new(256, 258));
        assert_eq!(o.span_of(net("10.0.0.0/8")), None, "wider than the range");
        assert_eq!(o.span_of(net("10.48.0.0/24")), None, "outside");
        let o6 = Offsets::new(net("fd00::/48"));
        assert_eq!(
            o6.hosts_of(net("fd00:0:0:1::/64")),
            Span::new((1 << 64) + 1, 2 << 64)
        );
    }
}
