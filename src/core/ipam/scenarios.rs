//! Short stories a user would tell about IPAM, each with two or three
//! allocators exchanging gossip by hand: `merge` what a peer sent (through
//! the wire format, as the daemon does) and `think`. Where the mesh
//! simulation (`mesh_sim`) checks the invariants under random histories,
//! these check what each request answers, step by step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::allocator::{
    Gossip, Ipam, IpamError, Outcome, Record, Start, Waiting, Want, MAX_DENIED, MAX_RECORDS,
    MAX_WANTS,
};
use super::consensus::{Claims, Paxos, Proposal, MAX_NODES};
use super::ring::{Entry, Ring, RingError, MAX_TOKENS};
use super::space::Span;
use super::Offsets;
use crate::core::wire::control::MAX_FRAME_LEN;
use crate::core::wire::ipam as wire;
use crate::core::PeerName;

fn p(n: u8) -> PeerName {
    PeerName([2, 0, 0, 0, 0, n])
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn seeded(me: PeerName, range: &str, peers: &[PeerName]) -> Ipam {
    Ipam::new(me, net(range), net(range), Start::Seed(peers.to_vec()))
}

/// `from`'s gossip as it arrives at a peer: emitted and parsed again.
fn on_the_wire(from: &Ipam) -> Gossip {
    let bytes = wire::emit(from.gossip());
    assert!(bytes.len() < MAX_FRAME_LEN);
    wire::parse(&bytes).expect("our own gossip parses")
}

fn send(from: &Ipam, to: &mut Ipam) -> Result<bool, IpamError> {
    to.merge(from.me(), &on_the_wire(from))
}

/// Everyone but `me`.
fn others(peers: &[Ipam], me: PeerName) -> BTreeSet<PeerName> {
    peers.iter().map(Ipam::me).filter(|&n| n != me).collect()
}

/// Rounds of think-then-gossip among `peers`, all reachable from each
/// other, until nothing changes.
fn settle(peers: &mut [Ipam], now: &mut u64) {
    for _ in 0..50 {
        *now += 100;
        let mut changed = false;
        for i in 0..peers.len() {
            let reach = others(peers, peers[i].me());
            changed |= peers[i].think(&reach, *now);
        }
        for i in 0..peers.len() {
            let g = on_the_wire(&peers[i]);
            let from = peers[i].me();
            for (j, to) in peers.iter_mut().enumerate() {
                if j != i {
                    changed |= to.merge(from, &g).expect("one cluster");
                }
            }
        }
        if !changed {
            return;
        }
    }
    panic!("no quiet after 50 rounds");
}

fn addr(outcome: Outcome) -> IpAddr {
    match outcome {
        Ok(Ok(a)) => a,
        other => panic!("expected an address, got {other:?}"),
    }
}

/// What a claim of `a` (in 10.32.0.0/24, the range of every story that
/// claims) answers while `owner` is asked for it.
fn asked(owner: PeerName, a: IpAddr) -> Outcome {
    let o = Offsets::new(net("10.32.0.0/24")).offset(a).unwrap();
    Ok(Err(Waiting::Claim(owner, Span::one(o).unwrap())))
}

fn owner_of(ipam: &Ipam, a: IpAddr) -> Option<PeerName> {
    ipam.ring().owner(ipam.offsets().offset(a)?)
}

/// No address allocated on two peers, no offset in two peers' space, and
/// every ring the same.
fn assert_consistent(peers: &[Ipam]) {
    let mut held: BTreeMap<IpAddr, (PeerName, String)> = BTreeMap::new();
    for ipam in peers {
        for (id, a) in ipam.allocations() {
            if let Some((q, other)) = held.insert(a, (ipam.me(), id.to_string())) {
                panic!("{a} held by {other} on {q} and by {id} on {}", ipam.me());
            }
        }
    }
    let mut spans: Vec<(Span, PeerName)> = peers
        .iter()
        .flat_map(|i| i.space().owned().map(move |s| (s, i.me())))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].0.intersect(w[1].0).is_none(),
            "{} and {} both own {:?}",
            w[0].1,
            w[1].1,
            w[0].0.intersect(w[1].0)
        );
    }
    for ipam in peers {
        assert_eq!(ipam.ring(), peers[0].ring(), "rings differ");
    }
}

