//! ARP frames about one address: the DNS address every host has on its
//! own bridge must be answered by that host only, so the router keeps ARP
//! about it off the overlay.

use std::net::Ipv4Addr;

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
/// Ethernet header, then the ARP header up to the sender's MAC.
const SENDER_IP: std::ops::Range<usize> = 28..32;
const TARGET_IP: std::ops::Range<usize> = 38..42;

/// Is `frame` an ARP request or reply for or from `addr`?
pub fn mentions(frame: &[u8], addr: Ipv4Addr) -> bool {
    if frame.get(12..14) != Some(&ETHERTYPE_ARP[..]) {
        return false;
    }
    let ip = addr.octets();
    frame.get(SENDER_IP) == Some(&ip[..]) || frame.get(TARGET_IP) == Some(&ip[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ETHERTYPE_ARP);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&sender);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    #[test]
    fn finds_the_address_on_either_side() {
        let dns = Ipv4Addr::new(169, 254, 53, 53);
        assert!(mentions(&arp([10, 0, 0, 1], dns.octets()), dns));
        assert!(
            mentions(&arp(dns.octets(), dns.octets()), dns),
            "gratuitous"
        );
        assert!(!mentions(&arp([10, 0, 0, 1], [10, 0, 0, 2]), dns));
        let mut ip = arp([10, 0, 0, 1], dns.octets());
        ip[12..14].copy_from_slice(&[8, 0]);
        assert!(!mentions(&ip, dns), "not ARP");
        let short = arp([10, 0, 0, 1], dns.octets());
        assert!(!mentions(&short[..40], dns), "truncated");
    }
}
