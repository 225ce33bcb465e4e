//! An in-memory mesh of forwarding cores, for tests.
//!
//! Every peer has a `Router` whose routes come from its own `Topology`,
//! merged from one shared list of entries (as gossip would leave it), and a
//! "bridge" with hosts (MACs). A frame a host sends goes through
//! `frame_from_tap`; the resulting datagrams are built as the daemon's TAP
//! pump builds them (`Header::emit` + `push_frame`) and put "on the wire";
//! `run` delivers them to the neighbours' `datagram`, injects frames into
//! bridges and relays as told, until the wire is empty. Nothing here sleeps
//! or does I/O: time is an `Instant` the test moves on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::router::{DatagramDecision, DropReason, Relay, Router, TapDecision, MAC_TTL};
use super::routes::Routes;
use super::test_fixtures::{entry, name, NOW_MS};
use super::topology::{PeerEntry, Topology};
use super::wire::sleeve::{self, Header, Kind};
use super::PeerName;

type Mac = [u8; 6];

const BROADCAST: Mac = [0xff; 6];
/// A local experimental EtherType: frames the simulation made.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
/// Datagrams delivered by one `run` before it declares a loop.
const MAX_STEPS: usize = 100_000;

/// Host `k` initially attached to peer `p`.
fn host(p: u8, k: u8) -> Mac {
    [0x0a, 0x58, 0, 0, p, k]
}

/// A frame from `src` to `dst` carrying the simulation's frame `id`.
fn frame(dst: Mac, src: Mac, id: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(&id.to_be_bytes());
    f.resize(60, 0);
    f
}

fn id_of(frame: &[u8]) -> u32 {
    assert_eq!(frame.get(12..14), Some(&ETHERTYPE[..]), "not our frame");
    let b: [u8; 4] = frame[14..18].try_into().unwrap();
    u32::from_be_bytes(b)
}

/// What `frame_from_tap` decided, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sent {
    Dropped(DropReason),
    Unicast { dst: PeerName, next_hop: PeerName },
    Broadcast(Vec<PeerName>),
}

/// A frame a bridge got from its TAP.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Injected {
    id: u32,
    dst: Mac,
    origin: PeerName,
    /// The datagram's hop count on arrival (relays so far).
    hops: u8,
}

struct Node {
    router: Router,
    hosts: BTreeSet<Mac>,
    bridge: Vec<Injected>,
}

struct InFlight {
    from: PeerName,
    to: PeerName,
    bytes: Vec<u8>,
}

struct Mesh {
    nodes: BTreeMap<PeerName, Node>,
    /// Both directions of every edge.
    links: BTreeSet<(PeerName, PeerName)>,
    wire: VecDeque<InFlight>,
    now: Instant,
    next_id: u32,
    /// Delivery order: `None` is first in, first out; otherwise the state of
    /// a generator picking which datagram in flight arrives next.
    shuffle: Option<u64>,
    /// Datagrams put on the wire (sent or relayed), ever.
    transmissions: usize,
    /// Datagrams a router dropped: (where, why).
    drops: Vec<(PeerName, DropReason)>,
}

impl Mesh {
    /// Peers `peers`, joined by the symmetric `edges`, each with no host.
    fn new(peers: &[u8], edges: &[(u8, u8)]) -> Mesh {
        let mut m = Mesh {
            nodes: BTreeMap::new(),
            links: BTreeSet::new(),
            wire: VecDeque::new(),
            now: Instant::now(),
            next_id: 0,
            shuffle: None,
            transmissions: 0,
            drops: Vec::new(),
        };
        for &p in peers {
            m.nodes.insert(
                name(p),
                Node {
                    router: Router::new(name(p), Routes::default()),
                    hosts: BTreeSet::new(),
                    bridge: Vec::new(),
                },
            );
        }
        m.rewire(edges);
        m
    }

