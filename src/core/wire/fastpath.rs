//! The fast path's heartbeat: an Ethernet frame of our own ethertype, sent
//! through the kernel's VXLAN device to the peer's device MAC, so it takes
//! exactly the path the traffic takes. Its payload (what follows the
//! Ethernet header) is padded to the MTU being proven; the receiver judges
//! the size it got (`payload_len`).
//!
//! ```text
//! dst MAC (6) | src MAC (6) | ethertype 0x88b5 (2)
//! magic "wrfp" (4) | version (1) | flags (1; bit 0: I hear you)
//! sender peer name (6) | seq (8) | padding (zeros) to the frame size
//! ```

use super::{PeerName, Reader};

/// IEEE 802 "local experimental" ethertype.
pub const ETHERTYPE: u16 = 0x88b5;
const MAGIC: &[u8; 4] = b"wrfp";
const VERSION: u8 = 1;
const HEARS_YOU: u8 = 1;
const ETH_HEADER: usize = etherparse::Ethernet2Header::LEN;
/// Ethernet header and our fields.
pub const MIN_LEN: usize = ETH_HEADER + 4 + 1 + 1 + 6 + 8;

/// The payload length of a received frame of `len` bytes: what the MTU
/// check compares.
pub fn payload_len(len: usize) -> usize {
    len.saturating_sub(ETH_HEADER)
}

/// One heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub from: PeerName,
    pub seq: u64,
    /// The sender heard our heartbeats lately.
    pub hears_you: bool,
}

impl Heartbeat {
    /// The frame from device MAC `src` to device MAC `dst`, its payload
    /// `mtu` bytes (at least our fields; the frame at least 60 bytes,
    /// Ethernet's minimum).
    pub fn frame(&self, dst: [u8; 6], src: [u8; 6], mtu: usize) -> Vec<u8> {
        let size = ETH_HEADER + mtu;
        let mut f = Vec::with_capacity(size.max(60));
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE.to_be_bytes());
        f.extend_from_slice(MAGIC);
        f.push(VERSION);
        f.push(if self.hears_you { HEARS_YOU } else { 0 });
        f.extend_from_slice(&self.from.0);
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.resize(size.max(MIN_LEN).max(60), 0);
        f
    }

    /// A received frame: the heartbeat, or None for anything else (another
    /// ethertype, another version, short).
    pub fn parse(frame: &[u8]) -> Option<Heartbeat> {
        let mut r = Reader::new(frame);
        r.bytes(12)?;
        if r.u16()? != ETHERTYPE || r.bytes(4)? != MAGIC || r.u8()? != VERSION {
            return None;
        }
        let flags = r.u8()?;
        let from = r.peer_name()?;
        let seq = r.u64()?;
        Some(Heartbeat {
            from,
            seq,
            hears_you: flags & HEARS_YOU != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn heartbeats_round_trip_at_the_size_asked() {
        let hb = Heartbeat {
            from: PeerName([2, 9, 9, 9, 9, 9]),
            seq: 77,
            hears_you: true,
        };
        for mtu in [0, 46, 1450, 8950] {
            let f = hb.frame(B, A, mtu);
            assert_eq!(f.len(), (14 + mtu).max(60));
            assert_eq!(payload_len(f.len()), mtu.max(46));
            assert_eq!(f[..6], B);
            assert_eq!(f[6..12], A);
            assert_eq!(Heartbeat::parse(&f), Some(hb));
        }
        let quiet = Heartbeat {
            hears_you: false,
            ..hb
        };
        assert_eq!(Heartbeat::parse(&quiet.frame(B, A, 60)), Some(quiet));
    }

    #[test]
    fn anything_else_is_not_a_heartbeat() {
        let f = Heartbeat {
            from: PeerName(A),
            seq: 1,
            hears_you: false,
        }
        .frame(B, A, 60);
        for cut in 0..MIN_LEN {
            assert_eq!(Heartbeat::parse(&f[..cut]), None, "cut at {cut}");
        }
        let mut other = f.clone();
        other[12..14].copy_from_slice(&etherparse::EtherType::IPV4.0.to_be_bytes());
        assert_eq!(Heartbeat::parse(&other), None);
        let mut v2 = f.clone();
        v2[18] = 2;
        assert_eq!(Heartbeat::parse(&v2), None);
        let mut magic = f;
        magic[14] = b'x';
        assert_eq!(Heartbeat::parse(&magic), None);
    }
}
