//! Gratuitous ARP and unsolicited IPv6 neighbour advertisements.
//!
//! Sent from a raw `AF_PACKET` socket bound to one interface, so that peers
//! on the overlay update stale ARP / neighbour entries at once when an
//! address moves to a new MAC. Packet sockets live in the network namespace
//! they were opened in: call [`announce`] on a thread inside the target
//! netns (see [`super::netns::run_in_netns`]).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::NetError;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: [u8; 6] = [0xff; 6];
/// 33:33:00:00:00:01, the Ethernet address of ff02::1 (all nodes).
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Announces `addrs` as belonging to `mac` on interface `ifname` of the
/// caller's network namespace: one gratuitous ARP request per IPv4 address
/// (sender = target = the address, to ff:ff:ff:ff:ff:ff) and one unsolicited
/// neighbour advertisement (override flag, target link-layer address option,
/// to ff02::1) per IPv6 address.
pub fn announce(ifname: &str, mac: [u8; 6], addrs: &[IpAddr]) -> Result<(), NetError> {
    let err = |source: io::Error| NetError::Garp {
        ifname: ifname.to_string(),
        source,
    };
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|e| err(e.into()))?;
    let sock = PacketSocket::open(ifindex).map_err(err)?;
    for addr in addrs {
        let frame = match addr {
            IpAddr::V4(ip) => garp_frame(mac, *ip),
            IpAddr::V6(ip) => unsolicited_na_frame(mac, *ip),
        };
        sock.send(&frame).map_err(err)?;
    }
    Ok(())
}

/// A gratuitous ARP request for `ip` at `mac` (60 bytes, padded).
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // htype Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // ptype IPv4
    f.push(6); // hlen
    f.push(4); // plen
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&mac); // sender hw
    f.extend_from_slice(&ip.octets()); // sender ip
    f.extend_from_slice(&[0; 6]); // target hw
    f.extend_from_slice(&ip.octets()); // target ip
    f.resize(60, 0);
    f
}

/// An unsolicited neighbour advertisement for `ip` at `mac`, to ff02::1.
pub fn unsolicited_na_frame(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    // ICMPv6: type 136, code 0, checksum, flags (O), target, option 2 (TLLA).
    let mut icmp = Vec::with_capacity(32);
    icmp.push(136);
    icmp.push(0);
    icmp.extend_from_slice(&[0, 0]);
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // override
    icmp.extend_from_slice(&ip.octets());
    icmp.push(2); // target link-layer address
    icmp.push(1); // length in units of 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(ip, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&ALL_NODES_MAC);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(58); // next header ICMPv6
    f.push(255); // hop limit: required for ND
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for c in bytes.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(body.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(body);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A send-only `AF_PACKET`/`SOCK_RAW` socket bound to one interface.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    fn open(ifindex: u32) -> io::Result<Self> {
        // Protocol 0: the socket receives nothing, it only sends.
        // SAFETY: plain socket(2) call; the fd is owned right after.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
        let sa = sockaddr_ll(ifindex, 0, [0; 6]);
        // SAFETY: sa is a valid sockaddr_ll of the given length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        send_frame(&self.fd, self.ifindex, frame)
    }
}

/// Sends `frame`, a whole Ethernet frame, on packet socket `fd` out of
/// interface `ifindex` (to the frame's destination, with its ethertype).
pub(super) fn send_frame(fd: &OwnedFd, ifindex: i32, frame: &[u8]) -> io::Result<()> {
    let (Some(dst), Some(proto)) = (frame.get(..6), frame.get(12..14)) else {
        return Err(io::Error::other("frame shorter than an Ethernet header"));
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(dst);
    let sa = sockaddr_ll(ifindex, u16::from_be_bytes([proto[0], proto[1]]), mac);
    // SAFETY: frame and sa are valid for the lengths given.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::from_ref(&sa).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn sockaddr_ll(ifindex: i32, proto: u16, addr: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto.to_be();
    sa.sll_ifindex = ifindex;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&addr);
    sa
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        ArpHardwareId, ArpOperation, ArpPacketSlice, EtherType, Ethernet2Header, Icmpv6Type,
        SlicedPacket,
    };

    #[test]
    fn garp_is_a_valid_arp_request() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = garp_frame(mac, Ipv4Addr::new(10, 2, 1, 1));
        assert_eq!(f.len(), 60);
        let (eth, rest) = Ethernet2Header::from_slice(&f).unwrap();
        assert_eq!(eth.destination, BROADCAST);
        assert_eq!(eth.source, mac);
        assert_eq!(eth.ether_type, EtherType::ARP);
        let arp = ArpPacketSlice::from_slice(rest).unwrap();
        assert_eq!(arp.operation(), ArpOperation::REQUEST);
        assert_eq!(arp.hw_addr_type(), ArpHardwareId::ETHERNET);
        assert_eq!(arp.proto_addr_type(), EtherType::IPV4);
        assert_eq!(arp.sender_hw_addr(), &mac);
        assert_eq!(arp.sender_protocol_addr(), &[10, 2, 1, 1]);
        assert_eq!(arp.target_protocol_addr(), &[10, 2, 1, 1]);
    }

    #[test]
    fn na_checksum_verifies() {
        let mac = [2, 0, 0, 0, 0, 1];
        let ip: Ipv6Addr = "fd00::1".parse().unwrap();
        let f = unsolicited_na_frame(mac, ip);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        match p.transport {
            Some(etherparse::TransportSlice::Icmpv6(icmp)) => {
                assert!(matches!(
                    icmp.icmp_type(),
                    Icmpv6Type::NeighborAdvertisement(_)
                ));
                let expect = icmp
                    .icmp_type()
                    .calc_checksum(ip.octets(), ALL_NODES.octets(), icmp.payload())
                    .unwrap();
                assert_eq!(icmp.checksum(), expect);
            }
            other => panic!("not icmpv6: {other:?}"),
        }
    }
}
