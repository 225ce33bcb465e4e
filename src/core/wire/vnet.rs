//! The virtio-net header the kernel puts before each frame on a TAP opened
//! with IFF_VNET_HDR (10 bytes, little-endian, `struct virtio_net_hdr`):
//!
//!     flags u8 (1 = NEEDS_CSUM), gso_type u8 (0 none, 1 TCPv4, 3 UDP,
//!     4 TCPv6, 5 UDP_L4; 0x80 ECN), hdr_len u16, gso_size u16,
//!     csum_start u16, csum_offset u16
//!
//! With offloads on, a read can return one large TCP segment (up to 64 KiB)
//! the kernel would otherwise have cut into MTU-sized frames, and a frame
//! whose checksum is left to be completed. weave-rs carries the header with
//! the frame to the peer, which hands both to its own TAP: the segment is
//! cut, and the checksum completed, only where it is finally needed.
//!
//! A header from a peer is checked here before it reaches our kernel.

use etherparse::checksum::Sum16BitWords;

pub const LEN: usize = 10;
pub const F_NEEDS_CSUM: u8 = 1;
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;
/// A header that asks nothing of the kernel.
pub const PLAIN: [u8; LEN] = [0; LEN];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VnetError {
    #[error("shorter than a virtio-net header")]
    Short,
    #[error("unknown virtio-net flags {0:#04x}")]
    BadFlags(u8),
    #[error("unknown GSO type {0:#04x}")]
    BadGsoType(u8),
    #[error("checksum position outside the frame")]
    BadChecksum,
    #[error("GSO without a checksum to complete or with a zero segment size")]
    BadGso,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Result<VnetHdr, VnetError> {
        let Some(b) = b.first_chunk::<LEN>() else {
            return Err(VnetError::Short);
        };
        let u16le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16le(2),
            gso_size: u16le(4),
            csum_start: u16le(6),
            csum_offset: u16le(8),
        })
    }

    pub fn emit(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Nothing for the kernel to do: the frame can travel without it.
    pub fn is_plain(&self) -> bool {
        self.flags & F_NEEDS_CSUM == 0 && self.gso_type == GSO_NONE
    }

    /// Only a checksum to complete, no segment to cut.
    pub fn checksum_only(&self) -> bool {
        self.flags & !F_DATA_VALID == F_NEEDS_CSUM && self.gso_type == GSO_NONE
    }

    /// Completes in `frame` the checksum this header asks for, as the
    /// kernel would: the ones' complement sum from `csum_start` to the end
    /// (the field holds the pseudo-header's sum), stored at `csum_start +
    /// csum_offset`, 0 sent as 0xffff. The frame can then travel with a
    /// plain header. False when the field lies outside the frame.
    pub fn complete_checksum(&self, frame: &mut [u8]) -> bool {
        let start = usize::from(self.csum_start);
        let at = start + usize::from(self.csum_offset);
        if at + 2 > frame.len() {
            return false;
        }
        // Sums native-endian words: the result goes back the same way.
        let sum = Sum16BitWords::new()
            .add_slice(&frame[start..])
            .to_ones_complement_with_no_zero();
        frame[at..at + 2].copy_from_slice(&sum.to_ne_bytes());
        true
    }

    /// Check a header from a peer against the frame it came with, so that
    /// only sane requests reach our kernel.
    pub fn validate(&self, frame_len: usize) -> Result<(), VnetError> {
        if self.flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
            return Err(VnetError::BadFlags(self.flags));
        }
        let gso = self.gso_type & !GSO_ECN;
        if !matches!(gso, GSO_NONE | GSO_TCPV4 | GSO_UDP | GSO_TCPV6 | GSO_UDP_L4) {
            return Err(VnetError::BadGsoType(self.gso_type));
        }
        if self.flags & F_NEEDS_CSUM != 0 {
            let end = usize::from(self.csum_start) + usize::from(self.csum_offset) + 2;
            if end > frame_len {
                return Err(VnetError::BadChecksum);
            }
        }
        if gso != GSO_NONE && (self.gso_size == 0 || self.flags & F_NEEDS_CSUM == 0) {
            return Err(VnetError::BadGso);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCPv4 segment to cut at 1324 bytes, checksum to complete.
    const TCP: VnetHdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1324,
        csum_start: 34,
        csum_offset: 16,
    };

    #[test]
    fn round_trip_and_plain() {
        let h = TCP;
        assert_eq!(VnetHdr::parse(&h.emit()), Ok(h));
        assert!(!h.is_plain());
        assert!(VnetHdr::parse(&PLAIN).unwrap().is_plain());
        assert_eq!(VnetHdr::parse(&[0; 9]), Err(VnetError::Short));
    }

    #[test]
    fn validation() {
        let tcp = TCP;
        assert_eq!(tcp.validate(60_000), Ok(()));
        assert_eq!(tcp.validate(51), Err(VnetError::BadChecksum));
        assert_eq!(
            VnetHdr { flags: 0x40, ..tcp }.validate(60_000),
            Err(VnetError::BadFlags(0x40))
        );
        assert_eq!(
            VnetHdr { gso_type: 9, ..tcp }.validate(60_000),
            Err(VnetError::BadGsoType(9))
        );
        assert_eq!(
            VnetHdr { gso_size: 0, ..tcp }.validate(60_000),
            Err(VnetError::BadGso)
        );
        assert_eq!(
            VnetHdr { flags: 0, ..tcp }.validate(60_000),
            Err(VnetError::BadGso)
        );
        assert_eq!(VnetHdr::default().validate(14), Ok(()));
    }

    #[test]
    fn a_checksum_completed_here_is_the_one_the_kernel_would_write() {
        use etherparse::PacketBuilder;
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let udp = |payload: &[u8]| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2(a, b)
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(4000, 53)
                .write(&mut f, payload)
                .unwrap();
            f
        };
        let tcp = |payload: &[u8]| {
            let mut f = Vec::new();
            PacketBuilder::ethernet2(a, b)
                .ipv6([1; 16], [2; 16], 64)
                .tcp(4000, 80, 7, 1000)
                .write(&mut f, payload)
                .unwrap();
            f
        };
        // (frame, checksum field, where the checksummed part starts)
        let cases = [
            (udp(&[7; 1401]), 34 + 6, 34u16),
            (udp(&[]), 34 + 6, 34),
            (tcp(&[9; 1000]), 54 + 16, 54),
        ];
        for (whole, field, start) in cases {
            let len = whole.len() - usize::from(start);
            // As the sender's kernel leaves it: the pseudo-header's sum.
            let mut f = whole.clone();
            let pseudo = if start == 34 {
                Sum16BitWords::new()
                    .add_slice(&f[26..34])
                    .add_2bytes([0, 17])
            } else {
                Sum16BitWords::new()
                    .add_slice(&f[22..54])
                    .add_2bytes([0, 6])
            };
            let seed = !pseudo
                .add_2bytes((len as u16).to_be_bytes())
                .ones_complement();
            f[field..field + 2].copy_from_slice(&seed.to_ne_bytes());
            let h = VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: start,
                csum_offset: (field - usize::from(start)) as u16,
                ..VnetHdr::default()
            };
            assert!(h.checksum_only());
            assert!(h.complete_checksum(&mut f));
            assert_eq!(f, whole, "checksum at {field}");
        }
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 40,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        assert!(!h.complete_checksum(&mut [0; 47]));
        assert!(!TCP.checksum_only());
    }
}