fn assert_within_caps(ipam: &Ipam) {
    let g = ipam.gossip();
    assert!(g.ring.tokens() <= MAX_TOKENS);
    assert!(g.records.len() <= MAX_RECORDS);
    for r in g.records.values() {
        assert!(r.wants.len() <= MAX_WANTS);
        assert!(r.denied.len() <= MAX_DENIED);
    }
    assert!(g.paxos.nodes().len() <= MAX_NODES);
    let bytes = wire::emit(g);
    assert!(bytes.len() < MAX_FRAME_LEN, "{} bytes", bytes.len());
    assert_eq!(wire::parse(&bytes).as_ref(), Ok(g));
}

#[test]
fn seeded_peers_allocate_disjoint_addresses_without_talking() {
    let (a_name, b_name) = (p(1), p(2));
    let mut a = seeded(a_name, "10.32.0.0/24", &[a_name, b_name]);
    let mut b = seeded(b_name, "10.32.0.0/24", &[b_name, a_name, b_name]);
    assert_eq!(a.ring(), b.ring(), "the same names make the same ring");
    let mut on_a = BTreeSet::new();
    let mut on_b = BTreeSet::new();
    for i in 0..10 {
        on_a.insert(addr(a.allocate(&format!("a{i}"), None)));
        on_b.insert(addr(b.allocate(&format!("b{i}"), None)));
    }
    assert_eq!(on_a.len(), 10);
    assert_eq!(on_b.len(), 10);
    assert!(on_a.is_disjoint(&on_b));
    assert_eq!(on_a.first(), Some(&ip("10.32.0.1")));
    assert_eq!(on_b.first(), Some(&ip("10.32.0.128")));
    for &x in on_a.iter().chain(&on_b) {
        assert!(net("10.32.0.0/24").contains(x));
    }
    // Each peer's addresses are its own in the other's ring too.
    assert!(on_a.iter().all(|&x| owner_of(&b, x) == Some(a_name)));
    assert!(on_b.iter().all(|&x| owner_of(&a, x) == Some(b_name)));
    assert_consistent(&[a, b]);
}

#[test]
fn consensus_waits_for_its_quorum_then_both_allocate() {
    let range = net("10.32.0.0/12");
    let quorum = Start::Consensus { quorum: 2 };
    let mut a = Ipam::new(p(1), range, range, quorum.clone());
    let b = Ipam::new(p(2), range, range, quorum);
    // Alone, a proposes and retries, but hears nobody: no ring.
    assert_eq!(a.allocate("c1", None), Ok(Err(Waiting::Ring)));
    let alone = BTreeSet::new();
    for t in 1..=10 {
        a.think(&alone, t * 1_000);
        assert_eq!(a.allocate("c1", None), Ok(Err(Waiting::Ring)));
    }
    assert!(a.ring().is_empty());
    assert_eq!(a.paxos().heard(), vec![p(1)]);
    // b comes up, hears a and promises; a hears b.
    let mut peers = [a, b];
    let g = on_the_wire(&peers[0]);
    peers[1].merge(p(1), &g).unwrap();
    assert!(peers[1].think(&[p(1)].into(), 20_000));
    assert_eq!(peers[1].paxos().heard(), vec![p(1), p(2)]);
    let g = on_the_wire(&peers[1]);
    peers[0].merge(p(2), &g).unwrap();
    assert_eq!(peers[0].paxos().heard(), vec![p(1), p(2)]);
    let mut now = 20_000;
    settle(&mut peers, &mut now);
    let [mut a, mut b] = peers;
    let x = addr(a.allocate("c1", None));
    let y = addr(b.allocate("c2", None));
    assert_ne!(x, y);
    assert!(range.contains(x) && range.contains(y));
    assert_eq!(owner_of(&a, x), Some(p(1)));
    assert_eq!(owner_of(&a, y), Some(p(2)));
    let owners: BTreeSet<PeerName> = a.ring().ranges().map(|(_, e)| e.owner).collect();
    assert_eq!(owners, [p(1), p(2)].into());
    // The consensus is over: its claims are no longer gossiped.
    assert!(a.paxos().nodes().is_empty() && b.paxos().nodes().is_empty());
    assert_consistent(&[a, b]);
}

