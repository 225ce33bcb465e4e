//! Peer names: 48-bit identifiers written like MAC addresses
//! (`aa:bb:cc:dd:ee:ff`), as Weave Net's were.

use std::fmt;
use std::str::FromStr;

/// The stable identity of one router in the mesh.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName(pub [u8; 6]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid peer name {0:?}: expected six hex bytes like aa:bb:cc:dd:ee:ff")]
pub struct InvalidPeerName(pub String);

impl PeerName {
    pub const LEN: usize = 6;

    /// The all-zero name, never given to a peer; used on the wire to mean
    /// "broadcast".
    pub const NONE: PeerName = PeerName([0; 6]);

    /// A fresh random name (locally administered, unicast, like a random MAC).
    pub fn random() -> PeerName {
        let mut b: [u8; 6] = rand::random();
        b[0] = (b[0] & 0xfe) | 0x02;
        PeerName(b)
    }

    pub fn from_slice(b: &[u8]) -> Option<PeerName> {
        Some(PeerName(b.get(..Self::LEN)?.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// A MAC address of this router's for `purpose` (e.g. the bridge's):
    /// locally administered and unicast, the same on every launch, and
    /// different for other peers and other purposes (SHA-256 of both).
    pub fn derived_mac(&self, purpose: &str) -> [u8; 6] {
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        h.update(b"weave-rs mac\0");
        h.update(purpose.as_bytes());
        h.update(b"\0");
        h.update(&self.0);
        let digest = h.finish();
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&digest.as_ref()[..6]);
        mac[0] = (mac[0] & 0xfc) | 0x02;
        mac
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PeerName {
    type Err = InvalidPeerName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPeerName(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(PeerName(out))
    }
}

impl serde::Serialize for PeerName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PeerName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let n = PeerName([0x0a, 0xbc, 0, 1, 0xff, 0x10]);
        assert_eq!(n.to_string(), "0a:bc:00:01:ff:10");
        assert_eq!("0a:bc:00:01:ff:10".parse::<PeerName>(), Ok(n));
    }

    #[test]
    fn rejects_malformed_names() {
        for s in [
            "",
            "0a:bc",
            "0a:bc:00:01:ff:10:11",
            "0a:bc:00:01:ff:1",
            "zz:bc:00:01:ff:10",
        ] {
            assert!(s.parse::<PeerName>().is_err(), "{s} accepted");
        }
    }

    #[test]
    fn derived_macs_stable_local_unicast_and_distinct() {
        let a = PeerName([0x0a, 0xbc, 0, 1, 0xff, 0x10]);
        let b = PeerName([0x0a, 0xbc, 0, 1, 0xff, 0x11]);
        let m = a.derived_mac("bridge");
        assert_eq!(m, a.derived_mac("bridge"));
        assert_eq!(m[0] & 0x03, 0x02, "{m:02x?} not local unicast");
        assert_ne!(m, b.derived_mac("bridge"));
        assert_ne!(m, a.derived_mac("tap"));
        assert_ne!(m, a.0);
    }

    #[test]
    fn random_names_are_unicast_and_local() {
        let n = PeerName::random();
        assert_eq!(n.0[0] & 0x03, 0x02);
    }
}
