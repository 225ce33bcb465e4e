//! The forwarding state machine, driven frame by frame.

use super::*;
use crate::core::test_fixtures::{entry, name, NOW_MS};
use crate::core::topology::Topology;
use crate::core::wire::sleeve::{HEADER_LEN, MAX_HOPS, MIN_FRAME_LEN};

const BROADCAST: [u8; 6] = [0xff; 6];
const IPV4_MULTICAST: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
const IPV6_MULTICAST: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];

/// A container's MAC (unicast, locally administered).
fn host(i: u8) -> [u8; 6] {
    [0x0a, 0x58, 0, 0, 0, i]
}

/// `me`'s routes in the mesh of `peers` joined by symmetric `edges`.
fn routes(me: u8, peers: &[u8], edges: &[(u8, u8)]) -> Routes {
    let mut t = Topology::new(entry(me, edges));
    let others = peers.iter().filter(|&&p| p != me).map(|&p| entry(p, edges));
    t.merge(others.collect(), NOW_MS);
    Routes::compute(&t)
}

fn router(me: u8, peers: &[u8], edges: &[(u8, u8)]) -> Router {
    Router::new(name(me), routes(me, peers, edges))
}

/// 1 - 2 - 3
const CHAIN: (&[u8], &[(u8, u8)]) = (&[1, 2, 3], &[(1, 2), (2, 3)]);
/// 1 - 2 - 4 - 3 - 1: each origin has its own broadcast tree.
const SQUARE: (&[u8], &[(u8, u8)]) = (&[1, 2, 3, 4], &[(1, 2), (2, 4), (4, 3), (3, 1)]);

fn chain_router(me: u8) -> Router {
    router(me, CHAIN.0, CHAIN.1)
}

/// An ARP-sized Ethernet frame; `tag` marks its payload.
fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[tag; 28]);
    f
}

fn datagram(src: PeerName, dst: PeerName, hops: u8, frames: &[&[u8]]) -> Vec<u8> {
    let mut d = Vec::new();
    Header {
        kind: Kind::Frames,
        hops,
        src,
        dst,
    }
    .emit(&mut d);
    for f in frames {
        sleeve::push_frame(&mut d, f);
    }
    d
}

fn hops_of(d: &[u8]) -> u8 {
    Header::parse(d).unwrap().0.hops
}

fn learned(r: &Router) -> Vec<([u8; 6], MacLocation)> {
    let mut v: Vec<_> = r.macs().entries().collect();
    v.sort_by_key(|(m, _)| *m);
    v
}

// ---- frames from the TAP ----

#[test]
fn tap_frame_teaches_its_source_as_local() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    assert_eq!(
        r.frame_from_tap(&frame(BROADCAST, host(1), 0), t0),
        TapDecision::Broadcast {
            next_hops: &[name(2)]
        }
    );
    assert_eq!(r.macs().lookup(&host(1), t0), Some(MacLocation::Local));
    assert_eq!(learned(&r), vec![(host(1), MacLocation::Local)]);
    assert_eq!(r.stats.frames_from_tap, 1);
    assert_eq!(r.stats.mac_moves, 0);
}

#[test]
fn tap_unicast_to_a_learned_remote_mac_goes_to_the_next_hop() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    // Host 3 lives behind peer 3 (two hops away): its broadcast tells us.
    let mut d = datagram(name(3), PeerName::NONE, 1, &[&frame(BROADCAST, host(3), 0)]);
    assert!(matches!(
        r.datagram(&mut d, t0),
        DatagramDecision::Frames { inject: true, .. }
    ));
    assert_eq!(
        r.macs().lookup(&host(3), t0),
        Some(MacLocation::Peer(name(3)))
    );
    assert_eq!(
        r.frame_from_tap(&frame(host(3), host(1), 1), t0),
        TapDecision::Unicast {
            dst: name(3),
            next_hop: name(2)
        }
    );
    // A neighbour's MAC goes straight to it.
    let mut d = datagram(name(2), name(1), 0, &[&frame(host(1), host(2), 2)]);
    r.datagram(&mut d, t0);
    assert_eq!(
        r.frame_from_tap(&frame(host(2), host(1), 3), t0),
        TapDecision::Unicast {
            dst: name(2),
            next_hop: name(2)
        }
    );
    assert_eq!(r.stats.frames_from_tap, 2);
}