#[test]
fn an_observer_gets_the_ring_from_a_peer_and_space_by_donation() {
    let range = net("10.32.0.0/24");
    let a = seeded(p(1), "10.32.0.0/24", &[p(1)]);
    let mut o = Ipam::new(p(3), range, range, Start::Observer);
    assert_eq!(o.allocate("c", None), Ok(Err(Waiting::Ring)));
    o.think(&BTreeSet::new(), 1_000);
    assert!(o.ring().is_empty(), "an observer never makes a ring");
    assert_eq!(o.space().owned_len(), 0);
    send(&a, &mut o).unwrap();
    assert_eq!(o.ring(), a.ring());
    assert!(o.ring().owned_by(p(3)).is_empty());
    let hosts = o.offsets().hosts_of(range).unwrap();
    assert_eq!(o.allocate("c", None), Ok(Err(Waiting::Space(hosts))));
    let mut peers = [a, o];
    let mut now = 2_000;
    settle(&mut peers, &mut now);
    let [mut a, mut o] = peers;
    let x = addr(o.allocate("c", None));
    assert_eq!(owner_of(&o, x), Some(p(3)));
    assert_eq!(owner_of(&a, x), Some(p(3)));
    let y = addr(a.allocate("d", None));
    assert_ne!(x, y);
    assert_consistent(&[a, o]);
}

/// a, b and c seeded over 10.32.0.0/24: a owns .0-.84, b .85-.169, c the
/// rest.
fn three(now: &mut u64) -> Vec<Ipam> {
    let names = [p(1), p(2), p(3)];
    let mut peers: Vec<Ipam> = names
        .iter()
        .map(|&n| seeded(n, "10.32.0.0/24", &names))
        .collect();
    settle(&mut peers, now);
    peers
}

#[test]
fn a_peer_out_of_space_in_a_small_subnet_gets_some_from_another() {
    let mut now = 0;
    let mut peers = three(&mut now);
    // Hosts .81-.87: a owns .81-.84, b .85-.87.
    let subnet = net("10.32.0.80/29");
    let a = &mut peers[0];
    let mine: Vec<IpAddr> = (0..4)
        .map(|i| addr(a.allocate(&format!("c{i}"), Some(subnet))))
        .collect();
    assert_eq!(mine[0], ip("10.32.0.81"));
    assert_eq!(mine[3], ip("10.32.0.84"));
    let hosts = a.offsets().hosts_of(subnet).unwrap();
    assert_eq!(
        a.allocate("c4", Some(subnet)),
        Ok(Err(Waiting::Space(hosts)))
    );
    settle(&mut peers, &mut now);
    let x = addr(peers[0].allocate("c4", Some(subnet)));
    assert!(subnet.contains(x) && x >= ip("10.32.0.85"), "{x}");
    for ipam in &peers {
        assert_eq!(owner_of(ipam, x), Some(p(1)), "the ring moved it");
    }
    // b keeps what it did not give, and allocates there.
    let y = addr(peers[1].allocate("d", Some(subnet)));
    assert!(subnet.contains(y) && y != x);
    assert_consistent(&peers);
}

