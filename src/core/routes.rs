//! Routes as data, recomputed from the topology: unicast next hops and, per
//! origin, our children in that origin's broadcast tree.
//!
//! Only symmetric edges (both ends list each other) count. Unicast is a
//! shortest path (BFS from us). A broadcast from `origin` travels down the
//! BFS tree rooted at `origin` in which neighbours are visited in
//! `PeerName` order and each peer's parent is the first peer to discover
//! it; every peer holding the same topology computes the same tree, so a
//! broadcast reaches each peer exactly once and never loops.

use std::collections::{HashMap, VecDeque};

use super::topology::Topology;
use super::PeerName;

/// Unicast and broadcast routes from our point of view.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// Destination -> the neighbour to hand it to (ourselves excluded).
    unicast: HashMap<PeerName, PeerName>,
    /// Origin -> our children in its broadcast tree (only non-empty lists).
    broadcast: HashMap<PeerName, Vec<PeerName>>,
    /// Every peer we can reach, but ourselves, in name order.
    reachable: Vec<PeerName>,
}

/// The symmetric graph, peers numbered in name order so that sorted
/// neighbour indices are neighbours in name order.
struct Graph {
    names: Vec<PeerName>,
    adj: Vec<Vec<usize>>,
}

impl Graph {
    fn new(t: &Topology) -> Graph {
        let names: Vec<PeerName> = t.entries().map(|e| e.name).collect();
        let index: HashMap<PeerName, usize> =
            names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let listed: Vec<Vec<usize>> = t
            .entries()
            .enumerate()
            .map(|(i, e)| {
                let mut v: Vec<usize> = e
                    .connections
                    .iter()
                    .filter_map(|c| index.get(&c.peer).copied())
                    .filter(|&j| j != i)
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        let adj = listed
            .iter()
            .enumerate()
            .map(|(i, out)| {
                out.iter()
                    .copied()
                    .filter(|&j| {
                        listed
                            .get(j)
                            .is_some_and(|back| back.binary_search(&i).is_ok())
                    })
                    .collect()
            })
            .collect();
        Graph { names, adj }
    }

    fn neighbours(&self, i: usize) -> &[usize] {
        self.adj.get(i).map_or(&[], Vec::as_slice)
    }

    fn name(&self, i: usize) -> Option<PeerName> {
        self.names.get(i).copied()
    }
}

impl Routes {
    /// Computes every route from `t`, as seen by `t.ourself()`.
    pub fn compute(t: &Topology) -> Routes {
        let g = Graph::new(t);
        let n = g.names.len();
        let Ok(us) = g.names.binary_search(&t.ourself()) else {
            return Routes::default();
        };

        // Unicast: BFS from us, remembering the first hop of each path.
        let mut first_hop: Vec<Option<usize>> = vec![None; n];
        let mut seen = vec![false; n];
        let mut queue = VecDeque::new();
        mark(&mut seen, us);
        queue.push_back(us);
        while let Some(p) = queue.pop_front() {
            let hop = first_hop.get(p).copied().flatten();
            for &q in g.neighbours(p) {
                if mark(&mut seen, q) {
                    if let Some(slot) = first_hop.get_mut(q) {
                        *slot = Some(hop.unwrap_or(q));
                    }
                    queue.push_back(q);
                }
            }
        }
        let mut unicast = HashMap::new();
        let mut reachable = Vec::new();
        for (dest, hop) in first_hop.iter().enumerate() {
            if let (Some(d), Some(h)) = (g.name(dest), hop.and_then(|h| g.name(h))) {
                unicast.insert(d, h);
                reachable.push(d);
            }
        }

        // Broadcast: only origins we can reach can send to us. In each tree,
        // our children are the peers first discovered when we are expanded,
        // so the BFS can stop right after that.
        let mut broadcast = HashMap::new();
        for origin in std::iter::once(us).chain(
            reachable
                .iter()
                .filter_map(|r| g.names.binary_search(r).ok()),
        ) {
            let children = children_in_tree(&g, origin, us);
            if let (Some(o), false) = (g.name(origin), children.is_empty()) {
                broadcast.insert(o, children);
            }
        }

        Routes {
            unicast,
            broadcast,
            reachable,
        }
    }

    /// The neighbour to send to for `dest`; `None` for ourselves or a peer
    /// we cannot reach.
    pub fn next_hop(&self, dest: PeerName) -> Option<PeerName> {
        self.unicast.get(&dest).copied()
    }

    /// Our children in `origin`'s broadcast tree: where to pass on a
    /// broadcast that `origin` sent (or, for ourselves, where to send one).
    /// Empty when we are a leaf or do not know `origin`.
    pub fn broadcast_next_hops(&self, origin: PeerName) -> &[PeerName] {
        self.broadcast.get(&origin).map_or(&[], Vec::as_slice)
    }

    /// Every peer we can reach, ourselves excluded, in name order.
    pub fn reachable(&self) -> impl Iterator<Item = PeerName> + '_ {
        self.reachable.iter().copied()
    }
}

/// Sets `seen[i]`; returns whether it was newly set.
fn mark(seen: &mut [bool], i: usize) -> bool {
    match seen.get_mut(i) {
        Some(s) if !*s => {
            *s = true;
            true
        }
        _ => false,
    }
}

/// `us`'s children in the BFS tree rooted at `origin` (neighbours in name
/// order, parent = first discoverer).
fn children_in_tree(g: &Graph, origin: usize, us: usize) -> Vec<PeerName> {
    let mut seen = vec![false; g.names.len()];
    let mut queue = VecDeque::new();
    mark(&mut seen, origin);
    queue.push_back(origin);
    while let Some(p) = queue.pop_front() {
        let mut children = Vec::new();
        for &q in g.neighbours(p) {
            if mark(&mut seen, q) {
                if p == us {
                    children.extend(g.name(q));
                }
                queue.push_back(q);
            }
        }
        if p == us {
            return children;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_fixtures::NOW_MS;
    use crate::core::topology::{ConnectionInfo, PeerEntry};
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    fn name(i: u8) -> PeerName {
        PeerName([0x02, 0, 0, 0, 0, i])
    }

    fn entry(i: u8, conns: &[u8]) -> PeerEntry {
        PeerEntry {
            name: name(i),
            nickname: String::new(),
            uid: u64::from(i),
            version: 1,
            connections: conns
                .iter()
                .map(|&c| ConnectionInfo {
                    peer: name(c),
                    addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, c)), 6783),
                    outbound: c > i,
                })
                .collect(),
        }
    }