#[test]
fn tap_unknown_broadcast_and_multicast_destinations_flood_our_tree() {
    let t0 = Instant::now();
    // In the square, peer 1's own tree reaches 2 and 3 directly.
    let mut r = router(1, SQUARE.0, SQUARE.1);
    for (i, dst) in [host(9), BROADCAST, IPV4_MULTICAST, IPV6_MULTICAST]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            r.frame_from_tap(&frame(dst, host(1), i as u8), t0),
            TapDecision::Broadcast {
                next_hops: &[name(2), name(3)]
            },
            "destination {dst:02x?}"
        );
    }
    // Peer 2's own tree is 2 -> {1, 4}.
    let mut r2 = router(2, SQUARE.0, SQUARE.1);
    assert_eq!(
        r2.frame_from_tap(&frame(BROADCAST, host(2), 0), t0),
        TapDecision::Broadcast {
            next_hops: &[name(1), name(4)]
        }
    );
    assert_eq!(r.stats.dropped_local_destination, 0);
    assert_eq!(r.stats.frames_from_tap, 4);
}

#[test]
fn tap_flood_with_no_neighbour_goes_nowhere() {
    let t0 = Instant::now();
    let mut r = router(1, &[1], &[]);
    assert_eq!(
        r.frame_from_tap(&frame(BROADCAST, host(1), 0), t0),
        TapDecision::Broadcast { next_hops: &[] }
    );
}

#[test]
fn tap_local_destination_is_dropped() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    r.frame_from_tap(&frame(BROADCAST, host(1), 0), t0);
    assert_eq!(
        r.frame_from_tap(&frame(host(1), host(2), 1), t0),
        TapDecision::Drop(DropReason::LocalDestination)
    );
    // A frame to itself too.
    assert_eq!(
        r.frame_from_tap(&frame(host(5), host(5), 2), t0),
        TapDecision::Drop(DropReason::LocalDestination)
    );
    assert_eq!(r.stats.dropped_local_destination, 2);
    assert_eq!(r.stats.frames_from_tap, 3);
    // Both senders were learned anyway.
    assert_eq!(r.macs().lookup(&host(2), t0), Some(MacLocation::Local));
}

#[test]
fn tap_multicast_source_is_dropped_and_not_learned() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    for src in [BROADCAST, IPV4_MULTICAST, IPV6_MULTICAST] {
        assert_eq!(
            r.frame_from_tap(&frame(host(2), src, 0), t0),
            TapDecision::Drop(DropReason::BadSourceMac)
        );
    }
    assert_eq!(r.stats.dropped_bad_source_mac, 3);
    assert!(r.macs().is_empty());
}

#[test]
fn arp_about_the_host_only_address_stays_on_this_host() {
    let mut r = router(1, &[1, 2], &[(1, 2)]);
    let dns = Ipv4Addr::new(169, 254, 53, 53);
    let mut arp = frame([0xff; 6], host(7), 0);
    arp.resize(42, 0);
    arp[12..14].copy_from_slice(&[8, 6]);
    arp[38..42].copy_from_slice(&dns.octets());
    assert!(matches!(
        r.frame_from_tap(&arp, Instant::now()),
        TapDecision::Broadcast { .. }
    ));
    r.set_host_only(Some(dns));
    assert_eq!(
        r.frame_from_tap(&arp, Instant::now()),
        TapDecision::Drop(DropReason::HostOnly)
    );
    assert_eq!(r.stats.dropped_host_only, 1);
}

#[test]
fn tap_runt_frames_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    let full = frame(BROADCAST, host(1), 0);
    for n in 0..MIN_FRAME_LEN {
        assert_eq!(
            r.frame_from_tap(&full[..n], t0),
            TapDecision::Drop(DropReason::Malformed(SleeveError::RuntFrame(n))),
            "{n} bytes"
        );
    }
    assert_eq!(r.stats.dropped_malformed, MIN_FRAME_LEN as u64);
    assert_eq!(r.stats.frames_from_tap, MIN_FRAME_LEN as u64);
    assert!(r.macs().is_empty());
    // A bare Ethernet header is enough.
    assert!(matches!(
        r.frame_from_tap(&full[..MIN_FRAME_LEN], t0),
        TapDecision::Broadcast { .. }
    ));
}