#[test]
fn a_subnet_outside_a_smaller_default_subnet_is_asked_for_not_refused() {
    // Found by the Docker plugin's tests: with the default subnet a part of
    // the range, owners' free counts say nothing of other subnets, so a
    // peer owning nothing there must ask, not call the subnet full.
    let names = [p(1), p(2)];
    let mut now = 0;
    let mut peers: Vec<Ipam> = names
        .iter()
        .map(|&n| {
            Ipam::new(
                n,
                net("10.32.0.0/12"),
                net("10.32.0.0/16"),
                Start::Seed(names.to_vec()),
            )
        })
        .collect();
    settle(&mut peers, &mut now);
    let subnet = net("10.33.1.0/24");
    let owner = owner_of(&peers[0], ip("10.33.1.1")).unwrap();
    let (asker, giver) = if owner == p(1) { (1, 0) } else { (0, 1) };
    let first = addr(peers[giver].allocate("gw1", Some(subnet)));
    assert_eq!(
        peers[asker]
            .allocate("gw2", Some(subnet))
            .map(|o| o.is_err()),
        Ok(true),
        "waits for space"
    );
    settle(&mut peers, &mut now);
    let second = addr(peers[asker].allocate("gw2", Some(subnet)));
    assert!(subnet.contains(second) && second != first, "{second}");
    assert_consistent(&peers);
}

#[test]
fn a_subnet_outside_the_range_is_refused() {
    let mut a = seeded(p(1), "10.32.0.0/24", &[p(1)]);
    let range = a.range();
    for s in ["10.48.0.0/24", "10.32.0.0/16", "fd00::/64"] {
        assert_eq!(
            a.allocate("c", Some(net(s))),
            Err(IpamError::OutsideRange(net(s), range))
        );
    }
    assert_eq!(
        a.claim("c", ip("10.32.1.1")),
        Err(IpamError::AddrOutsideRange(ip("10.32.1.1"), range))
    );
    assert_eq!(a.allocations().count(), 0);
}

#[test]
fn a_full_range_is_refused_not_waited_for() {
    // 10.32.0.0/29: six hosts, all on one peer.
    let mut a = seeded(p(1), "10.32.0.0/29", &[p(1)]);
    for i in 0..6 {
        addr(a.allocate(&format!("c{i}"), None));
    }
    assert_eq!(
        a.allocate("c6", None),
        Err(IpamError::Full(net("10.32.0.0/29")))
    );
    // Freeing one makes room again.
    let freed = a.release("c2");
    assert_eq!(freed, vec![ip("10.32.0.3")]);
    assert_eq!(a.allocate("c6", None), Ok(Ok(ip("10.32.0.3"))));
}

#[test]
fn claims_move_free_addresses_and_refuse_taken_ones() {
    let mut a = seeded(p(1), "10.32.0.0/24", &[p(1), p(2)]);
    let mut b = seeded(p(2), "10.32.0.0/24", &[p(1), p(2)]);
    let mut now = 0;
    // Same id, same address; another id, refused locally.
    let x = addr(a.allocate("x", None));
    assert_eq!(a.allocate("x", None), Ok(Ok(x)), "allocate is idempotent");
    assert_eq!(a.lookup("x"), vec![x]);
    assert_eq!(a.claim("x", x), Ok(Ok(x)), "claiming its own is idempotent");
    assert_eq!(a.claim("y", x), Err(IpamError::Taken(x, "x".to_string())));
    // A free address of b's: asked for, given, then ours.
    let free = ip("10.32.0.200");
    assert_eq!(a.claim("c1", free), asked(p(2), free));
    // An address b has allocated: asked for, refused.
    let used = addr(b.allocate("b1", None));
    assert_eq!(used, ip("10.32.0.128"));
    assert_eq!(a.claim("c2", used), asked(p(2), used));
    let mut peers = [a, b];
    settle(&mut peers, &mut now);
    let [mut a, mut b] = peers;
    assert_eq!(a.claim("c1", free), Ok(Ok(free)));
    assert_eq!(a.claim("c1", free), Ok(Ok(free)), "claiming again");
    assert_eq!(owner_of(&a, free), Some(p(1)));
    assert_eq!(owner_of(&b, free), Some(p(1)), "donated through the ring");
    assert_eq!(
        a.claim("c2", used),
        Err(IpamError::TakenElsewhere(used, p(2)))
    );
    assert_eq!(b.holder(used), Some("b1"));
    assert_eq!(a.holder(used), None);
    // b may not hand out what it gave away.
    assert_eq!(b.claim("b2", free), asked(p(1), free));
    assert_consistent(&[a, b]);
}

