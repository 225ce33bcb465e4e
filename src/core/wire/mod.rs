//! Wire formats as typed views over byte slices: each parser validates
//! lengths once and never panics on short or hostile input.

pub mod control;
pub mod dns;
pub mod fastpath;
pub mod gossip;
pub mod handshake;
pub mod ipam;
pub mod sealed;
pub mod sleeve;
pub mod udp_run;
pub mod vnet;

use super::PeerName;

/// A bounds-checked cursor over received bytes: every read returns `None`
/// rather than panic when the input is short.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    pub fn peer_name(&mut self) -> Option<PeerName> {
        Some(PeerName(self.array()?))
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
}