    /// One `Routes` per peer, each computed from the same full topology
    /// (`links` lists, per peer, whom it claims to be connected to).
    fn mesh(links: &[(u8, Vec<u8>)]) -> Vec<(PeerName, Routes)> {
        let entries: Vec<PeerEntry> = links.iter().map(|(i, c)| entry(*i, c)).collect();
        entries
            .iter()
            .map(|ours| {
                let mut t = Topology::new(ours.clone());
                let others = entries.iter().filter(|e| e.name != ours.name).cloned();
                t.merge(others.collect(), NOW_MS);
                (ours.name, Routes::compute(&t))
            })
            .collect()
    }

    fn routes_of(m: &[(PeerName, Routes)], p: PeerName) -> &Routes {
        &m.iter().find(|(n, _)| *n == p).unwrap().1
    }

    /// Delivers a broadcast from `origin` along every peer's own routes and
    /// counts how often each peer receives it.
    fn broadcast(m: &[(PeerName, Routes)], origin: PeerName) -> HashMap<PeerName, usize> {
        let mut got: HashMap<PeerName, usize> = HashMap::new();
        let mut queue: VecDeque<PeerName> = routes_of(m, origin)
            .broadcast_next_hops(origin)
            .iter()
            .copied()
            .collect();
        let mut steps = 0;
        while let Some(p) = queue.pop_front() {
            steps += 1;
            assert!(steps < 10_000, "broadcast loops");
            *got.entry(p).or_default() += 1;
            queue.extend(routes_of(m, p).broadcast_next_hops(origin));
        }
        got
    }

    /// Follows unicast next hops from `src`; the peer it ends at, if any.
    fn unicast(m: &[(PeerName, Routes)], src: PeerName, dst: PeerName) -> Option<PeerName> {
        let mut at = src;
        for _ in 0..=m.len() {
            if at == dst {
                return Some(at);
            }
            at = routes_of(m, at).next_hop(dst)?;
        }
        None
    }

    /// Peers reachable from `p` over symmetric links (by plain search).
    fn component(links: &[(u8, Vec<u8>)], p: PeerName) -> BTreeSet<PeerName> {
        let lists = |a: PeerName, b: PeerName| {
            links
                .iter()
                .any(|(i, c)| name(*i) == a && c.iter().any(|&x| name(x) == b))
        };
        let names: Vec<PeerName> = links.iter().map(|(i, _)| name(*i)).collect();
        let mut seen = BTreeSet::from([p]);
        let mut stack = vec![p];
        while let Some(a) = stack.pop() {
            for &b in &names {
                if a != b && lists(a, b) && lists(b, a) && seen.insert(b) {
                    stack.push(b);
                }
            }
        }
        seen
    }

    fn check_exactly_once(links: &[(u8, Vec<u8>)]) {
        let m = mesh(links);
        for (origin, _) in &m {
            let comp = component(links, *origin);
            let got = broadcast(&m, *origin);
            for (p, _) in &m {
                let want = usize::from(p != origin && comp.contains(p));
                assert_eq!(
                    got.get(p).copied().unwrap_or(0),
                    want,
                    "broadcast from {origin} at {p}"
                );
            }
            for (dst, _) in &m {
                let end = unicast(&m, *origin, *dst);
                if comp.contains(dst) {
                    assert_eq!(end, Some(*dst), "unicast {origin} -> {dst}");
                } else {
                    assert_eq!(end, None, "unicast {origin} -> {dst}");
                }
            }
        }
    }

