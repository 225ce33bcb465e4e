//! Joins IPv4 UDP datagrams of one flow, each arriving in a frame of its
//! own, into one frame for the TAP with UDP segmentation offload
//! (virtio-net `GSO_UDP_L4`): the kernel takes the run in one write and
//! cuts it back into the same datagrams, which would otherwise cost a
//! write, and a trip through the bridge, each. The receiving side's
//! counterpart of the sender's GSO sends.
//!
//! A frame joins the run when it carries the same flow (MACs, addresses,
//! ports, TOS, TTL, DF), is IPv4 without options and unfragmented, its
//! lengths agree, its checksums are right (the kernel computes the joined
//! datagrams' checksums afresh, so a wrong one must not be joined, and
//! made right), and its payload is as long as the run's first (the last
//! may be shorter, and ends the run). Without DF, the IP IDs must follow
//! each other, as the kernel will number the datagrams it cuts. A frame
//! may come with its UDP checksum left to complete (the sender's kernel
//! offloads it: how most datagrams arrive); then there is none to check.

use etherparse::checksum::Sum16BitWords;

use super::vnet::{self, VnetHdr};

const ETH: usize = etherparse::Ethernet2Header::LEN;
const IP: usize = etherparse::Ipv4Header::MIN_LEN;
const UDP: usize = etherparse::UdpHeader::LEN;
/// Ethernet, IPv4 and UDP headers: where the first payload begins.
pub const HEADERS: usize = ETH + IP + UDP;
const ETHERTYPE_IPV4: [u8; 2] = etherparse::EtherType::IPV4.0.to_be_bytes();
const IPPROTO_UDP: u8 = etherparse::IpNumber::UDP.0;
const DF: u8 = 0x40;
/// Datagrams in one run (the kernel cuts at most 128 from one buffer).
pub const MAX_DATAGRAMS: usize = 64;
/// The IPv4 total length field bounds a run.
const MAX_IP_LEN: usize = 65_535;

/// A run being gathered: the virtio-net header, the first frame whole,
/// then the payloads of the others.
#[derive(Debug, Default)]
pub struct UdpRun {
    buf: Vec<u8>,
    /// Payload length of each datagram but the last.
    seg: usize,
    count: usize,
    /// A shorter datagram came: nothing more joins.
    closed: bool,
}

/// What `UdpRun::take` hands to the TAP.
pub enum Taken<'a> {
    Nothing,
    /// One datagram: its frame behind the virtio-net header it came with.
    Single(&'a [u8]),
    /// Several (this many), joined: a frame with its virtio-net header
    /// asking for UDP segmentation.
    Joined(&'a [u8], usize),
}

impl UdpRun {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds `frame` (which came with virtio-net header `vnet`) to the
    /// run, or starts one with it if the run is empty. False: it does not
    /// join (the caller takes the run, then tries again, then writes the
    /// frame alone).
    pub fn join(&mut self, vnet: VnetHdr, frame: &[u8]) -> bool {
        // A checksum left to complete must be the UDP one.
        let partial = !vnet.is_plain();
        let udp_checksum = usize::from(vnet.csum_start) == ETH + IP && vnet.csum_offset == 6;
        if partial && !(vnet.checksum_only() && udp_checksum) {
            return false;
        }
        let Some(d) = Datagram::parse(frame, partial) else {
            return false;
        };
        if self.count == 0 {
            self.buf.clear();
            self.buf.extend_from_slice(&vnet.emit());
            self.buf.extend_from_slice(frame);
            (self.seg, self.count, self.closed) = (d.payload.len(), 1, false);
            return true;
        }
        let first = &self.buf[vnet::LEN..];
        let ip_len = self.buf.len() - vnet::LEN - ETH + d.payload.len();
        let joins = !self.closed
            && self.count < MAX_DATAGRAMS
            && d.payload.len() <= self.seg
            && ip_len <= MAX_IP_LEN
            && same_flow(first, frame)
            && (frame[ETH + 6] & DF != 0 || d.id == ip_id(first).wrapping_add(self.count as u16));
        if joins {
            self.buf.extend_from_slice(d.payload);
            self.count += 1;
            self.closed = d.payload.len() < self.seg;
        }
        joins
    }

    /// The run, ready for the TAP; the run is empty afterwards.
    pub fn take(&mut self) -> Taken<'_> {
        let count = std::mem::take(&mut self.count);
        match count {
            0 => Taken::Nothing,
            1 => Taken::Single(&self.buf),
            _ => {
                let Ok(seg) = u16::try_from(self.seg) else {
                    return Taken::Nothing; // Bounded by the frame: never.
                };
                let hdr = VnetHdr {
                    flags: vnet::F_NEEDS_CSUM,
                    gso_type: vnet::GSO_UDP_L4,
                    hdr_len: HEADERS as u16,
                    gso_size: seg,
                    csum_start: (ETH + IP) as u16,
                    csum_offset: 6,
                };
                self.buf[..vnet::LEN].copy_from_slice(&hdr.emit());
                seal_headers(&mut self.buf[vnet::LEN..]);
                Taken::Joined(&self.buf, count)
            }
        }
    }
}