    /// Replaces the mesh's edges and gives every router the routes its own
    /// topology yields, from the one shared list of entries.
    fn rewire(&mut self, edges: &[(u8, u8)]) {
        let peers: Vec<u8> = self.nodes.keys().map(|n| n.0[5]).collect();
        let entries: Vec<PeerEntry> = peers.iter().map(|&p| entry(p, edges)).collect();
        for e in &entries {
            let mut t = Topology::new(e.clone());
            let others = entries.iter().filter(|o| o.name != e.name).cloned();
            t.merge(others.collect(), NOW_MS);
            let node = self.nodes.get_mut(&e.name).unwrap();
            node.router.set_routes(Routes::compute(&t));
        }
        self.links = edges
            .iter()
            .flat_map(|&(a, b)| [(name(a), name(b)), (name(b), name(a))])
            .filter(|(a, b)| a != b)
            .collect();
    }

    fn node(&self, p: u8) -> &Node {
        &self.nodes[&name(p)]
    }

    fn attach(&mut self, p: u8, mac: Mac) {
        for n in self.nodes.values_mut() {
            n.hosts.remove(&mac);
        }
        self.nodes.get_mut(&name(p)).unwrap().hosts.insert(mac);
    }

    /// The peer whose bridge `mac` is on.
    fn home(&self, mac: Mac) -> PeerName {
        let mut at = self.nodes.iter().filter(|(_, n)| n.hosts.contains(&mac));
        let (p, _) = at.next().unwrap_or_else(|| panic!("{mac:02x?} is nowhere"));
        *p
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn put_on_wire(&mut self, from: PeerName, to: PeerName, bytes: Vec<u8>) {
        assert!(
            self.links.contains(&(from, to)),
            "{from} sends to {to}, which is not its neighbour"
        );
        self.transmissions += 1;
        self.wire.push_back(InFlight { from, to, bytes });
    }

    /// Host `src` sends a frame to `dst` through its bridge's TAP (as the
    /// daemon's TAP pump does); returns the frame's id and what the router
    /// decided. The datagrams are only put on the wire: `run` delivers them.
    fn send(&mut self, src: Mac, dst: Mac) -> (u32, Sent) {
        let at = self.home(src);
        let id = self.next_id;
        self.next_id += 1;
        let f = frame(dst, src, id);
        let now = self.now;
        let router = &mut self.nodes.get_mut(&at).unwrap().router;
        let sent = match router.frame_from_tap(&f, now) {
            TapDecision::Drop(r) => Sent::Dropped(r),
            TapDecision::Unicast { dst, next_hop } => Sent::Unicast { dst, next_hop },
            TapDecision::Broadcast { next_hops } => Sent::Broadcast(next_hops.to_vec()),
        };
        let (dst_peer, hops) = match &sent {
            Sent::Dropped(_) => return (id, sent),
            Sent::Unicast { dst, next_hop } => (*dst, vec![*next_hop]),
            Sent::Broadcast(hops) => (PeerName::NONE, hops.clone()),
        };
        let mut datagram = Vec::new();
        Header {
            kind: Kind::Frames,
            hops: 0,
            src: at,
            dst: dst_peer,
        }
        .emit(&mut datagram);
        sleeve::push_frame(&mut datagram, &f);
        for hop in hops {
            self.put_on_wire(at, hop, datagram.clone());
        }
        (id, sent)
    }

    fn next_in_flight(&mut self) -> Option<InFlight> {
        match &mut self.shuffle {
            None => self.wire.pop_front(),
            Some(state) => {
                if self.wire.is_empty() {
                    return None;
                }
                // 64-bit LCG (Knuth's MMIX constants); high bits for the pick.
                *state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let i = ((*state >> 33) as usize) % self.wire.len();
                self.wire.swap_remove_back(i)
            }
        }
    }

    /// Delivers datagrams until none is in flight; returns how many.
    fn run(&mut self) -> usize {
        let mut steps = 0;
        while let Some(InFlight {
            from,
            to,
            mut bytes,
        }) = self.next_in_flight()
        {
            steps += 1;
            assert!(steps <= MAX_STEPS, "datagrams loop");
            let hops_in = Header::parse(&bytes).map_or(0, |(h, _)| h.hops);
            let now = self.now;
            let node = self.nodes.get_mut(&to).unwrap();
            let (origin, inject, relay) = match node.router.datagram(&mut bytes, now) {
                DatagramDecision::Drop(r) => {
                    self.drops.push((to, r));
                    continue;
                }
                DatagramDecision::Heartbeat { .. } => continue,
                DatagramDecision::Frames {
                    origin,
                    inject,
                    relay,
                } => {
                    let relay = match relay {
                        Relay::None => vec![],
                        Relay::To(p) => vec![p],
                        Relay::Many(ps) => ps.to_vec(),
                    };
                    (origin, inject, relay)
                }
            };
            if inject {
                let payload = &bytes[sleeve::HEADER_LEN..];
                for f in sleeve::frames(payload) {
                    let f = f.unwrap();
                    node.bridge.push(Injected {
                        id: id_of(f),
                        dst: f[..6].try_into().unwrap(),
                        origin,
                        hops: hops_in,
                    });
                }
            }
            if !relay.is_empty() {
                let hops_out = Header::parse(&bytes).unwrap().0.hops;
                assert_eq!(hops_out, hops_in + 1, "a relay raises the hop count");
            }
            for p in relay {
                // The daemon never sends a datagram back where it came
                // from; in a settled mesh no route ever asks it to.
                assert_ne!(p, from, "{to} relays back to {from}");
                self.put_on_wire(to, p, bytes.clone());
            }
        }
        steps
    }

    /// How often each peer's bridge got frame `id` (peers that got it).
    fn deliveries(&self, id: u32) -> BTreeMap<PeerName, usize> {
        let mut got = BTreeMap::new();
        for (p, n) in &self.nodes {
            let c = n.bridge.iter().filter(|i| i.id == id).count();
            if c > 0 {
                got.insert(*p, c);
            }
        }
        got
    }

    /// The one delivery of `id`, where it happened and with what hop count.
    fn delivered_once(&self, id: u32) -> (PeerName, Injected) {
        let mut all = self
            .nodes
            .iter()
            .flat_map(|(p, n)| n.bridge.iter().filter(|i| i.id == id).map(|i| (*p, i)));
        let (p, i) = all.next().unwrap_or_else(|| panic!("frame {id} lost"));
        assert!(all.next().is_none(), "frame {id} delivered twice");
        (p, i.clone())
    }

    /// Shortest path lengths (in edges) from `from`.
    fn distances(&self, from: PeerName) -> BTreeMap<PeerName, u8> {
        let mut dist = BTreeMap::from([(from, 0u8)]);
        let mut queue = VecDeque::from([from]);
        while let Some(p) = queue.pop_front() {
            let d = dist[&p];
            for &(a, b) in &self.links {
                if a == p && !dist.contains_key(&b) {
                    dist.insert(b, d + 1);
                    queue.push_back(b);
                }
            }
        }
        dist
    }

    fn stats(&self, p: u8) -> &super::router::Stats {
        &self.node(p).router.stats
    }

    /// Every host sends a broadcast (an ARP request, say); each must reach
    /// every other peer's bridge exactly once, over a spanning tree, and
    /// never come back to its own.
    fn check_broadcasts(&mut self) {
        let hosts: Vec<Mac> = self.nodes.values().flat_map(|n| n.hosts.clone()).collect();
        let others = self.nodes.len() - 1;
        for h in hosts {
            let at = self.home(h);
            let before = self.transmissions;
            let (id, sent) = self.send(h, BROADCAST);
            assert!(matches!(sent, Sent::Broadcast(_)), "{sent:?}");
            self.run();
            let want: BTreeMap<PeerName, usize> = self
                .nodes
                .keys()
                .filter(|p| **p != at)
                .map(|p| (*p, 1))
                .collect();
            assert_eq!(self.deliveries(id), want, "broadcast from {at}");
            assert_eq!(
                self.transmissions - before,
                others,
                "a broadcast from {at} crosses each tree edge once"
            );
            // The hop count on arrival is the depth in the origin's tree,
            // which is a BFS tree: the shortest distance, less one.
            let dist = self.distances(at);
            for (p, n) in &self.nodes {
                for i in n.bridge.iter().filter(|i| i.id == id) {
                    assert_eq!(i.origin, at);
                    assert_eq!(i.dst, BROADCAST);
                    assert_eq!(i.hops + 1, dist[p], "broadcast from {at} at {p}");
                }
            }
        }
        assert_eq!(self.drops, vec![]);
    }

    /// Every host sends one frame to every host on another peer; once all
    /// MACs are learned, each goes only where its destination lives, once,
    /// along a shortest path.
    fn check_unicasts(&mut self) {
        let hosts: Vec<Mac> = self.nodes.values().flat_map(|n| n.hosts.clone()).collect();
        for &src in &hosts {
            for &dst in &hosts {
                let (from, to) = (self.home(src), self.home(dst));
                if from == to {
                    continue;
                }
                let before = self.transmissions;
                let (id, sent) = self.send(src, dst);
                let Sent::Unicast { dst: peer, .. } = sent else {
                    panic!("{src:02x?} -> {dst:02x?} from {from}: {sent:?}");
                };
                assert_eq!(peer, to);
                self.run();
                let (at, got) = self.delivered_once(id);
                assert_eq!(at, to);
                assert_eq!((got.origin, got.dst), (from, dst));
                let d = self.distances(from)[&to];
                assert_eq!(got.hops + 1, d, "{from} -> {to}");
                assert_eq!(self.transmissions - before, usize::from(d));
            }
        }
        assert_eq!(self.drops, vec![]);
    }
}

fn full_mesh(n: u8) -> Vec<(u8, u8)> {
    (1..=n)
        .flat_map(|a| (a + 1..=n).map(move |b| (a, b)))
        .collect()
}

fn ring(n: u8) -> Vec<(u8, u8)> {
    (1..=n).map(|a| (a, a % n + 1)).collect()
}

#[test]
fn chain_of_three_relays_unicast_through_the_middle() {
    let mut m = Mesh::new(&[1, 2, 3], &[(1, 2), (2, 3)]);
    let (a, b, c) = (host(1, 1), host(2, 1), host(3, 1));
    m.attach(1, a);
    m.attach(2, b);
    m.attach(3, c);

    // a asks who has c: a broadcast over 1 -> 2 -> 3.
    let (id, sent) = m.send(a, BROADCAST);
    assert_eq!(sent, Sent::Broadcast(vec![name(2)]));
    assert_eq!(m.run(), 2);
    assert_eq!(
        m.deliveries(id),
        BTreeMap::from([(name(2), 1), (name(3), 1)])
    );
    assert_eq!(m.stats(2).datagrams_relayed, 1);

    // c answers a: unicast, relayed by 2, not delivered there.
    let (id, sent) = m.send(c, a);
    assert_eq!(
        sent,
        Sent::Unicast {
            dst: name(1),
            next_hop: name(2)
        }
    );
    assert_eq!(m.run(), 2);
    let (at, got) = m.delivered_once(id);
    assert_eq!((at, got.origin, got.hops), (name(1), name(3), 1));
    assert_eq!(m.stats(2).datagrams_relayed, 2);

    // Now a knows where c is (from the answer): unicast the other way.
    let (id, sent) = m.send(a, c);
    assert_eq!(
        sent,
        Sent::Unicast {
            dst: name(3),
            next_hop: name(2)
        }
    );
    assert_eq!(m.run(), 2);
    let (at, got) = m.delivered_once(id);
    assert_eq!((at, got.origin, got.hops), (name(3), name(1), 1));
    assert_eq!(m.stats(2).datagrams_relayed, 3);

    // The middle peer never learned the relayed hosts from unicasts, only
    // a from the broadcast; c it has not heard broadcast, so a frame from
    // b to c floods (reaching c once, and 1's bridge too).
    assert_eq!(m.node(2).router.macs().len(), 1);
    let (id, sent) = m.send(b, c);
    assert_eq!(sent, Sent::Broadcast(vec![name(1), name(3)]));
    m.run();
    assert_eq!(
        m.deliveries(id),
        BTreeMap::from([(name(1), 1), (name(3), 1)])
    );

    // A frame between two hosts behind the same peer never leaves it.
    let a2 = host(1, 2);
    m.attach(1, a2);
    m.send(a2, BROADCAST);
    m.run();
    let (_, sent) = m.send(a, a2);
    assert_eq!(sent, Sent::Dropped(DropReason::LocalDestination));
    assert_eq!(m.run(), 0);

    assert_eq!(m.drops, vec![]);
    assert_eq!(m.stats(1).frames_to_tap, 2);
    assert_eq!(m.stats(3).frames_to_tap, 4);
}

#[test]
fn full_mesh_of_four_delivers_broadcasts_exactly_once() {
    let mut m = Mesh::new(&[1, 2, 3, 4], &full_mesh(4));
    for p in 1..=4 {
        m.attach(p, host(p, 1));
        m.attach(p, host(p, 2));
    }
    m.check_broadcasts();
    // Every peer is one hop away: nothing is ever relayed.
    for p in 1..=4 {
        assert_eq!(m.stats(p).datagrams_relayed, 0);
    }
    m.check_unicasts();
}

#[test]
fn ring_of_five_delivers_broadcasts_exactly_once() {
    let mut m = Mesh::new(&[1, 2, 3, 4, 5], &ring(5));
    for p in 1..=5 {
        m.attach(p, host(p, 1));
        m.attach(p, host(p, 2));
    }
    m.check_broadcasts();
    m.check_unicasts();
    // Each peer relays: for a ring of 5 every broadcast crosses 4 edges,
    // 2 of them relays; every unicast to the far side is relayed once.
    let relayed: u64 = (1..=5).map(|p| m.stats(p).datagrams_relayed).sum();
    let broadcasts = 10 * 2;
    let far_unicasts = 10 * 2 * 2; // 10 hosts, 2 peers 2 hops away, 2 hosts each
    assert_eq!(relayed, broadcasts + far_unicasts);
}

#[test]
fn the_same_in_any_delivery_order() {
    for seed in 0..20u64 {
        let mut m = Mesh::new(&[1, 2, 3, 4, 5], &ring(5));
        m.shuffle = Some(seed);
        for p in 1..=5 {
            m.attach(p, host(p, 1));
        }
        m.check_broadcasts();
        m.check_unicasts();
    }
}

#[test]
fn topology_change_reroutes_and_keeps_broadcasts_exactly_once() {
    let mut m = Mesh::new(&[1, 2, 3, 4, 5], &ring(5));
    for p in 1..=5 {
        m.attach(p, host(p, 1));
    }
    m.check_broadcasts();
    // The 5-1 link goes: the ring becomes the chain 1-2-3-4-5; learned
    // MACs stay valid, only the paths change.
    m.rewire(&[(1, 2), (2, 3), (3, 4), (4, 5)]);
    let (id, sent) = m.send(host(1, 1), host(5, 1));
    assert_eq!(
        sent,
        Sent::Unicast {
            dst: name(5),
            next_hop: name(2)
        }
    );
    m.run();
    assert_eq!(m.delivered_once(id).1.hops, 3);
    m.check_broadcasts();
    m.check_unicasts();

    // Peer 3 leaves: the mesh splits. A MAC behind the far side floods on
    // our side only, and reaches nobody beyond.
    m.rewire(&[(1, 2), (4, 5)]);
    let (id, sent) = m.send(host(1, 1), host(5, 1));
    assert_eq!(sent, Sent::Broadcast(vec![name(2)]));
    m.run();
    assert_eq!(m.deliveries(id), BTreeMap::from([(name(2), 1)]));
    assert_eq!(m.drops, vec![]);
}

#[test]
fn a_moved_host_is_found_again_and_stale_macs_flood() {
    let mut m = Mesh::new(&[1, 2, 3, 4, 5], &ring(5));
    for p in 1..=5 {
        m.attach(p, host(p, 1));
    }
    m.check_broadcasts();
    let roamer = host(1, 1);

    // The host moves to peer 3; until it speaks, frames go to peer 1.
    m.attach(3, roamer);
    let (id, _) = m.send(host(4, 1), roamer);
    m.run();
    assert_eq!(m.delivered_once(id).0, name(1));

    // A gratuitous ARP from its new place moves it everywhere.
    let (id, _) = m.send(roamer, BROADCAST);
    m.run();
    assert_eq!(m.deliveries(id).len(), 4);
    assert!(m.stats(4).mac_moves >= 1);
    assert_eq!(m.stats(3).mac_moves, 1, "from Peer(1) to Local");
    m.check_unicasts();

    // Nobody speaks for a MAC lifetime: every MAC is forgotten, so a frame
    // floods and every other bridge gets it once.
    m.advance(MAC_TTL);
    let (id, sent) = m.send(host(4, 1), roamer);
    assert!(matches!(sent, Sent::Broadcast(_)), "{sent:?}");
    m.run();
    assert_eq!(
        m.deliveries(id),
        [1, 2, 3, 5].into_iter().map(|p| (name(p), 1)).collect()
    );
    // The reply teaches peer 4 again.
    let (id, sent) = m.send(roamer, host(4, 1));
    assert_eq!(
        sent,
        Sent::Unicast {
            dst: name(4),
            next_hop: name(4)
        }
    );
    m.run();
    assert_eq!(m.delivered_once(id).0, name(4));
    let (_, sent) = m.send(host(4, 1), roamer);
    assert_eq!(
        sent,
        Sent::Unicast {
            dst: name(3),
            next_hop: name(3)
        }
    );
    m.run();
    assert_eq!(m.drops, vec![]);
}

#[test]
fn a_lone_peer_sends_nowhere() {
    let mut m = Mesh::new(&[1], &[]);
    m.attach(1, host(1, 1));
    let (_, sent) = m.send(host(1, 1), BROADCAST);
    assert_eq!(sent, Sent::Broadcast(vec![]));
    assert_eq!(m.run(), 0);
}

/// A connected graph on `n` peers: a random spanning tree plus random extra
/// edges, peers numbered in a random order (so that trees built in name
/// order differ from the construction order).
fn arb_connected() -> impl Strategy<Value = (Vec<u8>, Vec<(u8, u8)>)> {
    (2usize..=7).prop_flat_map(|n| {
        let names = Just((1..=n as u8).collect::<Vec<u8>>()).prop_shuffle();
        let parents = proptest::collection::vec(any::<prop::sample::Index>(), n - 1);
        let extra = proptest::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
            0..=2 * n,
        );
        (names, parents, extra).prop_map(move |(names, parents, extra)| {
            let mut edges = BTreeSet::new();
            for (i, parent) in parents.iter().enumerate() {
                let child = i + 1;
                let (a, b) = (names[child], names[parent.index(child)]);
                edges.insert((a.min(b), a.max(b)));
            }
            for (x, y) in extra {
                let (a, b) = (names[x.index(n)], names[y.index(n)]);
                if a != b {
                    edges.insert((a.min(b), a.max(b)));
                }
            }
            (names, edges.into_iter().collect())
        })
    })
}

proptest! {
    #[test]
    fn random_connected_meshes_deliver_exactly_once(
        (peers, edges) in arb_connected(),
        hosts_per_peer in 1u8..=2,
        order in proptest::option::of(any::<u64>()),
    ) {
        let mut m = Mesh::new(&peers, &edges);
        m.shuffle = order;
        for &p in &peers {
            for k in 1..=hosts_per_peer {
                m.attach(p, host(p, k));
            }
        }
        m.check_broadcasts();
        m.check_unicasts();
    }
}