#[test]
fn a_full_mac_table_never_blocks_forwarding() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    // Host 3 behind peer 3, then a local flood well past the cap.
    let mut d = datagram(name(3), PeerName::NONE, 1, &[&frame(BROADCAST, host(3), 0)]);
    r.datagram(&mut d, t0);
    let mac = |i: usize| {
        let b = (i as u32).to_be_bytes();
        [0x0a, 0x66, b[0], b[1], b[2], b[3]]
    };
    let flood = MAC_TABLE_CAPACITY + 1000;
    for i in 0..flood {
        assert!(matches!(
            r.frame_from_tap(&frame(BROADCAST, mac(i), 0), t0),
            TapDecision::Broadcast { .. }
        ));
    }
    assert_eq!(r.macs().len(), MAC_TABLE_CAPACITY);
    assert_eq!(r.stats.mac_evictions, 1001);
    // A newcomer's frames go out, and it is learned at once.
    let new = host(7);
    assert_eq!(
        r.frame_from_tap(&frame(host(3), new, 1), t0),
        TapDecision::Unicast {
            dst: name(3),
            next_hop: name(2)
        },
        "what peer 3 taught survived the local flood"
    );
    assert_eq!(r.macs().lookup(&new, t0), Some(MacLocation::Local));
    assert_eq!(r.stats.mac_evictions, 1002);
    assert_eq!(r.stats.frames_from_tap, flood as u64 + 1);
}

#[test]
fn tap_mac_behind_an_unreachable_peer_floods() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    let mut d = datagram(name(3), PeerName::NONE, 1, &[&frame(BROADCAST, host(3), 0)]);
    r.datagram(&mut d, t0);
    // Peer 3 drops out of the mesh (2 no longer lists it).
    r.set_routes(routes(1, CHAIN.0, &[(1, 2)]));
    assert_eq!(
        r.frame_from_tap(&frame(host(3), host(1), 1), t0),
        TapDecision::Broadcast {
            next_hops: &[name(2)]
        }
    );
    assert_eq!(r.stats.dropped_no_route, 0);
}

#[test]
fn forgotten_and_expired_macs_flood_again() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    let mut d = datagram(
        name(3),
        PeerName::NONE,
        1,
        &[&frame(BROADCAST, host(3), 0), &frame(BROADCAST, host(4), 0)],
    );
    r.datagram(&mut d, t0);
    let to = |m| frame(m, host(1), 1);
    let unicast = TapDecision::Unicast {
        dst: name(3),
        next_hop: name(2),
    };
    let flood = TapDecision::Broadcast {
        next_hops: &[name(2)],
    };
    assert_eq!(r.frame_from_tap(&to(host(3)), t0), unicast);
    r.forget_peer(name(3));
    assert_eq!(r.frame_from_tap(&to(host(3)), t0), flood);
    assert_eq!(r.macs().lookup(&host(4), t0), None);

    r.datagram(&mut d.clone(), t0);
    let almost = t0 + MAC_TTL - Duration::from_millis(1);
    assert_eq!(r.frame_from_tap(&to(host(3)), almost), unicast);
    let later = t0 + MAC_TTL;
    assert_eq!(r.frame_from_tap(&to(host(3)), later), flood);
    r.expire(later);
    assert_eq!(learned(&r), vec![(host(1), MacLocation::Local)]);
}

// ---- datagrams from neighbours ----

#[test]
fn unicast_datagram_for_us_is_injected_and_teaches_its_macs() {
    let t0 = Instant::now();
    let mut r = chain_router(3);
    let (f1, f2) = (frame(host(3), host(1), 0), frame(host(3), host(5), 1));
    let mut d = datagram(name(1), name(3), 1, &[&f1, &f2]);
    let before = d.clone();
    assert_eq!(
        r.datagram(&mut d, t0),
        DatagramDecision::Frames {
            origin: name(1),
            inject: true,
            relay: Relay::None
        }
    );
    assert_eq!(d, before, "nothing to relay: the datagram is untouched");
    assert_eq!(
        learned(&r),
        vec![
            (host(1), MacLocation::Peer(name(1))),
            (host(5), MacLocation::Peer(name(1)))
        ]
    );
    assert_eq!(r.stats.datagrams_received, 1);
    assert_eq!(r.stats.frames_to_tap, 2);
    assert_eq!(r.stats.datagrams_relayed, 0);
}