#[test]
fn a_peer_of_another_cluster_is_refused_and_changes_nothing() {
    let mut a = seeded(p(1), "10.32.0.0/24", &[p(1), p(2)]);
    addr(a.allocate("c", None));
    let before = a.gossip().clone();
    let other_names = seeded(p(9), "10.32.0.0/24", &[p(9), p(1)]);
    assert!(matches!(
        send(&other_names, &mut a),
        Err(IpamError::OtherCluster(n, RingError::OtherCluster { .. })) if n == p(9)
    ));
    let other_range = seeded(p(9), "10.33.0.0/24", &[p(1), p(2)]);
    assert_eq!(
        send(&other_range, &mut a),
        Err(IpamError::OtherRange(
            p(9),
            net("10.33.0.0/24"),
            net("10.32.0.0/24")
        ))
    );
    // Same range and names but a bigger range: another cluster too.
    let wider = seeded(p(9), "10.32.0.0/23", &[p(1), p(2)]);
    assert!(send(&wider, &mut a).is_err());
    // A ring made by consensus is of no seeded cluster.
    let range = net("10.32.0.0/24");
    let mut c1 = Ipam::new(p(1), range, range, Start::Consensus { quorum: 1 });
    assert_eq!(c1.allocate("c", None), Ok(Err(Waiting::Ring)));
    c1.think(&BTreeSet::new(), 0);
    assert!(!c1.ring().is_empty());
    assert!(matches!(
        send(&c1, &mut a),
        Err(IpamError::OtherCluster(..))
    ));
    assert_eq!(a.gossip(), &before, "nothing of theirs was taken");
    assert_eq!(a.allocate("d", None), Ok(Ok(ip("10.32.0.2"))));
}

/// `three`, then c allocates two addresses and dies.
fn three_then_c_dies() -> (Vec<Ipam>, Ipam, u64) {
    let mut now = 0;
    let mut peers = three(&mut now);
    assert_eq!(addr(peers[2].allocate("old1", None)), ip("10.32.0.170"));
    assert_eq!(addr(peers[2].allocate("old2", None)), ip("10.32.0.171"));
    settle(&mut peers, &mut now);
    let c = peers.pop().unwrap();
    (peers, c, now)
}

#[test]
fn two_peers_removing_the_same_dead_one_settle_on_one_owner() {
    let (mut peers, c, mut now) = three_then_c_dies();
    let theirs = c.ring().owned_by(p(3));
    assert_eq!(theirs, vec![Span::new(170, 256).unwrap()]);
    assert_eq!(peers[0].remove_peer(p(3)), Ok(86));
    assert_eq!(peers[1].remove_peer(p(3)), Ok(86));
    assert_eq!(peers[0].remove_peer(p(1)), Err(IpamError::RemoveSelf(p(1))));
    // Before they talk: both think they own it, neither uses it.
    for _ in 0..3 {
        now += 100;
        for i in 0..2 {
            let reach = others(&peers, peers[i].me());
            peers[i].think(&reach, now);
        }
    }
    for ipam in &peers {
        assert_eq!(ipam.ring().owned_by(p(3)), vec![]);
        assert_eq!(ipam.quarantined(), theirs.as_slice());
        assert!((170..256).all(|o| !ipam.space().owns(o)));
        // A request there gets none of it; one in the default subnet
        // goes on in the peer's own space.
        let mut try_it = ipam.clone();
        let there = try_it.allocate("q", Some(net("10.32.0.192/26")));
        assert!(!matches!(there, Ok(Ok(_))), "{there:?}");
        let x = addr(try_it.allocate("own", None));
        assert!(try_it.offsets().offset(x).unwrap() < 170);
    }
    settle(&mut peers, &mut now);
    // The greater name won; the loser gave up its claim.
    assert_consistent(&peers);
    for ipam in &peers {
        assert!(ipam.quarantined().is_empty());
        assert!((170..256).all(|o| ipam.ring().owner(o) == Some(p(2))));
    }
    assert!((170..256).all(|o| peers[1].space().owns(o)));
    assert!((170..256).all(|o| !peers[0].space().owns(o)));
    let subnet = net("10.32.0.192/26");
    let x = addr(peers[1].allocate("new", Some(subnet)));
    assert!(subnet.contains(x));
    assert_consistent(&peers);
}

