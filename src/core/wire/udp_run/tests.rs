use etherparse::PacketBuilder;
use proptest::prelude::*;

use super::*;

const PLAIN: VnetHdr = VnetHdr {
    flags: 0,
    gso_type: 0,
    hdr_len: 0,
    gso_size: 0,
    csum_start: 0,
    csum_offset: 0,
};
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// An Ethernet frame with one IPv4 UDP datagram (DF set, as Linux sends
/// them), from port `sport`, IP ID `id`.
fn datagram(sport: u16, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(sport, 5201)
        .write(&mut f, payload)
        .unwrap();
    set_id(&mut f, id);
    f
}

fn set_id(f: &mut [u8], id: u16) {
    f[ETH + 4..ETH + 6].copy_from_slice(&id.to_be_bytes());
    refresh_ip_checksum(f);
}

fn refresh_ip_checksum(f: &mut [u8]) {
    f[ETH + 10..ETH + 12].fill(0);
    let c = Sum16BitWords::new()
        .add_slice(&f[ETH..ETH + IP])
        .ones_complement();
    f[ETH + 10..ETH + 12].copy_from_slice(&c.to_ne_bytes());
}

fn payload(i: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| i.wrapping_mul(31).wrapping_add(j as u8))
        .collect()
}

/// What the kernel does with a joined frame: cut it at `seg` bytes of
/// payload, each datagram with its own lengths and its checksum completed
/// from the seed (as `__udp_gso_segment` and checksum completion do).
fn cut(joined: &[u8], seg: usize) -> Vec<Vec<u8>> {
    let frame = &joined[vnet::LEN..];
    let (headers, payload) = frame.split_at(HEADERS);
    let seed = [headers[ETH + IP + 6], headers[ETH + IP + 7]];
    let joined_len = u16::from_be_bytes([headers[ETH + IP + 4], headers[ETH + IP + 5]]);
    payload
        .chunks(seg)
        .map(|p| {
            let mut f = headers.to_vec();
            f.extend_from_slice(p);
            let udp_len = (UDP + p.len()) as u16;
            let ip_len = IP as u16 + udp_len;
            f[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
            refresh_ip_checksum(&mut f);
            f[ETH + IP + 4..ETH + IP + 6].copy_from_slice(&udp_len.to_be_bytes());
            // The seed, its length term replaced: seed - old + new.
            let adjusted = !Sum16BitWords::new()
                .add_2bytes(seed)
                .add_2bytes((!joined_len).to_be_bytes())
                .add_2bytes(udp_len.to_be_bytes())
                .ones_complement();
            f[ETH + IP + 6..ETH + IP + 8].copy_from_slice(&adjusted.to_ne_bytes());
            let done = Sum16BitWords::new()
                .add_slice(&f[ETH + IP..])
                .to_ones_complement_with_no_zero();
            f[ETH + IP + 6..ETH + IP + 8].copy_from_slice(&done.to_ne_bytes());
            f
        })
        .collect()
}

#[test]
fn a_run_of_one_flow_is_one_frame_that_the_kernel_cuts_back_into_the_same_datagrams() {
    let frames: Vec<Vec<u8>> = (0..5u8)
        .map(|i| datagram(40000, 7, &payload(i, if i == 4 { 300 } else { 1400 })))
        .collect();
    let mut run = UdpRun::default();
    for f in &frames {
        assert!(run.join(PLAIN, f));
    }
    let Taken::Joined(joined, 5) = run.take() else {
        panic!("not joined, all five");
    };
    let hdr = VnetHdr::parse(joined).unwrap();
    assert_eq!(
        (hdr.gso_type, hdr.gso_size, hdr.hdr_len),
        (vnet::GSO_UDP_L4, 1400, 42)
    );
    hdr.validate(joined.len() - vnet::LEN).unwrap();
    assert_eq!(joined.len(), vnet::LEN + HEADERS + 4 * 1400 + 300);
    // Cut as the kernel cuts, each datagram is the one that came, byte for
    // byte (DF and the same IP ID: the kernel keeps or numbers those).
    assert_eq!(cut(joined, 1400), frames);
    assert!(run.is_empty());
    assert!(matches!(run.take(), Taken::Nothing));
}

#[test]
fn a_single_datagram_goes_as_it_came() {
    let f = datagram(40000, 1, &payload(0, 100));
    let mut run = UdpRun::default();
    assert!(run.join(PLAIN, &f));
    let Taken::Single(w) = run.take() else {
        panic!("not single");
    };
    assert_eq!(&w[..vnet::LEN], &vnet::PLAIN);
    assert_eq!(&w[vnet::LEN..], &f[..]);
}

#[test]
fn another_flow_a_longer_datagram_or_one_after_a_shorter_does_not_join() {
    let mut run = UdpRun::default();
    assert!(run.join(PLAIN, &datagram(40000, 1, &payload(0, 1000))));
    assert!(
        !run.join(PLAIN, &datagram(40001, 1, &payload(1, 1000))),
        "another port"
    );
    assert!(
        !run.join(PLAIN, &datagram(40000, 1, &payload(1, 1001))),
        "longer"
    );
    let mut other_mac = datagram(40000, 1, &payload(1, 1000));
    other_mac[0] = 0x04;
    assert!(!run.join(PLAIN, &other_mac), "another MAC");
    assert!(
        run.join(PLAIN, &datagram(40000, 1, &payload(2, 999))),
        "shorter: last"
    );
    assert!(
        !run.join(PLAIN, &datagram(40000, 1, &payload(3, 999))),
        "after the last"
    );
    let Taken::Joined(joined, 2) = run.take() else {
        panic!("not joined, the first and the shorter");
    };
    assert_eq!(VnetHdr::parse(joined).unwrap().gso_size, 1000);
}

#[test]
fn a_wrong_checksum_is_never_joined_and_so_never_made_right() {
    let mut bad = datagram(40000, 1, &payload(1, 1000));
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    let mut run = UdpRun::default();
    assert!(
        !run.join(PLAIN, &bad),
        "alone: written as it came, for the kernel to drop"
    );
    assert!(run.join(PLAIN, &datagram(40000, 1, &payload(0, 1000))));
    assert!(!run.join(PLAIN, &bad));
    let mut bad_ip = datagram(40000, 1, &payload(1, 1000));
    bad_ip[ETH + 8] = 1; // TTL changed, IP checksum not
    assert!(!run.join(PLAIN, &bad_ip));
    // No UDP checksum (allowed in IPv4): joined, the kernel adds one.
    let mut none = datagram(40000, 1, &payload(1, 1000));
    none[ETH + IP + 6..ETH + IP + 8].fill(0);
    assert!(run.join(PLAIN, &none));
}

#[test]
fn a_checksum_left_to_complete_joins_and_a_single_one_keeps_its_header() {
    let partial = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 34,
        csum_offset: 6,
    };
    // As the sender's kernel leaves it: the pseudo-header's sum, here any
    // bytes (it is not checked).
    let seeded = |i: u8, len: usize| {
        let mut f = datagram(40000, 1, &payload(i, len));
        f[ETH + IP + 6..ETH + IP + 8].copy_from_slice(&[0x12, 0x34]);
        f
    };
    let mut run = UdpRun::default();
    let one = seeded(0, 800);
    assert!(run.join(partial, &one));
    let Taken::Single(w) = run.take() else {
        panic!("not single");
    };
    assert_eq!(VnetHdr::parse(w).unwrap(), partial);
    assert_eq!(&w[vnet::LEN..], &one[..]);
    let frames: Vec<Vec<u8>> = (0..3).map(|i| seeded(i, 800)).collect();
    for f in &frames {
        assert!(run.join(partial, f));
    }
    let Taken::Joined(joined, 3) = run.take() else {
        panic!("not joined");
    };
    assert_eq!(VnetHdr::parse(joined).unwrap().gso_size, 800);
    // Cut, each datagram has the checksum its bytes call for.
    let proper = |i: u8| datagram(40000, 1, &payload(i, 800));
    assert_eq!(cut(joined, 800), (0..3).map(proper).collect::<Vec<_>>());
    // Another checksum position, or a segment to cut: not joined.
    for other in [
        VnetHdr {
            csum_start: 35,
            ..partial
        },
        VnetHdr {
            csum_offset: 16,
            ..partial
        },
        VnetHdr {
            gso_type: vnet::GSO_UDP_L4,
            gso_size: 400,
            ..partial
        },
    ] {
        assert!(!run.join(other, &frames[0]), "{other:?}");
    }
}

