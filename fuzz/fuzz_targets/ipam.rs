//! IPAM gossip (control kind 4) from a peer: parsed, re-encoded, and merged
//! into allocators of a few shapes (seeded, with the peer's ring in another
//! cluster or re-labelled into ours; waiting for consensus; an observer),
//! each then driven through `think`, an allocation, a claim and an rmpeer.
//! Nothing panics, what parses re-encodes to the same gossip, a refused
//! merge changes nothing, addresses handed out are ours and in the subnet,
//! and whatever the allocator keeps stays within the caps and goes out
//! again in one control frame.
#![no_main]
use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use weave_rs::core::ipam::allocator::{
    Gossip, Ipam, IpamError, Start, MAX_DENIED, MAX_RECORDS, MAX_WANTS,
};
use weave_rs::core::ipam::consensus::MAX_NODES;
use weave_rs::core::ipam::ring::{Ring, MAX_TOKENS};
use weave_rs::core::wire::control::MAX_FRAME_LEN;
use weave_rs::core::wire::ipam as wire;
use weave_rs::core::PeerName;

const ME: PeerName = PeerName([2, 0, 0, 0, 0, 1]);
const FROM: PeerName = PeerName([2, 0, 0, 0, 0, 2]);
const THIRD: PeerName = PeerName([2, 0, 0, 0, 0, 3]);
const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = wire::parse(data) else {
        return;
    };
    let bytes = wire::emit(&g);
    assert_eq!(wire::parse(&bytes).as_ref(), Ok(&g));
    assert!(bytes.len() < MAX_FRAME_LEN, "{} bytes", bytes.len());

    let range = g.range;
    let seed = Start::Seed(vec![ME, FROM, THIRD]);
    // The peer's ring as it came: another cluster unless it guessed ours.
    drive(Ipam::new(ME, range, range, seed.clone()), &g);
    // The same tokens labelled with our cluster and size, so that they merge.
    let mut ours = Ipam::new(ME, range, range, seed);
    let ring = ours.ring();
    let relabelled = Ring::from_entries(
        ring.cluster(),
        ring.size(),
        g.ring.entries().filter(|&(t, _)| t < ring.size()),
    )
    .expect("tokens within the range, at most as many as parsed");
    let mut g2 = g.clone();
    g2.ring = relabelled;
    // An allocation already held before the gossip arrives.
    let _ = ours.allocate("before", None);
    drive(ours, &g2);
    // No ring yet: adopts the peer's, or takes part in its consensus.
    drive(
        Ipam::new(ME, range, range, Start::Consensus { quorum: 2 }),
        &g,
    );
    drive(Ipam::new(ME, range, range, Start::Observer), &g2);
});

fn drive(mut ipam: Ipam, g: &Gossip) {
    let before = ipam.gossip().clone();
    match ipam.merge(FROM, g) {
        Ok(_) => {}
        Err(IpamError::OtherCluster(p, _) | IpamError::OtherRange(p, _, _)) => {
            assert_eq!(p, FROM);
            assert_eq!(ipam.gossip(), &before, "a refused merge changed nothing");
        }
        Err(e) => panic!("merge: {e}"),
    }
    let reachable: BTreeSet<PeerName> = [FROM].into();
    ipam.think(&reachable, NOW_MS);
    check(&ipam);

    let subnet = ipam.default_subnet();
    match ipam.allocate("a", None) {
        Ok(Ok(addr)) => {
            assert!(subnet.contains(addr), "{addr} outside {subnet}");
            assert_eq!(ipam.holder(addr), Some("a"));
            let o = ipam.offsets().offset(addr).unwrap();
            assert_eq!(ipam.ring().owner(o), Some(ME), "{addr} not ours");
            assert_eq!(ipam.allocate("a", None), Ok(Ok(addr)), "idempotent");
        }
        Ok(Err(_)) => {}
        Err(e) => assert!(matches!(e, IpamError::Full(_)), "allocate: {e}"),
    }
    // Claim an address the peer asked for, else one in the middle.
    let size = ipam.ring().size();
    let o = g
        .records
        .values()
        .flat_map(|r| &r.wants)
        .map(|w| w.span.start())
        .next()
        .unwrap_or(size / 2)
        % size;
    if let Some(addr) = ipam.offsets().addr(o) {
        match ipam.claim("c", addr) {
            Ok(Ok(got)) => {
                assert_eq!(got, addr);
                assert_eq!(ipam.holder(addr), Some("c"));
                assert_eq!(ipam.ring().owner(o), Some(ME), "{addr} not ours");
            }
            Ok(Err(_)) => {}
            Err(e) => assert!(
                matches!(e, IpamError::Taken(..) | IpamError::TakenElsewhere(..)),
                "claim: {e}"
            ),
        }
    }
    ipam.think(&reachable, NOW_MS + 100);
    check(&ipam);
    // The peer dies and is removed; its gossip comes again, late.
    ipam.remove_peer(FROM).unwrap();
    let _ = ipam.merge(FROM, g);
    ipam.think(&BTreeSet::new(), NOW_MS + 200);
    let _ = ipam.take_conflicts();
    check(&ipam);
}

fn check(ipam: &Ipam) {
    let g = ipam.gossip();
    assert!(g.ring.tokens() <= MAX_TOKENS);
    assert!(g.records.len() <= MAX_RECORDS);
    for r in g.records.values() {
        assert!(r.wants.len() <= MAX_WANTS);
        assert!(r.denied.len() <= MAX_DENIED);
    }
    assert!(g.paxos.nodes().len() <= MAX_NODES);
    for c in g.paxos.nodes().values() {
        assert!(c.value.len() <= MAX_NODES);
    }
    // What we own is ours in the ring, and every allocation is unique.
    for s in ipam.space().owned() {
        assert_eq!(ipam.ring().owner(s.start()), Some(ipam.me()));
    }
    let mut seen = BTreeSet::new();
    for (_, addr) in ipam.allocations() {
        assert!(seen.insert(addr), "{addr} twice");
    }
    let bytes = wire::emit(g);
    assert!(bytes.len() < MAX_FRAME_LEN, "{} bytes", bytes.len());
    assert_eq!(wire::parse(&bytes).as_ref(), Ok(g));
}