#[test]
fn datagram_learning_counts_moves_and_skips_multicast_sources() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    r.frame_from_tap(&frame(BROADCAST, host(1), 0), t0);
    // Host 1 shows up behind peer 3 (it migrated), then behind peer 2.
    let mut d = datagram(name(3), PeerName::NONE, 1, &[&frame(BROADCAST, host(1), 0)]);
    r.datagram(&mut d, t0);
    assert_eq!(
        r.macs().lookup(&host(1), t0),
        Some(MacLocation::Peer(name(3)))
    );
    let mut d = datagram(name(2), name(1), 0, &[&frame(BROADCAST, host(1), 0)]);
    r.datagram(&mut d, t0);
    assert_eq!(
        r.macs().lookup(&host(1), t0),
        Some(MacLocation::Peer(name(2)))
    );
    assert_eq!(r.stats.mac_moves, 2);
    // And back home.
    r.frame_from_tap(&frame(BROADCAST, host(1), 0), t0);
    assert_eq!(r.macs().lookup(&host(1), t0), Some(MacLocation::Local));
    assert_eq!(r.stats.mac_moves, 3);

    // A frame with a multicast source is still delivered, but teaches
    // nothing.
    let mut d = datagram(name(2), name(1), 0, &[&frame(host(1), BROADCAST, 0)]);
    assert!(matches!(
        r.datagram(&mut d, t0),
        DatagramDecision::Frames { inject: true, .. }
    ));
    assert_eq!(r.macs().len(), 1);
}

#[test]
fn relayed_unicast_teaches_nothing() {
    let t0 = Instant::now();
    let mut r = chain_router(2);
    let mut d = datagram(name(1), name(3), 0, &[&frame(host(3), host(1), 0)]);
    r.datagram(&mut d, t0);
    assert!(r.macs().is_empty());
    assert_eq!(r.stats.frames_to_tap, 0);
}

/// A valid datagram for peer 1 (from 2), with one frame.
fn valid_for_1() -> Vec<u8> {
    datagram(name(2), name(1), 0, &[&frame(host(1), host(2), 0)])
}

#[track_caller]
fn assert_malformed(r: &mut Router, d: &[u8], want: SleeveError) {
    let t0 = Instant::now();
    let before = (r.stats.dropped_malformed, r.stats.datagrams_received);
    let mut d = d.to_vec();
    assert_eq!(
        r.datagram(&mut d, t0),
        DatagramDecision::Drop(DropReason::Malformed(want)),
        "{d:02x?}"
    );
    assert_eq!(
        (r.stats.dropped_malformed, r.stats.datagrams_received),
        (before.0 + 1, before.1 + 1)
    );
}

#[test]
fn every_truncation_of_a_datagram_is_dropped() {
    let mut r = chain_router(1);
    let d = valid_for_1();
    for n in 0..d.len() {
        let want = if n < HEADER_LEN {
            SleeveError::Short
        } else {
            SleeveError::TruncatedFrame
        };
        assert_malformed(&mut r, &d[..n], want);
    }
    let hb = sleeve::heartbeat(name(2), name(1), 7);
    for n in 0..hb.len() {
        let want = if n < HEADER_LEN {
            SleeveError::Short
        } else {
            SleeveError::BadHeartbeat
        };
        assert_malformed(&mut r, &hb[..n], want);
    }
    assert_eq!(r.stats.dropped_malformed, (d.len() + hb.len()) as u64);
    assert_eq!(r.stats.frames_to_tap, 0);
    assert!(r.macs().is_empty());
    // The whole datagram is fine.
    assert!(matches!(
        r.datagram(&mut d.clone(), Instant::now()),
        DatagramDecision::Frames { inject: true, .. }
    ));
}