#[test]
fn a_removed_peer_rejoins_and_loses_only_what_was_given_away() {
    let (mut peers, c, mut now) = three_then_c_dies();
    let old_ring = c.ring().clone();
    let old: Vec<(String, IpAddr)> = c.allocations().map(|(id, a)| (id.to_string(), a)).collect();
    peers[0].remove_peer(p(3)).unwrap();
    peers[1].remove_peer(p(3)).unwrap();
    settle(&mut peers, &mut now);
    // b, the new owner, gives 10.32.0.170 to someone else.
    let given = ip("10.32.0.170");
    assert_eq!(peers[1].claim("new1", given), Ok(Ok(given)));
    // c comes back with its state file: allocations and old ring.
    let mut c = seeded(p(3), "10.32.0.0/24", &[p(1), p(2), p(3)]);
    c.restore_ring(old_ring).unwrap();
    for (id, a) in &old {
        c.restore(id, *a).unwrap();
    }
    peers.push(c);
    settle(&mut peers, &mut now);
    let c = &mut peers[2];
    assert_eq!(c.take_conflicts(), vec![("old1".to_string(), given)]);
    assert!(c.lookup("old1").is_empty());
    let kept = ip("10.32.0.171");
    assert_eq!(c.lookup("old2"), vec![kept]);
    assert_eq!(owner_of(c, kept), Some(p(3)), "given back to c");
    assert_eq!(peers[1].holder(given), Some("new1"));
    assert_eq!(owner_of(&peers[0], kept), Some(p(3)));
    assert_consistent(&peers);
}