    #[test]
    fn chain() {
        let links = vec![(1, vec![2]), (2, vec![1, 3]), (3, vec![2, 4]), (4, vec![3])];
        let m = mesh(&links);
        let r1 = routes_of(&m, name(1));
        assert_eq!(r1.next_hop(name(4)), Some(name(2)));
        assert_eq!(r1.next_hop(name(2)), Some(name(2)));
        assert_eq!(r1.next_hop(name(1)), None);
        assert_eq!(r1.broadcast_next_hops(name(1)), &[name(2)]);
        assert_eq!(r1.broadcast_next_hops(name(4)), &[] as &[PeerName]);
        let r2 = routes_of(&m, name(2));
        assert_eq!(r2.broadcast_next_hops(name(1)), &[name(3)]);
        assert_eq!(r2.broadcast_next_hops(name(4)), &[name(1)]);
        assert_eq!(r2.broadcast_next_hops(name(2)), &[name(1), name(3)]);
        assert_eq!(
            r2.reachable().collect::<Vec<_>>(),
            vec![name(1), name(3), name(4)]
        );
        check_exactly_once(&links);
    }

    #[test]
    fn ring() {
        let links: Vec<(u8, Vec<u8>)> = (1..=5u8)
            .map(|i| {
                (
                    i,
                    vec![
                        if i == 1 { 5 } else { i - 1 },
                        if i == 5 { 1 } else { i + 1 },
                    ],
                )
            })
            .collect();
        let m = mesh(&links);
        let r1 = routes_of(&m, name(1));
        assert_eq!(r1.next_hop(name(2)), Some(name(2)));
        assert_eq!(r1.next_hop(name(3)), Some(name(2)));
        assert_eq!(r1.next_hop(name(4)), Some(name(5)));
        assert_eq!(r1.next_hop(name(5)), Some(name(5)));
        check_exactly_once(&links);
    }

    #[test]
    fn full_mesh_of_four() {
        let links: Vec<(u8, Vec<u8>)> = (1..=4u8)
            .map(|i| (i, (1..=4u8).filter(|&j| j != i).collect()))
            .collect();
        let m = mesh(&links);
        for (p, r) in &m {
            // Everyone is one hop away, and the origin reaches all directly.
            for q in 1..=4u8 {
                if name(q) != *p {
                    assert_eq!(r.next_hop(name(q)), Some(name(q)));
                    assert_eq!(r.broadcast_next_hops(name(q)), &[] as &[PeerName]);
                }
            }
            assert_eq!(r.broadcast_next_hops(*p).len(), 3);
        }
        check_exactly_once(&links);
    }

    #[test]
    fn partition_and_one_sided_links() {
        // {1,2} and {3,4}; 2 claims 3 but 3 does not list 2.
        let links = vec![(1, vec![2]), (2, vec![1, 3]), (3, vec![4]), (4, vec![3])];
        let m = mesh(&links);
        let r1 = routes_of(&m, name(1));
        assert_eq!(r1.next_hop(name(3)), None);
        assert_eq!(r1.next_hop(name(4)), None);
        assert_eq!(r1.reachable().collect::<Vec<_>>(), vec![name(2)]);
        assert_eq!(r1.broadcast_next_hops(name(3)), &[] as &[PeerName]);
        let r2 = routes_of(&m, name(2));
        assert_eq!(r2.next_hop(name(3)), None);
        assert_eq!(r2.broadcast_next_hops(name(2)), &[name(1)]);
        check_exactly_once(&links);
    }

    #[test]
    fn alone() {
        let t = Topology::new(entry(1, &[2]));
        let r = Routes::compute(&t);
        assert_eq!(r.next_hop(name(2)), None);
        assert_eq!(r.reachable().count(), 0);
        assert_eq!(r.broadcast_next_hops(name(1)), &[] as &[PeerName]);
    }

    fn arb_links() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
        (1usize..10).prop_flat_map(|n| {
            proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), n).prop_map(
                move |claims| {
                    claims
                        .into_iter()
                        .enumerate()
                        .map(|(i, row)| {
                            let conns = row
                                .into_iter()
                                .enumerate()
                                .filter(|&(j, c)| c && j != i)
                                .map(|(j, _)| j as u8 + 1)
                                .collect();
                            (i as u8 + 1, conns)
                        })
                        .collect()
                },
            )
        })
    }

    proptest! {
        #[test]
        fn broadcast_exactly_once_and_unicast_arrives(links in arb_links()) {
            check_exactly_once(&links);
        }
    }
}