#[test]
fn without_df_only_consecutive_ip_ids_join() {
    let no_df = |id: u16, i: u8| {
        let mut f = datagram(40000, id, &payload(i, 500));
        f[ETH + 6] &= !DF;
        refresh_ip_checksum(&mut f);
        f
    };
    let mut run = UdpRun::default();
    assert!(run.join(PLAIN, &no_df(10, 0)));
    assert!(run.join(PLAIN, &no_df(11, 1)));
    assert!(!run.join(PLAIN, &no_df(13, 2)));
    assert!(run.join(PLAIN, &no_df(12, 2)));
    assert!(
        !run.join(PLAIN, &datagram(40000, 13, &payload(3, 500))),
        "DF differs"
    );
}

#[test]
fn only_plain_ipv4_udp_joins() {
    let mut run = UdpRun::default();
    let mut frag = datagram(40000, 1, &payload(0, 500));
    frag[ETH + 6] |= 0x20; // more fragments
    refresh_ip_checksum(&mut frag);
    let mut tcp = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1, 2, 3, 4)
        .write(&mut tcp, &[0; 10])
        .unwrap();
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(A, B)
        .ipv6([1; 16], [2; 16], 64)
        .udp(1, 2)
        .write(&mut v6, &[0; 10])
        .unwrap();
    // A tiny datagram, padded to Ethernet's 60 bytes.
    let mut padded = datagram(40000, 1, &payload(0, 2));
    padded.resize(60, 0);
    for (what, f) in [
        ("fragment", frag),
        ("TCP", tcp),
        ("IPv6", v6),
        ("padded", padded),
    ] {
        assert!(!run.join(PLAIN, &f), "{what} joined");
    }
    assert!(run.is_empty());
}