/// The parts of a frame that may join a run.
struct Datagram<'a> {
    id: u16,
    payload: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// `frame` if it is an unfragmented IPv4 UDP datagram without IP
    /// options, with consistent lengths and right checksums (the UDP one
    /// unless it is `partial`: left to complete).
    fn parse(frame: &'a [u8], partial: bool) -> Option<Datagram<'a>> {
        let ip = frame.get(ETH..)?;
        if frame.get(12..14)? != ETHERTYPE_IPV4
            || *ip.first()? != 0x45
            || ip.get(9)? != &IPPROTO_UDP
        {
            return None;
        }
        let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
        // No Ethernet padding (a tiny datagram), no fragment.
        let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff;
        if total != ip.len() || total < IP + UDP || fragment != 0 {
            return None;
        }
        let udp = &ip[IP..];
        if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != udp.len() {
            return None;
        }
        if Sum16BitWords::new().add_slice(&ip[..IP]).ones_complement() != 0 {
            return None;
        }
        let check = u16::from_be_bytes([udp[6], udp[7]]);
        if !partial
            && check != 0
            && pseudo_header(ip, udp.len())
                .add_slice(udp)
                .ones_complement()
                != 0
        {
            return None;
        }
        Some(Datagram {
            id: ip_id(frame),
            payload: &udp[UDP..],
        })
    }
}

fn ip_id(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]])
}

/// Both frames (parsed already) carry the same flow.
fn same_flow(a: &[u8], b: &[u8]) -> bool {
    fn flow(f: &[u8]) -> (u8, u8, u8, &[u8], &[u8]) {
        let h = &f[ETH..];
        (
            h[1],
            h[6] & DF,
            h[8],
            &h[12..IP],
            &f[ETH + IP..ETH + IP + 4],
        )
    }
    a[..ETH] == b[..ETH] && flow(a) == flow(b)
}

/// The IPv4 pseudo-header's sum for a UDP datagram of `udp_len` bytes.
fn pseudo_header(ip: &[u8], udp_len: usize) -> Sum16BitWords {
    Sum16BitWords::new()
        .add_slice(&ip[12..IP])
        .add_2bytes([0, IPPROTO_UDP])
        .add_2bytes((udp_len as u16).to_be_bytes())
}

/// The joined frame's IP and UDP lengths, IP checksum, and the UDP
/// checksum's seed the kernel completes (the pseudo-header's sum).
/// `Sum16BitWords` sums the bytes as native-endian words: its results are
/// written back as native-endian bytes.
fn seal_headers(frame: &mut [u8]) {
    let ip_len = frame.len() - ETH;
    let udp_len = ip_len - IP;
    let ip = &mut frame[ETH..];
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[10..12].fill(0);
    let check = Sum16BitWords::new().add_slice(&ip[..IP]).ones_complement();
    ip[10..12].copy_from_slice(&check.to_ne_bytes());
    ip[IP + 4..IP + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let seed = !pseudo_header(ip, udp_len).ones_complement();
    ip[IP + 6..IP + 8].copy_from_slice(&seed.to_ne_bytes());
}

#[cfg(test)]
mod tests;