#[test]
fn fragments_are_injected_relayed_and_teach_the_mac_once() {
    let mut f = vnet::PLAIN.to_vec();
    f.extend_from_slice(&frame(host(2), host(3), 7));
    let frag = |offset: u32, index: u8, bytes: &[u8], dst: PeerName| {
        let mut d = Vec::new();
        Header {
            kind: Kind::Fragment,
            hops: 0,
            src: name(3),
            dst,
        }
        .emit(&mut d);
        sleeve::FragHeader {
            id: 1,
            total: f.len() as u32,
            offset,
            index,
            count: 2,
        }
        .emit(&mut d);
        d.extend_from_slice(bytes);
        d
    };
    let (a, b) = f.split_at(30);
    let mut r = chain_router(1);
    let t0 = Instant::now();
    for d in [frag(0, 0, a, name(1)), frag(30, 1, b, name(1))] {
        assert_eq!(
            r.datagram(&mut d.clone(), t0),
            DatagramDecision::Frames {
                origin: name(3),
                inject: true,
                relay: Relay::None
            }
        );
    }
    assert_eq!(learned(&r), vec![(host(3), MacLocation::Peer(name(3)))]);
    assert_eq!(r.stats.frames_to_tap, 1);
    // At the middle of the chain it is relayed, fragment by fragment.
    let mut r2 = chain_router(2);
    let mut d = frag(30, 1, b, name(1));
    assert_eq!(
        r2.datagram(&mut d, t0),
        DatagramDecision::Frames {
            origin: name(3),
            inject: false,
            relay: Relay::To(name(1))
        }
    );
    assert_eq!(hops_of(&d), 1);
}

#[test]
fn malformed_datagrams_are_dropped_and_counted() {
    let mut r = chain_router(1);
    let d = valid_for_1();

    let mut bad = d.clone();
    bad[0] = 0x45;
    assert_malformed(&mut r, &bad, SleeveError::BadMagic(0x45));

    for kind in [0u8, 4, 0xff] {
        let mut bad = d.clone();
        bad[1] = kind;
        assert_malformed(&mut r, &bad, SleeveError::UnknownKind(kind));
    }
    // Frames read as a fragment do not add up.
    let mut bad = d.clone();
    bad[1] = Kind::Fragment as u8;
    assert_malformed(&mut r, &bad, SleeveError::BadFragment);

    // Frame length one past the end, and far past it.
    for len in [43u16, 0xffff] {
        let mut bad = d.clone();
        bad[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&len.to_be_bytes());
        assert_malformed(&mut r, &bad, SleeveError::TruncatedFrame);
    }
    // A stray byte after the last frame.
    let mut bad = d.clone();
    bad.push(0);
    assert_malformed(&mut r, &bad, SleeveError::TruncatedFrame);
    // A frame shorter than an Ethernet header, alone or after a good one.
    let good = frame(host(1), host(2), 0);
    let runt = [0u8; MIN_FRAME_LEN - 1];
    for frames in [&[&runt[..]][..], &[&good[..], &runt[..]][..]] {
        let bad = datagram(name(2), name(1), 0, frames);
        assert_malformed(&mut r, &bad, SleeveError::RuntFrame(MIN_FRAME_LEN - 1));
    }
    // From the reserved all-zero name.
    let bad = datagram(PeerName::NONE, name(1), 0, &[&good]);
    assert_malformed(&mut r, &bad, SleeveError::ReservedSource);
    // Heartbeats with a uid of the wrong size.
    let mut bad = sleeve::heartbeat(name(2), name(1), 7);
    bad.push(0);
    assert_malformed(&mut r, &bad, SleeveError::BadHeartbeat);

    assert_eq!(r.stats.dropped_malformed, 12);
    assert_eq!(r.stats.frames_to_tap, 0);
    assert_eq!(r.stats.datagrams_relayed, 0);
}

#[test]
fn a_malformed_datagram_teaches_nothing() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    // Two frames, the second one truncated: the first one's source must
    // not be learned from a datagram that is thrown away.
    let mut d = datagram(
        name(2),
        PeerName::NONE,
        0,
        &[&frame(BROADCAST, host(2), 0), &frame(BROADCAST, host(3), 0)],
    );
    d.pop();
    assert_eq!(
        r.datagram(&mut d, t0),
        DatagramDecision::Drop(DropReason::Malformed(SleeveError::TruncatedFrame))
    );
    assert!(r.macs().is_empty(), "{:?}", learned(&r));
    assert_eq!(r.stats.mac_moves, 0);
    assert_eq!(r.stats.frames_to_tap, 0);
}