#[test]
fn hostile_gossip_is_merged_without_panic_and_within_caps() {
    let me = p(1);
    let evil = p(66);
    let mut a = seeded(me, "10.32.0.0/24", &[me, p(2)]);
    addr(a.allocate("mine", None));
    let cluster = a.ring().cluster();
    let size = a.ring().size();
    let range = a.range();
    let huge = Entry {
        version: u64::MAX,
        owner: evil,
        free: u128::MAX,
    };
    let wants: Vec<Want> = (0..100)
        .map(|i| Want {
            id: i,
            span: Span::new(0, u128::MAX).unwrap(),
        })
        .collect();
    let denied: Vec<(PeerName, u64)> = (0..100).map(|i| (me, i)).collect();
    let mut records: BTreeMap<PeerName, Record> = (0..2 * MAX_RECORDS)
        .map(|i| {
            let n = PeerName([3, 0, 0, 0, (i >> 8) as u8, i as u8]);
            let r = Record {
                seq: u64::MAX,
                digest: 0,
                wants: wants.clone(),
                denied: denied.clone(),
            };
            (n, r)
        })
        .collect();
    // Our own record from "a past life", outranking everything.
    records.insert(
        me,
        Record {
            seq: u64::MAX,
            digest: 1,
            wants: wants.clone(),
            denied: denied.clone(),
        },
    );
    let mut paxos = Paxos::new();
    for i in 0..=255u8 {
        paxos.insert(
            PeerName([4, 0, 0, 0, 0, i]),
            Claims {
                promise: Proposal {
                    round: u64::MAX,
                    proposer: evil,
                },
                accepted: Proposal {
                    round: u64::MAX,
                    proposer: evil,
                },
                value: vec![evil; 1000],
            },
        );
    }
    let rings = [
        // Every token taken, at the highest version, by the attacker.
        Ring::from_entries(cluster, size, (0..size).map(|t| (t, huge))).unwrap(),
        // One token claiming all of our space for us, free beyond belief.
        Ring::from_entries(cluster, size, [(0, Entry { owner: me, ..huge })]).unwrap(),
        // The most tokens a ring may have, in a larger range's cluster.
        Ring::from_entries(
            cluster,
            1 << 20,
            (0..MAX_TOKENS as u128).map(|t| (t * 7, huge)),
        )
        .unwrap(),
        Ring::new(cluster, size),
    ];
    for ring in rings {
        let g = Gossip {
            range,
            ring,
            paxos: paxos.clone(),
            records: records.clone(),
        };
        let mut x = a.clone();
        let _ = x.merge(evil, &g);
        assert_within_caps(&x);
        let reach: BTreeSet<PeerName> = [evil, p(2)].into();
        x.think(&reach, 1_000);
        let _ = x.allocate("c", None);
        let _ = x.claim("d", ip("10.32.0.77"));
        let _ = x.remove_peer(evil);
        x.think(&reach, 2_000);
        let _ = x.take_conflicts();
        assert_within_caps(&x);
        // Whatever it did, it never holds one address twice.
        let mut seen = BTreeSet::new();
        assert!(x.allocations().all(|(_, a)| seen.insert(a)));
        // And it can still talk with an honest peer.
        let mut b = seeded(p(2), "10.32.0.0/24", &[me, p(2)]);
        let _ = send(&x, &mut b);
        assert_within_caps(&b);
    }
    // A consensus peer merging hostile claims stays within caps too.
    let mut c = Ipam::new(me, range, range, Start::Consensus { quorum: 2 });
    let g = Gossip {
        range,
        ring: Ring::new(0, size),
        paxos,
        records,
    };
    c.merge(evil, &g).unwrap();
    assert_eq!(c.allocate("c", None), Ok(Err(Waiting::Ring)));
    c.think(&[evil].into(), 0);
    assert_within_caps(&c);
}
// src/core/ipam/scenarios.rs (they use its helpers: p, net, ip, seeded,
// settle, addr, asked, others, three, three_then_c_dies,
// assert_consistent) and run `cargo test --lib ipam::scenarios`.

#[test]
fn a_full_range_of_two_peers_is_refused() {
    // 10.32.0.0/29: a owns .0-.3 (hosts .1-.3), b .4-.7 (hosts .4-.6).
    let mut peers = vec![
        seeded(p(1), "10.32.0.0/29", &[p(1), p(2)]),
        seeded(p(2), "10.32.0.0/29", &[p(1), p(2)]),
    ];
    for i in 0..3 {
        addr(peers[0].allocate(&format!("a{i}"), None));
        addr(peers[1].allocate(&format!("b{i}"), None));
    }
    let mut now = 0;
    settle(&mut peers, &mut now);
    let full = Err(IpamError::Full(net("10.32.0.0/29")));
    assert_eq!(peers[0].allocate("a3", None), full);
    assert_eq!(peers[1].allocate("b3", None), full);
}

