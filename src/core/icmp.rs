//! "Fragmentation needed" (ICMPv4) and "packet too big" (ICMPv6) for frames
//! too big for the overlay where they arrive, e.g. between peers launched
//! with different `--mtu`. The frame is dropped (the bridge would drop it
//! silently), and its sender is told the MTU, as a router on the path
//! would, so its path-MTU discovery shrinks the packets.

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Type, Icmpv6Type, IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice,
    PacketBuilder,
};

const ETH_HEADER: usize = Ethernet2Header::LEN;
const ETHERTYPE_IPV4: u16 = EtherType::IPV4.0;
const ETHERTYPE_IPV6: u16 = EtherType::IPV6.0;
const IPPROTO_ICMP: u8 = IpNumber::ICMP.0;
const IPPROTO_ICMPV6: u8 = IpNumber::IPV6_ICMP.0;
/// Quote as much of the offending packet as fits these sizes (RFC 1812,
/// RFC 4443).
const V4_REPLY_MAX: usize = 576;
const V6_REPLY_MAX: usize = 1280;

/// Does an Ethernet frame (or, with `gso_size`, each segment the kernel
/// will cut it into) exceed `mtu`?
pub fn exceeds(frame_len: usize, gso: Option<(u16, u16)>, mtu: u16) -> bool {
    let limit = usize::from(mtu) + ETH_HEADER;
    match gso {
        // hdr_len (Ethernet, IP and TCP/UDP headers) is a hint a sender may
        // leave at 0: then assume the smallest IPv4 and TCP headers.
        Some((hdr_len, gso_size)) => {
            let headers = if hdr_len == 0 {
                ETH_HEADER + 40
            } else {
                usize::from(hdr_len)
            };
            headers + usize::from(gso_size) > limit
        }
        None => frame_len > limit,
    }
}

/// The ICMP error telling the sender of `frame` that `mtu` is the most that
/// fits, as an Ethernet frame back to it; `None` where no error may be sent
/// (not IP, IPv4 without "don't fragment", an ICMP error, a multicast or
/// unspecified address).
pub fn too_big_reply(frame: &[u8], mtu: u16) -> Option<Vec<u8>> {
    let (dst_mac, rest) = frame.split_first_chunk::<6>()?;
    let (src_mac, rest) = rest.split_first_chunk::<6>()?;
    let (ethertype, packet) = rest.split_first_chunk::<2>()?;
    if src_mac[0] & 1 != 0 || dst_mac[0] & 1 != 0 {
        return None;
    }
    let eth = PacketBuilder::ethernet2(*dst_mac, *src_mac);
    let mut out = Vec::new();
    match u16::from_be_bytes(*ethertype) {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4HeaderSlice::from_slice(packet).ok()?;
            let (src, dst) = (ip.source_addr(), ip.destination_addr());
            if !ip.dont_fragment()
                || src.is_unspecified()
                || src.is_multicast()
                || src.is_broadcast()
                || dst.is_multicast()
                || dst.is_broadcast()
                || (ip.protocol().0 == IPPROTO_ICMP && !is_icmpv4_query(packet, ip.slice().len()))
            {
                return None;
            }
            let quote = &packet[..packet.len().min(V4_REPLY_MAX - 20 - 8)];
            eth.ipv4(dst.octets(), src.octets(), 64)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
                ))
                .write(&mut out, quote)
                .ok()?;
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6HeaderSlice::from_slice(packet).ok()?;
            let (src, dst) = (ip.source_addr(), ip.destination_addr());
            let icmp_error =
                ip.next_header().0 == IPPROTO_ICMPV6 && packet.get(40).is_none_or(|&t| t < 128);
            if src.is_unspecified() || src.is_multicast() || dst.is_multicast() || icmp_error {
                return None;
            }
            let quote = &packet[..packet.len().min(V6_REPLY_MAX - 40 - 8)];
            eth.ipv6(dst.octets(), src.octets(), 64)
                .icmpv6(Icmpv6Type::PacketTooBig {
                    mtu: u32::from(mtu),
                })
                .write(&mut out, quote)
                .ok()?;
        }
        _ => return None,
    }
    Some(out)
}

/// Echo requests and replies may get an error; ICMP errors must not.
fn is_icmpv4_query(packet: &[u8], ip_header_len: usize) -> bool {
    matches!(packet.get(ip_header_len), Some(0 | 8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    const A: [u8; 6] = [0x0a, 0x58, 0, 0, 0, 1];
    const B: [u8; 6] = [0x0a, 0x58, 0, 0, 0, 2];

    fn udp4(len: usize, df: bool) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000)
            .write(&mut out, &vec![7u8; len])
            .unwrap();
        // etherparse sets DF by default; clear it for the negative case.
        if !df {
            out[ETH_HEADER + 6] &= !0x40;
            let sum_at = ETH_HEADER + 10;
            out[sum_at..sum_at + 2].copy_from_slice(&[0, 0]);
            let h = Ipv4HeaderSlice::from_slice(&out[ETH_HEADER..])
                .unwrap()
                .to_header();
            let c = h.calc_header_checksum();
            out[sum_at..sum_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        out
    }

    #[test]
    fn exceeds_counts_headers_and_segments() {
        assert!(!exceeds(1376 + 14, None, 1376));
        assert!(exceeds(1376 + 15, None, 1376));
        assert!(!exceeds(60_000, Some((66, 1324)), 1376));
        assert!(exceeds(60_000, Some((66, 8900)), 1376));
        assert!(exceeds(60_000, Some((0, 1340)), 1376));
    }

    #[test]
    fn ipv4_with_df_gets_fragmentation_needed_back() {
        let f = udp4(3000, true);
        let r = too_big_reply(&f, 1376).expect("a reply");
        let p = SlicedPacket::from_ethernet(&r).unwrap();
        let eth = p.link.unwrap().to_header().unwrap();
        let eth = match eth {
            etherparse::LinkHeader::Ethernet2(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!((eth.source, eth.destination), (B, A));
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip.header().source(), [10, 0, 0, 2]);
        assert_eq!(ip.header().destination(), [10, 0, 0, 1]);
        let Some(TransportSlice::Icmpv4(icmp)) = p.transport else {
            panic!("not ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1376
            })
        );
        assert!(r.len() <= ETH_HEADER + V4_REPLY_MAX);
        // The quote starts with the offending IP header.
        assert_eq!(&icmp.payload()[..20], &f[ETH_HEADER..ETH_HEADER + 20]);
    }

    #[test]
    fn ipv6_gets_packet_too_big() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(1, 2, 3, 4000)
            .write(&mut f, &[1u8; 3000])
            .unwrap();
        let r = too_big_reply(&f, 1400).expect("a reply");
        let p = SlicedPacket::from_ethernet(&r).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1400 });
        assert!(r.len() <= ETH_HEADER + V6_REPLY_MAX);
    }

    #[test]
    fn no_reply_where_none_is_due() {
        assert!(
            too_big_reply(&udp4(3000, false), 1376).is_none(),
            "DF clear"
        );
        let mut bcast = udp4(3000, true);
        bcast[0] = 0xff;
        assert!(too_big_reply(&bcast, 1376).is_none(), "broadcast");
        let mut arp = udp4(100, true);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(too_big_reply(&arp, 1376).is_none(), "not IP");
        assert!(too_big_reply(&[0u8; 20], 1376).is_none(), "runt");
        // An ICMP error about an ICMP error: never.
        let reply = too_big_reply(&udp4(3000, true), 1376).unwrap();
        assert!(too_big_reply(&reply, 500).is_none());
    }
}