#[test]
fn our_own_datagram_is_dropped() {
    let t0 = Instant::now();
    let mut r = chain_router(2);
    for dst in [PeerName::NONE, name(1), name(2), name(3)] {
        let mut d = datagram(name(2), dst, 2, &[&frame(BROADCAST, host(2), 0)]);
        let before = d.clone();
        assert_eq!(
            r.datagram(&mut d, t0),
            DatagramDecision::Drop(DropReason::OwnDatagram)
        );
        assert_eq!(d, before);
    }
    assert_eq!(r.stats.dropped_own_datagram, 4);
    assert!(r.macs().is_empty());
    assert_eq!(r.stats.frames_to_tap, 0);
}

#[test]
fn unicast_for_another_peer_is_relayed_with_its_hop_count_raised() {
    let t0 = Instant::now();
    let mut r = chain_router(2);
    for (src, dst) in [(1, 3), (3, 1)] {
        let mut d = datagram(name(src), name(dst), 0, &[&frame(host(dst), host(src), 0)]);
        let mut want = d.clone();
        want[2] = 1;
        assert_eq!(
            r.datagram(&mut d, t0),
            DatagramDecision::Frames {
                origin: name(src),
                inject: false,
                relay: Relay::To(name(dst))
            }
        );
        assert_eq!(d, want, "only the hop count changes");
        assert_eq!(hops_of(&d), 1);
    }
    assert_eq!(r.stats.datagrams_relayed, 2);
    assert_eq!(r.stats.frames_to_tap, 0);

    // Peer 1 relays towards 3 through 2.
    let mut r1 = chain_router(1);
    let mut d = datagram(name(2), name(3), 5, &[&frame(host(3), host(2), 0)]);
    assert_eq!(
        r1.datagram(&mut d, t0),
        DatagramDecision::Frames {
            origin: name(2),
            inject: false,
            relay: Relay::To(name(2))
        }
    );
    assert_eq!(hops_of(&d), 6);
}

#[test]
fn unicast_for_an_unreachable_peer_is_dropped() {
    let t0 = Instant::now();
    let mut r = chain_router(2);
    let mut d = datagram(name(1), name(9), 0, &[&frame(host(9), host(1), 0)]);
    let before = d.clone();
    assert_eq!(
        r.datagram(&mut d, t0),
        DatagramDecision::Drop(DropReason::NoRoute)
    );
    assert_eq!(d, before);
    assert_eq!(r.stats.dropped_no_route, 1);
    assert_eq!(r.stats.datagrams_relayed, 0);
}

#[test]
fn broadcast_is_injected_and_relayed_along_the_origins_tree() {
    let t0 = Instant::now();
    // Square 1-2-4-3-1, seen from 2: 1's tree is 1 -> {2, 3}, 2 -> 4;
    // 3's tree is 3 -> {1, 4}, 1 -> 2; 4's tree is 4 -> {2, 3}, 2 -> 1.
    let mut r = router(2, SQUARE.0, SQUARE.1);
    let cases: [(u8, Relay); 3] = [
        (1, Relay::Many(&[name(4)])),
        (3, Relay::None),
        (4, Relay::Many(&[name(1)])),
    ];
    for (origin, relay) in cases {
        let mut d = datagram(
            name(origin),
            PeerName::NONE,
            1,
            &[&frame(BROADCAST, host(origin), origin)],
        );
        let relays = relay != Relay::None;
        assert_eq!(
            r.datagram(&mut d, t0),
            DatagramDecision::Frames {
                origin: name(origin),
                inject: true,
                relay
            },
            "origin {origin}"
        );
        assert_eq!(hops_of(&d), if relays { 2 } else { 1 });
        assert_eq!(
            r.macs().lookup(&host(origin), t0),
            Some(MacLocation::Peer(name(origin)))
        );
    }
    assert_eq!(r.stats.frames_to_tap, 3);
    assert_eq!(r.stats.datagrams_relayed, 2);

    // A broadcast from an origin we cannot reach is still injected.
    let mut d = datagram(name(9), PeerName::NONE, 0, &[&frame(BROADCAST, host(9), 9)]);
    assert_eq!(
        r.datagram(&mut d, t0),
        DatagramDecision::Frames {
            origin: name(9),
            inject: true,
            relay: Relay::None
        }
    );
}