#[test]
fn a_donation_comes_from_the_peer_with_free_space_in_the_subnet() {
    let mut now = 0;
    let mut peers = three(&mut now);
    // Hosts .161-.190: b owns .161-.169, c .170-.190, and c fills its part.
    let subnet = net("10.32.0.160/27");
    for i in 0..21 {
        addr(peers[2].allocate(&format!("c{i}"), Some(subnet)));
    }
    settle(&mut peers, &mut now);
    let hosts = peers[0].offsets().hosts_of(subnet).unwrap();
    assert_eq!(
        peers[0].allocate("a", Some(subnet)),
        Ok(Err(Waiting::Space(hosts)))
    );
    // Ten seconds of rounds (the daemon waits 30 s for an answer).
    for _ in 0..100 {
        settle(&mut peers, &mut now);
    }
    // b has nine free addresses there: one of them should come to a.
    let x = addr(peers[0].allocate("a", Some(subnet)));
    assert!(subnet.contains(x));
    assert_consistent(&peers);
}

/// a asks b for two addresses (claims: want ids 1 and 2); b gives the
/// first and refuses the second. Then a restarts from its state file.
fn a_restarts_after_two_claims() -> (Vec<Ipam>, u64) {
    let mut peers = vec![
        seeded(p(1), "10.32.0.0/24", &[p(1), p(2)]),
        seeded(p(2), "10.32.0.0/24", &[p(1), p(2)]),
    ];
    let mut now = 0;
    let used = addr(peers[1].allocate("b1", None));
    assert_eq!(
        peers[0].claim("c1", ip("10.32.0.200")),
        asked(p(2), ip("10.32.0.200"))
    );
    assert_eq!(peers[0].claim("c2", used), asked(p(2), used));
    settle(&mut peers, &mut now);
    assert_eq!(
        peers[0].claim("c1", ip("10.32.0.200")),
        Ok(Ok(ip("10.32.0.200")))
    );
    assert_eq!(
        peers[0].claim("c2", used),
        Err(IpamError::TakenElsewhere(used, p(2)))
    );
    let old = peers.remove(0);
    let mut a = seeded(p(1), "10.32.0.0/24", &[p(1), p(2)]);
    a.restore_ring(old.ring().clone()).unwrap();
    a.restore("c1", ip("10.32.0.200")).unwrap();
    peers.insert(0, a);
    settle(&mut peers, &mut now);
    (peers, now)
}

#[test]
fn after_a_restart_a_claim_of_a_free_address_is_not_refused() {
    let (mut peers, mut now) = a_restarts_after_two_claims();
    // a's first two claims since the restart reuse want ids 1 and 2, and
    // b's record (which a has) still refuses (a, 2) from the past life.
    let (x, y) = (ip("10.32.0.201"), ip("10.32.0.202"));
    assert_eq!(peers[0].claim("d1", x), asked(p(2), x));
    assert_eq!(peers[0].claim("d2", y), asked(p(2), y));
    // The daemon asks again before b has answered.
    assert_eq!(
        peers[0].claim("d2", y),
        asked(p(2), y),
        "b never refused it"
    );
    settle(&mut peers, &mut now);
    assert_eq!(peers[0].claim("d1", x), Ok(Ok(x)));
    assert_eq!(peers[0].claim("d2", y), Ok(Ok(y)));
}

#[test]
fn during_an_unsettled_take_over_a_request_there_waits() {
    let (mut peers, _c, mut now) = three_then_c_dies();
    peers[0].remove_peer(p(3)).unwrap();
    peers[1].remove_peer(p(3)).unwrap();
    now += 100;
    for i in 0..2 {
        let reach = others(&peers, peers[i].me());
        peers[i].think(&reach, now);
    }
    // 10.32.0.192/26 lies in c's old range, quarantined on both: nothing
    // of it is allocated, so the request must wait, not fail as full.
    let subnet = net("10.32.0.192/26");
    for ipam in &mut peers {
        let there = ipam.allocate("q", Some(subnet));
        assert!(matches!(there, Ok(Err(_))), "{there:?}");
    }
    settle(&mut peers, &mut now);
    let x = addr(peers[1].allocate("q", Some(subnet)));
    assert!(subnet.contains(x));
}