#[test]
fn a_run_stops_at_64_datagrams_and_at_the_ip_length_limit() {
    let mut run = UdpRun::default();
    for i in 0..MAX_DATAGRAMS {
        assert!(run.join(PLAIN, &datagram(1, 1, &payload(i as u8, 100))));
    }
    assert!(!run.join(PLAIN, &datagram(1, 1, &payload(0, 100))));
    let _ = run.take();
    let big = payload(0, 9000);
    let mut joined = 0;
    while run.join(PLAIN, &datagram(1, 1, &big)) {
        joined += 1;
    }
    assert_eq!(joined, (MAX_IP_LEN - IP - UDP) / 9000);
    let Taken::Joined(j, _) = run.take() else {
        panic!("not joined");
    };
    assert!(j.len() - vnet::LEN - ETH <= MAX_IP_LEN);
}

proptest! {
    #[test]
    fn hostile_frames_never_panic(frames in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..200), 0..8)) {
        let mut run = UdpRun::default();
        let good = datagram(1, 1, &payload(0, 150));
        for f in &frames {
            let mut f = f.clone();
            // Half of them look like the good one in their first bytes.
            if f.len() % 2 == 0 {
                let n = f.len().min(good.len());
                f[..n].copy_from_slice(&good[..n]);
            }
            if !run.join(PLAIN, &f) {
                let _ = run.take();
                let _ = run.join(PLAIN, &f);
            }
        }
        let _ = run.take();
    }
}