#[test]
fn the_hop_limit_stops_relaying() {
    let t0 = Instant::now();
    let mut r = chain_router(2);
    let f = frame(host(3), host(1), 0);

    // One relay left.
    let mut d = datagram(name(1), name(3), MAX_HOPS - 1, &[&f]);
    assert_eq!(
        r.datagram(&mut d, t0),
        DatagramDecision::Frames {
            origin: name(1),
            inject: false,
            relay: Relay::To(name(3))
        }
    );
    assert_eq!(hops_of(&d), MAX_HOPS);

    // None left: a unicast for someone else is dropped, untouched.
    for hops in [MAX_HOPS, MAX_HOPS + 1, u8::MAX] {
        let mut d = datagram(name(1), name(3), hops, &[&f]);
        let before = d.clone();
        assert_eq!(
            r.datagram(&mut d, t0),
            DatagramDecision::Drop(DropReason::TooManyHops)
        );
        assert_eq!(d, before);
    }
    assert_eq!(r.stats.dropped_too_many_hops, 3);

    // A broadcast is still delivered here, but goes no further.
    let mut d = datagram(name(1), PeerName::NONE, MAX_HOPS, &[&f]);
    let before = d.clone();
    assert_eq!(
        r.datagram(&mut d, t0),
        DatagramDecision::Frames {
            origin: name(1),
            inject: true,
            relay: Relay::None
        }
    );
    assert_eq!(d, before);
    assert_eq!(r.stats.dropped_too_many_hops, 4);
    assert_eq!(r.stats.frames_to_tap, 1);

    // A unicast for us needs no relaying.
    let mut d = datagram(name(1), name(2), MAX_HOPS, &[&f]);
    assert!(matches!(
        r.datagram(&mut d, t0),
        DatagramDecision::Frames {
            inject: true,
            relay: Relay::None,
            ..
        }
    ));
    assert_eq!(r.stats.datagrams_relayed, 1);
    assert_eq!(r.stats.dropped_too_many_hops, 4);
}

#[test]
fn heartbeats_are_recognised() {
    let t0 = Instant::now();
    let mut r = chain_router(2);
    let mut d = sleeve::heartbeat(name(1), name(2), 0xdead_beef);
    assert_eq!(
        r.datagram(&mut d, t0),
        DatagramDecision::Heartbeat {
            src: name(1),
            uid: 0xdead_beef
        }
    );
    let mut d = sleeve::heartbeat(name(3), name(2), u64::MAX);
    assert_eq!(
        r.datagram(&mut d, t0),
        DatagramDecision::Heartbeat {
            src: name(3),
            uid: u64::MAX
        }
    );
    assert_eq!(r.stats.datagrams_received, 2);
    assert_eq!(r.stats.datagrams_relayed, 0);
    assert_eq!(r.stats.frames_to_tap, 0);
    assert!(r.macs().is_empty());
}

// ---- the fast path's steering ----

fn steer_ops(r: &mut Router) -> Vec<SteerOp> {
    let mut v = Vec::new();
    r.take_steer_ops(&mut v);
    v
}

/// Router 2 of the chain, having learned host 1 behind peer 1 and host 3
/// behind peer 3 (both neighbours), and host 9 behind peer 3 too.
fn middle_router_with_remote_macs(t0: Instant) -> Router {
    let mut r = chain_router(2);
    for (peer, mac) in [(1, host(1)), (3, host(3)), (3, host(9))] {
        let mut d = datagram(name(peer), PeerName::NONE, 0, &[&frame(BROADCAST, mac, 0)]);
        r.datagram(&mut d, t0);
    }
    r
}

#[test]
fn a_unicast_to_a_fast_neighbour_goes_on_the_sleeve_once_and_steers_its_mac() {
    let t0 = Instant::now();
    let mut r = middle_router_with_remote_macs(t0);
    r.set_fast(name(3), true);
    let d = r.frame_from_tap(&frame(host(3), host(2), 1), t0);
    assert_eq!(
        d,
        TapDecision::Unicast {
            dst: name(3),
            next_hop: name(3)
        },
        "the frame itself still goes"
    );
    assert_eq!(
        steer_ops(&mut r),
        [SteerOp::Steer {
            mac: host(3),
            peer: name(3)
        }]
    );
    r.frame_from_tap(&frame(host(3), host(2), 2), t0);
    assert!(steer_ops(&mut r).is_empty(), "steered once");
    r.frame_from_tap(&frame(host(1), host(2), 3), t0);
    assert!(
        steer_ops(&mut r).is_empty(),
        "peer 1 is on the sleeve: nothing to steer"
    );
    r.frame_from_tap(&frame(BROADCAST, host(2), 4), t0);
    assert!(
        steer_ops(&mut r).is_empty(),
        "broadcasts stay on the sleeve"
    );
    assert_eq!(r.steered_to(name(3)), 1);
}

#[test]
fn a_peer_reached_through_a_relay_is_never_steered() {
    let t0 = Instant::now();
    let mut r = chain_router(1);
    let mut d = datagram(name(3), PeerName::NONE, 1, &[&frame(BROADCAST, host(3), 0)]);
    r.datagram(&mut d, t0);
    // Even if the shell wrongly said so: 3 is two hops away.
    r.set_fast(name(3), true);
    r.frame_from_tap(&frame(host(3), host(1), 1), t0);
    assert!(steer_ops(&mut r).is_empty());
}

#[test]
fn falling_back_or_leaving_unsteers_every_mac_of_the_peer() {
    let t0 = Instant::now();
    let mut r = middle_router_with_remote_macs(t0);
    r.set_fast(name(3), true);
    r.frame_from_tap(&frame(host(3), host(2), 1), t0);
    r.frame_from_tap(&frame(host(9), host(2), 2), t0);
    assert_eq!(steer_ops(&mut r).len(), 2);
    let mut ops = r.set_fast(name(3), false);
    assert!(steer_ops(&mut r).is_empty(), "returned, not queued");
    ops.sort_by_key(|op| match op {
        SteerOp::Steer { mac, .. } | SteerOp::Unsteer { mac, .. } => *mac,
    });
    assert_eq!(
        ops,
        [
            SteerOp::Unsteer {
                mac: host(3),
                peer: name(3)
            },
            SteerOp::Unsteer {
                mac: host(9),
                peer: name(3)
            }
        ]
    );
    assert!(!r.is_fast(name(3)));
    r.frame_from_tap(&frame(host(3), host(2), 3), t0);
    assert!(steer_ops(&mut r).is_empty(), "on the sleeve now");

    r.set_fast(name(3), true);
    r.frame_from_tap(&frame(host(3), host(2), 4), t0);
    assert_eq!(steer_ops(&mut r).len(), 1);
    steer_ops(&mut r);
    r.forget_peer(name(3));
    assert!(!r.is_fast(name(3)), "gone from the mesh");
    assert_eq!(r.steered_to(name(3)), 0);
}

#[test]
fn a_steered_mac_seen_elsewhere_is_unsteered() {
    let t0 = Instant::now();
    let mut r = middle_router_with_remote_macs(t0);
    r.set_fast(name(3), true);
    r.set_fast(name(1), true);
    r.frame_from_tap(&frame(host(3), host(2), 1), t0);
    r.frame_from_tap(&frame(host(9), host(2), 1), t0);
    steer_ops(&mut r);
    // host 3 now speaks from this host's bridge...
    r.frame_from_tap(&frame(BROADCAST, host(3), 2), t0);
    assert_eq!(
        steer_ops(&mut r),
        [SteerOp::Unsteer {
            mac: host(3),
            peer: name(3)
        }]
    );
    // ...and host 9 from behind peer 1.
    let mut d = datagram(name(1), PeerName::NONE, 0, &[&frame(BROADCAST, host(9), 3)]);
    r.datagram(&mut d, t0);
    assert_eq!(
        steer_ops(&mut r),
        [SteerOp::Unsteer {
            mac: host(9),
            peer: name(3)
        }]
    );
    assert_eq!(r.steered_to(name(3)), 0);
}
